"""Property-based fuzzing of the tractogram loader (:func:`aae_tract.io.load_bundle`).

Inputs: the real bundles shipped with dipy (``minimal_bundles.zip``) and small
generated files, as ``.trk``, ``.tck`` (with a reference) and ``.trx``, then
truncated, bit-flipped, overwritten, spliced; random bytes; TrackVis headers
with absurd field values; ``.tck`` headers with absurd lines; streamlines with
NaN/inf coordinates, no points or one point; broken reference images.

Every case must end in one of:

- ``refused``: an :class:`~aae_tract.errors.AAETractError` whose message names
  the file;
- ``loaded`` / ``loaded+skipped``: a tractogram with only finite coordinates
  within +/- :data:`MAX_ABS_COORD_MM`, at least two points per streamline, a
  usable space, and every streamline the file declares accounted for (loaded,
  or skipped in the one counted warning).

Any other exception, a case running over :data:`CASE_TIMEOUT` seconds, or a
load breaking those rules fails the test.

The run is bounded for CI (a few thousand cases, derandomized so it repeats).
``AAE_TRACT_FUZZ_EXAMPLES=N`` runs N cases per suite instead (see
doc/reliability.md); ``AAE_TRACT_FUZZ_REPORT=path.json`` writes the counts of
outcomes per suite; ``benchmarks/fuzz_large.py`` runs these suites with many
more cases and keeps going after a failure, counting outcomes.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import io
import json
import logging
import os
import re
import shutil
import signal
import struct
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from aae_tract.errors import AAETractError
from aae_tract.io import load_bundle

#: Seconds one case may take before it counts as a hang.
CASE_TIMEOUT = 10.0
#: Seconds after which a suite stuck outside Python (in C code) kills the run
#: with a traceback instead of hanging CI.
HARD_TIMEOUT = float(os.environ.get("AAE_TRACT_FUZZ_HARD_TIMEOUT", 1800))

#: Largest coordinate (mm) a loaded streamline may have: 1 km is no anatomy,
#: and float32 lengths of streamlines with coordinates near 1e19 overflow.
MAX_ABS_COORD_MM = 1e6

TRK_DTYPE = nib.streamlines.trk.header_2_dtype
TRK_HEADER_SIZE = 1000


def _examples(default):
    value = os.environ.get("AAE_TRACT_FUZZ_EXAMPLES", "").strip()
    return int(value) if value else default


def _fuzz_settings(default):
    return settings(
        max_examples=_examples(default),
        deadline=None,  # a hang is caught by CASE_TIMEOUT, slow CI is not a failure
        derandomize=not os.environ.get("AAE_TRACT_FUZZ_RANDOM"),
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


# ---------------------------------------------------------------- the oracle


class CaseTimeout(BaseException):
    """A case ran past :data:`CASE_TIMEOUT` (BaseException: no library
    ``except Exception`` may turn it into a clean error)."""


class Violation(AssertionError):
    """A load broke a rule; ``code`` names the rule."""

    def __init__(self, code, message):
        super().__init__(f"[{code}] {message}")
        self.code = code


@contextlib.contextmanager
def time_limit(seconds=CASE_TIMEOUT):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds``."""

    def _raise(signum, frame):
        raise CaseTimeout(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_SKIPPED = re.compile(r"skipped (\d+) of (\d+) streamlines")


def declared_count(data, ext):
    """Streamline count a file's header declares (None when it declares none)."""
    if ext == ".trk":
        if len(data) < TRK_HEADER_SIZE:
            return None
        count = struct.unpack("<i", data[988:992])[0]
        if data[996:1000] != struct.pack("<i", 1000):  # big-endian or broken
            return None
        return count if count > 0 else None
    if ext == ".tck":
        match = re.search(rb"\ncount:\s*(\d+)\s*\n", data.split(b"\nEND\n")[0])
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    return None


def check_space(sft):
    """Rule: the space a loaded tractogram carries is usable."""
    affine = np.asarray(sft.affine, dtype=np.float64)
    dims = np.asarray(sft.dimensions)
    sizes = np.asarray(sft.voxel_sizes, dtype=np.float64)
    problems = []
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        problems.append(f"affine {affine.tolist()}")
    elif abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        problems.append("singular affine")
    if dims.shape != (3,) or (dims <= 0).any():
        problems.append(f"dimensions {dims.tolist()}")
    if sizes.shape != (3,) or not np.isfinite(sizes).all() or (sizes <= 0).any():
        problems.append(f"voxel sizes {sizes.tolist()}")
    if problems:
        raise Violation("invalid-space", "loaded with " + ", ".join(problems))


def run_case(path, *, reference=None, expected=None, declared=None):
    """Load ``path`` and check the outcome against the rules.

    Parameters
    ----------
    path : Path
        The file to load.
    reference : optional
        Passed to :func:`load_bundle`.
    expected : list of (n, 3) arrays, optional
        The streamlines a correct load returns (RAS+ mm), when known.
    declared : int, optional
        Streamlines the file truly holds (loaded + skipped must equal it).

    Returns
    -------
    str
        ``"refused"``, ``"loaded"`` or ``"loaded+skipped"``.

    Raises
    ------
    Violation
        A rule was broken (``code`` says which).
    """
    records = _Records()
    io_logger = logging.getLogger("aae_tract.io")
    io_logger.addHandler(records)
    try:
        with time_limit():
            try:
                with np.errstate(all="ignore"):
                    sft = load_bundle(path, reference=reference)
            except AAETractError as exc:
                if str(path) not in str(exc) and path.name not in str(exc):
                    raise Violation(
                        "message", f"error does not name the file: {exc}"
                    ) from exc
                return "refused"
            except CaseTimeout as exc:
                raise Violation("hang", str(exc)) from exc
            except Exception as exc:
                raise Violation(
                    f"crash:{type(exc).__name__}", f"{type(exc).__name__}: {exc}"
                ) from exc
            data = np.asarray(sft.streamlines.get_data())
            lengths = np.asarray(sft.streamlines._lengths)
    finally:
        io_logger.removeHandler(records)
    if len(sft) == 0:
        raise Violation("empty", "loaded an empty tractogram")
    if not np.isfinite(data).all():
        raise Violation("non-finite", "loaded NaN/inf coordinates")
    if lengths.min() < 2:
        raise Violation("short", "loaded a streamline with fewer than 2 points")
    if data.size and np.abs(data).max() > MAX_ABS_COORD_MM:
        raise Violation("huge", f"loaded coordinates up to {np.abs(data).max():g}")
    skipped, total = 0, len(sft)
    for message in records.messages:
        match = _SKIPPED.search(message)
        if match:
            skipped, total = int(match.group(1)), int(match.group(2))
            if total - skipped != len(sft) or str(path) not in message:
                raise Violation("skip-count", f"{message!r} but {len(sft)} loaded")
    if declared is not None and total != declared:
        raise Violation(
            "count-mismatch",
            f"the file declares {declared} streamlines, {len(sft)} loaded and "
            f"{skipped} skipped",
        )
    check_space(sft)
    if expected is not None:
        if len(sft) != len(expected):
            raise Violation(
                "wrong-result", f"{len(sft)} streamlines loaded, {len(expected)} valid"
            )
        for got, want in zip(sft.streamlines, expected):
            scale = 1e-3 * max(1.0, float(np.abs(want).max()))
            if got.shape != want.shape or not np.allclose(got, want, atol=scale):
                raise Violation("wrong-result", "coordinates differ from the file's")
    return "loaded+skipped" if skipped else "loaded"


OUTCOMES = Counter()


#: Set to a folder by benchmarks/fuzz_large.py: violations are counted and the
#: offending files copied there, instead of failing at the first one.
COLLECT_VIOLATIONS = None


def check(suite, path, **kwargs):
    """:func:`run_case`, counting the outcome under ``suite``."""
    try:
        outcome = run_case(path, **kwargs)
    except Violation as exc:
        outcome = f"violation:{exc.code}"
        OUTCOMES[(suite, outcome)] += 1
        if COLLECT_VIOLATIONS is None:
            raise
        keep = Path(COLLECT_VIOLATIONS)
        keep.mkdir(parents=True, exist_ok=True)
        n = OUTCOMES[(suite, outcome)]
        name = f"{suite.replace(' ', '_')}-{exc.code}-{n}{Path(path).suffix}"
        shutil.copyfile(path, keep / name)
        return outcome
    OUTCOMES[(suite, outcome)] += 1
    return outcome


@pytest.fixture(autouse=True)
def _hard_timeout():
    """Kill the run with a traceback if a test is stuck where signals cannot
    reach (C code); CASE_TIMEOUT catches hangs in Python code."""
    faulthandler.dump_traceback_later(HARD_TIMEOUT, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module", autouse=True)
def _report_outcomes():
    yield
    target = os.environ.get("AAE_TRACT_FUZZ_REPORT")
    if target:
        rows = [
            {"suite": suite, "outcome": outcome, "cases": n}
            for (suite, outcome), n in sorted(OUTCOMES.items())
        ]
        Path(target).write_text(json.dumps(rows, indent=2))


# --------------------------------------------------------------- seed corpus


def _line_streamlines(n, n_points, rng):
    out = []
    for _ in range(n):
        t = np.linspace(0.0, 1.0, n_points)[:, None]
        start = rng.uniform(-40, 40, 3)
        direction = rng.normal(size=3) * 30
        bend = rng.normal(size=3) * 5
        out.append((start + t * direction + np.sin(np.pi * t) * bend).astype("f4"))
    return out


def trk_header(*, voxel_sizes=(2.0, 2.0, 2.0), dims=(64, 64, 64), affine=None):
    """A TrackVis header dict (for nibabel's TrkFile) with a non-trivial space."""
    if affine is None:
        affine = np.array(
            [[-2.0, 0, 0, 63], [0, 2.0, 0, -90], [0, 0, 2.0, -40], [0, 0, 0, 1]]
        )
    return {
        nib.streamlines.Field.VOXEL_TO_RASMM: np.asarray(affine, dtype="f4"),
        nib.streamlines.Field.VOXEL_SIZES: np.asarray(voxel_sizes, dtype="f4"),
        nib.streamlines.Field.DIMENSIONS: np.asarray(dims, dtype="i2"),
        nib.streamlines.Field.VOXEL_ORDER: "".join(nib.aff2axcodes(affine)),
    }


def trk_bytes(streamlines, *, header=None, scalars=False, properties=False):
    """Bytes of a .trk file holding ``streamlines`` (RAS+ mm).

    The header comes from nibabel; the body is written here (an int32 point
    count, then x y z [scalars] per point, [properties]) so that any content,
    including empty streamlines and NaN/inf, can be stored.
    """
    from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

    header = dict(header or trk_header())
    tractogram = nib.streamlines.Tractogram(
        [np.zeros((2, 3), "f4")], affine_to_rasmm=np.eye(4)
    )
    buffer = io.BytesIO()
    nib.streamlines.TrkFile(tractogram, header=header).save(buffer)
    head = np.frombuffer(buffer.getvalue()[:TRK_HEADER_SIZE], dtype=TRK_DTYPE).copy()
    head["nb_streamlines"] = len(streamlines)
    head["nb_scalars_per_point"] = int(scalars)
    head["nb_properties_per_streamline"] = int(properties)
    parsed = nib.streamlines.TrkFile._read_header(io.BytesIO(head.tobytes()))
    to_voxmm = np.linalg.inv(get_affine_trackvis_to_rasmm(parsed))
    body = []
    for i, points in enumerate(streamlines):
        points = np.asarray(points, dtype="f8").reshape(-1, 3)
        with np.errstate(all="ignore"):
            voxmm = points @ to_voxmm[:3, :3].T + to_voxmm[:3, 3]
        columns = [voxmm.astype("<f4")]
        if scalars:
            columns.append(np.linspace(0, 1, len(points), dtype="<f4")[:, None])
        body.append(struct.pack("<i", len(points)))
        body.append(np.hstack(columns).astype("<f4").tobytes())
        if properties:
            body.append(np.float32(i).astype("<f4").tobytes())
    return head.tobytes() + b"".join(body)


def tck_bytes(streamlines):
    """Bytes of a .tck file holding ``streamlines`` (RAS+ mm) written by nibabel."""
    tractogram = nib.streamlines.Tractogram(
        [np.asarray(s, dtype="f4").reshape(-1, 3) for s in streamlines if len(s)],
        affine_to_rasmm=np.eye(4),
    )
    buffer = io.BytesIO()
    with np.errstate(all="ignore"):
        nib.streamlines.TckFile(tractogram).save(buffer)
    data = buffer.getvalue()
    if any(len(s) == 0 for s in streamlines):
        # nibabel cannot write an empty streamline; in .tck it is a delimiter
        # right after another one
        data = _tck_file(
            streamlines,
            [("count", f"{len(streamlines):010d}"), ("datatype", "Float32LE")],
            "Float32LE",
            0,
        )
    return data


@functools.cache
def corpus():
    """Seed files: name -> (bytes, extension, needs a reference)."""
    from dipy.data import get_fnames

    with zipfile.ZipFile(get_fnames(name="minimal_bundles")) as archive:
        real_trk = archive.read("sub_1/AF_L.trk")
        real_cst = archive.read("sub_2/CST_R.trk")
    real = nib.streamlines.load(io.BytesIO(real_trk)).streamlines
    rng = np.random.default_rng(0)
    small = _line_streamlines(4, 6, rng)
    seeds = {
        "real_trk": (real_trk, ".trk", False),
        "real_cst_trk": (real_cst, ".trk", False),
        "real_tck": (tck_bytes(list(real)[:12]), ".tck", True),
        "small_trk": (trk_bytes(small), ".trk", False),
        "small_scalars_trk": (
            trk_bytes(small, scalars=True, properties=True),
            ".trk",
            False,
        ),
        "small_tck": (tck_bytes(small), ".tck", True),
    }
    try:
        seeds["small_trx"] = (trx_bytes(small), ".trx", True)
    except ImportError:  # trx-python is optional
        pass
    return seeds


def trx_bytes(streamlines):
    """Bytes of a .trx file (trx-python through DIPY) in the seeds' 2 mm space."""
    import trx.trx_file_memmap  # noqa: F401
    from dipy.io.stateful_tractogram import Space, StatefulTractogram
    from dipy.io.streamline import save_tractogram

    reference = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.diag([2, 2, 2, 1.0]))
    sft = StatefulTractogram(streamlines, reference, Space.RASMM)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.trx"
        save_tractogram(sft, str(path), bbox_valid_check=False)
        return path.read_bytes()


@functools.cache
def reference_bytes():
    """A small NIfTI image (bytes) in the space of the ``.tck`` seeds."""
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.diag([2, 2, 2, 1.0]))
    return image.to_bytes()


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="aae_fuzz_") as folder:
        folder = Path(folder)
        (folder / "ref.nii").write_bytes(reference_bytes())
        yield folder


