"""Training-ready streamline datasets.

Streamlines are resampled to a fixed number of points (DIPY's
``set_number_of_points``), measured (length in mm before resampling),
oriented consistently within each bundle and stored with their bundle label,
subject and conditioning attribute (streamline length, or a per-subject value
such as age read from ``participants.tsv``). Large datasets can be written once
to an on-disk cache and reopened memory-mapped.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from aae_tract import cache as _cache
from aae_tract.errors import AAETractError, DatasetError
from aae_tract.io import (
    find_bundles,
    load_bundle,
    space_from_sft,
    valid_streamline_mask,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Normalizer",
    "StreamlineDataset",
    "dataset_from_tractograms",
    "load_dataset",
    "orient_bundle",
    "read_participants",
    "resample",
    "split_dataset",
    "streamline_lengths",
]

_CHUNK = 16384
_NORM_CHUNK = 4096
_N_ORIENT_POINTS = 12
_MAX_REFERENCE_SAMPLE = 256


# ---------------------------------------------------------------------------
# resampling and measuring


def _as_sequence(streamlines):
    """Streamlines as something DIPY's C routines take (float32/64 arrays)."""
    if isinstance(streamlines, nib.streamlines.ArraySequence):
        return streamlines
    if isinstance(streamlines, np.ndarray) and streamlines.ndim == 3:
        return streamlines
    return [np.asarray(s, dtype=np.float32) for s in streamlines]


def resample(streamlines, n_points):
    """Resample streamlines to ``n_points`` equally spaced points.

    Parameters
    ----------
    streamlines : ArraySequence, sequence of (n_i, 3) arrays or (N, P, 3) array
        Streamlines with at least 2 points each.
    n_points : int
        Points per output streamline (>= 2).

    Returns
    -------
    ndarray of float32, shape (N, n_points, 3)
    """
    from dipy.tracking.streamline import set_number_of_points

    n_points = int(n_points)
    if n_points < 2:
        raise DatasetError(f"n_points must be at least 2, got {n_points}")
    streamlines = _as_sequence(streamlines)
    if len(streamlines) == 0:
        return np.zeros((0, n_points, 3), dtype=np.float32)
    if isinstance(streamlines, np.ndarray):
        if streamlines.shape[1] == n_points:
            return np.asarray(streamlines, dtype=np.float32)
        streamlines = [s for s in np.asarray(streamlines, dtype=np.float32)]
    out = set_number_of_points(streamlines, nb_points=n_points)
    if isinstance(out, nib.streamlines.ArraySequence):
        data = np.asarray(out._data)
        compact = len(data) == len(out) * n_points and np.array_equal(
            out._offsets, np.arange(len(out)) * n_points
        )
        data = data if compact else np.asarray(out.get_data())
        x = data.reshape(len(out), n_points, 3)
    else:
        x = np.stack(out)
    return np.ascontiguousarray(x, dtype=np.float32)


def streamline_lengths(streamlines):
    """Length in mm of each streamline, measured on the points given.

    Parameters
    ----------
    streamlines : ArraySequence, sequence of (n_i, 3) arrays or (N, P, 3) array

    Returns
    -------
    ndarray of float32, shape (N,)
    """
    from dipy.tracking.streamline import length

    if isinstance(streamlines, np.ndarray) and streamlines.ndim == 3:
        steps = np.diff(np.asarray(streamlines, dtype=np.float64), axis=1)
        return np.linalg.norm(steps, axis=-1).sum(axis=1).astype(np.float32)
    streamlines = _as_sequence(streamlines)
    if len(streamlines) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(length(streamlines), dtype=np.float32).reshape(-1)


# ---------------------------------------------------------------------------
# orientation


def _orient_indices(n_points):
    return np.unique(np.linspace(0, n_points - 1, min(n_points, _N_ORIENT_POINTS)))


def _flip_mask(x, ref):
    """True where the reversed streamline is closer to ``ref`` (DIPY semantics)."""
    idx = np.round(_orient_indices(x.shape[1])).astype(np.intp)
    sub = np.asarray(x[:, idx], dtype=np.float32)
    ref_sub = np.asarray(ref, dtype=np.float32)[idx]
    direct = np.linalg.norm(sub - ref_sub, axis=-1).sum(axis=1)
    flipped = np.linalg.norm(sub[:, ::-1] - ref_sub, axis=-1).sum(axis=1)
    return flipped < direct


