"""The conditional AAE: losses, networks, training, checkpoints, saving."""

import json
import logging
import zipfile

import keras
import numpy as np
import pytest
from conftest import TINY, tamper

from aae_tract.errors import (
    AAETractError,
    ConfigError,
    ModelFileError,
    TrainingError,
    UnknownBundleError,
)
from aae_tract.model import AAEConfig, TractAAE, attribute_regularization
from aae_tract.model.losses import (
    conditional_mmd,
    direction_loss,
    excess_turn,
    log_length_mse,
    polyline_length,
    texture_nll,
)
from aae_tract.model.networks import (
    ArcLengthCurve,
    SplineCurve,
    bspline_basis,
    build_decoder,
    build_discriminator,
    build_encoder,
    texture_kernel,
)
from aae_tract.model.priors import GaussianMixturePrior


def _ar_numpy(z0, a, delta, labels=None):
    d_r = z0[:, None] - z0[None, :]
    d_a = a[:, None] - a[None, :]
    diff = np.abs(np.tanh(delta * d_r) - np.sign(d_a))
    if labels is None:
        return diff.mean()
    same = labels[:, None] == labels[None, :]
    return diff[same].sum() / same.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ar_loss_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    z0 = rng.normal(size=17).astype("float32")
    a = rng.uniform(30, 200, size=17).astype("float32")
    a[3] = a[5]  # a tie: sign 0
    labels = rng.integers(0, 3, size=17)
    for delta in (1.0, 10.0):
        ours = keras.ops.convert_to_numpy(attribute_regularization(z0, a, delta=delta))
        np.testing.assert_allclose(ours, _ar_numpy(z0, a, delta), rtol=1e-5)
        ours = keras.ops.convert_to_numpy(
            attribute_regularization(z0, a, delta=delta, labels=labels)
        )
        np.testing.assert_allclose(ours, _ar_numpy(z0, a, delta, labels), rtol=1e-5)


def _ar_groups_numpy(z0, a, delta, labels):
    """Group-level AR written as loops: one term per pair of groups."""
    keys = sorted(set(zip(labels.tolist(), a.tolist())))
    means = {k: z0[(labels == k[0]) & (a == k[1])].mean() for k in keys}
    terms = [
        abs(np.tanh(delta * (means[p] - means[q])) - np.sign(p[1] - q[1]))
        for p in keys
        for q in keys
        if p[0] == q[0] and p[1] != q[1]
    ]
    return np.mean(terms)


@pytest.mark.parametrize("seed", [0, 1])
def test_ar_loss_over_subjects_matches_loops(seed):
    rng = np.random.default_rng(seed)
    ages = rng.choice([24.5, 38.0, 51.2, 77.9], size=40).astype("float32")
    labels = rng.integers(0, 2, size=40)
    z0 = rng.normal(size=40).astype("float32")
    ours = attribute_regularization(z0, ages, delta=3.0, labels=labels, groups=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours),
        _ar_groups_numpy(z0, ages, 3.0, labels),
        rtol=1e-5,
    )


def test_ar_loss_over_subjects_orders_means_not_streamlines():
    # two subjects, their streamlines overlap in z0 but their means are
    # ordered: no loss at subject level, a large one at streamline level
    ages = np.array([30.0] * 4 + [70.0] * 4, "float32")
    z0 = np.array([-1.0, 0.2, -0.4, 0.0, -0.2, 1.0, 0.4, 0.6], "float32")
    by_subject = float(attribute_regularization(z0, ages, delta=10.0, groups=True))
    by_streamline = float(attribute_regularization(z0, ages, delta=10.0))
    assert by_subject < 0.01 < 0.3 < by_streamline
    flipped = float(attribute_regularization(-z0, ages, delta=10.0, groups=True))
    assert flipped > 1.9


def _ar_soft_numpy(z0, a, delta, soft, labels=None):
    d_r = z0[:, None] - z0[None, :]
    d_a = a[:, None] - a[None, :]
    same = (
        np.ones_like(d_a, bool)
        if labels is None
        else labels[:, None] == labels[None, :]
    )
    scale = soft * np.abs(d_a[same & (d_a != 0)]).mean()
    diff = np.abs(np.tanh(delta * d_r) - np.tanh(d_a / scale))
    return diff[same].sum() / same.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_soft_ar_loss_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    z0 = rng.normal(size=17).astype("float32")
    a = rng.uniform(30, 200, size=17).astype("float32")
    a[3] = a[5]
    labels = rng.integers(0, 3, size=17)
    for soft in (0.1, 1.0):
        ours = attribute_regularization(z0, a, delta=10.0, soft=soft)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours),
            _ar_soft_numpy(z0, a, 10.0, soft),
            rtol=1e-5,
        )
        ours = attribute_regularization(z0, a, delta=10.0, soft=soft, labels=labels)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours),
            _ar_soft_numpy(z0, a, 10.0, soft, labels),
            rtol=1e-5,
        )


def test_soft_ar_loss_is_smallest_at_a_finite_slope():
    # z0 = k * a: the sign target keeps falling as the codes spread (k grows),
    # the soft target has its minimum near k = 1 / (delta * soft * mean|D_a|)
    a = np.linspace(50, 100, 40).astype("float32")
    mean_gap = np.abs(a[:, None] - a[None, :])[~np.eye(40, dtype=bool)].mean()
    ks = np.geomspace(1e-3, 1.0, 61)
    for soft in (0.1, 0.3):
        losses = [float(attribute_regularization(k * a, a, soft=soft)) for k in ks]
        best = ks[int(np.argmin(losses))]
        expected = 1 / (10.0 * soft * mean_gap)
        assert expected / 2 < best < expected * 2
        assert losses[-1] > 2 * min(losses)
    signed = [float(attribute_regularization(k * a, a)) for k in ks]
    assert np.all(np.diff(signed) <= 1e-7) and signed[-1] < 1e-6
    # per subject: the same target over the subjects' mean codes
    ages = np.repeat(np.linspace(20, 80, 8), 4).astype("float32")
    gap = np.abs(np.subtract.outer(ages[::4], ages[::4]))[~np.eye(8, dtype=bool)].mean()
    grouped = [
        float(attribute_regularization(k * ages, ages, soft=0.3, groups=True))
        for k in ks
    ]
    best = ks[int(np.argmin(grouped))]
    assert 1 / (6.0 * gap) < best < 2 / (3.0 * gap)


