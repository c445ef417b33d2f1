"""Tests of the synthetic phantom: shapes, sizes, determinism, ground truth."""

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
from dipy.io.streamline import load_tractogram
from dipy.tracking.streamline import length, set_number_of_points
from scipy.stats import spearmanr

from aae_tract.data_fetchers import PHANTOM_BUNDLES, load_ground_truth, make_phantom
from aae_tract.data_fetchers.phantom import write_trk_chunks
from aae_tract.errors import DatasetError

SUBJECTS = ["sub-01", "sub-02", "sub-03", "sub-04"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("phantom") / "ph")


@pytest.fixture(scope="module")
def truth(phantom):
    return load_ground_truth(phantom)


def _streamlines(path):
    return nib.streamlines.load(path).streamlines


def _oriented_mean(streamlines, ref, n_points=20):
    x = np.asarray(set_number_of_points(list(streamlines), nb_points=n_points))
    direct = np.linalg.norm(x - ref, axis=2).mean(axis=1)
    flipped = np.linalg.norm(x[:, ::-1] - ref, axis=2).mean(axis=1)
    x = np.where((flipped < direct)[:, None, None], x[:, ::-1], x)
    return x.mean(axis=0)


def _mdf(a, b):
    return min(
        np.linalg.norm(a - b, axis=1).mean(), np.linalg.norm(a[::-1] - b, axis=1).mean()
    )


def _all_bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_layout(phantom):
    assert sorted(p.name for p in phantom.iterdir()) == sorted(
        SUBJECTS + ["ground_truth.json", "participants.tsv"]
    )
    for s in SUBJECTS:
        assert sorted(p.stem for p in (phantom / s).glob("*.trk")) == sorted(
            PHANTOM_BUNDLES
        )
        for b in PHANTOM_BUNDLES:
            assert len(_streamlines(phantom / s / f"{b}.trk")) == 100


def test_bundles_have_distinct_shapes(truth):
    kinds = {b: v["kind"] for b, v in truth["bundles"].items()}
    assert len(kinds) >= 6
    assert {"straight", "arc", "long_arc", "u_shape", "crossing", "fan"} <= set(
        kinds.values()
    )
    # the crossing pair really crosses: their centroids come within a few mm
    a = np.asarray(truth["bundles"]["CC_Mid"]["centroid"], dtype=np.float32)
    b = np.asarray(truth["bundles"]["CST_R"]["centroid"], dtype=np.float32)
    a = set_number_of_points(a, nb_points=300)
    b = set_number_of_points(b, nb_points=300)
    assert np.linalg.norm(a[:, None] - b[None], axis=2).min() < 5.0
    # the bundles are far apart from each other overall
    cents = {k: np.asarray(v["centroid"]) for k, v in truth["bundles"].items()}
    names = sorted(cents)
    for i, m in enumerate(names):
        for n in names[i + 1 :]:
            assert _mdf(cents[m], cents[n]) > 15.0, (m, n)


def test_lengths_realistic_and_spread(phantom):
    for b in PHANTOM_BUNDLES:
        lengths = np.concatenate(
            [length(_streamlines(phantom / s / f"{b}.trk")) for s in SUBJECTS]
        )
        assert lengths.min() >= 30.0 and lengths.max() <= 200.0, b
        med = np.median(lengths)
        assert lengths.min() <= 0.8 * med and lengths.max() >= 1.2 * med, b
        # continuous: no gap in the central 90 % wider than 5 % of the median
        lo, hi = np.percentile(lengths, [5, 95])
        central = np.sort(lengths[(lengths >= lo) & (lengths <= hi)])
        assert np.diff(central).max() < 0.05 * med, b
        # spread within one subject as well
        one = length(_streamlines(phantom / "sub-01" / f"{b}.trk"))
        assert one.min() <= 0.85 * np.median(one), b
        assert one.max() >= 1.15 * np.median(one), b


def test_points_about_one_per_mm_and_smooth(phantom):
    sl = _streamlines(phantom / "sub-02" / "CG_L.trk")
    n = np.array([len(s) for s in sl])
    lens = np.asarray(length(sl))
    assert len(set(n)) > 20  # variable number of points
    assert np.all(np.abs((n - 1) / lens - 1.0) < 0.1)
    for s in list(sl)[:10]:
        d = np.diff(s, axis=0)
        step = np.linalg.norm(d, axis=1)
        cos = np.sum(d[1:] * d[:-1], axis=1) / (step[1:] * step[:-1])
        assert cos.min() > 0.5  # no zig-zag between consecutive points
        assert np.std(s - np.linspace(s[0], s[-1], len(s)), axis=0).max() > 0.1


