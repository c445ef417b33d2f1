"""The workflows end to end on tiny settings, run in this process.

Each command runs through :func:`aae_tract.workflows.cli.main` (DIPY's
``run_flow`` with the command line as given), in temporary folders. One tiny
model is trained once for the module and copied where a test changes files.
The Keras backend is whatever ``KERAS_BACKEND`` says (the suite runs once per
backend).
"""

import inspect
import json
import re
import shutil

import numpy as np
import pytest
from conftest import run_cli, tamper

from aae_tract.workflows import cli
from aae_tract.workflows.base import resolve_inputs
from aae_tract.workflows.train import CHECKPOINT_DIR, TrainFlow

TINY_ARGS = [
    "--epochs",
    "2",
    "--n_points",
    "32",
    "--batch_size",
    "32",
    "--latent_dims",
    "8",
    "--n_control",
    "8",
    "--filters",
    "16",
    "32",
    "--disc_units",
    "32",
]
TRAIN_OUTPUTS = (
    "aae_tract_model.keras",
    "training_history.json",
    "training_curves.png",
    "latent_space.png",
)


def assert_picture(path):
    """The PNG exists and is not blank (one colour)."""
    from PIL import Image

    assert path.is_file(), path
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert pixels.std() > 1.0, f"{path} is blank"