def _match_points(ref, n_points):
    ref = np.asarray(ref, dtype=np.float32)
    if ref.ndim != 2 or ref.shape[1] != 3 or len(ref) < 2:
        raise DatasetError(f"an orientation reference must be (n, 3), got {ref.shape}")
    if len(ref) != n_points:
        ref = resample([ref], n_points)[0]
    return ref


def orient_bundle(x, ref, *, in_place=False):
    """Flip streamlines so that each runs in the same direction as ``ref``.

    A streamline is reversed when its reversed copy is closer to ``ref``
    (summed point distances over 12 equally spaced points), as in DIPY's
    ``orient_by_streamline``, computed for all streamlines at once.

    Parameters
    ----------
    x : ndarray, shape (N, P, 3)
        Resampled streamlines.
    ref : ndarray, shape (M, 3)
        Reference streamline (resampled to P points if M != P).
    in_place : bool, optional
        Modify ``x`` itself (also works on a writable memmap).

    Returns
    -------
    ndarray, shape (N, P, 3)
        The oriented streamlines (``x`` itself when ``in_place``).
    """
    if x.ndim != 3 or x.shape[2] != 3:
        raise DatasetError(f"expected streamlines of shape (N, P, 3), got {x.shape}")
    out = x if in_place else np.array(x, copy=True)
    ref = _match_points(ref, x.shape[1])
    for start in range(0, len(out), _CHUNK):
        block = out[start : start + _CHUNK]
        flip = np.flatnonzero(_flip_mask(block, ref))
        if flip.size:
            block[flip] = block[flip][:, ::-1]
    return out


def _canonical_direction(ref):
    """Reverse ``ref`` if needed so it runs toward + along its main axis."""
    span = ref[-1] - ref[0]
    axis = int(np.argmax(np.abs(span)))
    return ref[::-1].copy() if span[axis] < 0 else ref


def _choose_reference(x):
    """Pick the reference streamline of a bundle from (some of) its streamlines.

    The streamlines are roughly oriented (against the first, then against
    their mean); the one closest to the mean is the reference, turned to run
    toward + along its main axis. The choice does not depend on the input
    directions.
    """
    idx = np.round(_orient_indices(x.shape[1])).astype(np.intp)
    pick = np.unique(
        np.linspace(0, len(x) - 1, min(len(x), _MAX_REFERENCE_SAMPLE)).astype(np.intp)
    )
    sample = np.array(x[pick][:, idx], dtype=np.float32)
    orient_bundle(sample, sample[0], in_place=True)
    for _ in range(2):
        orient_bundle(sample, sample.mean(axis=0), in_place=True)
    distance = np.linalg.norm(sample - sample.mean(axis=0), axis=-1).mean(axis=1)
    ref = np.array(x[pick[int(np.argmin(distance))]], dtype=np.float32)
    return _canonical_direction(ref)


# ---------------------------------------------------------------------------
# the dataset


