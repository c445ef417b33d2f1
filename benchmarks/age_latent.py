"""What latent dimension 0 of an age model carries, on the age phantom.

The AR loss of an age model (``ar_level="subject"``) orders the subjects'
mean ``z0``; each streamline's own ``z0`` is free around its subject's mean.
For every bundle of every model given with ``--load NAME=PATTERN``
(``{seed}`` in the pattern, ``--seeds``), encoding the training split of
``benchmarks/quality.py --attribute age``, this prints:

- ``within share``: the share of ``z0``'s variance that lies within
  subjects (sum of squared deviations from the subject's mean over those
  from the bundle's mean);
- ``r(z0, length) within``: the correlation of a streamline's deviation
  from its subject's mean ``z0`` with its deviation from its subject's mean
  length;
- ``rho(subject z0, age)``: the Spearman correlation of the subjects' mean
  ``z0`` with their age (what the AR loss asks for);
- ``rho(z0, age)``: the same over streamlines (``ar_spearman``);
- ``mm per z0, within`` and ``across``: the slope of length on ``z0``
  within subjects (pooled deviations) and of the subjects' median length on
  their mean ``z0``;
- ``rho(spread, age)`` and ``rho(median offset, age)``: the Spearman
  correlation with age of each subject's standard deviation of ``z0`` and
  of its median ``z0`` minus its mean (how widely and how unevenly the
  subject's streamlines spread around its mean).

Example::

    python benchmarks/age_latent.py --load 'fitted=models/age_f_seed{seed}.keras'

(the models of ``benchmarks/quality.py --attribute age --model ...``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import AGE_CONFIG, load_splits  # noqa: E402

COLUMNS = (
    "within share",
    "r(z0, length) within",
    "rho(subject z0, age)",
    "rho(z0, age)",
    "mm per z0, within",
    "mm per z0, across",
    "rho(spread, age)",
    "rho(median offset, age)",
)


def latent_rows(z0, dataset):
    """Per bundle of ``dataset``: the numbers of :data:`COLUMNS`."""
    from scipy.stats import spearmanr

    rows = {}
    labels = np.asarray(dataset.labels)
    for b, name in enumerate(dataset.bundle_names):
        sel = labels == b
        z = np.asarray(z0, dtype=float)[sel]
        subjects = np.asarray(dataset.subjects)[sel]
        length = np.asarray(dataset.lengths, dtype=float)[sel]
        age = np.asarray(dataset.attribute, dtype=float)[sel]
        names = np.unique(subjects)
        index = np.searchsorted(names, subjects)
        count = np.bincount(index)
        z_mean = np.bincount(index, z) / count
        len_mean = np.bincount(index, length) / count
        dz, dl = z - z_mean[index], length - len_mean[index]
        sub_age = np.array([age[subjects == s][0] for s in names])
        sub_len = np.array([np.median(length[subjects == s]) for s in names])
        sub_sd = np.array([np.std(dz[index == i]) for i in range(len(names))])
        sub_skew = np.array([np.median(dz[index == i]) for i in range(len(names))])
        rows[name] = dict(
            zip(
                COLUMNS,
                (
                    float((dz**2).sum() / ((z - z.mean()) ** 2).sum()),
                    float(np.corrcoef(dz, dl)[0, 1]),
                    float(spearmanr(z_mean, sub_age)[0]),
                    float(spearmanr(z, age)[0]),
                    float((dz * dl).sum() / (dz**2).sum()),
                    float(np.polyfit(z_mean, sub_len, 1)[0]),
                    float(spearmanr(sub_sd, sub_age)[0]),
                    float(spearmanr(sub_skew, sub_age)[0]),
                ),
            )
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--load",
        action="append",
        required=True,
        metavar="NAME=PATTERN",
        help="models to measure, '{seed}' in the pattern (repeatable)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from aae_tract.model import TractAAE

    train, _ = load_splits(
        "phantom", n_points=AGE_CONFIG["n_points"], data_dir=args.data_dir,
        attribute="age",
    )  # fmt: skip
    for item in args.load:
        name, _, pattern = item.partition("=")
        runs = []
        for seed in args.seeds:
            model = TractAAE.load(pattern.format(seed=seed))
            runs.append(latent_rows(model.encode_prepared(train.x)[:, 0], train))
        print(f"\n{name}: mean (min..max) over seeds {args.seeds}")
        print(" | ".join(["bundle", *COLUMNS]))
        print("|".join(["---"] * (len(COLUMNS) + 1)))
        for bundle in runs[0]:
            cells = []
            for column in COLUMNS:
                values = [run[bundle][column] for run in runs]
                cells.append(
                    f"{np.mean(values):.2f} ({min(values):.2f}..{max(values):.2f})"
                )
            print(" | ".join([bundle, *cells]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
