"""Quality benchmark: train with a fixed budget, evaluate on held-out subjects.

Trains the conditional AAE on the synthetic phantom (6 subjects, 4 for
training and 2 held out; with fragments, so each bundle's lengths span 8-14x
as real tractography's do) or on the embedded default (DIPY's
minimal_bundles, 5 subjects, 1 held out), once per seed on the same data and
split, evaluates every model with :func:`aae_tract.metrics.evaluate` and
prints each metric as mean +/- sd over the seeds beside its reference rows and
target, and writes every number as JSON.

Both ways of sampling latent codes (``bank``: encodings of training
streamlines near the target plus noise; ``prior``: the prior) are measured.

Usage::

    python benchmarks/quality.py --dataset phantom --out quality_phantom.json
    python benchmarks/quality.py --dataset minimal_bundles --epochs 60
    python benchmarks/quality.py --seeds 0 --set decoder='"spline"'
    KERAS_BACKEND=torch python benchmarks/quality.py --dataset phantom
    python benchmarks/quality.py --dataset phantom --jobs 2  # 2 seeds at once
    python benchmarks/quality.py --seeds 0 --model m.keras  # writes m_seed0.keras
    python benchmarks/quality.py --seeds 0 1 2 --load 'm_seed{seed}.keras'

The default budget (``--epochs``: 100 on both datasets) takes about 15-20
minutes per seed on a 2-core CPU. ``--jobs 2`` trains two seeds at once, each
in its own process on one core; the numbers are those of a one-at-a-time run
up to float rounding.

The table has two reference columns: ``real vs real`` (two random halves of
the held-out streamlines, the ceiling :func:`~aae_tract.metrics.evaluate`
reports) and ``train vs held-out`` (real *training* streamlines against the
held-out ones: what a generator that reproduced the training subjects
exactly would score; subjects differ, so this is the reachable ceiling for
``density_dice``, ``diversity_ratio`` and ``shape_similarity`` when held-out
subjects are not in the training set). For a model of a per-subject
attribute (age) its ``attribute_slope_error`` is the held-out subjects' real
slope of median length against the attribute, relative to the training
subjects' slope: how far two real sets of subjects differ.

``band_precision`` is held, band by band, to the share of the real
training streamlines on the held-out bundle; the band table under the main
one prints that share's standard error over the training subjects
(``benchmarks/band_reference.py`` prints each subject's share) and the
lowest difference the target allows there (:data:`BAND_SE_FACTOR`).
"""

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from aae_tract.generate import (  # noqa: E402
    DEFAULT,
    DEFAULT_CANDIDATES,
    DEFAULT_NOISE,
    DEFAULT_PLACEMENT_NOISE,
    DEFAULT_PRIOR_SPREAD,
    DEFAULT_SUBJECT_NOISE,
    NOISE_SCOPES,
    PRIOR_NOISES,
    SUBJECT_SCOPES,
)

#: How far above its reference a bundle's ``prior_match`` may lie: about 2.5
#: sd of an accuracy near 0.8 with the 400-800 codes of a held-out phantom
#: bundle. The reference is the same classifier test between the bundle's
#: held-out encodings and as many of its training encodings (the
#: "train vs held-out" row): what a prior equal to the training encodings
#: would score. New subjects' codes lie off the training subjects' (that row
#: scores 0.66-0.88 on the phantom), so no prior learnt from the training
#: subjects can be told from them at chance; a prior within this margin of
#: the reference is as close to them as the training codes themselves.
PRIOR_MATCH_MARGIN = 0.03
#: Classifier tests averaged into each bundle's ``prior_match`` and its
#: reference, each against its own samples. The accuracy of one test on 400
#: codes a side has a binomial sd of 0.018 near chance, so one test per seed
#: leaves a bundle's difference from its reference uncertain by about as
#: much as :data:`PRIOR_MATCH_MARGIN`; five tests narrow the part of it that
#: comes from the samples (doc/benchmarks.md, "How steady prior_match is").
PRIOR_MATCH_TESTS = 5
#: How much a bundle's share of hooked ends (``hooked_fraction``, the mean
#: over seeds) may exceed that of its real training streamlines against the
#: same held-out ones (the "train vs held-out" row). Both count the
#: streamlines whose ends turn more than 99 % of the held-out ends do, so
#: the training streamlines' share is about 0.01 where subjects' ends turn
#: alike and more where the held-out subjects' turn less (0.00-0.20 per
#: bundle and seed on the two datasets); the margin is three times the share
#: of streamlines drawn like the held-out ones.
HOOKED_MARGIN = 0.03

#: ``band_precision``: in every length band of every bundle, the share of
#: generated streamlines on the held-out subjects' manifold is at most 0.1
#: below the share of the training subjects' real streamlines of that band
#: (between generation seeds of one phantom model a band's difference moves
#: by an sd of 0.005-0.05: ``prior_variants.py --band_spread``), or, where
#: the training subjects disagree more, at most :data:`BAND_SE_FACTOR`
#: standard errors of that share below it. Not held to the real-vs-real
#: row: the held-out subjects' long streamlines lie within a few mm of each
#: other, closer than to any other subject's, so real streamlines of the
#: training subjects score 0.16-0.48 in the longest band of four of the six
#: phantom bundles.
BAND_PRECISION_GAP = -0.1
#: The training streamlines' share pools a few subjects, each of which lies
#: on the held-out streamlines as often as its anatomy happens to: on the
#: phantom (4 training subjects, not registered) the subjects' shares of one
#: band differ by up to 0.89 (UF_L's longest: 0.00 to 0.89), a standard error
#: of the pooled share (sd over subjects / sqrt(subjects),
#: ``benchmarks/band_reference.py``) of up to 0.21, twice the 0.1 allowed. A
#: band's difference is held to ``-max(0.1, BAND_SE_FACTOR x that standard
#: error)``: within two standard errors, the four subjects do not tell a
#: generator apart from one whose subjects lie on the held-out bundle as
#: often as the training subjects' population does (a rough bound: with
#: four subjects and the generator's own spread over seeds left out, it is
#: not a formal test).
BAND_SE_FACTOR = 2.0

