"""How good a trained model is, measured on held-out streamlines.

:func:`evaluate` computes the metrics of ``metrics.json`` (names and
definitions in the project's architecture notes):

``recon_mdf_mm``
    Mean MDF (mm) between held-out streamlines and their reconstructions.
``label_fidelity``
    Fraction of streamlines generated for a bundle (at attribute values drawn
    from its held-out streamlines) whose MDF-nearest held-out streamline
    belongs to that bundle; mean over bundles.
``length_mae_mm``
    For target lengths spread over each bundle's 5-95 percentile training
    range, ``|median generated length - target|``; mean over targets and
    bundles (length models only).
``ar_spearman``
    Spearman rho between latent dimension 0 of the encoded held-out
    streamlines and their attribute; mean over bundles.
``diversity_ratio``
    Mean pairwise MDF among generated streamlines of a bundle over the same
    among held-out ones; mean over bundles (1 is ideal, a collapse gives 0).
``density_dice``
    Dice of the binarised density maps (2 mm voxels) of generated and held-out
    streamlines of a bundle; mean over bundles.
``curvature_ratio``
    Median over generated streamlines of their mean turning angle per mm
    (streamlines resampled at 1 mm steps) over the same median for held-out
    streamlines; mean over bundles (1 is ideal, > 1: wigglier than real).
``rough_fraction``
    Fraction of generated streamlines that turn more than
    :data:`ROUGH_FACTOR` (3) times as much per mm as the median held-out
    streamline of the bundle (:func:`rough_fraction`): crumpled streamlines,
    which a median such as ``curvature_ratio`` does not see; the worst bundle
    at the top level (0 between two halves of the real bundles of the
    phantom and of the embedded default; compare with the reference row).
``hooked_fraction``
    Fraction of generated streamlines one of whose ends turns more, within
    :data:`END_MM` (10) mm of it, than :data:`HOOK_QUANTILE` (99 %) of the
    held-out streamlines' ends do (:func:`hooked_fraction`): tips that curl
    back, which the whole streamline's turning (``rough_fraction``) hardly
    sees; the worst bundle at the top level (compare with the reference
    row, about 1 - :data:`HOOK_QUANTILE` by construction).
``recon_length_ratio``
    Length of the reconstruction over the length of the input, median per
    length quintile of the held-out streamlines (``recon_length_ratio_quintiles``
    in ``per_bundle``); the quintile farthest from 1 of the bundle, and of all
    bundles at the top level (worst case).
``length_error_pct``, ``length_error_pct_mean``
    ``|median generated length - target| / target`` in percent at the targets
    of ``length_mae_mm`` (``length_error_pct_per_target`` in ``per_bundle``):
    the worst target (worst bundle at the top level) and the mean over targets
    (mean over bundles); length models only.
``shape_similarity``
    DIPY's BUAN bundle shape similarity (bundle adjacency of QuickBundlesX
    centroids, 6 mm threshold) of generated and held-out streamlines; mean over
    bundles (1: same shape, 0: disjoint).
``realism_c2st``
    Classifier two-sample test: cross-validated accuracy of a gradient-boosting
    classifier telling generated from held-out streamlines by their texture
    (turning-angle statistics and length); mean over bundles (0.5: the
    classifier cannot tell them apart, 1: always can).
``prior_match``
    Classifier two-sample test of the held-out encodings of a bundle (one
    sample of q(z | x) each with a Gaussian posterior) against as many
    samples of the prior (:func:`prior_match`); mean over bundles
    (0.5: indistinguishable; the reference row compares two prior samples of
    the same size, the chance level).
``novelty_ratio``
    Median MDF from generated streamlines to their nearest training
    streamline of the bundle, over the same for held-out real streamlines
    (:func:`novelty_ratio`); mean over bundles (1: as new as unseen real
    data, near 0: copies). Needs the training streamlines (``train``).
``band_precision``
    Per length quintile of the held-out streamlines, the share of generated
    streamlines on the manifold of the bundle's held-out streamlines
    (:func:`manifold_precision`: inside the ball of some real streamline,
    its radius the MDF to that streamline's 3rd nearest real neighbour;
    :func:`band_precision`; :data:`BAND_STREAMLINES` generated at lengths
    drawn from the held-out ones, at most :data:`BAND_REAL_MAX` held-out
    ones), minus the same share for the bundle's real *training*
    streamlines (at most :data:`BAND_STREAMLINES`); the lowest band of the
    bundle, mean over bundles at the top level (0: every band lies on the new
    subjects' bundle as often as the training subjects' real streamlines
    do; -0.2: in one band, 20 in 100 more generated streamlines leave it;
    needs ``train``). It sees streamlines of one length band (short
    fragments, say) that cross or leave the bundle, which whole-bundle
    measures average away. The shares themselves are in ``per_bundle`` as
    ``band_precision_per_band`` and ``band_precision_train_per_band``: a new
    subject's long streamlines lie closer to each other than to another
    subject's, so even real streamlines of other subjects score 0.16-0.48 in
    the longest band of four of the six phantom bundles, which is why the
    share is compared with theirs (a band where none of theirs lies on the
    bundle, as for subjects that are not registered to each other, has no
    value).
``band_recall``
    The other side of ``band_precision``: per length quintile of the held-out
    streamlines, the share of them on the manifold of the generated
    streamlines (:func:`band_recall`: inside the ball of some generated
    streamline, its radius the MDF to its 3rd nearest generated neighbour),
    minus the same share for as many of the bundle's real training
    streamlines; the lowest band, mean over bundles at the top level (0:
    the generated streamlines cover each band of the new subjects' bundle
    as the training subjects' do; negative: parts of the bundle they leave
    empty, as when they gather in a few strands). Precision alone rewards
    streamlines drawn close together where the bundle is dense; recall
    sees what they leave out. The shares are in ``per_bundle`` as
    ``band_recall_per_band`` and ``band_recall_train_per_band``.
``attribute_slope_error``, ``attribute_mae``
    Only for a model conditioned on a per-subject attribute such as age: see
    :mod:`aae_tract.attribute` (with ``attribute_mae_baseline``, the error of
    predicting the training subjects' mean, and ``attribute_mae_generation``,
    the age read back by inverting generation instead of the encoder).

Every metric is also a public function of arrays so it can be checked on cases
with a known answer. ``evaluate(..., reference=True)`` adds a "real vs real"
row: the same measures between two random halves of the held-out data, the
ceiling each number can be compared with (None for the metrics that have no
real-vs-real counterpart).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from aae_tract.errors import AAETractError
from aae_tract.generate import DEFAULT, DEFAULT_CANDIDATES, DEFAULT_PRIOR_SPREAD

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_NAMES",
    "PER_BUNDLE_LISTS",
    "TEXTURE_FEATURES",
    "curvature_ratio",
    "density_dice",
    "density_map",
    "band_precision",
    "band_recall",
    "diversity_ratio",
    "end_turn_deg",
    "evaluate",
    "hooked_fraction",
    "label_fidelity",
    "length_error_pct",
    "length_mae",
    "manifold_precision",
    "mean_pairwise_mdf",
    "mean_prior_match",
    "novelty_ratio",
    "on_manifold",
    "paired_mdf",
    "prior_match",
    "realism_c2st",
    "recon_length_ratio",
    "rough_fraction",
    "shape_similarity",
    "spearman_rho",
    "streamline_texture",
    "turning_angle_per_mm",
]

#: Keys of the metrics dictionary (and of ``metrics.json``): one number (or
#: None) each, at the top level, in every ``per_bundle`` row and in the
#: reference row.
METRIC_NAMES = (
    "recon_mdf_mm",
    "label_fidelity",
    "length_mae_mm",
    "ar_spearman",
    "diversity_ratio",
    "density_dice",
    "curvature_ratio",
    "rough_fraction",
    "hooked_fraction",
    "recon_length_ratio",
    "length_error_pct",
    "length_error_pct_mean",
    "shape_similarity",
    "realism_c2st",
    "prior_match",
    "novelty_ratio",
    "band_precision",
    "band_recall",
)
#: Lists kept per bundle only (``per_bundle`` rows; None in the reference row,
#: except ``band_precision_per_band`` and ``band_recall_per_band``: there, of
#: one half of the held-out streamlines against the other).
PER_BUNDLE_LISTS = (
    "recon_length_ratio_quintiles",
    "length_error_pct_per_target",
    "band_precision_per_band",
    "band_precision_train_per_band",
    "band_recall_per_band",
    "band_recall_train_per_band",
)
#: Columns of :func:`streamline_texture`.
TEXTURE_FEATURES = (
    "mean_deg_per_mm",
    "median_deg_per_mm",
    "p90_deg_per_mm",
    "max_deg_per_mm",
    "length_mm",
)
_PAIRWISE_MAX = 500
#: A streamline turning more than this many times the real median is rough.
ROUGH_FACTOR = 3.0
#: Length (mm) of the end of a streamline whose turning :func:`end_turn_deg`
#: sums.
END_MM = 10.0
#: Quantile of the real streamlines' end turning over which a generated
#: streamline's end is hooked (:func:`hooked_fraction`).
HOOK_QUANTILE = 0.99
#: Neighbour whose distance sets a real streamline's ball in
#: :func:`manifold_precision`.
PRECISION_K = 3
#: Streamlines generated per bundle for ``band_precision`` (about 400 per
#: length quintile), and most training streamlines of a bundle it compares
#: them with. Between generation seeds of one phantom model, a band's
#: difference then moves by an sd of 0.005-0.05 (``benchmarks/prior_variants.py
#: --band_spread``).
BAND_STREAMLINES = 2000
#: Most held-out streamlines of a bundle whose balls make its manifold for
#: ``band_precision`` (a seeded sample of a larger bundle).
BAND_REAL_MAX = 1000
#: Most streamlines of one bundle an evaluation reads (held-out and training).
MAX_EVAL_PER_BUNDLE = 20_000
#: Streamlines generated per bundle and attribute value for
#: ``attribute_slope_error`` (the worst bundle's error moves by an sd of
#: 0.01-0.02 between draws of one age-phantom model at 4,000, 0.045-0.070 at
#: 400: ``benchmarks/age_slope.py``).
SLOPE_STREAMLINES = 4000
_REALISM_MAX = 200  # streamlines per side for BUAN and the two-sample test
_CHUNK = 4096  # streamlines per vectorised resampling pass


def _as_array(x, what="streamlines"):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] != 3:
        raise AAETractError(f"{what} must have shape (N, P, 3), got {x.shape}")
    return x


# ---------------------------------------------------------------------------
# distances


def paired_mdf(a, b):
    """MDF between streamline ``a[i]`` and ``b[i]`` for every ``i``.

    The mean distance between corresponding points, taken in the direction
    (direct or flipped) that gives the smaller value, as DIPY's MDF.

    Parameters
    ----------
    a, b : ndarray, shape (N, P, 3)
        Streamlines with the same number of points.

    Returns
    -------
    ndarray of float64, shape (N,)
        Distances in the units of the coordinates (mm).
    """
    a, b = _as_array(a), _as_array(b)
    if a.shape != b.shape:
        raise AAETractError(f"paired MDF needs equal shapes, got {a.shape}, {b.shape}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    direct = np.linalg.norm(a64 - b64, axis=-1).mean(axis=1)
    flipped = np.linalg.norm(a64 - b64[:, ::-1], axis=-1).mean(axis=1)
    return np.minimum(direct, flipped)


def mean_pairwise_mdf(x, *, max_n=_PAIRWISE_MAX, rng=0):
    """Mean MDF over all pairs of distinct streamlines of a set.

    Parameters
    ----------
    x : ndarray, shape (N, P, 3)
        Streamlines.
    max_n : int
        Larger sets are randomly subsampled to ``max_n`` streamlines.
    rng : int or numpy.random.Generator
        Random source of the subsample.

    Returns
    -------
    float
        Mean pairwise MDF (mm); NaN for fewer than 2 streamlines.
    """
    from dipy.tracking.distances import bundles_distances_mdf

    x = _as_array(x)
    if len(x) < 2:
        return math.nan
    if len(x) > max_n:
        rng = np.random.default_rng(rng)
        x = x[np.sort(rng.choice(len(x), max_n, replace=False))]
    lines = list(np.ascontiguousarray(x))
    d = bundles_distances_mdf(lines, lines)
    n = len(lines)
    return float(d[np.triu_indices(n, k=1)].mean())


def _nearest_labels(x, real, real_labels):
    from aae_tract.streamlines import nearest_mdf

    _, index = nearest_mdf(x, real)
    return np.asarray(real_labels)[index]


# ---------------------------------------------------------------------------
# metric functions


def label_fidelity(generated, requested, real, real_labels):
    """Fraction of streamlines whose MDF-nearest real streamline has their label.

    Parameters
    ----------
    generated : ndarray, shape (N, P, 3)
        Streamlines to check.
    requested : int, str or array_like (N,)
        Label requested for each (or one for all).
    real : ndarray, shape (M, P, 3)
        Real streamlines of all bundles.
    real_labels : array_like, shape (M,)
        Their labels (same kind as ``requested``).

    Returns
    -------
    float
        In [0, 1]; NaN when ``generated`` is empty.
    """
    generated = _as_array(generated, "generated streamlines")
    if len(generated) == 0:
        return math.nan
    real_labels = np.asarray(real_labels)
    if len(real_labels) != len(real):
        raise AAETractError(
            f"{len(real_labels)} labels for {len(real)} real streamlines"
        )
    requested = np.broadcast_to(np.asarray(requested), (len(generated),))
    nearest = _nearest_labels(
        generated, _as_array(real, "real streamlines"), real_labels
    )
    return float(np.mean(nearest == requested))


def length_mae(targets, produced):
    """Mean absolute error between targets and produced (median) lengths.

    Parameters
    ----------
    targets : array_like, shape (T,)
        Requested lengths (mm).
    produced : array_like, shape (T,) or sequence of T arrays
        The median produced length per target, or the lengths produced for
        each target (their median is taken).

    Returns
    -------
    float
        ``mean |median(produced_t) - target_t|`` in mm.
    """
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    medians = np.array([float(np.median(p)) for p in produced], dtype=np.float64)
    if medians.shape != targets.shape:
        raise AAETractError(
            f"{len(medians)} produced values for {len(targets)} targets"
        )
    if len(targets) == 0:
        return math.nan
    return float(np.mean(np.abs(medians - targets)))


def spearman_rho(z0, attribute):
    """Spearman rank correlation of latent dimension 0 with the attribute.

    Parameters
    ----------
    z0 : array_like, shape (N,)
    attribute : array_like, shape (N,)

    Returns
    -------
    float
        Rho in [-1, 1]; NaN with fewer than 3 values or a constant input.
    """
    from scipy.stats import spearmanr

    z0 = np.asarray(z0, dtype=np.float64).reshape(-1)
    attribute = np.asarray(attribute, dtype=np.float64).reshape(-1)
    if z0.shape != attribute.shape:
        raise AAETractError(f"{len(z0)} codes for {len(attribute)} attribute values")
    if len(z0) < 3 or np.ptp(z0) == 0 or np.ptp(attribute) == 0:
        return math.nan
    return float(spearmanr(z0, attribute).statistic)


def diversity_ratio(generated, real, *, max_n=_PAIRWISE_MAX, rng=0):
    """Spread of generated streamlines relative to real ones.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines of one bundle.
    max_n : int
        Sets are subsampled to this size for the pairwise distances.
    rng : int
        Seed of the subsampling.

    Returns
    -------
    float
        ``mean_pairwise_mdf(generated) / mean_pairwise_mdf(real)``: 1 when the
        spreads match, 0 for a collapsed set (all streamlines the same);
        NaN when undefined.
    """
    g = mean_pairwise_mdf(generated, max_n=max_n, rng=rng)
    r = mean_pairwise_mdf(real, max_n=max_n, rng=rng)
    if not (math.isfinite(g) and math.isfinite(r)) or r == 0:
        return math.nan
    return float(g / r)


def _dense(lines, step):
    """Resample so that consecutive points are at most ``step`` apart."""
    from dipy.tracking.streamline import length, set_number_of_points

    lines = [np.asarray(s, dtype=np.float32) for s in lines]
    longest = float(np.max(length(lines))) if lines else 0.0
    n = max(2, int(math.ceil(longest / step)) + 1)
    return set_number_of_points(lines, nb_points=n)


def density_map(streamlines, affine, shape, *, voxel_size=2.0):
    """Streamline count per voxel (DIPY's ``density_map`` on densified lines).

    Streamlines are first resampled so that steps are at most half a voxel,
    so that a streamline marks every voxel it crosses.

    Parameters
    ----------
    streamlines : ndarray (N, P, 3) or sequence of (n, 3) arrays
        RAS+ mm.
    affine : ndarray, shape (4, 4)
        Voxel to RAS+ mm.
    shape : tuple of 3 int
        Grid size.
    voxel_size : float
        Voxel edge (mm) used for the densification step.

    Returns
    -------
    ndarray of int, shape ``shape``
    """
    from dipy.tracking.utils import density_map as dipy_density_map

    lines = list(streamlines)
    if not lines:
        return np.zeros(tuple(shape), dtype=np.int64)
    return dipy_density_map(_dense(lines, voxel_size / 2.0), affine, tuple(shape))


def _common_grid(sets, voxel_size):
    points = np.concatenate(
        [np.asarray(s, dtype=np.float64).reshape(-1, 3) for s in sets if len(s)]
    )
    low = points.min(axis=0) - 2 * voxel_size
    high = points.max(axis=0) + 2 * voxel_size
    shape = tuple(int(v) for v in np.ceil((high - low) / voxel_size).astype(int) + 1)
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = low
    return affine, shape


def density_dice(a, b, *, voxel_size=2.0):
    """Dice overlap of the binarised density maps of two streamline sets.

    Both sets are mapped on one grid of ``voxel_size`` mm voxels covering
    both; a voxel counts when at least one streamline crosses it.

    Parameters
    ----------
    a, b : ndarray (N, P, 3) or sequences of (n, 3) arrays
        RAS+ mm.
    voxel_size : float
        Voxel edge in mm.

    Returns
    -------
    float
        ``2 |A & B| / (|A| + |B|)`` in [0, 1]; NaN when both sets are empty.
    """
    if len(a) == 0 and len(b) == 0:
        return math.nan
    affine, shape = _common_grid([a, b], voxel_size)
    ma = density_map(a, affine, shape, voxel_size=voxel_size) > 0
    mb = density_map(b, affine, shape, voxel_size=voxel_size) > 0
    total = int(ma.sum()) + int(mb.sum())
    if total == 0:
        return math.nan
    return float(2.0 * np.logical_and(ma, mb).sum() / total)


# ---------------------------------------------------------------------------
# streamline texture and realism


def _polyline_lengths(x):
    """Polyline length (mm) of each streamline of an (N, P, 3) array."""
    return np.linalg.norm(np.diff(x, axis=1), axis=-1).sum(axis=1)


def _resample_by_arc(x, step):
    """Points every ``step`` mm along each polyline (vectorised).

    Returns
    -------
    points : ndarray, shape (N, M, 3)
        Point ``k`` of streamline ``i`` is at arc length ``k * step``; rows are
        padded beyond the streamline's end (see ``valid``).
    valid : ndarray of bool, shape (N, M)
        Which points lie on the streamline.
    lengths : ndarray, shape (N,)
        Polyline lengths.
    """
    n, p = x.shape[:2]
    seg = np.linalg.norm(np.diff(x, axis=1), axis=-1)
    arc = np.concatenate([np.zeros((n, 1)), np.cumsum(seg, axis=1)], axis=1)
    lengths = arc[:, -1]
    n_valid = np.floor(lengths / step + 1e-9).astype(np.int64) + 1
    m = int(n_valid.max())
    t = np.arange(m) * step
    # one sorted array for all rows: row i is shifted past the end of row i-1
    shift = (np.arange(n) * (lengths.max() + 2.0 * step + 1.0))[:, None]
    flat = (arc + shift).ravel()
    index = np.searchsorted(flat, (t[None, :] + shift).ravel(), side="right")
    index = index.reshape(n, m) - 1 - (np.arange(n) * p)[:, None]
    index = np.clip(index, 0, p - 2)
    start = np.take_along_axis(arc, index, axis=1)
    seg_len = np.take_along_axis(seg, index, axis=1)
    frac = np.divide(
        t[None, :] - start, seg_len, out=np.zeros_like(start), where=seg_len > 0
    )
    frac = np.clip(frac, 0.0, 1.0)[..., None]
    a = np.take_along_axis(x, index[..., None], axis=1)
    b = np.take_along_axis(x, index[..., None] + 1, axis=1)
    valid = np.arange(m)[None, :] < n_valid[:, None]
    return a + frac * (b - a), valid, lengths


def _turning_angles(x, step):
    """Turning angles (degrees) between consecutive ``step`` mm segments.

    Returns
    -------
    angles : ndarray, shape (N, K)
        NaN beyond a streamline's end, and for whole rows of streamlines
        shorter than 3 steps.
    lengths : ndarray, shape (N,)
        Polyline lengths (mm).
    """
    points, valid, lengths = _resample_by_arc(x, step)
    if points.shape[1] < 3:
        return np.full((len(x), 1), np.nan), lengths
    d = np.diff(points, axis=1)
    u, v = d[:, :-1], d[:, 1:]
    norms = np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1)
    cos = np.einsum("nkc,nkc->nk", u, v) / np.maximum(norms, 1e-12)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[~valid[:, 2:]] = np.nan
    angles[lengths < 3 * step] = np.nan
    return angles, lengths


def _chunked(streamlines, step_mm, compute):
    x = _as_array(streamlines).astype(np.float64)
    step_mm = float(step_mm)
    if not step_mm > 0:
        raise AAETractError(f"step_mm must be positive, got {step_mm}")
    if len(x) == 0 or x.shape[1] < 2:
        return compute(np.full((len(x), 1), np.nan), _polyline_lengths(x), step_mm)
    parts = [
        compute(*_turning_angles(x[i : i + _CHUNK], step_mm), step_mm)
        for i in range(0, len(x), _CHUNK)
    ]
    return np.concatenate(parts)


def _row_quantiles(angles, qs):
    """Per-row quantiles (linear interpolation) ignoring NaN; NaN for empty rows."""
    ordered = np.sort(angles, axis=1)  # NaN last
    count = np.sum(~np.isnan(angles), axis=1)
    out = np.full((len(angles), len(qs)), np.nan)
    ok = count > 0
    if not ok.any():
        return out
    ordered, count = ordered[ok], count[ok]
    for j, q in enumerate(qs):
        pos = q * (count - 1)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, count - 1)
        v_low = np.take_along_axis(ordered, low[:, None], axis=1)[:, 0]
        v_high = np.take_along_axis(ordered, high[:, None], axis=1)[:, 0]
        out[ok, j] = v_low + (pos - low) * (v_high - v_low)
    return out


def _mean_rate(angles, lengths, step):
    count = np.sum(~np.isnan(angles), axis=1)
    total = np.nansum(angles, axis=1)
    out = np.full(len(angles), np.nan)
    np.divide(total, count * step, out=out, where=count > 0)
    return out


def turning_angle_per_mm(streamlines, step_mm=1.0):
    """Mean turning angle per millimetre of each streamline.

    Each streamline is resampled at points ``step_mm`` apart along its arc
    length (linear interpolation; the remainder shorter than a step at the end
    is dropped), and the angles between consecutive segments are averaged and
    divided by ``step_mm``. A straight line gives 0, a circular arc of radius
    ``r`` gives ``(180 / pi) / r`` deg/mm, a wiggly streamline more than a
    smooth one of the same course.

    Parameters
    ----------
    streamlines : ndarray, shape (N, P, 3)
        Streamlines in mm, all with the same number of points.
    step_mm : float
        Resampling step (mm).

    Returns
    -------
    ndarray of float64, shape (N,)
        Degrees per mm; NaN for streamlines shorter than 3 steps.
    """
    return _chunked(streamlines, step_mm, _mean_rate)


def _texture(angles, lengths, step):
    rate = angles / step
    quantiles = _row_quantiles(rate, (0.5, 0.9, 1.0))
    return np.column_stack(
        [_mean_rate(angles, lengths, step), quantiles, np.asarray(lengths)]
    )


def streamline_texture(streamlines, step_mm=1.0):
    """Texture features of each streamline (columns :data:`TEXTURE_FEATURES`).

    Parameters
    ----------
    streamlines : ndarray, shape (N, P, 3)
        Streamlines in mm, all with the same number of points.
    step_mm : float
        Resampling step (mm) of the turning angles (see
        :func:`turning_angle_per_mm`).

    Returns
    -------
    ndarray of float64, shape (N, 5)
        Mean, median, 90th percentile and maximum of the turning angle per mm
        (deg/mm) along the streamline, and its polyline length (mm). The angle
        statistics are NaN for streamlines shorter than 3 steps.
    """
    return _chunked(streamlines, step_mm, _texture)


def curvature_ratio(generated, real, *, step_mm=1.0):
    """Median turning angle per mm of generated over real streamlines.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm.
    step_mm : float
        Resampling step (mm), see :func:`turning_angle_per_mm`.

    Returns
    -------
    float
        ``median(turning_angle_per_mm(generated)) /
        median(turning_angle_per_mm(real))``, streamlines shorter than 3 steps
        left out: 1 when generated streamlines bend as much as real ones, more
        for wigglier ones; NaN when undefined (no usable streamline, or
        perfectly straight real streamlines).
    """
    g = turning_angle_per_mm(generated, step_mm)
    r = turning_angle_per_mm(real, step_mm)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    if len(g) == 0 or len(r) == 0:
        return math.nan
    denominator = float(np.median(r))
    if denominator == 0:
        return math.nan
    return float(np.median(g) / denominator)


def _end_turns(angles, lengths, step, mm):
    """Per row: the larger sum of the turning angles over its first and over
    its last ``mm`` (NaN for a row with fewer angles than that)."""
    k = max(1, int(round(mm / step)))
    count = np.sum(~np.isnan(angles), axis=1)
    out = np.full(len(angles), np.nan)
    ok = count >= k
    if not ok.any():
        return out
    a, c = angles[ok], count[ok]
    first = np.nansum(a[:, :k], axis=1)
    index = c[:, None] - k + np.arange(k)[None, :]  # the last k angles of each row
    last = np.take_along_axis(a, index, axis=1).sum(axis=1)
    out[ok] = np.maximum(first, last)
    return out


def end_turn_deg(streamlines, mm=END_MM, step_mm=1.0):
    """How much each streamline turns at its ends.

    Each streamline is resampled every ``step_mm`` along its arc length (as
    :func:`turning_angle_per_mm` does), and the turning angles between
    consecutive segments are summed over its first ``mm`` and over its last
    ``mm``; the larger of the two sums is returned. A straight line gives 0,
    a tip that curls back through a half turn about 180.

    Parameters
    ----------
    streamlines : ndarray, shape (N, P, 3)
        Streamlines in mm, all with the same number of points.
    mm : float
        Length of each end (mm).
    step_mm : float
        Resampling step (mm).

    Returns
    -------
    ndarray of float64, shape (N,)
        Degrees; NaN for streamlines shorter than ``mm`` plus a step.
    """
    mm = float(mm)
    if not mm > 0:
        raise AAETractError(f"mm must be positive, got {mm}")
    return _chunked(
        streamlines, step_mm, lambda a, lengths, step: _end_turns(a, lengths, step, mm)
    )


def hooked_fraction(generated, real, *, mm=END_MM, quantile=HOOK_QUANTILE, step_mm=1.0):
    """Fraction of generated streamlines whose ends turn more than real ones'.

    A generated streamline is hooked when an end of it turns more within
    ``mm`` (:func:`end_turn_deg`) than ``quantile`` of the real streamlines'
    ends do: a tip that curls back, which adds little to the streamline's
    mean turning (:func:`rough_fraction`) but is plain to see.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm.
    mm : float
        Length of each end (mm).
    quantile : float
        Quantile of the real streamlines' end turning that a hooked end
        exceeds, in (0, 1).
    step_mm : float
        Resampling step (mm).

    Returns
    -------
    float
        In [0, 1], over the generated streamlines long enough to measure;
        about ``1 - quantile`` for streamlines drawn like the real ones; NaN
        when no generated or no real streamline is long enough.
    """
    quantile = float(quantile)
    if not 0 < quantile < 1:
        raise AAETractError(f"quantile must lie in (0, 1), got {quantile}")
    g = end_turn_deg(generated, mm, step_mm)
    r = end_turn_deg(real, mm, step_mm)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    if len(g) == 0 or len(r) == 0:
        return math.nan
    return float(np.mean(g > np.quantile(r, quantile)))


def rough_fraction(generated, real, *, factor=ROUGH_FACTOR, step_mm=1.0):
    """Fraction of generated streamlines far rougher than real ones.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm.
    factor : float
        A generated streamline is rough when its mean turning angle per mm
        (:func:`turning_angle_per_mm`) exceeds ``factor`` times the median
        over the real streamlines.
    step_mm : float
        Resampling step (mm), see :func:`turning_angle_per_mm`.

    Returns
    -------
    float
        In [0, 1], over the generated streamlines long enough to measure
        (3 steps); NaN when there are none, when no real streamline is long
        enough, or when the real ones are perfectly straight.
        Halves of the real bundles of the phantom and of the embedded
        default score 0 against each other (other data: see the reference
        row of :func:`evaluate`); a crumpled generated streamline turns
        5-30 times as much as the median.
    """
    g = turning_angle_per_mm(generated, step_mm)
    r = turning_angle_per_mm(real, step_mm)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    if len(g) == 0 or len(r) == 0 or float(np.median(r)) == 0:
        return math.nan
    return float(np.mean(g > float(factor) * float(np.median(r))))


def _mdf_matrix(a, b, chunk=2048):
    """All MDF distances (mm) from the streamlines ``a`` to ``b``, float64."""
    from dipy.tracking.distances import bundles_distances_mdf

    refs = list(b)
    return np.concatenate(
        [
            np.asarray(bundles_distances_mdf(list(a[i : i + chunk]), refs))
            for i in range(0, len(a), chunk)
        ]
    ).reshape(len(a), len(b))


def on_manifold(generated, real, *, k=PRECISION_K):
    """Which generated streamlines lie on the real streamlines' manifold.

    Parameters and the manifold: see :func:`manifold_precision`.

    Returns
    -------
    ndarray of bool, shape (N,) or None
        True for a generated streamline inside the ball of some real one;
        None with at most ``k`` real streamlines.
    """
    g = _as_array(generated, "generated streamlines")
    r = _as_array(real, "real streamlines")
    if g.shape[1:] != r.shape[1:]:
        raise AAETractError(
            f"generated and real streamlines need the same number of points, "
            f"got {g.shape} and {r.shape}"
        )
    k = int(k)
    if k < 1:
        raise AAETractError(f"k must be at least 1, got {k}")
    if len(r) <= k:
        return None
    if len(g) == 0:
        return np.zeros(0, dtype=bool)
    within = _mdf_matrix(r, r)
    np.fill_diagonal(within, np.inf)
    radii = np.partition(within, k - 1, axis=1)[:, k - 1]
    return (_mdf_matrix(g, r) <= radii[None, :]).any(axis=1)


def manifold_precision(generated, real, *, k=PRECISION_K):
    """Share of generated streamlines that lie on the real streamlines' manifold.

    The improved precision of Kynkäänniemi et al. (NeurIPS 2019) with DIPY's
    MDF as the distance: each real streamline holds a ball whose radius is
    the MDF to its ``k``-th nearest other real streamline, and a generated
    streamline counts when it lies in at least one ball. Streamlines that
    leave the bundle, cross it or lie where no real streamline of their kind
    lies fall outside every ball; a generator that spreads its streamlines
    over the bundle as real ones are scores as a new real set does.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm with the same number of points.
    k : int
        Neighbour that sets a ball's radius (3, as in the paper).

    Returns
    -------
    float or None
        In [0, 1]; None with no generated streamline or at most ``k`` real
        ones.
    """
    inside = on_manifold(generated, real, k=k)
    if inside is None or len(inside) == 0:
        return None
    return float(np.mean(inside))


def band_precision(generated, real, *, n_bands=5, k=PRECISION_K, min_n=10):
    """:func:`manifold_precision` per length band of the real streamlines.

    A bundle's short streamlines (fragments) are few and easy to get wrong
    without a whole-bundle measure noticing; this measure looks at each band
    of lengths on its own.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm with the same number of points.
    n_bands : int
        Length bands; their edges are the quantiles of the real streamlines'
        lengths (quintiles for 5). A generated streamline falls in the band of
        its own polyline length (below the shortest real one: the first band;
        above the longest: the last).
    k : int
        Neighbour that sets a ball's radius (:func:`manifold_precision`).
    min_n : int
        Fewest generated streamlines for a band's value.

    Returns
    -------
    list of float
        Per band, from the shortest to the longest, the share of the band's
        generated streamlines on the manifold of *all* the real streamlines;
        NaN for a band with fewer than ``min_n`` generated streamlines (or
        when there are at most ``k`` real ones).
    """
    return _band_shares(generated, real, n_bands, k, min_n, recall=False)


def band_recall(generated, real, *, n_bands=5, k=PRECISION_K, min_n=10):
    """Share of the real streamlines of each length band on the generated
    streamlines' manifold.

    The improved recall of Kynkäänniemi et al. (NeurIPS 2019) per length
    band, with DIPY's MDF as the distance: each generated streamline holds a
    ball whose radius is the MDF to its ``k``-th nearest other generated
    streamline, and a real streamline counts when it lies in at least one
    ball. Generated streamlines gathered in a few strands leave the real
    streamlines between them uncovered (their balls are small); ones spread
    over the bundle as real ones are cover it as a new real set does. The
    share depends on how many generated streamlines there are: compare sets
    of the same size.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm with the same number of points.
    n_bands : int
        Length bands; their edges are the quantiles of the real streamlines'
        lengths (quintiles for 5); a real streamline falls in the band of
        its length.
    k : int
        Neighbour that sets a ball's radius.
    min_n : int
        Fewest real streamlines for a band's value.

    Returns
    -------
    list of float
        Per band, from the shortest to the longest, the share of the band's
        real streamlines on the manifold of *all* the generated streamlines;
        NaN for a band with fewer than ``min_n`` real streamlines (or when
        there are at most ``k`` generated ones).
    """
    return _band_shares(generated, real, n_bands, k, min_n, recall=True)


def _band_shares(generated, real, n_bands, k, min_n, *, recall):
    """Per length band of the real streamlines (edges at their length
    quantiles), the share of the band's generated streamlines on the real
    ones' manifold (:func:`band_precision`), or with ``recall`` of the
    band's real streamlines on the generated ones' (:func:`band_recall`)."""
    g = _as_array(generated, "generated streamlines")
    r = _as_array(real, "real streamlines")
    n_bands = int(n_bands)
    if n_bands < 1:
        raise AAETractError(f"n_bands must be at least 1, got {n_bands}")
    if len(r) == 0:
        return [math.nan] * n_bands
    real_lengths = _polyline_lengths(r.astype(np.float64))
    edges = np.quantile(real_lengths, np.linspace(0, 1, n_bands + 1))
    if recall:
        inside, lengths = on_manifold(r, g, k=k), real_lengths
    else:
        inside = on_manifold(g, r, k=k)
        lengths = _polyline_lengths(g.astype(np.float64))
    if inside is None:
        return [math.nan] * n_bands
    bands = np.searchsorted(edges[1:-1], lengths, side="right")
    return [
        float(np.mean(inside[bands == band]))
        if np.sum(bands == band) >= min_n
        else math.nan
        for band in range(n_bands)
    ]


def _lowest(values):
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    return min(values) if values else None


def recon_length_ratio(inputs, reconstructions, n_bins=5):
    """Reconstruction length over input length, per length quantile of the inputs.

    Parameters
    ----------
    inputs, reconstructions : ndarray, shape (N, P, 3)
        Streamlines and their reconstructions (same order), in mm.
    n_bins : int
        Number of length bins; their edges are the quantiles of the inputs'
        lengths (quintiles for 5).

    Returns
    -------
    list of float
        Per bin, from the shortest inputs to the longest, the median of
        ``length(reconstruction) / length(input)`` (polyline lengths): 1 when
        lengths are kept, 2 when reconstructions are twice as long. NaN for a
        bin without streamlines (few inputs, or tied lengths).
    """
    inputs = _as_array(inputs, "inputs").astype(np.float64)
    reconstructions = _as_array(reconstructions, "reconstructions").astype(np.float64)
    if len(inputs) != len(reconstructions):
        raise AAETractError(
            f"{len(reconstructions)} reconstructions for {len(inputs)} inputs"
        )
    n_bins = int(n_bins)
    if n_bins < 1:
        raise AAETractError(f"n_bins must be at least 1, got {n_bins}")
    length_in = _polyline_lengths(inputs)
    length_out = _polyline_lengths(reconstructions)
    keep = length_in > 0
    length_in, length_out = length_in[keep], length_out[keep]
    if len(length_in) == 0:
        return [math.nan] * n_bins
    ratio = length_out / length_in
    edges = np.quantile(length_in, np.linspace(0.0, 1.0, n_bins + 1))
    bins = np.searchsorted(edges[1:-1], length_in, side="right")
    return [
        float(np.median(ratio[bins == k])) if np.any(bins == k) else math.nan
        for k in range(n_bins)
    ]


def _worst_ratio(ratios):
    """The ratio farthest from 1 on a log scale (0.5 and 2 are equally bad)."""
    values = [float(v) for v in ratios if v is not None and math.isfinite(v) and v >= 0]
    if not values:
        return None
    with np.errstate(divide="ignore"):
        badness = np.abs(np.log(np.asarray(values)))
    return values[int(np.argmax(badness))]


def length_error_pct(targets, produced):
    """Relative error (percent) of the median produced length at each target.

    Parameters
    ----------
    targets : array_like, shape (T,)
        Requested lengths (mm), positive.
    produced : array_like, shape (T,) or sequence of T arrays
        The median produced length per target, or the lengths produced for
        each target (their median is taken).

    Returns
    -------
    ndarray of float64, shape (T,)
        ``100 * |median(produced_t) - target_t| / target_t``.
    """
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    medians = np.array([float(np.median(p)) for p in produced], dtype=np.float64)
    if medians.shape != targets.shape:
        raise AAETractError(
            f"{len(medians)} produced values for {len(targets)} targets"
        )
    if np.any(targets <= 0):
        raise AAETractError("target lengths must be positive")
    return 100.0 * np.abs(medians - targets) / targets


def shape_similarity(generated, real, rng=0, *, threshold=6.0, clust_thr=(5, 3, 1.5)):
    """DIPY's BUAN bundle shape similarity of two streamline sets.

    Both sets are clustered with QuickBundlesX (thresholds ``clust_thr``) and
    the bundle adjacency of their centroids is measured
    (:func:`dipy.segment.bundles.bundle_shape_similarity`): the mean, over
    both sets, of the share of centroids whose nearest centroid of the other
    set is within ``threshold`` mm (MDF).

    Parameters
    ----------
    generated, real : ndarray (N, P, 3) or sequences of (n, 3) arrays
        Streamlines in mm, in the same space.
    rng : int or numpy.random.Generator
        Random source of the clustering.
    threshold : float
        Adjacency threshold (mm). 6 mm, BUAN's usual value, suits bundles in
        one space (registered subjects, or one subject): two random halves of
        one subject's bundle of DIPY's ``minimal_bundles`` score about 0.85 to
        0.95 with it, and the score falls to about 0.5 when one half is
        shifted by 6 mm. It does not suit unregistered subjects: the
        ``minimal_bundles`` subjects are in native space, their bundles 9 to
        50 mm apart, so streamlines shaped like the training subjects score
        about 0 against another subject whatever their quality.
    clust_thr : sequence of float
        QuickBundlesX thresholds (mm), BUAN's defaults.

    Returns
    -------
    float
        In [0, 1]: 1 for the same shape and place, 0 for disjoint sets (or an
        empty one).
    """
    from dipy.segment.bundles import bundle_shape_similarity

    a = [np.asarray(s, dtype=np.float32) for s in generated]
    b = [np.asarray(s, dtype=np.float32) for s in real]
    if not a or not b:
        return 0.0
    return float(
        bundle_shape_similarity(
            a,
            b,
            np.random.default_rng(rng),
            clust_thr=tuple(clust_thr),
            threshold=float(threshold),
        )
    )


def realism_c2st(generated, real, *, seed=0, step_mm=1.0, n_folds=5, min_n=10):
    """Classifier two-sample test of generated against real streamlines.

    A gradient-boosting classifier (scikit-learn's
    ``GradientBoostingClassifier``, 50 trees of depth 3, seeded) learns to
    tell generated from real streamlines by their :func:`streamline_texture`
    (mean, median, 90th percentile and maximum turning angle per mm, and
    length); its stratified ``n_folds``-fold cross-validated accuracy is
    returned. The larger set is first subsampled to the size of the smaller
    (seeded), so that chance is 0.5. Angle statistics that are undefined
    (streamlines shorter than 3 steps) are given the value -1.

    Parameters
    ----------
    generated, real : ndarray, shape (N, P, 3) and (M, P, 3)
        Streamlines in mm.
    seed : int
        Seed of the subsampling, the folds and the classifier.
    step_mm : float
        Resampling step (mm) of the texture features.
    n_folds : int
        Cross-validation folds.
    min_n : int
        Fewest streamlines per class for a result.

    Returns
    -------
    float or None
        Accuracy: about 0.5 when the classifier cannot tell the sets apart
        (it can fall below 0.5 by chance on small sets), 1 when it always
        can; None with fewer than ``min_n`` streamlines in a set.
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    generated = _as_array(generated, "generated streamlines")
    real = _as_array(real, "real streamlines")
    n = min(len(generated), len(real))
    if n < max(int(min_n), int(n_folds)):
        return None
    rng = np.random.default_rng(seed)
    pick_g = np.sort(rng.choice(len(generated), n, replace=False))
    pick_r = np.sort(rng.choice(len(real), n, replace=False))
    features = np.concatenate(
        [
            streamline_texture(generated[pick_g], step_mm),
            streamline_texture(real[pick_r], step_mm),
        ]
    )
    features = np.nan_to_num(features, nan=-1.0, posinf=1e6, neginf=-1e6)
    y = np.repeat([1, 0], n)
    classifier = GradientBoostingClassifier(
        n_estimators=50, max_depth=3, random_state=seed
    )
    folds = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, features, y, cv=folds).mean())