def can_render():
    from aae_tract.viz import adapter_problem

    return adapter_problem() is None


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh aae_tract data home ($AAE_TRACT_HOME) for this module."""
    folder = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AAE_TRACT_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, home):
    """A tiny model trained by ``aae_tract_train`` without inputs (the default)."""
    out = tmp_path_factory.mktemp("trained")
    assert run_cli("aae_tract_train", *TINY_ARGS, "--out_dir", out) == 0
    return out


@pytest.fixture(scope="module")
def minimal_dir(home, trained):
    """The embedded default, as training fetched it."""
    folder = home / "minimal_bundles"
    assert folder.is_dir()
    return folder


@pytest.fixture
def workdir(trained, tmp_path):
    """A copy of the trained folder (model, checkpoint, outputs)."""
    out = tmp_path / "work"
    shutil.copytree(trained, out)
    return out


# ---------------------------------------------------------------------------
# train


def test_train_writes_its_outputs(trained, minimal_dir):
    from aae_tract.model import TractAAE

    for name in TRAIN_OUTPUTS:
        assert (trained / name).is_file(), name
    history = json.loads((trained / "training_history.json").read_text())
    assert history["epochs"] == 2
    for key in ("loss", "recon_loss", "val_recon_loss", "disc_loss"):
        assert len(history[key]) == 2 and all(np.isfinite(history[key]))
    model = TractAAE.load(trained / "aae_tract_model.keras")
    assert model.n_points == 32 and model.latent_dims == 8
    assert model.bundle_names == ["AF_L", "CC_ForcepsMajor", "CST_R"]
    record = model.metadata.training
    assert record["epochs"] == 2 and record["val_fraction"] == 0.2
    assert len(record["inputs"]) == 15
    assert all(p.startswith(str(minimal_dir.resolve())) for p in record["inputs"])
    assert len(record["validation_subjects"]) == 1
    assert (trained / CHECKPOINT_DIR / "checkpoint.json").is_file()
    assert_picture(trained / "training_curves.png")
    assert_picture(trained / "latent_space.png")


def test_train_keeps_existing_outputs_without_force(workdir, capsys):
    before = {n: (workdir / n).stat().st_mtime_ns for n in TRAIN_OUTPUTS}
    assert run_cli("aae_tract_train", *TINY_ARGS, "--out_dir", workdir) == 0
    assert {n: (workdir / n).stat().st_mtime_ns for n in TRAIN_OUTPUTS} == before
    assert "aae_tract_model.keras exists, use --force to overwrite" in (
        capsys.readouterr().out
    )


def test_train_resume_continues_from_the_checkpoint(workdir):
    from aae_tract.model import TractAAE

    # a decoder-only stage may be added to a resumed run: it follows the
    # epochs and is recorded apart from them
    args = [*TINY_ARGS, "--out_dir", workdir, "--resume", "--polish_epochs", "2"]
    args += ["--polish_noise", "0.05", "--polish_turn_weight", "0.001"]
    args += ["--polish_swap_weight", "0.3"]
    args[1] = "3"  # --epochs 3: one more than the checkpoint
    assert run_cli("aae_tract_train", *args) == 0
    history = json.loads((workdir / "training_history.json").read_text())
    assert history["epochs"] == 3 and len(history["loss"]) == 3
    model = TractAAE.load(workdir / "aae_tract_model.keras")
    assert model.config.polish_epochs == 2
    assert model.config.polish_turn_weight == 0.001
    assert model.config.polish_swap_weight == 0.3
    polish = model.metadata.training["polish"]
    assert len(polish["val_recon_loss"]) == 2
    assert (polish["noise"], polish["turn_weight"]) == (0.05, 0.001)
    assert polish["swap_weight"] == 0.3
    # the history file and the curves carry the stage after the epochs
    stage = history["decoder_only_stage"]
    assert (
        stage["from_epoch"] == 4 and stage["val_recon_loss"] == polish["val_recon_loss"]
    )


def test_train_on_a_phantom_with_age(tmp_path, capsys):
    from aae_tract.data_fetchers import make_phantom
    from aae_tract.model import TractAAE

    data = make_phantom(tmp_path / "phantom", n_subjects=3, n_per_bundle=8, seed=1)
    out = tmp_path / "out"
    args = [data, *TINY_ARGS, "--attribute", "age", "--epochs", "1", "--out_dir", out]
    # the swapped-length loss asks dimension 0 for lengths: not for age
    assert run_cli("aae_tract_train", *args, "--polish_swap_weight", "0.1") == 1
    message = "".join(capsys.readouterr())
    assert "--polish_swap_weight asks latent dimension 0 for streamline" in message
    assert "'age'" in message and "Loaded" not in message
    assert run_cli("aae_tract_train", *args) == 0
    model = TractAAE.load(out / "aae_tract_model.keras")
    assert model.attribute_name == "age"
    assert len(model.bundle_names) == 6
    args = ["--model", out / "aae_tract_model.keras", "--bundle", "UF_L"]
    args += ["--n_streamlines", "3", "--skip_picture", "--out_dir", out]
    assert run_cli("aae_tract_generate", *args, "--attribute_value", "50") == 0
    assert (out / "UF_L_age50.trk").is_file()
    assert run_cli("aae_tract_generate", *args, "--length", "50") == 1


def test_train_summary_counts_the_decoder_only_stage(caplog, tmp_path):
    """The closing log line names the stage's epochs and its last validation
    loss, which is the model's, not the adversarial epochs'."""
    import logging
    import time

    from aae_tract.workflows.train import _log_trained

    history = {"val_recon_loss": [0.9, 0.5]}
    paths = {"model": tmp_path / "m.keras"}
    with caplog.at_level(logging.INFO, logger="aae_tract"):
        _log_trained(history, 2, time.perf_counter(), "CPU", paths)
        _log_trained(
            history,
            2,
            time.perf_counter(),
            "CPU",
            paths,
            polish={"epochs": 1, "val_recon_loss": [0.25]},
        )
    plain, staged = [r.getMessage() for r in caplog.records][-2:]
    assert plain.startswith("Trained 2 epochs in") and "val_recon_loss 0.5;" in plain
    assert staged.startswith("Trained 2 epochs and 1 of the decoder alone in")
    assert "val_recon_loss 0.25;" in staged


def test_train_defaults_follow_the_model_defaults():
    import dataclasses

    from aae_tract.model import AAEConfig

    defaults = {
        name: p.default
        for name, p in inspect.signature(TrainFlow.run).parameters.items()
        if p.default is not inspect.Parameter.empty and p.default is not None
    }
    config = {f.name: f.default for f in dataclasses.fields(AAEConfig)}
    shared = set(defaults) & set(config)
    assert {"latent_dims", "n_points", "batch_size", "polish_noise"} <= shared
    for name in shared:
        assert defaults[name] == config[name], name
    # the fields resolved by what the AR loss orders are None in both
    signature = inspect.signature(TrainFlow.run).parameters
    for name in ("prior", "adv_weight", "ar_weight", "ar_soft", "polish_epochs"):
        assert signature[name].default is None and config[name] is None, name


# ---------------------------------------------------------------------------
# generate


def test_generate_as_in_the_readme(workdir, monkeypatch):
    """``aae_tract_generate --bundle AF_L --length 80`` after training there."""
    from aae_tract.io import load_bundle

    monkeypatch.chdir(workdir)
    args = ["--bundle", "AF_L", "--length", "80", "--n_streamlines", "20"]
    assert run_cli("aae_tract_generate", *args) == 0
    sft = load_bundle(workdir / "AF_L_length80.trk")
    assert len(sft) == 20
    assert len(sft.streamlines[0]) == 32
    if can_render():
        assert_picture(workdir / "AF_L_length80.png")


def test_generate_view_reaches_each_picture(workdir, monkeypatch):
    """--view sets the camera of every picture (the rendering is watched, so
    that no renderer is needed); auto chooses one view per bundle."""
    import aae_tract.viz as viz_mod

    seen, said = [], []

    def watch(*args, view, **kwargs):
        seen.append(view)
        said.append(kwargs.get("generated_label") or kwargs.get("title"))

    monkeypatch.setattr(viz_mod, "adapter_problem", lambda: None)
    for name in ("render_comparison", "render_bundles"):
        monkeypatch.setattr(viz_mod, name, watch)
    args = ["--model", workdir / "aae_tract_model.keras", "--length", "100", "130"]
    args += ["--bundle", "AF_L", "CST_R", "--n_streamlines", "5"]
    out = workdir / "view_superior"
    assert run_cli("aae_tract_generate", *args, "--view", "superior",
                   "--out_dir", out) == 0  # fmt: skip
    assert seen == ["superior"] * 4
    assert (out / "AF_L_length100.trk").is_file()
    # the generated panel gives the median length made (the title the one asked)
    assert len(said) == 4 and all(
        re.fullmatch(r"generated, median \d+\.\d mm", text) for text in said
    ), said
    # auto: one view per bundle, from its real streamlines of every length,
    # shared by its pictures at both lengths
    seen.clear()
    out = workdir / "view_auto"
    assert run_cli("aae_tract_generate", *args, "--view", "auto",
                   "--out_dir", out) == 0  # fmt: skip
    assert len(seen) == 4 and seen[0] == seen[1] and seen[2] == seen[3], seen
    assert set(seen) <= set(viz_mod.VIEWS)
    assert seen[0] == "left"  # AF_L: a side view, from the left
    # with no real streamlines, the generated ones of the first length choose
    # (once per bundle: the second length's pictures take it)
    # the module the command runs (the repository's workflows/ is also
    # importable as a top-level package: a different module object)
    from aae_tract.workflows import generate as generate_flow

    monkeypatch.setattr(generate_flow, "real_bundle_files", lambda *a: [])
    chosen, facing = [], viz_mod.facing_view

    def watched(lines, names=None):
        chosen.append(facing(lines, names))
        return chosen[-1]

    monkeypatch.setattr(viz_mod, "facing_view", watched)
    seen.clear()
    out = workdir / "view_auto_generated"
    assert run_cli("aae_tract_generate", *args, "--view", "auto",
                   "--out_dir", out) == 0  # fmt: skip
    assert len(chosen) == 2 and seen == [chosen[0]] * 2 + [chosen[1]] * 2, seen
    # alone, the title gives both
    assert re.fullmatch(
        r"AF_L at length 100 mm: generated, median \d+\.\d mm", said[-4]
    ), said


def test_generate_several_lengths_in_another_format(workdir):
    import nibabel as nib

    out = workdir / "gen"
    args = [
        "--model",
        workdir / "aae_tract_model.keras",
        "--bundle",
        "CST_R",
        "--length",
        "100",
        "120",
        "--n_streamlines",
        "5",
        "--format",
        "tck",
        "--skip_picture",
        "--out_dir",
        out,
    ]
    assert run_cli("aae_tract_generate", *args) == 0
    for value in (100, 120):
        tck = nib.streamlines.load(out / f"CST_R_length{value}.tck")
        assert len(tck.streamlines) == 5
    assert not list(out.glob("*.png"))


def test_generate_force(workdir, capsys):
    args = ["--model", workdir / "aae_tract_model.keras", "--bundle", "AF_L"]
    args += ["--length", "100", "--n_streamlines", "4", "--skip_picture"]
    args += ["--out_dir", workdir]
    assert run_cli("aae_tract_generate", *args) == 0
    target = workdir / "AF_L_length100.trk"
    stamp = target.stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli("aae_tract_generate", *args) == 0
    assert target.stat().st_mtime_ns == stamp
    assert "AF_L_length100.trk exists, use --force to overwrite" in (
        capsys.readouterr().out
    )
    assert run_cli("aae_tract_generate", *args, "--force", "--seed", "3") == 0
    assert target.stat().st_mtime_ns != stamp


def _moved_by(workdir, option, values, *extra):
    """How far AF_L's streamlines of one seed move from those of the first
    value of ``option`` (``aae_tract_generate``) at each other value."""
    import nibabel as nib

    model = workdir / "aae_tract_model.keras"
    args = ["--model", model, "--bundle", "AF_L", "--length", "100"]
    args += ["--n_streamlines", "20", "--skip_picture", "--seed", "1", *extra]
    runs = {}
    for value in values:
        out = workdir / f"{option}_{value}"
        assert run_cli("aae_tract_generate", *args, f"--{option}", value,
                       "--out_dir", out) == 0  # fmt: skip
        trk = nib.streamlines.load(str(out / "AF_L_length100.trk"))
        runs[value] = np.asarray(trk.streamlines.get_data())
    return [np.abs(runs[v] - runs[values[0]]).mean() for v in values[1:]]


def test_generate_subject_noise_moves_streamlines_to_new_subjects(workdir):
    """--subject_noise 0 puts every streamline in the subjects' mean; a larger
    value spreads them over new subjects: the same seed gives other
    streamlines, as far from the first as the spread asks."""
    some, more = _moved_by(workdir, "subject_noise", ("0", "0.7", "2"))
    assert 0 < some < more


def test_generate_placement_noise_moves_streamlines_rigidly(workdir):
    """--placement_noise moves each streamline of the same seed by a rigid
    move, further for a larger value."""
    some, more = _moved_by(workdir, "placement_noise", ("0", "0.5", "2"))
    assert 0 < some < more


def test_generate_noise_spreads_the_bank_codes(workdir):
    """--noise 0 decodes bank codes as they are; a larger noise moves the
    streamlines of the same seed further."""
    bank = ("--sampling", "bank", "--subject_noise", "0")
    some, more = _moved_by(workdir, "noise", ("0", "0.2", "1"), *bank)
    assert 0 < some < more


def test_generate_noise_scope_reshapes_the_bank_noise(workdir):
    """--noise_scope target draws bank sampling's noise from the codes near
    the requested length: the same seed gives other streamlines than with
    the whole bundle's noise (an ignored option would give the same)."""
    scopes = ("bundle", "target")
    bank = ("--sampling", "bank", "--subject_noise", "0")
    (moved,) = _moved_by(workdir, "noise_scope", scopes, *bank)
    assert moved > 0


