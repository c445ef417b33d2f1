"""Ways of training the adversarial prior, compared on the phantom.

Each variant is the model of the earlier defaults (:data:`EARLIER_DEFAULTS`:
the Gaussian prior and the sign target of the AR loss, the defaults when these
variants were measured) with a few :class:`~aae_tract.model.AAEConfig` fields
changed; ``current`` and the ``mixture*`` variants start from the defaults of
the fitted prior (:data:`FITTED_DEFAULTS`: the fitted prior, ``ar_soft`` 0.1
for length, ``adv_weight`` 0.005, ``ar_weight`` 0.5, no decoder-only stage),
and ``defaults`` is today's. Every variant is trained on the same phantom
(with fragments) and split as ``benchmarks/quality.py`` uses, then evaluated
on the held-out subjects with both samplings; the table prints, per variant
and sampling, the numbers that say whether sampling the prior works
(``label_fidelity``, ``diversity_ratio``, ``novelty_ratio``, ``prior_match``)
and what it costs (``recon_mdf_mm``).

Usage::

    python benchmarks/prior_variants.py --epochs 40 --out prior_variants.json
    python benchmarks/prior_variants.py --variants default latent8_mmd0.05
    python benchmarks/prior_variants.py --list
    python benchmarks/prior_variants.py --variants default --model_dir models
    python benchmarks/prior_variants.py --load models/default_seed0.keras \
        --bank_noise 0.1 0.2 0.3
    python benchmarks/prior_variants.py --load 'models/default_seed{seed}.keras' \
        --seeds 0 1 2 --bank_noise 0.2 --subject_noise none 0 0.7 1
    python benchmarks/prior_variants.py --load models/default_seed0.keras \
        --band_figure bands_AF_L.png --bundle AF_L --band 1
    python benchmarks/prior_variants.py --load 'models/default_seed{seed}.keras' \
        --seeds 0 1 2 --subject_bands --bundle UF_L
    python benchmarks/prior_variants.py --load 'models/q_seed{seed}.keras' \
        --plain 'models/q_plain_seed{seed}.keras' --polish 0 20 40 60
    python benchmarks/prior_variants.py --load models/q_seed0.keras \
        --polish 40 --polish_noise 0 0.01 0.02 0.05
    python benchmarks/prior_variants.py --load models/q_seed0.keras \
        --polish 40 --polish_noise 0.05 --polish_turn_weight 0.0003 0.001
    python benchmarks/prior_variants.py --rough 'models/q_seed{seed}.keras' \
        'models/p_seed{seed}.keras' --seeds 0 1 2
    python benchmarks/prior_variants.py --novelty 'models/q_seed{seed}.keras' \
        --seeds 0 1 2
    python benchmarks/prior_variants.py --load 'models/reg_seed{seed}.keras' \
        --seeds 0 1 2 --register groupwise --refit 8:64 32:32 32:16
    python benchmarks/prior_variants.py --load 'models/td_seed{seed}.keras' \
        --seeds 0 1 2 --register groupwise --refit 32:32x1.2 32:32xauto 32:32s
    python benchmarks/prior_variants.py --load 'models/td_seed{seed}.keras' \
        --seeds 0 1 2 --register groupwise --refit 32:32 --fresh 400

``--bank_noise`` evaluates trained models (``--load``) with ``bank``
sampling at several noise levels instead (``--subject_noise``: how far codes
move to new subjects): how far from the training codes generation may move
before the bundle's shape suffers.

It is a screening tool: one seed per variant (``--seeds`` for more) and a
short budget. A variant that looks promising is then measured with
``benchmarks/quality.py --set FIELD=VALUE`` over 3 seeds against a plain
autoencoder trained in the same run (``--baseline``).
"""

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from aae_tract.generate import DEFAULT_CANDIDATES, DEFAULT_SUBJECT_NOISE  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality  # noqa: E402

#: The defaults of the runs in doc/benchmarks.md that screened these variants
#: (``prior``, ``ar_soft``, ``adv_weight``, ``ar_weight`` and the decoder-only
#: stage have other defaults now), so that their commands still train the
#: models they trained.
FITTED_DEFAULTS = {
    "prior": "fitted",
    "adv_weight": 0.005,
    "ar_weight": 0.5,
    "polish_epochs": 0,
    "polish_noise": 0.0,
    "polish_turn_weight": 0.0,
}
EARLIER_DEFAULTS = {**FITTED_DEFAULTS, "prior": "gaussian", "ar_soft": 0.0}
#: Keyword arguments of every generation here (``--noise``, ``--noise_scope``,
#: ``--subject_scope``, ``--extend_reach``; :func:`quality.generation_options`).
GENERATION = {}
#: Placement of the generated streamlines: none, as in the sections these
#: variants were measured for (before ``placement_noise``; the streamlines
#: drawn here with ``sample_latent`` and ``decode`` are not placed either).
PLACEMENT_NOISE = 0.0

#: Variant name -> AAEConfig fields changed from :data:`EARLIER_DEFAULTS`.
VARIANTS = {
    "default": {},
    "gaussian": {"posterior": "gaussian"},
    "gaussian_adv0.05": {"posterior": "gaussian", "adv_weight": 0.05},
    "gaussian_adv0.05_logvar0.001": {
        "posterior": "gaussian",
        "adv_weight": 0.05,
        "log_var_weight": 0.001,
    },
    "gaussian_adv0.05_logvar0.01": {
        "posterior": "gaussian",
        "adv_weight": 0.05,
        "log_var_weight": 0.01,
    },
    "mmd0.05": {"mmd_weight": 0.05},
    "gaussian_logvar0.01_mmd0.05": {
        "posterior": "gaussian",
        "log_var_weight": 0.01,
        "mmd_weight": 0.05,
    },
    "latent8_mmd0.05": {"latent_dims": 8, "mmd_weight": 0.05},
    "latent8_adv0.05": {"latent_dims": 8, "adv_weight": 0.05},
    "latent6_mmd0.05": {"latent_dims": 6, "mmd_weight": 0.05},
    "latent4_mmd0.05": {"latent_dims": 4, "mmd_weight": 0.05},
    # one Gaussian per bundle, refitted to its codes every epoch
    "fitted": {"prior": "fitted"},
    "fitted_adv0.02": {"prior": "fitted", "adv_weight": 0.02},
    # where the reconstruction gap to a plain autoencoder comes from
    "plain": dict(quality.PLAIN),
    "plain_latent6": {**quality.PLAIN, "latent_dims": 6},
    "adv0": {"adv_weight": 0.0},
    "adv0.001": {"adv_weight": 0.001},
    "ar0": {"ar_weight": 0.0},
    # where the fitted prior's remaining gap comes from
    "fitted_ar0": {"prior": "fitted", "ar_weight": 0.0},
    "fitted_ar0.1": {"prior": "fitted", "ar_weight": 0.1},
    "fitted_ar0.02": {"prior": "fitted", "ar_weight": 0.02},
    # the AR loss's target soft for close values (ar_soft) instead of a sign
    "fitted_arsoft0.1": {"prior": "fitted", "ar_soft": 0.1},
    "fitted_arsoft0.3": {"prior": "fitted", "ar_soft": 0.3},
    "fitted_arsoft1": {"prior": "fitted", "ar_soft": 1.0},
    "arsoft0.1": {"ar_soft": 0.1},
    "fitted_arsoft0.1_adv0": {"prior": "fitted", "ar_soft": 0.1, "adv_weight": 0.0},
    "fitted_arsoft0.1_ar0.1": {"prior": "fitted", "ar_soft": 0.1, "ar_weight": 0.1},
    "fitted_arsoft0.03": {"prior": "fitted", "ar_soft": 0.03},
    "fitted_arsoft0.1_ar0.1_adv0": {
        "prior": "fitted",
        "ar_soft": 0.1,
        "ar_weight": 0.1,
        "adv_weight": 0.0,
    },
    # the same with a smaller adversary (the default adv_weight is 0.005)
    "fitted_arsoft0.1_ar0.1_adv0.002": {
        "prior": "fitted",
        "ar_soft": 0.1,
        "ar_weight": 0.1,
        "adv_weight": 0.002,
    },
    "fitted_arsoft0.1_ar0.1_adv0.001": {
        "prior": "fitted",
        "ar_soft": 0.1,
        "ar_weight": 0.1,
        "adv_weight": 0.001,
    },
}
VARIANTS = {name: {**EARLIER_DEFAULTS, **fields} for name, fields in VARIANTS.items()}
#: The defaults of the fitted prior (before the mixture and the decoder-only
#: stage became the defaults): ``current`` was their name then.
VARIANTS["current"] = dict(FITTED_DEFAULTS)
#: The same with a Gaussian mixture fitted to each bundle's codes.
VARIANTS["mixture2"] = {
    **FITTED_DEFAULTS,
    "prior": "fitted_mixture",
    "prior_components": 2,
}
VARIANTS["mixture4"] = {**VARIANTS["mixture2"], "prior_components": 4}
VARIANTS["mixture8"] = {**VARIANTS["mixture2"], "prior_components": 8}
VARIANTS["mixture8_adv0.02"] = {**VARIANTS["mixture8"], "adv_weight": 0.02}
VARIANTS["mixture4_ar0.1"] = {**VARIANTS["mixture4"], "ar_weight": 0.1}
VARIANTS["mixture4_ar0.1_adv0.001"] = {
    **VARIANTS["mixture4_ar0.1"],
    "adv_weight": 0.001,
}
VARIANTS["mixture8_ar0.1_adv0.001"] = {
    **VARIANTS["mixture4_ar0.1_adv0.001"],
    "prior_components": 8,
}
#: The same with a decoder-only stage of 40 epochs after training.
VARIANTS["mixture8_ar0.1_adv0.001_polish40"] = {
    **VARIANTS["mixture8_ar0.1_adv0.001"],
    "polish_epochs": 40,
}
#: Today's defaults, unchanged.
VARIANTS["defaults"] = {}

