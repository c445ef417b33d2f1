"""Reading, discovering and writing tractograms.

Tractograms are read with DIPY (:func:`dipy.io.streamline.load_tractogram`,
nibabel underneath; ``.trx`` through trx-python; plain ``.trk`` files through
the faster :func:`aae_tract.trk.read_plain_trk`) into a
:class:`~dipy.io.stateful_tractogram.StatefulTractogram` in RAS+ millimetres.
Every problem with a file is raised as :class:`~aae_tract.errors.TractogramError`
with a message that names the file and says what is wrong.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from aae_tract.atomic import temporary_path
from aae_tract.errors import DatasetError, TractogramError
from aae_tract.trk import read_plain_trk

logger = logging.getLogger(__name__)

__all__ = [
    "TRACTOGRAM_EXTENSIONS",
    "BundleFile",
    "bbox_space",
    "find_bundles",
    "inside_volume",
    "load_bundle",
    "reference_from_space",
    "save_tractogram",
    "space_from_reference",
    "space_from_sft",
    "valid_streamline_mask",
]

#: File extensions aae_tract reads and writes.
TRACTOGRAM_EXTENSIONS = (".trk", ".tck", ".trx")
_NEEDS_REFERENCE = (".tck", ".trx")
_GLOB_CHARS = set("*?[")

#: Coordinates beyond +/- this many mm count as unusable, like NaN/inf: no
#: anatomy is a kilometre wide, and float32 lengths overflow near 1e19 mm.
MAX_COORDINATE_MM = 1e6


@dataclass(frozen=True)
class BundleFile:
    """One labelled tractogram file.

    Attributes
    ----------
    path : pathlib.Path
        The tractogram file.
    bundle : str
        Bundle label: the file stem (``AF_L`` for ``sub-01/AF_L.trk``).
    subject : str
        Subject: the name of the folder that holds the file.
    """

    path: Path
    bundle: str
    subject: str


def _extension(path):
    return Path(path).suffix.lower()


def check_extension(path):
    """The lower-case extension of ``path``; TractogramError when aae_tract
    does not read and write it."""
    ext = _extension(path)
    if ext not in TRACTOGRAM_EXTENSIONS:
        raise TractogramError(
            f"{path}: unknown extension {ext or '(none)'!r}; "
            f"expected one of {', '.join(TRACTOGRAM_EXTENSIONS)}"
        )
    return ext


def _check_trx_available(path):
    try:
        import trx.trx_file_memmap  # noqa: F401
    except ImportError as exc:
        raise TractogramError(
            f"{path}: reading .trx files needs trx-python; install it with "
            "`pip install aae_tract[trx]`"
        ) from exc


def _check_path(path):
    path = Path(path)
    if not path.exists():
        raise TractogramError(f"{path}: file not found")
    if path.is_dir():
        raise TractogramError(f"{path}: is a folder, expected a tractogram file")
    ext = check_extension(path)
    return path, ext


def valid_streamline_mask(streamlines, *, min_points=2):
    """Find streamlines that are usable: finite, in range and long enough.

    Parameters
    ----------
    streamlines : nibabel.streamlines.ArraySequence or sequence of (n, 3) arrays
        The streamlines to check.
    min_points : int, optional
        Fewest points a usable streamline has.

    Returns
    -------
    keep : ndarray of bool, shape (N,)
        True for streamlines with only finite coordinates within
        +/- :data:`MAX_COORDINATE_MM` and at least ``min_points`` points.
    n_nonfinite : int
        Number of streamlines dropped for NaN/inf or out-of-range coordinates.
    n_short : int
        Number of (finite) streamlines dropped for having too few points.
    """
    if isinstance(streamlines, nib.streamlines.ArraySequence):
        data = np.asarray(streamlines._data)
        offsets = np.asarray(streamlines._offsets, dtype=np.int64)
        lengths = np.asarray(streamlines._lengths, dtype=np.int64)
        if len(lengths) == 0:
            empty = np.zeros(0, dtype=bool)
            return empty, 0, 0
        compact = len(data) == int(lengths.sum())
        if compact and lengths.min() >= min_points and _all_in_range(data):
            return np.ones(len(lengths), dtype=bool), 0, 0
        bad_point = (
            ~(np.abs(data) <= MAX_COORDINATE_MM).all(axis=1)
            if data.size
            else np.zeros(0, bool)
        )
        cumulative = np.concatenate([[0], np.cumsum(bad_point, dtype=np.int64)])
        n_bad = cumulative[offsets + lengths] - cumulative[offsets]
        finite = n_bad == 0
    else:
        lengths = np.array([len(s) for s in streamlines], dtype=np.int64)
        finite = np.array(
            [_all_in_range(np.asarray(s)) for s in streamlines], dtype=bool
        )
    long_enough = lengths >= min_points
    keep = finite & long_enough
    n_nonfinite = int((~finite).sum())
    n_short = int((finite & ~long_enough).sum())
    return keep, n_nonfinite, n_short


def _all_in_range(points):
    """Whether every coordinate is finite and within +/- MAX_COORDINATE_MM."""
    if points.size == 0:
        return True
    if not np.isfinite(points).all():
        return False
    limit = MAX_COORDINATE_MM
    return bool(points.max() <= limit and points.min() >= -limit)


def _check_space(path, affine, dimensions, voxel_sizes, *, what):
    """TractogramError when a space is unusable (the volume or its grid is
    empty, negative, non-finite or singular): such a space mirrors or
    collapses the streamlines, or cannot be written back."""
    affine = np.asarray(affine, dtype=np.float64)
    dimensions = np.asarray(dimensions)
    voxel_sizes = np.asarray(voxel_sizes, dtype=np.float64)
    problems = []
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        problems.append("a non-finite affine")
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        problems.append("a singular affine")
    if dimensions.shape != (3,) or (dimensions <= 0).any():
        problems.append(f"dimensions {dimensions.tolist()}")
    if (
        voxel_sizes.shape != (3,)
        or not np.isfinite(voxel_sizes).all()
        or (voxel_sizes <= 0).any()
    ):
        problems.append(f"voxel sizes {voxel_sizes.tolist()}")
    if problems:
        raise TractogramError(
            f"{path}: the {what} describes an invalid space ({', '.join(problems)})"
        )


def _check_declared_count(path, ext, sft):
    """TractogramError when the file holds other streamlines than it declares.

    nibabel reads as many streamlines as a .trk header declares and ignores
    the rest, accepts a .trk cut at a streamline boundary, and drops empty
    .tck streamlines; the header's count and the file size tell.
    """
    n_points = int(np.sum(sft.streamlines._lengths)) if ext == ".trk" else 0
    check_counts(path, ext, len(sft), n_points)


def _trk_header(path):
    """The 1000-byte header of a ``.trk`` file as a structured array, in the
    machine's byte order."""
    from nibabel.streamlines.trk import header_2_dtype

    with open(path, "rb") as handle:
        header = np.frombuffer(handle.read(1000), dtype=header_2_dtype)
    if int(header["hdr_size"][0]) != 1000:
        header = header.byteswap()
    return header