def write_case(workdir, data, ext, name="case"):
    path = workdir / f"{name}{ext}"
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------- mutations


def truncate(data, at):
    return data[: at % (len(data) + 1)]


def flip_bits(data, flips):
    out = bytearray(data)
    for position, bit in flips:
        if out:
            out[position % len(out)] ^= 1 << bit
    return bytes(out)


def overwrite(data, at, chunk):
    if not data:
        return bytes(chunk)
    at %= len(data)
    return data[:at] + chunk + data[at + len(chunk) :]


def delete(data, at, n):
    if not data:
        return data
    at %= len(data)
    return data[:at] + data[at + n :]


def insert(data, at, chunk):
    at %= len(data) + 1
    return data[:at] + chunk + data[at:]


def duplicate(data, at, n):
    if not data:
        return data
    at %= len(data)
    return data[:at] + data[at : at + n] + data[at:]


MUTATORS = {
    "truncate": truncate,
    "flip_bits": flip_bits,
    "overwrite": overwrite,
    "delete": delete,
    "insert": insert,
    "duplicate": duplicate,
}

_position = st.integers(0, 2**31 - 1)
_chunk = st.binary(min_size=1, max_size=48)
mutation = st.one_of(
    st.tuples(st.just("truncate"), _position),
    st.tuples(
        st.just("flip_bits"),
        st.lists(st.tuples(_position, st.integers(0, 7)), min_size=1, max_size=8),
    ),
    st.tuples(st.just("overwrite"), _position, _chunk),
    st.tuples(st.just("delete"), _position, st.integers(1, 64)),
    st.tuples(st.just("insert"), _position, _chunk),
    st.tuples(st.just("duplicate"), _position, st.integers(1, 64)),
)