@dataclass
class StreamlineDataset:
    """Resampled, oriented streamlines with labels and attributes.

    Attributes
    ----------
    x : ndarray or memmap of float32, shape (N, n_points, 3)
        Streamlines in RAS+ mm, oriented within each bundle.
    labels : ndarray of int32, shape (N,)
        Index into ``bundle_names``.
    attribute : ndarray of float32, shape (N,)
        Conditioning value per streamline (length in mm, or a per-subject value).
    lengths : ndarray of float32, shape (N,)
        Length in mm of the original streamline, before resampling.
    subjects : ndarray of str, shape (N,)
        Subject of each streamline.
    bundle_names : list of str
        Label vocabulary, sorted.
    attribute_name : str
        ``"length"`` or the participants table column used.
    n_points : int
        Points per streamline.
    space : dict
        Space of the first input (:func:`aae_tract.io.space_from_sft`).
    orient_refs : dict of str to ndarray (n_points, 3)
        Reference streamline each bundle was oriented against.
    """

    x: np.ndarray
    labels: np.ndarray
    attribute: np.ndarray
    lengths: np.ndarray
    subjects: np.ndarray
    bundle_names: list
    attribute_name: str = "length"
    n_points: int = 256
    space: dict = field(default_factory=dict)
    orient_refs: dict = field(default_factory=dict)

    def __len__(self):
        return int(len(self.labels))

    def subset(self, indices):
        """Select streamlines.

        Parameters
        ----------
        indices : array_like of int or bool
            Rows to keep. A contiguous increasing range keeps ``x`` as a view
            (a memmap stays on disk); other selections copy those rows.

        Returns
        -------
        StreamlineDataset
            Same vocabulary, space and orientation references.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DatasetError(
                    f"boolean mask of shape {idx.shape} for a dataset of {len(self)}"
                )
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.intp).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DatasetError(f"indices out of range for a dataset of {len(self)}")
        if idx.size and idx[0] >= 0 and np.all(np.diff(idx) == 1):
            rows = slice(int(idx[0]), int(idx[-1]) + 1)
        else:
            rows = idx
        return StreamlineDataset(
            x=self.x[rows],
            labels=self.labels[rows],
            attribute=self.attribute[rows],
            lengths=self.lengths[rows],
            subjects=self.subjects[rows],
            bundle_names=list(self.bundle_names),
            attribute_name=self.attribute_name,
            n_points=self.n_points,
            space=dict(self.space),
            orient_refs=dict(self.orient_refs),
        )

    def bundle_mask(self, name):
        """Boolean mask of the streamlines of bundle ``name``.

        Raises
        ------
        UnknownBundleError
            ``name`` is not in ``bundle_names``.
        """
        from aae_tract.errors import UnknownBundleError

        if name not in self.bundle_names:
            raise UnknownBundleError(
                f"unknown bundle {name!r}; this dataset has "
                f"{', '.join(self.bundle_names)}"
            )
        return self.labels == self.bundle_names.index(name)


class _MemorySink:
    def __init__(self):
        self.blocks = []

    def append(self, block):
        self.blocks.append(block)

    def finish(self, n_points):
        if not self.blocks:
            return np.zeros((0, n_points, 3), dtype=np.float32)
        x = np.concatenate(self.blocks, axis=0)
        self.blocks = []
        return x


class _FileSink:
    def __init__(self, writer, n_points):
        self.appender = writer.appender("x", (n_points, 3), np.float32)
        self.writer = writer

    def append(self, block):
        self.appender.append(block)

    def finish(self, n_points):
        path = self.appender.close()
        return np.load(path, mmap_mode="r")


def _default_space(x):
    """A 1 mm grid that holds all streamlines, for data without a reference."""
    if len(x):
        low = np.floor(np.nanmin(x.reshape(-1, 3), axis=0)) - 1
        high = np.ceil(np.nanmax(x.reshape(-1, 3), axis=0)) + 1
    else:
        low, high = np.zeros(3), np.ones(3)
    affine = np.eye(4)
    affine[:3, 3] = low
    return {
        "affine": affine.tolist(),
        "dimensions": [int(d) for d in np.maximum(high - low + 1, 1)],
        "voxel_sizes": [1.0, 1.0, 1.0],
        "voxel_order": "RAS",
    }


def _assemble(
    parts, *, bundle_names, n_points, attribute_name, sink, orient_refs, space
):
    """Resample, measure and orient parts one by one, then build the dataset.

    A bundle without a given orientation reference gets one chosen from its
    first part (:func:`_choose_reference`), and every part is oriented as it
    arrives, so the streamlines are written once.

    ``parts`` yields ``(streamlines, bundle, subject, attribute)`` with
    ``attribute`` None (use length), a scalar or an array per streamline.
    """
    index = {name: i for i, name in enumerate(bundle_names)}
    refs = {
        name: _match_points(ref, n_points) for name, ref in (orient_refs or {}).items()
    }
    labels, attributes, lengths, subjects = [], [], [], []
    for streamlines, bundle, subject, value in parts:
        n = len(streamlines)
        if n == 0:
            continue
        part_lengths = streamline_lengths(streamlines)
        x_part = resample(streamlines, n_points)
        if bundle not in refs:
            refs[bundle] = _choose_reference(x_part)
        sink.append(orient_bundle(x_part, refs[bundle], in_place=True))
        lengths.append(part_lengths)
        labels.append(np.full(n, index[bundle], dtype=np.int32))
        if value is None:
            attributes.append(part_lengths.copy())
        else:
            value = np.asarray(value, dtype=np.float32)
            if value.ndim == 0:
                attributes.append(np.full(n, value, dtype=np.float32))
            elif value.shape == (n,):
                attributes.append(value)
            else:
                raise DatasetError(
                    f"bundle {bundle} of subject {subject}: {value.size} attribute "
                    f"values for {n} streamlines"
                )
        subjects.append(np.full(n, str(subject)))
    x = sink.finish(n_points)
    if len(x) == 0:
        raise DatasetError("no streamlines left to make a dataset")
    labels = np.concatenate(labels)
    return StreamlineDataset(
        x=x,
        labels=labels,
        attribute=np.concatenate(attributes).astype(np.float32),
        lengths=np.concatenate(lengths).astype(np.float32),
        subjects=np.concatenate(subjects).astype(str),
        bundle_names=list(bundle_names),
        attribute_name=attribute_name,
        n_points=int(n_points),
        space=space if space is not None else _default_space(x),
        orient_refs=refs,
    )


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
    if attribute == "length":
        values = [None] * len(sfts)
    elif attribute_values is None:
        raise DatasetError(
            f"attribute {attribute!r} needs attribute_values (a dict subject -> "
            "value or one value per tractogram)"
        )
    elif isinstance(attribute_values, dict):
        missing = sorted(set(subjects) - set(map(str, attribute_values)))
        if missing:
            raise DatasetError(
                f"attribute {attribute!r}: no value for subject(s) {', '.join(missing)}"
            )
        lookup = {str(k): v for k, v in attribute_values.items()}
        values = [lookup[s] for s in subjects]
    else:
        values = list(attribute_values)
        if len(values) != len(sfts):
            raise DatasetError(
                f"{len(sfts)} tractograms but {len(values)} attribute values"
            )

    space = None
    parts = []
    for i, (item, label, subject, value) in enumerate(
        zip(sfts, labels, subjects, values)
    ):
        if isinstance(item, StatefulTractogram):
            if space is None:
                space = _space_or_none(item)
            sft = item
            if sft.space != "rasmm" or sft.origin != "center":
                sft = StatefulTractogram.from_sft(item.streamlines, item)
                sft.to_rasmm()
                sft.to_center()
            streamlines = sft.streamlines
        elif isinstance(item, nib.streamlines.ArraySequence):
            streamlines = item
        else:
            streamlines = nib.streamlines.ArraySequence(
                [np.asarray(s, dtype=np.float32).reshape(-1, 3) for s in item]
            )
        keep, n_nonfinite, n_short = valid_streamline_mask(streamlines)
        if not keep.all():
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
            streamlines = streamlines[np.flatnonzero(keep)]
            if value is not None and np.ndim(value) == 1:
                value = np.asarray(value)[keep]
        parts.append((streamlines, label, subject, value))
    return _assemble(
        parts,
        bundle_names=sorted(set(labels)),
        n_points=n_points,
        attribute_name=attribute,
        sink=_MemorySink(),
        orient_refs=orient_refs,
        space=space,
    )


def _space_or_none(sft):
    try:
        return space_from_sft(sft)
    except Exception:  # an sft without a usable header
        return None


# ---------------------------------------------------------------------------
# participants table


def _subject_key(name):
    name = str(name).strip()
    stripped = re.sub(r"^sub[-_]?", "", name, flags=re.IGNORECASE)
    return str(int(stripped)) if stripped.isdigit() else stripped.lower()


def read_participants(path, column):
    """Read one numeric column of a BIDS-style ``participants.tsv``.

    Parameters
    ----------
    path : str or Path
        Tab-separated (``.tsv``) or comma-separated (``.csv``) table with a
        ``participant_id`` column.
    column : str
        The column to read (e.g. ``"age"``).

    Returns
    -------
    dict of str to float
        participant_id -> value.

    Raises
    ------
    DatasetError
        Missing file, no ``participant_id`` or ``column`` column, or a value
        that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: participants table not found")
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter=delimiter))
        fields = rows[0].keys() if rows else []
    fields = [f.strip() for f in fields if f is not None]
    if "participant_id" not in fields:
        raise DatasetError(
            f"{path}: no 'participant_id' column (columns: {', '.join(fields)})"
        )
    if column not in fields:
        raise DatasetError(
            f"{path}: no column {column!r} (columns: {', '.join(fields)})"
        )
    values = {}
    for row in rows:
        row = {(k or "").strip(): v for k, v in row.items()}
        pid = (row["participant_id"] or "").strip()
        raw = (row[column] or "").strip()
        try:
            value = float(raw)
        except ValueError:
            raise DatasetError(
                f"{path}: {column} of {pid} is {raw!r}, not a number"
            ) from None
        if not np.isfinite(value):
            raise DatasetError(f"{path}: {column} of {pid} is {raw!r}, not finite")
        values[pid] = value
    return values