def prior_match(codes, prior_samples, *, seed=0, n_folds=5, min_n=10, max_n=1000):
    """Classifier two-sample test of latent codes against prior samples.

    How well a bundle's encodings match the prior p(z) that the adversarial
    part of the model imposes: a gradient-boosting classifier (50 trees of
    depth 3, seeded) learns to tell the codes from as many prior samples by
    the coordinates and the norm of ``z`` (the norm sees a spread that is
    too small or too large in every dimension at once); its stratified
    ``n_folds``-fold cross-validated accuracy is returned. When every code
    of a bundle could have been drawn from the prior, sampling the prior
    gives codes like the bundle's, which is what ``sampling="prior"`` needs.

    Parameters
    ----------
    codes : ndarray, shape (N, D)
        Encodings of one bundle's streamlines.
    prior_samples : ndarray, shape (M, D)
        Samples of the prior (the larger set is subsampled to the smaller).
    seed : int
        Seed of the subsampling, the folds and the classifier.
    n_folds : int
        Cross-validation folds.
    min_n : int
        Fewest codes per class for a result.
    max_n : int
        Most codes per class (a seeded subsample beyond it).

    Returns
    -------
    float or None
        Accuracy: about 0.5 when the codes are indistinguishable from prior
        samples (below 0.5 by chance on small sets), 1 when they never
        overlap; None with fewer than ``min_n`` codes.
    """
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    codes = np.asarray(codes, dtype=np.float64)
    prior_samples = np.asarray(prior_samples, dtype=np.float64)
    if codes.ndim != 2 or prior_samples.ndim != 2:
        raise AAETractError(
            f"prior_match needs 2-D arrays of codes, got {codes.shape} and "
            f"{prior_samples.shape}"
        )
    if codes.shape[1] != prior_samples.shape[1]:
        raise AAETractError(
            f"codes have {codes.shape[1]} dimensions, prior samples "
            f"{prior_samples.shape[1]}"
        )
    n = min(len(codes), len(prior_samples), int(max_n))
    if n < max(int(min_n), int(n_folds)) or not np.isfinite(codes).all():
        return None
    rng = np.random.default_rng(seed)
    pick_c = rng.choice(len(codes), n, replace=False)
    pick_p = rng.choice(len(prior_samples), n, replace=False)
    z = np.concatenate([codes[pick_c], prior_samples[pick_p]])
    features = np.concatenate([z, np.linalg.norm(z, axis=1, keepdims=True)], axis=1)
    y = np.repeat([1, 0], n)
    classifier = GradientBoostingClassifier(
        n_estimators=50, max_depth=3, random_state=seed
    )
    folds = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, features, y, cv=folds).mean())


