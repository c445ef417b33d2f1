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

Every metric is also a public function of arrays so it can be checked on cases
with a known answer. ``evaluate(..., reference=True)`` adds a "real vs real"
row: the same measures between two random halves of the held-out data, the
ceiling each number can be compared with.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from aae_tract.errors import AAETractError

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_NAMES",
    "density_dice",
    "density_map",
    "diversity_ratio",
    "evaluate",
    "label_fidelity",
    "length_mae",
    "mean_pairwise_mdf",
    "paired_mdf",
    "spearman_rho",
]

#: Keys of the metrics dictionary (and of ``metrics.json``).
METRIC_NAMES = (
    "recon_mdf_mm",
    "label_fidelity",
    "length_mae_mm",
    "ar_spearman",
    "diversity_ratio",
    "density_dice",
)
_PAIRWISE_MAX = 500


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
    from aae_tract.generate import nearest_mdf

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
# evaluation of a model


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _clean(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def evaluate(
    model,
    dataset,
    *,
    n_generate=100,
    n_targets=5,
    seed=0,
    reference=True,
    sampling="bank",
    batch_size=1024,
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
        Streamlines generated per bundle (and per length target).
    n_targets : int
        Target lengths per bundle for ``length_mae_mm``.
    seed : int
        Random seed of the generation and of the halves of the reference row.
    reference : bool
        Add the "real vs real" row.
    sampling : {"bank", "prior"}
        Sampling used for generation (see :func:`aae_tract.generate.generate`).
    batch_size : int
        Streamlines per forward pass.

    Returns
    -------
    dict
        The metrics (``recon_mdf_mm``, ``label_fidelity``, ``length_mae_mm``,
        ``ar_spearman``, ``diversity_ratio``, ``density_dice``) as means over
        bundles, plus ``n_train``, ``n_eval``, ``bundles``, ``seconds``,
        ``per_bundle`` (``{bundle: {metric: value}}``) and, with
        ``reference``, ``reference`` (the same keys and ``per_bundle``
        measured between two random halves of the held-out data of each
        bundle; ``recon_mdf_mm``, ``length_mae_mm`` and ``ar_spearman`` have
        no real-vs-real counterpart and are None there). Values that cannot
        be computed (e.g. a constant attribute) are None.

    Notes
    -----
    ``density_dice`` compares as many generated streamlines as there are in
    one half of the bundle's held-out data with the other half, so that the
    model row and the reference row compare sets of the same size.
    """
    from aae_tract.generate import _lengths, sample_latent

    start = time.perf_counter()
    if len(dataset) == 0:
        raise AAETractError("evaluation needs held-out streamlines, got none")
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
    is_length = model.attribute_name == "length"

    # random halves per bundle for the reference row and the dice comparison
    half_a = np.zeros(len(x), dtype=bool)
    for name in names_in_data:
        rows = np.flatnonzero(labels == model.bundle_index(name))
        perm = rng.permutation(rows)
        half_a[perm[: len(rows) // 2]] = True

    per_bundle, ref_bundle = {}, {}
    for name in names_in_data:
        label = model.bundle_index(name)
        rows = np.flatnonzero(labels == label)
        real = x[rows]
        b_rows = rows[~half_a[rows]]
        a_rows = rows[half_a[rows]]
        n_gen = max(int(n_generate), len(b_rows))
        targets = rng.choice(attribute[rows], n_gen, replace=True)
        zg = sample_latent(model, name, targets, sampling=sampling, rng=rng)
        gen = model.decode(zg, name, batch_size=batch_size)
        row = {
            "recon_mdf_mm": float(recon_error[rows].mean()),
            "label_fidelity": label_fidelity(gen, label, x, labels),
            "ar_spearman": spearman_rho(z[rows, 0], attribute[rows]),
            "diversity_ratio": diversity_ratio(gen[: int(n_generate)], real, rng=seed),
            "density_dice": density_dice(gen[: len(b_rows)], x[b_rows]),
            "length_mae_mm": None,
        }
        if is_length:
            stats = model.metadata.bundle_stats.get(name, {}).get("length")
            if stats:
                length_targets = np.linspace(stats["p05"], stats["p95"], n_targets)
                zt = sample_latent(
                    model,
                    name,
                    np.repeat(length_targets, n_generate),
                    sampling=sampling,
                    rng=rng,
                )
                produced = _lengths(model.decode(zt, name, batch_size=batch_size))
                row["length_mae_mm"] = length_mae(
                    length_targets, produced.reshape(n_targets, n_generate)
                )
        per_bundle[name] = {k: _clean(row[k]) for k in METRIC_NAMES}
        if reference and len(a_rows) >= 2 and len(b_rows) >= 2:
            other = ~half_a
            ref_bundle[name] = {
                "recon_mdf_mm": None,
                "label_fidelity": _clean(
                    label_fidelity(x[a_rows], label, x[other], labels[other])
                ),
                "length_mae_mm": None,
                "ar_spearman": None,
                "diversity_ratio": _clean(
                    diversity_ratio(x[a_rows], x[b_rows], rng=seed)
                ),
                "density_dice": _clean(
                    density_dice(x[a_rows][: len(b_rows)], x[b_rows])
                ),
            }
        logger.info(
            "%s: %s",
            name,
            ", ".join(
                f"{k} {v:.3f}" if v is not None else f"{k} n/a"
                for k, v in per_bundle[name].items()
            ),
        )

    result = {k: _mean(v[k] for v in per_bundle.values()) for k in METRIC_NAMES}
    result.update(
        {
            "n_train": model.metadata.training.get("n_train"),
            "n_eval": len(dataset),
            "bundles": list(names_in_data),
            "seconds": round(time.perf_counter() - start, 3),
            "per_bundle": per_bundle,
        }
    )
    if reference:
        ref = {k: _mean(v[k] for v in ref_bundle.values()) for k in METRIC_NAMES}
        ref["per_bundle"] = ref_bundle
        result["reference"] = ref
    return result
