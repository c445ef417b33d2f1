"""TractAAE: the trained model with everything needed to use it.

:class:`TractAAE` joins the Keras network (:class:`ConditionalAAE`) and its
:class:`ModelMetadata` (normalisation, labels, orientation references,
attribute calibration, space of the training data). It is what the workflows
and a DIPY pipeline use: encode streamlines, decode codes, train, save, load.
"""

import json
import logging
import math
import numbers
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from aae_tract.atomic import write_atomic
from aae_tract.backend import current_backend, describe_device
from aae_tract.errors import (
    AAETractError,
    ConfigError,
    ModelFileError,
    TrainingError,
    UnknownBundleError,
)
from aae_tract.model import parallel
from aae_tract.model.aae import ConditionalAAE, posterior_draw
from aae_tract.model.config import AAEConfig, check_swap_weight, option_name
from aae_tract.model.metadata import METADATA_MEMBER, ModelMetadata, read_model_file
from aae_tract.model.networks import ArcLengthCurve
from aae_tract.model.priors import FITTED_PRIORS
from aae_tract.model.training import (
    EpochCheckpoint,
    NonFiniteGuard,
    PriorRefit,
    RegularizationWarmup,
    StreamlineBatches,
    load_optimizer_arrays,
    optimizer_state,
    read_checkpoint_state,
    restore_optimizer,
)
from aae_tract.rows import iter_blocks, per_bundle_rows, take

logger = logging.getLogger(__name__)

LATENT_BANK_SIZE = 512
#: The cosine decay of the learning rates ends at this fraction of them.
LR_FLOOR = 0.05
#: Training settings (besides the network's) a resumed run must keep.
RESUME_FIELDS = (
    "batch_size",
    "learning_rate",
    "disc_learning_rate",
    "lr_decay",
    "warmup_epochs",
)
CALIBRATION_KNOTS = 64
#: For an attribute that is one value per subject (age), the calibration is a
#: local linear regression of the subjects' mean ``z0`` on their value whose
#: Gaussian kernel is as wide as the distance to this share of the subjects
#: (see :func:`_subject_calibration`).
SUBJECT_KERNEL_SHARE = 0.5
#: For such an attribute the calibration also keeps, per subject, this many
#: quantiles of its streamlines' ``z0`` around the subject's mean (the
#: bank's ``subject_spread``; see :func:`aae_tract.generate.sample_latent`).
SPREAD_QUANTILES = 20
#: Streamlines of a bundle encoded to calibrate the attribute, at most.
CALIBRATION_PER_BUNDLE = 50_000
#: Streamlines of a bundle encoded to measure the match to the prior, at most.
PRIOR_MATCH_PER_BUNDLE = 10_000
#: Training streamlines per bundle that a fitted prior is refitted to each
#: epoch (a seeded sample: enough for the covariance of a few dozen
#: dimensions, a fraction of a second to encode).
PRIOR_FIT_PER_BUNDLE = 2_000


def _percentiles(values):
    values = np.asarray(values, dtype="float64")
    p = np.percentile(values, [0, 5, 50, 95, 100])
    return {
        "min": float(p[0]),
        "p05": float(p[1]),
        "p50": float(p[2]),
        "p95": float(p[3]),
        "max": float(p[4]),
    }


#: Batches above this many rows are padded to a multiple of it (see
#: :func:`_predict`).
PAD_STEP = 1024


def _predict(network, inputs, batch_size):
    """``network.predict_on_batch(inputs)`` (Keras' compiled inference step),
    the batch padded with zero rows to a power of two up to
    :data:`PAD_STEP` rows, and above to a multiple of the larger of
    :data:`PAD_STEP` and a sixteenth of the next power of two (at most
    ``batch_size``).

    TensorFlow and JAX compile the step per input shape: unpadded, every
    odd-sized batch (the last of a split, or the streamlines a labeller
    decodes) would compile it again (JAX) or retrace it (TensorFlow); padded,
    the shapes are a few (at most 8 per doubling of the size), and a batch
    of more than :data:`PAD_STEP` rows gains fewer than :data:`PAD_STEP` rows
    or an eighth of its own, whichever is more (a power of two could nearly
    double it). Torch compiles nothing, so nothing is padded. No layer of the
    networks mixes rows, so the padding never reaches the rows returned.
    """
    n = len(inputs[0])
    if n > PAD_STEP:
        # a multiple of PAD_STEP, or of a sixteenth of the next power of two
        # (an eighth of the one below n) when larger: 8 shapes a doubling
        step = max(PAD_STEP, 1 << max(0, (n - 1).bit_length() - 4))
        size = -(-n // step) * step
    else:
        size = 1 << max(0, n - 1).bit_length()
    size = min(size, max(n, int(batch_size)))
    if size != n and keras.backend.backend() != "torch":
        inputs = [
            np.concatenate([a, np.zeros((size - n,) + a.shape[1:], a.dtype)])
            for a in inputs
        ]
    out = network.predict_on_batch(inputs[0] if len(inputs) == 1 else inputs)
    if isinstance(out, (list, tuple)):
        return [np.asarray(o)[:n] for o in out]
    return np.asarray(out)[:n]


def _predict_chunks(network, inputs, chunk):
    """:func:`_predict` over ``chunk`` rows of ``inputs`` at a time (a few
    padded shapes however many rows), the outputs concatenated; at least
    one row."""
    return np.concatenate(
        [
            _predict(network, [a[start : start + chunk] for a in inputs], chunk)
            for start in range(0, len(inputs[0]), chunk)
        ]
    )


def _bundle_sample(dataset, per_bundle, seed):
    """Labels, streamlines, attribute and subjects of at most ``per_bundle``
    streamlines of each bundle (a seeded sample, in dataset order; all when
    none has more).

    Returns
    -------
    labels : ndarray of int
    x : ndarray, memmap or StreamlineRows
        Not read: the rows picked of ``dataset.x``.
    attribute : ndarray of float64
    subjects : ndarray of str
    """
    labels = np.asarray(dataset.labels)
    attribute = np.asarray(dataset.attribute, dtype="float64")
    subjects = np.asarray(dataset.subjects).astype(str)
    keep = per_bundle_rows(labels, per_bundle, seed)
    if keep is None:
        return labels, dataset.x, attribute, subjects
    return labels[keep], take(dataset.x, keep), attribute[keep], subjects[keep]


def _subject_calibration(values, z0, subjects, knots, share=SUBJECT_KERNEL_SHARE):
    """Mean ``z0`` at each knot for a per-subject attribute: a local linear
    regression of the subjects' mean ``z0`` on their values, made monotone.

    Every streamline of a subject has the subject's value (an age), so the
    data are one point per subject. An isotonic fit through those points
    follows each subject's own departure from the trend and pools
    neighbours that disagree into flat runs, over which generation at
    different values gets the same ``z0`` (the generated bundle then
    stops changing, or turns back, between those values); a local linear
    fit whose kernel spans ``share`` of the subjects averages the
    departures out and still bends with a trend that is not a straight
    line (less than a narrower kernel would). Measured on the age phantom
    in doc/benchmarks.md ("Age as the attribute").

    Parameters
    ----------
    values, z0 : ndarray, shape (N,)
        Each streamline's attribute value and latent dimension 0.
    subjects : ndarray, shape (N,)
        Each streamline's subject.
    knots : ndarray, shape (K,)
        Increasing values at which the map is evaluated.
    share : float
        The kernel's width at a knot is the distance from the nearest
        subject to the ``share * n_subjects``-th nearest (at least 2), and
        at least the distance to the second nearest value.

    Returns
    -------
    ndarray, shape (K,)
        Non-decreasing.
    """
    index, means = _subject_means(np.asarray(z0, "float64")[:, None], subjects)
    counts = np.bincount(index, minlength=len(means))
    value = np.bincount(index, weights=values, minlength=len(means)) / counts
    mean = means[:, 0]
    k = int(min(len(value), max(2, round(share * len(value)))))
    fitted = []
    for t in np.asarray(knots, dtype="float64"):
        d = np.abs(value - t)
        d = d - d.min()
        # at least as wide as the second nearest value: subjects that share
        # a value (ages in whole groups) do not make the kernel a point
        distinct = np.unique(d)
        h = max(
            float(np.partition(d, k - 1)[k - 1]),
            float(distinct[1]) if len(distinct) > 1 else 0.0,
            1e-9 * (np.ptp(value) + 1.0),
        )
        w = np.exp(-0.5 * (d / h) ** 2)
        dv = value - t
        sw, swv = w.sum(), (w * dv).sum()
        spread = (w * dv * dv).sum() * sw - swv**2
        if spread <= 1e-12 * sw * sw * (np.ptp(value) ** 2 + 1.0):
            fitted.append((w * mean).sum() / sw)  # one value: the weighted mean
            continue
        # weighted least squares of mean on (1, dv): the intercept at t
        swm, swvm = (w * mean).sum(), (w * dv * mean).sum()
        fitted.append(((w * dv * dv).sum() * swm - swv * swvm) / spread)
    return np.maximum.accumulate(np.asarray(fitted))


def _subject_spread(z0, index, means0, n_quantiles=SPREAD_QUANTILES):
    """Quantiles ``(S, n_quantiles)`` of each subject's ``z0`` around its mean.

    At the probabilities ``(k + 0.5) / n_quantiles``. A subject with a single
    code gets the quantiles of all subjects' offsets pooled (its own sample
    says nothing of its spread).
    """
    offsets = np.asarray(z0, "float64") - means0[index]
    grid = (np.arange(n_quantiles) + 0.5) / n_quantiles
    counts = np.bincount(index, minlength=len(means0))
    pooled = np.quantile(offsets, grid)
    order = np.argsort(index, kind="stable")
    groups = np.split(offsets[order], np.cumsum(counts)[:-1])
    rows = np.array([np.quantile(g, grid) if len(g) >= 2 else pooled for g in groups])
    return np.maximum.accumulate(rows, axis=1)  # rounding never makes one decrease


def _one_value_each(values, subjects):
    """Whether every subject has a single value (an age), not one per
    streamline."""
    _, index = np.unique(subjects, return_inverse=True)
    index = index.reshape(-1)
    low = np.full(index.max() + 1 if len(index) else 0, np.inf)
    high = np.full_like(low, -np.inf)
    np.minimum.at(low, index, values)
    np.maximum.at(high, index, values)
    return bool(np.all(low == high))


def _subject_means(z, subjects):
    """Index of each code's subject and each subject's mean code.

    Returns
    -------
    index : ndarray of int, shape (N,)
    means : ndarray of float64, shape (S, D)
        In the order of ``np.unique(subjects)``.
    """
    names, index = np.unique(subjects, return_inverse=True)
    index = index.reshape(-1)
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, index, z.astype("float64"))
    return index, sums / np.bincount(index, minlength=len(names))[:, None]


