"""A synthetic tractography dataset with known ground truth.

:func:`make_phantom` writes ``<out_dir>/<subject>/<BUNDLE>.trk`` for several
subjects, a ``participants.tsv`` (``participant_id``, ``age``) and a
``ground_truth.json``. Every bundle has its own 3-D shape; within a bundle the
streamlines spread continuously in length (their end extents or arc angles
vary, +/-30 % by default) and in shape (offsets across the bundle's
cross-section, smooth low-frequency bends), and carry smooth point noise. Each
subject gets a small smooth deformation (affine plus a sinusoidal warp) and an
age; bundle geometry scales smoothly with age (3 % shorter per decade past 50
by default), so age conditioning can be checked against a known effect.

Coordinates are RAS+ millimetres in an MNI-sized box around the origin; the
``.trk`` header has 1 mm voxels, dimensions 182 x 218 x 182 and an affine whose
voxel (0, 0, 0) is at (-90, -126, -72) mm. Streamlines have about one point per
millimetre (``step_mm``), so their number of points varies with their length,
and half of them run in the opposite direction, as tractography output does.
With ``fragments`` > 0 a share of each bundle's streamlines are *fragments*:
contiguous pieces of full streamlines, as premature termination leaves in real
tractography, so that lengths within a bundle span 4x and more.

Generation is vectorised per chunk of streamlines and streamed to disk, so a
phantom of a million streamlines is made in bounded memory. The result depends
only on the options: the same seed gives the same bytes.

:func:`make_wholebrain` turns a phantom into *whole-brain tractograms* for
bundle labelling (recognition): ``<out_dir>/<subject>.trk`` holds all of a
subject's bundle streamlines (copied exactly) plus *distractors*, streamlines
that belong to no bundle, shuffled together, and ``<out_dir>/ground_truth.json``
gives the label of every streamline (an index into the sorted bundle names, -1
for ``"other"``; :func:`load_wholebrain_labels` reads them as names).
Distractors are smooth curves traced through a random orientation field inside
the brain, 20 to 150 mm long, with the bundles' step, curvature scale and point
noise, and are kept only when fewer than half of their points lie within 6 mm
of every bundle's ground-truth centroid curve. ``out_dir`` must lie outside the
phantom folder, whose ``*.trk`` files are read as bundles.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.streamlines import Tractogram, TrkFile
from nibabel.streamlines.trk import (
    Field,
    get_affine_rasmm_to_trackvis,
    header_2_dtype,
)
from scipy.ndimage import convolve1d
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from aae_tract.atomic import temporary_path, write_atomic, write_text_atomic
from aae_tract.errors import DatasetError

logger = logging.getLogger(__name__)

#: Affine (voxel -> RAS+ mm), dimensions and voxel size of the phantom's space.
PHANTOM_AFFINE = np.array(
    [
        [1.0, 0.0, 0.0, -90.0],
        [0.0, 1.0, 0.0, -126.0],
        [0.0, 0.0, 1.0, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
PHANTOM_DIMS = (182, 218, 182)
PHANTOM_VOXEL_SIZES = (1.0, 1.0, 1.0)

#: Number of points of each streamline's dense noise-free curve.
_DENSE_POINTS = 96
#: Streamlines generated at a time (fixed: results must not depend on it).
_CHUNK = 8192
#: Points of the ground-truth centroid streamlines.
CENTROID_POINTS = 20
#: Smooth bend amplitude (mm) of each streamline, per sinusoidal mode.
_WIGGLE_MM = 1.2
#: Shortest fragment, as a fraction of its full streamline's length: fragment
#: length fractions are log-uniform in [FRAGMENT_MIN_FRACTION, 1].
FRAGMENT_MIN_FRACTION = 0.15
#: Shortest fragment in mm (full streamlines shorter than this are not cut).
FRAGMENT_MIN_MM = 10.0
#: Largest accepted ``fragments`` option.
MAX_FRAGMENTS = 0.9


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------
# Bundle shapes. Each takes the dense curve parameter t (M,), the per-streamline
# length scale lam (N,), cross-section offsets off (N, 2) in mm and a uniform
# variate v (N,) in [0, 1), and returns (N, M, 3) points in template space.
# --------------------------------------------------------------------------


def _shape_straight(t, lam, off, v):
    """CST_R: a straight, slightly tilted ascending bundle."""
    base = np.array([20.0, -18.0, -46.0])
    d = _unit([0.16, 0.08, 1.0])
    e1 = _unit(np.cross(d, [0.0, 1.0, 0.0]))
    e2 = np.cross(d, e1)
    s = (lam[:, None] * 105.0) * (t[None, :] - 0.1)
    spread = 1.0 + 0.6 * t[None, :, None]
    lateral = off[:, None, 0:1] * e1 + off[:, None, 1:2] * e2
    return base + s[..., None] * d + spread * lateral


def _shape_crossing(t, lam, off, v):
    """CC_Mid: a left-right arch over the midline that crosses CST_R."""
    half = 52.0
    x = (lam[:, None] * half) * (2.0 * t[None, :] - 1.0)
    r = x / half
    y = -10.0 + 3.0 * r**2 + off[:, None, 0]
    z = 22.0 + 18.0 * (1.0 - r**2) + off[:, None, 1]
    return np.stack([x, y, z], axis=-1)


def _ellipse_arc(t, lam, off, *, center, a, b, phi_c, span, x_bulge):
    theta = np.deg2rad(span) * lam[:, None]
    phi = np.deg2rad(phi_c) + theta * (t[None, :] - 0.5)
    radial = 1.0 + off[:, None, 0] / (0.5 * (a + b))
    y = center[1] + a * radial * np.cos(phi)
    z = center[2] + b * radial * np.sin(phi)
    x = center[0] + off[:, None, 1] + x_bulge * np.sin(np.pi * t)[None, :]
    return np.stack([np.broadcast_to(x, y.shape), y, z], axis=-1)


def _shape_arc(t, lam, off, v):
    """AF_L: a C-shaped arc around the Sylvian fissure, frontal to temporal."""
    return _ellipse_arc(
        t,
        lam,
        off,
        center=(-38.0, -22.0, 8.0),
        a=34.0,
        b=24.0,
        phi_c=190.0,
        span=160.0,
        x_bulge=-5.0,
    )


def _shape_long_arc(t, lam, off, v):
    """CG_L: a long elongated arc over the corpus callosum (cingulum-like)."""
    return _ellipse_arc(
        t,
        lam,
        off,
        center=(-8.0, -12.0, 8.0),
        a=58.0,
        b=26.0,
        phi_c=100.0,
        span=165.0,
        x_bulge=-2.0,
    )


def _shape_u(t, lam, off, v):
    """UF_L: a short U-shaped hook (two legs joined by a half circle)."""
    leg = 18.0 * lam[:, None]
    r = np.maximum(8.0 * lam[:, None] + off[:, None, 0], 3.5)
    total = 2.0 * leg + np.pi * r
    s = total * t[None, :]
    # leg 1 runs back along q = -r, the half circle turns, leg 2 runs forward
    on_leg1 = s < leg
    on_arc = (s >= leg) & (s < leg + np.pi * r)
    ang = np.clip((s - leg) / r, 0.0, np.pi)
    p = np.where(
        on_leg1, leg - s, np.where(on_arc, -r * np.sin(ang), s - leg - np.pi * r)
    )
    q = np.where(on_leg1, -r, np.where(on_arc, -r * np.cos(ang), r))
    origin = np.array([-30.0, 12.0, -20.0])
    fwd = _unit([0.3, 1.0, 0.0])
    up = np.array([0.0, 0.0, 1.0])
    normal = _unit(np.cross(fwd, up))
    return origin + p[..., None] * fwd + q[..., None] * up + off[:, None, 1:2] * normal


def _shape_fan(t, lam, off, v):
    """CST_L: a bundle narrow at the brainstem that fans out toward the cortex."""
    base = np.array([-22.0, -18.0, -46.0])
    alpha = np.deg2rad(-38.0 + 53.0 * v)  # coronal fan angle, mostly lateral
    beta = np.deg2rad(12.0 * np.sin(2.0 * np.pi * v * 3.7))  # antero-posterior
    direction = np.stack(
        [np.sin(alpha), np.sin(beta), np.cos(alpha) * np.cos(beta)], axis=-1
    )
    lam3 = lam[:, None]
    p0 = base + lam3 * np.array([0.0, 0.0, -8.0])
    p1 = base + lam3 * np.array([0.0, 0.0, 42.0])
    p2 = p1 + lam3 * 56.0 * direction
    p0 = p0 + np.concatenate([off, np.zeros((len(off), 1))], axis=1)
    p1 = p1 + 0.5 * np.concatenate([off, np.zeros((len(off), 1))], axis=1)
    tt = t[None, :, None]
    return (
        (1 - tt) ** 2 * p0[:, None, :]
        + 2 * (1 - tt) * tt * p1[:, None, :]
        + tt**2 * p2[:, None, :]
    )


@dataclass(frozen=True)
class BundleSpec:
    """One phantom bundle: its name, kind of shape and cross-section size."""

    name: str
    kind: str
    description: str
    cross_sd_mm: tuple[float, float]
    shape: object


BUNDLE_SPECS: dict[str, BundleSpec] = {
    s.name: s
    for s in (
        BundleSpec(
            "AF_L",
            "arc",
            "C-shaped arc, frontal to temporal around the Sylvian fissure",
            (2.5, 2.5),
            _shape_arc,
        ),
        BundleSpec(
            "CC_Mid",
            "crossing",
            "left-right arch over the midline; crosses CST_R in the right hemisphere",
            (3.5, 2.0),
            _shape_crossing,
        ),
        BundleSpec(
            "CG_L",
            "long_arc",
            "long elongated arc over the corpus callosum (cingulum-like)",
            (1.5, 1.5),
            _shape_long_arc,
        ),
        BundleSpec(
            "CST_L",
            "fan",
            "narrow at the brainstem, fanning out toward the cortex",
            (1.5, 1.5),
            _shape_fan,
        ),
        BundleSpec(
            "CST_R",
            "straight",
            "straight ascending bundle, slightly tilted; crosses CC_Mid",
            (2.5, 2.5),
            _shape_straight,
        ),
        BundleSpec(
            "UF_L",
            "u_shape",
            "short U-shaped hook, temporal pole to orbitofrontal",
            (0.8, 2.0),
            _shape_u,
        ),
    )
}
#: Phantom bundle names, sorted.
PHANTOM_BUNDLES = tuple(sorted(BUNDLE_SPECS))
_CROSSES = {"CC_Mid": ["CST_R"], "CST_R": ["CC_Mid"]}


# --------------------------------------------------------------------------
# Vectorised geometry helpers
# --------------------------------------------------------------------------


def _resample_dense(dense, counts, interval=None):
    """Resample (N, M, 3) curves to ``counts[i]`` equally spaced points each.

    With ``interval = (s0, s1)``, two (N,) arrays of arc lengths (mm from the
    curve's first point, ``0 <= s0 <= s1 <= length``), only the piece of
    curve ``i`` between ``s0[i]`` and ``s1[i]`` is resampled.

    Returns the packed (sum(counts), 3) points and the (N,) lengths of the
    dense curves.
    """
    n, m, _ = dense.shape
    seg = np.linalg.norm(np.diff(dense, axis=1), axis=2)
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(seg, axis=1)], axis=1)
    total = cum[:, -1]
    counts = np.asarray(counts, dtype=np.int64)
    row = np.repeat(np.arange(n), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.arange(counts.sum()) - starts[row]
    if interval is None:
        target = k / (counts[row] - 1) * total[row]
    else:
        s0, s1 = (np.asarray(a, dtype=float) for a in interval)
        target = s0[row] + k / (counts[row] - 1) * (s1 - s0)[row]
    big = float(total.max()) + 1.0
    cum_g = (cum + (np.arange(n) * big)[:, None]).ravel()
    j = np.searchsorted(cum_g, target + row * big, side="right") - 1
    j = np.clip(j, row * m, row * m + m - 2)
    c0 = cum_g[j]
    c1 = cum_g[j + 1]
    w = np.divide(
        target + row * big - c0, c1 - c0, out=np.zeros_like(c0), where=c1 > c0
    )
    w = np.clip(w, 0.0, 1.0)[:, None]
    flat = dense.reshape(-1, 3)
    return flat[j] * (1.0 - w) + flat[j + 1] * w, total


def _packed_lengths(points, counts):
    """Lengths (N,) of packed streamlines."""
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    seg[ends[:-1] - 1] = 0.0  # segments joining two streamlines
    seg = np.append(seg, 0.0)
    return np.add.reduceat(seg, ends - counts)


def _noise_kernel(sigma_pts):
    """Gaussian kernel scaled so that filtered unit white noise has unit sd."""
    if sigma_pts < 0.5:
        return None
    half = int(math.ceil(4.0 * sigma_pts))
    x = np.arange(-half, half + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma_pts) ** 2)
    k /= k.sum()
    return k / np.sqrt(np.sum(k**2))


def _age_factor(age, age_effect):
    return 1.0 - age_effect * (age - 50.0) / 10.0


def _subject_deformation(rng, amount):
    """Small smooth deformation: affine (rotation, scaling, shift) + warp."""
    ang = np.deg2rad(rng.uniform(-3.0, 3.0, 3)) * amount
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = 1.0 + rng.uniform(-0.02, 0.02, 3) * amount
    linear = rz @ ry @ rx @ np.diag(scale)
    shift = rng.uniform(-3.0, 3.0, 3) * amount
    n_modes = 3
    directions = rng.normal(size=(n_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = rng.normal(size=(n_modes, 3))
    waves /= np.linalg.norm(waves, axis=1, keepdims=True)
    wavelengths = rng.uniform(80.0, 160.0, n_modes)
    amplitudes = rng.uniform(0.5, 1.5, n_modes) * amount
    phases = rng.uniform(0.0, 2 * np.pi, n_modes)
    return {
        "rotation_deg": np.rad2deg(ang).tolist(),
        "scale": scale.tolist(),
        "linear": linear.tolist(),
        "shift_mm": shift.tolist(),
        "warp": {
            "amplitude_mm": amplitudes.tolist(),
            "direction": directions.tolist(),
            "wave_direction": waves.tolist(),
            "wavelength_mm": wavelengths.tolist(),
            "phase": phases.tolist(),
        },
    }


def _linear(flat, mat, shift=None):
    """``flat @ mat.T + shift`` for (P, 3) points, element-wise.

    Avoids BLAS for these tall 3-column products, whose threads only add
    contention here.
    """
    mat = np.asarray(mat, dtype=float)
    out = np.empty((flat.shape[0], mat.shape[0]))
    for r in range(mat.shape[0]):
        col = flat[:, 0] * mat[r, 0]
        col += flat[:, 1] * mat[r, 1]
        col += flat[:, 2] * mat[r, 2]
        if shift is not None:
            col += shift[r]
        out[:, r] = col
    return out


def _apply_deformation(points, deform):
    """x -> L x + b + sum_m a_m e_m sin(2 pi k_m . x / lambda_m + phi_m)."""
    shape = points.shape
    flat = points.reshape(-1, 3)
    out = _linear(flat, deform["linear"], deform["shift_mm"])
    w = deform["warp"]
    for amp, e, k, lam, ph in zip(
        w["amplitude_mm"],
        w["direction"],
        w["wave_direction"],
        w["wavelength_mm"],
        w["phase"],
    ):
        arg = _linear(flat, [np.asarray(k) * (2 * np.pi / lam)], [ph])[:, 0]
        np.sin(arg, out=arg)
        out += arg[:, None] * (amp * np.asarray(e))
    return out.reshape(shape)


def _template_centroid(spec, n_points=CENTROID_POINTS):
    t = np.linspace(0.0, 1.0, _DENSE_POINTS)
    dense = spec.shape(t, np.ones(1), np.zeros((1, 2)), np.full(1, 0.5))
    pts, _ = _resample_dense(dense, np.array([n_points]))
    return pts


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


@dataclass
class _Chunk:
    points: np.ndarray  # (P, 3) float32 packed, RAS+ mm
    counts: np.ndarray  # (N,) int
    lengths: np.ndarray  # (N,) float mm, measured on the written points
    centroid_sum: np.ndarray  # (CENTROID_POINTS, 3) sum over the chunk
    fragment: np.ndarray  # (N,) bool, True for fragments


def _fragment_intervals(full, start, fraction, rng, min_mm):
    """Which streamlines of a chunk are cut, and the arc-length piece kept.

    Parameters
    ----------
    full : ndarray, shape (m,)
        Lengths (mm) of the chunk's dense curves.
    start : int
        Index of the chunk's first streamline within the bundle.
    fraction : float
        Share of the bundle's streamlines that are fragments: this chunk
        cuts as many as make the running total ``round(fraction * (start +
        m))`` (halves up), so a bundle gets exactly ``round(fraction * n)``.
    rng : numpy.random.Generator
        The fragment generator (separate from the streamlines' own).
    min_mm : float
        Shortest fragment (mm); a fragment of a shorter curve is the whole
        curve.

    Returns
    -------
    fragment : ndarray of bool, shape (m,)
    s0, s1 : ndarray, shape (m,)
        Start and end arc length (mm) of the kept piece: ``0`` and ``full``
        for streamlines that are not cut.
    """
    m = len(full)
    k = math.floor(fraction * (start + m) + 0.5) - math.floor(fraction * start + 0.5)
    fragment = rng.permutation(m) < k
    # log-uniform length fractions: many short pieces, fewer long ones
    frac = FRAGMENT_MIN_FRACTION ** rng.uniform(size=m)
    where = rng.uniform(size=m)
    keep = np.clip(frac * full, np.minimum(min_mm, full), full)
    keep = np.where(fragment, keep, full)
    s0 = where * (full - keep)
    return fragment, s0, s0 + keep


def _textured(pts, counts, rng, kernel, opts):
    """Packed smooth streamlines with their correlated point noise, half of
    them reversed when ``opts["flip"]``, as float32 (the draws in this order:
    noise, then which to reverse)."""
    noise = rng.normal(size=pts.shape)
    if kernel is not None:
        noise = convolve1d(noise, kernel, axis=0, mode="wrap")
    pts = pts + opts["noise_mm"] * noise
    if opts["flip"]:
        pts = _reverse_some(pts, counts, rng.uniform(size=len(counts)) < 0.5)
    return pts.astype(np.float32)


def _generate_chunks(spec, n, rng, *, age_factor, deform, opts, fragment_rng=None):
    """Yield :class:`_Chunk` objects with ``n`` streamlines of one bundle.

    ``fragment_rng`` draws which streamlines are cut to fragments and where
    (see :func:`_fragment_intervals`); it is used only when
    ``opts["fragments"]`` > 0, so the streamlines' own draws from ``rng`` do
    not depend on it.
    """
    fraction = opts.get("fragments", 0.0)
    min_mm = max(FRAGMENT_MIN_MM, 2.0 * opts["step_mm"])
    spread = opts["length_spread"]
    # stratified length variates: a continuous spread with stable quantiles
    u = (rng.permutation(n) + rng.uniform(size=n)) / n
    t = np.linspace(0.0, 1.0, _DENSE_POINTS)
    kernel = _noise_kernel(opts["noise_corr_mm"] / opts["step_mm"])
    sd = np.asarray(spec.cross_sd_mm)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        lam = age_factor * (1.0 - spread + 2.0 * spread * u[start : start + m])
        off = np.clip(rng.normal(size=(m, 2)), -2.5, 2.5) * sd
        v = rng.uniform(size=m)
        wig = rng.normal(scale=_WIGGLE_MM, size=(m, 2, 3))
        dense = spec.shape(t, lam, off, v)
        dense = (
            dense
            + np.sin(np.pi * t)[None, :, None] * wig[:, None, 0, :]
            + np.sin(2 * np.pi * t)[None, :, None] * wig[:, None, 1, :]
        )
        dense = _apply_deformation(dense, deform)
        centroid, _ = _resample_dense(dense, np.full(m, CENTROID_POINTS))
        centroid_sum = centroid.reshape(m, CENTROID_POINTS, 3).sum(axis=0)
        seg = np.linalg.norm(np.diff(dense, axis=1), axis=2).sum(axis=1)
        if fraction > 0:
            # cut the dense curve before resampling and noise, so fragments
            # have the points spacing and texture of full streamlines
            fragment, s0, s1 = _fragment_intervals(
                seg, start, fraction, fragment_rng, min_mm
            )
            interval = (s0, s1)
            seg = s1 - s0
        else:
            fragment = np.zeros(m, dtype=bool)
            interval = None
        counts = np.maximum(np.rint(seg / opts["step_mm"]).astype(np.int64), 1) + 1
        pts, _ = _resample_dense(dense, counts, interval)
        pts = _textured(pts, counts, rng, kernel, opts)
        lengths = _packed_lengths(pts.astype(np.float64), counts)
        yield _Chunk(pts, counts, lengths, centroid_sum, fragment)


def _reverse_some(pts, counts, flip):
    """Packed points with the streamlines where ``flip`` is True reversed."""
    m = len(counts)
    row = np.repeat(np.arange(m), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.arange(len(pts)) - starts[row]
    src = np.where(flip[row], starts[row] + counts[row] - 1 - k, starts[row] + k)
    return pts[src]


def _trk_header():
    return {
        Field.VOXEL_TO_RASMM: PHANTOM_AFFINE.copy(),
        Field.VOXEL_SIZES: np.array(PHANTOM_VOXEL_SIZES, dtype=np.float32),
        Field.DIMENSIONS: np.array(PHANTOM_DIMS, dtype=np.int16),
        Field.VOXEL_ORDER: "RAS",
    }


def _trk_header_record(n_streamlines=0):
    """The 1000-byte TrackVis header of the phantom's space, as nibabel writes it."""
    buf = io.BytesIO()
    TrkFile(Tractogram(affine_to_rasmm=np.eye(4)), header=_trk_header()).save(buf)
    dtype = header_2_dtype.newbyteorder("<")
    hdr = np.frombuffer(buf.getvalue()[: dtype.itemsize], dtype=dtype).copy()
    hdr[Field.NB_STREAMLINES] = n_streamlines
    return hdr


def write_trk_chunks(path, chunks):
    """Write packed streamlines to a .trk file in the phantom's space, atomically.

    The TrackVis records (point count, then x y z per point, no scalars or
    properties) are assembled with numpy for a whole chunk at a time, so
    millions of streamlines are written at disk speed.

    Parameters
    ----------
    path : str or Path
        Output ``.trk``; written to a temporary name, then renamed.
    chunks : iterable of (points, counts)
        ``points``: (P, 3) RAS+ mm coordinates of consecutive streamlines;
        ``counts``: (N,) number of points of each (>= 1, summing to P).

    Returns
    -------
    n_streamlines : int
    """
    to_voxmm = _rasmm_to_voxmm()

    def records():
        for points, counts in chunks:
            counts = np.asarray(counts, dtype=np.int64)
            if len(counts):
                yield _pack_records(points, counts, to_voxmm), len(counts)

    return _write_trk_words(path, records())


def _rasmm_to_voxmm():
    """The (4, 4) affine from RAS+ mm to TrackVis voxmm of the phantom's space."""
    return get_affine_rasmm_to_trackvis(_trk_header_record()[0]).astype(np.float64)


def _pack_records(points, counts, to_voxmm):
    """TrackVis records of packed streamlines as one little-endian float32 array.

    Each record is the point count (an int32 word) followed by x y z (voxmm)
    of every point.
    """
    n = len(counts)
    vox = _linear(
        np.asarray(points, dtype=np.float64), to_voxmm[:3, :3], to_voxmm[:3, 3]
    ).astype("<f4")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rec = 3 * starts + np.arange(n)  # record start, in 4-byte words
    buf = np.empty(3 * len(vox) + n, dtype="<f4")
    buf.view("<i4")[rec] = counts
    row = np.repeat(np.arange(n), counts)
    k = np.arange(len(vox)) - starts[row]
    pos = rec[row] + 1 + 3 * k
    buf[pos] = vox[:, 0]
    buf[pos + 1] = vox[:, 1]
    buf[pos + 2] = vox[:, 2]
    return buf


def _write_trk_words(path, records):
    """Write the phantom's header and ``records`` to ``path``, atomically.

    ``records`` yields ``(words, n)``: ready TrackVis records (4-byte words)
    of ``n`` streamlines. Returns the number of streamlines written.
    """
    path = Path(path)
    n_total = 0
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(_trk_header_record().tobytes())
            for words, n in records:
                f.write(np.ascontiguousarray(words).tobytes())
                n_total += int(n)
            f.seek(0)
            f.write(_trk_header_record(n_total).tobytes())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n_total


def _write_bundle(path, chunks, stats):
    """Stream chunks into a .trk file (atomic); collect stats in ``stats``."""

    def packed():
        for ch in chunks:
            stats["lengths"].append(ch.lengths)
            stats["fragment"].append(ch.fragment)
            stats["centroid_sum"] += ch.centroid_sum
            stats["n"] += len(ch.counts)
            stats["lo"] = np.minimum(stats["lo"], ch.points.min(axis=0))
            stats["hi"] = np.maximum(stats["hi"], ch.points.max(axis=0))
            yield ch.points, ch.counts

    write_trk_chunks(path, packed())


def subject_ids(n_subjects):
    """Participant ids of a phantom: ``sub-01``, ``sub-02``, ...

    Parameters
    ----------
    n_subjects : int
        Number of subjects.

    Returns
    -------
    ids : list of str
    """
    width = max(2, len(str(n_subjects)))
    return [f"sub-{i + 1:0{width}d}" for i in range(n_subjects)]


def subject_ages(n_subjects, *, seed=0, age_range=(20.0, 80.0)):
    """Ages of the phantom's subjects: spread over ``age_range``, shuffled.

    Parameters
    ----------
    n_subjects : int
        Number of subjects.
    seed : int, optional
        Random seed.
    age_range : (float, float), optional
        Youngest and oldest age.

    Returns
    -------
    ages : ndarray of float, shape (n_subjects,)
        Ages rounded to 0.1 year, in subject order.
    """
    lo, hi = map(float, age_range)
    rng = np.random.default_rng([seed, 0])
    if n_subjects == 1:
        ages = np.array([(lo + hi) / 2.0])
    else:
        ages = np.linspace(lo, hi, n_subjects)
        jitter = 0.3 * (hi - lo) / (n_subjects - 1)
        ages = ages + rng.uniform(-jitter, jitter, n_subjects)
    ages = np.clip(ages, lo, hi)
    return np.round(rng.permutation(ages), 1)


#: Largest phantom made (a typo must not start writing terabytes).
MAX_SUBJECTS = 100_000
MAX_PER_BUNDLE = 10_000_000
MAX_STREAMLINES = 100_000_000


def _as_float(name, value):
    """``float(value)``; a DatasetError naming the option when not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DatasetError(
            f"make_phantom: {name} must be a number, got {value!r}"
        ) from None


def _check_options(n_subjects, n_per_bundle, seed, opts, bundles):
    def bad(msg):
        raise DatasetError(f"make_phantom: {msg}")

    for name, val, most in (
        ("n_subjects", n_subjects, MAX_SUBJECTS),
        ("n_per_bundle", n_per_bundle, MAX_PER_BUNDLE),
    ):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            bad(f"{name} must be a positive integer, got {val!r}")
        if val > most:
            bad(f"{name} must be at most {most}, got {val!r}")
    total = int(n_subjects) * len(bundles) * int(n_per_bundle)
    if total > MAX_STREAMLINES:
        bad(
            f"{n_subjects} subjects x {len(bundles)} bundles x {n_per_bundle} "
            f"streamlines is {total}; at most {MAX_STREAMLINES} are made"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        bad(f"seed must be a non-negative integer, got {seed!r}")
    for name in ("noise_mm", "noise_corr_mm", "deformation", "age_effect"):
        val = opts[name]
        if not np.isfinite(val) or val < 0:
            bad(f"{name} must be a finite number >= 0, got {val!r}")
    if not np.isfinite(opts["step_mm"]) or not 0.1 <= opts["step_mm"] <= 10:
        bad(f"step_mm must be between 0.1 and 10, got {opts['step_mm']!r}")
    fragments = opts["fragments"]
    if not (np.isfinite(fragments) and 0 <= fragments <= MAX_FRAGMENTS):
        bad(
            f"fragments must be a fraction between 0 and {MAX_FRAGMENTS} "
            f"(the share of each bundle's streamlines cut short), got {fragments!r}"
        )
    if not 0 <= opts["length_spread"] <= 0.45:
        bad(f"length_spread must be between 0 and 0.45, got {opts['length_spread']!r}")
    lo, hi = opts["age_range"]
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi <= 120):
        bad(f"age_range must be two ages 0 <= lo <= hi <= 120, got {(lo, hi)!r}")
    factors = [_age_factor(a, opts["age_effect"]) for a in (lo, hi)]
    if min(factors) <= 0.3:
        bad(
            f"age_effect {opts['age_effect']!r} shrinks bundles to nothing over "
            f"ages {lo}-{hi}"
        )
    unknown = [b for b in bundles if b not in BUNDLE_SPECS]
    if unknown or not bundles:
        bad(
            f"unknown bundle(s) {unknown!r}; phantom bundles are "
            f"{list(PHANTOM_BUNDLES)}"
        )


def make_phantom(
    out_dir,
    *,
    n_subjects=4,
    n_per_bundle=100,
    seed=0,
    noise_mm=0.3,
    noise_corr_mm=3.0,
    step_mm=1.0,
    length_spread=0.3,
    age_range=(20.0, 80.0),
    age_effect=0.03,
    deformation=1.0,
    fragments=0.0,
    bundles=None,
    flip=True,
    force=False,
):
    """Write a synthetic multi-subject tractography dataset with ground truth.

    Six bundles of different shapes (see :data:`BUNDLE_SPECS`): ``AF_L``
    (arc), ``CC_Mid`` (arch crossing ``CST_R``), ``CG_L`` (long arc),
    ``CST_L`` (fan), ``CST_R`` (straight), ``UF_L`` (short U-shaped hook).

    Parameters
    ----------
    out_dir : str or Path
        Folder to write into (created when missing).
    n_subjects : int, optional
        Number of subjects (``sub-01``, ...).
    n_per_bundle : int, optional
        Streamlines per bundle and subject.
    seed : int, optional
        Random seed; the same options give the same files.
    noise_mm : float, optional
        Standard deviation (mm, per axis) of the point noise.
    noise_corr_mm : float, optional
        Correlation length (mm) of the point noise along a streamline, which
        keeps streamlines smooth as tractography output is; 0 gives
        independent jitter at every point (which adds length).
    step_mm : float, optional
        Distance between consecutive points (mm).
    length_spread : float, optional
        Relative half-range of the continuous length spread within a bundle
        (0.3: streamline scales uniformly between 0.7 and 1.3).
    age_range : (float, float), optional
        Youngest and oldest subject age.
    age_effect : float, optional
        Relative shrinkage of bundle geometry per decade of age past 50 (and
        growth before 50).
    deformation : float, optional
        Strength of the subject-specific deformations (0: none).
    fragments : float, optional
        Share (0 to 0.9) of each bundle's streamlines that are fragments, as
        premature termination leaves in real tractography:
        ``round(fragments * n_per_bundle)`` (halves up) per bundle and
        subject, picked at random. A fragment is a full streamline of the
        bundle, made the same way (shape, offsets, bends, subject
        deformation, age scaling), cut to a contiguous piece of its smooth
        curve before it is resampled to ``step_mm`` points and gets its point
        noise, so it has the points spacing and texture of full streamlines.
        The piece's length fraction is log-uniform in [0.15, 1] (skewed to
        short pieces: median 0.39), the piece is at least 10 mm (and two
        steps) long before the point noise, and its position along the
        curve is uniform. 0.5
        makes lengths within every bundle span more than 4x (CG_L about 20 to
        180 mm). Centroids in the ground truth stay the means of the full
        (uncut) curves. The fragment draws come from their own random
        generator, so ``fragments=0`` gives the same ``.trk`` files as before
        the option existed.
    bundles : sequence of str, optional
        Subset of the phantom's bundles; default all.
    flip : bool, optional
        Reverse the point order of a random half of the streamlines.
    force : bool, optional
        Regenerate even when ``out_dir`` already holds this exact phantom.

    Returns
    -------
    out_dir : Path
        The folder, holding ``<subject>/<BUNDLE>.trk``, ``participants.tsv`` and
        ``ground_truth.json``.

    Raises
    ------
    DatasetError
        An option is out of range or names an unknown bundle.
    """
    out_dir = Path(out_dir).expanduser()
    bundles = sorted(PHANTOM_BUNDLES if bundles is None else set(bundles))
    opts = {
        "noise_mm": float(noise_mm),
        "noise_corr_mm": float(noise_corr_mm),
        "step_mm": float(step_mm),
        "length_spread": float(length_spread),
        "age_range": [float(age_range[0]), float(age_range[1])],
        "age_effect": float(age_effect),
        "deformation": float(deformation),
        "flip": bool(flip),
        "fragments": _as_float("fragments", fragments),
    }
    _check_options(n_subjects, n_per_bundle, seed, opts, bundles)
    options = {
        "seed": int(seed),
        "n_subjects": int(n_subjects),
        "n_per_bundle": int(n_per_bundle),
        "bundles": bundles,
        **opts,
    }
    subjects = subject_ids(n_subjects)
    gt_path = out_dir / "ground_truth.json"
    if not force and _is_complete(out_dir, options, subjects, bundles):
        logger.info("phantom already complete in %s", out_dir)
        return out_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    ages = subject_ages(n_subjects, seed=seed, age_range=age_range)
    lines = ["participant_id\tage"] + [f"{s}\t{a:.1f}" for s, a in zip(subjects, ages)]
    write_text_atomic(out_dir / "participants.tsv", "\n".join(lines) + "\n")

    stats = {b: _empty_stats() for b in bundles}
    per_subject = _write_subjects(
        out_dir, subjects, ages, bundles, stats, seed, n_per_bundle, opts
    )

    gt_bundles = {b: _bundle_truth(b, stats[b]) for b in bundles}
    truth = _ground_truth(options, gt_bundles, per_subject)
    write_text_atomic(gt_path, json.dumps(truth, indent=1) + "\n")
    logger.info(
        "phantom: %d subjects x %d bundles x %d streamlines in %s",
        n_subjects,
        len(bundles),
        n_per_bundle,
        out_dir,
    )
    return out_dir


def _empty_stats():
    """Empty running statistics of a bundle's streamlines."""
    return {
        "lengths": [],
        "fragment": [],
        "centroid_sum": np.zeros((CENTROID_POINTS, 3)),
        "n": 0,
        "lo": np.full(3, np.inf),
        "hi": np.full(3, -np.inf),
    }


def _write_subjects(out_dir, subjects, ages, bundles, stats, seed, n_per_bundle, opts):
    """Write every subject's bundles (with a progress bar); return their truth."""
    per_subject = {}
    n_subjects = len(subjects)
    total = n_subjects * len(bundles)
    with tqdm(
        total=total,
        desc="phantom",
        unit="bundle",
        disable=n_subjects * len(bundles) * n_per_bundle < 200_000,
    ) as bar:
        for i, (subject, age) in enumerate(zip(subjects, ages)):
            per_subject[subject] = _write_subject(
                out_dir / subject,
                i,
                age,
                bundles,
                seed=seed,
                n_per_bundle=n_per_bundle,
                opts=opts,
                stats=stats,
                bar=bar,
            )
    return per_subject


def _write_subject(
    subject_dir, i, age, bundles, *, seed, n_per_bundle, opts, stats, bar
):
    """Write subject ``i``'s bundles; add to ``stats``; return its ground truth."""
    deform = _subject_deformation(
        np.random.default_rng([seed, 1, i]), opts["deformation"]
    )
    factor = _age_factor(float(age), opts["age_effect"])
    subject_dir.mkdir(exist_ok=True)
    medians = {}
    full_medians = {}
    for b in bundles:
        spec = BUNDLE_SPECS[b]
        b_index = PHANTOM_BUNDLES.index(b)
        rng = np.random.default_rng([seed, 2, i, b_index])
        sub_stats = _empty_stats()
        chunks = _generate_chunks(
            spec,
            n_per_bundle,
            rng,
            age_factor=factor,
            deform=deform,
            opts=opts,
            fragment_rng=np.random.default_rng([seed, 3, i, b_index]),
        )
        _write_bundle(subject_dir / f"{b}.trk", chunks, sub_stats)
        lengths = np.concatenate(sub_stats["lengths"])
        fragment = np.concatenate(sub_stats["fragment"])
        medians[b] = float(np.median(lengths))
        full = lengths[~fragment]
        full_medians[b] = float(np.median(full)) if len(full) else None
        _add_stats(stats[b], sub_stats, lengths, fragment)
        bar.update(1)
    return {
        "age": float(age),
        "age_factor": factor,
        "deformation": deform,
        "median_length_mm": medians,
        "median_full_length_mm": full_medians,
    }


def _add_stats(agg, sub_stats, lengths, fragment):
    """Add one subject's statistics of a bundle to the bundle's totals ``agg``."""
    agg["lengths"].append(lengths.astype(np.float32))
    agg["fragment"].append(fragment)
    agg["centroid_sum"] += sub_stats["centroid_sum"]
    agg["n"] += sub_stats["n"]
    agg["lo"] = np.minimum(agg["lo"], sub_stats["lo"])
    agg["hi"] = np.maximum(agg["hi"], sub_stats["hi"])


def _bundle_truth(b, stats):
    """Ground truth of bundle ``b`` from its statistics over all subjects."""
    spec = BUNDLE_SPECS[b]
    lengths = np.concatenate(stats["lengths"])
    fragment = np.concatenate(stats["fragment"])
    p5, p50, p95 = np.percentile(lengths, [5, 50, 95])
    return {
        "kind": spec.kind,
        "description": spec.description,
        "crosses": _CROSSES.get(b, []),
        "n_streamlines": int(stats["n"]),
        "median_length_mm": float(p50),
        "p5_length_mm": float(p5),
        "p95_length_mm": float(p95),
        "min_length_mm": float(lengths.min()),
        "max_length_mm": float(lengths.max()),
        "mean_length_mm": float(lengths.mean()),
        "bbox_mm": [stats["lo"].tolist(), stats["hi"].tolist()],
        "centroid": (stats["centroid_sum"] / stats["n"]).round(4).tolist(),
        "template_centroid": _template_centroid(spec).round(4).tolist(),
        "cross_section_sd_mm": list(spec.cross_sd_mm),
        "fragments": {
            "fraction": float(fragment.mean()),
            "n_streamlines": int(fragment.sum()),
            "length_mm": _length_summary(lengths[fragment]),
        },
        "full_streamlines": {
            "n_streamlines": int((~fragment).sum()),
            "length_mm": _length_summary(lengths[~fragment]),
        },
    }


def _ground_truth(options, gt_bundles, per_subject):
    """The content of ``ground_truth.json``."""
    from aae_tract import __version__

    return {
        "generator": f"aae_tract {__version__} make_phantom",
        "options": options,
        "space": {
            "affine": PHANTOM_AFFINE.tolist(),
            "dimensions": list(PHANTOM_DIMS),
            "voxel_sizes": list(PHANTOM_VOXEL_SIZES),
            "voxel_order": "RAS",
        },
        "centroid_points": CENTROID_POINTS,
        "centroid_orientation": "centroids run from the start of the bundle's "
        "template curve; streamlines are flipped at random when options.flip",
        "age_model": "length scale = 1 - age_effect * (age - 50) / 10",
        "fragment_model": "a share options.fragments of each bundle's "
        "streamlines are contiguous pieces of full streamlines (cut before "
        "resampling and point noise); piece length fraction log-uniform in "
        f"[{FRAGMENT_MIN_FRACTION}, 1], at least {FRAGMENT_MIN_MM:g} mm, at a "
        "uniform position; centroids are means of full streamlines",
        "bundles": gt_bundles,
        "subjects": per_subject,
    }


def _length_summary(lengths):
    """min, p05, median, p95, max and mean of ``lengths`` (None when empty)."""
    if len(lengths) == 0:
        return None
    q = np.percentile(lengths, [0, 5, 50, 95, 100])
    keys = ("min", "p05", "median", "p95", "max")
    out = {k: round(float(v), 3) for k, v in zip(keys, q)}
    out["mean"] = round(float(np.mean(lengths)), 3)
    return out


def _is_complete(out_dir, options, subjects, bundles):
    gt = out_dir / "ground_truth.json"
    if not gt.is_file() or not (out_dir / "participants.tsv").is_file():
        return False
    try:
        old = json.loads(gt.read_text())
    except (OSError, ValueError):
        return False
    if old.get("options") != options:
        return False
    return all((out_dir / s / f"{b}.trk").is_file() for s in subjects for b in bundles)


def load_ground_truth(out_dir):
    """Read a phantom's ``ground_truth.json``.

    Parameters
    ----------
    out_dir : str or Path
        The phantom folder (or the JSON file itself).

    Returns
    -------
    truth : dict
    """
    p = Path(out_dir)
    if p.is_dir():
        p = p / "ground_truth.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{p}: cannot read phantom ground truth ({e})") from e


