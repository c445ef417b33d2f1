"""The attribute (e.g. age) through the model, both ways.

Generation maps a requested attribute value to latent dimension 0 and decodes
it; :func:`estimate_attribute` goes the other way: it reads a subject's
attribute back from its bundles, by default by inverting generation (the value
at which the generated bundle has the subject's median length), or through
the encoder and the inverse of the calibration. Metrics (keys of
``metrics.json`` for a model conditioned on an attribute other than length)
check that the model learned the effect of the attribute and not only its
direction:

``attribute_slope_error``
    Per bundle, the slope of the generated bundle's median length against the
    requested attribute (over the training range) compared with the slope of
    the real training subjects' median lengths against theirs:
    ``|slope_generated - slope_real| / |slope_real|``; the worst bundle.
``attribute_mae``, ``attribute_mae_generation``
    The attribute read back from each held-out subject's bundles through the
    encoder, and by inverting generation: mean absolute error in the
    attribute's unit, beside the trivial baseline (predicting the training
    subjects' mean, ``attribute_mae_baseline``).
"""

from __future__ import annotations

import logging

import numpy as np

from aae_tract.errors import AAETractError
from aae_tract.streamlines import streamline_lengths

logger = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTE_METRIC_NAMES",
    "attribute_mae",
    "attribute_slope_error",
    "estimate_attribute",
    "length_curve",
    "length_slope",
    "subject_median_lengths",
    "subject_values",
]

#: Keys added to ``metrics.json`` for a model whose attribute is not length.
ATTRIBUTE_METRIC_NAMES = (
    "attribute_slope_error",
    "attribute_mae",
    "attribute_mae_generation",
)


def _inverse_calibration(model, bundle, z0):
    """Attribute values whose calibrated z0 is ``z0`` (inverse of the map)."""
    cal = model.metadata.calibration.get(bundle)
    if cal is None:
        raise AAETractError(
            f"the model has no attribute calibration for {bundle!r}: train it first"
        )
    x, y, slope = np.asarray(cal["x"]), np.asarray(cal["y"]), float(cal["slope"])
    y_unique, first = np.unique(y, return_index=True)
    last = len(y) - 1 - np.unique(y[::-1], return_index=True)[1]
    x_mid = (x[first] + x[last]) / 2.0  # a flat run of z0 maps to its middle
    z0 = np.asarray(z0, dtype=np.float64)
    if len(y_unique) < 2:
        return np.full(z0.shape, float(np.mean(x)))
    out = np.interp(z0, y_unique, x_mid)
    if slope > 0:
        out = np.where(z0 < y_unique[0], x_mid[0] + (z0 - y_unique[0]) / slope, out)
        out = np.where(z0 > y_unique[-1], x_mid[-1] + (z0 - y_unique[-1]) / slope, out)
    return out


#: How :func:`estimate_attribute` reads the attribute back.
READ_BACK_METHODS = ("encoder", "generation")


