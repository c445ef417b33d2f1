"""Generation: calibration, targets, errors, filtering, saving, latent experiments."""

import copy
import dataclasses
import logging
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY
from dipy.io.streamline import load_tractogram
from dipy.tracking.streamline import length as dipy_length

from aae_tract.errors import AAETractError, UnknownBundleError
from aae_tract.generate import (
    CANDIDATE_TOLERANCE,
    DEFAULT_CANDIDATES,
    MAX_CANDIDATES,
    GeneratedBundle,
    check_target,
    default_sampling,
    draw_streamlines,
    generate,
    interpolate,
    make_tractogram,
    match_length,
    nearest_mdf,
    restyle,
    sample_latent,
    target_limits,
)
from aae_tract.io import (
    bbox_space,
    inside_volume,
    load_bundle,
    save_tractogram,
    space_from_sft,
)
from aae_tract.model import TractAAE


@pytest.fixture(scope="module")
def model(tiny_trained):
    return tiny_trained[0]


@pytest.fixture(scope="module")
def age_model(model):
    """The tiny model's networks with metadata that says "conditioned on age".

    Ages 20-75 are given to the latent bank in the order of its dimension 0 and
    the calibration is fitted to them, as training on an age would.
    """
    meta = copy.deepcopy(model.metadata)
    meta.attribute_name = "age"
    for name, stats in meta.bundle_stats.items():
        stats["attribute"] = {"min": 20, "p05": 22, "p50": 45, "p95": 70, "max": 75}
        bank = meta.latent_bank[name]
        z0 = np.sort(np.asarray(bank["z"])[:, 0])
        ages = np.linspace(20, 75, len(z0))
        order = np.argsort(np.argsort(np.asarray(bank["z"])[:, 0]))
        bank["a"] = ages[order].tolist()
        meta.calibration[name] = {
            "x": ages.tolist(),
            "y": np.maximum.accumulate(z0).tolist(),
            "slope": float(np.polyfit(ages, z0, 1)[0]),
        }
    return TractAAE(model.network, meta)


@pytest.fixture(scope="module")
def subject_age_model(model):
    """The tiny model's networks as a model of a per-subject attribute: each
    subject of the latent bank gets one age (in the order of its mean code's
    dimension 0), and the calibration maps the ages to the subjects' means."""
    meta = copy.deepcopy(model.metadata)
    meta.attribute_name = "age"
    meta.config = {**meta.config, "ar_level": "subject"}
    for name, stats in meta.bundle_stats.items():
        bank = meta.latent_bank[name]
        means = np.asarray(bank["subject_means"])
        ages = np.linspace(25, 70, len(means))[np.argsort(np.argsort(means[:, 0]))]
        bank["a"] = ages[np.asarray(bank["subject"])].tolist()
        stats["attribute"] = {
            "min": 25, "p05": 26, "p50": 47, "p95": 69, "max": 70,
        }  # fmt: skip
        order = np.argsort(ages)
        meta.calibration[name] = {
            "x": ages[order].tolist(),
            "y": means[order, 0].tolist(),
            "slope": float(np.polyfit(ages, means[:, 0], 1)[0]),
        }
    return TractAAE(model.network, meta)


def _median_range(model, bundle):
    low, high = model.attribute_range(bundle)
    return 0.5 * (low + high)


def test_default_sampling_follows_the_model(model, age_model):
    """Prior sampling for a length model with the fitted mixture prior (the
    tiny model), bank sampling for an age model or another prior;
    ``generate`` without ``sampling`` draws as the default does and records
    it."""
    assert model.config.prior == "fitted_mixture"
    assert default_sampling(model) == "prior"
    assert default_sampling(age_model) == "bank"
    for prior in ("fitted", "gaussian", "mixture"):
        other = SimpleNamespace(
            config=dataclasses.replace(model.config, prior=prior),
            attribute_name="length",
        )
        assert default_sampling(other) == "bank", prior
    target = _median_range(model, "AF_L")
    drawn = {
        s: generate(model, "AF_L", target, n_streamlines=5, seed=3, sampling=s)
        for s in ("default", "prior", "bank")
    }
    assert drawn["default"].sampling == "prior"
    np.testing.assert_array_equal(
        drawn["default"].streamlines, drawn["prior"].streamlines
    )
    assert not np.allclose(drawn["default"].streamlines, drawn["bank"].streamlines)
    aged = generate(age_model, "AF_L", attribute=40, n_streamlines=4, seed=0)
    assert aged.sampling == "bank"
    for bad in ("posterior", 1):
        with pytest.raises(AAETractError, match="unknown sampling"):
            generate(model, "AF_L", target, n_streamlines=2, sampling=bad)
    # bank sampling's options ask for it where the model's default is prior
    for options in ({"noise": 0.2}, {"noise_scope": "target"}):
        for call, args in (
            (generate, (target,)),
            (sample_latent, ([target],)),
            (draw_streamlines, ([target],)),
        ):
            extra = {"rng": 0} if call is draw_streamlines else {}
            with pytest.raises(AAETractError, match="sampling='bank'"):
                call(model, "AF_L", *args, **extra, **options)
        for sampling in ("bank", "prior"):  # asked for by name: taken
            generate(
                model, "AF_L", target, n_streamlines=2, sampling=sampling, **options
            )
    assert default_sampling(age_model) == "bank"
    generate(age_model, "AF_L", attribute=40, n_streamlines=2, noise=0.2)


def test_calibration_is_monotone(model):
    for bundle in model.bundle_names:
        low, high = model.attribute_range(bundle)
        values = np.linspace(low - 100, high + 100, 500)
        z0 = model.attribute_to_z0(bundle, values)
        assert np.all(np.isfinite(z0))
        assert np.all(np.diff(z0) >= 0), bundle


def test_generate_shapes_and_lengths(model):
    target = _median_range(model, "CST_R")
    result = generate(model, "CST_R", target, n_streamlines=23, seed=1)
    assert isinstance(result, GeneratedBundle)
    assert result.bundle == "CST_R"
    assert result.attribute_name == "length"
    assert result.target == pytest.approx(target)
    assert result.streamlines.shape == (23, model.n_points, 3)
    assert result.streamlines.dtype == np.float32
    assert result.z.shape == (23, model.latent_dims)
    assert len(result.tractogram) == 23
    assert result.acceptance_rate == 1.0
    assert not result.out_of_range
    # lengths are measured on the decoded points as they are
    expected = dipy_length(list(result.streamlines))
    np.testing.assert_allclose(result.lengths, expected, rtol=1e-5)
    # dimension 0 carries the target: calibrated, then refined per code
    # within the calibration's range widened by a quarter
    low, high = model.attribute_to_z0("CST_R", model.attribute_range("CST_R"))
    margin = 0.25 * (high - low) + 1e-6
    assert np.all((result.z[:, 0] >= low - margin) & (result.z[:, 0] <= high + margin))
    assert not result.missed or abs(result.median_length - target) > 0.1 * target


class _LineModel:
    """A decoder with a known answer: straight lines of length
    100 + 40 z0 + 10 z1 mm (so the other dimensions move the length too)."""

    attribute_name = "length"

    def attribute_range(self, bundle):
        return 60.0, 140.0

    def attribute_to_z0(self, bundle, values):
        return (np.asarray(values, dtype=np.float64) - 100.0) / 40.0

    def decoded_lengths(self, z, bundle, *, batch_size=1024):
        x = self.decode(z, bundle)
        return np.linalg.norm(np.diff(x, axis=1), axis=2).sum(axis=1)

    def decode(self, z, bundle, *, batch_size=1024):
        length = 100.0 + 40.0 * z[:, 0] + 10.0 * z[:, 1]
        t = np.linspace(0.0, 1.0, 16)
        x = np.zeros((len(z), 16, 3), dtype=np.float32)
        x[:, :, 0] = length[:, None] * t[None, :]
        return x


