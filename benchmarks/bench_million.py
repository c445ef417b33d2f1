"""Benchmark: one training epoch on a million phantom streamlines, bounded memory.

Builds (once; reused from ``--work-dir`` afterwards) the phantom of
``aae_tract.data_fetchers.make_phantom`` with 4 subjects x 6 bundles x 41,667
streamlines (1,000,008) and its dataset cache (256 points: 2.9 GiB,
memory-mapped), then, each in a fresh process so that ru_maxrss is the
training's alone, does what ``aae_tract_train`` does for one epoch with the
default model: open the cache, split by subject, register (groupwise by
default), fit the normaliser, train one epoch with validation, calibrate the
attribute and measure the match to the prior. Rows:

* ``full``: all 1,000,008 streamlines;
* ``subset``: the same on a seeded random subset (``--baseline``, default
  100,000 streamlines), the baseline of the ratios;
* ``copy``: the full dataset with each split gathered into memory as
  ``split_dataset`` did before (memmap fancy indexing), ``--copy-steps``
  batches only: it is there for its peak RSS.

Each row prints peak RSS (MiB) and training streamlines/s (the streamlines
of the epoch over the seconds of ``keras.Model.fit``, validation included),
and the full row's ratios to the subset row.

Run ``python benchmarks/bench_million.py --help`` for the options; the full
run takes about 10-15 minutes on 2 CPU cores (``--steps`` shortens the
epochs, and the streamlines/s are then of those steps).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_SUBJECTS = 4
N_BUNDLES = 6
N_POINTS = 256


def _rss_peak_mib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _prepare(args):
    """Write the phantom and its cache when missing; time each step."""
    from aae_tract.data import load_dataset
    from aae_tract.data_fetchers import make_phantom

    phantom = args.work_dir / "phantom"
    done = (phantom / "ground_truth.json").is_file()
    start = time.perf_counter()
    make_phantom(phantom, n_subjects=N_SUBJECTS, n_per_bundle=args.n_per_bundle)
    phantom_s = time.perf_counter() - start
    start = time.perf_counter()
    cache_dir = args.work_dir / "cache"
    had_cache = cache_dir.is_dir() and any(cache_dir.iterdir())
    ds = load_dataset(phantom, n_points=N_POINTS, cache_dir=cache_dir)
    return {
        "streamlines": len(ds),
        "phantom_s": round(phantom_s, 1),
        "phantom_reused": done,
        "cache_s": round(time.perf_counter() - start, 1),
        "cache_reused": had_cache,
        "cache_gib": round(ds.x.nbytes / 2**30, 2),
    }


def _stop_after(steps):
    """A Keras callback that ends the epoch after ``steps`` batches."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= steps:
                self.model.stop_training = True

    return StopAfter()


def _old_copy(split):
    """The split with ``x`` as ``subset`` made it before: rows of the memmap
    gathered into memory (a contiguous range stayed a view of the map)."""
    from aae_tract.rows import StreamlineRows

    if isinstance(split.x, StreamlineRows):
        split.x = split.x.base[split.x.index]
    return split


def _splits(args, ds):
    """Train and validation splits of the row's dataset, registered."""
    from aae_tract.data import split_dataset
    from aae_tract.registration import register_split

    if args.rows < len(ds):
        rng = np.random.default_rng(0)
        ds = ds.subset(np.sort(rng.choice(len(ds), args.rows, replace=False)))
    train, val = split_dataset(ds, seed=0)
    if args.copy:
        train, val = _old_copy(train), _old_copy(val)
    if args.steps and len(val) > args.steps * 64:
        val = val.subset(np.arange(args.steps * 64))
    return register_split(train, val, args.register, seed=0)


