"""Rows of a streamline array read on demand: splits that are not copies.

A split of a memory-mapped dataset (:meth:`StreamlineDataset.subset
<aae_tract.dataset.StreamlineDataset.subset>`) is a :class:`StreamlineRows`:
the parent array and, for each row of the split, its place in the parent;
after registration also the affine that moves it and whether it is
reversed. Rows are read when they are asked for (``rows[i]``,
``rows[mask]``, ``rows[a:b]``, ``np.asarray(rows)``), in increasing order of
their place in the file.

A process's resident memory counts the pages of a memory-mapped file it has
read until it lets them go, and the kernel maps up to 64 KiB around each
page read (fault-around), so gathering random rows of a 3 GiB cache would
soon leave gigabytes resident. After every read the pages of the map are
handed back (``madvise(MADV_DONTNEED)``: they stay in the page cache, so
reading them again costs no disk access; with the gather, about 0.5 ms per
batch of 64 random rows of 256 points): a pass over a map of any size keeps
the process's memory bounded by the rows it asked for.
"""

from __future__ import annotations

import mmap

import numpy as np

from aae_tract.errors import DatasetError

__all__ = [
    "StreamlineRows",
    "apply_affine",
    "as_rows",
    "iter_blocks",
    "release_pages",
    "take",
]

#: Rows per block of :func:`iter_blocks`.
BLOCK_ROWS = 4096


