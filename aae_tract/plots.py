"""Matplotlib figures: training curves, latent space, evaluation.

Built with :mod:`aae_tract.figures` (an Agg figure that pyplot does not
track, saved atomically), coloured with :func:`aae_tract.colors.bundle_colors`
like the FURY pictures of :mod:`aae_tract.viz`.
"""

import logging
import math

import numpy as np

from aae_tract.colors import bundle_colors
from aae_tract.figures import new_figure, save_figure

logger = logging.getLogger(__name__)

__all__ = [
    "plot_evaluation",
    "plot_latent_space",
    "plot_training_curves",
]

# --------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------

_FAMILIES = (
    # (title, test on the metric name without its "val_" prefix)
    ("Reconstruction", lambda k: "recon" in k or k in ("mse", "mae")),
    (
        "Adversarial",
        lambda k: k.startswith(("disc", "gen", "adv")) or "_disc" in k or "_adv" in k,
    ),
    (
        "Attribute regularization",
        lambda k: k == "ar" or k.startswith(("ar_", "attr")) or "_ar_" in k,
    ),
    ("Total loss", lambda k: k == "loss"),
    ("Learning rate", lambda k: k in ("lr", "learning_rate")),
)


#: Name of the decoder-only stage's phase, and the suffix of its curves, in
#: the training curves.
STAGE_PHASE = "decoder-only stage"
STAGE_SUFFIX = "(decoder-only)"


def _family_of(base):
    for title, test in _FAMILIES:
        if test(base.lower()):
            return title
    text = base.replace("_", " ")
    return text[:1].upper() + text[1:]


def _epoch_axis(n_values, n_epochs):
    """Epoch numbers (1-based) for a curve of ``n_values`` over ``n_epochs``."""
    if n_values == n_epochs or n_values == 0:
        return np.arange(1, n_values + 1)
    return np.linspace(n_epochs / n_values, n_epochs, n_values)


def _curves(history, stage=None):
    """The curves to draw, their epochs (1-based), the history's epochs and
    the last epoch drawn.

    The history's curves span its epochs (a shorter one spread over them);
    the decoder-only stage's ``recon_loss`` and ``val_recon_loss`` follow
    them, named with :data:`STAGE_SUFFIX`.
    """
    curves = {}
    for key, values in dict(history).items():
        arr = np.asarray(values, dtype=float).reshape(-1)
        if arr.size:
            curves[str(key)] = arr
    if not curves:
        raise ValueError("history holds no curve to plot (it is empty)")
    n_epochs = max(len(v) for v in curves.values())
    xs = {key: _epoch_axis(len(y), n_epochs) for key, y in curves.items()}
    last = n_epochs
    for key in ("recon_loss", "val_recon_loss"):
        values = np.asarray((stage or {}).get(key, []), dtype=float).reshape(-1)
        if values.size:
            name = f"{key} {STAGE_SUFFIX}"
            curves[name] = values
            xs[name] = np.arange(n_epochs + 1, n_epochs + values.size + 1)
            last = max(last, n_epochs + values.size)
    return curves, xs, n_epochs, last


