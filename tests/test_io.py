"""Tests of aae_tract.io: loading, discovering and saving tractograms."""

import json
import logging
import os

import nibabel as nib
import numpy as np
import pytest
from dipy.io.stateful_tractogram import Space, StatefulTractogram

from aae_tract.errors import DatasetError, TractogramError
from aae_tract.io import (
    BundleFile,
    find_bundles,
    inside_volume,
    load_bundle,
    reference_from_space,
    save_tractogram,
    space_from_sft,
)

BUNDLES = ("AF_L", "CC_ForcepsMajor", "CST_R")


@pytest.fixture(scope="module")
def minimal(minimal_bundles_dir):
    """DIPY's minimal_bundles, extracted once per session: <root>/sub_i/<BUNDLE>.trk
    (shared: read it, copy it to change it)."""
    return minimal_bundles_dir


@pytest.fixture
def af_trk(minimal):
    return minimal / "sub_1" / "AF_L.trk"


def _reference_header():
    return reference_from_space(
        {
            "affine": np.diag([2.0, 2.0, 2.0, 1.0]).tolist(),
            "dimensions": [64, 64, 64],
            "voxel_sizes": [2.0, 2.0, 2.0],
            "voxel_order": "RAS",
        }
    )


def _write_trk(path, streamlines):
    """Write raw streamlines (RAS+ mm) as .trk with nibabel."""
    tractogram = nib.streamlines.Tractogram(
        [np.asarray(s, dtype=np.float32) for s in streamlines],
        affine_to_rasmm=np.eye(4),
    )
    with np.errstate(invalid="ignore"):
        nib.streamlines.save(tractogram, str(path))
    return path


def _line(n=10, offset=0.0):
    pts = np.zeros((n, 3), dtype=np.float32)
    pts[:, 0] = np.linspace(0, 30, n)
    pts[:, 1] = offset
    return pts


# --------------------------------------------------------------------- loaders


def test_load_trk(af_trk):
    sft = load_bundle(af_trk)
    assert len(sft) == 50
    assert sft.space == Space.RASMM
    data = sft.streamlines.get_data()
    assert data.dtype == np.float32
    assert np.isfinite(data).all()
    raw = nib.streamlines.load(str(af_trk)).streamlines
    np.testing.assert_allclose(sft.streamlines[0], raw[0], atol=1e-4)


def test_load_tck_with_reference(af_trk, tmp_path):
    sft = load_bundle(af_trk)
    tck = tmp_path / "AF_L.tck"
    save_tractogram(sft, tck)
    loaded = load_bundle(tck, reference=af_trk)
    assert len(loaded) == len(sft)
    np.testing.assert_allclose(
        loaded.streamlines.get_data(), sft.streamlines.get_data(), atol=1e-3
    )
    # a NIfTI reference works too
    nii = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), nii)
    assert len(load_bundle(tck, reference=nii)) == len(sft)


def test_load_tck_without_reference_is_an_error(af_trk, tmp_path):
    tck = save_tractogram(load_bundle(af_trk), tmp_path / "AF_L.tck")
    with pytest.raises(TractogramError, match="reference") as info:
        load_bundle(tck)
    assert "AF_L.tck" in str(info.value)
    with pytest.raises(TractogramError, match="reference"):
        load_bundle(tck, reference="same")
    with pytest.raises(TractogramError, match="not found"):
        load_bundle(tck, reference=tmp_path / "nothing.nii.gz")


def test_load_trx_with_reference(af_trk, tmp_path):
    pytest.importorskip("trx")
    sft = load_bundle(af_trk)
    trx_path = save_tractogram(sft, tmp_path / "AF_L.trx")
    loaded = load_bundle(trx_path, reference=af_trk)
    assert len(loaded) == len(sft)
    np.testing.assert_allclose(
        loaded.streamlines.get_data(), sft.streamlines.get_data(), atol=1e-2
    )
    with pytest.raises(TractogramError, match="reference"):
        load_bundle(trx_path)


def test_trk_in_other_space_comes_out_in_rasmm(tmp_path):
    """Streamlines stored in a 2 mm grid with an offset are returned in mm."""
    points = [_line(12, offset=5.0) + 10.0]
    sft = StatefulTractogram(points, _reference_header(), Space.RASMM)
    path = save_tractogram(sft, tmp_path / "grid.trk")
    loaded = load_bundle(path)
    np.testing.assert_allclose(loaded.streamlines[0], points[0], atol=1e-4)
    assert space_from_sft(loaded)["voxel_sizes"] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("n_points", [0, 1, 4095, 4096, 4097, 10_000])
