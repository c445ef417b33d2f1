"""Untrusted files: model files that carry code or lie in their metadata, no
pickle anywhere, archives whose members escape their folder."""

import ast
import base64
import marshal
import stat
import time
import zipfile
from pathlib import Path, PurePosixPath

import keras
import numpy as np
import pytest
from conftest import tamper
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from aae_tract.data_fetchers.fetcher import extract_zip, md5sum
from aae_tract.errors import AAETractError, FetcherError, ModelFileError
from aae_tract.model import TractAAE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good_model(tiny_trained, tmp_path_factory):
    model, _ = tiny_trained
    return model.save(tmp_path_factory.mktemp("model") / "good.keras")


# ------------------------------------------------------ model files with code


def _lambda_config(marker):
    """The config Keras writes for a Lambda layer running Python code."""

    def touch(t):
        Path(marker).write_text("ran")
        return t

    layer = keras.layers.Lambda(touch)
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": "evil",
            "function": {
                "class_name": "__lambda__",
                "config": {
                    "code": base64.b64encode(marshal.dumps(touch.__code__)).decode(),
                    "defaults": None,
                    "closure": None,
                },
            },
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 3]},
        "keras": str(type(layer)),
    }


def _code_configs(marker):
    touch = f"touch {marker}"
    return {
        "os.system": {"module": "os", "class_name": "system", "config": touch},
        "os.system as class": {
            "module": "os",
            "class_name": "system",
            "config": {"command": touch},
            "registered_name": "system",
        },
        "builtins.eval": {
            "module": "builtins",
            "class_name": "eval",
            "config": {"source": f"__import__('os').system({touch!r})"},
        },
        "subprocess.Popen": {
            "module": "subprocess",
            "class_name": "Popen",
            "config": {"args": ["touch", str(marker)]},
        },
        "function os.system": {
            "module": "os",
            "class_name": "function",
            "config": "system",
            "registered_name": "function",
        },
        "Lambda layer with bytecode": _lambda_config(marker),
        "aae_tract class, foreign registration": lambda c: {
            **c,
            "registered_name": "evil>ConditionalAAE",
        },
        "aae_tract class, foreign module": lambda c: {**c, "module": "os"},
        "extra key holding an object": lambda c: {
            **c,
            "config": {
                **c["config"],
                "payload": {"module": "os", "class_name": "system", "config": touch},
            },
        },
    }


CODE_CASES = sorted(_code_configs("x"))


@pytest.mark.parametrize("case", CODE_CASES)
def test_model_config_with_code_is_refused(good_model, tmp_path, case):
    marker = tmp_path / "ran"
    replacement = _code_configs(marker)[case]
    evil = tamper(
        good_model,
        tmp_path / "evil.keras",
        config=replacement if callable(replacement) else lambda c: replacement,
    )
    with pytest.raises(ModelFileError, match="not an aae_tract model|disagree") as info:
        TractAAE.load(evil)
    assert str(evil) in str(info.value)
    assert not marker.exists(), "code in the model file ran"


def test_keras_safe_mode_refuses_the_lambda_on_its_own(tmp_path):
    """The same Lambda config, handed straight to Keras: safe mode refuses it
    (aae_tract checks the config before Keras sees it; this is the second wall)."""
    marker = tmp_path / "ran"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "plain.keras")
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [_lambda_config(marker)]},
        "registered_name": None,
    }
    evil = tamper(
        tmp_path / "plain.keras", tmp_path / "evil.keras", config=lambda c: config
    )
    with pytest.raises(Exception, match="(?i)lambda|safe"):
        keras.saving.load_model(evil, safe_mode=True)
    assert not marker.exists()


# ------------------------------------------------ model files whose JSON lies


def _set(path, value):
    def change(payload):
        target = payload
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return payload

    return change


def _both(path, value):
    """Change a network hyperparameter in config.json and the metadata alike."""
    return {
        "config": _set(["config", *path], value),
        "meta": _set(["config", *path], value),
    }