def test_grouped_order_makes_runs_of_one_subject():
    from aae_tract.model.training import grouped_order

    groups = np.repeat(np.arange(6), [40, 3, 17, 64, 1, 25])
    order = grouped_order(groups, 8, np.random.default_rng(0))
    assert sorted(order) == list(range(len(groups)))
    runs = np.split(groups[order], np.flatnonzero(np.diff(groups[order])) + 1)
    # runs of one subject are at most 8 long unless two runs of it meet
    assert np.mean([len(r) for r in runs]) > 4
    assert not np.array_equal(order, grouped_order(groups, 8, np.random.default_rng(1)))


def test_ar_loss_is_small_when_ordered():
    a = np.linspace(40, 120, 32).astype("float32")
    ordered = attribute_regularization(a / 10, a, delta=10.0)
    reversed_ = attribute_regularization(-a / 10, a, delta=10.0)
    assert float(ordered) < 0.05 < 1.9 < float(reversed_)


@pytest.mark.parametrize("n_points,n_control", [(256, 32), (32, 8), (100, 20)])
def test_network_shapes_follow_config(n_points, n_control):
    cfg = AAEConfig(n_points=n_points, n_control=n_control, n_bundles=4, latent_dims=6)
    enc, dec, disc = build_encoder(cfg), build_decoder(cfg), build_discriminator(cfg)
    x = np.zeros((2, n_points, 3), "float32")
    z = keras.ops.convert_to_numpy(enc(x))
    assert z.shape == (2, 6)
    gaussian = build_encoder(AAEConfig(**{**cfg.to_dict(), "posterior": "gaussian"}))
    mean, log_var = gaussian(x)  # a Gaussian posterior: mean and log-variance
    assert keras.ops.convert_to_numpy(mean).shape == (2, 6)
    assert keras.ops.convert_to_numpy(log_var).shape == (2, 6)
    onehot = np.eye(4, dtype="float32")[[0, 3]]
    noise = np.zeros((2, n_points - 1, 3), "float32")
    x, log_texture = dec([z, onehot, noise, np.zeros((2, 1), "float32")])
    assert keras.ops.convert_to_numpy(x).shape == (2, n_points, 3)
    assert keras.ops.convert_to_numpy(log_texture).shape == (2, 2)
    spline = build_decoder(AAEConfig(**{**cfg.to_dict(), "decoder": "spline"}))
    assert keras.ops.convert_to_numpy(spline([z, onehot])).shape == (2, n_points, 3)
    assert keras.ops.convert_to_numpy(disc([z, onehot])).shape == (2, 1)


def test_spline_output_is_smooth_and_interpolates_ends():
    basis = bspline_basis(64, 8)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-5)
    rng = np.random.default_rng(0)
    control = rng.normal(size=(1, 8, 3)).astype("float32") * 10
    curve = keras.ops.convert_to_numpy(SplineCurve(64, 8)(control))[0]
    np.testing.assert_allclose(curve[0], control[0, 0], atol=1e-4)
    np.testing.assert_allclose(curve[-1], control[0, -1], atol=1e-4)
    # second differences of the sampled spline are far below the control jitter
    d2 = np.linalg.norm(np.diff(curve, 2, axis=0), axis=1)
    assert d2.max() < 0.2 * np.linalg.norm(np.diff(control[0], 2, axis=0), axis=1).max()


def test_arclength_output_has_the_decoded_length_centre_and_equal_steps():
    rng = np.random.default_rng(0)
    controls = rng.normal(size=(3, 8, 3)).astype("float32")
    log_lengths = np.log([0.5, 2.0, 7.0])
    centres = rng.normal(size=(3, 3)) * 5
    frame = np.concatenate([centres, log_lengths[:, None]], axis=1).astype("float32")
    no_texture = [
        np.zeros((3, 2), "float32"),
        np.zeros((3, 63, 3), "float32"),
        np.zeros((3, 1), "float32"),
    ]
    layer = ArcLengthCurve(64, 8)
    curve = keras.ops.convert_to_numpy(layer([controls, frame, *no_texture]))
    assert curve.shape == (3, 64, 3)
    steps = np.linalg.norm(np.diff(curve, axis=1), axis=2)
    np.testing.assert_allclose(steps.sum(axis=1), np.exp(log_lengths), rtol=1e-4)
    np.testing.assert_allclose(steps / steps[:, :1], 1.0, rtol=1e-3)  # equal steps
    np.testing.assert_allclose(curve.mean(axis=1), centres, atol=1e-4)
    # one control direction everywhere: a straight segment
    straight = np.tile([[[0.0, 0.0, 1.0]]], (1, 8, 1)).astype("float32")
    flat = [
        np.zeros((1, 2), "float32"),
        np.zeros((1, 15, 3), "float32"),
        np.zeros((1, 1), "float32"),
    ]
    line = ArcLengthCurve(16, 8)([straight, frame[:1], *flat])
    line = keras.ops.convert_to_numpy(line)[0]
    np.testing.assert_allclose(line[:, :2], np.tile(centres[0, :2], (16, 1)), atol=1e-4)
    np.testing.assert_allclose(line[-1, 2] - line[0, 2], 0.5, rtol=1e-4)
    # sampled texture: the same length and centre, turns of the given scale
    noise = rng.standard_normal((3, 63, 3)).astype("float32")
    xi = np.zeros((3, 1), "float32")
    for scale in (0.02, 0.1):
        # mu: the log turning per step (RMS), 2 s; no spread (tau ~ 0)
        texture = np.tile([[np.log(2 * scale), -5.0]], (3, 1))
        rough = layer([controls, frame, texture.astype("float32"), noise, xi])
        rough = keras.ops.convert_to_numpy(rough)
        steps = np.linalg.norm(np.diff(rough, axis=1), axis=2)
        np.testing.assert_allclose(steps.sum(axis=1), np.exp(log_lengths), rtol=1e-4)
        np.testing.assert_allclose(rough.mean(axis=1), centres, atol=1e-4)
        u = np.diff(rough, axis=1) / steps[..., None]
        u_mean = np.diff(curve, axis=1)
        u_mean /= np.linalg.norm(u_mean, axis=2, keepdims=True)
        angle = np.arccos(np.clip((u * u_mean).sum(axis=2), -1, 1))
        # two perpendicular axes of scale s: a mean angle of s * sqrt(pi / 2)
        np.testing.assert_allclose(angle.mean(), scale * np.sqrt(np.pi / 2), rtol=0.1)


