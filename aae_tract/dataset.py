"""The training dataset: resampled, oriented streamlines with their labels.

:class:`StreamlineDataset` holds the arrays; :func:`assemble` builds one from
parts (one tractogram of one bundle of one subject at a time), resampling,
measuring and orienting each part as it arrives and handing its rows to a
sink: :class:`MemorySink` keeps them in RAM, the cache's sink
(:class:`aae_tract.dataset_cache.FileSink`) writes them to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aae_tract.errors import DatasetError, UnknownBundleError
from aae_tract.io import bbox_space
from aae_tract.orientation import as_reference, choose_reference, orient_bundle
from aae_tract.rows import take
from aae_tract.streamlines import resample, streamline_lengths

__all__ = ["MemorySink", "StreamlineDataset", "assemble"]


@dataclass
class StreamlineDataset:
    """Resampled, oriented streamlines with labels and attributes.

    Attributes
    ----------
    x : ndarray, memmap or StreamlineRows of float32, shape (N, n_points, 3)
        Streamlines in RAS+ mm, oriented within each bundle; a split of a
        memory-mapped dataset is a :class:`~aae_tract.rows.StreamlineRows`
        (rows of the map read when asked for).
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
    registration : aae_tract.registration.Registration or None
        How the subjects were brought into a common space (None: as read).
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
    registration: object = None

    def __len__(self):
        return int(len(self.labels))

    def _rows(self, indices):
        """A slice for a contiguous increasing range, else an index array."""
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
            return slice(int(idx[0]), int(idx[-1]) + 1)
        return idx

    def subset(self, indices):
        """Select streamlines.

        Parameters
        ----------
        indices : array_like of int or bool
            Rows to keep. From an ``x`` read on demand (a memmap, or rows of
            one) nothing is copied: a contiguous increasing range keeps a
            memmap as a view of it, other selections give a
            :class:`~aae_tract.rows.StreamlineRows` of the rows picked. From
            an array in memory, those rows are copied (a contiguous range is
            a view).

        Returns
        -------
        StreamlineDataset
            Same vocabulary, space and orientation references.
        """
        rows = self._rows(indices)
        return StreamlineDataset(
            x=self._x_rows(rows),
            labels=self.labels[rows],
            attribute=self.attribute[rows],
            lengths=self.lengths[rows],
            subjects=self.subjects[rows],
            bundle_names=list(self.bundle_names),
            attribute_name=self.attribute_name,
            n_points=self.n_points,
            space=dict(self.space),
            orient_refs=dict(self.orient_refs),
            registration=self.registration,
        )

    def _x_rows(self, rows):
        """``x`` at ``rows`` (a slice or an index array), lazily if it is."""
        if isinstance(self.x, np.memmap) and isinstance(rows, slice):
            return self.x[rows]
        return take(self.x, rows)

    def bundle_mask(self, name):
        """Boolean mask of the streamlines of bundle ``name``.

        Raises
        ------
        UnknownBundleError
            ``name`` is not in ``bundle_names``.
        """
        if name not in self.bundle_names:
            raise UnknownBundleError(
                f"unknown bundle {name!r}; this dataset has "
                f"{', '.join(self.bundle_names)}"
            )
        return self.labels == self.bundle_names.index(name)


class MemorySink:
    """Where :func:`assemble` puts the resampled rows: a list of blocks in RAM."""

    def __init__(self):
        self.blocks = []

    def append(self, block):
        """Keep one (n, n_points, 3) block."""
        self.blocks.append(block)

    def finish(self, n_points):
        """All blocks as one (N, n_points, 3) array."""
        if not self.blocks:
            return np.zeros((0, n_points, 3), dtype=np.float32)
        x = np.concatenate(self.blocks, axis=0)
        self.blocks = []
        return x


def _part_attribute(value, part_lengths, bundle, subject):
    """One attribute value per streamline of a part."""
    n = len(part_lengths)
    if value is None:
        return part_lengths.copy()
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 0:
        return np.full(n, value, dtype=np.float32)
    if value.shape == (n,):
        return value
    raise DatasetError(
        f"bundle {bundle} of subject {subject}: {value.size} attribute "
        f"values for {n} streamlines"
    )


def assemble(
    parts, *, bundle_names, n_points, attribute_name, sink, orient_refs, space
):
    """Resample, measure and orient parts one by one, then build the dataset.

    A bundle without a given orientation reference gets one chosen from its
    first part (:func:`aae_tract.orientation.choose_reference`), and every part
    is oriented as it arrives, so the streamlines are written once.

    Parameters
    ----------
    parts : iterable of (streamlines, bundle, subject, attribute)
        ``attribute`` None (use length), a scalar or an array per streamline.
    bundle_names : list of str
        The label vocabulary (every part's bundle is in it).
    n_points : int
        Points per resampled streamline.
    attribute_name : str
        ``"length"`` or the name of the attribute given with the parts.
    sink : MemorySink or aae_tract.dataset_cache.FileSink
        Takes the resampled, oriented rows.
    orient_refs : dict of str to (n, 3) array or None
        Orientation references given; other bundles get one from the data.
    space : dict or None
        The dataset's space; None: a 1 mm grid around the streamlines.

    Returns
    -------
    StreamlineDataset
        ``x`` as the sink finishes it (an array, or a memmap of the cache).

    Raises
    ------
    DatasetError
        No streamline in any part, or attribute values that do not match a
        part.
    """
    index = {name: i for i, name in enumerate(bundle_names)}
    refs = {name: as_reference(r, n_points) for name, r in (orient_refs or {}).items()}
    labels, attributes, lengths, subjects = [], [], [], []
    for streamlines, bundle, subject, value in parts:
        n = len(streamlines)
        if n == 0:
            continue
        part_lengths = streamline_lengths(streamlines)
        x_part = resample(streamlines, n_points)
        if bundle not in refs:
            refs[bundle] = choose_reference(x_part)
        sink.append(orient_bundle(x_part, refs[bundle], in_place=True))
        lengths.append(part_lengths)
        labels.append(np.full(n, index[bundle], dtype=np.int32))
        attributes.append(_part_attribute(value, part_lengths, bundle, subject))
        subjects.append(np.full(n, str(subject)))
    x = sink.finish(n_points)
    if len(x) == 0:
        raise DatasetError("no streamlines left to make a dataset")
    return StreamlineDataset(
        x=x,
        labels=np.concatenate(labels),
        attribute=np.concatenate(attributes).astype(np.float32),
        lengths=np.concatenate(lengths).astype(np.float32),
        subjects=np.concatenate(subjects).astype(str),
        bundle_names=list(bundle_names),
        attribute_name=attribute_name,
        n_points=int(n_points),
        space=space if space is not None else bbox_space(x),
        orient_refs=refs,
    )
