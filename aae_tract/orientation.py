"""Orienting the streamlines of a bundle so that they all run the same way.

A streamline and its reverse are the same fibre path; a model sees ordered
points, so every streamline of a bundle is turned to run like one reference
streamline (:func:`orient_bundle`), chosen from the bundle itself
(:func:`choose_reference`) or given (e.g. by a trained model).
"""

from __future__ import annotations

import numpy as np

from aae_tract.errors import DatasetError
from aae_tract.rows import iter_blocks
from aae_tract.streamlines import resample

__all__ = [
    "as_reference",
    "choose_reference",
    "flip_mask",
    "orient_bundle",
    "reference_distance",
    "reference_distances",
]

_CHUNK = 16384
_N_ORIENT_POINTS = 12
_MAX_REFERENCE_SAMPLE = 256


def _orient_indices(n_points):
    return np.unique(np.linspace(0, n_points - 1, min(n_points, _N_ORIENT_POINTS)))


def _flip_mask(x, ref):
    """True where the reversed streamline is closer to ``ref`` (DIPY semantics)."""
    return reference_distances(x, [ref])[0][:, 0]


def as_reference(ref, n_points):
    """An orientation reference as a float32 (n_points, 3) array.

    Parameters
    ----------
    ref : array_like, shape (n, 3)
        A streamline with at least 2 points.
    n_points : int
        Points of the streamlines it orients (``ref`` is resampled to them).

    Returns
    -------
    ndarray of float32, shape (n_points, 3)

    Raises
    ------
    DatasetError
        ``ref`` is not an (n, 3) array with n >= 2.
    """
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
    ref = as_reference(ref, x.shape[1])
    for start in range(0, len(out), _CHUNK):
        block = out[start : start + _CHUNK]
        flip = np.flatnonzero(_flip_mask(block, ref))
        if flip.size:
            block[flip] = block[flip][:, ::-1]
    return out


def flip_mask(x, ref):
    """Which streamlines :func:`orient_bundle` would reverse, block by block.

    Parameters
    ----------
    x : ndarray, memmap or StreamlineRows, shape (N, P, 3)
        Resampled streamlines (read :data:`_CHUNK` at a time).
    ref : ndarray, shape (M, 3)
        Reference streamline (resampled to P points if M != P).

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    ref = as_reference(ref, x.shape[1])
    mask = np.zeros(len(x), dtype=bool)
    for start, block in iter_blocks(x, _CHUNK):
        mask[start : start + len(block)] = _flip_mask(block, ref)
    return mask


def reference_distance(x, ref):
    """Which streamlines :func:`orient_bundle` would reverse, and how far each
    lies from ``ref``.

    The distance is the mean distance (mm) between the streamline and
    ``ref`` over the 12 equally spaced points that orient it, in the point
    order closer to ``ref``: a coarse, orientation-free MDF.

    Parameters
    ----------
    x : ndarray, shape (N, P, 3)
        Resampled streamlines.
    ref : ndarray, shape (M, 3)
        Reference streamline (resampled to P points if M != P).

    Returns
    -------
    flip : ndarray of bool, shape (N,)
    distance : ndarray of float32, shape (N,)
    """
    flip, distance = reference_distances(x, [ref])
    return flip[:, 0], distance[:, 0]


def reference_distances(x, refs):
    """:func:`reference_distance` to each of several references at once.

    Parameters
    ----------
    x : ndarray, shape (N, P, 3)
        Resampled streamlines.
    refs : sequence of K arrays of shape (M, 3)
        Reference streamlines (each resampled to P points if M != P).

    Returns
    -------
    flip : ndarray of bool, shape (N, K)
    distance : ndarray of float32, shape (N, K)
    """
    idx = np.round(_orient_indices(x.shape[1])).astype(np.intp)
    ref = np.stack([as_reference(r, x.shape[1])[idx] for r in refs])  # (K, I, 3)
    # one coordinate at a time over contiguous (N, K, I) arrays: twice as
    # fast as a sum over the last axis of three
    sub = np.asarray(x[:, idx], dtype=np.float32).transpose(2, 0, 1)
    sub = np.ascontiguousarray(sub)[:, :, None, :]  # (3, N, 1, I)
    ref = np.ascontiguousarray(ref.transpose(2, 0, 1))[:, None]  # (3, 1, K, I)

    def summed(a):
        squared = np.square(a[0] - ref[0])
        squared += np.square(a[1] - ref[1])
        squared += np.square(a[2] - ref[2])
        return np.sqrt(squared, out=squared).sum(axis=-1)

    direct, flipped = summed(sub), summed(sub[..., ::-1])
    return flipped < direct, np.minimum(direct, flipped) / len(idx)


def _canonical_direction(ref):
    """Reverse ``ref`` if needed so it runs toward + along its main axis."""
    span = ref[-1] - ref[0]
    axis = int(np.argmax(np.abs(span)))
    return ref[::-1].copy() if span[axis] < 0 else ref


def choose_reference(x):
    """Pick the reference streamline of a bundle from (some of) its streamlines.

    The streamlines are roughly oriented (against the first, then against
    their mean); the one closest to the mean is the reference, turned to run
    toward + along its main axis. The choice does not depend on the input
    directions.

    Parameters
    ----------
    x : ndarray, shape (N, P, 3)
        Resampled streamlines of one bundle (at most 256 of them, evenly
        spaced, are looked at).

    Returns
    -------
    ndarray of float32, shape (P, 3)
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
