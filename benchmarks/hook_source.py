"""Where the hooked ends of generated streamlines come from.

For each model (one per seed) and bundle, on the same targets (lengths drawn
from the bundle's real streamlines), this prints the share of hooked
streamlines (:func:`aae_tract.metrics.end_turn_deg` above the real
streamlines' :data:`aae_tract.metrics.HOOK_QUANTILE` quantile, as
``hooked_fraction`` counts them) among the decoded mean curves of:

- ``bank``: the bundle's latent bank (training codes) as they are;
- ``drawn``: codes drawn as generation draws them (bank sampling, as its
  documented runs: the default before a length model sampled its prior by
  default), with
  latent dimension 0 left at its calibrated value (``exact_length=False``);
- ``searched``: the same draws after the length search (``match_length``,
  ``candidates=1``);
- ``candidates N``: generation's default, ``N`` draws per streamline and the
  first near the target searched (:data:`aae_tract.generate.DEFAULT_CANDIDATES`,
  :data:`aae_tract.generate.CANDIDATE_TOLERANCE`);

then, for ``searched``, the hooked share by how far the search moved
dimension 0 (in units of the calibration's range of it), and the median
length error of ``drawn`` (how far off the draws are before the search).
Placement and texture are left out: they do not change how a streamline's
ends turn.

Usage::

    python benchmarks/hook_source.py 'models/emb_warm0_seed{seed}.keras' \\
        --seeds 0 1 2 --bundle AF_L

The real streamlines are the model's training data (``--data``, default the
embedded default), all subjects, at the model's number of points.
"""

import argparse
import logging

import numpy as np

#: Bins of |move of dimension 0| / the calibration's range of it.
MOVE_BINS = (0.0, 0.05, 0.1, 0.2, 0.4, np.inf)


def hook_shares(model, bundle, real, *, n=600, seed=0):
    """The hooked shares of one model's bank, draws and searched draws.

    Parameters
    ----------
    model : TractAAE
        A calibrated model conditioned on length.
    bundle : str
    real : ndarray, shape (M, P, 3)
        The bundle's real streamlines (mm): the threshold of a hook and the
        lengths asked.
    n : int
        Streamlines drawn.
    seed : int

    Returns
    -------
    dict
    """
    from aae_tract.generate import DEFAULT_CANDIDATES, _bank, sample_latent
    from aae_tract.metrics import HOOK_QUANTILE, end_turn_deg
    from aae_tract.streamlines import streamline_lengths

    threshold = float(np.nanquantile(end_turn_deg(real), HOOK_QUANTILE))

    def hooked(z):
        return end_turn_deg(model.decode(z, bundle)) > threshold

    rng = np.random.default_rng(seed)
    targets = rng.choice(streamline_lengths(real), n)
    bank = {"sampling": "bank", "rng": seed}
    drawn = sample_latent(
        model, bundle, targets, exact_length=False, candidates=1, **bank
    )
    searched = sample_latent(model, bundle, targets, candidates=1, **bank)
    chosen = sample_latent(model, bundle, targets, **bank)
    low, high = model.attribute_range(bundle)
    ends = model.attribute_to_z0(bundle, np.array([low, high]))
    move = np.abs(searched[:, 0] - drawn[:, 0]) / max(float(np.ptp(ends)), 1e-6)
    hooks = hooked(searched)
    by_move = []
    for lo, hi in zip(MOVE_BINS[:-1], MOVE_BINS[1:]):
        rows = (move >= lo) & (move < hi)
        share = float(hooks[rows].mean()) if rows.any() else None
        by_move.append({"from": lo, "to": hi, "n": int(rows.sum()), "hooked": share})
    drawn_error = np.abs(model.decoded_lengths(drawn, bundle) - targets) / targets
    return {
        "threshold_deg": threshold,
        "bank": float(hooked(_bank(model, bundle)[0]).mean()),
        "drawn": float(hooked(drawn).mean()),
        "searched": float(hooks.mean()),
        f"candidates {DEFAULT_CANDIDATES}": float(hooked(chosen).mean()),
        "drawn_length_error_pct": float(100 * np.median(drawn_error)),
        "by_move": by_move,
    }


def seeded_models_parser(description, *, n, n_help):
    """The options of a script that measures stored models (one per seed)
    on the bundles of their training data: ``model`` (with ``{seed}``),
    ``--seeds``, ``--bundle``, ``--data`` and ``--n`` (default ``n``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", help="model file; {seed} is replaced by each seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--bundle", nargs="+", help="default: every bundle")
    parser.add_argument("--data", help="the real streamlines (default: embedded)")
    parser.add_argument("--n", type=int, default=n, help=n_help)
    return parser


def main(argv=None):
    parser = seeded_models_parser(
        __doc__.splitlines()[0], n=600, n_help="streamlines drawn"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from aae_tract.data import load_dataset
    from aae_tract.model import TractAAE

    runs = {}
    data = {}
    for seed in args.seeds:
        model = TractAAE.load(args.model.replace("{seed}", str(seed)))
        if model.n_points not in data:
            data[model.n_points] = load_dataset(args.data, n_points=model.n_points)
        dataset = data[model.n_points]
        for bundle in args.bundle or model.bundle_names:
            rows = np.asarray(dataset.labels) == dataset.bundle_names.index(bundle)
            real = np.asarray(dataset.x)[rows]
            runs.setdefault(bundle, []).append(
                hook_shares(model, bundle, real, n=args.n, seed=seed)
            )
    for bundle, results in runs.items():
        print(f"\n{bundle}, {len(results)} seeds (mean of the seeds' shares):")
        for key in [k for k in results[0] if k not in ("by_move", "threshold_deg")]:
            values = [r[key] for r in results]
            each = ", ".join(f"{v:.3f}" for v in values)
            print(f"  {key:28s} {np.mean(values):.3f} ({each})")
        print("  searched, by the move of dimension 0 / its calibrated range:")
        for i, edge in enumerate(results[0]["by_move"]):
            n = sum(r["by_move"][i]["n"] for r in results)
            hooked = sum(
                (r["by_move"][i]["hooked"] or 0) * r["by_move"][i]["n"] for r in results
            )
            share = f"{hooked / n:.3f}" if n else "-"
            bin_ = f"[{edge['from']:.2f}, {edge['to']:.2f})"
            print(f"    {bin_:14s} n {n:5d}, hooked {share}")


if __name__ == "__main__":
    main()