def plot_training_curves(history, out_png, *, title=None, phases=None, stage=None):
    """Plot training curves, one panel per loss family.

    Parameters
    ----------
    history : dict of str to list of float
        As Keras ``History.history``: keys such as ``loss``, ``recon_loss``,
        ``disc_loss``, ``gen_loss``, ``ar_loss`` and their ``val_`` versions.
        Reconstruction, adversarial (generator and discriminator), attribute
        regularization and total loss get a panel each; every other key gets
        its own panel. Validation curves are dashed, in the colour of their
        training curve.
    out_png : str or Path
        Where to write the PNG (atomically).
    title : str, optional
        Figure title.
    phases : list of (int, str), optional
        Phases of training after the first: the 1-based epoch at which each
        begins and its name (e.g. ``[(41, "self-training")]``), marked on
        every panel by a vertical line before that epoch and named in the
        legend.
    stage : dict, optional
        The record of the decoder-only stage that follows the epochs of
        ``history`` (``model.metadata.training["polish"]``). Its
        ``recon_loss`` and ``val_recon_loss`` per epoch are drawn in the
        reconstruction panel after the last epoch of ``history``, as
        ``recon_loss (decoder-only)``, and its first epoch is marked on every
        panel as a phase; its epochs are shaded in every panel, and panels
        with no curve there say "decoder-only stage: not recorded". A record
        without curves (or None) draws nothing.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    ValueError
        If ``history`` holds no curve with at least one value.
    """
    curves, xs, n_epochs, last = _curves(history, stage)
    phases = list(phases or ())
    if last > n_epochs:
        phases.append((n_epochs + 1, STAGE_PHASE))

    panels = {}
    for key in curves:
        base = key[4:] if key.startswith("val_") else key
        panels.setdefault(_family_of(base), {}).setdefault(base, []).append(key)
    order = [t for t, _ in _FAMILIES if t in panels]
    order += sorted(t for t in panels if t not in order)

    ncols = min(3, len(order)) if len(order) != 4 else 2
    nrows = math.ceil(len(order) / ncols)
    fig = new_figure((4.6 * ncols, 3.4 * nrows + (0.4 if title else 0)), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = [f"C{i}" for i in range(10)]
    for ax, family in zip(axes, order):
        all_values = []
        for i, (_, keys) in enumerate(sorted(panels[family].items())):
            color = palette[i % len(palette)]
            for key in sorted(keys, key=lambda k: k.startswith("val_")):
                y = curves[key]
                is_val = key.startswith("val_")
                ax.plot(
                    xs[key],
                    y,
                    color=color,
                    linestyle="--" if is_val else "-",
                    marker="o" if len(y) < 3 else None,
                    linewidth=1.6,
                    label=key,
                )
                all_values.append(y[np.isfinite(y)])
        for start, name in phases:
            ax.axvline(
                start - 0.5, color="0.45", linestyle=":", linewidth=1.2, label=name
            )
        if last > n_epochs:
            _shade_stage(ax, n_epochs, last, xs, panels[family])
        values = np.concatenate(all_values) if all_values else np.array([])
        if values.size and values.min() > 0 and values.max() / values.min() > 30:
            ax.set_yscale("log")
        ax.set_title(family)
        ax.set_xlim(0.5, last + 0.5)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    for ax in axes[len(order) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = save_figure(fig, out_png)
    logger.info("Wrote training curves to %s", out)
    return out


# --------------------------------------------------------------------------
# Latent space
# --------------------------------------------------------------------------


def _attribute_label(attribute_name):
    return "length (mm)" if attribute_name == "length" else str(attribute_name)


def _shade_stage(ax, n_epochs, last, xs, keys_by_base):
    """Shade the decoder-only stage (epochs after ``n_epochs``); where the
    panel has no curve there, say that the stage records none of its losses
    (it records the reconstruction loss only)."""
    ax.axvspan(n_epochs + 0.5, last + 0.5, color="0.94", zorder=0, linewidth=0)
    keys = [k for ks in keys_by_base.values() for k in ks]
    if any(len(xs[k]) and xs[k][-1] > n_epochs for k in keys):
        return
    ax.text(
        0.5 * (n_epochs + 1 + last),
        0.5,
        "decoder-only stage:\nnot recorded",
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="center",
        fontsize=8,
        color="0.45",
    )


def plot_latent_space(
    z,
    labels,
    attribute,
    bundle_names,
    out_png,
    *,
    attribute_name="length",
    title=None,
    max_points=20000,
    seed=0,
    prior_samples=None,
):
    """Plot latent codes: a 2-D PCA projection and latent dimension 0.

    Three panels: the PCA projection coloured by bundle, the same coloured by
    the attribute, and latent dimension 0 against the attribute per bundle
    (what attribute regularization makes monotone), with each bundle's
    Spearman rho in the legend. With ``prior_samples``, samples of the prior
    are drawn in grey under the codes of the first panel (same projection):
    where a bundle's codes leave prior mass uncovered, sampling the prior
    decodes codes the model never learnt.

    Parameters
    ----------
    z : array-like, shape (N, latent_dims)
        Latent codes.
    labels : array-like of int, shape (N,)
        Index of each code's bundle in ``bundle_names``.
    attribute : array-like of float, shape (N,)
        Attribute value of each code (streamline length in mm, age, ...).
    bundle_names : list of str
        Bundle names.
    out_png : str or Path
        Where to write the PNG (atomically).
    attribute_name : str, optional
        Name of the attribute; ``"length"`` is labelled in mm.
    title : str, optional
        Figure title.
    max_points : int, optional
        At most this many codes are drawn (a seeded random subset; the PCA is
        fitted on all of them).
    seed : int, optional
        Seed of that subset.
    prior_samples : array-like, shape (M, latent_dims), optional
        Samples of the model's prior to draw under the codes.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    ValueError
        If the shapes do not agree, there are no codes, or a label is not an
        index into ``bundle_names``.
    """
    z, labels, attribute, bundle_names = _latent_inputs(
        z, labels, attribute, bundle_names
    )
    proj, axis_labels, project = _projection(z)
    shown = np.arange(len(z))
    if len(z) > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(len(z), max_points, False))
    points = {
        "shown": shown,
        "size": float(np.clip(3000.0 / max(len(shown), 1), 2.0, 25.0)),
        "present": [i for i in range(len(bundle_names)) if np.any(labels[shown] == i)],
        "colors": bundle_colors(bundle_names),
    }
    fig = new_figure((15.5, 4.8 + (0.3 if title else 0)), dpi=110)
    ax_bundle, ax_attr, ax_z0 = fig.subplots(1, 3)
    if prior_samples is not None:
        _draw_prior(ax_bundle, project(np.asarray(prior_samples, float)), points)
    _draw_by_bundle(ax_bundle, proj, labels, bundle_names, points)
    sc = _draw_by_attribute(ax_attr, proj, attribute, attribute_name, shown, points)
    fig.colorbar(sc, ax=ax_attr, label=_attribute_label(attribute_name))
    for ax in (ax_bundle, ax_attr):
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.grid(alpha=0.3)
    _draw_z0(ax_z0, z, labels, attribute, bundle_names, attribute_name, points)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = save_figure(fig, out_png)
    logger.info("Wrote latent space figure to %s", out)
    return out


def _latent_inputs(z, labels, attribute, bundle_names):
    """The inputs of :func:`plot_latent_space` as arrays, checked."""
    z = np.asarray(z, dtype=float)
    if z.ndim == 1:
        z = z[:, None]
    labels = np.asarray(labels).reshape(-1).astype(int)
    attribute = np.asarray(attribute, dtype=float).reshape(-1)
    bundle_names = [str(b) for b in bundle_names]
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"z must be a non-empty (N, latent_dims) array, got {z.shape}")
    if len(labels) != len(z) or len(attribute) != len(z):
        raise ValueError(
            f"z has {len(z)} rows but labels has {len(labels)} and attribute "
            f"{len(attribute)}: they must match"
        )
    if labels.min() < 0 or labels.max() >= len(bundle_names):
        raise ValueError(
            f"labels must index bundle_names ({len(bundle_names)} names), got "
            f"values from {labels.min()} to {labels.max()}"
        )
    return z, labels, attribute, bundle_names


