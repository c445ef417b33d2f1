"""Metrics on cases with a known answer, and evaluate() on a tiny model."""

import math

import numpy as np
import pytest
from dipy.tracking.distances import bundles_distances_mdf

from aae_tract.errors import AAETractError, UnknownBundleError
from aae_tract.metrics import (
    METRIC_NAMES,
    PER_BUNDLE_LISTS,
    TEXTURE_FEATURES,
    band_precision,
    band_recall,
    curvature_ratio,
    density_dice,
    diversity_ratio,
    end_turn_deg,
    evaluate,
    hooked_fraction,
    label_fidelity,
    length_error_pct,
    length_mae,
    manifold_precision,
    mean_pairwise_mdf,
    mean_prior_match,
    novelty_ratio,
    on_manifold,
    paired_mdf,
    prior_match,
    realism_c2st,
    recon_length_ratio,
    rough_fraction,
    shape_similarity,
    spearman_rho,
    streamline_texture,
    turning_angle_per_mm,
)

DEG_PER_RAD = 180.0 / math.pi


def _fan(n, n_points=20, offset=(0.0, 0.0, 0.0), spread=2.0, seed=0):
    """``n`` straight 60 mm lines along x, spread in y and z."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 60, n_points)
    base = np.stack([t, np.zeros_like(t), np.zeros_like(t)], axis=1)
    shifts = np.zeros((n, 1, 3))
    shifts[:, 0, 1:] = rng.normal(scale=spread, size=(n, 2))
    return (base[None] + shifts + np.asarray(offset)).astype(np.float32)


def _arc(radius, degrees, n_points=64):
    """A circular arc in the xy plane."""
    theta = np.radians(np.linspace(0.0, degrees, n_points))
    zeros = np.zeros(n_points)
    return np.stack([radius * np.cos(theta), radius * np.sin(theta), zeros], axis=1)


def _arcs(n, seed, n_points=64):
    """``n`` smooth arcs of random radius, extent, orientation and position."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arc = _arc(rng.uniform(20, 80), rng.uniform(60, 180), n_points)
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        out.append(arc @ rotation.T + rng.normal(scale=10.0, size=3))
    return np.asarray(out, dtype=np.float32)


def _zigzag(amplitude, n_points=16):
    """A 60 mm line along x whose points (4 mm apart) alternate by ``amplitude``."""
    t = np.linspace(0.0, 60.0, n_points)
    y = amplitude * (np.arange(n_points) % 2)
    return np.stack([t, y, np.zeros(n_points)], axis=1)


def _rippled(x, amplitude=0.5):
    """Streamlines with every other point moved across them (high-frequency)."""
    out = np.array(x, dtype=np.float64)
    d = np.gradient(out, axis=1)
    normal = np.cross(d, [0.0, 0.0, 1.0]) + np.cross(d, [1.0, 0.0, 0.0])
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    out[:, 1::2] += amplitude * normal[:, 1::2]
    return out.astype(np.float32)


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


# ------------------------------------------------------------------ texture
def test_turning_angle_of_straight_lines_is_zero():
    line = _fan(5, n_points=32)
    np.testing.assert_allclose(turning_angle_per_mm(line), 0.0, atol=1e-6)
    # unevenly spaced points on a line, and a coarser step
    t = np.sort(np.random.default_rng(0).uniform(0, 80, 40))
    uneven = np.stack([t, 2 * t, -t], axis=1)[None]
    np.testing.assert_allclose(turning_angle_per_mm(uneven), 0.0, atol=1e-6)
    np.testing.assert_allclose(turning_angle_per_mm(line, step_mm=2.5), 0.0, atol=1e-6)
    # shorter than 3 steps: undefined
    short = line[:1] * (2.5 / 60.0)
    assert np.isnan(turning_angle_per_mm(short)).all()
    assert not np.isnan(turning_angle_per_mm(line[:1] * (3.5 / 60.0))).any()


@pytest.mark.parametrize("radius", [10.0, 25.0, 50.0])
def test_turning_angle_of_a_circle_arc(radius):
    arcs = np.stack([_arc(radius, 180.0), _arc(radius, 180.0)[::-1]])
    expected = DEG_PER_RAD / radius
    np.testing.assert_allclose(turning_angle_per_mm(arcs), expected, rtol=0.02)
    np.testing.assert_allclose(
        turning_angle_per_mm(arcs, step_mm=2.0), expected, rtol=0.02
    )