#: Targets: (comparison, value). "ref" scales by the train-vs-held-out ceiling
#: (the real-vs-real one when there is none); "every" applies to each bundle;
#: "every <=ref+" holds each bundle to its own train-vs-held-out value plus
#: the bound; "every band >=" holds each length band of each bundle (the mean
#: over seeds of its generated share minus its training share) to the bound
#: or to -:data:`BAND_SE_FACTOR` standard errors of its training share,
#: whichever is lower.
TARGETS = {
    "label_fidelity": (">=", 0.98),
    "length_mae_mm": ("<=", 3.0),
    "ar_spearman": (">=", 0.95),
    "diversity_ratio": ("in", (0.8, 1.25)),
    "density_dice": (">=ref", 0.8),
    "recon_mdf_mm": ("<=", 2.0),
    "curvature_ratio": ("every in", (0.8, 1.25)),
    "rough_fraction": ("<=", 0.01),
    "hooked_fraction": ("every <=ref+", HOOKED_MARGIN),
    "recon_length_ratio": ("every in", (0.93, 1.07)),
    "length_error_pct": ("<=", 5.0),
    "shape_similarity": (">=ref", 0.95),
    "realism_c2st": ("<=", 0.75),
    "prior_match": ("every <=ref+", PRIOR_MATCH_MARGIN),
    "novelty_ratio": (">=", 0.85),
    "band_precision": ("every band >=", BAND_PRECISION_GAP),
    "recon_vs_plain": ("<=", 1.1),
}
#: Targets that differ by sampling or by dataset.
SAMPLING_TARGETS = {"prior": {"novelty_ratio": (">=", 0.9)}}
DATASET_TARGETS = {"phantom": {"ar_spearman": (">=", 0.99)}}
#: Targets of a model conditioned on a per-subject attribute (``--attribute
#: age``): the slope error of the worst bundle, the fraction of bundles whose
#: generated median length is monotone in the requested age, and the error
#: of the age read back from held-out subjects over the trivial baseline's.
ATTRIBUTE_TARGETS = {
    "attribute_slope_error": ("<=", 0.2),
    "attribute_monotone": (">=", 1.0),
    "attribute_mae_ratio": ("<=", 0.5),
    "attribute_mae_generation_ratio": ("<=", 0.5),
}
#: Length targets that do not apply to a model conditioned on another
#: attribute (generation is asked for an age, not a length).
LENGTH_ONLY = ("length_mae_mm", "recon_length_ratio", "length_error_pct")

#: Hyperparameters of the benchmark runs (AAEConfig fields), per dataset.
CONFIGS = {
    "phantom": {"n_points": 64, "epochs": 100, "batch_size": 64},
    "minimal_bundles": {"n_points": 64, "epochs": 100, "batch_size": 32},
}
#: With ``--attribute age``: batches of 8 subjects x 16 streamlines.
AGE_CONFIG = {"n_points": 64, "epochs": 100, "batch_size": 128}

PHANTOM = {"n_subjects": 6, "n_per_bundle": 200, "seed": 0, "fragments": 0.5}
#: The age phantom (``--attribute age``): enough subjects over 20-80 years
#: (20 for training, 10 held out) for a per-subject effect to be learnable; no
#: fragments, so a bundle's median length follows its subject's age (3 %
#: shorter per decade past 50, the phantom's default ``age_effect``).
AGE_PHANTOM = {"n_subjects": 30, "n_per_bundle": 40, "seed": 0, "fragments": 0.0}
SAMPLINGS = ("bank", "prior")
#: ``--within_subject`` choices and the ``within_subject`` of generation.
WITHIN_SUBJECT = {"on": True, "own": "own", "off": False}
#: The data and its split are the same for every seed.
SPLIT_SEED = 0


def _placement_arg(value):
    """``--placement_noise``: "default", or a finite number >= 0."""
    if value == DEFAULT:
        return DEFAULT
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        raise argparse.ArgumentTypeError(
            f"must be 'default' or a finite number >= 0, got {value!r}"
        )
    return number