def test_loads_with_dipy_in_rasmm(phantom):
    path = phantom / "sub-01" / "AF_L.trk"
    sft = load_tractogram(str(path), "same", bbox_valid_check=True)
    sft.to_rasmm()
    raw = _streamlines(path)
    assert len(sft) == len(raw)
    np.testing.assert_allclose(sft.streamlines[7], raw[7], atol=1e-4)
    np.testing.assert_allclose(
        sft.affine,
        np.asarray([[1, 0, 0, -90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]]),
    )
    assert tuple(sft.dimensions) == (182, 218, 182)


def test_deterministic_for_a_seed(phantom, tmp_path):
    again = make_phantom(tmp_path / "again")
    assert _all_bytes(again) == _all_bytes(phantom)


def test_other_seed_differs(phantom, tmp_path):
    other = make_phantom(tmp_path / "other", seed=1)
    a = _streamlines(phantom / "sub-01" / "UF_L.trk")
    b = _streamlines(other / "sub-01" / "UF_L.trk")
    assert len(a) == len(b)
    assert (phantom / "sub-01" / "UF_L.trk").read_bytes() != (
        other / "sub-01" / "UF_L.trk"
    ).read_bytes()
    assert not np.allclose(a[0][:10], b[0][:10], atol=0.5)
    assert sorted(length(a)) != pytest.approx(sorted(length(b)), abs=0.1)
    assert (
        load_ground_truth(other)["subjects"] != load_ground_truth(phantom)["subjects"]
    )


def test_subjects_differ_slightly(phantom, truth):
    for b in PHANTOM_BUNDLES:
        ref = np.asarray(truth["bundles"][b]["centroid"])
        cents = [
            _oriented_mean(_streamlines(phantom / s / f"{b}.trk"), ref)
            for s in SUBJECTS
        ]
        for i in range(len(cents)):
            for j in range(i + 1, len(cents)):
                d = _mdf(cents[i], cents[j])
                assert 0.3 < d < 12.0, (b, SUBJECTS[i], SUBJECTS[j], d)