def test_scale_free_losses_on_known_cases():
    t = np.linspace(0, np.pi, 50)
    arc = np.stack([np.cos(t), np.sin(t), 0 * t], axis=1)[None].astype("float32")
    assert float(log_length_mse(arc, arc)) < 1e-8
    assert float(direction_loss(arc, arc)) < 1e-6
    # twice as long, same shape: a log-length error of log 2, no direction error
    np.testing.assert_allclose(
        float(log_length_mse(arc, 2 * arc)), np.log(2) ** 2, rtol=1e-4
    )
    assert float(direction_loss(arc, 2 * arc)) < 1e-6
    # a small fragment with ripples costs as much as a large one
    ripple = arc.copy()
    ripple[0, :, 2] = 0.05 * np.sin(40 * t)
    small = float(direction_loss(0.1 * arc, 0.1 * ripple))
    large = float(direction_loss(10 * arc, 10 * ripple))
    np.testing.assert_allclose(small, large, rtol=1e-3)
    assert small > 0.01


def test_excess_turn_costs_only_turning_more():
    """A streamline crumpled around a smooth arc costs its relative excess
    turn squared; the arc against itself, or a straighter line against the
    arc, costs nothing, and a crumpled row dominates a batch's mean."""
    t = np.linspace(0, np.pi, 64)
    arc = np.stack([np.cos(t), np.sin(t), 0 * t], axis=1).astype("float32")
    line = np.stack([t, 0 * t, 0 * t], axis=1).astype("float32")
    crumpled = arc.copy()
    crumpled[:, 2] = 0.05 * np.sin(25 * t)

    def turn(x):  # mean change of the unit step per step
        d = np.diff(x.astype(np.float64), axis=0)
        u = d / np.linalg.norm(d, axis=1, keepdims=True)
        return np.mean(np.linalg.norm(np.diff(u, axis=0), axis=1))

    assert float(excess_turn(arc[None], arc[None])) < 1e-8
    assert float(excess_turn(line[None], arc[None])) == 0.0
    expected = ((turn(crumpled) - turn(arc)) / turn(arc)) ** 2
    assert expected > 1.0
    np.testing.assert_allclose(
        float(excess_turn(crumpled[None], arc[None])), expected, rtol=1e-3
    )
    batch = np.stack([arc, arc, arc, crumpled])
    np.testing.assert_allclose(
        float(excess_turn(batch, np.stack([arc] * 4))), expected / 4, rtol=1e-3
    )


@pytest.mark.parametrize("width", [0.0, 1.5])
def test_texture_likelihood_recovers_the_roughness_distribution(width):
    """Streamlines sampled around mean curves with log-normal roughness
    (mu, tau): the likelihood (with other noise, smoothed as the layer
    smooths its own) is smallest near (mu, tau), so the decoder's texture
    head learns the real distribution, with correlated texture too."""
    rng = np.random.default_rng(1)
    n, b = 64, 400
    # gently curved mean curves: their own turns are small beside the texture
    controls = np.array([0.0, 0.0, 1.0]) + 0.05 * rng.normal(size=(b, 8, 3))
    controls = controls.astype("float32")
    frame = np.concatenate([np.zeros((b, 3)), np.full((b, 1), np.log(3.0))], axis=1)
    frame = frame.astype("float32")
    layer = ArcLengthCurve(n, 8, texture_width=width)
    zeros = [np.zeros((b, 2)), np.zeros((b, n - 1, 3)), np.zeros((b, 1))]
    mean = layer([controls, frame, *[v.astype("float32") for v in zeros]])
    noise = rng.standard_normal((b, n - 1, 3)).astype("float32")
    xi = rng.standard_normal((b, 1)).astype("float32")
    other_noise = rng.standard_normal((b, n - 1, 3)).astype("float32")
    other_noise = layer.texture_noise(keras.ops.convert_to_tensor(other_noise))
    for mu, tau in ((np.log(0.02), 0.1), (np.log(0.08), 0.5)):
        truth = np.tile([[mu, np.log(tau)]], (b, 1)).astype("float32")
        sampled = layer([controls, frame, truth, noise, xi])

        def loss(m, t, sampled=sampled):
            guess = np.tile([[m, np.log(t)]], (b, 1)).astype("float32")
            return float(texture_nll(sampled, mean, guess, other_noise))

        mus = mu + np.array([-0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4])
        best_mu = mus[int(np.argmin([loss(m, tau) for m in mus]))]
        assert abs(best_mu - mu) <= 0.15, (mu, best_mu)
        taus = tau * np.array([0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0])
        best_tau = taus[int(np.argmin([loss(mu, t) for t in taus]))]
        assert 0.5 * tau <= best_tau <= 2.0 * tau, (tau, best_tau)


def test_texture_kernel_keeps_unit_variance_correlates_neighbours_and_stays_put():
    assert texture_kernel(63, 0.0) is None
    kernel = texture_kernel(63, 1.5)
    assert kernel.shape == (63, 63) and kernel.dtype == np.float32
    np.testing.assert_allclose((kernel**2).sum(axis=1), 1.0, rtol=1e-5)
    white = np.random.default_rng(0).standard_normal((20000, 63))
    noise = white @ kernel.T
    np.testing.assert_allclose(noise.var(axis=0)[[0, 31, 62]], 1.0, atol=0.05)
    lag1 = np.corrcoef(noise[:, 30], noise[:, 31])[0, 1]
    assert 0.6 < lag1 < 0.8, lag1  # neighbouring steps turn the same way
    # the perturbations are the steps of a displacement that stays put: their
    # running sum (how far the texture moves a point) does not grow along
    # the streamline, as independent perturbations' does (a random walk)
    drift = np.cumsum(noise, axis=1).var(axis=0)
    walk = np.cumsum(white, axis=1).var(axis=0)
    assert drift[60] < 1.5 * drift[10], drift[[10, 60]]
    assert walk[60] > 4 * walk[10]


def test_texture_width_is_zero_or_wide_enough_to_smooth():
    with pytest.raises(ConfigError, match="--texture_width must be 0"):
        AAEConfig(texture_width=0.01).validate()
    AAEConfig(texture_width=0.0).validate()
    AAEConfig(texture_width=0.5).validate()
    with pytest.raises(ValueError, match="too narrow"):
        texture_kernel(63, 0.01)


