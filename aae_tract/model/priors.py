"""Priors p(z) that the adversarial part of the model matches."""

import contextlib

import keras
import numpy as np
from keras import ops

#: Priors refitted to each bundle's encodings during training.
FITTED_PRIORS = ("fitted", "fitted_mixture")


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

    def sample_numpy(self, n, rng, bundle=None, spread=1.0):
        """Draw ``n`` samples as a NumPy array from ``rng`` (a Generator).

        ``bundle`` (an index, or one index per sample) matters only to a
        prior with one distribution per bundle. ``spread`` scales every
        component's spread about its mean (1: the prior itself).
        """
        noise = rng.standard_normal((n, self.latent_dims)) * float(spread)
        return noise.astype("float32")

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

    def sample_numpy(self, n, rng, bundle=None, spread=1.0):
        idx = rng.integers(0, self.n_components, n)
        noise = rng.standard_normal((n, self.latent_dims)).astype("float32")
        return self.means[idx] + noise * (self.stds * np.float32(spread))

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
        self._fits = 0

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

    def sample_numpy(self, n, rng, bundle=None, spread=1.0):
        if bundle is None:
            bundle = rng.integers(0, self.n_bundles, n)
        bundle = np.broadcast_to(np.asarray(bundle, dtype=int), (n,))
        means, chols = self.moments_numpy()
        chols = chols * float(spread)
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
        z, labels, finite = _finite_codes(z, labels)
        fits = {}
        for b in range(self.n_bundles):
            fit = self.fit_codes(z[(labels == b) & finite], b)
            if fit is not None:
                fits[b] = fit
        self._set(fits)
        self._fits += 1
        return list(fits)

    def fit_codes(self, codes, bundle, fit_index=None):
        """The distribution this prior fits to one bundle's codes, not set.

        Parameters
        ----------
        codes : ndarray, shape (N, latent_dims)
            Finite encodings of one bundle.
        bundle : int
            Its index (seeds a mixture's initialisation).
        fit_index : int, optional
            Which fit this is (seeds it too); default: the next refit's.

        Returns
        -------
        tuple or None
            ``(means, chols, weights)`` of shape ``(k, d)``, ``(k, d, d)``
            and ``(k,)``, the components of a mixture (one for a single
            Gaussian), or None when the codes are too few (fewer than two)
            or the fit fails.
        """
        codes = np.asarray(codes, dtype=np.float64)
        if len(codes) < 2:
            return None
        chol = _cholesky(np.atleast_2d(np.cov(codes, rowvar=False)), self.RIDGE)
        if chol is None:
            return None
        return codes.mean(axis=0)[None], chol[None], np.ones(1)

    def _set(self, fits):
        """Make each ``fits[bundle] = (means, chols, weights)`` that
        bundle's prior (one assignment of each variable)."""
        all_means, all_chols = self.moments_numpy()
        for bundle, (means, chols, _) in fits.items():
            all_means[bundle], all_chols[bundle] = means[0], chols[0]
        self.means.assign(all_means.astype("float32"))
        self.chols.assign(all_chols.astype("float32"))

    def widen(self, bundle, spread):
        """Scale bundle ``bundle``'s spread about its mean(s) by ``spread``
        (each component's covariance by ``spread ** 2``)."""
        means, chols, weights = self.components(bundle)
        self._set({bundle: (means, chols * float(spread), weights)})

    def components(self, bundle):
        """``(means, chols, weights)`` of bundle ``bundle``'s prior, its
        components with weight above 0 (float64)."""
        means, chols = self.moments_numpy()
        return means[bundle][None], chols[bundle][None], np.ones(1)

    def choose_spread(self, z, labels, subjects, grid=None):
        """Each bundle's widening, chosen by leave-one-subject-out likelihood.

        A prior fitted to the codes of a few training subjects may be
        tighter than the codes of a new subject. For each bundle and each
        factor of ``grid``, every training subject is left out in turn, the
        prior is fitted as :meth:`fit` fits it to the other subjects' codes,
        and the left-out subject's codes are scored by their log-likelihood
        under it with every component's spread times the factor
        (:func:`mixture_log_density`, as :meth:`widen` would widen it); the
        factor of the largest total is chosen. No held-out data is used and
        the prior itself is not changed. Training does not call it: on the
        phantom the factors it chooses (1.2-2) make the prior easier to tell
        from new subjects' codes in five bundles of six (doc/benchmarks.md,
        "Reshaping the fitted mixture for new subjects");
        ``benchmarks/prior_variants.py --refit 32:32xauto`` measures it.

        Parameters
        ----------
        z : ndarray, shape (N, latent_dims)
            Training encodings (rows that are not finite are left out).
        labels : ndarray of int, shape (N,)
            Bundle index of each.
        subjects : array_like, shape (N,)
            Subject of each.
        grid : sequence of float, optional
            Factors to choose from (default :data:`SPREAD_GRID`).

        Returns
        -------
        ndarray of float, shape (n_bundles,)
            The factor of each bundle; 1 for a bundle with codes of fewer
            than two subjects, or where any of its left-out fits fails.
        """
        grid = np.asarray(SPREAD_GRID if grid is None else grid, dtype=np.float64)
        z, labels, finite = _finite_codes(z, labels)
        subjects = np.asarray(subjects).astype(str).reshape(-1)
        if len(subjects) != len(labels):
            raise ValueError(
                f"{len(subjects)} subjects for {len(labels)} codes in choose_spread"
            )
        spreads = np.ones(self.n_bundles)
        for b in range(self.n_bundles):
            rows = (labels == b) & finite
            codes, groups = z[rows], subjects[rows]
            if len(np.unique(groups)) < 2:
                continue
            total = np.zeros(len(grid))
            for i, left in enumerate(np.unique(groups)):
                fit = self.fit_codes(
                    codes[groups != left], b, fit_index=LEFT_OUT_FITS + i
                )
                if fit is None:
                    break
                out = codes[groups == left]
                total += [mixture_log_density(out, *fit, spread=s).sum() for s in grid]
            else:
                spreads[b] = grid[int(np.argmax(total))]
        return spreads

    def conditional_numpy(self, bundle, z0, rng, spread=1.0):
        """Samples of bundle ``bundle``'s prior with dimension 0 set to ``z0``.

        The other dimensions are drawn from their Gaussian conditional given
        dimension 0, so they go with the attribute value as the bundle's
        codes do.

        Parameters
        ----------
        bundle : int
            Bundle index.
        z0 : array_like, shape (N,)
            Value of latent dimension 0 of each sample.
        rng : numpy.random.Generator
            Source of the draws.
        spread : float
            Factor on every component's spread about its mean before
            conditioning (as :meth:`widen` scales it; the prior itself is
            not changed): the conditional mean stays, the spread of the
            other dimensions about it scales by ``spread``, and a mixture's
            components are told apart along dimension 0 by their scaled
            spread. 1: the prior as fitted.

        Returns
        -------
        ndarray of float32, shape (N, latent_dims)
        """
        mean, chol = self.factor(bundle)
        return _conditional(
            mean, chol * float(spread), np.asarray(z0, dtype=np.float64), rng
        )

    def get_config(self):
        return {"latent_dims": self.latent_dims, "n_bundles": self.n_bundles}


