"""Shared fixtures: the embedded default data and a tiny trained model.

The suite runs once per Keras backend (``KERAS_BACKEND=tensorflow`` and
``KERAS_BACKEND=torch``); nothing here picks a backend.
"""

import logging
import os
import zipfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY = {
    "n_points": 32,
    "n_control": 8,
    "filters": (16, 32),
    "disc_units": (32,),
    "latent_dims": 8,
    "batch_size": 32,
    "seed": 0,
}


@pytest.fixture(scope="session")
def minimal_bundles_dir(tmp_path_factory):
    """dipy's shipped minimal_bundles extracted: sub_1..sub_5 x 3 bundles (.trk)."""
    from dipy.data import get_fnames

    out = tmp_path_factory.mktemp("minimal_bundles")
    with zipfile.ZipFile(get_fnames(name="minimal_bundles")) as zf:
        zf.extractall(out)
    return out


@pytest.fixture(scope="session")
def tiny_splits(minimal_bundles_dir):
    """(train, validation) of the embedded default at 32 points."""
    from aae_tract.data import load_dataset, split_dataset

    dataset = load_dataset(minimal_bundles_dir, n_points=TINY["n_points"])
    return split_dataset(dataset, val_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_trained(tiny_splits):
    """A tiny model trained for a few epochs (shared, do not modify)."""
    from aae_tract.model import TractAAE

    train, validation = tiny_splits
    model = TractAAE.from_dataset(train, epochs=3, **TINY)
    history = model.fit(train, validation, verbose=0)
    return model, history


@pytest.fixture(autouse=True)
def _quiet_loggers():
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    yield