def _subject_values(table, subjects, path, column):
    """Match subject folder names to participant ids (``sub-01`` == ``sub_1``)."""
    by_key = {}
    for pid, value in table.items():
        by_key.setdefault(_subject_key(pid), value)
    out, missing = {}, []
    for subject in subjects:
        if subject in table:
            out[subject] = table[subject]
        elif _subject_key(subject) in by_key:
            out[subject] = by_key[_subject_key(subject)]
        else:
            missing.append(subject)
    if missing:
        raise DatasetError(
            f"{path}: no {column} for subject(s) {', '.join(sorted(missing))}"
        )
    return out


def _find_participants(inputs, files):
    candidates = []
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    for item in inputs:
        if Path(item).is_dir():
            candidates.append(Path(item) / "participants.tsv")
    for bundle_file in files:
        candidates.append(bundle_file.path.parent / "participants.tsv")
        candidates.append(bundle_file.path.parent.parent / "participants.tsv")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------
# loading from files


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


def _default_inputs():
    try:
        from aae_tract.data_fetchers import fetch_minimal_bundles
    except ImportError as exc:
        raise DatasetError(
            "no inputs given and the embedded default (minimal_bundles) is not "
            f"available: {exc}"
        ) from exc
    return fetch_minimal_bundles()


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
    subjects = sorted({f.subject for f in files})
    bundle_names = sorted({f.bundle for f in files})

    subject_values = None
    participants_sig = None
    if attribute != "length":
        table_path = (
            Path(participants)
            if participants is not None
            else _find_participants(inputs, files)
        )
        if table_path is None:
            raise DatasetError(
                f"attribute {attribute!r} needs a participants.tsv with a "
                f"{attribute!r} column; none found beside the inputs, pass "
                "participants=<path>"
            )
        table = read_participants(table_path, attribute)
        subject_values = _subject_values(table, subjects, table_path, attribute)
        participants_sig = _cache.file_signature(table_path)

    key = None
    if cache_dir is not None:
        refs_sig = None
        if orient_refs:
            refs_sig = {
                k: _cache.make_key({"ref": np.asarray(v, np.float32).tobytes().hex()})
                for k, v in sorted(orient_refs.items())
            }
        key = _cache.make_key(
            {
                "files": [
                    [*_cache.file_signature(f.path), f.bundle, f.subject] for f in files
                ],
                "n_points": n_points,
                "attribute": attribute,
                "participants": participants_sig,
                "reference": _reference_signature(reference),
                "orient_refs": refs_sig,
            }
        )
        cached = _load_cached(cache_dir, key)
        if cached is not None:
            logger.info(
                "Loaded %d streamlines of %d bundles from %d subjects from the cache "
                "%s",
                len(cached),
                len(cached.bundle_names),
                len(np.unique(cached.subjects)),
                Path(cache_dir) / key,
            )
            return cached

    first_space = {}

    def parts():
        for bundle_file in tqdm(
            files, desc="Loading tractograms", unit="file", disable=None, leave=False
        ):
            sft = load_bundle(bundle_file.path, reference=reference)
            if not first_space:
                first_space.update(space_from_sft(sft))
            value = (
                None if subject_values is None else subject_values[bundle_file.subject]
            )
            yield sft.streamlines, bundle_file.bundle, bundle_file.subject, value

    writer = None
    try:
        if cache_dir is not None:
            writer = _cache.CacheWriter(cache_dir, key)
        sink = _MemorySink() if writer is None else _FileSink(writer, n_points)
        dataset = _assemble(
            parts(),
            bundle_names=bundle_names,
            n_points=n_points,
            attribute_name=attribute,
            sink=sink,
            orient_refs=orient_refs,
            space={},
        )
        dataset.space = dict(first_space)
        if writer is not None:
            dataset = _write_cache(writer, dataset, files)
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if cache_dir is not None and isinstance(exc, OSError):
            raise DatasetError(
                f"{cache_dir}: cannot write the dataset cache ({exc}); free some "
                "space or choose another cache folder"
            ) from exc
        raise
    logger.info(
        "Loaded %d streamlines of %d bundles from %d subjects (%d files)",
        len(dataset),
        len(bundle_names),
        len(subjects),
        len(files),
    )
    return dataset


