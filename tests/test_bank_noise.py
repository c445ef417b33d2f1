"""Bank noise set from the training subjects (aae_tract.bank_noise)."""

import copy

import numpy as np
import pytest

from aae_tract.bank_noise import (
    BANK_KEY,
    NOISE_GRID,
    NOVELTY_TARGET,
    ROUGH_LIMIT,
    calibrate_noise,
    new_subject_distance,
)
from aae_tract.generate import DEFAULT_CANDIDATES


def _lines(n, rng):
    """``n`` straight 50 mm streamlines along x, scattered in y and z."""
    t = np.linspace(0, 50, 12)
    offsets = rng.normal(0, 2.0, (n, 2))
    x = np.zeros((n, 12, 3), dtype="float32")
    x[:, :, 0] = t
    x[:, :, 1:] = offsets[:, None, :]
    return x


def _af_l(model, train):
    """AF_L's training streamlines, subjects and lengths."""
    mask = np.asarray(train.labels) == model.bundle_index("AF_L")
    return (
        np.asarray(train.x)[mask],
        np.asarray(train.subjects)[mask],
        np.asarray(train.attribute)[mask],
    )


def test_new_subject_distance_of_subjects_equally_apart():
    """Four subjects, each a bundle of one streamline, moved to the corners
    of a regular tetrahedron of 3 mm edges: every subject's nearest other
    streamline lies 3 mm away whatever the number of others, and the
    extrapolation keeps 3 mm."""
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    corners *= 3.0 / np.linalg.norm(corners[0] - corners[1])
    line = _lines(1, np.random.default_rng(0))[0]
    x = np.stack([line + c for c in corners for _ in range(10)])
    subjects = np.repeat([f"sub-{s}" for s in range(4)], 10)
    distance, by_k = new_subject_distance(x, subjects, rng=1)
    assert set(by_k) == {1, 3}
    assert by_k[1] == pytest.approx(3.0, abs=1e-4)
    assert distance == pytest.approx(3.0, abs=1e-4)


