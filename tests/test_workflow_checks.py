"""Thin workflows: checks done once in the library, messages naming options.

Hyperparameters are checked by AAEConfig only (the command's message is the
config's); the held-out split and the model-file checks live in the library;
no workflow imports another; ``--help`` shows optional inputs as optional;
``--resume`` refuses other settings and says what it does with another
``--epochs``; ``.tck``/``.trx`` inputs without ``--reference`` name the
option; the Python API keeps TensorFlow's C++ start-up logs quiet. Commands
run in this process through :func:`aae_tract.workflows.cli.main`.
"""

import ast
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from conftest import TINY, run_cli, tamper

from aae_tract.errors import AAETractError, ConfigError, ModelFileError, TrainingError
from aae_tract.model import AAEConfig, TractAAE
from aae_tract.model.config import DEFAULT_N_CONTROL, REMOVED_FIELDS, TRAIN_OPTIONS
from aae_tract.workflows import cli
from aae_tract.workflows.base import check_reference
from aae_tract.workflows.train import TrainFlow

WORKFLOWS = Path(cli.__file__).parent


def error_line(capsys, prog):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{prog}: error: "), lines
    return lines[0][len(f"{prog}: error: ") :]


@pytest.fixture(scope="module")
def model_file(tiny_trained, tmp_path_factory):
    """The shared tiny model, saved (saving does not change it)."""
    model, _ = tiny_trained
    path = tmp_path_factory.mktemp("model") / "aae_tract_model.keras"
    model.save(path)
    return path


def write_tck(path):
    """A small .tck file (no space of its own)."""
    import nibabel as nib

    lines = [np.linspace([0, 0, 0], [30, 5, 2], 20).astype("float32")]
    tractogram = nib.streamlines.Tractogram(lines, affine_to_rasmm=np.eye(4))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.streamlines.save(tractogram, str(path))
    return path


# ---------------------------------------------------------------------------
# hyperparameters: one check, in AAEConfig, naming the option


@pytest.mark.parametrize(
    "option, value, values",
    [
        ("--latent_dims", "1", {"latent_dims": 1}),
        ("--dropout", "1.5", {"dropout": 1.5}),
        ("--learning_rate", "0", {"learning_rate": 0.0}),
        ("--warmup_epochs", "-1", {"warmup_epochs": -1}),
        ("--prior", "uniform", {"prior": "uniform"}),
        ("--disc_norm", "batch", {"disc_norm": "batch"}),
        ("--filters", "0", {"filters": (0,)}),
        ("--n_control", "40", {"n_points": 32, "n_control": 40}),
    ],
)
def test_train_reports_the_configs_own_message(option, value, values, tmp_path, capsys):
    with pytest.raises(ConfigError) as raised:
        AAEConfig(**values)
    expected = str(raised.value)
    assert expected.startswith(f"{option} must "), expected
    args = [option, value, "--n_points", "32", "--out_dir", tmp_path / "out"]
    assert run_cli("aae_tract_train", *args) == 1
    assert error_line(capsys, "aae_tract_train") == expected
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_train_checks_no_hyperparameter_itself():
    source = inspect.getsource(TrainFlow.run)
    for helper in ("check_int(", "check_float(", "check_choice("):
        assert helper not in source, helper


def test_messages_name_options_that_exist():
    params = set(inspect.signature(TrainFlow.run).parameters)
    assert set(TRAIN_OPTIONS) <= params
    fields = {f for f in AAEConfig.__dataclass_fields__}
    assert set(TRAIN_OPTIONS) <= fields


def test_n_control_default_lives_in_the_config(minimal_bundles_dir):
    from aae_tract.data import load_dataset

    assert inspect.signature(TrainFlow.run).parameters["n_control"].default is None
    assert AAEConfig().n_control == DEFAULT_N_CONTROL
    assert AAEConfig(n_points=16).n_control == 16
    assert AAEConfig(n_points=16, n_control=6).n_control == 6
    short = load_dataset(minimal_bundles_dir, n_points=16)
    small = {k: v for k, v in TINY.items() if k not in ("n_points", "n_control")}
    model = TractAAE.from_dataset(short, **small)  # was: n_control 32 > n_points 16
    assert model.config.n_control == 16


def test_unknown_hyperparameters_are_refused(tiny_splits):
    train, _ = tiny_splits
    with pytest.raises(ConfigError, match="unknown hyperparameter 'latent_dim'"):
        TractAAE.from_dataset(train, latent_dim=4)


