"""Model benchmark: does the conditional AAE learn without collapsing?

Trains the conditional AAE and, in the same run, the same encoder/decoder as a
plain autoencoder (``quality.PLAIN``: no adversarial, AR or prior-matching
terms, deterministic encoder) with the same epoch budget, on the phantom and/or
the embedded default, once per seed (same data and split for every seed), and
prints each number as mean +/- sd over the seeds:

- held-out reconstruction error (mean MDF, mm) along training, for both;
- the ratio AAE / plain AE of the final held-out MDF (target <= 1.1);
- Spearman rho between latent dim 0 and length on held-out streamlines, per
  bundle (target >= 0.95 on the phantom);
- the pairwise-MDF ratio of reconstructions to inputs (collapse -> 0; target
  >= 0.8);
- training throughput (streamlines/s) of both, and its ratio.

Usage::

    python benchmarks/bench_model.py --dataset phantom --epochs 100 --seeds 0 1 2
    KERAS_BACKEND=torch python benchmarks/bench_model.py --dataset minimal_bundles

Writes a JSON of every number with ``--out``.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quality import PLAIN  # noqa: E402


def _load(name, n_points, seed, n_per_bundle):
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.data_fetchers import fetch_minimal_bundles, make_phantom

    if name == "phantom":
        folder = make_phantom(
            tempfile.mkdtemp(prefix="aae_tract_phantom_"),
            n_subjects=5,
            n_per_bundle=n_per_bundle,
            seed=seed,
        )
    else:
        folder = fetch_minimal_bundles()
    dataset = load_dataset(folder, n_points=n_points)
    return split_dataset(dataset, val_fraction=0.2, seed=seed)


class HeldOutMDF:
    """Keras callback: held-out mean MDF every ``every`` epochs."""

    def __init__(self, model, validation, every):
        import keras

        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if (epoch + 1) % every == 0:
                    outer.curve.append((epoch + 1, outer.measure()))

        self.model = model
        self.validation = validation
        self.curve = []
        self.callback = _Callback()

    def measure(self):
        from aae_tract.metrics import paired_mdf

        rec = self.model.decode(
            self.model.encode_prepared(self.validation.x), self.validation.labels
        )
        return float(paired_mdf(self.validation.x, rec).mean())


def run(kind, train, validation, epochs, config, every):
    from aae_tract.model import TractAAE

    overrides = dict(config)
    if kind == "plain AE":
        overrides.update(PLAIN)
    model = TractAAE.from_dataset(train, epochs=epochs, **overrides)
    probe = HeldOutMDF(model, validation, every)
    start = time.perf_counter()
    model.fit(train, validation, verbose=0, callbacks=[probe.callback])
    seconds = time.perf_counter() - start
    return model, probe.curve, seconds


def evaluate(model, validation):
    from scipy.stats import spearmanr

    from aae_tract.metrics import mean_pairwise_mdf, paired_mdf

    z = model.encode_prepared(validation.x)
    rec = model.decode(z, validation.labels)
    rho, ratio = {}, {}
    for i, name in enumerate(validation.bundle_names):
        mask = validation.labels == i
        if mask.sum() < 3:
            continue
        rho[name] = float(spearmanr(z[mask, 0], validation.attribute[mask])[0])
        ratio[name] = float(
            mean_pairwise_mdf(rec[mask]) / mean_pairwise_mdf(validation.x[mask])
        )
    return {
        "recon_mdf_mm": float(paired_mdf(validation.x, rec).mean()),
        "ar_spearman": rho,
        "pairwise_mdf_ratio": ratio,
    }


def _ms(values):
    """``mean +/- sd`` of a list of numbers."""
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} +/- {values.std():.3f}"


def run_seeds(train, validation, args):
    """Both models once per seed; {kind: [result per seed]}."""
    rows = {"conditional AAE": [], "plain AE": []}
    for seed in args.seeds:
        config = {"batch_size": args.batch_size, "seed": seed}
        for kind in rows:
            model, curve, seconds = run(
                kind, train, validation, args.epochs, config, args.every
            )
            result = evaluate(model, validation)
            result["curve"] = curve
            result["seconds"] = seconds
            result["streamlines_per_s"] = len(train) * args.epochs / seconds
            rows[kind].append(result)
            print(
                f"  seed {seed} {kind}: recon {result['recon_mdf_mm']:.3f} mm, "
                f"{result['streamlines_per_s']:.0f} streamlines/s",
                flush=True,
            )
    return rows


def _paired(aae, plain, key):
    """``key`` of each seed's AAE and plain run, and their ratios."""
    a = [r[key] for r in aae]
    p = [r[key] for r in plain]
    return a, p, [x / y for x, y in zip(a, p)]


def report_rows(rows):
    """Print the comparison; the summary numbers as a dict."""
    aae, plain = rows["conditional AAE"], rows["plain AE"]
    print("held-out recon MDF (mm) by epoch, mean +/- sd over seeds:")
    for k, (epoch, _) in enumerate(aae[0]["curve"]):
        a = _ms([r["curve"][k][1] for r in aae])
        p = _ms([r["curve"][k][1] for r in plain])
        print(f"  epoch {epoch:4d}: AAE {a}   plain AE {p}")
    recon_a, recon_p, ratios = _paired(aae, plain, "recon_mdf_mm")
    print(
        f"final recon MDF (mm): AAE {_ms(recon_a)}, plain AE {_ms(recon_p)}; "
        f"ratio per seed {_ms(ratios)} (target <= 1.1)"
    )
    print("Spearman rho(z0, length) per bundle (target >= 0.95 on the phantom):")
    for bundle in aae[0]["ar_spearman"]:
        rho = _ms([r["ar_spearman"][bundle] for r in aae])
        div = _ms([r["pairwise_mdf_ratio"][bundle] for r in aae])
        print(f"  {bundle:16s} rho {rho}   pairwise-MDF ratio {div}")
    means = [np.mean(list(r["pairwise_mdf_ratio"].values())) for r in aae]
    print(f"pairwise-MDF ratio, mean over bundles: {_ms(means)} (target >= 0.8)")
    speed_a, speed_p, speed = _paired(aae, plain, "streamlines_per_s")
    print(
        f"throughput (streamlines/s): AAE {np.mean(speed_a):.0f}, plain AE "
        f"{np.mean(speed_p):.0f}, ratio {_ms(speed)}"
    )
    return {"recon_ratio": ratios, "throughput_ratio": speed}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", choices=["phantom", "minimal_bundles", "both"], default="both"
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--n_points", type=int, default=128)
    parser.add_argument("--n_per_bundle", type=int, default=100)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds"
    )
    parser.add_argument(
        "--data_seed", type=int, default=0, help="seed of the phantom and the split"
    )
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import keras

    from aae_tract.backend import describe_device

    device = describe_device()
    names = ["phantom", "minimal_bundles"] if args.dataset == "both" else [args.dataset]
    report = {"device": device, "keras": keras.__version__, "epochs": args.epochs}
    for name in names:
        train, validation = _load(
            name, args.n_points, args.data_seed, args.n_per_bundle
        )
        print(
            f"\n== {name}: {len(train)} train / {len(validation)} held-out "
            f"streamlines, {args.n_points} points, {args.epochs} epochs, "
            f"seeds {args.seeds}, {device}"
        )
        rows = run_seeds(train, validation, args)
        summary = report_rows(rows)
        report[name] = {
            "aae": rows["conditional AAE"],
            "plain_ae": rows["plain AE"],
            **summary,
        }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)