def test_exact_length_brings_each_code_to_its_target():
    model = _LineModel()
    rng = np.random.default_rng(0)
    targets = rng.uniform(60, 140, 50)
    z = rng.normal(size=(50, 4)).astype(np.float32)
    z[:, 0] = model.attribute_to_z0("AF_L", targets)  # the calibrated value
    refined = match_length(model, "AF_L", z, targets)
    np.testing.assert_array_equal(refined[:, 1:], z[:, 1:])  # only z0 moves
    x = model.decode(refined, "AF_L")
    lengths = np.linalg.norm(np.diff(x, axis=1), axis=2).sum(axis=1)
    # the calibrated z0 missed by 10 |z1| mm; the refined one hits the target
    # where the z0 it needs lies in the calibration's range widened by a
    # quarter ((-1, 1) -> (-1.5, 1.5)), and is kept where it does not
    assert np.abs(10.0 * z[:, 1]).mean() > 5
    needed = (targets - 100.0 - 10.0 * z[:, 1]) / 40.0
    reachable = np.abs(needed) < 1.5
    assert 40 <= reachable.sum() < 50
    np.testing.assert_allclose(lengths[reachable], targets[reachable], atol=0.05)
    np.testing.assert_array_equal(refined[~reachable], z[~reachable])
    # with extend, the others are searched again within the range widened by
    # 1.5 times ((-4, 4)); those reached in the first range are the same
    extended = match_length(model, "AF_L", z, targets, extend=True)
    np.testing.assert_array_equal(extended[reachable], refined[reachable])
    x = model.decode(extended, "AF_L")
    lengths = np.linalg.norm(np.diff(x, axis=1), axis=2).sum(axis=1)
    np.testing.assert_allclose(lengths, targets, atol=0.05)
    # beyond reach within the widest range: the calibrated value is kept
    far = np.array([400.0, -100.0])
    for extend in (False, True):
        kept = match_length(model, "AF_L", z[:2], far, extend=extend)
        np.testing.assert_array_equal(kept, z[:2])


def _record_keyword(monkeypatch, function, keyword):
    """Replace ``aae_tract.generate.<function>`` by a pass-through that
    records the ``keyword`` argument of every call; the list of them."""
    import aae_tract.generate as gen

    seen = []
    original = getattr(gen, function)

    def spy(*args, **kwargs):
        seen.append(kwargs.get(keyword))
        return original(*args, **kwargs)

    monkeypatch.setattr(gen, function, spy)
    return seen


def test_generate_passes_extend_reach_to_match_length(model, monkeypatch):
    seen = _record_keyword(monkeypatch, "match_length", "extend")
    target = _median_range(model, "AF_L")
    generate(model, "AF_L", target, n_streamlines=5, seed=0)
    generate(model, "AF_L", target, n_streamlines=5, seed=0, extend_reach=True)
    assert seen == [False, True]


@pytest.mark.parametrize("sampling", ["bank", "prior"])
def test_candidates_keep_the_first_draw_near_the_target(model, sampling):
    target = _median_range(model, "AF_L")
    targets = np.linspace(0.9, 1.1, 12) * target
    options = dict(sampling=sampling, rng=7)
    chosen = sample_latent(model, "AF_L", targets, candidates=4, **options)
    # the same random draws, four per target, none refined
    pool = sample_latent(
        model,
        "AF_L",
        np.repeat(targets, 4),
        candidates=1,
        exact_length=False,
        **options,
    )
    lengths = model.decoded_lengths(pool, "AF_L").reshape(12, 4)
    near = np.abs(lengths - targets[:, None]) <= CANDIDATE_TOLERANCE * targets[:, None]
    # the first within the tolerance; the first drawn where none is
    kept = np.where(near.any(axis=1), np.argmax(near, axis=1), 0)
    codes = pool.reshape(12, 4, -1)[np.arange(12), kept]
    np.testing.assert_array_equal(chosen[:, 1:], codes[:, 1:])
    # ... whose dimension 0 is then refined as a single draw's would be
    refined = match_length(model, "AF_L", codes, targets)
    np.testing.assert_allclose(chosen, refined, rtol=0, atol=1e-6)


def test_candidates_rule_on_known_lengths(monkeypatch):
    """The first draw within the tolerance; the first drawn where none is."""
    import aae_tract.generate as gen

    lengths = np.array(
        [
            [110.0, 100.5, 99.0, 100.0],  # the second is the first near 100
            [100.2, 100.0, 130.0, 70.0],  # the first already is
            [120.0, 130.0, 90.0, 80.0],  # none is: the first
        ]
    )
    pool = np.arange(12, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)

    class Lengths:
        def decoded_lengths(self, z, bundle):
            return lengths.reshape(-1)[z[:, 0].astype(int)]

    monkeypatch.setattr(gen, "_draw_codes", lambda *args, **kwargs: pool)
    chosen = gen._near_candidates(Lengths(), "AF_L", np.full(3, 100.0), 4, None, {})
    np.testing.assert_array_equal(chosen[:, 0], [1, 4, 8])


def test_candidates_are_checked(model):
    for bad in (0, MAX_CANDIDATES + 1, 2.5, True, "4"):
        with pytest.raises(AAETractError, match="candidates must be an integer"):
            sample_latent(model, "AF_L", [100.0], candidates=bad)
    with pytest.raises(AAETractError, match="candidates"):
        generate(model, "AF_L", 100.0, n_streamlines=2, candidates=0)


@pytest.mark.parametrize("sampling", ["bank", "prior"])
def test_generate_is_deterministic_for_a_seed(model, sampling):
    a = generate(model, "AF_L", 110, n_streamlines=10, seed=3, sampling=sampling)
    b = generate(model, "AF_L", 110, n_streamlines=10, seed=3, sampling=sampling)
    c = generate(model, "AF_L", 110, n_streamlines=10, seed=4, sampling=sampling)
    np.testing.assert_array_equal(a.streamlines, b.streamlines)
    assert not np.allclose(a.streamlines, c.streamlines)
    assert a.sampling == sampling


def test_sampled_texture_stays_within_the_bundles_training_range(tiny_splits):
    """Codes far from the bank (a length past the training range) would
    extrapolate the texture scale; decoding draws it within the range the
    bundle's training codes have, and leaves codes inside it alone."""
    model = TractAAE.from_dataset(tiny_splits[0], **TINY)
    # a texture head whose scale varies with the code, as a trained one does
    layer = model.network.decoder.get_layer("texture")
    kernel, _ = layer.get_weights()
    rng = np.random.default_rng(0)
    layer.set_weights([0.05 * rng.standard_normal(kernel.shape), np.array([-3, -2])])
    name = model.bundle_names[0]
    label = model.bundle_index(name)
    bank = rng.standard_normal((50, model.latent_dims)).astype("float32")
    model.metadata.latent_bank = {name: {"z": bank.tolist()}}
    assert model._bundle_texture_bounds(label + 1) is None  # no bank: no bounds
    low, high = model._bundle_texture_bounds(label)
    onehot = model.onehot(np.full(len(bank), label))
    mu, _ = model._texture_of(bank, onehot)
    assert low == mu.min() and high == mu.max()
    far = np.concatenate([bank[:5] + 40.0, bank[:5] - 40.0, bank[:5]])
    onehot = model.onehot(np.full(len(far), label))
    mu, log_tau = model._texture_of(far, onehot)
    xi = np.random.default_rng(0).standard_normal((len(far), 1)).astype("float32")
    shifted = model._bounded_xi(far, onehot, np.full(len(far), label), xi)
    drawn = mu + np.exp(log_tau) * (shifted[:, 0] - xi[:, 0])  # the mu in use
    np.testing.assert_allclose(drawn, np.clip(mu, low, high), atol=1e-4)
    np.testing.assert_allclose(shifted[-5:], xi[-5:], atol=1e-5)
    assert np.mean(np.abs(mu[:10] - np.clip(mu[:10], low, high)) > 1e-3) >= 0.5
    # one call with two bundles: only the one with a bank is bounded
    mixed = np.array([label, label + 1] * 5)
    both = model.onehot(mixed)
    shifted = model._bounded_xi(far[:10], both, mixed, xi[:10])
    np.testing.assert_allclose(shifted[mixed == label + 1], xi[:10][mixed == label + 1])
    mu, log_tau = model._texture_of(far[:10], both)
    drawn = mu + np.exp(log_tau) * (shifted[:, 0] - xi[:10, 0])
    ours = mixed == label
    np.testing.assert_allclose(drawn[ours], np.clip(mu[ours], low, high), atol=1e-4)
    # decoding draws with the shifted xi
    draws = np.random.default_rng(3)
    steps = draws.standard_normal((len(far), model.n_points - 1, 3)).astype("float32")
    xi = draws.standard_normal((len(far), 1)).astype("float32")
    labels = np.full(len(far), label)
    for kept, expect_equal in (
        (model._bounded_xi(far, onehot, labels, xi), True),
        (xi, False),
    ):
        by_hand = model.normalizer.inverse(
            model._decode_batch(far, onehot, (steps, kept))
        )
        same = np.allclose(model.decode(far, name, texture=3), by_hand, atol=1e-4)
        assert same == expect_equal