# --------------------------------------------------------------------------
# Whole-brain tractograms: every bundle of a subject plus distractors
# --------------------------------------------------------------------------

#: Label name of the streamlines that belong to no bundle (label index -1).
OTHER_LABEL = "other"
#: Range (mm) of the log-uniform target lengths of distractors.
DISTRACTOR_LENGTH_MM = (20.0, 150.0)
#: Largest turn of a distractor's smooth curve, in degrees per mm.
DISTRACTOR_MAX_TURN_DEG_PER_MM = 2.0
#: Clearance rule: a distractor is redrawn when at least
#: ``DISTRACTOR_NEAR_SHARE`` of its points lie within
#: ``DISTRACTOR_CLEARANCE_MM`` of one bundle's ground-truth centroid curve.
DISTRACTOR_CLEARANCE_MM = 6.0
DISTRACTOR_NEAR_SHARE = 0.5
#: Margin (mm) added around the bundles' bounding box to make the brain box.
DISTRACTOR_MARGIN_MM = 10.0
#: Labels are also written as ``<subject>.labels.npy`` above this many
#: streamlines, and inline in the JSON only up to ``LABELS_INLINE_MAX``.
LABELS_NPY_MIN = 100_000
LABELS_INLINE_MAX = 1_000_000
#: Spacing (mm) of the sampled centroid curves of the clearance check.
_CLEARANCE_SAMPLE_MM = 0.5
#: Sinusoidal modes and their wavelengths (mm) of the distractors' field.
_FIELD_MODES = 6
_FIELD_WAVELENGTH_MM = (100.0, 250.0)
#: Size (relative to the field) of each distractor's own constant drift.
_DISTRACTOR_DRIFT = 0.3
#: Most distractor candidates drawn at a time (at step_mm = 1).
_DISTRACTOR_BATCH = 4096
#: Streamlines assembled at a time when writing a whole-brain file.
_GATHER = 16384
#: Consecutive distractor candidates, none accepted, after which
#: make_wholebrain gives up.
_MAX_EMPTY_DRAWS = 20_000


