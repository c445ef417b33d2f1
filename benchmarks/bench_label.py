"""Bundle recognition: this model against DIPY's RecoBundles on held-out subjects.

Both label every streamline of the same held-out subjects' tractograms in the
same run, and are scored against the truth with
:func:`label_baseline.score_labels` (per-bundle precision / recall / F1,
macro F1, "other" recall) and timed (streamlines per second, registration
included).

``--dataset phantom``: the phantom with fragments (8 subjects x 6 bundles x
150 streamlines, half of them fragments); sub-07 and sub-08 are held out as
whole-brain tractograms (:func:`make_wholebrain`: their bundles with 30 %
distractor streamlines that belong to no bundle); of the other six, one
subject is the validation subject (the labeller's thresholds are set on it)
and five train. RecoBundles' model bundles are those six subjects' bundles.

``--dataset minimal``: DIPY's embedded minimal_bundles; sub_5 is held out (its
three bundles mixed into one file, no distractors), sub_1 to sub_4 train (one
of them validation), registered groupwise (the training command's default);
the held-out subject is registered to the model's atlas when labelled.

``--label_fraction F`` adds, for each seed, a model trained with only a share
F of each bundle's training streamlines labelled, and the models of
self-training on the others, their labels removed
(:func:`aae_tract.label.self_train`): the semi-supervised gain.
``--self_train restart continue`` scores both modes of self-training
(``fraction+self``: the share's model trained further for half of
``--epochs``, the default; ``fraction+self-restart``: a new model trained
``--epochs`` on the labelled and the pseudo-labelled streamlines;
``--self_train_epochs`` sets the epochs of both).

``--reject both latent`` scores every model under each rejection rule of
:func:`aae_tract.label.label_streamlines` (``both``: the latent distance or
the reconstruction error makes a streamline "other"; ``latent``: the latent
distance alone, nothing decoded); the models are the same.
``--decode_from 0.5 0`` scores the ``both`` rule once per value of
``label_streamlines``' ``decode_from`` (the share of a bundle's latent
threshold from which a streamline is decoded and its reconstruction tested;
0: every streamline inside the threshold, the rule before it existed).
``--settle_below 0.25 0`` scores every rule once per value of
``label_streamlines``' ``settle_below`` (0: a streamline within reach of
bundles that give it different point orders is always encoded in both, the
rule before it existed). ``--precision float32 bfloat16`` scores every rule
with the encoder computing in each (``label_streamlines``' ``precision``;
the default, ``auto``, is bfloat16 on a CPU with native bfloat16 under
TensorFlow or torch).

``--reach on off`` scores every model with its bundles' reaches (the
default labelling: a streamline far from a bundle's reference is not
considered for it, and one far from every bundle is not encoded) and without
them (every bundle considered for every streamline, as before the reaches):
the scores they change and the time they save, on the same models.

``--generation`` (phantom) also measures every model as a generator, on the
held-out subjects' bundle files with :func:`aae_tract.metrics.evaluate`
(label fidelity, length error, curvature and diversity ratios, held-out
reconstruction): does a model trained for labelling, or self-trained on its
own labels, still generate as the quality benchmark asks?

Examples::

    python benchmarks/bench_label.py --dataset phantom --out label_phantom.json
    python benchmarks/bench_label.py --dataset phantom --label_fraction 0.1
    python benchmarks/bench_label.py --dataset minimal --epochs 100
    python benchmarks/bench_label.py --label_fraction 0.1 --generation
    python benchmarks/bench_label.py --dataset minimal --reject both latent
    python benchmarks/bench_label.py --reject both latent --reach on off
    python benchmarks/bench_label.py --reject both latent --decode_from 0.5 0
    python benchmarks/bench_label.py --reject both latent --settle_below 0.25 0
    python benchmarks/bench_label.py --reject both latent --precision float32 bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_baseline import (  # noqa: E402
    SETTINGS,
    add_reach_argument,
    drop_reaches,
    load_minimal_bundles,
    mix_subject,
    recobundles_labels,
    score_labels,
)
from quality import set_fields  # noqa: E402

from aae_tract.label import (  # noqa: E402
    DECODE_FROM,
    PRECISIONS,
    REJECT_RULES,
    SETTLE_BELOW,
)

logger = logging.getLogger("bench_label")

PHANTOM = {"n_subjects": 8, "n_per_bundle": 150, "seed": 0, "fragments": 0.5}
PHANTOM_TEST = ("sub-07", "sub-08")
MINIMAL_TEST = ("sub_5",)
DISTRACTORS = 0.3
#: Generation metrics of ``--generation`` (keys of aae_tract.metrics.evaluate).
GENERATION = (
    "label_fidelity",
    "length_error_pct",
    "curvature_ratio",
    "diversity_ratio",
    "recon_mdf_mm",
)


def _phantom(data_dir):
    """Training subjects' folders, the held-out tractograms and their truth,
    and the held-out subjects' bundle folders."""
    from aae_tract.data_fetchers.phantom import (
        load_wholebrain_labels,
        make_phantom,
        make_wholebrain,
    )
    from aae_tract.io import load_bundle

    root = Path(data_dir)
    folder = make_phantom(root / "phantom", **PHANTOM)
    whole = make_wholebrain(
        folder,
        root / "wholebrain",
        subjects=list(PHANTOM_TEST),
        distractors=DISTRACTORS,
    )
    subjects = sorted(p.name for p in folder.iterdir() if p.is_dir())
    train_dirs = [folder / s for s in subjects if s not in PHANTOM_TEST]
    tests = {}
    for s in PHANTOM_TEST:
        sft = load_bundle(whole / f"{s}.trk")
        tests[s] = (sft.streamlines, np.asarray(load_wholebrain_labels(whole, s)))
    return train_dirs, tests, [folder / s for s in PHANTOM_TEST]