def declared_count(path, ext):
    """The number of streamlines a ``.trk`` or ``.tck`` header declares.

    Parameters
    ----------
    path : Path
        The file (its header is read, not its body).
    ext : str
        Its extension, ``".trk"`` or ``".tck"``.

    Returns
    -------
    int or None
        None when the header declares none (a count of 0, or no ``count``
        field in a ``.tck`` header: writers may leave it out).
    """
    if ext == ".trk":
        declared = int(_trk_header(path)["nb_streamlines"][0])
    else:
        from nibabel.streamlines.tck import TckFile

        count = str(TckFile._read_header(str(path)).get("count", "0")).strip()
        declared = int(count) if count.isdigit() else 0
    return declared if declared > 0 else None


def check_counts(path, ext, n_read, n_points):
    """TractogramError when a file's header and size do not match what was read.

    Parameters
    ----------
    path : Path
        The ``.trk`` or ``.tck`` file.
    ext : str
        Its extension.
    n_read : int
        Streamlines read (all of them, usable or not).
    n_points : int
        Their points (``.trk`` only: with the header, they give the size).
    """
    if ext == ".trk":
        header = _trk_header(path)
        per_point = 3 + int(header["nb_scalars_per_point"][0])
        per_streamline = 1 + int(header["nb_properties_per_streamline"][0])
        size = 1000 + 4 * (n_read * per_streamline + n_points * per_point)
        if size != path.stat().st_size:
            raise TractogramError(
                f"{path}: the file holds {path.stat().st_size} bytes, its header "
                f"and {n_read} streamlines account for {size}: truncated or corrupt"
            )
    declared = declared_count(path, ext)
    if declared and declared != n_read:
        raise TractogramError(
            f"{path}: the header declares {declared} streamlines but {n_read} "
            "were read: truncated or corrupt (or empty streamlines)"
        )