def test_generate_samples_the_prior_of_a_length_model_by_default(workdir):
    """Without --sampling a length model with the fitted mixture prior
    samples its prior: the same seed gives the streamlines of --sampling
    prior, not those of --sampling bank."""
    import nibabel as nib

    model = workdir / "aae_tract_model.keras"
    args = ["--model", model, "--bundle", "AF_L", "--length", "100"]
    args += ["--n_streamlines", "10", "--skip_picture", "--seed", "2"]
    runs = {}
    for name, extra in (
        ("none", ()),
        ("prior", ("--sampling", "prior")),
        ("bank", ("--sampling", "bank")),
    ):
        out = workdir / f"default_sampling_{name}"
        assert run_cli("aae_tract_generate", *args, *extra, "--out_dir", out) == 0
        trk = nib.streamlines.load(str(out / "AF_L_length100.trk"))
        runs[name] = np.asarray(trk.streamlines.get_data())
    np.testing.assert_array_equal(runs["none"], runs["prior"])
    assert not np.allclose(runs["none"], runs["bank"])


def test_generate_keeps_streamlines_inside_the_training_volume(workdir):
    """With a header whose volume holds the training data, every written
    streamline lies inside it (DIPY loads the file with its bounding-box
    check); --keep_outside writes the streamlines that leave it too; with
    --reference the reference's volume is kept to."""
    import nibabel as nib
    from dipy.io.streamline import load_tractogram

    from aae_tract.io import bbox_space

    model = workdir / "aae_tract_model.keras"
    args = ["--bundle", "CST_R", "--length", "130", "--n_streamlines", "30"]
    args += ["--skip_picture", "--seed", "2"]
    free = workdir / "volume_free"
    assert run_cli("aae_tract_generate", "--model", model, *args, "--out_dir",
                   free) == 0  # fmt: skip
    lines = nib.streamlines.load(str(free / "CST_R_length130.trk")).streamlines
    space = bbox_space(np.concatenate(list(lines)))
    space["dimensions"][2] = int(
        np.percentile([line[:, 2].max() for line in lines], 70) - space["affine"][2][3]
    )
    space["holds_data"] = True
    bounded = tamper(model, workdir / "bounded.keras",
                     meta=lambda m: {**m, "space": space})  # fmt: skip
    for keep in (False, True):
        out = workdir / f"volume_keep_{keep}"
        extra = ["--keep_outside"] if keep else []
        assert run_cli("aae_tract_generate", "--model", bounded, *args, *extra,
                       "--out_dir", out) == 0  # fmt: skip
        path = str(out / "CST_R_length130.trk")
        if keep:
            with pytest.raises(ValueError, match="[Bb]ounding box"):
                load_tractogram(path, "same")
        else:
            assert len(load_tractogram(path, "same")) == 30
    # a file written on a --reference grid keeps to the reference's volume
    nii = workdir / "cut_reference.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(space["dimensions"], np.uint8),
                             np.asarray(space["affine"])), nii)  # fmt: skip
    out = workdir / "volume_reference"
    assert run_cli("aae_tract_generate", "--model", model, *args, "--reference",
                   nii, "--out_dir", out) == 0  # fmt: skip
    assert len(load_tractogram(str(out / "CST_R_length130.trk"), "same")) == 30


