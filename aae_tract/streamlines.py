"""Operations on streamline geometry: resampling, lengths, MDF distances.

Thin, vectorised layers over DIPY (``set_number_of_points``, ``length``,
``bundles_distances_mdf``) that take an ArraySequence, a list of (n, 3)
arrays or an (N, P, 3) array alike.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from aae_tract.errors import AAETractError, DatasetError

__all__ = ["nearest_mdf", "resample", "streamline_lengths"]

_MDF_CHUNK = 512


def _as_sequence(streamlines):
    """Streamlines as something DIPY's C routines take (float32/64 arrays)."""
    if isinstance(streamlines, nib.streamlines.ArraySequence):
        return streamlines
    if isinstance(streamlines, np.ndarray) and streamlines.ndim == 3:
        return streamlines
    return [np.asarray(s, dtype=np.float32) for s in streamlines]


def _stacked(out, n_points):
    """DIPY's resampled streamlines as one (N, n_points, 3) array."""
    if not isinstance(out, nib.streamlines.ArraySequence):
        return np.stack(out)
    data = np.asarray(out._data)
    compact = len(data) == len(out) * n_points and np.array_equal(
        out._offsets, np.arange(len(out)) * n_points
    )
    data = data if compact else np.asarray(out.get_data())
    return data.reshape(len(out), n_points, 3)


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
    if isinstance(streamlines, nib.streamlines.ArraySequence):
        fewest = int(np.min(streamlines._lengths))
    else:
        fewest = min(len(s) for s in streamlines)
    if fewest < 2:
        raise DatasetError(
            f"streamlines need at least 2 points each to be resampled; one has {fewest}"
        )
    out = set_number_of_points(streamlines, nb_points=n_points)
    return np.ascontiguousarray(_stacked(out, n_points), dtype=np.float32)


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


def _same_points(streamlines, reference):
    a = np.ascontiguousarray(streamlines, dtype=np.float32)
    b = np.ascontiguousarray(reference, dtype=np.float32)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise AAETractError(
            f"MDF needs streamlines with the same number of points, got "
            f"{a.shape} and {b.shape}"
        )
    if len(b) == 0:
        raise AAETractError("MDF against an empty reference set")
    return a, b


def nearest_mdf(streamlines, reference, *, chunk=_MDF_CHUNK, exclude_self=False):
    """MDF distance from each streamline to its nearest reference streamline.

    Parameters
    ----------
    streamlines : ndarray, shape (N, P, 3)
    reference : ndarray, shape (M, P, 3)
        Same number of points ``P``.
    chunk : int
        Rows of the distance matrix computed at once.
    exclude_self : bool, optional
        ``reference`` is ``streamlines`` itself: row ``i`` skips column ``i``,
        giving each streamline's nearest *other* streamline (inf for a set
        of one).

    Returns
    -------
    distance : ndarray of float64, shape (N,)
        DIPY's MDF (mm) to the nearest reference streamline.
    index : ndarray of int, shape (N,)
        Index of that reference streamline.
    """
    from dipy.tracking.distances import bundles_distances_mdf

    a, b = _same_points(streamlines, reference)
    if exclude_self and len(a) != len(b):
        raise AAETractError("exclude_self needs the reference to be the streamlines")
    distance = np.empty(len(a), dtype=np.float64)
    index = np.empty(len(a), dtype=np.intp)
    refs = list(b)
    for start in range(0, len(a), chunk):
        d = bundles_distances_mdf(list(a[start : start + chunk]), refs)
        rows = np.arange(len(d))
        if exclude_self:
            d[rows, start + rows] = np.inf
        best = np.argmin(d, axis=1)
        index[start : start + len(d)] = best
        distance[start : start + len(d)] = d[rows, best]
    return distance, index
