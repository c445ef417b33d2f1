"""Tests of the synthetic phantom: shapes, sizes, determinism, ground truth."""

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
from dipy.io.streamline import load_tractogram
from dipy.tracking.streamline import length, set_number_of_points
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

import aae_tract.data_fetchers.phantom as phantom_module
from aae_tract.data_fetchers import PHANTOM_BUNDLES, load_ground_truth, make_phantom
from aae_tract.data_fetchers.phantom import (
    DISTRACTOR_CLEARANCE_MM,
    FRAGMENT_MIN_MM,
    load_wholebrain_labels,
    make_wholebrain,
    write_trk_chunks,
)
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


# ---------------------------------------------------------------------------
# fragments: pieces of full streamlines, as premature termination leaves


FRAGMENT_KW = {"n_subjects": 2, "n_per_bundle": 200}
#: Bundles whose full streamlines are long (median over 100 mm).
LONG_BUNDLES = ("CC_Mid", "CG_L", "CST_L", "CST_R")


@pytest.fixture(scope="module")
def cut_pair(tmp_path_factory):
    """The same phantom without and with half of its streamlines fragments."""
    root = tmp_path_factory.mktemp("fragments")
    return (
        make_phantom(root / "whole", **FRAGMENT_KW),
        make_phantom(root / "cut", fragments=0.5, **FRAGMENT_KW),
    )


def _bundle_lengths(folder, b):
    subjects = [f"sub-{i + 1:02d}" for i in range(FRAGMENT_KW["n_subjects"])]
    return np.concatenate(
        [np.asarray(length(_streamlines(folder / s / f"{b}.trk"))) for s in subjects]
    )


def test_no_fragments_unchanged(tmp_path):
    kw = {"n_subjects": 1, "n_per_bundle": 4, "bundles": ["UF_L", "CG_L"]}
    a = make_phantom(tmp_path / "a", **kw)
    b = make_phantom(tmp_path / "b", fragments=0.0, **kw)
    trk = {k: v for k, v in _all_bytes(a).items() if k.endswith(".trk")}
    assert trk == {k: v for k, v in _all_bytes(b).items() if k.endswith(".trk")}
    # the streamlines the phantom made before the fragments option existed
    uf = _streamlines(a / "sub-01" / "UF_L.trk")
    assert [len(s) for s in uf] == [64, 57, 47, 80]
    np.testing.assert_allclose(
        [s[0] for s in uf],
        [
            [-25.920, 25.623, -7.262],
            [-28.627, 24.527, -23.301],
            [-25.237, 20.419, -21.464],
            [-22.583, 29.731, -26.399],
        ],
        atol=2e-3,
    )
    assert [len(s) for s in _streamlines(a / "sub-01" / "CG_L.trk")] == [
        151,
        123,
        119,
        128,
    ]


def test_fragments_spread_lengths_over_4x(cut_pair):
    whole, cut = cut_pair
    for b in PHANTOM_BUNDLES:
        full = _bundle_lengths(whole, b)
        lengths = _bundle_lengths(cut, b)
        # fragments reach far below the shortest full streamline
        assert lengths.min() < 0.5 * full.min(), b
        assert lengths.max() / lengths.min() >= 4.0, b
        p2, p98 = np.percentile(lengths, [2, 98])
        if b in LONG_BUNDLES:
            assert p98 / p2 >= 4.0, (b, p2, p98)
            assert p2 <= 30.0 and p98 >= 130.0, (b, p2, p98)
        # fragments keep a few points, even in the short U bundle
        assert lengths.min() >= FRAGMENT_MIN_MM - 2.0, b
        counts = [len(s) for s in _streamlines(cut / "sub-01" / f"{b}.trk")]
        assert min(counts) >= 9, b


