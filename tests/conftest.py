"""Shared fixtures: the embedded default data and a tiny trained model.

The suite runs once per Keras backend (``KERAS_BACKEND=tensorflow`` and
``KERAS_BACKEND=torch``; CI runs the model's tests with ``KERAS_BACKEND=jax``
too); nothing here picks a backend.
"""

import json
import logging
import os
import sys
import zipfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _share_cores_between_workers():
    """Under pytest-xdist with the torch backend, give each worker its share
    of the cores: torch starts one thread per core in every process, and
    with several workers (and the commands' child processes) those threads
    contend for the same cores. Set before torch is imported, through the
    environment so that child processes inherit it; an
    ``OMP_NUM_THREADS`` already set is kept."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers or os.environ.get("KERAS_BACKEND") != "torch":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    share = max(1, (cores or os.cpu_count() or 1) // max(1, int(workers)))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))


_share_cores_between_workers()


@pytest.fixture(autouse=True)
def _float32_unless_asked(monkeypatch):
    """Label in float32 under ``precision="auto"`` whatever the CPU, so a
    test's labels do not depend on the machine (a CPU with native bfloat16
    would otherwise label in it); tests of bfloat16 ask for it, or patch
    this back."""
    import aae_tract.backend

    monkeypatch.setattr(aae_tract.backend, "cpu_has_bfloat16", lambda *a, **k: False)


def run_cli(prog, *args):
    """Run an ``aae_tract_*`` command in this process.

    Logging handlers and level and ``sys.argv`` are restored afterwards.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    argv = list(sys.argv)
    from aae_tract.workflows import cli

    try:
        return cli.main(prog, [str(a) for a in args])
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        sys.argv = argv


def tamper(source, target, *, config=None, meta=None, add=None, drop=()):
    """Copy the .keras archive ``source`` to ``target``, changing members.

    ``config`` / ``meta``: functions of the parsed config.json / aae_tract.json
    returning the new content (an object, or str/bytes written as is).
    """
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            if item.filename in drop:
                continue
            data = src.read(item.filename)
            change = {"config.json": config, "aae_tract.json": meta}.get(item.filename)
            if change is not None:
                data = change(json.loads(data))
                if not isinstance(data, (str, bytes)):
                    data = json.dumps(data)
            dst.writestr(item, data)
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return target


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


def assert_standard_until_fitted(prior, rng, bundle=1):
    """A fitted prior draws N(0, I) for ``bundle`` before its first fit."""
    import numpy as np

    before = prior.sample_numpy(20000, rng, bundle)
    assert np.allclose(before.mean(0), 0, atol=0.05)
    assert np.allclose(np.cov(before, rowvar=False), np.eye(before.shape[1]), atol=0.05)


def fitted_keras_draws(net, z, labels, n_per_bundle):
    """Fit ``net``'s prior to ``(z, labels)`` of two bundles, then draw
    ``n_per_bundle`` Keras samples of each (bundle 0's first)."""
    import keras
    import numpy as np

    net.prior.fit(z, labels)
    onehot = np.repeat(np.eye(2, dtype="float32"), n_per_bundle, axis=0)
    seed = keras.random.SeedGenerator(0)
    return keras.ops.convert_to_numpy(net.prior.sample(len(onehot), seed, onehot))


def train_and_save(splits, folder, name, **options):
    """A tiny model trained 2 epochs with ``options`` and saved as
    ``folder/name.keras``: ``(model, path)``."""
    from aae_tract.model import TractAAE

    train, validation = splits
    model = TractAAE.from_dataset(train, epochs=2, **TINY, **options)
    model.fit(train, validation, verbose=0)
    path = folder / f"{name}.keras"
    model.save(path)
    return model, path


@pytest.fixture(autouse=True)
def _quiet_loggers():
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    yield
