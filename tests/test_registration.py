"""Registration of several subjects into one common space (DIPY's SLR)."""

import json
import logging

import numpy as np
import pytest
from conftest import TINY, run_cli, tamper

from aae_tract.errors import AAETractError, ModelFileError
from aae_tract.registration import (
    Registration,
    RegistrationError,
    register_groupwise,
    register_split,
    register_to_template,
    transform_streamlines,
)
from aae_tract.streamlines import nearest_mdf


def _rigid(degrees, shift):
    """A 4x4 rotation about z by ``degrees`` then a shift (mm)."""
    a = np.deg2rad(degrees)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = shift
    return m


def _copies(dataset, subject, matrices):
    """``subject``'s streamlines repeated as new subjects, moved by ``matrices``."""
    from aae_tract.dataset import StreamlineDataset

    one = dataset.subset(dataset.subjects == subject)
    parts = []
    for i, matrix in enumerate(matrices):
        part = one.subset(np.arange(len(one)))
        part.x = transform_streamlines(np.asarray(one.x), matrix)
        part.subjects = np.full(len(one), f"copy{i}")
        parts.append(part)
    return StreamlineDataset(
        x=np.concatenate([p.x for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        attribute=np.concatenate([p.attribute for p in parts]),
        lengths=np.concatenate([p.lengths for p in parts]),
        subjects=np.concatenate([p.subjects for p in parts]),
        bundle_names=list(one.bundle_names),
        n_points=one.n_points,
        orient_refs=dict(one.orient_refs),
    )


def _median_to_others(dataset):
    """Median over subjects of the median nearest-MDF to the other subjects."""
    values = []
    for s in np.unique(dataset.subjects):
        mine = dataset.subjects == s
        d, _ = nearest_mdf(np.asarray(dataset.x[mine]), np.asarray(dataset.x[~mine]))
        values.append(np.median(d))
    return float(np.median(values))


@pytest.fixture(scope="module")
def minimal(minimal_bundles_dir):
    from aae_tract.data import load_dataset

    return load_dataset(minimal_bundles_dir, n_points=TINY["n_points"])


def test_groupwise_recovers_known_rigid_transforms(minimal):
    """Copies of one subject moved by known transforms come back onto each
    other, and each stored transform undoes its copy's move (up to the one
    common-space transform shared by all)."""
    moves = [np.eye(4), _rigid(8, [30, -10, 5]), _rigid(-6, [-20, 15, -25])]
    data = _copies(minimal, "sub_1", moves)
    before = _median_to_others(data)
    out = register_groupwise(data, seed=0)
    assert before > 15
    assert _median_to_others(out) < 0.2
    reg = out.registration
    assert reg.kind == "groupwise" and reg.transform == "rigid"
    common = reg.matrix("copy0")
    for i, move in enumerate(moves):
        np.testing.assert_allclose(reg.matrix(f"copy{i}") @ move, common, atol=0.05)
        rotation = reg.matrix(f"copy{i}")[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
    # rigid: lengths are kept
    np.testing.assert_allclose(out.lengths, data.lengths)


def test_groupwise_on_the_embedded_default(minimal, caplog):
    """Real subjects offset by up to ~50 mm end up much closer; the common
    space stays where the subjects are; every bundle has an atlas."""
    caplog.set_level(logging.INFO, logger="aae_tract.registration")
    out = register_groupwise(minimal, seed=0)
    before, after = _median_to_others(minimal), _median_to_others(out)
    assert after < 0.6 * before, (before, after)
    shift = np.asarray(out.x).reshape(-1, 3).mean(0) - np.asarray(minimal.x).reshape(
        -1, 3
    ).mean(0)
    assert np.linalg.norm(shift) < 15
    assert sorted(out.registration.atlas) == minimal.bundle_names
    assert sorted(out.registration.transforms) == sorted(set(minimal.subjects))
    assert "Registered 5 subjects groupwise" in caplog.text
    # the input dataset is not modified
    assert _median_to_others(minimal) == pytest.approx(before)


def test_held_out_subject_is_registered_to_the_training_subjects(minimal):
    from aae_tract.data import split_dataset

    train, held = split_dataset(minimal, val_fraction=0.2, seed=0)
    reg_train, reg_held = register_split(train, held, "groupwise", seed=0)

    def distance(a, b):
        return float(np.median(nearest_mdf(np.asarray(a.x), np.asarray(b.x))[0]))

    assert distance(reg_held, reg_train) < 0.6 * distance(held, train)
    assert reg_held.registration is reg_train.registration
    assert set(held.subjects).isdisjoint(reg_train.registration.transforms)
    # nothing moves with "none"
    same = register_split(train, held, "none")
    assert same[0] is train and same[1] is held


def test_affine_rescales_lengths(minimal):
    """Lengths (and a length attribute) follow each subject's affine scaling."""
    out = register_groupwise(minimal, transform="affine", seed=0)
    reg = out.registration
    assert "lengths rescaled" in reg.describe()
    scales = []
    for subject, matrix in reg.transforms.items():
        rows = minimal.subjects == subject
        scale = abs(np.linalg.det(matrix[:3, :3])) ** (1 / 3)
        ratio = out.lengths[rows] / minimal.lengths[rows]
        assert np.median(ratio) == pytest.approx(scale, rel=0.02)
        scales.append(scale)
    assert np.ptp(scales) > 0.005  # the subjects were rescaled differently
    np.testing.assert_allclose(out.attribute, out.lengths)


def test_one_subject_has_nothing_to_register(minimal, caplog):
    caplog.set_level(logging.INFO, logger="aae_tract.registration")
    one = minimal.subset(minimal.subjects == "sub_1")
    out = register_groupwise(one)
    assert not out.registration.active
    np.testing.assert_array_equal(out.x, one.x)
    assert "One subject (sub_1): nothing to register" in caplog.text


def test_a_subject_with_a_missing_bundle(minimal, caplog):
    keep = ~((minimal.subjects == "sub_2") & (minimal.labels == 0))
    data = minimal.subset(keep)
    out = register_groupwise(data, seed=0)
    assert out.registration.bundles == minimal.bundle_names[1:]
    assert f"subject sub_2 lacks {minimal.bundle_names[0]}" in caplog.text
    # no bundle in common: a clear error
    only = minimal.subset(
        ((minimal.subjects == "sub_1") & (minimal.labels == 0))
        | ((minimal.subjects == "sub_2") & (minimal.labels == 1))
    )
    with pytest.raises(RegistrationError, match="no bundle is present in every"):
        register_groupwise(only)


def test_registration_that_does_not_converge(minimal, monkeypatch):
    import dipy.align.streamlinear as slr

    def broken(bundles, **kwargs):
        return bundles, [np.full((4, 4), np.nan)] * len(bundles), np.zeros((2, 1))

    monkeypatch.setattr(slr, "groupwise_slr", broken)
    with pytest.raises(RegistrationError, match="did not converge"):
        register_groupwise(minimal)


def test_template_registration_and_a_template_in_another_space(minimal, tmp_path):
    from dipy.io.stateful_tractogram import Space, StatefulTractogram

    from aae_tract.io import reference_from_space, save_tractogram

    source = minimal.subset(minimal.subjects == "sub_4")
    move = _rigid(5, [12, -8, 20])

    def write(path, lines, size):
        space = {"affine": np.eye(4).tolist(), "dimensions": [size] * 3,
                 "voxel_sizes": [1.0] * 3, "voxel_order": "RAS"}  # fmt: skip
        reference = reference_from_space(space)
        save_tractogram(StatefulTractogram(lines, reference, Space.RASMM), path)

    template = tmp_path / "template.trk"
    lines = list(transform_streamlines(np.asarray(source.x), move))
    write(template, lines, 200)
    out = register_to_template(minimal, template, seed=0)
    assert out.registration.kind == "template"
    moved = out.subset(out.subjects == "sub_4")
    d, _ = nearest_mdf(np.asarray(moved.x), np.asarray(lines))
    assert np.median(d) < 0.5
    assert out.space["dimensions"] == [200, 200, 200]
    # a template in voxel coordinates of 0.4 mm voxels (2.5x larger numbers)
    voxels = tmp_path / "voxels.trk"
    write(voxels, [line * 2.5 for line in lines], 600)
    with pytest.raises(RegistrationError, match="different spaces or units"):
        register_to_template(minimal, voxels)


def test_registration_round_trips_through_json(minimal):
    reg = register_groupwise(minimal, seed=0).registration
    back = Registration.from_dict(json.loads(json.dumps(reg.to_dict())))
    for subject, matrix in reg.transforms.items():
        np.testing.assert_allclose(back.transforms[subject], matrix, atol=1e-6)
    assert sorted(back.atlas) == sorted(reg.atlas)
    lines = [np.asarray(minimal.x[0])]
    there = back.to_subject(back.to_common(lines, "sub_3"), "sub_3")
    np.testing.assert_allclose(there[0], lines[0], atol=1e-3)
    with pytest.raises(RegistrationError, match="unknown subject 'sub_9'"):
        back.matrix("sub_9")
    bad = reg.to_dict()
    bad["transforms"]["sub_1"] = [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="not a 4x4 affine"):
        Registration.from_dict(bad)


# ---------------------------------------------------------------------------
# through the model and the commands


@pytest.fixture(scope="module")
def registered(tmp_path_factory, minimal_bundles_dir):
    """A tiny model trained by aae_tract_train with the default registration."""
    out = tmp_path_factory.mktemp("registered")
    args = [
        minimal_bundles_dir,
        "--epochs", "2", "--n_points", "32", "--batch_size", "32",
        "--latent_dims", "8", "--n_control", "8", "--filters", "16", "32",
        "--disc_units", "32", "--out_dir", out,
    ]  # fmt: skip
    assert run_cli("aae_tract_train", *args) == 0
    return out


def test_the_model_stores_one_transform_per_training_subject(registered):
    from aae_tract.model import TractAAE

    model = TractAAE.load(registered / "aae_tract_model.keras")
    reg = model.registration
    held_out = model.metadata.training["validation_subjects"]
    assert reg.kind == "groupwise"
    assert sorted(reg.transforms) == sorted(
        {"sub_1", "sub_2", "sub_3", "sub_4", "sub_5"} - set(held_out)
    )


def test_generate_in_a_subject_space(registered):
    from aae_tract.io import load_bundle
    from aae_tract.model import TractAAE

    model = TractAAE.load(registered / "aae_tract_model.keras")
    subject = sorted(model.registration.transforms)[0]
    common = ["--bundle", "AF_L", "--length", "90", "--n_streamlines", "20"]
    out = registered / "gen"
    args = [*common, "--skip_picture", "--out_dir", out]
    model_arg = ["--model", registered / "aae_tract_model.keras"]
    assert run_cli("aae_tract_generate", *model_arg, *args) == 0
    assert run_cli(
        "aae_tract_generate", *model_arg, *args, "--space", subject,
        "--out_tractogram", "native.trk",
    ) == 0  # fmt: skip
    in_common = load_bundle(out / "AF_L_length90.trk").streamlines
    native = load_bundle(out / "native.trk").streamlines
    back = model.registration.to_common(list(native), subject)
    np.testing.assert_allclose(np.concatenate(back), in_common.get_data(), atol=1e-2)
    assert run_cli("aae_tract_generate", *model_arg, *args, "--space", "sub_9") == 1


def test_generate_space_needs_a_registered_model(workdir_unregistered, capsys):
    args = ["--model", workdir_unregistered / "aae_tract_model.keras"]
    args += ["--space", "sub_1", "--skip_picture", "--out_dir", workdir_unregistered]
    assert run_cli("aae_tract_generate", *args) == 1
    assert "needs a model trained with registration" in capsys.readouterr().err


@pytest.fixture(scope="module")
def workdir_unregistered(tmp_path_factory, minimal_bundles_dir):
    out = tmp_path_factory.mktemp("unregistered")
    args = [
        minimal_bundles_dir, "--register", "none",
        "--epochs", "1", "--n_points", "16", "--batch_size", "64",
        "--latent_dims", "4", "--n_control", "4", "--filters", "8",
        "--disc_units", "8", "--out_dir", out,
    ]  # fmt: skip
    assert run_cli("aae_tract_train", *args) == 0
    return out


def test_evaluate_registers_the_held_out_subjects(registered):
    out = registered / "ev"
    args = ["--model", registered / "aae_tract_model.keras", "--n_generate", "10"]
    assert run_cli("aae_tract_evaluate", *args, "--out_dir", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "SLR to the common-space bundles" in metrics["data"]


def test_bad_register_values(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--register", "nowhere.trk", "--out_dir", out]
    assert run_cli("aae_tract_train", *args) == 1
    err = capsys.readouterr().err
    assert "must be groupwise or none or an existing template" in err
    args = ["--register_transform", "warp", "--out_dir", out]
    assert run_cli("aae_tract_train", *args) == 1
    err = capsys.readouterr().err
    assert "--register_transform must be one of rigid, affine" in err
    assert not out.exists()


def test_tampered_registration_in_a_model_file(registered, tmp_path):
    from aae_tract.model import TractAAE

    def bad(meta):
        meta["registration"]["transforms"]["sub_1"] = [[1, 0, 0, 0]] * 4
        return meta

    source = registered / "aae_tract_model.keras"
    target = tamper(source, tmp_path / "bad.keras", meta=bad)
    with pytest.raises(ModelFileError, match="transform of sub_1"):
        TractAAE.load(target)


def test_api_generate_space(registered):
    from aae_tract.generate import generate
    from aae_tract.model import TractAAE

    model = TractAAE.load(registered / "aae_tract_model.keras")
    with pytest.raises(AAETractError, match="unknown subject"):
        generate(model, "AF_L", 90, n_streamlines=2, space="nobody")


def test_a_tractogram_read_block_by_block_registers_as_one_in_memory(
    registered, minimal_bundles_dir, tmp_path
):
    from dipy.io.stateful_tractogram import StatefulTractogram

    from aae_tract.io import load_bundle, save_tractogram
    from aae_tract.model import TractAAE
    from aae_tract.stream import TractogramStream

    model = TractAAE.load(registered / "aae_tract_model.keras")
    parts = [load_bundle(p) for p in sorted((minimal_bundles_dir / "sub_3").glob("*"))]
    lines = [s for p in parts for s in p.streamlines]
    path = save_tractogram(
        StatefulTractogram.from_sft(lines, parts[0]), tmp_path / "all.trk"
    )
    reg = model.registration
    in_memory = reg.register_tractogram(load_bundle(path).streamlines, name="all")
    streamed = reg.register_tractogram(TractogramStream(path), name="all")
    np.testing.assert_allclose(streamed, in_memory, atol=1e-6)
    assert not np.allclose(streamed, np.eye(4))
