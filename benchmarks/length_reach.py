"""How far across a bundle's length range generation hits the requested length.

``quality.py``'s ``length_error_pct`` asks for lengths spread over the 5-95
percentiles of each bundle's training lengths. This script goes further out:
for each model and bundle it asks ``aae_tract.generate.generate``
(``--sampling``: bank by default, as its documented runs, the default before a
length model sampled its prior by default) for ``--targets`` lengths spread
evenly between 5 % and 95 % of the way from the bundle's shortest to its
longest training streamline (the range the model's calibration covers,
:meth:`TractAAE.attribute_range`), and prints how far the median produced
length lies from each request, in percent. A model whose latent dimension 0
stops moving the decoded length near an end of the range shows it there, with
the warning ``generate`` gives.

It also prints how much the other dimensions move the length: each of up to
100 bank codes of a bundle is moved, in every dimension but 0, by the
difference between the mean code of the next training subject and that of
its own (as generation moves codes to new subjects), and the median change
of the decoded mean streamline's length is given in percent. Generation
corrects such a change by moving dimension 0 (``match_length``); the smaller
it is, the more dimension 0 alone sets the length.

Usage::

    python benchmarks/length_reach.py 'models/emb_seed{seed}.keras' \\
        'models/emb_old_seed{seed}.keras' --seeds 0 1 2
"""

import argparse
import json
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality  # noqa: E402


def reach(model, *, targets=5, n_streamlines=50, seed=0, options=None):
    """Percent error of the median generated length at each target, per bundle.

    Parameters
    ----------
    model : TractAAE
        A model conditioned on length.
    targets : int
        Requests per bundle, evenly from 5 % to 95 % of its training range.
    n_streamlines : int
        Streamlines generated per request.
    seed : int
        Generation seed.
    options : dict, optional
        Other keyword arguments of ``generate`` (``noise``,
        ``subject_scope``, ``extend_reach``).

    Returns
    -------
    dict
        Bundle -> {"targets": [mm], "error_pct": [percent]}.
    """
    from aae_tract.generate import generate

    out = {}
    for bundle in model.bundle_names:
        low, high = model.attribute_range(bundle)
        asked = np.linspace(
            low + 0.05 * (high - low), high - 0.05 * (high - low), targets
        )
        errors = []
        for length in asked:
            result = generate(
                model,
                bundle,
                float(length),
                n_streamlines=n_streamlines,
                seed=seed,
                **{"sampling": "bank", **(options or {})},
            )
            errors.append(float(abs(np.median(result.lengths) - length) / length * 100))
        out[bundle] = {
            "targets": asked.tolist(),
            "error_pct": errors,
            "subject_shift_pct": subject_shift_pct(model, bundle, seed=seed),
        }
    return out


def _percent(value):
    return "-" if value is None else f"{value:.1f}"


def subject_shift_pct(model, bundle, *, n_codes=100, seed=0):
    """Median percent change of the decoded length when bank codes move to
    the next training subject in every dimension but 0.

    Parameters
    ----------
    model : TractAAE
    bundle : str
    n_codes : int
        Bank codes drawn (all when the bank holds fewer).
    seed : int
        Seed of the draw.

    Returns
    -------
    float or None
        None for a bank without subjects (a model file from before banks kept
        them, or a single training subject).
    """
    from aae_tract.generate import _bank

    z, _, subject, means = _bank(model, bundle)
    if subject is None or len(means) < 2:
        return None
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(z), min(n_codes, len(z)), replace=False)
    codes = z[rows].astype(np.float32)
    shift = means[(subject[rows] + 1) % len(means)] - means[subject[rows]]
    shift[:, 0] = 0.0
    before = model.decoded_lengths(codes, bundle)
    after = model.decoded_lengths((codes + shift).astype(np.float32), bundle)
    return float(np.median(np.abs(after / before - 1.0)) * 100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models", nargs="+", metavar="MODEL", help="{seed} is filled in"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", type=int, default=5)
    parser.add_argument("--n_streamlines", type=int, default=50)
    parser.add_argument("--out", help="write the numbers as JSON here")
    parser.add_argument(
        "--sampling",
        choices=("bank", "prior"),
        default="bank",
        help="how generation samples codes (default: bank, as the runs of "
        "doc/benchmarks.md before prior sampling became a length model's "
        "default)",
    )
    quality.add_generation_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    from aae_tract.model import TractAAE

    results, rows = {}, []
    for pattern in args.models:
        for seed in args.seeds:
            path = pattern.format(seed=seed)
            found = reach(
                TractAAE.load(path),
                targets=args.targets,
                n_streamlines=args.n_streamlines,
                seed=seed,
                options={
                    **quality.generation_options(args),
                    "sampling": args.sampling,
                },
            )
            results[path] = found
            for bundle, cells in found.items():
                rows.append(
                    [
                        path,
                        bundle,
                        " ".join(f"{t:.0f}" for t in cells["targets"]),
                        " ".join(f"{e:.1f}" for e in cells["error_pct"]),
                        f"{max(cells['error_pct']):.1f}",
                        _percent(cells["subject_shift_pct"]),
                    ]
                )
                print(" | ".join(rows[-1]), flush=True)
    head = [
        "model",
        "bundle",
        "targets (mm)",
        "error of the median (%)",
        "worst",
        "length moved by a subject shift (%)",
    ]
    print(quality._render([], head, rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "models": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
