"""Reading .trk files: aae_tract's plain-.trk reader against DIPY and nibabel.

:mod:`aae_tract.trk` reads plain ``.trk`` bodies itself (one vectorised pass
over the point counts) and leans on nibabel internals to do so. The rule for
keeping such code: at least 2x over DIPY's ``load_tractogram`` on a
representative input, measured in the same run. This script measures it.

Readers, each reading every file of an input in RAS+ mm:

- ``plain``: :func:`aae_tract.trk.read_plain_trk` alone;
- ``dipy``: ``dipy.io.streamline.load_tractogram(path, "same")`` without the
  bounding-box and header checks, as aae_tract calls it;
- ``nibabel``: ``nibabel.streamlines.load(path)`` (no StatefulTractogram);
- ``load_bundle``: :func:`aae_tract.io.load_bundle`, the library end to end
  (reader plus the count, space and finite-coordinate checks);
- ``load_bundle_dipy``: the same with the plain reader switched off, so every
  file goes through ``load_tractogram``.

End to end, ``load_dataset`` (read, measure, resample to 256 points, orient;
no cache) runs with and without the plain reader.

The variants take turns in each round (the order rotates), so a machine that
slows down during the run slows all of them. Printed: each variant's median
seconds per round, and its time over the first variant's, pair by pair
(median, min, max over the rounds).

Usage::

    python benchmarks/bench_trk.py                      # phantom + minimal_bundles
    python benchmarks/bench_trk.py --per-bundle 100 2000 --rounds 7 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np


@contextlib.contextmanager
def _plain_reader_off():
    """Send every .trk through DIPY's load_tractogram inside the block."""
    import aae_tract.io

    with mock.patch.object(aae_tract.io, "read_plain_trk", lambda path: None):
        yield


def _read_plain(path):
    from aae_tract.trk import read_plain_trk

    return read_plain_trk(path)


def _read_dipy(path):
    from dipy.io.streamline import load_tractogram

    return load_tractogram(
        str(path), "same", bbox_valid_check=False, trk_header_check=False
    )


def _read_nibabel(path):
    return nib.streamlines.load(str(path)).streamlines


def _load_bundle(path):
    from aae_tract.io import load_bundle

    return load_bundle(path)


def _load_bundle_dipy(path):
    with _plain_reader_off():
        return _load_bundle(path)


READERS = {
    "plain": _read_plain,
    "dipy": _read_dipy,
    "nibabel": _read_nibabel,
    "load_bundle": _load_bundle,
    "load_bundle_dipy": _load_bundle_dipy,
}


def _points(result):
    if not isinstance(result, nib.streamlines.ArraySequence):
        result = result.streamlines
    return result.get_data()


def check_same(files):
    """Every reader gives the points DIPY gives (to 1e-4 mm)."""
    for path in files:
        expected = _points(_read_dipy(path))
        for name, read in READERS.items():
            got = _points(read(path))
            if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
                raise AssertionError(f"{name} reads {path} differently from DIPY")


def time_rounds(variants, rounds):
    """Seconds of each variant (a callable) per round, in rotating order.

    Returns
    -------
    dict of str to list of float
    """
    names = list(variants)
    times = {name: [] for name in names}
    for name in names:  # warm-up: imports, header parses, page cache
        variants[name]()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times, n_streamlines):
    """Median seconds, streamlines/s, and time over the first variant's."""
    first = np.asarray(next(iter(times.values())))
    rows = {}
    for name, values in times.items():
        paired = np.asarray(values) / first
        rows[name] = {
            "median_s": float(np.median(values)),
            "streamlines_per_s": float(n_streamlines / np.median(values)),
            "ratio_median": float(np.median(paired)),
            "ratio_min": float(paired.min()),
            "ratio_max": float(paired.max()),
        }
    return rows


def print_rows(title, rows):
    print(title)
    base = next(iter(rows))
    for name, row in rows.items():
        rate = row["streamlines_per_s"]
        print(
            f"  {name:<17}{row['median_s'] * 1e3:9.1f} ms {rate:>9.0f} streamlines/s"
            f"   time / {base}: {row['ratio_median']:5.2f} "
            f"(min {row['ratio_min']:.2f}, max {row['ratio_max']:.2f})"
        )


def bench_input(label, files, rounds):
    """Readers on every file, then load_dataset with and without the reader."""
    from aae_tract.data import load_dataset

    check_same(files)
    n = sum(len(_read_plain(path)) for path in files)
    readers = {
        name: (lambda read=read: [read(path) for path in files])
        for name, read in READERS.items()
    }
    reading = summarise(time_rounds(readers, rounds), n)
    root = files[0].parent.parent

    def dataset_dipy():
        with _plain_reader_off():
            load_dataset(root)

    datasets = {"load_dataset": lambda: load_dataset(root), "dipy": dataset_dipy}
    end_to_end = summarise(time_rounds(datasets, rounds), n)
    head = f"{label}: {len(files)} files, {n} streamlines, {rounds} rounds"
    print_rows(f"{head}\n reading", reading)
    print_rows(" load_dataset (read, resample to 256 points, orient)", end_to_end)
    return {
        "input": label,
        "files": len(files),
        "streamlines": n,
        "reading": reading,
        "load_dataset": end_to_end,
    }


def phantom_files(folder, per_bundle, seed=0):
    """The .trk files of the default phantom with ``per_bundle`` streamlines."""
    from aae_tract.data_fetchers import make_phantom

    make_phantom(folder, n_per_bundle=per_bundle, seed=seed)
    return sorted(Path(folder).glob("*/*.trk"))


def minimal_bundles_files(folder):
    """DIPY's shipped minimal_bundles, extracted (<subject>/<BUNDLE>.trk)."""
    from dipy.data import get_fnames

    with zipfile.ZipFile(get_fnames(name="minimal_bundles")) as archive:
        archive.extractall(folder)
    return sorted(Path(folder).glob("*/*.trk"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-bundle",
        type=int,
        nargs="+",
        default=[100, 2000],
        help="phantom sizes: streamlines per bundle and subject (4 x 6 files)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="aae_bench_trk_") as tmp:
        tmp = Path(tmp)
        inputs = [("minimal_bundles", minimal_bundles_files(tmp / "minimal"))]
        for n in args.per_bundle:
            files = phantom_files(tmp / f"phantom_{n}", n)
            inputs.append((f"phantom, {n} per bundle", files))
        for label, files in inputs:
            results.append(bench_input(label, files, args.rounds))
    gains = [r["reading"]["dipy"]["ratio_median"] for r in results]
    print(
        "plain reader over DIPY's load_tractogram: "
        + ", ".join(f"{g:.1f}x" for g in gains)
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