def _conditional(mean, chol, z0, rng):
    """Draws of N(mean, L L^T) given dimension 0 equal to ``z0``."""
    # z = mean + L e with L lower triangular: z0 fixes e0 = (z0 - mean0) /
    # L00, and the other dimensions are mean + L[1:, 0] e0 + L[1:, 1:] e',
    # exactly the Gaussian conditional of dimensions 1.. given dimension 0
    e0 = (z0 - mean[0]) / chol[0, 0]
    noise = rng.standard_normal((len(z0), len(mean) - 1))
    rest = mean[1:] + np.outer(e0, chol[1:, 0]) + noise @ chol[1:, 1:].T
    return np.concatenate([z0[:, None], rest], axis=1).astype(np.float32)


def _cholesky(cov, ridge_scale):
    """Cholesky factor of ``cov`` plus a ridge relative to its mean variance
    (None when it does not exist)."""
    ridge = ridge_scale * max(float(np.trace(cov)) / len(cov), 1e-8)
    try:
        return np.linalg.cholesky(cov + ridge * np.eye(len(cov)))
    except np.linalg.LinAlgError:
        return None


#: Factors :meth:`FittedPrior.choose_spread` chooses from to widen a fitted
#: prior for new subjects (1: as fitted).
SPREAD_GRID = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0)
#: Fit indices of the left-out fits of :meth:`FittedPrior.choose_spread`
#: (seeds apart from those of the refits during training).
LEFT_OUT_FITS = 1_000_000


