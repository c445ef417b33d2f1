"""Bundle recognition with a trained model: which bundle is each streamline?

A model that generates bundles also knows where each bundle's streamlines
sit in its latent space. :func:`fit_labeller` (run by
:meth:`~aae_tract.model.TractAAE.fit` after training) describes every
bundle's encodings by a Gaussian (mean and Ledoit-Wolf shrunk covariance of
the training encodings) and stores them, with two rejection thresholds and
a reach per bundle, as JSON in the model's metadata. :func:`label_streamlines`
then labels the streamlines of a new tractogram:

1. each streamline is resampled to the model's points and compared with
   every bundle's orientation reference (the streamline the bundle's
   training streamlines were turned to run like): the mean distance over 12
   equally spaced points, in the closer point order. A bundle whose reach
   (:data:`GATE_FACTOR` times the farthest that its training and held-out
   streamlines lie from its reference, of a sample of at most
   :data:`LABELLER_PER_BUNDLE` of each) the streamline is past is not
   considered for it, as RecoBundles first keeps only the streamlines near
   its model bundle; a streamline past every bundle's reach is ``"other"``
   and is not encoded at all. A bundle without an orientation reference,
   and every bundle of a labeller stored before reaches existed (version
   1), is within reach of every streamline;
2. the streamline is encoded in the point order each remaining bundle
   gives it (a bundle's streamlines were oriented to its reference before
   training; once if they agree, in both orders otherwise); among those
   bundles, the one with the largest posterior (Gaussian likelihood of the
   code times the bundle's share of the training streamlines) is its
   candidate, the posterior its confidence. The first order is that of
   the bundle whose reach the streamline is deepest inside; a streamline
   that order puts well inside one of its bundles (squared latent distance
   below :data:`SETTLE_BELOW` of the bundle's threshold) is not encoded in
   the other order;
3. the streamline is labelled ``"other"`` when it is an outlier of its
   candidate: its squared Mahalanobis distance to the bundle's encodings, or
   (where it is tested) the distance between the streamline and its
   reconstruction with the candidate's label (mean point distance, mm),
   exceeds the bundle's threshold. The reconstruction, the costliest step,
   is tested only where the latent distance is unsure: for streamlines
   whose squared distance is at least :data:`DECODE_FROM` of the threshold
   and within it; nearer ones are accepted on the latent distance alone
   (with ``reject="latent"`` only the Mahalanobis distance counts and
   nothing is decoded). Each threshold is the :data:`LABEL_QUANTILE` quantile of a
   log-normal distribution fitted (median and median absolute deviation of
   the logarithms, which a few outliers do not move) to that number over
   the validation subjects' streamlines of the bundle (subjects the model
   did not train on), or, without enough of them, over training
   streamlines (Mahalanobis distances out of fold), or their own
   :data:`EMPIRICAL_QUANTILE` quantile where that is larger (a tail heavier
   than a log-normal's, as a fanning bundle has). A fitted tail, rather
   than the largest value seen, because a new subject's streamlines spread
   a little more than those of the one or two validation subjects.

Streamlines are labelled block by block, so a tractogram of millions of
streamlines is labelled in bounded memory; the next block is read and
resampled in a background thread while one is labelled.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np

from aae_tract.errors import AAETractError, DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_QUANTILE",
    "OTHER",
    "REJECT_RULES",
    "DECODE_FROM",
    "SETTLE_BELOW",
    "PRECISIONS",
    "Labeller",
    "fit_labeller",
    "label_precision",
    "label_prepared",
    "label_streamlines",
]

#: Label of streamlines that belong to none of the model's bundles.
OTHER = "other"
#: What makes a streamline "other": ``"both"``, its latent distance to its
#: bundle or its reconstruction error as that bundle; ``"latent"``, the
#: latent distance alone (nothing is decoded: faster).
REJECT_RULES = ("both", "latent")
#: With ``reject="both"``, the fraction of its bundle's latent threshold (on
#: the squared Mahalanobis distance) from which a streamline is also decoded
#: and its reconstruction error tested; a streamline nearer its bundle is
#: accepted on its latent distance alone. 0 decodes every streamline inside
#: the latent threshold (the rule before this constant). Measured on the
#: phantom's whole-brain tractograms and the embedded default in
#: doc/benchmarks.md ("Decoding only where the latent distance is unsure").
DECODE_FROM = 0.5
#: A streamline within reach of bundles that give it different point orders
#: is encoded first in the order of the bundle whose reach it is deepest
#: inside, and in the other order only when its squared Mahalanobis distance
#: to every bundle of the first order is at least this fraction of that
#: bundle's latent threshold (0: always in both orders, the rule before this
#: constant; 0.25 before 0.35, which changed no label of the recognition
#: benchmark's models where 0.4 and more did). Measured in doc/benchmarks.md
#: ("Encoding once where the first point order settles it", "Settling
#: further out, decoding blocks together").
SETTLE_BELOW = 0.35
#: What the encoder computes in when labelling: ``"auto"`` (bfloat16 where
#: it was measured faster, see :func:`label_precision`), ``"float32"``, or
#: ``"bfloat16"``. Measured in doc/benchmarks.md ("Encoding in bfloat16").
PRECISIONS = ("auto", "float32", "bfloat16")
#: Quantile of the log-normal fitted to held-out streamlines' distances that
#: bounds a bundle.
LABEL_QUANTILE = 0.9999
#: Quantile of the held-out distances themselves below which no threshold is.
EMPIRICAL_QUANTILE = 0.995
#: Encodings per bundle used to fit its Gaussian and its thresholds, at most.
LABELLER_PER_BUNDLE = 5000
#: Fewest validation streamlines of a bundle to set its thresholds on them.
MIN_VALIDATION = 20
#: Streamlines labelled per block (a block's streamlines near a bundle go
#: through the encoder together, in the point orders they need).
LABEL_BLOCK = 32768
#: Streamlines per forward pass when labelling (larger batches labelled faster
#: on a 2-core CPU; ``benchmarks/bench_label_speed.py --batch_size`` times it,
#: doc/benchmarks.md "Encoding in fuller passes" gives the numbers).
LABEL_BATCH = 8192
#: Version of the stored labeller (2: with each bundle's reach,
#: ``max_ref_mm``; a labeller without it considers every bundle for every
#: streamline).
LABELLER_VERSION = 2
#: A bundle's reach is this many times the farthest its training and
#: held-out streamlines lie from its orientation reference.
GATE_FACTOR = 2.0


class Labeller:
    """The stored labeller of a model, ready to score codes.

    Parameters
    ----------
    payload : dict
        ``model.metadata.labeller`` (see :func:`fit_labeller`).
    bundle_names : list of str
        The model's bundles, in label order.
    """

    def __init__(self, payload, bundle_names):
        self.payload = payload
        self.bundle_names = list(bundle_names)
        fitted = payload["bundles"]
        self.index = [i for i, b in enumerate(self.bundle_names) if b in fitted]
        if not self.index:
            raise AAETractError("the model's labeller describes no bundle")
        means, chols, consts, d2_max, recon_max = [], [], [], [], []
        total = sum(float(fitted[self.bundle_names[i]]["prior"]) for i in self.index)
        for i in self.index:
            entry = fitted[self.bundle_names[i]]
            cov = np.asarray(entry["cov"], dtype=np.float64)
            chol = np.linalg.cholesky(cov)
            means.append(np.asarray(entry["mean"], dtype=np.float64))
            # whitening: d2 = |L^-1 (z - mean)|^2
            chols.append(np.linalg.inv(chol))
            logdet = 2.0 * np.log(np.diag(chol)).sum()
            consts.append(math.log(float(entry["prior"]) / total) - 0.5 * logdet)
            d2_max.append(float(entry["max_d2"]))
            recon_max.append(float(entry["max_recon_mm"]))
        self.means = np.stack(means)
        self.whiten = np.stack(chols)
        self.consts = np.asarray(consts)
        self.max_d2 = np.asarray(d2_max)
        self.max_recon = np.asarray(recon_max)
        #: each bundle's reach from its orientation reference (mm); inf: none
        self.max_ref = np.asarray(
            [
                float(fitted[self.bundle_names[i]].get("max_ref_mm", np.inf))
                for i in self.index
            ]
        )

    def d2(self, z, k):
        """Squared Mahalanobis distances of codes ``z`` to fitted bundle ``k``."""
        w = (np.asarray(z, np.float64) - self.means[k]) @ self.whiten[k].T
        return np.einsum("ij,ij->i", w, w)

    def posteriors(self, codes, near=None):
        """Posterior over the fitted bundles and each bundle's distances.

        Parameters
        ----------
        codes : list of ndarray (N, D)
            For each fitted bundle, the codes of the streamlines in the
            point order that bundle gives them.
        near : ndarray of bool (N, K), optional
            The bundles considered for each streamline (default: all). The
            others get posterior 0 and an infinite distance; a streamline
            with none gets posterior 0 everywhere.

        Returns
        -------
        post : ndarray (N, K)
        d2 : ndarray (N, K)
        """
        d2 = np.stack([self.d2(z, k) for k, z in enumerate(codes)], axis=1)
        if near is not None:
            d2[~near] = np.inf
        return self.posteriors_of(d2), d2

    def posteriors_of(self, d2):
        """Posterior over the fitted bundles given each bundle's squared
        Mahalanobis distance ``d2`` (N, K; inf: not considered)."""
        logp = self.consts[None, :] - 0.5 * d2
        top = logp.max(axis=1, keepdims=True)
        post = np.exp(logp - np.where(np.isfinite(top), top, 0.0))
        total = post.sum(axis=1, keepdims=True)
        post /= np.where(total > 0, total, 1.0)
        return post


def _gaussian(z):
    """Mean and Ledoit-Wolf shrunk covariance of codes ``z`` (N, D)."""
    from sklearn.covariance import LedoitWolf

    z = np.asarray(z, dtype=np.float64)
    if len(z) < 2:
        raise AAETractError("a bundle needs at least 2 encodings to be described")
    cov = LedoitWolf().fit(z).covariance_
    # a floor keeps the Cholesky factor finite for near-constant dimensions
    cov += np.eye(cov.shape[0]) * max(1e-6, 1e-6 * float(np.trace(cov)))
    return z.mean(axis=0), cov


def _recon_error(model, x, labels):
    """Mean point distance (mm) between oriented ``x`` and its reconstruction."""
    z = model.encode_prepared(x)
    return z, _recon_distance(model, x, z, labels)


def _recon_distance(model, x, z, labels, batch_size=LABEL_BATCH):
    recon = model.decode(z, labels, batch_size=batch_size)
    return np.linalg.norm(np.asarray(x, np.float32) - recon, axis=-1).mean(axis=1)


def _quantile(values, q):
    """The larger of quantile ``q`` of a log-normal fitted robustly to positive
    ``values`` and their own :data:`EMPIRICAL_QUANTILE` quantile (for tails
    heavier than a log-normal's)."""
    from scipy.stats import norm

    values = np.asarray(values, dtype=np.float64)
    logs = np.log(np.maximum(values, 1e-12))
    centre = float(np.median(logs))
    spread = 1.4826 * float(np.median(np.abs(logs - centre)))
    fitted = float(np.exp(centre + norm.ppf(q) * spread))
    return max(fitted, float(np.quantile(values, EMPIRICAL_QUANTILE)))


def fit_labeller(
    model,
    train,
    validation=None,
    *,
    quantile=LABEL_QUANTILE,
    per_bundle=LABELLER_PER_BUNDLE,
):
    """Describe every bundle in the latent space and set its rejection thresholds.

    Parameters
    ----------
    model : TractAAE
        A trained model.
    train : StreamlineDataset
        Its training split (resampled, oriented, in the model's space).
    validation : StreamlineDataset, optional
        Streamlines the model did not train on (validation subjects): the
        thresholds are set on them where a bundle has at least
        :data:`MIN_VALIDATION`.
    quantile : float, optional
        Quantile of the log-normal fitted to a bundle's held-out distances
        that becomes its threshold.
    per_bundle : int, optional
        Streamlines of each bundle used, at most (a seeded sample).

    Returns
    -------
    dict
        The labeller, also stored in ``model.metadata.labeller``.
    """
    from aae_tract.rows import per_bundle_rows, take

    if not 0.5 <= float(quantile) < 1.0:
        raise AAETractError(f"quantile must be in [0.5, 1), got {quantile!r}")
    seed = model.config.seed
    names = model.bundle_names

    def sample(dataset):
        labels = np.asarray(dataset.labels)
        keep = per_bundle_rows(labels, per_bundle, seed)
        if keep is None:
            return labels, np.asarray(dataset.x, dtype=np.float32)
        return labels[keep], np.asarray(take(dataset.x, keep), dtype=np.float32)

    labels, x = sample(train)
    z, recon = _recon_error(model, x, labels)
    held = None
    if validation is not None and len(validation):
        v_labels, v_x = sample(validation)
        v_z, v_recon = _recon_error(model, v_x, v_labels)
        held = (v_labels, v_z, v_recon, v_x)
    rng = np.random.default_rng(seed)
    bundles, sources = {}, {}
    for i, name in enumerate(names):
        mask = labels == i
        if mask.sum() < 4:
            continue
        mean, cov = _gaussian(z[mask])
        entry = {
            "mean": mean.round(6).tolist(),
            "cov": cov.round(8).tolist(),
            "prior": int(mask.sum()),
            "n": int(mask.sum()),
        }
        v_mask = None if held is None else held[0] == i
        if v_mask is not None and v_mask.sum() >= MIN_VALIDATION:
            d2 = _d2(held[1][v_mask], mean, cov)
            recon_b = held[2][v_mask]
            sources[name] = "validation"
        else:
            d2 = _out_of_fold_d2(z[mask], rng)
            recon_b = recon[mask]
            sources[name] = "training"
        entry["max_d2"] = _quantile(d2, quantile)
        entry["max_recon_mm"] = _quantile(recon_b, quantile)
        entry["thresholds_from"] = sources[name]
        ref = model.metadata.orient_refs.get(name)
        if ref is not None:
            own = [x[mask]] + ([] if v_mask is None else [held[3][v_mask]])
            entry["max_ref_mm"] = _reach(ref, own)
        bundles[name] = entry
    if not bundles:
        raise AAETractError(
            "no bundle has enough training streamlines (4) to be recognised"
        )
    labeller = {
        "version": LABELLER_VERSION,
        "method": "gaussian latent classes within each bundle's reach, "
        "reconstruction and Mahalanobis rejection",
        "quantile": float(quantile),
        "bundles": bundles,
    }
    model.metadata.labeller = labeller
    logger.info(
        "Labeller: %d bundles described in the latent space; 'other' thresholds "
        "at the %g %% quantile of log-normals fitted to %s streamlines",
        len(bundles),
        100 * quantile,
        "validation"
        if set(sources.values()) == {"validation"}
        else "held-out or training",
    )
    return labeller


def _reach(ref, streamlines):
    """:data:`GATE_FACTOR` times the farthest that any of ``streamlines`` (a
    bundle's sampled training and held-out streamlines) lies from the
    bundle's reference (mm, rounded up to 0.01 mm, at least 0.01 mm)."""
    from aae_tract.orientation import reference_distance

    farthest = max(
        float(reference_distance(s, np.asarray(ref))[1].max(initial=0.0))
        for s in streamlines
        if len(s)
    )
    # at least 0.01 mm: a bundle whose streamlines all lie on its reference
    return max(math.ceil(GATE_FACTOR * farthest * 100) / 100, 0.01)


def _d2(z, mean, cov):
    """Squared Mahalanobis distances of codes ``z`` to a Gaussian."""
    w = (np.asarray(z, np.float64) - mean) @ np.linalg.inv(np.linalg.cholesky(cov)).T
    return np.einsum("ij,ij->i", w, w)


def _out_of_fold_d2(z, rng):
    """Squared Mahalanobis distances of each code (at least 4) to a Gaussian
    fitted on the other half of them."""
    first, second = np.array_split(rng.permutation(len(z)), 2)
    d2 = np.empty(len(z))
    d2[second] = _d2(z[second], *_gaussian(z[first]))
    d2[first] = _d2(z[first], *_gaussian(z[second]))
    return d2


def _labeller_of(model):
    payload = getattr(model.metadata, "labeller", None)
    if not payload:
        raise AAETractError(
            "this model file has no labeller (it was trained before bundle "
            "recognition existed): train it again, or fit one with "
            "aae_tract.label.fit_labeller(model, train, validation)"
        )
    return Labeller(payload, model.bundle_names)


def label_precision(precision="auto"):
    """The precision the encoder labels in, ``"auto"`` resolved.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16"}, optional
        ``"auto"``: bfloat16 on a CPU with native bfloat16 (AVX512-BF16 or
        AMX) under the TensorFlow or torch backend, where the encoder ran
        1.6x (TensorFlow) and 2.9x (torch) faster in it and about one label
        in 10,000 changed (all between a bundle and "other"); float32
        elsewhere (JAX, measured slower in bfloat16; a GPU, not measured).
        doc/benchmarks.md, "Encoding in bfloat16", gives the numbers.

    Returns
    -------
    str
        ``"float32"`` or ``"bfloat16"``.

    Raises
    ------
    AAETractError
        For another value.
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise AAETractError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "auto":
        from aae_tract.backend import fast_inference_precision

        return fast_inference_precision()
    return precision


def _check_reject(reject, decode_from=DECODE_FROM, settle_below=SETTLE_BELOW):
    if reject not in REJECT_RULES:
        raise AAETractError(
            f"reject must be one of {', '.join(REJECT_RULES)}, got {reject!r}"
        )
    for name, value in (("decode_from", decode_from), ("settle_below", settle_below)):
        try:
            ok = 0.0 <= float(value) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise AAETractError(f"{name} must be a number from 0 to 1, got {value!r}")


def label_prepared(
    model,
    x,
    *,
    labeller=None,
    batch_size=LABEL_BATCH,
    reject="both",
    decode_from=DECODE_FROM,
    settle_below=SETTLE_BELOW,
    precision="auto",
):
    """Label streamlines already resampled to the model's points, in its space.

    Parameters
    ----------
    model : TractAAE
    x : ndarray, shape (N, n_points, 3)
        RAS+ mm, in the model's (common) space, in any point order.
    labeller : Labeller, optional
        Built from the model when not given.
    batch_size : int, optional
        Streamlines per forward pass.
    reject : {"both", "latent"}, optional
        What makes a streamline "other" (see :data:`REJECT_RULES`).
    decode_from : float, optional
        With ``reject="both"``, the fraction of its bundle's latent
        threshold (squared Mahalanobis distance) from which a streamline is
        decoded and its reconstruction tested (see :data:`DECODE_FROM`; 0:
        every streamline inside the threshold).
    settle_below : float, optional
        A streamline within reach of bundles that give it different point
        orders is encoded in the second order only when its squared latent
        distance to every bundle of the first order is at least this
        fraction of that bundle's threshold (see :data:`SETTLE_BELOW`; 0:
        always in both orders).
    precision : {"auto", "float32", "bfloat16"}, optional
        What the encoder computes in (see :func:`label_precision`).

    Returns
    -------
    labels : ndarray of int, shape (N,)
        Index into ``model.bundle_names``, -1 for "other".
    confidence : ndarray of float, shape (N,)
        The posterior of the bundle given (among the bundles whose reach the
        streamline is inside; for one its first point order settles, among
        those of that order); for "other", how far past its candidate's
        thresholds the streamline is (``1 - 1/ratio``; a streamline already
        past the latent threshold is not decoded, so its ratio is the latent
        one, and one past every bundle's reach is not encoded, so its ratio
        is its distance over the reach of the bundle it is least past).
    """
    labels, confidence, test = _label_block(
        model,
        x,
        labeller=labeller,
        batch_size=batch_size,
        reject=reject,
        decode_from=decode_from,
        settle_below=settle_below,
        precision=precision,
    )
    if test is not None:
        _reconstruction_tests(model, [(labels, confidence, test)], batch_size)
    return labels, confidence


def _label_block(
    model,
    x,
    *,
    labeller=None,
    batch_size=LABEL_BATCH,
    reject="both",
    decode_from=DECODE_FROM,
    settle_below=SETTLE_BELOW,
    precision="auto",
):
    """:func:`label_prepared` less its reconstruction test: the labels and
    confidences as if every streamline decoded passed it, and that test
    (a :class:`_ReconTest`, None when nothing is to be decoded), for
    :func:`_reconstruction_tests` to run, maybe with other blocks' tests."""
    from aae_tract.orientation import reference_distances

    _check_reject(reject, decode_from, settle_below)
    precision = label_precision(precision)
    lab = labeller if labeller is not None else _labeller_of(model)
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), None
    # distance / reach to each bundle (<= 1: near); a bundle without an
    # orientation reference is near every streamline and never flips it
    refs = [model.metadata.orient_refs.get(lab.bundle_names[i]) for i in lab.index]
    has = [k for k, ref in enumerate(refs) if ref is not None]
    flips = np.zeros((n, len(lab.index)), dtype=bool)
    reach = np.zeros((n, len(lab.index)))
    # how deep inside each bundle's reach a streamline is, to choose the
    # point order it is encoded in first: by the fraction of the reach, then
    # (bundles without a reach, e.g. a labeller stored before reaches) by the
    # distance; a bundle without a reference does not choose (inf)
    depth = np.full((n, len(lab.index)), np.inf)
    if has:
        flip, distance = reference_distances(x, [np.asarray(refs[k]) for k in has])
        flips[:, has] = flip
        reach[:, has] = distance / lab.max_ref[has]
        bounded = np.isfinite(lab.max_ref[has])
        depth[:, has] = np.where(bounded, reach[:, has], 0.0) + 1e-9 * distance
    near = reach <= 1.0
    anywhere = near.any(axis=1)
    # each streamline is encoded first in the point order of the nearest
    # bundle in its reach, then in the other order only where a bundle in
    # reach asks for it and the first order did not settle the streamline
    forward = np.zeros((n, model.latent_dims), dtype=np.float32)
    reverse = np.zeros_like(forward)
    done = np.zeros((n, 2), dtype=bool)  # encoded as is, reversed
    d2 = np.full((n, len(lab.index)), np.inf)

    def encode(as_is, flipped):
        if len(as_is) + len(flipped):  # both orders in one pass: fuller batches
            codes = model.encode_prepared(
                np.concatenate([x[as_is], x[flipped, ::-1]]),
                batch_size=batch_size,
                precision=precision,
            )
            forward[as_is] = codes[: len(as_is)]
            reverse[flipped] = codes[len(as_is) :]
            done[as_is, 0] = done[flipped, 1] = True
        # distances only to the bundles in reach (the costly part), each in
        # the point order that bundle gives the streamline
        for k in range(len(lab.index)):
            rows = np.flatnonzero(
                near[:, k] & np.isinf(d2[:, k]) & done[np.arange(n), flips[:, k] * 1]
            )
            if len(rows):
                flip = flips[rows, k, None]
                z = np.where(flip, reverse[rows], forward[rows])
                d2[rows, k] = lab.d2(z, k)

    rows = np.flatnonzero(anywhere)
    depth = np.where(near, depth, np.inf)
    nearest = depth.argmin(axis=1)
    # as is first where no bundle in reach has a reference to choose by
    ranked = np.isfinite(depth[np.arange(n), nearest])
    reversed_first = flips[rows, nearest[rows]] & ranked[rows]
    encode(rows[~reversed_first], rows[reversed_first])
    # the other order, where a bundle in reach gives it and the streamline is
    # not already well inside a bundle (settle_below of its latent threshold;
    # a bundle without a finite threshold settles nothing)
    fraction = np.divide(
        d2,
        lab.max_d2,
        out=np.full_like(d2, np.inf),
        where=np.isfinite(d2) & np.isfinite(lab.max_d2),
    )
    settled = fraction.min(axis=1) < float(settle_below)
    unsettled = anywhere & ~settled & (near & (flips != done[:, 1:2])).any(axis=1)
    rows = np.flatnonzero(unsettled)
    reversed_first = flips[rows, nearest[rows]] & ranked[rows]
    encode(rows[reversed_first], rows[~reversed_first])
    post = lab.posteriors_of(d2)
    # a streamline near no bundle: its candidate is the one it is least past
    best = np.where(anywhere, post.argmax(axis=1), reach.argmin(axis=1))
    rows = np.arange(n)
    labels = np.asarray(lab.index)[best]
    ratio = np.where(anywhere, d2[rows, best] / lab.max_d2[best], reach[rows, best])
    # only streamlines in the outer part of their bundle's latent threshold
    # are decoded: those past it are "other" whatever their reconstruction,
    # those well inside it are accepted (decoding is the costliest step)
    unsure = (ratio <= 1.0) & (ratio >= float(decode_from))
    inside = np.flatnonzero(unsure) if reject == "both" else []
    test = None
    if len(inside):
        flip = flips[inside, best[inside]]
        test = _ReconTest(
            rows=inside,
            x=np.where(flip[:, None, None], x[inside, ::-1], x[inside]),
            z=np.where(flip[:, None], reverse[inside], forward[inside]),
            labels=labels[inside],
            ratio=ratio[inside],
            max_recon=lab.max_recon[best[inside]],
        )
    other = ratio > 1.0
    confidence = np.where(other, 1.0 - 1.0 / np.maximum(ratio, 1.0), post[rows, best])
    return np.where(other, -1, labels).astype(np.int64), confidence, test