def _projection(z):
    """2-D PCA projection of the codes and its axis labels (dim 0 for 1-D z)."""
    from sklearn.decomposition import PCA

    if z.shape[1] >= 2 and len(z) >= 2:
        pca = PCA(n_components=2).fit(z)
        ratio = pca.explained_variance_ratio_
        axis_labels = (f"PC1 ({ratio[0]:.0%})", f"PC2 ({ratio[1]:.0%})")
        return pca.transform(z), axis_labels, pca.transform

    def first_dim(codes):
        return np.c_[codes[:, 0], np.zeros(len(codes))]

    return first_dim(z), ("latent dim 0", ""), first_dim


def _draw_prior(ax, proj, points):
    """Prior samples in grey, under the codes."""
    ax.scatter(
        proj[:, 0],
        proj[:, 1],
        s=points["size"],
        color="0.8",
        alpha=1.0,
        linewidths=0,
        label="prior samples",
    )


def _draw_by_bundle(ax, proj, labels, bundle_names, points):
    shown, size = points["shown"], points["size"]
    for i in points["present"]:
        sel = shown[labels[shown] == i]
        ax.scatter(
            proj[sel, 0],
            proj[sel, 1],
            s=size,
            color=points["colors"][bundle_names[i]],
            alpha=0.75,
            linewidths=0,
            label=bundle_names[i],
        )
    ax.set_title("latent codes by bundle (PCA)")
    ax.legend(fontsize=8, markerscale=max(1.0, 20.0 / size), frameon=False)