def test_training_scores_the_texture_with_the_noise_the_decoder_samples(
    monkeypatch,
):
    """The likelihood must perturb the mean curve with noise correlated as the
    decoder correlates its own: with independent noise it would fit a
    texture scale for another texture than the one sampled."""
    import aae_tract.model.aae as aae_module
    from aae_tract.model.aae import ConditionalAAE

    seen = []
    nll = aae_module.texture_nll

    def spy(x, x_mean, texture, noise):
        seen.append(keras.ops.convert_to_numpy(noise))
        return nll(x, x_mean, texture, noise)

    monkeypatch.setattr(aae_module, "texture_nll", spy)
    net = ConditionalAAE(**{**TINY, "n_bundles": 2}, texture_width=2.0)
    x = np.random.default_rng(0).normal(size=(64, TINY["n_points"], 3))
    onehot = np.repeat(np.eye(2, dtype="float32"), 32, axis=0)
    net.autoencoder_losses(
        keras.ops.convert_to_tensor(x.astype("float32")),
        keras.ops.convert_to_tensor(onehot),
        keras.ops.arange(64.0),
    )
    (noise,) = seen
    a, b = noise[:, 10:-10].reshape(-1, 3), noise[:, 11:-9].reshape(-1, 3)
    lag1 = np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))
    assert lag1 > 0.6, lag1  # the kernel's 0.82 at a width of 2; white: 0


def _turn_vectors(curve):
    u = np.diff(curve, axis=1)
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    return np.diff(u, axis=1)


@pytest.mark.parametrize("width", [0.0, 1.0, 2.0])
def test_correlated_texture_turns_gently_as_tracking_does(width):
    """Independent step perturbations turn one way then back (successive
    turns anticorrelated), so the streamline looks straight at a coarser
    resolution; smoothed ones turn the same way over a few steps."""
    rng = np.random.default_rng(0)
    b, n = 200, 64
    straight = np.tile([[[0.0, 0.0, 1.0]]], (b, 8, 1)).astype("float32")
    frame = np.tile([[0.0, 0.0, 0.0, np.log(5.0)]], (b, 1)).astype("float32")
    texture = np.tile([[np.log(0.1), -5.0]], (b, 1)).astype("float32")
    noise = rng.standard_normal((b, n - 1, 3)).astype("float32")
    layer = ArcLengthCurve(n, 8, texture_width=width)
    assert ArcLengthCurve.from_config(layer.get_config()).texture_width == width
    curve = layer([straight, frame, texture, noise, np.zeros((b, 1), "float32")])
    turns = _turn_vectors(keras.ops.convert_to_numpy(curve))
    a, c = turns[:, :-1].reshape(-1, 3), turns[:, 1:].reshape(-1, 3)
    lag1 = np.sum(a * c) / np.sqrt(np.sum(a * a) * np.sum(c * c))
    if width == 0:
        assert -0.6 < lag1 < -0.4, lag1  # white directions: turns alternate
    else:
        assert lag1 > 0.1, lag1  # about 0.17 at a width of 1, 0.7 at 2
        assert lag1 > 0.5 or width < 2, lag1
    # the ends turn as much as the middle (the kernel keeps unit variance)
    size = np.linalg.norm(turns, axis=2)
    ends, middle = size[:, [0, -1]].mean(), size[:, 20:40].mean()
    assert 0.6 < ends / middle < 1.6, (ends, middle)


def test_texture_likelihood_pulls_outputs_back_into_range():
    """The decoder clips (mu, log tau); an output beyond a bound must still
    cost more the farther it is, or training leaves it there (a spread stuck
    above its bound crumples a share of sampled streamlines)."""
    rng = np.random.default_rng(2)
    n, b = 32, 50
    t = np.linspace(0, 1, n)
    x = np.stack([t, np.sin(t), np.zeros_like(t)], axis=1)[None].repeat(b, 0)
    x = (x + 0.01 * rng.normal(size=x.shape)).astype("float32")
    mean = np.stack([t, np.sin(t), np.zeros_like(t)], axis=1)[None].repeat(b, 0)
    noise = rng.standard_normal((b, n - 1, 3)).astype("float32")
    low_mu, high_mu = ArcLengthCurve.LOG_TEXTURE_RANGE
    low_tau, high_tau = ArcLengthCurve.LOG_SPREAD_RANGE

    def loss(mu, log_tau):
        texture = np.tile([[mu, log_tau]], (b, 1)).astype("float32")
        return float(texture_nll(x, mean.astype("float32"), texture, noise))

    assert loss(-3.0, high_tau + 1.5) > loss(-3.0, high_tau + 0.5)
    assert loss(-3.0, high_tau + 0.5) > loss(-3.0, high_tau)
    assert loss(-3.0, low_tau - 1.0) > loss(-3.0, low_tau)
    assert loss(low_mu - 1.0, 0.0) > loss(low_mu, 0.0)
    assert loss(high_mu + 1.0, 0.0) > loss(high_mu, 0.0)


def test_mixture_prior_samples():
    prior = GaussianMixturePrior(6, n_components=4, seed=1)
    z = prior.sample_numpy(4000, np.random.default_rng(0))
    assert z.shape == (4000, 6)
    assert abs(z[:, 0].std() - 1) < 0.1
    z2 = keras.ops.convert_to_numpy(prior.sample(10, keras.random.SeedGenerator(0)))
    assert z2.shape == (10, 6)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_control"):
        AAEConfig(n_points=16, n_control=32)
    with pytest.raises(ValueError, match="adv_weight"):
        AAEConfig(adv_weight=-1)
    with pytest.raises(ValueError, match="--disc_norm must be one of none, spectral"):
        AAEConfig(disc_norm="batch")
    with pytest.raises(ValueError, match="--polish_epochs must be at least 0"):
        AAEConfig(polish_epochs=-1)
    with pytest.raises(ValueError, match="--polish_warmup_epochs must be at least 0"):
        AAEConfig(polish_warmup_epochs=-1)
    with pytest.raises(ValueError, match="--polish_noise must be at least 0"):
        AAEConfig(polish_noise=-0.1)
    with pytest.raises(ValueError, match="--polish_turn_weight must be at least 0"):
        AAEConfig(polish_turn_weight=-1.0)
    with pytest.raises(ValueError, match="--polish_swap_weight must be at least 0"):
        AAEConfig(polish_swap_weight=-0.5)


def _layer_norms(model):
    """The largest singular value of each dense kernel of the discriminator,
    after a call as in training (which normalizes a spectral layer's kernel)."""
    disc = model.network.discriminator
    z = np.zeros((4, model.latent_dims), "float32")
    disc([z, model.onehot(np.zeros(4, int))], training=True)
    kernels = [w for w in disc.weights if w.path.endswith("kernel")]
    assert len(kernels) == 3
    return [float(np.linalg.norm(keras.ops.convert_to_numpy(k), 2)) for k in kernels]