def mean_prior_match(codes, samples, *, seed=0):
    """:func:`prior_match` averaged over independent tests.

    One test's accuracy moves by a few hundredths from draw to draw (its
    binomial sd is 0.018 at chance with 400 codes a side), as much as the
    margins a bundle is held to. The mean of ``len(samples)`` tests moves at
    most ``sqrt(len(samples))`` times less: every test sees the same
    ``codes``, so only the part of the spread that comes from the samples
    and the classifier's seed averages out.

    Parameters
    ----------
    codes : ndarray, shape (N, D)
        Encodings of one bundle's streamlines.
    samples : list of ndarray, shape (M, D)
        One set of samples to compare ``codes`` with per test (e.g. fresh
        prior samples each).
    seed : int
        Seed of the first test's subsampling, folds and classifier; test
        ``t`` uses ``seed + t``, so that one set gives :func:`prior_match`.

    Returns
    -------
    float or None
        The mean accuracy; None where a test has no result (too few codes).
    """
    if len(samples) < 1:
        raise AAETractError("prior_match needs at least 1 test, got none")
    scores = [prior_match(codes, s, seed=seed + t) for t, s in enumerate(samples)]
    return None if any(s is None for s in scores) else float(np.mean(scores))


def novelty_ratio(generated, train, held_out, *, max_n=1000, max_train=5000, seed=0):
    """How new generated streamlines are, against unseen real ones.

    The median MDF from each generated streamline to its nearest training
    streamline, over the same median for held-out real streamlines (of
    subjects the model never saw). 1: generated streamlines are as far from
    the training set as new real data is; near 0: near copies of training
    streamlines; above 1: farther from the training data than real
    streamlines are (off the bundle, which ``label_fidelity`` and
    ``shape_similarity`` see).

    Parameters
    ----------
    generated, train, held_out : ndarray, shape (N, P, 3)
        Streamlines of one bundle, in mm, with the same number of points.
    max_n, max_train : int
        At most this many generated and held-out streamlines, and training
        streamlines (seeded subsamples beyond them).
    seed : int
        Seed of the subsamples.

    Returns
    -------
    float or None
        The ratio; None when a set is empty or the held-out streamlines
        coincide with training ones (median distance 0).
    """
    from aae_tract.streamlines import nearest_mdf

    generated = _as_array(generated, "generated streamlines")
    train = _as_array(train, "training streamlines")
    held_out = _as_array(held_out, "held-out streamlines")
    if min(len(generated), len(train), len(held_out)) == 0:
        return None
    generated = _subsample(generated, max_n, seed)
    held_out = _subsample(held_out, max_n, seed + 1)
    train = _subsample(train, max_train, seed + 2)
    real = float(np.median(nearest_mdf(held_out, train)[0]))
    if not real > 0:
        return None
    return float(np.median(nearest_mdf(generated, train)[0])) / real