def mutate(data, mutations):
    for name, *args in mutations:
        data = MUTATORS[name](data, *args)
    return data


def _reference_for(workdir, ext):
    return {".tck": workdir / "ref.nii", ".trx": "same"}.get(ext)


# -------------------------------------------------------------------- suites


@_fuzz_settings(1200)
@given(
    seed=st.sampled_from(sorted(corpus())),
    mutations=st.lists(mutation, min_size=1, max_size=3),
)
def test_fuzz_mutated_files(workdir, seed, mutations):
    """Truncated, bit-flipped, overwritten and spliced real and generated files."""
    original, ext, _ = corpus()[seed]
    data = mutate(original, mutations)
    path = write_case(workdir, data, ext)
    check(
        "mutated files",
        path,
        reference=_reference_for(workdir, ext),
        declared=declared_count(data, ext),
    )


_prefixes = st.sampled_from(
    [
        b"",
        b"TRACK",
        b"TRACK\x00",
        b"mrtrix tracks\n",
        b"mrtrix tracks\ncount: 3\ndatatype: Float32LE\nfile: . 60\nEND\n",
        b"PK\x03\x04",
        b"header",
    ]
)


@_fuzz_settings(600)
@given(
    ext=st.sampled_from([".trk", ".tck", ".trx"]),
    prefix=_prefixes,
    body=st.one_of(st.binary(max_size=1200), st.just(b"")),
    header_seed=st.booleans(),
)
def test_fuzz_random_bytes(workdir, ext, prefix, body, header_seed):
    """Empty files, random bytes, random bytes behind a valid magic or header."""
    if header_seed and ext == ".trk":
        prefix = corpus()["small_trk"][0][:TRK_HEADER_SIZE]
    elif header_seed and ext == ".tck":
        tck = corpus()["small_tck"][0]
        prefix = tck[: tck.index(b"\nEND\n") + 5]
    data = prefix + body
    path = write_case(workdir, data, ext)
    check(
        "random bytes",
        path,
        reference=_reference_for(workdir, ext),
        declared=declared_count(data, ext),
    )


