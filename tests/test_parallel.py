"""Data-parallel training: two devices follow one device with the same batch.

Each backend's runs go through ``tests/parallel_worker.py`` in processes of
their own: a one-device run writes ``init.keras`` and trains it for two
epochs; then the same file trains on two CPU devices (JAX:
``--xla_force_host_platform_device_count=2``; TensorFlow: two logical CPU
devices; torch: two gloo processes started by ``torch.distributed.run``;
JAX again with two processes of one device each, joined by
``keras.distribution.initialize`` as on two machines), stopped after the
first epoch and resumed from its checkpoint, then one decoder-only epoch
(``polish_epochs``). Every loss
that is a mean over streamlines must agree with the one-device run after
every batch within ``RTOL``, and so must the codes of the trained models
and the means of their fitted priors (``prior="fitted"``: refitted to the
codes by a callback at the start of every epoch).

The attribute-regularization (AR) loss is compared too: with JAX (one
program over the global batch) it is the global batch's and must agree; with
TensorFlow and torch it is each replica's, over half the batch, and it must
differ (the test would catch a change of what the AR pairs are). The model
has an AR weight of 0 here, so the AR loss does not move the weights and the
other losses can agree exactly.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from aae_tract.errors import ConfigError
from aae_tract.model.parallel import check_batch, resolve_devices, shard_rows
from aae_tract.model.training import StreamlineBatches

WORKER = Path(__file__).with_name("parallel_worker.py")
#: Relative tolerance of the per-streamline losses (observed: under 1e-6).
RTOL = 1e-4
CODE_ATOL = 1e-5
MEAN_LOSSES = ("recon_loss", "length_loss", "direction_loss", "smooth_loss")
BACKENDS = ["tensorflow"] + [
    b for b in ("torch", "jax") if importlib.util.find_spec(b) is not None
]


def _env(backend, work):
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JAX_COMPILATION_CACHE_DIR": str(work / "jax-cache"),
    }
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(backend, work, data, devices, *args):
    command = [str(WORKER), str(data), str(work), "--devices", str(devices), *args]
    envs = [_env(backend, work)]
    if backend == "torch" and devices != 1:
        launcher = ["-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc_per_node={devices}", *command]
    if backend == "jax" and devices == "all":
        # two processes of one CPU device each, as two machines would run
        address = f"localhost:{_free_port()}"
        envs = [
            {
                **envs[0],
                "XLA_FLAGS": "",
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                "KERAS_DISTRIBUTION_PROCESS_ID": str(rank),
            }
            for rank in range(2)
        ]
    procs = [
        subprocess.Popen(
            [sys.executable, *command],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"{backend} {devices}:\n{err[-4000:]}"
    return json.loads((work / f"{backend}-{devices}.json").read_text())


#: (backend, devices of the parallel run): two devices of one process (JAX,
#: TensorFlow), two processes of one device (torch; JAX as on two machines).
SETUPS = [(b, 2) for b in BACKENDS] + [("jax", "all")] * ("jax" in BACKENDS)


@pytest.fixture(scope="module")
def one_device(minimal_bundles_dir, tmp_path_factory):
    """``backend -> (work folder, one-device run)``, each run once."""
    done = {}

    def get(backend):
        if backend not in done:
            work = tmp_path_factory.mktemp(f"parallel-{backend}")
            done[backend] = work, _run(backend, work, minimal_bundles_dir, 1, "--init")
        return done[backend]

    return get


@pytest.fixture(scope="module", params=SETUPS, ids=lambda p: f"{p[0]}-{p[1]}")
def runs(request, minimal_bundles_dir, one_device):
    """``(backend, one-device run, two-device run)``."""
    backend, devices = request.param
    work, one = one_device(backend)
    two = _run(backend, work, minimal_bundles_dir, devices, "--interrupt")
    return backend, one, two


def test_two_devices_follow_one(runs):
    backend, one, two = runs
    assert (one["devices"], two["devices"]) == (1, 2)
    assert len(one["batches"]) == len(two["batches"]) == 12
    for mine, ref in zip(two["batches"], one["batches"]):
        where = f"{backend}, epoch {mine['epoch']} batch {mine['batch']}"
        assert (mine["epoch"], mine["batch"]) == (ref["epoch"], ref["batch"])
        for key in MEAN_LOSSES:
            assert mine[key] == pytest.approx(ref[key], rel=RTOL), f"{key}, {where}"
    np.testing.assert_allclose(two["codes"], one["codes"], atol=CODE_ATOL)
    # the fitted prior was refitted to the same codes (and moved from N(0, I))
    np.testing.assert_allclose(two["prior_means"], one["prior_means"], atol=CODE_ATOL)
    assert np.abs(one["prior_means"]).max() > 0.01
    # both optimizers' state comes back to the model: their step counts
    # (6 batches x 2 epochs; the decoder-only epoch after them has its own)
    assert two["ae_steps"] == two["disc_steps"] == one["ae_steps"] == 12
    # the decoder-only epoch averaged its gradients over the devices too
    assert two["polish_recon"] == pytest.approx(one["polish_recon"], rel=RTOL)
    np.testing.assert_allclose(two["decoded"], one["decoded"], atol=1e-3)


def test_ar_pairs_global_with_jax_per_replica_otherwise(runs):
    backend, one, two = runs
    mine = np.array([row["ar_loss"] for row in two["batches"]])
    ref = np.array([row["ar_loss"] for row in one["batches"]])
    assert np.all(np.isfinite(mine))
    if backend == "jax":
        np.testing.assert_allclose(mine, ref, rtol=RTOL)
    else:
        assert np.max(np.abs(mine - ref) / ref) > 10 * RTOL


def test_devices_option_checked():
    assert resolve_devices(None) == resolve_devices("1") == resolve_devices(1) == 1
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ConfigError, match="positive integer or 'all'"):
            resolve_devices(bad)
    if keras.backend.backend() == "torch":
        # outside torchrun there is one process
        with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
            resolve_devices(2)
        assert resolve_devices("all") == 1
    else:
        with pytest.raises(ConfigError, match="sees"):
            resolve_devices(10_000)
        assert resolve_devices("all") >= 1
    with pytest.raises(ConfigError, match="multiple of 4"):
        check_batch(30, 4)
    check_batch(32, 4)


class _Identity:
    def transform(self, x):
        return x


def test_batches_split_evenly_and_shards_cover_the_batch():
    n = 37
    x = np.arange(n * 2 * 3, dtype="float32").reshape(n, 2, 3)
    labels = np.zeros(n, dtype=int)
    attribute = np.arange(n, dtype="float32")

    def batches(**kwargs):
        return StreamlineBatches(
            x, labels, attribute, _Identity(), 1, batch_size=8, seed=3, **kwargs
        )

    whole = batches(replicas=2)
    # 4 full batches; the last 5 rows keep 4 (a multiple of the replicas)
    assert len(whole) == 5 and len(whole[4][2]) == 4
    assert len(batches(replicas=2, shard=(1, 2))[4][2]) == 2
    assert len(batches()[4][2]) == 5
    # fewer than 2 rows per replica left: no last batch
    assert len(batches(replicas=4)) == 4
    for i in range(len(whole)):
        parts = [batches(replicas=2, shard=(r, 2))[i][2] for r in range(2)]
        assert len(parts[0]) == len(parts[1])
        np.testing.assert_array_equal(
            np.sort(np.concatenate(parts)), batches(replicas=2)[i][2]
        )
    np.testing.assert_array_equal(shard_rows(np.arange(6), 1, 2), [1, 3, 5])


def test_split_too_small_for_the_devices():
    from aae_tract.model import TractAAE

    with pytest.raises(ConfigError, match="3 training streamlines cannot be split"):
        TractAAE._check_split_sizes(None, range(3), range(10), 2)
    assert TractAAE._check_split_sizes(None, range(4), range(3), 2) is None
    assert TractAAE._check_split_sizes(None, range(4), range(4), 2) == range(4)


def test_a_finished_cache_entry_is_kept(tmp_path):
    """One process per device builds the same entry: the first stays, so
    another process reading it is not disturbed."""
    from aae_tract.cache import CacheWriter

    first = CacheWriter(tmp_path, "entry")
    first.save_array("x", np.zeros(3))
    second = CacheWriter(tmp_path, "entry")  # started before the first ended
    second.save_array("x", np.ones(3))
    final = first.commit({"n": 1})
    handle = open(final / "x.npy", "rb")  # noqa: SIM115 - a reader, held open
    assert second.commit({"n": 2}) == final
    handle.close()
    np.testing.assert_array_equal(np.load(final / "x.npy"), np.zeros(3))
    assert not second.tmp.exists()
    # an entry found inconsistent is rebuilt: the new one replaces it
    again = CacheWriter(tmp_path, "entry")
    again.save_array("x", np.full(3, 2.0))
    assert again.commit({"n": 3}) == final
    np.testing.assert_array_equal(np.load(final / "x.npy"), np.full(3, 2.0))
