"""Quality benchmark: train with a fixed budget, evaluate on held-out subjects.

Trains the conditional AAE on the synthetic phantom (6 subjects, 4 for
training and 2 held out) or on the embedded default (DIPY's minimal_bundles,
5 subjects, 1 held out), evaluates it with :func:`aae_tract.metrics.evaluate`
(every metric beside its real-vs-real ceiling), prints a table with the
targets and writes every number as JSON.

Both ways of sampling latent codes (``bank``: encodings of training
streamlines near the target plus noise; ``prior``: the prior) are measured.

Usage::

    python benchmarks/quality.py --dataset phantom --out quality_phantom.json
    python benchmarks/quality.py --dataset minimal_bundles --epochs 60
    KERAS_BACKEND=torch python benchmarks/quality.py --dataset phantom

The default budget (``--epochs``: 200 on the phantom, 100 on the embedded
default) fits in about 15 minutes on a 2-core CPU.

The table has two reference columns: ``real vs real`` (two random halves of
the held-out streamlines, the ceiling :func:`~aae_tract.metrics.evaluate`
reports) and ``train vs held-out`` (real *training* streamlines against the
held-out ones: what a generator that reproduced the training subjects
exactly would score; subjects differ, so this is the reachable ceiling for
``density_dice`` and ``diversity_ratio`` when held-out subjects are not in
the training set).
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

#: Targets on the phantom: (metric, comparison, value); "ref" scales by the ceiling.
TARGETS = {
    "label_fidelity": (">=", 0.98),
    "length_mae_mm": ("<=", 3.0),
    "ar_spearman": (">=", 0.95),
    "diversity_ratio": ("in", (0.8, 1.25)),
    "density_dice": (">=ref", 0.8),
    "recon_mdf_mm": ("<=", 2.0),
}

#: Hyperparameters of the benchmark runs (AAEConfig fields), per dataset.
CONFIGS = {
    "phantom": {
        "n_points": 64,
        "epochs": 200,
        "batch_size": 64,
    },
    "minimal_bundles": {
        "n_points": 64,
        "epochs": 100,
        "batch_size": 32,
    },
}

PHANTOM = {"n_subjects": 6, "n_per_bundle": 200, "seed": 0}


def load_splits(name, *, n_points, seed, data_dir=None):
    """(train, held-out) splits of the phantom or the embedded default."""
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.data_fetchers import fetch_minimal_bundles, make_phantom

    if name == "phantom":
        folder = make_phantom(
            data_dir or tempfile.mkdtemp(prefix="aae_tract_phantom_"), **PHANTOM
        )
        val_fraction = 1 / 3
    else:
        folder = fetch_minimal_bundles()
        val_fraction = 0.2
    dataset = load_dataset(folder, n_points=n_points)
    return split_dataset(dataset, val_fraction=val_fraction, seed=seed)


def cross_subject_reference(model, train, held_out, *, seed=0):
    """Real training streamlines against held-out ones, per bundle.

    The model learns from the training subjects; this row says how close
    *their real* streamlines come to the held-out subjects' (same counts as in
    :func:`aae_tract.metrics.evaluate`): the ceiling of a generator that
    reproduces the training distribution exactly.
    """
    from aae_tract.metrics import density_dice, diversity_ratio, label_fidelity

    rng = np.random.default_rng(seed)
    names = np.asarray(held_out.bundle_names)
    xv, lv = model.prepare(np.asarray(held_out.x), list(names[held_out.labels]))
    tnames = np.asarray(train.bundle_names)
    xt, lt = model.prepare(np.asarray(train.x), list(tnames[train.labels]))
    rows = {}
    for name in model.bundle_names:
        label = model.bundle_index(name)
        real = np.flatnonzero(lv == label)
        if len(real) < 4:
            continue
        half_b = rng.permutation(real)[len(real) // 2 :]
        pick = rng.permutation(np.flatnonzero(lt == label))
        rows[name] = {
            "label_fidelity": label_fidelity(xt[pick[:100]], label, xv, lv),
            "diversity_ratio": diversity_ratio(xt[pick[:100]], xv[real], rng=seed),
            "density_dice": density_dice(xt[pick[: len(half_b)]], xv[half_b]),
        }
    mean = {
        k: float(np.mean([r[k] for r in rows.values()]))
        for k in ("label_fidelity", "diversity_ratio", "density_dice")
    }
    return {**mean, "per_bundle": rows}


def check(metric, value, reference):
    """(target text, passed) of one metric."""
    kind, bound = TARGETS[metric]
    if value is None:
        return "-", False
    if kind == ">=":
        return f">= {bound}", value >= bound
    if kind == "<=":
        return f"<= {bound}", value <= bound
    if kind == "in":
        return f"{bound[0]}-{bound[1]}", bound[0] <= value <= bound[1]
    ceiling = reference.get(metric)
    if ceiling is None:
        return f">= {bound} x ref", False
    return f">= {bound * ceiling:.3f}", value >= bound * ceiling


def table(results, *, title, cross=None):
    """Text table: metric, value per sampling, real-vs-real, target, pass."""
    first = next(iter(results.values()))
    ref = first.get("reference", {})
    cross = cross or {}
    samplings = list(results)
    head = ["metric"] + [f"value ({s})" for s in samplings] + ["real vs real"]
    head += ["train vs held-out", "target"]
    head += [f"pass ({s})" for s in samplings]
    rows = []
    for metric in TARGETS:
        row = [metric]
        for s in samplings:
            v = results[s][metric]
            row.append("n/a" if v is None else f"{v:.3f}")
        r = ref.get(metric)
        row.append("n/a" if r is None else f"{r:.3f}")
        c = cross.get(metric)
        row.append("n/a" if c is None else f"{c:.3f}")
        row.append(check(metric, first[metric], ref)[0])
        for s in samplings:
            row.append("yes" if check(metric, results[s][metric], ref)[1] else "NO")
        rows.append(row)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = [title, ""]
    lines.append(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("-|-".join("-" * w for w in widths))
    lines.extend(" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
    return "\n".join(lines)


def per_bundle_table(result):
    """Per-bundle values of one evaluation."""
    metrics = list(TARGETS)
    head = ["bundle"] + metrics
    rows = []
    for bundle, values in result["per_bundle"].items():
        rows.append(
            [bundle]
            + ["n/a" if values[m] is None else f"{values[m]:.3f}" for m in metrics]
        )
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("-|-".join("-" * w for w in widths))
    lines.extend(" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=["phantom", "minimal_bundles"], default="phantom"
    )
    parser.add_argument("--epochs", type=int, help="training epochs (budget)")
    parser.add_argument("--n_points", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_generate", type=int, default=100)
    parser.add_argument("--n_targets", type=int, default=5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="other AAEConfig field, e.g. --set adv_weight=0.05 (JSON value)",
    )
    parser.add_argument("--model", help="also save the trained model here (.keras)")
    parser.add_argument("--load", help="evaluate this model instead of training")
    parser.add_argument("--data_dir", help="folder for the phantom (default: temp)")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    config = dict(CONFIGS[args.dataset])
    for key in ("epochs", "n_points", "batch_size"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = json.loads(value)
    config["seed"] = args.seed

    from aae_tract.backend import current_backend, describe_device
    from aae_tract.metrics import evaluate
    from aae_tract.model import TractAAE

    train, held_out = load_splits(
        args.dataset,
        n_points=config["n_points"],
        seed=args.seed,
        data_dir=args.data_dir,
    )
    print(
        f"{args.dataset}: {len(train)} training streamlines "
        f"({len(np.unique(train.subjects))} subjects), {len(held_out)} held out "
        f"({', '.join(np.unique(held_out.subjects))}); {describe_device()}",
        flush=True,
    )
    history = {}
    if args.load:
        model = TractAAE.load(args.load)
        train_seconds = model.metadata.training.get("seconds")
    else:
        model = TractAAE.from_dataset(train, **config)
        start = time.perf_counter()
        history = model.fit(train, held_out, verbose=2)
        train_seconds = time.perf_counter() - start
        if args.model:
            model.save(args.model)
    print(f"training: {train_seconds:.0f} s", flush=True)

    results = {}
    for sampling in ("bank", "prior"):
        results[sampling] = evaluate(
            model,
            held_out,
            n_generate=args.n_generate,
            n_targets=args.n_targets,
            seed=args.seed,
            sampling=sampling,
        )
    cross = cross_subject_reference(model, train, held_out, seed=args.seed)
    title = (
        f"{args.dataset}, {model.metadata.training.get('epochs')} epochs, "
        f"{train_seconds:.0f} s training on {current_backend()}, "
        f"n_train {results['bank']['n_train']}, n_eval {results['bank']['n_eval']}"
    )
    print()
    print(table(results, title=title, cross=cross))
    for sampling, result in results.items():
        print(f"\nper bundle ({sampling} sampling):")
        print(per_bundle_table(result))
    ref = results["bank"]["reference"]
    summary = {
        s: {m: check(m, results[s][m], ref)[1] for m in TARGETS} for s in results
    }
    if args.out:
        payload = {
            "dataset": args.dataset,
            "phantom": PHANTOM if args.dataset == "phantom" else None,
            "config": model.config.to_dict(),
            "backend": current_backend(),
            "device": describe_device(),
            "train_seconds": train_seconds,
            "history": {k: v[-1] for k, v in history.items() if v},
            "targets": {k: list(v) for k, v in TARGETS.items()},
            "results": results,
            "train_vs_held_out": cross,
            "passed": summary,
        }
        with open(args.out + ".tmp", "w") as f:
            json.dump(payload, f, indent=1, default=float)
        os.replace(args.out + ".tmp", args.out)
        print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
