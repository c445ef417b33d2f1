"""Side by side: the targets of several ``quality.py --out`` runs, per bundle.

``quality.py`` prints one run's means; the targets that decide between two
settings are often per bundle: ``prior_match`` against each bundle's own
reference (the training codes against the held-out ones) and
``band_precision`` in every length band. This script reads the JSON files
that ``quality.py --out`` wrote and prints, for each run and sampling, each
bundle's ``prior_match`` minus its reference to four decimals (a miss by
less than 0.001 shows), the length bands under their lowest allowed
difference, each bundle's lowest length band of ``band_recall`` (how well
the generated streamlines cover the held-out bundle against the training
streamlines; no target), and the run's mean novelty, diversity, shape
similarity, reconstruction and training time, with the targets the run
missed. Each run is judged by
the targets its own file recorded. Nothing is trained or evaluated again.

``--per_seed`` reads runs of one setting instead (the same data, split,
model settings and targets; other seeds, e.g. ``--seeds 0 1 2`` and
``--seeds 3 4``) and prints each bundle's reference and its ``prior_match``
minus that reference seed by seed, with their mean, sd and standard error
over all the seeds: how firmly a bundle lies over or under its margin.

Usage::

    python benchmarks/compare_quality.py td.json f64.json
    python benchmarks/compare_quality.py --per_seed td.json td34.json
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
MEANS = (
    "novelty_ratio",
    "diversity_ratio",
    "shape_similarity",
    "recon_mdf_mm",
    "recon_vs_plain",
)


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
        or not all(isinstance(r, dict) for r in payload["train_vs_held_out_runs"])
        or any(
            not isinstance(r, dict) or "per_bundle_mean" not in r
            for r in summary.values()
        )
    ):
        raise SystemExit(
            f"{path}: not a quality.py --out file (no per-sampling summary with "
            "per-bundle means, or no train_vs_held_out_runs with a result per seed)"
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


def lowest_recall_bands(payload, sampling):
    """Each bundle's length band whose ``band_recall`` share lies farthest
    under the training streamlines' (mean over seeds).

    Parameters
    ----------
    payload : dict
        A run (:func:`read_run`).
    sampling : str

    Returns
    -------
    dict or None
        Bundle -> ``(band, difference)`` (``(None, None)`` where no band has
        both shares); None when the run has no ``band_recall`` shares
        (files written before it).
    """
    gaps = quality.band_gaps(payload["summary"][sampling], "band_recall")
    if not gaps:
        return None
    out = {}
    for bundle, row in gaps.items():
        measured = [(g, k + 1) for k, g in enumerate(row) if g is not None]
        gap, band = min(measured) if measured else (None, None)
        out[bundle] = (band, gap)
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
        Four tables: ``prior_match`` minus its reference per bundle, the
        length bands missed, each bundle's lowest ``band_recall`` band, and
        the run means with the targets missed.
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
        for s in samplings(payload):
            lowest = lowest_recall_bands(payload, s)
            if lowest is None:
                rows.append([name, s] + ["n/a"] * len(bundles))
                continue
            rows.append(
                [name, s]
                + [
                    "n/a"
                    if lowest.get(b, (None, None))[1] is None
                    else f"{lowest[b][1]:+.3f} (band {lowest[b][0]})"
                    for b in bundles
                ]
            )
    text.append(
        quality._render(
            [
                "\nband_recall: each bundle's lowest length band, the share of "
                "held-out streamlines the generated ones cover minus the "
                "training streamlines' share (mean over seeds; no target)"
            ],
            ["run", "sampling", *bundles],
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


#: What runs pooled by ``--per_seed`` must share besides the model settings
#: (whose seed may differ): the data, its registration, the tests and the
#: targets.
SAME_SETTING = (
    "dataset",
    "attribute",
    "phantom",
    "fragments",
    "register",
    "prior_match_tests",
    "backend",
    "targets",
    "prior_spread",
)
#: The value of a setting in files written before it was recorded.
SETTING_DEFAULTS = {"prior_spread": 1.0}


def seed_excess(payload, sampling, path):
    """Each seed's ``prior_match`` minus that seed's reference, per bundle.

    Parameters
    ----------
    payload : dict
        A run (:func:`read_run`).
    sampling : str
    path : str
        The run's file, named in errors.

    Returns
    -------
    dict
        Seed -> {bundle: difference, None where either value is missing}.

    Raises
    ------
    SystemExit
        Naming the file when its per-seed results do not line up with its
        seeds.
    """
    seeds = payload.get("seeds")
    runs = (payload.get("runs") or {}).get(sampling)
    refs = payload["train_vs_held_out_runs"]
    if (
        not isinstance(seeds, list)
        or not isinstance(runs, list)
        or not len(seeds) == len(runs) == len(refs)
        or not all(isinstance(r, dict) for r in [*runs, *refs])
    ):
        raise SystemExit(
            f"{path}: its seeds, its {sampling} runs and its train_vs_held_out_runs "
            "do not line up (one result per seed is needed)"
        )
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"{path}: a seed is listed twice in its seeds ({seeds})")
    out = {}
    for seed, run, ref in zip(seeds, runs, refs):
        values = run.get("per_bundle") or {}
        references = ref.get("per_bundle") or {}
        row = {}
        for bundle, metrics in values.items():
            value = metrics.get("prior_match")
            reference = (references.get(bundle) or {}).get("prior_match")
            row[bundle] = (
                None if value is None or reference is None else value - reference
            )
        out[int(seed)] = row
    return out


def _setting(payload, sampled=None):
    """The model settings (seed left out) and :data:`SAME_SETTING` of a run;
    its targets only of the samplings ``sampled`` (all when None)."""
    config = dict(payload.get("config") or {})
    config.pop("seed", None)
    setting = {k: payload.get(k, SETTING_DEFAULTS.get(k)) for k in SAME_SETTING}
    if sampled is not None and isinstance(setting["targets"], dict):
        setting["targets"] = {
            s: v for s, v in setting["targets"].items() if s in sampled
        }
    return config, setting


def per_seed(paths):
    """Runs of one setting pooled seed by seed, as text.

    Parameters
    ----------
    paths : list of str
        JSON files of ``quality.py --out`` with the same data, model settings
        and targets, and no seed in two of them.

    Returns
    -------
    str
        Per sampling, a table of each bundle's reference (the mean over
        seeds of its training codes against its held-out ones), its
        ``prior_match`` minus that seed's reference for every seed, their
        mean, sd and standard error, and how many seeds lie over the margin.

    Raises
    ------
    SystemExit
        Naming the files whose settings differ or that share a seed.
    """
    _run_names(paths)
    payloads = [read_run(p) for p in paths]
    common = set.intersection(*(set(samplings(p)) for p in payloads))
    first = _setting(payloads[0], common)
    for path, payload in zip(paths[1:], payloads[1:]):
        config, setting = _setting(payload, common)
        differ = [k for k in first[1] if first[1][k] != setting[k]]
        differ += sorted(
            k for k in set(first[0]) | set(config) if first[0].get(k) != config.get(k)
        )
        if differ:
            raise SystemExit(
                f"{path}: not the setting of {paths[0]} (differs in "
                f"{', '.join(differ)}); --per_seed pools runs of one setting"
            )
    text = []
    for s in [s for s in quality.SAMPLINGS if s in common]:
        excess = {}
        for path, payload in zip(paths, payloads):
            for seed, row in seed_excess(payload, s, path).items():
                if seed in excess:
                    raise SystemExit(
                        f"{path}: seed {seed} is in another file too; --per_seed "
                        "pools different seeds"
                    )
                excess[seed] = row
        margin = target(payloads[0], s, "prior_match")
        refs = quality.bundle_references(
            [r for p in payloads for r in p["train_vs_held_out_runs"]]
        ).get("prior_match", {})
        seeds = sorted(excess)
        bundles = sorted({b for row in excess.values() for b in row})
        rows = []
        for b in bundles:
            values = [excess[seed].get(b) for seed in seeds]
            known = np.array([v for v in values if v is not None])
            n = len(known)
            sd = float(known.std(ddof=1)) if n > 1 else None
            rows.append(
                [
                    b,
                    "n/a" if refs.get(b) is None else f"{refs[b]:.3f}",
                    *("n/a" if v is None else f"{v:+.4f}" for v in values),
                    f"{known.mean():+.4f}" if n else "n/a",
                    "n/a" if sd is None else f"{sd:.4f}",
                    "n/a" if sd is None else f"{sd / np.sqrt(n):.4f}",
                    f"{int((known > margin).sum())}/{n}",
                ]
            )
        text.append(
            quality._render(
                [
                    f"{'' if not text else chr(10)}{s} sampling: prior_match minus "
                    f"its reference, seed by seed ({len(seeds)} seeds from "
                    f"{len(paths)} file{'s' if len(paths) > 1 else ''}; margin "
                    f"{margin:g})"
                ],
                [
                    "bundle",
                    "reference",
                    *(f"seed {seed}" for seed in seeds),
                    "mean",
                    "sd",
                    "se",
                    "seeds over",
                ],
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
    parser.add_argument(
        "--per_seed",
        action="store_true",
        help="pool runs of one setting (other seeds) and print each bundle's "
        "prior_match minus its reference seed by seed, with mean, sd and "
        "standard error",
    )
    args = parser.parse_args(argv)
    print(per_seed(args.runs) if args.per_seed else compare(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
