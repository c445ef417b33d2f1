"""Widening a fitted prior (``FittedPrior.widen``, ``choose_spread``)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from aae_tract.model.priors import make_prior, mixture_log_density


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
def test_widen_scales_the_covariance_and_keeps_the_means(kind):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((400, 3)) * [1.0, 2.0, 0.5]
    labels = np.repeat([0, 1], 200)
    prior = make_prior(kind, 3, n_components=2, n_bundles=2, codes_per_component=50)
    prior.fit(z, labels)
    before = [prior.covariance(b) for b in (0, 1)]
    prior.widen(0, 1.5)
    mean, cov = prior.covariance(0)
    np.testing.assert_allclose(mean, before[0][0], atol=1e-6)
    # the mixture's moments: the components' covariances scale, not the
    # spread of their means, so the whole grows by at most 1.5 ** 2
    grown = np.trace(cov) / np.trace(before[0][1])
    assert (1.5**2 if kind == "fitted" else 1.0) - 1e-4 <= grown <= 1.5**2 + 1e-4
    assert grown > 1.2
    np.testing.assert_allclose(prior.covariance(1)[1], before[1][1], atol=1e-6)
    samples = prior.sample_numpy(4000, np.random.default_rng(3), 0)
    assert np.trace(np.cov(samples, rowvar=False)) == pytest.approx(
        np.trace(cov), rel=0.1
    )


def test_choose_spread_needs_a_subject_per_code():
    prior = make_prior("fitted", 2, n_bundles=1)
    with pytest.raises(ValueError, match="subjects"):
        prior.choose_spread(np.zeros((4, 2)), np.zeros(4, int), ["a", "b"])