# --- TrackVis header fields with absurd values

_absurd_int = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 999, 1000, 1001, 2**15 - 1, -(2**15)]),
    st.sampled_from([2**31 - 1, -(2**31), 2**16, 50, 49, 51]),
    st.integers(-(2**31), 2**31 - 1),
)
_absurd_float = st.one_of(
    st.sampled_from([0.0, -0.0, -1.0, -2.0, 1e-38, 1e-30, 1e30, 3.4e38, 0.5, 2.0, 1.0]),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)


def _matrix(values):
    return np.asarray(values, dtype="f4").reshape(4, 4)


_singular = st.sampled_from(
    [
        np.zeros((4, 4)),
        np.diag([1.0, 1.0, 0.0, 1.0]),
        np.diag([1.0, 1.0, 1.0, 0.0]),
        np.array([[1, 2, 3, 0], [2, 4, 6, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
        np.diag([1e-30, 1e-30, 1e-30, 1.0]),
        np.diag([1e30, 1e30, 1e30, 1.0]),
        np.full((4, 4), np.nan),
        np.eye(4) * -1,
    ]
)
_orders = st.one_of(
    st.sampled_from([b"RAS", b"LPS", b"LAS", b"", b"RRR", b"XYZ", b"\xff\xfe\x00"]),
    st.binary(min_size=0, max_size=4),
)

TRK_FIELDS = {
    "dimensions": st.lists(_absurd_int, min_size=3, max_size=3),
    "voxel_sizes": st.lists(_absurd_float, min_size=3, max_size=3),
    "origin": st.lists(_absurd_float, min_size=3, max_size=3),
    "nb_scalars_per_point": st.one_of(st.integers(-5, 12), _absurd_int),
    "nb_properties_per_streamline": st.one_of(st.integers(-5, 12), _absurd_int),
    "voxel_to_rasmm": st.one_of(
        _singular,
        st.lists(_absurd_float, min_size=16, max_size=16).map(_matrix),
    ),
    "voxel_order": _orders,
    "nb_streamlines": _absurd_int,
    "version": st.one_of(st.integers(-2, 4), _absurd_int),
    "hdr_size": st.one_of(st.just(1000), _absurd_int),
    "magic_number": st.one_of(st.just(b"TRACK"), st.binary(min_size=0, max_size=6)),
    "image_orientation_patient": st.lists(_absurd_float, min_size=6, max_size=6),
}


def _set_trk_field(data, field, value):
    header = np.frombuffer(data[:TRK_HEADER_SIZE], dtype=TRK_DTYPE).copy()
    # integer fields are wrapped to their width, as bytes on disk would be
    kind = header.dtype[field].base.kind
    if kind in "iu":
        bits = header.dtype[field].base.itemsize * 8
        value = (np.asarray(value, dtype=np.int64) + 2 ** (bits - 1)) % 2**bits - 2 ** (
            bits - 1
        )
    with np.errstate(all="ignore"):
        header[field] = value
    return header.tobytes() + data[TRK_HEADER_SIZE:]


def _body_count(data):
    """Streamlines in a plain .trk body (no scalars/properties), or None."""
    words = np.frombuffer(data[TRK_HEADER_SIZE:], dtype="<i4")
    position, n = 0, 0
    while position < len(words):
        count = int(words[position])
        if count < 0:
            return None
        position += 1 + 3 * count
        n += 1
    return n if position == len(words) else None


@_fuzz_settings(600)
@given(
    seed=st.sampled_from(["real_trk", "small_trk", "small_scalars_trk"]),
    fields=st.lists(
        st.sampled_from(sorted(TRK_FIELDS)), min_size=1, max_size=3, unique=True
    ).flatmap(
        lambda names: st.tuples(*[st.tuples(st.just(n), TRK_FIELDS[n]) for n in names])
    ),
)
def test_fuzz_trk_header_fields(workdir, seed, fields):
    """TrackVis headers with absurd dimensions, voxel sizes, affines and counts."""
    original = corpus()[seed][0]
    data = original
    for field, value in fields:
        data = _set_trk_field(data, field, value)
    path = write_case(workdir, data, ".trk")
    truth = _body_count(original) if seed != "small_scalars_trk" else None
    declared = declared_count(data, ".trk")
    if declared is not None and truth is not None and declared != truth:
        declared = -1  # the header lies: a load that "succeeds" is wrong
    elif declared is None and truth is not None:
        declared = truth  # no count in the header: every streamline in the body
    check("trk header fields", path, declared=declared)


# --- .tck headers

_tck_datatypes = st.sampled_from(
    [
        "Float32LE",
        "Float32BE",
        "Float64LE",
        "Float64BE",
        "Float16LE",
        "Int32LE",
        "float32le",
        "",
        "Float32",
        "Float32LE Float32LE",
    ]
)
_tck_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=24
)


def _tck_file(streamlines, lines, datatype, offset_fix):
    """A .tck file of ``streamlines`` whose header is ``lines`` (key, value)."""
    dtype = {
        "Float32LE": "<f4",
        "Float32BE": ">f4",
        "Float64LE": "<f8",
        "Float64BE": ">f8",
    }.get(datatype, "<f4")
    chunks = []
    for s in streamlines:
        chunks.append(np.asarray(s, dtype=dtype).reshape(-1, 3))
        chunks.append(np.full((1, 3), np.nan, dtype=dtype))
    chunks.append(np.full((1, 3), np.inf, dtype=dtype))
    body = np.concatenate(chunks).astype(dtype).tobytes()
    head = b"mrtrix tracks\n"
    for key, value in lines:
        head += f"{key}: {value}\n".encode("utf-8", "surrogateescape")
    offset = len(head) + len(b"file: . \nEND\n")
    offset += len(str(offset))
    offset = max(offset + offset_fix, 0)
    head += f"file: . {offset}\nEND\n".encode()
    data = head + b"\x00" * max(offset - len(head), 0)
    return data[:offset] + body


@_fuzz_settings(500)
@given(
    seed=st.sampled_from(["small_tck", "real_tck"]),
    count=st.one_of(
        st.none(),
        st.sampled_from(["0", "1", "4", "12", "13", "-1", "9999999999", "x", ""]),
        st.integers(-5, 2**40).map(str),
    ),
    datatype=st.one_of(_tck_datatypes, _tck_text),
    extra=st.lists(
        st.tuples(
            st.sampled_from(["timestamp", "step_size", "roi", "foo", ""]), _tck_text
        ),
        max_size=3,
    ),
    offset_fix=st.one_of(st.just(0), st.integers(-80, 80)),
)
def test_fuzz_tck_header(workdir, seed, count, datatype, extra, offset_fix):
    """.tck headers: wrong counts, unknown datatypes, bad offsets, odd lines."""
    streamlines = list(nib.streamlines.load(io.BytesIO(corpus()[seed][0])).streamlines)
    lines = list(extra)
    if count is not None:
        lines.append(("count", count))
    lines.append(("datatype", datatype))
    data = _tck_file(streamlines, lines, datatype, offset_fix)
    path = write_case(workdir, data, ".tck")
    clean = offset_fix == 0 and datatype in (
        "Float32LE",
        "Float32BE",
        "Float64LE",
        "Float64BE",
    )
    declared = declared_count(data, ".tck")
    if clean and declared is not None and declared != len(streamlines):
        declared = -1  # header count is a lie: loading "successfully" is wrong
    check(
        "tck header",
        path,
        reference=workdir / "ref.nii",
        declared=declared,
        expected=streamlines if clean and declared is not None else None,
    )


# --- streamline content

_coordinate = st.one_of(
    st.floats(-300, 300, width=32),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0]),
    st.sampled_from([9e5, -9e5, 2e6, -3e30, 1e38]),  # beyond MAX_ABS_COORD_MM
)
_streamline = st.one_of(
    st.integers(0, 3).map(lambda n: np.zeros((n, 3), "f4") + np.arange(n)[:, None]),
    st.lists(st.lists(_coordinate, min_size=3, max_size=3), min_size=0, max_size=6).map(
        lambda p: np.asarray(p, dtype="f4").reshape(-1, 3)
    ),
    st.integers(2, 12).map(lambda n: np.linspace([0, 0, 0], [n, 2 * n, 3], n, "f4")),
)


