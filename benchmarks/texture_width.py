"""How a model's sampled texture turns, against the real streamlines.

For each model (one per seed) and bundle, the bundle's real streamlines
(at most ``--n``, all subjects of ``--data``) are encoded and decoded with a
sampled texture, and compared with themselves:

- ``turn``: the median over streamlines of the mean turn per step, at the
  streamlines' own points (what the texture likelihood fits), generated over
  real; ``mean turn`` the same for the mean curves (no texture);
- ``curv 0.5``, ``curv 1``, ``curv 2``: ``curvature_ratio`` with the
  streamlines resampled every 0.5, 1 and 2 mm (``quality.py`` reports the
  1 mm one). A texture that turns as much per step as tracking but in a
  zig-zag keeps ``turn`` near 1 and loses ``curv`` as the step grows;
- ``lag 1``: the correlation of successive turns (real streamlines turn the
  same way over a few steps; independent step perturbations alternate, -0.5);
- ``hooked``: ``hooked_fraction`` of the decoded streamlines against the real
  ones;
- ``shift``, ``shift long``: the mean distance (mm) of the textured
  streamlines' points from their mean curve's, over all streamlines and over
  the longest 40 %, over the same for the real streamlines and their
  reconstructions (1: the texture moves a streamline as far as a real one
  lies from its reconstruction; a texture whose perturbations add up along
  the streamline moves long ones farther).

With ``--widths``, the texture is sampled with each given ``texture_width``
instead of the model's (:func:`aae_tract.model.networks.texture_kernel`) and
its scale is moved, per bundle, until ``turn`` is 1 (as the texture
likelihood fits it in training; the mean curves are those of the model):
what each width would give a model trained with it, without training one.
A warning says where no factor in ``exp(LOG_GAIN_RANGE)`` reaches it (mean
curves that already turn more than the real streamlines).

Usage::

    python benchmarks/texture_width.py 'models/reg_seed{seed}.keras' \\
        --seeds 0 1 2 --data data/phantom_q --widths 0 1 1.5 2.5
"""

import logging

import numpy as np

#: Resampling steps (mm) of the curvature ratios.
STEPS_MM = (0.5, 1.0, 2.0)
#: Range of the log of the texture scale's factor searched with ``--widths``.
LOG_GAIN_RANGE = (-2.0, 3.0)


def _unit_steps(x):
    d = np.diff(np.asarray(x, dtype=np.float64), axis=1)
    return d / np.maximum(np.linalg.norm(d, axis=2, keepdims=True), 1e-12)


def mean_turn(x):
    """Mean change of the unit step direction per step, per streamline."""
    return np.mean(np.linalg.norm(np.diff(_unit_steps(x), axis=1), axis=2), axis=1)


def turn_lag1(x):
    """Correlation of successive turn vectors, over all streamlines."""
    turns = np.diff(_unit_steps(x), axis=1)
    a, b = turns[:, :-1].reshape(-1, 3), turns[:, 1:].reshape(-1, 3)
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def sample_texture(model, z, bundle, *, width=None, log_gain=0.0, seed=0):
    """Decode ``z`` with a sampled texture, its scale multiplied by
    ``exp(log_gain)``; ``width`` (None: the model's own texture) smooths the
    step perturbations with :func:`texture_kernel` before a model of
    ``texture_width`` 0 takes them."""
    from aae_tract.model.networks import texture_kernel

    if width is None and log_gain == 0:
        return model.decode(z, bundle, texture=seed)
    rng = np.random.default_rng(seed)
    labels = np.full(len(z), model.bundle_index(bundle))
    onehot = model.onehot(labels)
    steps = rng.standard_normal((len(z), model.n_points - 1, 3)).astype("float32")
    kernel = None if width is None else texture_kernel(model.n_points - 1, width)
    if kernel is not None:  # the model's own layer does not smooth (width 0)
        steps = np.einsum("pq,bqc->bpc", kernel, steps).astype("float32")
    xi = rng.standard_normal((len(z), 1)).astype("float32")
    xi = model._bounded_xi(z, onehot, labels, xi)
    _, log_tau = model._texture_of(z, onehot)
    xi = (xi + log_gain / np.exp(log_tau)[:, None]).astype("float32")
    x = model._decode_batch(np.asarray(z, "float32"), onehot, (steps, xi))
    return model.normalizer.inverse(x)


def texture_row(model, bundle, real, z, *, width=None, seed=0):
    """The row of one model, bundle and texture width (see the module)."""
    from aae_tract.metrics import curvature_ratio, hooked_fraction

    gain = 0.0
    if width is not None:
        target = np.median(mean_turn(real))
        low, high = LOG_GAIN_RANGE
        for _ in range(16):
            gain = 0.5 * (low + high)
            x = sample_texture(model, z, bundle, width=width, log_gain=gain, seed=seed)
            if np.median(mean_turn(x)) < target:
                low = gain
            else:
                high = gain
        gain = 0.5 * (low + high)
        if min(gain - LOG_GAIN_RANGE[0], LOG_GAIN_RANGE[1] - gain) < 0.01:
            logging.warning(
                "%s, width %g: turn 1 is out of reach (gain %.3f at its bound)",
                bundle,
                width,
                np.exp(gain),
            )
    x = sample_texture(model, z, bundle, width=width, log_gain=gain, seed=seed)
    mean = model.decode(z, bundle)
    row = {
        "turn": float(np.median(mean_turn(x)) / np.median(mean_turn(real))),
        "mean turn": float(np.median(mean_turn(mean)) / np.median(mean_turn(real))),
    }
    lengths = np.sum(np.linalg.norm(np.diff(real, axis=1), axis=2), axis=1)
    long = lengths > np.quantile(lengths, 0.6)
    moved = np.linalg.norm(x - mean, axis=2).mean(axis=1)
    off = np.linalg.norm(real - mean, axis=2).mean(axis=1)
    for step in STEPS_MM:
        row[f"curv {step:g}"] = curvature_ratio(x, real, step_mm=step)
    row["lag 1"] = turn_lag1(x)
    row["hooked"] = hooked_fraction(x, real)
    row["shift"] = float(moved.mean() / off.mean())
    row["shift long"] = float(moved[long].mean() / off[long].mean())
    if width is not None:
        row["gain"] = float(np.exp(gain))
    return row