def _prior_spread_arg(value):
    """``--prior_spread``: a number generate accepts
    (:func:`aae_tract.generate.check_prior_spread`)."""
    from aae_tract.errors import AAETractError
    from aae_tract.generate import check_prior_spread

    try:
        return check_prior_spread(float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    except AAETractError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_generation_options(parser, *, placement=True, prior_spread=True):
    """``--noise``, ``--noise_scope``, ``--subject_scope``, ``--extend_reach``,
    ``--candidates``, (with ``placement``) ``--placement_noise`` and (with
    ``prior_spread``) ``--prior_spread``: bank sampling's noise and which
    codes shape it, where generation compares the training subjects (the
    options that reproduce numbers measured with earlier generation
    defaults), whether lengths are searched beyond the calibration's range,
    how many codes are drawn per streamline before the length search, how
    far generated streamlines move to new subjects' placements, and the
    spread of prior sampling's draws."""
    parser.add_argument(
        "--noise",
        type=float,
        default=DEFAULT_NOISE,
        help="noise of bank sampling (default: generate's default: each "
        "bundle's own per length band, set by the calibration, for a length "
        "model; 0.2 for an age model)",
    )
    parser.add_argument(
        "--noise_scope",
        choices=NOISE_SCOPES,
        default="bundle",
        help="which bank codes shape the noise of bank sampling (default "
        "bundle: all the bundle's; target: those near the requested value)",
    )
    parser.add_argument(
        "--subject_scope",
        choices=SUBJECT_SCOPES,
        default="target",
        help="where generation compares the training subjects when it moves "
        "codes to new ones, for a length model (default target: their mean "
        "codes near the requested length; bundle: over the whole bundle)",
    )
    parser.add_argument(
        "--extend_reach",
        action="store_true",
        help="search the codes not brought to the requested length within the "
        "calibration's range again, farther out (generate's extend_reach)",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        help="codes drawn per streamline of a length model, of which the first "
        "decoding within 1.5 %% of the requested length is refined (generate's "
        f"candidates; default {DEFAULT_CANDIDATES}; 1: the rule before; with "
        "--recalibrate, the bank noise's calibration measures it too)",
    )
    if prior_spread:
        parser.add_argument(
            "--prior_spread",
            type=_prior_spread_arg,
            default=DEFAULT_PRIOR_SPREAD,
            help="factor on the spread of prior sampling's draws about the "
            "means of the prior's components (generate's prior_spread; default "
            f"{DEFAULT_PRIOR_SPREAD:g}: the prior as fitted; prior_match "
            "measures the prior itself whatever it is)",
        )
    if placement:
        parser.add_argument(
            "--placement_noise",
            type=_placement_arg,
            default=DEFAULT,
            help="spread of the new subjects' placement of each bundle (a rigid "
            "move of every generated streamline), relative to the training "
            "subjects' (default: generate's default for each sampling, "
            f"{DEFAULT_PLACEMENT_NOISE:g} for bank sampling and "
            f"{PRIOR_NOISES[1]:g} for prior sampling of a length model's "
            "fitted prior)",
        )


def generation_options(args):
    """Keyword arguments of generation for :func:`add_generation_options`
    (``noise`` only when given, ``prior_spread`` only when not 1)."""
    out = {
        "subject_scope": args.subject_scope,
        "noise_scope": args.noise_scope,
        "extend_reach": args.extend_reach,
        "candidates": args.candidates,
    }
    if getattr(args, "placement_noise", None) is not None:
        out["placement_noise"] = args.placement_noise
    if args.noise is not None:
        out["noise"] = args.noise
    spread = getattr(args, "prior_spread", DEFAULT_PRIOR_SPREAD)
    if spread != DEFAULT_PRIOR_SPREAD:
        out["prior_spread"] = spread
    return out


def set_fields(items):
    """``--set FIELD=VALUE`` options as a dict of AAEConfig fields: each value
    read as JSON, or else kept as a string (``--set prior=fitted``)."""
    fields = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word
            fields[key] = value
    return fields


def phantom_options(attribute="length", fragments=None, n_per_bundle=None):
    """The options of :func:`make_phantom` for ``attribute``: :data:`PHANTOM`
    or :data:`AGE_PHANTOM`, with ``fragments`` and ``n_per_bundle`` (streamlines
    per bundle and subject) where given."""
    options = dict(PHANTOM if attribute == "length" else AGE_PHANTOM)
    if fragments is not None:
        options["fragments"] = fragments
    if n_per_bundle is not None:
        options["n_per_bundle"] = int(n_per_bundle)
    return options


def load_splits(
    name,
    *,
    n_points,
    data_dir=None,
    fragments=None,
    attribute="length",
    n_per_bundle=None,
):
    """(train, held-out) splits of the phantom (the age phantom for an
    attribute other than length; :func:`phantom_options`) or the embedded
    default."""
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.data_fetchers import fetch_minimal_bundles, make_phantom

    if name == "phantom":
        options = phantom_options(attribute, fragments, n_per_bundle)
        folder = make_phantom(
            data_dir or tempfile.mkdtemp(prefix="aae_tract_phantom_"), **options
        )
        val_fraction = 1 / 3
    else:
        folder = fetch_minimal_bundles()
        val_fraction = 0.2
    dataset = load_dataset(folder, n_points=n_points, attribute=attribute)
    return split_dataset(dataset, val_fraction=val_fraction, seed=SPLIT_SEED)


def cross_subject_reference(model, train, held_out, *, seed=0, prior_match_tests=1):
    """Real training streamlines against held-out ones, per bundle.

    The model learns from the training subjects; this row says how close
    *their real* streamlines come to the held-out subjects' (same counts as in
    :func:`aae_tract.metrics.evaluate`): the ceiling of a generator that
    reproduces the training distribution exactly. Its ``prior_match`` is the
    classifier test between the held-out subjects' encodings and as many
    training encodings of the bundle: what a prior that matched the
    training encodings exactly would score on the held-out ones; with
    ``prior_match_tests`` above 1, the mean of that many tests, each
    against its own sample of training encodings (as
    :func:`aae_tract.metrics.evaluate` draws prior samples for each).
    """
    from aae_tract.metrics import (
        curvature_ratio,
        density_dice,
        diversity_ratio,
        hooked_fraction,
        label_fidelity,
        mean_prior_match,
        realism_c2st,
        rough_fraction,
        shape_similarity,
    )

    rng = np.random.default_rng(seed)
    names = np.asarray(held_out.bundle_names)
    xv, lv = model.prepare(np.asarray(held_out.x), list(names[held_out.labels]))
    tnames = np.asarray(train.bundle_names)
    xt, lt = model.prepare(np.asarray(train.x), list(tnames[train.labels]))
    # as evaluate() encodes: one sample of q(z | x) each
    zv = model.encode_prepared(xv, rng=seed)
    zt = model.encode_prepared(xt, rng=seed)
    rows = {}
    for name in model.bundle_names:
        label = model.bundle_index(name)
        real = np.flatnonzero(lv == label)
        if len(real) < 4:
            continue
        half_b = rng.permutation(real)[len(real) // 2 :]
        pick = rng.permutation(np.flatnonzero(lt == label))
        twin = xt[pick[: len(half_b)]]
        rows[name] = {
            "label_fidelity": label_fidelity(xt[pick[:100]], label, xv, lv),
            "diversity_ratio": diversity_ratio(xt[pick[:100]], xv[real], rng=seed),
            "density_dice": density_dice(twin, xv[half_b]),
            "curvature_ratio": curvature_ratio(twin, xv[half_b]),
            "rough_fraction": rough_fraction(twin, xv[half_b]),
            "hooked_fraction": hooked_fraction(twin, xv[half_b]),
            "shape_similarity": shape_similarity(twin[:200], xv[half_b][:200]),
            "realism_c2st": realism_c2st(twin[:200], xv[half_b][:200], seed=seed),
            "prior_match": mean_prior_match(
                zv[real],
                # the first takes the pick above, as one test did
                [zt[pick[: len(real)]]]
                + [
                    zt[
                        np.random.default_rng([seed, label, t]).permutation(pick)[
                            : len(real)
                        ]
                    ]
                    for t in range(1, int(prior_match_tests))
                ],
                seed=seed,
            ),
        }
    keys = next(iter(rows.values())).keys() if rows else ()
    mean = {k: _mean([r[k] for r in rows.values()]) for k in keys}
    for key in ("rough_fraction", "hooked_fraction"):
        if key in mean:  # a worst case, as evaluate() reports it
            values = _finite([r[key] for r in rows.values()])
            mean[key] = max(values) if values else None
    if model.attribute_name != "length":
        slopes = held_out_slope_errors(model.bundle_names, train, held_out)
        for name, error in slopes.items():
            rows.setdefault(name, {})["attribute_slope_error"] = error
        mean["attribute_slope_error"] = max(slopes.values()) if slopes else None
    return {**mean, "per_bundle": rows}


def held_out_slope_errors(bundles, train, held_out):
    """Per bundle, the held-out subjects' real slope of median length against
    the attribute, relative to the training subjects' (the quantity
    ``attribute_slope_error`` measures for generated bundles): what a
    generator that reproduced the held-out subjects exactly would score."""
    from aae_tract.attribute import length_slope, subject_median_lengths

    errors = {}
    for name in bundles:
        if name not in train.bundle_names or name not in held_out.bundle_names:
            continue
        real = length_slope(*subject_median_lengths(train, name))
        other = length_slope(*subject_median_lengths(held_out, name))
        if real and other is not None:
            errors[name] = abs(other - real) / abs(real)
    return errors


def _finite(values):
    return [v for v in values if v is not None and np.isfinite(v)]


def _mean(values):
    values = _finite(values)
    return float(np.mean(values)) if values else None


def summarise(runs, key):
    """(mean, sd) over runs of ``run[key]`` (None where never computed)."""
    values = np.array([r[key] for r in runs if r.get(key) is not None], float)
    if len(values) == 0:
        return None, None
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def targets_for(dataset, sampling, attribute="length"):
    """The targets of one dataset, sampling and attribute."""
    targets = {
        **TARGETS,
        **DATASET_TARGETS.get(dataset, {}),
        **SAMPLING_TARGETS.get(sampling, {}),
    }
    if attribute != "length":
        targets = {k: v for k, v in targets.items() if k not in LENGTH_ONLY}
        targets.update(ATTRIBUTE_TARGETS)
    return targets


def add_attribute_summary(result):
    """Per-seed numbers of the attribute targets, from ``evaluate``'s details.

    ``attribute_monotone``: fraction of bundles whose generated medians move
    with the real slope at every step; ``attribute_mae_ratio`` and
    ``attribute_mae_generation_ratio``: read-back error (through the encoder,
    through generation) over the trivial baseline's; each bundle's slope
    error in ``per_bundle``.
    """
    slopes = result.get("attribute_slope") or {}
    if slopes:
        result["attribute_monotone"] = float(
            np.mean([b["monotone"] for b in slopes.values()])
        )
    for bundle, detail in slopes.items():
        result["per_bundle"].setdefault(bundle, {})["attribute_slope_error"] = detail[
            "error"
        ]
    base = result.get("attribute_mae_baseline")
    for how in ("", "_generation"):
        mae = result.get(f"attribute_mae{how}")
        if mae is not None and base:
            result[f"attribute_mae{how}_ratio"] = mae / base
    return result


def check(metric, result, ceiling, targets=None, bundle_ceilings=None, band_se=None):
    """(target text, passed) of one metric, on the mean over seeds.

    ``passed`` is None when the metric was not measured in this run.
    ``bundle_ceilings`` (bundle -> train-vs-held-out value of ``metric``)
    serve the "every <=ref+" targets; ``band_se`` (bundle -> standard error
    of the training share per band, :func:`band_reference_se`) the "every
    band >=" ones (None: the bound alone).
    """
    kind, bound = (targets or TARGETS)[metric]
    value = result["mean"].get(metric)
    if kind == "every band >=":
        text = f">= {bound} (or {-BAND_SE_FACTOR:g} SE of the reference), every band"
        gaps = [
            (g, band_tolerance(bound, band_se, bundle, k))
            for bundle, row in band_gaps(result).items()
            for k, g in enumerate(row)
            if g is not None
        ]
        if not gaps:
            return text, None
        return text, all(g >= low for g, low in gaps)
    if kind == "every <=ref+":
        values = result["per_bundle_mean"].get(metric, {})
        refs = bundle_ceilings or {}
        if not values or any(refs.get(b) is None for b in values):
            return f"<= ref + {bound}, every bundle", None
        ok = all(v is not None and v <= refs[b] + bound for b, v in values.items())
        return f"<= ref + {bound}, every bundle", ok
    if kind.startswith("every"):
        values = [v for v in result["per_bundle_mean"].get(metric, {}).values()]
        if kind == "every <=":
            ok = bool(values) and all(v is not None and v <= bound for v in values)
            return f"<= {bound}, every bundle", ok
        if kind == "every >=":
            ok = bool(values) and all(v is not None and v >= bound for v in values)
            return f">= {bound}, every bundle", ok
        ok = bool(values) and all(
            v is not None and bound[0] <= v <= bound[1] for v in values
        )
        return f"{bound[0]}-{bound[1]}, every bundle", ok
    if value is None:
        return "-", None
    if kind == ">=":
        return f">= {bound}", value >= bound
    if kind == "<=":
        return f"<= {bound}", value <= bound
    if kind == "in":
        return f"{bound[0]}-{bound[1]}", bound[0] <= value <= bound[1]
    if ceiling is None:
        return f">= {bound} x ref", False
    return f">= {bound * ceiling:.3f}", value >= bound * ceiling


def band_gaps(result, metric="band_precision"):
    """Bundle -> per length band, the mean over seeds of the generated share
    minus the training share of ``metric`` (``band_precision`` or
    ``band_recall``): None where the training share is missing or 0 (as
    the metric skips it), minus infinity where the training share is
    measured but the generated one is not (for ``band_precision``: too few
    generated streamlines fell in the band, the generator missed the band's
    lengths)."""
    lists = result.get("per_bundle_list_mean", {})
    generated = lists.get(f"{metric}_per_band") or {}
    trained = lists.get(f"{metric}_train_per_band") or {}
    out = {}
    for bundle, gen in generated.items():
        ref = trained.get(bundle) or []
        out[bundle] = [
            None if t is None or not t > 0 else (-math.inf if g is None else g - t)
            for g, t in zip(gen or [], ref)
        ]
    return out


def band_tolerance(bound, band_se, bundle, band):
    """The lowest difference a band may show: ``bound``, or
    -:data:`BAND_SE_FACTOR` standard errors of its training share when that
    is lower (``band_se``: :func:`band_reference_se`)."""
    se = ((band_se or {}).get(bundle) or [])[band : band + 1]
    if not se or se[0] is None or not np.isfinite(se[0]):
        return bound
    return min(bound, -BAND_SE_FACTOR * se[0])


def band_reference_se(train, held_out):
    """Bundle -> per length band, the standard error of the training
    streamlines' share on the held-out manifold over the training subjects
    (``benchmarks/band_reference.py``; None where fewer than three subjects
    have a share). It uses every streamline of the splits, where
    :func:`aae_tract.metrics.evaluate` takes at most 2,000 training and
    1,000 held-out streamlines of a bundle for ``band_precision``: the same
    streamlines on the phantom (800 and 400), a seeded sample on larger
    data."""
    from band_reference import subject_shares

    return {
        bundle: [None if not np.isfinite(v) else float(v) for v in entry["se"]]
        for bundle, entry in subject_shares(train, held_out).items()
    }


def _fmt(mean, sd):
    if mean is None:
        return "n/a"
    if sd is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} +/- {sd:.3f}"


def _ceiling(metric, real, cross):
    """The ceiling a ">=ref" target scales: train-vs-held-out, else real-vs-real."""
    value = cross.get(metric)
    return value if value is not None else real.get(metric)


#: Ratios whose seeds are summarised by the one farthest from 1 (a mean of
#: 0.8 and 1.2 would hide both).
WORST_RATIOS = ("recon_length_ratio",)


def _farthest_from_one(values):
    values = [v for v in values if v is not None and v > 0]
    return max(values, key=lambda v: abs(np.log(v))) if values else None


def aggregate(runs):
    """Mean and sd over seeds of every metric, overall and per bundle.

    Ratios in :data:`WORST_RATIOS` take the seed farthest from 1 instead of
    the mean (their sd is still over the seeds).
    """
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) or v is None]
    out = {"mean": {}, "sd": {}, "per_bundle_mean": {}}
    for key in keys:
        out["mean"][key], out["sd"][key] = summarise(runs, key)
        if key in WORST_RATIOS:
            out["mean"][key] = _farthest_from_one([r.get(key) for r in runs])
    for bundle in runs[0]["per_bundle"]:
        for key, value in runs[0]["per_bundle"][bundle].items():
            if isinstance(value, list):
                lists = [r["per_bundle"][bundle][key] for r in runs]
                out.setdefault("per_bundle_list_mean", {}).setdefault(key, {})
                out["per_bundle_list_mean"][key][bundle] = _list_mean(lists)
                continue
            values = [r["per_bundle"][bundle][key] for r in runs]
            pick = _farthest_from_one if key in WORST_RATIOS else _mean
            out["per_bundle_mean"].setdefault(key, {})[bundle] = pick(values)
    return out