def _draw_by_attribute(ax, proj, attribute, attribute_name, shown, points):
    order = shown[np.argsort(attribute[shown], kind="stable")]
    sc = ax.scatter(
        proj[order, 0],
        proj[order, 1],
        s=points["size"],
        c=attribute[order],
        cmap="viridis",
        alpha=0.85,
        linewidths=0,
    )
    ax.set_title(f"latent codes by {attribute_name} (PCA)")
    return sc


def _draw_z0(ax, z, labels, attribute, bundle_names, attribute_name, points):
    """Latent dim 0 against the attribute, each bundle's Spearman rho labelled."""
    from scipy.stats import spearmanr

    shown, size = points["shown"], points["size"]
    for i in points["present"]:
        all_sel = labels == i
        sel = shown[labels[shown] == i]
        rho = float("nan")
        if all_sel.sum() >= 3 and np.ptp(attribute[all_sel]) > 0:
            rho = float(spearmanr(z[all_sel, 0], attribute[all_sel]).statistic)
        ax.scatter(
            attribute[sel],
            z[sel, 0],
            s=size,
            color=points["colors"][bundle_names[i]],
            alpha=0.75,
            linewidths=0,
            label=f"{bundle_names[i]} (rho {rho:+.2f})",
        )
    ax.set_title(f"latent dim 0 vs {attribute_name}")
    ax.set_xlabel(_attribute_label(attribute_name))
    ax.set_ylabel("latent dim 0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, markerscale=max(1.0, 20.0 / size), frameon=False)


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

# metric -> (label, which way is better, (lowest, highest) possible value or None)
_METRICS = {
    "recon_mdf_mm": ("reconstruction MDF (mm)", "lower is better", None),
    "label_fidelity": ("label fidelity", "higher is better", (0.0, 1.0)),
    "length_mae_mm": ("length MAE (mm)", "lower is better", None),
    "ar_spearman": ("AR Spearman rho", "higher is better", (-1.0, 1.0)),
    "diversity_ratio": ("diversity ratio", "1 is best", None),
    "density_dice": ("density Dice", "higher is better", (0.0, 1.0)),
    "curvature_ratio": ("curvature ratio (turning/mm)", "1 is best", None),
    "rough_fraction": ("rough streamlines, worst", "lower is better", (0.0, 1.0)),
    "hooked_fraction": ("hooked ends, worst", "lower is better", (0.0, 1.0)),
    "recon_length_ratio": ("recon. length ratio, worst", "1 is best", None),
    "length_error_pct": ("length error, worst target (%)", "lower is better", None),
    "length_error_pct_mean": ("length error, mean (%)", "lower is better", None),
    "shape_similarity": ("BUAN shape similarity", "higher is better", (0.0, 1.0)),
    "realism_c2st": ("realism C2ST accuracy", "0.5 is best", (0.0, 1.0)),
    "band_precision": (
        "on the bundle, lowest length band",
        "share minus real training share; 0 is best",
        None,
    ),
    "band_recall": (
        "bundle covered, lowest length band",
        "share minus real training share; 0 is best",
        None,
    ),
}
# metrics whose all-bundle value is the worst bundle's, not the mean
_WORST_CASE = {
    "recon_length_ratio",
    "length_error_pct",
    "rough_fraction",
    "hooked_fraction",
}
# metric -> its ideal value, drawn as a dotted line
_IDEAL = {
    "diversity_ratio": 1.0,
    "curvature_ratio": 1.0,
    "recon_length_ratio": 1.0,
    "realism_c2st": 0.5,
    "band_precision": 0.0,
    "band_recall": 0.0,
}
#: Keys of an evaluation that are settings or counts, not metrics.
_NOT_PLOTTED = {
    "n_train",
    "n_eval",
    "seconds",
    "bundles",
    "per_bundle",
    "seed",
    "sampling",
    "noise",
    "noise_scope",
    "subject_noise",
    "placement_noise",
    "prior_spread",
}
#: The model's bar over all bundles (mean or worst): a dark grey that no
#: bundle's colour (:func:`aae_tract.colors.bundle_colors`) comes near, where
#: the blue of before was CST's.
_MODEL_COLOR = "#202020"
_REFERENCE_COLOR = "#9e9e9e"


def _as_number(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _metric_names(metrics, reference):
    names = [m for m in _METRICS if m in metrics]
    for source in (metrics, reference or {}):
        for key, value in source.items():
            if key in _NOT_PLOTTED or key in names or key not in metrics:
                continue
            if _as_number(value) is not None:
                names.append(key)
    for per in (metrics.get("per_bundle") or {}).values():
        for key in per:
            if key not in names and key in _METRICS:
                names.append(key)
    return names


def plot_evaluation(metrics, out_png, *, reference=None, title=None):
    """Plot evaluation metrics, beside a real-vs-real reference where given.

    One panel per metric (``recon_mdf_mm``, ``label_fidelity``,
    ``length_mae_mm``, ``ar_spearman``, ``diversity_ratio``, ``density_dice``,
    ``curvature_ratio``, ``rough_fraction``, ``hooked_fraction``,
    ``recon_length_ratio``, ``length_error_pct``, ``length_error_pct_mean``,
    ``shape_similarity``, ``realism_c2st`` and any other number in
    ``metrics``): a bar for the model's value over all bundles (mean, or
    worst case for ``recon_length_ratio``, ``length_error_pct``,
    ``rough_fraction`` and ``hooked_fraction``) and,
    where ``metrics["per_bundle"]`` is given, one bar per bundle in the
    bundle's colour (the bar over all bundles is dark grey); the reference
    value of the same metric is drawn beside each bar, hatched light grey, and
    a dotted line marks the ideal value of the ratios and of
    ``realism_c2st``. Values that are not numbers (the per-bundle lists of
    ``metrics.json``) are left out.

    Parameters
    ----------
    metrics : dict
        As written to ``metrics.json``: metric name to number, optionally
        ``per_bundle`` ({bundle: {metric: value}}), ``n_train``, ``n_eval``,
        ``seconds``.
    out_png : str or Path
        Where to write the PNG (atomically).
    reference : dict, optional
        The same metrics measured real-vs-real (e.g. one held-out half
        against the other), same layout as ``metrics``.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    ValueError
        If ``metrics`` holds no number to plot.
    """
    metrics = dict(metrics)
    reference = dict(reference) if reference else {}
    names = _metric_names(metrics, reference)
    if not names:
        raise ValueError(
            f"metrics holds no number to plot (keys: {sorted(metrics) or 'none'})"
        )
    bundles = sorted(str(k) for k in (metrics.get("per_bundle") or {}))
    ncols = 4 if len(names) > 9 else min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    panel_w = max(3.8, 1.2 + 0.75 * (len(bundles) + 1))
    height = 3.3 * nrows + 0.9
    fig = new_figure((panel_w * ncols, height), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        groups = _metric_groups(name, metrics, reference)
        _draw_metric(ax, name, groups, with_reference=bool(reference))
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    _draw_legend_and_counts(fig, metrics, with_reference=bool(reference))
    fig.suptitle(title or "evaluation")
    # the title's own strip (a third of an inch), which tight_layout gives the panels
    fig.tight_layout(rect=(0, 0.05, 1, 1 - 0.35 / height))
    out = save_figure(fig, out_png)
    logger.info("Wrote evaluation figure to %s", out)
    return out


def _per_bundle(metrics):
    return {str(k): dict(v) for k, v in (metrics.get("per_bundle") or {}).items()}


def _metric_groups(name, metrics, reference):
    """(tick label, value, reference value, colour) of one metric's bars:
    all bundles first, then each bundle."""
    per_bundle, ref_per_bundle = _per_bundle(metrics), _per_bundle(reference)
    bundles = sorted(per_bundle)
    colors = bundle_colors(bundles)
    overall = "worst" if name in _WORST_CASE else "mean"
    groups = [(overall, metrics.get(name), reference.get(name), _MODEL_COLOR)]
    for b in bundles:
        ref_value = ref_per_bundle.get(b, {}).get(name)
        groups.append((b, per_bundle[b].get(name), ref_value, colors[b]))
    return groups


def _bar(ax, x, value, width, *, text_color=None, upright=False, **style):
    """One bar with its value written above (below, when negative); written
    upright (rotated a quarter turn) where bars stand in pairs, so that the
    values of neighbouring bars do not run into each other."""
    ax.bar(x, value, width, edgecolor="black", linewidth=0.5, **style)
    ax.annotate(
        f"{value:.3g}",
        (x, value),
        ha="center",
        va="bottom" if value >= 0 else "top",
        fontsize=7,
        rotation=90 if upright else 0,
        xytext=(0, 2 if value >= 0 else -2),
        textcoords="offset points",
        **({} if text_color is None else {"color": text_color}),
    )


def _draw_bars(ax, groups, with_reference, paired):
    """The model's bars (and the reference's beside them); their heights.
    ``paired``: some bar has a reference bar beside it (values upright)."""
    width = 0.38 if with_reference else 0.6
    offset = -width / 2 if with_reference else 0.0
    heights = []
    for x, (_, value, ref_value, color) in enumerate(groups):
        value, ref_value = _as_number(value), _as_number(ref_value)
        if value is not None:
            _bar(ax, x + offset, value, width, color=color, upright=paired)
            heights.append(value)
        else:
            ax.text(x + offset, 0, "n/a", ha="center", va="bottom", fontsize=7)
        if with_reference and ref_value is not None:
            style = {"color": _REFERENCE_COLOR, "hatch": "//"}
            _bar(
                ax,
                x + width / 2,
                ref_value,
                width,
                text_color="#444444",
                upright=True,
                **style,
            )
            heights.append(ref_value)
    return heights


def _has_reference(groups):
    """Whether any bar of a metric's panel has a reference bar beside it."""
    return any(_as_number(ref_value) is not None for _, _, ref_value, _ in groups)


def _draw_metric(ax, name, groups, *, with_reference):
    """One metric's panel: bars, ideal value, limits and title."""
    label, better, limits = _METRICS.get(name, (name.replace("_", " "), "", None))
    paired = with_reference and _has_reference(groups)
    heights = _draw_bars(ax, groups, with_reference, paired)
    by_bundle = len(groups) > 1
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(
        [g[0] for g in groups],
        rotation=30 if by_bundle else 0,
        ha="right" if by_bundle else "center",
        fontsize=8,
    )
    ax.axhline(0, color="black", linewidth=0.6)
    if len(groups) < 3:  # keep lone bars narrow
        ax.set_xlim(-1.0, len(groups))
    ideal = _IDEAL.get(name)
    if ideal is not None:
        ax.axhline(ideal, color="#d62728", linewidth=0.8, linestyle=":")
    low = min([0.0, *heights])
    high = max([0.0, *heights, ideal or 0.0])
    if limits is not None:  # bounded metric: show its upper bound
        high = max(high, limits[1])
    # room for the values written above (upright ones, beside a reference, are taller)
    pad = (0.25 if paired else 0.12) * (high - low or 1.0)
    if not heights:  # every value n/a: the labels above a centred zero line
        low, high, pad = -0.5, 0.5, 0.0
        ax.set_xlim(-0.6, max(len(groups), 2) - 0.4)
    ax.set_ylim(low - (pad if low < 0 else 0.0), high + pad)
    ax.set_title(f"{label}\n({better})" if better else label, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def _draw_legend_and_counts(fig, metrics, *, with_reference):
    """Model / reference legend at the bottom left, data counts at the right."""
    from matplotlib.patches import Patch

    label = "model (first bar: all bundles)" if _per_bundle(metrics) else "model"
    handles = [Patch(facecolor=_MODEL_COLOR, edgecolor="black", label=label)]
    if with_reference:
        handles.append(
            Patch(
                facecolor=_REFERENCE_COLOR,
                hatch="//",
                edgecolor="black",
                label="reference (real vs real)",
            )
        )
    footer = ", ".join(
        f"{k} {_as_number(metrics.get(k)):.4g}"
        for k in ("n_train", "n_eval", "seconds")
        if _as_number(metrics.get(k)) is not None
    )
    fig.legend(handles=handles, loc="lower left", ncol=2, frameon=False, fontsize=9)
    if footer:
        fig.text(
            0.99, 0.01, footer, ha="right", va="bottom", fontsize=8, color="#444444"
        )