@pytest.mark.parametrize("n_subjects", [5, 20])
def test_new_subject_distance_extrapolates_to_every_subject(n_subjects, monkeypatch):
    """Where the distance to ``k`` other subjects falls as ``k**-0.5``, the
    estimate for all ``n`` subjects is ``n**-0.5``: measured on half and on
    all of the others (of at most 16 subjects drawn from 20)."""
    import aae_tract.bank_noise as bank_noise

    per = 10
    x = _lines(per * n_subjects, np.random.default_rng(0))
    subjects = np.repeat([f"sub-{s:02d}" for s in range(n_subjects)], per)

    def power_law(streamlines, reference):
        return 4.0 * (len(reference) / per) ** -0.5

    monkeypatch.setattr(bank_noise, "_median_nearest", power_law)
    distance, by_k = new_subject_distance(x, subjects, rng=0)
    used = min(n_subjects, bank_noise.MAX_SUBJECTS)
    assert set(by_k) == {(used - 1) // 2, used - 1}
    assert distance == pytest.approx(4.0 * n_subjects**-0.5)
    # a distance that rises with more subjects (noisy draws) is taken as flat
    monkeypatch.setattr(
        bank_noise, "_median_nearest", lambda a, ref: (len(ref) / per) ** 0.5
    )
    distance, by_k = new_subject_distance(x, subjects, rng=0)
    assert distance == pytest.approx(by_k[used - 1])


def test_new_subject_distance_falls_with_more_subjects():
    """Subjects drawn from one population: the more others a subject is
    compared with, the nearer its nearest streamline, and the estimate for
    all of them lies below the distance to all but one."""
    rng = np.random.default_rng(0)
    x = _lines(120, rng)
    subjects = np.repeat([f"sub-{s}" for s in range(6)], 20)
    distance, by_k = new_subject_distance(x, subjects, rng=2)
    assert by_k[2] > by_k[5]
    assert 0 < distance < by_k[5]


def test_new_subject_distance_needs_two_subjects_and_the_noise_three():
    x = _lines(20, np.random.default_rng(0))
    assert new_subject_distance(x, ["sub-1"] * 20) == (None, {})
    assert calibrate_noise(None, "AF_L", x, ["sub-1"] * 20, np.full(20, 50.0)) is None
    two = ["a"] * 10 + ["b"] * 10
    distance, by_k = new_subject_distance(x, two)
    assert list(by_k) == [1] and distance == by_k[1]
    # the calibration needs three: two say too little of a new subject
    assert calibrate_noise(None, "AF_L", x, two, np.full(20, 50.0)) is None


def test_calibration_keeps_a_noise_per_bundle_and_band(tiny_trained, tmp_path):
    """Training sets each bundle's bank noise per length band: it is where
    the generated streamlines' distance, measured on the grid, reaches the
    band's goal; sampling interpolates it between the bands, and the model
    file keeps it."""
    from aae_tract.bank_noise import noise_at
    from aae_tract.generate import sample_latent
    from aae_tract.model import TractAAE

    model = tiny_trained[0]
    for name in model.bundle_names:
        record = model.metadata.latent_bank[name][BANK_KEY]
        assert record["target"] == NOVELTY_TARGET
        assert record["candidates"] == DEFAULT_CANDIDATES  # generation's default
        assert len(record["at"]) >= 2 and np.all(np.diff(record["at"]) >= 0)
        for i, value in enumerate(record["value"]):
            assert record["goal_mm"][i] == pytest.approx(
                NOVELTY_TARGET * record["reference_mm"][i], abs=1e-3
            )
            assert NOISE_GRID[0] <= value <= NOISE_GRID[-1]
            rising = np.maximum.accumulate(record["distance_mm"][i])
            expected = np.interp(record["goal_mm"][i], rising, NOISE_GRID)
            rough = np.array(record["rough"][i])
            crumpled = np.flatnonzero(rough > max(ROUGH_LIMIT, rough[0]))
            if len(crumpled):  # not as far as the noise that crumples them
                expected = min(expected, NOISE_GRID[crumpled[0] - 1])
            assert value == pytest.approx(expected, abs=1e-3)
        np.testing.assert_allclose(noise_at(record, record["at"]), record["value"])
    # sampling without a noise takes the band's: the same codes as asking it
    record = model.metadata.latent_bank["AF_L"][BANK_KEY]
    options = dict(exact_length=False, sampling="bank")
    for at, value in zip(record["at"], record["value"], strict=True):
        target = np.full(30, at)
        np.testing.assert_array_equal(
            sample_latent(model, "AF_L", target, rng=4, **options),
            sample_latent(model, "AF_L", target, rng=4, noise=value, **options),
        )
    # halfway between two bands' lengths, halfway between their noises
    (a0, a1), (v0, v1) = record["at"][:2], record["value"][:2]
    halfway = np.full(30, (a0 + a1) / 2)
    np.testing.assert_allclose(
        sample_latent(model, "AF_L", halfway, rng=4, **options),
        sample_latent(model, "AF_L", halfway, rng=4, noise=(v0 + v1) / 2, **options),
        atol=1e-5,
    )
    path = tmp_path / "m.keras"
    model.save(path)
    again = TractAAE.load(path)
    assert again.metadata.latent_bank["AF_L"][BANK_KEY] == record


def test_a_wrong_noise_record_is_a_clear_error(tiny_trained):
    """A model file whose bank noise is not numbers in order, one noise per
    band length and none negative, is refused naming the field."""
    from aae_tract.errors import AAETractError
    from aae_tract.model.metadata import ModelMetadata

    good = tiny_trained[0].metadata.to_dict()
    ModelMetadata.from_dict(copy.deepcopy(good))
    bad = [
        ([30.0, 90.0], [0.1, float("nan")], "noise.value holds non-finite"),
        ([90.0, 30.0], [0.1, 0.2], "noise.at must not decrease"),
        ([30.0, 90.0], [0.1, -0.2], "noise.value must be 0 or more"),
        ([30.0, 90.0], [0.1], "2 band lengths and 1 noises"),
    ]
    for at, value, message in bad:
        record = copy.deepcopy(good)
        record["latent_bank"]["AF_L"][BANK_KEY].update(at=at, value=value)
        with pytest.raises(AAETractError, match=message):
            ModelMetadata.from_dict(record)


def test_calibration_measures_the_generation_of_its_candidates(
    tiny_trained, tiny_splits, monkeypatch
):
    import aae_tract.generate as generate

    model = tiny_trained[0]
    args = _af_l(model, tiny_splits[0])
    seen = []
    real = generate.sample_latent

    def spy(*a, **k):
        seen.append(k["candidates"])
        return real(*a, **k)

    monkeypatch.setattr(generate, "sample_latent", spy)
    for candidates in (None, 1, 3):
        seen.clear()
        record = calibrate_noise(model, "AF_L", *args, rng=0, candidates=candidates)
        wanted = DEFAULT_CANDIDATES if candidates is None else candidates
        assert record["candidates"] == wanted
        assert seen and set(seen) == {wanted}


def test_noise_follows_how_new_a_subject_is(tiny_trained, tiny_splits, monkeypatch):
    """A bundle whose new subject lies farther gets more noise, and one
    whose new subject lies nearer less: the same model and data with a new
    subject's distance doubled and halved."""
    import aae_tract.bank_noise as bank_noise

    model = tiny_trained[0]
    args = _af_l(model, tiny_splits[0])
    # never held back by crumpled streamlines here: the tiny model crumples
    # some at any noise
    monkeypatch.setattr(bank_noise, "ROUGH_LIMIT", np.inf)
    real = bank_noise.new_subject_distance
    records = {}
    for factor in (1.0, 2.0, 0.5):

        def scaled(*a, factor=factor, **k):
            distance, by_k = real(*a, **k)
            return factor * distance, by_k

        monkeypatch.setattr(bank_noise, "new_subject_distance", scaled)
        records[factor] = calibrate_noise(model, "AF_L", *args, rng=0)
    own, far, near = records[1.0], records[2.0], records[0.5]
    assert far["at"] == own["at"] == near["at"]
    np.testing.assert_allclose(
        far["reference_mm"], 2 * np.array(own["reference_mm"]), rtol=1e-4
    )
    pairs = list(zip(near["value"], own["value"], far["value"], strict=True))
    assert all(n <= o <= f for n, o, f in pairs)
    assert any(n < o or o < f for n, o, f in pairs)


def test_noise_stops_before_it_crumples_streamlines(
    tiny_trained, tiny_splits, monkeypatch
):
    """Where more noise would crumple more streamlines than the limit (and
    than without noise), the noise stops at the last level before: with a
    new subject far away every band would take the top of the grid, but
    streamlines that crumple from its fourth level on hold it at the third."""
    import aae_tract.bank_noise as bank_noise
    import aae_tract.metrics as metrics

    model = tiny_trained[0]
    args = _af_l(model, tiny_splits[0])
    real = bank_noise.new_subject_distance

    def far_away(*a, **k):
        distance, by_k = real(*a, **k)
        return 100 * distance, by_k

    monkeypatch.setattr(bank_noise, "new_subject_distance", far_away)
    monkeypatch.setattr(bank_noise, "ROUGH_LIMIT", np.inf)
    free = calibrate_noise(model, "AF_L", *args, rng=0)
    assert set(free["value"]) == {NOISE_GRID[-1]}
    calls = []

    def crumpling(generated, real):
        calls.append(1)  # the grid's levels in order, band after band
        return 0.0 if (len(calls) - 1) % len(NOISE_GRID) < 3 else 0.5

    monkeypatch.setattr(metrics, "rough_fraction", crumpling)
    monkeypatch.setattr(bank_noise, "ROUGH_LIMIT", 0.01)
    held = calibrate_noise(model, "AF_L", *args, rng=0)
    assert set(held["value"]) == {NOISE_GRID[2]}
    assert held["rough"][0] == [0.0] * 3 + [0.5] * (len(NOISE_GRID) - 3)


def test_models_without_a_calibrated_noise_keep_the_fixed_one(tiny_trained):
    """A model file from before the calibration set the noise (no key in its
    bank), and the noise shaped near the target, sample with the fixed
    default."""
    from aae_tract.generate import NOISE_BY_LEVEL, sample_latent

    model = copy.copy(tiny_trained[0])
    model.metadata = copy.deepcopy(model.metadata)
    target = np.full(20, float(np.median(model.metadata.latent_bank["AF_L"]["a"])))
    options = dict(exact_length=False, rng=3, sampling="bank")
    fixed = NOISE_BY_LEVEL["streamline"]
    scoped = dict(noise_scope="target", **options)
    np.testing.assert_array_equal(
        sample_latent(model, "AF_L", target, **scoped),
        sample_latent(model, "AF_L", target, noise=fixed, **scoped),
    )
    for bank in model.metadata.latent_bank.values():
        bank.pop(BANK_KEY)
    np.testing.assert_array_equal(
        sample_latent(model, "AF_L", target, **options),
        sample_latent(model, "AF_L", target, noise=fixed, **options),
    )
