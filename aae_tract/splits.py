"""Which streamlines a model was trained on, and which it has not seen.

Training splits its inputs by subject (:func:`split_dataset`)
and records in the model which files it read and how it split them
(:func:`split_record`). :func:`held_out_data` rebuilds the held-out part from
that record, so a model is measured on streamlines it was not trained on;
other data is used whole.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aae_tract.errors import AAETractError, DatasetError

logger = logging.getLogger(__name__)

#: Default fraction of subjects held out for validation.
VAL_FRACTION = 0.2


def _split_count(n, val_fraction):
    """How many of ``n`` subjects (or streamlines) go to validation: at
    least one and not all when ``val_fraction`` > 0 and ``n`` >= 2."""
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def split_dataset(ds, *, val_fraction=VAL_FRACTION, seed=0):
    """Split into training and validation sets.

    With two or more subjects, whole subjects go to validation (no subject in
    both); with one subject, streamlines are split. The split is a function
    of ``seed``.

    Parameters
    ----------
    ds : StreamlineDataset
        The dataset.
    val_fraction : float, optional
        Fraction of subjects (or of streamlines) for validation, in [0, 1).
    seed : int, optional
        Random seed.

    Returns
    -------
    (StreamlineDataset, StreamlineDataset)
        ``(train, val)``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    unique_subjects = np.unique(ds.subjects)
    if len(unique_subjects) >= 2:
        n_val = _split_count(len(unique_subjects), val_fraction)
        val_subjects = rng.permutation(unique_subjects)[:n_val]
        val_mask = np.isin(ds.subjects, val_subjects)
        logger.info(
            "Split by subject: validation subjects %s", ", ".join(sorted(val_subjects))
        )
    else:
        n_val = _split_count(len(ds), val_fraction)
        val_mask = np.zeros(len(ds), dtype=bool)
        val_mask[rng.permutation(len(ds))[:n_val]] = True
        logger.info("Split by streamline (one subject): %d for validation", n_val)
    return ds.subset(np.flatnonzero(~val_mask)), ds.subset(np.flatnonzero(val_mask))


def input_files(inputs):
    """Resolved paths of the tractograms that ``inputs`` name.

    Parameters
    ----------
    inputs : str, Path, list of them, or None
        Files, folders or glob patterns, as :func:`aae_tract.io.find_bundles`
        reads them; None: the embedded default (DIPY's minimal_bundles,
        extracted when needed).

    Returns
    -------
    list of str
        Absolute paths, in the order the dataset reads them.

    Raises
    ------
    DatasetError, TractogramError
        As :func:`aae_tract.io.find_bundles`: a missing path, a folder without
        tractograms, an unknown extension.
    """
    from aae_tract.io import find_bundles

    if inputs is None:
        from aae_tract.data_fetchers import fetch_minimal_bundles

        inputs = [fetch_minimal_bundles()]
    return [str(f.path.resolve()) for f in find_bundles(inputs)]


def split_record(
    files,
    validation,
    *,
    val_fraction=VAL_FRACTION,
    seed=0,
    participants=None,
    reference=None,
):
    """What a model records about its training data (``metadata.training``).

    Parameters
    ----------
    files : list of str
        The tractograms read (:func:`input_files`).
    validation : StreamlineDataset
        The held-out split.
    val_fraction : float, optional
        As given to :func:`split_dataset`.
    seed : int, optional
        Seed of the split.
    participants, reference : str or Path, optional
        The participants table and the reference anatomy used to read them.

    Returns
    -------
    dict
        JSON-able; :func:`held_out_data` reads it back.
    """
    return {
        "inputs": [str(f) for f in files],
        "val_fraction": float(val_fraction),
        "split_seed": int(seed),
        "validation_subjects": sorted({str(s) for s in validation.subjects}),
        "participants": _resolved(participants),
        "reference": _resolved(reference),
    }


def known_files(model, files):
    """The files among ``files`` whose bundle (file name) ``model`` knows."""
    known = set(model.bundle_names)
    return [f for f in files if Path(f).stem in known]


def is_training_data(model, files):
    """Whether ``files`` are exactly the files ``model`` was trained on."""
    trained_on = set(model.metadata.training.get("inputs") or [])
    return bool(trained_on) and {str(f) for f in files} == trained_on


