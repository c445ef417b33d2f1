"""The fitted prior: one Gaussian per bundle, refitted to its encodings."""

import keras
import numpy as np
import pytest
from conftest import (
    TINY,
    assert_standard_until_fitted,
    fitted_keras_draws,
    train_and_save,
)

from aae_tract.generate import generate, sample_latent
from aae_tract.model import AAEConfig, TractAAE
from aae_tract.model.aae import ConditionalAAE
from aae_tract.model.priors import FittedPrior, GaussianPrior


def _network(n_bundles=2, latent_dims=3):
    return ConditionalAAE(
        **{**TINY, "latent_dims": latent_dims, "n_bundles": n_bundles},
        prior="fitted",
    )


def _codes(rng, n=4000):
    """Two bundles' codes with known means and covariances."""
    a = rng.multivariate_normal(
        [1.0, -2.0, 0.5], [[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 0.01]], n
    )
    b = rng.multivariate_normal([-3.0, 0.0, 2.0], np.diag([0.25, 4.0, 1.0]), n)
    return np.concatenate([a, b]), np.repeat([0, 1], n)


def test_fitted_prior_starts_standard_and_takes_each_bundles_moments():
    net = _network()
    prior = net.prior
    assert isinstance(prior, FittedPrior) and prior.per_bundle
    # the moments are weights of the network, so they are saved with it
    paths = [v.path for v in net.non_trainable_weights]
    assert "prior_means" in paths and "prior_chols" in paths
    rng = np.random.default_rng(0)
    assert_standard_until_fitted(prior, rng)

    z, labels = _codes(rng)
    assert prior.fit(z, labels) == [0, 1]
    for b in (0, 1):
        mean, cov = prior.covariance(b)
        assert np.allclose(mean, z[labels == b].mean(0), atol=1e-5)
        assert np.allclose(cov, np.cov(z[labels == b], rowvar=False), atol=1e-3)
        draws = prior.sample_numpy(40000, rng, b)
        assert np.allclose(draws.mean(0), mean, atol=0.05)
        assert np.allclose(np.cov(draws, rowvar=False), cov, atol=0.08)
    # one bundle per sample
    mixed = prior.sample_numpy(6, rng, [0, 1, 0, 1, 0, 1])
    assert np.all(np.abs(mixed[1::2, 0] - (-3.0)) < 3 * 0.5 + 0.5)


def test_fitted_prior_keras_samples_follow_the_condition():
    net = _network()
    z, labels = _codes(np.random.default_rng(1))
    draws = fitted_keras_draws(net, z, labels, 3000)
    for b in (0, 1):
        mean, cov = net.prior.covariance(b)
        mine = draws[3000 * b : 3000 * (b + 1)]
        assert np.allclose(mine.mean(0), mean, atol=0.1)
        assert np.allclose(np.cov(mine, rowvar=False), cov, atol=0.15)


def test_fitted_prior_keeps_a_bundle_without_codes():
    prior = _network().prior
    z, labels = _codes(np.random.default_rng(2))
    prior.fit(z, labels)
    mean0, cov0 = prior.covariance(0)
    keep = labels == 1
    assert prior.fit(z[keep], labels[keep]) == [1]
    mean, cov = prior.covariance(0)
    assert np.allclose(mean, mean0) and np.allclose(cov, cov0)
    # a code that is not finite is left out, not the bundle
    bad = z[keep].copy()
    bad[0, 0] = np.nan
    assert prior.fit(bad, labels[keep]) == [1]
    assert np.allclose(prior.covariance(1)[0], bad[1:].mean(0), atol=1e-5)
    assert prior.fit(bad[:2], labels[keep][:2]) == []


def test_other_priors_ignore_the_bundle():
    prior = GaussianPrior(4)
    a = prior.sample_numpy(5, np.random.default_rng(0), 1)
    b = prior.sample_numpy(5, np.random.default_rng(0))
    assert np.array_equal(a, b)
    assert not prior.per_bundle
    assert AAEConfig(prior="fitted").prior == "fitted"
    with pytest.raises(ValueError, match="prior"):
        AAEConfig(prior="learnt")


