"""GPU throughput benchmark: training and generation streamlines/s per backend.

Builds one synthetic phantom (:func:`aae_tract.data_fetchers.make_phantom`)
and its dataset cache, then runs one process per Keras backend (Keras fixes
its backend per process; torch and JAX by default, TensorFlow too where it is
installed), one after the other, with ``KERAS_BACKEND`` set. Each process
prints the device it computes on and, with mixed precision off
(``float32``) and then on (``--mixed_policy``, default ``mixed_bfloat16``,
set with ``keras.config.set_dtype_policy`` before the model is built):

- training: :meth:`aae_tract.model.TractAAE.fit` of the default model on the
  whole phantom at ``--batch_size``; the first epoch (tracing and
  compiling) is timed apart from the epochs after it, which run until
  ``--seconds`` have passed (at most ``--epochs`` epochs in all); the
  throughput is the streamlines of those epochs over their seconds;
- generation: :func:`aae_tract.generate.generate` (what ``aae_tract_generate``
  calls, its default options but bank sampling, the default before a length
  model sampled its prior by default: exact lengths, texture, the
  tractogram) of ``--n_generate`` streamlines at ``--gen_batch_size`` after a
  warm-up call, and the decoder alone (:meth:`TractAAE.decode` of prior
  codes, mean curves) on as many codes;
- where a backend sees more than one device, training on all of them with
  the same number of epochs: ``fit(..., devices="all")`` in the same process
  for JAX and TensorFlow, ``python -m torch.distributed.run
  --nproc_per_node=N`` of this script with ``fit(..., devices=N)`` for torch
  (the streamlines of an epoch are counted once, across all processes), and
  the scaling efficiency throughput_all / (N * throughput_1).

A row that fails (an error, a NaN loss under mixed precision, non-finite
streamlines) prints why instead of stopping the benchmark. Targets printed
beside the numbers, for one H200-class GPU at 256 points: training >= 50,000
streamlines/s, generation >= 1,000,000 streamlines/s, scaling efficiency
>= 0.8.

The phantom has ``--n_subjects`` x 6 bundles x ``--n_per_bundle``
streamlines (default 4 x 6 x 5,000 = 120,000: an epoch of a few seconds on a
GPU at the target speed). The whole run aims to stay within ``--time_limit``
seconds (default 290): each backend's process gets a share of what is left,
skips the rows it expects to have no time for (those of the mixed precision
when the float32 ones took longer than what remains) and is stopped at the end
of its share. ``--quick`` uses tiny sizes (360 streamlines, 64 points, a
limit of 600 s), for a smoke run on a CPU: one to two minutes per backend on
a shared 2-core machine, where the numbers say nothing about a GPU.

Usage::

    python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --backends torch --batch_size 4096 --out gpu.json
    python benchmarks/bench_gpu.py --quick

Writes a JSON of every number with ``--out``.
"""

import argparse
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKENDS = ("torch", "jax", "tensorflow")
PRECISIONS = ("off", "on")
#: Prefix of the lines a worker process prints its results on.
RESULT = "RESULT "
#: Targets on one H200-class GPU at 256 points.
TRAIN_TARGET = 50_000
GENERATE_TARGET = 1_000_000
SCALING_TARGET = 0.8
#: Sizes of a GPU run and of a ``--quick`` CPU smoke run.
FULL = {
    "n_subjects": 4,
    "n_per_bundle": 5000,
    "n_points": 256,
    "batch_size": 2048,
    "epochs": 30,
    "seconds": 10.0,
    "n_generate": 200_000,
    "gen_batch_size": 16384,
    "time_limit": 290.0,
}
QUICK = {
    "n_subjects": 2,
    "n_per_bundle": 30,
    "n_points": 64,
    "batch_size": 120,
    "epochs": 3,
    "seconds": 1.0,
    "n_generate": 2000,
    "gen_batch_size": 500,
    "time_limit": 600.0,
}
#: Seconds a worker keeps back at its end, and the least share it is given.
MARGIN_S = 10.0
MIN_SHARE_S = 45.0
#: Options the parent hands on to its workers.
WORKER_OPTIONS = (
    "data_dir",
    "cache",
    "n_points",
    "batch_size",
    "seconds",
    "n_generate",
    "gen_batch_size",
    "seed",
    "mixed_policy",
)


