"""The installed console scripts: --help, and bad values ending in one line.

Every command is run as a user runs it (the console script in a child
process). Bad values must end with exit status 1 and exactly one line on
stderr, ``aae_tract_<name>: error: <message>``, never a traceback. The child
processes run a few at a time to keep the module fast.
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

COMMANDS = (
    "aae_tract_fetch",
    "aae_tract_train",
    "aae_tract_generate",
    "aae_tract_evaluate",
    "aae_tract_render",
    "aae_tract_label",
)

#: Options each --help must list (the documented command-line contract).
HELP_OPTIONS = {
    "aae_tract_fetch": ["name", "--n_subjects", "--n_per_bundle", "--seed"],
    "aae_tract_train": [
        "inputs",
        "--epochs",
        "--batch_size",
        "--latent_dims",
        "--n_points",
        "--attribute",
        "--backend",
        "--seed",
        "--resume",
        "--out_model",
    ],
    "aae_tract_generate": [
        "--model",
        "--bundle",
        "--length",
        "--n_streamlines",
        "--seed",
        "--filter",
        "--format",
        "--reference",
        "--out_tractogram",
    ],
    "aae_tract_evaluate": ["inputs", "--model", "--out_metrics"],
    "aae_tract_render": ["inputs", "--view", "--out_png"],
    "aae_tract_label": ["tractogram", "--model", "--register", "--out_labels"],
}
COMMON_OPTIONS = ["--out_dir", "--force", "--log_level"]


def script(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `pip install -e . --no-deps`")
    return path


def run_all(commands, cwd, env=None):
    """Run ``(name, args)`` console commands a few at a time; CompletedProcess each."""
    env = {**os.environ, **(env or {})}

    def one(command):
        name, args = command
        return subprocess.run(
            [script(name), *[str(a) for a in args]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, commands))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An aae_tract data home with the embedded default in it."""
    from aae_tract.data_fetchers import fetch_minimal_bundles

    folder = tmp_path_factory.mktemp("home")
    fetch_minimal_bundles(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, home):
    """A tiny model (1 epoch) with its checkpoint, as aae_tract_train leaves it."""
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.model import TractAAE
    from aae_tract.splits import input_files
    from aae_tract.workflows.train import CHECKPOINT_DIR

    out = tmp_path_factory.mktemp("model")
    data = home / "minimal_bundles"
    train, validation = split_dataset(load_dataset(data, n_points=16), seed=0)
    model = TractAAE.from_dataset(
        train,
        n_control=8,
        filters=(8,),
        disc_units=(8,),
        latent_dims=4,
        batch_size=64,
        epochs=1,
    )
    model.fit(train, validation, checkpoint_dir=out / CHECKPOINT_DIR, verbose=0)
    model.metadata.training.update(
        {"inputs": input_files([data]), "val_fraction": 0.2, "split_seed": 0}
    )
    model.save(out / "aae_tract_model.keras")
    return out


def test_console_scripts_are_installed():
    for name in COMMANDS:
        script(name)


def test_help_of_every_command(tmp_path):
    done = run_all([(name, ["--help"]) for name in COMMANDS], tmp_path)
    for name, result in zip(COMMANDS, done):
        assert result.returncode == 0, (name, result.stderr)
        text = result.stdout
        assert f"usage: {name}" in text
        for option in HELP_OPTIONS[name] + COMMON_OPTIONS:
            assert option in text, (name, option)
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # --help writes nothing