def test_generate_default_request_is_every_bundle_at_its_median(workdir):
    out = workdir / "all"
    args = ["--model", workdir / "aae_tract_model.keras", "--n_streamlines", "3"]
    args += ["--skip_picture", "--out_dir", out]
    assert run_cli("aae_tract_generate", *args) == 0
    written = sorted(p.name.split("_length")[0] for p in out.glob("*.trk"))
    assert written == ["AF_L", "CC_ForcepsMajor", "CST_R"]


# ---------------------------------------------------------------------------
# evaluate


def test_evaluate_on_the_held_out_split(workdir, monkeypatch):
    import aae_tract.generate as generate_mod
    from aae_tract.metrics import METRIC_NAMES

    args = ["--model", workdir / "aae_tract_model.keras", "--n_generate", "10"]
    assert run_cli("aae_tract_evaluate", *args, "--out_dir", workdir) == 0
    metrics = json.loads((workdir / "metrics.json").read_text())
    for key in (*METRIC_NAMES, "n_train", "n_eval", "bundles", "seconds"):
        assert key in metrics, key
    assert metrics["n_train"] == 600 and metrics["n_eval"] == 150
    assert "held-out split" in metrics["data"]
    # the model's default sampling (prior, for a length model with the
    # fitted mixture prior) and its noises, as used
    from aae_tract.generate import PRIOR_NOISES

    assert metrics["sampling"] == "prior"
    assert (metrics["subject_noise"], metrics["placement_noise"]) == PRIOR_NOISES
    assert metrics["noise"] is None and metrics["noise_scope"] is None
    assert metrics["prior_spread"] == 1.0
    assert_picture(workdir / "evaluation.png")
    # --prior_spread reaches prior sampling (other streamlines at the same
    # seed) and is recorded; every generation of the evaluation draws with
    # it, the length targets' and the length bands' streamlines too (their
    # shares are counts, equal at both spreads for a model this little
    # trained, so the calls are watched)
    draw, spreads = generate_mod.draw_streamlines, []

    def watched(*a, **kw):
        spreads.append(kw.get("prior_spread"))
        return draw(*a, **kw)

    monkeypatch.setattr(generate_mod, "draw_streamlines", watched)
    out = workdir / "ev_spread"
    assert run_cli("aae_tract_evaluate", *args, "--prior_spread", "0.5",
                   "--out_dir", out) == 0  # fmt: skip
    narrow = json.loads((out / "metrics.json").read_text())
    assert narrow["prior_spread"] == 0.5
    generated = ("novelty_ratio", "diversity_ratio", "shape_similarity")
    assert any(narrow[k] != metrics[k] for k in generated)
    n_bundles = len(metrics["per_bundle"])
    assert len(spreads) >= 3 * n_bundles and set(spreads) == {0.5}, spreads


