"""Making training datasets from tractogram files or from tractograms in memory.

:func:`load_dataset` reads labelled bundle files (``<subject>/<BUNDLE>.trk``
...), optionally through the on-disk cache; :func:`dataset_from_tractograms`
takes StatefulTractograms (or plain streamlines) already in a DIPY pipeline.
Both resample, measure and orient with :func:`aae_tract.dataset.assemble`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from aae_tract import cache as _cache
from aae_tract.dataset import MemorySink, assemble
from aae_tract.dataset_cache import (
    FileSink,
    dataset_key,
    load_cached_dataset,
    write_dataset,
)
from aae_tract.errors import DatasetError
from aae_tract.io import (
    find_bundles,
    load_bundle,
    space_from_sft,
    valid_streamline_mask,
)
from aae_tract.participants import (
    find_participants,
    participant_values,
    read_participants,
)

logger = logging.getLogger(__name__)

__all__ = ["dataset_from_tractograms", "load_dataset"]


# ---------------------------------------------------------------------------
# tractograms in memory


def _per_tractogram_values(attribute, attribute_values, subjects):
    """One attribute entry per tractogram (None for length)."""
    n = len(subjects)
    if attribute == "length":
        return [None] * n
    if attribute_values is None:
        raise DatasetError(
            f"attribute {attribute!r} needs attribute_values (a dict subject -> "
            "value or one value per tractogram)"
        )
    if isinstance(attribute_values, dict):
        missing = sorted(set(subjects) - set(map(str, attribute_values)))
        if missing:
            raise DatasetError(
                f"attribute {attribute!r}: no value for subject(s) {', '.join(missing)}"
            )
        lookup = {str(k): v for k, v in attribute_values.items()}
        return [lookup[s] for s in subjects]
    values = list(attribute_values)
    if len(values) != n:
        raise DatasetError(f"{n} tractograms but {len(values)} attribute values")
    return values


def _space_or_none(sft):
    try:
        return space_from_sft(sft)
    except Exception:  # an sft without a usable header
        return None


def _rasmm_streamlines(item):
    """The streamlines of a tractogram in RAS+ mm (the object is not modified)."""
    from dipy.io.stateful_tractogram import StatefulTractogram

    if isinstance(item, StatefulTractogram):
        sft = item
        if sft.space != "rasmm" or sft.origin != "center":
            sft = StatefulTractogram.from_sft(item.streamlines, item)
            sft.to_rasmm()
            sft.to_center()
        return sft.streamlines
    if isinstance(item, nib.streamlines.ArraySequence):
        return item
    return nib.streamlines.ArraySequence(
        [np.asarray(s, dtype=np.float32).reshape(-1, 3) for s in item]
    )


def _usable_part(i, streamlines, label, subject, value):
    """Drop streamlines with NaN/inf coordinates or under 2 points (logged)."""
    keep, n_nonfinite, n_short = valid_streamline_mask(streamlines)
    if keep.all():
        return streamlines, label, subject, value
    logger.warning(
        "tractogram %d (%s, %s): skipped %d of %d streamlines (%d with "
        "NaN/inf coordinates, %d with fewer than 2 points)",
        i,
        label,
        subject,
        int((~keep).sum()),
        len(keep),
        n_nonfinite,
        n_short,
    )
    if value is not None and np.ndim(value) == 1:
        value = np.asarray(value)[keep]
    return streamlines[np.flatnonzero(keep)], label, subject, value


def dataset_from_tractograms(
    sfts,
    labels,
    *,
    subjects=None,
    n_points=256,
    attribute="length",
    attribute_values=None,
    orient_refs=None,
):
    """Make a dataset from tractograms already in memory (a DIPY pipeline).

    Parameters
    ----------
    sfts : sequence of StatefulTractogram, ArraySequence or lists of arrays
        One tractogram per bundle (per subject). StatefulTractograms are used
        in RAS+ mm (the input objects are not modified); plain streamlines
        are taken as RAS+ mm.
    labels : sequence of str
        Bundle label of each tractogram.
    subjects : sequence of str, optional
        Subject of each tractogram (default ``"subject"`` for all).
    n_points : int, optional
        Points per resampled streamline.
    attribute : str, optional
        ``"length"`` or the name of the attribute given in ``attribute_values``.
    attribute_values : dict or sequence, optional
        Needed unless ``attribute == "length"``: a dict subject -> value, or
        one entry per tractogram (a scalar, or an array with one value per
        streamline).
    orient_refs : dict of str to (n, 3) array, optional
        Orientation references (e.g. from a trained model); bundles without
        one get a reference chosen from the data.

    Returns
    -------
    StreamlineDataset

    Raises
    ------
    DatasetError
        Mismatched lengths of the inputs, a missing attribute value, or no
        usable streamline.
    """
    from dipy.io.stateful_tractogram import StatefulTractogram

    sfts = list(sfts)
    labels = [str(label) for label in labels]
    if len(sfts) != len(labels):
        raise DatasetError(f"{len(sfts)} tractograms but {len(labels)} labels")
    if not sfts:
        raise DatasetError("no tractograms given")
    subjects = (
        ["subject"] * len(sfts) if subjects is None else [str(s) for s in subjects]
    )
    if len(subjects) != len(sfts):
        raise DatasetError(f"{len(sfts)} tractograms but {len(subjects)} subjects")
    values = _per_tractogram_values(attribute, attribute_values, subjects)
    spaces = (_space_or_none(s) for s in sfts if isinstance(s, StatefulTractogram))
    space = next((s for s in spaces if s is not None), None)
    parts = [
        _usable_part(i, _rasmm_streamlines(item), label, subject, value)
        for i, (item, label, subject, value) in enumerate(
            zip(sfts, labels, subjects, values)
        )
    ]
    return assemble(
        parts,
        bundle_names=sorted(set(labels)),
        n_points=n_points,
        attribute_name=attribute,
        sink=MemorySink(),
        orient_refs=orient_refs,
        space=space,
    )


# ---------------------------------------------------------------------------
# files


def _default_inputs():
    try:
        from aae_tract.data_fetchers import fetch_minimal_bundles
    except ImportError as exc:
        raise DatasetError(
            "no inputs given and the embedded default (minimal_bundles) is not "
            f"available: {exc}"
        ) from exc
    return fetch_minimal_bundles()


def _subject_values(inputs, files, attribute, participants):
    """Each subject's attribute value and the table read (None, None for length)."""
    if attribute == "length":
        return None, None
    table_path = (
        Path(participants)
        if participants is not None
        else find_participants(inputs, files)
    )
    if table_path is None:
        raise DatasetError(
            f"attribute {attribute!r} needs a participants.tsv with a "
            f"{attribute!r} column; none found beside the inputs, pass "
            "participants=<path>"
        )
    table = read_participants(table_path, attribute)
    subjects = sorted({f.subject for f in files})
    return participant_values(table, subjects, table_path, attribute), table_path


