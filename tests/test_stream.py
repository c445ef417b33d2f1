"""Tests of aae_tract.stream: tractograms read and written block by block."""

import logging

import nibabel as nib
import numpy as np
import pytest

from aae_tract import stream
from aae_tract.errors import TractogramError
from aae_tract.io import load_bundle, save_tractogram
from aae_tract.stream import TractogramStream


@pytest.fixture
def whole(minimal_bundles_dir, tmp_path):
    """One subject's three bundles in one .trk (150 streamlines)."""
    from dipy.io.stateful_tractogram import StatefulTractogram

    parts = [
        load_bundle(minimal_bundles_dir / "sub_2" / f"{b}.trk")
        for b in ("AF_L", "CC_ForcepsMajor", "CST_R")
    ]
    lines = [s for p in parts for s in p.streamlines]
    path = tmp_path / "whole.trk"
    save_tractogram(StatefulTractogram.from_sft(lines, parts[0]), path)
    return path


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("chunk_bytes", [stream.CHUNK_BYTES, 1000])
def test_a_stream_reads_what_load_bundle_reads(whole, monkeypatch, chunk_bytes):
    # small chunks: streamlines straddle every chunk boundary
    monkeypatch.setattr(stream, "CHUNK_BYTES", chunk_bytes)
    sft = load_bundle(whole)
    source = TractogramStream(whole)
    assert len(source) == len(sft) == 150
    _same(list(source), sft.streamlines)
    if chunk_bytes < 2000:
        assert len(list(source.blocks())) > 10
    rows = [149, 0, 77, 3]
    _same(source.take(rows), [sft.streamlines[i] for i in rows])


def test_a_tck_stream_and_a_trk_with_scalars_read_through_nibabel(whole, tmp_path):
    sft = load_bundle(whole)
    tck = tmp_path / "whole.tck"
    save_tractogram(sft, tck)
    with pytest.raises(TractogramError, match="reference"):
        TractogramStream(tck)
    _same(list(TractogramStream(tck, reference=whole)), sft.streamlines)
    # per-point scalars: not a plain .trk, nibabel's lazy reader takes it
    scalars = nib.streamlines.Tractogram(
        sft.streamlines,
        data_per_point={"fa": [np.ones((len(s), 1)) for s in sft.streamlines]},
        affine_to_rasmm=np.eye(4),
    )
    rich = tmp_path / "rich.trk"
    nib.streamlines.save(scalars, str(rich), header=nib.streamlines.load(whole).header)
    assert stream._plain_trk(rich) is None
    got = list(TractogramStream(rich))
    assert len(got) == len(sft)
    np.testing.assert_allclose(got[7], sft.streamlines[7], atol=1e-4)


@pytest.mark.parametrize("ext", [".trk", ".tck", ".trx"])
def test_write_keeps_the_chosen_streamlines_in_the_space_of_the_input(
    whole, tmp_path, ext
):
    if ext == ".trx":
        pytest.importorskip("trx")
    source = TractogramStream(whole)
    keep = np.zeros(len(source), bool)
    keep[::7] = True
    out = source.write(tmp_path / f"kept{ext}", keep)
    back = load_bundle(out, reference=None if ext == ".trk" else whole)
    sft = load_bundle(whole)
    expected = [sft.streamlines[i] for i in np.flatnonzero(keep)]
    assert len(back) == keep.sum() == 22
    for x, y in zip(back.streamlines, expected):
        np.testing.assert_allclose(x, y, atol=1e-3)
    assert np.allclose(back.affine, sft.affine)
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file is gone
    with pytest.raises(ValueError, match="flags"):
        source.write(tmp_path / "x.trk", keep[:-1])


def test_unusable_streamlines_are_skipped_and_counted_once(tmp_path, caplog):
    good = [np.cumsum(np.ones((10, 3), np.float32), axis=0) + i for i in range(5)]
    bad = good[0].copy()
    bad[4, 1] = np.nan
    tractogram = nib.streamlines.Tractogram(
        [good[0], bad, *good[1:3], good[0][:1], *good[3:]], affine_to_rasmm=np.eye(4)
    )
    path = tmp_path / "some_bad.trk"
    with np.errstate(invalid="ignore"):
        nib.streamlines.save(tractogram, str(path))
    source = TractogramStream(path)
    assert source.size_hint == 7  # the header's count, before any pass
    with caplog.at_level(logging.WARNING, logger="aae_tract.stream"):
        assert len(source) == 5
    assert source.size_hint == 5  # what a pass counted
    with caplog.at_level(logging.WARNING, logger="aae_tract.stream"):
        _same(list(source), load_bundle(path).streamlines)
    messages = [r.getMessage() for r in caplog.records if r.name == "aae_tract.stream"]
    assert len(messages) == 1
    assert "skipped 2 of 7" in messages[0] and "some_bad.trk" in messages[0]