def test_spectral_discriminator_layers_have_norm_1_and_survive_saving(
    tiny_splits, tmp_path
):
    train, validation = tiny_splits
    rng = np.random.default_rng(0)
    norms = {}
    for norm in ("none", "spectral"):
        config = {**TINY, "disc_units": (64, 64)}
        model = TractAAE.from_dataset(train, epochs=3, disc_norm=norm, **config)
        history = model.fit(train, validation, verbose=0)
        assert np.all(np.isfinite(history["disc_loss"])), norm
        norms[norm] = _layer_norms(model)
    # each layer 1-Lipschitz; one power iteration a step estimates a layer's
    # norm from below, hence the margin
    assert max(norms["spectral"]) <= 1.1, norms
    # the plain discriminator's layers are not held to it (the check can fail)
    assert max(norms["none"]) > 1.5, norms
    path = tmp_path / "sn.keras"
    model.save(path)
    loaded = TractAAE.load(path)
    assert loaded.config.disc_norm == "spectral"
    names = [w.path for w in loaded.network.discriminator.weights]
    assert any("vector_u" in n for n in names), names
    z = rng.normal(size=(16, 8)).astype("float32")
    onehot = model.onehot(np.zeros(16, int))
    np.testing.assert_allclose(
        *(
            keras.ops.convert_to_numpy(m.network.discriminator([z, onehot]))
            for m in (model, loaded)
        ),
        atol=1e-5,
    )


def test_training_reduces_reconstruction(tiny_trained):
    model, history = tiny_trained
    for key in (
        "loss",
        "recon_loss",
        "ar_loss",
        "gen_loss",
        "disc_loss",
        "val_recon_loss",
    ):
        assert len(history[key]) == 3, key
        assert np.all(np.isfinite(history[key]))
    assert history["recon_loss"][-1] < history["recon_loss"][0]
    assert model.metadata.training["epochs"] == 3
    assert set(model.metadata.calibration) == set(model.bundle_names)


def test_calibration_is_monotone(tiny_trained):
    model, _ = tiny_trained
    for bundle in model.bundle_names:
        lo, hi = model.attribute_range(bundle)
        grid = np.linspace(lo - 20, hi + 20, 50)
        z0 = model.attribute_to_z0(bundle, grid)
        assert np.all(np.diff(z0) >= -1e-6)


def test_unknown_bundle_lists_known(tiny_trained):
    model, _ = tiny_trained
    with pytest.raises(UnknownBundleError, match="AF_L"):
        model.bundle_index("NOPE")


def test_save_load_gives_identical_codes(tiny_trained, tiny_splits, tmp_path):
    model, _ = tiny_trained
    _, validation = tiny_splits
    path = model.save(tmp_path / "m.keras")
    loaded = TractAAE.load(path)
    x = validation.x[:20]
    labels = validation.labels[:20]
    np.testing.assert_allclose(
        loaded.encode(x, labels), model.encode(x, labels), atol=1e-6
    )
    z = np.random.default_rng(0).normal(size=(5, model.latent_dims))
    np.testing.assert_allclose(
        loaded.decode(z, "AF_L"), model.decode(z, "AF_L"), atol=1e-4
    )
    assert loaded.metadata.calibration == model.metadata.calibration
    assert loaded.bundle_names == model.bundle_names
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_bfloat16_encoder_is_close_and_follows_the_weights(tiny_trained, tiny_splits):
    model, _ = tiny_trained
    _, validation = tiny_splits
    x = np.asarray(validation.x)
    exact = model.encode_prepared(x)
    fast = model.encode_prepared(x, precision="bfloat16")
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    gap = np.abs(fast - exact).mean(axis=0) / exact.std(axis=0)
    assert 0 < gap.mean() < 0.03  # computed in bfloat16 (not float32), yet close
    assert keras.config.dtype_policy().name == "float32"  # the global one is back
    # the copy takes the encoder's weights as they are at each call: the
    # (float32) output layer's bias moved by 1 moves every code by 1
    bias = model.network.encoder.get_layer("z").bias
    before = keras.ops.convert_to_numpy(bias)
    try:
        bias.assign(before + 1.0)
        moved = model.encode_prepared(x, precision="bfloat16")
    finally:
        bias.assign(before)
    np.testing.assert_allclose(moved - fast, 1.0, atol=1e-4)
    back = model.encode_prepared(x, precision="bfloat16")
    np.testing.assert_allclose(back, fast, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.encode_prepared(x), exact, rtol=1e-5, atol=1e-5)
    with pytest.raises(AAETractError, match="precision must be"):
        model.encode_prepared(x[:2], precision="float16")


def test_load_refuses_bad_files(tmp_path, tiny_trained):
    with pytest.raises(ModelFileError, match="not found"):
        TractAAE.load(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="junk.keras"):
        TractAAE.load(junk)
    # a plain Keras model is not an aae_tract model
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ModelFileError, match="not an aae_tract model"):
        TractAAE.load(tmp_path / "plain.keras")
    # truncated archive
    model, _ = tiny_trained
    good = model.save(tmp_path / "good.keras")
    data = good.read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        TractAAE.load(tmp_path / "cut.keras")


def test_load_refuses_tampered_metadata(tmp_path, tiny_trained):
    model, _ = tiny_trained
    good = model.save(tmp_path / "good.keras")
    bad = tmp_path / "bad.keras"
    tamper(good, bad, meta=lambda m: {**m, "bundle_names": m["bundle_names"][:1]})
    with pytest.raises(ModelFileError, match="bundles"):
        TractAAE.load(bad)


def test_load_refuses_lambda_layer(tmp_path, tiny_trained):
    """A .keras file carrying code (a Lambda layer) is refused (safe mode)."""
    model, _ = tiny_trained
    good = model.save(tmp_path / "good.keras")
    evil_net = keras.Sequential(
        [keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2)]
    )
    evil_net.save(tmp_path / "evil_net.keras")
    evil = tmp_path / "evil.keras"
    with (
        zipfile.ZipFile(tmp_path / "evil_net.keras") as src,
        zipfile.ZipFile(evil, "w") as dst,
    ):
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        with zipfile.ZipFile(good) as g:
            dst.writestr("aae_tract.json", g.read("aae_tract.json"))
    with pytest.raises(ModelFileError, match="cannot be loaded|not an aae_tract"):
        TractAAE.load(evil)