def _minimal():
    data = load_minimal_bundles()
    from aae_tract.data_fetchers import fetch_minimal_bundles

    folder = fetch_minimal_bundles()
    train_dirs = [folder / s for s in sorted(data) if s not in MINIMAL_TEST]
    tests = {s: mix_subject(data[s], seed=0) for s in MINIMAL_TEST}
    return train_dirs, tests


def _model_bundles(train_dirs):
    """RecoBundles' model bundles: every training subject's bundle, joined."""
    from aae_tract.io import find_bundles, load_bundle

    bundles = {}
    for f in find_bundles([str(d) for d in train_dirs]):
        bundles.setdefault(f.bundle, []).extend(load_bundle(f.path).streamlines)
    return bundles


def _splits(train_dirs, n_points, register, seed):
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.registration import register_split

    dataset = load_dataset([str(d) for d in train_dirs], n_points=n_points)
    train, validation = split_dataset(
        dataset, val_fraction=1 / len(train_dirs), seed=seed
    )
    if register != "none":
        train, validation = register_split(train, validation, register, seed=seed)
    return train, validation


@contextlib.contextmanager
def _without_reach(model):
    """``model`` with its labeller's bundle reaches removed (every bundle
    considered for every streamline, as labellers before version 2 did)."""
    stored = model.metadata.labeller
    model.metadata.labeller = drop_reaches(copy.deepcopy(stored))
    try:
        yield model
    finally:
        model.metadata.labeller = stored


def _score_model(
    model,
    tests,
    bundles,
    register,
    reject="both",
    reach="on",
    decode_from=DECODE_FROM,
    settle_below=SETTLE_BELOW,
    precision="auto",
):
    from aae_tract.label import label_precision, label_streamlines

    if reach == "off":
        with _without_reach(model):
            return _score_model(
                model,
                tests,
                bundles,
                register,
                reject,
                decode_from=decode_from,
                settle_below=settle_below,
                precision=precision,
            )
    # a bfloat16 encoder is built on its first use: not in the timing
    model.encode_prepared(
        np.zeros((1, model.n_points, 3), np.float32),
        precision=label_precision(precision),
    )
    out = {}
    for s, (lines, truth) in tests.items():
        start = time.perf_counter()
        labels, _ = label_streamlines(
            model,
            lines,
            register=register,
            name=s,
            reject=reject,
            decode_from=decode_from,
            settle_below=settle_below,
            precision=precision,
        )
        seconds = time.perf_counter() - start
        scores = score_labels(truth, labels, bundles)
        scores["seconds"] = seconds
        scores["streamlines_per_s"] = len(truth) / seconds
        out[s] = scores
    return out


def _train(train, validation, args, seed):
    from aae_tract.model import TractAAE

    model = TractAAE.from_dataset(
        train, n_points=args.n_points, epochs=args.epochs, seed=seed, **args.fields
    )
    start = time.perf_counter()
    model.fit(train, validation, verbose=0)
    return model, time.perf_counter() - start


def _generation(model, held_out, seed):
    """The generation metrics of ``model`` on the held-out bundles."""
    from aae_tract.metrics import evaluate

    metrics = evaluate(model, held_out, seed=seed, reference=False, sampling="bank")
    return {k: None if metrics[k] is None else float(metrics[k]) for k in GENERATION}


def _rules(args):
    """(reject, decode_from, settle_below, precision) to score every model
    under."""
    return [
        (rule, d, settle, precision)
        for rule in args.reject
        for d in (args.decode_from if rule == "both" else [DECODE_FROM])
        for settle in args.settle_below
        for precision in args.precision
    ]