def test_decoded_lengths_are_the_lengths_of_the_decoded_streamlines(model):
    z = np.random.default_rng(0).normal(size=(50, model.latent_dims))
    x = model.decode(z, "CST_R")
    measured = np.linalg.norm(np.diff(x, axis=1), axis=2).sum(axis=1)
    np.testing.assert_allclose(model.decoded_lengths(z, "CST_R"), measured, rtol=1e-4)


def test_out_of_range_warns_with_seen_range(model, caplog):
    low, high = model.attribute_range("AF_L")
    with caplog.at_level(logging.WARNING, logger="aae_tract.generate"):
        result = generate(
            model, "AF_L", high + 0.2 * (high - low), n_streamlines=5, seed=0
        )
    assert result.out_of_range
    assert result.seen_range == pytest.approx((low, high))
    assert len(result.streamlines) == 5
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"{low:.4g}-{high:.4g} mm" in m and "AF_L" in m and "outside" in m
        for m in messages
    ), messages

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aae_tract.generate"):
        inside = generate(model, "AF_L", 0.5 * (low + high), n_streamlines=5, seed=0)
    assert not inside.out_of_range
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warned if "outside" in m], warned


def test_far_out_of_range_is_refused(model):
    """A target beyond a quarter of the seen range's width past either end is
    refused with the seen and the accepted range; max_extrapolation moves
    that limit, None lifts it."""
    low, high = model.attribute_range("AF_L")
    width = high - low
    assert target_limits(model, "AF_L") == pytest.approx(
        (low - 0.25 * width, high + 0.25 * width)
    )
    for target in (high + 0.3 * width, low - 0.3 * width):
        with pytest.raises(AAETractError, match="too far outside") as info:
            generate(model, "AF_L", target, n_streamlines=5, seed=0)
        message = str(info.value)
        assert message.startswith("AF_L: length")
        assert f"({low:.4g} to {high:.4g} mm)" in message
        assert f"{low - 0.25 * width:.4g} to {high + 0.25 * width:.4g} mm" in message
        assert "--max_extrapolation" in message
    wide = generate(
        model,
        "AF_L",
        high + 0.3 * width,
        n_streamlines=5,
        seed=0,
        max_extrapolation=0.5,
    )
    assert wide.out_of_range and len(wide.streamlines) == 5
    check_target(model, "AF_L", high + 50 * width, max_extrapolation=None)
    with pytest.raises(AAETractError, match="too far outside"):
        check_target(model, "AF_L", high + 0.1 * width, max_extrapolation=0)
    with pytest.raises(AAETractError, match="max_extrapolation"):
        check_target(model, "AF_L", high, max_extrapolation=-1)


def test_target_limits_of_a_bundle_seen_at_one_value_and_of_negative_values():
    from types import SimpleNamespace

    def model(low, high, attribute_name="length"):
        return SimpleNamespace(
            attribute_name=attribute_name, attribute_range=lambda bundle: (low, high)
        )

    # one value: a tenth of it as the width (1 at 0)
    assert target_limits(model(80.0, 80.0), "X") == pytest.approx((78.0, 82.0))
    assert target_limits(model(0.0, 0.0, "score"), "X") == pytest.approx((-0.25, 0.25))
    # an attribute of negative values: the message gives the accepted range
    with pytest.raises(AAETractError) as info:
        check_target(model(-2.0, 2.0, "score"), "X", -4.0)
    assert "(-2 to 2)" in str(info.value) and "at -3 to 3 (" in str(info.value)
    with pytest.raises(AAETractError, match="not finite"):
        check_target(model(-2.0, 2.0, "score"), "X", float("nan"), None)


def test_a_missed_request_is_reported(model, caplog):
    low, high = model.attribute_range("AF_L")
    far = 3 * high  # far beyond what the decoder reaches (no limit asked)
    with caplog.at_level(logging.WARNING, logger="aae_tract.generate"):
        result = generate(
            model, "AF_L", far, n_streamlines=8, seed=0, max_extrapolation=None
        )
    assert result.missed
    assert result.median_length == pytest.approx(np.median(result.lengths))
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        f"requested length {far:.4g} mm" in m and f"{result.median_length:.1f} mm" in m
        for m in messages
    ), messages
    for target in (low, 0.5 * (low + high), high):
        again = generate(model, "AF_L", target, n_streamlines=8, seed=1)
        off = abs(again.median_length - target) > 0.1 * target
        assert again.missed == off


def test_unknown_bundle_lists_known_bundles(model):
    with pytest.raises(UnknownBundleError) as info:
        generate(model, "NOPE_L", 80)
    message = str(info.value)
    assert "NOPE_L" in message
    for name in model.bundle_names:
        assert name in message


@pytest.mark.parametrize("bad", [0.0, -10.0, float("nan"), float("inf"), "long"])
def test_bad_length_is_rejected(model, bad):
    with pytest.raises(AAETractError, match="length"):
        generate(model, "AF_L", bad, n_streamlines=2)


def test_bad_options_are_rejected(model):
    with pytest.raises(AAETractError, match="sampling"):
        generate(model, "AF_L", 100, sampling="magic")
    with pytest.raises(AAETractError, match="n_streamlines"):
        generate(model, "AF_L", 100, n_streamlines=0)


def test_default_target_is_training_median(model):
    result = generate(model, "CST_R", n_streamlines=3, seed=0)
    assert result.target == pytest.approx(
        model.metadata.bundle_stats["CST_R"]["attribute"]["p50"]
    )


def test_age_model_takes_attribute_not_length(age_model):
    with pytest.raises(AAETractError, match="age"):
        generate(age_model, "AF_L", 80, n_streamlines=2)
    result = generate(age_model, "AF_L", attribute=40, n_streamlines=4, seed=0)
    assert result.attribute_name == "age"
    assert result.target == 40
    assert not result.out_of_range
    np.testing.assert_allclose(
        result.z[:, 0], age_model.attribute_to_z0("AF_L", 40), rtol=1e-6
    )
    # filtering an age model uses the MDF test only
    kept = generate(
        age_model, "AF_L", attribute=40, n_streamlines=4, seed=0, filter=True
    )
    assert kept.filter_settings["length_tolerance"] is None