# -- the worker: one backend, in its own process ---------------------------------
def _devices():
    """This backend's accelerators: (count, names); (1, ["CPU"]) without any."""
    from aae_tract.backend import current_backend

    backend = current_backend()
    names = []
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                count = torch.cuda.device_count()
                names = [torch.cuda.get_device_name(i) for i in range(count)]
        elif backend == "jax":
            import jax

            local = jax.local_devices()
            accelerators = [d for d in local if d.platform != "cpu"]
            # host devices count only when forced to several (XLA_FLAGS
            # --xla_force_host_platform_device_count): a CPU test of the row
            if accelerators or len(local) > 1:
                names = [f"{d.device_kind} ({d})" for d in accelerators or local]
        else:
            import tensorflow as tf

            for gpu in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(gpu)
                names.append(details.get("device_name", gpu.name))
    except Exception as exc:  # a broken driver: say so, measure on the CPU
        names = []
        print(f"could not list {backend} devices: {exc}", file=sys.stderr)
    return (len(names), names) if names else (1, ["CPU"])


def _budget_clock(seconds, *, fixed):
    """A Keras callback keeping the epoch end times, stopping after ``seconds``.

    The epochs after the first run until they have taken ``seconds`` (at
    least one of them); with ``fixed`` every epoch asked for runs (each
    process of a torch data-parallel run must stop at the same epoch).
    """
    import keras

    class BudgetClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter())
            steady = self.times[-1] - self.times[1]
            if not fixed and len(self.times) >= 3 and steady >= seconds:
                self.model.stop_training = True

    return BudgetClock()


