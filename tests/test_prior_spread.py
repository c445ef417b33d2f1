"""Widening a fitted prior (``FittedPrior.widen``, ``choose_spread``) and
drawing with a spread (``spread`` of ``sample_numpy``/``conditional_numpy``,
the ``prior_spread`` of generation)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from aae_tract.model.priors import (
    GaussianMixturePrior,
    GaussianPrior,
    make_prior,
    mixture_log_density,
)


def _subjects_codes(rng, offset, n_subjects=5, n=150, d=4, scale=0.5):
    """Codes of ``n_subjects`` subjects, each shifted from the others by about
    ``offset`` (per dimension), and their subject names."""
    z, subjects = [], []
    for s in range(n_subjects):
        shift = rng.standard_normal(d) * offset
        z.append(shift + rng.standard_normal((n, d)) * scale)
        subjects += [f"sub-{s}"] * n
    return np.concatenate(z), np.array(subjects)


def test_mixture_log_density_matches_scipy_with_a_spread():
    rng = np.random.default_rng(0)
    cov = [np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.3]]), np.eye(3)]
    chols = np.stack([np.linalg.cholesky(c) for c in cov])
    means = np.array([[0.0, 1.0, 0.0], [2.0, -1.0, 0.5]])
    weights = np.array([0.3, 0.7])
    x = rng.standard_normal((5, 3))
    want = np.log(
        sum(
            w * multivariate_normal(m, c * 1.5**2).pdf(x)
            for m, c, w in zip(means, cov, weights)
        )
    )
    got = mixture_log_density(x, means, chols, weights, spread=1.5)
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("kind", ["fitted", "fitted_mixture"])
def test_spread_is_chosen_wider_where_subjects_differ(kind):
    """A bundle whose subjects' codes lie apart gets a wider prior than one
    whose subjects' codes are alike; codes of one subject leave it as fitted."""
    rng = np.random.default_rng(1)
    apart, apart_subjects = _subjects_codes(rng, offset=1.0)
    alike, alike_subjects = _subjects_codes(rng, offset=0.0)
    lone = rng.standard_normal((100, 4))
    z = np.concatenate([apart, alike, lone])
    labels = np.repeat([0, 1, 2], [len(apart), len(alike), len(lone)])
    subjects = np.concatenate([apart_subjects, alike_subjects, ["sub-0"] * 100])
    prior = make_prior(kind, 4, n_components=4, n_bundles=3, codes_per_component=40)
    prior.fit(z, labels)
    spreads = prior.choose_spread(z, labels, subjects)
    assert spreads[0] >= 1.5
    assert spreads[1] <= 1.2
    assert spreads[1] < spreads[0]
    assert spreads[2] == 1.0