def test_fragments_are_pieces_of_full_streamlines(cut_pair):
    whole, cut = cut_pair
    centres = []
    for b in PHANTOM_BUNDLES:
        for s in ("sub-01", "sub-02"):
            pieces = _streamlines(cut / s / f"{b}.trk")
            fulls = _streamlines(whole / s / f"{b}.trk")
            assert len(pieces) == len(fulls) == 200
            short = 0
            for piece, full in zip(pieces, fulls):
                # the same streamline, cut or not: its points lie on the full
                # one (other point noise only)
                d, k = cKDTree(full).query(piece)
                assert d.mean() < 1.5 and d.max() < 3.0, (b, s, d.mean(), d.max())
                ratio = length(piece) / length(full)
                assert ratio < 1.08, (b, s, ratio)
                short += ratio < 0.9
                if ratio < 0.5:
                    centres.append(k[len(k) // 2] / (len(full) - 1))
            # half are fragments; few of them are within 10 % of full length
            assert 0.4 * 200 <= short <= 0.5 * 200, (b, s, short)
    # cut at random positions along the curve, not around its middle
    centres = np.asarray(centres)
    assert len(centres) > 300
    assert np.mean(centres < 0.35) > 0.15 and np.mean(centres > 0.65) > 0.15


@pytest.mark.parametrize("step_mm", [1.0, 2.5])
def test_fragment_points_step_apart(cut_pair, tmp_path, step_mm):
    if step_mm == 1.0:
        folder = cut_pair[1]
    else:
        folder = make_phantom(
            tmp_path / "p",
            n_subjects=1,
            n_per_bundle=100,
            bundles=["AF_L", "UF_L"],
            step_mm=step_mm,
            fragments=0.5,
        )
    n_short = 0
    for path in sorted(folder.glob("sub-01/*.trk")):
        sl = _streamlines(path)
        lens = np.asarray(length(sl))
        for s, sl_len in zip(sl, lens):
            d = np.diff(s, axis=0)
            step = np.linalg.norm(d, axis=1)
            assert abs((len(s) - 1) * step_mm / sl_len - 1.0) < 0.15, (path, len(s))
            # n - 1 steps share a length that is not a multiple of step_mm
            slack = 0.1 + 0.5 / (len(s) - 1)
            assert abs(np.median(step) / step_mm - 1.0) < slack, (path, len(s))
            cos = np.sum(d[1:] * d[:-1], axis=1) / (step[1:] * step[:-1])
            assert cos.min() > 0.5, path
            n_short += sl_len < 0.5 * np.median(lens)
    assert n_short > 20


def test_fragments_have_the_texture_of_full_streamlines(tmp_path):
    out = make_phantom(
        tmp_path / "p",
        n_subjects=1,
        n_per_bundle=150,
        bundles=["AF_L", "CG_L"],
        noise_corr_mm=0.0,
        fragments=0.5,
    )
    for b in ("AF_L", "CG_L"):
        sl = _streamlines(out / "sub-01" / f"{b}.trk")
        lens = np.asarray(length(sl))
        med = np.median(lens)
        # roughness: size of the second differences, mostly the point noise
        rough = np.array(
            [np.linalg.norm(np.diff(s, 2, axis=0), axis=1).mean() for s in sl]
        )
        short = rough[lens < 0.5 * med]
        full = rough[lens > 0.9 * med]
        assert len(short) > 20 and len(full) > 20
        assert np.median(short) == pytest.approx(np.median(full), rel=0.15), b


def test_fragments_ground_truth(cut_pair, truth):
    whole, cut = cut_pair
    gt = load_ground_truth(cut)
    gt0 = load_ground_truth(whole)
    assert gt["options"]["fragments"] == 0.5
    assert gt0["options"]["fragments"] == 0.0
    assert "fragment" in gt["fragment_model"]
    for b in PHANTOM_BUNDLES:
        info = gt["bundles"][b]
        frag, full = info["fragments"], info["full_streamlines"]
        assert frag["fraction"] == 0.5
        assert frag["n_streamlines"] == full["n_streamlines"] == 200
        lengths = _bundle_lengths(cut, b)
        assert info["min_length_mm"] == pytest.approx(lengths.min(), abs=0.05)
        fl, ul = frag["length_mm"], full["length_mm"]
        assert min(fl["min"], ul["min"]) == pytest.approx(lengths.min(), abs=0.01)
        assert max(fl["max"], ul["max"]) == pytest.approx(lengths.max(), abs=0.01)
        for q in (fl, ul):
            assert q["min"] <= q["p05"] <= q["median"] <= q["p95"] <= q["max"]
        assert fl["median"] < 0.6 * ul["median"], b
        assert ul["min"] > 0.5 * ul["median"], b
        # full streamlines keep the lengths of the phantom without fragments
        whole_full = gt0["bundles"][b]["full_streamlines"]["length_mm"]
        assert ul["median"] == pytest.approx(whole_full["median"], rel=0.05), b
        # centroids describe the full curves, with or without fragments
        np.testing.assert_allclose(
            info["centroid"], gt0["bundles"][b]["centroid"], atol=1e-3
        )
        for sub in gt["subjects"].values():
            assert sub["median_full_length_mm"][b] > sub["median_length_mm"][b]
    # without fragments: none reported, every streamline full
    for info in truth["bundles"].values():
        assert info["fragments"] == {
            "fraction": 0.0,
            "n_streamlines": 0,
            "length_mm": None,
        }
        assert info["full_streamlines"]["n_streamlines"] == info["n_streamlines"]
        assert info["full_streamlines"]["length_mm"]["median"] == pytest.approx(
            info["median_length_mm"], abs=0.01
        )


def test_fragments_option_makes_another_phantom(tmp_path):
    kw = {"n_subjects": 1, "n_per_bundle": 20, "bundles": ["UF_L"]}
    out = make_phantom(tmp_path / "p", **kw)
    f = out / "sub-01" / "UF_L.trk"
    before = f.read_bytes()
    make_phantom(tmp_path / "p", fragments=0.5, **kw)
    assert f.read_bytes() != before
    assert load_ground_truth(out)["options"]["fragments"] == 0.5
    stamp = f.stat().st_mtime_ns
    make_phantom(tmp_path / "p", fragments=0.5, **kw)
    assert f.stat().st_mtime_ns == stamp
    make_phantom(tmp_path / "p", **kw)
    assert f.read_bytes() == before


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), float("inf"), "half"])
def test_bad_fragments(tmp_path, value):
    with pytest.raises(DatasetError, match="make_phantom: fragments must be"):
        make_phantom(tmp_path / "bad", fragments=value)
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------
# whole-brain tractograms: every bundle of a subject plus distractors

