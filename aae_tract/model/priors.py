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

    #: Whether each bundle has a prior of its own (:class:`FittedPrior`).
    per_bundle = False

    def sample(self, n, seed, onehot=None):
        """Draw ``n`` samples (a Keras tensor) with a SeedGenerator ``seed``.

        ``onehot``, the ``(n, n_bundles)`` condition of each sample, matters
        only to a prior with one distribution per bundle.
        """
        return keras.random.normal((n, self.latent_dims), seed=seed)

    def sample_numpy(self, n, rng, bundle=None):
        """Draw ``n`` samples as a NumPy array from ``rng`` (a Generator).

        ``bundle`` (an index, or one index per sample) matters only to a
        prior with one distribution per bundle.
        """
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

    def sample(self, n, seed, onehot=None):
        idx = keras.random.randint((n,), 0, self.n_components, seed=seed)
        centres = ops.take(ops.convert_to_tensor(self.means), idx, axis=0)
        noise = keras.random.normal((n, self.latent_dims), seed=seed)
        return centres + noise * ops.convert_to_tensor(self.stds)

    def sample_numpy(self, n, rng, bundle=None):
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


class FittedPrior(GaussianPrior):
    """One Gaussian per bundle, refitted to the bundle's encodings.

    ``p(z | b) = N(mu_b, L_b L_b^T)``. The means and the Cholesky factors are
    non-trainable variables of the network (saved with its weights), set by
    :meth:`fit` from the encodings of a sample of each bundle's training
    streamlines at the start of every epoch (see
    :class:`~aae_tract.model.training.PriorRefit`). The discriminator then
    tells a bundle's codes from Gaussian samples of the same mean and
    covariance, which pushes the codes toward a Gaussian shape, while the
    prior follows the directions in which the codes actually vary: a
    bundle's streamlines vary along a few latent directions, and a prior
    that fills all ``latent_dims`` dimensions in every bundle can be neither
    matched by the encoder nor sampled on the bundle (see "The adversarial
    prior" in doc/benchmarks.md). Until the first fit every bundle's prior
    is N(0, I).

    Parameters
    ----------
    latent_dims : int
        Dimension of z.
    n_bundles : int
        Number of bundles.
    means, chols : keras.Variable
        Variables of shape ``(n_bundles, latent_dims)`` and ``(n_bundles,
        latent_dims, latent_dims)`` that hold the fitted moments.
    """

    per_bundle = True
    #: Added to a covariance's diagonal, relative to its mean variance, so
    #: that its Cholesky factor exists when the codes do not use a direction.
    RIDGE = 1e-4

    def __init__(self, latent_dims, n_bundles, means, chols):
        super().__init__(latent_dims)
        self.n_bundles = int(n_bundles)
        self.means = means
        self.chols = chols

    def sample(self, n, seed, onehot=None):
        noise = keras.random.normal((n, self.latent_dims), seed=seed)
        if onehot is None:
            idx = keras.random.randint((n,), 0, self.n_bundles, seed=seed)
            onehot = ops.one_hot(idx, self.n_bundles)
        onehot = ops.cast(onehot, "float32")
        means = ops.matmul(onehot, self.means)
        # every bundle's factor times the noise, then the sample's bundle:
        # (n, bundles, d), not one (d, d) factor per sample
        spread = ops.einsum("bij,nj->nbi", self.chols, noise)
        return means + ops.einsum("nb,nbi->ni", onehot, spread)

    def sample_numpy(self, n, rng, bundle=None):
        if bundle is None:
            bundle = rng.integers(0, self.n_bundles, n)
        bundle = np.broadcast_to(np.asarray(bundle, dtype=int), (n,))
        means, chols = self.moments_numpy()
        noise = rng.standard_normal((n, self.latent_dims))
        out = means[bundle]
        for b in np.unique(bundle):
            rows = bundle == b
            out[rows] += noise[rows] @ chols[b].T
        return out.astype("float32")

    def moments_numpy(self):
        """``(means, chols)`` as float64 arrays."""
        return (
            np.asarray(ops.convert_to_numpy(self.means), dtype=np.float64),
            np.asarray(ops.convert_to_numpy(self.chols), dtype=np.float64),
        )

    def covariance(self, bundle):
        """``(mean, covariance)`` of bundle index ``bundle``'s prior."""
        mean, chol = self.factor(bundle)
        return mean, chol @ chol.T

    def factor(self, bundle):
        """``(mean, L)`` of bundle index ``bundle``'s prior: its covariance
        is ``L L^T``, ``L`` lower triangular."""
        means, chols = self.moments_numpy()
        return means[bundle], chols[bundle]

    def fit(self, z, labels):
        """Set each bundle's mean and covariance to those of its codes.

        Parameters
        ----------
        z : ndarray, shape (N, latent_dims)
            Encodings; rows that are not finite are left out.
        labels : ndarray of int, shape (N,)
            Bundle index of each encoding. A bundle with fewer than two
            finite codes keeps its prior.

        Returns
        -------
        list of int
            The bundles refitted.
        """
        z = np.asarray(z, dtype=np.float64)
        labels = np.asarray(labels).reshape(-1)
        finite = np.isfinite(z).all(axis=1) if z.ndim == 2 else np.zeros(0, bool)
        means, chols = self.moments_numpy()
        fitted = []
        for b in range(self.n_bundles):
            codes = z[(labels == b) & finite]
            if len(codes) < 2:
                continue
            cov = np.atleast_2d(np.cov(codes, rowvar=False))
            ridge = self.RIDGE * max(float(np.trace(cov)) / len(cov), 1e-8)
            try:
                chol = np.linalg.cholesky(cov + ridge * np.eye(len(cov)))
            except np.linalg.LinAlgError:
                continue
            means[b], chols[b] = codes.mean(axis=0), chol
            fitted.append(b)
        self.means.assign(means.astype("float32"))
        self.chols.assign(chols.astype("float32"))
        return fitted

    def get_config(self):
        return {"latent_dims": self.latent_dims, "n_bundles": self.n_bundles}


def make_prior(kind, latent_dims, *, n_components=8, seed=0, n_bundles=1, owner=None):
    """Build the prior named ``kind`` (``"gaussian"``, ``"mixture"`` or
    ``"fitted"``; the variables of a fitted prior are made on the layer
    ``owner``, the network)."""
    if kind == "gaussian":
        return GaussianPrior(latent_dims)
    if kind == "mixture":
        return GaussianMixturePrior(latent_dims, n_components=n_components, seed=seed)
    if kind == "fitted":
        d = int(latent_dims)
        eye = np.broadcast_to(np.eye(d, dtype="float32"), (int(n_bundles), d, d))
        means = keras.Variable(
            np.zeros((int(n_bundles), d), "float32"),
            trainable=False,
            name="prior_means",
        )
        chols = keras.Variable(np.array(eye), trainable=False, name="prior_chols")
        if owner is not None:
            owner.prior_means, owner.prior_chols = means, chols
        return FittedPrior(d, n_bundles, means, chols)
    raise ValueError(f"unknown prior {kind!r}")