METADATA_CASES = {
    # wrong shapes
    "orientation reference of 1 point": (
        {"meta": _set(["orient_refs", "AF_L"], [[0, 0, 0]])},
        "orient_refs",
    ),
    "latent bank of another size": (
        {"meta": _set(["latent_bank", "AF_L", "z"], [[1.0, 2.0]])},
        "latent_bank",
    ),
    "latent bank codes without values": (
        {"meta": _set(["latent_bank", "AF_L", "a"], [1.0])},
        "latent_bank",
    ),
    "latent bank subject index past its subjects": (
        {"meta": _set(["latent_bank", "AF_L", "subject", 0], 99)},
        "subject",
    ),
    "latent bank subject means of another size": (
        {"meta": _set(["latent_bank", "AF_L", "subject_means"], [[1.0, 2.0]])},
        "subject_means",
    ),
    "subject spread of another size": (
        {"meta": _set(["latent_bank", "AF_L", "subject_spread"], [[0.0, 1.0]])},
        "subject_spread",
    ),
    "subject spread quantiles decreasing": (
        {
            "meta": lambda m: _set(
                ["latent_bank", "AF_L", "subject_spread"],
                [[1.0, 0.0]] * len(m["latent_bank"]["AF_L"]["subject_means"]),
            )(m)
        },
        "must not decrease",
    ),
    "calibration knots of two lengths": (
        {"meta": _set(["calibration", "AF_L", "y"], [0.0])},
        "calibration",
    ),
    "normaliser mean of 2 values": (
        {"meta": _set(["normalizer", "mean"], [0.0, 1.0])},
        "normalizer",
    ),
    "4x3 affine": (
        {"meta": _set(["space", "affine"], np.eye(4)[:3].tolist())},
        "space",
    ),
    # label list
    "one bundle name missing": (
        {"meta": lambda m: {**m, "bundle_names": m["bundle_names"][:2]}},
        "bundles",
    ),
    "duplicated bundle name": (
        {"meta": lambda m: {**m, "bundle_names": ["AF_L", "AF_L", "CST_R"]}},
        "bundle_names",
    ),
    "bundle name not a string": (
        {"meta": lambda m: {**m, "bundle_names": ["AF_L", 3, "CST_R"]}},
        "bundle_names",
    ),
    "statistics for an unknown bundle": (
        {"meta": lambda m: {**m, "bundle_stats": {"XX": m["bundle_stats"]["AF_L"]}}},
        "unknown bundle",
    ),
    "more bundles in the networks": (
        _both(["n_bundles"], 4),
        "bundles|disagree",
    ),
    # NaN, infinite and huge ranges
    "NaN attribute minimum": (
        {"meta": _set(["bundle_stats", "AF_L", "attribute", "min"], float("nan"))},
        "non-finite",
    ),
    "infinite attribute maximum": (
        {"meta": _set(["bundle_stats", "AF_L", "attribute", "max"], float("inf"))},
        "non-finite",
    ),
    "minimum above maximum": (
        {"meta": _set(["bundle_stats", "AF_L", "attribute", "min"], 1e9)},
        "min",
    ),
    "NaN calibration knot": (
        {"meta": _set(["calibration", "AF_L", "x"], [float("nan")])},
        "non-finite",
    ),
    "NaN calibration slope": (
        {"meta": _set(["calibration", "AF_L", "slope"], float("nan"))},
        "non-finite",
    ),
    "zero normaliser scale": ({"meta": _set(["normalizer", "scale"], 0)}, "scale"),
    "negative normaliser scale": (
        {"meta": _set(["normalizer", "scale"], -2.0)},
        "scale",
    ),
    "NaN normaliser scale": (
        {"meta": _set(["normalizer", "scale"], float("nan"))},
        "non-finite",
    ),
    "huge normaliser mean": (
        {"meta": _set(["normalizer", "mean"], [1e300, 0, 0])},
        "beyond",
    ),
    "huge latent code": (
        {"meta": _set(["latent_bank", "AF_L", "z", 0, 0], 1e200)},
        "beyond",
    ),
    "negative space dimensions": (
        {"meta": _set(["space", "dimensions"], [-1, 0, 5])},
        "dimensions",
    ),
    "NaN voxel size": (
        {"meta": _set(["space", "voxel_sizes"], [float("nan"), 1, 1])},
        "non-finite",
    ),
    "singular space": (
        {"meta": _set(["space", "affine"], np.zeros((4, 4)).tolist())},
        "singular",
    ),
    "volume test as text": (
        {"meta": _set(["space", "holds_data"], "yes")},
        "holds_data",
    ),
    "2**31 latent dimensions": (_both(["latent_dims"], 2**31), "latent_dims"),
    "a million filters": (_both(["filters"], [2**20, 2**20]), "filters"),
    "a billion points": (_both(["n_points"], 10**9), "n_points"),
    # wrong types
    "metadata is a list": ({"meta": lambda m: [m]}, "not a JSON object"),
    "metadata is not UTF-8": ({"meta": lambda m: b"\xff\xfe\x00garbage"}, "corrupt"),
    "metadata nested 100000 deep": (
        {"meta": lambda m: "[" * 100_000 + "]" * 100_000},
        "corrupt",
    ),
    "format version as text": ({"meta": _set(["format_version"], "1")}, "format"),
    "newer format version": ({"meta": _set(["format_version"], 99)}, "newer"),
    "bundle names as text": ({"meta": _set(["bundle_names"], "AF_L")}, "bundle_names"),
    "config as a list": ({"meta": _set(["config"], [1, 2])}, "config"),
    "latent size as text": (_both(["latent_dims"], "8"), "latent_dims"),
    "normaliser mean as text": (
        {"meta": _set(["normalizer", "mean"], "abc")},
        "numeric",
    ),
    "no normaliser": ({"meta": _set(["normalizer"], {})}, "normalizer"),
    "orientation references as a list": (
        {"meta": _set(["orient_refs"], [1, 2])},
        "orient_refs",
    ),
    "statistics as a number": (
        {"meta": _set(["bundle_stats", "AF_L"], 5)},
        "bundle_stats",
    ),
    "statistic as text": (
        {"meta": _set(["bundle_stats", "AF_L", "attribute", "min"], "x")},
        "not a number",
    ),
    "calibration as a list": (
        {"meta": _set(["calibration", "AF_L"], [1])},
        "calibration",
    ),
    "slope as text": (
        {"meta": _set(["calibration", "AF_L", "slope"], "steep")},
        "slope",
    ),
    "space as text": ({"meta": _set(["space"], "RAS")}, "space"),
    "attribute name as a number": (
        {"meta": _set(["attribute_name"], 5)},
        "attribute_name",
    ),
    "training record as text": ({"meta": _set(["training"], "x")}, "training"),
    "metadata missing": (
        {"meta": None, "drop": ("aae_tract.json",)},
        "not an aae_tract",
    ),
    # networks and metadata that do not match
    "networks for 64 points": (
        {"config": _set(["config", "n_points"], 64)},
        "disagree",
    ),
    "metadata for 64 points": ({"meta": _set(["config", "n_points"], 64)}, "64"),
    "no network config": ({"drop": ("config.json",)}, "not an aae_tract"),
    "no weights": ({"drop": ("model.weights.h5",)}, "cannot be loaded"),
    "garbage weights": (
        {"drop": ("model.weights.h5",), "add": {"model.weights.h5": b"\x89HDF junk"}},
        "cannot be loaded",
    ),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_model_file_with_bad_content_is_refused(good_model, tmp_path, case):
    changes, message = METADATA_CASES[case]
    changes = {k: v for k, v in changes.items() if v is not None}
    bad = tamper(good_model, tmp_path / "bad.keras", **changes)
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=message) as info:
        TractAAE.load(bad)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value).strip()
    assert time.perf_counter() - start < 60  # refused before building huge networks