def test_turning_angle_grows_with_zigzag_amplitude():
    amplitudes = (0.0, 0.5, 1.0, 2.0, 4.0)
    rate = turning_angle_per_mm(np.stack([_zigzag(a) for a in amplitudes]))
    assert rate[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(rate) > 0), rate
    # 14 corners of 2 atan(a / 4) each, over the angles between 1 mm steps
    for a, value in zip(amplitudes, rate):
        n_angles = math.floor(15 * math.hypot(4.0, a)) - 1
        expected = 14 * 2 * math.degrees(math.atan(a / 4.0)) / n_angles
        assert value == pytest.approx(expected, abs=1e-6)


def test_streamline_texture_of_a_right_angle():
    # 20 mm along x, then 20 mm along y: one 90 degree turn at a sample point
    corner = np.zeros((1, 41, 3))
    corner[0, :21, 0] = np.arange(21)
    corner[0, 21:, 0] = 20
    corner[0, 21:, 1] = np.arange(1, 21)
    assert len(TEXTURE_FEATURES) == 5
    # 41 samples, 39 angles: one of 90 degrees
    np.testing.assert_allclose(
        streamline_texture(corner)[0], [90 / 39, 0.0, 0.0, 90.0, 40.0], atol=1e-6
    )
    # 2 mm steps: 19 angles, 45 deg/mm at the corner
    np.testing.assert_allclose(
        streamline_texture(corner, step_mm=2.0)[0],
        [90 / 19 / 2, 0.0, 0.0, 45.0, 40.0],
        atol=1e-6,
    )


def test_streamline_texture_matches_turning_angle_and_length():
    from dipy.tracking.streamline import length

    x = _rippled(_arcs(20, seed=3))
    texture = streamline_texture(x)
    assert texture.shape == (20, 5)
    np.testing.assert_allclose(texture[:, 0], turning_angle_per_mm(x))
    np.testing.assert_allclose(texture[:, 4], length(list(x)), rtol=1e-5)
    assert np.all(texture[:, 1] <= texture[:, 2])
    assert np.all(texture[:, 2] <= texture[:, 3])


def test_curvature_ratio_known_values():
    tight = np.stack([_arc(20.0, 180.0)] * 3)
    loose = np.stack([_arc(40.0, 180.0)] * 3)
    assert curvature_ratio(tight, tight) == pytest.approx(1.0)
    assert curvature_ratio(tight, loose) == pytest.approx(2.0, rel=0.02)
    assert curvature_ratio(loose, tight) == pytest.approx(0.5, rel=0.02)
    assert math.isnan(curvature_ratio(tight, _fan(3)))  # straight real lines


def test_rough_fraction_counts_crumpled_streamlines():
    smooth = np.stack([_arc(r, 90.0) for r in np.linspace(30.0, 50.0, 10)])
    # the same arcs with 1 mm zigzags: many times the real turning per mm
    crumpled = smooth.copy()
    crumpled[:, 1::2, 2] += 1.0
    twice = np.stack([_arc(r, 90.0) for r in np.linspace(15.0, 25.0, 10)])
    assert rough_fraction(smooth, smooth) == 0.0
    assert rough_fraction(twice, smooth) == 0.0  # 2x the turning is not crumpled
    assert rough_fraction(np.concatenate([smooth[:7], crumpled[:3]]), smooth) == (
        pytest.approx(0.3)
    )
    assert rough_fraction(crumpled, smooth) == 1.0
    assert rough_fraction(twice, smooth, factor=1.5) == 1.0
    assert math.isnan(rough_fraction(crumpled, _fan(3)))  # straight real lines
    assert math.isnan(rough_fraction(crumpled, 0.01 * smooth))  # too short