class _ReconTest(NamedTuple):
    """The streamlines of one block whose reconstruction is still to be
    tested: their rows in the block, oriented as their bundle gives them,
    their codes in that order, their bundles (model indices), their latent
    ratio and their bundle's reconstruction threshold."""

    rows: np.ndarray
    x: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    ratio: np.ndarray
    max_recon: np.ndarray


def _reconstruction_tests(model, blocks, batch_size):
    """Run the reconstruction tests of ``blocks``, a list of ``(labels,
    confidence, test)`` from :func:`_label_block`, decoding all their
    streamlines together (the decoder is fastest in full batches: a block
    holds a few hundred), and make those it rejects "other" in place, with
    their confidence."""
    tests = [test for _, _, test in blocks]
    x = np.concatenate([t.x for t in tests])
    z = np.concatenate([t.z for t in tests])
    bundles = np.concatenate([t.labels for t in tests])
    recon = _recon_distance(model, x, z, bundles, batch_size)
    start = 0
    for labels, confidence, test in blocks:
        part = recon[start : start + len(test.rows)]
        start += len(test.rows)
        ratio = np.maximum(test.ratio, part / test.max_recon)
        rejected = ratio > 1.0
        labels[test.rows[rejected]] = -1
        confidence[test.rows[rejected]] = 1.0 - 1.0 / ratio[rejected]


