"""New subjects' placement: the spread measured on a model, and the rigid moves."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from aae_tract.errors import AAETractError
from aae_tract.generate import generate
from aae_tract.model import TractAAE
from aae_tract.placement import (
    PlacementSpread,
    measure_placement,
    move_placement,
    placement_spread,
)
from aae_tract.streamlines import streamline_lengths


@pytest.fixture(scope="module")
def model(tiny_trained):
    return tiny_trained[0]


def _stub(spread):
    """A stand-in model whose bundle ``B`` has the placement ``spread``."""
    bank = {"B": {"placement": spread.to_json()}}
    return SimpleNamespace(metadata=SimpleNamespace(latent_bank=bank))


def _rigid(a, b):
    """Rotation vector and shift of the rigid map a -> b (about a's centroid)."""
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    flip = np.sign(np.linalg.det(u @ vt))
    rotation = (u @ np.diag([1.0, 1.0, flip]) @ vt).T
    return Rotation.from_matrix(rotation).as_rotvec(), cb - ca


def test_moves_are_drawn_with_the_spread_times_the_scale():
    centre = np.array([10.0, -5.0, 3.0])
    spread = PlacementSpread(
        centre=centre,
        rotation=np.deg2rad([1.0, 2.0, 4.0]),
        shift=np.array([0.5, 1.0, 3.0]),
        n_subjects=4,
    )
    # a bent streamline centred on the bundle's centre: its centroid moves by
    # the shift alone, and its rotation is recovered by a rigid fit
    t = np.linspace(-1, 1, 20)
    one = np.stack([30 * t, 10 * t**2 - 10 / 3 * (1 + 1 / 19), 5 * t**3], axis=1)
    one = one - one.mean(0) + centre
    streamlines = np.repeat(one[None], 4000, axis=0).astype(np.float32)
    moved = move_placement(
        _stub(spread), "B", streamlines, 1.5, np.random.default_rng(0)
    )
    assert moved.dtype == np.float32 and moved.shape == streamlines.shape
    fits = [_rigid(one, m.astype(np.float64)) for m in moved]
    turns = np.array([r for r, _ in fits])
    shifts = np.array([s for _, s in fits])
    np.testing.assert_allclose(shifts.std(0), 1.5 * spread.shift, rtol=0.06)
    np.testing.assert_allclose(turns.std(0), 1.5 * spread.rotation, rtol=0.06)
    np.testing.assert_allclose(shifts.mean(0), 0, atol=0.15)
    # rigid: every length is kept
    np.testing.assert_allclose(
        streamline_lengths(moved), streamline_lengths(streamlines), rtol=1e-4
    )


def test_rigid_fit_recovers_a_known_rotation_and_shift():
    from aae_tract.placement import _rigid_fit

    rng = np.random.default_rng(5)
    a = rng.normal(size=(50, 3)) * [20.0, 8.0, 3.0]
    turn = np.array([0.05, -0.12, 0.3])
    shift = np.array([2.0, -1.0, 0.5])
    centroid = a.mean(0)
    b = Rotation.from_rotvec(turn).apply(a - centroid) + centroid + shift
    got_turn, got_shift = _rigid_fit(a, b)
    np.testing.assert_allclose(got_turn, turn, atol=1e-9)
    np.testing.assert_allclose(got_shift, shift, atol=1e-9)


def _subject_model(w0, t0, n_per=40):
    """A stand-in model of 4 subjects whose bundles differ by known rigid moves.

    Latent dimension 1 is the subject (0-3): the decoder turns the bundle by
    ``dim1 * w0`` about a fixed point and shifts it by ``dim1 * t0``.
    Dimension 0 places the streamline along x (as length would move it),
    and its subjects' means differ, which the measure must not count.
    """
    rng = np.random.default_rng(2)
    subject = np.repeat(np.arange(4), n_per)
    own_t = rng.uniform(0.8, 1.2, len(subject))
    own_u = rng.normal(size=len(subject))
    means = np.stack([0.3 * np.arange(4), np.arange(4.0), np.zeros(4)], axis=1)
    z = np.stack([own_t, np.zeros_like(own_t), own_u], axis=1) + means[subject]
    x = np.linspace(-10, 10, 20)

    def base(code):
        t, u = code[:, :1], code[:, 2:3]
        pts = np.stack(
            [x * t + 3 * t, u * x**2 / 20 + 0 * t, 2 * np.sin(x / 5) + 0 * t], axis=2
        )
        return pts

    pivot = base(z).reshape(-1, 3).mean(0)

    def decode(codes, bundle, **_):
        codes = np.asarray(codes, dtype=np.float64)
        pts = base(codes) - pivot
        turns = Rotation.from_rotvec(codes[:, 1:2] * w0).as_matrix()
        moved = np.einsum("nij,npj->npi", turns, pts) + pivot
        return (moved + codes[:, 1, None, None] * t0).astype(np.float32)

    bank = {
        "B": {
            "z": z.tolist(),
            "a": own_t.tolist(),
            "subject": subject.tolist(),
            "subject_means": means.tolist(),
        }
    }
    model = SimpleNamespace(metadata=SimpleNamespace(latent_bank=bank), decode=decode)
    return model, pivot


def test_spread_measured_on_known_subject_moves():
    w0 = np.array([0.01, -0.02, 0.04])
    t0 = np.array([1.0, 0.5, -2.0])
    model, pivot = _subject_model(w0, t0)
    spread = measure_placement(model, "B")
    sd = np.std(np.arange(4.0), ddof=1)  # of the subjects' rigid moves
    np.testing.assert_allclose(spread.rotation, sd * np.abs(w0), rtol=1e-3)
    np.testing.assert_allclose(spread.shift, sd * np.abs(t0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(spread.centre, pivot + 1.5 * t0, atol=1e-3)
    assert spread.n_subjects == 4


def test_no_move_at_zero_and_bad_scales_are_refused(caplog):
    spread = PlacementSpread(np.zeros(3), np.ones(3) * 0.01, np.ones(3), 3)
    x = np.random.default_rng(1).normal(size=(5, 8, 3)).astype(np.float32)
    with caplog.at_level("WARNING", logger="aae_tract.placement"):
        move_placement(_stub(spread), "B", x, 1.0, np.random.default_rng(0))
        assert not caplog.records
        move_placement(_stub(spread), "B", x, 5.0, np.random.default_rng(0))
        assert "placement_noise 5 moves B's streamlines" in caplog.text
    rng = np.random.default_rng(2)
    assert move_placement(_stub(spread), "B", x, 0.0, rng) is x
    assert rng.random() == np.random.default_rng(2).random()  # nothing drawn
    for bad in (-0.5, float("nan"), "far"):
        with pytest.raises(AAETractError, match="placement_noise"):
            move_placement(_stub(spread), "B", x, bad, rng)


def test_spread_is_measured_over_the_training_subjects(model, tiny_splits):
    train, _ = tiny_splits
    n_subjects = len(np.unique(train.subjects))
    assert n_subjects >= 2
    for name in model.bundle_names:
        spread = measure_placement(model, name)
        assert spread.n_subjects == n_subjects
        assert np.all(spread.rotation >= 0) and np.all(spread.shift >= 0)
        assert np.all(np.isfinite(spread.centre))
        # the calibration keeps it: the file carries it
        kept = model.metadata.latent_bank[name]["placement"]
        assert kept == spread.to_json()
    # subjects told apart: the spread is not zero
    assert (
        max(
            float(np.max(measure_placement(model, n).shift)) for n in model.bundle_names
        )
        > 0
    )


def test_one_subject_gives_no_spread_and_no_move(model):
    meta = copy.deepcopy(model.metadata)
    name = model.bundle_names[0]
    bank = meta.latent_bank[name]
    bank["subject"] = [0] * len(bank["z"])
    bank["subject_means"] = bank["subject_means"][:1]
    bank.pop("placement")
    single = TractAAE(model.network, meta)
    assert placement_spread(single, name) is None
    x = np.zeros((3, model.n_points, 3), dtype=np.float32)
    assert move_placement(single, name, x, 1.0, np.random.default_rng(0)) is x


def test_generate_moves_decoded_streamlines_rigidly(model):
    name = model.bundle_names[0]
    plain = generate(model, name, n_streamlines=30, seed=3, placement_noise=0.0)
    moved = generate(model, name, n_streamlines=30, seed=3, placement_noise=2.0)
    np.testing.assert_array_equal(plain.z, moved.z)
    np.testing.assert_allclose(moved.lengths, plain.lengths, rtol=1e-4)
    offsets = np.linalg.norm(moved.streamlines - plain.streamlines, axis=2).mean(1)
    assert np.all(offsets > 0)
    for a, b in zip(plain.streamlines, moved.streamlines):
        pairs_a = np.linalg.norm(a[:, None] - a[None], axis=2)
        pairs_b = np.linalg.norm(b[:, None] - b[None], axis=2)
        np.testing.assert_allclose(pairs_b, pairs_a, atol=1e-3)
    with pytest.raises(AAETractError, match="placement_noise"):
        generate(model, name, n_streamlines=5, placement_noise=-1)


def test_saved_model_keeps_the_spread_and_bad_records_are_refused(model, tmp_path):
    name = model.bundle_names[0]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = TractAAE.load(path)
    assert (
        loaded.metadata.latent_bank[name]["placement"]
        == (model.metadata.latent_bank[name]["placement"])
    )
    from aae_tract.model.metadata import ModelMetadata

    bad = {
        "shift_mm": ([1.0, -2.0, 0.5], "placement.shift_mm must not be negative"),
        "rotation_deg": ([1.0, float("nan"), 0.5], "rotation_deg holds non-finite"),
        "centre_mm": ([1.0, 2.0], "centre_mm must hold 3 numbers"),
        "n_subjects": (99, "n_subjects must be a whole number from 2"),
    }
    for part, (value, message) in bad.items():
        record = copy.deepcopy(loaded.metadata.to_dict())
        record["latent_bank"][name]["placement"][part] = value
        with pytest.raises(AAETractError, match=message):
            ModelMetadata.from_dict(record)
    record = copy.deepcopy(loaded.metadata.to_dict())
    del record["latent_bank"][name]["placement"]["shift_mm"]
    with pytest.raises(AAETractError, match="placement lacks shift_mm"):
        ModelMetadata.from_dict(record)


def test_each_sampling_has_its_default_noises(model):
    from aae_tract.generate import (
        DEFAULT_PLACEMENT_NOISE,
        DEFAULT_SUBJECT_NOISE,
        PRIOR_NOISES,
        default_noises,
        resolve_noises,
    )

    bank = (DEFAULT_SUBJECT_NOISE, DEFAULT_PLACEMENT_NOISE)
    assert default_noises(model, "bank") == bank
    assert model.network.prior.per_bundle  # the default prior is fitted
    assert default_noises(model, "prior") == PRIOR_NOISES
    assert resolve_noises(model, "bank", None, 0.3) == (None, 0.3)
    assert resolve_noises(model, "bank", "default", "default") == bank
    age = SimpleNamespace(
        attribute_name="age",
        network=SimpleNamespace(prior=SimpleNamespace(per_bundle=True)),
    )
    assert default_noises(age, "prior") == bank
    # sample_latent places nothing, so its own default is the bank's
    from aae_tract.generate import sample_latent

    name = model.bundle_names[0]
    targets = np.full(10, model.metadata.bundle_stats[name]["length"]["p50"])
    np.testing.assert_array_equal(
        sample_latent(model, name, targets, sampling="prior", rng=1),
        sample_latent(model, name, targets, sampling="prior", rng=1, subject_noise=0.7),
    )
    # generation with the defaults is generation with the sampling's values
    for sampling in ("bank", "prior"):
        subject, placement = default_noises(model, sampling)
        a = generate(model, name, n_streamlines=20, seed=4, sampling=sampling)
        b = generate(
            model,
            name,
            n_streamlines=20,
            seed=4,
            sampling=sampling,
            subject_noise=subject,
            placement_noise=placement,
        )
        np.testing.assert_array_equal(a.streamlines, b.streamlines)