def _brain_box(truth):
    """Box (lo, hi) in mm where distractors live.

    The bounding box of every bundle's ``bbox_mm``, made symmetric about the
    midline (x = 0), enlarged by :data:`DISTRACTOR_MARGIN_MM` and kept within
    the phantom's image.
    """
    boxes = np.array([truth["bundles"][b]["bbox_mm"] for b in truth["bundles"]])
    lo = boxes[:, 0].min(axis=0)
    hi = boxes[:, 1].max(axis=0)
    half_x = max(abs(lo[0]), abs(hi[0]))
    lo[0], hi[0] = -half_x, half_x
    lo = lo - DISTRACTOR_MARGIN_MM
    hi = hi + DISTRACTOR_MARGIN_MM
    corners = PHANTOM_AFFINE[:3, 3] + np.array(PHANTOM_VOXEL_SIZES) * (
        np.array(PHANTOM_DIMS) - 1
    )
    lo = np.maximum(lo, PHANTOM_AFFINE[:3, 3])
    hi = np.minimum(hi, corners)
    return lo, hi


def _distractor_field(rng):
    """A random smooth divergence-free vector field: a sum of sine modes."""
    k_dir = rng.normal(size=(_FIELD_MODES, 3))
    k_dir /= np.linalg.norm(k_dir, axis=1, keepdims=True)
    wavelength = rng.uniform(*_FIELD_WAVELENGTH_MM, _FIELD_MODES)
    amp = rng.normal(size=(_FIELD_MODES, 3))
    amp -= np.sum(amp * k_dir, axis=1, keepdims=True) * k_dir  # a . k = 0
    amp /= np.linalg.norm(amp, axis=1, keepdims=True)
    amp *= rng.uniform(0.5, 1.0, (_FIELD_MODES, 1))
    return {
        "wave": k_dir * (2.0 * np.pi / wavelength)[:, None],
        "amplitude": amp,
        "phase": rng.uniform(0.0, 2.0 * np.pi, _FIELD_MODES),
    }


