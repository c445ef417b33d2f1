"""Side by side: the targets of several ``quality.py --out`` runs, per bundle.

``quality.py`` prints one run's means; the targets that decide between two
settings are often per bundle: ``prior_match`` against each bundle's own
reference (the training codes against the held-out ones) and
``band_precision`` in every length band. This script reads the JSON files
that ``quality.py --out`` wrote and prints, for each run and sampling, each
bundle's ``prior_match`` minus its reference (unrounded, so that a miss by
less than 0.001 shows), the length bands under their lowest allowed
difference, and the run's mean novelty, shape similarity, reconstruction
and training time. Nothing is trained or evaluated again.

Usage::

    python benchmarks/compare_quality.py td.json f64.json f64b.json
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import quality  # noqa: E402

#: Run-level means printed for each run and sampling.
MEANS = ("novelty_ratio", "shape_similarity", "recon_mdf_mm", "recon_vs_plain")


def read_run(path):
    """The payload of one ``quality.py --out`` file, with a clear error for a
    file that is not one."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: not a quality.py JSON file ({err})") from None
    keys = ("summary", "train_vs_held_out_runs", "band_reference_se")
    missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise SystemExit(
            f"{path}: not a quality.py --out file (missing {', '.join(missing)})"
        )
    return payload


def samplings(payload):
    """The samplings a run measured, in :data:`quality.SAMPLINGS` order."""
    return [s for s in quality.SAMPLINGS if s in payload["summary"]]


def prior_match_over(payload, sampling):
    """Bundle -> ``prior_match`` minus its train-vs-held-out reference (mean
    over seeds; None where either is missing)."""
    values = payload["summary"][sampling]["per_bundle_mean"].get("prior_match", {})
    refs = quality.bundle_references(payload["train_vs_held_out_runs"]).get(
        "prior_match", {}
    )
    return {
        b: None if v is None or refs.get(b) is None else v - refs[b]
        for b, v in values.items()
    }


def band_misses(payload, sampling):
    """``(bundle, band, difference, lowest allowed)`` of every length band
    under its lowest allowed difference (:func:`quality.band_tolerance`)."""
    bound = quality.TARGETS["band_precision"][1]
    se = payload["band_reference_se"]
    out = []
    for bundle, row in quality.band_gaps(payload["summary"][sampling]).items():
        for k, gap in enumerate(row):
            low = quality.band_tolerance(bound, se, bundle, k)
            if gap is not None and gap < low:
                out.append((bundle, k + 1, gap, low))
    return out


def compare(paths):
    """The text of the comparison of the runs in ``paths``."""
    stems = [Path(p).stem for p in paths]
    names = stems if len(set(stems)) == len(stems) else [str(p) for p in paths]
    if len(set(names)) < len(names):
        raise SystemExit("compare_quality.py: the same file given twice")
    runs = {name: read_run(p) for name, p in zip(names, paths)}
    margin = quality.PRIOR_MATCH_MARGIN
    bundles = sorted(
        {
            b
            for payload in runs.values()
            for s in samplings(payload)
            for b in prior_match_over(payload, s)
        }
    )
    head = ["run", "sampling", *bundles, f"over +{margin}"]
    rows = []
    for name, payload in runs.items():
        for s in samplings(payload):
            over = prior_match_over(payload, s)
            cells = [
                "n/a" if over.get(b) is None else f"{over[b]:+.4f}" for b in bundles
            ]
            worse = [b for b in bundles if over.get(b) is not None and over[b] > margin]
            rows.append([name, s, *cells, " ".join(worse) or "none"])
    text = [
        quality._render(
            [
                "prior_match minus its reference (training codes against the "
                "held-out ones), per bundle, mean over seeds"
            ],
            head,
            rows,
        )
    ]
    rows = []
    for name, payload in runs.items():
        for s in samplings(payload):
            misses = band_misses(payload, s)
            rows.append(
                [
                    name,
                    s,
                    str(len(misses)),
                    "; ".join(
                        f"{b} {k} {g:+.4f} (>= {low:+.4f})" for b, k, g, low in misses
                    )
                    or "-",
                ]
            )
    text.append(
        quality._render(
            ["\nlength bands under their lowest allowed difference"],
            ["run", "sampling", "missed", "bundle, band: difference (allowed)"],
            rows,
        )
    )
    rows = []
    for name, payload in runs.items():
        seconds = payload.get("train_seconds") or []
        for s in samplings(payload):
            means = payload["summary"][s]["mean"]
            sd = payload["summary"][s].get("sd", {})
            cells = [
                "n/a"
                if means.get(m) is None
                else f"{means[m]:.3f}"
                if sd.get(m) is None
                else quality._fmt(means[m], sd[m])
                for m in MEANS
            ]
            passed = payload.get("passed", {}).get(s, {})
            missed = [m for m, ok in passed.items() if ok is False]
            rows.append(
                [
                    name,
                    s,
                    *cells,
                    f"{np.mean(seconds):.0f}" if seconds else "n/a",
                    " ".join(missed) or "none",
                ]
            )
    text.append(
        quality._render(
            ["\nmeans over seeds (mean +/- sd); targets missed"],
            ["run", "sampling", *MEANS, "training s/seed", "targets missed"],
            rows,
        )
    )
    return "\n".join(text)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", help="JSON files of quality.py --out")
    args = parser.parse_args(argv)
    print(compare(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