def estimate_attribute(
    model,
    streamlines,
    bundles,
    *,
    method="generation",
    n_values=9,
    n_streamlines=200,
    seed=0,
    generate_options=None,
    _curves=None,
):
    """Read a subject's attribute (e.g. age) back from its bundles.

    Two ways, both per bundle, the subject's value being the median over its
    bundles:

    ``"generation"`` (default)
        The inverse of generation: the bundle is generated at ``n_values``
        values over the training range, a line is fitted to the generated
        median lengths against the value, and the value at which it meets
        the subject's median length is read off (extrapolated linearly
        beyond the range).
    ``"encoder"``
        Each streamline is encoded; the mean of latent dimension 0 is mapped
        back through the inverse of the model's calibration (a least-squares
        fit, so of the mean z0 at each value: a median would not invert it,
        the codes of a subject being skewed). ``attribute_mae`` in
        ``metrics.json`` is this method, ``attribute_mae_generation`` the
        default one.

    Parameters
    ----------
    model : TractAAE
        A trained model conditioned on a per-subject attribute.
    streamlines : ndarray (N, P, 3) or sequence of (n, 3) arrays
        One subject's streamlines (RAS+ mm, in the model's common space when
        it was trained with registration: see ``model.registration.place``).
    bundles : str or sequence of str
        The bundle of all streamlines, or one per streamline.
    method : {"generation", "encoder"}, optional
    n_values, n_streamlines, seed : int, optional
        With ``"generation"``: values requested, streamlines generated per
        value, and the random seed.
    generate_options : dict, optional
        With ``"generation"``: other keyword arguments of
        :func:`aae_tract.generate.generate` (e.g. ``subject_noise``).

    Returns
    -------
    value : float
        The estimated attribute.
    per_bundle : dict of str to float
        The estimate of each bundle.
    """
    if method not in READ_BACK_METHODS:
        raise AAETractError(
            f"unknown read-back method {method!r}: choose one of "
            f"{', '.join(READ_BACK_METHODS)}"
        )
    x, labels = model.prepare(streamlines, bundles)
    if len(x) == 0:
        raise AAETractError("no streamlines to read the attribute from")
    if method == "encoder":
        z0 = model.encode_prepared(x)[:, 0]
    else:
        lengths = streamline_lengths(x)
        curves = {} if _curves is None else _curves
    per_bundle = {}
    for label in np.unique(labels):
        name = model.bundle_names[int(label)]
        rows = labels == label
        if method == "encoder":
            value = _inverse_calibration(model, name, np.mean(z0[rows]))
        else:
            if name not in curves:
                curves[name] = length_curve(
                    model, name, n_values=n_values, n_streamlines=n_streamlines,
                    seed=seed, generate_options=generate_options,
                )  # fmt: skip
            value = _invert_line(*curves[name], np.median(lengths[rows]))
        per_bundle[name] = float(value)
    return float(np.median(list(per_bundle.values()))), per_bundle


def length_curve(
    model, bundle, *, n_values=9, n_streamlines=200, seed=0, generate_options=None
):
    """Generated median length of ``bundle`` at values over the training range.

    ``generate_options`` are other keyword arguments of
    :func:`aae_tract.generate.generate`.

    Returns
    -------
    values, medians : ndarray
    """
    from aae_tract.generate import generate

    low, high = model.attribute_range(bundle)
    values = np.linspace(low, high, int(n_values))
    medians = np.array(
        [
            generate(
                model, bundle, attribute=float(v), n_streamlines=n_streamlines,
                seed=seed, **(generate_options or {}),
            ).median_length
            for v in values
        ]
    )  # fmt: skip
    return values, medians


def _invert_line(values, medians, observed):
    """Value at which the least-squares line of medians on values is ``observed``."""
    slope = length_slope(values, medians)
    if not slope:
        return float(np.mean(values))
    return float(np.mean(values) + (observed - np.mean(medians)) / slope)


def subject_values(dataset):
    """Each subject's attribute value in ``dataset`` (the first of its rows)."""
    values = {}
    for subject, value in zip(dataset.subjects, np.asarray(dataset.attribute)):
        values.setdefault(str(subject), float(value))
    return values


def attribute_mae(
    model, held_out, *, train=None, method="encoder", seed=0, generate_options=None
):
    """Mean absolute error of the attribute read back from held-out subjects.

    Parameters
    ----------
    model : TractAAE
    held_out : StreamlineDataset
        Subjects the model has not seen, with their true values.
    train : StreamlineDataset, optional
        The training subjects, whose mean is the trivial baseline; without
        it, the middle of the model's training range.
    method : {"encoder", "generation"}, optional
        How each subject's value is read back (:func:`estimate_attribute`).
    seed : int, optional
        Random seed of ``"generation"``.
    generate_options : dict, optional
        Other keyword arguments of :func:`aae_tract.generate.generate`, with
        ``"generation"``.

    Returns
    -------
    dict
        ``mae``, ``baseline_mae``, ``ratio`` (mae / baseline) and
        ``per_subject`` (true and estimated values).
    """
    truth = subject_values(held_out)
    names = np.asarray(held_out.bundle_names)
    per_subject = {}
    curves = {}
    for subject, value in truth.items():
        rows = held_out.subjects == subject
        x = np.asarray(held_out.x[rows])
        estimate, _ = estimate_attribute(
            model, x, list(names[held_out.labels[rows]]), method=method, seed=seed,
            generate_options=generate_options, _curves=curves,
        )  # fmt: skip
        per_subject[subject] = {"true": value, "estimate": estimate}
    if train is not None:
        mean = float(np.mean(list(subject_values(train).values())))
    else:
        ranges = [model.attribute_range(b) for b in model.bundle_names]
        mean = float(np.mean([(lo + hi) / 2 for lo, hi in ranges]))
    errors = [abs(v["estimate"] - v["true"]) for v in per_subject.values()]
    baseline = [abs(mean - v["true"]) for v in per_subject.values()]
    mae, base = float(np.mean(errors)), float(np.mean(baseline))
    return {
        "mae": mae,
        "baseline_mae": base,
        "ratio": mae / base if base > 0 else None,
        "per_subject": per_subject,
    }