@pytest.mark.parametrize("oblique", [False, True])
def test_the_plain_trk_reader_applies_any_affine(n_points, oblique):
    """The reader's float32 affine matches a float64 one: a diagonal linear
    part (scaled in place, in tiles of points, the rest row by row) and an
    oblique one."""
    from aae_tract.trk import _apply_affine_f32

    rng = np.random.default_rng(n_points)
    points = rng.normal(scale=50.0, size=(n_points, 3)).astype(np.float32)
    affine = np.diag([2.0, -1.5, 0.5, 1.0])
    affine[:3, 3] = [-90.5, 126.0, 7.25]
    if oblique:
        affine[0, 1] = 0.3
    want = points.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
    got = _apply_affine_f32(points.copy(), affine)
    assert got.dtype == np.float32 and got.shape == (n_points, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # a strided input (every other column of a wider array): the same points
    strided = np.repeat(points, 2, axis=1)[:, ::2]
    got = _apply_affine_f32(strided, affine)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # a read-only input is left as it is
    frozen = points.copy()
    frozen.flags.writeable = False
    np.testing.assert_allclose(
        _apply_affine_f32(frozen, affine), want, rtol=1e-5, atol=1e-4
    )
    np.testing.assert_array_equal(frozen, points)


def test_save_in_the_space_of_a_reference(tmp_path):
    """The file takes the reference's grid; world coordinates are kept."""
    points = [_line(12, offset=5.0) + 10.0]
    sft = StatefulTractogram(points, _reference_header(), Space.RASMM)
    nii = tmp_path / "ref.nii.gz"
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 40), np.uint8), affine), nii)
    path = save_tractogram(sft, tmp_path / "out.trk", reference=nii)
    loaded = load_bundle(path)
    np.testing.assert_allclose(loaded.streamlines[0], points[0], atol=1e-4)
    assert space_from_sft(loaded)["voxel_sizes"] == [1.5, 1.5, 1.5]
    with pytest.raises(TractogramError, match="nothing.nii.gz"):
        save_tractogram(sft, tmp_path / "x.trk", reference=tmp_path / "nothing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(TractogramError, match="bad.nii.gz: cannot be used"):
        save_tractogram(sft, tmp_path / "x.trk", reference=bad)
    assert not (tmp_path / "x.trk").exists()


def test_inside_volume_is_dipys_bounding_box_check():
    """Per streamline, the test DIPY's load_tractogram applies by default, in a
    rotated, flipped, anisotropic grid."""
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, -2.0, 1.0])
    affine[:3, 3] = [-30.0, 40.0, -20.0]
    space = {
        "affine": affine.tolist(),
        "dimensions": [40, 30, 50],
        "voxel_sizes": [1.5, 2.0, 1.0],
    }
    reference = reference_from_space(space)
    centre = affine[:3, :3] @ np.array([20.0, 15.0, 25.0]) + affine[:3, 3]
    lines = centre + rng.normal(size=(200, 6, 3)) * 13
    ours = inside_volume(lines, space, margin=0.0)
    dipys = [
        StatefulTractogram([line], reference, Space.RASMM).is_bbox_in_vox_valid()
        for line in lines
    ]
    assert 0.2 < ours.mean() < 0.8  # both kinds are tested
    np.testing.assert_array_equal(ours, dipys)
    # the margin keeps points just short of a face out
    inner = inside_volume(lines, space, margin=0.5)
    assert not (inner & ~ours).any() and inner.sum() < ours.sum()


# ------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    with pytest.raises(TractogramError, match="not found") as info:
        load_bundle(tmp_path / "ghost.trk")
    assert "ghost.trk" in str(info.value)


def test_unknown_extension(tmp_path):
    path = tmp_path / "bundle.vtk"
    path.write_bytes(b"not a tractogram")
    with pytest.raises(TractogramError, match="unknown extension") as info:
        load_bundle(path)
    assert "bundle.vtk" in str(info.value)


def test_folder_instead_of_file(tmp_path):
    folder = tmp_path / "x.trk"
    folder.mkdir()
    with pytest.raises(TractogramError, match="folder"):
        load_bundle(folder)


