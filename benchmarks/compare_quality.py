"""Side by side: the targets of several ``quality.py --out`` runs, per bundle.

``quality.py`` prints one run's means; the targets that decide between two
settings are often per bundle: ``prior_match`` against each bundle's own
reference (the training codes against the held-out ones) and
``band_precision`` in every length band. This script reads the JSON files
that ``quality.py --out`` wrote and prints, for each run and sampling, each
bundle's ``prior_match`` minus its reference to four decimals (a miss by
less than 0.001 shows), the length bands under their lowest allowed
difference, and the run's mean novelty, shape similarity, reconstruction
and training time, with the targets the run missed. Each run is judged by
the targets its own file recorded. Nothing is trained or evaluated again.

Usage::

    python benchmarks/compare_quality.py td.json f64.json
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
    """Read one ``quality.py --out`` file.

    Parameters
    ----------
    path : str or Path
        The JSON file.

    Returns
    -------
    dict
        Its payload.

    Raises
    ------
    SystemExit
        With a message naming the file when it is missing, unreadable or
        not written by ``quality.py --out``.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: not a quality.py JSON file ({err})") from None
    summary = payload.get("summary") if isinstance(payload, dict) else None
    if (
        not isinstance(summary, dict)
        or not summary
        or not isinstance(payload.get("train_vs_held_out_runs"), list)
        or any(
            not isinstance(r, dict) or "per_bundle_mean" not in r
            for r in summary.values()
        )
    ):
        raise SystemExit(
            f"{path}: not a quality.py --out file (no per-sampling summary with "
            "per-bundle means, or no train_vs_held_out_runs)"
        )
    return payload


def samplings(payload):
    """The samplings a run measured, in :data:`quality.SAMPLINGS` order.

    Parameters
    ----------
    payload : dict
        A run (:func:`read_run`).

    Returns
    -------
    list of str
    """
    return [s for s in quality.SAMPLINGS if s in payload["summary"]]


def target(payload, sampling, metric):
    """The bound of ``metric``'s target that the run recorded for
    ``sampling`` (today's :data:`quality.TARGETS` for a file without one).

    Parameters
    ----------
    payload : dict
        A run (:func:`read_run`).
    sampling, metric : str

    Returns
    -------
    float
    """
    recorded = (payload.get("targets") or {}).get(sampling) or {}
    return (recorded.get(metric) or quality.TARGETS[metric])[1]


def prior_match_over(payload, sampling):
    """Each bundle's ``prior_match`` minus its reference.

    Parameters
    ----------
    payload : dict
        A run (:func:`read_run`).
    sampling : str

    Returns
    -------
    dict
        Bundle -> mean over seeds of ``prior_match`` minus the mean of its
        train-vs-held-out value (:func:`quality.bundle_references`); None
        where either is missing.
    """
    values = payload["summary"][sampling]["per_bundle_mean"].get("prior_match", {})
    refs = quality.bundle_references(payload["train_vs_held_out_runs"]).get(
        "prior_match", {}
    )
    return {
        b: None if v is None or refs.get(b) is None else v - refs[b]
        for b, v in values.items()
    }


def band_misses(payload, sampling):
    """The length bands under their lowest allowed difference.

    Parameters
    ----------
    payload : dict
        A run (:func:`read_run`).
    sampling : str

    Returns
    -------
    list of tuple or None
        ``(bundle, band, difference, lowest allowed)`` per band missed
        (:func:`quality.band_gaps`, :func:`quality.band_tolerance` with the
        run's bound and its training subjects' standard errors); None when
        the run has no band shares.
    """
    gaps = quality.band_gaps(payload["summary"][sampling])
    if not gaps:
        return None
    bound = target(payload, sampling, "band_precision")
    se = payload.get("band_reference_se")
    out = []
    for bundle, row in gaps.items():
        for k, gap in enumerate(row):
            low = quality.band_tolerance(bound, se, bundle, k)
            if gap is not None and gap < low:
                out.append((bundle, k + 1, gap, low))
    return out


def _run_names(paths):
    """A name per file: its stem, or its path where two stems are alike."""
    resolved = [Path(p).resolve() for p in paths]
    twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if twice:
        raise SystemExit(f"{', '.join(twice)}: the same file given twice")
    stems = [p.stem for p in resolved]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def compare(paths):
    """The comparison of several runs, as text.

    Parameters
    ----------
    paths : list of str
        JSON files of ``quality.py --out``.

    Returns
    -------
    str
        Three tables: ``prior_match`` minus its reference per bundle, the
        length bands missed, and the run means with the targets missed.
    """
    runs = {name: read_run(p) for name, p in zip(_run_names(paths), paths)}
    bundles = sorted(
        {
            b
            for payload in runs.values()
            for s in samplings(payload)
            for b in prior_match_over(payload, s)
        }
    )
    rows = []
    for name, payload in runs.items():
        for s in samplings(payload):
            over = prior_match_over(payload, s)
            margin = target(payload, s, "prior_match")
            cells = [
                "n/a" if over.get(b) is None else f"{over[b]:+.4f}" for b in bundles
            ]
            worse = [b for b in bundles if over.get(b) is not None and over[b] > margin]
            rows.append([name, s, *cells, f"{margin:g}", " ".join(worse) or "none"])
    text = [
        quality._render(
            [
                "prior_match minus its reference (training codes against the "
                "held-out ones), per bundle, mean over seeds"
            ],
            ["run", "sampling", *bundles, "margin", "over the margin"],
            rows,
        )
    ]
    rows = []
    for name, payload in runs.items():
        for s in samplings(payload):
            misses = band_misses(payload, s)
            if misses is None:
                rows.append([name, s, "n/a", "no band shares in this run"])
                continue
            listed = "; ".join(
                f"{b} {k} {g:+.4f} (>= {low:+.4f})" for b, k, g, low in misses
            )
            rows.append([name, s, str(len(misses)), listed or "-"])
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
            means = payload["summary"][s].get("mean", {})
            sd = payload["summary"][s].get("sd", {})
            cells = [quality._fmt(means.get(m), sd.get(m)) for m in MEANS]
            passed = (payload.get("passed") or {}).get(s)
            if passed is None:
                missed = "n/a"
            else:
                missed = " ".join(m for m, ok in passed.items() if ok is False)
                unmeasured = [m for m, ok in passed.items() if ok is None]
                missed = (missed or "none") + (
                    f" (not measured: {' '.join(unmeasured)})" if unmeasured else ""
                )
            seconds_text = f"{np.mean(seconds):.0f}" if seconds else "n/a"
            rows.append([name, s, *cells, seconds_text, missed])
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
