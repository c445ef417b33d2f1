"""TensorFlow, torch and JAX train the same model the same way and read each
other's model files.

Keras fixes its backend per process, so each backend runs
``tests/backend_worker.py`` in a process of its own: TensorFlow writes an
untrained model and trains it; torch and JAX train the same file on the same
batches (the batches are shuffled by NumPy, seeded, so alike on every
backend); JAX stops after the first epoch and resumes from the checkpoint;
and every process encodes a few streamlines with every trained model file it
finds. The tests run whatever the backend of the pytest process, and skip
when JAX is not installed (torch, when missing, is left out).

What is compared, and why: the random numbers of ``keras.random`` differ by
backend, so the comparison uses a model whose random terms do not reach the
autoencoder's gradient (no adversarial, texture or MMD weight, no dropout, a
deterministic posterior). Its autoencoder then follows the same path on every
backend, and every autoencoder loss after every batch (two epochs, the
warm-up of ``reg_scale`` included) must agree with TensorFlow's within
``RTOL`` relative. So must the adversarial loss of the first batch (before
the discriminator has seen a prior sample); the discriminator's loss, which
scores prior samples, is not compared, but both players must have taken every
step and the seed generator must have drawn the same number of times.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

WORKER = Path(__file__).with_name("backend_worker.py")
#: Relative tolerance of the losses: float32 sums in another order (observed
#: differences after 12 steps: under 1e-6 between any two backends). A wrong
#: step (learning rate, optimizer state, reg_scale, resumed state, batch
#: order) moves them by 1e-3 or more.
RTOL = 1e-4
#: Absolute tolerance of the codes of one saved model read by another backend.
CODE_ATOL = 1e-5
AUTOENCODER_LOSSES = (
    "loss",
    "recon_loss",
    "length_loss",
    "direction_loss",
    "smooth_loss",
    "ar_loss",
)
BACKENDS = ["tensorflow"] + [
    b for b in ("torch", "jax") if importlib.util.find_spec(b) is not None
]


def _run(backend, work, data, *args):
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # the resumed run compiles the same training step again: read it back
        "JAX_COMPILATION_CACHE_DIR": str(work / "jax-cache"),
    }
    done = subprocess.run(
        [sys.executable, str(WORKER), *args, str(data), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, f"{backend} {args}:\n{done.stderr[-4000:]}"
    return json.loads((work / f"{args[0]}-{backend}.json").read_text())


@pytest.fixture(scope="module")
def runs(minimal_bundles_dir, tmp_path_factory):
    """``{"train": {backend: result}, "load": result}`` of the worker runs."""
    work = tmp_path_factory.mktemp("backends")
    trained = {}
    for backend in BACKENDS:
        extra = {"tensorflow": ["--init"], "jax": ["--interrupt"]}.get(backend, [])
        trained[backend] = _run(backend, work, minimal_bundles_dir, "train", *extra)
    loaded = _run("tensorflow", work, minimal_bundles_dir, "load")
    return {"train": trained, "load": loaded}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "tensorflow"])
def test_training_matches_tensorflow(runs, backend):
    ours, theirs = runs["train"][backend], runs["train"]["tensorflow"]
    assert len(ours["batches"]) == len(theirs["batches"]) == 12
    for mine, ref in zip(ours["batches"], theirs["batches"]):
        where = f"{backend}, epoch {mine['epoch']} batch {mine['batch']}"
        assert (mine["epoch"], mine["batch"]) == (ref["epoch"], ref["batch"])
        for key in AUTOENCODER_LOSSES:
            assert mine[key] == pytest.approx(ref[key], rel=RTOL), f"{key}, {where}"
    first, ref = ours["batches"][0], theirs["batches"][0]
    assert first["gen_loss"] == pytest.approx(ref["gen_loss"], rel=RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_players_step_and_state_is_carried(runs, backend):
    ours = runs["train"][backend]
    assert ours["ae_steps"] == ours["disc_steps"] == 12
    assert ours["disc_moved"]
    assert all(np.isfinite(row["disc_loss"]) for row in ours["batches"])
    assert ours["reg_scale"] == 1.0  # the warm-up's last value
    # per step, whatever the backend, one texture-noise draw and the default
    # fitted mixture's two (a component, then its Gaussian) (a resumed run
    # starts its seed generator again)
    ref = runs["train"]["tensorflow"]["seed_states"][0]
    assert ours["seed_states"][0] == ref
    assert ref["state"][1] == 3 * 6


def test_jax_resumed_where_it_stopped(runs):
    """The JAX run was stopped after one epoch and resumed from its checkpoint
    (weights and both optimizers' state, written and read as NumPy): its
    second epoch is the uninterrupted TensorFlow run's."""
    jax_run, tf_run = runs["train"]["jax"], runs["train"]["tensorflow"]
    second = [r for r in jax_run["batches"] if r["epoch"] == 1]
    ref = [r for r in tf_run["batches"] if r["epoch"] == 1]
    assert len(second) == len(ref) == 6
    for mine, theirs in zip(second, ref):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=RTOL)


def test_model_files_load_on_every_backend(runs):
    """Each backend's model file, read by every backend, gives its codes."""
    reference = {
        f"trained-{b}": np.array(result["codes"]) for b, result in runs["train"].items()
    }
    readers = [*runs["train"].values(), runs["load"]]
    pairs = 0
    for reader in readers:
        for stem, codes in reader["loaded"].items():
            np.testing.assert_allclose(codes, reference[stem], atol=CODE_ATOL)
            pairs += 1
    # the last reader (TensorFlow) read every backend's file
    assert sorted(runs["load"]["loaded"]) == sorted(reference)
    assert pairs >= len(reference) * 2