def _hooked(arc, radius=2.0):
    """``arc`` with its last end curled back through a half turn of ``radius``
    mm (the same number of points, spread evenly along the new curve)."""
    from dipy.tracking.streamline import set_number_of_points

    end, before = arc[-1], arc[-2]
    ahead = (end - before) / np.linalg.norm(end - before)
    side = np.cross(ahead, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    theta = np.linspace(0.0, np.pi, 30)[1:]
    curl = (
        end
        + radius * np.sin(theta)[:, None] * ahead
        + radius * (1 - np.cos(theta))[:, None] * side
    )
    return set_number_of_points(np.concatenate([arc, curl]), len(arc))


def test_end_turn_deg_known_values():
    straight = _fan(3)
    np.testing.assert_allclose(end_turn_deg(straight), 0.0, atol=1e-6)
    # a 90 degree arc of radius 60 mm turns 10/60 rad (9.5 degrees) in 10 mm
    arc = _arc(60.0, 90.0)[None]
    assert end_turn_deg(arc)[0] == pytest.approx(np.degrees(10 / 60), rel=0.05)
    assert end_turn_deg(arc, mm=20.0)[0] == pytest.approx(np.degrees(20 / 60), rel=0.05)
    # a half turn at one end: about 180 degrees, whichever end it is
    hooked = _hooked(_arc(60.0, 90.0))
    assert 150 < end_turn_deg(hooked[None])[0] <= 185
    assert end_turn_deg(hooked[::-1][None])[0] == pytest.approx(
        end_turn_deg(hooked[None])[0], rel=0.02
    )
    assert math.isnan(end_turn_deg(0.01 * arc)[0])  # shorter than its ends
    with pytest.raises(AAETractError, match="mm must be positive"):
        end_turn_deg(arc, mm=0)


def test_hooked_fraction_counts_curled_ends():
    real = np.stack([_arc(r, 90.0) for r in np.linspace(30.0, 60.0, 40)])
    hooked = np.stack([_hooked(a) for a in real[:10]])
    assert hooked_fraction(real[20:], real[:20]) == 0.0  # gentler ends than real
    assert hooked_fraction(hooked, real) == 1.0
    mixed = np.concatenate([real[10:17], hooked[:3]])
    assert hooked_fraction(mixed, real) == pytest.approx(0.3)
    # real against itself: about the share over the quantile
    assert hooked_fraction(real, real, quantile=0.9) == pytest.approx(0.1, abs=0.03)
    assert math.isnan(hooked_fraction(hooked, 0.01 * real))  # too short
    with pytest.raises(AAETractError, match="quantile"):
        hooked_fraction(hooked, real, quantile=1.0)


# ------------------------------------------------------------------ lengths
def test_recon_length_ratio_known_values():
    x = _arcs(100, seed=1)
    np.testing.assert_allclose(recon_length_ratio(x, x), [1.0] * 5)
    centre = x.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(recon_length_ratio(x, centre + 2 * (x - centre)), 2.0)
    # only the longest fifth doubled: the last quintile says so
    lengths = np.linalg.norm(np.diff(x, axis=1), axis=-1).sum(axis=1)
    longest = lengths >= np.quantile(lengths, 0.8)
    stretched = np.where(longest[:, None, None], centre + 2 * (x - centre), x)
    np.testing.assert_allclose(
        recon_length_ratio(x, stretched), [1, 1, 1, 1, 2], rtol=1e-5
    )
    np.testing.assert_allclose(recon_length_ratio(x, stretched, n_bins=1), [1.0])
    with pytest.raises(AAETractError):
        recon_length_ratio(x, x[:10])


def test_length_error_pct_known_values():
    errors = length_error_pct([100.0, 50.0], [[90.0, 110.0, 105.0], [45.0]])
    np.testing.assert_allclose(errors, [5.0, 10.0])
    np.testing.assert_allclose(length_error_pct([80.0], [80.0]), [0.0])
    with pytest.raises(AAETractError):
        length_error_pct([100.0, 50.0], [1.0])


# ------------------------------------------------------------------ realism
def test_shape_similarity_known_cases():
    x = _arcs(100, seed=2)
    assert shape_similarity(x, x) == pytest.approx(1.0)
    assert shape_similarity(x, x + [50, 0, 0]) == pytest.approx(0.0)
    # 4 mm apart: adjacent at the 6 mm threshold, not at 3 mm
    assert shape_similarity(x, x + [4, 0, 0]) == pytest.approx(1.0)
    assert shape_similarity(x, x + [4, 0, 0], threshold=3.0) == pytest.approx(0.0)
    # half of the set moved away: partial similarity
    moved = np.concatenate([x[:50], x[50:] + [0, 50, 0]])
    assert 0.2 < shape_similarity(x, moved) < 0.9


def test_realism_c2st_same_distribution_is_near_chance():
    x = _arcs(300, seed=4)
    order = np.random.default_rng(0).permutation(len(x))
    assert realism_c2st(x[order[:150]], x[order[150:]]) <= 0.65
    # unbalanced sets are balanced first: otherwise the majority class (5 to 1)
    # would win about 0.83 of the time
    assert realism_c2st(x[order[:250]], x[order[250:]]) <= 0.65


def test_realism_c2st_detects_ripples():
    x = _arcs(300, seed=5)
    order = np.random.default_rng(1).permutation(len(x))
    smooth, rippled = x[order[:150]], _rippled(x[order[150:]])
    assert realism_c2st(rippled, smooth) >= 0.95
    assert realism_c2st(rippled, smooth, seed=1) >= 0.95


def test_realism_c2st_needs_ten_per_class():
    x = _arcs(30, seed=6)
    assert realism_c2st(x[:9], x[9:]) is None
    assert realism_c2st(x[:10], x[10:]) is not None


def test_prior_match_known_cases():
    rng = np.random.default_rng(0)
    prior = rng.standard_normal((2000, 16))
    same = rng.standard_normal((300, 16))
    assert 0.35 < prior_match(same, prior) < 0.62
    # too small a spread in every dimension (encodings that do not fill the
    # prior), a shifted cluster, and codes on a line: told apart
    assert prior_match(0.2 * same, prior) > 0.9
    shifted = same.copy()
    shifted[:, 3] += 2.0
    assert prior_match(shifted, prior) > 0.8
    line = np.outer(rng.standard_normal(300), np.ones(16) / 4.0)
    assert prior_match(line, prior) > 0.9
    assert prior_match(same[:9], prior) is None
    with pytest.raises(AAETractError, match="dimensions"):
        prior_match(same[:, :8], prior)


def test_manifold_precision_known_cases():
    real = _fan(60, seed=1)
    # copies of real streamlines lie on the manifold; a new draw mostly does
    assert manifold_precision(real[:20], real) == 1.0
    assert manifold_precision(_fan(200, seed=2), real) > 0.8
    # off the bundle, or across it: never
    assert manifold_precision(real + np.array([0.0, 20.0, 0.0]), real) == 0.0
    across = real[:, :, [1, 0, 2]] + np.array([30.0, -30.0, 0.0])
    assert manifold_precision(across, real) == 0.0
    mixed = np.concatenate([real[:7], real[:3] + np.array([0.0, 20.0, 0.0])])
    assert manifold_precision(mixed, real) == pytest.approx(0.7)
    assert on_manifold(mixed, real).tolist() == [True] * 7 + [False] * 3
    # the ball of a real streamline is the distance to its k-th neighbour
    pair = _fan(2, spread=0.0) + np.array([[[0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    probe = _fan(1, spread=0.0) + np.array([0.0, -0.9, 0.0])
    assert manifold_precision(probe, pair, k=1) == 1.0
    assert manifold_precision(probe - np.array([0.0, 0.2, 0.0]), pair, k=1) == 0.0
    assert manifold_precision(real[:0], real) is None
    assert manifold_precision(real, real[:3]) is None  # at most k real ones
    with pytest.raises(AAETractError, match="same number of points"):
        manifold_precision(real[:, :10], real)


def _segments(n, seed, across=False):
    """``n`` pieces (10-60 mm) of one 60 mm tube along x; ``across``: the
    pieces shorter than 20 mm turned to cross it (along y, at x = 30)."""
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(10.0, 60.0, n)
    starts = rng.uniform(0.0, 60.0 - lengths)
    t = np.linspace(0.0, 1.0, 20)
    out = np.zeros((n, 20, 3))
    out[:, :, 0] = starts[:, None] + lengths[:, None] * t
    out[:, :, 1:] = rng.normal(scale=1.0, size=(n, 1, 2))
    if across:
        short = lengths < 20.0
        along = out[short, :, 0] - starts[short, None]
        out[short, :, 0] = 30.0 + out[short, :, 1]
        out[short, :, 1] = along - lengths[short, None] / 2.0 + 10.0
    return out.astype(np.float32)


def test_band_precision_singles_out_the_band_that_leaves_the_bundle():
    real = _segments(400, seed=0)
    ok = band_precision(_segments(500, seed=1), real)
    assert len(ok) == 5 and min(ok) > 0.8
    crossing = _segments(500, seed=1, across=True)
    bands = band_precision(crossing, real)
    # the shortest fifth of the real pieces is under 20 mm: that band fails,
    # the others do not, and the whole-bundle value hides it
    assert bands[0] < 0.2 and min(bands[1:]) > 0.8
    assert manifold_precision(crossing, real) > 0.7
    # a band with too few generated streamlines has no value
    long_only = _segments(500, seed=1)
    long_only = long_only[
        np.linalg.norm(long_only[:, -1] - long_only[:, 0], axis=1) > 40
    ]
    assert math.isnan(band_precision(long_only, real)[0])
    assert band_precision(long_only, real[:0]) == [math.nan] * 5
    with pytest.raises(AAETractError, match="n_bands"):
        band_precision(real, real, n_bands=0)


def test_band_recall_sees_what_the_generated_streamlines_leave_out():
    real = _segments(400, seed=0)
    # a new draw of the same bundle covers every band, as a copy does
    assert min(band_recall(_segments(400, seed=1), real)) > 0.8
    assert band_recall(real, real) == [1.0] * 5
    # the same number of streamlines gathered in three strands (each a copy
    # of one real streamline, jittered by 0.01 mm) leave almost all of the
    # bundle uncovered, though every one of them lies on it
    rng = np.random.default_rng(2)
    strands = real[rng.choice(len(real), 3, replace=False)]
    clumped = np.repeat(strands, 134, axis=0) + rng.normal(
        scale=0.01, size=(402, 1, 3)
    ).astype(np.float32)
    assert max(band_recall(clumped, real)) < 0.1
    assert manifold_precision(clumped, real) == 1.0
    # only long pieces: the short bands are left out, the long ones not
    lengths = np.linalg.norm(real[:, -1] - real[:, 0], axis=1)
    long_only = _segments(1200, seed=3)
    long_only = long_only[
        np.linalg.norm(long_only[:, -1] - long_only[:, 0], axis=1) > 45
    ]
    bands = band_recall(long_only, real)
    assert bands[0] < 0.1 and bands[-1] > 0.8
    # too few real streamlines in a band, or too few generated ones: no value
    assert band_recall(long_only, real[lengths > 45], n_bands=1)[0] > 0.8
    assert math.isnan(band_recall(real, real[:9], n_bands=1)[0])
    assert band_recall(real[:3], real) == [math.nan] * 5
    assert band_recall(real, real[:0]) == [math.nan] * 5
    with pytest.raises(AAETractError, match="n_bands"):
        band_recall(real, real, n_bands=0)


def test_band_row_compares_the_recall_of_as_many_generated_as_training(monkeypatch):
    """``band_recall`` grows with the size of the set, so an evaluation
    compares as many generated streamlines (a sample of the 2,000 drawn) as
    training ones."""
    from types import SimpleNamespace

    import aae_tract.generate as gen
    from aae_tract import metrics

    drawn = _segments(metrics.BAND_STREAMLINES, seed=1)
    monkeypatch.setattr(
        gen, "draw_streamlines", lambda model, name, targets, **kw: (None, drawn)
    )
    sizes = []
    measure = metrics.band_recall

    def recorded(generated, real, **kw):
        sizes.append(len(generated))
        return measure(generated, real, **kw)

    monkeypatch.setattr(metrics, "band_recall", recorded)
    real, train = _segments(200, seed=0), _segments(300, seed=2)
    model = SimpleNamespace(bundle_index=lambda name: 0)
    row = metrics._band_row(
        model, "AF_L", np.full(5, 30.0), real, train, sampling="prior", seed=0
    )
    assert sizes == [300, 300]
    gaps = np.subtract(row["band_recall_per_band"], row["band_recall_train_per_band"])
    assert row["band_recall"] == pytest.approx(gaps.min())
    # without training streamlines, all that were drawn, and no difference
    sizes.clear()
    row = metrics._band_row(
        model, "AF_L", np.full(5, 30.0), real, None, sampling="prior", seed=0
    )
    assert sizes == [metrics.BAND_STREAMLINES] and row["band_recall"] is None


def test_novelty_ratio_known_cases():
    train = _fan(60, seed=1)
    held_out = _fan(40, seed=2)
    # copies of training streamlines: 0; the held-out set itself: 1
    assert novelty_ratio(train[:30], train, held_out) == pytest.approx(0.0)
    assert novelty_ratio(held_out, train, held_out) == pytest.approx(1.0)
    # the same fan drawn again is about as new as held-out data
    assert 0.6 < novelty_ratio(_fan(40, seed=3), train, held_out) < 1.6
    # copies with a small offset are nearer than new data
    near = train[:30] + np.array([0.0, 0.1, 0.0])
    assert novelty_ratio(near, train, held_out) < 0.3
    assert novelty_ratio(train[:0], train, held_out) is None
    assert novelty_ratio(held_out, held_out, held_out) is None  # median 0


def test_mean_prior_match_is_the_mean_of_seeded_tests():
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((120, 8))
    sets = [rng.standard_normal((150, 8)) for _ in range(3)]
    # one set: the single test
    assert mean_prior_match(codes, sets[:1], seed=4) == prior_match(
        codes, sets[0], seed=4
    )
    expected = np.mean([prior_match(codes, s, seed=4 + t) for t, s in enumerate(sets)])
    assert mean_prior_match(codes, sets, seed=4) == pytest.approx(expected)
    # a test without a result (too few samples): no mean
    assert mean_prior_match(codes, [sets[0], sets[1][:5]]) is None
    with pytest.raises(AAETractError, match="at least 1 test"):
        mean_prior_match(codes, [])


# ------------------------------------------------------------------ evaluate
@pytest.fixture(scope="module")
def evaluation(tiny_trained, tiny_splits):
    model = tiny_trained[0]
    train, validation = tiny_splits
    return evaluate(model, validation, n_generate=40, n_targets=3, seed=0, train=train)


def test_evaluate_keys_and_counts(evaluation, tiny_trained, tiny_splits):
    model = tiny_trained[0]
    train, validation = tiny_splits
    expected = set(METRIC_NAMES) | {
        "n_train",
        "n_eval",
        "bundles",
        "sampling",
        "seconds",
        "per_bundle",
        "reference",
    }
    assert set(evaluation) == expected
    assert evaluation["sampling"] == "prior"  # a length model's default
    assert evaluation["n_train"] == len(train)
    assert evaluation["n_eval"] == len(validation)
    assert evaluation["bundles"] == model.bundle_names
    assert set(evaluation["per_bundle"]) == set(model.bundle_names)
    for row in evaluation["per_bundle"].values():
        assert set(row) == set(METRIC_NAMES) | set(PER_BUNDLE_LISTS)
        assert row["recon_mdf_mm"] > 0
        assert 0 <= row["label_fidelity"] <= 1
        assert row["length_mae_mm"] >= 0
        assert -1 <= row["ar_spearman"] <= 1
        assert row["diversity_ratio"] > 0
        assert 0 <= row["density_dice"] <= 1
    worst_case = {
        "recon_length_ratio",
        "length_error_pct",
        "rough_fraction",
        "hooked_fraction",
    }
    for key in set(METRIC_NAMES) - worst_case:
        values = [row[key] for row in evaluation["per_bundle"].values()]
        values = [v for v in values if v is not None]  # band_precision: below
        expected = pytest.approx(np.mean(values)) if values else None
        assert evaluation[key] == expected
    for key in ("length_error_pct", "rough_fraction", "hooked_fraction"):
        values = [row[key] for row in evaluation["per_bundle"].values()]
        assert evaluation[key] == max(values)
        assert 0 <= evaluation[key]
    values = [row["recon_length_ratio"] for row in evaluation["per_bundle"].values()]
    assert evaluation["recon_length_ratio"] in values
    assert abs(math.log(evaluation["recon_length_ratio"])) == pytest.approx(
        max(abs(math.log(v)) for v in values)
    )


def test_evaluate_realism_metrics(evaluation):
    """Every new metric is there, finite, in range and consistent per bundle."""
    for row in evaluation["per_bundle"].values():
        assert 0 < row["curvature_ratio"] < 10
        assert 0 <= row["shape_similarity"] <= 1
        assert 0 <= row["realism_c2st"] <= 1  # 25 per class: computed
        quintiles = row["recon_length_ratio_quintiles"]
        assert len(quintiles) == 5 and all(0 < q < 10 for q in quintiles)
        assert row["recon_length_ratio"] in quintiles
        assert abs(math.log(row["recon_length_ratio"])) == max(
            abs(math.log(q)) for q in quintiles
        )
        per_target = row["length_error_pct_per_target"]
        assert len(per_target) == 3  # n_targets
        assert all(e >= 0 for e in per_target)
        assert row["length_error_pct"] == pytest.approx(max(per_target))
        assert row["length_error_pct_mean"] == pytest.approx(np.mean(per_target))
        # the lowest band's share minus the training streamlines' share
        for key in ("band_precision", "band_recall"):
            shares, train_shares = (
                row[f"{key}_per_band"],
                row[f"{key}_train_per_band"],
            )
            assert len(shares) == len(train_shares) == 5
            gaps = [
                g - t
                for g, t in zip(shares, train_shares)
                if g is not None and t is not None and t > 0
            ]
            # None where no training streamline lies on the held-out
            # subject's bundle (or covers it): the embedded default's
            # subjects are not registered
            expected = pytest.approx(min(gaps)) if gaps else None
            assert row[key] == expected
            assert all(0 <= g <= 1 for g in shares if g is not None)
    # band_precision and band_recall may have no value here: training
    # streamlines hardly lie on the held-out subject's bundles, which are not
    # registered to the others (test_trained_behaviour measures them on the
    # phantom)
    for key in set(METRIC_NAMES) - {"band_precision", "band_recall"}:
        assert evaluation[key] is not None and math.isfinite(evaluation[key]), key
    # two halves of a real bundle: no streamline of one is crumpled beside the other
    assert evaluation["reference"]["rough_fraction"] == 0.0


def test_evaluate_length_error_is_none_without_a_length_model():
    from types import SimpleNamespace

    from aae_tract.metrics import _length_targets

    stats = {"AF_L": {"length": {"p05": 80.0, "p95": 120.0}}}
    model = SimpleNamespace(
        attribute_name="age", metadata=SimpleNamespace(bundle_stats=stats)
    )
    row = _length_targets(model, "AF_L", 5, 10, None, "bank", 64)
    assert set(row) == {
        "length_mae_mm",
        "length_error_pct",
        "length_error_pct_mean",
        "length_error_pct_per_target",
    }
    assert all(v is None for v in row.values())


def test_evaluate_reference_row_is_a_ceiling(evaluation):
    ref = evaluation["reference"]
    assert set(ref) == set(METRIC_NAMES) | {"per_bundle"}
    # real halves of well-separated bundles: nearest neighbours share the label
    assert ref["label_fidelity"] == pytest.approx(1.0)
    assert 0.7 < ref["diversity_ratio"] < 1.3
    assert 0.2 < ref["density_dice"] <= 1.0
    # halves of one bundle: same curvature, same shape, indistinguishable
    assert 0.8 < ref["curvature_ratio"] < 1.25
    assert 0.7 < ref["shape_similarity"] <= 1.0
    assert ref["realism_c2st"] <= 0.7
    # two samples of the prior: chance
    assert 0.3 < ref["prior_match"] < 0.7
    no_counterpart = (
        "novelty_ratio",
        "recon_mdf_mm",
        "length_mae_mm",
        "ar_spearman",
        "recon_length_ratio",
        "length_error_pct",
        "length_error_pct_mean",
        "band_precision",
        "band_recall",
    )
    for key in no_counterpart:
        assert ref[key] is None, key
    lists_without_counterpart = set(PER_BUNDLE_LISTS) - {
        "band_precision_per_band",
        "band_recall_per_band",
    }
    for row in ref["per_bundle"].values():
        assert set(row) == set(METRIC_NAMES) | set(PER_BUNDLE_LISTS)
        assert all(
            row[key] is None for key in (*no_counterpart, *lists_without_counterpart)
        )
        # a half of a real bundle lies on the other half's manifold, and
        # covers it
        for key in ("band_precision_per_band", "band_recall_per_band"):
            bands = [b for b in row[key] if b is not None]
            assert all(b > 0.5 for b in bands), key
        assert 0 <= row["shape_similarity"] <= 1 and 0 <= row["realism_c2st"] <= 1


def test_evaluate_is_deterministic(evaluation, tiny_trained, tiny_splits):
    again = evaluate(
        tiny_trained[0],
        tiny_splits[1],
        n_generate=40,
        n_targets=3,
        seed=0,
        train=tiny_splits[0],
    )
    for key in METRIC_NAMES:
        assert again[key] == pytest.approx(evaluation[key])


def test_evaluate_identity_reconstruction_scores_zero(
    tiny_trained, tiny_splits, monkeypatch
):
    """A model that decodes every held-out code to its own input: recon 0."""
    model = tiny_trained[0]
    _, validation = tiny_splits
    names = np.asarray(validation.bundle_names)[np.asarray(validation.labels)]
    x, _ = model.prepare(np.asarray(validation.x), list(names))
    codes = model.encode_prepared(x)
    inputs = {code.tobytes(): row for code, row in zip(codes, x)}
    decode = model.decode

    def identity(z, bundle, **kwargs):
        z = np.asarray(z, dtype=np.float32)
        rows = [inputs.get(code.tobytes()) for code in z]
        if len(z) and all(row is not None for row in rows):
            return np.stack(rows)
        return decode(z, bundle, **kwargs)  # generated codes

    monkeypatch.setattr(model, "decode", identity)
    result = evaluate(model, validation, n_generate=10, n_targets=2, reference=False)
    for row in result["per_bundle"].values():
        assert row["recon_mdf_mm"] == pytest.approx(0.0, abs=1e-6)
        assert row["recon_length_ratio_quintiles"] == pytest.approx([1.0] * 5)
    assert result["recon_mdf_mm"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_averages_prior_match_without_moving_the_rest(
    evaluation, tiny_trained, tiny_splits
):
    """More prior_match tests draw their prior samples outside the generation
    stream: every other number stays that of one test."""
    model = tiny_trained[0]
    train, validation = tiny_splits
    kwargs = dict(n_generate=40, n_targets=3, seed=0, train=train, reference=False)
    more = evaluate(model, validation, prior_match_tests=3, **kwargs)
    for name, row in more["per_bundle"].items():
        one = evaluation["per_bundle"][name]
        for key in set(METRIC_NAMES) - {"prior_match"}:
            assert row[key] == pytest.approx(one[key], nan_ok=True), (name, key)
        assert 0.0 <= row["prior_match"] <= 1.0
    assert any(
        row["prior_match"] != evaluation["per_bundle"][name]["prior_match"]
        for name, row in more["per_bundle"].items()
    )
    for bad in (0, 2.5, True):
        with pytest.raises(AAETractError, match="prior_match_tests"):
            evaluate(model, validation, prior_match_tests=bad, **kwargs)


def test_evaluate_draws_each_prior_match_test_apart(
    tiny_trained, tiny_splits, monkeypatch
):
    """The first test is the one test of before; the others differ from it,
    from each other and between the two samplings (independent estimates)."""
    import aae_tract.metrics as metrics

    model = tiny_trained[0]
    train, validation = tiny_splits
    seen, current = {}, {}
    original = metrics.mean_prior_match

    def capture(codes, samples, **kwargs):
        seen.setdefault(current["key"], []).append([np.array(s) for s in samples])
        return original(codes, samples, **kwargs)

    monkeypatch.setattr(metrics, "mean_prior_match", capture)
    kwargs = dict(n_generate=10, n_targets=2, seed=0, reference=False)
    for key, sampling, tests in (
        ("one", "bank", 1),
        ("bank", "bank", 3),
        ("prior", "prior", 3),
    ):
        current["key"] = key
        evaluate(
            model, validation, sampling=sampling, prior_match_tests=tests, **kwargs
        )
    assert len(seen["one"]) == len(seen["bank"]) == len(seen["prior"]) > 0
    for one, bank, prior in zip(seen["one"], seen["bank"], seen["prior"]):
        assert len(one) == 1 and len(bank) == len(prior) == 3
        np.testing.assert_array_equal(bank[0], one[0])
        assert not np.array_equal(bank[1], bank[2])
        assert not np.array_equal(bank[1], bank[0])
        for t in (1, 2):
            assert not np.array_equal(bank[t], prior[t])


def test_evaluate_unknown_bundle(tiny_trained, tiny_splits):
    _, validation = tiny_splits
    renamed = validation.subset(np.arange(len(validation)))
    renamed.bundle_names = ["AF_L", "CC_ForcepsMajor", "XX_R"]
    with pytest.raises(UnknownBundleError, match="XX_R"):
        evaluate(tiny_trained[0], renamed, n_generate=5, reference=False)


def test_evaluate_reads_at_most_max_per_bundle(tiny_trained, tiny_splits, caplog):
    model, _ = tiny_trained
    train, validation = tiny_splits
    counts = np.bincount(validation.labels)
    cap = int(counts.min()) - 3
    with caplog.at_level("INFO", logger="aae_tract.metrics"):
        result = evaluate(
            model,
            validation,
            n_generate=5,
            n_targets=2,
            reference=False,
            train=train,
            max_per_bundle=cap,
        )
    assert result["n_eval"] == cap * len(counts)
    assert f"at most {cap} per bundle" in caplog.text