# ---------------------------------------------------------------------------
# mixed precision: removed


def test_mixed_precision_is_gone_but_old_files_load(
    tiny_trained, tiny_splits, tmp_path, capsys
):
    model, _ = tiny_trained
    assert "mixed_precision" not in AAEConfig.__dataclass_fields__
    assert "mixed_precision" in REMOVED_FIELDS
    assert "mixed_precision" not in inspect.signature(TrainFlow.run).parameters
    with pytest.raises(ConfigError, match="mixed_precision was removed: .*float32"):
        TractAAE.from_dataset(tiny_splits[0], mixed_precision=True)
    assert keras.mixed_precision.global_policy().name == "float32"

    # a model file from a version that stored the option still loads
    new = tmp_path / "new.keras"
    model.save(new)
    old = tmp_path / "old.keras"
    tamper(
        new,
        old,
        meta=lambda m: {**m, "config": {**m["config"], "mixed_precision": True}},
    )
    loaded = TractAAE.load(old)
    assert loaded.config.to_dict() == model.config.to_dict()
    assert AAEConfig.from_stored({"mixed_precision": False}).to_dict() == (
        AAEConfig.from_stored({}).to_dict()
    )

    assert run_cli("aae_tract_train", "--mixed_precision", "--epochs", "1") == 1
    message = error_line(capsys, "aae_tract_train")
    assert message.startswith("--mixed_precision was removed: ")


# ---------------------------------------------------------------------------
# held-out split and model checks in the library; workflows independent


