"""Metrics on cases with a known answer, and evaluate() on a tiny model."""

import math

import numpy as np
import pytest
from dipy.tracking.distances import bundles_distances_mdf

from aae_tract.errors import AAETractError, UnknownBundleError
from aae_tract.metrics import (
    METRIC_NAMES,
    density_dice,
    diversity_ratio,
    evaluate,
    label_fidelity,
    length_mae,
    mean_pairwise_mdf,
    paired_mdf,
    spearman_rho,
)


def _fan(n, n_points=20, offset=(0.0, 0.0, 0.0), spread=2.0, seed=0):
    """``n`` straight 60 mm lines along x, spread in y and z."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 60, n_points)
    base = np.stack([t, np.zeros_like(t), np.zeros_like(t)], axis=1)
    shifts = np.zeros((n, 1, 3))
    shifts[:, 0, 1:] = rng.normal(scale=spread, size=(n, 2))
    return (base[None] + shifts + np.asarray(offset)).astype(np.float32)


# ------------------------------------------------------------------ distances
def test_paired_mdf_known_values():
    x = _fan(6)
    np.testing.assert_allclose(paired_mdf(x, x), 0.0)
    np.testing.assert_allclose(paired_mdf(x, x + [0, 3, 4]), 5.0, rtol=1e-6)
    # direction does not matter
    np.testing.assert_allclose(paired_mdf(x, x[:, ::-1]), 0.0, atol=1e-6)
    with pytest.raises(AAETractError):
        paired_mdf(x, x[:3])


def test_paired_mdf_matches_dipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 12, 3)).astype(np.float32) * 10
    b = rng.normal(size=(8, 12, 3)).astype(np.float32) * 10
    dipy = np.diag(bundles_distances_mdf(list(a), list(b)))
    np.testing.assert_allclose(paired_mdf(a, b), dipy, rtol=1e-5)


def test_mean_pairwise_mdf_known_value():
    x = _fan(1)
    pair = np.concatenate([x, x + [0, 2, 0]])
    assert mean_pairwise_mdf(pair) == pytest.approx(2.0)
    triple = np.concatenate([x, x + [0, 2, 0], x + [0, 4, 0]])
    assert mean_pairwise_mdf(triple) == pytest.approx((2 + 4 + 2) / 3)
    assert math.isnan(mean_pairwise_mdf(x))


# ------------------------------------------------------------------ metrics
def test_diversity_identical_sets_is_one():
    x = _fan(40)
    assert diversity_ratio(x, x) == pytest.approx(1.0)


def test_diversity_collapsed_set_is_zero():
    real = _fan(40)
    collapsed = np.repeat(real[:1], 40, axis=0)
    assert diversity_ratio(collapsed, real) == pytest.approx(0.0)
    # twice the spread gives about twice the diversity
    wide = _fan(400, spread=4.0, seed=1)
    narrow = _fan(400, spread=2.0, seed=2)
    assert diversity_ratio(wide, narrow) == pytest.approx(2.0, rel=0.1)


def test_density_dice_known_cases():
    x = _fan(30)
    assert density_dice(x, x) == pytest.approx(1.0)
    assert density_dice(x, x[:, ::-1]) == pytest.approx(1.0)
    far = x + [0, 500, 0]
    assert density_dice(x, far) == pytest.approx(0.0)
    # half of the streamlines of one set are far away: partial overlap
    half = np.concatenate([x[:15], far[15:]])
    assert 0.3 < density_dice(x, half) < 0.9


def test_density_dice_marks_every_voxel_crossed():
    # two points 60 mm apart: the line between them is densified
    a = np.array([[[0, 0, 0], [60, 0, 0]]], dtype=np.float32)
    b = np.array([[[0, 0, 0], [20, 0, 0], [40, 0, 0], [60, 0, 0]]], dtype=np.float32)
    assert density_dice(a, b) == pytest.approx(1.0)


def test_label_fidelity_known_cases():
    af = _fan(20, offset=(0, 0, 0))
    cst = _fan(20, offset=(0, 40, 0), seed=1)
    real = np.concatenate([af, cst])
    labels = np.array([0] * 20 + [1] * 20)
    assert label_fidelity(af + 0.1, 0, real, labels) == 1.0
    assert label_fidelity(af + 0.1, 1, real, labels) == 0.0
    mixed = np.concatenate([af[:5], cst[:15]])
    assert label_fidelity(mixed, 0, real, labels) == pytest.approx(0.25)
    names = np.array(["AF_L"] * 20 + ["CST_R"] * 20)
    assert label_fidelity(cst, "CST_R", real, names) == 1.0


def test_spearman_known_cases():
    a = np.linspace(50, 150, 30)
    assert spearman_rho(a**3, a) == pytest.approx(1.0)
    assert spearman_rho(-a, a) == pytest.approx(-1.0)
    assert math.isnan(spearman_rho(np.ones(30), a))
    assert math.isnan(spearman_rho(a[:2], a[:2]))


def test_length_mae_known_value():
    targets = [80.0, 100.0]
    assert length_mae(targets, [82.0, 97.0]) == pytest.approx(2.5)
    produced = [np.array([79.0, 80.0, 90.0]), np.array([100.0, 100.0, 0.0])]
    assert length_mae(targets, produced) == pytest.approx(0.0)
    with pytest.raises(AAETractError):
        length_mae(targets, [1.0])


# ------------------------------------------------------------------ evaluate
@pytest.fixture(scope="module")
def evaluation(tiny_trained, tiny_splits):
    model = tiny_trained[0]
    _, validation = tiny_splits
    return evaluate(model, validation, n_generate=40, n_targets=3, seed=0)


def test_evaluate_keys_and_counts(evaluation, tiny_trained, tiny_splits):
    model = tiny_trained[0]
    train, validation = tiny_splits
    expected = set(METRIC_NAMES) | {
        "n_train",
        "n_eval",
        "bundles",
        "seconds",
        "per_bundle",
        "reference",
    }
    assert set(evaluation) == expected
    assert evaluation["n_train"] == len(train)
    assert evaluation["n_eval"] == len(validation)
    assert evaluation["bundles"] == model.bundle_names
    assert set(evaluation["per_bundle"]) == set(model.bundle_names)
    for row in evaluation["per_bundle"].values():
        assert set(row) == set(METRIC_NAMES)
        assert row["recon_mdf_mm"] > 0
        assert 0 <= row["label_fidelity"] <= 1
        assert row["length_mae_mm"] >= 0
        assert -1 <= row["ar_spearman"] <= 1
        assert row["diversity_ratio"] > 0
        assert 0 <= row["density_dice"] <= 1
    for key in METRIC_NAMES:
        values = [row[key] for row in evaluation["per_bundle"].values()]
        assert evaluation[key] == pytest.approx(np.mean(values))


def test_evaluate_reference_row_is_a_ceiling(evaluation):
    ref = evaluation["reference"]
    assert set(ref) == set(METRIC_NAMES) | {"per_bundle"}
    # real halves of well-separated bundles: nearest neighbours share the label
    assert ref["label_fidelity"] == pytest.approx(1.0)
    assert 0.7 < ref["diversity_ratio"] < 1.3
    assert 0.2 < ref["density_dice"] <= 1.0
    assert ref["recon_mdf_mm"] is None and ref["length_mae_mm"] is None


def test_evaluate_is_deterministic(evaluation, tiny_trained, tiny_splits):
    again = evaluate(
        tiny_trained[0], tiny_splits[1], n_generate=40, n_targets=3, seed=0
    )
    for key in METRIC_NAMES:
        assert again[key] == pytest.approx(evaluation[key])


def test_evaluate_unknown_bundle(tiny_trained, tiny_splits):
    _, validation = tiny_splits
    renamed = validation.subset(np.arange(len(validation)))
    renamed.bundle_names = ["AF_L", "CC_ForcepsMajor", "XX_R"]
    with pytest.raises(UnknownBundleError, match="XX_R"):
        evaluate(tiny_trained[0], renamed, n_generate=5, reference=False)