def _finite_codes(z, labels):
    """``(z, labels, finite)``: float64 codes, flat labels and which rows
    are finite."""
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    finite = np.isfinite(z).all(axis=1) if z.ndim == 2 else np.zeros(0, bool)
    return z, labels, finite


def mixture_log_density(x, means, chols, weights, spread=1.0):
    """Log density of a Gaussian mixture at each row of ``x``.

    Parameters
    ----------
    x : ndarray, shape (N, d)
    means, chols, weights : ndarray
        Shapes ``(k, d)``, ``(k, d, d)`` (lower-triangular factors of the
        covariances) and ``(k,)`` (summing to 1).
    spread : float
        Factor on every component's spread about its mean.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    from scipy.linalg import solve_triangular
    from scipy.special import logsumexp

    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    spread = float(spread)
    per = []
    for mean, chol, weight in zip(means, chols, weights):
        if weight <= 0:
            continue
        y = solve_triangular(chol * spread, (x - mean).T, lower=True)
        logdet = 2.0 * np.sum(np.log(np.abs(np.diag(chol) * spread)))
        per.append(
            np.log(weight)
            - 0.5 * (np.sum(y * y, axis=0) + logdet + d * np.log(2 * np.pi))
        )
    if not per:
        raise ValueError("mixture_log_density: no component has a weight above 0")
    return logsumexp(np.stack(per), axis=0)


def _blas_threads(limit):
    """A context that holds the BLAS libraries to ``limit`` threads (None:
    leaves them as they are)."""
    if limit is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(limit), user_api="blas")


class FittedMixturePrior(FittedPrior):
    """A Gaussian mixture per bundle, refitted to the bundle's encodings.

    ``p(z | b) = sum_k w_bk N(mu_bk, L_bk L_bk^T)``, fitted by expectation
    maximisation (scikit-learn's ``GaussianMixture``, full covariances) to
    the encodings of a sample of each bundle's training streamlines at the
    start of every epoch, as :class:`FittedPrior` is. One Gaussian per
    bundle leaves the codes' shape unmatched: a classifier tells a bundle's
    training codes from samples of their own Gaussian about 8 times in 10
    (doc/benchmarks.md, "A mixture fitted to each bundle"), so the
    discriminator keeps pushing the encoder toward a Gaussian shape the
    decoder does not want. A few components follow the codes' shape, so
    the adversary asks less of the encoder and prior samples fall where
    codes of the bundle lie.

    A bundle uses at most ``n_components`` components and at most one per
    ``codes_per_component`` codes of its sample (at least one), so that each
    component's covariance rests on enough codes; unused components have
    weight 0.

    Parameters
    ----------
    latent_dims, n_bundles : int
        Dimension of z and number of bundles, as for :class:`FittedPrior`.
    n_components : int
        Most components per bundle.
    means, chols, log_weights : keras.Variable
        Variables of shape ``(n_bundles, n_components, latent_dims)``,
        ``(n_bundles, n_components, latent_dims, latent_dims)`` and
        ``(n_bundles, n_components)``.
    seed : int
        Seed of the expectation-maximisation initialisation.
    codes_per_component : int or None
        Fewest codes of a bundle's sample per component; None:
        :data:`CODES_PER_DIM` times ``latent_dims``. Fewer codes than
        ``latent_dims`` give a component whose covariance (with the ridge
        :data:`RIDGE` of the codes' mean variance) spreads along the few
        directions its codes span: a finer mixture that follows the codes
        closely.
    """

    #: Log weight of an unused component (finite, so every backend samples).
    UNUSED = -1e9
    #: Codes per latent dimension each component needs.
    CODES_PER_DIM = 1
    #: Expectation-maximisation iterations of each refit.
    MAX_ITER = 100
    #: BLAS threads of each refit (None: leaves the BLAS pool as it is, by
    #: default one thread per core). The products of expectation
    #: maximisation are small (codes x ``latent_dims``); on 2 cores with
    #: OpenBLAS a refit to 2,000 codes a bundle took several times as long
    #: with its two threads as with one (doc/benchmarks.md, "BLAS threads in
    #: the prior's refit"; ``benchmarks/bench_blas_threads.py``). Only BLAS
    #: is held: the k-means start of each fit keeps its OpenMP threads.
    FIT_THREADS = 1

    def __init__(
        self,
        latent_dims,
        n_bundles,
        n_components,
        means,
        chols,
        log_weights,
        seed=0,
        codes_per_component=None,
    ):
        super().__init__(latent_dims, n_bundles, means, chols)
        self.n_components = int(n_components)
        self.log_weights = log_weights
        self.seed = int(seed)
        self.codes_per_component = (
            self.CODES_PER_DIM * self.latent_dims
            if codes_per_component is None
            else int(codes_per_component)
        )
        self._fits = 0

    def sample(self, n, seed, onehot=None):
        d, k = self.latent_dims, self.n_components
        if onehot is None:
            idx = keras.random.randint((n,), 0, self.n_bundles, seed=seed)
            onehot = ops.one_hot(idx, self.n_bundles)
        onehot = ops.cast(onehot, "float32")
        logits = ops.matmul(onehot, self.log_weights)
        comp = ops.reshape(keras.random.categorical(logits, 1, seed=seed), (-1,))
        bundle = ops.cast(ops.argmax(onehot, axis=-1), "int32")
        flat = bundle * k + ops.cast(comp, "int32")
        means = ops.take(ops.reshape(self.means, (-1, d)), flat, axis=0)
        chols = ops.take(ops.reshape(self.chols, (-1, d, d)), flat, axis=0)
        noise = keras.random.normal((n, d), seed=seed)
        return means + ops.einsum("nij,nj->ni", chols, noise)

    def sample_numpy(self, n, rng, bundle=None, spread=1.0):
        if bundle is None:
            bundle = rng.integers(0, self.n_bundles, n)
        bundle = np.broadcast_to(np.asarray(bundle, dtype=int), (n,))
        means, chols, weights = self.mixture_numpy()
        chols = chols * float(spread)
        noise = rng.standard_normal((n, self.latent_dims))
        out = np.zeros((n, self.latent_dims))
        for b in np.unique(bundle):
            rows = np.flatnonzero(bundle == b)
            comp = rng.choice(self.n_components, len(rows), p=weights[b])
            out[rows] = means[b, comp] + np.einsum(
                "nij,nj->ni", chols[b, comp], noise[rows]
            )
        return out.astype("float32")

    def mixture_numpy(self):
        """``(means, chols, weights)`` as float64 arrays; each bundle's
        weights sum to 1."""
        means, chols = self.moments_numpy()
        logw = np.asarray(ops.convert_to_numpy(self.log_weights), dtype=np.float64)
        weights = np.exp(logw - logw.max(axis=1, keepdims=True))
        return means, chols, weights / weights.sum(axis=1, keepdims=True)

    def covariance(self, bundle):
        """``(mean, covariance)`` of bundle index ``bundle``'s mixture as a
        whole (the moments of the mixture, not of a component)."""
        means, chols, weights = self.mixture_numpy()
        w, m = weights[bundle], means[bundle]
        mean = w @ m
        centred = m - mean
        factors = chols[bundle]
        cov = np.einsum("k,kij->ij", w, factors @ factors.transpose(0, 2, 1))
        return mean, cov + (w[:, None] * centred).T @ centred

    def factor(self, bundle):
        mean, cov = self.covariance(bundle)
        return mean, np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)))

    def conditional_numpy(self, bundle, z0, rng, spread=1.0):
        """Samples of bundle ``bundle``'s mixture with dimension 0 set to ``z0``.

        Each sample's component is drawn with its probability given ``z0``
        (its weight times its density at ``z0`` along dimension 0), then the
        other dimensions from that component's Gaussian conditional; with
        ``spread``, of the mixture whose every component's spread about its
        mean is times ``spread`` (see :meth:`FittedPrior.conditional_numpy`).
        """
        z0 = np.asarray(z0, dtype=np.float64)
        means, chols, weights = self.mixture_numpy()
        chols = chols * float(spread)
        m0, s0 = means[bundle][:, 0], np.abs(chols[bundle][:, 0, 0])
        with np.errstate(divide="ignore"):
            logp = np.log(weights[bundle]) - np.log(s0)
        logp = logp - 0.5 * ((z0[:, None] - m0) / s0) ** 2
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        comp = (rng.random(len(z0))[:, None] > cdf).sum(axis=1)
        comp = np.minimum(comp, self.n_components - 1)
        out = np.zeros((len(z0), self.latent_dims), dtype=np.float32)
        for k in np.unique(comp):
            rows = comp == k
            out[rows] = _conditional(means[bundle, k], chols[bundle, k], z0[rows], rng)
        return out

    def fit_codes(self, codes, bundle, fit_index=None):
        """The mixture fitted to one bundle's codes, not set (see
        :meth:`FittedPrior.fit_codes`): at most ``n_components`` components
        and one per ``codes_per_component`` codes."""
        from sklearn.mixture import GaussianMixture

        codes = np.asarray(codes, dtype=np.float64)
        if len(codes) < 2:
            return None
        k = max(1, min(self.n_components, len(codes) // self.codes_per_component))
        var = float(np.mean(np.var(codes, axis=0)))
        index = self._fits if fit_index is None else int(fit_index)
        seed = np.random.SeedSequence([self.seed, index, int(bundle)])
        gmm = GaussianMixture(
            k,
            covariance_type="full",
            reg_covar=self.RIDGE * max(var, 1e-8),
            max_iter=self.MAX_ITER,
            random_state=int(seed.generate_state(1)[0]),
        )
        try:
            with _blas_threads(self.FIT_THREADS):
                gmm.fit(codes)
        except (ValueError, np.linalg.LinAlgError):
            return None
        factors = [_cholesky(c, 0.0) for c in gmm.covariances_]
        if any(f is None for f in factors):
            return None
        return gmm.means_, np.stack(factors), gmm.weights_

    def fit(self, z, labels):
        """Fit each bundle's mixture to its codes (see :class:`FittedPrior`).

        Returns
        -------
        list of int
            The bundles refitted (a bundle with fewer than two finite codes,
            or whose fit fails, keeps its prior).
        """
        return super().fit(z, labels)

    def _set(self, fits):
        all_means, all_chols, all_weights = self.mixture_numpy()
        for bundle, (means, chols, weights) in fits.items():
            k = len(weights)
            all_means[bundle] = 0.0
            all_means[bundle, :k] = means
            all_chols[bundle] = np.eye(self.latent_dims)
            all_chols[bundle, :k] = chols
            all_weights[bundle] = 0.0
            all_weights[bundle, :k] = weights
        logw = np.where(
            all_weights > 0, np.log(np.maximum(all_weights, 1e-300)), self.UNUSED
        )
        self.means.assign(all_means.astype("float32"))
        self.chols.assign(all_chols.astype("float32"))
        self.log_weights.assign(logw.astype("float32"))

    def components(self, bundle):
        means, chols, weights = self.mixture_numpy()
        used = weights[bundle] > 0
        return means[bundle, used], chols[bundle, used], weights[bundle, used]

    def get_config(self):
        return {
            "latent_dims": self.latent_dims,
            "n_bundles": self.n_bundles,
            "n_components": self.n_components,
            "seed": self.seed,
            "codes_per_component": self.codes_per_component,
        }


def make_prior(
    kind,
    latent_dims,
    *,
    n_components=8,
    seed=0,
    n_bundles=1,
    owner=None,
    codes_per_component=None,
):
    """Build the prior named ``kind`` (``"gaussian"``, ``"mixture"``,
    ``"fitted"`` or ``"fitted_mixture"``; the variables of a fitted prior are
    made on the layer ``owner``, the network; ``n_components`` is the number
    of components of a mixture, of each bundle's for ``"fitted_mixture"``,
    and ``codes_per_component`` the fewest codes per component of the
    latter: :class:`FittedMixturePrior`)."""
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
    if kind == "fitted_mixture":
        d, b, k = int(latent_dims), int(n_bundles), int(n_components)
        eye = np.broadcast_to(np.eye(d, dtype="float32"), (b, k, d, d))
        # until the first fit: N(0, I) in every bundle (one component used)
        logw = np.full((b, k), FittedMixturePrior.UNUSED, "float32")
        logw[:, 0] = 0.0
        means = keras.Variable(
            np.zeros((b, k, d), "float32"), trainable=False, name="prior_means"
        )
        chols = keras.Variable(np.array(eye), trainable=False, name="prior_chols")
        log_weights = keras.Variable(logw, trainable=False, name="prior_log_weights")
        if owner is not None:
            owner.prior_means, owner.prior_chols = means, chols
            owner.prior_log_weights = log_weights
        return FittedMixturePrior(
            d,
            b,
            k,
            means,
            chols,
            log_weights,
            seed=seed,
            codes_per_component=codes_per_component,
        )
    raise ValueError(f"unknown prior {kind!r}")
