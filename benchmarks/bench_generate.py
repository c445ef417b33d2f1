"""Generation speed benchmark (streamlines per second).

Measures :func:`aae_tract.generate.generate` end to end (latent sampling,
calibration, batched decoding, length measurement, tractogram) for both
samplings, with and without the plausibility filter, at several request sizes
and batch sizes, on the device Keras uses (CPU, or GPU when there is one).

Without ``--model`` a model of the default architecture is trained for one
epoch on the embedded default (speed does not depend on training; the filter's
acceptance rate does, so give a trained ``--model`` for filter numbers that
mean something).

Usage::

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --model aae_tract_model.keras --n 100000
    KERAS_BACKEND=torch python benchmarks/bench_generate.py --out speed.json
"""

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def quick_model(n_points):
    """Default-architecture model, one epoch on the embedded default."""
    from aae_tract.data import load_dataset
    from aae_tract.model import TractAAE

    dataset = load_dataset(None, n_points=n_points)
    model = TractAAE.from_dataset(dataset, epochs=1)
    model.fit(dataset, verbose=0)
    return model


def timed(fn, repeat, **kwargs):
    """Best wall time of ``fn(**kwargs)`` over ``repeat`` runs, and its result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(**kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="trained .keras model (default: quick one)")
    parser.add_argument("--n_points", type=int, default=256)
    parser.add_argument(
        "--n", type=int, nargs="+", default=[100, 1000, 10000], help="request sizes"
    )
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from aae_tract.backend import current_backend, describe_device
    from aae_tract.generate import generate
    from aae_tract.model import TractAAE

    model = TractAAE.load(args.model) if args.model else quick_model(args.n_points)
    bundle = model.bundle_names[0]
    target = model.metadata.bundle_stats[bundle]["attribute"]["p50"]
    kwargs = {"length": target} if model.attribute_name == "length" else {}
    if not kwargs:
        kwargs = {"attribute": target}
    print(
        f"{describe_device()}; model: {model.n_points} points, latent "
        f"{model.latent_dims}, bundle {bundle} at {model.attribute_name} {target:.1f}"
    )
    generate(model, bundle, n_streamlines=8, seed=0, **kwargs)  # warm up

    rows = []
    exact_options = (True, False) if model.attribute_name == "length" else (True,)
    for sampling in ("bank", "prior"):
        for n in args.n:
            for batch_size in args.batch_sizes:
                for exact in exact_options:
                    seconds, _ = timed(
                        generate,
                        args.repeat,
                        model=model,
                        bundle=bundle,
                        n_streamlines=n,
                        seed=0,
                        sampling=sampling,
                        batch_size=batch_size,
                        exact_length=exact,
                        **kwargs,
                    )
                    rows.append(
                        {
                            "sampling": sampling,
                            "filter": False,
                            "exact_length": exact,
                            "n": n,
                            "batch_size": batch_size,
                            "seconds": seconds,
                            "streamlines_per_s": n / seconds,
                        }
                    )
                    print(
                        f"{sampling:5s} n={n:<7d} batch={batch_size:<5d} "
                        f"exact_length={exact!s:<5s} {seconds:8.3f} s  "
                        f"{n / seconds:10.0f} streamlines/s",
                        flush=True,
                    )
        n = min(args.n[-1], 10000)
        try:
            seconds, result = timed(
                generate,
                1,
                model=model,
                bundle=bundle,
                n_streamlines=n,
                seed=0,
                sampling=sampling,
                filter=True,
                max_tries=10,
                **kwargs,
            )
            rate = result.acceptance_rate
        except Exception as exc:  # a poorly trained model may keep nothing
            print(f"{sampling:5s} filtered: {exc}")
            continue
        rows.append(
            {
                "sampling": sampling,
                "filter": True,
                "n": n,
                "batch_size": 1024,
                "seconds": seconds,
                "streamlines_per_s": n / seconds,
                "acceptance_rate": rate,
            }
        )
        print(
            f"{sampling:5s} n={n:<7d} filtered   {seconds:8.3f} s  "
            f"{n / seconds:10.0f} streamlines/s (acceptance {rate:.1%})",
            flush=True,
        )
    if args.out:
        payload = {
            "backend": current_backend(),
            "device": describe_device(),
            "n_points": model.n_points,
            "latent_dims": model.latent_dims,
            "rows": rows,
        }
        with open(args.out + ".tmp", "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