def test_age_codes_keep_their_streamlines_offset_in_dimension_0(
    model, subject_age_model
):
    """Within a subject, dimension 0 varies from streamline to streamline;
    a per-subject attribute's calibration gives the subjects' centre, and
    each drawn code keeps its streamline's offset from it."""
    age_model = subject_age_model
    bank = age_model.metadata.latent_bank["AF_L"]
    bank_z = np.asarray(bank["z"])
    means = np.asarray(bank["subject_means"])
    offsets = bank_z[:, 0] - means[np.asarray(bank["subject"]), 0]
    assert np.std(offsets) > 0
    target = 45.0
    z0 = age_model.attribute_to_z0("AF_L", target)
    # codes that keep their subject, without noise: bank codes apart from
    # dimension 0, which is the calibrated value plus the code's own offset
    z = sample_latent(
        age_model, "AF_L", np.full(300, target), noise=0.0, subject_noise=None, rng=0
    )
    d = ((z[:, None, 1:] - bank_z[None, :, 1:]) ** 2).sum(-1)
    assert np.allclose(d.min(axis=1), 0, atol=1e-8)
    np.testing.assert_allclose(
        z[:, 0], z0 + offsets[d.argmin(axis=1)], rtol=1e-5, atol=1e-5
    )
    assert len(np.unique(np.round(z[:, 0], 4))) > 10
    # the former rule: every code at the calibrated value
    flat = sample_latent(
        age_model, "AF_L", np.full(300, target), rng=0, within_subject=False
    )
    np.testing.assert_allclose(flat[:, 0], z0, rtol=1e-6)
    # moved to new subjects, dimension 0 spreads as the streamlines do
    moved = sample_latent(age_model, "AF_L", np.full(2000, target), rng=1)
    assert 0.5 < np.std(moved[:, 0]) / np.std(offsets) < 2.0
    assert abs(np.mean(moved[:, 0]) - z0) < np.std(offsets)
    # ... and their streamlines come from every subject, not only from those
    # near the target: without noise each offset is a bank code's own
    youngest = float(np.min(bank["a"]))
    exact = sample_latent(
        age_model, "AF_L", np.full(2000, youngest), noise=0.0, subject_noise=0.0,
        rng=2,
    )  # fmt: skip
    d = np.abs(exact[:, :1] - age_model.attribute_to_z0("AF_L", youngest) - offsets)
    assert np.allclose(d.min(axis=1), 0, atol=1e-4)
    drawn = np.asarray(bank["subject"])[d.argmin(axis=1)]
    assert set(drawn) == set(bank["subject"])
    # prior sampling of a fitted prior: dimension 0 spreads around the
    # calibrated value as the streamlines of one subject do
    assert getattr(age_model.network.prior, "per_bundle", False)
    drawn = sample_latent(
        age_model, "AF_L", np.full(4000, target), sampling="prior", rng=3
    )
    np.testing.assert_allclose(np.std(drawn[:, 0]), np.std(offsets), rtol=0.1)
    assert abs(np.mean(drawn[:, 0]) - z0) < 0.1 * np.std(offsets)
    flat = sample_latent(
        age_model, "AF_L", np.full(50, target), sampling="prior", rng=3,
        within_subject=False,
    )  # fmt: skip
    np.testing.assert_allclose(flat[:, 0], z0, rtol=1e-6)
    # a length is the streamline's own: its dimension 0 is set, as before
    length = _median_range(model, "AF_L")
    for keep in (True, False):
        for sampling in ("bank", "prior"):
            z = sample_latent(
                model, "AF_L", np.full(20, length), rng=0, within_subject=keep,
                exact_length=False, sampling=sampling,
            )  # fmt: skip
            np.testing.assert_allclose(
                z[:, 0], model.attribute_to_z0("AF_L", length), rtol=1e-6
            )


def _without_bank_subjects(model):
    """The model as saved before latent banks kept their codes' subjects."""
    meta = copy.deepcopy(model.metadata)
    for bank in meta.latent_bank.values():
        del bank["subject"], bank["subject_means"]
    return TractAAE(model.network, meta)


def test_bank_sampling_prefers_codes_near_the_target(model):
    bank_z = np.asarray(model.metadata.latent_bank["AF_L"]["z"])
    bank_a = np.asarray(model.metadata.latent_bank["AF_L"]["a"])
    low, high = np.percentile(bank_a, [10, 90])
    legacy = _without_bank_subjects(model)
    for target in (low, high):
        z = sample_latent(
            legacy,
            "AF_L",
            np.full(300, target),
            sampling="bank",
            noise=0.0,
            neighbours=10,
            rng=0,
        )
        # with no noise every code is a bank code apart from dimension 0
        d = ((z[:, None, 1:] - bank_z[None, :, 1:]) ** 2).sum(-1)
        assert np.allclose(d.min(axis=1), 0, atol=1e-8)
        picked = bank_a[d.argmin(axis=1)]
        assert abs(np.mean(picked) - target) < abs(np.mean(bank_a) - target)


def test_bank_keeps_the_subject_of_each_code(model, tiny_splits):
    train, _ = tiny_splits
    names = np.asarray(train.bundle_names)[train.labels]
    for name, bank in model.metadata.latent_bank.items():
        rows = names == name
        subjects = np.unique(train.subjects[rows])
        assert len(bank["subject"]) == len(bank["z"])
        assert len(bank["subject_means"]) == len(subjects)
        z = model.encode_prepared(np.asarray(train.x[rows]))
        for i, subject in enumerate(subjects):
            np.testing.assert_allclose(
                bank["subject_means"][i],
                z[train.subjects[rows] == subject].mean(axis=0),
                atol=1e-3,
            )


def test_subject_shift_spreads_codes_like_the_training_subjects():
    from aae_tract.generate import _subject_shift

    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, size=(5, 3))
    subject = np.repeat(np.arange(5), 20)
    idx = rng.integers(0, len(subject), 40_000)
    uniform = np.full((1, len(subject)), 1 / len(subject))
    inverse = np.zeros(len(idx), dtype=int)
    centre = means.mean(axis=0)

    def new_means(scale, weights=uniform):
        shift = _subject_shift(subject, means, weights, inverse, idx, scale, rng)
        # the subject mean each draw now has
        return means[subject[idx]] + shift

    np.testing.assert_allclose(new_means(0.0), np.tile(centre, (len(idx), 1)))
    spread = np.cov(means, rowvar=False)
    for scale in (1.0, 0.5):
        moved = new_means(scale)
        np.testing.assert_allclose(moved.mean(axis=0), centre, atol=0.1)
        tolerance = 0.1 * np.abs(spread).max()
        np.testing.assert_allclose(
            np.cov(moved, rowvar=False), scale**2 * spread, atol=tolerance
        )
    # a target weighting two subjects gives subjects between those two
    two = np.where(subject < 2, 1.0, 0.0)[None]
    moved = new_means(1.0, two / two.sum())
    direction = (means[1] - means[0]) / np.linalg.norm(means[1] - means[0])
    off_line = (moved - means[0]) - np.outer((moved - means[0]) @ direction, direction)
    assert np.abs(off_line).max() < 1e-9
    np.testing.assert_allclose(moved.mean(axis=0), means[:2].mean(axis=0), atol=0.1)