def test_bad_files_are_named_with_the_problem(whole, tmp_path):
    data = whole.read_bytes()
    cut = tmp_path / "cut.trk"
    cut.write_bytes(data[: len(data) - 30])
    with pytest.raises(TractogramError, match="cut.trk.*(truncated|corrupt)"):
        len(TractogramStream(cut))
    empty = tmp_path / "empty.trk"
    nib.streamlines.save(
        nib.streamlines.Tractogram([], affine_to_rasmm=np.eye(4)), str(empty)
    )
    with pytest.raises(TractogramError, match="empty.trk.*empty"):
        len(TractogramStream(empty))
    with pytest.raises(TractogramError, match="missing.trk: file not found"):
        TractogramStream(tmp_path / "missing.trk")
    other = tmp_path / "whole.trx"
    other.write_bytes(b"not read")
    with pytest.raises(TractogramError, match="whole.trx: only .trk and .tck"):
        TractogramStream(other)


def test_trk_and_tck_groups_are_written_in_one_pass_as_dipy_writes_them(
    whole, tmp_path, monkeypatch
):
    from dipy.io.stateful_tractogram import StatefulTractogram

    monkeypatch.setattr(stream, "CHUNK_BYTES", 2000)  # many blocks
    source = TractogramStream(whole)
    groups = np.random.default_rng(1).choice(["a", "b", "c", "d"], len(source))
    passes = []
    real_blocks = TractogramStream.blocks

    def counting(self):
        passes.append(1)
        yield from real_blocks(self)

    monkeypatch.setattr(TractogramStream, "blocks", counting)
    paths = {"a": tmp_path / "a.trk", "b": tmp_path / "b.trk"}
    paths |= {"c": tmp_path / "c.tck", "d": tmp_path / "d.tck"}
    written = source.write_groups(paths, groups)
    assert written == paths
    assert len(passes) == 1
    sft = load_bundle(whole)
    for g, path in paths.items():
        rows = np.flatnonzero(groups == g)
        dipy_file = tmp_path / f"dipy_{g}{path.suffix}"
        save_tractogram(
            StatefulTractogram.from_sft(sft.streamlines[rows], sft), dipy_file
        )
        assert path.read_bytes() == dipy_file.read_bytes()
        back = load_bundle(path, reference=whole)
        _same(back.streamlines, sft.streamlines[rows])


def test_a_file_replaced_between_passes_is_refused(whole, tmp_path):
    import shutil

    path = tmp_path / "moving.trk"
    shutil.copy(whole, path)
    source = TractogramStream(path)
    assert len(source) == 150
    keep = np.ones(150, bool)
    source.write(path, keep)  # the output replaces the input: the next pass says so
    with pytest.raises(TractogramError, match="moving.trk: the file changed"):
        source.take([0])


def test_corrupt_counts_and_trailing_bytes_are_refused_at_once(whole, tmp_path):
    data = bytearray(whole.read_bytes())
    huge = tmp_path / "huge.trk"
    first = np.frombuffer(bytes(data[1000:1004]), "<i4")[0]
    data_huge = bytearray(data)
    data_huge[1000:1004] = np.array([1 << 28], "<i4").tobytes()
    huge.write_bytes(bytes(data_huge))
    with pytest.raises(TractogramError, match="huge.trk: a streamline of 268435456"):
        len(TractogramStream(huge))
    assert first > 0
    for name, extra in (("odd.trk", b"\x01\x00"), ("more.trk", b"\x00" * 4)):
        path = tmp_path / name
        path.write_bytes(bytes(data) + extra)
        with pytest.raises(TractogramError, match=f"{name}.*(truncated|corrupt)"):
            len(TractogramStream(path))


def test_the_nibabel_reader_in_several_blocks(whole, tmp_path, monkeypatch):
    sft = load_bundle(whole)
    tck = save_tractogram(sft, tmp_path / "whole.tck")
    monkeypatch.setattr(stream, "BLOCK", 16)
    source = TractogramStream(tck, reference=whole)
    assert len(list(source.blocks())) == 10
    _same(list(source), sft.streamlines)
    _same(source.take([149, 16, 15]), sft.streamlines[[149, 16, 15]])


def test_a_failing_writer_leaves_no_temporary_file(whole, tmp_path, monkeypatch):
    source = TractogramStream(whole)
    groups = np.arange(len(source)) % 2
    calls = []
    real_append = stream._TrkWriter.append

    def failing(self, block):
        calls.append(1)
        if len(calls) == 2:
            raise TractogramError("disk full (test)")
        real_append(self, block)

    monkeypatch.setattr(stream._TrkWriter, "append", failing)
    paths = {0: tmp_path / "a.trk", 1: tmp_path / "b.trk"}
    with pytest.raises(TractogramError, match="disk full"):
        source.write_groups(paths, groups)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.trk"]
