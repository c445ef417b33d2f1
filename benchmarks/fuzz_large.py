"""Long fuzz run of the tractogram loader: the suites of tests/test_fuzz.py, bigger.

Runs every fuzz suite of ``tests/test_fuzz.py`` (mutated real and generated
files, random bytes, absurd TrackVis header fields, absurd .tck headers,
NaN/inf/empty/single-point streamlines, broken reference images) with many
more cases than CI does, and prints the outcomes per suite. A case that breaks
a rule (crash, hang, silently wrong load) is counted as ``violation:<rule>``
and its file is kept in ``--keep`` for reproduction; the run carries on.

Usage::

    python benchmarks/fuzz_large.py                 # 50,000 cases
    python benchmarks/fuzz_large.py --cases 200000 --random --json fuzz.json

Exit status 1 when any violation was seen.
"""

import argparse
import faulthandler
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = (
    "test_fuzz_mutated_files",
    "test_fuzz_random_bytes",
    "test_fuzz_trk_header_fields",
    "test_fuzz_tck_header",
    "test_fuzz_streamline_content",
    "test_fuzz_reference_image",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", type=int, default=50_000, help="cases in all (split over suites)"
    )
    parser.add_argument(
        "--random",
        action="store_true",
        help="draw new cases (default: the same cases every run)",
    )
    parser.add_argument("--json", type=Path, help="write the counts to this file")
    parser.add_argument(
        "--keep",
        type=Path,
        default=Path("fuzz_violations"),
        help="folder for files that broke a rule",
    )
    parser.add_argument(
        "--suite", action="append", choices=SUITES, help="run only these suites"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    suites = args.suite or list(SUITES)
    per_suite = max(1, args.cases // len(suites))
    # read by tests/test_fuzz.py when its settings are built, at import
    os.environ["AAE_TRACT_FUZZ_EXAMPLES"] = str(per_suite)
    if args.random:
        os.environ["AAE_TRACT_FUZZ_RANDOM"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE.parent / "tests"))
    import test_fuzz

    # quiet: nibabel/dipy complaints about the broken files go nowhere, and
    # aae_tract's skipped-streamline warnings only reach the handler that
    # test_fuzz attaches to count them
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger().setLevel(logging.CRITICAL)  # trx logs on the root logger
    for name in ("nibabel", "nibabel.global", "dipy", "trx"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    library = logging.getLogger("aae_tract")
    library.setLevel(logging.WARNING)
    library.propagate = False
    library.addHandler(logging.NullHandler())
    warnings.simplefilter("ignore")
    test_fuzz.COLLECT_VIOLATIONS = args.keep.resolve()
    rows = []
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aae_fuzz_large_") as folder:
        workdir = Path(folder)
        (workdir / "ref.nii").write_bytes(test_fuzz.reference_bytes())
        for name in suites:
            before = Counter(test_fuzz.OUTCOMES)
            start = time.perf_counter()
            faulthandler.dump_traceback_later(max(600, per_suite), exit=True)
            getattr(test_fuzz, name)(workdir=workdir)
            faulthandler.cancel_dump_traceback_later()
            seconds = time.perf_counter() - start
            counts = Counter(test_fuzz.OUTCOMES) - before
            total = sum(counts.values())
            for (suite, outcome), n in sorted(counts.items()):
                rows.append({"suite": suite, "outcome": outcome, "cases": n})
            print(
                f"{name}: {total} cases in {seconds:.1f} s "
                f"({total / max(seconds, 1e-9):.0f}/s)",
                flush=True,
            )
    seconds = time.perf_counter() - start_all
    total = sum(r["cases"] for r in rows)
    print()
    print(f"{'suite':<22} {'outcome':<28} {'cases':>8}")
    for row in rows:
        print(f"{row['suite']:<22} {row['outcome']:<28} {row['cases']:>8}")
    by_outcome = Counter()
    for row in rows:
        by_outcome[row["outcome"].split(":")[0]] += row["cases"]
    print()
    for outcome, n in sorted(by_outcome.items()):
        print(f"{outcome:<22} {n:>8}")
    print(f"{'total':<22} {total:>8}  ({seconds:.0f} s)")
    violations = by_outcome.get("violation", 0)
    if violations:
        print(f"{violations} violations; their files are in {args.keep}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cases": total,
                    "seconds": round(seconds, 1),
                    "random": args.random,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