def test_model_file_without_a_newer_hyperparameter_still_loads(good_model, tmp_path):
    """Files written before a network hyperparameter existed (here
    ``posterior``) lack it in both configs; its default applies."""

    def drop(path):
        def change(payload):
            target = payload
            for key in path:
                target = target[key]
            target.pop("posterior", None)
            return payload

        return change

    older = tamper(
        good_model,
        tmp_path / "older.keras",
        config=drop(["config"]),
        meta=drop(["config"]),
    )
    model = TractAAE.load(older)
    assert model.config.posterior == "deterministic"


def test_model_file_from_before_the_arclength_decoder_loads_as_it_was(
    tiny_splits, tmp_path
):
    """A file without ``decoder`` (and the scale-free loss weights) was written
    by the point-spline decoder; it must load with that decoder and decode
    exactly as before."""
    from conftest import TINY

    train, _ = tiny_splits
    old = TractAAE.from_dataset(train, epochs=1, decoder="spline", **TINY)
    old.fit(train, verbose=0)
    saved = old.save(tmp_path / "spline.keras")
    newer = ("decoder", "length_weight", "direction_weight", "texture_weight")

    def drop(payload, keys):
        target = payload
        for key in keys:
            target = target[key]
        for name in newer:
            target.pop(name, None)
        return payload

    older = tamper(
        saved,
        tmp_path / "older.keras",
        config=lambda p: drop(p, ["config"]),
        meta=lambda p: drop(p, ["config"]),
    )
    model = TractAAE.load(older)
    assert model.config.decoder == "spline"
    assert model.config.length_weight == 0.0
    z = np.random.default_rng(0).normal(size=(4, model.latent_dims))
    np.testing.assert_allclose(
        model.decode(z, "AF_L", texture=0), old.decode(z, "AF_L"), atol=1e-4
    )


