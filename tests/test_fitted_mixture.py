"""The fitted mixture prior: a Gaussian mixture per bundle, refitted to its
encodings."""

import keras
import numpy as np
import pytest
from conftest import (
    TINY,
    assert_standard_until_fitted,
    fitted_keras_draws,
    train_and_save,
)

from aae_tract.errors import AAETractError
from aae_tract.generate import generate, sample_latent
from aae_tract.model import TractAAE
from aae_tract.model.aae import ConditionalAAE
from aae_tract.model.priors import FittedMixturePrior


def _network(n_bundles=2, latent_dims=3, n_components=3):
    return ConditionalAAE(
        **{**TINY, "latent_dims": latent_dims, "n_bundles": n_bundles},
        prior="fitted_mixture",
        prior_components=n_components,
    )


def _codes(rng, n=3000):
    """Bundle 0: two clusters apart along dimension 0 (weights 0.75, 0.25),
    dimension 1 rising in one and falling in the other; bundle 1: one
    Gaussian."""
    first = rng.multivariate_normal(
        [-4.0, 1.0, 0.0], [[1, 0.9, 0], [0.9, 1, 0], [0, 0, 0.04]], 3 * n // 4
    )
    second = rng.multivariate_normal(
        [4.0, -1.0, 2.0], [[1, -0.9, 0], [-0.9, 1, 0], [0, 0, 0.04]], n // 4
    )
    other = rng.multivariate_normal([0.0, 5.0, -2.0], np.diag([0.25, 1.0, 1.0]), n)
    z = np.concatenate([first, second, other])
    return z, np.repeat([0, 1], [n, n])


def test_mixture_prior_starts_standard_and_fits_each_bundles_clusters():
    net = _network()
    prior = net.prior
    assert isinstance(prior, FittedMixturePrior) and prior.per_bundle
    paths = [v.path for v in net.non_trainable_weights]
    assert {"prior_means", "prior_chols", "prior_log_weights"} <= set(paths)
    rng = np.random.default_rng(0)
    assert_standard_until_fitted(prior, rng)

    z, labels = _codes(rng)
    assert prior.fit(z, labels) == [0, 1]
    draws = prior.sample_numpy(40000, rng, 0)
    right = draws[:, 0] > 0
    # the two clusters, their weights and their opposite correlations
    assert abs(right.mean() - 0.25) < 0.02
    assert np.allclose(draws[~right].mean(0), [-4, 1, 0], atol=0.1)
    assert np.allclose(draws[right].mean(0), [4, -1, 2], atol=0.1)
    assert np.corrcoef(draws[~right, :2].T)[0, 1] > 0.85
    assert np.corrcoef(draws[right, :2].T)[0, 1] < -0.85
    # the whole mixture's moments
    mean, cov = prior.covariance(0)
    assert np.allclose(mean, z[labels == 0].mean(0), atol=0.02)
    assert np.allclose(cov, np.cov(z[labels == 0], rowvar=False), atol=0.1)
    # bundle 1 stays one Gaussian whatever components it is given
    other = prior.sample_numpy(40000, rng, 1)
    assert np.allclose(other.mean(0), [0, 5, -2], atol=0.05)
    assert np.allclose(np.cov(other, rowvar=False), np.diag([0.25, 1, 1]), atol=0.06)


def test_mixture_prior_keras_samples_follow_the_condition():
    net = _network()
    z, labels = _codes(np.random.default_rng(1))
    draws = fitted_keras_draws(net, z, labels, 4000)
    first, second = draws[:4000], draws[4000:]
    assert abs((first[:, 0] > 0).mean() - 0.25) < 0.03
    assert np.allclose(second.mean(0), [0, 5, -2], atol=0.1)


def test_mixture_components_are_capped_by_the_codes_a_bundle_has():
    net = _network(latent_dims=3, n_components=20)
    rng = np.random.default_rng(2)
    z, labels = _codes(rng, n=40)  # 40 codes: at most 40 // 3 = 13 components
    # bundle 1: 5 codes far from the unused components' N(0, I)
    few = np.concatenate([rng.normal(20.0, 0.5, (5, 3)), z[labels == 0]])
    few_labels = np.repeat([1, 0], [5, 40])
    assert net.prior.fit(few, few_labels) == [0, 1]
    _, _, weights = net.prior.mixture_numpy()
    assert (weights[1] > 0).sum() == 1  # 5 codes: one component
    assert 1 < (weights[0] > 0).sum() <= 13
    # the unused components (mean 0, unit covariance) are never drawn
    onehot = np.repeat(np.eye(2, dtype="float32")[1:], 5000, axis=0)
    draws = keras.ops.convert_to_numpy(
        net.prior.sample(5000, keras.random.SeedGenerator(0), onehot)
    )
    means, _, _ = net.prior.mixture_numpy()
    assert np.allclose(draws.mean(0), means[1, np.argmax(weights[1])], atol=0.1)
    assert np.all(draws > 10)
    assert np.all(net.prior.sample_numpy(5000, rng, 1) > 10)


