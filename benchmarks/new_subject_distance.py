"""How well the training subjects predict a new subject's distance.

Bank sampling's noise is set at training so that its streamlines lie 0.9
times as far from the training streamlines as a new subject's
(:mod:`aae_tract.bank_noise`). That distance is estimated from the training
subjects alone (:func:`aae_tract.bank_noise.new_subject_distance`: one
subject left out against some of the others, extrapolated to all of them).
This script prints the estimate beside what it estimates: the median MDF
from the held-out subjects' streamlines to their nearest training
streamline (the denominator of ``novelty_ratio``), per bundle and per
length band (fifths of the training lengths, as the calibration takes
them), in each space of ``--modes``: ``none`` (the subjects as read) and
``groupwise`` (the common space ``aae_tract_train`` builds by default). It
needs no model; with ``--load`` it also times the calibration of the
models given (the noise included) and prints each bundle's noise.

Usage::

    python benchmarks/new_subject_distance.py --data_dir data/phantom_q
    python benchmarks/new_subject_distance.py --dataset minimal_bundles \
        --modes groupwise
    python benchmarks/new_subject_distance.py --data_dir data/phantom_q \
        --modes groupwise --load 'models/reg_seed{seed}.keras'
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import band_reference  # noqa: E402
import quality  # noqa: E402


def compare(train, held_out, *, seed=0):
    """Per bundle: the estimate and the held-out distance, over the bundle
    and per length band.

    Returns
    -------
    dict
        Bundle -> ``{"estimate", "held_out", "ratio", "bands": [{"estimate",
        "held_out", "ratio"}, ...]}`` (distances in mm; a band without two
        training subjects or held-out streamlines has None).
    """
    from aae_tract.bank_noise import N_BANDS, length_bands, new_subject_distance
    from aae_tract.streamlines import nearest_mdf

    xt, lt = np.asarray(train.x), np.asarray(train.labels)
    st, at = np.asarray(train.subjects), np.asarray(train.attribute, dtype=float)
    xv, lv = np.asarray(held_out.x), np.asarray(held_out.labels)
    av = np.asarray(held_out.attribute, dtype=float)
    out = {}
    for label, name in enumerate(train.bundle_names):
        mask, real = lt == label, lv == label
        if not mask.any() or not real.any():
            continue
        x, subjects, lengths = xt[mask], st[mask], at[mask]
        # the held-out streamlines' own distance, as novelty_ratio takes it
        d_held = nearest_mdf(xv[real], x)[0]
        estimate, _ = new_subject_distance(x, subjects, rng=seed)
        row = {"estimate": estimate, "held_out": float(np.median(d_held))}
        band = length_bands(lengths)
        held_band = length_bands(lengths, av[real])
        row["bands"] = []
        for b in range(N_BANDS):
            e, _ = new_subject_distance(x, subjects, query=band == b, rng=seed)
            h = d_held[held_band == b]
            h = float(np.median(h)) if len(h) else None
            row["bands"].append({"estimate": e, "held_out": h, "ratio": _ratio(e, h)})
        row["ratio"] = _ratio(row["estimate"], row["held_out"])
        out[name] = row
    return out


def _ratio(a, b):
    return None if a is None or not b else a / b


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def _cell(row):
    """``estimate / held-out (ratio x)``."""
    return f"{_fmt(row['estimate'])} / {_fmt(row['held_out'])} ({_fmt(row['ratio'])}x)"


def time_calibration(pattern, seeds, train):
    """Seconds of ``TractAAE.calibrate`` of each model, with and without
    setting the bank noise (the rest of the calibration alone, timed first
    on the same model), and its bank noise per bundle and band."""
    from aae_tract.model import TractAAE

    rows = {}
    for seed in seeds:
        model = TractAAE.load(pattern.format(seed=seed))
        setter = model._calibrate_bank_noise
        model._calibrate_bank_noise = lambda *args: None
        start = time.perf_counter()
        model.calibrate(train)
        without = time.perf_counter() - start
        model._calibrate_bank_noise = setter
        start = time.perf_counter()
        model.calibrate(train)
        seconds = time.perf_counter() - start
        noise = {
            name: (bank.get("noise") or {}).get("value")
            for name, bank in model.metadata.latent_bank.items()
        }
        rows[seed] = {"seconds": seconds, "without_noise": without, "noise": noise}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    band_reference.add_split_options(parser)
    parser.add_argument(
        "--load",
        help="also time the calibration of these models (with the last mode's "
        "splits); {seed} is filled in per seed",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)

    n_points = args.n_points or quality.CONFIGS[args.dataset]["n_points"]
    train0, held0 = quality.load_splits(
        args.dataset, n_points=n_points, data_dir=args.data_dir
    )
    result = {"command": " ".join(sys.argv), "modes": {}}
    for mode in args.modes:
        from aae_tract.registration import register_split

        train, held_out = register_split(train0, held0, mode)
        rows = compare(train, held_out)
        result["modes"][mode] = rows
        print(f"\n{args.dataset}, {mode}: a new subject's distance (mm), estimated")
        print("from the training subjects / measured on the held-out ones")
        print(
            "| bundle | whole bundle | "
            + " | ".join(f"band {b + 1}" for b in range(5))
            + " |"
        )
        print("|---" * 7 + "|")
        for name, row in rows.items():
            cells = [_cell(row)] + [_cell(b) for b in row["bands"]]
            print(f"| {name} | " + " | ".join(cells) + " |")
        ratios = [r["ratio"] for r in rows.values() if r["ratio"] is not None]
        bands = [b["ratio"] for r in rows.values() for b in r["bands"] if b["ratio"]]
        print(
            f"whole bundles: estimate / held-out {min(ratios):.2f}-{max(ratios):.2f}x "
            f"(mean {np.mean(ratios):.2f}); bands {min(bands):.2f}-{max(bands):.2f}x "
            f"(mean {np.mean(bands):.2f})"
        )
    if args.load:
        timing = time_calibration(args.load, args.seeds, train)
        result["calibration"] = timing
        for seed, row in timing.items():
            print(
                f"seed {seed}: calibration {row['seconds']:.1f} s, "
                f"{row['without_noise']:.1f} s without setting the bank noise"
            )
            for name, values in row["noise"].items():
                print(f"  {name}: bank noise {_fmt_list(values)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"written {args.out}")


def _fmt_list(values):
    return "-" if values is None else " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
