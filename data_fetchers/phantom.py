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
from tqdm.auto import tqdm

from aae_tract.atomic import temporary_path, write_text_atomic
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
        noise = rng.normal(size=pts.shape)
        if kernel is not None:
            noise = convolve1d(noise, kernel, axis=0, mode="wrap")
        pts = pts + opts["noise_mm"] * noise
        if opts["flip"]:
            flip = rng.uniform(size=m) < 0.5
            row = np.repeat(np.arange(m), counts)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            k = np.arange(len(pts)) - starts[row]
            src = np.where(
                flip[row], starts[row] + counts[row] - 1 - k, starts[row] + k
            )
            pts = pts[src]
        pts = pts.astype(np.float32)
        lengths = _packed_lengths(pts.astype(np.float64), counts)
        yield _Chunk(pts, counts, lengths, centroid_sum, fragment)


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
    path = Path(path)
    to_voxmm = get_affine_rasmm_to_trackvis(_trk_header_record()[0]).astype(np.float64)
    n_total = 0
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(_trk_header_record().tobytes())
            for points, counts in chunks:
                counts = np.asarray(counts, dtype=np.int64)
                n = len(counts)
                if n == 0:
                    continue
                vox = _linear(
                    np.asarray(points, dtype=np.float64),
                    to_voxmm[:3, :3],
                    to_voxmm[:3, 3],
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
                f.write(buf.tobytes())
                n_total += n
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