def test_evaluate_takes_the_bank_noise_options(workdir):
    """With --sampling bank, --noise and --noise_scope reach the generation:
    the two runs give other generated streamlines at the same seed (an
    ignored option would give the same metrics), and metrics.json records
    the settings: without --noise, each bundle's bank noise as set at
    training from its training subjects."""
    from aae_tract.bank_noise import BANK_KEY
    from aae_tract.model import TractAAE

    base = ["--model", workdir / "aae_tract_model.keras", "--n_generate", "20"]
    base += ["--sampling", "bank"]
    runs = {}
    for name, options in (
        ("bundle", ("--noise", "0.6", "--noise_scope", "bundle")),
        ("target", ("--noise", "0.6", "--noise_scope", "target")),
        ("trained", ()),
    ):
        out = workdir / f"ev_{name}"
        assert run_cli("aae_tract_evaluate", *base, *options, "--out_dir", out) == 0
        runs[name] = json.loads((out / "metrics.json").read_text())
        assert runs[name]["sampling"] == "bank"
        assert runs[name]["prior_spread"] is None
        assert (runs[name]["subject_noise"], runs[name]["placement_noise"]) == (
            0.7,
            0.0,
        )
    for scope in ("bundle", "target"):
        assert runs[scope]["noise_scope"] == scope
        assert set(runs[scope]["noise"].values()) == {0.6}
    generated = ("novelty_ratio", "diversity_ratio", "shape_similarity")
    assert any(runs["bundle"][k] != runs["target"][k] for k in generated)
    banks = TractAAE.load(workdir / "aae_tract_model.keras").metadata.latent_bank
    assert runs["trained"]["noise_scope"] == "bundle"
    assert runs["trained"]["noise"] == {
        b: {"at": banks[b][BANK_KEY]["at"], "value": banks[b][BANK_KEY]["value"]}
        for b in banks
    }


