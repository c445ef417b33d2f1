"""Backend benchmark: training throughput of TensorFlow, torch and JAX.

Trains the same model (the default configuration but ``--n_points``, one
seed) on the same data (the phantom or the embedded default, the same split)
for the same number of epochs once per backend, each in a process of its own
(Keras fixes its backend per process), one after the other, and prints the
training throughput (streamlines/s) of each and its ratio to TensorFlow's
(target: JAX within 1.5x of TensorFlow):

- over all epochs: what a run of that many epochs costs, the tracing and
  compiling of the first epoch included;
- after the first epoch: the steady state of a long run.

With ``--repeats``, the backends take turns that many times and each one's
fastest run is reported (a shared machine's load varies over time).

Only ``fit()`` is timed (not the imports, the data loading or the
calibration after training); there is no validation split.

Usage::

    python benchmarks/bench_backends.py --epochs 5
    python benchmarks/bench_backends.py --backends tensorflow jax --epochs 3

Writes a JSON of every number with ``--out``.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

from _worker import report_result, run_worker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKENDS = ("tensorflow", "torch", "jax")


def _data_folder(name, n_per_bundle, seed):
    """The folder of bundles every backend reads."""
    from aae_tract.data_fetchers import fetch_minimal_bundles, make_phantom

    if name == "minimal_bundles":
        return fetch_minimal_bundles()
    folder = tempfile.mkdtemp(prefix="aae_tract_phantom_")
    return make_phantom(folder, n_subjects=5, n_per_bundle=n_per_bundle, seed=seed)


def _epoch_clock():
    """A Keras callback keeping the time training began and each epoch ended."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter())

    return EpochClock()


def measure(args):
    """Train once with this process's backend; the timings as a dict."""
    from aae_tract.backend import current_backend, describe_device
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.model import TractAAE

    dataset = load_dataset(args.data_dir, n_points=args.n_points)
    train, _ = split_dataset(dataset, val_fraction=0.2, seed=args.seed)
    model = TractAAE.from_dataset(
        train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed
    )
    clock = _epoch_clock()
    history = model.fit(train, verbose=0, callbacks=[clock])
    times = clock.times
    n = len(train)
    return {
        "backend": current_backend(),
        "device": describe_device(),
        "n_train": n,
        "epochs": args.epochs,
        "seconds": times[-1] - times[0],
        "first_epoch_seconds": times[1] - times[0],
        "streamlines_per_s": n * args.epochs / (times[-1] - times[0]),
        "steady_streamlines_per_s": (
            n * (args.epochs - 1) / (times[-1] - times[1]) if args.epochs > 1 else None
        ),
        "final_recon_loss": history["recon_loss"][-1],
    }


def run_backend(backend, args, data_dir):
    """Run :func:`measure` in a new process with ``backend``; its dict."""
    options = {"data_dir": data_dir, "epochs": args.epochs, "n_points": args.n_points}
    options.update(batch_size=args.batch_size, seed=args.seed)
    return run_worker(__file__, options, backend=backend, what=backend)


def report(rows):
    """Print one line per backend with its time relative to TensorFlow's."""
    base = next((r for r in rows if r["backend"] == "tensorflow"), None)
    print(
        f"{'backend':12s}{'fit s':>8s}{'epoch 1 s':>11s}{'streamlines/s':>15s}"
        f"{'after epoch 1':>15s}{'time / TF':>11s}{'after epoch 1':>15s}"
    )
    for row in rows:
        steady = row["steady_streamlines_per_s"] or float("nan")
        ratio = steady_ratio = float("nan")
        if base is not None:
            ratio = base["streamlines_per_s"] / row["streamlines_per_s"]
            steady_ratio = (base["steady_streamlines_per_s"] or ratio) / steady
        row["time_ratio_to_tf"], row["steady_time_ratio_to_tf"] = ratio, steady_ratio
        print(
            f"{row['backend']:12s}{row['seconds']:8.1f}"
            f"{row['first_epoch_seconds']:11.1f}{row['streamlines_per_s']:15.0f}"
            f"{steady:15.0f}{ratio:11.2f}{steady_ratio:15.2f}"
        )
    print(
        "time / TF: TensorFlow's streamlines/s over this backend's (1.5: this "
        "backend takes 1.5x as long)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument(
        "--dataset", choices=["phantom", "minimal_bundles"], default="phantom"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n_points", type=int, default=128)
    parser.add_argument("--n_per_bundle", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="data, split and model")
    parser.add_argument("--repeats", type=int, default=1, help="turns per backend")
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        report_result(measure(args))
        return 0
    missing = [b for b in args.backends if importlib.util.find_spec(b) is None]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}")
    data_dir = _data_folder(args.dataset, args.n_per_bundle, args.seed)
    print(
        f"== {args.dataset}, {args.n_points} points, batch {args.batch_size}, "
        f"{args.epochs} epochs, one process per backend, {args.repeats} turn(s)"
    )
    runs = {backend: [] for backend in args.backends}
    for turn in range(args.repeats):
        for backend in args.backends:
            runs[backend].append(run_backend(backend, args, data_dir))
            speed = runs[backend][-1]["streamlines_per_s"]
            print(f"  turn {turn + 1}, {backend}: {speed:.0f} streamlines/s")
    rows = [max(r, key=lambda row: row["streamlines_per_s"]) for r in runs.values()]
    report(rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