_ARRAYS = ("x", "labels", "attribute", "lengths", "subjects")


def _write_cache(writer, dataset, files):
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
    reopened = _load_cached(writer.root, entry.name)
    if reopened is None:
        raise DatasetError(f"{entry}: the cache just written cannot be read back")
    return reopened


def _load_cached(cache_dir, key):
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


# ---------------------------------------------------------------------------
# split and normalisation


def split_dataset(ds, *, val_fraction=0.2, seed=0):
    """Split into training and validation sets.

    With two or more subjects, whole subjects go to validation (no subject in
    both); with one subject, streamlines are split. The split is a function
    of ``seed``.

    Parameters
    ----------
    ds : StreamlineDataset
        The dataset.
    val_fraction : float, optional
        Fraction of subjects (or of streamlines) for validation, in [0, 1).
    seed : int, optional
        Random seed.

    Returns
    -------
    (StreamlineDataset, StreamlineDataset)
        ``(train, val)``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    unique_subjects = np.unique(ds.subjects)
    if len(unique_subjects) >= 2:
        n_val = int(round(val_fraction * len(unique_subjects)))
        if val_fraction > 0:
            n_val = min(max(n_val, 1), len(unique_subjects) - 1)
        val_subjects = rng.permutation(unique_subjects)[:n_val]
        val_mask = np.isin(ds.subjects, val_subjects)
        logger.info(
            "Split by subject: validation subjects %s", ", ".join(sorted(val_subjects))
        )
    else:
        n = len(ds)
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        val_mask = np.zeros(n, dtype=bool)
        val_mask[rng.permutation(n)[:n_val]] = True
        logger.info("Split by streamline (one subject): %d for validation", n_val)
    return ds.subset(np.flatnonzero(~val_mask)), ds.subset(np.flatnonzero(val_mask))


class Normalizer:
    """Centre and scale coordinates: ``(x - mean) / scale``.

    ``mean`` is the mean point (3,), ``scale`` the standard deviation of all
    centred coordinates (one number, so shapes keep their proportions).

    Parameters
    ----------
    mean : array_like (3,), optional
    scale : float, optional
    """

    def __init__(self, mean=None, scale=None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = None if scale is None else float(scale)
        if self.mean is not None and self.mean.shape != (3,):
            raise DatasetError(f"Normalizer mean must have 3 values, got {mean!r}")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise DatasetError(f"Normalizer scale must be > 0, got {scale!r}")

    def fit(self, x):
        """Fit on streamlines ``x`` (N, P, 3); memory-mapped input is read by chunks.

        Returns
        -------
        Normalizer
            ``self``.
        """
        if len(x) == 0:
            raise DatasetError("cannot fit a Normalizer on no streamlines")
        total = np.zeros(3)
        count = 0
        for start in range(0, len(x), _NORM_CHUNK):
            block = np.asarray(
                x[start : start + _NORM_CHUNK], dtype=np.float64
            ).reshape(-1, 3)
            total += block.sum(axis=0)
            count += len(block)
        mean = total / count
        squares = 0.0
        for start in range(0, len(x), _NORM_CHUNK):
            block = np.asarray(
                x[start : start + _NORM_CHUNK], dtype=np.float64
            ).reshape(-1, 3)
            squares += float(((block - mean) ** 2).sum())
        scale = float(np.sqrt(squares / (count * 3)))
        self.mean = mean
        self.scale = scale if scale > 0 else 1.0
        return self

    def _check(self):
        if self.mean is None or self.scale is None:
            raise AAETractError("Normalizer used before fit() or from_dict()")

    def transform(self, x):
        """Normalise coordinates; returns float32 of the same shape."""
        self._check()
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(
            np.float32
        )

    def inverse(self, x):
        """Undo :meth:`transform`; returns float32 mm."""
        self._check()
        return (np.asarray(x, dtype=np.float32) * self.scale + self.mean).astype(
            np.float32
        )

    def to_dict(self):
        """JSON-able ``{"mean": [3 floats], "scale": float}``."""
        self._check()
        return {"mean": [float(v) for v in self.mean], "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, data):
        """Rebuild from :meth:`to_dict` output."""
        try:
            return cls(mean=data["mean"], scale=data["scale"])
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"invalid Normalizer description {data!r}") from exc

    def __repr__(self):
        mean = None if self.mean is None else [round(float(v), 4) for v in self.mean]
        return f"Normalizer(mean={mean}, scale={self.scale})"
