"""The tutorial in doc/examples runs end to end (tiny settings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "doc" / "examples"
EXAMPLE = EXAMPLES / "generate_bundles.py"


def _run_example(script, tmp_path, *, points):
    """Run an example with one epoch at ``points`` points (and small phantoms
    where it makes one), outputs in tmp_path."""
    env = dict(
        os.environ,
        AAE_TRACT_EXAMPLE_EPOCHS="1",
        AAE_TRACT_EXAMPLE_PER_BUNDLE="20",
        AAE_TRACT_EXAMPLE_POINTS=str(points),
        AAE_TRACT_EXAMPLE_OUT=str(tmp_path),
        AAE_TRACT_HOME=str(tmp_path / "home"),
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_tutorial_runs(tmp_path):
    done = _run_example(EXAMPLE, tmp_path, points=32)
    for name in (
        "example_model.keras",
        "tutorial_training_curves.png",
        "tutorial_latent_space.png",
        "tutorial_metrics.json",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "tutorial_metrics.json").read_text())
    assert 0.0 <= metrics["label_fidelity"] <= 1.0
    assert "recon_mdf_mm" in done.stdout


def test_age_tutorial_runs(tmp_path):
    done = _run_example(EXAMPLES / "age_bundles.py", tmp_path, points=16)
    numbers = json.loads((tmp_path / "tutorial_age.json").read_text())
    assert set(numbers["ages"]) == {"30", "75"}
    assert numbers["attribute_mae_baseline"] > 0
    assert set(numbers["slopes"]) <= {"AF_L", "CC_Mid", "CG_L", "CST_L", "CST_R",
                                      "UF_L"}  # fmt: skip
    assert "read back" in done.stdout


def test_label_tutorial_runs(tmp_path):
    done = _run_example(EXAMPLES / "label_bundles.py", tmp_path, points=16)
    numbers = json.loads((tmp_path / "tutorial_labels.json").read_text())
    classes = set(numbers["full"]["per_class"])
    assert classes == {"AF_L", "CC_Mid", "CG_L", "CST_L", "CST_R", "UF_L", "other"}
    for key in ("full", "fraction_0.1", "fraction_0.1_self_trained"):
        assert 0.0 <= numbers[key]["macro_f1"] <= 1.0
    assert numbers["n_streamlines"] > numbers["full"]["per_class"]["other"]["n"] > 0
    assert (tmp_path / "tutorial_labels.png").stat().st_size > 0
    assert "macro F1" in done.stdout