def _field_at(x, field):
    """The field's (P, 3) vectors at points ``x`` (P, 3)."""
    # element-wise (no BLAS): a row's result does not depend on the others
    w, a = field["wave"], field["amplitude"]
    arg = x[:, 0:1] * w[:, 0] + x[:, 1:2] * w[:, 1] + x[:, 2:3] * w[:, 2]
    arg += field["phase"]
    np.sin(arg, out=arg)
    out = np.empty_like(x)
    for c in range(3):
        out[:, c] = np.sum(arg * a[:, c], axis=1)
    return out


def _turn_toward(d, target, max_angle):
    """Unit directions ``d`` turned toward ``target`` by at most ``max_angle``."""
    t = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
    c = np.clip(np.sum(d * t, axis=1), -1.0, 1.0)
    perp = t - c[:, None] * d
    norm = np.linalg.norm(perp, axis=1)
    far = (np.arccos(c) > max_angle) & (norm > 1e-12)
    out = t.copy()
    u = perp[far] / norm[far, None]
    out[far] = d[far] * math.cos(max_angle) + u * math.sin(max_angle)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _inside(x, center, radii):
    """Whether points are inside the ellipsoid (center, radii)."""
    return np.sum(((x - center) / radii) ** 2, axis=1) <= 1.0