def _holds(space, x):
    """Whether every streamline of ``x`` (mm; blocks of a memmap are read in
    turn) lies inside the volume ``space`` describes (DIPY's bounding-box
    check, no margin); the share inside is logged."""
    from aae_tract.io import inside_volume

    inside = sum(
        int(inside_volume(block, space, margin=0.0).sum())
        for _, block in iter_blocks(x)
    )
    holds = inside == len(x)
    logger.info(
        "%d of %d streamlines of the calibration sample lie inside the volume of "
        "the training data's header: generation %s",
        inside,
        len(x),
        "keeps its streamlines inside it" if holds else "does not test that volume",
    )
    return holds


def _non_negative(what, value):
    """``value`` as a float, or ConfigError unless it is a finite number >= 0."""
    try:
        good = not isinstance(value, bool) and math.isfinite(float(value))
        good = good and float(value) >= 0
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


class TractAAE:
    """A conditional adversarial autoencoder of streamlines, ready to use.

    Build one with :meth:`from_dataset` and :meth:`fit`, or :meth:`load` a
    ``.keras`` file.

    Parameters
    ----------
    network : ConditionalAAE
        The Keras model.
    metadata : ModelMetadata
        Labels, normalisation, calibration, ... (see :class:`ModelMetadata`).
    """

    def __init__(self, network, metadata):
        from aae_tract.normalize import Normalizer

        self._length_head = None  # the decoder's length output, built on use
        self._texture_head = None  # the decoder's texture output, built on use
        # (id of the latent bank, bundle label) -> (lowest, highest) mu on it
        self._texture_bounds = {}
        self._bfloat16_encoder = None  # the encoder in bfloat16, built on use
        self.network = network
        self.metadata = metadata
        self.config = AAEConfig.from_dict(metadata.config)
        self.normalizer = (
            Normalizer.from_dict(metadata.normalizer) if metadata.normalizer else None
        )

    # -- construction ---------------------------------------------------------
    @classmethod
    def from_dataset(cls, dataset, config=None, **overrides):
        """A fresh (untrained) model sized for ``dataset``.

        Parameters
        ----------
        dataset : StreamlineDataset
            Training split: its labels, attribute, orientation references and
            space are recorded; the normalisation is fitted on it.
        config : AAEConfig, optional
            Hyperparameters; ``n_points`` and ``n_bundles`` follow the dataset.
            Without it: the defaults (``n_control`` then follows the
            dataset's ``n_points`` too).
        **overrides
            Hyperparameters (:class:`AAEConfig` fields) replacing those of
            ``config``.

        Raises
        ------
        ConfigError
            For an invalid value or an unknown hyperparameter name.
        """
        from aae_tract.normalize import Normalizer

        if len(dataset) < 2:
            raise AAETractError("the training set needs at least 2 streamlines")
        values = config.to_dict() if config is not None else {}
        values.update(overrides)
        if values.get("ar_level", "auto") == "auto":
            # a value per subject (age): order subjects, not streamlines
            per_subject = dataset.attribute_name != "length"
            values["ar_level"] = "subject" if per_subject else "streamline"
        values["n_points"] = int(dataset.n_points)
        values["n_bundles"] = len(dataset.bundle_names)
        # the file stores the values that fields left to what the AR loss
        # orders resolve to (prior, adv_weight, ar_weight, ar_soft)
        config = AAEConfig.from_dict(values, strict=True).resolved()
        check_swap_weight(config.polish_swap_weight, dataset.attribute_name)
        keras.utils.set_random_seed(config.seed)
        network = ConditionalAAE(**config.network_config())
        normalizer = Normalizer().fit(dataset.x)
        metadata = ModelMetadata(
            config=config.to_dict(),
            bundle_names=list(dataset.bundle_names),
            attribute_name=dataset.attribute_name,
            normalizer=normalizer.to_dict(),
            bundle_stats=cls._bundle_stats(dataset),
            orient_refs={
                k: np.asarray(v, dtype="float32").tolist()
                for k, v in (dataset.orient_refs or {}).items()
            },
            space=dataset.space,
            registration=(
                dataset.registration.to_dict()
                if getattr(dataset, "registration", None) is not None
                else {}
            ),
        )
        return cls(network, metadata)

    @staticmethod
    def _bundle_stats(dataset):
        stats = {}
        for i, name in enumerate(dataset.bundle_names):
            mask = np.asarray(dataset.labels) == i
            if not mask.any():
                continue
            stats[name] = {
                "n": int(mask.sum()),
                "attribute": _percentiles(np.asarray(dataset.attribute)[mask]),
                "length": _percentiles(np.asarray(dataset.lengths)[mask]),
            }
        return stats

    # -- properties -----------------------------------------------------------
    @property
    def bundle_names(self):
        return list(self.metadata.bundle_names)

    @property
    def attribute_name(self):
        return self.metadata.attribute_name

    @property
    def n_points(self):
        return self.config.n_points

    @property
    def latent_dims(self):
        return self.config.latent_dims

    @property
    def registration(self):
        """How the training subjects were brought into the model's common space.

        Returns
        -------
        aae_tract.registration.Registration
            Kind ``"none"`` for a model trained without registration. Its
            :meth:`~aae_tract.registration.Registration.align`,
            ``to_common`` and ``to_subject`` move streamlines between a
            subject's space and the model's.
        """
        from aae_tract.registration import Registration

        if not self.metadata.registration:
            return Registration("none")
        return Registration.from_dict(self.metadata.registration)

    def bundle_index(self, bundle):
        """Index of ``bundle`` in the label vocabulary.

        Raises
        ------
        UnknownBundleError
            With the list of known bundles.
        """
        try:
            return self.metadata.bundle_names.index(bundle)
        except ValueError:
            raise UnknownBundleError(
                f"unknown bundle {bundle!r}: this model knows "
                f"{', '.join(self.metadata.bundle_names)}"
            ) from None

    def attribute_range(self, bundle):
        """(min, max) of the attribute seen in training for ``bundle``."""
        stats = self.metadata.bundle_stats[
            self.metadata.bundle_names[self.bundle_index(bundle)]
        ]["attribute"]
        return stats["min"], stats["max"]

    def onehot(self, labels):
        """One-hot codes ``(N, n_bundles)`` of integer labels."""
        labels = np.asarray(labels, dtype="int64")
        return np.eye(len(self.metadata.bundle_names), dtype="float32")[labels]

    # -- data in and out ------------------------------------------------------
    def _labels_for(self, n, bundle):
        if bundle is None:
            raise AAETractError("a bundle name (or one label per streamline) is needed")
        if isinstance(bundle, str):
            return np.full(n, self.bundle_index(bundle), dtype="int64")
        labels = [
            self.bundle_index(b) if isinstance(b, str) else int(b) for b in bundle
        ]
        labels = np.asarray(labels, dtype="int64")
        if labels.shape != (n,):
            raise AAETractError(f"{len(labels)} labels given for {n} streamlines")
        return labels

    def prepare(self, streamlines, bundle):
        """Resample and orient streamlines as the training data was.

        Parameters
        ----------
        streamlines : StatefulTractogram, ArraySequence, list of arrays or array
            In RAS+ mm. An array ``(N, n_points, 3)`` is taken as already
            resampled.
        bundle : str or sequence
            Bundle name of all streamlines, or one label per streamline.

        Returns
        -------
        x : ndarray, shape (N, n_points, 3), float32
        labels : ndarray of int, shape (N,)
        """
        from aae_tract.orientation import orient_bundle
        from aae_tract.streamlines import resample

        if hasattr(streamlines, "to_rasmm"):
            streamlines.to_rasmm()
            streamlines = streamlines.streamlines
        if isinstance(streamlines, np.ndarray) and streamlines.ndim == 3:
            x = streamlines.astype("float32")
            if x.shape[1:] != (self.n_points, 3):
                x = resample(list(x), self.n_points)
        else:
            x = resample(streamlines, self.n_points)
        labels = self._labels_for(len(x), bundle)
        for i, name in enumerate(self.metadata.bundle_names):
            ref = self.metadata.orient_refs.get(name)
            mask = labels == i
            if ref is not None and mask.any():
                x[mask] = orient_bundle(x[mask], np.asarray(ref, dtype="float32"))
        return x, labels

    def encode(self, streamlines, bundle=None, *, batch_size=1024):
        """Latent codes of streamlines.

        Parameters
        ----------
        streamlines : StatefulTractogram, ArraySequence, list or array
            In RAS+ mm (see :meth:`prepare`).
        bundle : str or sequence
            Bundle of the streamlines (used to orient them).
        batch_size : int
            Streamlines per forward pass.

        Returns
        -------
        ndarray, shape (N, latent_dims)
        """
        x, _ = self.prepare(streamlines, bundle)
        return self.encode_prepared(x, batch_size=batch_size)

    def encode_prepared(self, x, *, batch_size=1024, rng=None, precision="float32"):
        """Encode streamlines already resampled and oriented (mm).

        Parameters
        ----------
        x : ndarray, shape (N, n_points, 3)
            Streamlines as :meth:`prepare` returns them (or a memmap or
            :class:`~aae_tract.rows.StreamlineRows`, read batch by batch).
        batch_size : int
            Streamlines per forward pass.
        rng : numpy.random.Generator or int, optional
            Draw a sample of q(z | x) per streamline with it instead of
            returning the mean (the same for a deterministic posterior).
        precision : {"float32", "bfloat16"}, optional
            What the encoder computes in. ``"bfloat16"``: a copy of the
            encoder under Keras' ``mixed_bfloat16`` policy, with the same
            (float32) weights and a float32 output layer; faster on a CPU
            with native bfloat16, its codes differ from float32's by a few
            thousandths of their spread.

        Returns
        -------
        ndarray of float32, shape (N, latent_dims)
        """
        encoder = self._encoder_in(precision)
        out = []
        rng = None if rng is None else np.random.default_rng(rng)
        for _, block in iter_blocks(x, batch_size):
            # (in float32 for a bfloat16 encoder, which rounds its input far
            # more coarsely)
            batch = self.normalizer.transform(block, precise=precision == "float32")
            # Keras' compiled inference step: 2-3x faster on CPU than a call
            codes = _predict(encoder, [batch], batch_size)
            if not isinstance(codes, (list, tuple)):
                out.append(np.asarray(codes))
                continue
            mean, log_var = (np.asarray(c) for c in codes)
            if rng is not None:
                mean = posterior_draw(mean, log_var, rng)
            out.append(mean)
        if not out:
            return np.zeros((0, self.latent_dims), dtype="float32")
        return np.concatenate(out).astype("float32")

    def _encoder_in(self, precision):
        """The encoder computing in ``precision`` ("float32": the model's
        own; "bfloat16": a copy built under ``mixed_bfloat16`` on first use,
        the encoder's weights copied into it on every call, so a model
        trained further is never encoded with stale ones)."""
        from aae_tract.model.networks import build_encoder

        if precision == "float32":
            return self.network.encoder
        if precision != "bfloat16":
            raise AAETractError(
                f"precision must be 'float32' or 'bfloat16', got {precision!r}"
            )
        if self._bfloat16_encoder is None:
            policy = keras.config.dtype_policy()
            keras.config.set_dtype_policy("mixed_bfloat16")
            try:
                self._bfloat16_encoder = build_encoder(self.network.config)
            finally:
                keras.config.set_dtype_policy(policy)
        self._bfloat16_encoder.set_weights(self.network.encoder.get_weights())
        return self._bfloat16_encoder

    def decode(self, z, bundle, *, texture=None, batch_size=1024):
        """Streamlines (mm) decoded from latent codes.

        Parameters
        ----------
        z : array, shape (N, latent_dims)
        bundle : str or sequence
            Bundle of every code, or one per code.
        texture : numpy.random.Generator or int, optional
            Sample the streamlines' texture (the small random turns of real
            tracking that the decoder models around its mean curve) with this
            generator or seed. None: the mean streamline of every code. Model
            files from before the texture model have none to sample. The
            texture's log scale ``mu`` is kept within the range it takes on
            the bundle's latent bank (a sample of its training codes, see
            :meth:`calibrate`; no bound before calibration): a code beyond
            them (e.g. a length past the training range) would otherwise
            extrapolate it, and crumple the streamline.
        batch_size : int
            Codes per forward pass.

        Returns
        -------
        ndarray, shape (N, n_points, 3), float32, RAS+ mm
        """
        z = np.asarray(z, dtype="float32")
        if z.ndim != 2 or z.shape[1] != self.latent_dims:
            raise AAETractError(
                f"latent codes must have shape (N, {self.latent_dims}), got {z.shape}"
            )
        labels = self._labels_for(len(z), bundle)
        onehot = self.onehot(labels)
        rng = None if texture is None else np.random.default_rng(texture)
        sampled = rng is not None and self.config.decoder != "spline"
        out = []
        for start in range(0, len(z), batch_size):
            zb = z[start : start + batch_size]
            ob = onehot[start : start + batch_size]
            noise = None
            if sampled:
                shape = (len(zb), self.n_points - 1, 3)
                steps = rng.standard_normal(shape).astype("float32")
                xi = rng.standard_normal((len(zb), 1)).astype("float32")
                xi = self._bounded_xi(zb, ob, labels[start : start + batch_size], xi)
                noise = (steps, xi)
            x = self._decode_batch(zb, ob, noise, batch_size)
            out.append(self.normalizer.inverse(x))
        if not out:
            return np.zeros((0, self.n_points, 3), dtype="float32")
        return np.concatenate(out).astype("float32")

    def _decode_batch(self, z, onehot, noise=None, batch_size=1024):
        """Normalised streamlines decoded from one batch of codes (numpy),
        through Keras' compiled inference step (``batch_size``: the largest
        batch it is given, see :func:`_predict`)."""
        if self.config.decoder == "spline":
            return np.asarray(_predict(self.network.decoder, [z, onehot], batch_size))
        if noise is None:
            noise = (
                np.zeros((len(z), self.n_points - 1, 3), "float32"),
                np.zeros((len(z), 1), "float32"),
            )
        x, _ = _predict(self.network.decoder, [z, onehot, *noise], batch_size)
        return np.asarray(x)

    def _texture_of(self, z, onehot):
        """The decoder's texture output ``(mu, log tau)`` for codes, clipped
        as :class:`ArcLengthCurve` clips it."""
        if self._texture_head is None:
            decoder = self.network.decoder
            texture = decoder.get_layer("texture").output
            self._texture_head = keras.Model(decoder.inputs[:2], texture)
        if len(z) == 0:
            return np.zeros(0), np.zeros(0)
        out = _predict_chunks(self._texture_head, [z, onehot], 4096)
        mu = np.clip(out[:, 0], *ArcLengthCurve.LOG_TEXTURE_RANGE)
        log_tau = np.clip(out[:, 1], *ArcLengthCurve.LOG_SPREAD_RANGE)
        return mu.astype("float64"), log_tau.astype("float64")

    def _bundle_texture_bounds(self, label):
        """Lowest and highest texture ``mu`` over the bundle's latent bank
        (None without a bank)."""
        key = (id(self.metadata.latent_bank), label)
        if key not in self._texture_bounds:
            bank = self.metadata.latent_bank.get(self.bundle_names[label])
            bounds = None
            if bank and len(bank.get("z", ())):
                z = np.asarray(bank["z"], dtype="float32")
                mu, _ = self._texture_of(z, self.onehot(np.full(len(z), label)))
                bounds = (float(mu.min()), float(mu.max()))
            self._texture_bounds[key] = bounds
        return self._texture_bounds[key]

    def _bounded_xi(self, z, onehot, labels, xi):
        """``xi`` shifted so that each streamline's texture scale
        ``exp(mu + tau * xi) / 2`` is drawn around ``mu`` kept within its
        bundle's bounds (:meth:`_bundle_texture_bounds`)."""
        bounds = {
            int(b): self._bundle_texture_bounds(int(b)) for b in np.unique(labels)
        }
        bounds = {b: limits for b, limits in bounds.items() if limits is not None}
        if not bounds:
            return xi
        mu, log_tau = self._texture_of(z, onehot)
        kept = mu.copy()
        for label, limits in bounds.items():
            rows = labels == label
            kept[rows] = np.clip(mu[rows], *limits)
        shift = (kept - mu) / np.exp(log_tau)
        return (xi + shift[:, None]).astype("float32")

    def decoded_lengths(self, z, bundle, *, batch_size=4096):
        """Lengths (mm) of the mean streamlines the codes decode to.

        With the ``"arclength"`` decoder the length is an output of its own
        (the curve is integrated to exactly that length), read from the
        decoder's dense layers without drawing the streamlines; with the
        ``"spline"`` decoder the streamlines are decoded and measured.

        Parameters
        ----------
        z : array, shape (N, latent_dims)
        bundle : str or sequence
            Bundle of every code, or one per code.
        batch_size : int
            Codes per forward pass.

        Returns
        -------
        ndarray, shape (N,), float64
        """
        z = np.asarray(z, dtype="float32")
        if self.config.decoder == "spline":
            x = self.decode(z, bundle, batch_size=batch_size)
            return np.linalg.norm(np.diff(x, axis=1), axis=2).sum(axis=1)
        if self._length_head is None:
            decoder = self.network.decoder
            frame = decoder.get_layer("frame").output
            self._length_head = keras.Model(decoder.inputs[:2], frame)
        onehot = self.onehot(self._labels_for(len(z), bundle))
        if len(z) == 0:
            return np.zeros(0)
        # compiled, as decoding is: bisecting a length calls this a dozen
        # times a request, and an eager call runs the layers op by op
        frame = _predict_chunks(self._length_head, [z, onehot], int(batch_size))
        log_length = np.clip(frame[:, 3], *ArcLengthCurve.LOG_LENGTH_RANGE)
        return np.exp(log_length.astype(np.float64)) * self.normalizer.scale

    def reconstruct(self, streamlines, bundle=None, *, batch_size=1024):
        """Encode then decode with the same labels (mm)."""
        x, labels = self.prepare(streamlines, bundle)
        z = self.encode_prepared(x, batch_size=batch_size)
        return self.decode(z, labels, batch_size=batch_size)

    # -- training ---------------------------------------------------------------
    def _batches(self, dataset, *, shuffle, batch_size, replicas=1):
        groups = None
        if self.config.ar_level == "subject" and shuffle:
            groups = np.unique(np.asarray(dataset.subjects), return_inverse=True)[1]
        shard = parallel.process_shard() if replicas > 1 else (0, 1)
        return StreamlineBatches(
            dataset.x,
            dataset.labels,
            dataset.attribute,
            self.normalizer,
            len(self.metadata.bundle_names),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=self.config.seed,
            groups=groups,
            group_run=self.config.subject_batch,
            replicas=replicas,
            shard=shard,
        )

    def _checked_splits(self, train, validation):
        """Check that both splits hold this model's bundles; the validation
        split, or None when there is none of at least 2 streamlines."""
        self._check_dataset(train, "training set")
        if validation is None or len(validation) < 2:
            return None
        self._check_dataset(validation, "validation set")
        return validation

    def _check_dataset(self, dataset, what):
        if list(dataset.bundle_names) != self.bundle_names:
            raise AAETractError(
                f"the {what} bundles {list(dataset.bundle_names)} differ from the "
                f"model's {self.bundle_names}"
            )
        if dataset.n_points != self.n_points:
            raise AAETractError(
                f"the {what} has {dataset.n_points} points per streamline, the "
                f"model {self.n_points}"
            )

    def fit(
        self,
        train,
        validation=None,
        *,
        epochs=None,
        batch_size=None,
        checkpoint_dir=None,
        history_path=None,
        resume=False,
        verbose="auto",
        callbacks=None,
        devices=None,
    ):
        """Train through ``keras.Model.fit`` and calibrate the attribute.

        Parameters
        ----------
        train : StreamlineDataset
            Training split (its bundles must be the model's).
        validation : StreamlineDataset, optional
            Validation split: ``val_*`` losses per epoch.
        epochs, batch_size : int, optional
            Default: the configuration's.
        checkpoint_dir : path, optional
            Folder for a resumable checkpoint after every epoch.
        history_path : path, optional
            JSON file rewritten after every epoch with every loss so far.
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir`` (weights,
            optimizer state and history) when there is one. The settings must
            be those of the checkpoint's run (network, batch size, learning
            rates, decay, warm-up), else TrainingError names the ones that
            differ. ``epochs`` may differ: it only moves where training stops;
            the learning rate keeps the schedule of the run that started
            (with the cosine decay, epochs past its end run at the final
            rate), and a warning says so.
        verbose : "auto", 0, 1 or 2
            Keras progress display.
        callbacks : list, optional
            More Keras callbacks.
        devices : int or "all", optional
            Train data-parallel on this many devices (default: one), each
            global batch of ``batch_size`` split evenly over them; see
            :mod:`aae_tract.model.parallel` for the engine of each backend
            (with torch: one process per device, launched by ``torchrun``).

        Returns
        -------
        dict
            History: one list per loss (``loss``, ``recon_loss``, ``smooth_loss``,
            ``ar_loss``, ``gen_loss``, ``disc_loss`` and their ``val_``).

        Raises
        ------
        TrainingError
            When a loss becomes NaN or infinite (the last good checkpoint is
            kept), or a checkpoint cannot be resumed with these settings.
        """
        cfg = self.config
        epochs = int(epochs or cfg.epochs)
        batch_size = int(batch_size or cfg.batch_size)
        validation = self._checked_splits(train, validation)
        n_devices = parallel.resolve_devices(devices)
        parallel.check_batch(batch_size, n_devices)
        keras.utils.set_random_seed(cfg.seed)
        steps = len(
            self._batches(
                train, shuffle=False, batch_size=batch_size, replicas=n_devices
            )
        )
        state, schedule_epochs = self._resume_state(
            checkpoint_dir, resume, epochs, batch_size
        )
        if n_devices > 1:
            validation = self._check_split_sizes(train, validation, n_devices)
        single = self.network
        try:
            with parallel.replicated(n_devices) as where:
                history, seconds, guard, initial_epoch, polish = self._fit_on(
                    where,
                    n_devices,
                    train,
                    validation,
                    state=state,
                    schedule=(schedule_epochs, steps),
                    epochs=epochs,
                    batch_size=batch_size,
                    checkpoint_dir=checkpoint_dir,
                    history_path=history_path,
                    verbose=verbose,
                    callbacks=callbacks,
                )
        finally:
            if self.network is not single:
                # out of the replication scope: the trained weights, seed
                # states and both optimizers' state back on the model
                replica, self.network = self.network, single
                _copy_state(replica, single)
                self._compile(decay_steps=max(schedule_epochs * steps, 1))
                _copy_optimizers(replica, single)
        if guard.bad is not None:
            raise _non_finite_error(guard.bad, checkpoint_dir)
        self._record_training(
            train, validation, history, seconds, epochs - initial_epoch
        )
        self.metadata.training["devices"] = n_devices
        wanted = cfg.resolved_polish_epochs(epochs)
        if cfg.polish_epochs is None and (polish is not None or wanted == 0):
            # the file stores the stage's epochs, not "a share of epochs"
            # (left unresolved when training stopped before the stage)
            cfg.polish_epochs = wanted
            self.metadata.config["polish_epochs"] = wanted
        if polish is not None:
            self.metadata.training["polish"] = polish
        self.calibrate(train)
        self.fit_labeller(train, validation)
        self.metadata.training["prior_match"] = self.log_prior_match(
            validation if validation is not None else train
        )
        return history

    def _fit_on(
        self,
        where,
        n_devices,
        train,
        validation,
        *,
        state,
        schedule,
        epochs,
        batch_size,
        checkpoint_dir,
        history_path,
        verbose,
        callbacks,
    ):
        """``fit()`` inside the replication scope of ``n_devices`` devices.

        With JAX and TensorFlow the network is rebuilt in the scope (its
        variables replicated) with this model's weights, and its weights come
        back after training; with torch every process broadcasts rank 0's.

        Returns
        -------
        history, seconds, guard, initial_epoch, polish
            ``polish``: the decoder-only stage's record (None without one).
        """
        cfg = self.config
        schedule_epochs, steps = schedule
        single = self.network
        backend = keras.backend.backend()
        if n_devices > 1 and backend in ("jax", "tensorflow"):
            self.network = _replica(single)
        elif n_devices > 1:
            parallel.torch_broadcast_weights(single)
            parallel.torch_offset_seeds(single, parallel.torch_world()[0])
        # torch: rank 0 writes the checkpoints; JAX on several processes:
        # every process (saving gathers the weights from all of them), each
        # into its own machine's folder or, on a shared folder, by atomic
        # renames of the same files
        writes = parallel.is_main_process() or backend == "jax"
        resuming = state is not None
        self._compile(decay_steps=max(schedule_epochs * steps, 1))
        history = {}
        initial_epoch = 0
        if resuming:
            initial_epoch, history = self._restore(checkpoint_dir, state)
        train_batches, val_batches = self._fit_batches(
            train, validation, batch_size, initial_epoch, n_devices
        )
        self._log_training_start(
            train, validation, initial_epoch, epochs, batch_size, where
        )
        guard = NonFiniteGuard()
        cbs = self._fit_callbacks(
            guard,
            checkpoint_dir if writes else None,
            history,
            train=train,
            history_path=history_path,
            extra_state={
                "config": {
                    **cfg.to_dict(),
                    "epochs": epochs,
                    "batch_size": batch_size,
                },
                "schedule_epochs": schedule_epochs,
            },
        )
        cbs.extend(callbacks or [])
        start = time.perf_counter()
        stopped = False
        if initial_epoch < epochs:
            result = self.network.fit(
                train_batches,
                validation_data=val_batches,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=cbs,
                verbose=verbose if parallel.is_main_process() else 0,
                # the batches shuffle themselves, seeded by the epoch;
                # Keras's own shuffling of their order would draw from a
                # generator that each fit() reseeds, so a resumed run
                # would not see the batches of the run it continues
                shuffle=False,
            )
            if checkpoint_dir is None or not writes:
                for key, values in result.history.items():
                    history.setdefault(key, []).extend(float(v) for v in values)
            # a callback ended training early (Ctrl-C in aae_tract_train)
            stopped = bool(getattr(self.network, "stop_training", False))
        for cb in cbs:
            if isinstance(cb, PriorRefit):
                # the prior of the final encoder, also after a resume that
                # found every epoch done
                cb.refit(epochs, self.network)
        # the training time and speed are the main stage's; the decoder-only
        # stage records its own time
        seconds = time.perf_counter() - start
        polish = None
        stage = cfg.resolved_polish_epochs(epochs)
        if stopped and guard.bad is None and stage > 0:
            logger.warning(
                "training stopped before epoch %d: no decoder-only stage "
                "(resume the run, or call TractAAE.polish)",
                epochs,
            )
        elif stage > 0 and guard.bad is None:
            polish = self._polish(
                train,
                validation,
                epochs=stage,
                warmup_epochs=cfg.polish_warmup_epochs,
                noise=cfg.polish_noise,
                turn_weight=cfg.polish_turn_weight,
                swap_weight=cfg.polish_swap_weight,
                batch_size=batch_size,
                replicas=n_devices,
                first_epoch=epochs,
                guard=guard,
                verbose=verbose if parallel.is_main_process() else 0,
            )
        return history, seconds, guard, initial_epoch, polish

    def polish(
        self,
        train,
        validation=None,
        *,
        epochs,
        warmup_epochs=None,
        noise=None,
        turn_weight=None,
        swap_weight=None,
        batch_size=None,
        verbose="auto",
    ):
        """Train the decoder alone for ``epochs`` more epochs and recalibrate.

        The decoder-only stage that ``AAEConfig.polish_epochs`` adds to
        :meth:`fit`, run on a trained (e.g. loaded) model: the encoder, so
        every code, the prior fitted to them and the bundle labeller, stays
        as it is, while the decoder learns the reconstruction losses from a
        fresh Adam with the cosine decay from ``learning_rate``. The
        configuration's ``polish_epochs`` then counts these epochs as well;
        ``metadata.training["polish"]`` records this stage.

        Parameters
        ----------
        train : StreamlineDataset
            Training split (its bundles must be the model's).
        validation : StreamlineDataset, optional
            Validation split: ``val_*`` losses per epoch.
        epochs : int
            Epochs of the stage (at least 1).
        warmup_epochs : int, optional
            Epochs over which the stage's learning rate rises from 5% to
            ``learning_rate`` before its cosine decay, at most half the
            stage (``AAEConfig.polish_warmup_epochs``, whose value is the
            default; this stage's is stored there).
        noise : float, optional
            Noise on the codes during the stage, relative to the batch's
            spread of each latent dimension (``AAEConfig.polish_noise``,
            whose value is the default; this stage's is stored there).
        turn_weight : float, optional
            With ``noise`` > 0: weight of the penalty on how much more the
            noisy codes' mean streamlines turn than the codes' own, which
            the noisy codes then feed alone (``AAEConfig.polish_turn_weight``,
            whose value is the default; this stage's is stored there).
        swap_weight : float, optional
            Weight of the length that codes decode to with latent dimension
            0 of another code of their bundle
            (``AAEConfig.polish_swap_weight``, whose value is the default;
            this stage's is stored there).
        batch_size : int, optional
            Default: the configuration's.
        verbose : "auto", 0, 1 or 2
            Keras progress display.

        Returns
        -------
        dict
            The stage's record: epochs, seconds and its ``recon_loss`` (and
            ``val_recon_loss``) per epoch.

        Raises
        ------
        TrainingError
            When a loss becomes NaN or infinite.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
            raise ConfigError(f"epochs must be a whole number, got {epochs!r}")
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs!r}")
        epochs = int(epochs)
        if warmup_epochs is None:
            warmup_epochs = self.config.polish_warmup_epochs
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, numbers.Integral)
            or warmup_epochs < 0
        ):
            raise ConfigError(
                f"warmup_epochs must be a whole number of at least 0, "
                f"got {warmup_epochs!r}"
            )
        warmup_epochs = int(warmup_epochs)
        noise = _non_negative(
            "noise", self.config.polish_noise if noise is None else noise
        )
        turn_weight = _non_negative(
            "turn_weight",
            self.config.polish_turn_weight if turn_weight is None else turn_weight,
        )
        swap_weight = _non_negative(
            "swap_weight",
            self.config.polish_swap_weight if swap_weight is None else swap_weight,
        )
        check_swap_weight(swap_weight, self.attribute_name, "swap_weight")
        batch_size = int(batch_size or self.config.batch_size)
        validation = self._checked_splits(train, validation)
        keras.utils.set_random_seed(self.config.seed)
        guard = NonFiniteGuard()
        record = self._polish(
            train,
            validation,
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            noise=noise,
            turn_weight=turn_weight,
            swap_weight=swap_weight,
            batch_size=batch_size,
            replicas=1,
            first_epoch=self.config.epochs + self.config.resolved_polish_epochs(),
            guard=guard,
            verbose=verbose,
        )
        if guard.bad is not None:
            raise _non_finite_error(guard.bad, None)
        total = self.config.resolved_polish_epochs() + epochs
        self.config.polish_epochs = total
        self.config.polish_warmup_epochs = warmup_epochs
        self.config.polish_noise = noise
        self.config.polish_turn_weight = turn_weight
        self.config.polish_swap_weight = swap_weight
        self.metadata.config["polish_epochs"] = total
        self.metadata.config["polish_warmup_epochs"] = warmup_epochs
        self.metadata.config["polish_noise"] = noise
        self.metadata.config["polish_turn_weight"] = turn_weight
        self.metadata.config["polish_swap_weight"] = swap_weight
        self.metadata.training["polish"] = record
        self.calibrate(train)
        return record

    def _polish(
        self,
        train,
        validation,
        *,
        epochs,
        warmup_epochs,
        noise,
        turn_weight,
        swap_weight,
        batch_size,
        replicas,
        first_epoch,
        guard,
        verbose,
    ):
        """The decoder-only stage: ``epochs`` epochs in which only the
        decoder learns, from a fresh Adam whose rate rises linearly from 5%
        of ``learning_rate`` over ``warmup_epochs`` (at most half the stage)
        and then follows the cosine decay from ``learning_rate``, decoding
        codes with ``noise`` times the batch's spread of each latent
        dimension added (with ``turn_weight`` > 0: for the excess-turn
        penalty alone, the losses decoding the codes), and with
        ``swap_weight`` > 0 scoring the length of codes given latent
        dimension 0 of another code of their bundle.

        The encoder is fixed, so every code, and a fitted prior, stays as
        adversarial training left it. No checkpoint is written: a run
        resumed from its last epoch's checkpoint polishes again from the
        same weights. The main stage's optimizers are put back afterwards,
        so that a checkpoint or a later ``fit`` continues them. Returns the
        stage's record for ``metadata.training["polish"]``: its epochs,
        noise, time and reconstruction losses.
        """
        network = self.network
        train_batches, val_batches = self._fit_batches(
            train, validation, batch_size, first_epoch, replicas
        )
        warmup_epochs = min(int(warmup_epochs), epochs // 2)
        logger.info(
            "decoder-only stage: %d epochs%s, encoder and prior fixed, "
            "code noise %g%s%s",
            epochs,
            f" ({warmup_epochs} of learning-rate warm-up)" if warmup_epochs else "",
            noise,
            f", excess-turn weight {turn_weight:g}" if turn_weight > 0 else "",
            f", swapped-length weight {swap_weight:g}" if swap_weight > 0 else "",
        )
        main_optimizers = network._opt
        start = time.perf_counter()
        network.decoder_only = True
        network.code_noise = noise
        network.turn_weight = turn_weight
        network.swap_weight = swap_weight
        try:
            steps = len(train_batches)
            self._compile(
                decay_steps=max((epochs - warmup_epochs) * steps, 1),
                warmup_steps=warmup_epochs * steps,
            )
            result = network.fit(
                train_batches,
                validation_data=val_batches,
                epochs=epochs,
                callbacks=[guard],
                verbose=verbose,
                shuffle=False,
            )
        finally:
            network.decoder_only = False
            network.code_noise = 0.0
            network.turn_weight = 0.0
            network.swap_weight = 0.0
            network._opt = network.optimizer = main_optimizers
            network.train_function = None
        return {
            "epochs": epochs,
            "warmup_epochs": warmup_epochs,
            "noise": noise,
            "turn_weight": turn_weight,
            "swap_weight": swap_weight,
            "seconds": round(time.perf_counter() - start, 2),
            **{
                key: [float(v) for v in result.history[key]]
                for key in ("recon_loss", "val_recon_loss")
                if key in result.history
            },
        }

    def _check_split_sizes(self, train, validation, n_devices):
        """ConfigError for a training split too small for ``n_devices``; the
        validation split, or None (with a warning) when it is too small."""
        need = 2 * n_devices
        if len(train) < need:
            raise ConfigError(
                f"{len(train)} training streamlines cannot be split over "
                f"{n_devices} devices: the AR loss needs 2 a device ({need})"
            )
        if validation is not None and len(validation) < need:
            logger.warning(
                "%d validation streamlines are too few for %d devices: "
                "training without validation",
                len(validation),
                n_devices,
            )
            return None
        return validation

    def _resume_state(self, checkpoint_dir, resume, epochs, batch_size):
        """The checkpoint state to resume (None: start) and the schedule's epochs."""
        state = read_checkpoint_state(checkpoint_dir) if checkpoint_dir else None
        if resume and state is None:
            logger.warning(
                "no checkpoint in %s: training from the start", checkpoint_dir
            )
        if not (bool(resume) and state is not None):
            return None, epochs
        return state, self._resume_schedule(checkpoint_dir, state, epochs, batch_size)

    def _fit_batches(self, train, validation, batch_size, initial_epoch, replicas=1):
        """Shuffled training batches from ``initial_epoch`` on; validation batches."""
        train_batches = self._batches(
            train, shuffle=True, batch_size=batch_size, replicas=replicas
        )
        train_batches.set_epoch(initial_epoch)
        val_batches = (
            self._batches(
                validation, shuffle=False, batch_size=batch_size, replicas=replicas
            )
            if validation is not None
            else None
        )
        return train_batches, val_batches

    def _compile(self, *, decay_steps, warmup_steps=0):
        """Compile the network with its two Adam optimizers: each rate
        rises linearly from ``LR_FLOOR`` of its value over ``warmup_steps``
        (if any), then decays along a cosine to ``LR_FLOOR`` of it over
        ``decay_steps``; without ``lr_decay`` each stays constant, with no
        warm-up."""
        cfg = self.config

        def rate(value):
            if not cfg.lr_decay:
                return value
            if warmup_steps > 0:
                return keras.optimizers.schedules.CosineDecay(
                    value * LR_FLOOR,
                    decay_steps=decay_steps,
                    alpha=LR_FLOOR,
                    warmup_target=value,
                    warmup_steps=warmup_steps,
                )
            return keras.optimizers.schedules.CosineDecay(
                value, decay_steps=decay_steps, alpha=LR_FLOOR
            )

        self.network.compile(
            ae_optimizer=keras.optimizers.Adam(rate(cfg.learning_rate), name="ae_adam"),
            disc_optimizer=keras.optimizers.Adam(
                rate(cfg.disc_learning_rate), beta_1=0.5, name="disc_adam"
            ),
        )

    def _log_training_start(
        self, train, validation, initial_epoch, epochs, batch_size, where="1 device"
    ):
        """Log the device, split sizes, epochs and batch size of a training run."""
        logger.info(
            "training on %s, %s: %d streamlines (%d bundles), %d validation, "
            "epochs %d..%d, batch %d",
            describe_device(),
            where,
            len(train),
            len(self.bundle_names),
            0 if validation is None else len(validation),
            initial_epoch + 1,
            epochs,
            batch_size,
        )

    def _prior_refit(self, train):
        """The callback that refits a fitted prior to a seeded sample of at
        most :data:`PRIOR_FIT_PER_BUNDLE` training streamlines of each bundle."""
        labels, sample, _, _ = _bundle_sample(
            train, PRIOR_FIT_PER_BUNDLE, self.config.seed
        )
        x = self.normalizer.transform(np.asarray(sample, dtype="float32"))
        return PriorRefit(x, labels, seed=self.config.seed)

    def _fit_callbacks(
        self, guard, checkpoint_dir, history, *, history_path, extra_state, train
    ):
        """The NaN guard, the warm-up, the refit of a fitted prior and (with a
        folder) the epoch checkpoint."""
        cbs = [guard, RegularizationWarmup(self.config.warmup_epochs)]
        if self.config.prior in FITTED_PRIORS:
            cbs.append(self._prior_refit(train))
        if checkpoint_dir is not None:
            cbs.append(
                EpochCheckpoint(
                    checkpoint_dir,
                    history,
                    guard=guard,
                    history_path=history_path,
                    extra_state=extra_state,
                )
            )
        return cbs

    def _record_training(self, train, validation, history, seconds, epochs_run):
        """Record the training run (epochs, device, time, sizes) in the metadata."""
        n_epochs = len(next(iter(history.values()), []))
        self.metadata.training = {
            "epochs": n_epochs,
            "backend": current_backend(),
            "device": describe_device(),
            "seconds": round(seconds, 2),
            "n_train": len(train),
            "n_validation": 0 if validation is None else len(validation),
            "streamlines_per_second": round(
                len(train) * max(epochs_run, 0) / max(seconds, 1e-9), 1
            ),
        }

    def log_prior_match(self, dataset, *, seed=0):
        """Log and return how well each bundle's encodings match the prior.

        Parameters
        ----------
        dataset : StreamlineDataset
            Streamlines to encode (the validation split after training); with
            a Gaussian posterior, one sample of q(z | x) each (the aggregated
            posterior is what the adversary matches to the prior). At most
            :data:`PRIOR_MATCH_PER_BUNDLE` of each bundle (a seeded sample).
        seed : int
            Seed of the prior samples and of the two-sample test.

        Returns
        -------
        dict
            ``{bundle: accuracy}`` of :func:`aae_tract.metrics.prior_match`
            (0.5: indistinguishable from prior samples; None for bundles
            with too few streamlines).
        """
        from aae_tract.metrics import prior_match

        rng = np.random.default_rng(seed)
        labels, sample, _, _ = _bundle_sample(dataset, PRIOR_MATCH_PER_BUNDLE, seed)
        z = self.encode_prepared(sample, rng=rng)
        out = {}
        for i, name in enumerate(self.bundle_names):
            codes = z[labels == i]
            score = prior_match(
                codes, self.network.prior.sample_numpy(len(codes), rng, i), seed=seed
            )
            out[name] = None if score is None else round(score, 4)
        logger.info(
            "prior match (classifier accuracy, encodings vs prior samples; 0.5 "
            "= indistinguishable): %s",
            ", ".join(
                f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in out.items()
            ),
        )
        return out

    def _resume_schedule(self, checkpoint_dir, state, epochs, batch_size):
        """Check that the checkpoint's run can go on with these settings.

        Returns
        -------
        int
            The epochs the learning-rate schedule spans: those of the run that
            wrote the first checkpoint, whatever ``epochs`` is now.

        Raises
        ------
        TrainingError
            Naming each setting that differs from the checkpoint's, or when
            the checkpoint is already past ``epochs``.
        """
        directory = Path(checkpoint_dir)
        done = int(state["epoch"])
        saved = state.get("config")
        if not saved:  # a checkpoint from before settings were recorded
            return epochs
        try:
            theirs = AAEConfig.from_stored(saved)
        except (AAETractError, TypeError, ValueError) as exc:
            raise TrainingError(
                f"cannot resume from {directory}: its settings are unreadable: {exc}"
            ) from exc
        ours = {**self.config.resolved().to_dict(), "batch_size": batch_size}
        theirs = theirs.resolved().to_dict()
        fields = [*self.config.NETWORK_FIELDS, *RESUME_FIELDS]
        changed = [k for k in fields if ours[k] != theirs[k]]
        if changed:
            raise TrainingError(
                f"cannot resume from {directory}: the checkpoint was trained with "
                "other settings ("
                + "; ".join(
                    f"{option_name(k)} {theirs[k]!r}, now {ours[k]!r}" for k in changed
                )
                + "); give the same values, or train from the start without resume"
            )
        if done > epochs:
            raise TrainingError(
                f"cannot resume from {directory}: its checkpoint is at epoch {done}, "
                f"past --epochs {epochs}; give --epochs {done} or more"
            )
        planned = int(state.get("schedule_epochs") or theirs["epochs"])
        if planned != epochs:
            if not self.config.lr_decay:
                how = "the learning rate is constant"
            elif epochs > planned:
                how = (
                    f"the learning rate keeps that run's {planned}-epoch cosine "
                    f"decay, then stays at its final value ({LR_FLOOR:.0%}) for "
                    f"epochs {planned + 1}..{epochs}"
                )
            else:
                how = (
                    f"the learning rate keeps that run's {planned}-epoch cosine "
                    f"decay, so it stops before the rate has decayed"
                )
            logger.warning(
                "resuming a run planned for %d epochs to %d epochs: %s",
                planned,
                epochs,
                how,
            )
        return planned

    def _restore(self, checkpoint_dir, state):
        directory = Path(checkpoint_dir)
        model_path = directory / state["model"]
        try:
            saved = keras.saving.load_model(model_path, compile=False, safe_mode=True)
        except Exception as exc:
            raise TrainingError(
                f"cannot resume: checkpoint {model_path} is unreadable: {exc}"
            ) from exc
        self.network.set_weights(saved.get_weights())
        ae_state, disc_state = load_optimizer_arrays(directory / state["optimizers"])
        net = self.network
        if ae_state:
            restore_optimizer(
                net.ae_optimizer, net.ae_variables, ae_state, "autoencoder"
            )
        if disc_state:
            restore_optimizer(
                net.disc_optimizer,
                net.discriminator.trainable_variables,
                disc_state,
                "discriminator",
            )
        epoch = int(state["epoch"])
        logger.info("resuming from %s after epoch %d", directory, epoch)
        return epoch, {k: list(v) for k, v in state.get("history", {}).items()}

    # -- attribute calibration -------------------------------------------------
    def calibrate(self, dataset, *, rng=None, candidates=None):
        """Fit the monotone map attribute -> z0 per bundle and a latent bank.

        Uses scikit-learn's isotonic regression on the encodings of ``dataset``
        (the training split; at most :data:`CALIBRATION_PER_BUNDLE` streamlines
        of each bundle, a seeded sample); for an attribute that is one value
        per subject (``ar_level="subject"`` and one value for all of a
        subject's streamlines, e.g. age), a local linear
        regression of the subjects' mean z0 on their values, made monotone
        (:func:`_subject_calibration`). Stores knots in the metadata; also
        keeps a sample of encodings per bundle for sampling near the data
        (the latent bank), with each code's subject and every subject's mean
        code over the bundle's sample, so that generation can tell the
        variation between subjects from that within one, and, for a
        per-subject attribute, each subject's :data:`SPREAD_QUANTILES`
        quantiles of ``z0`` around its mean over the sample (see
        :func:`aae_tract.generate.sample_latent`), and the spread of the
        bundle's placement over the training subjects
        (:func:`aae_tract.placement.placement_spread`).

        ``candidates``: that of the generation whose bank noise the
        calibration sets (:func:`aae_tract.bank_noise.calibrate_noise`);
        None: generation's default.
        """
        from sklearn.isotonic import IsotonicRegression

        from aae_tract.placement import placement_spread

        rng = rng or np.random.default_rng(self.config.seed)
        labels, sample, attribute, subjects = _bundle_sample(
            dataset, CALIBRATION_PER_BUNDLE, self.config.seed
        )
        z = self.encode_prepared(sample)
        per_subject = self.config.ar_level == "subject"
        calibration, bank = {}, {}
        for i, name in enumerate(self.bundle_names):
            mask = labels == i
            if mask.sum() < 2:
                continue
            a, z0 = attribute[mask], z[mask, 0].astype("float64")
            x = np.unique(np.quantile(a, np.linspace(0, 1, CALIBRATION_KNOTS)))
            one_each = per_subject and _one_value_each(a, subjects[mask])
            if one_each:
                y = _subject_calibration(a, z0, subjects[mask], x)
            else:
                iso = IsotonicRegression(increasing=True, out_of_bounds="clip")
                y = np.maximum.accumulate(iso.fit(a, z0).predict(x))
            if np.ptp(a) > 0:
                slope = float(max(np.polyfit(a, z0, 1)[0], 0.0))
            else:
                slope = 0.0
            calibration[name] = {"x": x.tolist(), "y": y.tolist(), "slope": slope}
            keep = np.flatnonzero(mask)
            if len(keep) > LATENT_BANK_SIZE:
                keep = np.sort(rng.choice(keep, LATENT_BANK_SIZE, replace=False))
            subject, means = _subject_means(z[mask], subjects[mask])
            keep_in_bundle = np.searchsorted(np.flatnonzero(mask), keep)
            bank[name] = {
                "z": z[keep].astype("float32").round(5).tolist(),
                "a": attribute[keep].astype("float32").round(4).tolist(),
                "subject": subject[keep_in_bundle].tolist(),
                "subject_means": means.astype("float32").round(5).tolist(),
            }
            if one_each:
                spread = _subject_spread(z0, subject, means[:, 0])
                bank[name]["subject_spread"] = (
                    spread.astype("float32").round(5).tolist()
                )
        self.metadata.calibration = calibration
        self.metadata.latent_bank = bank
        self._texture_bounds = {}
        for name in bank:
            # how the bundle's placement varies across the training subjects
            placement_spread(self, name, quiet=True)
        if not per_subject:
            self._calibrate_bank_noise(
                labels, sample, attribute, subjects, rng, candidates
            )
        if self.metadata.space:
            self.metadata.space = {
                **self.metadata.space,
                "holds_data": _holds(self.metadata.space, sample),
            }
        return calibration

    def _calibrate_bank_noise(
        self, labels, sample, attribute, subjects, rng, candidates=None
    ):
        """Set each bundle's bank noise per length band from its training
        subjects (:func:`aae_tract.bank_noise.calibrate_noise`), kept in its
        latent bank."""
        from aae_tract.bank_noise import BANK_KEY, calibrate_noise

        for name, bank in self.metadata.latent_bank.items():
            mask = labels == self.bundle_index(name)
            record = calibrate_noise(
                self,
                name,
                np.asarray(take(sample, np.flatnonzero(mask))),
                subjects[mask],
                attribute[mask],
                rng=rng,
                candidates=candidates,
            )
            bank[BANK_KEY] = record
            if record:
                logger.info(
                    "%s: bank noise %s at lengths %s mm (generated streamlines "
                    "%g x as far from the training ones as a new subject's: "
                    "%s mm)",
                    name,
                    " ".join(f"{v:.2f}" for v in record["value"]),
                    " ".join(f"{v:.0f}" for v in record["at"]),
                    record["target"],
                    " ".join(f"{v:.1f}" for v in record["reference_mm"]),
                )

    def fit_labeller(self, train, validation=None):
        """Describe each bundle in the latent space for bundle recognition.

        See :func:`aae_tract.label.fit_labeller` (called by :meth:`fit`).
        """
        from aae_tract.label import fit_labeller

        return fit_labeller(self, train, validation)

    def label(self, streamlines, **options):
        """Label streamlines with the model's bundles or "other".

        See :func:`aae_tract.label.label_streamlines`.
        """
        from aae_tract.label import label_streamlines

        return label_streamlines(self, streamlines, **options)

    def attribute_to_z0(self, bundle, values):
        """Latent dim 0 for attribute ``values`` of ``bundle`` (calibrated map).

        Inside the training range the calibrated map is interpolated; outside,
        it is extended linearly with the bundle's overall slope.
        """
        name = self.bundle_names[self.bundle_index(bundle)]
        cal = self.metadata.calibration.get(name)
        if cal is None:
            raise AAETractError(
                f"the model has no attribute calibration for {name!r}: train it "
                "(fit() calibrates) before generating"
            )
        x, y, slope = np.asarray(cal["x"]), np.asarray(cal["y"]), cal["slope"]
        values = np.asarray(values, dtype="float64")
        out = np.interp(values, x, y)
        out = np.where(values < x[0], y[0] + slope * (values - x[0]), out)
        out = np.where(values > x[-1], y[-1] + slope * (values - x[-1]), out)
        return out.astype("float32")

    # -- saving and loading ------------------------------------------------------
    def save(self, path):
        """Write the model to a ``.keras`` file (atomically).

        The archive holds Keras's own files plus ``aae_tract.json`` with the
        metadata. Nothing is pickled.
        """
        path = Path(path)
        if path.suffix != ".keras":
            raise ModelFileError(f"{path}: model files must end in .keras")
        self.metadata.validate(source=str(path))

        def write(tmp):
            self.network.save(tmp)
            with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(METADATA_MEMBER, json.dumps(self.metadata.to_dict()))

        write_atomic(path, write, error=ModelFileError)
        logger.info("model written to %s", path)
        return path

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        Keras loads in safe mode (no arbitrary code, e.g. Lambda layers); the
        metadata is validated before use.

        Raises
        ------
        ModelFileError
            Missing, not a model file, corrupt, unsafe, or inconsistent.
        """
        path = Path(path)
        payload, networks = read_model_file(path)
        metadata = ModelMetadata.from_dict(payload, source=str(path))
        _check_network_config(
            path, networks, AAEConfig.from_dict(metadata.config).network_config()
        )
        try:
            network = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:
            raise ModelFileError(
                f"{path}: the networks cannot be loaded: {exc}"
            ) from exc
        if not isinstance(network, ConditionalAAE):
            raise ModelFileError(
                f"{path}: holds a {type(network).__name__}, not an aae_tract model"
            )
        saved = AAEConfig.from_dict(metadata.config).network_config()
        if network.config.network_config() != saved:
            raise ModelFileError(f"{path}: networks and metadata disagree")
        return cls(network, metadata)


#: Keys Keras itself may add to the networks' configuration.
_KERAS_CONFIG_KEYS = ("name", "trainable", "dtype")


def _replica(network):
    """A copy of ``network`` built in the current replication scope."""
    copy = ConditionalAAE(**network.config.network_config())
    _copy_state(network, copy)
    return copy


def _copy_state(source, target):
    """Give ``target`` the weights, warm-up scale and seed states of ``source``."""
    target.set_weights(source.get_weights())
    target.reg_scale.assign(keras.ops.convert_to_numpy(source.reg_scale))
    for theirs, ours in zip(
        parallel.seed_states(source), parallel.seed_states(target), strict=True
    ):
        ours.assign(keras.ops.convert_to_numpy(theirs))


def _copy_optimizers(source, target):
    """Load the state of ``source``'s two optimizers into ``target``'s."""
    restore_optimizer(
        target.ae_optimizer,
        target.ae_variables,
        optimizer_state(source.ae_optimizer),
        "autoencoder",
    )
    restore_optimizer(
        target.disc_optimizer,
        target.discriminator.trainable_variables,
        optimizer_state(source.disc_optimizer),
        "discriminator",
    )


def _non_finite_error(bad, checkpoint_dir):
    """The TrainingError for a loss that became NaN or infinite."""
    key, value, batch = bad
    if not checkpoint_dir:
        where = "no checkpoint was kept (no checkpoint folder was given)"
    elif read_checkpoint_state(checkpoint_dir) is None:
        where = f"no epoch had finished, so {checkpoint_dir} holds no checkpoint"
    else:
        where = f"the last good checkpoint is in {checkpoint_dir}"
    return TrainingError(
        f"training stopped: {key} became {value} at batch {batch}; "
        f"{where}. Check the training data for NaN/inf values, or try a "
        "lower --learning_rate or loss weights."
    )


def _check_network_config(path, config, expected):
    """Refuse a ``config.json`` that would build anything but the networks the
    validated metadata describes, before Keras builds (and allocates) it."""
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: not an aae_tract model (no network config)")
    kind = config.get("registered_name") or config.get("class_name")
    if (
        config.get("class_name") != ConditionalAAE.__name__
        or kind not in (ConditionalAAE.__name__, "aae_tract>ConditionalAAE")
        or not str(config.get("module", "aae_tract.")).startswith("aae_tract.")
    ):
        what = config.get("registered_name") or (
            f"{config.get('module')}.{config.get('class_name')}"
        )
        raise ModelFileError(f"{path}: holds a {what}, not an aae_tract model")
    inner = config.get("config")
    if not isinstance(inner, dict):
        raise ModelFileError(f"{path}: networks and metadata disagree")
    unknown = sorted(set(inner) - set(expected) - set(_KERAS_CONFIG_KEYS))
    try:  # fields a model file from an older aae_tract lacks take their defaults
        theirs = AAEConfig.from_stored(
            {k: v for k, v in inner.items() if k in expected}
        ).network_config()
    except (AAETractError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid network config: {exc}") from exc
    different = sorted(k for k, v in expected.items() if theirs[k] != v)
    if unknown or different:
        raise ModelFileError(
            f"{path}: networks and metadata disagree ({', '.join(different + unknown)})"
        )
