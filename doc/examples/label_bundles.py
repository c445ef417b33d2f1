"""
=============================================
Labelling a whole-brain tractogram
=============================================

This example uses a trained model as a bundle recogniser. It makes the
phantom with fragments (8 subjects, 6 bundles, half of every bundle's
streamlines cut short, as tracking stops early) and the whole-brain
tractogram of a subject the model never sees: all six bundles mixed with
30 % distractor streamlines that belong to none of them, the true label of
every streamline in the ground truth. It trains on six subjects (one of them
the validation subject on which the labeller sets its "other" thresholds),
labels the held-out tractogram, scores the labels against the truth, and
does it again with only 10 % of the training labels, before and after
self-training on the other 90 % given unlabelled.

Run it with ``python doc/examples/label_bundles.py``; set
``AAE_TRACT_EXAMPLE_EPOCHS`` for a shorter run,
``AAE_TRACT_EXAMPLE_PER_BUNDLE`` for a smaller phantom (streamlines per bundle
and subject, default 150), ``AAE_TRACT_EXAMPLE_OUT`` for the output folder
(default: ``doc/figures``) and ``AAE_TRACT_HOME`` for where the phantom is
written.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from aae_tract.data import load_dataset, split_dataset
from aae_tract.data_fetchers import (
    load_wholebrain_labels,
    make_phantom,
    make_wholebrain,
)
from aae_tract.io import load_bundle
from aae_tract.label import OTHER, label_streamlines, self_train, split_labelled
from aae_tract.model import TractAAE
from aae_tract.viz import render_bundles

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
epochs = int(os.environ.get("AAE_TRACT_EXAMPLE_EPOCHS", "40"))
n_points = int(os.environ.get("AAE_TRACT_EXAMPLE_POINTS", "64"))
per_bundle = int(os.environ.get("AAE_TRACT_EXAMPLE_PER_BUNDLE", "150"))
out = Path(os.environ.get("AAE_TRACT_EXAMPLE_OUT", "doc/figures"))
out.mkdir(parents=True, exist_ok=True)
home = Path(os.environ.get("AAE_TRACT_HOME", Path.home() / ".aae_tract"))

###############################################################################
# The phantom and one held-out subject's whole-brain tractogram
# (``aae_tract_fetch phantom --n_subjects 8 --n_per_bundle 150 --fragments 0.5
# --wholebrain 0.3`` writes the same files).

folder = make_phantom(
    home / "label_phantom",
    n_subjects=8,
    n_per_bundle=per_bundle,
    seed=0,
    fragments=0.5,
)
whole = make_wholebrain(
    folder, home / "label_wholebrain", subjects=["sub-07"], distractors=0.3
)
tractogram = load_bundle(whole / "sub-07.trk")
truth = np.asarray(load_wholebrain_labels(whole, "sub-07"))
print(
    f"sub-07 whole brain: {len(truth)} streamlines, "
    f"{np.mean(truth == OTHER):.0%} distractors"
)

###############################################################################
# Train on sub-01 ... sub-06, one of them the validation subject.

train_dirs = [str(folder / f"sub-0{i}") for i in range(1, 7)]
dataset = load_dataset(train_dirs, n_points=n_points)
train, validation = split_dataset(dataset, val_fraction=1 / 6, seed=0)
model = TractAAE.from_dataset(train, epochs=epochs, n_points=n_points, seed=0)
model.fit(train, validation, verbose=2)

###############################################################################
# Label and score: precision, recall and F1 per bundle and for "other"
# (macro F1: their mean over the bundles, "other" included).


def score(labels):
    """Per-class precision / recall / F1 of ``labels`` against the truth."""
    classes = sorted(set(truth))
    p, r, f, n = precision_recall_fscore_support(
        truth, labels, labels=classes, zero_division=0
    )
    rows = {
        c: {"precision": p[i], "recall": r[i], "f1": f[i], "n": int(n[i])}
        for i, c in enumerate(classes)
    }
    return {"macro_f1": float(np.mean(f)), "per_class": rows}


labels, confidence = label_streamlines(model, tractogram, progress=True)
full = score(labels)
print("label     precision recall  F1     n")
for name, row in full["per_class"].items():
    print(
        f"{name:9s} {row['precision']:.3f}     {row['recall']:.3f}   "
        f"{row['f1']:.3f}  {row['n']}"
    )
print(f"macro F1 {full['macro_f1']:.3f}")

groups = [g for g in model.bundle_names + [OTHER] if (labels == g).any()]
render_bundles(
    [tractogram.streamlines[np.flatnonzero(labels == g)] for g in groups],
    out / "tutorial_labels.png",
    labels=groups,
    title="sub-07 labelled by the model (other: grey)",
)

###############################################################################
# Semi-supervised: keep the labels of 10 % of each bundle's training
# streamlines, train on them alone, then self-train with the other 90 % given
# unlabelled (the model labels them; those it recognises with a posterior of
# at least 0.9 join the labelled ones, and the model trains further on them
# all). ``aae_tract_train ... --label_fraction 0.1`` does the same from the
# command line.

few, pool = split_labelled(train, 0.1, seed=0)
small = TractAAE.from_dataset(few, epochs=epochs, n_points=n_points, seed=0)
small.fit(few, validation, verbose=0)
alone = score(label_streamlines(small, tractogram)[0])
self_train(small, few, validation, pool, epochs=max(1, epochs // 2), verbose=0)
semi = score(label_streamlines(small, tractogram)[0])
for name, result in (
    ("all labels", full),
    ("10 % labels", alone),
    ("10 % + self-training", semi),
):
    print(
        f"{name:22s} macro F1 {result['macro_f1']:.3f}, other recall "
        f"{result['per_class'][OTHER]['recall']:.3f}"
    )

numbers = {
    "epochs": epochs,
    "n_streamlines": int(len(truth)),
    "full": full,
    "fraction_0.1": alone,
    "fraction_0.1_self_trained": semi,
    "mean_confidence_of_bundles": (
        float(confidence[labels != OTHER].mean()) if np.any(labels != OTHER) else None
    ),
}
(out / "tutorial_labels.json").write_text(json.dumps(numbers, indent=2) + "\n")