def _trace_distractors(m, rng, field, box, step):
    """Smooth curves of ``m`` distractor candidates (before point noise).

    Each candidate has a seed point uniform in the ellipsoid inscribed in
    ``box``, a target length log-uniform in :data:`DISTRACTOR_LENGTH_MM`
    split at random between its two halves, and a small constant drift of
    its own. Both halves are traced from the seed at ``step`` mm: each step
    turns the direction toward the field's orientation (sign-matched, plus
    the drift) by at most :data:`DISTRACTOR_MAX_TURN_DEG_PER_MM` per mm, and
    stops at the target length or at the ellipsoid's surface (the cortex).
    The seed splits the target length at random between the halves; when
    one half stops at the surface, the other may go on for the rest.

    Returns the packed (P, 3) points and the (m,) counts.
    """
    lo, hi = box
    center, radii = (lo + hi) / 2.0, (hi - lo) / 2.0
    p = rng.normal(size=(m, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    seeds = center + radii * p * rng.uniform(size=(m, 1)) ** (1.0 / 3.0)
    log_lo, log_hi = np.log(DISTRACTOR_LENGTH_MM)
    n_steps = np.maximum(
        np.rint(np.exp(rng.uniform(log_lo, log_hi, m)) / step), 2
    ).astype(np.int64)
    n_fwd = np.rint(rng.uniform(size=m) * n_steps).astype(np.int64)
    drift = np.tile(rng.normal(scale=_DISTRACTOR_DRIFT, size=(m, 3)), (2, 1))
    sign = np.where(rng.uniform(size=m) < 0.5, -1.0, 1.0)
    d0 = _field_at(seeds, field) * sign[:, None] + drift[:m]
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    # halves 0..m-1 run forward from the seeds, m..2m-1 backward
    d = np.concatenate([d0, -d0])
    x = np.concatenate([seeds, seeds])
    total = np.concatenate([n_steps, n_steps])
    budget = np.concatenate([n_fwd, n_steps - n_fwd])
    partner = np.concatenate([np.arange(m, 2 * m), np.arange(m)])
    max_angle = math.radians(DISTRACTOR_MAX_TURN_DEG_PER_MM * step)
    trace = np.empty((int(n_steps.max()) + 1, 2 * m, 3))
    trace[0] = x
    taken = np.zeros(2 * m, dtype=np.int64)
    stopped = np.zeros(2 * m, dtype=bool)  # reached the surface
    alive = np.flatnonzero(budget > 0)
    while len(alive):
        xa, da = x[alive], d[alive]
        v = _field_at(xa, field)
        v *= np.where(np.sum(v * da, axis=1) < 0.0, -1.0, 1.0)[:, None]
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)
        da = _turn_toward(da, v + drift[alive], max_angle)
        xn = xa + step * da
        ok = _inside(xn, center, radii)
        # a half that reaches the surface stops and leaves the rest of the
        # length to its partner, which goes on (or on again)
        out = alive[~ok]
        stopped[out] = True
        budget[partner[out]] = total[out] - taken[out]
        alive, xn, da = alive[ok], xn[ok], da[ok]
        x[alive], d[alive] = xn, da
        taken[alive] += 1
        trace[taken[alive], alive] = xn
        alive = alive[taken[alive] < budget[alive]]
        more = partner[out]
        more = more[~stopped[more] & (taken[more] < budget[more])]
        if len(more):
            active = np.zeros(2 * m, dtype=bool)
            active[alive] = True
            active[more] = True
            alive = np.flatnonzero(active)
    fwd, bwd = taken[:m], taken[m:]
    counts = fwd + bwd + 1
    row = np.repeat(np.arange(m), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.arange(counts.sum()) - starts[row]
    back = k < bwd[row]
    step_idx = np.where(back, bwd[row] - k, k - bwd[row])
    col = np.where(back, row + m, row)
    return trace[step_idx, col], counts


def _turning_deg(pts, counts):
    """Total turning angle (degrees) of each packed streamline."""
    seg = np.diff(pts, axis=0)
    seg /= np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-12)
    cos = np.clip(np.sum(seg[1:] * seg[:-1], axis=1), -1.0, 1.0)
    ang = np.degrees(np.arccos(cos))
    # angle j sits at point j + 1; keep those inside a streamline
    ends = np.cumsum(counts)
    starts = ends - counts
    row = np.repeat(np.arange(len(counts)), counts)[1:-1]
    j = np.arange(1, len(pts) - 1)
    ang = np.where((j > starts[row]) & (j < ends[row] - 1), ang, 0.0)
    out = np.zeros(len(counts))
    np.add.at(out, row, ang)
    return out


def _centroid_trees(truth, bundles):
    """k-d trees of the bundles' centroid curves sampled every 0.5 mm."""
    trees = []
    for b in bundles:
        c = np.asarray(truth["bundles"][b]["centroid"], dtype=float)
        total = np.linalg.norm(np.diff(c, axis=0), axis=1).sum()
        n = int(math.ceil(total / _CLEARANCE_SAMPLE_MM)) + 1
        dense, _ = _resample_dense(c[None], np.array([max(n, 2)]))
        trees.append(cKDTree(dense))
    return trees


def _near_share(pts, counts, trees):
    """Largest share, over bundles, of each streamline's points near a centroid.

    A point counts as near a centroid when it lies within
    ``DISTRACTOR_CLEARANCE_MM + _CLEARANCE_SAMPLE_MM / 2`` of the centroid's
    curve sampled every ``_CLEARANCE_SAMPLE_MM``: every point within
    ``DISTRACTOR_CLEARANCE_MM`` of the curve (the centroid points joined by
    straight segments) is counted, and a few just beyond it.
    """
    radius = DISTRACTOR_CLEARANCE_MM + _CLEARANCE_SAMPLE_MM / 2.0
    row = np.repeat(np.arange(len(counts)), counts)
    share = np.zeros(len(counts))
    for tree in trees:
        # only points in the curve's bounding box (grown by radius) can be near
        box = np.all(pts >= tree.mins - radius, axis=1)
        box &= np.all(pts <= tree.maxes + radius, axis=1)
        idx = np.flatnonzero(box)
        dist, _ = tree.query(pts[idx], distance_upper_bound=radius)
        near = np.bincount(row[idx[dist < radius]], minlength=len(counts))
        share = np.maximum(share, near / counts)
    return share


def _select_packed(pts, counts, keep):
    """The packed points and counts of the streamlines where ``keep``."""
    row = np.repeat(np.arange(len(counts)), counts)
    return pts[keep[row]], counts[keep]


def _distractor_chunks(n, rng, *, field, box, trees, opts, stats):
    """Yield (points, counts) of ``n`` distractors, in batches of candidates.

    Candidates come from :func:`_trace_distractors`; each gets the phantom's
    correlated point noise and, with ``opts["flip"]``, a random direction.
    A candidate is redrawn (``stats["redrawn"]`` counts them by reason) when
    its smooth curve is shorter than the shortest distractor length, turns
    more than 180 degrees in all, or when at least ``DISTRACTOR_NEAR_SHARE``
    of its written points are near one bundle's centroid
    (:func:`_near_share`).
    ``stats["lengths"]`` collects the written lengths.
    """
    step = opts["step_mm"]
    # at most _DISTRACTOR_BATCH candidates of 150 points at a time
    cap = int(np.clip(round(_DISTRACTOR_BATCH * step), 256, _DISTRACTOR_BATCH))
    kernel = _noise_kernel(opts["noise_corr_mm"] / step)
    min_len = DISTRACTOR_LENGTH_MM[0]
    done = 0
    empty = 0  # candidates drawn since the last accepted one
    while done < n:
        # a few more than are missing (most candidates pass)
        batch = min(cap, (n - done) + (n - done) // 4 + 16)
        smooth, counts = _trace_distractors(batch, rng, field, box, step)
        pts = _textured(smooth, counts, rng, kernel, opts)
        short = (counts - 1) * step < min_len - 1e-9
        loops = ~short & (_turning_deg(smooth, counts) > 180.0)
        near = np.zeros(batch, dtype=bool)
        rest = np.flatnonzero(~short & ~loops)
        if len(rest):
            sub_pts, sub_counts = _select_packed(pts, counts, ~short & ~loops)
            share = _near_share(sub_pts.astype(np.float64), sub_counts, trees)
            near[rest] = share >= DISTRACTOR_NEAR_SHARE
        keep = ~(short | loops | near)
        accepted = np.flatnonzero(keep)
        for key, bad in (("too_short", short), ("loop", loops), ("near_bundle", near)):
            stats["redrawn"][key] += int(bad.sum())
        empty = 0 if len(accepted) else empty + batch
        if empty >= _MAX_EMPTY_DRAWS:
            raise DatasetError(
                f"make_wholebrain: no distractor candidate passed the checks in "
                f"{empty} draws"
            )
        keep[accepted[n - done :]] = False  # only as many as needed
        pts, counts = _select_packed(pts, counts, keep)
        if len(counts):
            stats["lengths"].append(_packed_lengths(pts.astype(np.float64), counts))
            done += len(counts)
            yield pts, counts


def _trk_index(path):
    """Check a phantom ``.trk`` file and index its records.

    Returns
    -------
    words : numpy.memmap of '<i4', or None
        The file's records as 4-byte words (None when it has no streamline).
    starts, counts : ndarray of int64, shape (N,)
        Word offset of each streamline's record and its number of points.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: phantom bundle file is missing")
    try:
        hdr = TrkFile.load(str(path), lazy_load=True).header
    except Exception as e:  # nibabel raises several kinds
        raise DatasetError(f"{path}: cannot read as a .trk file ({e})") from e
    order = hdr[Field.VOXEL_ORDER]
    order = order.decode() if isinstance(order, bytes) else str(order)
    if (
        hdr.get("endianness", "<") != "<"
        or int(hdr[Field.NB_SCALARS_PER_POINT]) != 0
        or int(hdr[Field.NB_PROPERTIES_PER_STREAMLINE]) != 0
        or order != "RAS"
        or tuple(int(v) for v in hdr[Field.DIMENSIONS]) != PHANTOM_DIMS
        or not np.allclose(hdr[Field.VOXEL_TO_RASMM], PHANTOM_AFFINE)
    ):
        raise DatasetError(
            f"{path}: not a phantom bundle file (expected a little-endian .trk "
            "in the phantom's space, without scalars or properties)"
        )
    offset = int(hdr["_offset_data"])
    size = path.stat().st_size - offset
    n_header = int(hdr[Field.NB_STREAMLINES])
    if size == 0 and n_header == 0:
        empty = np.zeros(0, dtype=np.int64)
        return None, empty, empty
    if size <= 0 or size % 4:
        raise DatasetError(f"{path}: truncated or corrupt .trk file")
    words = np.memmap(path, dtype="<i4", mode="r", offset=offset)
    total = len(words)
    starts, counts = [], []
    pos = 0
    while pos < total:
        c = int(words[pos])
        if c < 1 or pos + 1 + 3 * c > total:
            raise DatasetError(f"{path}: truncated or corrupt .trk file")
        starts.append(pos)
        counts.append(c)
        pos += 1 + 3 * c
    if n_header and n_header != len(counts):
        raise DatasetError(
            f"{path}: the header says {n_header} streamlines, the file holds "
            f"{len(counts)}"
        )
    return words, np.array(starts, dtype=np.int64), np.array(counts, dtype=np.int64)


def _ranges(starts, lengths):
    """Concatenated ``arange(s, s + n)`` for every pair of ``starts, lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(lengths.sum()) - np.repeat(offsets - starts, lengths)


def _shuffled_records(sources, src_file, src_start, src_count, perm):
    """Yield ``(words, n)``: the records of streamlines ``perm``, in that order.

    ``sources[f]`` holds the records of file ``f`` (4-byte words); streamline
    ``i`` is the record at word ``src_start[i]`` of ``sources[src_file[i]]``,
    of ``src_count[i]`` points. Records are copied word for word.
    """
    for i0 in range(0, len(perm), _GATHER):
        src = perm[i0 : i0 + _GATHER]
        rec_len = 1 + 3 * src_count[src]
        out_start = np.cumsum(rec_len) - rec_len
        out = np.empty(int(rec_len.sum()), dtype="<i4")
        files = src_file[src]
        for f, words in enumerate(sources):
            sel = np.flatnonzero(files == f)
            if len(sel):
                out[_ranges(out_start[sel], rec_len[sel])] = words[
                    _ranges(src_start[src[sel]], rec_len[sel])
                ]
        yield out, len(src)


def _check_wholebrain_options(phantom_dir, out_dir, distractors, seed):
    """Validate make_wholebrain's options; return ``distractors`` as a float."""

    def bad(msg):
        raise DatasetError(f"make_wholebrain ({out_dir}): {msg}")

    try:
        d = float(distractors)
    except (TypeError, ValueError):
        bad(f"distractors must be a number, got {distractors!r}")
    if not (np.isfinite(d) and 0.0 <= d < 1.0):
        bad(
            "distractors must be a share 0 <= distractors < 1 of the streamlines "
            f"(0.3: 30 % of the file), got {distractors!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        bad(f"seed must be a non-negative integer, got {seed!r}")
    ph = phantom_dir.resolve()
    out = out_dir.resolve()
    if out == ph or ph in out.parents:
        raise DatasetError(
            f"make_wholebrain: out_dir {out_dir} is inside the phantom folder "
            f"{phantom_dir}; whole-brain files there would be read as bundles. "
            "Use a separate folder"
        )
    return d


def _phantom_for_wholebrain(phantom_dir):
    """The phantom's ground truth, checked to hold what make_wholebrain needs."""
    gt_path = phantom_dir / "ground_truth.json"
    if not phantom_dir.is_dir() or not gt_path.is_file():
        raise DatasetError(
            f"{phantom_dir}: not a phantom folder (no ground_truth.json); make "
            "one with make_phantom"
        )
    truth = load_ground_truth(gt_path)
    try:
        opts = truth["options"]
        for key in ("seed", "step_mm", "noise_mm", "noise_corr_mm", "flip"):
            opts[key]
        subjects = list(truth["subjects"])
        for b in truth["bundles"].values():
            b["bbox_mm"], b["centroid"]
        bundles = sorted(truth["bundles"])
    except (KeyError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"{gt_path}: not a phantom ground truth (missing {e})"
        ) from None
    if not subjects or not bundles:
        raise DatasetError(f"{gt_path}: the phantom has no subjects or no bundles")
    return truth, subjects, bundles


def make_wholebrain(
    phantom_dir, out_dir, *, subjects=None, distractors=0.3, seed=0, force=False
):
    """Write whole-brain tractograms of a phantom, with the true labels.

    For every subject, all of its phantom bundles and some *distractors*
    (streamlines that belong to no bundle) go into one ``<subject>.trk``, in
    a seeded random order, and ``ground_truth.json`` records which streamline
    is which: the input of a bundle-labelling (recognition) benchmark.

    The bundle streamlines are the phantom's, copied record for record (the
    same float32 coordinates). The distractors look like tractography output
    outside the bundles: a smooth random divergence-free orientation field
    (six sine modes, wavelengths 100 to 250 mm, drawn per subject) is traced
    in both directions from a seed point uniform in the *brain*, the
    ellipsoid inscribed in the box around all bundles (``bbox_mm`` of the
    ground truth, made symmetric about the midline and enlarged by 10 mm);
    each distractor follows the field plus a small drift of its own, turns
    by at most 2 degrees per mm, and stops at its target length (log-uniform
    in 20 to 150 mm, split at random between the two sides of the seed) or
    at the brain's surface. Its points are ``step_mm`` apart and get the
    phantom's correlated point noise (``noise_mm``, ``noise_corr_mm``); half
    of them run the other way (with the phantom's ``flip``).

    A candidate distractor is rejected and redrawn when its smooth curve is
    shorter than 20 mm, turns more than 180 degrees in all, or when at least
    half of its points (as written) lie within 6 mm of one bundle's
    centroid curve (the ground truth's 20 ``centroid`` points joined by
    straight segments): its median distance to every bundle's centroid curve
    is at least 6 mm, so it is no near copy of a bundle. Distractors may
    still cross bundles, as real tractography does.

    Parameters
    ----------
    phantom_dir : str or Path
        A folder made by :func:`make_phantom`.
    out_dir : str or Path
        Folder to write into (created when missing); it must not be
        ``phantom_dir`` or inside it, where the whole-brain files would be
        read as bundles.
    subjects : sequence of str, optional
        Subjects of the phantom to write; default all.
    distractors : float, optional
        Share of each file's streamlines that are distractors, 0 <= d < 1:
        ``round(d / (1 - d) * n)`` (halves up) distractors join the
        subject's ``n`` bundle streamlines, so 0.3 makes 30 % of the file.
    seed : int, optional
        Random seed of the distractors and of the order; the same options
        (and phantom) give the same bytes. A subject's file does not depend
        on which other subjects are written.
    force : bool, optional
        Rewrite even when ``out_dir`` already holds this exact result.

    Returns
    -------
    out_dir : Path
        The folder, holding ``<subject>.trk`` (the phantom's ``.trk`` header
        and space), ``ground_truth.json`` and, for subjects of more than
        100,000 streamlines, ``<subject>.labels.npy``.

    Raises
    ------
    DatasetError
        ``phantom_dir`` is not a phantom folder or misses a bundle file,
        ``out_dir`` is inside it, ``distractors`` or ``seed`` is out of range,
        or a subject is unknown.

    Notes
    -----
    ``ground_truth.json`` holds ``options`` (``subjects``, ``distractors``,
    ``seed``), ``phantom`` (the phantom's ground-truth path and options),
    ``bundles`` (the label vocabulary: sorted bundle names; label ``i`` is
    ``bundles[i]``, label -1 is ``"other"``), ``distractor_model`` (the rule
    above, with its numbers) and, per subject, ``file``, ``n_streamlines``,
    ``n_bundle_streamlines``, ``n_distractors``, ``counts`` (per label name,
    ``"other"`` included), ``labels`` (the label index of every streamline
    in file order; ``null`` above 1,000,000 streamlines), ``labels_file``
    (the ``.npy`` of the same labels, int16, or ``null``),
    ``distractor_length_mm`` and ``distractors_redrawn`` (by reason).
    :func:`load_wholebrain_labels` reads the labels as names.

    Everything is streamed: distractors are generated in batches to a
    temporary file, the bundle files are memory-mapped, and the shuffled
    file is assembled 16,384 streamlines at a time, so beyond buffers of a
    fixed size a million streamlines need memory for their labels and record
    offsets only (some 30 MB).
    """
    phantom_dir = Path(phantom_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    d = _check_wholebrain_options(phantom_dir, out_dir, distractors, seed)
    truth, known, bundles = _phantom_for_wholebrain(phantom_dir)
    if subjects is None:
        chosen = list(known)
    else:
        wanted = [subjects] if isinstance(subjects, str) else list(subjects)
        unknown = sorted({str(s) for s in wanted} - set(known))
        if unknown or not wanted:
            raise DatasetError(
                f"make_wholebrain: unknown subject(s) {unknown} in phantom "
                f"{phantom_dir}; its subjects are {known}"
            )
        chosen = [s for s in known if s in set(wanted)]
    for s in chosen:
        for b in bundles:
            path = phantom_dir / s / f"{b}.trk"
            if not path.is_file():
                raise DatasetError(f"{path}: phantom bundle file is missing")

    options = {"subjects": chosen, "distractors": d, "seed": int(seed)}
    gt_path = out_dir / "ground_truth.json"
    if not force and _wholebrain_is_complete(out_dir, options, truth["options"]):
        logger.info("whole-brain tractograms already complete in %s", out_dir)
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    gt_path.unlink(missing_ok=True)  # incomplete until written again

    popts = truth["options"]
    box = _brain_box(truth)
    trees = _centroid_trees(truth, bundles)
    sizes = {s: _header_counts(phantom_dir, s, bundles) for s in chosen}
    n_all = sum(n + _n_distractors(d, n) for n in sizes.values())
    per_subject = {}
    with tqdm(
        total=n_all, desc="whole-brain", unit="streamline", disable=n_all < 200_000
    ) as bar:
        for s in chosen:
            per_subject[s] = _write_wholebrain_subject(
                phantom_dir,
                out_dir,
                s,
                known.index(s),
                bundles,
                d,
                seed=int(seed),
                popts=popts,
                box=box,
                trees=trees,
                bar=bar,
            )
    gt = _wholebrain_truth(
        options, phantom_dir / "ground_truth.json", truth, bundles, box, per_subject
    )
    _write_wholebrain_truth(gt_path, gt)
    logger.info(
        "whole-brain tractograms of %d subjects (%.0f %% distractors) in %s",
        len(chosen),
        100 * d,
        out_dir,
    )
    return out_dir


def _n_distractors(share, n_bundle):
    """``round(share / (1 - share) * n_bundle)``, halves up."""
    return int(math.floor(share / (1.0 - share) * n_bundle + 0.5))


def _header_counts(phantom_dir, subject, bundles):
    """Number of streamlines of a subject's bundle files, from their headers."""
    n = 0
    for b in bundles:
        path = phantom_dir / subject / f"{b}.trk"
        try:
            n += int(
                TrkFile.load(str(path), lazy_load=True).header[Field.NB_STREAMLINES]
            )
        except Exception as e:  # nibabel raises several kinds
            raise DatasetError(f"{path}: cannot read as a .trk file ({e})") from e
    return n


def _write_wholebrain_subject(
    phantom_dir,
    out_dir,
    subject,
    index,
    bundles,
    share,
    *,
    seed,
    popts,
    box,
    trees,
    bar,
):
    """Write ``<out_dir>/<subject>.trk`` (and labels); return its ground truth."""
    sources, files, starts, counts, labels = [], [], [], [], []
    for li, b in enumerate(bundles):
        words, st, ct = _trk_index(phantom_dir / subject / f"{b}.trk")
        sources.append(np.zeros(0, dtype="<i4") if words is None else words)
        files.append(np.full(len(ct), li, dtype=np.int16))
        starts.append(st)
        counts.append(ct)
        labels.append(np.full(len(ct), li, dtype=np.int16))
    n_bundle = int(sum(len(c) for c in counts))
    n_dist = _n_distractors(share, n_bundle)

    base = [seed, int(popts["seed"]), index]
    field = _distractor_field(np.random.default_rng([*base, 20]))
    rng = np.random.default_rng([*base, 21])
    stats = {
        "lengths": [],
        "redrawn": {"too_short": 0, "loop": 0, "near_bundle": 0},
    }
    tmp = temporary_path(out_dir / f"{subject}.distractors.bin")
    try:
        d_counts = []
        to_voxmm = _rasmm_to_voxmm()
        with open(tmp, "wb") as f:
            for pts, ct in _distractor_chunks(
                n_dist,
                rng,
                field=field,
                box=box,
                trees=trees,
                opts=popts,
                stats=stats,
            ):
                f.write(_pack_records(pts, ct, to_voxmm).tobytes())
                d_counts.append(ct)
        d_counts = np.concatenate(d_counts) if d_counts else np.zeros(0, np.int64)
        if n_dist:
            sources.append(np.memmap(tmp, dtype="<i4", mode="r"))
        else:
            sources.append(np.zeros(0, dtype="<i4"))
        rec = 1 + 3 * d_counts
        files.append(np.full(n_dist, len(bundles), dtype=np.int16))
        starts.append(np.cumsum(rec) - rec)
        counts.append(d_counts)
        labels.append(np.full(n_dist, -1, dtype=np.int16))

        src_file = np.concatenate(files)
        src_start = np.concatenate(starts)
        src_count = np.concatenate(counts).astype(np.int64)
        src_label = np.concatenate(labels)
        perm = np.random.default_rng([*base, 22]).permutation(len(src_label))

        records = _shuffled_records(sources, src_file, src_start, src_count, perm)
        n_written = _write_trk_words(
            out_dir / f"{subject}.trk", _counting(records, bar)
        )
    finally:
        sources.clear()  # close the memory maps before removing the file
        tmp.unlink(missing_ok=True)
    order = src_label[perm]
    labels_file = None
    if n_written > LABELS_NPY_MIN:
        labels_file = f"{subject}.labels.npy"
        _save_npy_atomic(out_dir / labels_file, order)
    counts_by_name = {b: int(np.sum(order == li)) for li, b in enumerate(bundles)}
    counts_by_name[OTHER_LABEL] = int(np.sum(order == -1))
    lengths = np.concatenate(stats["lengths"]) if stats["lengths"] else np.zeros(0)
    logger.info(
        "%s: %d bundle streamlines + %d distractors (%d candidates redrawn)",
        subject,
        n_bundle,
        n_dist,
        sum(stats["redrawn"].values()),
    )
    return {
        "file": f"{subject}.trk",
        "n_streamlines": int(n_written),
        "n_bundle_streamlines": n_bundle,
        "n_distractors": n_dist,
        "counts": counts_by_name,
        "distractor_length_mm": _length_summary(lengths),
        "distractors_redrawn": stats["redrawn"],
        "labels_file": labels_file,
        "labels": order,
    }


def _counting(records, bar):
    """Pass ``(words, n)`` records through, advancing ``bar`` by ``n``."""
    for words, n in records:
        bar.update(n)
        yield words, n


def _save_npy_atomic(path, array):
    """``numpy.save`` to ``path`` through a temporary file."""

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)

    write_atomic(path, write, error=DatasetError)


def _wholebrain_truth(options, phantom_gt, truth, bundles, box, per_subject):
    """The content of a whole-brain folder's ``ground_truth.json``."""
    from aae_tract import __version__

    return {
        "generator": f"aae_tract {__version__} make_wholebrain",
        "options": options,
        "phantom": {
            "ground_truth": str(phantom_gt.resolve()),
            "generator": truth.get("generator"),
            "options": truth["options"],
        },
        "space": truth.get("space"),
        "bundles": list(bundles),
        "other_label": -1,
        "other_name": OTHER_LABEL,
        "label_model": "subjects.<id>.labels[i] is the label of streamline i of "
        "<id>.trk: an index into bundles, or -1 for a distractor (other)",
        "distractor_model": {
            "description": "smooth random divergence-free orientation field "
            "traced both ways from a seed uniform in the brain ellipsoid (the "
            "ellipsoid inscribed in brain_box_mm), with a small per-streamline "
            "drift, at most max_turn_deg_per_mm, stopped at a log-uniform "
            "target length or the ellipsoid's surface; then the phantom's "
            "correlated point noise, half reversed",
            "brain_box_mm": [box[0].round(3).tolist(), box[1].round(3).tolist()],
            "length_mm": list(DISTRACTOR_LENGTH_MM),
            "max_turn_deg_per_mm": DISTRACTOR_MAX_TURN_DEG_PER_MM,
            "max_total_turn_deg": 180.0,
            "field_modes": _FIELD_MODES,
            "field_wavelength_mm": list(_FIELD_WAVELENGTH_MM),
            "clearance_mm": DISTRACTOR_CLEARANCE_MM,
            "max_near_share": DISTRACTOR_NEAR_SHARE,
            "rule": f"a distractor is redrawn when at least "
            f"{DISTRACTOR_NEAR_SHARE:g} of its points lie within "
            f"{DISTRACTOR_CLEARANCE_MM:g} mm of one bundle's centroid curve "
            "(the ground truth's centroid points joined by straight "
            "segments), when its smooth curve is shorter than "
            f"{DISTRACTOR_LENGTH_MM[0]:g} mm, or when it turns more than 180 "
            "degrees in all",
        },
        "subjects": per_subject,
    }


def _write_wholebrain_truth(path, gt):
    """Write ``gt`` as JSON, each subject's labels on one line."""
    labels = {}
    for s, v in gt["subjects"].items():
        order = v.pop("labels")
        if len(order) <= LABELS_INLINE_MAX:
            labels[s] = json.dumps(order.tolist(), separators=(",", ":"))
            v["labels"] = f"@labels:{s}@"
        else:
            v["labels"] = None
    text = json.dumps(gt, indent=1)
    for s, dumped in labels.items():
        text = text.replace(json.dumps(f"@labels:{s}@"), dumped, 1)
    write_text_atomic(path, text + "\n", error=DatasetError)


def _wholebrain_is_complete(out_dir, options, phantom_options):
    gt = out_dir / "ground_truth.json"
    if not gt.is_file():
        return False
    try:
        old = json.loads(gt.read_text())
        if old.get("options") != options:
            return False
        if old["phantom"]["options"] != phantom_options:
            return False
        for s in options["subjects"]:
            entry = old["subjects"][s]
            if not (out_dir / entry["file"]).is_file():
                return False
            if (
                entry.get("labels_file")
                and not (out_dir / entry["labels_file"]).is_file()
            ):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def load_wholebrain_labels(out_dir, subject):
    """The true label of every streamline of a whole-brain tractogram.

    Parameters
    ----------
    out_dir : str or Path
        A folder made by :func:`make_wholebrain`.
    subject : str
        A subject of it (``<out_dir>/<subject>.trk``).

    Returns
    -------
    labels : ndarray of str, shape (n_streamlines,)
        The bundle name of each streamline in file order, or ``"other"`` for
        a distractor. Read from ``<subject>.labels.npy`` when there is one,
        else from ``ground_truth.json``.

    Raises
    ------
    DatasetError
        The folder has no readable ground truth, the subject is not in it,
        or its labels are missing or do not match the vocabulary.
    """
    out_dir = Path(out_dir).expanduser()
    gt_path = out_dir / "ground_truth.json"
    try:
        gt = json.loads(gt_path.read_text())
        bundles = list(gt["bundles"])
        subjects = gt["subjects"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"{gt_path}: cannot read whole-brain ground truth ({e})"
        ) from e
    if subject not in subjects:
        raise DatasetError(
            f"{gt_path}: no subject {subject!r}; subjects are {list(subjects)}"
        )
    entry = subjects[subject]
    npy = entry.get("labels_file")
    if npy:
        path = out_dir / npy
        try:
            idx = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read labels ({e})") from e
    elif entry.get("labels") is not None:
        path = gt_path
        idx = np.asarray(entry["labels"])
    else:
        raise DatasetError(f"{gt_path}: no labels for subject {subject!r}")
    n = entry.get("n_streamlines")
    ok = idx.ndim == 1 and (n is None or len(idx) == n)
    if ok and len(idx):
        ok = np.issubdtype(idx.dtype, np.integer) and (
            -1 <= idx.min() and idx.max() < len(bundles)
        )
    if not ok:
        raise DatasetError(
            f"{path}: labels of {subject!r} do not match its ground truth"
        )
    names = np.array(list(bundles) + [OTHER_LABEL])
    return names[idx.astype(np.int64)]