def test_no_workflow_imports_another():
    flows = {p.stem for p in WORKFLOWS.glob("*.py")} - {"__init__", "base", "cli"}
    for path in WORKFLOWS.glob("*.py"):
        if path.stem in ("__init__", "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = {a.name for a in node.names}
                if node.level:  # from .x import y / from . import x
                    imported = {module.split(".")[0]} if module else names
                else:
                    parts = module.split(".")
                    imported = set()
                    if parts[:2] == ["aae_tract", "workflows"]:
                        imported = {parts[2]} if len(parts) > 2 else names
                assert not imported & flows, (path.name, module, names)


def test_evaluate_does_not_branch_on_a_description():
    source = (WORKFLOWS / "evaluate.py").read_text()
    assert ".startswith(" not in source
    assert "def held_out_data" not in source


def _fake_model(names, training):
    from aae_tract.registration import Registration

    return SimpleNamespace(
        bundle_names=list(names),
        n_points=TINY["n_points"],
        attribute_name="length",
        config=SimpleNamespace(seed=0),
        metadata=SimpleNamespace(training=training, orient_refs={}),
        registration=Registration("none"),
    )


def test_held_out_split_is_rebuilt_by_the_library(minimal_bundles_dir):
    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.splits import held_out_data, input_files, split_record

    files = input_files([minimal_bundles_dir])
    assert len(files) == 15 and all(Path(f).is_absolute() for f in files)
    dataset = load_dataset(files, n_points=TINY["n_points"])
    _, validation = split_dataset(dataset, val_fraction=0.4, seed=3)
    record = split_record(files, validation, val_fraction=0.4, seed=3)
    model = _fake_model(dataset.bundle_names, record)

    held = held_out_data(model)
    assert held.split is True
    assert len(held.dataset) == len(validation)
    assert sorted(set(held.dataset.subjects)) == record["validation_subjects"]
    assert "held-out split" in held.description

    other = held_out_data(model, [minimal_bundles_dir / "sub_1"])
    assert other.split is False and len(other.files) == 3

    stranger = _fake_model(["UF_L"], record)
    with pytest.raises(AAETractError, match="none of the 15 input tractograms"):
        held_out_data(stranger, files)


def test_a_model_without_its_training_files_warns_of_the_default(
    minimal_bundles_dir, tmp_path, caplog, monkeypatch
):
    """Without inputs, a model that records no training files, or whose files
    are gone, is measured on the whole embedded default, and the log says
    that these may be its training streamlines; a model trained on the
    embedded default whose files were extracted again is measured on its
    held-out split without the warning; named inputs say nothing."""
    import shutil

    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.splits import held_out_data, input_files, split_record

    monkeypatch.setenv("AAE_TRACT_HOME", str(tmp_path / "home"))
    files = input_files([minimal_bundles_dir])
    names = load_dataset(files[:3], n_points=TINY["n_points"]).bundle_names
    gone = str(tmp_path / "sub_9" / "AF_L.trk")
    for training, why in (
        ({}, "the model records no training files"),
        (
            {"inputs": [gone]},
            f"1 of the model's 1 training files are gone (first: {gone})",
        ),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aae_tract.splits"):
            held = held_out_data(_fake_model(names, training))
        assert held.split is False and len(held.files) == 15
        assert why in caplog.text
        assert "not on a held-out split" in caplog.text

    default = input_files(None)  # extracted into this home
    dataset = load_dataset(default, n_points=TINY["n_points"])
    _, validation = split_dataset(dataset, val_fraction=0.4, seed=3)
    record = split_record(default, validation, val_fraction=0.4, seed=3)
    shutil.rmtree(Path(default[0]).parents[1])  # the data home was cleaned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aae_tract.splits"):
        held = held_out_data(_fake_model(names, record))
    assert held.split is True and len(held.dataset) == len(validation)
    assert "embedded default" not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aae_tract.splits"):
        held_out_data(_fake_model(names, {}), [minimal_bundles_dir / "sub_1"])
    assert "embedded default" not in caplog.text


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1"])
def test_val_fraction_is_checked_before_loading(tmp_path, capsys, value):
    missing = tmp_path / "no_such_folder"  # never read: the check comes first
    args = [missing, "--val_fraction", value, "--out_dir", tmp_path / "out"]
    assert run_cli("aae_tract_train", *args) == 1
    assert error_line(capsys, "aae_tract_train") == (
        f"--val_fraction must be in [0, 1), got {float(value)!r}"
    )


def test_model_file_checks_are_the_librarys(tmp_path, capsys):
    with pytest.raises(ModelFileError, match="is a folder, not a .keras model file"):
        TractAAE.load(tmp_path)
    assert run_cli("aae_tract_generate", "--model", tmp_path) == 1
    assert "is a folder" in error_line(capsys, "aae_tract_generate")
    source = "".join(p.read_text() for p in WORKFLOWS.glob("*.py"))
    assert "is_zipfile" not in source and "def check_model_path" not in source


# ---------------------------------------------------------------------------
# --help


def help_text(prog, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(prog, ["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("prog", ["aae_tract_train", "aae_tract_evaluate"])
def test_help_shows_optional_inputs_as_optional(prog, capsys):
    usage = help_text(prog, capsys).split("\n\n")[0]
    assert "[inputs ...]" in usage
    assert "inputs [inputs ...]" not in usage


def test_help_keeps_required_inputs_required(capsys):
    usage = help_text("aae_tract_render", capsys).split("\n\n")[0]
    assert "inputs [inputs ...]" in usage


def test_help_shows_no_default_that_contradicts_the_text(capsys):
    text = help_text("aae_tract_fetch", capsys)
    assert "$AAE_TRACT_HOME" in text
    assert "current directory" not in text
    train = help_text("aae_tract_train", capsys)
    assert "(default: None)" not in train
    assert "(default: current directory)" in train  # --out_dir
    assert "(default: 100)" in train  # --epochs keeps its default


# ---------------------------------------------------------------------------
# --reference


def test_tck_without_reference_names_the_option(tmp_path, model_file, capsys):
    tck = write_tck(tmp_path / "sub_1" / "AF_L.tck")
    for prog, args in (
        ("aae_tract_render", [tck]),
        ("aae_tract_train", [tck, "--epochs", "1"]),
        ("aae_tract_evaluate", [tck, "--model", model_file]),
    ):
        assert run_cli(prog, *args, "--out_dir", tmp_path / "out") == 1, prog
        message = error_line(capsys, prog)
        assert message.startswith(f"{tck}: a .tck file needs a reference"), message
        assert "give --reference <NIfTI or .trk file" in message, message


def test_trx_without_reference_names_the_option():
    with pytest.raises(AAETractError, match="--reference same"):
        check_reference(["AF_L.trk", "CST_R.trx"], None)
    check_reference(["CST_R.trx", "AF_L.tck"], "t1.nii.gz")  # given: no error
    check_reference(["AF_L.trk"], None)  # .trk carries its space


# ---------------------------------------------------------------------------
# aae_tract_generate without pictures says why


def test_generate_says_why_no_picture_was_made(
    model_file, tmp_path, monkeypatch, capsys
):
    from aae_tract import viz

    monkeypatch.setattr(viz, "adapter_problem", lambda: "no wgpu adapter (test)")
    args = ["--model", model_file, "--bundle", "AF_L", "--length", "80"]
    args += ["--n_streamlines", "3", "--out_dir", tmp_path]
    assert run_cli("aae_tract_generate", *args) == 0
    assert (tmp_path / "AF_L_length80.trk").is_file()
    assert not (tmp_path / "AF_L_length80.png").exists()
    out = capsys.readouterr().out.splitlines()
    (summary,) = [line for line in out if line.startswith("INFO: Generated")]
    assert summary.endswith("(no pictures: no wgpu adapter (test))")


def test_generate_refuses_a_length_far_outside_the_bundles(
    model_file, tmp_path, capsys
):
    """A length far outside what the model saw of a bundle is refused before
    anything is generated, even when it is the last of several requests; the
    message names the bundle, the seen and the accepted range and the option."""
    args = ["--model", model_file, "--bundle", "AF_L", "--n_streamlines", "3"]
    args += ["--skip_picture", "--out_dir", tmp_path]
    capsys.readouterr()
    assert run_cli("aae_tract_generate", *args, "--length", "100", "400") == 1
    message = error_line(capsys, "aae_tract_generate")
    assert message.startswith("AF_L: length 400 mm lies too far outside"), message
    assert "--max_extrapolation" in message
    assert list(tmp_path.iterdir()) == []
    wide = ["--max_extrapolation", "10"]
    assert run_cli("aae_tract_generate", *args, "--length", "400", *wide) == 0
    assert (tmp_path / "AF_L_length400.trk").is_file()
    capsys.readouterr()
    assert run_cli("aae_tract_generate", *args, "--max_extrapolation", "-1") == 1
    assert "--max_extrapolation must be at least 0" in error_line(
        capsys, "aae_tract_generate"
    )


@pytest.mark.parametrize("prog", ["aae_tract_generate", "aae_tract_evaluate"])
def test_bank_noise_options_ask_for_bank_sampling(model_file, tmp_path, capsys, prog):
    """--noise sets bank sampling's noise: with the prior sampling a length
    model uses by default (or asked for), the command says so and how to
    get bank sampling, instead of ignoring it; nothing is written."""
    args = ["--model", model_file, "--out_dir", tmp_path]
    if prog == "aae_tract_generate":
        args += ["--bundle", "AF_L", "--length", "80", "--skip_picture"]
    capsys.readouterr()
    assert run_cli(prog, *args, "--noise", "0.3") == 1
    message = error_line(capsys, prog)
    assert "--noise sets bank sampling's noise" in message
    assert "samples its prior by default" in message
    assert "add --sampling bank" in message
    assert run_cli(prog, *args, "--sampling", "prior", "--noise_scope", "target") == 1
    assert "--noise_scope target sets bank" in error_line(capsys, prog)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prog", ["aae_tract_generate", "aae_tract_evaluate"])
def test_prior_spread_asks_for_prior_sampling(model_file, tmp_path, capsys, prog):
    """--prior_spread sets the spread of prior sampling's draws: with bank
    sampling the command says so instead of ignoring it; nothing is
    written."""
    args = ["--model", model_file, "--out_dir", tmp_path]
    if prog == "aae_tract_generate":
        args += ["--bundle", "AF_L", "--length", "80", "--skip_picture"]
    capsys.readouterr()
    assert run_cli(prog, *args, "--sampling", "bank", "--prior_spread", "0.7") == 1
    message = error_line(capsys, prog)
    assert "--prior_spread sets the spread of prior sampling's draws" in message
    assert "--sampling bank" in message and "add --sampling prior" in message
    assert run_cli(prog, *args, "--prior_spread", "11") == 1
    assert "--prior_spread must be at most 10" in error_line(capsys, prog)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# --resume


class _LearningRates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        rate = self.model.ae_optimizer.learning_rate
        self.rates.append(float(keras.ops.convert_to_numpy(rate)))


def test_resume_keeps_the_schedule_and_refuses_other_settings(
    tiny_splits, tmp_path, caplog
):
    train, _ = tiny_splits
    ckpt = tmp_path / "ckpt"
    TractAAE.from_dataset(train, epochs=2, **TINY).fit(
        train, checkpoint_dir=ckpt, verbose=0
    )
    assert json.loads((ckpt / "checkpoint.json").read_text())["schedule_epochs"] == 2

    other = TractAAE.from_dataset(train, epochs=2, **{**TINY, "batch_size": 16})
    with pytest.raises(TrainingError, match=r"--batch_size 32, now 16"):
        other.fit(train, checkpoint_dir=ckpt, resume=True, verbose=0)
    other = TractAAE.from_dataset(train, epochs=2, learning_rate=5e-4, **TINY)
    with pytest.raises(TrainingError, match=r"--learning_rate 0.001, now 0.0005"):
        other.fit(train, checkpoint_dir=ckpt, resume=True, verbose=0)
    fewer = TractAAE.from_dataset(train, epochs=1, **TINY)
    with pytest.raises(TrainingError, match="at epoch 2, past --epochs 1"):
        fewer.fit(train, checkpoint_dir=ckpt, resume=True, verbose=0)

    # more epochs: the first run's 2-epoch decay is kept, then its final rate
    more = TractAAE.from_dataset(train, epochs=4, **TINY)
    rates = _LearningRates()
    with caplog.at_level(logging.WARNING):
        more.fit(train, checkpoint_dir=ckpt, resume=True, verbose=0, callbacks=[rates])
    floor = 0.05 * more.config.learning_rate
    np.testing.assert_allclose(rates.rates, [floor, floor], rtol=1e-4)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "resuming a run planned for 2 epochs to 4 epochs" in warned
    state = json.loads((ckpt / "checkpoint.json").read_text())
    assert state["epoch"] == 4 and state["schedule_epochs"] == 2


# ---------------------------------------------------------------------------
# TensorFlow's C++ start-up logs in the Python API


@pytest.mark.parametrize("user_value", [None, "0"])
def test_python_api_quiets_tensorflow_unless_told_otherwise(user_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if user_value is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_value
    code = (
        "import os, sys\n"
        "import aae_tract.model\n"
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.strip() == (user_value or "2")
    if user_value is None:
        assert "cpu_feature_guard" not in done.stderr


def test_the_picture_shows_real_streamlines_near_the_requested_length():
    """Beside a length request, the real panel holds the real streamlines
    within 10 % of it (the whole bundle, said so, when fewer than 10 lie
    there); beside an age request, the whole bundle."""
    from types import SimpleNamespace

    from workflows.generate import real_near_request

    def line(mm):
        return np.stack([np.linspace(0, mm, 20), np.zeros(20), np.zeros(20)], axis=1)

    lines = [line(mm) for mm in [*range(60, 101, 2), 150, 160]]
    result = SimpleNamespace(attribute_name="length", target=80.0, bundle="AF_L")
    # 9 lie within 72-88 mm: too few, so the whole bundle
    shown, label = real_near_request(lines, result)
    assert shown is lines and label == "real, all lengths"
    lines += [line(80.5), line(81.5)]
    shown, label = real_near_request(lines, result)
    assert label == "real, 72-88 mm"
    assert sorted(float(np.ptp(s[:, 0])) for s in shown) == pytest.approx(
        sorted([*range(72, 89, 2), 80.5, 81.5])
    )
    age = SimpleNamespace(attribute_name="age", target=70.0, bundle="AF_L")
    shown, label = real_near_request(lines, age)
    assert shown is lines and label == "real"


def test_real_files_for_the_picture(tmp_path):
    """--real: a single file is the real bundle whatever its name, unless it is
    named after another of the model's bundles; several files go by name;
    without --real, the model's training files of the bundle."""
    from workflows.generate import real_bundle_files

    for name in ("AF_L", "CST_R", "my_arcuate"):
        (tmp_path / f"{name}.trk").write_bytes(b"")
    model = SimpleNamespace(
        bundle_names=["AF_L", "CST_R", "CC_ForcepsMajor"],
        metadata=SimpleNamespace(
            training={"inputs": [str(tmp_path / "AF_L.trk"), "/gone/CST_R.trk"]}
        ),
    )
    af, cst, free = (
        str(tmp_path / f"{n}.trk") for n in ("AF_L", "CST_R", "my_arcuate")
    )
    assert real_bundle_files(model, "AF_L", [af]) == [Path(af)]
    assert real_bundle_files(model, "CST_R", [af]) == []
    assert real_bundle_files(model, "CC_ForcepsMajor", [free]) == [Path(free)]
    assert real_bundle_files(model, "CST_R", [af, cst]) == [Path(cst)]
    assert real_bundle_files(model, "AF_L", None) == [tmp_path / "AF_L.trk"]
    assert real_bundle_files(model, "CST_R", None) == []