WB_SUBJECTS = ["sub-01", "sub-03"]


@pytest.fixture(scope="module")
def wholebrain(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("wholebrain") / "wb"
    return make_wholebrain(phantom, out, subjects=WB_SUBJECTS, distractors=0.3)


@pytest.fixture(scope="module")
def wb_truth(wholebrain):
    return json.loads((wholebrain / "ground_truth.json").read_text())


def _segment_distances(points, curve):
    """Distance of each point (P, 3) to the polyline ``curve`` (K, 3)."""
    a, b = curve[:-1], curve[1:]
    ab = b - a
    ap = points[:, None, :] - a[None]
    t = np.clip(np.sum(ap * ab, axis=2) / np.sum(ab * ab, axis=1), 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(points[:, None, :] - closest, axis=2).min(axis=1)


def test_wholebrain_layout_and_labels(phantom, wholebrain, wb_truth):
    assert sorted(p.name for p in wholebrain.iterdir()) == [
        "ground_truth.json",
        "sub-01.trk",
        "sub-03.trk",
    ]
    assert wb_truth["bundles"] == list(PHANTOM_BUNDLES)
    assert wb_truth["options"] == {
        "subjects": WB_SUBJECTS,
        "distractors": 0.3,
        "seed": 0,
    }
    assert wb_truth["phantom"]["options"] == load_ground_truth(phantom)["options"]
    assert wb_truth["phantom"]["ground_truth"] == str(
        (phantom / "ground_truth.json").resolve()
    )
    for s in WB_SUBJECTS:
        entry = wb_truth["subjects"][s]
        trk = nib.streamlines.load(wholebrain / f"{s}.trk")
        n = len(trk.streamlines)
        assert n == entry["n_streamlines"] == len(entry["labels"])
        assert trk.header["nb_streamlines"] == n
        ref = nib.streamlines.load(phantom / s / "AF_L.trk", lazy_load=True).header
        for key in ("voxel_to_rasmm", "dimensions", "voxel_sizes", "voxel_order"):
            np.testing.assert_array_equal(trk.header[key], ref[key])
        names = load_wholebrain_labels(wholebrain, s)
        assert len(names) == n
        idx = np.asarray(entry["labels"])
        vocab = np.array(wb_truth["bundles"] + ["other"])
        assert list(names) == list(vocab[idx])
        counts = {b: int(np.sum(names == b)) for b in PHANTOM_BUNDLES + ("other",)}
        assert entry["counts"] == counts
        assert all(counts[b] == 100 for b in PHANTOM_BUNDLES)
        assert entry["labels_file"] is None
        # shuffled: labels change between neighbours about as often as at random
        runs = 1 + np.count_nonzero(idx[1:] != idx[:-1])
        assert runs > 0.7 * n


def test_wholebrain_distractor_share(wholebrain, wb_truth, phantom, tmp_path):
    for s in WB_SUBJECTS:
        entry = wb_truth["subjects"][s]
        assert entry["n_bundle_streamlines"] == 600
        assert entry["n_distractors"] == round(0.3 / 0.7 * 600) == 257
        assert entry["counts"]["other"] == 257
        assert entry["n_distractors"] / entry["n_streamlines"] == pytest.approx(
            0.3, abs=1e-3
        )
    half = make_wholebrain(
        phantom, tmp_path / "half", subjects=["sub-02"], distractors=0.5
    )
    assert list(load_wholebrain_labels(half, "sub-02")).count("other") == 600
    none = make_wholebrain(phantom, tmp_path / "none", subjects="sub-02", distractors=0)
    names = load_wholebrain_labels(none, "sub-02")
    assert len(names) == 600 and "other" not in set(names)


def test_wholebrain_bundles_are_the_phantoms(phantom, wholebrain):
    for s in WB_SUBJECTS:
        sl = _streamlines(wholebrain / f"{s}.trk")
        names = load_wholebrain_labels(wholebrain, s)
        for b in PHANTOM_BUNDLES:
            got = sorted(sl[i].tobytes() for i in np.flatnonzero(names == b))
            ref = sorted(x.tobytes() for x in _streamlines(phantom / s / f"{b}.trk"))
            assert got == ref, (s, b)


def test_wholebrain_distractors_look_like_tractography(wholebrain, wb_truth):
    """Distractors: step apart, smooth, 20-150 mm, inside the brain box."""
    lo, hi = (np.asarray(v) for v in wb_truth["distractor_model"]["brain_box_mm"])
    for s in WB_SUBJECTS:
        sl = _streamlines(wholebrain / f"{s}.trk")
        names = load_wholebrain_labels(wholebrain, s)
        others = [sl[i] for i in np.flatnonzero(names == "other")]
        lengths = np.asarray(length(others))
        assert lengths.min() > 17.0 and lengths.max() < 160.0
        assert np.median(lengths) > 35.0 and np.percentile(lengths, 95) > 90.0
        n = np.array([len(x) for x in others])
        assert np.all(np.abs((n - 1) / lengths - 1.0) < 0.15)
        for x in others:
            assert np.all(x >= lo - 2.0) and np.all(x <= hi + 2.0)
            d = np.diff(x, axis=0)
            step = np.linalg.norm(d, axis=1)
            cos = np.sum(d[1:] * d[:-1], axis=1) / (step[1:] * step[:-1])
            assert cos.min() > 0.5  # no zig-zag, no hook
        # not all straight either: they bend like the bundles do
        chord = np.array([np.linalg.norm(x[-1] - x[0]) for x in others])
        assert np.median(chord / lengths) < 0.97


def test_wholebrain_distractors_clear_of_bundle_centroids(wholebrain, wb_truth, truth):
    """The stated rule: under half of a distractor's points within 6 mm."""
    assert wb_truth["distractor_model"]["clearance_mm"] == DISTRACTOR_CLEARANCE_MM
    assert wb_truth["distractor_model"]["max_near_share"] == 0.5
    centroids = {b: np.asarray(v["centroid"]) for b, v in truth["bundles"].items()}
    for s in WB_SUBJECTS:
        sl = _streamlines(wholebrain / f"{s}.trk")
        names = load_wholebrain_labels(wholebrain, s)
        others = [sl[i] for i in np.flatnonzero(names == "other")]
        pts = np.concatenate(others).astype(np.float64)
        row = np.repeat(np.arange(len(others)), [len(x) for x in others])
        n = np.bincount(row)
        for b, c in centroids.items():
            near = _segment_distances(pts, c) < DISTRACTOR_CLEARANCE_MM - 1e-3
            share = np.bincount(row[near], minlength=len(others)) / n
            assert share.max() < 0.5, (s, b, share.max())


def test_wholebrain_deterministic_and_per_subject(phantom, wholebrain, tmp_path):
    again = make_wholebrain(
        phantom, tmp_path / "again", subjects=WB_SUBJECTS, distractors=0.3
    )
    assert _all_bytes(again) == _all_bytes(wholebrain)
    # a subject's file does not depend on which other subjects are written
    alone = make_wholebrain(phantom, tmp_path / "alone", subjects=["sub-03"])
    assert (alone / "sub-03.trk").read_bytes() == (
        wholebrain / "sub-03.trk"
    ).read_bytes()
    other = make_wholebrain(phantom, tmp_path / "other", subjects=["sub-03"], seed=1)
    assert (other / "sub-03.trk").read_bytes() != (alone / "sub-03.trk").read_bytes()


def test_wholebrain_idempotent_and_force(phantom, tmp_path):
    out = make_wholebrain(phantom, tmp_path / "wb", subjects=["sub-04"])
    f = out / "sub-04.trk"
    os.utime(f, ns=(1, 1))
    make_wholebrain(phantom, tmp_path / "wb", subjects=["sub-04"])
    assert f.stat().st_mtime_ns == 1
    make_wholebrain(phantom, tmp_path / "wb", subjects=["sub-04"], force=True)
    assert f.stat().st_mtime_ns != 1
    make_wholebrain(phantom, tmp_path / "wb", subjects=["sub-04"], distractors=0.2)
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["options"]["distractors"] == 0.2
    assert truth["subjects"]["sub-04"]["counts"]["other"] == 150
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_wholebrain_labels_npy(phantom, wholebrain, tmp_path, monkeypatch):
    monkeypatch.setattr(phantom_module, "LABELS_NPY_MIN", 500)
    monkeypatch.setattr(phantom_module, "LABELS_INLINE_MAX", 500)
    out = make_wholebrain(phantom, tmp_path / "npy", subjects=["sub-01"])
    entry = json.loads((out / "ground_truth.json").read_text())["subjects"]["sub-01"]
    assert entry["labels"] is None
    assert entry["labels_file"] == "sub-01.labels.npy"
    assert np.load(out / "sub-01.labels.npy").dtype == np.int16
    np.testing.assert_array_equal(
        load_wholebrain_labels(out, "sub-01"),
        load_wholebrain_labels(wholebrain, "sub-01"),
    )
    (out / "sub-01.labels.npy").unlink()
    with pytest.raises(DatasetError, match="sub-01.labels.npy"):
        load_wholebrain_labels(out, "sub-01")
    with pytest.raises(DatasetError, match="sub-09"):
        load_wholebrain_labels(wholebrain, "sub-09")


def test_wholebrain_bad_inputs(phantom, tmp_path):
    out = tmp_path / "wb"
    for inside in (phantom, phantom / "sub-01", phantom / "wb"):
        with pytest.raises(DatasetError, match="inside the phantom") as e:
            make_wholebrain(phantom, inside)
        assert str(inside) in str(e.value)
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match="not a phantom folder") as e:
        make_wholebrain(missing, out)
    assert str(missing) in str(e.value)
    for value in (1.0, 1.5, -0.1, float("nan"), float("inf"), "lots"):
        with pytest.raises(DatasetError, match="distractors") as e:
            make_wholebrain(phantom, out, distractors=value)
        assert str(out) in str(e.value)
    with pytest.raises(DatasetError, match="seed"):
        make_wholebrain(phantom, out, seed=-1)
    with pytest.raises(DatasetError, match="sub-99") as e:
        make_wholebrain(phantom, out, subjects=["sub-01", "sub-99"])
    assert str(phantom) in str(e.value) and "sub-04" in str(e.value)
    assert not out.exists()
    # a phantom folder with a bundle file missing
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ground_truth.json").write_bytes(
        (phantom / "ground_truth.json").read_bytes()
    )
    with pytest.raises(DatasetError, match="missing") as e:
        make_wholebrain(broken, out, subjects=["sub-02"])
    assert str(broken / "sub-02") in str(e.value)
    # a truncated bundle file
    (broken / "sub-02").mkdir()
    for b in PHANTOM_BUNDLES:
        data = (phantom / "sub-02" / f"{b}.trk").read_bytes()
        (broken / "sub-02" / f"{b}.trk").write_bytes(data[:-8] if b == "CG_L" else data)
    with pytest.raises(DatasetError, match="CG_L.trk"):
        make_wholebrain(broken, out, subjects=["sub-02"])
    assert not [p for p in out.iterdir() if p.suffix in (".trk", ".bin")]