COLUMNS = (
    "recon_mdf_mm",
    "ar_spearman",
    "label_fidelity",
    "length_error_pct",
    "diversity_ratio",
    "novelty_ratio",
    "prior_match",
    "shape_similarity",
    "realism_c2st",
    "rough_fraction",
    "band_precision",
)


def run_variant(name, fields, seed, epochs, train, held_out, model_dir=None):
    """Train one variant with one seed; evaluate it with both samplings."""
    from aae_tract.metrics import evaluate
    from aae_tract.model import TractAAE

    config = {**quality.CONFIGS["phantom"], "epochs": epochs, "seed": seed, **fields}
    model = TractAAE.from_dataset(train, **config)
    start = time.perf_counter()
    model.fit(train, held_out, verbose=0)
    seconds = time.perf_counter() - start
    if model_dir:
        model.save(os.path.join(model_dir, f"{name}_seed{seed}.keras"))
    rows = {}
    for sampling in quality.SAMPLINGS:
        result = evaluate(
            model,
            held_out,
            sampling=sampling,
            train=train,
            seed=seed,
            placement_noise=PLACEMENT_NOISE,
            **GENERATION,
        )
        rows[sampling] = {k: result[k] for k in COLUMNS}
        rows[sampling]["per_bundle_prior_match"] = {
            b: v["prior_match"] for b, v in result["per_bundle"].items()
        }
    return {"variant": name, "fields": fields, "seed": seed, "seconds": seconds, **rows}


def _worst(runs, sampling):
    """Largest per-bundle prior_match over the runs."""
    return max(
        v
        for r in runs
        for v in r[sampling]["per_bundle_prior_match"].values()
        if v is not None
    )


def table(runs):
    """Mean (+/- sd over seeds) per variant and sampling."""
    head = ["variant", "sampling", *COLUMNS]
    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == name]
        for sampling in quality.SAMPLINGS:
            cells = [name, sampling]
            for key in COLUMNS:
                values = [
                    r[sampling][key] for r in mine if r[sampling][key] is not None
                ]
                if key == "prior_match" and values:
                    cells.append(
                        f"{np.mean(values):.3f} (worst {_worst(mine, sampling):.3f})"
                    )
                elif not values:
                    cells.append("n/a")
                elif len(values) == 1:
                    cells.append(f"{values[0]:.3f}")
                else:
                    cells.append(
                        f"{np.mean(values):.3f} +/- {np.std(values, ddof=1):.3f}"
                    )
            rows.append(cells)
    return quality._render([], head, rows)


NOISE_COLUMNS = (
    "label_fidelity",
    "diversity_ratio",
    "novelty_ratio",
    "shape_similarity",
    "realism_c2st",
    "density_dice",
    "length_error_pct",
    "curvature_min",
    "band_precision",
)


def _value(result, key):
    """A column of the noise table: an evaluate() key, or ``curvature_min``
    (the lowest bundle's curvature_ratio: its target holds in every bundle)."""
    if key == "curvature_min":
        values = [
            row["curvature_ratio"]
            for row in result["per_bundle"].values()
            if row.get("curvature_ratio") is not None
        ]
        return min(values, default=None)
    return result[key]


def _subject_label(value):
    return "none" if value is None else f"{value:g}"


def bank_noise(pattern, levels, subject_levels, seeds, train, held_out, recalibrate):
    """Evaluate saved models with bank sampling at each pair of noises.

    ``pattern`` names the model of each seed (``{seed}`` is filled in).
    ``subject_levels`` are values of ``subject_noise`` ("none": each code
    keeps its subject, the sampling of models saved before banks kept
    subjects). With ``recalibrate`` the calibration and latent bank are
    fitted again on the training split first (the same encodings and the
    same seeded sample, so the same bank, now with its codes' subjects).
    """
    from aae_tract.metrics import evaluate
    from aae_tract.model import TractAAE

    runs = {}
    for seed in seeds:
        model = TractAAE.load(pattern.format(seed=seed))
        if recalibrate:
            model.calibrate(train, candidates=GENERATION.get("candidates"))
        for noise in levels:
            for subject in subject_levels:
                result = evaluate(
                    model,
                    held_out,
                    sampling="bank",
                    train=train,
                    seed=seed,
                    noise=noise,
                    subject_noise=subject,
                    subject_scope=GENERATION.get("subject_scope", "target"),
                    extend_reach=GENERATION.get("extend_reach", False),
                    noise_scope=GENERATION.get("noise_scope", "bundle"),
                    candidates=GENERATION.get("candidates", DEFAULT_CANDIDATES),
                )
                runs.setdefault((noise, subject), []).append(result)
                print(
                    f"seed {seed}, noise {noise:g}, subject noise "
                    f"{_subject_label(subject)}: done",
                    flush=True,
                )
    rows = []
    for (noise, subject), results in runs.items():
        cells = [f"{noise:g}", _subject_label(subject)]
        for key in NOISE_COLUMNS:
            values = [_value(r, key) for r in results]
            values = [v for v in values if v is not None]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{np.mean(values):.3f} +/- {np.std(values, ddof=1):.3f}")
        rows.append(cells)
    head = ["bank noise", "subject noise", *NOISE_COLUMNS]
    return quality._render([], head, rows)