def _short(exc):
    """One line naming an error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _failure(exc):
    """The status of a row that raised ``exc``."""
    from aae_tract.errors import TrainingError

    text = _short(exc)
    if isinstance(exc, TrainingError) and re.search(r"\b(nan|-?inf)\b", text):
        return "NaN loss: " + text
    return "failed: " + text


def _layers(layer):
    """Every layer inside ``layer``, nested ones included."""
    out = []
    for inner in getattr(layer, "layers", []):
        out += [inner, *_layers(inner)]
    return out


def _set_policy(precision, mixed_policy):
    import keras

    keras.config.set_dtype_policy(mixed_policy if precision == "on" else "float32")


def _train_row(args, train, precision, devices, epochs=None):
    """Build and train one model; (row, model or None)."""
    from aae_tract.model import TractAAE

    n_devices = 1 if devices is None else devices
    row = {
        "kind": "train",
        "precision": precision,
        "policy": args.mixed_policy if precision == "on" else "float32",
        "devices": n_devices,
        "n_train": len(train),
        "batch_size": args.batch_size,
    }
    _set_policy(precision, args.mixed_policy)
    try:
        model = TractAAE.from_dataset(
            train, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed
        )
        options = {}
        if devices is not None:
            # JAX and TensorFlow: one process on all devices; torch: N processes
            options["devices"] = devices if "RANK" in os.environ else "all"
        max_epochs = epochs or args.epochs
        clock = _budget_clock(args.seconds, fixed=epochs is not None)
        history = model.fit(
            train,
            epochs=max_epochs,
            batch_size=args.batch_size,
            verbose=0,
            callbacks=[clock],
            **options,
        )
    except Exception as exc:
        return {**row, "status": _failure(exc)}, None
    finally:
        _set_policy("off", args.mixed_policy)
    times = clock.times
    n_epochs = len(times) - 1
    losses = {k: v[-1] for k, v in history.items() if v and not k.startswith("val_")}
    row.update(
        epochs=n_epochs,
        first_epoch_seconds=times[1] - times[0],
        seconds=times[-1] - times[0],
        steady_seconds=times[-1] - times[1] if n_epochs > 1 else None,
        streamlines_per_s=(
            len(train) * (n_epochs - 1) / (times[-1] - times[1])
            if n_epochs > 1
            else None
        ),
        final_losses=losses,
    )
    layers = _layers(model.network)
    row["mixed_layers"] = sum(
        layer.dtype_policy.name.startswith("mixed") for layer in layers
    )
    row["layers"] = len(layers)
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    row["status"] = f"NaN loss: {', '.join(bad)}" if bad else "ok"
    if precision == "on" and not bad:
        row["status"] += f" ({row['mixed_layers']} of {len(layers)} layers mixed)"
    return row, (None if bad else model)


def _generate_row(args, model, precision):
    """Time ``generate()`` and the decoder alone on ``model``; the row."""
    import numpy as np

    from aae_tract.generate import generate, sample_latent

    n, batch = args.n_generate, args.gen_batch_size
    row = {
        "kind": "generate",
        "precision": precision,
        "policy": args.mixed_policy if precision == "on" else "float32",
        "n": n,
        "batch_size": batch,
        "status": "ok",
    }
    bundle = model.bundle_names[0]
    try:
        # bank sampling, as the documented runs (the default before length
        # models sampled their prior by default)
        options = {"batch_size": batch, "sampling": "bank"}
        generate(model, bundle, n_streamlines=min(batch, n), seed=0, **options)
        start = time.perf_counter()
        result = generate(model, bundle, n_streamlines=n, seed=1, **options)
        row["generate_seconds"] = time.perf_counter() - start
        row["generate_per_s"] = n / row["generate_seconds"]
        finite = bool(np.isfinite(result.streamlines).all())
        del result
        target = model.metadata.bundle_stats[bundle]["attribute"]["p50"]
        z = sample_latent(
            model,
            bundle,
            np.full(n, target),
            sampling="prior",
            exact_length=False,
            rng=2,
        )
        model.decode(z[:batch], bundle, batch_size=batch)
        start = time.perf_counter()
        x = model.decode(z, bundle, batch_size=batch)
        row["decode_seconds"] = time.perf_counter() - start
        row["decode_per_s"] = n / row["decode_seconds"]
        finite = finite and bool(np.isfinite(x).all())
        if not finite:
            row["status"] = "non-finite streamlines"
    except Exception as exc:
        row["status"] = _failure(exc)
    return row


def _emit(backend, payload):
    print(RESULT + json.dumps({"backend": backend, **payload}), flush=True)


def measure(args):
    """Every row of this process's backend, each printed as it is done."""
    from aae_tract.backend import current_backend, describe_device
    from aae_tract.data import load_dataset

    backend = current_backend()
    rank0 = os.environ.get("RANK", "0") == "0"
    n_devices, names = _devices()
    if rank0:
        _emit(
            backend,
            {
                "kind": "device",
                "device": describe_device(),
                "n_devices": n_devices,
                "names": names,
            },
        )
    train = load_dataset(args.data_dir, n_points=args.n_points, cache_dir=args.cache)

    def out_of_time(need=0.0):
        """Whether rows expected to take ``need`` seconds would pass the deadline."""
        return args.deadline is not None and time.time() + need > args.deadline

    def stub(kind, precision, status, devices=1):
        """A row that was not measured, and why."""
        row = {"kind": kind, "precision": precision, "status": status}
        row["policy"] = args.mixed_policy if precision == "on" else "float32"
        if kind == "train":
            return {**row, "devices": devices}
        return {**row, "n": args.n_generate, "batch_size": args.gen_batch_size}

    if args.devices is not None:  # a torch data-parallel process
        for precision in args.precisions:
            row, _ = _train_row(args, train, precision, args.devices, args.epochs)
            if rank0:
                _emit(backend, row)
        return
    epochs, took = {}, 0.0  # took: seconds of the last precision's rows
    for precision in args.precisions:
        start = time.perf_counter()
        if out_of_time(took):
            _emit(backend, stub("train", precision, "skipped: time limit"))
            _emit(backend, stub("generate", precision, "skipped: time limit"))
            continue
        row, model = _train_row(args, train, precision, None)
        epochs[precision] = row.get("epochs")
        _emit(backend, row)
        if model is None:
            _emit(backend, stub("generate", precision, "not run: no trained model"))
        elif out_of_time():
            _emit(backend, stub("generate", precision, "skipped: time limit"))
        else:
            _emit(backend, _generate_row(args, model, precision))
        del model
        took = time.perf_counter() - start
    if n_devices == 1 or backend == "torch":  # torch: the parent runs torchrun
        return
    for precision in args.precisions:  # after every one-device row
        if not epochs.get(precision):
            continue
        if out_of_time():
            multi = stub("train", precision, "skipped: time limit", n_devices)
        else:
            multi, _ = _train_row(
                args, train, precision, n_devices, epochs=epochs[precision]
            )
        _emit(backend, multi)