def _valid(streamlines):
    return [
        s for s in streamlines if len(s) >= 2 and (np.abs(s) <= MAX_ABS_COORD_MM).all()
    ]


#: A 2 mm grid rotated 30 degrees about z, shifted: exercises the full affine.
OBLIQUE = np.array(
    [
        [2 * np.cos(np.pi / 6), -2 * np.sin(np.pi / 6), 0, -20],
        [2 * np.sin(np.pi / 6), 2 * np.cos(np.pi / 6), 0, 30],
        [0, 0, 2, -12],
        [0, 0, 0, 1],
    ]
)


@_fuzz_settings(600)
@given(
    streamlines=st.lists(_streamline, min_size=0, max_size=8),
    fmt=st.sampled_from(["trk", "trk_identity", "trk_oblique", "tck", "trk_scalars"]),
)
def test_fuzz_streamline_content(workdir, streamlines, fmt):
    """NaN/inf and absurd coordinates, empty and single-point streamlines:
    skipped and counted, the rest returned exactly."""
    if fmt == "tck":
        # in .tck an all-NaN point ends a streamline and inf inf inf ends the
        # file: such points cannot be written inside a streamline
        streamlines = [s for s in streamlines if not (np.isnan(s).all(axis=1).any())]
        streamlines = [s for s in streamlines if not np.isinf(s).all(axis=1).any()]
        data, ext, reference = tck_bytes(streamlines), ".tck", workdir / "ref.nii"
    elif fmt in ("trk_identity", "trk_oblique"):
        if fmt == "trk_identity":
            header = trk_header(voxel_sizes=(1, 1, 1), dims=(9, 9, 9), affine=np.eye(4))
        else:
            header = trk_header(affine=OBLIQUE)
        data, ext, reference = trk_bytes(streamlines, header=header), ".trk", None
    else:
        data = trk_bytes(streamlines, scalars=fmt == "trk_scalars")
        ext, reference = ".trk", None
    path = write_case(workdir, data, ext)
    expected = _valid(streamlines)
    check(
        "streamline content",
        path,
        reference=reference,
        expected=expected,
        declared=len(streamlines) or None,
    )