@pytest.mark.parametrize("kind", ["fitted", "fitted_mixture"])
def test_widen_scales_every_component_and_only_that_bundle(kind):
    """Each component of the widened bundle keeps its mean and weight and
    its covariance grows by spread ** 2 (unused mixture slots stay unused);
    the other bundle is left as it was, and samples follow."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((400, 3)) * [1.0, 2.0, 0.5]
    z[:200] += np.repeat([[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0]], 100, axis=0)
    labels = np.repeat([0, 1], 200)
    # 2 components of 4 slots in the mixture
    prior = make_prior(kind, 3, n_components=4, n_bundles=2, codes_per_component=100)
    prior.fit(z, labels)
    before = [prior.components(b) for b in (0, 1)]
    other = prior.covariance(1)
    prior.widen(0, 1.5)
    means, chols, weights = prior.components(0)
    assert len(weights) == (1 if kind == "fitted" else 2)
    np.testing.assert_allclose(means, before[0][0], atol=1e-6)
    np.testing.assert_allclose(weights, before[0][2], atol=1e-6)
    for c, c0 in zip(chols, before[0][1]):
        np.testing.assert_allclose(c @ c.T, 1.5**2 * (c0 @ c0.T), rtol=1e-5, atol=1e-6)
    for got, want in zip(prior.covariance(1), other):
        np.testing.assert_allclose(got, want, atol=1e-6)
    _, cov = prior.covariance(0)
    samples = prior.sample_numpy(4000, np.random.default_rng(3), 0)
    assert np.trace(np.cov(samples, rowvar=False)) == pytest.approx(
        np.trace(cov), rel=0.1
    )


@pytest.mark.parametrize("kind", ["fitted", "fitted_mixture"])
def test_choose_spread_uses_the_grid_and_leaves_the_prior(kind):
    rng = np.random.default_rng(4)
    z, subjects = _subjects_codes(rng, offset=1.0)
    labels = np.zeros(len(z), int)
    prior = make_prior(kind, 4, n_components=4, n_bundles=1, codes_per_component=40)
    prior.fit(z, labels)
    before = prior.covariance(0)
    assert prior.choose_spread(z, labels, subjects, grid=[1.0, 1.05])[0] == 1.05
    assert prior.choose_spread(z, labels, subjects, grid=[0.5])[0] == 0.5
    for got, want in zip(prior.covariance(0), before):
        np.testing.assert_array_equal(got, want)


def test_choose_spread_needs_a_subject_per_code():
    prior = make_prior("fitted", 2, n_bundles=1)
    with pytest.raises(ValueError, match="subjects"):
        prior.choose_spread(np.zeros((4, 2)), np.zeros(4, int), ["a", "b"])


@pytest.mark.parametrize("kind", ["fitted", "fitted_mixture"])
@pytest.mark.parametrize("spread", [0.5, 1.3])
def test_draws_with_a_spread_are_those_of_the_widened_prior(kind, spread):
    """Drawing with ``spread`` gives, draw for draw, what the prior widened
    by ``spread`` gives (conditioned on dimension 0 or not), and leaves the
    prior as fitted."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((400, 3)) * [1.0, 2.0, 0.5]
    z[:, 1] += 0.8 * z[:, 0]
    z[:200] += np.repeat([[3.0, 1.0, 0.0], [-3.0, -1.0, 1.0]], 100, axis=0)
    labels = np.repeat([0, 1], 200)
    prior = make_prior(kind, 3, n_components=4, n_bundles=2, codes_per_component=100)
    prior.fit(z, labels)
    before = prior.covariance(0)
    z0 = np.linspace(-4.0, 4.0, 500)
    conditional = prior.conditional_numpy(0, z0, np.random.default_rng(6), spread)
    drawn = prior.sample_numpy(500, np.random.default_rng(7), 0, spread=spread)
    for got, want in zip(prior.covariance(0), before):
        np.testing.assert_array_equal(got, want)
    prior.widen(0, spread)
    np.testing.assert_allclose(
        conditional, prior.conditional_numpy(0, z0, np.random.default_rng(6)), atol=1e-5
    )
    np.testing.assert_allclose(
        drawn, prior.sample_numpy(500, np.random.default_rng(7), 0), atol=1e-5
    )
    assert np.all(conditional[:, 0] == z0.astype(np.float32))


def test_fitted_conditional_spread_scales_about_the_conditional_mean():
    """One Gaussian: the other dimensions' conditional mean stays and their
    spread about it scales by the factor."""
    rng = np.random.default_rng(8)
    z = rng.multivariate_normal([0.0, 1.0], [[1.0, 0.6], [0.6, 1.0]], 20000)
    prior = make_prior("fitted", 2, n_bundles=1)
    prior.fit(z, np.zeros(len(z), int))
    z0 = np.full(40000, 1.0)
    draws = {
        s: prior.conditional_numpy(0, z0, np.random.default_rng(9), spread=s)[:, 1]
        for s in (1.0, 0.5)
    }
    assert abs(draws[1.0].mean() - 1.6) < 0.03
    assert abs(draws[0.5].mean() - 1.6) < 0.03
    assert abs(draws[1.0].std() - 0.8) < 0.02
    assert abs(draws[0.5].std() - 0.4) < 0.01


def test_standard_priors_draw_with_a_spread_about_their_means():
    gaussian = GaussianPrior(4)
    one = gaussian.sample_numpy(100, np.random.default_rng(0))
    half = gaussian.sample_numpy(100, np.random.default_rng(0), spread=0.5)
    np.testing.assert_allclose(half, 0.5 * one, rtol=1e-6)
    mixture = GaussianMixturePrior(4, n_components=3)
    one = mixture.sample_numpy(300, np.random.default_rng(1))
    half = mixture.sample_numpy(300, np.random.default_rng(1), spread=0.5)
    # the same components, their noise halved: 2 half - one is the means
    centres = 2 * half - one
    distance = np.abs(centres[:, None, :] - mixture.means[None]).max(axis=2)
    assert np.all(distance.min(axis=1) < 1e-5)