# -- the parent: data, processes, tables -------------------------------------------
def _prepare_data(args, work):
    """The phantom folder and its dataset cache in ``work`` (made once, reused)."""
    from aae_tract.data import load_dataset
    from aae_tract.data_fetchers import make_phantom

    phantom = Path(work) / "phantom"
    start = time.perf_counter()
    make_phantom(
        phantom,
        n_subjects=args.n_subjects,
        n_per_bundle=args.n_per_bundle,
        seed=args.seed,
    )
    cache = Path(work) / f"cache_{args.n_points}"
    dataset = load_dataset(phantom, n_points=args.n_points, cache_dir=cache)
    return phantom, cache, len(dataset), time.perf_counter() - start


def _worker_command(args, *, epochs=None, precisions=None, extra=()):
    """The command line of a worker process (this script with ``--worker``)."""
    values = {
        **{name: getattr(args, name) for name in WORKER_OPTIONS},
        "epochs": epochs or args.epochs,
    }
    command = [os.path.abspath(__file__), "--worker"]
    for name, value in values.items():
        command += [f"--{name}", str(value)]
    return command + ["--precisions", *(precisions or args.precisions), *extra]


def _run(command, backend, timeout):
    """Run a worker; its result dicts and, when it failed, why."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a timeout ends torchrun's ranks too
    )
    problem = None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        problem = f"stopped after {timeout:.0f} s (time limit)"
    results = [
        json.loads(line[len(RESULT) :])
        for line in (stdout or "").splitlines()
        if line.startswith(RESULT)
    ]
    if problem is None and proc.returncode != 0:
        tail = (stderr or "").strip().splitlines()[-3:]
        problem = f"exit {proc.returncode}: " + " | ".join(tail)
    return results, problem


def _fmt(value, spec):
    """``value`` formatted by ``spec``; a dash as wide for None."""
    if value is None:
        width = "".join(c for c in spec.split(",")[0].split(".")[0] if c.isdigit())
        return "-".rjust(int(width or 0))
    return format(value, spec)


def _of(value, target):
    return "-" if value is None else f"{value / target:.3f}"


def report(rows, devices):
    """Print the device of each backend and the three tables."""
    print("\ndevices:")
    for backend, info in devices.items():
        names = ", ".join(info["names"])
        print(
            f"  {backend:11s}{info['device']}; {info['n_devices']} device(s): {names}"
        )
    print(
        f"\ntraining (streamlines/s after epoch 1; target >= {TRAIN_TARGET:,} on "
        "one H200-class GPU at 256 points)"
    )
    print(
        f"{'backend':11s}{'precision':17s}{'devices':>8s}{'epoch 1 s':>11s}"
        f"{'epochs':>8s}{'streamlines/s':>15s}{'/ target':>10s}"
        f"{'recon loss':>12s}  status"
    )
    for r in (r for r in rows if r["kind"] == "train"):
        speed = r.get("streamlines_per_s")
        recon = r.get("final_losses", {}).get("recon_loss")
        print(
            f"{r['backend']:11s}{r.get('policy', r['precision']):17s}"
            f"{r['devices']:8d}{_fmt(r.get('first_epoch_seconds'), '11.1f')}"
            f"{_fmt(r.get('epochs'), '8d')}{_fmt(speed, '15,.0f')}"
            f"{_of(speed, TRAIN_TARGET):>10s}{_fmt(recon, '12.4g')}  {r['status']}"
        )
    print(
        f"\ngeneration (streamlines/s; target >= {GENERATE_TARGET:,} on one "
        "H200-class GPU at 256 points)"
    )
    print(
        f"{'backend':11s}{'precision':17s}{'n':>9s}{'batch':>7s}"
        f"{'generate()':>12s}{'/ target':>10s}{'decoder':>12s}{'/ target':>10s}"
        "  status"
    )
    for r in (r for r in rows if r["kind"] == "generate"):
        g, d = r.get("generate_per_s"), r.get("decode_per_s")
        print(
            f"{r['backend']:11s}{r.get('policy', r['precision']):17s}{r['n']:9d}"
            f"{r['batch_size']:7d}"
            f"{_fmt(g, '12,.0f')}{_of(g, GENERATE_TARGET):>10s}"
            f"{_fmt(d, '12,.0f')}{_of(d, GENERATE_TARGET):>10s}  {r['status']}"
        )
    print(
        "generate(): aae_tract.generate.generate with its defaults but bank "
        "sampling (exact lengths, texture, tractogram); decoder: "
        "TractAAE.decode of prior codes (mean curves)"
    )
    print(
        f"\nscaling (throughput_all / (N * throughput_1); target >= {SCALING_TARGET})"
    )
    multi = [r for r in rows if r["kind"] == "train" and r["devices"] > 1]
    if not multi:
        print("  not measured: no backend saw more than one device")
    for r in multi:
        one = next(
            (
                o
                for o in rows
                if o["kind"] == "train"
                and o["devices"] == 1
                and o["backend"] == r["backend"]
                and o["precision"] == r["precision"]
            ),
            None,
        )
        s1 = one and one.get("streamlines_per_s")
        sn = r.get("streamlines_per_s")
        eff = sn / (r["devices"] * s1) if s1 and sn else None
        r["scaling_efficiency"] = eff
        print(
            f"  {r['backend']:11s}{r['precision']:5s}{r['devices']} devices: "
            f"{_fmt(s1, ',.0f')} -> {_fmt(sn, ',.0f')} streamlines/s, efficiency "
            f"{_fmt(eff, '.2f')}  {r['status']}"
        )


def _options(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=None,
        help="default: those installed of torch, jax, tensorflow",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a CPU smoke run"
    )
    parser.add_argument("--n_points", type=int, default=None, help="default 256")
    parser.add_argument("--batch_size", type=int, default=None, help="default 2048")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="most epochs per training row (default 30)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="seconds of epochs after the first (default 10)",
    )
    parser.add_argument("--n_subjects", type=int, default=None, help="default 4")
    parser.add_argument(
        "--n_per_bundle",
        type=int,
        default=None,
        help="phantom streamlines per bundle and subject "
        "(default 5000: 120,000 streamlines)",
    )
    parser.add_argument(
        "--n_generate",
        type=int,
        default=None,
        help="streamlines per generation row (default 200,000)",
    )
    parser.add_argument(
        "--gen_batch_size", type=int, default=None, help="default 16384"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="mixed precision off, on",
    )
    parser.add_argument(
        "--mixed_policy",
        default="mixed_bfloat16",
        choices=["mixed_bfloat16", "mixed_float16"],
    )
    parser.add_argument(
        "--time_limit",
        type=float,
        default=None,
        help="seconds for the whole run (default 290; 600 with --quick)",
    )
    parser.add_argument(
        "--work_dir",
        default=None,
        help="keep (and reuse) the phantom and its cache here",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _job_command(args, job, share):
    """The command of a job: a backend's name, or a torch data-parallel tuple."""
    if isinstance(job, str):
        deadline = time.time() + share - MARGIN_S
        return [sys.executable] + _worker_command(
            args, extra=["--deadline", str(deadline)]
        )
    _, n_dev, precision, epochs = job  # torchrun: N processes, one per GPU
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n_dev}",
    ] + _worker_command(
        args, epochs=epochs, precisions=[precision], extra=["--devices", str(n_dev)]
    )


