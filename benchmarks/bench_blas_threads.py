"""BLAS threads and the fitted mixture prior's refit: what holding them buys.

Every epoch the fitted mixture prior refits each bundle's mixture to a
sample of its codes (``FittedMixturePrior.fit_codes``, at most
``PRIOR_FIT_PER_BUNDLE`` codes a bundle). Its products are small (codes x 32),
and NumPy's BLAS starts one thread per core when it loads. This benchmark
times the refit of ``--bundles`` bundles of ``--codes`` codes each (synthetic
codes of 32 dimensions drawn from a mixture of elongated blobs; the prior's
defaults: 32 components, at least 32 codes each) and prints the seconds of
each setting (median over ``--rounds``) and its ratio to the first:

- ``FIT_THREADS = 1`` (the default: the refit holds BLAS to one thread);
- ``FIT_THREADS = None`` (no limit: BLAS's own pool);
- two processes at once, each pinned to one CPU as ``quality.py --jobs 2``
  pins its workers, with ``FIT_THREADS = None``: the environment as given
  (without :func:`quality.worker_environment`), then as it sizes it. A
  worker's row is the slower worker's seconds.

Every timing follows an untimed refit of one bundle in the same process
(imports and first calls). The in-process settings alternate within each
round, so drift in the machine's speed reaches both. It also prints how far
the mixtures fitted with one thread and with the pool differ (largest
difference of the components' means and weights). Run it with no
``*_NUM_THREADS`` variable set.

Usage::

    python benchmarks/bench_blas_threads.py
    python benchmarks/bench_blas_threads.py --codes 800 --rounds 3
"""

import argparse
import os
import subprocess
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality import worker_environment  # noqa: E402


def make_codes(n_codes, seed, dims=32, blobs=10):
    """Codes drawn from ``blobs`` elongated Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (blobs, dims))
    shapes = rng.normal(0, 0.3, (blobs, dims, dims))
    which = rng.integers(blobs, size=n_codes)
    noise = rng.standard_normal((n_codes, dims))
    return centres[which] + np.einsum("nd,nde->ne", noise, shapes[which])


def refit(n_bundles, n_codes, threads):
    """One refit of every bundle with ``FIT_THREADS = threads``.

    Returns
    -------
    seconds : float
        Time of the refit (after an untimed refit of bundle 0).
    fits : list of (means, chols, weights)
        The mixtures fitted.
    """
    from aae_tract.model.priors import FittedMixturePrior, make_prior

    prior = make_prior("fitted_mixture", 32, n_components=32, n_bundles=n_bundles)
    codes = [make_codes(n_codes, seed=b) for b in range(n_bundles)]
    saved = FittedMixturePrior.FIT_THREADS
    FittedMixturePrior.FIT_THREADS = threads
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prior.fit_codes(codes[0], 0, fit_index=0)  # untimed: first calls
            start = time.perf_counter()
            fits = [prior.fit_codes(codes[b], b, fit_index=0) for b in range(n_bundles)]
            seconds = time.perf_counter() - start
    finally:
        FittedMixturePrior.FIT_THREADS = saved
    if any(f is None for f in fits):
        raise SystemExit("a bundle's refit failed")
    return seconds, fits


def two_workers(args, *, sized):
    """Wall seconds of two pinned worker processes' refits, started at once."""
    procs = []
    for cpu in sorted(os.sched_getaffinity(0))[:2]:
        env = worker_environment(1) if sized else dict(os.environ)
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            str(cpu),
            "--codes",
            str(args.codes),
            "--bundles",
            str(args.bundles),
        ]
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    seconds = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            tail = "\n".join(err.strip().splitlines()[-5:])
            raise SystemExit(f"a worker failed ({proc.returncode}):\n{tail}")
        seconds.append(float(out.strip().splitlines()[-1]))
    return max(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=2000, help="codes a bundle")
    parser.add_argument("--bundles", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        os.sched_setaffinity(0, {args.worker})  # after NumPy, as quality.py
        print(refit(args.bundles, args.codes, None)[0], flush=True)
        return
    given = sorted(k for k in os.environ if k.endswith("_NUM_THREADS"))
    cpus = len(os.sched_getaffinity(0))
    print(
        f"{cpus} CPUs; *_NUM_THREADS set: {', '.join(given) or 'none'}; "
        f"{args.bundles} bundles x {args.codes} codes, {args.rounds} rounds"
    )
    rows = {
        "FIT_THREADS = 1 (default)": [],
        "FIT_THREADS = None (no limit)": [],
    }
    if cpus >= 2:
        rows["2 workers at once, environment as given"] = []
        rows["2 workers at once, sized (worker_environment)"] = []
    gap = 0.0
    for _ in range(args.rounds):
        seconds, held = refit(args.bundles, args.codes, 1)
        rows["FIT_THREADS = 1 (default)"].append(seconds)
        seconds, pooled = refit(args.bundles, args.codes, None)
        rows["FIT_THREADS = None (no limit)"].append(seconds)
        for (m1, _, w1), (m2, _, w2) in zip(held, pooled):
            gap = max(gap, float(np.abs(m1 - m2).max()), float(np.abs(w1 - w2).max()))
        if cpus >= 2:
            rows["2 workers at once, environment as given"].append(
                two_workers(args, sized=False)
            )
            rows["2 workers at once, sized (worker_environment)"].append(
                two_workers(args, sized=True)
            )
    base = float(np.median(rows["FIT_THREADS = 1 (default)"]))
    print("one refit of every bundle, median seconds (ratio to the first row):")
    for name, values in rows.items():
        median = float(np.median(values))
        print(f"  {name:46s} {median:7.2f} s  x{median / base:.2f}")
    print(
        "largest difference between the mixtures fitted with one thread and "
        f"with no limit (means, weights): {gap:.2e}"
    )


if __name__ == "__main__":
    main()