def test_participants_and_age_effect(phantom, truth):
    with open(phantom / "participants.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["participant_id"] for r in rows] == SUBJECTS
    ages = np.array([float(r["age"]) for r in rows])
    assert np.all((ages >= 20) & (ages <= 80)) and len(set(ages)) == len(ages)
    assert np.ptp(ages) > 30
    rhos = []
    for b in PHANTOM_BUNDLES:
        medians = [
            np.median(length(_streamlines(phantom / s / f"{b}.trk"))) for s in SUBJECTS
        ]
        rhos.append(spearmanr(ages, medians)[0])
    # bundles get shorter with age (3 % per decade by default)
    assert np.mean(rhos) <= -0.8, rhos
    for s, age in zip(SUBJECTS, ages):
        assert truth["subjects"][s]["age"] == pytest.approx(age)


def test_no_age_effect_when_disabled(tmp_path):
    out = make_phantom(
        tmp_path / "flat", age_effect=0.0, deformation=0.0, n_per_bundle=200
    )
    truth = load_ground_truth(out)
    for b in PHANTOM_BUNDLES:
        med = [truth["subjects"][s]["median_length_mm"][b] for s in SUBJECTS]
        assert np.ptp(med) < 0.06 * np.mean(med), (b, med)


def test_ground_truth_matches_measurements(phantom, truth):
    assert truth["options"]["seed"] == 0
    assert truth["options"]["n_per_bundle"] == 100
    for b in PHANTOM_BUNDLES:
        gt = truth["bundles"][b]
        sls = [_streamlines(phantom / s / f"{b}.trk") for s in SUBJECTS]
        lengths = np.concatenate([length(x) for x in sls])
        assert gt["n_streamlines"] == len(lengths)
        p5, p50, p95 = np.percentile(lengths, [5, 50, 95])
        assert gt["median_length_mm"] == pytest.approx(p50, abs=0.05)
        assert gt["p5_length_mm"] == pytest.approx(p5, abs=0.05)
        assert gt["p95_length_mm"] == pytest.approx(p95, abs=0.05)
        assert gt["min_length_mm"] == pytest.approx(lengths.min(), abs=0.05)
        assert gt["max_length_mm"] == pytest.approx(lengths.max(), abs=0.05)
        centroid = np.asarray(gt["centroid"])
        assert centroid.shape == (20, 3)
        measured = _oriented_mean([s for x in sls for s in x], centroid)
        assert _mdf(measured, centroid) < 1.0, b
        assert _mdf(np.asarray(gt["template_centroid"]), centroid) < 8.0, b
        for s in SUBJECTS:
            assert truth["subjects"][s]["median_length_mm"][b] == pytest.approx(
                np.median(length(_streamlines(phantom / s / f"{b}.trk"))), abs=0.05
            )
    json.dumps(truth)  # plain JSON types only


def test_subset_of_bundles_same_streamlines(phantom, tmp_path):
    out = make_phantom(tmp_path / "sub", bundles=["UF_L", "CST_R"])
    assert sorted(p.stem for p in (out / "sub-03").glob("*.trk")) == ["CST_R", "UF_L"]
    assert (out / "sub-03" / "UF_L.trk").read_bytes() == (
        phantom / "sub-03" / "UF_L.trk"
    ).read_bytes()


def test_idempotent_and_force(tmp_path):
    out = make_phantom(tmp_path / "p", n_subjects=2, n_per_bundle=10)
    f = out / "sub-02" / "CG_L.trk"
    stamp = f.stat().st_mtime_ns
    make_phantom(tmp_path / "p", n_subjects=2, n_per_bundle=10)
    assert f.stat().st_mtime_ns == stamp
    os.utime(f, ns=(1, 1))
    make_phantom(tmp_path / "p", n_subjects=2, n_per_bundle=10, force=True)
    assert f.stat().st_mtime_ns != 1
    # other options: regenerated, ground truth updated
    make_phantom(tmp_path / "p", n_subjects=2, n_per_bundle=12)
    assert len(_streamlines(f)) == 12
    assert load_ground_truth(out)["options"]["n_per_bundle"] == 12
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_many_subjects_ids(tmp_path):
    out = make_phantom(tmp_path / "p", n_subjects=12, n_per_bundle=2, bundles=["UF_L"])
    assert (out / "sub-12" / "UF_L.trk").is_file()
    ages = [v["age"] for v in load_ground_truth(out)["subjects"].values()]
    assert min(ages) >= 20 and max(ages) <= 80


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_per_bundle": 0},
        {"n_subjects": -1},
        {"n_subjects": 2.5},
        {"seed": -3},
        {"noise_mm": float("nan")},
        {"step_mm": 0.0},
        {"length_spread": 0.9},
        {"age_range": (50, 20)},
        {"bundles": ["AF_L", "NOPE"]},
        {"bundles": []},
        {"age_effect": 0.5},
    ],
)
def test_bad_options(tmp_path, kwargs):
    with pytest.raises(DatasetError, match="make_phantom"):
        make_phantom(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_write_trk_chunks_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    counts = np.array([2, 5, 1, 30])
    pts = rng.uniform(-60, 60, size=(counts.sum(), 3)).astype(np.float32)
    path = tmp_path / "x.trk"
    n = write_trk_chunks(path, [(pts[:7], counts[:2]), (pts[7:], counts[2:])])
    assert n == 4
    trk = nib.streamlines.load(path)
    assert trk.header["nb_streamlines"] == 4
    assert trk.header["voxel_order"] in ("RAS", b"RAS")
    np.testing.assert_allclose(trk.streamlines.get_data(), pts, atol=1e-4)
    assert [len(s) for s in trk.streamlines] == counts.tolist()
    # same bytes as nibabel's own writer, up to float rounding
    ref = tmp_path / "ref.trk"
    nib.streamlines.save(
        nib.streamlines.Tractogram(
            np.split(pts, np.cumsum(counts)[:-1]), affine_to_rasmm=np.eye(4)
        ),
        str(ref),
        header=nib.streamlines.load(path, lazy_load=True).header,
    )
    assert path.read_bytes()[:1000] == ref.read_bytes()[:1000]
    np.testing.assert_allclose(
        nib.streamlines.load(ref).streamlines.get_data(),
        trk.streamlines.get_data(),
        atol=1e-4,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.trk", "x.trk"]