def _train(args):
    """One epoch of the default model on this row's data; its numbers."""
    import keras

    from aae_tract.data import load_dataset
    from aae_tract.model import TractAAE

    before = _rss_peak_mib()
    timings, start = {}, time.perf_counter()
    ds = load_dataset(
        args.work_dir / "phantom", n_points=N_POINTS, cache_dir=args.work_dir / "cache"
    )
    timings["open_s"] = time.perf_counter() - start
    start = time.perf_counter()
    train, val = _splits(args, ds)
    timings["split_register_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model = TractAAE.from_dataset(train)
    timings["normalizer_s"] = time.perf_counter() - start
    stop = [_stop_after(args.steps)] if args.steps else []
    start = time.perf_counter()
    model.fit(
        train,
        val,
        epochs=1,
        checkpoint_dir=args.work_dir / f"checkpoint-{args.child}",
        verbose=0,
        callbacks=stop,
    )
    timings["fit_s"] = time.perf_counter() - start
    record = model.metadata.training
    n_seen = len(train)
    if args.steps:
        n_seen = min(n_seen, args.steps * model.config.batch_size)
    return {
        "row": args.child,
        "backend": keras.backend.backend(),
        "streamlines": len(ds) if args.rows >= len(ds) else args.rows,
        "train": len(train),
        "validation": len(val),
        "train_x": type(train.x).__name__,
        "streamlines_trained": n_seen,
        "epoch_s": record["seconds"],
        "streamlines_per_s": round(n_seen / record["seconds"], 1),
        **{k: round(v, 1) for k, v in timings.items()},
        "rss_after_imports_mib": round(before, 1),
        "rss_peak_mib": round(_rss_peak_mib(), 1),
    }


def _child(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = _prepare(args) if args.child == "prepare" else _train(args)
    print(json.dumps(result))


def _run_child(args, row, *extra):
    command = [
        sys.executable,
        __file__,
        "--child",
        row,
        "--work-dir",
        str(args.work_dir),
        "--n-per-bundle",
        str(args.n_per_bundle),
        "--register",
        args.register,
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"step {row} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print_row(r):
    print(
        f"{r['row']:>6}: {r['streamlines']:>9,} streamlines ({r['train']:,} train, "
        f"{r['validation']:,} validation, x {r['train_x']}), "
        f"{r['streamlines_trained']:,} trained in {r['epoch_s']:.0f} s: "
        f"{r['streamlines_per_s']:,.0f} streamlines/s; peak RSS "
        f"{r['rss_peak_mib']:,.0f} MiB ({r['rss_after_imports_mib']:.0f} after "
        f"imports); open {r['open_s']} s, split+register {r['split_register_s']} s,"
        f" normaliser {r['normalizer_s']} s, fit+calibration {r['fit_s']} s",
        flush=True,
    )


def _rows(args):
    """Run the training rows; print each, and the ratios."""
    steps = ["--steps", str(args.steps)] if args.steps else []
    rows = {
        "subset": _run_child(args, "subset", "--rows", str(args.baseline), *steps),
        "full": _run_child(args, "full", *steps),
    }
    for row in rows.values():
        _print_row(row)
    if args.copy_steps:
        rows["copy"] = _run_child(
            args, "copy", "--copy", "--steps", str(args.copy_steps)
        )
        _print_row(rows["copy"])
    full, base = rows["full"], rows["subset"]
    print(
        f"full / subset: {full['streamlines'] / base['streamlines']:.1f}x the "
        f"streamlines, peak RSS {full['rss_peak_mib'] / base['rss_peak_mib']:.2f}x,"
        f" streamlines/s {full['streamlines_per_s'] / base['streamlines_per_s']:.2f}x"
        f"; peak RSS {full['rss_peak_mib'] / 1024:.2f} GiB (target <= 2 GiB)"
    )
    return rows


def _parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("aae_bench_million"),
        help="where the phantom and its cache are made once and reused "
        "(about 4.5 GiB; default ./aae_bench_million)",
    )
    parser.add_argument(
        "--n-per-bundle",
        type=int,
        default=41_667,
        help="streamlines per bundle and subject (4 x 6 x 41667 = 1,000,008)",
    )
    parser.add_argument(
        "--baseline",
        type=int,
        default=100_000,
        help="streamlines of the baseline (subset) row",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train this many batches per row (and validate on as many); "
        "default 0: whole epochs",
    )
    parser.add_argument(
        "--copy-steps",
        type=int,
        default=200,
        help="batches of the row that copies the splits into memory, as "
        "before (0: leave the row out)",
    )
    parser.add_argument(
        "--register",
        default="groupwise",
        help="groupwise (aae_tract_train's default) or none",
    )
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=sys.maxsize, help=argparse.SUPPRESS)
    parser.add_argument("--copy", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.child:
        _child(args)
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    prepared = _run_child(args, "prepare")
    print(
        f"phantom: {prepared['streamlines']:,} streamlines, written in "
        f"{prepared['phantom_s']:.0f} s{' (reused)' * prepared['phantom_reused']}; "
        f"cache {prepared['cache_gib']} GiB, built in {prepared['cache_s']:.0f} s"
        f"{' (reused)' * prepared['cache_reused']}",
        flush=True,
    )
    results = {"prepare": prepared, **_rows(args)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