def test_truncated_file(af_trk, tmp_path):
    data = af_trk.read_bytes()
    for size in (500, len(data) // 2):
        path = tmp_path / f"cut{size}.trk"
        path.write_bytes(data[:size])
        with pytest.raises(TractogramError, match="truncated or corrupt") as info:
            load_bundle(path)
        assert path.name in str(info.value)


def test_corrupt_bytes(af_trk, tmp_path):
    data = bytearray(af_trk.read_bytes())
    rng = np.random.default_rng(0)
    data[990:1000] = rng.integers(0, 255, 10, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.trk"
    path.write_bytes(bytes(data))
    with pytest.raises(TractogramError, match="corrupt.trk"):
        load_bundle(path)
    garbage = tmp_path / "garbage.tck"
    garbage.write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(TractogramError, match="garbage.tck"):
        load_bundle(garbage, reference=af_trk)


def test_empty_tractogram(tmp_path):
    path = _write_trk(tmp_path / "empty.trk", [])
    with pytest.raises(TractogramError, match="empty") as info:
        load_bundle(path)
    assert "empty.trk" in str(info.value)


def test_nan_streamlines_skipped_with_count(tmp_path, caplog):
    bad = _line(8)
    bad[3, 1] = np.nan
    worse = _line(8)
    worse[0, 2] = np.inf
    good = [_line(10, offset=i) for i in range(5)]
    path = _write_trk(tmp_path / "nan.trk", [good[0], bad, *good[1:], worse])
    with caplog.at_level(logging.WARNING, logger="aae_tract.io"):
        sft = load_bundle(path)
    assert len(sft) == 5
    assert np.isfinite(sft.streamlines.get_data()).all()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1
    assert "skipped 2 of 7" in messages[0]
    assert "2 with NaN/inf" in messages[0]
    assert "nan.trk" in messages[0]


def test_single_point_streamlines_skipped(tmp_path, caplog):
    good = [_line(10, offset=i) for i in range(3)]
    path = _write_trk(
        tmp_path / "short.trk", [good[0], _line(1), good[1], _line(1), good[2]]
    )
    with caplog.at_level(logging.WARNING, logger="aae_tract.io"):
        sft = load_bundle(path)
    assert len(sft) == 3
    np.testing.assert_allclose(sft.streamlines[2], good[2], atol=1e-4)
    assert "2 with fewer than 2 points" in caplog.text
    # a stricter minimum is honoured
    with pytest.raises(TractogramError, match="no usable streamline"):
        load_bundle(path, min_points=11)


def test_nothing_valid_left(tmp_path):
    nan = _line(5)
    nan[:] = np.nan
    path = _write_trk(tmp_path / "bad.trk", [nan, _line(1)])
    with pytest.raises(TractogramError, match="no usable streamline") as info:
        load_bundle(path)
    assert "bad.trk" in str(info.value)
    assert "1 of 2 have NaN/inf" in str(info.value)


# ---------------------------------------------------------------- find_bundles


def test_find_bundles_subject_layout(minimal):
    found = find_bundles(minimal)
    assert len(found) == 15
    assert all(isinstance(f, BundleFile) for f in found)
    assert {f.bundle for f in found} == set(BUNDLES)
    assert {f.subject for f in found} == {f"sub_{i}" for i in range(1, 6)}
    for f in found:
        assert f.path.parent.name == f.subject
        assert f.path.stem == f.bundle


def test_find_bundles_flat_layout(minimal):
    found = find_bundles(minimal / "sub_2")
    assert [f.bundle for f in found] == sorted(BUNDLES)
    assert {f.subject for f in found} == {"sub_2"}


def test_find_bundles_files_globs_and_duplicates(minimal):
    files = [minimal / "sub_1" / "AF_L.trk", str(minimal / "sub_3" / "CST_R.trk")]
    found = find_bundles(files)
    assert [(f.bundle, f.subject) for f in found] == [
        ("AF_L", "sub_1"),
        ("CST_R", "sub_3"),
    ]
    found = find_bundles(str(minimal / "*" / "AF_L.trk"))
    assert [f.subject for f in found] == [f"sub_{i}" for i in range(1, 6)]
    assert {f.bundle for f in found} == {"AF_L"}
    found = find_bundles([str(minimal / "**" / "*.trk"), minimal])
    assert len(found) == 15  # no duplicates
    found = find_bundles(str(minimal / "sub_[12]"))
    assert {f.subject for f in found} == {"sub_1", "sub_2"}


def test_find_bundles_errors(minimal, tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetError, match="no tractogram") as info:
        find_bundles(empty)
    assert "empty_folder" in str(info.value)
    with pytest.raises(DatasetError, match="matches no tractogram"):
        find_bundles(str(minimal / "*" / "XYZ_*.trk"))
    with pytest.raises(DatasetError, match="no such file or folder"):
        find_bundles(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no input"):
        find_bundles([])
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(TractogramError, match="unknown extension"):
        find_bundles(tmp_path / "table.csv")


# ------------------------------------------------------------------ saving


def test_save_tractogram_is_atomic(af_trk, tmp_path, monkeypatch):
    sft = load_bundle(af_trk)
    out = tmp_path / "out" / "AF_L.trk"
    assert save_tractogram(sft, out) == out
    assert len(load_bundle(out)) == 50
    before = out.read_bytes()

    import dipy.io.streamline

    def failing_save(sft, filename, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(dipy.io.streamline, "save_tractogram", failing_save)
    with pytest.raises(TractogramError, match="disk full") as info:
        save_tractogram(sft[:10], out)
    assert "AF_L.trk" in str(info.value)
    assert out.read_bytes() == before
    assert sorted(os.listdir(out.parent)) == ["AF_L.trk"]


def test_save_unknown_extension(af_trk, tmp_path):
    with pytest.raises(TractogramError, match="unknown extension"):
        save_tractogram(load_bundle(af_trk), tmp_path / "x.vtk")


def test_space_round_trip(af_trk, tmp_path):
    sft = load_bundle(af_trk)
    space = space_from_sft(sft)
    assert json.loads(json.dumps(space)) == space
    assert space["voxel_order"] == "RAS"
    assert len(space["affine"]) == 4 and len(space["dimensions"]) == 3

    custom = {
        "affine": [[-1.5, 0, 0, 90], [0, 1.5, 0, -126], [0, 0, 1.5, -72], [0, 0, 0, 1]],
        "dimensions": [121, 145, 121],
        "voxel_sizes": [1.5, 1.5, 1.5],
        "voxel_order": "LAS",
    }
    points = [_line(10) + np.float32([-20, -30, 10])]
    made = StatefulTractogram(points, reference_from_space(custom), Space.RASMM)
    assert space_from_sft(made) == custom
    path = save_tractogram(made, tmp_path / "custom.trk")
    back = load_bundle(path)
    assert space_from_sft(back)["dimensions"] == custom["dimensions"]
    np.testing.assert_allclose(back.streamlines[0], points[0], atol=1e-3)
    with pytest.raises(DatasetError, match="space"):
        reference_from_space({"affine": [[1, 0], [0, 1]]})


def test_trk_reader_matches_nibabel(minimal, tmp_path):
    """The vectorised .trk path gives nibabel's streamlines, file by file."""
    for bundle_file in find_bundles(minimal):
        ours = load_bundle(bundle_file.path).streamlines
        theirs = nib.streamlines.load(str(bundle_file.path)).streamlines
        np.testing.assert_array_equal(ours._lengths, theirs._lengths)
        np.testing.assert_allclose(ours.get_data(), theirs.get_data(), atol=1e-4)
    # a file with per-point scalars and a rotated, scaled space
    affine = np.array(
        [[0, 0, 2.5, 40], [1.5, 0, 0, -20], [0, -2.0, 0, 7], [0, 0, 0, 1]]
    )
    streamlines = [_line(9, offset=i) + np.float32([5, 6, 7]) for i in range(4)]
    tractogram = nib.streamlines.Tractogram(
        streamlines,
        data_per_point={"fa": [np.full((9, 1), 0.5, np.float32)] * 4},
        affine_to_rasmm=np.eye(4),
    )
    header = {
        "voxel_to_rasmm": affine,
        "dimensions": np.array([50, 60, 70], np.int16),
        "voxel_sizes": np.float32([1.5, 2.0, 2.5]),
        "voxel_order": "".join(nib.aff2axcodes(affine)),
    }
    for name, data in (("plain", {}), ("scalars", tractogram.data_per_point)):
        path = tmp_path / f"{name}.trk"
        nib.streamlines.save(
            nib.streamlines.Tractogram(
                streamlines, data_per_point=data, affine_to_rasmm=np.eye(4)
            ),
            str(path),
            header=header,
        )
        loaded = load_bundle(path)
        theirs = nib.streamlines.load(str(path)).streamlines
        np.testing.assert_allclose(
            loaded.streamlines.get_data(), theirs.get_data(), atol=1e-4
        )
        np.testing.assert_allclose(
            loaded.streamlines.get_data(), np.concatenate(streamlines), atol=1e-4
        )