def test_conditional_draws_the_component_of_dimension_0():
    net = _network(n_components=2)
    rng = np.random.default_rng(3)
    z, labels = _codes(rng)
    net.prior.fit(z, labels)
    n = 20000
    left = net.prior.conditional_numpy(0, np.full(n, -4.5), rng)
    right = net.prior.conditional_numpy(0, np.full(n, 4.5), rng)
    assert np.all(left[:, 0] == -4.5) and np.all(right[:, 0] == 4.5)
    # each cluster's Gaussian conditional: mean1 + 0.9 (z0 - mean0)
    assert abs(left[:, 1].mean() - (1 - 0.45)) < 0.03
    assert abs(right[:, 1].mean() - (-1 - 0.45)) < 0.03
    assert abs(left[:, 1].std() - np.sqrt(1 - 0.81)) < 0.03
    assert abs(left[:, 2].mean()) < 0.03 and abs(right[:, 2].mean() - 2) < 0.03
    # between the clusters both are drawn, in proportion to weight x density
    middle = net.prior.conditional_numpy(0, np.zeros(n), rng)
    means, chols, weights = net.prior.mixture_numpy()
    sd = chols[0, :, 0, 0]
    density = weights[0] / sd * np.exp(-0.5 * (means[0, :, 0] / sd) ** 2)
    expected = density[means[0, :, 0] > 0].sum() / density.sum()
    assert 0.15 < expected < 0.4
    assert abs((middle[:, 2] > 1).mean() - expected) < 0.015