def test_checkpoint_and_resume(tiny_splits, tmp_path):
    train, validation = tiny_splits
    ckpt = tmp_path / "ckpt"
    first = TractAAE.from_dataset(train, epochs=2, **TINY)
    h1 = first.fit(
        train,
        validation,
        checkpoint_dir=ckpt,
        verbose=0,
        history_path=tmp_path / "history.json",
    )
    state = json.loads((ckpt / "checkpoint.json").read_text())
    assert state["epoch"] == 2
    assert json.loads((tmp_path / "history.json").read_text())["epochs"] == 2
    steps = int(
        first.network.ae_optimizer.iterations.numpy()
        if hasattr(first.network.ae_optimizer.iterations, "numpy")
        else keras.ops.convert_to_numpy(first.network.ae_optimizer.iterations)
    )

    second = TractAAE.from_dataset(train, epochs=4, **TINY)
    h2 = second.fit(train, validation, checkpoint_dir=ckpt, resume=True, verbose=0)
    assert len(h2["recon_loss"]) == 4
    assert h2["recon_loss"][:2] == pytest.approx(h1["recon_loss"][:2])
    iterations = int(keras.ops.convert_to_numpy(second.network.ae_optimizer.iterations))
    assert iterations == 2 * steps
    assert json.loads((ckpt / "checkpoint.json").read_text())["epoch"] == 4
    assert len(list(ckpt.glob("epoch-*.keras"))) == 1


def _weights(network):
    return [keras.ops.convert_to_numpy(w).copy() for w in network.weights]


def test_training_stopped_early_skips_the_decoder_only_stage(tiny_splits, caplog):
    """A callback that ends training early (Ctrl-C in aae_tract_train) ends it
    before the decoder-only stage too, and the log says so."""
    train, validation = tiny_splits

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model = TractAAE.from_dataset(train, epochs=3, polish_epochs=2, **TINY)
    with caplog.at_level(logging.WARNING, logger="aae_tract"):
        history = model.fit(train, validation, verbose=0, callbacks=[StopAfterFirst()])
    assert len(history["recon_loss"]) == 1
    assert "polish" not in model.metadata.training
    assert "no decoder-only stage" in caplog.text
    # left to its default, the stage stays unresolved: a resumed run
    # resolves it from the epochs it trains
    model = TractAAE.from_dataset(train, epochs=3, **TINY)
    model.fit(train, validation, verbose=0, callbacks=[StopAfterFirst()])
    assert model.config.polish_epochs is None
    assert model.metadata.config["polish_epochs"] is None


