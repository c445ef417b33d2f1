"""How firmly the training subjects fix ``band_precision``'s reference.

``band_precision`` (:func:`aae_tract.metrics.band_precision`) asks, in each
length band of a bundle's held-out streamlines, what share of the generated
streamlines lies on the held-out subjects' manifold, and holds it to the
share of the real training streamlines (``benchmarks/quality.py`` asks at
most 0.1 below it). That reference pools a few training subjects; a
generator of new subjects is judged against their mean. This script prints,
per bundle and length band, each training subject's own share, the pooled
share, and the spread of the subjects' shares: their standard deviation and
the standard error of their mean (sd / sqrt(subjects)), the uncertainty of
the reference itself. It needs no model: the splits are those of
``quality.py`` (``load_splits``), in each space of ``--modes``: ``none``
(the subjects as read, what ``quality.py`` measures by default) and
``groupwise`` (the common space ``aae_tract_train`` builds by default:
DIPY's groupwise SLR of the training subjects, the held-out subjects
registered to it, as ``quality.py --register groupwise``).

Usage::

    python benchmarks/band_reference.py --data_dir data/phantom_q
    python benchmarks/band_reference.py --data_dir data/phantom_q \
        --out band_reference.json
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality  # noqa: E402

#: Length bands, as ``band_precision`` in ``quality.py``.
N_BANDS = 5
#: Fewest subjects with a share of a band for its spread (two give an sd
#: too noisy to widen a target by).
MIN_SUBJECTS = 3


def subject_shares(train, held_out, *, n_bands=N_BANDS, min_n=10):
    """Per bundle: each training subject's band shares, the pooled ones and
    their spread.

    Parameters
    ----------
    train, held_out : StreamlineDataset
        The splits, in one space.
    n_bands : int, optional
        Length bands (quantiles of the held-out lengths).
    min_n : int, optional
        Fewest streamlines of one subject for its share of a band
        (``band_precision``'s ``min_n``; the pooled share keeps 10).

    Returns
    -------
    dict
        Bundle name -> ``{"subjects": {subject: [share per band]},
        "pooled": [...], "sd": [...], "se": [...]}``; ``sd`` is over the
        subjects with a share (ddof 1), ``se`` is ``sd / sqrt(their
        number)``: the standard error of the subjects' unweighted mean,
        taken as the uncertainty of the pooled share (which weights each
        subject by its streamlines in the band); NaN where a band has too
        few streamlines (``min_n``) or fewer than :data:`MIN_SUBJECTS`
        subjects have a share.
    """
    from aae_tract.metrics import band_precision

    xt, lt = np.asarray(train.x), np.asarray(train.labels)
    st = np.asarray(train.subjects)
    xv, lv = np.asarray(held_out.x), np.asarray(held_out.labels)
    out = {}
    for label, name in enumerate(train.bundle_names):
        real = xv[lv == label]
        if len(real) == 0:
            continue
        subjects = sorted(set(st[lt == label]))
        per = {
            s: band_precision(
                xt[(lt == label) & (st == s)], real, n_bands=n_bands, min_n=min_n
            )
            for s in subjects
        }
        shares = np.array(list(per.values()), dtype=float)
        counts = np.sum(np.isfinite(shares), axis=0)
        sd = np.full(n_bands, np.nan)
        many = counts >= MIN_SUBJECTS
        sd[many] = [np.nanstd(shares[:, k], ddof=1) for k in np.flatnonzero(many)]
        out[name] = {
            "subjects": per,
            "pooled": band_precision(xt[lt == label], real, n_bands=n_bands),
            "sd": sd.tolist(),
            "se": (sd / np.sqrt(np.maximum(counts, 1))).tolist(),
        }
    return out


def _fmt(values):
    return [f"{v:.3f}" if np.isfinite(v) else "n/a" for v in values]


def report(mode, shares, n_bands=N_BANDS):
    """The table of one space as markdown lines."""
    head = ["bundle", "training streamlines"] + [
        f"band {k + 1}" for k in range(n_bands)
    ]
    rows = []
    for name, entry in shares.items():
        for subject, values in entry["subjects"].items():
            rows.append([name, subject] + _fmt(values))
        rows.append([name, "all subjects (the reference)"] + _fmt(entry["pooled"]))
        rows.append([name, "sd over subjects"] + _fmt(entry["sd"]))
        rows.append([name, "standard error of the reference"] + _fmt(entry["se"]))
    lines = [
        f"\n{mode}: share on the held-out manifold, per length band (1: the shortest)"
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    se = np.array([e["se"] for e in shares.values()], dtype=float)
    pooled = np.array([e["pooled"] for e in shares.values()], dtype=float)
    gap = -quality.BAND_PRECISION_GAP
    lines.append(
        f"{mode}: pooled share {np.nanmean(pooled):.3f} on average (lowest "
        f"{np.nanmin(pooled):.3f}); standard error of the reference "
        f"{np.nanmean(se):.3f} on average, largest {np.nanmax(se):.3f}; "
        f"{int(np.sum(se > gap / 2))} of {int(np.sum(np.isfinite(se)))} bands "
        f"have one above half the target's gap ({gap / 2:.2f})"
    )
    return lines


def add_split_options(parser):
    """``--dataset``, ``--data_dir``, ``--modes`` and ``--n_points``: the
    splits of ``quality.py`` and the spaces to measure them in."""
    parser.add_argument(
        "--dataset", choices=["phantom", "minimal_bundles"], default="phantom"
    )
    parser.add_argument("--data_dir", help="where the phantom is (made if absent)")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["none", "groupwise"],
        default=["none", "groupwise"],
        help="spaces to measure in",
    )
    parser.add_argument("--n_points", type=int, help="points per streamline")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_options(parser)
    parser.add_argument(
        "--fragments",
        type=float,
        help="phantom fragment fraction, as quality.py --fragments",
    )
    parser.add_argument(
        "--min_n",
        type=int,
        default=10,
        help="fewest streamlines of one subject in a band for its share "
        "(default 10, as band_precision; the embedded default's subjects have "
        "about 10 per band)",
    )
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    n_points = args.n_points or quality.CONFIGS[args.dataset]["n_points"]
    train, held_out = quality.load_splits(
        args.dataset,
        n_points=n_points,
        data_dir=args.data_dir,
        fragments=args.fragments,
    )
    print(
        f"{args.dataset}: training subjects {', '.join(sorted(set(train.subjects)))}; "
        f"held out {', '.join(sorted(set(held_out.subjects)))}",
        flush=True,
    )
    from aae_tract.registration import register_split

    results = {}
    for mode in args.modes:
        t, h = register_split(train, held_out, mode)  # "none": as read
        results[mode] = subject_shares(t, h, min_n=args.min_n)
        print("\n".join(report(mode, results[mode])), flush=True)
    if args.out:
        from aae_tract.atomic import write_json_atomic

        write_json_atomic(args.out, json.loads(json.dumps(results, default=float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