def bundle_references(crosses):
    """Per metric, bundle -> train-vs-held-out value, mean over seeds."""
    out = {}
    for cross in crosses:
        for bundle, row in (cross.get("per_bundle") or {}).items():
            for metric, value in row.items():
                out.setdefault(metric, {}).setdefault(bundle, []).append(value)
    return {m: {b: _mean(v) for b, v in rows.items()} for m, rows in out.items()}


def _list_mean(lists):
    """Element-wise mean of equal-length lists (None where never finite)."""
    lists = [v for v in lists if isinstance(v, list)]
    return [_mean(list(items)) for items in zip(*lists)]


def table(
    summary,
    *,
    title,
    real,
    cross,
    dataset="phantom",
    attribute="length",
    bundle_refs=None,
    band_se=None,
):
    """Text table: metric, mean +/- sd per sampling, references, target, pass
    (``bundle_refs``: :func:`bundle_references`)."""
    bundle_refs = bundle_refs or {}
    head = ["metric"] + [f"{s} (mean +/- sd)" for s in summary]
    head += ["real vs real", "train vs held-out", "target"]
    head += [f"pass ({s})" for s in summary]
    rows = []
    targets = {s: targets_for(dataset, s, attribute) for s in summary}
    for metric in next(iter(targets.values())):
        row = [metric]
        for s in summary:
            row.append(
                _fmt(summary[s]["mean"].get(metric), summary[s]["sd"].get(metric))
            )
        for ref in (real, cross):
            r = ref.get(metric)
            row.append("n/a" if r is None else f"{r:.3f}")
        ceiling = _ceiling(metric, real, cross)
        texts = []
        refs = bundle_refs.get(metric)
        for s in summary:
            text = check(metric, summary[s], ceiling, targets[s], refs, band_se)[0]
            if text != "-" and text not in texts:
                texts.append(text)
        row.append(" / ".join(texts) or "-")
        for s in summary:
            ok = check(metric, summary[s], ceiling, targets[s], refs, band_se)[1]
            row.append("n/a" if ok is None else "yes" if ok else "NO")
        rows.append(row)
    return _render([title, ""], head, rows)