def _expected(args, job, devices):
    """(kind, precision, devices) of every row ``job`` should give."""
    if not isinstance(job, str):
        return [("train", job[2], job[1])]
    rows = [(k, p, 1) for p in args.precisions for k in ("train", "generate")]
    n_dev = devices.get(job, {}).get("n_devices", 1)
    if n_dev > 1 and job != "torch":
        rows += [("train", p, n_dev) for p in args.precisions]
    return rows


def _print_result(r):
    """One line as a row arrives."""
    if r["kind"] == "train":
        speed = _fmt(r.get("streamlines_per_s"), ",.0f")
        print(
            f"   train {r['policy']} x{r['devices']}: {speed} streamlines/s  "
            f"{r['status']}",
            flush=True,
        )
    else:
        print(
            f"   generate {r['policy']}: "
            f"{_fmt(r.get('generate_per_s'), ',.0f')} streamlines/s, decoder "
            f"{_fmt(r.get('decode_per_s'), ',.0f')}  {r['status']}",
            flush=True,
        )


def _run_jobs(args, backends, start):
    """Run every backend's process (and torchrun's); rows, devices, problems."""
    rows, devices, problems = [], {}, {}
    jobs = list(backends)  # then torch data-parallel runs, once its devices are known
    while jobs:
        job = jobs.pop(0)
        backend = job if isinstance(job, str) else job[0]
        left = args.time_limit - (time.time() - start)
        share = max(left / (len(jobs) + 1), MIN_SHARE_S)
        label = backend if isinstance(job, str) else f"{backend} x{job[1]} (torchrun)"
        print(f"-- {label} (up to {share:.0f} s)", flush=True)
        results, problem = _run(_job_command(args, job, share), backend, share)
        got = []
        for result in results:
            if result["kind"] == "device":
                devices[backend] = result
                continue
            rows.append(result)
            got.append(
                (
                    result["kind"],
                    result["precision"],
                    result["devices"] if result["kind"] == "train" else 1,
                )
            )
            _print_result(result)
        if problem:
            problems[label] = problem
            print(f"   {label}: {problem}", flush=True)
        for kind, precision, n_dev in _expected(args, job, devices):
            if (kind, precision, n_dev) not in got:  # the process ended before it
                row = {
                    "backend": backend,
                    "kind": kind,
                    "precision": precision,
                    "policy": args.mixed_policy if precision == "on" else "float32",
                    "devices": n_dev,
                    "n": args.n_generate,
                    "batch_size": args.gen_batch_size,
                    "status": f"no result: {problem or 'not reported'}",
                }
                rows.append(row)
                _print_result(row)
        n_torch = devices.get("torch", {}).get("n_devices", 1)
        if job == "torch" and n_torch > 1:
            for r in rows:
                if r["backend"] == "torch" and r["kind"] == "train" and r.get("epochs"):
                    jobs.append(("torch", n_torch, r["precision"], r["epochs"]))
    return rows, devices, problems