@dataclass
class HeldOutData:
    """Streamlines to evaluate a model on, and where they come from.

    Attributes
    ----------
    dataset : StreamlineDataset
        Only bundles the model knows.
    files : list of str
        The tractograms read.
    split : bool
        True: the held-out split of the model's training data; False: all
        streamlines of other data.
    description : str
        Where the streamlines come from, for a log or a report.
    train : StreamlineDataset or None
        With ``split``, the training split (for ``novelty_ratio``).
    """

    dataset: object
    files: list
    split: bool
    description: str
    train: object = None


def held_out_data(model, inputs=None, *, reference=None):
    """The streamlines to evaluate ``model`` on.

    Parameters
    ----------
    model : TractAAE
        A trained model; its training record (:func:`split_record`) says
        which files it was trained on and how they were split.
    inputs : list of str, optional
        Files, folders or patterns. None: the model's own training data when
        its files are all still there, else the embedded default.
    reference : str, optional
        Reference anatomy for ``.tck``/``.trx`` inputs; for the model's own
        training data, the one recorded at training is used when not given.

    Returns
    -------
    HeldOutData
        The held-out split when the inputs are the model's training data
        (the same files, split as in training), otherwise every streamline of
        the inputs of bundles the model knows.

    Raises
    ------
    AAETractError
        When no input is a bundle the model knows, or the training data is
        given but training held nothing out.
    """
    from aae_tract.loading import load_dataset

    record = model.metadata.training
    trained_files = list(record.get("inputs") or [])
    still_there = trained_files and all(Path(p).is_file() for p in trained_files)
    if inputs is None and still_there:
        files = trained_files
    else:
        files = input_files(inputs)
    usable = known_files(model, files)
    if not usable:
        raise AAETractError(
            f"none of the {len(files)} input tractograms is a bundle the model "
            f"knows ({', '.join(model.bundle_names)}); bundle names are file names"
        )
    if len(usable) < len(files):
        logger.warning(
            "%d input file(s) of bundles the model does not know are ignored",
            len(files) - len(usable),
        )
    same_data = is_training_data(model, files)
    if inputs is None and not same_data:
        _note_default_inputs(trained_files)
    if reference is None and same_data:
        reference = record.get("reference")
    dataset = load_dataset(
        usable,
        n_points=model.n_points,
        attribute=model.attribute_name,
        participants=record.get("participants") if same_data else None,
        reference=reference,
        orient_refs=dict(model.metadata.orient_refs),
    )
    registration = model.registration
    refs = dict(model.metadata.orient_refs)
    moved = f"; {registration.describe()}" if registration.active else ""
    if not same_data:
        dataset = registration.align(dataset, orient_refs=refs)
        where = f"{len(dataset)} streamlines from {len(usable)} files{moved}"
        return HeldOutData(dataset, usable, False, where)
    train, held_out = split_dataset(
        dataset,
        val_fraction=record.get("val_fraction", VAL_FRACTION),
        seed=record.get("split_seed", model.config.seed),
    )
    if len(held_out) == 0:
        raise AAETractError(
            "the model was trained on these inputs without holding any out "
            "(val_fraction 0): give other data to evaluate on"
        )
    train = registration.align(train, use_stored=True, orient_refs=refs)
    held_out = registration.align(held_out, orient_refs=refs)
    subjects = sorted({str(s) for s in held_out.subjects})
    shown = ", ".join(subjects[:8]) + " ..." * (len(subjects) > 8)
    return HeldOutData(
        held_out,
        usable,
        True,
        f"the held-out split of the training data ({len(held_out)} streamlines; "
        f"subjects {shown}){moved}",
        train,
    )


def _note_default_inputs(trained_files):
    """Warn that a model without its training files is measured on the whole
    embedded default (which is not the training data it records), whose
    streamlines may still be the ones it was trained on."""
    if trained_files:
        gone = [p for p in trained_files if not Path(p).is_file()]
        why = (
            f"{len(gone)} of the model's {len(trained_files)} training files "
            f"are gone (first: {gone[0]})"
        )
    else:
        why = (
            "the model records no training files (a model trained through the "
            "Python API, or saved before it recorded them)"
        )
    logger.warning(
        "%s: measuring it on every streamline of the embedded default, not on "
        "a held-out split; if it was trained on the embedded default these are "
        "its training streamlines: give held-out files as inputs",
        why,
    )


def _resolved(path):
    """An absolute path to record; ``"same"`` (a .trx file's own header) as is."""
    if isinstance(path, str) and path == "same":
        return path
    if isinstance(path, (str, os.PathLike)):
        return str(Path(path).resolve())
    return None