def band_table(summary, band_se=None, metric="band_precision"):
    """The shares behind ``band_precision`` (or ``band_recall``, ``metric``)
    per bundle and length band (shortest first), mean over seeds: of each
    sampling's generated streamlines and of the training streamlines
    (``summary``: sampling -> :func:`aggregate` result), then the standard
    error of the training share over the training subjects and the lowest
    difference the target allows (``band_se``: :func:`band_reference_se`;
    ``band_precision`` only)."""
    sets = {s: (f"{metric}_per_band", result) for s, result in summary.items()}
    first = next(iter(summary.values()))
    sets["training streamlines"] = (f"{metric}_train_per_band", first)
    rows = []
    for bundle in first.get("per_bundle_list_mean", {}).get(f"{metric}_per_band", {}):
        for what, (key, result) in sets.items():
            means = (result.get("per_bundle_list_mean", {}).get(key) or {}).get(bundle)
            if not means:
                continue
            rows.append(
                [bundle, what] + ["n/a" if m is None else f"{m:.3f}" for m in means]
            )
        se = (band_se or {}).get(bundle)
        if se:
            rows.append(
                [bundle, "training share's standard error over subjects"]
                + ["n/a" if v is None else f"{v:.3f}" for v in se]
            )
            rows.append(
                [bundle, "lowest difference allowed"]
                + [
                    f"{band_tolerance(BAND_PRECISION_GAP, band_se, bundle, k):.3f}"
                    for k in range(len(se))
                ]
            )
    n = max((len(r) - 2 for r in rows), default=0)
    return _render([], ["bundle", "set"] + [f"band {k + 1}" for k in range(n)], rows)


