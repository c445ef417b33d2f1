"""Streamline datasets in the on-disk cache: their keys, writing, reopening.

:mod:`aae_tract.cache` stores arrays under a key; this module says what a
dataset's key depends on (:func:`dataset_key`: the input files' versions,
the options, the participants table, the reference, the orientation
references), streams a dataset's rows into an entry as they are made
(:class:`FileSink`), and reopens an entry as a
:class:`~aae_tract.dataset.StreamlineDataset` with ``x`` memory-mapped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from aae_tract import cache as _cache
from aae_tract.dataset import StreamlineDataset
from aae_tract.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = ["FileSink", "dataset_key", "load_cached_dataset", "write_dataset"]

_ARRAYS = ("x", "labels", "attribute", "lengths", "subjects")


def _reference_signature(reference):
    if reference is None:
        return None
    if isinstance(reference, (str, Path)) and str(reference) != "same":
        path = Path(reference)
        return _cache.file_signature(path) if path.is_file() else str(path)
    if isinstance(reference, str):
        return reference
    try:
        from dipy.io.utils import get_reference_info

        affine, dims, sizes, order = get_reference_info(reference)
        return [
            np.asarray(affine).tolist(),
            [int(d) for d in dims],
            [float(s) for s in sizes],
            str(order),
        ]
    except Exception:
        return repr(reference)


def _refs_signature(orient_refs):
    if not orient_refs:
        return None
    return {
        k: _cache.make_key({"ref": np.asarray(v, np.float32).tobytes().hex()})
        for k, v in sorted(orient_refs.items())
    }


def dataset_key(files, *, n_points, attribute, participants, reference, orient_refs):
    """The cache key of the dataset made from ``files`` with these options.

    Parameters
    ----------
    files : list of aae_tract.io.BundleFile
        The inputs (their path, size and modification time count).
    n_points : int
        Points per resampled streamline.
    attribute : str
        ``"length"`` or a participants column.
    participants : str, Path or None
        The participants table read (its version counts).
    reference : str, Path, nibabel object or None
        Reference space of ``.tck``/``.trx`` inputs.
    orient_refs : dict of str to (n, 3) array or None
        Orientation references given.

    Returns
    -------
    str
        A key for :func:`aae_tract.cache.make_key` entries.
    """
    return _cache.make_key(
        {
            "files": [
                [*_cache.file_signature(f.path), f.bundle, f.subject] for f in files
            ],
            "n_points": int(n_points),
            "attribute": attribute,
            "participants": (
                None if participants is None else _cache.file_signature(participants)
            ),
            "reference": _reference_signature(reference),
            "orient_refs": _refs_signature(orient_refs),
        }
    )


class FileSink:
    """Where :func:`aae_tract.dataset.assemble` puts rows: a cache entry's ``x``.

    Parameters
    ----------
    writer : aae_tract.cache.CacheWriter
        The entry being written.
    n_points : int
        Points per streamline.
    """

    def __init__(self, writer, n_points):
        self.appender = writer.appender("x", (n_points, 3), np.float32)
        self.writer = writer

    def append(self, block):
        """Write one (n, n_points, 3) block."""
        self.appender.append(block)

    def finish(self, n_points):
        """The rows written, memory-mapped read-only."""
        path = self.appender.close()
        return np.load(path, mmap_mode="r")


def write_dataset(writer, dataset, files):
    """Complete the entry ``dataset`` was assembled into and reopen it.

    Parameters
    ----------
    writer : aae_tract.cache.CacheWriter
        The entry whose ``x`` a :class:`FileSink` wrote.
    dataset : StreamlineDataset
        The dataset assembled (its ``x`` is released).
    files : list of aae_tract.io.BundleFile
        The inputs, recorded in the entry's metadata.

    Returns
    -------
    StreamlineDataset
        Read back from the entry, ``x`` memory-mapped.
    """
    for name in _ARRAYS[1:]:
        writer.save_array(name, getattr(dataset, name))
    meta = {
        "bundle_names": dataset.bundle_names,
        "attribute_name": dataset.attribute_name,
        "n_points": dataset.n_points,
        "space": dataset.space,
        "orient_refs": {k: v.tolist() for k, v in dataset.orient_refs.items()},
        "n_streamlines": len(dataset),
        "files": [str(f.path) for f in files],
    }
    dataset.x = None  # release the writable map before the rename
    entry = writer.commit(meta)
    logger.info("Wrote dataset cache %s", entry)
    reopened = load_cached_dataset(writer.root, entry.name)
    if reopened is None:
        raise DatasetError(f"{entry}: the cache just written cannot be read back")
    return reopened


def load_cached_dataset(cache_dir, key):
    """Reopen a cached dataset.

    Parameters
    ----------
    cache_dir : str or Path
        The cache folder.
    key : str
        From :func:`dataset_key`.

    Returns
    -------
    StreamlineDataset or None
        ``x`` memory-mapped; None when there is no such entry or it is
        inconsistent (logged).
    """
    found = _cache.load_entry(cache_dir, key, _ARRAYS)
    if found is None:
        return None
    arrays, meta = found
    n_points = int(meta["n_points"])
    dataset = StreamlineDataset(
        x=arrays["x"],
        labels=arrays["labels"].astype(np.int32, copy=False),
        attribute=arrays["attribute"].astype(np.float32, copy=False),
        lengths=arrays["lengths"].astype(np.float32, copy=False),
        subjects=arrays["subjects"],
        bundle_names=list(meta["bundle_names"]),
        attribute_name=str(meta["attribute_name"]),
        n_points=n_points,
        space=dict(meta["space"]),
        orient_refs={
            k: np.asarray(v, dtype=np.float32) for k, v in meta["orient_refs"].items()
        },
    )
    n = len(dataset)
    if dataset.x.shape != (n, n_points, 3) or any(
        len(getattr(dataset, name)) != n for name in _ARRAYS[1:]
    ):
        logger.warning("Ignoring inconsistent cache entry %s", Path(cache_dir) / key)
        return None
    return dataset