# --- reference images for .tck

_nifti_fields = {
    "dim": st.lists(st.integers(-3, 40000), min_size=8, max_size=8),
    "pixdim": st.lists(_absurd_float, min_size=8, max_size=8),
    "sform_code": st.integers(-2, 5),
    "qform_code": st.integers(-2, 5),
    "srow_x": st.lists(_absurd_float, min_size=4, max_size=4),
    "quatern_b": _absurd_float,
    "vox_offset": st.sampled_from([0.0, 352.0, -1.0, 1e9, float("nan")]),
    "datatype": st.sampled_from([0, 2, 4, 16, 255, 2048, -1]),
}


def _nifti_with(fields):
    header = np.frombuffer(reference_bytes()[:348], dtype=nib.nifti1.header_dtype)
    header = header.copy()
    for name, value in fields:
        target = header[name]
        with np.errstate(all="ignore"):
            value = np.asarray(value, dtype=np.float64)
            if target.dtype.kind in "iu":
                info = np.iinfo(target.dtype)
                value = np.clip(np.nan_to_num(value), info.min, info.max)
            header[name] = value.astype(target.dtype)
    return header.tobytes() + reference_bytes()[348:]


@_fuzz_settings(400)
@given(
    kind=st.sampled_from(["fields", "bytes"]),
    fields=st.lists(
        st.sampled_from(sorted(_nifti_fields)), min_size=1, max_size=3, unique=True
    ).flatmap(
        lambda names: st.tuples(
            *[st.tuples(st.just(n), _nifti_fields[n]) for n in names]
        )
    ),
    mutations=st.lists(mutation, min_size=1, max_size=2),
)
def test_fuzz_reference_image(workdir, kind, fields, mutations):
    """A .tck whose reference NIfTI is corrupt or has absurd header values."""
    if kind == "fields":
        ref = _nifti_with(fields)
    else:
        ref = mutate(reference_bytes(), mutations)
    reference = write_case(workdir, ref, ".nii", name="reference")
    tck, _, _ = corpus()["small_tck"]
    path = write_case(workdir, tck, ".tck")
    expected = list(nib.streamlines.load(io.BytesIO(tck)).streamlines)
    check(
        "reference image",
        path,
        reference=reference,
        expected=expected,
        declared=len(expected),
    )