def test_subject_shift_compares_subjects_near_the_target():
    """Subjects that differ by an amount that grows with length (as a
    deformation moves a long streamline more than a short fragment): moved
    with the subjects' mean codes near the target, a code lands on the
    subjects' mean at its own length; with the bundle-wide means it keeps
    most of its subject's difference at the long end of the range."""
    from aae_tract.generate import _kernel_weights, _subject_shift

    rng = np.random.default_rng(2)
    n_subjects, per_subject = 4, 200
    subject = np.repeat(np.arange(n_subjects), per_subject)
    lengths = rng.uniform(20.0, 100.0, len(subject))
    effect = np.array([-3.0, -1.0, 1.5, 2.5])  # each subject's difference
    direction = np.array([1.0, -2.0, 0.5])
    shape = np.stack([np.sin(lengths / 30), lengths / 50, np.cos(lengths / 40)], 1)
    z = shape + (effect[subject] * lengths / 100)[:, None] * direction
    means = np.stack([z[subject == s].mean(axis=0) for s in range(n_subjects)])
    targets = np.array([30.0, 95.0])
    weights = _kernel_weights(lengths, targets, k=32)
    inverse = rng.integers(0, len(targets), 2000)
    cdf = np.cumsum(weights, axis=1)
    idx = np.array([np.searchsorted(cdf[t], rng.random()) for t in inverse])
    # the subjects' mean difference, as the target's kernel weights them
    share = np.stack([weights[:, subject == s].sum(axis=1) for s in range(4)], 1)
    centre = (share @ effect)[inverse]
    truth = shape[idx] + (centre * lengths[idx] / 100)[:, None] * direction

    def error(local):
        moved = z[idx] + _subject_shift(
            subject, means, weights, inverse, idx, 0.0, rng,
            targets=targets, local=local,
        )  # fmt: skip
        return np.abs(moved - truth).max(axis=1)

    near = error((z, lengths, 128))
    wide = error(None)
    long_end = inverse == 1
    for end in (long_end, ~long_end):
        assert np.median(near[end]) < 0.3
        assert np.median(wide[end]) > 4 * np.median(near[end])
    # with scale 1 the new subjects spread as the training subjects do there
    moved = z[idx] + _subject_shift(
        subject, means, weights, inverse, idx, 1.0, rng,
        targets=targets, local=(z, lengths, 128),
    )  # fmt: skip
    along = (moved - shape[idx]) @ direction / (direction @ direction)
    at_95 = along[long_end] / (lengths[idx][long_end] / 100)
    assert abs(at_95.mean() - centre[long_end].mean()) < 0.2
    assert 0.75 < at_95.std() / effect.std(ddof=1) < 1.25


def test_local_subject_means_fall_back_on_the_bundle_mean():
    """A subject with no code near the target keeps its bundle-wide mean."""
    from aae_tract.generate import _local_subject_means

    rng = np.random.default_rng(3)
    subject = np.repeat([0, 1], 100)
    lengths = np.concatenate([rng.uniform(20, 100, 100), rng.uniform(20, 40, 100)])
    z = np.stack([lengths / 10, subject * 5.0], 1) + rng.normal(0, 0.01, (200, 2))
    means = np.stack([z[subject == s].mean(axis=0) for s in (0, 1)])
    local = _local_subject_means(z, lengths, subject, means, np.array([95.0]), 16)
    # subject 0: its codes near 95 mm (the kernel is one-sided at the end)
    assert 8.5 < local[0, 0, 0] < 9.6 and abs(local[0, 0, 1]) < 0.01
    assert abs(local[0, 0, 0] - means[0, 0]) > 2.5
    np.testing.assert_allclose(local[0, 1], means[1], atol=1e-6)


def test_default_noise_follows_the_attribute(model, subject_age_model):
    """Bank noise when the calibration set none: 0.225 for a length model,
    0.2 for an age model (``ar_level="subject"``), whose calibration sets
    none: its sampling without ``noise`` is sampling with 0.2."""
    from types import SimpleNamespace

    from aae_tract.generate import default_noise

    assert default_noise(model) == 0.225
    age = SimpleNamespace(config=SimpleNamespace(ar_level="subject"))
    assert default_noise(age) == 0.2
    assert default_noise(subject_age_model) == 0.2
    target = np.full(50, _median_range(model, "AF_L"))
    options = dict(exact_length=False, within_subject=False)
    default = sample_latent(subject_age_model, "AF_L", target, rng=5, **options)
    np.testing.assert_array_equal(
        default,
        sample_latent(subject_age_model, "AF_L", target, rng=5, noise=0.2, **options),
    )


def _two_subjects(model):
    """``model`` with AF_L's bank codes split into two subjects apart in
    latent dimension 1 (each subject's mean: its codes' mean); also the
    bank's codes and which of them are the second subject's."""
    meta = copy.deepcopy(model.metadata)
    bank = meta.latent_bank["AF_L"]
    z = np.asarray(bank["z"], dtype=np.float64)
    high = z[:, 1] > np.median(z[:, 1])
    bank["subject"] = high.astype(int).tolist()
    bank["subject_means"] = [
        z[~high].mean(axis=0).tolist(),
        z[high].mean(axis=0).tolist(),
    ]
    return TractAAE(model.network, meta), z, high


@pytest.mark.parametrize("sampling", ["bank", "prior"])
def test_subject_scope_reaches_the_subject_shift(model, monkeypatch, sampling):
    """``generate`` hands ``subject_scope`` down to the subject shift: the
    subjects' codes near the target by default (a kernel 4x as wide as the
    draws'), the whole bundle's with ``"bundle"``."""
    import aae_tract.generate as gen

    seen = _record_keyword(monkeypatch, "_subject_shift", "local")
    two, z, _ = _two_subjects(model)
    target = _median_range(model, "AF_L")
    options = dict(n_streamlines=5, seed=0, sampling=sampling)
    near = generate(two, "AF_L", target, **options)
    whole = generate(two, "AF_L", target, subject_scope="bundle", **options)
    assert len(seen) == 2 and seen[1] is None
    bank_z, bank_a, k = seen[0]
    assert len(bank_z) == len(z) == len(bank_a)
    assert k == min(len(z), 4 * gen._neighbours(two, len(z)))
    assert not np.allclose(near.streamlines, whole.streamlines)


def test_evaluate_options_carry_the_generation_settings():
    from aae_tract.metrics import _noise

    assert _noise(None, 0.7) == {
        "subject_noise": 0.7,
        "within_subject": True,
        "subject_scope": "target",
        "extend_reach": False,
        "placement_noise": "default",
        "noise_scope": "bundle",
        "candidates": DEFAULT_CANDIDATES,
        "prior_spread": 1.0,
    }
    assert _noise(0.3, None, "own", "bundle", True, 0.4, "target", 1, 0.7) == {
        "noise": 0.3,
        "subject_noise": None,
        "within_subject": "own",
        "subject_scope": "bundle",
        "extend_reach": True,
        "placement_noise": 0.4,
        "noise_scope": "target",
        "candidates": 1,
        "prior_spread": 0.7,
    }


@pytest.mark.parametrize("option", ["subject_scope", "noise_scope"])
def test_scopes_are_checked(model, tiny_splits, option):
    from aae_tract.metrics import evaluate

    held_out = tiny_splits[1]
    target = _median_range(model, "AF_L")
    bank = {"sampling": "bank"}  # noise_scope is bank sampling's
    for scope in ("target", "bundle"):
        generate(
            model, "AF_L", target, n_streamlines=2, seed=0, **bank, **{option: scope}
        )
    with pytest.raises(AAETractError, match=f"{option} must be one of"):
        generate(model, "AF_L", target, n_streamlines=2, **bank, **{option: "subject"})
    with pytest.raises(AAETractError, match=f"{option} must be one of"):
        sample_latent(model, "AF_L", [target], **bank, **{option: "subject"})
    with pytest.raises(AAETractError, match=f"{option} must be one of"):
        evaluate(model, held_out, **bank, **{option: "subject"})


def test_noise_scope_follows_the_codes_near_the_target(model):
    """Bank noise shaped near the target moves a code only in the directions
    in which the bank codes near the target vary: here the longest half of
    the streamlines' codes vary in latent dimension 3 and the shortest third's
    in dimension 2 only, so noise at the longest target stays out of
    dimension 2 with ``"target"`` and not with ``"bundle"`` (the default);
    its spread in dimension 3 is that of the long codes (a difference of two
    of them over sqrt(2))."""
    meta = copy.deepcopy(model.metadata)
    bank = meta.latent_bank["AF_L"]
    z = np.asarray(bank["z"], dtype=np.float64)
    # lengths spread evenly, so that the kernel of the longest is narrow
    a = np.linspace(20.0, 200.0, len(z))
    bank["a"] = a.tolist()
    rng = np.random.default_rng(0)
    long, short = a > np.median(a), a < np.quantile(a, 1 / 3)
    z[:, 1:] = 0.0
    z[short, 2] = rng.normal(0, 1.0, short.sum())
    z[long, 3] = rng.normal(0, 0.5, long.sum())
    bank["z"] = z.tolist()
    shaped = TractAAE(model.network, meta)
    targets = np.full(4000, a.max())
    options = dict(
        sampling="bank", noise=1.0, subject_noise=None, exact_length=False, rng=1
    )
    near = sample_latent(shaped, "AF_L", targets, noise_scope="target", **options)
    whole = sample_latent(shaped, "AF_L", targets, **options)
    assert np.all(near[:, 2] == 0.0)
    assert np.std(whole[:, 2]) > 0.3
    # the drawn code's own spread 0.5 and the noise's 0.5, in quadrature
    assert 0.6 < np.std(near[:, 3]) < 0.8