def bad_value_cases(home, model_dir, tmp):
    """(name, args, expected part of the message) for each bad value."""
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a tractogram\n")
    broken = tmp / "broken.keras"
    broken.write_text("this is not a model\n")
    model = model_dir / "aae_tract_model.keras"
    data = home / "minimal_bundles"
    resumed = tmp / "resumed"
    shutil.copytree(model_dir, resumed)
    tiny = ["--n_control", "8", "--filters", "8", "--disc_units", "8"]
    tiny += ["--latent_dims", "4", "--epochs", "2"]
    return [
        ("aae_tract_fetch", ["bogus"], "unknown dataset 'bogus'"),
        ("aae_tract_fetch", ["phantom", "--n_subjects", "0"], "--n_subjects"),
        ("aae_tract_train", [empty], "no tractogram"),
        ("aae_tract_train", [tmp / "nowhere"], "no such file or folder"),
        ("aae_tract_train", ["--epochs", "0"], "--epochs must be at least 1"),
        ("aae_tract_train", ["--batch_size", "-4"], "--batch_size"),
        ("aae_tract_train", ["--learning_rate", "nan"], "--learning_rate"),
        ("aae_tract_train", [data, "--attribute", "age"], "participants"),
        ("aae_tract_train", [data, "--devices", "two"], "positive integer or 'all'"),
        # more devices than there are (TensorFlow, JAX) or processes (torch)
        ("aae_tract_train", [data, "--devices", "1000"], "devices=1000"),
        (
            "aae_tract_train",
            [data, *tiny, "--n_points", "24", "--resume", "--out_dir", resumed],
            "n_points",
        ),
        ("aae_tract_generate", ["--model", tmp / "none.keras"], "model file not found"),
        ("aae_tract_generate", ["--model", model, "--length", "-5"], "--length"),
        ("aae_tract_generate", ["--model", model, "--length", "0"], "--length"),
        ("aae_tract_generate", ["--model", model, "--length", "nan"], "finite"),
        ("aae_tract_generate", ["--model", model, "--length", "5000"], "at most"),
        ("aae_tract_generate", ["--model", model, "--n_streamlines", "0"], "at least"),
        (
            "aae_tract_generate",
            ["--model", model, "--n_streamlines", "-3"],
            "--n_streamlines",
        ),
        ("aae_tract_generate", ["--model", model, "--bundle", "XYZ"], "AF_L"),
        (
            "aae_tract_generate",
            ["--model", model, "--subject_noise", "-1"],
            "--subject_noise",
        ),
        ("aae_tract_generate", ["--model", model, "--noise", "-0.1"], "--noise"),
        (
            "aae_tract_generate",
            ["--model", model, "--noise_scope", "wide"],
            "--noise_scope",
        ),
        (
            "aae_tract_evaluate",
            ["--model", model, "--noise", "-1"],
            "--noise",
        ),
        (
            "aae_tract_generate",
            ["--model", model, "--placement_noise", "nan"],
            "--placement_noise",
        ),
        (
            "aae_tract_evaluate",
            ["--model", model, "--placement_noise", "-2"],
            "--placement_noise",
        ),
        ("aae_tract_generate", ["--model", model, "--noise", "nan"], "--noise"),
        ("aae_tract_generate", ["--model", broken], "broken.keras"),
        ("aae_tract_evaluate", ["--model", tmp / "none.keras"], "model file not found"),
        ("aae_tract_evaluate", [empty, "--model", model], "no tractogram"),
        ("aae_tract_render", [empty], "no tractogram"),
        ("aae_tract_fetch", ["list", "--log_level", "LOUD"], "--log_level"),
    ]


