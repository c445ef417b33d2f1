"""Every file the project writes appears whole, with the permissions the umask gives."""

import json
import os
import stat

import pytest

from aae_tract.atomic import temporary_folder, write_atomic, write_json_atomic
from aae_tract.errors import AAETractError


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_follow_the_umask(tmp_path, umask_022):
    path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert _mode(path) == 0o644
    folder = temporary_folder(tmp_path / "fetched")
    assert _mode(folder) == 0o755
    assert folder.name.startswith(".fetched.")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.json", folder.name])


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"old": True})

    def fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(AAETractError, match="a.json: cannot write"):
        write_atomic(path, fail)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_project_outputs_are_readable_by_others(tmp_path, umask_022, tiny_trained):
    from aae_tract.data_fetchers import make_phantom
    from aae_tract.model.training import write_json_atomic as history_writer
    from aae_tract.plots import plot_training_curves

    model, history = tiny_trained
    written = [
        model.save(tmp_path / "model.keras"),
        history_writer(tmp_path / "history.json", {"loss": [1.0]}),
        plot_training_curves(history, tmp_path / "curves.png"),
    ]
    phantom = make_phantom(tmp_path / "phantom", n_subjects=2, n_per_bundle=5)
    written += sorted(p for p in phantom.rglob("*") if p.is_file())
    assert len(written) > 6
    for path in written:
        assert _mode(path) == 0o644, path
    for folder in [phantom, *[p for p in phantom.rglob("*") if p.is_dir()]]:
        assert _mode(folder) == 0o755, folder
