"""Tests of the dataset fetchers (no network used)."""

import hashlib
import json
import logging
import socket
import stat
import time
import zipfile
from pathlib import Path

import nibabel as nib
import pytest

from aae_tract.data_fetchers import (
    FETCHERS,
    check_md5,
    check_network,
    data_home,
    extract_zip,
    fetch_hcp842,
    fetch_minimal_bundles,
    load_ground_truth,
)
from aae_tract.data_fetchers import fetcher as fetcher_mod
from aae_tract.errors import AAETractError, FetcherError
from aae_tract.workflows.fetch import FetchFlow

SUBJECTS = ["sub_1", "sub_2", "sub_3", "sub_4", "sub_5"]
BUNDLES = ["AF_L", "CC_ForcepsMajor", "CST_R"]


@pytest.fixture(scope="module")
def minimal(tmp_path_factory):
    return fetch_minimal_bundles(tmp_path_factory.mktemp("home"))


def _trk_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.trk"))


def test_data_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AAE_TRACT_HOME", str(tmp_path / "h"))
    assert data_home() == tmp_path / "h"
    monkeypatch.delenv("AAE_TRACT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_home() == tmp_path / ".aae_tract"


def test_minimal_bundles_extracted(minimal):
    assert minimal.name == "minimal_bundles"
    expected = sorted(f"{s}/{b}.trk" for s in SUBJECTS for b in BUNDLES)
    assert _trk_files(minimal) == expected
    for rel in expected:
        trk = nib.streamlines.load(minimal / rel)
        assert len(trk.streamlines) == 50, rel
        assert all(len(s) >= 2 for s in trk.streamlines)
    # no temporary folders left beside it
    assert [p.name for p in minimal.parent.iterdir()] == ["minimal_bundles"]


def test_minimal_bundles_uses_env_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AAE_TRACT_HOME", str(tmp_path))
    out = fetch_minimal_bundles()
    assert out == tmp_path / "minimal_bundles"
    assert len(_trk_files(out)) == 15
    assert FETCHERS["minimal_bundles"]() == out


def test_minimal_bundles_idempotent(monkeypatch, tmp_path):
    out = fetch_minimal_bundles(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.trk")}

    def boom(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(fetcher_mod, "extract_zip", boom)
    assert fetch_minimal_bundles(tmp_path) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.trk")} == mtimes


def test_minimal_bundles_repairs_incomplete(tmp_path):
    out = fetch_minimal_bundles(tmp_path)
    (out / "sub_3" / "CST_R.trk").unlink()
    (out / "stray.txt").write_text("left over")
    assert fetch_minimal_bundles(tmp_path) == out
    assert len(_trk_files(out)) == 15
    assert not (out / "stray.txt").exists()


def test_shipped_checksum_mismatch_warns(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(fetcher_mod, "MINIMAL_BUNDLES_MD5", "0" * 32)
    with caplog.at_level(logging.WARNING):
        out = fetch_minimal_bundles(tmp_path)
    assert "checksum mismatch" in caplog.text
    assert len(_trk_files(out)) == 15


def test_downloaded_checksum_mismatch_refused(tmp_path):
    f = tmp_path / "data.zip"
    f.write_bytes(b"not what was expected")
    good = hashlib.md5(f.read_bytes()).hexdigest()
    assert check_md5(f, good)
    with pytest.raises(FetcherError, match="checksum mismatch") as err:
        check_md5(f, "0" * 32, downloaded=True)
    assert str(f) in str(err.value)
    with pytest.raises(FetcherError, match="not found"):
        check_md5(tmp_path / "missing.zip", good)


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "bad",
    [
        "../evil.trk",
        "sub_1/../../evil.trk",
        "/tmp/evil.trk",
        "..\\evil.trk",
        "C:/evil.trk",
    ],
)
def test_unsafe_archive_refused(tmp_path, bad):
    archive = _zip(tmp_path / "a.zip", {"sub_1/AF_L.trk": b"x", bad: b"evil"})
    target = tmp_path / "deep" / "target"
    with pytest.raises(FetcherError, match="refusing archive") as err:
        extract_zip(archive, target)
    assert str(archive) in str(err.value)
    assert not target.exists()
    assert not (tmp_path / "deep" / "evil.trk").exists()
    assert not (tmp_path / "evil.trk").exists()
    assert list((tmp_path / "deep").iterdir()) == []  # temp folder removed


def test_symlink_member_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("sub_1/link.trk")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(FetcherError, match="symbolic link"):
        extract_zip(archive, tmp_path / "t")


def test_corrupt_archive_refused(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(FetcherError, match="not a readable zip"):
        extract_zip(archive, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_extract_zip_safe_members(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"a/b.trk": b"1", "./c.trk": b"2"})
    out = extract_zip(archive, tmp_path / "t", md5=fetcher_mod.md5sum(archive))
    assert (out / "a" / "b.trk").read_bytes() == b"1"
    assert (out / "c.trk").read_bytes() == b"2"


@pytest.mark.parametrize("theirs_arrives", [False, True])
def test_extract_zip_over_a_folder_another_process_is_replacing(
    tmp_path, monkeypatch, theirs_arrives
):
    """Two runs extract to the same folder: the other one moves the old copy
    away between this one's check and its own move of it, and maybe puts
    its complete copy in place just before this one renames its own there.
    Extraction still succeeds with a whole copy and leaves nothing behind."""
    import os

    archive = _zip(tmp_path / "ok.zip", {"a.trk": b"1"})
    target = extract_zip(archive, tmp_path / "t")
    theirs = extract_zip(archive, tmp_path / "theirs")
    real_replace = os.replace
    moves = []

    def other_process_first(src, dst):
        if Path(src) == target:  # ours would move the old copy away: theirs did
            target.rename(tmp_path / "their_old")
        elif Path(dst) == target and theirs_arrives:
            theirs.rename(target)
        moves.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(fetcher_mod.os, "replace", other_process_first)
    assert extract_zip(archive, target) == target
    monkeypatch.undo()
    assert [dst for _, dst in moves][-1] == target  # both branches reached
    assert (target / "a.trk").read_bytes() == b"1"
    assert fetcher_mod._is_complete(target)
    assert not list(tmp_path.glob(".t.*"))  # no temporary folder left


def _no_dipy(*args, **kwargs):
    raise AssertionError("DIPY's fetcher must not be called offline")


def test_hcp842_offline_fails_fast(monkeypatch, tmp_path):
    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(fetcher_mod, "_dipy_fetch_hcp842", _no_dipy)
    t0 = time.perf_counter()
    with pytest.raises(FetcherError) as err:
        fetch_hcp842(tmp_path)
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "needs the network" in msg
    assert "ndownloader.figshare.com" in msg
    assert "Network is unreachable" in msg
    assert not (tmp_path / "hcp842").exists()


def test_hcp842_hanging_network_times_out(monkeypatch, tmp_path):
    def hang(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(fetcher_mod, "NETWORK_TIMEOUT", 0.5)
    t0 = time.perf_counter()
    with pytest.raises(FetcherError, match="no answer within"):
        check_network(fetcher_mod.HCP842_URL, timeout=0.5)
    assert time.perf_counter() - t0 < 5


def test_check_network_refused_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.perf_counter()
    with pytest.raises(FetcherError, match="could not reach 127.0.0.1"):
        check_network(f"http://127.0.0.1:{port}/file", timeout=2)
    assert time.perf_counter() - t0 < 5


def _fake_atlas(folder: Path, minimal: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    members = {
        "Atlas_80_Bundles/whole_brain/whole_brain_MNI.trk": b"whole",
        "Atlas_80_Bundles/bundles/AF_L.trk": (minimal / "sub_1/AF_L.trk").read_bytes(),
        "Atlas_80_Bundles/bundles/CST_R.trk": (
            minimal / "sub_1/CST_R.trk"
        ).read_bytes(),
        "Atlas_80_Bundles/README.txt": b"readme",
    }
    return _zip(folder / fetcher_mod.HCP842_ZIP, members)


def test_hcp842_arranged_as_bundles(monkeypatch, tmp_path, minimal):
    archive = _fake_atlas(tmp_path / "dipy_home", minimal)
    monkeypatch.setattr(fetcher_mod, "check_network", lambda url, **kw: None)
    monkeypatch.setattr(fetcher_mod, "_dipy_fetch_hcp842", lambda: archive.parent)
    monkeypatch.setattr(fetcher_mod, "HCP842_MD5", fetcher_mod.md5sum(archive))
    out = fetch_hcp842(tmp_path / "home")
    assert out == tmp_path / "home" / "hcp842"
    assert _trk_files(out) == ["hcp842/AF_L.trk", "hcp842/CST_R.trk"]
    assert len(nib.streamlines.load(out / "hcp842" / "AF_L.trk").streamlines) == 50
    # complete: a second call neither checks the network nor downloads
    monkeypatch.setattr(fetcher_mod, "check_network", _no_dipy)
    assert fetch_hcp842(tmp_path / "home") == out


def test_hcp842_download_checksum_mismatch(monkeypatch, tmp_path, minimal):
    archive = _fake_atlas(tmp_path / "dipy_home", minimal)
    monkeypatch.setattr(fetcher_mod, "check_network", lambda url, **kw: None)
    monkeypatch.setattr(fetcher_mod, "_dipy_fetch_hcp842", lambda: archive.parent)
    with pytest.raises(FetcherError, match="checksum mismatch") as err:
        fetch_hcp842(tmp_path / "home")
    assert fetcher_mod.HCP842_ZIP in str(err.value)
    assert not (tmp_path / "home" / "hcp842").exists()


def test_hcp842_dipy_failure_wrapped(monkeypatch, tmp_path):
    def fail():
        raise OSError("connection reset by peer")

    monkeypatch.setattr(fetcher_mod, "check_network", lambda url, **kw: None)
    monkeypatch.setattr(fetcher_mod, "_dipy_fetch_hcp842", fail)
    with pytest.raises(FetcherError, match="connection reset"):
        fetch_hcp842(tmp_path)


def test_fetchers_registry(tmp_path):
    assert set(FETCHERS) == {"minimal_bundles", "hcp842", "phantom"}
    out = FETCHERS["phantom"](tmp_path, n_subjects=2, n_per_bundle=5)
    assert out == tmp_path / "phantom"
    assert (out / "ground_truth.json").is_file()
    assert len(_trk_files(out)) == 12


def _fetch_args(*argv):
    """``aae_tract_fetch`` arguments as DIPY parses them from the run() docstring."""
    from dipy.workflows.base import IntrospectiveArgumentParser

    parser = IntrospectiveArgumentParser()
    parser.add_workflow(FetchFlow())
    return parser.get_flow_args([str(a) for a in argv])


def test_fetch_phantom_fragments(tmp_path):
    args = _fetch_args(
        "phantom", "--n_subjects", 1, "--n_per_bundle", 6, "--fragments", 0.5,
        "--out_dir", tmp_path,
    )  # fmt: skip
    assert args["fragments"] == 0.5
    folder = FetchFlow().run(**args)
    assert folder == tmp_path / "phantom"
    truth = load_ground_truth(folder)
    assert truth["options"]["fragments"] == 0.5
    for info in truth["bundles"].values():
        assert info["fragments"]["n_streamlines"] == 3
    assert len(_trk_files(folder)) == 6


def test_fetch_phantom_wholebrain(tmp_path):
    from aae_tract.data_fetchers import load_wholebrain_labels

    args = _fetch_args(
        "phantom", "--n_subjects", 2, "--n_per_bundle", 7, "--wholebrain", 0.3,
        "--out_dir", tmp_path,
    )  # fmt: skip
    FetchFlow().run(**args)
    whole = tmp_path / "phantom_wholebrain"
    for subject in ("sub-01", "sub-02"):
        labels = load_wholebrain_labels(whole, subject)
        assert (labels != "other").sum() == 6 * 7
        assert (labels == "other").sum() == 18  # round(0.3 / 0.7 * 42)
        assert (whole / f"{subject}.trk").is_file()
    # the training folder holds bundles only
    assert not list((tmp_path / "phantom").glob("*/sub-0*.trk"))
    with pytest.raises(AAETractError, match="wholebrain"):
        FetchFlow().run("phantom", wholebrain=0.95, out_dir=str(tmp_path))


def test_fetch_phantom_fragments_default_and_other_value(tmp_path, caplog):
    home = tmp_path / "home"
    folder = FETCHERS["phantom"](home, n_subjects=1, n_per_bundle=4)
    assert load_ground_truth(folder)["options"]["fragments"] == 0.0
    # a phantom made before the option existed counts as one without fragments
    truth = folder / "ground_truth.json"
    old = json.loads(truth.read_text())
    del old["options"]["fragments"]
    truth.write_text(json.dumps(old))
    files = {f: (folder / f).read_bytes() for f in _trk_files(folder)}
    with caplog.at_level(logging.INFO):
        FetchFlow().run("phantom", n_subjects=1, n_per_bundle=4, out_dir=str(home))
    assert "other options" not in caplog.text
    assert load_ground_truth(folder)["options"]["fragments"] == 0.0
    assert {f: (folder / f).read_bytes() for f in _trk_files(folder)} == files
    # another fragments value is another phantom: kept without --force
    caplog.clear()
    with caplog.at_level(logging.INFO):
        FetchFlow().run(
            "phantom", n_subjects=1, n_per_bundle=4, fragments=0.5, out_dir=str(home)
        )
    assert "other options (fragments 0.0)" in caplog.text
    assert load_ground_truth(folder)["options"]["fragments"] == 0.0


@pytest.mark.parametrize("value", ["-0.1", "1.0", "nan", "some"])
def test_fetch_phantom_bad_fragments(tmp_path, value):
    with pytest.raises(AAETractError, match="--fragments must be"):
        FetchFlow().run("phantom", fragments=value, out_dir=str(tmp_path))
    assert not (tmp_path / "phantom").exists()