def _prefetched(blocks):
    """The items of ``blocks``, each read and resampled in a background
    thread while the one before it is labelled (reading a file and numpy
    release the GIL; the encoder runs meanwhile). Two items are held ahead
    at most (one queued, one read and waiting to be); an error in the
    thread is raised here, where its item would have come, and a caller
    that stops early (or an error here) stops the thread."""
    import queue
    import threading

    done = object()
    ahead = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(entry):
        """Queue ``entry`` unless the caller has stopped; whether it was."""
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read():
        try:
            for item in blocks:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # raised again in the caller's thread
            offer((done, exc))

    thread = threading.Thread(target=read, name="aae_tract-label-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ahead.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _blocks(streamlines, n_points, block, name="streamlines"):
    """Resampled (N, n_points, 3) blocks of any streamline sequence (at most
    ``block`` streamlines each); an AAETractError naming ``name`` for
    streamlines with NaN or inf coordinates (checked before resampling,
    which would turn them into arbitrary numbers)."""
    import nibabel as nib

    from aae_tract.streamlines import resample

    def resampled(chunk, points):
        if not np.isfinite(points).all():
            raise AAETractError(f"{name}: streamlines with NaN or inf coordinates")
        try:
            return resample(chunk, n_points)
        except DatasetError as exc:
            raise AAETractError(f"{name}: {exc}") from None

    if isinstance(streamlines, np.ndarray) and streamlines.ndim == 3:
        for start in range(0, len(streamlines), block):
            chunk = streamlines[start : start + block]
            yield resampled(chunk, chunk)
        return
    if hasattr(streamlines, "blocks") or isinstance(
        streamlines, nib.streamlines.ArraySequence
    ):
        # whole ArraySequences to DIPY's resampling, not one streamline at a time
        parts = (
            streamlines.blocks() if hasattr(streamlines, "blocks") else [streamlines]
        )
        # the parts (a file's chunks) may be smaller than a block: whole
        # blocks keep the forward passes full
        pending, held = [], 0
        # a TractogramStream (with blocks()) has already dropped streamlines
        # with NaN or inf coordinates, and warned
        checked = hasattr(streamlines, "blocks")
        for part in parts:
            for start in range(0, len(part), block):
                chunk = part[start : start + block]
                points = np.zeros((0, 3)) if checked else chunk.get_data()
                pending.append(resampled(chunk, points))
                held += len(pending[-1])
                while held >= block:
                    joined = np.concatenate(pending)
                    yield joined[:block]
                    pending, held = [joined[block:]], held - block
        if held:
            yield np.concatenate(pending)
        return
    chunk = []
    for s in streamlines:
        chunk.append(np.asarray(s, dtype=np.float32))
        if len(chunk) == block:
            yield resampled(chunk, np.concatenate(chunk))
            chunk = []
    if chunk:
        yield resampled(chunk, np.concatenate(chunk))


def label_streamlines(
    model,
    streamlines,
    *,
    register=None,
    name="streamlines",
    batch_size=LABEL_BATCH,
    block=LABEL_BLOCK,
    progress=False,
    reject="both",
    decode_from=DECODE_FROM,
    settle_below=SETTLE_BELOW,
    precision="auto",
):
    """Label each streamline with one of the model's bundles, or "other".

    Parameters
    ----------
    model : TractAAE or str or Path
        A trained model (or its ``.keras`` file).
    streamlines : StatefulTractogram, TractogramStream, sequence or iterable
        RAS+ mm. An iterable (e.g. a lazily loaded tractogram's streamlines)
        is read block by block; so is a
        :class:`~aae_tract.stream.TractogramStream`, which the registration
        also samples without loading the file.
    register : bool, optional
        Bring the streamlines into the model's common space first (SLR of a
        sample of them to the model's common-space bundles). Default: when
        the model was trained with registration.
    name : str, optional
        What to call the streamlines in messages.
    batch_size : int, optional
        Streamlines per forward pass.
    block : int, optional
        Streamlines resampled and labelled at a time.
    progress : bool, optional
        Show a progress bar (on a terminal: not in a log file or a pipe,
        where its redrawn line would pile up).
    reject : {"both", "latent"}, optional
        What makes a streamline "other": its latent distance to its bundle or
        its reconstruction error as that bundle (``"both"``), or the latent
        distance alone (``"latent"``: nothing is decoded, faster).
    decode_from : float, optional
        With ``reject="both"``, only streamlines whose squared latent
        distance is at least this fraction of their bundle's threshold are
        decoded and their reconstruction tested; nearer ones are accepted on
        the latent distance alone (see :data:`DECODE_FROM`; 0: every
        streamline inside the threshold, slower).
    settle_below : float, optional
        A streamline within reach of bundles that give it different point
        orders is encoded in both orders only when the first order (that of
        the bundle whose reach it is deepest inside) leaves its squared
        latent distance at least this fraction of every first-order
        bundle's threshold (see :data:`SETTLE_BELOW`; 0: always both,
        slower).
    precision : {"auto", "float32", "bfloat16"}, optional
        What the encoder computes in. ``"auto"``: bfloat16 where it was
        measured faster (a CPU with native bfloat16, TensorFlow or torch),
        else float32; ``"float32"`` gives labels that do not depend on the
        CPU's bfloat16 support (see :func:`label_precision`).

    Returns
    -------
    labels : ndarray of str, shape (N,)
        A bundle name of the model, or ``"other"``.
    confidence : ndarray of float, shape (N,)
        Posterior probability of the bundle given, among the bundles whose
        reach the streamline is inside (for one its first point order
        settles, see ``settle_below``, among those of that order;
        ``"other"``: how far the streamline lies past its nearest bundle's
        thresholds, 0 to 1; past the latent
        threshold it is not decoded, so only the latent distance counts, and
        past every bundle's reach it is not encoded, so only that distance
        counts).

    Raises
    ------
    AAETractError
        The model has no labeller, or the streamlines are not in RAS+ mm.
    """
    from tqdm.auto import tqdm

    from aae_tract.model import TractAAE
    from aae_tract.rows import apply_affine

    _check_reject(reject, decode_from, settle_below)
    precision = label_precision(precision)
    if not isinstance(model, TractAAE):
        model = TractAAE.load(model)
    lab = _labeller_of(model)
    if hasattr(streamlines, "to_rasmm"):
        streamlines.to_rasmm()
        streamlines = streamlines.streamlines
    registration = model.registration
    if register is None:
        register = registration.active
    matrix = None
    if register and registration.active:
        if not hasattr(streamlines, "__len__"):  # a TractogramStream has both
            streamlines = list(streamlines)
        matrix = registration.register_tractogram(streamlines, name=name)
    if hasattr(streamlines, "size_hint"):  # a TractogramStream: no counting pass
        total = streamlines.size_hint
    else:
        total = len(streamlines) if hasattr(streamlines, "__len__") else None
    names = np.asarray(model.bundle_names + [OTHER])

    def prepared():
        """Each block read, resampled, placed in the model's space and
        checked: in the reader thread, while the block before is labelled."""
        for x in _blocks(streamlines, model.n_points, block, name):
            if matrix is not None:
                x = apply_affine(x, matrix)
            # the input was checked before resampling: a safety net for
            # coordinates that overflow in resampling or registration
            if not np.isfinite(x).all():
                raise AAETractError(
                    f"{name}: streamlines with NaN or inf coordinates after "
                    "resampling or registration"
                )
            yield x

    labels, confidence = [], []
    # the reconstruction tests of the blocks so far, run together once they
    # fill a batch of the decoder (a block holds a few hundred to decode)
    pending, waiting = [], 0
    with tqdm(
        total=total,
        desc="labelling",
        unit="streamline",
        disable=None if progress else True,  # None: off where not a terminal
    ) as bar:
        for x in _prefetched(prepared()):
            idx, conf, test = _label_block(
                model,
                x,
                labeller=lab,
                batch_size=batch_size,
                reject=reject,
                decode_from=decode_from,
                settle_below=settle_below,
                precision=precision,
            )
            labels.append(idx)
            confidence.append(conf)
            if test is not None:
                pending.append((idx, conf, test))
                waiting += len(test.rows)
            if waiting >= batch_size:
                _reconstruction_tests(model, pending, batch_size)
                pending, waiting = [], 0
            bar.update(len(x))
        if pending:
            _reconstruction_tests(model, pending, batch_size)
        if bar.total != bar.n:  # the header's count included skipped streamlines
            done = bar.n
            bar.reset(total=done)  # also resizes a notebook's bar
            bar.update(done)
    if not labels:
        return np.zeros(0, dtype=names.dtype), np.zeros(0)
    return names[np.concatenate(labels)], np.concatenate(confidence)  # -1: other


# ---------------------------------------------------------------------------
# training on unlabelled streamlines (self-training)

#: Smallest posterior with which an unlabelled streamline joins training.
PSEUDO_CONFIDENCE = 0.9
#: The ``settle_below`` of the pseudo-labelling: the rule self-training was
#: measured with. :data:`SETTLE_BELOW` rose to 0.35 for labelling speed; on
#: the pseudo-labels it lowered the self-trained models' macro F1 (doc/
#: benchmarks.md, "Settling further out, decoding blocks together"), and
#: pseudo-labelling runs once per training, where speed matters less.
PSEUDO_SETTLE = 0.25
#: How :func:`self_train` trains on the pseudo-labelled streamlines.
SELF_TRAIN_MODES = ("continue", "restart")


def split_labelled(train, fraction, *, seed=0):
    """Keep the labels of a share of each bundle's training streamlines.

    For measuring what labels are worth: the rest of the streamlines lose
    their labels and their bundle's orientation (a seeded half of them is
    reversed), as streamlines of an unlabelled tractogram have neither.

    Parameters
    ----------
    train : StreamlineDataset
    fraction : float
        Share of each bundle's streamlines that keep their label, in (0, 1]
        (at least 2 per bundle are kept).
    seed : int, optional

    Returns
    -------
    labelled : StreamlineDataset
    unlabelled : dict
        ``x`` (N, n_points, 3) float32, ``lengths`` and ``subjects`` of the
        others.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise AAETractError(f"label_fraction must be in (0, 1], got {fraction!r}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(train.labels)
    keep = np.zeros(len(labels), dtype=bool)
    for b in np.unique(labels):
        rows = np.flatnonzero(labels == b)
        n = min(len(rows), max(2, int(round(fraction * len(rows)))))
        keep[rng.choice(rows, n, replace=False)] = True
    rest = np.flatnonzero(~keep)
    x = np.array(np.asarray(train.x)[rest], dtype=np.float32)
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, ::-1]
    unlabelled = {
        "x": x,
        "lengths": np.asarray(train.lengths)[rest],
        "subjects": np.asarray(train.subjects)[rest],
    }
    return train.subset(np.flatnonzero(keep)), unlabelled


def pseudo_labelled(model, x, *, lengths=None, subjects=None, min_confidence=None):
    """Unlabelled streamlines the model recognises confidently, as a dataset.

    Parameters
    ----------
    model : TractAAE
        Trained, with a labeller.
    x : ndarray (N, n_points, 3)
        Resampled streamlines in the model's space, any point order.
    lengths : ndarray (N,), optional
        Their lengths before resampling (default: measured on ``x``).
    subjects : ndarray of str (N,), optional
        Their subjects (default ``"unlabelled"``).
    min_confidence : float, optional
        Smallest posterior kept (default :data:`PSEUDO_CONFIDENCE`);
        streamlines labelled "other" are never kept.

    Returns
    -------
    dataset : StreamlineDataset
        The kept streamlines, oriented as their bundle, labelled.
    counts : dict
        Streamlines kept per bundle, and ``"not_kept"``.
    """
    from aae_tract.dataset import StreamlineDataset
    from aae_tract.orientation import orient_bundle
    from aae_tract.streamlines import streamline_lengths

    if model.attribute_name != "length":
        raise AAETractError(
            "training on unlabelled streamlines needs a model whose attribute is "
            f"length (this one's is {model.attribute_name!r}: an unlabelled "
            "streamline has no subject value)"
        )
    threshold = PSEUDO_CONFIDENCE if min_confidence is None else float(min_confidence)
    x = np.asarray(x, dtype=np.float32)
    # float32: what a model learns from must not depend on the CPU
    idx, confidence = label_prepared(
        model, x, precision="float32", settle_below=PSEUDO_SETTLE
    )
    keep = (idx >= 0) & (confidence >= threshold)
    rows = np.flatnonzero(keep)
    kept = np.array(x[rows], copy=True)
    labels = idx[rows].astype(np.int32)
    for i, name in enumerate(model.bundle_names):
        ref = model.metadata.orient_refs.get(name)
        mask = labels == i
        if ref is not None and mask.any():
            kept[mask] = orient_bundle(kept[mask], np.asarray(ref, np.float32))
    if lengths is None:
        lengths = streamline_lengths(x)
    lengths = np.asarray(lengths, dtype=np.float32)[rows]
    if subjects is None:
        subjects = np.full(len(x), "unlabelled")
    dataset = StreamlineDataset(
        x=kept,
        labels=labels,
        attribute=lengths.copy(),
        lengths=lengths,
        subjects=np.asarray(subjects).astype(str)[rows],
        bundle_names=model.bundle_names,
        attribute_name="length",
        n_points=model.n_points,
        space=dict(model.metadata.space or {}),
        orient_refs={
            k: np.asarray(v, np.float32) for k, v in model.metadata.orient_refs.items()
        },
        registration=model.registration,
    )
    counts = {n: int((labels == i).sum()) for i, n in enumerate(model.bundle_names)}
    counts["not_kept"] = int(len(x) - len(rows))
    return dataset, counts


def concatenate(first, second):
    """Two datasets of the same bundles and points as one (in memory)."""
    from aae_tract.dataset import StreamlineDataset

    if list(first.bundle_names) != list(second.bundle_names):
        raise AAETractError("datasets of different bundles cannot be joined")
    return StreamlineDataset(
        x=np.concatenate([np.asarray(first.x), np.asarray(second.x)]),
        labels=np.concatenate([first.labels, second.labels]).astype(np.int32),
        attribute=np.concatenate([first.attribute, second.attribute]),
        lengths=np.concatenate([first.lengths, second.lengths]),
        subjects=np.concatenate(
            [np.asarray(first.subjects).astype(str), second.subjects.astype(str)]
        ),
        bundle_names=list(first.bundle_names),
        attribute_name=first.attribute_name,
        n_points=first.n_points,
        space=dict(first.space),
        orient_refs=dict(first.orient_refs),
        registration=first.registration,
    )


def self_train(
    model,
    train,
    validation,
    unlabelled,
    *,
    epochs,
    min_confidence=None,
    mode="continue",
    **fit_options,
):
    """Train on the unlabelled streamlines the model recognises.

    Self-training (pseudo-labelling): the trained model labels the
    unlabelled streamlines; those it gives a bundle with at least
    ``min_confidence`` join the labelled ones, oriented as their bundle, and
    a model is trained on the larger set for ``epochs`` epochs; its labeller
    is fitted again on the larger set (the thresholds on ``validation``).

    Parameters
    ----------
    model : TractAAE
        Trained on ``train``: the teacher that labels ``unlabelled``.
    train, validation : StreamlineDataset
    unlabelled : dict
        ``x`` (N, n_points, 3) in the model's space, optional ``lengths``
        and ``subjects`` (see :func:`split_labelled`).
    epochs : int
        Epochs of the training on the larger set.
    min_confidence : float, optional
        See :func:`pseudo_labelled`.
    mode : {"continue", "restart"}, optional
        ``"continue"`` (default): ``model`` itself trains further (new
        optimizer state, the configured schedule; its normalisation and
        bundle statistics stay those of ``train``). ``"restart"``: a new
        model with ``model``'s hyperparameters, its normalisation and bundle
        statistics fitted on the larger set, trained from its first epoch
        (``model`` is left as it was). On the recognition benchmark the two
        label alike (doc/benchmarks.md, "Self-training: a new model or the
        same one"); continuing for half the epochs costs half the time.
    **fit_options
        Passed to :meth:`TractAAE.fit` (``verbose``, ``callbacks``, ...).

    Returns
    -------
    model : TractAAE
        The self-trained model (``model`` itself when ``mode="continue"``).
    history : dict
        Of the training on the larger set.
    report : dict
        Streamlines added per bundle and left out, the mode and epochs; also
        stored in the returned model's ``metadata.training["self_training"]``.
    """
    if mode not in SELF_TRAIN_MODES:
        raise AAETractError(
            f"self-training mode must be one of {', '.join(SELF_TRAIN_MODES)}, "
            f"got {mode!r}"
        )
    extra, counts = pseudo_labelled(
        model,
        unlabelled["x"],
        lengths=unlabelled.get("lengths"),
        subjects=unlabelled.get("subjects"),
        min_confidence=min_confidence,
    )
    logger.info(
        "Self-training: %d of %d unlabelled streamlines recognised with "
        "confidence >= %g (%s) join the %d labelled ones; %s training, %d epochs",
        len(extra),
        len(unlabelled["x"]),
        PSEUDO_CONFIDENCE if min_confidence is None else min_confidence,
        ", ".join(f"{k} {v}" for k, v in counts.items() if k != "not_kept"),
        len(train),
        "new" if mode == "restart" else "further",
        epochs,
    )
    combined = concatenate(train, extra) if len(extra) else train
    if mode == "restart":
        from aae_tract.model import TractAAE

        model = TractAAE.from_dataset(combined, model.config)
    history = model.fit(combined, validation, epochs=int(epochs), **fit_options)
    report = {
        "labelled": int(len(train)),
        "unlabelled": int(len(unlabelled["x"])),
        "added": counts,
        "min_confidence": PSEUDO_CONFIDENCE
        if min_confidence is None
        else float(min_confidence),
        "epochs": int(epochs),
        "mode": mode,
    }
    model.metadata.training["self_training"] = report
    return model, history, report
