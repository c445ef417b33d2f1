"""On-disk cache of resampled streamline datasets.

A dataset is stored as one folder of ``.npy`` files (``x.npy`` is opened
memory-mapped on reuse, so it never has to sit in RAM) and a ``meta.json``.
The folder name is a hash of everything the arrays depend on: input file
paths, sizes and modification times, the number of points, the attribute and
the participants table. A folder is built under a temporary name and renamed
into place when complete, so an interrupted run never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import uuid
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_VERSION",
    "CacheWriter",
    "NpyAppender",
    "file_signature",
    "load_entry",
    "make_key",
]

#: Bumped whenever the layout or the content of a cache entry changes.
CACHE_VERSION = 1
_META = "meta.json"
_HEADER_BYTES = 128


def file_signature(path):
    """Identify a file's version by its resolved path, size and mtime.

    Parameters
    ----------
    path : str or Path
        An existing file.

    Returns
    -------
    list
        ``[resolved path, size in bytes, mtime in ns]``.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return [str(path), int(stat.st_size), int(stat.st_mtime_ns)]


def make_key(description):
    """Hash a JSON-able description of a dataset into a cache key.

    Parameters
    ----------
    description : dict
        Everything the cached arrays depend on.

    Returns
    -------
    str
        A 24-character hexadecimal key.
    """
    text = json.dumps(
        {"cache_version": CACHE_VERSION, **description}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class NpyAppender:
    """Write a ``.npy`` array row block by row block without knowing its length.

    A fixed-size header is reserved first and filled in by :meth:`close`, so
    only one block at a time is held in memory.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file to write.
    row_shape : tuple of int
        Shape of one row (e.g. ``(n_points, 3)``).
    dtype : numpy dtype, optional
        Element type.
    """

    def __init__(self, path, row_shape, dtype=np.float32):
        self.path = Path(path)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = np.dtype(dtype)
        self.n_rows = 0
        self._file = open(self.path, "wb")  # noqa: SIM115
        self._file.write(b"\0" * _HEADER_BYTES)

    def append(self, block):
        """Append rows.

        Parameters
        ----------
        block : array_like, shape (n, *row_shape)
            Rows to append (converted to the writer's dtype).
        """
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(
                f"{self.path}: rows of shape {block.shape[1:]} appended to an array "
                f"of rows {self.row_shape}"
            )
        self._file.write(block.tobytes())
        self.n_rows += len(block)

    def close(self):
        """Write the header and close the file.

        Returns
        -------
        Path
            The finished ``.npy`` file.
        """
        shape = (self.n_rows, *self.row_shape)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        padding = _HEADER_BYTES - 10 - len(text) - 1
        if padding < 0:
            raise ValueError(f"{self.path}: array header too long for shape {shape}")
        text = text + " " * padding + "\n"
        header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()
        self._file.seek(0)
        self._file.write(header)
        self._file.close()
        return self.path

    def abort(self):
        """Close the file without finishing it."""
        if not self._file.closed:
            self._file.close()


class CacheWriter:
    """Build one cache entry in a temporary folder and rename it into place.

    Parameters
    ----------
    cache_dir : str or Path
        The cache root folder (created if needed).
    key : str
        The entry's key (:func:`make_key`).
    """

    def __init__(self, cache_dir, key):
        self.root = Path(cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.final = self.root / key
        # an entry already there is being rebuilt (it was found inconsistent);
        # one that appears while this one is built is another process's
        self._replaces = _complete(self.final)
        self.tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        self.tmp.mkdir()

    def appender(self, name, row_shape, dtype=np.float32):
        """Open a streaming ``.npy`` writer inside the entry (see NpyAppender)."""
        return NpyAppender(self.tmp / f"{name}.npy", row_shape, dtype)

    def path(self, name):
        """Path of array ``name`` inside the entry being built."""
        return self.tmp / f"{name}.npy"

    def save_array(self, name, array):
        """Save a small array as ``<name>.npy`` (no pickle)."""
        np.save(self.tmp / f"{name}.npy", np.asarray(array), allow_pickle=False)

    def commit(self, meta):
        """Write ``meta.json`` and move the entry into place.

        Parameters
        ----------
        meta : dict
            JSON-able metadata.

        Returns
        -------
        Path
            The final entry folder.
        """
        meta = {"cache_version": CACHE_VERSION, **meta}
        with open(self.tmp / _META, "w", encoding="utf-8") as handle:
            json.dump(meta, handle)
        if not self._replaces and _complete(self.final):
            # another process (one per device) finished the same entry while
            # this one was built, and may be reading it: keep theirs
            shutil.rmtree(self.tmp, ignore_errors=True)
            return self.final
        if self.final.exists():
            shutil.rmtree(self.final, ignore_errors=True)
        try:
            os.replace(self.tmp, self.final)
        except OSError:
            # another process finished the same entry first: keep theirs
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.final

    def abort(self):
        """Remove the temporary folder."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def load_entry(cache_dir, key, names):
    """Open a finished cache entry.

    Parameters
    ----------
    cache_dir : str or Path
        The cache root folder.
    key : str
        The entry's key.
    names : sequence of str
        Arrays to open; ``"x"`` is memory-mapped read-only, the others are read.

    Returns
    -------
    tuple (dict, dict) or None
        ``(arrays, meta)``, or None when there is no complete, readable entry.
    """
    entry = Path(cache_dir) / key
    meta_path = entry / _META
    if not meta_path.is_file():
        return None
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("cache_version") != CACHE_VERSION:
            return None
        arrays = {}
        for name in names:
            if name == "x":
                arrays[name] = np.load(entry / "x.npy", mmap_mode="r")
            else:
                arrays[name] = np.load(entry / f"{name}.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("Ignoring unreadable cache entry %s (%s)", entry, exc)
        return None
    return arrays, meta


def _complete(entry):
    """Whether ``entry`` is a finished entry of this cache version."""
    try:
        with open(Path(entry) / _META, encoding="utf-8") as handle:
            return json.load(handle).get("cache_version") == CACHE_VERSION
    except (OSError, ValueError):
        return False
