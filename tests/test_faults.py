"""Faults: training killed and resumed, non-finite losses, two runs writing
into one folder, a full disk and a read-only output folder.

Processes that train or write concurrently are real subprocesses (they inherit
``KERAS_BACKEND``, so the suite runs them with each backend).
"""

import contextlib
import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY

from aae_tract.errors import AAETractError, TrainingError
from aae_tract.model import TractAAE

#: Settings of the subprocess training runs (small and quick).
KILL_TINY = {**TINY, "batch_size": 16}
#: Seconds a subprocess may take before the test gives up on it.
SUBPROCESS_TIMEOUT = 420


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("KERAS_BACKEND", keras.backend.backend())
    return env


def _start(script, config, log):
    """Start ``python -c script config`` with its output in the file ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 (closed by _finish)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(config)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    proc.log_handle = handle
    proc.log_path = Path(log)
    return proc


def _finish(proc, timeout=SUBPROCESS_TIMEOUT):
    """Wait for ``proc``; its output; AssertionError (with the log) on failure."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log_handle.close()
    output = proc.log_path.read_text(errors="replace")
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{output}"
    return output


def _result(output):
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output
    return json.loads(lines[-1][len("RESULT ") :])


def assert_folder_whole(folder):
    """Every visible file in ``folder`` loads; hidden ones are only temp files.

    Returns the hidden leftovers.
    """
    leftovers = []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith("."):
            assert ".tmp" in path.name, f"unexpected hidden file {path}"
            leftovers.append(path.name)
            continue
        if path.suffix == ".keras":
            keras.saving.load_model(path, compile=False, safe_mode=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                for name in data.files:
                    np.asarray(data[name])
        else:
            raise AssertionError(f"unexpected file {path}")
    return leftovers


# ------------------------------------------------------- killed and resumed

TRAIN_SCRIPT = """
import json, sys
from pathlib import Path

import keras
import numpy as np

from aae_tract.data import load_dataset, split_dataset
from aae_tract.model import TractAAE

cfg = json.loads(sys.argv[1])
dataset = load_dataset(cfg["data"], n_points=cfg["tiny"]["n_points"])
train, val = split_dataset(dataset, val_fraction=0.2, seed=0)
train = train.subset(np.linspace(0, len(train) - 1, 320).astype(int))  # 20 batches
progress = Path(cfg["progress"])


class Progress(keras.callbacks.Callback):
    epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        progress.write_text(f"{self.epoch} {batch}")


model = TractAAE.from_dataset(train, epochs=cfg["epochs"], **cfg["tiny"])
history = model.fit(
    train,
    val,
    checkpoint_dir=cfg["checkpoint_dir"],
    history_path=cfg["history"],
    resume=cfg["resume"],
    verbose=0,
    callbacks=[Progress()],
)
model.save(cfg["model"])
loaded = TractAAE.load(cfg["model"])
z = loaded.encode_prepared(val.x[:8])
x = loaded.decode(z, val.labels[:8])
steps = len(model._batches(train, shuffle=False, batch_size=cfg["tiny"]["batch_size"]))
iterations = int(keras.ops.convert_to_numpy(model.network.ae_optimizer.iterations))
print("RESULT " + json.dumps({
    "history": history,
    "steps": steps,
    "iterations": iterations,
    "finite": bool(np.isfinite(z).all() and np.isfinite(x).all()),
}))
"""


def _read_progress(path):
    try:
        epoch, batch = path.read_text().split()
        return int(epoch), int(batch)
    except (OSError, ValueError):
        return None


def test_training_killed_mid_epoch_resumes_from_the_last_checkpoint(
    tmp_path, minimal_bundles_dir
):
    """SIGKILL mid-epoch, then resume in a new process: the run continues from
    the last complete checkpoint and its final model is usable."""
    ckpt = tmp_path / "ckpt"
    config = {
        "data": str(minimal_bundles_dir),
        "tiny": KILL_TINY,
        "checkpoint_dir": str(ckpt),
        "history": str(tmp_path / "training_history.json"),
        "model": str(tmp_path / "model.keras"),
        "progress": str(tmp_path / "progress"),
        "epochs": 10_000,
        "resume": False,
    }
    first = _start(TRAIN_SCRIPT, config, tmp_path / "first.log")
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    killed_at = None
    try:
        while time.monotonic() < deadline and first.poll() is None:
            state_file = ckpt / "checkpoint.json"
            progress = _read_progress(tmp_path / "progress")
            if state_file.exists() and progress is not None:
                done = json.loads(state_file.read_text())["epoch"]
                # a few batches into an epoch after the checkpoint's
                if progress[0] >= done and progress[1] >= 3:
                    os.kill(first.pid, signal.SIGKILL)
                    killed_at = progress
                    break
            time.sleep(0.05)
    finally:
        if first.poll() is None and killed_at is None:
            first.kill()
        first.wait()
        first.log_handle.close()
    log = first.log_path.read_text(errors="replace")
    assert killed_at is not None, f"no checkpoint before the deadline:\n{log}"
    assert first.returncode == -signal.SIGKILL

    # what the killed run left: whole files, a state naming a complete epoch
    leftovers = assert_folder_whole(ckpt)
    state = json.loads((ckpt / "checkpoint.json").read_text())
    done = state["epoch"]
    assert 1 <= done <= killed_at[0] + 1
    assert (ckpt / state["model"]).is_file() and (ckpt / state["optimizers"]).is_file()
    assert all(len(values) == done for values in state["history"].values())
    history_file = json.loads(Path(config["history"]).read_text())
    assert history_file["epochs"] == done
    assert state["model"] not in leftovers and state["optimizers"] not in leftovers

    # resume in a new process for two more epochs
    config.update(resume=True, epochs=done + 2)
    second = _start(TRAIN_SCRIPT, config, tmp_path / "second.log")
    result = _result(_finish(second))
    history = result["history"]
    for key, values in state["history"].items():
        assert len(history[key]) == done + 2, key
        np.testing.assert_allclose(history[key][:done], values, rtol=1e-6)
    assert result["iterations"] == (done + 2) * result["steps"]
    assert result["finite"]
    final = json.loads((ckpt / "checkpoint.json").read_text())
    assert final["epoch"] == done + 2
    assert len(list(ckpt.glob("epoch-*.keras"))) == 1
    assert_folder_whole(ckpt)
    assert json.loads(Path(config["history"]).read_text())["epochs"] == done + 2

    model = TractAAE.load(config["model"])
    assert model.metadata.training["epochs"] == done + 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------- non-finite losses


def _copy(dataset, n=160):
    """A copy (own arrays) of ``n`` streamlines spread over ``dataset``."""
    part = dataset.subset(np.linspace(0, len(dataset) - 1, n).astype(int))
    return dataclasses.replace(part, x=np.array(part.x, dtype="float32"))


class _PoisonData(keras.callbacks.Callback):
    """At the start of ``epoch``, put ``value`` into a few training streamlines
    (as a corrupted memory-mapped cache would)."""

    def __init__(self, x, epoch, value):
        super().__init__()
        self.x, self.epoch, self.value = x, epoch, value

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.x[5:8, 3, :] = self.value


@pytest.mark.parametrize("value", [np.nan, 3e38])
def test_non_finite_data_stops_training_and_keeps_the_checkpoint(
    tiny_splits, tmp_path, value
):
    clean, poisoned = _copy(tiny_splits[0]), _copy(tiny_splits[0])
    ckpt = tmp_path / "ckpt"
    model = TractAAE.from_dataset(clean, epochs=2, **TINY)
    with pytest.raises(TrainingError, match="last good checkpoint") as info:
        model.fit(
            poisoned,
            checkpoint_dir=ckpt,
            verbose=0,
            callbacks=[_PoisonData(poisoned.x, 1, value)],
        )
    assert str(ckpt) in str(info.value)
    state = json.loads((ckpt / "checkpoint.json").read_text())
    assert state["epoch"] == 1
    assert all(np.isfinite(v).all() for v in state["history"].values())
    saved = keras.saving.load_model(ckpt / state["model"], compile=False)
    assert all(np.isfinite(w).all() for w in saved.get_weights())
    assert_folder_whole(ckpt)

    # the clean data resumes from the good checkpoint
    again = TractAAE.from_dataset(clean, epochs=2, **TINY)
    history = again.fit(clean, checkpoint_dir=ckpt, resume=True, verbose=0)
    assert len(history["loss"]) == 2
    np.testing.assert_allclose(history["loss"][:1], state["history"]["loss"])
    assert np.isfinite(history["loss"]).all()


def test_non_finite_data_from_the_start_is_an_error(tiny_splits, tmp_path):
    bad = _copy(tiny_splits[0])
    bad.x[0, 0, 0] = np.nan
    with pytest.raises(AAETractError, match="(?i)nan|non-finite") as info:
        model = TractAAE.from_dataset(bad, epochs=2, **TINY)
        model.fit(bad, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    assert not (tmp_path / "ckpt" / "checkpoint.json").exists()
    assert "holds no checkpoint" in str(info.value)


# ------------------------------------------------ two runs, one output folder

WRITER_SCRIPT = """
import json, sys, time
from pathlib import Path

from aae_tract.data_fetchers.fetcher import extract_zip, minimal_bundles_archive
from aae_tract.io import load_bundle, save_tractogram
from aae_tract.model import TractAAE
from aae_tract.model.training import save_checkpoint, write_json_atomic
from aae_tract.workflows.base import write_json_atomic as workflow_json

cfg = json.loads(sys.argv[1])
out, tag = Path(cfg["out"]), cfg["tag"]
model = TractAAE.load(cfg["model"])
model.metadata.training["writer"] = tag
sft = load_bundle(cfg["bundle"])
sft = sft[list(range(cfg["n_streamlines"]))]
payload = {"writer": tag, "values": [tag] * 20000}
Path(cfg["ready"]).touch()
while not Path(cfg["go"]).exists():
    time.sleep(0.01)
for i in range(cfg["rounds"]):
    model.save(out / "model.keras")
    save_tractogram(sft, out / "bundle.trk")
    write_json_atomic(out / "history.json", payload)
    workflow_json(out / "metrics.json", payload)
    save_checkpoint(model.network, out / "ckpt", i + 1, {"writer": [tag]})
    extract_zip(minimal_bundles_archive(), out / "minimal_bundles", downloaded=False)
print("RESULT " + json.dumps({"rounds": cfg["rounds"]}))
"""

WRITERS = {"A": 20, "B": 35}  # tag -> streamlines written to bundle.trk


def _check_json(path):
    payload = json.loads(path.read_text())
    assert payload["writer"] in WRITERS
    assert set(payload["values"]) == {payload["writer"]}


def _check_trk(path):
    from aae_tract.io import load_bundle

    assert len(load_bundle(path)) in WRITERS.values()


def _check_model_archive(path):
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        meta = json.loads(archive.read("aae_tract.json"))
    assert meta["training"]["writer"] in WRITERS


def test_two_runs_writing_the_same_outputs_do_not_corrupt_them(
    tmp_path, tiny_trained, minimal_bundles_dir
):
    """Two processes write the model, a tractogram, JSON, checkpoints and an
    extracted dataset to the same names, again and again, while this test
    reads them: every read and every final file is whole, from one run."""
    model, _ = tiny_trained
    source = model.save(tmp_path / "source.keras")
    out = tmp_path / "out"
    out.mkdir()
    go = tmp_path / "go"
    procs = []
    for tag, n in WRITERS.items():
        config = {
            "out": str(out),
            "tag": tag,
            "model": str(source),
            "bundle": str(minimal_bundles_dir / "sub_1" / "AF_L.trk"),
            "n_streamlines": n,
            "rounds": 8,
            "ready": str(tmp_path / f"ready-{tag}"),
            "go": str(go),
        }
        procs.append(_start(WRITER_SCRIPT, config, tmp_path / f"{tag}.log"))
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not all((tmp_path / f"ready-{tag}").exists() for tag in WRITERS):
        assert time.monotonic() < deadline, "writers did not start"
        assert all(p.poll() is None for p in procs), [
            p.log_path.read_text() for p in procs
        ]
        time.sleep(0.05)
    go.touch()
    checks = {
        "history.json": _check_json,
        "metrics.json": _check_json,
        "bundle.trk": _check_trk,
        "model.keras": _check_model_archive,
    }
    reads = 0
    while any(p.poll() is None for p in procs):
        for name, checker in checks.items():
            if (out / name).exists():  # once written, always there (renames)
                checker(out / name)
                reads += 1
    for proc in procs:
        _finish(proc)
    assert reads > 0
    for name, checker in checks.items():
        checker(out / name)
    loaded = TractAAE.load(out / "model.keras")
    assert loaded.metadata.training["writer"] in WRITERS
    assert np.isfinite(loaded.encode_prepared(np.zeros((2, 32, 3), "f4"))).all()
    assert_folder_whole(out / "ckpt")
    fetched = sorted(
        p.relative_to(out / "minimal_bundles").as_posix()
        for p in (out / "minimal_bundles").rglob("*.trk")
    )
    assert len(fetched) == 15
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert not hidden, f"temporary files left behind: {hidden}"


# --------------------------------------------- full disk, read-only folder


def _mount_tmpfs(folder, size):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


def _umount(folder):
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


class FullDisk:
    """A folder whose writes can be made to fail for lack of space.

    ``tmpfs``: a small tmpfs mounted there (needs root), filled up by
    :meth:`full` but for a few KiB: writes fail with ENOSPC.
    ``fsize``: :meth:`full` sets RLIMIT_FSIZE to a few KiB for this process:
    writes beyond fail with EFBIG (what a quota or a file-size limit does).
    """

    FREE = 16 * 1024

    def __init__(self, folder, kind):
        self.folder, self.kind = folder, kind

    @contextlib.contextmanager
    def full(self, free=FREE):
        if self.kind == "tmpfs":
            filler = self.folder / "filler"
            stat = os.statvfs(self.folder)
            size = stat.f_bavail * stat.f_frsize - free
            with open(filler, "wb") as handle:
                handle.truncate(0)
                chunk = b"\0" * (1 << 16)
                while size > 0:
                    try:
                        handle.write(chunk[: min(size, len(chunk))])
                        handle.flush()
                    except OSError:
                        break
                    size -= len(chunk)
            try:
                yield
            finally:
                filler.unlink()
        else:
            previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (free, hard))
            try:
                yield
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
                signal.signal(signal.SIGXFSZ, previous)


@pytest.fixture(params=["tmpfs", "fsize"])
def full_disk(request, tmp_path):
    folder = tmp_path / "disk"
    if request.param == "tmpfs":
        if not _mount_tmpfs(folder, "4m"):
            pytest.skip("cannot mount a tmpfs here (needs root); fsize covers it")
        yield FullDisk(folder, "tmpfs")
        _umount(folder)
    else:
        folder.mkdir()
        yield FullDisk(folder, "fsize")


@pytest.fixture
def read_only_folder(tmp_path):
    """(folder, make_read_only): outputs are written, then the folder is made
    read-only (chmod for a normal user; a tmpfs remounted read-only for root,
    whom permissions do not stop)."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()

        def make_read_only():
            folder.chmod(0o555)

        yield folder, make_read_only
        folder.chmod(0o755)
        return
    if not _mount_tmpfs(folder, "4m"):
        pytest.skip("root, and no tmpfs can be mounted to make a read-only folder")

    def remount():
        done = subprocess.run(
            ["mount", "-o", "remount,ro", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr.decode()}")

    yield folder, remount
    _umount(folder)


def _big_tractogram(minimal_bundles_dir, n=3000):
    from dipy.io.stateful_tractogram import StatefulTractogram

    from aae_tract.io import load_bundle

    sft = load_bundle(minimal_bundles_dir / "sub_1" / "AF_L.trk")
    streamlines = [s + i % 7 for i, s in enumerate(list(sft.streamlines) * (n // 50))]
    return StatefulTractogram.from_sft(streamlines, sft)


def _output_writers(tiny_trained, minimal_bundles_dir):
    """name -> (file name, write(path, big)); big=False writes a small one."""
    from aae_tract.io import load_bundle, save_tractogram
    from aae_tract.model.training import write_json_atomic
    from aae_tract.workflows.base import write_json_atomic as workflow_json

    model, _ = tiny_trained
    small_sft = load_bundle(minimal_bundles_dir / "sub_1" / "AF_L.trk")
    big_sft = _big_tractogram(minimal_bundles_dir)
    small, big = {"values": [1] * 10}, {"values": list(range(100_000))}
    return {
        "model": ("aae_tract_model.keras", lambda p, large: model.save(p)),
        "tractogram": (
            "AF_L_length80.trk",
            lambda p, large: save_tractogram(big_sft if large else small_sft, p),
        ),
        "history json": (
            "training_history.json",
            lambda p, large: write_json_atomic(p, big if large else small),
        ),
        "workflow json": (
            "metrics.json",
            lambda p, large: workflow_json(p, big if large else small),
        ),
    }


WRITER_NAMES = ["model", "tractogram", "history json", "workflow json"]


@pytest.mark.parametrize("writer", WRITER_NAMES)
def test_full_disk_is_a_clear_error_and_keeps_earlier_outputs(
    full_disk, writer, tiny_trained, minimal_bundles_dir
):
    name, write = _output_writers(tiny_trained, minimal_bundles_dir)[writer]
    path = full_disk.folder / name
    write(path, False)
    earlier = path.read_bytes()
    with full_disk.full(), pytest.raises(AAETractError) as info:
        write(path, True)
    assert str(path) in str(info.value)
    assert path.read_bytes() == earlier
    left = sorted(p.name for p in full_disk.folder.iterdir())
    assert left == [name], f"left behind: {left}"


@pytest.mark.parametrize("writer", WRITER_NAMES)
def test_read_only_folder_is_a_clear_error_and_keeps_earlier_outputs(
    read_only_folder, writer, tiny_trained, minimal_bundles_dir
):
    folder, make_read_only = read_only_folder
    name, write = _output_writers(tiny_trained, minimal_bundles_dir)[writer]
    path = folder / name
    write(path, False)
    earlier = path.read_bytes()
    make_read_only()
    with pytest.raises(AAETractError) as info:
        write(path, False)
    assert str(path) in str(info.value)
    assert path.read_bytes() == earlier
    assert sorted(p.name for p in folder.iterdir()) == [name]


class _FillDiskAfter(keras.callbacks.Callback):
    def __init__(self, disk, epoch):
        super().__init__()
        self.disk, self.epoch, self.stack = disk, epoch, contextlib.ExitStack()

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.stack.enter_context(self.disk.full())


def test_full_disk_while_checkpointing_keeps_the_last_checkpoint(
    full_disk, tiny_splits
):
    train = _copy(tiny_splits[0])
    ckpt = full_disk.folder / "ckpt"
    model = TractAAE.from_dataset(train, epochs=2, **TINY)
    filler = _FillDiskAfter(full_disk, 0)
    with filler.stack, pytest.raises(AAETractError) as info:
        model.fit(train, checkpoint_dir=ckpt, verbose=0, callbacks=[filler])
    assert str(ckpt) in str(info.value)
    state = json.loads((ckpt / "checkpoint.json").read_text())
    assert state["epoch"] == 1
    assert_folder_whole(ckpt)
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]


def test_full_disk_while_caching_a_dataset(full_disk, minimal_bundles_dir):
    from aae_tract.data import load_dataset

    cache = full_disk.folder / "cache"
    with full_disk.full(), pytest.raises(AAETractError) as info:
        load_dataset(minimal_bundles_dir, n_points=256, cache_dir=cache)
    assert str(cache) in str(info.value)
    assert not cache.exists() or not list(cache.iterdir())
    # with room again the cache is built and used
    first = load_dataset(minimal_bundles_dir, n_points=64, cache_dir=cache)
    again = load_dataset(minimal_bundles_dir, n_points=64, cache_dir=cache)
    np.testing.assert_array_equal(np.asarray(first.x), np.asarray(again.x))


def test_full_disk_while_fetching_keeps_the_earlier_copy(full_disk):
    from aae_tract.data_fetchers import fetch_minimal_bundles

    home = full_disk.folder / "home"
    folder = fetch_minimal_bundles(home)
    (folder / "sub_2" / "CST_R.trk").unlink()  # incomplete: the next fetch redoes it
    before = sorted(p.relative_to(home).as_posix() for p in home.rglob("*"))
    with full_disk.full(free=4096), pytest.raises(AAETractError) as info:
        fetch_minimal_bundles(home)
    assert str(home) in str(info.value)
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == before
    assert len(list(fetch_minimal_bundles(home).rglob("*.trk"))) == 15


# ------------------------------------------------- command-line values
#
# tests/test_cli.py runs the documented bad values through the console
# scripts; these are the ones it leaves out (absurd sizes, corrupt inputs),
# run in this process through the same entry point.


@pytest.fixture
def cli(tmp_path, monkeypatch, capfd):
    """Run ``aae_tract_<name> args`` in this process: (status, stdout, stderr)."""
    import logging

    from aae_tract.workflows import cli as entry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AAE_TRACT_HOME", str(tmp_path / "home"))
    loggers = [logging.getLogger(), *map(logging.getLogger, ("aae_tract", "dipy"))]

    def run(name, *args):
        levels = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
        capfd.readouterr()
        try:
            status = entry.main(name, [str(a) for a in args])
        finally:
            for lg, level, handlers in levels:
                lg.setLevel(level)
                lg.handlers[:] = handlers
        out, err = capfd.readouterr()
        return status, out, err

    return run


def _one_clear_line(name, status, out, err, expected):
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1, (status, err)
    assert "Traceback" not in out + err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"aae_tract_{name}: error: "), lines
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def saved_tiny_model(tiny_trained, tmp_path_factory):
    model, _ = tiny_trained
    return model.save(tmp_path_factory.mktemp("cli_model") / "aae_tract_model.keras")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--length", "inf"], "--length"),
        (["--length=-inf"], "--length"),
        (["--length", "1e308"], "--length"),
        (["--n_streamlines", "10000000000"], "--n_streamlines"),
        (["--bundle", ""], "unknown bundle"),
    ],
)
def test_generate_refuses_absurd_values(cli, saved_tiny_model, args, expected):
    status, out, err = cli("aae_tract_generate", "--model", saved_tiny_model, *args)
    _one_clear_line("generate", status, out, err, expected)
    assert not list(Path.cwd().glob("*.trk"))


def _broken_folder(minimal_bundles_dir, tmp_path):
    folder = tmp_path / "broken"
    (folder / "sub_1").mkdir(parents=True)
    shutil.copy(minimal_bundles_dir / "sub_1" / "AF_L.trk", folder / "sub_1")
    data = (minimal_bundles_dir / "sub_1" / "CST_R.trk").read_bytes()
    (folder / "sub_1" / "CST_R.trk").write_bytes(data[: len(data) // 3])
    return folder


@pytest.mark.parametrize(
    "name, args, expected",
    [
        ("train", ["{broken}", "--epochs", "1"], "CST_R.trk"),
        ("render", ["{broken}"], "CST_R.trk"),
        ("train", ["{data}", "--n_points", "1000000000"], "--n_points"),
        ("train", ["{data}", "--latent_dims", "100000"], "latent_dims"),
        ("evaluate", ["{unknown}", "--model", "{model}"], "bundle"),
        (
            "fetch",
            ["phantom", "--n_subjects", "1000000000", "--n_per_bundle", "1000000000"],
            "at most",
        ),
    ],
)
def test_commands_refuse_corrupt_inputs_and_absurd_sizes(
    cli, tmp_path, minimal_bundles_dir, saved_tiny_model, name, args, expected
):
    unknown = tmp_path / "unknown" / "sub_1"
    unknown.mkdir(parents=True)
    shutil.copy(minimal_bundles_dir / "sub_1" / "AF_L.trk", unknown / "XX_L.trk")
    values = {
        "broken": _broken_folder(minimal_bundles_dir, tmp_path),
        "data": minimal_bundles_dir,
        "unknown": unknown.parent,
        "model": saved_tiny_model,
    }
    args = [str(a).format(**values) for a in args]
    status, out, err = cli(f"aae_tract_{name}", *args, "--out_dir", tmp_path / "out")
    _one_clear_line(name, status, out, err, expected)