def test_subject_shift_follows_a_per_subject_attribute_to_the_ends():
    """For a per-subject attribute the centre is the subjects' weighted linear
    regression on it: exact when the subject means lie on a line in the
    value, even where the kernel weights only subjects on one side."""
    from aae_tract.generate import _kernel_weights, _subject_shift

    rng = np.random.default_rng(1)
    ages = np.array([22.0, 30.0, 41.0, 50.0, 58.0, 66.0, 79.0])
    base, per_year = rng.normal(size=4), rng.normal(size=4)
    means = base + ages[:, None] * per_year
    subject = np.repeat(np.arange(len(ages)), 10)
    targets = np.array([20.0, 50.0, 80.0])
    weights = _kernel_weights(ages[subject], targets, k=20)
    idx = rng.integers(0, len(subject), 300)
    inverse = rng.integers(0, len(targets), 300)
    for scale in (0.0, 1.0):
        moved = means[subject[idx]] + _subject_shift(
            subject, means, weights, inverse, idx, scale, rng,
            values=ages, targets=targets,
        )  # fmt: skip
        np.testing.assert_allclose(moved, base + targets[inverse, None] * per_year)
    # the same in any unit of the attribute (a millionth of a year)
    moved = means[subject[idx]] + _subject_shift(
        subject, means, weights, inverse, idx, 0.0, rng,
        values=ages * 1e-6, targets=targets * 1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(moved, base + targets[inverse, None] * per_year)
    # the weighted mean alone is pulled toward the middle at the ends
    plain = means[subject[idx]] + _subject_shift(
        subject, means, weights, inverse, idx, 0.0, rng
    )
    young = inverse == 0
    truth = base + 20.0 * per_year
    assert np.abs(plain[young] - truth).max() > 1.0
    # weights (all but) on one subject, a kernel narrower than the gaps
    # between ages: no line through one point, that subject's mean
    one = _kernel_weights(ages[subject], np.array([45.0]), k=10)
    assert 0 < one[0, subject == 3].sum() < 1e-12
    moved = means[subject[idx]] + _subject_shift(
        subject, means, one, np.zeros(len(idx), int), idx, 0.0, rng,
        values=ages, targets=np.array([45.0]),
    )  # fmt: skip
    np.testing.assert_allclose(moved, np.tile(means[2], (len(idx), 1)), atol=1e-9)


def test_matched_offsets_take_the_spread_of_subjects_at_the_target():
    """Subjects whose streamlines spread around their mean in proportion to
    their age (and skewed): a drawn code takes the offset at its rank from
    the line of the subjects' offset quantiles at the target, so the
    offsets drawn at an age spread as that age's subjects do, whichever
    subject each code came from; the own offsets keep the pooled spread."""
    from aae_tract.generate import _kernel_weights, _matched_offsets
    from aae_tract.model.tract_aae import _subject_spread

    rng = np.random.default_rng(4)
    ages = np.linspace(20, 80, 13)
    per_subject = 400
    subject = np.repeat(np.arange(len(ages)), per_subject)
    shape = rng.gamma(2.0, size=len(subject))  # skewed: mean > median
    shape -= np.repeat(
        [shape[subject == s].mean() for s in range(len(ages))], per_subject
    )
    scale = 0.02 * ages  # spread grows with age, 0.4 to 1.6
    means0 = rng.normal(size=len(ages))
    z0 = means0[subject] + scale[subject] * shape
    spread = _subject_spread(z0, subject, means0)
    targets = np.array([30.0, 70.0])
    weights = _kernel_weights(ages[subject], targets, k=len(subject) // 4)
    n = 20_000
    idx = rng.integers(0, len(subject), n)
    inverse = np.repeat([0, 1], n // 2)
    matched = _matched_offsets(
        z0, subject, means0, spread, weights, ages, targets, inverse, idx
    )
    own = z0[idx] - means0[subject[idx]]
    for t, age in enumerate(targets):
        rows = inverse == t
        truth = 0.02 * age * shape  # the spread of a subject of this age
        for q in ((10, 90), (25, 75)):
            np.testing.assert_allclose(
                np.diff(np.percentile(matched[rows], q)),
                np.diff(np.percentile(truth, q)),
                rtol=0.05,
            )
        np.testing.assert_allclose(np.std(matched[rows]), np.std(truth), rtol=0.1)
        np.testing.assert_allclose(
            np.median(matched[rows]), np.median(truth), atol=0.05 * np.std(truth)
        )
        # the own offsets carry the drawn subjects' spreads, not the target's
        assert abs(np.std(own[rows]) / np.std(truth) - 1) > 0.2
    # each code keeps its rank within its subject
    for t in range(2):
        rows = np.flatnonzero(inverse == t)[:500]
        same = subject[idx[rows]] == subject[idx[rows]][0]
        order_own = np.argsort(own[rows][same])
        assert np.all(np.diff(matched[rows][same][order_own]) >= -1e-12)


def test_age_bank_sampling_uses_the_spread_when_the_bank_has_it(subject_age_model):
    """With the subjects' quantiles in the bank, bank sampling of a per-subject
    attribute (``within_subject=True``) changes only dimension 0 of the codes;
    ``"own"`` keeps the streamline's own offset, as does a bank without the
    quantiles (a file written before). When every subject has the same
    quantiles, a code's rank maps back to its own offset."""
    from aae_tract.generate import _subject_values

    meta = copy.deepcopy(subject_age_model.metadata)
    bank = meta.latent_bank["AF_L"]
    z0 = np.asarray(bank["z"], dtype=np.float64)[:, 0]
    offsets = z0 - np.asarray(bank["subject_means"])[np.asarray(bank["subject"]), 0]
    same = np.quantile(offsets, (np.arange(20) + 0.5) / 20)
    bank["subject_spread"] = np.tile(same, (len(bank["subject_means"]), 1)).tolist()
    spread = TractAAE(subject_age_model.network, meta)
    target = np.full(2000, 47.0)
    options = dict(noise=0.0, subject_noise=0.0, rng=5)
    matched = sample_latent(spread, "AF_L", target, **options)
    own = sample_latent(spread, "AF_L", target, within_subject="own", **options)
    before = sample_latent(subject_age_model, "AF_L", target, **options)
    np.testing.assert_array_equal(own, before)
    np.testing.assert_array_equal(matched[:, 1:], own[:, 1:])
    np.testing.assert_allclose(matched[:, 0], own[:, 0], atol=1e-5)
    # ... also with the bank noise and the new subject's draw, at two ages
    both = np.repeat([30.0, 60.0], 1000)
    noisy = dict(noise=0.3, subject_noise=0.7, rng=6)
    np.testing.assert_allclose(
        sample_latent(spread, "AF_L", both, **noisy),
        sample_latent(spread, "AF_L", both, within_subject="own", **noisy),
        atol=1e-5,
    )
    # quantiles that grow linearly with age: a code at age a of a subject of
    # age a_s has its offset scaled by c(a) / c(a_s) within its subject's
    # quantiles and keeps its excess past them
    subject = np.asarray(bank["subject"])
    ages = _subject_values(subject, np.asarray(bank["a"]), len(bank["subject_means"]))
    c = 1.0 + (ages - 25.0) / 45.0
    bank["subject_spread"] = (c[:, None] * same[None, :]).tolist()
    grown = TractAAE(subject_age_model.network, meta)
    targets = np.repeat([30.0, 60.0], 1000)
    # a kernel over several subjects (by default it falls on one of the few
    # subjects here, whose row it then takes: no line through one point)
    wide = dict(options, neighbours=len(offsets))
    z = sample_latent(grown, "AF_L", targets, **wide)
    kept = sample_latent(grown, "AF_L", targets, within_subject="own", **wide)
    z0 = grown.attribute_to_z0("AF_L", targets)
    own_offset = kept[:, 0] - z0
    # which subject each draw came from: without noise its own offset is
    # its bank code's (a draw whose offset two subjects' codes share within
    # float32 rounding is left out)
    gap = np.abs(own_offset[:, None] - offsets[None, :])
    assert np.allclose(gap.min(axis=1), 0, atol=1e-5)
    near = gap <= gap.min(axis=1, keepdims=True) + 1e-5
    sure = np.array([len(set(subject[row])) == 1 for row in near])
    assert sure.mean() > 0.9
    cs = c[subject[gap.argmin(axis=1)]]
    ct = 1.0 + (targets - 25.0) / 45.0
    low, high = same[0] * cs, same[-1] * cs
    inside = np.clip(own_offset, low, high)
    expected = inside * ct / cs + (own_offset - inside)
    np.testing.assert_allclose((z[:, 0] - z0)[sure], expected[sure], atol=1e-4)
    assert np.abs(own_offset - expected).max() > 0.1 * np.std(offsets)
    for bad in ("yes", None, 1):
        with pytest.raises(AAETractError, match="within_subject"):
            sample_latent(spread, "AF_L", [47.0], within_subject=bad)


def test_bank_sampling_moves_codes_off_their_subjects(model):
    """Copies of training codes (noise 0, no subject move) reappear only in
    a model without subjects in its bank; with them, codes are new."""
    bank_z = np.asarray(model.metadata.latent_bank["AF_L"]["z"])
    target = _median_range(model, "AF_L")

    def nearest(m, **kwargs):
        z = sample_latent(
            m, "AF_L", np.full(200, target), sampling="bank", noise=0.0, rng=0, **kwargs
        )
        d = ((z[:, None, 1:] - bank_z[None, :, 1:]) ** 2).sum(-1)
        return np.sqrt(d.min(axis=1))

    assert np.allclose(nearest(_without_bank_subjects(model)), 0, atol=1e-4)
    assert np.median(nearest(model, subject_noise=1.0)) > 1e-2
    for bad in (-1.0, float("nan"), "wide"):
        with pytest.raises(AAETractError, match="subject_noise"):
            sample_latent(model, "AF_L", [target], sampling="bank", subject_noise=bad)


def test_prior_sampling_moves_samples_to_new_subjects(model):
    """A fitted prior's samples lie where the training subjects' codes lie;
    ``subject_noise`` moves each from the subject of its nearest bank code
    to a new one, as bank sampling moves bank codes. Two subjects apart in
    dimension 1: with 0 both move to their centre (the gap between them
    goes), with None or a bank without subjects the samples stay the
    prior's, and with 1 the new subjects spread as the two do."""
    two, z, high = _two_subjects(model)
    bank = two.metadata.latent_bank["AF_L"]
    target = np.full(4000, _median_range(model, "AF_L"))
    # the subjects compared over the whole bundle: the means set above
    options = dict(sampling="prior", exact_length=False, rng=3, subject_scope="bundle")
    kept = sample_latent(two, "AF_L", target, subject_noise=None, **options)
    np.testing.assert_array_equal(
        kept,
        sample_latent(_without_bank_subjects(two), "AF_L", target, **options),
    )
    merged = sample_latent(two, "AF_L", target, subject_noise=0.0, **options)
    spread = sample_latent(two, "AF_L", target, subject_noise=1.0, **options)
    for z_new in (merged, spread):
        np.testing.assert_array_equal(z_new[:, 0], kept[:, 0])
        assert not np.allclose(z_new[:, 1:], kept[:, 1:])
    # each sample's subject: that of its nearest bank code (in units of the
    # bank's spread); with 0 its subject's mean is swapped for one centre
    # (the subjects' mean, weighted by their codes near the target length)
    scale = z.std(axis=0) + 1e-6
    d = (((kept[:, None, :] - z[None, :, :]) / scale) ** 2).sum(-1)
    subject = high[d.argmin(axis=1)].astype(int)
    assert 0.05 < subject.mean() < 0.95  # both subjects are drawn
    means = np.asarray(bank["subject_means"])
    centre = (merged - kept)[:, 1:] + means[subject, 1:]
    np.testing.assert_allclose(centre, centre[:1].repeat(len(centre), 0), atol=1e-4)
    assert min(means[:, 1]) < centre[0, 0] < max(means[:, 1])
    # the new subjects' draws on top: centred, and as spread as the two
    # subjects around their centre (sd gap / sqrt(2) for equal weights)
    gap = abs(means[1, 1] - means[0, 1])
    extra = spread[:, 1] - merged[:, 1]
    assert abs(extra.mean()) < 0.1 * gap
    assert 0.4 * gap < np.std(extra) < 0.8 * gap
    # compared near the target (the default): the same swap, with each
    # subject's mean code over its bank codes near the target length
    from aae_tract.generate import _local_subject_means, _neighbours

    options["subject_scope"] = "target"
    near = sample_latent(two, "AF_L", target, subject_noise=0.0, **options)
    a = np.asarray(bank["a"], dtype=np.float64)
    local = _local_subject_means(
        z, a, high.astype(int), means, target[:1], 4 * _neighbours(two, len(z))
    )[0]
    centre = (near - kept)[:, 1:] + local[subject, 1:]
    np.testing.assert_allclose(centre, centre[:1].repeat(len(centre), 0), atol=1e-4)
    assert not np.allclose(near, merged)


@pytest.mark.parametrize("n", [1, 37])
def test_filter_returns_exactly_n(model, n):
    target = _median_range(model, "CC_ForcepsMajor")
    result = generate(
        model,
        "CC_ForcepsMajor",
        target,
        n_streamlines=n,
        seed=0,
        filter=True,
        length_tolerance=1000.0,
    )
    assert result.streamlines.shape == (n, model.n_points, 3)
    assert result.z.shape == (n, model.latent_dims)
    assert 0 < result.acceptance_rate <= 1
    # every kept streamline passes the MDF test against the reference set
    reference = model.decode(
        np.asarray(model.metadata.latent_bank["CC_ForcepsMajor"]["z"]),
        "CC_ForcepsMajor",
    )
    d, _ = nearest_mdf(result.streamlines, reference)
    assert np.all(d <= result.filter_settings["max_mdf"] + 1e-4)


def test_filter_keeps_only_lengths_within_tolerance(model):
    # calibrated codes without the length search: lengths scatter around the
    # target, and the filter has some to refuse
    free = generate(model, "AF_L", 110, n_streamlines=200, seed=0, exact_length=False)
    median = float(np.median(free.lengths))
    tol = 0.5 * float(np.std(free.lengths)) + 1e-3
    result = generate(
        model,
        "AF_L",
        median,
        n_streamlines=20,
        seed=0,
        filter=True,
        length_tolerance=tol,
        max_mdf=np.inf,
        max_tries=50,
        exact_length=False,
    )
    assert len(result.streamlines) == 20
    assert np.all(np.abs(result.lengths - median) <= tol + 1e-4)
    assert result.acceptance_rate < 1.0


def test_filter_against_given_reference_streamlines(model, tiny_splits):
    train, _ = tiny_splits
    real = train.x[train.bundle_mask("AF_L")]
    generated = generate(model, "AF_L", 110, n_streamlines=100, seed=0)
    d, _ = nearest_mdf(generated.streamlines, real)
    limit = float(np.median(d))
    result = generate(
        model,
        "AF_L",
        110,
        n_streamlines=10,
        seed=0,
        filter=True,
        length_tolerance=1000.0,
        max_mdf=limit,
        reference_streamlines=real,
    )
    assert result.filter_settings["max_mdf"] == limit
    d, _ = nearest_mdf(result.streamlines, real)
    assert np.all(d <= limit + 1e-4)
    assert 0.2 < result.acceptance_rate < 0.9


def test_filter_that_keeps_nothing_reports_acceptance(model):
    with pytest.raises(AAETractError, match="acceptance rate 0.0%"):
        generate(
            model,
            "AF_L",
            110,
            n_streamlines=5,
            seed=0,
            filter=True,
            max_mdf=1e-6,
            max_tries=2,
        )


@pytest.mark.parametrize("ext", [".trk", ".trx"])
def test_saved_tractogram_lines_up_with_training_space(
    model, minimal_bundles_dir, tmp_path, ext
):
    result = generate(model, "CST_R", 130, n_streamlines=12, seed=0)
    path = save_tractogram(result.tractogram, tmp_path / f"CST_R{ext}")
    back = load_tractogram(str(path), "same", bbox_valid_check=False)
    back.to_rasmm()
    np.testing.assert_allclose(
        np.asarray(back.streamlines.get_data()).reshape(result.streamlines.shape),
        result.streamlines,
        atol=1e-3,
    )
    training = load_bundle(minimal_bundles_dir / "sub_1" / "CST_R.trk")
    ours, theirs = space_from_sft(back), space_from_sft(training)
    np.testing.assert_allclose(ours["affine"], theirs["affine"], atol=1e-6)
    assert ours["dimensions"] == theirs["dimensions"]
    np.testing.assert_allclose(ours["voxel_sizes"], theirs["voxel_sizes"])
    assert ours["voxel_order"] == theirs["voxel_order"]
    assert ours == space_from_sft(result.tractogram)
    # the convenience method writes the same file
    again = load_tractogram(
        str(result.save(tmp_path / f"again{ext}")), "same", bbox_valid_check=False
    )
    np.testing.assert_allclose(
        np.asarray(again.streamlines.get_data()),
        np.asarray(back.streamlines.get_data()),
        atol=1e-5,
    )


def _with_space(model, space):
    """The tiny model's networks with its metadata's space replaced."""
    meta = copy.deepcopy(model.metadata)
    meta.space = space
    return TractAAE(model.network, meta)


def test_calibration_says_whether_the_header_holds_the_data(model, tiny_splits):
    train, _ = tiny_splits
    # the embedded default's header is a 1 x 1 x 1 volume its streamlines leave
    assert model.metadata.space["holds_data"] is False
    around = _with_space(model, bbox_space(np.asarray(train.x)))
    around.calibrate(train)
    assert around.metadata.space["holds_data"] is True


@pytest.mark.parametrize("filtered", [False, True])
def test_generation_keeps_streamlines_inside_a_volume_that_holds_the_data(
    model, tmp_path, caplog, filtered
):
    options = dict(n_streamlines=40, seed=3, filter=filtered, max_mdf=np.inf)
    free = generate(model, "CST_R", 130, **options)
    space = _cut_volume(free.streamlines)
    space["holds_data"] = True
    bounded = _with_space(model, space)
    out = inside_volume(free.streamlines, space)
    assert 0 < out.sum() < len(out)
    with caplog.at_level(logging.INFO, logger="aae_tract.generate"):
        result = generate(bounded, "CST_R", 130, **options)
    assert inside_volume(result.streamlines, space).all()
    assert len(result.streamlines) == 40 and result.acceptance_rate < 1.0
    if not filtered:  # the streamlines inside keep their places
        np.testing.assert_array_equal(result.streamlines[out], free.streamlines[out])
        assert f"{(~out).sum()} of 40 generated CST_R streamlines left" in caplog.text
    else:
        assert "left the volume of the output space" in caplog.text
    # DIPY reads the file with its default bounding-box check
    path = save_tractogram(result.tractogram, tmp_path / "CST_R.trk")
    assert len(load_tractogram(str(path), "same")) == 40
    kept = generate(bounded, "CST_R", 130, keep_inside=False, **options)
    np.testing.assert_array_equal(kept.streamlines, free.streamlines)
    assert not kept.tractogram.is_bbox_in_vox_valid()


def _cut_volume(streamlines, percentile=75):
    """A grid around ``streamlines`` whose top cuts the highest quarter off."""
    space = bbox_space(streamlines)
    top = np.percentile(streamlines[..., 2].max(axis=1), percentile)
    space["dimensions"][2] = int(top - space["affine"][2][3])
    return space


def test_generation_keeps_to_a_given_volume(model):
    """volume= (the space a file will be written in) is kept to even when the
    model's own header holds nothing, as the embedded default's does."""
    free = generate(model, "CST_R", 130, n_streamlines=40, seed=3)
    space = _cut_volume(free.streamlines)
    assert not inside_volume(free.streamlines, space).all()
    result = generate(model, "CST_R", 130, n_streamlines=40, seed=3, volume=space)
    assert inside_volume(result.streamlines, space).all()
    loose = generate(
        model, "CST_R", 130, n_streamlines=40, seed=3, volume=space, keep_inside=False
    )
    np.testing.assert_array_equal(loose.streamlines, free.streamlines)


def test_a_volume_no_streamline_fits_is_reported(model):
    free = generate(model, "AF_L", 110, n_streamlines=5, seed=0)
    space = bbox_space(free.streamlines[:1, :1])  # a few mm around one point
    space["holds_data"] = True
    with pytest.raises(AAETractError, match="left the volume.*keep_inside=False"):
        generate(
            _with_space(model, space), "AF_L", 110, n_streamlines=5, seed=0, max_tries=2
        )


def test_tractogram_without_space_covers_the_streamlines():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5, 10, 3)) * 20 + [10, -30, 5]).astype(np.float32)
    sft = make_tractogram(x, None)
    sft.to_vox()
    dims = np.asarray(sft.dimensions)
    vox = np.asarray(sft.streamlines.get_data())
    assert np.all(vox >= -0.5) and np.all(vox < dims - 0.5)
    sft.to_rasmm()
    np.testing.assert_allclose(
        np.asarray(sft.streamlines.get_data()).reshape(x.shape), x, atol=1e-4
    )