def _read_tractogram(path, ext, ref):
    from dipy.io.streamline import load_tractogram

    try:
        with np.errstate(invalid="ignore"):  # NaN points are counted later
            sft = read_plain_trk(path) if ext == ".trk" else None
            if sft is None:
                sft = load_tractogram(
                    str(path),
                    ref,
                    bbox_valid_check=False,
                    trk_header_check=False,
                )
    except TractogramError:
        raise
    except Exception as exc:  # nibabel/dipy/trx raise many kinds
        raise TractogramError(
            f"{path}: cannot read tractogram, the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if sft is False or sft is None:
        raise TractogramError(f"{path}: DIPY could not read this tractogram")
    if ext in (".trk", ".tck"):
        _check_declared_count(path, ext, sft)
    if ext == ".trk":
        _check_space(path, *sft.space_attributes[:3], what="header")
    return sft


def _file_identity(path):
    try:
        st = os.stat(path)
    except OSError:
        raise TractogramError(f"{path}: file not found") from None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read_unchanged(path, ext, ref, *, attempts=3):
    """Read a tractogram, again when another process replaced the file meanwhile.

    The readers open the file more than once (header, body, checks); a file
    renamed into place between two opens would otherwise give a mix of two
    versions.
    """
    for _ in range(attempts):
        before = _file_identity(path)
        try:
            sft = _read_tractogram(path, ext, ref)
        except TractogramError:
            if _file_identity(path) == before:
                raise
            continue
        if _file_identity(path) == before:
            return sft
        logger.info("%s changed while it was read; reading it again", path)
    raise TractogramError(
        f"{path}: the file changed each time it was read (another process is "
        "writing it?)"
    )


def load_bundle(path, *, reference=None, min_points=2):
    """Load one tractogram into RAS+ millimetres, dropping unusable streamlines.

    Parameters
    ----------
    path : str or Path
        A ``.trk``, ``.tck`` or ``.trx`` file.
    reference : str, Path, nibabel image/header, trk header dict or "same", optional
        Space of a ``.tck`` or ``.trx`` file (a NIfTI image or a ``.trk`` in
        the same space). ``"same"`` uses the file's own header (``.trx``).
        Ignored for ``.trk``, whose header carries the space.
    min_points : int, optional
        Streamlines with fewer points are skipped.

    Returns
    -------
    sft : dipy.io.stateful_tractogram.StatefulTractogram
        In RASMM space, voxel-centre origin. Streamlines with NaN/inf
        coordinates or fewer than ``min_points`` points are removed with one
        logged warning that counts them.

    Raises
    ------
    TractogramError
        Missing file, unknown extension, missing reference, unreadable
        (truncated or corrupt) file, empty tractogram, or no usable
        streamline left.
    """

    path, ext = _check_path(path)
    if ext == ".trx":
        _check_trx_available(path)
    ref = _reference_for(path, ext, reference)
    sft = _read_unchanged(path, ext, ref)
    if len(sft) == 0:
        raise TractogramError(f"{path}: the tractogram is empty (no streamlines)")
    sft = _usable_streamlines(path, sft, min_points)
    sft.to_rasmm()
    sft.to_center()
    return sft


def _reference_for(path, ext, reference):
    """What DIPY's reader takes as the space of ``path``, checked usable."""
    if ext == ".trk":
        ref = "same"
    elif reference is None:
        raise TractogramError(
            f"{path}: a {ext} file needs a reference image for its space "
            "(a NIfTI or .trk file in the same space"
            + (', or "same" to use the .trx header)' if ext == ".trx" else ")")
        )
    elif isinstance(reference, str) and reference == "same":
        if ext == ".tck":
            raise TractogramError(
                f'{path}: a .tck file has no space of its own, so "same" '
                "cannot be its reference; give a NIfTI or .trk file in its space"
            )
        ref = str(path)
    elif isinstance(reference, (str, os.PathLike)):
        ref = Path(reference)
        if not ref.is_file():
            raise TractogramError(f"{path}: reference {ref} not found")
        ref = str(ref)
    else:
        ref = reference
    if ext != ".trk":
        from dipy.io.utils import get_reference_info

        try:
            space = get_reference_info(ref)
        except Exception as exc:
            raise TractogramError(
                f"{path}: unusable reference {reference!r} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        _check_space(path, *space[:3], what=f"reference {reference!r}")
    return ref


def _usable_streamlines(path, sft, min_points):
    """``sft`` without streamlines that have NaN/inf coordinates or too few
    points (logged); TractogramError when none is left."""
    n_total = len(sft)
    keep, n_nonfinite, n_short = valid_streamline_mask(
        sft.streamlines, min_points=min_points
    )
    n_keep = int(keep.sum())
    if n_keep == 0:
        raise TractogramError(
            f"{path}: no usable streamline: {n_nonfinite} of {n_total} have NaN/inf "
            f"or out-of-range coordinates, {n_short} have fewer than {min_points} "
            "points"
        )
    if n_keep < n_total:
        logger.warning(
            "%s: skipped %d of %d streamlines (%d with NaN/inf or out-of-range "
            "coordinates, %d with fewer than %d points)",
            path,
            n_total - n_keep,
            n_total,
            n_nonfinite,
            n_short,
            min_points,
        )
        sft = sft[np.flatnonzero(keep)]
    return sft


def _bundle_files_in_folder(folder):
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and _extension(entry) in TRACTOGRAM_EXTENSIONS:
            found.append(BundleFile(entry, entry.stem, folder.name))
        elif entry.is_dir():
            for sub in sorted(entry.iterdir()):
                if (
                    sub.is_file()
                    and not sub.name.startswith(".")
                    and _extension(sub) in TRACTOGRAM_EXTENSIONS
                ):
                    found.append(BundleFile(sub, sub.stem, entry.name))
    if not found:
        raise DatasetError(
            f"{folder}: no tractogram ({', '.join(TRACTOGRAM_EXTENSIONS)}) found in "
            "this folder or its subject folders"
        )
    return found


def _bundle_file(path):
    path, _ = _check_path(path)
    return BundleFile(path, path.stem, path.parent.resolve().name)


def find_bundles(inputs):
    """Find labelled bundle files in files, folders and glob patterns.

    Parameters
    ----------
    inputs : str, Path or sequence of them
        Tractogram files; folders laid out as ``<root>/<subject>/<BUNDLE>.ext``
        or ``<root>/<BUNDLE>.ext``; or glob patterns (``data/*/AF_*.trk``,
        ``**`` allowed).

    Returns
    -------
    list of BundleFile
        One per file, without duplicates, in input order (folders sorted).
        The bundle label is the file stem, the subject the parent folder name.

    Raises
    ------
    DatasetError
        No inputs, a pattern that matches nothing, a folder without
        tractograms, or a path that does not exist.
    TractogramError
        An explicit file with an unknown extension.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise DatasetError("no input tractograms given")
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(_bundle_files_in_folder(path))
        elif path.is_file():
            found.append(_bundle_file(path))
        elif _GLOB_CHARS & set(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            files = [
                Path(m)
                for m in matches
                if Path(m).is_file() and _extension(m) in TRACTOGRAM_EXTENSIONS
            ]
            folders = [Path(m) for m in matches if Path(m).is_dir()]
            if not files and not folders:
                raise DatasetError(f"{item}: the pattern matches no tractogram")
            found.extend(_bundle_file(f) for f in files)
            for folder in folders:
                found.extend(_bundle_files_in_folder(folder))
        else:
            raise DatasetError(f"{path}: no such file or folder")
    unique, seen = [], set()
    for bundle_file in found:
        key = bundle_file.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(bundle_file)
    return unique


def save_tractogram(sft, path, *, reference=None, bbox_valid_check=False):
    """Write a tractogram atomically (temporary name in the same folder, then rename).

    Parameters
    ----------
    sft : dipy.io.stateful_tractogram.StatefulTractogram
        The tractogram to write.
    path : str or Path
        Destination ``.trk``, ``.tck`` or ``.trx`` file; its folder is created.
    reference : str or Path, optional
        A NIfTI or tractogram whose space (affine, grid) the file gets instead
        of ``sft``'s; the streamlines keep their world (RAS+ mm) coordinates.
    bbox_valid_check : bool, optional
        Refuse streamlines outside the reference volume (DIPY's check).

    Returns
    -------
    Path
        The written file. An existing file at ``path`` is only replaced once
        the new one is complete.

    Raises
    ------
    TractogramError
        Unknown extension or a write failure.
    """
    from dipy.io.streamline import save_tractogram as dipy_save

    path = Path(path)
    ext = check_extension(path)
    if ext == ".trx":
        _check_trx_available(path)
    if reference is not None:
        sft = _in_space_of(sft, reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        ok = dipy_save(sft, str(tmp), bbox_valid_check=bbox_valid_check)
        if ok is False:
            raise TractogramError(f"{path}: DIPY refused to write this tractogram")
        os.replace(tmp, path)
    except TractogramError:
        raise
    except Exception as exc:
        raise TractogramError(
            f"{path}: cannot write tractogram ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _in_space_of(sft, reference):
    """``sft``'s streamlines (world coordinates kept) in the space of ``reference``."""
    sft.to_rasmm()
    return _on_reference(sft.streamlines, reference)


def _on_reference(streamlines, reference):
    """RAS+ mm ``streamlines`` in a StatefulTractogram on ``reference``'s grid."""
    from dipy.io.stateful_tractogram import Space, StatefulTractogram

    if not Path(reference).is_file():
        raise TractogramError(f"reference {reference} not found")
    try:
        return StatefulTractogram(streamlines, str(reference), Space.RASMM)
    except Exception as exc:
        raise TractogramError(
            f"{reference}: cannot be used as a reference ({type(exc).__name__}: {exc})"
        ) from exc


def space_from_reference(reference):
    """The space (:func:`space_from_sft`) of a NIfTI image or tractogram file.

    Raises
    ------
    TractogramError
        The file is missing or cannot serve as a reference.
    """
    return space_from_sft(_on_reference([], reference))


def space_from_sft(sft):
    """Describe the space of a tractogram as JSON-able values.

    Parameters
    ----------
    sft : dipy.io.stateful_tractogram.StatefulTractogram
        Any tractogram.

    Returns
    -------
    dict
        ``affine`` (4x4 nested list), ``dimensions`` (3 ints),
        ``voxel_sizes`` (3 floats), ``voxel_order`` (e.g. ``"RAS"``).
    """
    affine, dimensions, voxel_sizes, voxel_order = sft.space_attributes
    if isinstance(voxel_order, bytes):
        voxel_order = voxel_order.decode("utf-8")
    return {
        "affine": np.asarray(affine, dtype=np.float64).tolist(),
        "dimensions": [int(d) for d in dimensions],
        "voxel_sizes": [float(v) for v in voxel_sizes],
        "voxel_order": str(voxel_order),
    }


def bbox_space(points, voxel_size=1.0):
    """A RAS+ grid that holds ``points``, for streamlines without a reference.

    Parameters
    ----------
    points : array_like, shape (..., 3)
        Coordinates in RAS+ mm (rows with NaN/inf are ignored).
    voxel_size : float, optional
        Voxel edge in mm.

    Returns
    -------
    dict
        A space as :func:`space_from_sft` describes one: the grid's corner is
        one voxel below the smallest coordinate, its far side one voxel above
        the largest.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1)]
    if len(points):
        low = np.floor(points.min(axis=0)) - voxel_size
        high = np.ceil(points.max(axis=0)) + voxel_size
    else:
        low, high = np.zeros(3), np.ones(3)
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = low
    dims = np.maximum(np.ceil((high - low) / voxel_size).astype(int) + 1, 1)
    return {
        "affine": affine.tolist(),
        "dimensions": [int(d) for d in dims],
        "voxel_sizes": [float(voxel_size)] * 3,
        "voxel_order": "RAS",
    }


def inside_volume(streamlines, space, *, margin=1e-3):
    """Which streamlines lie wholly inside the volume a space describes.

    The test DIPY's ``StatefulTractogram.is_bbox_in_vox_valid`` applies when
    ``load_tractogram`` reads a file (``bbox_valid_check=True``, its default):
    every point, in voxel coordinates with the origin at the corner of the
    first voxel, within ``[0, dimensions]``; here ``margin`` voxels inside
    those bounds, so that the float32 rounding of a saved file does not move
    a point out (as DIPY's ``remove_invalid_streamlines`` keeps ``1e-3``).

    Parameters
    ----------
    streamlines : ndarray, shape (N, P, 3)
        Streamlines in RAS+ mm.
    space : dict
        As :func:`space_from_sft` returns it.
    margin : float, optional
        Voxels kept clear of the volume's faces.

    Returns
    -------
    ndarray of bool, shape (N,)
    """
    x = np.asarray(streamlines, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"streamlines must have shape (N, P, 3), got {x.shape}")
    to_voxel = np.linalg.inv(np.asarray(space["affine"], dtype=np.float64))
    dims = np.asarray(space["dimensions"], dtype=np.float64)
    voxel = x @ to_voxel[:3, :3].T + to_voxel[:3, 3] + 0.5
    inside = (voxel >= margin) & (voxel <= dims - margin)
    return inside.all(axis=(1, 2))


def reference_from_space(space):
    """Make a reference that StatefulTractogram accepts from :func:`space_from_sft`.

    Parameters
    ----------
    space : dict
        As returned by :func:`space_from_sft`.

    Returns
    -------
    dict
        A TrackVis header dict (``voxel_to_rasmm``, ``dimensions``,
        ``voxel_sizes``, ``voxel_order``) usable as ``reference``.

    Raises
    ------
    DatasetError
        A space dict with missing or malformed entries.
    """
    try:
        affine = np.asarray(space["affine"], dtype=np.float64)
        dimensions = np.asarray(space["dimensions"], dtype=np.int16)
        voxel_sizes = np.asarray(space["voxel_sizes"], dtype=np.float32)
        voxel_order = str(space.get("voxel_order") or "".join(nib.aff2axcodes(affine)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"invalid space description {space!r}: {exc}") from exc
    if affine.shape != (4, 4) or dimensions.shape != (3,) or voxel_sizes.shape != (3,):
        raise DatasetError(
            "invalid space description: expected a 4x4 affine and 3 dimensions and "
            f"voxel sizes, got {space!r}"
        )
    return {
        "magic_number": b"TRACK",
        "voxel_to_rasmm": affine,
        "dimensions": dimensions,
        "voxel_sizes": voxel_sizes,
        "voxel_order": voxel_order,
    }
