"""Where a new subject's bundle lies: rigid moves with the training subjects' spread.

Generation moves each latent code from its training subject to a new one
(``subject_noise`` of :func:`aae_tract.generate.sample_latent`): the new
subject is a random combination of the training subjects' mean codes, so
with S training subjects it varies in S - 1 directions only (3 with the 4
training subjects of the phantom's benchmark). Subjects the model never saw
differ from them in other directions too, and most plainly in where the
bundle lies: the small rotation and shift that registration leaves between
subjects. Those six numbers can be drawn independently, each with the
spread the training subjects show in it, which S subjects estimate for every
one of them.

:func:`placement_spread` measures that spread on the model: the bundle's
bank codes are decoded as they are in each training subject (each code's
offset from its subject's mean code, added to every subject's mean code)
and in the subjects' centre, and each subject's decoded bundle is fitted to
the centre's by a rotation about the bundle's centroid and a shift (the
least-squares rigid fit of corresponding points), latent dimension 0 kept at
each code's own value, as generation sets it whatever the subject. The
standard deviations of the rotation vectors and shifts over the subjects,
per axis, are the spread.
:func:`move_placement` moves each generated streamline by its own rigid
move drawn with ``scale`` times that spread (``placement_noise`` of
:func:`aae_tract.generate.generate`). A rigid move keeps a streamline's
length and shape.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from aae_tract.errors import AAETractError

logger = logging.getLogger(__name__)

__all__ = ["PlacementSpread", "move_placement", "placement_spread"]

#: Bank codes decoded in every subject to measure the spread (a seeded sample
#: of the bank beyond it), fewer with many subjects (:data:`PLACEMENT_DECODES`).
PLACEMENT_CODES = 200
#: About how many streamlines the measure decodes in all per bundle: with many
#: subjects each gets fewer codes (at least 20).
PLACEMENT_DECODES = 4000
#: Key of the measured spread in a bundle's latent bank (model metadata).
BANK_KEY = "placement"
#: ``placement_noise`` above which generation warns that streamlines scatter.
LARGE_PLACEMENT = 3.0

_NOTED = set()


@dataclass(frozen=True)
class PlacementSpread:
    """How a bundle's placement varies across the training subjects.

    Attributes
    ----------
    centre : ndarray, shape (3,)
        Centroid (mm) of the bundle's points in the subjects' centre, about
        which the rotations turn.
    rotation : ndarray, shape (3,)
        Standard deviation of the subjects' rotation vectors, per axis
        (radians).
    shift : ndarray, shape (3,)
        Standard deviation of the subjects' shifts, per axis (mm).
    n_subjects : int
        Training subjects it was measured on.
    """

    centre: np.ndarray
    rotation: np.ndarray
    shift: np.ndarray
    n_subjects: int

    def to_json(self):
        """The spread as JSON-ready numbers (rotation in degrees)."""
        return {
            "centre_mm": [float(v) for v in self.centre],
            "rotation_deg": [float(v) for v in np.rad2deg(self.rotation)],
            "shift_mm": [float(v) for v in self.shift],
            "n_subjects": int(self.n_subjects),
        }

    @classmethod
    def from_json(cls, record):
        """The spread of :meth:`to_json`'s record."""
        return cls(
            centre=np.asarray(record["centre_mm"], dtype=np.float64),
            rotation=np.deg2rad(np.asarray(record["rotation_deg"], dtype=np.float64)),
            shift=np.asarray(record["shift_mm"], dtype=np.float64),
            n_subjects=int(record["n_subjects"]),
        )


def _rigid_fit(a, b):
    """Rotation vector (radians) and shift of the least-squares rigid map of
    the points ``a`` onto ``b`` (rotation about ``a``'s centroid)."""
    from scipy.spatial.transform import Rotation

    ca, cb = a.mean(axis=0), b.mean(axis=0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    flip = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = (u @ np.diag([1.0, 1.0, flip]) @ vt).T
    return Rotation.from_matrix(rotation).as_rotvec(), cb - ca


def measure_placement(model, bundle):
    """Measure a bundle's placement spread over its training subjects.

    A sample of the bundle's bank codes is decoded in every training subject
    (each code's offset from its subject's mean code, added to that
    subject's mean code) and in the subjects' centre (their mean code), with
    latent dimension 0 kept at each code's own value throughout, since
    generation sets it for the requested length (or attribute) whatever the
    subject. Each subject's decoded bundle is fitted to the centre's by a
    rotation about its centroid and a shift (least squares over
    corresponding points); the spread is the standard deviation, over the
    subjects, of each component of the rotation vectors and of the shifts.

    Parameters
    ----------
    model : TractAAE
        A calibrated model.
    bundle : str
        Bundle name.

    Returns
    -------
    PlacementSpread or None
        None when the bundle's bank does not keep its codes' subjects (model
        files from before it did) or holds fewer than two subjects.
    """
    from aae_tract.generate import _bank

    z, _, subject, means = _bank(model, bundle)
    present = np.unique(subject) if subject is not None else []
    if len(present) < 2:
        return None
    # about PLACEMENT_DECODES streamlines decoded in all, however many subjects
    n_codes = min(
        len(z), PLACEMENT_CODES, max(20, PLACEMENT_DECODES // (len(present) + 1))
    )
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(z), n_codes, replace=False))
    codes = z[rows].astype(np.float64)
    own = codes - means[subject[rows]]
    means = means[present]

    def points(code):
        moved = own + code
        moved[:, 0] = codes[:, 0]
        return model.decode(moved.astype(np.float32), bundle).reshape(-1, 3)

    centre_points = points(means.mean(axis=0)).astype(np.float64)
    fits = [_rigid_fit(centre_points, points(m).astype(np.float64)) for m in means]
    rotations = np.array([r for r, _ in fits])
    shifts = np.array([t for _, t in fits])
    return PlacementSpread(
        centre=centre_points.mean(axis=0),
        rotation=rotations.std(axis=0, ddof=1),
        shift=shifts.std(axis=0, ddof=1),
        n_subjects=len(means),
    )


