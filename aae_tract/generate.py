"""Generating streamlines of a bundle at a requested attribute value.

For a bundle ``b`` and a target value ``a`` (a streamline length in mm, or a
per-subject value such as age for a model trained on one), latent codes are
sampled, latent dimension 0 is set from the model's monotone calibration
``a -> z0`` of bundle ``b``, and the codes are decoded with the one-hot of
``b``. The result is returned as arrays and as a
:class:`~dipy.io.stateful_tractogram.StatefulTractogram` in the space of the
training data, ready for :func:`aae_tract.io.save_tractogram`.

Two ways of sampling the other latent dimensions are offered (the default
depends on the model, :func:`default_sampling`):

``"bank"`` (the default of a model conditioned on another attribute, such as
age, or with a prior not fitted to each bundle as a mixture)
    Codes of training streamlines of the bundle (the model's latent bank),
    chosen with weights that favour streamlines whose attribute is near the
    target (GESTA-style), each moved from its training subject to a new
    subject drawn from the spread of the training subjects (the subjects'
    mean codes compared near the target), plus a little Gaussian noise.
    This stays on the bundle without copying the idiosyncrasies of the
    subjects it was trained on.
``"prior"`` (the default of a length model with the fitted mixture prior,
the default prior for length)
    Samples of the prior ``p(z)`` the adversarial training matched; with a
    prior fitted to each bundle (``prior="fitted"``, ``"fitted_mixture"``),
    of the bundle's Gaussian (mixture) given the requested attribute's
    dimension 0, moved to new subjects (and, for a length model, placed as
    new subjects' bundles lie, :func:`default_noises`).

An optional plausibility filter drops streamlines far (MDF) from every
reference streamline of the bundle, or whose length misses the target, and
samples again until exactly the requested number is kept.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from aae_tract.errors import AAETractError
from aae_tract.io import bbox_space
from aae_tract.placement import check_placement_noise, move_placement
from aae_tract.streamlines import nearest_mdf, streamline_lengths

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT",
    "DEFAULT_MAX_EXTRAPOLATION",
    "DEFAULT_NOISE",
    "DEFAULT_PLACEMENT_NOISE",
    "DEFAULT_SUBJECT_NOISE",
    "NOISE_BY_LEVEL",
    "PRIOR_BY_DEFAULT",
    "PRIOR_NOISES",
    "SAMPLING_METHODS",
    "NOISE_SCOPES",
    "SUBJECT_SCOPES",
    "GeneratedBundle",
    "bank_noise_used",
    "bank_options_error",
    "check_target",
    "default_noise",
    "default_sampling",
    "default_noises",
    "draw_streamlines",
    "generate",
    "interpolate",
    "make_tractogram",
    "match_length",
    "nearest_mdf",
    "resolve_noises",
    "resolve_sampling",
    "restyle",
    "sample_latent",
    "target_limits",
]

#: Ways of sampling latent codes (see the module docstring).
SAMPLING_METHODS = ("bank", "prior")
#: Relative noise of "bank" sampling when none is given and the model's
#: calibration set none (:func:`default_noise`), by what the model's
#: attribute regularization orders (``ar_level``): for a per-streamline
#: attribute such as length, 0.225, measured with the subjects compared near
#: the target (``subject_scope``) on the phantom as read; for a per-subject
#: attribute such as age, 0.2, the value its benchmarks were measured with.
NOISE_BY_LEVEL = {"streamline": 0.225, "subject": 0.2}
#: ``noise`` default of generation: None, resolved by
#: :func:`default_noise`.
DEFAULT_NOISE = None
#: Spread of the subjects "bank" sampling moves codes to when none is given
#: (and prior sampling, but of a length model's fitted prior).
DEFAULT_SUBJECT_NOISE = 0.7
#: Spread of the new subjects' placement of a bundle (rigid moves of the
#: generated streamlines, :mod:`aae_tract.placement`), relative to the
#: training subjects', when none is given (but with prior sampling of a
#: length model's fitted prior).
DEFAULT_PLACEMENT_NOISE = 0.0
#: ``subject_noise`` and ``placement_noise`` of prior sampling of a fitted
#: prior of a model conditioned on length when none is given: the samples
#: move to new subjects near the training subjects' centre, and each
#: streamline is placed as a new subject's bundle lies (doc/benchmarks.md,
#: "New subjects' placement").
PRIOR_NOISES = (0.1, 0.9)
#: The value of ``subject_noise`` and ``placement_noise`` that asks for the
#: sampling's default (:func:`default_noises`).
DEFAULT = "default"
#: Where the training subjects' mean codes are compared when codes move to a
#: new subject: near the target value (``"target"``) or over the whole bundle.
SUBJECT_SCOPES = ("target", "bundle")
#: Which bank codes shape "bank" sampling's noise: all the bundle's
#: (``"bundle"``, the default) or those near the target value.
NOISE_SCOPES = ("bundle", "target")
#: Width of the kernel that gives each subject's mean code near a target, in
#: units of the attribute kernel's ``neighbours``.
SUBJECT_KERNEL_FACTOR = 4
#: Weight of a subject's mean code over the whole bundle in its mean near a
#: target, in units of a subject's even share of the kernel's weight (1 / the
#: number of subjects in the bank: 0.02 of the kernel's weight with 4
#: subjects), so that a subject with few codes near the target keeps about
#: its bundle-wide mean however many subjects there are.
SUBJECT_MEAN_PRIOR = 0.08
#: Codes drawn per streamline of a length model, of which the first whose
#: decoded length lies within :data:`CANDIDATE_TOLERANCE` of the target goes
#: on to :func:`match_length` (``candidates`` of :func:`sample_latent`): the
#: less dimension 0 then has to move, the less the decoder makes up the
#: length by curling the streamline's ends (doc/benchmarks.md, "Hooked ends").
DEFAULT_CANDIDATES = 8
#: Relative length error of a candidate code, before the length search, up
#: to which it is taken.
CANDIDATE_TOLERANCE = 0.015
#: ``prior_spread`` of :func:`sample_latent` when not given: the prior's draws
#: with the spread it was fitted with.
DEFAULT_PRIOR_SPREAD = 1.0
#: Largest ``prior_spread`` accepted (draws ten times as spread as the prior's
#: components already decode far off every bundle).
MAX_PRIOR_SPREAD = 10.0
#: Most ``candidates`` accepted.
MAX_CANDIDATES = 64
#: Bisection steps of :func:`match_length`.
_MATCH_ITERATIONS = 12
#: How far :func:`match_length` searches dimension 0 beyond the calibration's
#: range, in units of the range: a quarter on each side; with ``extend``, a
#: code whose target the decoder does not reach there is searched again 1.5
#: ranges out (near the ends of a bundle's range on small data, where the
#: decoder draws the longest streamlines short).
_MATCH_MARGINS = (0.25, 1.5)
#: Relative miss of the median length beyond which generation warns.
MISS_TOLERANCE = 0.10
#: How far beyond the range of the attribute seen in training for a bundle a
#: target may lie, in units of that range's width (:func:`target_limits`):
#: a quarter on each side, as far as the length search reaches
#: (``_MATCH_MARGINS``). Within it generation extrapolates and warns; beyond
#: it the request is refused.
DEFAULT_MAX_EXTRAPOLATION = 0.25


@dataclass
class GeneratedBundle:
    """Streamlines generated for one bundle and one target value.

    Attributes
    ----------
    bundle : str
        The requested bundle.
    target : float
        The requested attribute value (length in mm for a length model).
    attribute_name : str
        Name of the attribute the model is conditioned on (``"length"``,
        ``"age"``, ...).
    streamlines : ndarray of float32, shape (N, n_points, 3)
        Generated streamlines, RAS+ mm.
    lengths : ndarray of float32, shape (N,)
        Length in mm of each generated streamline, measured on the decoded
        points as they are (no smoothing).
    tractogram : dipy.io.stateful_tractogram.StatefulTractogram
        The same streamlines in the training data's space (RAS+ mm).
    acceptance_rate : float
        Fraction of decoded streamlines kept by the filter and the volume
        test (``keep_inside``); 1.0 when neither dropped any.
    z : ndarray of float32, shape (N, latent_dims)
        Latent codes of the kept streamlines (decoded, they give the
        streamlines before any ``placement_noise`` move).
    out_of_range : bool
        The target lies outside the range seen in training for the bundle.
    seen_range : tuple of float
        ``(min, max)`` of the attribute seen in training for the bundle.
    sampling : str
        ``"bank"`` or ``"prior"``.
    filter_settings : dict
        ``max_mdf`` and ``length_tolerance`` used by the filter (empty when
        the filter was off).
    median_length : float
        Median of :attr:`lengths` (mm).
    missed : bool
        For a length model: the median length differs from the target by more
        than :data:`MISS_TOLERANCE` (10 %) of it; a warning said so.
    space : str
        ``"common"`` (the model's common space) or the training subject whose
        native space the streamlines are in.
    """

    bundle: str
    target: float
    attribute_name: str
    streamlines: np.ndarray
    lengths: np.ndarray
    tractogram: object
    acceptance_rate: float
    z: np.ndarray
    out_of_range: bool
    seen_range: tuple
    sampling: str = "bank"
    filter_settings: dict = field(default_factory=dict)
    median_length: float = float("nan")
    missed: bool = False
    space: str = "common"

    def __len__(self):
        return int(len(self.streamlines))

    def save(self, path):
        """Write :attr:`tractogram` (``.trk``, ``.tck`` or ``.trx``), atomically.

        Returns
        -------
        pathlib.Path
            The written file (see :func:`aae_tract.io.save_tractogram`).
        """
        from aae_tract.io import save_tractogram

        return save_tractogram(self.tractogram, path)


# ---------------------------------------------------------------------------
# helpers


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _check_sampling(sampling):
    if not isinstance(sampling, str) or sampling not in SAMPLING_METHODS:
        raise AAETractError(
            f"unknown sampling {sampling!r}: choose one of "
            f"{', '.join(SAMPLING_METHODS)} (or {DEFAULT!r}, the model's "
            "default)"
        )


def default_sampling(model):
    """The sampling generation uses when none is given.

    ``"prior"`` for a model conditioned on length whose prior is a Gaussian
    mixture fitted to each bundle's codes (``prior="fitted_mixture"``, the
    default for length): its components follow the bundle's arc, and on the
    phantom its samples leave fewer length bands of the held-out bundles
    than bank samples do and are newer, on the embedded default newer and
    shaped more like the held-out subject's bundles, though further off in
    two length bands (doc/benchmarks.md,
    "Prior sampling as the default of length models"). ``"bank"``
    otherwise: an age model's fitted prior (one Gaussian per bundle) left
    15-20 of 30 length bands against 2 for bank samples (same section), and
    the other priors do not follow a bundle's arc (``prior`` of
    :class:`~aae_tract.model.config.AAEConfig`).

    Parameters
    ----------
    model : TractAAE

    Returns
    -------
    str
        ``"prior"`` or ``"bank"``.
    """
    prior = model.config.resolved().prior
    if model.attribute_name == "length" and prior == "fitted_mixture":
        return "prior"
    return "bank"


def resolve_sampling(
    model,
    sampling,
    *,
    noise=None,
    noise_scope="bundle",
    prior_spread=DEFAULT_PRIOR_SPREAD,
):
    """``sampling`` checked, with None or :data:`DEFAULT` replaced by the
    model's default (:func:`default_sampling`).

    Parameters
    ----------
    model : TractAAE
    sampling : {"bank", "prior", "default"} or None
    noise : float, optional
        Bank sampling's noise, as given.
    noise_scope : {"bundle", "target"}
        Bank sampling's noise scope, as given.
    prior_spread : float
        Prior sampling's ``prior_spread``, as given (checked).

    Returns
    -------
    str
        ``"bank"`` or ``"prior"``.

    Raises
    ------
    AAETractError
        Any other value; or ``noise`` (or ``noise_scope="target"``) given
        while the sampling, left to the model, is ``"prior"``: they ask for
        bank sampling, which was the default for every model before; or a
        ``prior_spread`` other than 1 while the sampling, left to the model,
        is ``"bank"``. (A sampling asked for by name ignores the other's
        options, so that one set of options can be given to both
        samplings.)
    """
    if sampling is None or _is_default(sampling):
        resolved = default_sampling(model)
        if resolved == "prior":
            error = bank_options_error(
                noise, noise_scope, why=PRIOR_BY_DEFAULT, remedy="pass sampling='bank'"
            )
        else:
            error = prior_options_error(
                prior_spread, why=BANK_BY_DEFAULT, remedy="pass sampling='prior'"
            )
        if error is not None:
            raise error
        return resolved
    _check_sampling(sampling)
    return sampling


#: Why bank sampling's options do not apply when the sampling is left to a
#: length model with the fitted mixture prior.
PRIOR_BY_DEFAULT = (
    "this model samples its prior by default (a length model with the fitted "
    "mixture prior)"
)


#: Why prior sampling's options do not apply when the sampling is left to a
#: model that samples its bank by default.
BANK_BY_DEFAULT = (
    "this model samples near its training encodings by default (bank sampling: "
    "a model conditioned on another attribute than length, or without the "
    "fitted mixture prior)"
)


def prior_options_error(prior_spread, *, why, remedy, name="prior_spread"):
    """The error for prior sampling's ``prior_spread`` given with bank
    sampling (None when it is 1, the prior as fitted); ``why``: why the
    sampling is bank; ``remedy``: how to ask for prior sampling; ``name``:
    how the message names the option."""
    if float(prior_spread) == DEFAULT_PRIOR_SPREAD:
        return None
    return AAETractError(
        f"{name} sets the spread of prior sampling's draws, but {why}: {remedy}, "
        "or leave it out"
    )


def bank_options_error(
    noise, noise_scope, *, why, remedy, names=("noise", "noise_scope='target'")
):
    """The error for bank sampling's options given with prior sampling.

    Parameters
    ----------
    noise : float or None
    noise_scope : str
    why : str
        Why the sampling is prior.
    remedy : str
        How to ask for bank sampling.
    names : (str, str)
        How the message names ``noise`` and ``noise_scope="target"``.

    Returns
    -------
    AAETractError or None
        None when neither option was given.
    """
    given = [
        name
        for name, used in zip(names, (noise is not None, noise_scope == "target"))
        if used
    ]
    if not given:
        return None
    verb = "sets" if len(given) == 1 else "set"
    return AAETractError(
        f"{' and '.join(given)} {verb} bank sampling's noise, but {why}: "
        f"{remedy}, or leave them out"
    )


def _check_within_subject(within_subject):
    """``within_subject`` as True, "own" or False (a clear error otherwise)."""
    if isinstance(within_subject, str) and within_subject == "own":
        return "own"
    if isinstance(within_subject, (bool, np.bool_)):
        return bool(within_subject)
    raise AAETractError(
        f"within_subject must be True, 'own' or False, got {within_subject!r}"
    )


def _bundle_name(model, bundle):
    return model.bundle_names[model.bundle_index(bundle)]


def _bank(model, bundle):
    """The bundle's latent bank: codes, attribute values, and each code's
    subject index with the subjects' mean codes (None for a model file
    written before banks kept subjects)."""
    bank = model.metadata.latent_bank.get(bundle)
    if not bank or not bank.get("z"):
        raise AAETractError(
            f"the model has no latent bank for bundle {bundle!r}: train it (fit() "
            "calibrates and keeps one) or use sampling='prior'"
        )
    z = np.asarray(bank["z"], dtype=np.float32)
    a = np.asarray(bank.get("a", np.zeros(len(z))), dtype=np.float64)
    if bank.get("subject_means"):
        subject = np.asarray(bank["subject"], dtype=np.intp)
        means = np.asarray(bank["subject_means"], dtype=np.float64)
    else:
        subject = means = None
    return z, a, subject, means


_NOTED_NO_SPREAD = set()


def _note_no_spread(model, bundle):
    """Log once per model and bundle that its bank has no subject spread."""
    key = (id(model.metadata), bundle)
    if key not in _NOTED_NO_SPREAD:
        _NOTED_NO_SPREAD.add(key)
        logger.info(
            "%s: the model's calibration kept no subject spread (a file "
            "written before it did): each streamline keeps its own offset in "
            "latent dimension 0; calibrate the model again for the offset at "
            "its rank in a subject of the requested value",
            bundle,
        )


def _bank_spread(model, bundle):
    """The bundle's subjects' quantiles of ``z0`` around their means
    ``(S, Q)``, or None for a model file written before the calibration kept
    them (or a model whose attribute is not one value per subject)."""
    spread = (model.metadata.latent_bank.get(bundle) or {}).get("subject_spread")
    return None if not spread else np.asarray(spread, dtype=np.float64)


def _kernel_weights(values, targets, *, k):
    """Weights ``(T, M)`` favouring bank values near each target.

    A Gaussian kernel on ``|value - target|`` whose width is the distance to the
    ``k``-th nearest value (adaptive, so about ``k`` codes share each target),
    measured from the nearest value (so a target outside the range still picks
    the codes at that end of the range).
    """
    d = np.abs(values[None, :] - targets[:, None])
    d = d - d.min(axis=1, keepdims=True)
    k = int(min(max(k, 1), d.shape[1]))
    h = np.partition(d, k - 1, axis=1)[:, k - 1 : k]
    spread = float(np.ptp(values)) if len(values) > 1 else 0.0
    h = np.maximum(h, 1e-3 * spread + 1e-12)
    w = np.exp(-0.5 * (d / h) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def _kernel_draw(weights, inverse, rng):
    """One bank index per row of ``inverse``, drawn with the kernel weights
    ``weights[inverse[i]]`` of its target."""
    m = weights.shape[1]
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    # one sorted array for all targets: row r occupies (r, r + 1]
    flat = (cdf + np.arange(len(weights))[:, None]).ravel()
    pos = np.searchsorted(flat, inverse + rng.random(len(inverse)), side="left")
    return np.clip(pos - inverse * m, 0, m - 1)


def _bank_noise(bank_z, n, rng):
    """``n`` Gaussian draws with the covariance of the bank's codes.

    A bundle's codes fill only a few directions of the latent space; noise
    shaped by their covariance moves a code along the bundle's own
    directions of variation (to a new streamline of the bundle) instead of
    off them, where the decoder has seen no code.
    """
    d = bank_z.shape[1]
    if len(bank_z) < 2:
        return rng.standard_normal((n, d)).astype(np.float32)
    cov = np.atleast_2d(np.cov(bank_z.astype(np.float64), rowvar=False))
    root = np.linalg.cholesky(cov + 1e-6 * (np.trace(cov) / d + 1e-12) * np.eye(d))
    return (rng.standard_normal((n, d)) @ root.T).astype(np.float32)


def _subject_shift(
    subject,
    means,
    weights,
    inverse,
    idx,
    scale,
    rng,
    *,
    values=None,
    targets=None,
    local=None,
):
    """Move each drawn code from its subject to a new one (``(n, D)`` shifts).

    A code is the sum of its subject's mean code and the streamline's own
    variation. Each draw keeps its streamline's variation and replaces its
    subject's mean by that of a subject that was not seen: the centre of the
    subjects the draw's target weights, plus ``scale`` times a Gaussian draw
    with their weighted covariance around that centre. Streamlines of one
    training subject are so spread over a range of plausible subjects
    (``scale`` 1: as far apart as the training subjects are) instead of
    reproducing that subject's idiosyncrasies, which copying a code does.

    The centre is the subjects' weighted mean; for an attribute that is one
    value per subject (``values``, e.g. age) it is their weighted linear
    regression on the value, evaluated at the target, so that a target near
    the end of the range, where the weights are one-sided, is not pulled
    toward the middle.

    Parameters
    ----------
    subject : ndarray of int, shape (M,)
        Subject of each bank code.
    means : ndarray, shape (S, D)
        Mean code of each subject.
    weights : ndarray, shape (T, M)
        Kernel weights of the bank codes for each distinct target.
    inverse : ndarray of int, shape (n,)
        Target of each draw.
    idx : ndarray of int, shape (n,)
        Bank code of each draw.
    scale : float
        Spread of the new subjects relative to the training subjects'.
    rng : numpy.random.Generator
    values : ndarray, shape (S,), optional
        Each subject's attribute value, for a per-subject attribute.
    targets : ndarray, shape (T,), optional
        The distinct targets (with ``values`` or ``local``).
    local : tuple, optional
        ``(bank_z, bank_a, k)``: compare the subjects near each target
        instead, for a per-streamline attribute (:func:`_local_shift`).
    """
    n_subjects = len(means)
    w = _subject_weights(subject, n_subjects, weights)
    if local is not None and values is None:
        return _local_shift(subject, means, w, inverse, idx, scale, rng, targets, local)
    centre = w @ means
    at_target = centre
    if values is not None:
        # the residuals around the line are mean_s - centre - dv_s * slope
        at_target, slope, dv = _weighted_line(w, values, means, targets)
    shift = at_target[inverse] - means[subject[idx]]
    coef = _draw_coefficients(w, inverse, scale, rng)
    if coef is not None:
        # written without a (draws, subjects, dims) array
        draw = coef @ means - coef.sum(axis=1)[:, None] * centre[inverse]
        if values is not None:
            draw -= np.sum(coef * dv[inverse], axis=1)[:, None] * slope[inverse]
        shift += scale * draw
    return shift


def _draw_coefficients(w, inverse, scale, rng):
    """Coefficients ``(n, S)`` of each draw's new subject, or None.

    A new subject is drawn with the subjects' unbiased weighted covariance
    around their centre: ``sum_s c_s residual_s`` with ``c_s = sqrt(w_s /
    (1 - sum w^2)) eps_s``, ``w`` each subject's weight for the draw's target
    (``w[inverse]``). None where ``scale`` is 0 or there is one subject.
    """
    n_subjects = w.shape[1]
    if not (scale > 0 and n_subjects > 1):
        return None
    concentration = np.sum(w**2, axis=1)
    spread = np.where(concentration < 1.0 - 1e-6, 1.0 - concentration, np.inf)
    return rng.standard_normal((len(inverse), n_subjects)) * np.sqrt(
        w[inverse] / spread[inverse, None]
    )


def _local_subject_means(bank_z, bank_a, subject, means, targets, k):
    """Each subject's mean code near each target, ``(T, S, D)``.

    The kernel-weighted mean (``k`` codes wide, :func:`_kernel_weights`) of
    each subject's bank codes around the target, with the subject's mean
    over the whole bundle counted as :data:`SUBJECT_MEAN_PRIOR` times a
    subject's even share of the kernel's weight, so that a subject with few
    codes near the target keeps about its bundle-wide mean.
    """
    w = _kernel_weights(bank_a, targets, k=k)
    n_subjects = len(means)
    z = bank_z.astype(np.float64)
    sums = np.zeros((len(targets), n_subjects, z.shape[1]))
    share = np.zeros((len(targets), n_subjects))
    present = np.unique(subject)
    for s in present:
        rows = subject == s
        sums[:, s] = w[:, rows] @ z[rows]
        share[:, s] = w[:, rows].sum(axis=1)
    prior = SUBJECT_MEAN_PRIOR / max(len(present), 1)
    return (sums + prior * means[None]) / (share + prior)[:, :, None]


def _local_shift(subject, means, w, inverse, idx, scale, rng, targets, local):
    """:func:`_subject_shift` with the subjects compared near each target.

    How one subject differs from another depends on the streamline: the
    deformation that sets a subject apart moves a short fragment at one end
    of a bundle otherwise than a whole streamline. So each drawn code's
    subject is taken out with that subject's mean code near the target (the
    code's own length, about), and the new subject is placed and spread with
    the subjects' mean codes near the target too
    (:func:`_local_subject_means`); their weights are those of the subjects
    over the target's kernel (``w``), as with the bundle-wide means.
    """
    bank_z, bank_a, k = local
    n_subjects = len(means)
    shift = np.zeros((len(idx), means.shape[1]))
    coef = _draw_coefficients(w, inverse, scale, rng)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(targets) + 1))
    # targets in chunks: the (targets, subjects, dims) array and the kernel's
    # (targets, bank codes) arrays stay under about 4 million numbers each
    step = max(1, int(4_000_000 // max(n_subjects * means.shape[1], len(bank_z), 1)))
    for first in range(0, len(targets), step):
        last = min(first + step, len(targets))
        local_means = _local_subject_means(
            bank_z, bank_a, subject, means, targets[first:last], k
        )
        centre = np.einsum("ts,tsd->td", w[first:last], local_means)
        for t in range(first, last):
            rows = order[starts[t] : starts[t + 1]]
            if not len(rows):
                continue
            at = local_means[t - first]
            shift[rows] = centre[t - first] - at[subject[idx[rows]]]
            if coef is not None:
                c = coef[rows]
                shift[rows] += scale * (
                    c @ at - c.sum(axis=1)[:, None] * centre[t - first]
                )
    return shift


def _subject_weights(subject, n_subjects, weights):
    """Each subject's share ``(T, S)`` of the kernel weights ``(T, M)`` of
    the bank codes (``subject``: each code's subject)."""
    onehot = np.zeros((len(subject), n_subjects))
    onehot[np.arange(len(subject)), subject] = 1.0
    return weights @ onehot


def _weighted_line(w, values, y, targets):
    """Weighted least-squares line of per-subject rows on their values.

    Parameters
    ----------
    w : ndarray, shape (T, S)
        Each subject's weight for each target (rows sum to 1).
    values : ndarray, shape (S,)
        Each subject's attribute value.
    y : ndarray, shape (S, K)
        What is regressed (e.g. the subjects' mean codes).
    targets : array_like, shape (T,)

    Returns
    -------
    at_target : ndarray, shape (T, K)
        The line of each target's weights, evaluated at the target (the
        weighted mean where the weights fall on one value).
    slope : ndarray, shape (T, K)
    dv : ndarray, shape (T, S)
        Each subject's value minus the weighted mean value.
    """
    centre = w @ y
    mean_value = w @ values
    dv = values[None, :] - mean_value[:, None]
    wdv = w * dv
    spread_value = np.sum(wdv * dv, axis=1)
    slope = wdv @ y - wdv.sum(axis=1)[:, None] * centre
    # weights on (nearly) one value: no line, the weighted mean (a division
    # by a rounding-sized spread would give any slope)
    floor = 1e-10 * float(np.ptp(values)) ** 2 if len(values) else 0.0
    slope /= np.where(spread_value > floor, spread_value, np.inf)[:, None]
    at_target = centre + slope * (np.asarray(targets) - mean_value)[:, None]
    return at_target, slope, dv


def _matched_offsets(
    bank_z0, subject, means0, spread, weights, values, targets, inverse, idx
):
    """Offsets in latent dimension 0 of the drawn codes from their new
    subject's centre, at the same rank within a subject of the target's value.

    A streamline's offset from its subject's mean ``z0`` is its variation
    within the subject. How far and how unevenly a subject's streamlines
    spread around its mean changes with the attribute (on the age phantom the
    spread of ``z0`` shrinks with age, and the median offset moves with
    it). Copying a streamline's own offset into a subject of another value
    carries its own subject's spread there. Here each subject's offset
    quantiles (kept by the calibration) are regressed on the subjects'
    values with the target's kernel weights (the line that places the new
    subject's centre, :func:`_subject_shift`), and each drawn code takes the
    offset at its rank within its own subject from that line at the target
    (a code past its subject's outermost quantile: the target's outermost
    quantile plus how far past its own it lies).

    Parameters
    ----------
    bank_z0 : ndarray, shape (M,)
        Dimension 0 of the bank's codes.
    subject : ndarray of int, shape (M,)
        Each code's subject.
    means0 : ndarray, shape (S,)
        Each subject's mean ``z0``.
    spread : ndarray, shape (S, Q)
        Each subject's quantiles of ``z0`` around its mean, at the
        probabilities ``(k + 0.5) / Q``.
    weights : ndarray, shape (T, M)
        Kernel weights of the bank codes for each distinct target.
    values : ndarray, shape (S,)
        Each subject's attribute value.
    targets : ndarray, shape (T,)
    inverse, idx : ndarray of int, shape (n,)
        Target and bank code of each draw.

    Returns
    -------
    ndarray, shape (n,)
    """
    n_quantiles = spread.shape[1]
    grid = (np.arange(n_quantiles) + 0.5) / n_quantiles
    own = bank_z0 - means0[subject]
    # each bank code's rank within its subject, from the subject's quantiles;
    # a code past its subject's outer quantiles keeps how far past it lies
    prob, past = np.empty(len(own)), np.empty(len(own))
    for s in np.unique(subject):
        rows = subject == s
        prob[rows] = np.interp(own[rows], spread[s], grid)
        past[rows] = own[rows] - np.clip(own[rows], spread[s, 0], spread[s, -1])
    w = _subject_weights(subject, len(means0), weights)
    at_target, _, _ = _weighted_line(w, values, spread, targets)
    # quantile lines may cross away from the subjects' values: sorting them
    # again keeps the quantiles' mean
    at_target = np.sort(at_target, axis=1)
    out = np.empty(len(idx))
    for t in np.unique(inverse):
        rows = np.flatnonzero(inverse == t)
        out[rows] = np.interp(prob[idx[rows]], grid, at_target[t])
    return out + past[idx]


def _subject_values(subject, values, n_subjects):
    """Each subject's attribute value: the mean over its bank codes (one value
    per subject for a per-subject attribute such as age; 0 for a subject
    with no code in the bank, which no target weights)."""
    counts = np.bincount(subject, minlength=n_subjects)
    sums = np.bincount(subject, weights=values, minlength=n_subjects)
    return sums / np.maximum(counts, 1)


def _neighbours(model, bank_size):
    """Default width of the bank's attribute kernel (codes per target).

    A sixteenth of the bank (at least 16) for a per-streamline attribute
    (length). A per-subject attribute (age) gives every code of a subject
    the same value, so a sixteenth would draw on the one or two subjects
    nearest in age and copy their idiosyncrasies; a quarter of the bank
    draws on several (measured on one model of the age phantom, 400
    streamlines per value: the worst bundle's slope error 0.35 with a
    sixteenth, 0.22 with a quarter).
    """
    if model.config.ar_level == "subject":
        return max(16, bank_size // 4)
    return max(16, bank_size // 16)


def sample_latent(
    model,
    bundle,
    targets,
    *,
    sampling=DEFAULT,
    noise=DEFAULT_NOISE,
    subject_noise=DEFAULT,
    neighbours=None,
    exact_length=True,
    extend_reach=False,
    within_subject=True,
    subject_scope="target",
    noise_scope="bundle",
    candidates=DEFAULT_CANDIDATES,
    prior_spread=DEFAULT_PRIOR_SPREAD,
    rng=None,
):
    """Latent codes for a bundle, one per target value.

    Parameters
    ----------
    model : TractAAE
        A trained (calibrated) model.
    bundle : str
        Bundle name.
    targets : array_like of float, shape (N,)
        Attribute value of each code.
    sampling : {"bank", "prior", "default"}
        ``"default"``: the model's (:func:`default_sampling`: ``"prior"``
        for a length model with the fitted mixture prior, ``"bank"``
        otherwise). ``"bank"``: codes of training streamlines of the bundle with an
        attribute near the target (of any of its streamlines for a
        per-subject attribute, see ``within_subject``), each moved from its
        subject to a new one (``subject_noise``), plus noise with ``noise**2``
        times the covariance of the bank's codes (``noise_scope``: of all
        the bundle's, or of those near the target); ``"prior"``:
        samples of the prior (of a prior fitted to each bundle: moved to new
        subjects too, ``subject_noise``).
    noise : float, optional
        Relative noise scale for ``"bank"`` sampling. Default: for a length
        model whose calibration set it (:mod:`aae_tract.bank_noise`), the
        bundle's own at each target, interpolated between its length bands,
        with which its streamlines lie about 0.9 times as far from the
        training streamlines as a new subject's do (with
        ``noise_scope="bundle"``); otherwise :func:`default_noise` (0.225
        for a per-streamline attribute such as length, 0.2 for a
        per-subject one such as age).
    subject_noise : float, None or "default"
        For ``"bank"`` sampling of a model trained on several subjects: how
        far the new subjects spread, relative to the training subjects. A
        code's subject mean is replaced by the mean of the subjects near the
        target (for a per-subject attribute such as age, their linear
        regression on it at the target) plus ``subject_noise`` times a draw
        with their covariance. 0 moves every code to the subjects' mean;
        None keeps each code's own subject (copies of training codes up to
        ``noise``), as models saved before banks kept subjects always do.
        For ``"prior"`` sampling of a prior fitted to each bundle
        (``"fitted"``, ``"fitted_mixture"``), whose samples lie where the
        training subjects' codes lie, each sample is given the subject of
        its nearest bank code and moved from it in the same way
        (:func:`_prior_subject_shift`); None keeps the prior's samples.
        ``"default"``: :data:`DEFAULT_SUBJECT_NOISE` (0.7) here; prior
        sampling of a length model's fitted prior through :func:`generate`
        or :func:`draw_streamlines`, which also place its streamlines as new
        subjects' bundles lie (``placement_noise``), takes 0.1 instead
        (:func:`default_noises`).
    neighbours : int, optional
        About how many bank codes share one target value (width of the
        attribute kernel); default a sixteenth of the bank, at least 16 (a
        quarter for a per-subject attribute such as age, where with
        ``within_subject`` it weights the subjects that place the new
        subject, not the codes drawn).
        A wide kernel lets codes of streamlines with other attribute values
        in, which biases the produced attribute toward the bundle's middle;
        a very narrow one draws many streamlines from few codes.
    exact_length : bool
        For a length model, refine dimension 0 of each code kept (of
        ``candidates`` drawn per target) with :func:`match_length` so that
        its decoded streamline has the target length (the calibration maps
        the bundle's typical code, not this code, to the target). False:
        one code per target, dimension 0 at its calibrated value.
    extend_reach : bool
        With ``exact_length``: search a code the decoder does not bring to
        its target within the calibration's range widened by a quarter again
        within 1.5 ranges beyond it on each side (``extend`` of
        :func:`match_length`). Lengths near the ends of a bundle's range
        then come out as asked more often, drawn by codes farther from the
        training codes and shaped less like the real streamlines.
    candidates : int
        With ``exact_length``: codes drawn for each target (all as above),
        of which the first whose decoded length already lies within
        :data:`CANDIDATE_TOLERANCE` (1.5 %) of the target is refined (the
        first drawn where none does). Dimension 0 then moves less: the
        decoder brings a code to a length far from the one its other
        dimensions describe partly by curling the streamline's ends, and
        choosing among a few draws makes such tips rarer (doc/benchmarks.md,
        "Hooked ends"). 1: every code drawn is
        refined (the rule before). At most :data:`MAX_CANDIDATES`.
    within_subject : {True, "own", False}
        For ``"bank"`` sampling of a per-subject attribute such as age
        (a model with ``ar_level="subject"``; default True): give each
        code's dimension 0 the calibrated value plus an offset from the
        centre of its (new) subject, its streamline's variation within a
        subject, with the new subject's draw and the bank noise as in the
        other dimensions. Within one subject dimension 0 varies from
        streamline to streamline (mostly with its length), while the
        calibration maps a value to the subjects' mean. With True, and codes
        moved to new subjects, the offset is the one at the streamline's rank
        within its subject in a subject of the target's value: the line of
        the training subjects' offset quantiles (which the calibration
        keeps) at the target, with the weights that place the new subject
        (:func:`_matched_offsets`), since how widely and how unevenly a
        subject's streamlines spread changes with the attribute (on the age
        phantom the spread narrows with age). ``"own"`` keeps the drawn
        streamline's own offset, carrying its own subject's spread to the
        target (the rule before, and what True does for a model file whose
        calibration kept no quantiles). When codes
        move to new subjects
        (``subject_noise`` not None) the streamlines are drawn from the
        whole bank, since only their variation within their subject is
        kept; the attribute kernel then weights the subjects whose
        regression places the new subject. False sets dimension 0 of every
        code to the calibrated value and draws streamlines near the target,
        as length models always do (the rule before this option). With
        ``"prior"`` sampling of a fitted prior, dimension 0 is drawn around
        the calibrated value with the spread of the bank's codes around
        their subjects' means (the other dimensions then follow it through
        the bundle's Gaussian), with True and ``"own"`` alike; False sets it
        to the calibrated value.
    subject_scope : {"target", "bundle"}
        For a per-streamline attribute such as length, where codes move to
        new subjects: compare the training subjects' mean codes over the bank
        codes near the target (``"target"``, default; a kernel
        :data:`SUBJECT_KERNEL_FACTOR` times ``neighbours`` wide), since how
        subjects differ depends on the streamline, or over the whole bundle
        (``"bundle"``, the rule before). A per-subject attribute (age)
        compares them over the whole bundle either way.
    noise_scope : {"bundle", "target"}
        For ``"bank"`` sampling: the covariance that shapes the noise is that
        of all the bundle's bank codes (``"bundle"``, default; a Gaussian),
        or that of the bank codes near the target (``"target"``; weighted by
        the attribute kernel of ``neighbours``, drawn as the difference of
        two such codes over sqrt(2)). How a bundle's codes vary depends on
        the streamline (short fragments differ in where along the bundle
        they lie, whole streamlines much less), and noise shaped near the
        target moves a code only as the codes of its length vary: the
        samples lie nearer the training streamlines at the same ``noise``,
        and buy less novelty for the shape they give up as it grows
        (doc/benchmarks.md, "Bank noise shaped near the requested length").
        A draw whose two codes are the same one gets no noise: about one in
        the number of codes the kernel weights, more for a narrow kernel
        (small ``neighbours``) or a target beyond the bank's values.
    prior_spread : float
        For ``"prior"`` sampling: a factor (> 0) on the spread of the
        prior's draws about the means of its components, for this draw
        only (the model's prior is not changed). With a prior fitted to
        each bundle the draws come from the bundle's mixture with every
        component's spread times the factor, given dimension 0
        (:meth:`~aae_tract.model.priors.FittedPrior.conditional_numpy`):
        below 1 the other dimensions stay nearer the codes the mixture
        expects at that value: more streamlines lie on the bundle
        (``band_precision``), but they gather in strands that leave parts
        of it empty (``band_recall``) and are less novel; doc/benchmarks.md,
        "Narrower prior draws", keeps 1. At most :data:`MAX_PRIOR_SPREAD`.
        1 (default): the prior as fitted. Bank sampling asked for by name
        ignores it; a value other than 1 is an error when the sampling is
        left to a model that samples its bank by default.
    rng : numpy.random.Generator or int, optional
        Random source.

    Returns
    -------
    ndarray of float32, shape (N, latent_dims)
        Codes with dimension 0 set by :meth:`TractAAE.attribute_to_z0`
        (then refined, with ``exact_length``), plus each streamline's offset
        from its subject's centre with ``within_subject`` and a per-subject
        attribute.
    """
    prior_spread = check_prior_spread(prior_spread)
    sampling = resolve_sampling(
        model, sampling, noise=noise, noise_scope=noise_scope, prior_spread=prior_spread
    )
    within_subject = _check_within_subject(within_subject)
    _check_scope("subject_scope", subject_scope, SUBJECT_SCOPES)
    _check_scope("noise_scope", noise_scope, NOISE_SCOPES)
    candidates = _check_candidates(candidates)
    rng = _rng(rng)
    name = _bundle_name(model, bundle)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    options = dict(
        sampling=sampling,
        prior_spread=prior_spread,
        noise=noise,
        subject_noise=subject_noise,
        neighbours=neighbours,
        within_subject=within_subject,
        subject_scope=subject_scope,
        noise_scope=noise_scope,
    )
    exact = exact_length and model.attribute_name == "length"
    if not exact or candidates == 1 or len(targets) == 0:
        z = _draw_codes(model, name, targets, rng, **options)
    else:
        z = _near_candidates(model, name, targets, candidates, rng, options)
    if exact:
        z = match_length(model, name, z, targets, extend=extend_reach)
    return z


def check_prior_spread(prior_spread):
    """``prior_spread`` as a float.

    Parameters
    ----------
    prior_spread : float

    Returns
    -------
    float

    Raises
    ------
    AAETractError
        Unless it is a number above 0 and at most :data:`MAX_PRIOR_SPREAD`
        (not a bool or a string).
    """
    good = isinstance(prior_spread, numbers.Real) and not isinstance(
        prior_spread, (bool, np.bool_)
    )
    value = float(prior_spread) if good else math.nan
    if not (good and 0 < value <= MAX_PRIOR_SPREAD):
        raise AAETractError(
            f"prior_spread must be a number above 0 and at most "
            f"{MAX_PRIOR_SPREAD:g}, got {prior_spread!r}"
        )
    return value


def _check_candidates(candidates):
    if (
        isinstance(candidates, bool)
        or not isinstance(candidates, numbers.Integral)
        or not 1 <= candidates <= MAX_CANDIDATES
    ):
        raise AAETractError(
            f"candidates must be an integer from 1 to {MAX_CANDIDATES}, got "
            f"{candidates!r}"
        )
    return int(candidates)


def _near_candidates(model, name, targets, candidates, rng, options):
    """Per target, of ``candidates`` codes drawn for it, the first whose
    decoded length already lies within :data:`CANDIDATE_TOLERANCE` of the
    target (before :func:`match_length`); where none does, the first drawn,
    as with one draw (the nearest would then be a code at an extreme of the
    bundle, which the search could not bring to the target either)."""
    n = len(targets)
    pool = _draw_codes(model, name, np.repeat(targets, candidates), rng, **options)
    lengths = model.decoded_lengths(pool, name).reshape(n, candidates)
    near = np.abs(lengths - targets[:, None]) <= CANDIDATE_TOLERANCE * np.abs(
        targets[:, None]
    )
    first = np.where(near.any(axis=1), np.argmax(near, axis=1), 0)
    return pool.reshape(n, candidates, -1)[np.arange(n), first]


def _draw_codes(
    model,
    name,
    targets,
    rng,
    *,
    sampling,
    noise,
    subject_noise,
    neighbours,
    within_subject,
    subject_scope,
    noise_scope,
    prior_spread=DEFAULT_PRIOR_SPREAD,
):
    """The codes of :func:`sample_latent` before :func:`match_length`."""
    if _is_default(subject_noise):
        # the bank's: prior sampling's own default goes with a placement,
        # which draw_streamlines and generate add after decoding
        subject_noise = DEFAULT_SUBJECT_NOISE
    n = len(targets)
    z0 = model.attribute_to_z0(name, targets)
    if n == 0:
        return np.zeros((0, model.latent_dims), dtype=np.float32)
    offset = None
    per_subject = model.config.ar_level == "subject"
    if sampling == "prior":
        spread = (
            _within_subject_spread(model, name)
            if within_subject and per_subject
            else None
        )
        if spread:
            offset = spread * rng.standard_normal(n)
            z = _prior_codes(model, name, z0 + offset, rng, prior_spread)
        else:
            z = _prior_codes(model, name, z0, rng, prior_spread)
        if subject_noise is not None:
            _check_noise("subject_noise", subject_noise)
            z = z + _prior_subject_shift(
                model,
                name,
                z,
                targets,
                float(subject_noise),
                neighbours,
                rng,
                subject_scope=subject_scope,
            )
    else:
        noise = _noise_for(model, name, targets, noise, noise_scope)
        if subject_noise is not None:
            _check_noise("subject_noise", subject_noise)
        bank_z, bank_a, bank_subject, subject_means = _bank(model, name)
        k = neighbours if neighbours is not None else _neighbours(model, len(bank_z))
        unique, inverse = np.unique(targets, return_inverse=True)
        weights = _kernel_weights(bank_a, unique, k=k)
        m = len(bank_z)
        if (
            per_subject
            and within_subject
            and subject_means is not None
            and subject_noise is not None
        ):
            # every code moves to a new subject at the target, so it takes
            # from its own only its variation within that subject: draw it
            # from all the bundle's streamlines, not only those of subjects
            # near the target, whose few distributions would move the
            # generated median from one target to the next
            idx = rng.integers(0, m, n)
        else:
            idx = _kernel_draw(weights, inverse, rng)
        if noise_scope == "target":
            draws = _kernel_draw(weights, np.concatenate([inverse, inverse]), rng)
            shaped = (bank_z[draws[:n]] - bank_z[draws[n:]]) / np.float32(np.sqrt(2))
        else:
            shaped = _bank_noise(bank_z, n, rng)
        z = bank_z[idx] + noise * shaped
        if subject_means is not None:
            values = (
                _subject_values(bank_subject, bank_a, len(subject_means))
                if per_subject
                else None
            )

            local = _local_scope(subject_scope, bank_z, bank_a, k)

            def shift(scale):
                return _subject_shift(
                    bank_subject,
                    subject_means,
                    weights,
                    inverse,
                    idx,
                    scale,
                    rng,
                    values=values,
                    targets=unique,
                    local=local,
                )

            if subject_noise is not None:
                z += shift(float(subject_noise))
            if per_subject and within_subject:
                # the centre of each code's subject: its own, or the new
                # subject's at the target (a shift without its draw)
                centre = subject_means[bank_subject[idx], 0]
                if subject_noise is not None:
                    centre = centre + shift(0.0)[:, 0]
                offset = z[:, 0] - centre
                spread = None
                if subject_noise is not None and within_subject is True:
                    spread = _bank_spread(model, name)
                    if spread is None:
                        _note_no_spread(model, name)
                if spread is not None:
                    # the streamline's own offset -> the offset at its rank
                    # in a subject of the target's value
                    own = bank_z[idx, 0] - subject_means[bank_subject[idx], 0]
                    matched = _matched_offsets(
                        bank_z[:, 0].astype(np.float64),
                        bank_subject,
                        subject_means[:, 0],
                        spread,
                        weights,
                        values,
                        unique,
                        inverse,
                        idx,
                    )
                    offset += matched - own
    z = np.array(z, dtype=np.float32)
    z[:, 0] = z0 if offset is None else z0 + offset
    return z


def _within_subject_spread(model, name):
    """Standard deviation of latent dimension 0 within one subject: of the
    bank codes of bundle ``name`` around their subjects' means (None for a
    prior that is not fitted to each bundle, or a bank without subjects)."""
    bank = model.metadata.latent_bank.get(name) or {}
    prior = model.network.prior
    if not getattr(prior, "per_bundle", False) or not bank.get("subject_means"):
        return None
    z, _, subject, means = _bank(model, name)
    offsets = z[:, 0] - means[subject, 0]
    return float(np.std(offsets)) if len(offsets) > 1 else None


def default_noises(model, sampling):
    """``subject_noise`` and ``placement_noise`` of a sampling when not given.

    Prior sampling of a fitted prior (``"fitted"``, ``"fitted_mixture"``) of
    a model conditioned on length: :data:`PRIOR_NOISES`; any other sampling:
    :data:`DEFAULT_SUBJECT_NOISE` and :data:`DEFAULT_PLACEMENT_NOISE`.

    Parameters
    ----------
    model : TractAAE
    sampling : {"bank", "prior", "default"}
        ``"default"`` (or None): the model's (:func:`default_sampling`).

    Returns
    -------
    (float, float)
    """
    sampling = resolve_sampling(model, sampling)
    fitted = getattr(model.network.prior, "per_bundle", False)
    if sampling == "prior" and fitted and model.attribute_name == "length":
        return PRIOR_NOISES
    return DEFAULT_SUBJECT_NOISE, DEFAULT_PLACEMENT_NOISE


def resolve_noises(model, sampling, subject_noise, placement_noise):
    """``subject_noise`` and ``placement_noise`` with :data:`DEFAULT`
    replaced by the sampling's default (:func:`default_noises`); a
    ``subject_noise`` of None (codes keep their subject) stays None."""
    subject_default, placement_default = default_noises(model, sampling)
    if _is_default(subject_noise):
        subject_noise = subject_default
    if _is_default(placement_noise):
        placement_noise = placement_default
    return subject_noise, placement_noise


def _is_default(value):
    """Whether a noise option asks for its sampling's default (:data:`DEFAULT`)."""
    return isinstance(value, str) and value == DEFAULT


def default_noise(model):
    """The relative noise of ``"bank"`` sampling when none is given and the
    model's calibration set none for the bundle.

    A length model's calibration sets it per bundle and length band from
    its training subjects (:mod:`aae_tract.bank_noise`, for the noise shaped
    by the whole bundle's codes); otherwise (a model file from before, a
    bundle with fewer than three training subjects, the noise shaped near
    the target) it is :data:`NOISE_BY_LEVEL` for the model's ``ar_level``:
    0.225 for a per-streamline attribute (length), 0.2 for a per-subject
    one (age).

    Parameters
    ----------
    model : TractAAE

    Returns
    -------
    float
    """
    return NOISE_BY_LEVEL.get(model.config.ar_level, NOISE_BY_LEVEL["streamline"])


def bank_noise_used(model, bundle, noise=DEFAULT_NOISE, noise_scope="bundle"):
    """The noise "bank" sampling of ``bundle`` uses with these options.

    Parameters
    ----------
    model : TractAAE
    bundle : str
    noise : float, optional
        As :func:`sample_latent`'s.
    noise_scope : {"bundle", "target"}

    Returns
    -------
    float or dict
        ``noise`` when given; otherwise the calibration's noise per length
        band, ``{"at": [lengths], "value": [noises]}``
        (:mod:`aae_tract.bank_noise`), for the noise shaped by the whole
        bundle's codes of a model whose calibration set it, else
        :func:`default_noise`.
    """
    if noise is not None:
        _check_noise("noise", noise)
        return float(noise)
    from aae_tract.bank_noise import calibrated_noise

    name = _bundle_name(model, bundle)
    record = calibrated_noise(model, name) if noise_scope == "bundle" else None
    if record is None:
        return default_noise(model)
    return {"at": record["at"], "value": record["value"]}


def _noise_for(model, name, targets, noise, noise_scope):
    """Bank noise of each code (:func:`bank_noise_used`): a number, or the
    calibrated noise at each target (:func:`aae_tract.bank_noise.noise_at`,
    shape ``(N, 1)``)."""
    from aae_tract.bank_noise import noise_at

    used = bank_noise_used(model, name, noise, noise_scope)
    if isinstance(used, dict):
        return noise_at(used, targets).astype(np.float32)[:, None]
    return used


def _check_noise(what, value):
    """A clear error unless ``value`` is a finite number >= 0."""
    try:
        good = math.isfinite(float(value)) and float(value) >= 0
    except (TypeError, ValueError):
        good = False
    if not good:
        raise AAETractError(f"{what} must be a finite number >= 0, got {value!r}")


def _local_scope(subject_scope, bank_z, bank_a, k):
    """``local`` of :func:`_subject_shift` for ``subject_scope`` (None: the
    whole bundle)."""
    if subject_scope != "target":
        return None
    return bank_z, bank_a, min(len(bank_z), SUBJECT_KERNEL_FACTOR * int(k))


def _check_scope(name, value, choices):
    if value not in choices:
        raise AAETractError(
            f"{name} must be one of {', '.join(choices)}, got {value!r}"
        )


def _prior_subject_shift(
    model, name, z, targets, scale, neighbours, rng, *, subject_scope="target"
):
    """Shifts ``(N, D)`` that move prior samples of bundle ``name`` to new
    subjects, as "bank" sampling moves bank codes.

    A prior fitted to the training codes is fitted to codes of the training
    subjects, so its samples lie where some training subject's streamlines
    lie. Each sample is given the subject of its nearest bank code (in
    units of the bank's spread in each dimension), and that subject's mean
    code is replaced by a new subject's (:func:`_subject_shift`). Zero for a
    prior that is not fitted to each bundle (its samples are no training
    subject's) or a bank without subjects.
    """
    from scipy.spatial import cKDTree

    if not getattr(model.network.prior, "per_bundle", False):
        return np.zeros_like(z)
    bank_z, bank_a, subject, means = _bank(model, name)
    if means is None or len(means) < 2:
        return np.zeros_like(z)
    scale_d = bank_z.std(axis=0) + 1e-6
    _, idx = cKDTree(bank_z / scale_d).query(z / scale_d)
    k = neighbours if neighbours is not None else _neighbours(model, len(bank_z))
    unique, inverse = np.unique(targets, return_inverse=True)
    weights = _kernel_weights(bank_a, unique, k=k)
    per_subject = model.config.ar_level == "subject"
    values = _subject_values(subject, bank_a, len(means)) if per_subject else None
    shift = _subject_shift(
        subject,
        means,
        weights,
        inverse,
        idx,
        scale,
        rng,
        values=values,
        targets=unique,
        local=_local_scope(subject_scope, bank_z, bank_a, k),
    )
    return shift.astype(z.dtype)


def _prior_codes(model, name, z0, rng, spread=DEFAULT_PRIOR_SPREAD):
    """Samples of the prior for bundle ``name``, dimension 0 set to ``z0``.

    With a prior fitted to each bundle (``prior="fitted"`` or
    ``"fitted_mixture"``) the other dimensions are drawn from their
    distribution given ``z0``, so that they go with the attribute value as
    the bundle's codes do; otherwise from the prior. ``spread``: the
    ``prior_spread`` of :func:`sample_latent`.
    """
    prior = model.network.prior
    n = len(z0)
    if not getattr(prior, "per_bundle", False):
        return np.asarray(prior.sample_numpy(n, rng, spread=spread), dtype=np.float32)
    return prior.conditional_numpy(model.bundle_index(name), z0, rng, spread=spread)


def match_length(
    model,
    bundle,
    z,
    targets,
    *,
    extend=False,
    iterations=_MATCH_ITERATIONS,
    batch_size=4096,
):
    """Move latent dimension 0 of each code until it decodes at the target length.

    Latent dimension 0 orders a bundle's streamlines by length (attribute
    regularization), but the decoded length also depends on the other
    dimensions, so the calibration ``length -> z0`` is exact only for the
    bundle's typical code. For each code this bisects ``z0`` within the
    calibration's range (widened by a quarter on each side) until the decoded
    mean streamline has the target length; the decoder draws the streamline,
    nothing is rescaled afterwards. A code whose target lies beyond what the
    decoder reaches in that range keeps its calibrated ``z0``, or, with
    ``extend``, is searched again within 1.5 ranges beyond the calibration's
    on each side (:data:`_MATCH_MARGINS`; codes reached in the first range are
    left as they are) and keeps its calibrated ``z0`` where the target lies
    beyond that too. A code counts as reached where the decoded lengths at
    the two bounds of a range bracket the target: a length that the decoder
    reaches only between them, falling back short of it at the bound, is
    missed.

    Parameters
    ----------
    model : TractAAE
        A calibrated model conditioned on length.
    bundle : str
        Bundle of every code.
    z : ndarray, shape (N, latent_dims)
        Codes with a calibrated dimension 0.
    targets : array_like, shape (N,)
        Target lengths (mm).
    extend : bool
        Search the codes not reached in the first range again, farther out.
    iterations : int
        Bisection steps (each halves the interval; each decodes N codes).
    batch_size : int
        Codes per forward pass.

    Returns
    -------
    ndarray of float32, shape (N, latent_dims)
    """
    z = np.array(z, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if len(z) == 0:
        return z
    low, high = model.attribute_range(bundle)
    ends = model.attribute_to_z0(bundle, np.array([low, high], dtype=np.float64))
    z_low, z_high = float(np.min(ends)), float(np.max(ends))
    span = max(z_high - z_low, 1e-3)
    todo = np.arange(len(z))
    for margin in _MATCH_MARGINS if extend else _MATCH_MARGINS[:1]:
        found, reachable = _bisect_z0(
            model,
            bundle,
            z[todo],
            targets[todo],
            (z_low - margin * span, z_high + margin * span),
            iterations,
            batch_size,
        )
        z[todo[reachable], 0] = found[reachable]
        todo = todo[~reachable]
        if len(todo) == 0:
            break
    return z


def _bisect_z0(model, bundle, z, targets, bounds, iterations, batch_size):
    """Bisect dimension 0 of each code within ``bounds`` for its target length.

    Returns the z0 found and whether the decoded lengths at the two bounds
    bracket the target (where they do not, the z0 found means nothing)."""
    lo = np.full(len(z), bounds[0], dtype=np.float32)
    hi = np.full(len(z), bounds[1], dtype=np.float32)

    def lengths_at(z0):
        trial = z.copy()
        trial[:, 0] = z0
        return model.decoded_lengths(trial, bundle, batch_size=batch_size)

    len_lo, len_hi = lengths_at(lo), lengths_at(hi)
    rising = len_hi >= len_lo
    reachable = (np.minimum(len_lo, len_hi) <= targets) & (
        targets <= np.maximum(len_lo, len_hi)
    )
    for _ in range(int(iterations)):
        mid = 0.5 * (lo + hi)
        up = (lengths_at(mid) < targets) == rising
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return 0.5 * (lo + hi), reachable


def make_tractogram(streamlines, space=None):
    """Wrap RAS+ mm streamlines in a StatefulTractogram.

    Parameters
    ----------
    streamlines : ndarray (N, P, 3) or sequence of (n, 3) arrays
        RAS+ mm.
    space : dict, optional
        Space description (:func:`aae_tract.io.space_from_sft`), e.g. a
        model's ``metadata.space``. Without one, a 1 mm grid around the
        streamlines is used.

    Returns
    -------
    dipy.io.stateful_tractogram.StatefulTractogram
        In RASMM space.
    """
    from dipy.io.stateful_tractogram import Space, StatefulTractogram

    from aae_tract.io import reference_from_space

    lines = [np.asarray(s, dtype=np.float32) for s in streamlines]
    if not space:
        pts = np.concatenate(lines) if lines else np.zeros((0, 3))
        space = bbox_space(pts)
    return StatefulTractogram(lines, reference_from_space(space), Space.RASMM)


# ---------------------------------------------------------------------------
# generation


def _resolve_target(model, bundle, length, attribute):
    name = model.attribute_name
    if name == "length":
        if length is not None and attribute is not None:
            if float(length) != float(attribute):
                raise AAETractError(
                    f"length={length} and attribute={attribute} disagree; this "
                    "model is conditioned on streamline length, give one of them"
                )
        value = length if length is not None else attribute
    else:
        if length is not None:
            raise AAETractError(
                f"this model is conditioned on {name!r}, not on streamline length: "
                f"pass attribute=<{name}> instead of length={length}"
            )
        value = attribute
    if value is None:
        stats = model.metadata.bundle_stats.get(bundle, {}).get("attribute", {})
        if "p50" not in stats:
            raise AAETractError(
                f"no {name} requested and no training statistics for {bundle!r}"
            )
        value = stats["p50"]
        logger.info("no %s requested: using the training median %.4g", name, value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise AAETractError(f"requested {name} {value!r} is not a number") from None
    if not math.isfinite(value):
        raise AAETractError(f"requested {name} {value} is not finite")
    if name == "length" and value <= 0:
        raise AAETractError(f"requested length {value} mm must be > 0")
    return value


def _reference_set(model, bundle, reference_streamlines):
    if reference_streamlines is not None:
        x, _ = model.prepare(reference_streamlines, bundle)
        if len(x) == 0:
            raise AAETractError("reference_streamlines is empty")
        return x
    bank_z = _bank(model, bundle)[0]
    return model.decode(bank_z, bundle)


def _default_max_mdf(reference, *, factor=2.0):
    """``factor`` x the 95th percentile of nearest-neighbour MDF in ``reference``."""
    if len(reference) < 2:
        return math.inf
    nn, _ = nearest_mdf(reference, reference, exclude_self=True)
    return float(factor * np.percentile(nn, 95))


def generate(
    model,
    bundle,
    length=None,
    *,
    attribute=None,
    n_streamlines=100,
    seed=None,
    sampling=DEFAULT,
    noise=DEFAULT_NOISE,
    subject_noise=DEFAULT,
    placement_noise=DEFAULT,
    within_subject=True,
    subject_scope="target",
    noise_scope="bundle",
    filter=False,
    length_tolerance=None,
    max_mdf=None,
    reference_streamlines=None,
    max_tries=20,
    texture=True,
    exact_length=True,
    extend_reach=False,
    candidates=DEFAULT_CANDIDATES,
    prior_spread=DEFAULT_PRIOR_SPREAD,
    batch_size=1024,
    space=None,
    keep_inside=True,
    volume=None,
    max_extrapolation=DEFAULT_MAX_EXTRAPOLATION,
):
    """Generate streamlines of ``bundle`` at a requested length (or attribute).

    Parameters
    ----------
    model : TractAAE
        A trained model (:meth:`TractAAE.fit` calibrates it).
    bundle : str
        Bundle name known to the model.
    length : float, optional
        Target streamline length in mm, for a model conditioned on length.
        Default: the bundle's training median.
    attribute : float, optional
        Target value for a model conditioned on another attribute (e.g. age).
    n_streamlines : int
        Number of streamlines to return.
    seed : int or numpy.random.Generator, optional
        Random seed; the same seed gives the same streamlines.
    sampling : {"bank", "prior", "default"}
        How latent codes are drawn (see :func:`sample_latent`).
        ``"default"``: the model's (:func:`default_sampling`): ``"prior"``
        for a length model with the fitted mixture prior (the default for
        length), ``"bank"`` for a model conditioned on another attribute
        (age, ...) or with another prior.
    noise : float, optional
        Relative noise of ``"bank"`` sampling (default: the bundle's own,
        set by the calibration per length band, or :func:`default_noise`;
        see :func:`sample_latent`).
    subject_noise : float, None or "default"
        Spread of the new subjects ``"bank"`` sampling (and ``"prior"``
        sampling of a fitted prior) moves codes to, relative to the training
        subjects' (see :func:`sample_latent`). ``"default"``: 0.7, or 0.1 for
        prior sampling of a length model's fitted prior
        (:func:`default_noises`).
    placement_noise : float or "default"
        Spread of the new subjects' placement of the bundle, relative to the
        training subjects': each generated streamline is rotated about the
        bundle's centre and shifted by a rigid move of its own, drawn per
        axis with this many times the spread the training subjects show
        (:mod:`aae_tract.placement`), which the latent subject move, a
        combination of the training subjects, varies in too few directions
        to give. Lengths are kept. 0: no move. ``"default"``: 0, or 0.9 for
        prior sampling of a length model's fitted prior
        (:func:`default_noises`).
    within_subject : {True, "own", False}
        For a per-subject attribute such as age: with ``"bank"`` sampling,
        give each streamline an offset from its subject's centre in latent
        dimension 0, at its rank within a subject of the requested value
        (True; its own offset where the codes keep their subjects,
        ``subject_noise=None``, or the model file's calibration kept no
        subject spread) or its own (``"own"``); with ``"prior"`` sampling of
        a fitted prior, draw dimension 0 with the spread of the codes within
        a subject; False sets dimension 0 to the calibrated value (see
        :func:`sample_latent`).
    subject_scope : {"target", "bundle"}
        Where the training subjects are compared when codes move to new
        subjects: near the requested length, or over the whole bundle (see
        :func:`sample_latent`).
    noise_scope : {"bundle", "target"}
        Whether ``"bank"`` sampling's noise follows how the whole bundle's
        bank codes vary (default), or how those near the requested length do
        (see :func:`sample_latent`).
    filter : bool
        Keep only plausible streamlines: MDF to the nearest reference
        streamline of the bundle at most ``max_mdf`` and, for a length model,
        length within ``length_tolerance`` of the target. Sampling repeats
        until exactly ``n_streamlines`` are kept.
    length_tolerance : float, optional
        Allowed ``|length - target|`` in mm. Default 10 % of the target.
    max_mdf : float, optional
        Allowed MDF (mm) to the nearest reference streamline. Default twice
        the 95th percentile of nearest-neighbour distances within the
        reference set.
    reference_streamlines : StatefulTractogram, ArraySequence or array, optional
        Real streamlines of the bundle for the MDF test (e.g. the training
        bundle). Default: the model's latent bank of the bundle, decoded.
    max_tries : int
        Sampling rounds before giving up when filtering.
    texture : bool
        Sample each streamline's texture (the small random turns of real
        tracking) around the decoded mean curve, as the model learned it;
        False returns the mean curves.
    exact_length : bool
        For a length model, refine each code kept (of ``candidates`` drawn
        per streamline) until it decodes at the target length
        (:func:`match_length`; one pass through the decoder's length head
        over the drawn codes, 14 over those kept, 14 more with
        ``extend_reach`` for the codes not reached in the first range);
        False keeps one calibrated code per streamline (faster, lengths
        scatter around the target).
    extend_reach : bool
        Search the codes not brought to the target within the calibration's
        range again, farther out (see :func:`sample_latent`): near the ends
        of a bundle's range the requested length is met more often, by
        streamlines shaped less like the real ones.
    candidates : int
        With ``exact_length``: codes drawn per streamline, of which the
        first decoding within 1.5 % of the requested length is refined (see
        :func:`sample_latent`); 1 refines every code drawn.
    prior_spread : float
        For prior sampling: a factor (> 0) on the spread of the prior's
        draws about its components' means (see :func:`sample_latent`); 1:
        the prior as fitted.
    batch_size : int
        Codes decoded per forward pass.
    space : str, optional
        None: the model's common space (where its training subjects were
        registered). A training subject's name: that subject's native space
        (the inverse of its registration transform). Lengths are measured in
        the common space, where the target applies.
    keep_inside : bool
        Draw again every generated streamline that leaves ``volume``, so
        that DIPY's ``load_tractogram`` reads a file written in that space
        with its default ``bbox_valid_check=True``; the log says how many
        were drawn again. False keeps them.
    volume : dict, optional
        The space (:func:`aae_tract.io.space_from_sft`, e.g. of the
        reference the file will be written with) whose volume
        ``keep_inside`` keeps to. Default: the model's space (the training
        data's header) when its volume holds the model's calibration sample
        of training streamlines (``metadata.space["holds_data"]``), and no
        test otherwise: for the embedded default, whose header is a
        1 x 1 x 1 volume, for model files from before this test, and for
        streamlines placed in a subject's native ``space`` (whose own
        header the model does not keep).
    max_extrapolation : float or None
        How far beyond the range seen in training for the bundle the target
        may lie, in units of the range's width (:func:`target_limits`;
        default a quarter); a target beyond it is refused, one between the
        range and it is generated with a warning. None: no limit.

    Returns
    -------
    GeneratedBundle

    Raises
    ------
    UnknownBundleError
        ``bundle`` is not one of the model's bundles (the message lists them).
    AAETractError
        A length given to a model conditioned on another attribute, a target
        that is not a finite (positive, for length) number or lies beyond
        ``max_extrapolation`` (the message gives the accepted range), an unknown
        sampling, or a filter (or the volume test) that kept too few
        streamlines in ``max_tries`` rounds (the message gives the acceptance
        rate).
    """
    name = _bundle_name(model, bundle)
    prior_spread = check_prior_spread(prior_spread)
    sampling = resolve_sampling(
        model, sampling, noise=noise, noise_scope=noise_scope, prior_spread=prior_spread
    )
    within_subject = _check_within_subject(within_subject)
    _check_scope("subject_scope", subject_scope, SUBJECT_SCOPES)
    _check_scope("noise_scope", noise_scope, NOISE_SCOPES)
    n = int(n_streamlines)
    if n < 1:
        raise AAETractError(f"n_streamlines must be >= 1, got {n_streamlines}")
    target = _resolve_target(model, name, length, attribute)
    check_target(model, name, target, max_extrapolation)
    to_space = _space_transform(model, space)
    attr = model.attribute_name
    unit = " mm" if attr == "length" else ""
    low, high, out_of_range = _seen_range(model, name, target, unit)
    draw = _sampler(
        model,
        name,
        target,
        _rng(seed),
        sampling=sampling,
        noise=noise,
        subject_noise=subject_noise,
        within_subject=within_subject,
        subject_scope=subject_scope,
        noise_scope=noise_scope,
        exact_length=exact_length,
        extend_reach=extend_reach,
        candidates=candidates,
        prior_spread=prior_spread,
        texture=texture,
        batch_size=batch_size,
        placement_noise=placement_noise,
    )
    inside = _volume_test(model, to_space, volume) if keep_inside else None
    describe = (name, low, high, unit)
    if filter:
        z, x, acceptance, settings = _generate_filtered(
            model,
            draw,
            n,
            target,
            length_tolerance=length_tolerance,
            max_mdf=max_mdf,
            reference_streamlines=reference_streamlines,
            max_tries=max_tries,
            batch_size=batch_size,
            describe=describe,
            inside=inside,
        )
    else:
        z, x = draw(n)
        acceptance, settings = 1.0, {}
        if inside is not None:
            z, x, acceptance = _replace_outside(
                draw,
                z,
                x,
                inside,
                max_tries=max_tries,
                batch_size=batch_size,
                describe=describe,
            )
    lengths, median, missed = _measure(
        x, n, name, target, unit, attr=attr, out_of_range=out_of_range
    )
    x = _place(x, to_space)
    return GeneratedBundle(
        bundle=name,
        target=target,
        attribute_name=attr,
        streamlines=x,
        lengths=lengths,
        tractogram=make_tractogram(x, model.metadata.space),
        acceptance_rate=float(acceptance),
        z=z,
        out_of_range=bool(out_of_range),
        seen_range=(float(low), float(high)),
        sampling=sampling,
        filter_settings=settings,
        median_length=median,
        missed=bool(missed),
        space="common" if space is None else str(space),
    )


def target_limits(model, bundle, max_extrapolation=DEFAULT_MAX_EXTRAPOLATION):
    """The targets :func:`generate` accepts for ``bundle``.

    The range of the attribute seen in training for the bundle, widened on
    each side by ``max_extrapolation`` times its width (:func:`_range_width`:
    at least a tenth of its larger end, or 1 when that is 0, so that a bundle
    seen at one value still has a margin).

    Parameters
    ----------
    model : TractAAE
        A trained model.
    bundle : str
        Bundle name known to the model.
    max_extrapolation : float or None
        Margin in units of the range's width; None: no limit.

    Returns
    -------
    (float, float)
        Lowest and highest accepted target (``-inf``, ``inf`` without a
        limit).
    """
    if max_extrapolation is None:
        return -np.inf, np.inf
    margin = float(max_extrapolation)
    if not (np.isfinite(margin) and margin >= 0):
        raise AAETractError(
            f"max_extrapolation must be a finite number >= 0 (or None), got "
            f"{max_extrapolation!r}"
        )
    low, high = model.attribute_range(bundle)
    width = _range_width(low, high)
    return low - margin * width, high + margin * width


def _range_width(low, high):
    """The width margins of a seen range are measured in (see target_limits)."""
    return max(high - low, 0.1 * max(abs(low), abs(high))) or 1.0


def check_target(model, bundle, target, max_extrapolation=DEFAULT_MAX_EXTRAPOLATION):
    """Refuse a target too far outside the range seen in training for ``bundle``.

    Parameters
    ----------
    model, bundle, max_extrapolation
        As in :func:`target_limits`.
    target : float
        The requested length in mm (or other attribute's value).

    Raises
    ------
    AAETractError
        ``target`` lies outside :func:`target_limits`; the message gives the
        range seen in training and the accepted one.
    """
    attr = model.attribute_name
    if not math.isfinite(float(target)):
        raise AAETractError(f"requested {attr} {target} is not finite")
    lo, hi = target_limits(model, bundle, max_extrapolation)
    if lo <= target <= hi:
        return
    unit = " mm" if attr == "length" else ""
    low, high = model.attribute_range(bundle)
    margin = float(max_extrapolation) * _range_width(low, high)
    if attr == "length":  # a length is above 0 anyway
        lo = max(lo, 0.0)
    raise AAETractError(
        f"{bundle}: {attr} {target:.4g}{unit} lies too far outside the "
        f"{attr}s seen in training ({low:.4g} to {high:.4g}{unit}) for the "
        f"model to extrapolate; it generates {bundle} at {lo:.4g} to "
        f"{hi:.4g}{unit} (the seen range widened by {margin:.3g}{unit} each "
        f"way, {float(max_extrapolation):g} of its width; max_extrapolation, "
        "--max_extrapolation on the command line, sets that share)"
    )


def _seen_range(model, name, target, unit):
    """The bundle's attribute range in training and whether ``target`` is out of it.

    Logs a warning when it is.
    """
    attr = model.attribute_name
    low, high = model.attribute_range(name)
    out_of_range = not (low <= target <= high)
    if out_of_range:
        logger.warning(
            "requested %s %.4g%s for %s is outside the range seen in training "
            "(%.4g-%.4g%s); extrapolating the calibration",
            attr,
            target,
            unit,
            name,
            low,
            high,
            unit,
        )
    return low, high, out_of_range


def _sampler(
    model,
    name,
    target,
    rng,
    *,
    sampling,
    noise,
    subject_noise,
    within_subject,
    subject_scope,
    noise_scope,
    exact_length,
    extend_reach,
    candidates,
    prior_spread,
    texture,
    batch_size,
    placement_noise,
):
    """A function ``draw(count)`` -> codes and decoded streamlines at ``target``."""

    def draw(count):
        return draw_streamlines(
            model,
            name,
            np.full(count, target),
            rng=rng,
            texture=texture,
            batch_size=batch_size,
            placement_noise=placement_noise,
            sampling=sampling,
            noise=noise,
            subject_noise=subject_noise,
            within_subject=within_subject,
            subject_scope=subject_scope,
            noise_scope=noise_scope,
            exact_length=exact_length,
            extend_reach=extend_reach,
            candidates=candidates,
            prior_spread=prior_spread,
        )

    return draw


def draw_streamlines(
    model,
    bundle,
    targets,
    *,
    rng,
    texture=True,
    batch_size=1024,
    placement_noise=DEFAULT,
    **options,
):
    """Codes and generated streamlines of a bundle, one per target value.

    :func:`sample_latent`, decoding (with a sampled texture unless
    ``texture`` is False) and the new subjects' placement
    (:func:`aae_tract.placement.move_placement`), all drawn from ``rng``.

    Parameters
    ----------
    model : TractAAE
        A trained (calibrated) model.
    bundle : str
        Bundle name.
    targets : array_like of float, shape (N,)
        Attribute value of each streamline.
    rng : numpy.random.Generator or int
        Random source.
    texture : bool
        Sample each streamline's texture (False: mean curves).
    batch_size : int
        Codes decoded per forward pass.
    placement_noise : float or "default"
        Spread of the new subjects' placement, relative to the training
        subjects' (:func:`generate`); ``"default"``: the sampling's
        (:func:`default_noises`).
    **options
        Keyword arguments of :func:`sample_latent` (``sampling``,
        ``subject_noise``, ...); a ``sampling`` of ``"default"`` (or none)
        is the model's (:func:`default_sampling`), a ``subject_noise`` of
        ``"default"`` the sampling's (:func:`default_noises`).

    Returns
    -------
    z : ndarray, shape (N, latent_dims)
    streamlines : ndarray, shape (N, n_points, 3)
        In the model's space (mm).
    """
    rng = _rng(rng)
    sampling = resolve_sampling(
        model,
        options.get("sampling", DEFAULT),
        noise=options.get("noise"),
        noise_scope=options.get("noise_scope", "bundle"),
        prior_spread=check_prior_spread(
            options.get("prior_spread", DEFAULT_PRIOR_SPREAD)
        ),
    )
    subject_noise, placement_noise = resolve_noises(
        model,
        sampling,
        options.get("subject_noise", DEFAULT),
        placement_noise,
    )
    placement_noise = check_placement_noise(placement_noise)
    options = {**options, "sampling": sampling, "subject_noise": subject_noise}
    z = sample_latent(model, bundle, targets, rng=rng, **options)
    x = model.decode(z, bundle, texture=rng if texture else None, batch_size=batch_size)
    return z, move_placement(model, bundle, x, placement_noise, rng)


def _generate_filtered(
    model,
    draw,
    n,
    target,
    *,
    length_tolerance,
    max_mdf,
    reference_streamlines,
    max_tries,
    batch_size,
    describe,
    inside=None,
):
    """``n`` filtered streamlines: codes, points, acceptance rate and settings."""
    tol, limit, reference = _filter_limits(
        model,
        describe[0],
        target,
        length_tolerance=length_tolerance,
        max_mdf=max_mdf,
        reference_streamlines=reference_streamlines,
    )
    settings = {"max_mdf": limit, "length_tolerance": tol}
    z, x, acceptance = _draw_filtered(
        draw,
        n,
        target,
        tol=tol,
        reference=reference,
        limit=limit,
        max_tries=max_tries,
        batch_size=batch_size,
        describe=describe,
        inside=inside,
    )
    return z, x, acceptance, settings


def _filter_limits(
    model, name, target, *, length_tolerance, max_mdf, reference_streamlines
):
    """The filter's length tolerance, MDF limit and reference streamlines."""
    tol = None
    if model.attribute_name == "length":
        tol = 0.1 * target if length_tolerance is None else float(length_tolerance)
        if not tol > 0:
            raise AAETractError(f"length_tolerance must be > 0, got {tol}")
    reference = None
    if max_mdf is None or np.isfinite(float(max_mdf)):
        reference = _reference_set(model, name, reference_streamlines)
    limit = _default_max_mdf(reference) if max_mdf is None else float(max_mdf)
    if not limit > 0:
        raise AAETractError(f"max_mdf must be > 0, got {max_mdf}")
    return tol, limit, reference


def _draw_filtered(
    draw,
    n,
    target,
    *,
    tol,
    reference,
    limit,
    max_tries,
    batch_size,
    describe,
    inside=None,
):
    """Draw until ``n`` streamlines pass the filter; their codes, points and rate.

    ``tol`` None skips the length test; ``inside`` (a function of the points,
    see :func:`_volume_test`) adds the volume test; ``describe`` is (bundle,
    low, high, unit) for the messages.
    """
    name, low, high, unit = describe
    kept_z, kept_x = [], []
    n_kept = n_drawn = n_outside = 0
    rate = 1.0
    for _ in range(int(max_tries)):
        need = n - n_kept
        cap = max(4 * n, batch_size)
        count = int(min(max(math.ceil(1.2 * need / max(rate, 0.01)), need), cap))
        z, x = draw(count)
        keep = np.ones(count, dtype=bool) if inside is None else inside(x)
        n_outside += int(count - keep.sum())
        if tol is not None:
            lengths = streamline_lengths(x)
            keep &= np.abs(lengths - target) <= tol
        if reference is not None and np.isfinite(limit) and keep.any():
            rows = np.flatnonzero(keep)
            d, _ = nearest_mdf(x[rows], reference)
            keep[rows[d > limit]] = False
        n_drawn += count
        n_kept += int(keep.sum())
        kept_z.append(z[keep])
        kept_x.append(x[keep])
        rate = n_kept / n_drawn
        if n_kept >= n:
            break
    acceptance = n_kept / max(n_drawn, 1)
    if n_kept < n:
        raise AAETractError(
            f"the filter kept {n_kept} of {n_drawn} generated {name} streamlines "
            f"(acceptance rate {acceptance:.1%}) in {max_tries} rounds, fewer "
            f"than the {n} requested; loosen max_mdf ({limit:.3g} mm) or "
            f"length_tolerance ({tol if tol is None else f'{tol:.3g} mm'}), "
            "raise max_tries, or request a value inside the seen range "
            f"({low:.4g}-{high:.4g}{unit})"
            + (
                f"; {n_outside} left the volume of the output space "
                "(keep_inside=False keeps them)"
                if inside is not None
                else ""
            )
        )
    z = np.concatenate(kept_z)[:n]
    x = np.concatenate(kept_x)[:n]
    logger.info(
        "filter kept %d of %d generated streamlines (acceptance rate %.1f%%)%s",
        n_kept,
        n_drawn,
        100 * acceptance,
        f"; {n_outside} left the volume of the output space" if n_outside else "",
    )
    return z, x, acceptance


def _volume_test(model, to_space, volume=None):
    """A function telling which streamlines (common space, mm) stay inside
    ``volume`` once placed by ``to_space``; None when there is nothing to
    keep to (see ``volume`` of :func:`generate`)."""
    from aae_tract.io import inside_volume

    if volume is None:
        space = model.metadata.space
        if not space or not space.get("holds_data") or to_space is not None:
            return None
        volume = space
    return lambda x: inside_volume(_place(x, to_space), volume)


def _replace_outside(draw, z, x, inside, *, max_tries, batch_size, describe):
    """Codes and streamlines with every one outside the volume drawn again.

    Streamlines inside keep their place (a draw with none outside is
    returned unchanged). Returns codes, points and the fraction of all
    drawn streamlines that were inside.
    """
    name, low, high, unit = describe
    bad = np.flatnonzero(~inside(x))
    if not len(bad):
        return z, x, 1.0
    z, x = np.array(z), np.array(x)
    n_out, n_drawn = len(bad), len(x)
    n_inside = n_drawn - n_out
    for _ in range(int(max_tries)):
        rate = max(n_inside / n_drawn, 0.01)
        cap = max(4 * len(x), batch_size)
        new_z, new_x = draw(int(min(math.ceil(1.2 * len(bad) / rate), cap)))
        ok = np.flatnonzero(inside(new_x))
        n_drawn += len(new_x)
        n_inside += len(ok)
        take = ok[: len(bad)]
        z[bad[: len(take)]] = new_z[take]
        x[bad[: len(take)]] = new_x[take]
        bad = bad[len(take) :]
        if not len(bad):
            break
    acceptance = n_inside / n_drawn
    if len(bad):
        raise AAETractError(
            f"{n_drawn - n_inside} of {n_drawn} generated {name} streamlines left "
            "the volume of the output space (by default the training data's "
            "header), and "
            f"{max_tries} rounds did not replace them (acceptance rate "
            f"{acceptance:.1%}); raise max_tries, request a value inside the seen "
            f"range ({low:.4g}-{high:.4g}{unit}), or keep them with "
            "keep_inside=False (the file then needs bbox_valid_check=False)"
        )
    logger.info(
        "%d of %d generated %s streamlines left the volume of the output space "
        "and were drawn again",
        n_out,
        len(x),
        name,
    )
    return z, x, acceptance


def _measure(x, n, name, target, unit, *, attr, out_of_range):
    """Lengths and median length of ``x``, logged; warn when a length target missed.

    Returns
    -------
    lengths : ndarray
    median : float
    missed : bool
    """
    lengths = streamline_lengths(x)
    median = float(np.median(lengths))
    logger.info(
        "generated %d %s streamlines for %s %.4g%s: median length %.1f mm (%.1f-%.1f)",
        n,
        name,
        attr,
        target,
        unit,
        median,
        float(lengths.min()),
        float(lengths.max()),
    )
    missed = attr == "length" and abs(median - target) > MISS_TOLERANCE * target
    if missed:
        logger.warning(
            "requested length %.4g mm for %s, produced a median of %.1f mm "
            "(%+.0f%%, more than %.0f%% off)%s",
            target,
            name,
            median,
            100 * (median - target) / target,
            100 * MISS_TOLERANCE,
            "; the request is outside the range seen in training"
            if out_of_range
            else "; --filter keeps only streamlines within 10% of the target",
        )
    return lengths, median, missed


def _place(x, to_space):
    """Streamlines ``x`` moved by the 4x4 ``to_space`` (unchanged when None)."""
    if to_space is None:
        return x
    from aae_tract.registration import transform_streamlines

    return transform_streamlines(x, to_space)


def _space_transform(model, space):
    """The 4x4 from the common space to training subject ``space`` (None: stay)."""
    if space is None:
        return None
    registration = model.registration
    if not registration.active:
        raise AAETractError(
            f"space {space!r}: this model was trained without registration, so "
            "its streamlines are already in the training data's space"
        )
    matrix = np.linalg.inv(registration.matrix(str(space)))
    logger.info("placing the streamlines in subject %s's native space", space)
    return matrix


# ---------------------------------------------------------------------------
# latent-space experiments


def interpolate(model, a, b, bundle, n_steps=8, *, to_bundle=None):
    """Decode points on the straight line between the codes of two streamlines.

    Parameters
    ----------
    model : TractAAE
        A trained model.
    a, b : ndarray, shape (n, 3)
        Two streamlines in RAS+ mm (any number of points).
    bundle : str
        Bundle of ``a`` and ``b`` (used to orient and to decode).
    n_steps : int
        Number of streamlines returned, ``a``'s reconstruction first and
        ``b``'s last.
    to_bundle : str, optional
        Decode with this bundle's label instead of ``bundle``.

    Returns
    -------
    ndarray of float32, shape (n_steps, n_points, 3)
        RAS+ mm.
    """
    n_steps = int(n_steps)
    if n_steps < 2:
        raise AAETractError(f"n_steps must be >= 2, got {n_steps}")
    z = model.encode([np.asarray(a, np.float32), np.asarray(b, np.float32)], bundle)
    t = np.linspace(0.0, 1.0, n_steps, dtype=np.float32)[:, None]
    path = (1.0 - t) * z[0] + t * z[1]
    return model.decode(path, to_bundle or bundle)


def restyle(model, streamlines, bundle, to_bundles):
    """Same style, other bundle: encode, then decode with other bundle labels.

    Parameters
    ----------
    model : TractAAE
        A trained model.
    streamlines : StatefulTractogram, ArraySequence, list or array
        Streamlines of ``bundle`` in RAS+ mm.
    bundle : str
        Their bundle.
    to_bundles : str or sequence of str
        Bundles to decode the codes as.

    Returns
    -------
    dict of str to ndarray (N, n_points, 3)
        One array of streamlines (RAS+ mm) per target bundle.
    """
    if isinstance(to_bundles, str):
        to_bundles = [to_bundles]
    names = [_bundle_name(model, b) for b in to_bundles]
    if not names:
        raise AAETractError("to_bundles names no bundle")
    z = model.encode(streamlines, bundle)
    return {name: model.decode(z, name) for name in names}
