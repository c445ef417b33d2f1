"""What the default prior costs in training time, against the earlier default.

Trains the same model on the same data and split with two settings, in one
process, alternating (A B A B ...) so that drift in the machine's speed
reaches both, and prints each run's training seconds (all of
``TractAAE.fit``: the refit of a fitted prior, and after training the
calibration, the labeller and the prior-match test), the
training streamlines per second of each setting (median over rounds) and
the ratio B / A of every round. By default A is today's defaults (the fitted
prior, ``ar_soft`` resolved by the attribute) and B the earlier ones
(``prior="gaussian"``, ``ar_soft`` 0), on the embedded default at the
README command's settings (256 points, batch 32).

Usage::

    python benchmarks/bench_prior_cost.py --epochs 40 --rounds 3
    python benchmarks/bench_prior_cost.py --dataset phantom --n_points 64 --epochs 20
    python benchmarks/bench_prior_cost.py --a prior=fitted ar_soft=0 \
        --b prior=gaussian ar_soft=0

Ratios are what to compare; absolute seconds depend on the machine's load.
Pin the process to one core (``taskset -c 0``) for steadier numbers.
"""

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_model import _load  # noqa: E402
from prior_variants import EARLIER_DEFAULTS  # noqa: E402
from quality import set_fields  # noqa: E402


def _train_seconds(train, validation, fields, epochs, batch_size, seed):
    from aae_tract.model import TractAAE

    model = TractAAE.from_dataset(
        train, epochs=epochs, batch_size=batch_size, seed=seed, **fields
    )
    start = time.perf_counter()
    model.fit(train, validation, verbose=0)
    return time.perf_counter() - start, model.config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dataset", choices=["minimal_bundles", "phantom"], default="minimal_bundles"
    )
    parser.add_argument("--n_points", type=int, default=256)
    parser.add_argument("--n_per_bundle", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--a", nargs="*", default=[], metavar="FIELD=VALUE", help="setting A"
    )
    parser.add_argument(
        "--b",
        nargs="*",
        default=None,
        metavar="FIELD=VALUE",
        help="setting B (default: the earlier defaults, prior=gaussian ar_soft=0)",
    )
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be at least 1")
    settings = {
        "A": set_fields(args.a),
        "B": EARLIER_DEFAULTS if args.b is None else set_fields(args.b),
    }

    train, validation = _load(args.dataset, args.n_points, args.seed, args.n_per_bundle)
    print(
        f"{args.dataset}: {len(train)} training streamlines, {args.n_points} points, "
        f"{args.epochs} epochs, batch {args.batch_size}"
    )
    seconds = {"A": [], "B": []}
    resolved = {}
    for i in range(args.rounds):
        for name in ("A", "B"):
            took, config = _train_seconds(
                train,
                validation,
                settings[name],
                args.epochs,
                args.batch_size,
                args.seed,
            )
            seconds[name].append(took)
            resolved[name] = {"prior": config.prior, "ar_soft": config.ar_soft}
            print(f"  round {i}  {name} ({resolved[name]}): {took:.1f} s", flush=True)
    rate = {
        name: len(train) * args.epochs / float(np.median(runs))
        for name, runs in seconds.items()
    }
    ratios = [b / a for a, b in zip(seconds["A"], seconds["B"], strict=True)]
    for name in ("A", "B"):
        print(
            f"{name} {resolved[name]}: median {np.median(seconds[name]):.1f} s, "
            f"{rate[name]:,.0f} training streamlines/s"
        )
    print(
        "time B / A per round: "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + f" (median {np.median(ratios):.3f})"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "command": " ".join(sys.argv),
                    "dataset": args.dataset,
                    "settings": resolved,
                    "seconds": seconds,
                    "streamlines_per_s": rate,
                    "ratio_b_over_a": ratios,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