def _file_parts(files, reference, subject_values, first_space):
    """Read the files one by one as parts; the first file's space fills
    ``first_space``."""
    for bundle_file in tqdm(
        files, desc="Loading tractograms", unit="file", disable=None, leave=False
    ):
        sft = load_bundle(bundle_file.path, reference=reference)
        if not first_space:
            first_space.update(space_from_sft(sft))
        value = None if subject_values is None else subject_values[bundle_file.subject]
        yield sft.streamlines, bundle_file.bundle, bundle_file.subject, value


def _read_files(
    files,
    *,
    n_points,
    attribute,
    reference,
    orient_refs,
    subject_values,
    cache_dir=None,
    key=None,
):
    """Assemble the dataset of ``files``; into the cache entry ``key`` of
    ``cache_dir`` when one is given."""
    writer = None
    first_space = {}
    try:
        if cache_dir is not None:
            writer = _cache.CacheWriter(cache_dir, key)
        dataset = assemble(
            _file_parts(files, reference, subject_values, first_space),
            bundle_names=sorted({f.bundle for f in files}),
            n_points=n_points,
            attribute_name=attribute,
            sink=MemorySink() if writer is None else FileSink(writer, n_points),
            orient_refs=orient_refs,
            space={},
        )
        dataset.space = dict(first_space)
        return dataset if writer is None else write_dataset(writer, dataset, files)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if cache_dir is not None and isinstance(exc, OSError):
            raise DatasetError(
                f"{cache_dir}: cannot write the dataset cache ({exc}); free some "
                "space or choose another cache folder"
            ) from exc
        raise


def load_dataset(
    inputs=None,
    *,
    n_points=256,
    attribute="length",
    participants=None,
    reference=None,
    cache_dir=None,
    orient_refs=None,
):
    """Load labelled bundles from files into a training-ready dataset.

    Parameters
    ----------
    inputs : str, Path or sequence, optional
        Files, folders (``<root>/<subject>/<BUNDLE>.ext`` or
        ``<root>/<BUNDLE>.ext``) or glob patterns, see
        :func:`aae_tract.io.find_bundles`. None loads the embedded default
        (DIPY's minimal_bundles: 5 subjects x AF_L, CST_R, CC_ForcepsMajor).
    n_points : int, optional
        Points per resampled streamline.
    attribute : str, optional
        ``"length"`` (streamline length in mm) or a column of the participants
        table (e.g. ``"age"``), one value per subject.
    participants : str or Path, optional
        The participants table; by default ``participants.tsv`` in the input
        folder or beside the subject folders.
    reference : str, Path or nibabel object, optional
        Reference space for ``.tck``/``.trx`` inputs.
    cache_dir : str or Path, optional
        Write the resampled arrays there once and reuse them (``x`` memory-
        mapped) while the inputs and options are unchanged.
    orient_refs : dict of str to (n, 3) array, optional
        Orientation references (e.g. from a trained model).

    Returns
    -------
    StreamlineDataset

    Raises
    ------
    TractogramError
        An input file cannot be read (see :func:`aae_tract.io.load_bundle`).
    DatasetError
        No inputs found, participants table or column or subject missing.
    """
    if inputs is None:
        inputs = _default_inputs()
    n_points = int(n_points)
    if n_points < 2:
        raise DatasetError(f"n_points must be at least 2, got {n_points}")
    files = find_bundles(inputs)
    subject_values, table = _subject_values(inputs, files, attribute, participants)
    options = {
        "n_points": n_points,
        "attribute": attribute,
        "reference": reference,
        "orient_refs": orient_refs,
    }
    key = None
    if cache_dir is not None:
        key = dataset_key(files, participants=table, **options)
        cached = load_cached_dataset(cache_dir, key)
        if cached is not None:
            n_subjects = len(np.unique(cached.subjects))
            _log_loaded(cached, n_subjects, f"from the cache {Path(cache_dir) / key}")
            return cached
    dataset = _read_files(
        files, subject_values=subject_values, cache_dir=cache_dir, key=key, **options
    )
    n_subjects = len({f.subject for f in files})
    _log_loaded(dataset, n_subjects, f"({len(files)} files)")
    return dataset


def _log_loaded(dataset, n_subjects, source):
    logger.info(
        "Loaded %d streamlines of %d bundles from %d subjects %s",
        len(dataset),
        len(dataset.bundle_names),
        n_subjects,
        source,
    )