def test_model_file_from_before_correlated_texture_samples_it_as_it_was(
    tiny_splits, tmp_path
):
    """A file without ``texture_width`` was trained with independent step
    perturbations; it must load with them and sample the same texture."""
    from conftest import TINY

    train, _ = tiny_splits
    old = TractAAE.from_dataset(train, epochs=1, texture_width=0.0, **TINY)
    old.fit(train, verbose=0)
    saved = old.save(tmp_path / "white.keras")

    def drop(payload):
        payload["config"].pop("texture_width")
        return payload

    older = tamper(saved, tmp_path / "older.keras", config=drop, meta=drop)
    model = TractAAE.load(older)
    assert model.config.texture_width == 0.0
    assert model.network.decoder.get_layer("arclength").texture_width == 0.0
    z = np.random.default_rng(0).normal(size=(4, model.latent_dims))
    np.testing.assert_allclose(
        model.decode(z, "AF_L", texture=3), old.decode(z, "AF_L", texture=3), atol=1e-4
    )
    # today's default correlates it
    assert TractAAE.from_dataset(train, **TINY).config.texture_width == 1.0


def test_member_escaping_the_model_archive_writes_nothing_outside(good_model, tmp_path):
    outside = tmp_path / "outside"
    name = "../" * 12 + str(outside).lstrip("/")
    evil = tamper(
        good_model, tmp_path / "slip.keras", add={name: b"x", "/" + name: b"y"}
    )
    try:
        TractAAE.load(evil)
    except ModelFileError:
        pass
    assert not outside.exists()


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=1, max_size=6
    ),
    cut=st.one_of(st.none(), st.integers(0, 2**31)),
)
def test_damaged_model_file_is_refused_or_usable(good_model, tmp_path, flips, cut):
    """Bit flips and truncation: a ModelFileError, or a model that works."""
    data = bytearray(good_model.read_bytes())
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    if cut is not None:
        data = data[: cut % len(data)]
    path = tmp_path / "damaged.keras"
    path.write_bytes(bytes(data))
    try:
        model = TractAAE.load(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
        return
    z = model.encode_prepared(np.zeros((2, model.n_points, 3), "f4"))
    assert np.isfinite(z).all()


# ------------------------------------------------------------ no pickle at all

FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "shelve",
    "joblib",
    "marshal",
}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call, name):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _true(node):
    return node is not None and not (
        isinstance(node, ast.Constant) and node.value is False
    )


