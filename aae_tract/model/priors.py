"""Priors p(z) that the adversarial part of the model matches."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="aae_tract")
class GaussianPrior:
    """Standard normal prior N(0, I).

    Parameters
    ----------
    latent_dims : int
        Dimension of z.
    """

    def __init__(self, latent_dims):
        self.latent_dims = int(latent_dims)

    def sample(self, n, seed):
        """Draw ``n`` samples (a Keras tensor) with a SeedGenerator ``seed``."""
        return keras.random.normal((n, self.latent_dims), seed=seed)

    def sample_numpy(self, n, rng):
        """Draw ``n`` samples as a NumPy array from ``rng`` (a Generator)."""
        return rng.standard_normal((n, self.latent_dims)).astype("float32")

    def get_config(self):
        return {"latent_dims": self.latent_dims}


@keras.saving.register_keras_serializable(package="aae_tract")
class GaussianMixturePrior(GaussianPrior):
    """Mixture of isotropic Gaussians with equal weights.

    Dimension 0 stays standard normal in every component (it carries the
    attribute); the component means are spread over the other dimensions on a
    sphere of radius ``radius``.

    Parameters
    ----------
    latent_dims : int
        Dimension of z.
    n_components : int
        Number of components.
    radius : float
        Distance of the component means from the origin.
    scale : float
        Standard deviation of each component (dimension 0 keeps 1).
    seed : int
        Seed of the (fixed) component means.
    """

    def __init__(self, latent_dims, n_components=8, radius=2.0, scale=0.5, seed=0):
        super().__init__(latent_dims)
        self.n_components = int(n_components)
        self.radius = float(radius)
        self.scale = float(scale)
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        means = rng.standard_normal((self.n_components, self.latent_dims))
        means[:, 0] = 0.0
        means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
        self.means = (self.radius * means).astype("float32")
        stds = np.full(self.latent_dims, self.scale, dtype="float32")
        stds[0] = 1.0
        self.stds = stds

    def sample(self, n, seed):
        idx = keras.random.randint((n,), 0, self.n_components, seed=seed)
        centres = ops.take(ops.convert_to_tensor(self.means), idx, axis=0)
        noise = keras.random.normal((n, self.latent_dims), seed=seed)
        return centres + noise * ops.convert_to_tensor(self.stds)

    def sample_numpy(self, n, rng):
        idx = rng.integers(0, self.n_components, n)
        noise = rng.standard_normal((n, self.latent_dims)).astype("float32")
        return self.means[idx] + noise * self.stds

    def get_config(self):
        return {
            "latent_dims": self.latent_dims,
            "n_components": self.n_components,
            "radius": self.radius,
            "scale": self.scale,
            "seed": self.seed,
        }


def make_prior(kind, latent_dims, *, n_components=8, seed=0):
    """Build the prior named ``kind`` (``"gaussian"`` or ``"mixture"``)."""
    if kind == "gaussian":
        return GaussianPrior(latent_dims)
    if kind == "mixture":
        return GaussianMixturePrior(latent_dims, n_components=n_components, seed=seed)
    raise ValueError(f"unknown prior {kind!r}")