def per_bundle_table(result, metrics):
    """Per-bundle means over seeds of one sampling."""
    metrics = [m for m in metrics if m in result["per_bundle_mean"]]
    bundles = list(next(iter(result["per_bundle_mean"].values())))
    head = ["bundle"] + metrics
    rows = []
    for bundle in bundles:
        values = [result["per_bundle_mean"].get(m, {}).get(bundle) for m in metrics]
        rows.append([bundle] + ["n/a" if v is None else f"{v:.3f}" for v in values])
    return _render([], head, rows)


def _render(lines, head, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = list(lines)
    lines.append(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("-|-".join("-" * w for w in widths))
    lines.extend(" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
    return "\n".join(lines)


def run_seed(config, seed, train, held_out, args):
    """Train (or load) one model and evaluate it with each of ``args.samplings``."""
    from aae_tract.metrics import evaluate
    from aae_tract.model import TractAAE

    config = {**config, "seed": seed}
    if args.load:
        model = TractAAE.load(args.load.format(seed=seed))
        seconds = model.metadata.training.get("seconds")
        if args.recalibrate:
            model.calibrate(train, candidates=args.candidates)
    else:
        model = TractAAE.from_dataset(train, **config)
        start = time.perf_counter()
        model.fit(train, held_out, verbose=2)
        seconds = time.perf_counter() - start
        if args.model:
            model.save(args.model.replace(".keras", f"_seed{seed}.keras"))
    print(f"seed {seed}: training {seconds:.0f} s", flush=True)
    print(f"seed {seed}: {placement_summary(model)}", flush=True)
    results = {
        s: evaluate(
            model,
            held_out,
            n_generate=args.n_generate,
            n_targets=args.n_targets,
            seed=seed,
            sampling=s,
            train=train,
            subject_noise=args.subject_noise,
            within_subject=WITHIN_SUBJECT[args.within_subject],
            prior_match_tests=args.prior_match_tests,
            **generation_options(args),
        )
        for s in args.samplings
    }
    from aae_tract.generate import default_sampling

    for result in results.values():
        # which of the two generate() and the commands use when not told
        result["default_sampling"] = default_sampling(model)
        if model.attribute_name != "length":
            add_attribute_summary(result)
    if args.baseline:
        plain = plain_autoencoder_recon(
            config,
            train,
            held_out,
            path=args.model.replace(".keras", f"_plain_seed{seed}.keras")
            if args.model
            else None,
        )
        print(f"seed {seed}: plain autoencoder recon_mdf_mm {plain:.3f}", flush=True)
        for result in results.values():
            result["plain_recon_mdf_mm"] = plain
            result["recon_vs_plain"] = result["recon_mdf_mm"] / plain
    cross = cross_subject_reference(
        model, train, held_out, seed=seed, prior_match_tests=args.prior_match_tests
    )
    return model, seconds, results, cross


def placement_summary(model):
    """One line: each bundle's placement spread over the training subjects
    (:func:`aae_tract.placement.placement_spread`), as the largest rotation
    (degrees) and shift (mm) of the three axes."""
    from aae_tract.placement import placement_spread

    parts = []
    for name in model.bundle_names:
        spread = placement_spread(model, name)
        if spread is not None:
            record = spread.to_json()
            parts.append(
                f"{name} {max(record['rotation_deg']):.1f} deg "
                f"{max(record['shift_mm']):.1f} mm"
            )
    return "placement spread (largest axis) " + (", ".join(parts) or "none")


#: What makes the model a plain autoencoder (same networks and
#: reconstruction losses, no adversary, no attribute regularization).
PLAIN = {
    "adv_weight": 0.0,
    "ar_weight": 0.0,
    "posterior": "deterministic",
    "log_var_weight": 0.0,
    "mmd_weight": 0.0,
}


def plain_autoencoder_recon(config, train, held_out, path=None):
    """Held-out ``recon_mdf_mm`` of a plain autoencoder of the same size.

    Trained with the same settings and seed (saved to ``path`` when given);
    measured as :func:`aae_tract.metrics.evaluate` does (mean MDF per
    bundle, mean over bundles).
    """
    from aae_tract.model import TractAAE

    model = TractAAE.from_dataset(train, **{**config, **PLAIN})
    model.fit(train, held_out, verbose=0)
    if path:
        model.save(path)
    return held_out_recon(model, held_out)


def held_out_recon(model, held_out):
    """``recon_mdf_mm`` of ``model`` on ``held_out`` as
    :func:`aae_tract.metrics.evaluate` measures it (mean MDF per bundle, mean
    over bundles)."""
    from aae_tract.metrics import _prepared, paired_mdf

    x, labels = _prepared(model, held_out)
    error = paired_mdf(x, model.decode(model.encode_prepared(x), labels))
    return float(np.mean([error[labels == b].mean() for b in np.unique(labels)]))


#: Environment variables that size the thread pools of the BLAS and OpenMP
#: libraries NumPy, scikit-learn and TensorFlow load. Such a library starts
#: one thread per core of the machine when it loads, before a worker can
#: narrow its CPUs, so every worker's pool would crowd onto its own share
#: (doc/benchmarks.md, "BLAS threads in the prior's refit":
#: ``benchmarks/bench_blas_threads.py`` times the prior's refit in two
#: pinned workers with and without :func:`worker_environment`).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)


def worker_environment(n_cpus, environ=None):
    """The environment of a ``--jobs`` worker given ``n_cpus`` CPUs.

    Each variable of :data:`THREAD_VARIABLES` that the caller has not set
    is set to ``n_cpus``, so that the worker's thread pools fit the CPUs it
    is pinned to instead of every core of the machine.

    Parameters
    ----------
    n_cpus : int
        CPUs of the worker.
    environ : mapping, optional
        The environment to start from (default ``os.environ``).

    Returns
    -------
    dict
        The worker's environment.
    """
    env = dict(os.environ if environ is None else environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(int(n_cpus)))
    return env


def run_seeds_in_workers(args, argv):
    """Train and evaluate each seed in its own process, ``args.jobs`` at once.

    Each worker runs this script on one seed with the same options and writes
    its JSON; the CPUs are split evenly between the workers running at once
    (so two 1-core trainings on 2 cores, not two 2-core ones fighting), and
    each worker's thread pools are sized to its share
    (:func:`worker_environment`).

    Returns
    -------
    list of (config, epochs, seconds, results, cross)
        Per seed, in the order of ``args.seeds``.
    """
    import subprocess

    drop = {"--seeds", "--jobs", "--out", "--cpus"}
    base, skip = [], False
    for item in argv:
        if skip and not item.startswith("--"):
            continue
        skip = item.split("=")[0] in drop
        if not skip:
            base.append(item)
    cpus = sorted(os.sched_getaffinity(0))
    jobs = min(args.jobs, len(args.seeds))
    shares = [cpus[i::jobs] or cpus for i in range(jobs)]
    folder = tempfile.mkdtemp(prefix="aae_tract_quality_")
    pending, running, done = list(args.seeds), {}, {}
    while pending or running:
        free = [i for i in range(jobs) if i not in running]
        while pending and free:
            seed, slot = pending.pop(0), free.pop(0)
            out = os.path.join(folder, f"seed{seed}.json")
            command = [
                sys.executable,
                os.path.abspath(__file__),
                *base,
                "--seeds",
                str(seed),
                "--out",
                out,
                "--cpus",
                ",".join(map(str, shares[slot])),
            ]
            log = open(os.path.join(folder, f"seed{seed}.log"), "w")
            print(f"seed {seed}: worker on CPUs {shares[slot]}, log {log.name}")
            env = worker_environment(len(shares[slot]))
            running[slot] = (
                seed,
                out,
                log,
                subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env
                ),
            )
        time.sleep(5)
        for slot, (seed, out, log, proc) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[slot]
            if proc.returncode != 0:
                for _, _, _, other in running.values():
                    other.kill()
                with open(log.name) as f:
                    tail = f.read()[-3000:]
                raise SystemExit(
                    f"seed {seed}: worker failed ({proc.returncode}):\n{tail}"
                )
            with open(out) as f:
                payload = json.load(f)
            print(f"seed {seed}: done ({payload['train_seconds'][0]:.0f} s training)")
            done[seed] = (
                payload["config"],
                payload["config"].get("epochs"),
                payload["train_seconds"][0],
                {s: payload["runs"][s][0] for s in args.samplings},
                payload["train_vs_held_out_runs"][0],
            )
    return [done[seed] for seed in args.seeds]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=["phantom", "minimal_bundles"], default="phantom"
    )
    parser.add_argument(
        "--attribute",
        choices=["length", "age"],
        default="length",
        help="what latent dimension 0 is tied to; age trains on the age phantom "
        f"({AGE_PHANTOM['n_subjects']} subjects, 20-80 years)",
    )
    parser.add_argument("--epochs", type=int, help="training epochs (budget)")
    parser.add_argument("--n_points", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds"
    )
    parser.add_argument(
        "--fragments",
        type=float,
        help=f"phantom fragment fraction (default {PHANTOM['fragments']})",
    )
    parser.add_argument(
        "--register",
        choices=["none", "groupwise"],
        default="none",
        help="common space before training (the tables in doc/benchmarks.md "
        "were measured with none; benchmarks/registration.py compares them)",
    )
    parser.add_argument(
        "--n_per_bundle",
        type=int,
        help=f"phantom streamlines per bundle and subject (default "
        f"{PHANTOM['n_per_bundle']}; age phantom {AGE_PHANTOM['n_per_bundle']})",
    )
    parser.add_argument("--n_generate", type=int, default=100)
    parser.add_argument("--n_targets", type=int, default=5)
    parser.add_argument(
        "--samplings",
        nargs="+",
        choices=SAMPLINGS,
        default=list(SAMPLINGS),
        help="the samplings evaluated (default both; one alone, e.g. to measure "
        "a prior sampling option on saved models with --load, halves the "
        "evaluation)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="other AAEConfig field, e.g. --set adv_weight=0.05 or --set "
        "prior=fitted (a JSON value, or else a string)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also train a plain autoencoder per seed (recon_vs_plain)",
    )
    parser.add_argument(
        "--model",
        help="also save the trained models (.keras): NAME_seed{seed}.keras, and "
        "with --baseline the plain autoencoders as NAME_plain_seed{seed}.keras",
    )
    parser.add_argument(
        "--load",
        help="evaluate this model instead of training; {seed} in the name is "
        "filled in per seed, e.g. models/q_seed{seed}.keras as --model "
        "models/q.keras wrote them",
    )
    add_generation_options(parser)
    parser.add_argument(
        "--subject_noise",
        type=lambda v: None if v == "none" else DEFAULT if v == DEFAULT else float(v),
        default=DEFAULT,
        help="subject_noise of bank sampling, and of prior sampling of a "
        "fitted prior (default: generate's default for each sampling, "
        f"{DEFAULT_SUBJECT_NOISE:g} for bank sampling and {PRIOR_NOISES[0]:g} "
        "for prior sampling of a length model's fitted prior; 'none': every "
        "code keeps its training subject)",
    )
    parser.add_argument(
        "--within_subject",
        choices=tuple(WITHIN_SUBJECT),
        default="on",
        help="within_subject of generation for a per-subject attribute "
        "(default on: each bank code takes the offset in latent dimension 0 "
        "at its streamline's rank within a subject of the target's value, "
        "and prior sampling spreads it as within a subject; own: the "
        "streamline's own offset; off: dimension 0 is the calibrated value)",
    )
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="with --load: refit the calibration and latent bank on the training "
        "split first (the same seeded sample; for models saved before banks "
        "kept their codes' subjects)",
    )
    parser.add_argument(
        "--prior_match_tests",
        type=int,
        default=PRIOR_MATCH_TESTS,
        help="prior_match of each bundle, and of its train-vs-held-out "
        "reference, is the mean of this many classifier tests, each against "
        f"its own samples (default {PRIOR_MATCH_TESTS}; 1: one test, as "
        "before)",
    )
    parser.add_argument("--data_dir", help="folder for the phantom (default: temp)")
    parser.add_argument("--out", help="write the numbers as JSON here")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds trained at once, each in its own process on its own share "
        "of the CPUs (the same numbers as one at a time, up to float rounding)",
    )
    parser.add_argument("--cpus", help=argparse.SUPPRESS)  # a --jobs worker's CPUs
    args = parser.parse_args(argv)
    args.samplings = [s for s in SAMPLINGS if s in args.samplings]
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.prior_match_tests < 1:
        parser.error("--prior_match_tests must be at least 1")
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.n_per_bundle is not None and (
        args.dataset != "phantom" or args.n_per_bundle < 1
    ):
        parser.error("--n_per_bundle needs --dataset phantom and a count >= 1")
    if args.attribute != "length" and args.dataset != "phantom":
        parser.error(f"--attribute {args.attribute} needs --dataset phantom")

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    config = dict(CONFIGS[args.dataset] if args.attribute == "length" else AGE_CONFIG)
    for key in ("epochs", "n_points", "batch_size"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    config.update(set_fields(args.set))

    from aae_tract.backend import current_backend, describe_device

    train, held_out = load_splits(
        args.dataset,
        n_points=config["n_points"],
        data_dir=args.data_dir,
        fragments=args.fragments,
        attribute=args.attribute,
        n_per_bundle=args.n_per_bundle,
    )
    if args.register != "none":
        from aae_tract.registration import register_split

        train, held_out = register_split(train, held_out, args.register)
    print(
        f"{args.dataset}: {len(train)} training streamlines "
        f"({len(np.unique(train.subjects))} subjects), {len(held_out)} held out "
        f"({', '.join(np.unique(held_out.subjects))}); {describe_device()}",
        flush=True,
    )
    band_se = band_reference_se(train, held_out)
    runs = {s: [] for s in args.samplings}
    crosses, seconds = [], []
    if args.jobs > 1 and len(args.seeds) > 1:
        done = run_seeds_in_workers(args, sys.argv[1:] if argv is None else argv)
    else:
        done = []
        for seed in args.seeds:
            model, secs, results, cross = run_seed(config, seed, train, held_out, args)
            epochs = model.metadata.training.get("epochs")
            done.append((model.config.to_dict(), epochs, secs, results, cross))
    model_config, epochs = done[0][:2]
    for _, _, secs, results, cross in done:
        seconds.append(secs)
        crosses.append(cross)
        for s in args.samplings:
            runs[s].append(results[s])
    summary = {s: aggregate(runs[s]) for s in args.samplings}
    first_run = runs[args.samplings[0]][0]
    real = aggregate([r["reference"] for r in runs[args.samplings[0]]])["mean"]
    cross = {
        k: _mean([c.get(k) for c in crosses]) for k in crosses[0] if k != "per_bundle"
    }
    bundle_refs = bundle_references(crosses)
    title = (
        f"{args.dataset} ({args.attribute}), "
        f"{epochs} epochs, "
        f"seeds {', '.join(map(str, args.seeds))}, training "
        f"{np.mean(seconds):.0f} s per seed on {current_backend()}, "
        f"n_train {first_run['n_train']}, n_eval {first_run['n_eval']}"
    )
    print()
    targets = {s: targets_for(args.dataset, s, args.attribute) for s in args.samplings}
    print(
        table(
            summary,
            title=title,
            real=real,
            cross=cross,
            dataset=args.dataset,
            attribute=args.attribute,
            bundle_refs=bundle_refs,
            band_se=band_se,
        )
    )
    for s in args.samplings:
        print(f"\nper bundle, mean over seeds ({s} sampling):")
        print(per_bundle_table(summary[s], targets[s]))
    if bundle_refs:
        print("\nper bundle, train vs held-out (mean over seeds):")
        print(
            per_bundle_table(
                {"per_bundle_mean": bundle_refs},
                targets_for(args.dataset, "bank", args.attribute),
            )
        )
    print(
        "\nband_precision's shares on the held-out manifold, per length band "
        "(quintiles of the held-out lengths):"
    )
    print(band_table(summary, band_se))
    print(
        "\nband_recall's shares: held-out streamlines of each length band on "
        "the manifold of as many generated (or training) streamlines "
        "(no target):"
    )
    print(band_table(summary, metric="band_recall"))
    default = first_run.get("default_sampling")
    print(
        f"\ndefault sampling of these models (generate's and the commands' "
        f"without --sampling): {default}"
    )
    passed = {
        s: {
            m: check(
                m,
                summary[s],
                _ceiling(m, real, cross),
                targets[s],
                bundle_refs.get(m),
                band_se,
            )[1]
            for m in targets[s]
        }
        for s in args.samplings
    }
    if args.out:
        from aae_tract.atomic import write_json_atomic

        payload = {
            "command": " ".join(["python", "benchmarks/quality.py", *sys.argv[1:]]),
            "dataset": args.dataset,
            "attribute": args.attribute,
            "phantom": phantom_options(args.attribute, None, args.n_per_bundle)
            if args.dataset == "phantom"
            else None,
            "fragments": args.fragments,
            "register": args.register,
            "prior_match_tests": args.prior_match_tests,
            "prior_spread": args.prior_spread,
            "config": model_config,
            "seeds": args.seeds,
            "backend": current_backend(),
            "device": describe_device(),
            "train_seconds": seconds,
            "targets": {
                s: {k: list(v) for k, v in targets[s].items()} for s in args.samplings
            },
            "summary": summary,
            "real_vs_real": real,
            "train_vs_held_out": cross,
            "train_vs_held_out_runs": crosses,
            "runs": runs,
            "band_reference_se": band_se,
            "passed": passed,
            "default_sampling": default,
        }
        write_json_atomic(args.out, json.loads(json.dumps(payload, default=float)))
        print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