def test_evaluate_other_data_uses_all_of_the_known_bundles(workdir, tmp_path):
    from aae_tract.data_fetchers import make_phantom

    data = make_phantom(tmp_path / "phantom", n_subjects=2, n_per_bundle=6, seed=2)
    args = [data, "--model", workdir / "aae_tract_model.keras", "--n_generate", "5"]
    assert run_cli("aae_tract_evaluate", *args, "--out_dir", tmp_path / "ev") == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["bundles"] == ["AF_L", "CST_R"]  # the phantom's known bundles
    assert metrics["n_eval"] == 2 * 2 * 6


# ---------------------------------------------------------------------------
# render and fetch


def test_render_colours_bundles(minimal_dir, tmp_path):
    if not can_render():
        pytest.skip("no wgpu adapter for FURY")
    args = [minimal_dir / "sub_1", minimal_dir / "sub_2" / "AF_L.trk"]
    args += ["--width", "400", "--height", "300", "--out_dir", tmp_path]
    assert run_cli("aae_tract_render", *args) == 0
    assert_picture(tmp_path / "tractograms.png")


def test_fetch_by_name(tmp_path):
    assert run_cli("aae_tract_fetch", "minimal_bundles", "--out_dir", tmp_path) == 0
    assert len(list((tmp_path / "minimal_bundles").glob("sub_*/*.trk"))) == 15
    args = [
        "phantom",
        "--n_subjects",
        "2",
        "--n_per_bundle",
        "5",
        "--out_dir",
        tmp_path,
    ]
    assert run_cli("aae_tract_fetch", *args) == 0
    assert (tmp_path / "phantom" / "participants.tsv").is_file()
    assert len(list((tmp_path / "phantom").glob("sub-*/*.trk"))) == 12


