"""Benchmark of the streamline data pipeline (aae_tract.io / aae_tract.data).

Measures, on a synthetic phantom (``aae_tract.data_fetchers.make_phantom`` when
available, else straight-ish .trk bundles written here with nibabel):

(a) load + resample throughput of ``load_dataset`` (which also checks, measures,
    labels and orients the streamlines) against plain ``nibabel.streamlines.load``
    + DIPY ``set_number_of_points`` over the same files in the same run;
(b) second run from the on-disk cache against the first run;
(c) peak memory of building the cache for a large dataset, and of reopening
    it (memory-mapped) and streaming over it in batches, compared with the
    size of the resampled array: ru_maxrss of a fresh process (which counts
    the memmap's file pages as they are read) and the tracemalloc heap peak
    (the memory the process itself allocates).

Run ``python benchmarks/bench_data.py --help`` for the options. Defaults finish
in well under a minute; ``--n-streamlines 1000000`` is the full-size memory run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_peak_mib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def _rss_now_mib():
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def make_data(out_dir, n_streamlines, *, n_subjects=4, seed=0):
    """Write about ``n_streamlines`` streamlines as <subject>/<BUNDLE>.trk."""
    out_dir = Path(out_dir)
    try:
        from aae_tract.data_fetchers import make_phantom
    except ImportError:
        make_phantom = None
    if make_phantom is not None:
        n_bundles = 6
        per_bundle = max(1, int(round(n_streamlines / (n_subjects * n_bundles))))
        try:
            return make_phantom(
                out_dir, n_subjects=n_subjects, n_per_bundle=per_bundle, seed=seed
            )
        except Exception as exc:  # report and measure on simple bundles instead
            print(
                f"make_phantom failed ({type(exc).__name__}: {exc}); "
                "writing simple bundles instead"
            )
            shutil.rmtree(out_dir, ignore_errors=True)
    return _write_simple_bundles(out_dir, n_streamlines, n_subjects, seed)


def _write_simple_bundles(out_dir, n_streamlines, n_subjects, seed):
    import nibabel as nib

    rng = np.random.default_rng(seed)
    bundles = {"ARC": 1.0, "LINE": 0.0, "HOOK": 2.5}
    per_file = max(1, n_streamlines // (n_subjects * len(bundles)))
    for s in range(1, n_subjects + 1):
        folder = out_dir / f"sub-{s:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, bend in bundles.items():
            n_pts = rng.integers(40, 160, size=per_file)
            streamlines = []
            for n in n_pts:
                t = np.linspace(0, 1, n)[:, None]
                angle = bend * np.pi * t
                pts = np.hstack(
                    [60 * np.sin(angle + 1e-3) / max(bend, 1e-3), 60 * t, np.cos(angle)]
                )
                pts += rng.normal(0, 1, size=(1, 3)) + rng.normal(0, 0.2, pts.shape)
                streamlines.append(pts.astype(np.float32))
            tractogram = nib.streamlines.Tractogram(
                streamlines, affine_to_rasmm=np.eye(4)
            )
            nib.streamlines.save(tractogram, str(folder / f"{name}.trk"))
    return out_dir


def _baseline(files, n_points):
    import nibabel as nib
    from dipy.tracking.streamline import set_number_of_points

    total = 0
    for path in files:
        streamlines = nib.streamlines.load(str(path)).streamlines
        resampled = set_number_of_points(streamlines, nb_points=n_points)
        total += len(resampled)
    return total


def bench_throughput(root, n_points, repeats):
    from aae_tract.data import load_dataset
    from aae_tract.io import find_bundles

    files = [f.path for f in find_bundles(root)]
    best_base, best_pipe = np.inf, np.inf
    n_base = n_pipe = 0
    for _ in range(repeats):
        start = time.perf_counter()
        n_base = _baseline(files, n_points)
        best_base = min(best_base, time.perf_counter() - start)
        start = time.perf_counter()
        n_pipe = len(load_dataset(root, n_points=n_points))
        best_pipe = min(best_pipe, time.perf_counter() - start)
    base_rate, pipe_rate = n_base / best_base, n_pipe / best_pipe
    return {
        "files": len(files),
        "streamlines": n_pipe,
        "n_points": n_points,
        "baseline_streamlines_per_s": round(base_rate, 1),
        "pipeline_streamlines_per_s": round(pipe_rate, 1),
        "ratio_pipeline_over_baseline": round(pipe_rate / base_rate, 3),
    }


def bench_cache(root, n_points, cache_dir):
    from aae_tract.data import load_dataset

    shutil.rmtree(cache_dir, ignore_errors=True)
    start = time.perf_counter()
    first = load_dataset(root, n_points=n_points, cache_dir=cache_dir)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = load_dataset(root, n_points=n_points, cache_dir=cache_dir)
    second_s = time.perf_counter() - start
    assert len(first) == len(second)
    return {
        "streamlines": len(second),
        "first_run_s": round(first_s, 4),
        "cached_run_s": round(second_s, 4),
        "speedup": round(first_s / second_s, 1),
        "x_is_memmap": isinstance(second.x, np.memmap),
    }


def _child(args):
    """Run in a fresh process so ru_maxrss belongs to one step only."""
    import tracemalloc

    import aae_tract.data as data  # noqa: F401  (imports before the baseline)
    from aae_tract.data import Normalizer, load_dataset

    before = _rss_peak_mib()
    tracemalloc.start()
    start = time.perf_counter()
    ds = load_dataset(args.root, n_points=args.n_points, cache_dir=args.cache_dir)
    seconds = time.perf_counter() - start
    result = {
        "step": args.child,
        "streamlines": len(ds),
        "seconds": round(seconds, 2),
        "x_mib": round(ds.x.nbytes / 2**20, 1),
        "x_is_memmap": isinstance(ds.x, np.memmap),
        "rss_peak_before_mib": round(before, 1),
    }
    if args.child == "reuse":
        # what training does: stream over the data in shuffled batches
        start = time.perf_counter()
        norm = Normalizer().fit(ds.x)
        order = np.random.default_rng(0).permutation(len(ds))
        checksum = 0.0
        for i in range(0, len(order), 4096):
            batch = norm.transform(ds.x[np.sort(order[i : i + 4096])])
            checksum += float(batch[:, 0, 0].sum())
        result["stream_epoch_s"] = round(time.perf_counter() - start, 2)
    result["heap_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    tracemalloc.stop()
    result["rss_peak_mib"] = round(_rss_peak_mib(), 1)
    result["rss_now_mib"] = round(_rss_now_mib(), 1)
    result["rss_peak_increase_mib"] = round(result["rss_peak_mib"] - before, 1)
    print(json.dumps(result))


def bench_memory(root, n_points, cache_dir):
    shutil.rmtree(cache_dir, ignore_errors=True)
    results = []
    for step in ("build", "reuse"):
        command = [
            sys.executable,
            __file__,
            "--child",
            step,
            "--root",
            str(root),
            "--cache-dir",
            str(cache_dir),
            "--n-points",
            str(n_points),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory step {step} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n-streamlines",
        type=int,
        default=100_000,
        help="size of the large dataset for the memory step (c) (default 100000; "
        "the issue's full size is 1000000)",
    )
    parser.add_argument(
        "--n-throughput",
        type=int,
        default=12_000,
        help="streamlines for the throughput and cache steps (a, b)",
    )
    parser.add_argument("--n-points", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for (a)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep data here (default: temp)"
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip step (c)")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="aae_bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        start = time.perf_counter()
        small = make_data(work / "small", args.n_throughput)
        print(f"wrote the small dataset in {time.perf_counter() - start:.1f} s")
        results["throughput"] = bench_throughput(small, args.n_points, args.repeats)
        r = results["throughput"]
        print(
            f"(a) load+resample, {r['streamlines']} streamlines in {r['files']} files, "
            f"{r['n_points']} points:\n"
            f"    nibabel load + set_number_of_points: "
            f"{r['baseline_streamlines_per_s']:>10.0f} streamlines/s\n"
            f"    aae_tract load_dataset:              "
            f"{r['pipeline_streamlines_per_s']:>10.0f} streamlines/s\n"
            f"    ratio pipeline/baseline: {r['ratio_pipeline_over_baseline']:.2f}"
        )
        results["cache"] = bench_cache(small, args.n_points, work / "cache_small")
        r = results["cache"]
        print(
            f"(b) cache: first run {r['first_run_s']:.3f} s, second run "
            f"{r['cached_run_s']:.4f} s, speedup {r['speedup']:.0f}x "
            f"(memmap: {r['x_is_memmap']})"
        )
        if not args.skip_memory:
            start = time.perf_counter()
            big = make_data(work / "big", args.n_streamlines)
            print(f"wrote the large dataset in {time.perf_counter() - start:.1f} s")
            results["memory"] = bench_memory(big, args.n_points, work / "cache_big")
            for r in results["memory"]:
                line = (
                    f"(c) {r['step']:>5}: {r['streamlines']} streamlines, x "
                    f"{r['x_mib']:.0f} MiB on disk, {r['seconds']:.1f} s, peak RSS "
                    f"{r['rss_peak_mib']:.0f} MiB (+{r['rss_peak_increase_mib']:.0f} "
                    f"MiB over imports; file pages of the memmap count in RSS), "
                    f"heap peak {r['heap_peak_mib']:.0f} MiB (tracemalloc), "
                    f"memmap: {r['x_is_memmap']}"
                )
                if "stream_epoch_s" in r:
                    line += f", one batched pass {r['stream_epoch_s']:.1f} s"
                print(line)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