def test_defaults_are_the_fitted_prior_and_the_soft_length_target(tiny_splits):
    """A length model fits a mixture prior, softens the AR target (0.1),
    weighs it 0.1 and adds a decoder-only stage of 0.6x its epochs unless
    told otherwise; the values are stored resolved, and a file from before
    these defaults (the fields not stored) keeps the Gaussian prior, the
    sign target and no stage, as it was trained."""
    train, _ = tiny_splits
    config = TractAAE.from_dataset(train, **{**TINY, "epochs": 5}).config
    assert (config.prior, config.ar_soft, config.ar_level) == (
        "fitted_mixture",
        0.1,
        "streamline",
    )
    assert (config.ar_weight, config.adv_weight) == (0.1, 0.001)
    assert (config.polish_epochs, config.polish_noise) == (None, 0.05)
    assert config.resolved_polish_epochs() == 3
    assert config.polish_turn_weight == 0.0006
    assert config.polish_warmup_epochs == 0
    told = TractAAE.from_dataset(train, ar_weight=0.7, polish_epochs=0, **TINY)
    assert (told.config.ar_weight, told.config.polish_epochs) == (0.7, 0)
    assert AAEConfig().resolved_polish_epochs() == 60
    assert AAEConfig(epochs=1).resolved_polish_epochs() == 1  # 0.6, rounded
    # for age (subjects ordered): the settings its models were measured with
    age = AAEConfig(ar_level="subject").resolved()
    assert (age.prior, age.adv_weight, age.ar_weight, age.ar_soft) == (
        "fitted",
        0.005,
        0.5,
        0.0,
    )
    assert AAEConfig(ar_level="subject").resolved_polish_epochs() == 0
    assert AAEConfig(ar_level="subject", ar_weight=0.2).resolved_ar_weight() == 0.2
    length = AAEConfig().resolved()
    assert (length.prior, length.adv_weight, length.ar_weight) == (
        "fitted_mixture",
        0.001,
        0.1,
    )
    assert AAEConfig(prior="gaussian", adv_weight=0.0).resolved().prior == "gaussian"
    assert AAEConfig(adv_weight=0.0).resolved().adv_weight == 0.0
    assert AAEConfig().network_config()["prior"] == "fitted_mixture"
    assert TractAAE.from_dataset(train, ar_soft=0, **TINY).config.ar_soft == 0
    assert TractAAE.from_dataset(train, prior="gaussian", **TINY).config.prior == (
        "gaussian"
    )
    # the dataset's n_points bounds n_control, not the config's
    config = AAEConfig(n_points=16, n_control=8)
    sizes = {k: v for k, v in TINY.items() if k not in ("n_points", "n_control")}
    wide = TractAAE.from_dataset(train, config=config, **sizes, n_control=24)
    assert (wide.config.n_points, wide.config.n_control) == (32, 24)
    assert wide.config.ar_soft == 0.1
    # before from_dataset resolves it: by what the AR loss orders
    assert AAEConfig().resolved_ar_soft() == 0.1
    assert AAEConfig(ar_level="subject").resolved_ar_soft() == 0
    assert AAEConfig(ar_level="subject", ar_soft=0.3).resolved_ar_soft() == 0.3
    old = AAEConfig.from_stored({"ar_level": "streamline", "ar_weight": 0.5})
    assert (old.prior, old.ar_soft) == ("gaussian", 0.0)
    assert (old.ar_weight, old.resolved_polish_epochs(), old.polish_noise) == (
        0.5,
        0,
        0.0,
    )
    assert old.polish_warmup_epochs == 0


def test_training_resolves_the_decoder_stage_from_the_epochs_it_runs(tiny_trained):
    """Left to its default, the decoder-only stage runs 0.6x the epochs that
    training ran (3 here, so 2), and the model stores that number."""
    model, _ = tiny_trained
    assert model.config.polish_epochs == 2
    assert model.metadata.config["polish_epochs"] == 2
    assert model.metadata.training["polish"]["epochs"] == 2