def test_decoder_only_stage_moves_the_decoder_alone(tiny_splits, tmp_path):
    train, validation = tiny_splits
    ckpt = tmp_path / "ckpt"
    model = TractAAE.from_dataset(
        train, epochs=2, polish_epochs=3, polish_warmup_epochs=2, **TINY
    )
    history = model.fit(train, validation, checkpoint_dir=ckpt, verbose=0)
    assert len(history["recon_loss"]) == 2  # the main stage's epochs
    polish = model.metadata.training["polish"]
    assert polish["epochs"] == 3
    assert polish["warmup_epochs"] == 1  # at most half the stage
    assert len(polish["recon_loss"]) == len(polish["val_recon_loss"]) == 3
    # the checkpoint is the main stage's last epoch: the stage after it
    # moved every decoder weight and no encoder weight (so no code)
    state = json.loads((ckpt / "checkpoint.json").read_text())
    assert state["epoch"] == 2
    before = keras.saving.load_model(ckpt / state["model"], compile=False)
    net = model.network
    for ours, theirs in zip(
        _weights(net.encoder), _weights(before.encoder), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    moved = [
        not np.array_equal(ours, theirs)
        for ours, theirs in zip(
            _weights(net.decoder), _weights(before.decoder), strict=True
        )
    ]
    assert all(moved)
    # the main stage's optimizers are back: a resumed run continues them
    assert net.ae_variables == (
        net.encoder.trainable_variables + net.decoder.trainable_variables
    )
    restored = TractAAE.from_dataset(train, epochs=2, polish_epochs=3, **TINY)
    restored.fit(train, validation, checkpoint_dir=ckpt, resume=True, verbose=0)
    assert restored.metadata.training["polish"]["epochs"] == 3
    for ours, theirs in zip(
        _weights(restored.network.encoder), _weights(before.encoder), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    # saved with the model, as JSON
    model.save(tmp_path / "m.keras")
    loaded = TractAAE.load(tmp_path / "m.keras")
    assert loaded.metadata.training["polish"]["epochs"] == 3
    assert loaded.config.polish_epochs == 3
    # a loaded model polished further, with noise on the codes: the codes
    # stay, the count adds up, the noise is recorded
    codes = loaded.encode_prepared(train.x[:16])
    record = loaded.polish(
        train,
        epochs=2,
        warmup_epochs=0,
        noise=0.05,
        turn_weight=0.5,
        swap_weight=0.2,
        verbose=0,
    )
    assert len(record["recon_loss"]) == 2 and "val_recon_loss" not in record
    assert record["warmup_epochs"] == 0
    assert (record["noise"], record["turn_weight"]) == (0.05, 0.5)
    assert record["swap_weight"] == 0.2 and loaded.network.swap_weight == 0.0
    np.testing.assert_array_equal(loaded.encode_prepared(train.x[:16]), codes)
    assert loaded.network.code_noise == 0.0 and not loaded.network.decoder_only
    assert loaded.network.turn_weight == 0.0
    loaded.save(tmp_path / "m2.keras")
    again = TractAAE.load(tmp_path / "m2.keras")
    assert (again.config.polish_epochs, again.config.polish_noise) == (5, 0.05)
    assert again.config.polish_turn_weight == 0.5
    assert again.config.polish_swap_weight == 0.2
    assert again.config.polish_warmup_epochs == 0
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        loaded.polish(train, epochs=0)
    with pytest.raises(ConfigError, match="noise must be a finite number >= 0"):
        loaded.polish(train, epochs=1, noise=float("nan"))
    with pytest.raises(ConfigError, match="warmup_epochs must be a whole number"):
        loaded.polish(train, epochs=1, warmup_epochs=-1)
    with pytest.raises(ConfigError, match="turn_weight must be a finite number >= 0"):
        loaded.polish(train, epochs=1, turn_weight=-1)
    with pytest.raises(ConfigError, match="swap_weight must be a finite number >= 0"):
        loaded.polish(train, epochs=1, swap_weight=float("inf"))


def test_decoder_stage_rate_warms_up_then_decays(tiny_splits):
    """With warm-up steps, the stage's rate rises linearly from 5% of the
    learning rate to all of it, then falls along the cosine to 5% at the
    stage's end; without, it starts at all of it; constant_lr keeps it."""
    train, _ = tiny_splits

    def rates(model, **steps):
        model._compile(**steps)
        optimizer = model.network.ae_optimizer
        out = []
        for step in range(16):
            optimizer.iterations.assign(step)
            out.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        return np.array(out) / model.config.learning_rate

    model = TractAAE.from_dataset(train, **TINY)
    warm = rates(model, decay_steps=10, warmup_steps=4)
    np.testing.assert_allclose(warm[:5], [0.05, 0.2875, 0.525, 0.7625, 1.0], rtol=1e-5)
    assert np.all(np.diff(warm[4:15]) < 0)
    np.testing.assert_allclose(warm[14:], 0.05, rtol=1e-5)
    cold = rates(model, decay_steps=10)
    assert cold[0] == pytest.approx(1.0) and cold[10] == pytest.approx(0.05)
    flat = TractAAE.from_dataset(train, lr_decay=False, **TINY)
    np.testing.assert_allclose(rates(flat, decay_steps=10, warmup_steps=4), 1.0)


def _batch(model, train, rows):
    """``(x, onehot, attribute)`` tensors of the rows of ``train`` as the
    network's losses take them (normalized streamlines)."""
    return tuple(
        keras.ops.convert_to_tensor(np.asarray(v, dtype="float32"))
        for v in (
            model.normalizer.transform(np.asarray(train.x[rows], dtype="float32")),
            model.onehot(np.asarray(train.labels)[rows]),
            np.asarray(train.attribute)[rows],
        )
    )


def test_swapped_length_pairs_codes_of_one_bundle(tiny_trained, tiny_splits):
    """The swapped-length loss gives each code dimension 0 of a code of its
    own bundle: with one code per bundle each keeps its own, and the loss is
    the length loss of the codes decoded as they are; with two codes of a
    bundle it is the mean of the two rows' errors for the partners drawn,
    each scored against the length of its partner's streamline."""
    model, _ = tiny_trained
    train, _ = tiny_splits
    net = model.network
    shared = net.seed_generator  # the fixture's, left as it was
    net.seed_generator = keras.random.SeedGenerator(3)
    try:
        _check_swapped_length(model, train)
    finally:
        net.seed_generator = shared


def _check_swapped_length(model, train):
    net = model.network
    labels = np.asarray(train.labels)
    steps = [np.linalg.norm(np.diff(s, axis=0), axis=1) for s in train.x]
    lengths = np.array([np.sum(s) for s in steps])

    def tensors(rows):
        x, onehot, _ = _batch(model, train, rows)
        return x, onehot, net.encode_mean(x)

    def value(t):
        return float(keras.ops.convert_to_numpy(t))

    def swapped(x, z, onehot):
        decoded, _ = net.decode(z, onehot)
        return [value(t) for t in net._swap_terms(x, z, onehot, decoded)]

    x, onehot, z = tensors([int(np.flatnonzero(labels == b)[0]) for b in range(3)])
    decoded, _ = net.decode(z, onehot)
    for _ in range(3):
        length, turn = swapped(x, z, onehot)
        assert length == pytest.approx(value(log_length_mse(x, decoded)), rel=1e-5)
        assert turn == pytest.approx(0.0, abs=1e-6)  # each code its own
    # the shortest and the longest streamline of bundle 0
    own = np.flatnonzero(labels == 0)
    rows = [int(own[np.argmin(lengths[own])]), int(own[np.argmax(lengths[own])])]
    x, onehot, z = tensors(rows)
    z = keras.ops.convert_to_numpy(z)
    # the normalized inputs' lengths: the loss compares lengths in that space
    target = keras.ops.convert_to_numpy(polyline_length(x))
    errors = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            code = np.concatenate([z[j, :1], z[i, 1:]])[None].astype("float32")
            out, _ = net.decode(code, onehot[i : i + 1])
            length = keras.ops.convert_to_numpy(polyline_length(out))[0]
            errors[i, j] = (np.log(length) - np.log(target[j])) ** 2
    possible = np.add.outer(errors[0], errors[1]).ravel() / 2
    seen = set()
    for _ in range(40):
        gap = np.abs(possible - swapped(x, z, onehot)[0])
        assert gap.min() < 1e-4 * possible.max(), (gap, possible)
        seen.add(int(np.argmin(gap)))
    assert len(seen) > 1  # the partner is drawn, not fixed


def test_swapped_length_weighs_in_the_decoder_only_stage_alone(
    tiny_trained, tiny_splits
):
    """With ``swap_weight`` the total loss of a decoder-only step grows by the
    weighted swapped-length term (the other losses as they were, the
    texture's draw aside); outside the stage the weight changes nothing."""
    model, _ = tiny_trained
    train, _ = tiny_splits
    net = model.network
    x, onehot, attribute = _batch(model, train, slice(0, 64))
    shared = net.seed_generator

    def losses(**state):
        net.seed_generator = keras.random.SeedGenerator(7)
        for key, value in state.items():
            setattr(net, key, value)
        try:
            total, parts, _ = net.autoencoder_losses(x, onehot, attribute)
        finally:
            net.decoder_only, net.swap_weight, net.turn_weight = False, 0.0, 0.0
            net.seed_generator = shared
        numbers = {k: float(keras.ops.convert_to_numpy(v)) for k, v in parts.items()}
        return float(keras.ops.convert_to_numpy(total)), numbers

    # (dropout draws from its own seeds: the same up to its noise)
    plain, _ = losses()
    assert losses(swap_weight=100.0)[0] == pytest.approx(plain, rel=1e-3)
    base, clean = losses(decoder_only=True)
    total, parts = losses(decoder_only=True, swap_weight=100.0)
    for key in ("recon_loss", "length_loss", "direction_loss"):
        assert parts[key] == pytest.approx(clean[key], rel=1e-3), key
    drawn = parts["texture_loss"] - clean["texture_loss"]
    texture = net.config.texture_weight * drawn
    assert total - base - texture > 0.01, (total, base, texture)


def test_swapped_length_is_for_length_models(tiny_splits, tiny_trained):
    """The swapped-length loss scores lengths: a model of another attribute
    (age) refuses it, when built and when polished."""
    import dataclasses

    train, _ = tiny_splits
    aged = dataclasses.replace(train, attribute_name="age")
    with pytest.raises(ConfigError, match="polish_swap_weight asks latent dimension 0"):
        TractAAE.from_dataset(aged, polish_swap_weight=0.1, **TINY)
    model = TractAAE.from_dataset(aged, **TINY)
    with pytest.raises(ConfigError, match="this model's attribute is 'age'"):
        model.polish(aged, epochs=1, swap_weight=0.1, verbose=0)


def test_code_noise_moves_only_the_decoded_codes(tiny_trained, tiny_splits):
    """In the decoder-only stage the decoder sees noisy codes (a larger
    reconstruction loss than without noise, from the same weights), while
    the codes the losses return, and any step outside the stage, have none."""
    model, _ = tiny_trained
    train, _ = tiny_splits
    net = model.network
    x, onehot, attribute = _batch(model, train, slice(0, 64))

    def losses(**state):
        for key, value in state.items():
            setattr(net, key, value)
        try:
            total, parts, z = net.autoencoder_losses(x, onehot, attribute)
        finally:
            net.decoder_only, net.code_noise, net.turn_weight = False, 0.0, 0.0
        numbers = {k: float(keras.ops.convert_to_numpy(v)) for k, v in parts.items()}
        return float(keras.ops.convert_to_numpy(total)), numbers, z

    _, plain, z = losses()
    _, same, _ = losses(code_noise=2.0)  # outside the stage: no noise
    _, noisy, z_noisy = losses(decoder_only=True, code_noise=2.0)
    assert same["recon_loss"] == pytest.approx(plain["recon_loss"], rel=1e-5)
    assert noisy["recon_loss"] > 1.3 * plain["recon_loss"], (noisy, plain)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(z_noisy), keras.ops.convert_to_numpy(z), atol=1e-6
    )
    # with the excess-turn penalty the losses decode the codes themselves
    # (the texture's draw aside), and the noisy codes add the penalty alone
    base, clean, _ = losses(decoder_only=True, code_noise=0.0)
    total, parts, _ = losses(decoder_only=True, code_noise=2.0, turn_weight=100.0)
    for key in ("recon_loss", "length_loss", "direction_loss"):
        assert parts[key] == pytest.approx(clean[key], rel=1e-5), key
    weight = net.config.texture_weight
    texture = weight * (parts["texture_loss"] - clean["texture_loss"])
    assert total - base - texture > 0.1, (total, base, texture)


def test_resume_refuses_other_settings(tiny_splits, tmp_path):
    train, _ = tiny_splits
    ckpt = tmp_path / "ckpt"
    TractAAE.from_dataset(train, epochs=1, **TINY).fit(
        train, checkpoint_dir=ckpt, verbose=0
    )
    other = TractAAE.from_dataset(train, epochs=2, **{**TINY, "latent_dims": 6})
    with pytest.raises(TrainingError, match="latent_dims"):
        other.fit(train, checkpoint_dir=ckpt, resume=True, verbose=0)


class _PoisonAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            var = self.model.decoder.trainable_variables[0]
            var.assign(np.full(var.shape, np.nan, dtype="float32"))


def test_non_finite_loss_stops_and_keeps_checkpoint(tiny_splits, tmp_path):
    train, _ = tiny_splits
    ckpt = tmp_path / "ckpt"
    model = TractAAE.from_dataset(train, epochs=3, **TINY)
    with pytest.raises(TrainingError, match="last good checkpoint"):
        model.fit(
            train, checkpoint_dir=ckpt, verbose=0, callbacks=[_PoisonAfterEpoch(1)]
        )
    state = json.loads((ckpt / "checkpoint.json").read_text())
    assert state["epoch"] == 1
    restored = keras.saving.load_model(ckpt / state["model"], compile=False)
    weights = restored.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)