# ---------------------------------------------------------------------------
# evaluation of a model


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _clean(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _clean_list(values):
    return None if values is None else [_clean(v) for v in values]


def _subsample(x, max_n, seed):
    if len(x) <= max_n:
        return x
    pick = np.random.default_rng(seed).choice(len(x), max_n, replace=False)
    return x[np.sort(pick)]


def _realism(generated, real, seed):
    """``shape_similarity`` and ``realism_c2st`` on at most 200 per side."""
    generated = _subsample(generated, _REALISM_MAX, seed)
    real = _subsample(real, _REALISM_MAX, seed + 1)
    return {
        "shape_similarity": shape_similarity(generated, real, rng=seed),
        "realism_c2st": realism_c2st(generated, real, seed=seed),
    }


def _length_targets(
    model, name, n_targets, n_generate, rng, sampling, batch_size, bank_kwargs=None
):
    """``length_mae_mm`` and ``length_error_pct*`` from one generated batch."""
    from aae_tract.generate import draw_streamlines
    from aae_tract.streamlines import streamline_lengths as _lengths

    row = {
        "length_mae_mm": None,
        "length_error_pct": None,
        "length_error_pct_mean": None,
        "length_error_pct_per_target": None,
    }
    stats = model.metadata.bundle_stats.get(name, {}).get("length")
    if model.attribute_name != "length" or not stats:
        return row
    targets = np.linspace(stats["p05"], stats["p95"], n_targets)
    _, generated = draw_streamlines(
        model,
        name,
        np.repeat(targets, n_generate),
        sampling=sampling,
        rng=rng,
        batch_size=batch_size,
        **(bank_kwargs or {}),
    )
    produced = _lengths(generated)
    produced = produced.reshape(n_targets, n_generate)
    errors = length_error_pct(targets, produced)
    row["length_mae_mm"] = length_mae(targets, produced)
    row["length_error_pct"] = float(np.max(errors))
    row["length_error_pct_mean"] = float(np.mean(errors))
    row["length_error_pct_per_target"] = errors.tolist()
    return row


def _band_row(
    model,
    name,
    attributes,
    real,
    train,
    *,
    sampling,
    seed,
    batch_size=1024,
    options=None,
):
    """``band_precision`` and ``band_recall`` of bundle ``name`` with their
    per-band shares.

    :data:`BAND_STREAMLINES` streamlines are generated at attribute values
    drawn from ``attributes`` (``draw_streamlines`` keyword arguments
    ``options``) with a random source of their own, so the other metrics of
    an evaluation do not depend on them, and tested against the real
    streamlines ``real``, as are the bundle's training streamlines ``train``
    (a seeded sample of at most :data:`BAND_STREAMLINES`; None: no
    differences). ``band_recall`` compares as many generated streamlines
    (a seeded sample) as there are training ones, since its share grows
    with the size of the set. Returns ``band_precision`` and ``band_recall``
    (the lowest band's generated share minus its training share) and each
    one's ``_per_band`` and ``_train_per_band`` shares.
    """
    from aae_tract.generate import draw_streamlines

    label = model.bundle_index(name)
    rng = np.random.default_rng((int(seed), 17, int(label)))
    targets = rng.choice(attributes, BAND_STREAMLINES, replace=True)
    _, generated = draw_streamlines(
        model,
        name,
        targets,
        sampling=sampling,
        rng=rng,
        batch_size=batch_size,
        **(options or {}),
    )
    if train is None or len(train) == 0:
        train, n_recall = None, len(generated)
    else:
        train = _subsample(train, BAND_STREAMLINES, seed + 3)
        n_recall = min(len(generated), len(train))
    drawn = {
        "band_precision": (band_precision, generated),
        "band_recall": (band_recall, _subsample(generated, n_recall, seed + 5)),
    }
    row = {}
    for key, (measure, sample) in drawn.items():
        bands = measure(sample, real)
        row.update({key: None, f"{key}_per_band": bands, f"{key}_train_per_band": None})
        if train is None:
            continue
        train_bands = measure(train, real)
        gaps = [
            g - t if g is not None and t is not None and t > 0 else None
            for g, t in zip(_clean_list(bands), _clean_list(train_bands))
        ]
        row[key] = _lowest(gaps)
        row[f"{key}_train_per_band"] = train_bands
    return row


def _reference_row(x, labels, label, a_rows, b_rows, half_a, seed, prior):
    """The metrics between two halves of a bundle's held-out streamlines.

    ``prior_match`` compares two prior samples of the bundle's size (chance).
    """
    other = ~half_a
    a, b = x[a_rows], x[b_rows]
    n = len(a_rows) + len(b_rows)
    rng = np.random.default_rng(seed + 2)
    row = dict.fromkeys(METRIC_NAMES)
    row.update(
        {
            "prior_match": prior_match(
                prior.sample_numpy(n, rng, label),
                prior.sample_numpy(n, rng, label),
                seed=seed,
            ),
            "label_fidelity": label_fidelity(a, label, x[other], labels[other]),
            "diversity_ratio": diversity_ratio(a, b, rng=seed),
            "density_dice": density_dice(a[: len(b)], b),
            "curvature_ratio": curvature_ratio(a, b),
            "rough_fraction": rough_fraction(a, b),
            "hooked_fraction": hooked_fraction(a, b),
            **_realism(a, b, seed),
        }
    )
    return (
        {k: _clean(v) for k, v in row.items()}
        | dict.fromkeys(PER_BUNDLE_LISTS)
        | {
            "band_precision_per_band": _clean_list(band_precision(a, b)),
            "band_recall_per_band": _clean_list(band_recall(a, b)),
        }
    )


def _aggregate(rows):
    """Top-level values: means over bundles, worst bundle for the worst-case ones."""
    out = {}
    for key in METRIC_NAMES:
        values = [row[key] for row in rows if row.get(key) is not None]
        if key == "recon_length_ratio":
            out[key] = _worst_ratio(values)
        elif key in ("length_error_pct", "rough_fraction", "hooked_fraction"):
            out[key] = max(values) if values else None
        else:
            out[key] = _mean(values)
    return out


def _noise(
    noise,
    subject_noise,
    within_subject=True,
    subject_scope="target",
    extend_reach=False,
    placement_noise=DEFAULT,
    noise_scope="bundle",
    candidates=DEFAULT_CANDIDATES,
    prior_spread=DEFAULT_PRIOR_SPREAD,
):
    """Keyword arguments of ``draw_streamlines`` for the bank's noises (a
    ``noise`` of None: its default; a ``subject_noise`` of None: codes keep
    their subject), ``within_subject``, ``subject_scope``, ``extend_reach``,
    ``placement_noise``, ``noise_scope``, ``candidates`` and
    ``prior_spread``."""
    out = {} if noise is None else {"noise": float(noise)}
    return {
        **out,
        "subject_noise": subject_noise,
        "within_subject": within_subject,
        "subject_scope": subject_scope,
        "extend_reach": extend_reach,
        "placement_noise": placement_noise,
        "noise_scope": noise_scope,
        "candidates": candidates,
        "prior_spread": prior_spread,
    }


def _at_most(dataset, per_bundle, seed, what):
    """``dataset`` with at most ``per_bundle`` streamlines of each bundle."""
    from aae_tract.rows import per_bundle_rows

    if dataset is None:
        return None
    keep = per_bundle_rows(dataset.labels, per_bundle, seed)
    if keep is None:
        return dataset
    logger.info(
        "evaluating on %d of the %d %s streamlines (at most %d per bundle)",
        len(keep),
        len(dataset),
        what,
        per_bundle,
    )
    return dataset.subset(keep)


def _prepared(model, dataset):
    """``(x, labels)`` of a dataset in the model's orientation, or Nones."""
    if dataset is None or len(dataset) == 0:
        return None, None
    names = np.asarray(dataset.bundle_names)[np.asarray(dataset.labels)]
    return model.prepare(np.asarray(dataset.x, dtype=np.float32), list(names))


def _log_row(name, row):
    logger.info(
        "%s: %s",
        name,
        ", ".join(
            f"{k} {row[k]:.3f}" if row[k] is not None else f"{k} n/a"
            for k in METRIC_NAMES
        ),
    )


def evaluate(
    model,
    dataset,
    *,
    n_generate=100,
    n_targets=5,
    seed=0,
    reference=True,
    sampling=DEFAULT,
    batch_size=1024,
    train=None,
    noise=None,
    subject_noise=DEFAULT,
    within_subject=True,
    subject_scope="target",
    extend_reach=False,
    placement_noise=DEFAULT,
    noise_scope="bundle",
    candidates=DEFAULT_CANDIDATES,
    prior_spread=DEFAULT_PRIOR_SPREAD,
    max_per_bundle=MAX_EVAL_PER_BUNDLE,
    prior_match_tests=1,
):
    """Measure a trained model on held-out streamlines.

    Parameters
    ----------
    model : TractAAE
        A trained model.
    dataset : StreamlineDataset
        Held-out streamlines (subjects not used in training); its bundles
        must be known to the model.
    n_generate : int
        Streamlines generated per bundle (and per length target). For
        ``attribute_slope_error``, at least :data:`SLOPE_STREAMLINES` per
        bundle and attribute value.
    n_targets : int
        Target lengths per bundle for ``length_mae_mm`` and
        ``length_error_pct``, spread evenly over the bundle's 5-95 percentile
        training range.
    seed : int
        Random seed of the generation, of the halves of the reference row and
        of the subsamples of ``shape_similarity`` and ``realism_c2st``.
    reference : bool
        Add the "real vs real" row.
    sampling : {"bank", "prior", "default"}
        Sampling used for generation (see :func:`aae_tract.generate.generate`);
        ``"default"``: the model's
        (:func:`aae_tract.generate.default_sampling`), written as resolved
        under the key ``sampling``. The ``attribute_*`` metrics of a
        per-subject attribute generate with bank sampling either way.
    batch_size : int
        Streamlines per forward pass.
    train : StreamlineDataset, optional
        The model's training streamlines, for ``novelty_ratio`` (None
        without them).
    noise, subject_noise : float, optional
        Noises of ``"bank"`` sampling, and ``subject_noise`` of ``"prior"``
        sampling of a fitted prior too (see
        :func:`aae_tract.generate.sample_latent`); default: its defaults
        (of ``subject_noise``, the sampling's, see
        :func:`aae_tract.generate.default_noises`). ``subject_noise=None``
        keeps each code's subject.
    within_subject : {True, "own", False}
        ``within_subject`` of :func:`aae_tract.generate.sample_latent` (a
        per-subject attribute: each bank code takes the offset in latent
        dimension 0 at its streamline's rank within a subject of the target
        value, or with ``"own"`` its streamline's own; prior samples spread
        as within a subject).
    subject_scope : {"target", "bundle"}
        ``subject_scope`` of :func:`aae_tract.generate.sample_latent` (where
        the training subjects are compared when codes move to new ones).
    extend_reach : bool
        ``extend_reach`` of :func:`aae_tract.generate.sample_latent`.
    placement_noise : float or "default"
        ``placement_noise`` of :func:`aae_tract.generate.generate` (rigid
        moves of the generated streamlines to new subjects' placements;
        default: the sampling's).
    noise_scope : {"bundle", "target"}
        ``noise_scope`` of :func:`aae_tract.generate.sample_latent` (which
        bank codes shape the bank noise).
    candidates : int
        ``candidates`` of :func:`aae_tract.generate.sample_latent` (codes
        drawn per streamline before the length search).
    prior_spread : float
        ``prior_spread`` of :func:`aae_tract.generate.sample_latent` (a
        factor on the spread of prior sampling's draws; ``prior_match``
        measures the prior itself whatever it is).
    max_per_bundle : int
        Most streamlines of one bundle read from ``dataset`` and from
        ``train`` (a seeded sample of a larger bundle, logged), so that a
        split of millions of streamlines is evaluated in bounded memory.
    prior_match_tests : int
        ``prior_match`` of each bundle is the mean of this many tests, each
        against its own prior samples (:func:`mean_prior_match`; the first
        drawn as with one test, the others seeded by ``seed``, the bundle,
        the test and ``sampling``); 1: one test.

    Returns
    -------
    dict
        The metrics of :data:`METRIC_NAMES`: means over bundles, except
        ``recon_length_ratio`` (the bundle value farthest from 1),
        ``length_error_pct``, ``rough_fraction`` and ``hooked_fraction``
        (the largest bundle values), which are worst cases; plus
        ``n_train``, ``n_eval``, ``bundles``, ``seconds``,
        ``per_bundle`` (``{bundle: {metric: value}}``, with also the lists
        ``recon_length_ratio_quintiles`` and ``length_error_pct_per_target``)
        and, with ``reference``, ``reference`` (the same keys and
        ``per_bundle`` measured between two random halves of the held-out data
        of each bundle; ``recon_mdf_mm``, ``length_mae_mm``, ``ar_spearman``,
        ``recon_length_ratio``, ``novelty_ratio`` and ``length_error_pct*``
        have no real-vs-real
        counterpart and are None there, as are the lists). Values that cannot
        be computed (e.g. a constant attribute, or the length metrics of a
        model conditioned on another attribute) are None.

    Notes
    -----
    ``density_dice``, ``shape_similarity`` and ``realism_c2st`` compare as
    many generated streamlines as there are in one half of the bundle's
    held-out data with the other half, so that the model row and the
    reference row compare sets of the same size; ``shape_similarity`` and
    ``realism_c2st`` use at most 200 streamlines per side (seeded subsample).
    ``curvature_ratio`` compares all generated streamlines with all held-out
    ones of the bundle (one half with the other in the reference row).
    """
    from aae_tract.generate import (
        NOISE_SCOPES,
        SAMPLING_METHODS,
        SUBJECT_SCOPES,
        _check_scope,
        _is_default,
        check_prior_spread,
        draw_streamlines,
        resolve_sampling,
    )
    from aae_tract.placement import check_placement_noise

    start = time.perf_counter()
    if (
        isinstance(prior_match_tests, bool)
        or not isinstance(prior_match_tests, (int, np.integer))
        or prior_match_tests < 1
    ):
        raise AAETractError(
            f"prior_match_tests must be a whole number of at least 1, got "
            f"{prior_match_tests!r}"
        )
    prior_match_tests = int(prior_match_tests)
    prior_spread = check_prior_spread(prior_spread)
    sampling = resolve_sampling(
        model, sampling, noise=noise, noise_scope=noise_scope, prior_spread=prior_spread
    )
    sampling_key = SAMPLING_METHODS.index(sampling)
    if not _is_default(placement_noise):
        check_placement_noise(placement_noise)
    _check_scope("subject_scope", subject_scope, SUBJECT_SCOPES)
    _check_scope("noise_scope", noise_scope, NOISE_SCOPES)
    options = _noise(
        noise,
        subject_noise,
        within_subject,
        subject_scope,
        extend_reach,
        placement_noise,
        noise_scope,
        candidates,
        prior_spread,
    )
    if len(dataset) == 0:
        raise AAETractError("evaluation needs held-out streamlines, got none")
    dataset = _at_most(dataset, max_per_bundle, seed, "held-out")
    train = _at_most(train, max_per_bundle, seed, "training")
    rng = np.random.default_rng(seed)
    names_in_data = [
        name
        for i, name in enumerate(dataset.bundle_names)
        if np.any(np.asarray(dataset.labels) == i)
    ]
    for name in names_in_data:
        model.bundle_index(name)  # UnknownBundleError listing the model's bundles
    data_labels = np.asarray(dataset.labels)
    names = np.asarray(dataset.bundle_names)[data_labels]
    x, labels = model.prepare(np.asarray(dataset.x, dtype=np.float32), list(names))
    attribute = np.asarray(dataset.attribute, dtype=np.float64)
    z = model.encode_prepared(x, batch_size=batch_size)
    recon = model.decode(z, labels, batch_size=batch_size)
    recon_error = paired_mdf(x, recon)

    # random halves per bundle for the reference row and the dice comparison
    half_a = np.zeros(len(x), dtype=bool)
    for name in names_in_data:
        rows = np.flatnonzero(labels == model.bundle_index(name))
        perm = rng.permutation(rows)
        half_a[perm[: len(rows) // 2]] = True

    z_sample = model.encode_prepared(x, batch_size=batch_size, rng=seed)
    train_x, train_labels = _prepared(model, train)
    prior = model.network.prior
    per_bundle, ref_bundle = {}, {}
    for name in names_in_data:
        label = model.bundle_index(name)
        rows = np.flatnonzero(labels == label)
        real = x[rows]
        b_rows = rows[~half_a[rows]]
        a_rows = rows[half_a[rows]]
        n_gen = max(int(n_generate), len(b_rows))
        targets = rng.choice(attribute[rows], n_gen, replace=True)
        _, gen = draw_streamlines(
            model,
            name,
            targets,
            sampling=sampling,
            rng=rng,
            batch_size=batch_size,
            **options,
        )
        quintiles = recon_length_ratio(real, recon[rows])
        row = {
            "recon_mdf_mm": float(recon_error[rows].mean()),
            "label_fidelity": label_fidelity(gen, label, x, labels),
            "ar_spearman": spearman_rho(z[rows, 0], attribute[rows]),
            "diversity_ratio": diversity_ratio(gen[: int(n_generate)], real, rng=seed),
            "density_dice": density_dice(gen[: len(b_rows)], x[b_rows]),
            "curvature_ratio": curvature_ratio(gen, real),
            "rough_fraction": rough_fraction(gen, real),
            "hooked_fraction": hooked_fraction(gen, real),
            "prior_match": mean_prior_match(
                z_sample[rows],
                # the first from the generation stream, as one test drew it;
                # the others seeded apart for each sampling, so that two
                # samplings' values are independent estimates
                [prior.sample_numpy(len(rows), rng, label)]
                + [
                    prior.sample_numpy(
                        len(rows),
                        np.random.default_rng([seed, label, t, sampling_key]),
                        label,
                    )
                    for t in range(1, prior_match_tests)
                ],
                seed=seed,
            ),
            "novelty_ratio": (
                novelty_ratio(gen, train_x[train_labels == label], real)
                if train_x is not None
                else None
            ),
            "recon_length_ratio": _worst_ratio(quintiles),
            "recon_length_ratio_quintiles": quintiles,
            **_band_row(
                model,
                name,
                attribute[rows],
                _subsample(real, BAND_REAL_MAX, seed + 4),
                None if train_x is None else train_x[train_labels == label],
                sampling=sampling,
                seed=seed,
                batch_size=batch_size,
                options=options,
            ),
            **_realism(gen[: len(b_rows)], x[b_rows], seed),
            **_length_targets(
                model,
                name,
                n_targets,
                n_generate,
                rng,
                sampling,
                batch_size,
                options,
            ),
        }
        per_bundle[name] = {k: _clean(row[k]) for k in METRIC_NAMES} | {
            k: _clean_list(row[k]) for k in PER_BUNDLE_LISTS
        }
        if reference and len(a_rows) >= 2 and len(b_rows) >= 2:
            ref_bundle[name] = _reference_row(
                x, labels, label, a_rows, b_rows, half_a, seed, prior
            )
        _log_row(name, per_bundle[name])

    result = _aggregate(per_bundle.values())
    result.update(
        {
            "n_train": model.metadata.training.get("n_train"),
            "n_eval": len(dataset),
            "bundles": list(names_in_data),
            "sampling": sampling,
            "seconds": round(time.perf_counter() - start, 3),
            "per_bundle": per_bundle,
        }
    )
    if reference:
        ref = _aggregate(ref_bundle.values())
        ref["per_bundle"] = ref_bundle
        result["reference"] = ref
    if model.attribute_name != "length":
        result.update(
            _attribute_metrics(
                model,
                dataset,
                train,
                n_generate,
                seed,
                options,
            )
        )
    return result


def _attribute_metrics(model, dataset, train, n_generate, seed, options):
    """``attribute_slope_error`` (needs ``train``) and ``attribute_mae``, with
    their details and the trivial baseline, for a per-subject attribute
    (generation with bank sampling, whatever :func:`evaluate` sampled with,
    and the keyword arguments ``options``)."""
    from aae_tract.attribute import attribute_mae, attribute_slope_error

    options = {**options, "sampling": "bank"}

    out = {"attribute_slope_error": None, "attribute_slope": None}
    if train is not None:
        # enough streamlines that the metric moves little between draws
        slope = attribute_slope_error(
            model,
            train,
            n_streamlines=max(int(n_generate), SLOPE_STREAMLINES),
            seed=seed,
            generate_options=options,
        )
        out["attribute_slope_error"] = _clean(slope["worst"])
        out["attribute_slope"] = slope["per_bundle"]
    read_back = attribute_mae(model, dataset, train=train)
    out["attribute_mae"] = _clean(read_back["mae"])
    out["attribute_mae_baseline"] = _clean(read_back["baseline_mae"])
    out["attribute_read_back"] = read_back["per_subject"]
    by_generation = attribute_mae(
        model,
        dataset,
        train=train,
        method="generation",
        seed=seed,
        generate_options=options,
    )
    out["attribute_mae_generation"] = _clean(by_generation["mae"])
    out["attribute_read_back_generation"] = by_generation["per_subject"]
    logger.info(
        "%s: slope error %s (worst bundle), read back from %d subjects with a "
        "mean absolute error of %.3g through the encoder, %.3g through generation "
        "(predicting the training mean: %.3g)",
        model.attribute_name,
        "n/a"
        if out["attribute_slope_error"] is None
        else f"{out['attribute_slope_error']:.2f}",
        len(read_back["per_subject"]),
        read_back["mae"],
        by_generation["mae"],
        read_back["baseline_mae"],
    )
    return out
