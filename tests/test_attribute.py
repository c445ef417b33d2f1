"""The attribute through the model both ways: known answers and the commands."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli

import aae_tract.attribute as attribute_module
from aae_tract.attribute import (
    ATTRIBUTE_METRIC_NAMES,
    _inverse_calibration,
    attribute_mae,
    attribute_slope_error,
    estimate_attribute,
    length_slope,
)
from aae_tract.dataset import StreamlineDataset
from aae_tract.errors import AAETractError
from aae_tract.model import TractAAE


def _calibrated(x, y, slope):
    cal = {"x": list(x), "y": list(y), "slope": slope}
    return SimpleNamespace(metadata=SimpleNamespace(calibration={"A": cal}))


def test_inverse_calibration_undoes_the_calibration():
    model = _calibrated([20, 40, 60, 80], [-1.0, 0.0, 0.5, 2.0], 0.05)
    ages = np.array([20, 30, 40, 50, 60, 70, 80])
    z0 = np.interp(ages, [20, 40, 60, 80], [-1.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(_inverse_calibration(model, "A", z0), ages)
    # outside the range: the overall slope, both ways
    np.testing.assert_allclose(_inverse_calibration(model, "A", [-1.5, 2.5]), [10, 90])
    # a flat run of z0 maps to the middle of its attribute range
    flat = _calibrated([20, 40, 60], [0.0, 1.0, 1.0], 0.02)
    assert _inverse_calibration(flat, "A", 1.0) == pytest.approx(50)


def test_length_slope():
    ages = np.array([20.0, 35, 50, 65, 80])
    assert length_slope(ages, 100 - 0.3 * ages) == pytest.approx(-0.3)
    assert length_slope([50, 50], [1, 2]) is None


def _age_dataset(slope_mm_per_year):
    """Six subjects aged 20-70, one bundle, median length 100 + slope (age - 45)."""
    ages = np.repeat(np.arange(20.0, 80.0, 10.0), 5)
    lengths = 100 + slope_mm_per_year * (ages - 45) + np.tile([-2, -1, 0, 1, 2], 6)
    n = len(ages)
    return StreamlineDataset(
        x=np.zeros((n, 4, 3), np.float32),
        labels=np.zeros(n, np.int32),
        attribute=ages.astype(np.float32),
        lengths=lengths.astype(np.float32),
        subjects=np.repeat([f"s{i}" for i in range(6)], 5),
        bundle_names=["A"],
        attribute_name="age",
        n_points=4,
    )


def test_slope_error_on_known_slopes(monkeypatch):
    """Real data: -0.3 mm/year; generation at -0.45 mm/year: error 0.5."""
    train = _age_dataset(-0.3)

    def fake_generate(model, bundle, *, attribute, **kwargs):
        return SimpleNamespace(median_length=100 - 0.45 * (attribute - 45))

    monkeypatch.setattr("aae_tract.generate.generate", fake_generate)
    result = attribute_slope_error(SimpleNamespace(bundle_names=["A"]), train)
    row = result["per_bundle"]["A"]
    assert row["slope_real"] == pytest.approx(-0.3)
    assert row["slope_generated"] == pytest.approx(-0.45)
    assert result["worst"] == pytest.approx(0.5)
    assert row["monotone"] is True
    # the right direction but flat at the end: not monotone
    monkeypatch.setattr(
        "aae_tract.generate.generate",
        lambda model, bundle, *, attribute, **kw: SimpleNamespace(
            median_length=100 - 0.3 * min(attribute, 50)
        ),
    )
    result = attribute_slope_error(SimpleNamespace(bundle_names=["A"]), train)
    assert result["per_bundle"]["A"]["monotone"] is False


def _straight(lengths, n_points=8):
    """Straight streamlines along x of the given lengths (mm)."""
    t = np.linspace(0, 1, n_points)[None, :, None]
    return (np.asarray(lengths)[:, None, None] * t * [1.0, 0, 0]).astype(np.float32)


def test_generation_read_back_inverts_the_length_curve(monkeypatch):
    """Generation at -0.3 mm/year around 100 mm at 45; a subject whose
    streamlines have a median of 91 mm is read back as 75 years old."""
    model = SimpleNamespace(
        bundle_names=["A", "B"],
        attribute_range=lambda bundle: (20.0, 80.0),
        prepare=lambda x, bundles: (
            np.asarray(x),
            np.array([0 if b == "A" else 1 for b in bundles]),
        ),
    )
    monkeypatch.setattr(
        "aae_tract.generate.generate",
        lambda model, bundle, *, attribute, **kw: SimpleNamespace(
            median_length=(100 if bundle == "A" else 50) - 0.3 * (attribute - 45)
        ),
    )
    x = _straight([88.0, 91.0, 95.0, 40.0, 41.0, 42.0])
    value, per_bundle = estimate_attribute(
        model, x, ["A"] * 3 + ["B"] * 3, method="generation"
    )
    assert per_bundle["A"] == pytest.approx(75.0, abs=1e-3)
    assert per_bundle["B"] == pytest.approx(75.0, abs=1e-3)
    assert value == pytest.approx(75.0, abs=1e-3)
    with pytest.raises(AAETractError, match="read-back method"):
        estimate_attribute(model, x, ["A"] * 6, method="oracle")


def test_encoder_read_back_inverts_the_calibration_of_mean_codes():
    """The calibration maps a value to the mean z0 of its streamlines (a
    least-squares fit): a subject whose codes are skewed, with mean z0
    0.375 and median 0, is read back at the value of 0.375, not of 0."""
    z0 = np.array([-0.5, -0.25, 0.0, 0.0, 0.0, 0.25, 0.5, 3.0])
    assert z0.mean() == pytest.approx(0.375)
    model = SimpleNamespace(
        bundle_names=["A"],
        metadata=SimpleNamespace(
            calibration={"A": {"x": [20, 80], "y": [-1.0, 2.0], "slope": 0.05}}
        ),
        prepare=lambda x, bundles: (np.asarray(x), np.zeros(len(x), int)),
        encode_prepared=lambda x: np.stack([z0, np.zeros_like(z0)], axis=1),
    )
    value, _ = estimate_attribute(model, _straight([50.0] * 8), "A", method="encoder")
    assert value == pytest.approx(20 + (0.375 + 1.0) / 0.05)


def test_attribute_mae_against_the_trivial_baseline(monkeypatch):
    held = _age_dataset(-0.3)
    train = _age_dataset(-0.3)
    truth = {f"s{i}": 20.0 + 10 * i for i in range(6)}
    # a reader that is off by +3 years for everyone (subjects come in order)
    calls = []

    def reader(model, x, bundles, **kwargs):
        subject = f"s{len(calls)}"
        calls.append(subject)
        return truth[subject] + 3.0, {"A": truth[subject] + 3.0}

    monkeypatch.setattr(attribute_module, "estimate_attribute", reader)
    result = attribute_mae(SimpleNamespace(), held, train=train)
    assert result["mae"] == pytest.approx(3.0)
    # predicting the training mean (45) misses by 15, 5, 5, 15, 25 ... on average
    assert result["baseline_mae"] == pytest.approx(np.mean([25, 15, 5, 5, 15, 25]))
    assert result["ratio"] == pytest.approx(3.0 / 15.0)


def test_age_model_commands(tmp_path):
    """--age writes <BUNDLE>_age<A>.trk; evaluation of an age model reports the
    attribute metrics; --age on a length model is refused."""
    from aae_tract.data_fetchers import make_phantom

    data = make_phantom(tmp_path / "phantom", n_subjects=4, n_per_bundle=6, seed=1,
                        bundles=["AF_L", "UF_L"])  # fmt: skip
    out = tmp_path / "out"
    tiny = ["--epochs", "2", "--n_points", "16", "--batch_size", "32",
            "--latent_dims", "4", "--n_control", "4", "--filters", "8",
            "--disc_units", "8"]  # fmt: skip
    args = [data, *tiny, "--attribute", "age", "--val_fraction", "0.25"]
    assert run_cli("aae_tract_train", *args, "--out_dir", out) == 0
    stored = TractAAE.load(out / "aae_tract_model.keras").config
    assert stored.ar_level == "subject"  # age is one value per subject
    # the soft target made the age slope worse: age keeps the sign, and the
    # prior, weights and no decoder-only stage, as its models were measured
    assert (stored.prior, stored.ar_soft) == ("fitted", 0.0)
    assert (stored.adv_weight, stored.ar_weight, stored.polish_epochs) == (
        0.005,
        0.5,
        0,
    )
    model = ["--model", out / "aae_tract_model.keras"]
    gen = [*model, "--bundle", "UF_L", "--n_streamlines", "3", "--skip_picture"]
    assert run_cli("aae_tract_generate", *gen, "--age", "70", "--out_dir", out) == 0
    assert (out / "UF_L_age70.trk").is_file()
    both = ["--age", "70", "--attribute_value", "70", "--out_dir", out]
    assert run_cli("aae_tract_generate", *gen, *both) == 1
    ev = tmp_path / "ev"
    assert run_cli("aae_tract_evaluate", *model, "--n_generate", "10",
                   "--out_dir", ev) == 0  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    for key in ATTRIBUTE_METRIC_NAMES:
        assert metrics[key] is not None and metrics[key] >= 0, key
    assert metrics["attribute_mae_baseline"] > 0
    assert set(metrics["attribute_slope"]) == {"AF_L", "UF_L"}


def test_age_on_a_length_model_is_refused(tmp_path, capsys, minimal_bundles_dir):
    out = tmp_path / "out"
    tiny = ["--epochs", "1", "--n_points", "16", "--batch_size", "64",
            "--latent_dims", "4", "--n_control", "4", "--filters", "8",
            "--disc_units", "8", "--register", "none"]  # fmt: skip
    assert run_cli("aae_tract_train", minimal_bundles_dir, *tiny,
                   "--out_dir", out) == 0  # fmt: skip
    args = ["--model", out / "aae_tract_model.keras", "--age", "70", "--skip_picture"]
    assert run_cli("aae_tract_generate", *args, "--out_dir", out) == 1
    assert "--age needs a model trained with --attribute age" in capsys.readouterr().err


def _subjects_with(values, offsets, per_subject=30, spread=0.5, seed=0):
    """Streamlines of subjects with one value each: z0 = trend(value) plus the
    subject's offset plus each streamline's own spread."""
    rng = np.random.default_rng(seed)
    v = np.repeat(values, per_subject)
    s = np.repeat([f"sub-{i:02d}" for i in range(len(values))], per_subject)
    noise = np.repeat(offsets, per_subject) + spread * rng.standard_normal(len(v))
    return v, s, noise


def test_subject_calibration_averages_out_each_subjects_departure():
    """A per-subject attribute: the map follows the trend through the subjects
    (their least-squares line), not each subject's own departure from it, and
    has no flat runs where an isotonic fit through the same points has."""
    from sklearn.isotonic import IsotonicRegression

    from aae_tract.model.tract_aae import _subject_calibration

    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = np.sort(rng.uniform(20, 80, 20))
        offsets = 0.25 * rng.standard_normal(20)  # subjects depart from the trend
        v, s, noise = _subjects_with(values, offsets, seed=seed)
        z0 = 0.02 * v + noise  # +0.02 a year
        knots = np.linspace(values[0], values[-1], 64)
        fitted = _subject_calibration(v, z0, s, knots)
        means = [z0[s == name].mean() for name in np.unique(s)]
        line = np.polyval(np.polyfit(values, means, 1), knots)
        assert np.polyfit(knots, fitted, 1)[0] == pytest.approx(
            np.polyfit(values, means, 1)[0], rel=0.1
        )
        iso = IsotonicRegression(out_of_bounds="clip").fit(v, z0).predict(knots)
        assert np.abs(fitted - line).mean() < 0.5 * np.abs(iso - line).mean()
        assert np.mean(np.diff(iso) == 0) > 0.25  # the isotonic fit's flat runs
        assert np.all(np.diff(fitted) > 0)


def test_subject_calibration_bends_with_a_curved_trend_and_counts_subjects():
    """A trend that is not a straight line is followed more closely than by a
    line through all subjects, and a subject counts once however many
    streamlines it has."""
    from aae_tract.model.tract_aae import _subject_calibration

    values = np.linspace(10, 90, 60)
    v, s, noise = _subjects_with(values, np.zeros(60), spread=0.05)
    knots = np.linspace(10, 90, 33)
    for trend in (np.log, lambda a: -(((a - 100) / 40.0) ** 2)):
        fitted = _subject_calibration(v, trend(v) + noise, s, knots)
        line = np.polyval(np.polyfit(v, trend(v), 1), knots)
        error = np.abs(fitted - trend(knots)).mean()
        assert error < 0.75 * np.abs(line - trend(knots)).mean()
    # one subject given ten times the streamlines moves nothing
    z0 = np.log(v) + noise
    extra = np.flatnonzero(s == s[0])
    v2, s2 = np.concatenate([v] + [v[extra]] * 9), np.concatenate([s] + [s[extra]] * 9)
    z2 = np.concatenate([z0] + [z0[extra]] * 9)
    np.testing.assert_allclose(
        _subject_calibration(v2, z2, s2, knots),
        _subject_calibration(v, z0, s, knots),
        atol=1e-9,
    )
    # ages in two groups: a line between them, not a step
    v3 = np.repeat([25.0, 70.0], 5 * 30)
    s3 = np.repeat([f"s{i}" for i in range(10)], 30)
    z3 = np.where(v3 < 50, 0.5, 1.4) + 0.01 * np.sin(np.arange(len(v3)))
    between = _subject_calibration(v3, z3, s3, np.linspace(25, 70, 5))
    np.testing.assert_allclose(between, np.linspace(0.5, 1.4, 5), atol=1e-3)
    # a single value: the mean
    one = _subject_calibration(np.full(6, 40.0), np.arange(6.0), np.array(["a"] * 6),
                               np.array([30.0, 40.0, 50.0]))  # fmt: skip
    np.testing.assert_allclose(one, [2.5, 2.5, 2.5])


def test_calibrate_uses_the_subject_fit_for_a_per_subject_attribute(tiny_splits):
    """calibrate() maps an age (ar_level="subject") through the subjects' local
    linear fit, and a length through an isotonic fit of the streamlines (also
    when the AR loss was told to work on subjects: a length is not one value
    per subject)."""
    from conftest import TINY
    from sklearn.isotonic import IsotonicRegression

    from aae_tract.model.tract_aae import _subject_calibration

    train, _ = tiny_splits
    ages = {s: 20.0 + 10 * i for i, s in enumerate(np.unique(train.subjects))}
    aged = SimpleNamespace(
        labels=train.labels,
        subjects=train.subjects,
        x=train.x,
        attribute=np.array([ages[s] for s in train.subjects]),
    )
    cases = (("subject", aged, True), ("streamline", train, False))
    for level, data, subject_fit in cases + (("subject", train, False),):
        model = TractAAE.from_dataset(train, ar_level=level, **TINY)
        model.calibrate(data)
        z0 = model.encode_prepared(np.asarray(train.x))[:, 0].astype("float64")
        for i, name in enumerate(model.bundle_names):
            rows = np.asarray(train.labels) == i
            a = np.asarray(data.attribute, dtype="float64")[rows]
            cal = model.metadata.calibration[name]
            iso = IsotonicRegression(out_of_bounds="clip").fit(a, z0[rows])
            isotonic = np.maximum.accumulate(iso.predict(cal["x"]))
            expected = isotonic
            if subject_fit:
                expected = _subject_calibration(
                    a, z0[rows], np.asarray(train.subjects)[rows], np.asarray(cal["x"])
                )
                # the two fits differ on these data
                assert not np.allclose(expected, isotonic, atol=1e-3)
            np.testing.assert_allclose(cal["y"], expected, rtol=1e-4, atol=1e-5)
            # the bank keeps each subject's quantiles of z0 around its mean
            # for a per-subject attribute only
            bank = model.metadata.latent_bank[name]
            assert ("subject_spread" in bank) == subject_fit
            if subject_fit:
                spread = np.asarray(bank["subject_spread"])
                subjects = np.asarray(train.subjects)[rows]
                grid = (np.arange(spread.shape[1]) + 0.5) / spread.shape[1]
                for i, s in enumerate(np.unique(subjects)):
                    own = z0[rows][subjects == s]
                    np.testing.assert_allclose(
                        spread[i], np.quantile(own - own.mean(), grid), atol=1e-4
                    )
                assert np.ptp(spread[:, -1] - spread[:, 0]) > 0