def texture_figure(path, panels, *, bundle, span_mm=30.0, gap_mm=1.5):
    """Draw the middle ``span_mm`` of the same few streamlines in each panel.

    ``panels``: (title, streamlines in mm) pairs, the same streamlines in the
    same order. Each streamline is drawn in the plane of its two main axes,
    centred on its middle point, ``gap_mm`` above the one before, with the
    axis across the streamlines magnified so that turns of a fraction of a
    millimetre show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 5.2), sharey=True
    )
    for ax, (title, streamlines) in zip(np.atleast_1d(axs), panels):
        for i, line in enumerate(np.asarray(streamlines, dtype=np.float64)):
            arc = np.concatenate(
                [[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))]
            )
            middle = 0.5 * arc[-1]
            keep = np.abs(arc - middle) <= 0.5 * span_mm
            part = line[keep] - line[keep].mean(axis=0)
            _, _, axes = np.linalg.svd(part, full_matrices=False)
            flat = part @ axes[:2].T
            ax.plot(flat[:, 0], flat[:, 1] + gap_mm * i, "-", lw=1.2, color=f"C{i}")
            ax.plot(flat[:, 0], flat[:, 1] + gap_mm * i, ".", ms=2.5, color=f"C{i}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("mm along the streamline")
    np.atleast_1d(axs)[0].set_ylabel(
        f"mm across, magnified (streamlines {gap_mm:g} mm apart)"
    )
    fig.suptitle(
        f"{bundle}: the middle {span_mm:g} mm of the same streamlines, "
        "real and decoded from their codes with a sampled texture"
    )
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    from hook_source import seeded_models_parser

    parser = seeded_models_parser(
        __doc__.splitlines()[0], n=400, n_help="streamlines per bundle"
    )
    parser.add_argument(
        "--widths",
        type=float,
        nargs="+",
        help="texture widths to sample with instead of the model's",
    )
    parser.add_argument(
        "--figure",
        help="PNG of the middle of a few streamlines of --figure_bundle (first "
        "seed): real, and decoded with each width's texture",
    )
    parser.add_argument("--figure_bundle", default="CST_R")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from aae_tract.data import load_dataset
    from aae_tract.model import TractAAE

    widths = args.widths or [None]
    panels = []
    rows = {}
    reals = {}
    data = {}
    model_width = None
    for seed in args.seeds:
        model = TractAAE.load(args.model.replace("{seed}", str(seed)))
        if model_width is not None and model.config.texture_width != model_width:
            parser.error("the models of the seeds have different texture widths")
        model_width = model.config.texture_width
        if args.widths and model.config.texture_width != 0:
            parser.error(
                f"--widths needs models of texture_width 0; "
                f"{args.model.replace('{seed}', str(seed))} has "
                f"{model.config.texture_width:g}"
            )
        if model.n_points not in data:
            data[model.n_points] = load_dataset(args.data, n_points=model.n_points)
        dataset = data[model.n_points]
        for bundle in args.bundle or model.bundle_names:
            label = dataset.bundle_names.index(bundle)
            rows_b = np.flatnonzero(np.asarray(dataset.labels) == label)
            pick = np.random.default_rng(seed).permutation(rows_b)[: args.n]
            real = np.asarray(dataset.x)[np.sort(pick)]
            x, _ = model.prepare(real, [bundle] * len(real))
            z = model.encode_prepared(x, rng=seed)
            reals.setdefault(bundle, []).append(turn_lag1(real))
            for width in widths:
                row = texture_row(model, bundle, real, z, width=width, seed=seed)
                rows.setdefault((bundle, width), []).append(row)
                drawn = args.figure and bundle == args.figure_bundle
                if drawn and not panels:
                    panels.append(("real", real[:5]))
                if drawn and seed == args.seeds[0]:
                    gain = np.log(row.get("gain", 1.0))
                    x = sample_texture(
                        model, z[:5], bundle, width=width, log_gain=gain, seed=seed
                    )
                    if width is None:
                        title = f"texture_width {model.config.texture_width:g}"
                    else:
                        title = f"texture_width {width:g} (scale matched)"
                    panels.append((title, x))
    if args.figure and panels:
        texture_figure(args.figure, panels, bundle=args.figure_bundle)
        print(f"wrote {args.figure}")
    for bundle in reals:
        lag = np.mean(reals[bundle])
        seeds = len(reals[bundle])
        print(f"\n{bundle}, {seeds} seeds; real streamlines' lag 1 {lag:.3f}")
        for width in widths:
            results = rows[(bundle, width)]
            name = f"model's ({model_width:g})" if width is None else f"{width:g}"
            cells = []
            for key in results[0]:
                values = [r[key] for r in results]
                cells.append(f"{key} {np.mean(values):.3f} +/- {np.std(values):.3f}")
            print(f"  width {name:14s} " + ", ".join(cells))


if __name__ == "__main__":
    main()