def test_gaussian_posterior_trains_and_encodes_its_mean(tiny_splits):
    train, _ = tiny_splits
    small = train.subset(np.arange(64))
    model = TractAAE.from_dataset(
        small,
        epochs=1,
        posterior="gaussian",
        log_var_weight=0.01,
        mmd_weight=0.05,
        **TINY,
    )
    history = model.fit(small, verbose=0)
    for key in ("recon_loss", "log_var_loss", "mmd_loss"):
        assert np.isfinite(history[key][-1]), key
    assert history["log_var_loss"][-1] > 0
    z1 = model.encode_prepared(small.x[:8])
    np.testing.assert_allclose(z1, model.encode_prepared(small.x[:8]), atol=1e-6)
    # a sample of q(z | x) differs from the mean, repeatably for one seed
    s1 = model.encode_prepared(small.x[:8], rng=0)
    assert not np.allclose(s1, z1, atol=1e-4)
    np.testing.assert_allclose(s1, model.encode_prepared(small.x[:8], rng=0))
    # in bfloat16: the mean of the same posterior, near float32's
    fast = model.encode_prepared(small.x[:8], precision="bfloat16")
    assert np.abs(fast - z1).mean() < 0.03 * z1.std()


def test_conditional_mmd_known_cases():
    rng = np.random.default_rng(0)
    onehot = np.eye(3, dtype="float32")[rng.integers(0, 3, 96)]
    prior = rng.standard_normal((96, 16)).astype("float32")

    def mmd(z):
        value = conditional_mmd(z.astype("float32"), prior, onehot)
        return float(keras.ops.convert_to_numpy(value))

    same = rng.standard_normal((96, 16))
    assert abs(mmd(same)) < 0.05
    assert mmd(0.2 * same) > 0.5  # codes that do not fill the prior
    shifted = same.copy()
    shifted[onehot[:, 1] == 1] += 1.5  # one bundle off the prior
    assert mmd(shifted) > 0.1
    # bundles are compared one by one: three clusters that together look
    # spread out still differ from the prior within each bundle
    clusters = 0.3 * same + 2.0 * (onehot @ rng.standard_normal((3, 16)))
    assert mmd(clusters) > 0.5


def test_seeded_training_repeats(tiny_splits):
    train, _ = tiny_splits
    small = train.subset(np.arange(64))
    runs = []
    for _ in range(2):
        model = TractAAE.from_dataset(small, epochs=1, **TINY)
        model.fit(small, verbose=0)
        runs.append(model.encode_prepared(small.x[:8]))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