def test_fetch_keeps_a_different_phantom_without_force(tmp_path, capsys):
    args = [
        "phantom",
        "--n_subjects",
        "1",
        "--n_per_bundle",
        "3",
        "--out_dir",
        tmp_path,
    ]
    assert run_cli("aae_tract_fetch", *args) == 0
    truth = tmp_path / "phantom" / "ground_truth.json"
    stamp = truth.stat().st_mtime_ns
    args[4] = "4"
    capsys.readouterr()
    assert run_cli("aae_tract_fetch", *args) == 0
    assert truth.stat().st_mtime_ns == stamp
    assert "use --force to overwrite" in capsys.readouterr().out
    assert run_cli("aae_tract_fetch", *args, "--force") == 0
    assert json.loads(truth.read_text())["options"]["n_per_bundle"] == 4


# ---------------------------------------------------------------------------
# pieces


def test_inputs_word_default_and_dataset_names(tmp_path, monkeypatch):
    monkeypatch.setenv("AAE_TRACT_HOME", str(tmp_path))
    assert resolve_inputs(None) is None
    assert resolve_inputs([]) is None
    assert resolve_inputs(["default"]) is None
    (folder,) = resolve_inputs(["minimal_bundles"])
    assert folder == str(tmp_path / "minimal_bundles")
    assert resolve_inputs(["a.trk", "b/"]) == ["a.trk", "b/"]


def test_optional_inputs_may_be_left_out():
    parser = cli._flow_parser(TrainFlow())()
    parser.add_workflow(TrainFlow())
    assert parser.parse_args(["--epochs", "2"]).inputs == []
    assert parser.parse_args(["--epochs", "2", "data/"]).inputs == ["data/"]
    args = parser.parse_args(["a.trk", "b.trk", "--seed", "1"])
    assert args.inputs == ["a.trk", "b.trk"] and args.seed == 1


def test_log_level_is_applied(tmp_path, capsys):
    args = [
        "phantom",
        "--n_subjects",
        "1",
        "--n_per_bundle",
        "2",
        "--out_dir",
        tmp_path,
    ]
    assert run_cli("aae_tract_fetch", *args, "--log_level", "WARNING") == 0
    assert "INFO" not in capsys.readouterr().out
    assert run_cli("aae_tract_fetch", *args, "--force") == 0
    assert "INFO: Fetched phantom" in capsys.readouterr().out
