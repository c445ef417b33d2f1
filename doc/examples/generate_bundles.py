"""
=============================================================
Synthetic bundles at a requested length with a conditional AAE
=============================================================

This example trains aae_tract's conditional adversarial autoencoder on the real
bundles that ship with DIPY (5 subjects x AF_L, CST_R, CC_ForcepsMajor), holds
one subject out, registers the subjects into a common space, generates AF_L
streamlines at three lengths, measures the model, and makes the figures of the
user guide.

Run it with ``python doc/examples/generate_bundles.py``; set
``AAE_TRACT_EXAMPLE_EPOCHS`` for a shorter run and ``AAE_TRACT_EXAMPLE_OUT`` for
the output folder (default: ``doc/figures``).
"""

import json
import logging
import os
from pathlib import Path

import numpy as np

from aae_tract.data import load_dataset, split_dataset
from aae_tract.generate import generate
from aae_tract.metrics import METRIC_NAMES, evaluate
from aae_tract.model import TractAAE
from aae_tract.plots import plot_latent_space, plot_training_curves
from aae_tract.registration import register_split
from aae_tract.viz import render_bundles, render_comparison

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
epochs = int(os.environ.get("AAE_TRACT_EXAMPLE_EPOCHS", "100"))
n_points = int(os.environ.get("AAE_TRACT_EXAMPLE_POINTS", "128"))
out = Path(os.environ.get("AAE_TRACT_EXAMPLE_OUT", "doc/figures"))
out.mkdir(parents=True, exist_ok=True)

###############################################################################
# Load the embedded default (``None``): every streamline is resampled to
# ``n_points`` points and oriented within its bundle. The split keeps whole
# subjects apart.

dataset = load_dataset(None, n_points=n_points)
train, held_out = split_dataset(dataset, val_fraction=0.2, seed=0)
print(f"{len(train)} training, {len(held_out)} held-out streamlines")

###############################################################################
# The subjects come in their own spaces (offset by up to ~50 mm). DIPY's
# groupwise streamline registration (rigid: lengths are kept) brings the
# training subjects into one common space; the held-out subject is registered
# to their common-space bundles, as any new subject would be.

train, held_out = register_split(train, held_out, "groupwise", seed=0)
print(train.registration.describe())

###############################################################################
# Train. Latent dimension 0 is tied to streamline length by attribute
# regularization; the bundle label conditions the decoder and the
# discriminator.

model = TractAAE.from_dataset(train, epochs=epochs, seed=0)
history = model.fit(train, held_out, verbose=2)
model.save(out / "example_model.keras")
# the decoder-only stage after the epochs, drawn after them
stage = model.metadata.training.get("polish")
plot_training_curves(history, out / "tutorial_training_curves.png", stage=stage)

###############################################################################
# The latent space of the held-out streamlines: by bundle, by length, and
# latent dimension 0 against length.

z = model.encode_prepared(held_out.x)
plot_latent_space(
    z,
    held_out.labels,
    held_out.lengths,
    held_out.bundle_names,
    out / "tutorial_latent_space.png",
    attribute_name="length",
)

###############################################################################
# Generate AF_L at three lengths within the range seen in training.

lo, hi = model.attribute_range("AF_L")
targets = np.round(np.linspace(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo), 3))
results = [generate(model, "AF_L", float(t), n_streamlines=50, seed=0) for t in targets]
for result in results:
    print(
        f"AF_L at {result.target:.0f} mm: median generated length "
        f"{np.median(result.lengths):.1f} mm"
    )
render_bundles(
    [r.streamlines for r in results],
    out / "tutorial_af_lengths.png",
    # the requested length and the median produced (near the ends of the
    # range a model may fall short; generate() then warns)
    labels=[
        f"AF_L {r.target:.0f} mm (median {np.median(r.lengths):.0f})" for r in results
    ],
    colors=[(0.85, 0.2, 0.15), (0.95, 0.65, 0.1), (0.15, 0.35, 0.85)],
    title="AF_L generated at three lengths",
)
real_af = held_out.x[held_out.labels == held_out.bundle_names.index("AF_L")]
render_comparison(
    real_af,
    results[1].streamlines,
    out / "tutorial_comparison.png",
    bundle="AF_L",
)

###############################################################################
# Measure: reconstruction, label fidelity, length control, AR, diversity and
# density overlap, each beside its real-vs-real ceiling.

metrics = evaluate(model, held_out, n_generate=100, seed=0, train=train)
(out / "tutorial_metrics.json").write_text(json.dumps(metrics, indent=2))
for key in METRIC_NAMES:
    value = metrics[key]
    print(f"{key:22s} {'n/a' if value is None else f'{value:.3f}'}")