def _problems(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        for name in names:
            if name in FORBIDDEN_MODULES:
                problems.append(f"line {node.lineno}: imports {name}")
    for call, func in _calls(tree):
        where = f"line {call.lineno}: {func}(...)"
        allow = _keyword(call, "allow_pickle")
        if allow is not None and _true(allow):
            problems.append(f"{where} with allow_pickle={ast.unparse(allow)}")
        if func.endswith("load_model") and not _true(
            _keyword(call, "safe_mode") or ast.Constant(True)
        ):
            problems.append(f"{where} with safe_mode=False")
        if func in ("torch.load",) and not (
            isinstance(_keyword(call, "weights_only"), ast.Constant)
            and _keyword(call, "weights_only").value is True
        ):
            problems.append(f"{where} without weights_only=True")
        if func in ("eval", "exec", "yaml.load", "yaml.unsafe_load"):
            problems.append(where)
    return problems


def test_no_pickle_or_code_loading_in_the_package():
    files = [
        path
        for folder in ("aae_tract", "workflows", "data_fetchers")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(files) > 10
    found = {str(p.relative_to(ROOT)): _problems(p) for p in files}
    found = {k: v for k, v in found.items() if v}
    assert not found, found


def test_the_pickle_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom joblib import load\nimport numpy as np\n"
        "np.load('x.npy', allow_pickle=True)\n"
        "keras.saving.load_model(p, safe_mode=False)\n"
        "torch.load('w.pt')\neval('1')\n"
    )
    assert len(_problems(bad)) == 6


# -------------------------------------------------- archives escaping folders


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "./../evil.trk",
        "sub_1/./../../evil.trk",
        "sub_1/../sub_2/../../evil.trk",
        "\\\\server\\share\\evil.trk",
        "/",
        "//evil.trk",
        "sub_1\\..\\..\\evil.trk",
    ],
)
def test_more_escaping_members_are_refused(tmp_path, name):
    archive = _zip(tmp_path / "a.zip", {"sub_1/AF_L.trk": b"ok", name: b"evil"})
    target = tmp_path / "deep" / "target"
    with pytest.raises(FetcherError, match="refusing archive") as info:
        extract_zip(archive, target)
    assert str(archive) in str(info.value)
    assert not target.exists()
    assert not list(tmp_path.rglob("evil*"))
    assert [p.name for p in (tmp_path / "deep").iterdir()] == []


def test_renamed_member_escaping_is_refused(tmp_path):
    """A member renamed (as the HCP842 fetcher renames) outside the target."""
    archive = _zip(tmp_path / "a.zip", {"bundles/AF_L.trk": b"ok"})
    target = tmp_path / "deep" / "target"
    with pytest.raises(FetcherError, match="escapes"):
        extract_zip(archive, target, rename=lambda rel: PurePosixPath("../../evil.trk"))
    assert not list(tmp_path.rglob("evil*"))
    assert not target.exists()


def test_symlink_directory_member_is_refused(tmp_path):
    """A symbolic-link folder followed by a file written through it."""
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("sub_1/")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, str(tmp_path / "elsewhere"))
        zf.writestr("sub_1/evil.trk", b"evil")
    with pytest.raises(FetcherError, match="symbolic link"):
        extract_zip(archive, tmp_path / "target")
    assert not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "target").exists()


def test_archive_with_the_wrong_checksum_is_not_extracted(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"sub_1/AF_L.trk": b"tampered"})
    with pytest.raises(FetcherError, match="checksum mismatch"):
        extract_zip(archive, tmp_path / "target", md5="0" * 32, downloaded=True)
    assert not (tmp_path / "target").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip"]
    # the right checksum extracts it
    extract_zip(archive, tmp_path / "target", md5=md5sum(archive), downloaded=True)
    assert (tmp_path / "target" / "sub_1" / "AF_L.trk").read_bytes() == b"tampered"


def test_trx_archive_escaping_its_folder_writes_nothing_outside(
    tmp_path, minimal_bundles_dir
):
    """A .trx is a zip archive too: members aimed outside are not written."""
    pytest.importorskip("trx")
    from aae_tract.io import load_bundle, save_tractogram

    good = save_tractogram(
        load_bundle(minimal_bundles_dir / "sub_1" / "AF_L.trk"), tmp_path / "good.trx"
    )
    outside = tmp_path / "outside"
    evil = tmp_path / "evil.trx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("../" * 12 + str(outside).lstrip("/"), b"x")
    try:
        sft = load_bundle(evil, reference="same")
        assert len(sft) == 50
    except AAETractError:
        pass
    assert not outside.exists()