# ----------------------------------------- regressions found by these suites
#
# Each input below loaded "successfully" with a wrong result before
# aae_tract.io checked for it.


def _real_trk():
    return corpus()["real_trk"][0]


def test_trk_truncated_at_a_streamline_boundary_is_refused(tmp_path):
    """A .trk declaring 50 streamlines cut after the 10th loaded 10."""
    cut = TRK_HEADER_SIZE + 10 * (4 + 20 * 12)
    path = write_case(tmp_path, _real_trk()[:cut], ".trk")
    assert run_case(path, declared=50) == "refused"


def test_trk_header_count_below_the_body_is_refused(tmp_path):
    """nb_streamlines 3 in front of 50 streamlines loaded 3, dropped 47."""
    data = _set_trk_field(_real_trk(), "nb_streamlines", 3)
    assert run_case(write_case(tmp_path, data, ".trk"), declared=-1) == "refused"


def test_tck_empty_streamline_is_not_lost_silently(tmp_path):
    """An empty .tck streamline (two delimiters in a row) vanished uncounted."""
    streamlines = [np.zeros((0, 3), "f4")] + _line_streamlines(
        3, 5, np.random.default_rng(1)
    )
    path = write_case(tmp_path, tck_bytes(streamlines), ".tck")
    reference = write_case(tmp_path, reference_bytes(), ".nii", name="ref")
    assert run_case(path, reference=reference, declared=4) in (
        "refused",
        "loaded+skipped",
    )