def _benchmark(args, backends, missing, work, start):
    """Make the data in ``work``, run every process, print and write the rows."""
    phantom, cache, n, data_s = _prepare_data(args, work)
    args.data_dir, args.cache = str(phantom), str(cache)
    print(
        f"== phantom: {n:,} streamlines ({args.n_subjects} subjects x 6 bundles x "
        f"{args.n_per_bundle}), {args.n_points} points, made and cached in "
        f"{data_s:.0f} s; batch {args.batch_size}; training rows stop after "
        f"{args.seconds:g} s of epochs after the first (at most {args.epochs} "
        f"epochs); generation of {args.n_generate:,} at batch "
        f"{args.gen_batch_size}; mixed precision: {args.mixed_policy}"
        + ("; --quick (CPU smoke sizes)" if args.quick else "")
    )
    if missing:
        print(f"   not installed, skipped: {', '.join(missing)}")
    rows, devices, problems = _run_jobs(args, backends, start)
    report(rows, devices)
    print(f"\ntotal {time.time() - start:.0f} s")
    if args.out:
        payload = {
            "args": vars(args),
            "devices": devices,
            "rows": rows,
            "problems": problems,
        }
        with open(args.out + ".tmp", "w") as f:
            json.dump(payload, f, indent=2, default=str)
        os.replace(args.out + ".tmp", args.out)
    return 0


def main(argv=None):
    args = _options(argv)
    if args.worker:
        measure(args)
        return 0
    start = time.time()
    backends = args.backends or list(BACKENDS)
    missing = [b for b in backends if importlib.util.find_spec(b) is None]
    backends = [b for b in backends if b not in missing]
    if not backends:
        raise SystemExit(f"not installed: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="aae_tract_gpu_") as tmp:
        return _benchmark(args, backends, missing, args.work_dir or tmp, start)


if __name__ == "__main__":
    sys.exit(main())