def spectrum(path, train, held_out, n=8, figure=None):
    """Largest eigenvalues of each bundle's held-out code covariance, and
    classifier tests (:func:`aae_tract.metrics.prior_match`) that tell apart
    why a bundle's codes do or do not match the prior: training codes
    against prior samples (is the shape of the codes the prior's?), held-out
    codes against prior samples (``prior_match``) and held-out codes against
    training codes (do new subjects' codes lie where the training subjects'
    do?). With ``figure`` (a PNG path), the held-out codes are drawn over as
    many samples of their bundles' priors
    (:func:`aae_tract.plots.plot_latent_space`)."""
    from aae_tract.metrics import prior_match
    from aae_tract.model import TractAAE

    model = TractAAE.load(path)
    z, labels = {}, {}
    for split, data in (("train", train), ("held_out", held_out)):
        z[split], labels[split] = _codes(model, data)
    prior = model.network.prior
    rng = np.random.default_rng(0)
    lines = [
        f"covariance eigenvalues of the held-out codes (largest {n}; "
        "the N(0, I) prior's: 1)"
    ]
    tests = [
        "classifier accuracy (0.5: indistinguishable): train codes vs prior | "
        "held-out codes vs prior | held-out vs train codes"
    ]
    for i, name in enumerate(model.bundle_names):
        held, trained = (z[s][labels[s] == i] for s in ("held_out", "train"))
        values = np.linalg.eigvalsh(np.cov(held, rowvar=False))[::-1][:n]
        lines.append(f"{name}: " + " ".join(f"{v:.3f}" for v in values))
        scores = (
            prior_match(trained, prior.sample_numpy(len(trained), rng, i)),
            prior_match(held, prior.sample_numpy(len(held), rng, i)),
            prior_match(held, trained),
        )
        tests.append(f"{name}: " + " | ".join(f"{v:.3f}" for v in scores))
    if figure:
        from aae_tract.plots import plot_latent_space

        held = labels["held_out"]
        plot_latent_space(
            z["held_out"],
            held,
            np.asarray(held_out.attribute),
            model.bundle_names,
            figure,
            attribute_name=held_out.attribute_name,
            title=f"held-out codes over prior samples ({model.config.prior})",
            prior_samples=prior.sample_numpy(len(held), rng, held),
        )
        tests.append(f"\nwrote {figure}")
    return "\n".join(lines + [""] + tests)


def _codes(model, data):
    """``(codes, labels)`` of a dataset, encoded as
    :func:`aae_tract.metrics.evaluate` encodes: one sample of q(z | x) each."""
    from aae_tract.metrics import _prepared

    x, labels = _prepared(model, data)
    return model.encode_prepared(x, rng=0), labels


def fresh_draws(train, n_per_bundle):
    """New streamlines of the training subjects, in the training space.

    The phantom of ``quality.py`` made again with ``n_per_bundle``
    streamlines per bundle and subject: the same subjects, with the same
    deformations and ages (drawn from the phantom's seed and the subject
    alone), whose streamlines are drawn anew (their draws depend on their
    count, so the streamlines differ from the training data). Only the training
    subjects are kept; they are moved with the transforms the training
    split's registration stored for them and oriented against its
    references, as the training streamlines were. The classifier test
    between these and the training codes says whether the encoder treats
    streamlines it was trained on differently from new ones of the same
    subjects; between these and a prior fitted to the training codes, how
    far the fit lies from the distribution those codes come from.
    """
    import tempfile

    from aae_tract.data import load_dataset
    from aae_tract.data_fetchers import make_phantom

    if n_per_bundle == quality.PHANTOM["n_per_bundle"]:
        raise ValueError(
            f"{n_per_bundle} streamlines per bundle is the phantom's own count: "
            "its draws would repeat the training streamlines"
        )
    options = dict(quality.PHANTOM, n_per_bundle=int(n_per_bundle))
    with tempfile.TemporaryDirectory(prefix="aae_tract_fresh_") as folder:
        dataset = load_dataset(
            make_phantom(folder, **options),
            n_points=quality.CONFIGS["phantom"]["n_points"],
            orient_refs=train.orient_refs,
        )
    keep = np.flatnonzero(np.isin(dataset.subjects, np.unique(train.subjects)))
    fresh = dataset.subset(keep)
    if train.registration is not None:
        fresh = train.registration.align(
            fresh, use_stored=True, orient_refs=train.orient_refs
        )
    return fresh


def _refit_spec(text):
    """``"COMPONENTS[:CODES][xSPREAD][s]"`` -> ``(components, codes,
    spread, shrink)``: codes per component (None: the default); spread, a
    factor (1 when not given) or ``"auto"`` for the one
    :meth:`~aae_tract.model.priors.FittedPrior.choose_spread` chooses;
    shrink, whether a trailing ``s`` asks for each component's covariance to
    be shrunk (:func:`shrunk_covariance`). ``xauto`` with ``s`` is refused:
    the factor would be chosen for the mixture before shrinkage."""
    usage = "--refit takes COMPONENTS[:CODES][xSPREAD][s]"
    shrink = text.endswith("s")
    body, cross, spread = text.removesuffix("s").partition("x")
    parts = body.split(":")
    try:
        if len(parts) not in (1, 2) or (cross and not spread):
            raise ValueError
        k = int(parts[0])
        codes = int(parts[1]) if len(parts) == 2 else None
        spread = 1.0 if not cross else spread if spread == "auto" else float(spread)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{usage}, got {text!r}") from None
    if spread == "auto" and shrink:
        raise argparse.ArgumentTypeError(
            f"--refit {text!r}: xauto chooses the factor without shrinkage; "
            "ask for a factor with s"
        )
    if k < 1 or (codes is not None and codes < 1):
        raise argparse.ArgumentTypeError(f"{usage} with counts >= 1, got {text!r}")
    if spread != "auto" and not (np.isfinite(spread) and spread > 0):
        raise argparse.ArgumentTypeError(
            f"{usage} with a finite SPREAD above 0, got {text!r}"
        )
    return k, codes, spread, shrink


def _spec_name(spec):
    k, codes, spread, shrink = spec
    name = f"{k}:{codes if codes is not None else 'default'}"
    name = name if spread == 1.0 else f"{name}x{spread}"
    return f"{name}s" if shrink else name


def _mixture(latent_dims, n_bundles, spec, seed):
    """A fresh fitted mixture prior of ``spec`` (components, codes per
    component, spread), as a model of that setting would build it."""
    from aae_tract.model.priors import make_prior

    k, codes, _, _ = spec
    prior = make_prior(
        "fitted_mixture",
        latent_dims,
        n_components=k,
        n_bundles=n_bundles,
        seed=seed,
        codes_per_component=codes,
    )
    return prior


def shrunk_covariance(cov, n, scale):
    """A covariance estimated from ``n`` codes, shrunk toward a multiple of
    the identity by the oracle approximating shrinkage (Chen et al. 2010),
    in units of ``scale`` per dimension.

    A covariance estimated from about as many codes as dimensions spreads
    its eigenvalues too far apart: the largest too large, the smallest too
    small. Shrinkage pulls them together, keeping the trace (in units of
    ``scale``).
    """
    cov = np.asarray(cov, dtype=np.float64) / np.outer(scale, scale)
    d = len(cov)
    mu = np.trace(cov) / d
    tr2 = float(np.sum(cov * cov))
    num = (1.0 - 2.0 / d) * tr2 + np.trace(cov) ** 2
    den = (n + 1.0 - 2.0 / d) * (tr2 - np.trace(cov) ** 2 / d)
    alpha = 1.0 if den <= 0 else min(1.0, num / den)
    out = (1.0 - alpha) * cov + alpha * mu * np.eye(d)
    return out * np.outer(scale, scale)