@pytest.fixture(scope="module")
def bad_value_runs(home, model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    cases = bad_value_cases(home, model_dir, tmp)
    env = {"AAE_TRACT_HOME": str(home)}
    done = run_all([(name, args) for name, args, _ in cases], tmp, env=env)
    return list(zip(cases, done))


def test_bad_values_end_in_one_clear_line(bad_value_runs):
    for (name, args, expected), result in bad_value_runs:
        what = f"{name} {' '.join(str(a) for a in args)}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1, (what, result.returncode, result.stderr)
        assert len(lines) == 1, (what, result.stderr)
        assert lines[0].startswith(f"{name}: error: "), (what, lines)
        assert expected in lines[0], (what, lines[0])
        assert "Traceback" not in result.stdout + result.stderr, what


def test_unknown_bundle_lists_the_known_ones(bad_value_runs):
    for (_, args, _), result in bad_value_runs:
        if "XYZ" in args:
            message = result.stderr.strip()
            assert "unknown bundle 'XYZ'" in message
            for bundle in ("AF_L", "CC_ForcepsMajor", "CST_R"):
                assert bundle in message


def test_traceback_only_when_debugging(tmp_path):
    args = ["--model", tmp_path / "none.keras"]
    quiet, debug = run_all(
        [
            ("aae_tract_generate", args),
            ("aae_tract_generate", [*args, "--log_level", "DEBUG"]),
        ],
        tmp_path,
    )
    assert "Traceback" not in quiet.stderr
    assert quiet.returncode == debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("aae_tract_generate: error")


def test_run_dispatches_on_the_script_name(monkeypatch, capsys):
    from aae_tract.workflows import cli

    monkeypatch.setattr(sys, "argv", [str(Path("bin") / "aae_tract_nothing")])
    with pytest.raises(SystemExit) as stop:
        cli.run()
    assert stop.value.code == 1
    assert "aae_tract_nothing: error: unknown command" in capsys.readouterr().err


def test_interrupt_stops_training_after_a_complete_epoch(home, tmp_path):
    """Ctrl-C: the epoch finishes, its checkpoint is kept, --resume continues."""
    import json
    import signal
    import time

    out = tmp_path / "run"
    args = [home / "minimal_bundles", "--n_points", "16", "--n_control", "8"]
    args += ["--filters", "8", "--disc_units", "8", "--latent_dims", "4"]
    args += ["--epochs", "100000", "--out_dir", out]
    state = out / ".aae_tract_checkpoint" / "checkpoint.json"
    process = subprocess.Popen(
        [script("aae_tract_train"), *[str(a) for a in args]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not state.is_file() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.2)
        assert state.is_file(), "no checkpoint was written"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "continue with --resume" in err
    assert "Traceback" not in err
    assert json.loads(state.read_text())["epoch"] >= 1
    assert not (out / "aae_tract_model.keras").exists()


#: Run an aae_tract command in a process where importing Keras fails.
_WITHOUT_KERAS = """
import sys

class NoKeras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras", "tensorflow", "torch", "jax"):
            raise ImportError(f"{name} is not to be imported here")

sys.meta_path.insert(0, NoKeras())
sys.argv = sys.argv[1:]
from aae_tract.workflows.cli import run
run()
"""


def test_bad_values_fail_before_keras_is_imported(tmp_path):
    """Options, inputs and model files are checked before the command pays
    for importing Keras (seconds): these end with their own message in a
    process that cannot import it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "none.keras"
    not_zip = tmp_path / "notes.keras"
    not_zip.write_text("not a model")
    cases = [
        ("aae_tract_train", ["--epochs", "0"], "--epochs must be at least 1"),
        ("aae_tract_train", ["--learning_rate", "nan"], "--learning_rate"),
        ("aae_tract_train", [empty], "no tractogram"),
        ("aae_tract_train", [tmp_path / "nowhere"], "no such file or folder"),
        ("aae_tract_train", ["--val_fraction", "1.5"], "--val_fraction"),
        ("aae_tract_train", ["--backend", "theano"], "unknown Keras backend"),
        ("aae_tract_generate", ["--model", missing], "model file not found"),
        ("aae_tract_generate", ["--model", not_zip], "not a zip archive"),
        ("aae_tract_generate", ["--candidates", "0"], "--candidates"),
        ("aae_tract_generate", ["--prior_spread", "0"], "--prior_spread must be above"),
        ("aae_tract_evaluate", ["--prior_spread", "nan"], "--prior_spread"),
        ("aae_tract_generate", ["--view", "sideways"], "--view"),
        ("aae_tract_render", [empty, "--view", "sideways"], "--view"),
        ("aae_tract_label", [empty, "--model", missing, "--view", "up"], "--view"),
        ("aae_tract_evaluate", ["--model", missing], "model file not found"),
        ("aae_tract_label", [empty, "--model", missing], "model file not found"),
    ]

    def one(case):
        name, args, _ = case
        return subprocess.run(
            [sys.executable, "-c", _WITHOUT_KERAS, name, *[str(a) for a in args]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(one, cases))
    for (name, args, expected), result in zip(cases, done):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1, (name, args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), (
            name,
            result.stderr,
        )
        assert expected in lines[0], (name, lines[0])
