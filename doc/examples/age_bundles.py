"""
=============================================
A bundle at age 30 and at age 75
=============================================

This example conditions the model on the subjects' age instead of streamline
length. It makes the age phantom (30 subjects aged 20-80; every bundle 3 %
shorter per decade past 50, written in its ground truth), trains on 20
subjects with ``attribute="age"``, generates AF_L at ages 30 and 75, reads the
age of the 10 held-out subjects back from their bundles, and makes the figure
of the user guide.

Run it with ``python doc/examples/age_bundles.py``; set
``AAE_TRACT_EXAMPLE_EPOCHS`` for a shorter run, ``AAE_TRACT_EXAMPLE_OUT`` for
the output folder (default: ``doc/figures``), ``AAE_TRACT_HOME`` for where
the phantom is written, and ``AAE_TRACT_EXAMPLE_MODEL`` to measure a model an
earlier run saved (``age_model.keras``) instead of training again.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np

from aae_tract.attribute import (
    attribute_mae,
    attribute_slope_error,
    estimate_attribute,
)
from aae_tract.data import load_dataset, split_dataset
from aae_tract.data_fetchers import make_phantom
from aae_tract.generate import generate
from aae_tract.model import TractAAE
from aae_tract.viz import render_bundles

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
epochs = int(os.environ.get("AAE_TRACT_EXAMPLE_EPOCHS", "100"))
n_points = int(os.environ.get("AAE_TRACT_EXAMPLE_POINTS", "64"))
out = Path(os.environ.get("AAE_TRACT_EXAMPLE_OUT", "doc/figures"))
out.mkdir(parents=True, exist_ok=True)
home = Path(os.environ.get("AAE_TRACT_HOME", Path.home() / ".aae_tract"))

###############################################################################
# The age phantom: one ``participants.tsv`` gives every subject's age, and
# the loader reads the attribute from it. Whole subjects are held out.

folder = make_phantom(
    home / "age_phantom", n_subjects=30, n_per_bundle=40, seed=0, fragments=0.0
)
truth = json.loads((folder / "ground_truth.json").read_text())
dataset = load_dataset(folder, n_points=n_points, attribute="age")
train, held_out = split_dataset(dataset, val_fraction=1 / 3, seed=0)
print(
    f"{len(np.unique(train.subjects))} training subjects, "
    f"{len(np.unique(held_out.subjects))} held out"
)

###############################################################################
# Train: the model takes its attribute (age) from the dataset. Latent
# dimension 0 is tied to age by attribute regularization over subjects: age is
# one value per subject, so the loss orders each subject's mean code, and a
# batch of 128 holds 8 subjects x 16 streamlines.

saved = os.environ.get("AAE_TRACT_EXAMPLE_MODEL")
if saved:
    model = TractAAE.load(saved)
    epochs = model.metadata.training.get("epochs", epochs)
else:
    model = TractAAE.from_dataset(train, epochs=epochs, batch_size=128, seed=0)
    model.fit(train, held_out, verbose=2)
    model.save(out / "age_model.keras")

###############################################################################
# Generate AF_L at 30 and at 75 years. The phantom's ground truth says how
# long the bundle should be at each age: its median length at 50 times the
# age factor ``1 - age_effect * (age - 50) / 10``.


def truth_median(bundle, age):
    """Median length of ``bundle`` at ``age`` according to the phantom."""
    effect = truth["options"]["age_effect"]
    return truth["bundles"][bundle]["median_length_mm"] * (
        1.0 - effect * (age - 50.0) / 10.0
    )


ages = (30, 75)
results = [
    generate(model, "AF_L", attribute=float(a), n_streamlines=100, seed=0) for a in ages
]
numbers = {"epochs": epochs, "ages": {}}
for age, result in zip(ages, results):
    numbers["ages"][age] = {
        "median_generated_mm": result.median_length,
        "median_truth_mm": truth_median("AF_L", age),
    }
    print(
        f"AF_L at age {age}: median generated length {result.median_length:.1f} mm "
        f"(phantom truth {truth_median('AF_L', age):.1f} mm)"
    )
render_bundles(
    [r.streamlines[:50] for r in results],
    out / "tutorial_age.png",
    labels=[f"AF_L age {a}" for a in ages],
    colors=[(0.15, 0.35, 0.85), (0.85, 0.2, 0.15)],
    title="AF_L generated at age 30 (blue) and 75 (red)",
)

###############################################################################
# How well the model learned the effect: per bundle, the slope of the
# generated median length against the requested age, beside the slope of the
# training subjects' real bundles (``attribute_slope_error`` is their
# relative difference).

slopes = attribute_slope_error(model, train, seed=0)
numbers["slopes"] = slopes["per_bundle"]
for bundle, row in slopes["per_bundle"].items():
    print(
        f"{bundle:7s} slope generated {row['slope_generated']:+.3f} mm/year, "
        f"real {row['slope_real']:+.3f}, error {row['error']:.0%}, "
        f"monotone {row['monotone']}"
    )

###############################################################################
# The inverse: read a held-out subject's age from its bundles. By default
# this inverts generation (the age at which the generated bundles have the
# subject's median lengths); ``method="encoder"`` reads latent dimension 0
# through the inverse of the calibration instead. Then the mean absolute
# error over the held-out subjects, beside the trivial baseline (guessing the
# training subjects' mean age).

subject = str(np.unique(held_out.subjects)[0])
rows = held_out.subjects == subject
names = np.asarray(held_out.bundle_names)[held_out.labels[rows]]
estimate, _ = estimate_attribute(model, held_out.x[rows], list(names))
true_age = float(np.asarray(held_out.attribute)[rows][0])
print(f"{subject}: age {true_age:.1f}, read back {estimate:.1f}")
for method in ("generation", "encoder"):
    read_back = attribute_mae(model, held_out, train=train, method=method)
    numbers[f"attribute_mae_{method}"] = read_back["mae"]
    numbers["attribute_mae_baseline"] = read_back["baseline_mae"]
    print(
        f"age read back from {len(read_back['per_subject'])} held-out subjects "
        f"({method}): mean absolute error {read_back['mae']:.1f} years "
        f"(baseline {read_back['baseline_mae']:.1f})"
    )
(out / "tutorial_age.json").write_text(json.dumps(numbers, indent=2))