def placement_spread(model, bundle, *, quiet=False):
    """A bundle's placement spread, measured once and kept in its latent bank.

    The calibration (:meth:`TractAAE.calibrate`) measures it
    (:func:`measure_placement`) and the model file keeps it; for a model
    file from before, it is measured on first use.

    Parameters
    ----------
    model : TractAAE
    bundle : str
    quiet : bool
        Measure without logging it (the calibration's own measure); a
        measure on first use is logged.

    Returns
    -------
    PlacementSpread or None
        None for a bank without subjects, or with one.
    """
    bank = model.metadata.latent_bank.get(bundle) or {}
    if BANK_KEY not in bank:
        spread = measure_placement(model, bundle)
        bank[BANK_KEY] = None if spread is None else spread.to_json()
        if spread is not None and not quiet:
            logger.info(
                "%s: placement spread measured on the model (its file is older "
                "than the measure; saving the model keeps it)",
                bundle,
            )
    record = bank.get(BANK_KEY)
    return None if record is None else PlacementSpread.from_json(record)


def check_placement_noise(value):
    """``value`` as a float; AAETractError unless it is finite and >= 0."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale >= 0):
        raise AAETractError(
            f"placement_noise must be a finite number >= 0, got {value!r}"
        )
    return scale


def move_placement(model, bundle, streamlines, scale, rng):
    """Move each streamline as a new subject's bundle would lie.

    Each streamline gets its own rotation about the bundle's centre and
    shift, drawn per axis from Gaussians with ``scale`` times the spread
    of the training subjects (:func:`placement_spread`). Lengths and shapes
    are kept.

    Parameters
    ----------
    model : TractAAE
        The model the streamlines were decoded by.
    bundle : str
        Their bundle.
    streamlines : ndarray, shape (N, P, 3)
        Streamlines in the model's space (mm).
    scale : float
        Spread relative to the training subjects' (0: no move).
    rng : numpy.random.Generator
        Random source (not drawn from when nothing moves).

    Returns
    -------
    ndarray, shape (N, P, 3)
        The moved streamlines, in the dtype of ``streamlines``; the same
        array when ``scale`` is 0 or the model has no spread to draw with
        (logged once per bundle).
    """
    scale = check_placement_noise(scale)
    if scale == 0 or len(streamlines) == 0:
        return streamlines
    spread = placement_spread(model, bundle)
    if spread is None:
        key = (id(model.metadata), bundle)
        if key not in _NOTED:
            _NOTED.add(key)
            logger.warning(
                "%s: no placement spread (its training codes keep no subjects, "
                "or one): placement_noise ignored",
                bundle,
            )
        return streamlines
    if scale > LARGE_PLACEMENT and (id(model.metadata), bundle, "large") not in _NOTED:
        _NOTED.add((id(model.metadata), bundle, "large"))
        logger.warning(
            "placement_noise %g moves %s's streamlines %g times as far as its "
            "training subjects' bundles lie apart: they will scatter",
            scale,
            bundle,
            scale,
        )
    from scipy.spatial.transform import Rotation

    x = np.asarray(streamlines)
    n = len(x)
    turn = rng.standard_normal((n, 3)) * (scale * spread.rotation)
    shift = rng.standard_normal((n, 3)) * (scale * spread.shift)
    matrices = Rotation.from_rotvec(turn).as_matrix()
    centred = x.astype(np.float64) - spread.centre
    moved = np.einsum("nij,npj->npi", matrices, centred) + spread.centre
    return (moved + shift[:, None, :]).astype(x.dtype)