@pytest.fixture(scope="module")
def mixture_model(tiny_splits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixture")
    options = {"prior": "fitted_mixture", "prior_components": 2}
    return train_and_save(tiny_splits, folder, "mixture", **options)


def test_training_fits_and_saves_the_mixture(mixture_model, tiny_splits):
    model, path = mixture_model
    train, _ = tiny_splits
    prior = model.network.prior
    z = model.encode_prepared(train.x)
    names = np.asarray(train.bundle_names)[np.asarray(train.labels)]
    # the mixture of each bundle has the mean of its final encodings
    means = np.stack([prior.covariance(model.bundle_index(n))[0] for n in set(names)])
    codes = np.stack([z[names == n].mean(0) for n in set(names)])
    np.testing.assert_allclose(means, codes, atol=1e-3)
    _, _, weights = prior.mixture_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    loaded = TractAAE.load(path)
    assert loaded.config.prior == "fitted_mixture"
    stored = dict(zip("mcw", loaded.network.prior.mixture_numpy(), strict=True))
    trained = dict(zip("mcw", prior.mixture_numpy(), strict=True))
    for key, value in trained.items():
        np.testing.assert_array_equal(stored[key], value)


def test_prior_sampling_of_the_mixture(mixture_model):
    model, _ = mixture_model
    for name in ("AF_L", "CST_R"):
        bundle = generate(model, name, n_streamlines=100, sampling="prior", seed=0)
        assert len(bundle) == 100
        assert np.all(np.isfinite(bundle.streamlines))
    codes = sample_latent(
        model, "CST_R", np.full(50, 120.0), sampling="prior", exact_length=False, rng=0
    )
    assert np.allclose(codes[:, 0], model.attribute_to_z0("CST_R", np.full(50, 120.0)))


def test_prior_spread_reaches_the_prior_and_only_prior_sampling(mixture_model):
    """``prior_spread`` draws the prior's conditional with that spread (the
    codes of sample_latent are the prior's own draws from the same source),
    generate() passes it on, and bank sampling ignores it."""
    model, _ = mixture_model
    targets = np.full(64, 110.0)
    options = {"sampling": "prior", "exact_length": False, "subject_noise": None}
    codes = sample_latent(model, "CST_R", targets, prior_spread=0.4, rng=0, **options)
    expected = model.network.prior.conditional_numpy(
        model.bundle_index("CST_R"),
        model.attribute_to_z0("CST_R", targets),
        np.random.default_rng(0),
        spread=0.4,
    )
    np.testing.assert_array_equal(codes, expected)
    wide = sample_latent(model, "CST_R", targets, rng=0, **options)
    assert not np.allclose(codes, wide)

    def streamlines(sampling, spread):
        return generate(
            model,
            "CST_R",
            110.0,
            n_streamlines=20,
            sampling=sampling,
            prior_spread=spread,
            seed=0,
        ).streamlines

    assert not np.allclose(streamlines("prior", 0.4), streamlines("prior", 1.0))
    np.testing.assert_array_equal(streamlines("bank", 0.4), streamlines("bank", 1.0))


@pytest.mark.parametrize(
    "bad", [0, -1.0, float("nan"), float("inf"), 11.0, "0.5", True, np.True_, None]
)
def test_prior_spread_is_checked(mixture_model, bad):
    model, _ = mixture_model
    with pytest.raises(AAETractError, match="prior_spread must be a number above 0"):
        sample_latent(model, "AF_L", [100.0], sampling="prior", prior_spread=bad)
    with pytest.raises(AAETractError, match="prior_spread"):
        generate(model, "AF_L", 100.0, n_streamlines=2, prior_spread=bad)


def test_prior_spread_with_a_model_that_samples_its_bank_by_default(
    mixture_model, monkeypatch
):
    """A model whose default sampling is bank (an age model, say; here the
    mixture model told so) refuses a prior_spread other than 1 when the
    sampling is left to it, and ignores it when bank sampling is asked for
    by name."""
    import aae_tract.generate as gen

    model, _ = mixture_model
    monkeypatch.setattr(gen, "default_sampling", lambda model: "bank")
    with pytest.raises(AAETractError, match="sampling='prior'"):
        generate(model, "AF_L", 100.0, n_streamlines=2, prior_spread=0.5)
    with pytest.raises(AAETractError, match="samples near its training"):
        sample_latent(model, "AF_L", [100.0], prior_spread=0.5)
    named = generate(
        model, "AF_L", 100.0, n_streamlines=2, sampling="bank", prior_spread=0.5, seed=0
    )
    plain = generate(model, "AF_L", 100.0, n_streamlines=2, sampling="bank", seed=0)
    np.testing.assert_array_equal(named.streamlines, plain.streamlines)
    generate(model, "AF_L", 100.0, n_streamlines=2, prior_spread=1.0)


@pytest.mark.parametrize("codes_per_component, used", [(None, 40), (40, 4), (10, 16)])
def test_mixture_components_follow_the_codes_per_component(codes_per_component, used):
    """A bundle uses one component per ``codes_per_component`` codes of its
    sample (one per latent dimension by default), at most ``n_components``;
    the rest get weight 0."""
    net = ConditionalAAE(
        **{**TINY, "latent_dims": 3, "n_bundles": 1},
        prior="fitted_mixture",
        prior_components=40,
        prior_component_codes=codes_per_component,
    )
    rng = np.random.default_rng(2)
    z = rng.standard_normal((160, 3)) + 4.0 * rng.integers(0, 8, (160, 1))
    assert net.prior.fit(z, np.zeros(160, int)) == [0]
    weights = net.prior.mixture_numpy()[2][0]
    assert (weights > 0).sum() == used
    assert np.isclose(weights.sum(), 1.0)


def test_codes_per_component_is_checked_and_kept():
    from aae_tract.errors import ConfigError
    from aae_tract.model.config import AAEConfig

    with pytest.raises(ConfigError, match="prior_component_codes"):
        AAEConfig(prior_component_codes=0).validate()
    config = AAEConfig(prior_component_codes=12)
    assert AAEConfig.from_dict(config.to_dict()).prior_component_codes == 12


@pytest.mark.parametrize("limit", [1, None])
def test_refit_holds_blas_threads(monkeypatch, limit):
    """Each refit runs expectation maximisation with ``FIT_THREADS`` BLAS
    threads (None: the library's own pool, left as it is)."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_info, threadpool_limits

    if not any(p["user_api"] == "blas" for p in threadpool_info()):
        pytest.skip("no BLAS thread pool that threadpoolctl can see")
    seen = []
    original = GaussianMixture.fit

    def fit(self, x, y=None):
        seen.append(
            {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        )
        return original(self, x, y)

    monkeypatch.setattr(GaussianMixture, "fit", fit)
    monkeypatch.setattr(FittedMixturePrior, "FIT_THREADS", limit)
    network = _network()
    z, labels = _codes(np.random.default_rng(0), n=400)
    # a pool of two outside the refit, so that a limit of 1 shows
    with threadpool_limits(limits=2, user_api="blas"):
        outside = {
            p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"
        }
        if outside != {2}:
            pytest.skip("the BLAS pool cannot be set to two threads here")
        assert network.prior.fit(z, labels) == [0, 1]
        after = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
        assert after == outside  # the limit ends with the refit
    assert len(seen) == 2
    assert all(s == ({1} if limit == 1 else outside) for s in seen)
