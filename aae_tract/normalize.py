"""Normalising streamline coordinates for the networks, and undoing it.

The statistics are fitted on the training streamlines and saved inside the
model file, so generation maps the decoder's output back to the same mm space.
"""

from __future__ import annotations

import numpy as np

from aae_tract.errors import AAETractError, DatasetError
from aae_tract.rows import iter_blocks

__all__ = ["Normalizer"]


def _point_blocks(x):
    """The points of ``x`` (N, P, 3) as float64 (k, 3) blocks, chunk by chunk
    (a memory-mapped ``x`` is never read whole, nor kept in memory)."""
    for _, block in iter_blocks(x):
        yield np.asarray(block, dtype=np.float64).reshape(-1, 3)


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
        """Fit on streamlines ``x`` (N, P, 3), read by chunks (for a memmap or
        :class:`~aae_tract.rows.StreamlineRows`, in bounded memory).

        Returns
        -------
        Normalizer
            ``self``.
        """
        if len(x) == 0:
            raise DatasetError("cannot fit a Normalizer on no streamlines")
        total = np.zeros(3)
        count = 0
        for block in _point_blocks(x):
            total += block.sum(axis=0)
            count += len(block)
        mean = total / count
        squares = sum(float(((block - mean) ** 2).sum()) for block in _point_blocks(x))
        scale = float(np.sqrt(squares / (count * 3)))
        self.mean = mean
        self.scale = scale if scale > 0 else 1.0
        return self

    def _check(self):
        if self.mean is None or self.scale is None:
            raise AAETractError("Normalizer used before fit() or from_dict()")

    def transform(self, x, *, precise=True):
        """Normalise coordinates; returns float32 of the same shape.

        Parameters
        ----------
        x : array, shape (..., 3)
            Coordinates (mm).
        precise : bool, optional
            Compute in float64 and round once (False: in float32, faster
            on a CPU, within a few float32 roundings of the precise
            result; for a network that computes in a lower precision).
        """
        self._check()
        if not precise:
            x = np.asarray(x, dtype=np.float32) - self.mean.astype(np.float32)
            x /= np.float32(self.scale)
            return x
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