def test_interpolate_runs_from_a_to_b(model, tiny_splits):
    _, validation = tiny_splits
    x = validation.x[validation.bundle_mask("AF_L")]
    path = interpolate(model, x[0], x[1], "AF_L", n_steps=6)
    assert path.shape == (6, model.n_points, 3)
    ends = model.reconstruct(np.stack([x[0], x[1]]), "AF_L")
    # a list and an array are resampled along slightly different paths
    # (codes within 0.01), so the ends match to a fraction of a millimetre
    np.testing.assert_allclose(path[0], ends[0], atol=0.25)
    np.testing.assert_allclose(path[-1], ends[1], atol=0.25)
    with pytest.raises(AAETractError):
        interpolate(model, x[0], x[1], "AF_L", n_steps=1)


def test_restyle_decodes_one_code_per_bundle(model, tiny_splits):
    _, validation = tiny_splits
    x = validation.x[validation.bundle_mask("AF_L")][:7]
    out = restyle(model, x, "AF_L", ["CST_R", "AF_L"])
    assert set(out) == {"CST_R", "AF_L"}
    assert out["CST_R"].shape == (7, model.n_points, 3)
    np.testing.assert_allclose(out["AF_L"], model.reconstruct(x, "AF_L"), atol=1e-4)
    # the other label moves the streamlines toward the other bundle
    cst = validation.x[validation.bundle_mask("CST_R")]
    d_cst, _ = nearest_mdf(out["CST_R"], cst)
    d_af, _ = nearest_mdf(out["AF_L"], cst)
    assert d_cst.mean() < d_af.mean()
    with pytest.raises(UnknownBundleError):
        restyle(model, x, "AF_L", "NOPE")