def _key(
    variant,
    rule,
    reach="on",
    decode_from=DECODE_FROM,
    settle=SETTLE_BELOW,
    precision="auto",
):
    """Results key of a model variant scored under a rejection rule (the
    share of the latent threshold it decodes from, the one below which the
    first point order settles a streamline, the encoder's precision), with
    or without its bundles' reaches."""
    key = variant if rule == "both" else f"{variant}, reject {rule}"
    if rule == "both" and decode_from != DECODE_FROM:
        key += f", decode from {decode_from:g}"
    if settle != SETTLE_BELOW:
        key += f", settle below {settle:g}"
    if precision != "auto":
        key += f", {precision}"
    return key if reach == "on" else f"{key}, no reach"


def _summary(per_subject):
    """Mean over held-out subjects of the headline numbers."""
    keys = ("macro_f1", "accuracy", "streamlines_per_s")
    out = {k: float(np.mean([r[k] for r in per_subject.values()])) for k in keys}
    recalls = [r["other"]["recall"] for r in per_subject.values()]
    recalls = [r for r in recalls if r is not None]
    out["other_recall"] = float(np.mean(recalls)) if recalls else None
    return out


def _fmt(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} +/- {np.std(values, ddof=1):.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["phantom", "minimal"], default="phantom")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--n_points", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label_fraction", type=float, default=None)
    parser.add_argument(
        "--self_train_epochs",
        type=int,
        default=None,
        help="epochs of self-training (default: --epochs for restart, half of "
        "it for continue)",
    )
    parser.add_argument(
        "--self_train",
        nargs="+",
        default=["continue"],
        choices=["continue", "restart"],
        help="self-training of the --label_fraction models to score: continue "
        "(the share's model trained further, half of --epochs; the default) "
        "and/or restart (a new model trained --epochs on the labelled and "
        "pseudo-labelled streamlines)",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        default=list(SETTINGS),
        choices=list(SETTINGS),
        help="RecoBundles presets to run",
    )
    parser.add_argument(
        "--reject",
        nargs="+",
        default=["both"],
        choices=list(REJECT_RULES),
        help="rejection rules to score every model under (label_streamlines' "
        "reject): both, latent",
    )
    parser.add_argument(
        "--decode_from",
        type=float,
        nargs="+",
        default=[DECODE_FROM],
        help="label_streamlines' decode_from values to score the both rule "
        f"under (default {DECODE_FROM:g}; 0: decode every streamline inside "
        "the latent threshold)",
    )
    parser.add_argument(
        "--settle_below",
        type=float,
        nargs="+",
        default=[SETTLE_BELOW],
        help="label_streamlines' settle_below values to score every rule "
        f"under (default {SETTLE_BELOW:g}; 0: every streamline within reach "
        "of bundles of both point orders encoded in both)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["auto"],
        choices=list(PRECISIONS),
        help="label_streamlines' precision values to score every rule under "
        "(what the encoder computes in; default auto)",
    )
    add_reach_argument(
        parser,
        "score every model with its bundles' reaches (on: the default "
        "labelling) and/or without them (off: every bundle considered for "
        "every streamline)",
    )
    parser.add_argument(
        "--generation",
        action="store_true",
        help="also measure every model as a generator (phantom only)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="other AAEConfig field of every model, e.g. --set prior=fitted "
        "(a JSON value, or else a string)",
    )
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.fields = set_fields(args.set)
    args.self_train = list(dict.fromkeys(args.self_train))
    if args.generation and args.dataset != "phantom":
        parser.error("--generation needs --dataset phantom")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for name in ("aae_tract", "dipy", "label_baseline"):
        logging.getLogger(name).setLevel(logging.WARNING)

    if args.dataset == "phantom":
        data_dir = args.data_dir or tempfile.mkdtemp(prefix="aae_label_")
        train_dirs, tests, held_out_dirs = _phantom(data_dir)
        register = "none"
    else:
        train_dirs, tests = _minimal()
        register = "groupwise"
    model_bundles = _model_bundles(train_dirs)
    bundles = sorted(model_bundles)
    n_test = sum(len(t[1]) for t in tests.values())
    logger.info(
        "%s: %d training subjects, held out %s (%d streamlines)",
        args.dataset,
        len(train_dirs),
        ", ".join(tests),
        n_test,
    )

    results = {"args": vars(args), "recobundles": {}, "model": {}}
    for preset in args.presets:
        per_subject = {}
        for s, (lines, truth) in tests.items():
            labels, seconds = recobundles_labels(
                model_bundles, lines, settings=SETTINGS[preset]
            )
            scores = score_labels(truth, labels, bundles)
            scores["seconds"] = seconds
            scores["streamlines_per_s"] = len(truth) / seconds
            per_subject[s] = scores
        results["recobundles"][preset] = {
            "per_subject": per_subject,
            "summary": _summary(per_subject),
        }
        logger.info("RecoBundles %s: %s", preset, _summary(per_subject))

    held_out = None
    if args.generation:
        from aae_tract.data import load_dataset

        held_out = load_dataset([str(d) for d in held_out_dirs], n_points=args.n_points)
    variants = ["full"]
    if args.label_fraction is not None:
        variants += ["fraction"] + [
            "fraction+self" + ("" if m == "continue" else "-restart")
            for m in args.self_train
        ]
    rules = _rules(args)
    scored = [
        _key(v, rule, reach, d, settle, precision)
        for v in variants
        for rule, d, settle, precision in rules
        for reach in args.reach
    ]
    for seed in args.seeds:
        train, validation = _splits(train_dirs, args.n_points, register, seed=0)

        def record(variant, model, secs, seed=seed):
            """Score ``model`` now (self-training changes it afterwards),
            under every rejection rule asked for."""
            for rule, d, settle, precision in rules:
                for reach in args.reach:
                    scored = _score_model(
                        model,
                        tests,
                        bundles,
                        None,
                        reject=rule,
                        reach=reach,
                        decode_from=d,
                        settle_below=settle,
                        precision=precision,
                    )
                    key = _key(variant, rule, reach, d, settle, precision)
                    results["model"].setdefault(key, {})[seed] = {
                        "per_subject": scored,
                        "summary": _summary(scored),
                        "train_seconds": secs,
                    }
            if held_out is not None:
                first = _key(variant, rules[0][0], args.reach[0], *rules[0][1:])
                results["model"][first][seed]["generation"] = _generation(
                    model, held_out, seed
                )

        record("full", *_train(train, validation, args, seed))
        if args.label_fraction is not None:
            from aae_tract.label import self_train, split_labelled

            few, pool = split_labelled(train, args.label_fraction, seed=seed)
            model, secs = _train(few, validation, args, seed)
            record("fraction", model, secs)
            # restart first: continuing trains the 10 % model in place
            for mode in sorted(args.self_train, key=lambda m: m != "restart"):
                start = time.perf_counter()
                student, _, report = self_train(
                    model,
                    few,
                    validation,
                    pool,
                    epochs=args.self_train_epochs
                    or (args.epochs if mode == "restart" else max(1, args.epochs // 2)),
                    mode=mode,
                    verbose=0,
                )
                variant = "fraction+self" + ("" if mode == "continue" else "-restart")
                record(variant, student, secs + time.perf_counter() - start)
                results.setdefault("self_training", {}).setdefault(seed, {})[mode] = (
                    report
                )
        for key in scored:
            logger.info(
                "seed %d, model %s: %s",
                seed,
                key,
                results["model"][key][seed]["summary"],
            )

    print(
        f"\n{args.dataset}: held out {', '.join(tests)} ({n_test} streamlines), "
        f"model: {args.n_points} points, {args.epochs} epochs, seeds {args.seeds}"
    )
    from aae_tract.label import label_precision

    print(
        "precision: "
        + ", ".join(f"{p} (here {label_precision(p)})" for p in args.precision)
    )
    print("| labeller | macro F1 | other recall | accuracy | streamlines/s |")
    print("|---|---|---|---|---|")
    keys = ("macro_f1", "other_recall", "accuracy", "streamlines_per_s")
    for preset, res in results["recobundles"].items():
        row = [_fmt([res["summary"][k]]) for k in keys]
        print(f"| RecoBundles {preset} | " + " | ".join(row) + " |")
    for key in scored:
        runs = results["model"][key].values()
        row = [_fmt([r["summary"][k] for r in runs]) for k in keys]
        print(f"| model {key} | " + " | ".join(row) + " |")
    per_bundle = {
        b: _fmt(
            [
                np.mean([s["per_bundle"][b]["f1"] for s in r["per_subject"].values()])
                for r in results["model"][scored[0]].values()
            ]
        )
        for b in bundles
    }
    print(
        f"model {scored[0]}, F1 per bundle: "
        + ", ".join(f"{b} {v}" for b, v in per_bundle.items())
    )
    if held_out is not None:
        print("\nthe same models as generators, held-out bundles (bank sampling)")
        print("| model | " + " | ".join(GENERATION) + " |")
        print("|---" * (len(GENERATION) + 1) + "|")
        for variant in variants:
            runs = results["model"][
                _key(variant, rules[0][0], args.reach[0], *rules[0][1:])
            ].values()
            row = [_fmt([r["generation"][k] for r in runs]) for k in GENERATION]
            print(f"| {variant} | " + " | ".join(row) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