def _fit_spread(prior, spec, z, labels, subjects):
    """Fit ``prior`` to ``z``, shrink each component's covariance where
    ``spec`` asks (:func:`shrunk_covariance`, in units of the bundle's sd per
    dimension) and widen it by ``spec``'s spread (chosen from ``subjects``
    for ``"auto"``); return each bundle's spread."""
    prior.fit(z, labels)
    if spec[3]:
        for b in np.unique(labels):
            codes = z[labels == b]
            scale = codes.std(axis=0) + 1e-12
            means, chols, weights = prior.components(int(b))
            shrunk = [
                np.linalg.cholesky(shrunk_covariance(c @ c.T, w * len(codes), scale))
                for c, w in zip(chols, weights)
            ]
            prior._set({int(b): (means, np.stack(shrunk), weights)})
    spread = spec[2]
    if spread == "auto":
        spreads = prior.choose_spread(z, labels, subjects)
    else:
        spreads = np.full(prior.n_bundles, float(spread))
    for b, factor in enumerate(spreads):
        if np.any(labels == b):
            prior.widen(b, factor)
    return spreads


def _half_test(codes, groups, bundle, specs, names, setting, draws):
    """How far a mixture fitted to codes lies from new codes of the same
    subjects: for each of ``draws`` seeded halves (half of each subject's
    codes), the other half against the half itself and against a mixture
    of each spec fitted to the half (:func:`aae_tract.metrics.prior_match`).

    With no new subject between them the codes' test is at chance, and a
    mixture's excess over it is the error of its fit alone. Returns the
    mean accuracy per test (``"train codes"`` and each name)."""
    from aae_tract.metrics import prior_match

    latent_dims, n_bundles, seed = setting
    rng = np.random.default_rng([seed, bundle, 1])
    out = {"train codes": []} | {label: [] for label in names}
    for r in range(draws):
        pick = np.zeros(len(codes), dtype=bool)
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            pick[rng.choice(rows, len(rows) // 2, replace=False)] = True
        half, other = codes[pick], codes[~pick]
        out["train codes"].append(prior_match(other, half, seed=r))
        for spec, label in zip(specs, names):
            prior = _mixture(latent_dims, n_bundles, spec, seed)
            _fit_spread(prior, spec, half, np.full(len(half), bundle), groups[pick])
            sample = prior.sample_numpy(len(other), rng, bundle)
            out[label].append(prior_match(other, sample, seed=r))
    return {label: float(np.mean(v)) for label, v in out.items()}


def _fresh_tests(held, codes, fresh, priors, key, draws):
    """:func:`refit_screen`'s tests of fresh draws of the training subjects
    (``fresh``, codes of one bundle): the held-out codes against them
    (``"fresh draws"``), and them against the training ``codes`` and samples
    of each of ``priors`` (``"fresh train codes"``, ``"fresh <label>"``).
    Each draw takes ``len(held)`` fresh codes; the draws have an rng of
    their own (from ``key``), so the other tests' numbers do not change."""
    from aae_tract.metrics import prior_match

    rng = np.random.default_rng([*key, 2])
    n = min(len(held), len(fresh))
    out = {"fresh draws": [], "fresh train codes": []}
    out |= {f"fresh {label}": [] for label in priors}
    for r in range(draws):
        some = fresh[rng.choice(len(fresh), n, replace=False)]
        out["fresh draws"].append(prior_match(held, some, seed=r))
        out["fresh train codes"].append(prior_match(some, codes, seed=r))
        for label, prior in priors.items():
            sample = prior.sample_numpy(n, rng, key[1])
            out[f"fresh {label}"].append(prior_match(some, sample, seed=r))
    return {label: float(np.mean(v)) for label, v in out.items()}


def _mean_table(title, rows, prefix, names):
    """A table of the ``prefix`` tests of :func:`refit_screen`'s ``rows``:
    per bundle, the mean of the training codes' test and of each mixture's,
    with a last row of their means over bundles."""
    tests = [f"{prefix} {t}" for t in ("train codes", *names)]
    body = [[n, *(f"{np.mean(r[t]):.3f}" for t in tests)] for n, r in rows.items()]
    body.append(
        [
            "mean",
            *(f"{np.mean([np.mean(r[t]) for r in rows.values()]):.3f}" for t in tests),
        ]
    )
    return quality._render([title], ["bundle", "train codes", *names], body)


def refit_screen(pattern, seeds, specs, train, held_out, draws=3, fresh=None):
    """Mixtures of other sizes refitted to trained models' codes.

    For each model (``pattern`` with ``{seed}``) and bundle, the
    :func:`aae_tract.metrics.prior_match` test of the held-out codes against
    (a) the bundle's training codes (the reference of ``quality.py``), (b) the
    model's own prior and (c) a mixture of each ``spec`` (components, codes
    per component, widening, shrinkage: :func:`_refit_spec`) refitted to all
    the bundle's training codes, each the
    mean of ``draws`` draws of prior samples and classifier seeds. Then the
    same without held-out data: each training subject in turn left out, its
    codes against the other training subjects' codes and against a mixture
    of each ``spec`` fitted to theirs (a setting that helps there is chosen
    from the training subjects alone). Then without a new subject at all:
    half of each training subject's codes against the other half and
    against a mixture of each ``spec`` fitted to that half
    (:func:`_half_test`), the error of the fit alone. Last, how far
    held-out codes, prior samples and the training codes themselves lie
    from their nearest other training code (median Euclidean distance, each
    dimension in units of the training codes' sd): prior samples that fall
    between the codes lie farther than a new subject's codes do.

    With ``fresh`` (:func:`fresh_draws`: new streamlines of the training
    subjects), the first table gains the held-out codes against the fresh
    codes (what a prior drawing exactly from the training subjects'
    distribution would score, where the reference uses the very codes the
    prior is fitted to) and against each spec's mixture fitted to the
    training and the fresh codes together (``"<spec> + fresh"``: what more
    streamlines of the same subjects give the fit, the encoder unchanged),
    and a table tests the fresh codes against the training codes, the
    model's prior and each refitted mixture: the error of a fit to all the
    training codes, with no new subject. Each fresh test draws as many fresh
    codes as the bundle has held-out codes.
    """
    from scipy.spatial import cKDTree

    from aae_tract.metrics import prior_match
    from aae_tract.model import TractAAE

    names = [_spec_name(spec) for spec in specs]
    if len(set(names)) < len(names):
        raise SystemExit(f"--refit: the same mixture asked twice ({' '.join(names)})")
    rows = {}
    for seed in seeds:
        model = TractAAE.load(pattern.format(seed=seed))
        z, labels, subjects = {}, {}, {}
        splits = [("train", train), ("held", held_out)]
        for split, data in splits + ([("fresh", fresh)] if fresh is not None else []):
            z[split], labels[split] = _codes(model, data)
            subjects[split] = np.asarray(data.subjects)
        n_b, d = len(model.bundle_names), model.latent_dims
        fits, more_fits = {}, {}
        for spec, label in zip(specs, names):
            prior = _mixture(d, n_b, spec, seed)
            spreads = _fit_spread(
                prior, spec, z["train"], labels["train"], subjects["train"]
            )
            fits[spec] = prior
            if fresh is not None:
                more = _mixture(d, n_b, spec, seed)
                _fit_spread(
                    more,
                    spec,
                    np.concatenate([z["train"], z["fresh"]]),
                    np.concatenate([labels["train"], labels["fresh"]]),
                    np.concatenate([subjects["train"], subjects["fresh"]]),
                )
                more_fits[f"{label} + fresh"] = more
            for i, name in enumerate(model.bundle_names):
                rows.setdefault(name, {}).setdefault(f"spread {label}", []).append(
                    float(spreads[i])
                )
        own = model.network.prior
        for i, name in enumerate(model.bundle_names):
            held = z["held"][labels["held"] == i]
            mine = labels["train"] == i
            codes, groups = z["train"][mine], subjects["train"][mine]
            rng = np.random.default_rng([seed, i])

            row = rows.setdefault(name, {})
            row.setdefault("train codes", []).append(
                float(np.mean([prior_match(held, codes, seed=r) for r in range(draws)]))
            )
            priors = {"model prior": own} | {
                label: fits[spec] for spec, label in zip(specs, names)
            }
            # the "+ fresh" fits draw from an rng of their own, so that the
            # other priors' samples do not depend on --fresh
            tested = [(priors, rng)]
            if fresh is not None:
                tested.append((more_fits, np.random.default_rng([seed, i, 3])))
            for group, generator in tested:
                for label, prior in group.items():
                    scores = [
                        prior_match(
                            held, prior.sample_numpy(len(held), generator, i), seed=r
                        )
                        for r in range(draws)
                    ]
                    row.setdefault(label, []).append(float(np.mean(scores)))
            if fresh is not None:
                for label, value in _fresh_tests(
                    held,
                    codes,
                    z["fresh"][labels["fresh"] == i],
                    priors,
                    (seed, i),
                    draws,
                ).items():
                    row.setdefault(label, []).append(value)
            loso = {"train codes": []} | {label: [] for label in names}
            for left in np.unique(groups):
                out, rest = codes[groups == left], codes[groups != left]
                loso["train codes"].append(prior_match(out, rest, seed=seed))
                for spec, label in zip(specs, names):
                    prior = _mixture(d, n_b, spec, seed)
                    _fit_spread(
                        prior, spec, rest, np.full(len(rest), i), groups[groups != left]
                    )
                    sample = prior.sample_numpy(len(out), rng, i)
                    loso[label].append(prior_match(out, sample, seed=seed))
            for label, values in loso.items():
                row.setdefault(f"loso {label}", []).append(float(np.mean(values)))
            for label, value in _half_test(
                codes, groups, i, specs, names, (d, n_b, seed), draws
            ).items():
                row.setdefault(f"half {label}", []).append(value)
            scale = codes.std(axis=0) + 1e-9
            tree = cKDTree(codes / scale)
            near = {
                "held-out codes": tree.query(held / scale)[0],
                "model prior": tree.query(own.sample_numpy(len(held), rng, i) / scale)[
                    0
                ],
                "train codes (nearest other)": tree.query(codes / scale, k=2)[0][:, 1],
            }
            for label, dist in near.items():
                row.setdefault(f"nn {label}", []).append(float(np.median(dist)))
    tests = [
        "train codes",
        *(["fresh draws"] if fresh is not None else []),
        "model prior",
        *names,
        *([f"{label} + fresh" for label in names] if fresh is not None else []),
    ]
    head = ["bundle", *tests, "within ref + 0.03"]
    lines = [
        f"held-out codes against ... (prior_match, mean of {draws} draws and "
        f"{len(seeds)} models; mixtures as components:codes per component)"
    ]
    body = []
    for name, row in rows.items():
        ref = np.mean(row["train codes"])
        within = [
            t
            for t in tests[1:]
            if t != "fresh draws"
            and np.mean(row[t]) <= ref + quality.PRIOR_MATCH_MARGIN
        ]
        body.append(
            [name, *(f"{np.mean(row[t]):.3f}" for t in tests), " ".join(within) or "-"]
        )
    body.append(
        [
            "mean",
            *(f"{np.mean([np.mean(r[t]) for r in rows.values()]):.3f}" for t in tests),
            "",
        ]
    )
    out = [quality._render(lines, head, body)]
    if fresh is not None:
        out.append(
            _mean_table(
                "\nfresh draws of the training subjects against their training "
                "codes, the model's prior and mixtures refitted to the training "
                f"codes (prior_match, mean of {draws} draws and {len(seeds)} models)",
                rows,
                "fresh",
                ["model prior", *names],
            )
        )
    out.append(
        _mean_table(
            "\na training subject left out: its codes against the others' codes "
            "and against mixtures fitted to them (prior_match, mean over subjects)",
            rows,
            "loso",
            names,
        )
    )
    out.append(
        _mean_table(
            "\nno new subject: half of each training subject's codes against the "
            "other half and against mixtures fitted to that half (prior_match, "
            f"mean of {draws} halves)",
            rows,
            "half",
            names,
        )
    )
    lines = [
        "\nmedian distance to the nearest training code (training codes' sd "
        "per dimension)"
    ]
    near = [k for k in next(iter(rows.values())) if k.startswith("nn ")]
    body = [[n, *(f"{np.mean(r[t]):.3f}" for t in near)] for n, r in rows.items()]
    out.append(quality._render(lines, ["bundle", *(k[3:] for k in near)], body))
    chosen = [n for n, spec in zip(names, specs) if spec[2] == "auto"]
    if chosen:
        lines = ["\nspread chosen by the training subjects (per model)"]
        body = [
            [n, *(" ".join(f"{v:g}" for v in r[f"spread {c}"]) for c in chosen)]
            for n, r in rows.items()
        ]
        out.append(quality._render(lines, ["bundle", *chosen], body))
    return "\n".join(out), rows


def band_spread(path, train, held_out, seeds, sampling="prior"):
    """How far ``band_precision``'s per-band differences move between
    generation seeds of one model (as :func:`aae_tract.metrics.evaluate`
    computes them, with each seed in ``seeds``): per bundle, the sd over the
    seeds of each band's difference, and the lowest band of the mean
    against the mean of each seed's lowest band."""
    from aae_tract.generate import DEFAULT_SUBJECT_NOISE
    from aae_tract.metrics import (
        BAND_REAL_MAX,
        _band_row,
        _noise,
        _prepared,
        _subsample,
    )
    from aae_tract.model import TractAAE

    model = TractAAE.load(path)
    (xv, lv), (xt, lt) = _prepared(model, held_out), _prepared(model, train)
    attribute = np.asarray(held_out.attribute, dtype=np.float64)
    lines = [
        f"{sampling} sampling, generation seeds {', '.join(map(str, seeds))}: "
        "sd of each band's difference | lowest band of the mean | mean of "
        "each seed's lowest band"
    ]
    for name in model.bundle_names:
        label = model.bundle_index(name)
        rows = np.flatnonzero(lv == label)
        gaps, lowest = [], []
        for seed in seeds:
            row = _band_row(
                model,
                name,
                attribute[rows],
                _subsample(xv[rows], BAND_REAL_MAX, seed + 4),
                xt[lt == label],
                sampling=sampling,
                seed=seed,
                options=_noise(
                    GENERATION.get("noise"),
                    DEFAULT_SUBJECT_NOISE,
                    subject_scope=GENERATION.get("subject_scope", "target"),
                    extend_reach=GENERATION.get("extend_reach", False),
                    placement_noise=PLACEMENT_NOISE,
                    noise_scope=GENERATION.get("noise_scope", "bundle"),
                    candidates=GENERATION.get("candidates", DEFAULT_CANDIDATES),
                ),
            )
            gaps.append(
                np.subtract(
                    row["band_precision_per_band"],
                    row["band_precision_train_per_band"],
                )
            )
            lowest.append(row["band_precision"])
        gaps = np.asarray(gaps, dtype=np.float64)
        sd = np.nanstd(gaps, axis=0, ddof=1)
        lines.append(
            f"{name}: "
            + " ".join(f"{v:.3f}" for v in sd)
            + f" | {np.nanmin(np.nanmean(gaps, axis=0)):.3f}"
            + f" | {np.mean(lowest):.3f}"
        )
    return "\n".join(lines)


def subject_bands(pattern, seeds, train, held_out, bundle, n=2000):
    """Which subjects lie on a bundle's held-out streamlines, band by band.

    Per length band of the bundle's held-out streamlines (quintiles, as
    ``band_precision``): how many of them each held-out subject gives, and
    the share on the held-out manifold (:func:`aae_tract.metrics.band_precision`)
    of each training subject's streamlines, of all of them, and of ``n``
    bank samples at the held-out lengths that keep their training subject
    (``subject_noise`` None) or move to the training subjects' centre
    (``subject_noise`` 0), both without noise, and with the defaults (the
    other generation options from :data:`GENERATION`); mean over the models
    ``pattern`` of ``seeds``, which are conditioned on length (the samples'
    targets are the held-out streamlines' lengths)."""
    from aae_tract.generate import draw_streamlines
    from aae_tract.metrics import _prepared, band_precision
    from aae_tract.model import TractAAE
    from aae_tract.streamlines import streamline_lengths

    samplings = {
        "bank, own subject, no noise": {"noise": 0.0, "subject_noise": None},
        "bank, subjects' centre, no noise": {"noise": 0.0, "subject_noise": 0.0},
        "bank, defaults": {},
    }
    shares, held_counts = {}, None
    for seed in seeds:
        model = TractAAE.load(pattern.format(seed=seed))
        label = model.bundle_index(bundle)
        (xv, lv), (xt, lt) = _prepared(model, held_out), _prepared(model, train)
        real, rows = xv[lv == label], xt[lt == label]
        lengths = streamline_lengths(real)
        edges = np.quantile(lengths, np.linspace(0, 1, 6))
        bands = np.searchsorted(edges[1:-1], lengths, side="right")
        held_subjects = np.asarray(held_out.subjects)[lv == label]
        held_counts = {
            s: np.bincount(bands[held_subjects == s], minlength=5)
            for s in sorted(set(held_subjects))
        }
        train_subjects = np.asarray(train.subjects)[lt == label]
        sets = {
            f"training {s}": rows[train_subjects == s]
            for s in sorted(set(train_subjects))
        }
        sets["training, all subjects"] = rows
        rng = np.random.default_rng(seed)
        targets = rng.choice(lengths, n)
        for name, options in samplings.items():
            _, sets[name] = draw_streamlines(
                model,
                bundle,
                targets,
                rng=np.random.default_rng(seed),
                **{**GENERATION, "sampling": "bank", **options},
            )
        for name, lines in sets.items():
            shares.setdefault(name, []).append(band_precision(lines, real))
    lines = [
        f"{bundle}: held-out streamlines per length band (1: the shortest), "
        "and the share on their manifold by band, mean over seeds "
        + ", ".join(map(str, seeds))
    ]
    for subject, counts in held_counts.items():
        lines.append(f"held-out {subject} (count) | " + " | ".join(map(str, counts)))
    for name, values in shares.items():
        mean = np.nanmean(np.asarray(values, dtype=np.float64), axis=0)
        lines.append(f"{name} | " + " | ".join(f"{v:.3f}" for v in mean))
    return "\n".join(lines)


def polish_screen(
    paths, stages, seeds, train, held_out, noises=(0.0,), turn_weights=(0.0,)
):
    """Held-out ``recon_mdf_mm`` and bank ``rough_fraction`` of trained
    models after decoder-only stages.

    Each model of ``paths`` (patterns with ``{seed}``, e.g. a plain
    autoencoder's and an AAE's of the same run) is loaded afresh for every
    stage length of ``stages``, code noise of ``noises`` and excess-turn
    weight of ``turn_weights`` and polished
    (:meth:`~aae_tract.model.TractAAE.polish`, the stage that
    ``polish_epochs``, ``polish_noise`` and ``polish_turn_weight`` add to
    training); 0 epochs measures the model as it is. ``/ first model``
    divides each recon by the first model's of the same seed, stage, noise
    and weight; the rough fraction is the worst bundle's (:func:`bank_rough`,
    texture sampled).
    """
    from aae_tract.model import TractAAE

    rows = []
    for seed in seeds:
        for stage in stages:
            for noise, weight in (
                [(n, w) for n in noises for w in turn_weights]
                if stage
                else [(0.0, 0.0)]
            ):
                first = None
                for path in paths:
                    model = TractAAE.load(path.format(seed=seed))
                    start = time.perf_counter()
                    if stage:
                        model.polish(
                            train,
                            held_out,
                            epochs=stage,
                            noise=noise,
                            turn_weight=weight,
                            verbose=0,
                        )
                    seconds = time.perf_counter() - start
                    recon = quality.held_out_recon(model, held_out)
                    rough = max(t for t, _ in bank_rough(model, held_out, seed))
                    first = recon if first is None else first
                    rows.append(
                        [
                            os.path.basename(path.format(seed=seed)),
                            str(seed),
                            str(stage),
                            f"{noise:g}",
                            f"{weight:g}",
                            f"{seconds:.0f}",
                            f"{recon:.3f}",
                            f"{recon / first:.3f}",
                            f"{rough:.3f}",
                        ]
                    )
                    print(" ".join(rows[-1]), flush=True)
    head = [
        "model",
        "seed",
        "polish epochs",
        "code noise",
        "turn weight",
        "seconds",
        "recon_mdf_mm",
        "/ first model",
        "bank rough (worst bundle)",
    ]
    return quality._render([], head, rows)


def bank_rough(model, held_out, seed, n=1000):
    """Per bundle of ``model``: ``rough_fraction`` of ``n`` bank samples at
    lengths drawn from the bundle's held-out streamlines, decoded with the
    texture sampled and as mean curves (the same codes), each against the
    bundle's held-out streamlines: ``[(textured, mean), ...]``."""
    from aae_tract.generate import sample_latent
    from aae_tract.metrics import _prepared, rough_fraction
    from aae_tract.streamlines import streamline_lengths

    x, labels = _prepared(model, held_out)
    out = []
    for label, bundle in enumerate(model.bundle_names):
        real = x[labels == label]
        rng = np.random.default_rng([seed, label])
        targets = rng.choice(streamline_lengths(real), n)
        z = sample_latent(
            model, bundle, targets, sampling="bank", rng=rng, **GENERATION
        )
        textured = model.decode(z, bundle, texture=rng)
        mean = model.decode(z, bundle)
        out.append((rough_fraction(textured, real), rough_fraction(mean, real)))
    return out


def rough_screen(paths, seeds, held_out):
    """:func:`bank_rough` of trained models, per bundle: whether crumpled
    streamlines come from the mean curve or from the texture drawn around
    it (``paths``: patterns with ``{seed}``)."""
    from aae_tract.model import TractAAE

    rows = []
    for seed in seeds:
        for path in paths:
            model = TractAAE.load(path.format(seed=seed))
            cells = [f"{t:.3f} / {m:.3f}" for t, m in bank_rough(model, held_out, seed)]
            rows.append([os.path.basename(path.format(seed=seed)), str(seed), *cells])
            print(" ".join(rows[-1]), flush=True)
    head = ["model (textured / mean curves)", "seed", *model.bundle_names]
    return quality._render([], head, rows)


def novelty_sources(model, train, held_out, seed, n=1000):
    """Per bundle of ``model``: ``novelty_ratio`` of the held-out streamlines
    encoded and decoded (their mean curves, then with the texture sampled),
    and of ``n`` samples of each sampling at held-out lengths (textured):
    whether streamlines nearer the training ones than new real ones come from
    the decoder or from where the sampled codes fall."""
    from aae_tract.generate import sample_latent
    from aae_tract.metrics import _prepared, novelty_ratio
    from aae_tract.streamlines import streamline_lengths

    (xv, lv), (xt, lt) = _prepared(model, held_out), _prepared(model, train)
    zv = model.encode_prepared(xv, rng=seed)
    out = []
    for label, bundle in enumerate(model.bundle_names):
        real, trained = xv[lv == label], xt[lt == label]
        rng = np.random.default_rng([seed, label])
        codes = zv[lv == label]
        cells = [
            novelty_ratio(model.decode(codes, bundle), trained, real),
            novelty_ratio(model.decode(codes, bundle, texture=rng), trained, real),
        ]
        targets = rng.choice(streamline_lengths(real), n)
        for sampling in quality.SAMPLINGS:
            z = sample_latent(
                model, bundle, targets, sampling=sampling, rng=rng, **GENERATION
            )
            gen = model.decode(z, bundle, texture=rng)
            cells.append(novelty_ratio(gen, trained, real))
        out.append(cells)
    return out


def novelty_screen(paths, seeds, train, held_out):
    """:func:`novelty_sources` of trained models (``paths``: patterns with
    ``{seed}``), one row per model, seed and bundle."""
    from aae_tract.model import TractAAE

    rows = []
    for seed in seeds:
        for path in paths:
            model = TractAAE.load(path.format(seed=seed))
            found = novelty_sources(model, train, held_out, seed)
            for bundle, cells in zip(model.bundle_names, found):
                name = os.path.basename(path.format(seed=seed))
                rows.append([name, str(seed), bundle, *(f"{c:.3f}" for c in cells)])
                print(" ".join(rows[-1]), flush=True)
    head = [
        "model",
        "seed",
        "bundle",
        "held-out, decoded (mean)",
        "held-out, decoded (textured)",
        *quality.SAMPLINGS,
    ]
    return quality._render([], head, rows)


def band_figure(
    path, train, held_out, bundle, figure, *, band=0, n=150, seed=0, recalibrate=False
):
    """Draw one length band of a bundle: its held-out streamlines, and as
    many training streamlines and streamlines generated by each sampling at
    the held-out band's lengths, each in blue when it lies on the manifold of
    the bundle's held-out streamlines (:func:`aae_tract.metrics.on_manifold`,
    all of them) and in red when not; the other held-out streamlines of the
    bundle in grey. Drawn in the plane of the bundle's two main axes.
    With ``recalibrate`` the calibration, latent bank and bank noise are
    fitted again on the training split first (a model saved before the
    calibration set its noise). Returns the shares on the manifold, by
    panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aae_tract.generate import sample_latent
    from aae_tract.metrics import _prepared, on_manifold
    from aae_tract.model import TractAAE
    from aae_tract.streamlines import streamline_lengths

    model = TractAAE.load(path)
    if recalibrate:
        model.calibrate(train, candidates=GENERATION.get("candidates"))
    label = model.bundle_index(bundle)
    sets = {}
    for split, data in (("held-out", held_out), ("training", train)):
        x, labels = _prepared(model, data)
        sets[split] = x[labels == label]
    real = sets["held-out"]
    lengths = streamline_lengths(real)
    edges = np.quantile(lengths, np.linspace(0, 1, 6))[band : band + 2]
    in_band = (lengths >= edges[0]) & (lengths <= edges[1])
    rng = np.random.default_rng(seed)
    train_lengths = streamline_lengths(sets["training"])
    train_band = sets["training"][
        (train_lengths >= edges[0]) & (train_lengths <= edges[1])
    ]
    panels = {"training": train_band[rng.permutation(len(train_band))[:n]]}
    targets = rng.choice(lengths[in_band], n)
    for sampling in quality.SAMPLINGS:
        z = sample_latent(
            model, bundle, targets, sampling=sampling, rng=rng, **GENERATION
        )
        panels[sampling] = model.decode(z, bundle, texture=rng)
    points = real.reshape(-1, 3).astype(np.float64)
    centre = points.mean(axis=0)
    axes2 = np.linalg.svd(points - centre, full_matrices=False)[2][:2]

    def draw(ax, lines, colours):
        for line, colour in zip(lines, colours):
            q = (line - centre) @ axes2.T
            ax.plot(q[:, 0], q[:, 1], color=colour, lw=0.8)

    fig, axs = plt.subplots(1, 4, figsize=(18, 5), sharex=True, sharey=True)
    draw(axs[0], real[~in_band], ["0.85"] * int((~in_band).sum()))
    draw(axs[0], real[in_band], ["tab:green"] * int(in_band.sum()))
    axs[0].set_title(f"{bundle} held-out, band {band + 1} of 5 (green)")
    shares = {}
    for ax, (what, lines) in zip(axs[1:], panels.items()):
        inside = on_manifold(lines, real)
        shares[what] = float(inside.mean())
        draw(ax, real[~in_band][:80], ["0.85"] * min(80, int((~in_band).sum())))
        draw(ax, lines, ["tab:blue" if i else "tab:red" for i in inside])
        ax.set_title(f"{what}: {shares[what]:.2f} on the manifold (red: off)")
    for ax in axs:
        ax.set_aspect("equal")
        ax.set_xlabel("mm")
    # height to the bundle's own proportions, so a flat bundle leaves no
    # empty band above its panels
    (x0, x1), (y0, y1) = axs[0].get_xlim(), axs[0].get_ylim()
    ratio = float(np.clip((y1 - y0) / max(x1 - x0, 1e-6), 0.25, 1.5))
    height = 18 / 4 * ratio + 1.5
    fig.set_size_inches(18, height)
    fig.canvas.draw()  # the panels' positions once their aspect is applied
    top = max(ax.get_position().y1 for ax in axs)
    prior = model.config.prior
    if prior == "fitted_mixture":
        prior = f"{prior}, {model.config.prior_components} components"
    fig.suptitle(
        f"{bundle}, lengths {edges[0]:.0f}-{edges[1]:.0f} mm ({prior} prior)",
        y=min(0.99, top + 0.6 / height),
    )
    fig.savefig(figure, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return shares


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data_dir", help="folder for the phantom (default: temp)")
    parser.add_argument(
        "--register",
        choices=["none", "groupwise"],
        default="none",
        help="common space of the splits, as quality.py --register (the space "
        "the models given with --load were trained in)",
    )
    parser.add_argument("--out", help="append every run as a JSON line here")
    parser.add_argument("--list", action="store_true", help="list the variants")
    parser.add_argument("--model_dir", help="save every variant's model here")
    parser.add_argument(
        "--load",
        help="a trained model, for --bank_noise and --spectrum; with --bank_noise "
        "{seed} in the name is filled in for each of --seeds",
    )
    parser.add_argument("--bank_noise", type=float, nargs="+", metavar="NOISE")
    parser.add_argument(
        "--subject_noise",
        nargs="+",
        default=[DEFAULT_SUBJECT_NOISE],
        type=lambda v: None if v == "none" else float(v),
        metavar="NOISE",
        help="with --bank_noise: subject_noise values (default: the default; "
        "'none': codes keep their subject)",
    )
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="with --bank_noise and --band_figure: refit calibration, latent "
        "bank and bank noise on the training split (models saved before banks "
        "kept subjects, or before the calibration set the noise)",
    )
    parser.add_argument(
        "--spectrum",
        action="store_true",
        help="eigenvalues of --load's codes and where they miss the prior",
    )
    parser.add_argument(
        "--figure",
        help="with --spectrum: draw the held-out codes over prior samples here (PNG)",
    )
    parser.add_argument(
        "--refit",
        nargs="+",
        type=_refit_spec,
        metavar="K[:CODES][xSPREAD][s]",
        help="prior_match of mixtures of K components (at most one per CODES "
        "training codes) refitted to the codes of --load ({seed} filled in for "
        "each of --seeds), against the model's own prior and the training codes; "
        "xSPREAD widens each bundle's mixture by that factor, xauto by the one "
        "the training subjects choose (FittedPrior.choose_spread); a trailing s "
        "shrinks each component's covariance (oracle approximating shrinkage)",
    )
    parser.add_argument(
        "--fresh",
        type=int,
        metavar="N",
        help="with --refit: also test new draws of the training subjects (the "
        "phantom made again with N streamlines per bundle and subject, moved "
        "with the training subjects' stored transforms) against the held-out "
        "codes, the training codes, the model's prior and each refit, and "
        "the held-out codes against each refit fitted to the training and the "
        "fresh codes together",
    )
    parser.add_argument(
        "--band_figure",
        metavar="PNG",
        help="draw one length band of --bundle: held-out, training and generated "
        "streamlines (both samplings of --load), off the held-out manifold in red",
    )
    parser.add_argument(
        "--bundle", default="AF_L", help="with --band_figure and --subject_bands"
    )
    parser.add_argument(
        "--band_spread",
        action="store_true",
        help="how far band_precision's per-band differences of --load move "
        "between the generation seeds --seeds (prior sampling)",
    )
    parser.add_argument(
        "--subject_bands",
        action="store_true",
        help="for --bundle: which held-out subjects make each length band, and "
        "how often each training subject's streamlines and bank samples that "
        "keep their subject, move to the subjects' centre or take the defaults "
        "lie on the held-out streamlines, band by band (--load, a pattern with "
        "{seed}, over --seeds)",
    )
    parser.add_argument(
        "--band",
        type=int,
        default=1,
        choices=range(1, 6),
        help="with --band_figure: length quintile, 1 the shortest",
    )
    parser.add_argument(
        "--polish",
        type=int,
        nargs="+",
        metavar="EPOCHS",
        help="held-out recon_mdf_mm of --load (and --plain) after decoder-only "
        "stages of these lengths, for each of --seeds",
    )
    parser.add_argument(
        "--polish_noise",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="NOISE",
        help="with --polish: code noise of the stages (default 0)",
    )
    parser.add_argument(
        "--polish_turn_weight",
        type=float,
        nargs="+",
        default=[0.0],
        metavar="WEIGHT",
        help="with --polish: excess-turn weights of the stages (default 0; "
        "above 0 the noisy codes feed that penalty alone)",
    )
    parser.add_argument(
        "--rough",
        nargs="+",
        metavar="MODEL",
        help="rough_fraction of these models' bank samples, with the texture "
        "and as mean curves, per bundle ({seed} filled in for each of --seeds)",
    )
    parser.add_argument(
        "--novelty",
        nargs="+",
        metavar="MODEL",
        help="novelty_ratio of these models' held-out streamlines encoded and "
        "decoded, and of both samplings, per bundle ({seed} filled in for each "
        "of --seeds)",
    )
    parser.add_argument(
        "--plain",
        help="with --polish: a plain autoencoder of the same run, polished "
        "alike ({seed} filled in)",
    )
    quality.add_generation_options(parser, placement=False, prior_spread=False)
    args = parser.parse_args(argv)
    if args.fresh is not None and not args.refit:
        parser.error("--fresh needs --refit")
    if args.fresh is not None and args.fresh < 10:
        parser.error(f"--fresh needs at least 10 streamlines, got {args.fresh}")
    if args.fresh == quality.PHANTOM["n_per_bundle"]:
        parser.error(
            f"--fresh {args.fresh} is the phantom's own count: its draws would "
            "repeat the training streamlines; ask for another count"
        )
    GENERATION.update(quality.generation_options(args))
    if args.list:
        for name, fields in VARIANTS.items():
            print(f"{name}: {json.dumps(fields)}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    train, held_out = quality.load_splits(
        "phantom",
        n_points=quality.CONFIGS["phantom"]["n_points"],
        data_dir=args.data_dir,
    )
    from aae_tract.registration import register_split

    train, held_out = register_split(train, held_out, args.register)  # "none": as read
    only_load = (
        args.bank_noise
        or args.refit
        or args.spectrum
        or args.band_figure
        or args.band_spread
        or args.subject_bands
        or args.polish
    )
    if only_load and not args.load:
        parser.error(
            "--bank_noise, --refit, --spectrum, --band_figure, --band_spread, "
            "--subject_bands and --polish need --load MODEL"
        )
    if args.polish:
        paths = [p for p in (args.plain, args.load) if p]
        print(
            polish_screen(
                paths,
                args.polish,
                args.seeds,
                train,
                held_out,
                args.polish_noise,
                args.polish_turn_weight,
            )
        )
    if args.rough:
        print(rough_screen(args.rough, args.seeds, held_out))
    if args.novelty:
        print(novelty_screen(args.novelty, args.seeds, train, held_out))
    if (args.rough or args.novelty) and not only_load:
        return 0
    if args.refit:
        fresh = fresh_draws(train, args.fresh) if args.fresh is not None else None
        text, rows = refit_screen(
            args.load, args.seeds, args.refit, train, held_out, fresh=fresh
        )
        print(text)
        if args.out:
            with open(args.out, "a") as f:
                f.write(
                    json.dumps(
                        {"refit": [_spec_name(s) for s in args.refit], "rows": rows}
                    )
                    + "\n"
                )
    if args.spectrum:
        print(spectrum(args.load, train, held_out, figure=args.figure))
    if args.bank_noise:
        print(
            bank_noise(
                args.load,
                args.bank_noise,
                args.subject_noise,
                args.seeds,
                train,
                held_out,
                args.recalibrate,
            )
        )
    if args.band_figure:
        shares = band_figure(
            args.load,
            train,
            held_out,
            args.bundle,
            args.band_figure,
            band=args.band - 1,
            seed=args.seeds[0],
            recalibrate=args.recalibrate,
        )
        print(
            f"{args.bundle}, band {args.band}: on the held-out manifold: "
            + ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
        )
        print(f"wrote {args.band_figure}")
    if args.band_spread:
        print(band_spread(args.load, train, held_out, args.seeds))
    if args.subject_bands:
        print(subject_bands(args.load, args.seeds, train, held_out, args.bundle))
    if only_load:
        return 0
    runs = []
    for name in args.variants or list(VARIANTS):
        for seed in args.seeds:
            run = run_variant(
                name, VARIANTS[name], seed, args.epochs, train, held_out, args.model_dir
            )
            runs.append(run)
            print(f"{name} seed {seed}: {run['seconds']:.0f} s", flush=True)
            if args.out:
                with open(args.out, "a") as stream:
                    stream.write(json.dumps(run, default=float) + "\n")
    print()
    print(
        f"phantom with fragments, {args.epochs} epochs, seeds "
        f"{', '.join(map(str, args.seeds))}; prior_match: classifier accuracy "
        "(0.5: indistinguishable; quality.py holds each bundle to its "
        f"train-vs-held-out value + {quality.PRIOR_MATCH_MARGIN})"
    )
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