def test_trk_negative_voxel_size_is_refused(tmp_path):
    """A negative voxel size in a .trk header mirrored the bundle."""
    data = _set_trk_field(_real_trk(), "voxel_sizes", [-1.0, 1.0, 1.0])
    assert run_case(write_case(tmp_path, data, ".trk")) == "refused"


def test_trk_zero_dimensions_are_refused(tmp_path):
    """Volume dimensions 0 x 0 x 0 loaded a space that cannot be saved back."""
    data = _set_trk_field(_real_trk(), "dimensions", [0, 0, 0])
    assert run_case(write_case(tmp_path, data, ".trk")) == "refused"


def test_reference_with_nan_voxel_size_is_refused(tmp_path):
    """A NIfTI reference with a NaN voxel size was taken as the space."""
    reference = tmp_path / "ref.nii"
    reference.write_bytes(_nifti_with([("pixdim", [1, np.nan, 2, 2, 1, 1, 1, 1])]))
    path = write_case(tmp_path, corpus()["small_tck"][0], ".tck")
    assert run_case(path, reference=reference) == "refused"


def test_absurd_coordinates_are_skipped(tmp_path):
    """One bit-flipped coordinate (2.5e30 mm) loaded as valid and gave the
    dataset a streamline 5e30 mm long."""
    data = bytearray(_real_trk())
    data[TRK_HEADER_SIZE + 16 : TRK_HEADER_SIZE + 20] = np.float32(2.5e30).tobytes()
    path = write_case(tmp_path, data, ".trk")
    assert run_case(path, declared=50) == "loaded+skipped"
