"""Data-parallel training: what splitting the batch over devices changes.

With TensorFlow and torch each device computes the attribute-regularization
(AR) loss over its own part of the batch, so with ``N`` devices each
streamline is ordered against ``B / N - 1`` others instead of ``B - 1``
(``aae_tract.model.parallel``). This benchmark trains the same model on the
same phantom split once on one device and once on ``--devices`` devices with
the same global batch (TensorFlow with that many logical CPU devices: the AR
pairs are those of a GPU run with as many GPUs), for each seed, each run in a
process of its own, and prints for each: the held-out Spearman correlation of
latent dimension 0 with streamline length (mean over bundles; what the AR
loss is for), the held-out reconstruction error (mean MDF, mm), the last
epoch's AR and reconstruction losses and the training throughput, then the
mean +/- sd over seeds and the difference (devices minus one device).

On a CPU the devices share the same cores, so the throughput says nothing
about GPU scaling (``benchmarks/bench_gpu.py`` measures that); it is printed
so that a slowdown is seen.

Usage::

    python benchmarks/bench_parallel.py --epochs 10 --n_per_bundle 60
    python benchmarks/bench_parallel.py --devices 4 --batch_size 64 --epochs 20

Writes a JSON of every number with ``--out``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from _worker import report_result, run_worker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(args):
    """Train once on ``args.devices`` devices (this process); numbers as a dict."""
    if args.devices > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices
        )
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.metrics import paired_mdf, spearman_rho
    from aae_tract.model import TractAAE

    dataset = load_dataset(args.data_dir, n_points=args.n_points)
    train, held_out = split_dataset(dataset, val_fraction=0.2, seed=0)
    model = TractAAE.from_dataset(
        train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed
    )
    start = time.perf_counter()
    history = model.fit(train, verbose=0, devices=args.devices)
    seconds = time.perf_counter() - start
    names = np.asarray(held_out.bundle_names)[np.asarray(held_out.labels)]
    x, labels = model.prepare(np.asarray(held_out.x, dtype="float32"), list(names))
    z = model.encode_prepared(x)
    recon = model.decode(z, labels)
    attribute = np.asarray(held_out.attribute, dtype="float64")
    rhos = [
        spearman_rho(z[labels == i, 0], attribute[labels == i])
        for i in np.unique(labels)
    ]
    return {
        "devices": args.devices,
        "seed": args.seed,
        "ar_spearman": float(np.mean(rhos)),
        "recon_mdf_mm": float(np.mean(paired_mdf(x, recon))),
        "ar_loss": history["ar_loss"][-1],
        "recon_loss": history["recon_loss"][-1],
        "streamlines_per_s": len(train) * args.epochs / seconds,
    }


def run(devices, seed, args, data_dir):
    """Run :func:`measure` in a new process; its dict."""
    options = {"data_dir": data_dir, "devices": devices, "seed": seed}
    options.update(epochs=args.epochs, n_points=args.n_points)
    options.update(batch_size=args.batch_size)
    what = f"{devices} devices, seed {seed}"
    return run_worker(__file__, options, backend="tensorflow", what=what)


KEYS = ("ar_spearman", "recon_mdf_mm", "ar_loss", "recon_loss", "streamlines_per_s")


def report(rows, n_devices):
    """Per-run lines, then mean +/- sd per setup and the difference."""
    print(f"{'devices':>8s}{'seed':>6s}" + "".join(f"{k:>19s}" for k in KEYS))
    for row in rows:
        print(
            f"{row['devices']:8d}{row['seed']:6d}"
            + "".join(f"{row[k]:19.4f}" for k in KEYS)
        )
    summary = {}
    for devices in (1, n_devices):
        values = {k: [r[k] for r in rows if r["devices"] == devices] for k in KEYS}
        summary[devices] = values
        cells = "".join(_mean_sd(v) for v in values.values())
        print(f"{devices:8d}{'all':>6s}{cells}")
    cells = "".join(
        _mean_sd(np.subtract(summary[n_devices][k], summary[1][k])) for k in KEYS
    )
    print(f"{'diff':>8s}{'':6s}{cells}")
    print(f"diff: {n_devices} devices minus 1 device, paired by seed (mean +/- sd)")


def _mean_sd(values):
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):11.4f} +/- {sd:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n_points", type=int, default=64)
    parser.add_argument("--n_per_bundle", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        report_result(measure(args))
        return 0
    from aae_tract.data_fetchers import make_phantom

    data_dir = make_phantom(
        tempfile.mkdtemp(prefix="aae_tract_phantom_"),
        n_subjects=5,
        n_per_bundle=args.n_per_bundle,
        seed=0,
    )
    print(
        f"== phantom ({args.n_per_bundle} per bundle, 5 subjects), TensorFlow, "
        f"{args.n_points} points, global batch {args.batch_size} "
        f"({args.batch_size // args.devices} per device on {args.devices}), "
        f"{args.epochs} epochs, seeds {args.seeds}"
    )
    rows = []
    for seed in args.seeds:
        for devices in (1, args.devices):
            rows.append(run(devices, seed, args, data_dir))
            print(f"  seed {seed}, {devices} device(s): done", flush=True)
    report(rows, args.devices)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