@pytest.fixture(scope="module")
def fitted_model(tiny_splits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fitted")
    return train_and_save(tiny_splits, folder, "fitted", prior="fitted")


def test_training_refits_the_prior_to_the_final_encodings(fitted_model, tiny_splits):
    model, path = fitted_model
    train, _ = tiny_splits
    z = model.encode_prepared(train.x)
    labels = np.asarray(train.labels)
    for b in range(len(model.bundle_names)):
        mean, cov = model.network.prior.covariance(b)
        assert np.allclose(mean, z[labels == b].mean(0), atol=1e-4)
        assert np.allclose(cov, np.cov(z[labels == b], rowvar=False), atol=1e-3)
    loaded = TractAAE.load(path)
    for got, want in zip(
        loaded.network.prior.moments_numpy(),
        model.network.prior.moments_numpy(),
        strict=True,
    ):
        assert np.array_equal(got, want)
    assert set(model.metadata.training["prior_match"]) == set(model.bundle_names)


def test_prior_sampling_draws_the_rest_given_dimension_0(fitted_model):
    model, _ = fitted_model
    rng = np.random.default_rng(3)
    d = model.latent_dims
    n = 20000
    # dimension 1 follows dimension 0 (slope 3), dimension 2 is independent
    z = rng.standard_normal((n, d)) * 0.1
    z[:, 0] = rng.normal(1.0, 1.0, n)
    z[:, 1] = 2.0 + 3.0 * (z[:, 0] - 1.0) + rng.normal(0, 0.1, n)
    z[:, 2] = rng.normal(-1.0, 2.0, n)
    labels = np.full(n, model.bundle_index("CST_R"))
    saved = model.network.prior.moments_numpy()
    try:
        model.network.prior.fit(z, labels)
        targets = np.full(4000, 120.0)
        # the prior's own draws: this prior is not fitted to the bank's
        # codes, so no move from their subjects (subject_noise=None)
        codes = sample_latent(
            model,
            "CST_R",
            targets,
            sampling="prior",
            subject_noise=None,
            exact_length=False,
            rng=0,
        )
        z0 = model.attribute_to_z0("CST_R", targets)
        assert np.allclose(codes[:, 0], z0)
        expected = 2.0 + 3.0 * (z0[0] - 1.0)
        assert abs(codes[:, 1].mean() - expected) < 0.02
        assert abs(codes[:, 1].std() - 0.1) < 0.02
        assert abs(codes[:, 2].mean() + 1.0) < 0.15
        assert abs(codes[:, 2].std() - 2.0) < 0.15
    finally:
        model.network.prior.means.assign(saved[0].astype("float32"))
        model.network.prior.chols.assign(saved[1].astype("float32"))


def test_prior_sampling_of_a_fitted_prior_draws_the_bundles_own(fitted_model):
    model, _ = fitted_model
    prior = model.network.prior
    for name in ("AF_L", "CST_R"):
        bundle = generate(model, name, n_streamlines=200, sampling="prior", seed=0)
        assert len(bundle) == 200
        assert np.all(np.isfinite(bundle.streamlines))
        # the other dimensions come from the requested bundle's Gaussian
        gaps = [
            np.linalg.norm(bundle.z[:, 1:].mean(0) - prior.factor(b)[0][1:])
            for b in range(len(model.bundle_names))
        ]
        assert int(np.argmin(gaps)) == model.bundle_index(name), gaps


def test_resuming_a_finished_run_leaves_the_final_prior(tiny_splits, tmp_path):
    """A resume that finds every epoch done still refits the prior to the
    final encoder (as the uninterrupted run did after its last epoch)."""
    train, validation = tiny_splits
    options = {"epochs": 2, "prior": "fitted", **TINY}
    first = TractAAE.from_dataset(train, **options)
    first.fit(train, validation, verbose=0, checkpoint_dir=tmp_path)
    again = TractAAE.from_dataset(train, **options)
    again.fit(train, validation, verbose=0, checkpoint_dir=tmp_path, resume=True)
    z = again.encode_prepared(train.x)
    labels = np.asarray(train.labels)
    for b in range(len(again.bundle_names)):
        mean, _ = again.network.prior.covariance(b)
        assert np.allclose(mean, z[labels == b].mean(0), atol=1e-4)
    for got, want in zip(
        again.network.prior.moments_numpy(),
        first.network.prior.moments_numpy(),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_discriminator_and_kernel_penalty_draw_each_codes_bundle():
    net = ConditionalAAE(
        **{**TINY, "latent_dims": 3, "n_bundles": 2}, prior="fitted", mmd_weight=0.1
    )
    seen = []
    sample = net.prior.sample

    def spy(n, seed, onehot=None):
        seen.append(None if onehot is None else keras.ops.convert_to_numpy(onehot))
        return sample(n, seed, onehot)

    net.prior.sample = spy
    labels = np.repeat(np.eye(2, dtype="float32"), 4, axis=0)
    onehot = keras.ops.convert_to_tensor(labels)
    x = np.random.default_rng(0).normal(size=(8, TINY["n_points"], 3))
    x = keras.ops.convert_to_tensor(x.astype("float32"))
    net.discriminator_loss(keras.ops.zeros((8, 3)), onehot)
    net.autoencoder_losses(x, onehot, keras.ops.arange(8.0))
    assert len(seen) == 2
    for got in seen:
        assert got is not None and np.array_equal(got, labels)