def length_slope(values, lengths):
    """Least-squares slope of lengths (mm) against attribute values."""
    values = np.asarray(values, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        return None
    return float(np.polyfit(values, lengths, 1)[0])


def subject_median_lengths(dataset, bundle):
    """Each subject's attribute value and median length (mm) of ``bundle``.

    Parameters
    ----------
    dataset : StreamlineDataset
        With a per-subject attribute.
    bundle : str

    Returns
    -------
    values, medians : list of float
        One entry per subject that has streamlines of ``bundle``.
    """
    label = dataset.bundle_names.index(bundle)
    lengths = np.asarray(dataset.lengths)
    values, medians = [], []
    for subject, value in subject_values(dataset).items():
        rows = (dataset.subjects == subject) & (dataset.labels == label)
        if rows.any():
            values.append(float(value))
            medians.append(float(np.median(lengths[rows])))
    return values, medians


def _real_slope(train, bundle):
    """Slope of the training subjects' median bundle length against their value."""
    values, medians = subject_median_lengths(train, bundle)
    return length_slope(values, medians), values


def attribute_slope_error(
    model, train, *, n_values=5, n_streamlines=400, seed=0, generate_options=None
):
    """How well generation reproduces the effect of the attribute on length.

    Parameters
    ----------
    model : TractAAE
        Conditioned on a per-subject attribute.
    train : StreamlineDataset
        The training data (the real slope is measured on it).
    n_values : int, optional
        Attribute values requested, spread over the 5-95 percentile of the
        training subjects' values.
    n_streamlines : int, optional
        Streamlines generated per bundle and value. The generated medians
        move from draw to draw, and so does the slope: on the age phantom
        the median of CC_Mid (about 113 mm) moved by 1.4 mm (sd over 6
        seeds) at 400 streamlines and 0.6 mm at 4,000 (the codes come from
        a bank of a few hundred), and the worst bundle's error moved by an
        sd of 0.045-0.070 between draws of one model at 400, 0.01-0.02 at
        4,000 (``benchmarks/age_slope.py``). :func:`aae_tract.metrics.evaluate`
        measures at :data:`aae_tract.metrics.SLOPE_STREAMLINES`.
    seed : int, optional
    generate_options : dict, optional
        Other keyword arguments of :func:`aae_tract.generate.generate` (e.g.
        ``subject_noise``).

    Returns
    -------
    dict
        ``worst`` (the largest relative error over bundles) and per bundle:
        ``error``, ``slope_generated``, ``slope_real`` (mm per unit),
        ``monotone`` (generated medians move the way the real slope does at
        every step), the requested ``values`` and generated ``medians``.
    """
    from aae_tract.generate import generate

    per_bundle = {}
    for bundle in model.bundle_names:
        real, subject_vals = _real_slope(train, bundle)
        if real is None or real == 0:
            continue
        values = np.percentile(subject_vals, np.linspace(5, 95, n_values))
        medians = [
            generate(
                model,
                bundle,
                attribute=float(v),
                n_streamlines=n_streamlines,
                seed=seed,
                **(generate_options or {}),
            ).median_length
            for v in values
        ]
        generated = length_slope(values, medians)
        steps = np.sign(np.diff(medians))
        per_bundle[bundle] = {
            "error": abs(generated - real) / abs(real),
            "slope_generated": generated,
            "slope_real": real,
            "monotone": bool(np.all(steps == np.sign(real))),
            "values": [float(v) for v in values],
            "medians": [float(m) for m in medians],
        }
    worst = max((b["error"] for b in per_bundle.values()), default=None)
    return {"worst": worst, "per_bundle": per_bundle}
