"""The package installs as aae_tract with its sub-packages, nothing top-level else."""

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_installed_subpackages_import():
    for name in ("aae_tract.workflows.cli", "aae_tract.data_fetchers", "aae_tract.io"):
        module = importlib.import_module(name)
        assert module.__name__ == name


def test_model_package_imports_its_names_on_first_use():
    import aae_tract.model as package
    from aae_tract.model.tract_aae import TractAAE

    assert package.TractAAE is TractAAE
    assert set(package.__all__) <= set(dir(package))
    for name in package.__all__:
        assert getattr(package, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        package.Nothing  # noqa: B018
    # the records of options and model files come without Keras
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from aae_tract.model import AAEConfig, ModelMetadata; "
            "print('keras' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "False", done.stderr


def test_wheel_holds_the_mapped_packages(tmp_path):
    pytest.importorskip("setuptools")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 and "setuptools" in done.stderr:
        pytest.skip(f"no usable setuptools to build with: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("aae_tract-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "aae_tract/__init__.py",
        "aae_tract/model/tract_aae.py",
        "aae_tract/workflows/cli.py",
        "aae_tract/data_fetchers/phantom.py",
    ):
        assert expected in names
    top = {n.split("/")[0] for n in names}
    assert top <= {"aae_tract", next(t for t in top if t.endswith(".dist-info"))}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry).decode()
    for command in ("fetch", "train", "generate", "evaluate", "render"):
        assert f"aae_tract_{command} = aae_tract.workflows.cli:run" in scripts