def apply_affine(x, matrix):
    """Streamlines ``x`` (N, P, 3) moved by the 4x4 ``matrix``, as float32."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return (x @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)


def release_pages(array):
    """Hand back the pages of ``array``'s memory map that the process holds.

    Parameters
    ----------
    array : ndarray
        A ``np.memmap`` (or a view of one); anything else is left alone.

    Returns
    -------
    bool
        Whether pages were released (False: not a map, or the system cannot).
    """
    mapping = getattr(array, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mapping is None or advice is None:
        return False
    try:
        mapping.madvise(advice)
    except (OSError, ValueError):  # closed, or refused by the system
        return False
    return True


def _gather(base, src):
    """``base[src]`` as float32, read in increasing order of ``src``."""
    if src.size == 0:
        return np.empty((0, *base.shape[1:]), dtype=np.float32)
    order = None
    steps = np.diff(src)
    if np.any(steps < 0):
        order = np.argsort(src, kind="stable")
        src = src[order]
        steps = np.diff(src)
    if np.all(steps == 1):
        block = np.array(base[src[0] : src[-1] + 1], dtype=np.float32)
    else:
        block = np.asarray(base[src], dtype=np.float32)
    if order is None:
        return block
    out = np.empty_like(block)
    out[order] = block
    return out


def _positions(key, n):
    """Positions in a sequence of ``n`` picked by ``key`` (slice, mask, ints)."""
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.intp)
    idx = np.asarray(key)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean index of shape {idx.shape} for {n} rows")
        return np.flatnonzero(idx)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise IndexError(f"rows must be picked by integers, got {idx.dtype}")
    idx = idx.astype(np.intp).reshape(-1)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return np.where(idx < 0, idx + n, idx)


def _compose(old, new):
    """Per-row affines ``new`` after ``old``, each a (matrices, which) pair."""
    if old is None:
        return new
    (old_m, old_w), (new_m, new_w) = old, new
    code = (old_w + 1).astype(np.int64) * (len(new_m) + 1) + (new_w + 1)
    pairs, which = np.unique(code, return_inverse=True)
    eye = np.eye(4)
    table = []
    for c in pairs:
        a, b = divmod(int(c), len(new_m) + 1)
        first = old_m[a - 1] if a else eye
        second = new_m[b - 1] if b else eye
        table.append(second @ first)
    return np.asarray(table), which.astype(np.int32).reshape(-1)


class StreamlineRows:
    """Some rows of a (memory-mapped) streamline array, read when asked for.

    Behaves as a read-only float32 array of shape (N, P, 3) for reading:
    ``len``, ``shape``, indexing (the first index picks rows; it may be an
    int, a slice, a boolean mask or an array of ints, followed by indices
    of the points and coordinates), iteration and ``np.asarray``.

    Parameters
    ----------
    base : ndarray or np.memmap, shape (M, P, 3)
        The parent array; never written.
    index : array of int, shape (N,), optional
        Row of ``base`` of each row; None: all rows of ``base``.
    affines : (ndarray (k, 4, 4), ndarray of int (N,)), optional
        Matrices and, per row, which one moves it (-1: none).
    flip : ndarray of bool, shape (N,), optional
        Rows whose point order is reversed.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, base, index=None, *, affines=None, flip=None):
        if isinstance(base, StreamlineRows):
            raise DatasetError("StreamlineRows of StreamlineRows: use subset()")
        self.base = base
        self.index = None if index is None else np.asarray(index, dtype=np.intp)
        self.affines = affines
        self.flip = flip

    # -- array-like ------------------------------------------------------------
    @property
    def shape(self):
        n = len(self.base) if self.index is None else len(self.index)
        return (n, *self.base.shape[1:])

    @property
    def size(self):
        return int(np.prod(self.shape))

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"StreamlineRows(shape={self.shape}, base={type(self.base).__name__})"

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=np.float32)
        for start, block in iter_blocks(self):
            out[start : start + len(block)] = block
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self):
        for _, block in iter_blocks(self):
            yield from block

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:
            return np.asarray(self)[(Ellipsis, *rest)]
        if isinstance(key, (int, np.integer)):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return self.read(np.array([key % n]))[0][rest]
        block = self.read(_positions(key, len(self)))
        return block[(slice(None), *rest)] if rest else block

    def astype(self, dtype, copy=True):
        """The rows read as a new ndarray of ``dtype`` (always a copy)."""
        return np.asarray(self).astype(dtype, copy=False)

    # -- reading -----------------------------------------------------------------
    def read(self, positions):
        """Rows at ``positions`` (array of int) as a new float32 array."""
        positions = np.asarray(positions, dtype=np.intp)
        src = positions if self.index is None else self.index[positions]
        block = _gather(self.base, src)
        release_pages(self.base)
        if self.affines is not None:
            matrices, which = self.affines
            picked = which[positions]
            for k in np.unique(picked[picked >= 0]):
                rows = picked == k
                block[rows] = apply_affine(block[rows], matrices[k])
        if self.flip is not None:
            rows = self.flip[positions]
            block[rows] = block[rows, ::-1]
        return block

    # -- new views -----------------------------------------------------------------
    def subset(self, key):
        """The rows picked by ``key`` (slice, mask, ints), still not read."""
        positions = _positions(key, len(self))
        index = positions if self.index is None else self.index[positions]
        affines = None
        if self.affines is not None:
            affines = (self.affines[0], self.affines[1][positions])
        flip = None if self.flip is None else self.flip[positions]
        return StreamlineRows(self.base, index, affines=affines, flip=flip)

    def moved(self, matrices, which):
        """These rows moved by affines, row ``i`` by ``matrices[which[i]]``.

        Parameters
        ----------
        matrices : array_like, shape (k, 4, 4)
        which : array of int, shape (N,)
            -1: the row is not moved.

        Returns
        -------
        StreamlineRows
            After the affines these rows already had.
        """
        new = (np.asarray(matrices, np.float64), np.asarray(which, np.int32))
        if new[1].shape != (len(self),):
            raise DatasetError(f"{new[1].shape} affine choices for {len(self)} rows")
        out = self._copy()
        out.affines = _compose(self.affines, new)
        return out

    def flipped(self, mask):
        """These rows with those of boolean ``mask`` reversed (again)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise DatasetError(f"flip mask of shape {mask.shape} for {len(self)} rows")
        out = self._copy()
        out.flip = mask.copy() if self.flip is None else self.flip ^ mask
        return out

    def _copy(self):
        return StreamlineRows(
            self.base, self.index, affines=self.affines, flip=self.flip
        )


def is_lazy(x):
    """Whether ``x`` is read on demand (a memory map or :class:`StreamlineRows`)."""
    return isinstance(x, (np.memmap, StreamlineRows))


def as_rows(x):
    """``x`` as something that reads rows with bounded memory.

    Returns
    -------
    StreamlineRows or ndarray
        A :class:`StreamlineRows` over a memory map (so its pages are
        released as it is read), ``x`` itself otherwise.
    """
    if isinstance(x, np.memmap):
        return StreamlineRows(x)
    return x


def take(x, key):
    """The rows of ``x`` picked by ``key``, not read when ``x`` is read on demand.

    Parameters
    ----------
    x : ndarray, np.memmap or StreamlineRows
    key : slice, boolean mask or array of int

    Returns
    -------
    StreamlineRows or ndarray
        A :class:`StreamlineRows` for a map or rows, ``x[key]`` for an array.
    """
    if is_lazy(x):
        return as_rows(x).subset(key)
    return x[key]


def per_bundle_rows(labels, per_bundle, seed):
    """Rows keeping at most ``per_bundle`` of each label (a seeded sample).

    Parameters
    ----------
    labels : array of int
        Bundle index of each row.
    per_bundle : int
        Most rows kept of one bundle.
    seed : int
        Seed of the sample.

    Returns
    -------
    ndarray of int or None
        The rows kept, in increasing order; None when no bundle has more
        than ``per_bundle`` (keep them all).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=1)
    if counts.max(initial=0) <= per_bundle:
        return None
    rng = np.random.default_rng([int(seed), int(per_bundle)])
    picked = []
    for i in np.flatnonzero(counts):
        rows = np.flatnonzero(labels == i)
        if rows.size > per_bundle:
            rows = rng.choice(rows, per_bundle, replace=False)
        picked.append(rows)
    return np.sort(np.concatenate(picked))


def iter_blocks(x, rows=BLOCK_ROWS):
    """``(start, block)`` pairs covering ``x`` in order, ``rows`` rows a block.

    A memory-mapped ``x`` is read through :class:`StreamlineRows`, so a pass
    over it does not keep its pages.
    """
    x = as_rows(x)
    for start in range(0, len(x), rows):
        if isinstance(x, StreamlineRows):
            stop = min(start + rows, len(x))
            yield start, x.read(np.arange(start, stop))
        else:
            yield start, x[start : start + rows]
