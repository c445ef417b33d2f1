"""Tests of aae_tract.data: resampling, orientation, datasets, split, cache."""

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from dipy.tracking.streamline import length as dipy_length

from aae_tract.data import (
    Normalizer,
    StreamlineDataset,
    dataset_from_tractograms,
    load_dataset,
    orient_bundle,
    read_participants,
    resample,
    split_dataset,
    streamline_lengths,
)
from aae_tract.errors import AAETractError, DatasetError, UnknownBundleError
from aae_tract.io import load_bundle
from aae_tract.streamlines import nearest_mdf

BUNDLES = ["AF_L", "CC_ForcepsMajor", "CST_R"]
SUBJECTS = [f"sub_{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def minimal(minimal_bundles_dir):
    """DIPY's minimal_bundles, extracted once per session: <root>/sub_i/<BUNDLE>.trk
    (shared: read it, copy it to change it)."""
    return minimal_bundles_dir


@pytest.fixture(scope="module")
def small_ds(minimal):
    return load_dataset(minimal, n_points=32)


@pytest.fixture
def copy_of_minimal(minimal, tmp_path):
    root = tmp_path / "bundles"
    shutil.copytree(minimal, root)
    return root


def _helix(n, turns=1.0, radius=5.0, pitch=20.0):
    t = np.linspace(0, 2 * np.pi * turns, n)
    return np.stack(
        [radius * np.cos(t), radius * np.sin(t), pitch * t / (2 * np.pi)], axis=1
    ).astype(np.float32)


# ------------------------------------------------------------------ resampling


def test_resample_shapes_and_dtype():
    streamlines = [_helix(7), _helix(50), _helix(2)]
    x = resample(streamlines, 16)
    assert x.shape == (3, 16, 3)
    assert x.dtype == np.float32
    for original, resampled in zip(streamlines, x):
        np.testing.assert_allclose(resampled[0], original[0], atol=1e-4)
        np.testing.assert_allclose(resampled[-1], original[-1], atol=1e-4)
    # equal arc-length spacing
    steps = np.linalg.norm(np.diff(x[1], axis=0), axis=1)
    assert steps.std() / steps.mean() < 0.05
    seq = nib.streamlines.ArraySequence(streamlines)
    np.testing.assert_allclose(resample(seq, 16), x)
    np.testing.assert_allclose(resample(x, 16), x)
    assert resample(x, 5).shape == (3, 5, 3)
    assert resample([], 8).shape == (0, 8, 3)
    # a streamline of one point: a clear error, not one from inside DIPY
    for one in ([_helix(7), _helix(1)], nib.streamlines.ArraySequence([_helix(1)])):
        with pytest.raises(DatasetError, match="at least 2 points each.*has 1"):
            resample(one, 8)
    with pytest.raises(DatasetError, match="n_points"):
        resample(streamlines, 1)


def test_streamline_lengths():
    line = np.zeros((11, 3), dtype=np.float32)
    line[:, 2] = np.arange(11) * 3.0
    corner = np.float32([[0, 0, 0], [3, 0, 0], [3, 4, 0]])
    lengths = streamline_lengths([line, corner])
    assert lengths.dtype == np.float32
    np.testing.assert_allclose(lengths, [30.0, 7.0], rtol=1e-6)
    np.testing.assert_allclose(
        streamline_lengths(resample([line], 20)), [30.0], rtol=1e-5
    )
    assert streamline_lengths([]).shape == (0,)


def test_nearest_mdf_to_the_other_streamlines_of_a_set():
    # straight lines 0, 1 and 3 mm apart along x: nearest others 1, 1 and 2 mm
    line = np.zeros((8, 3), dtype=np.float32)
    line[:, 2] = np.arange(8)
    x = np.stack([line + [offset, 0, 0] for offset in (0.0, 1.0, 3.0)])
    distance, index = nearest_mdf(x, x, chunk=2, exclude_self=True)
    np.testing.assert_allclose(distance, [1.0, 1.0, 2.0], atol=1e-5)
    np.testing.assert_array_equal(index, [1, 0, 1])
    distance, index = nearest_mdf(x, x)
    np.testing.assert_allclose(distance, 0.0, atol=1e-6)
    np.testing.assert_array_equal(index, [0, 1, 2])
    assert nearest_mdf(x[:1], x[:1], exclude_self=True)[0][0] == np.inf
    with pytest.raises(AAETractError, match="exclude_self"):
        nearest_mdf(x, x[:2], exclude_self=True)


def test_dataset_lengths_are_measured_before_resampling(minimal):
    ds = load_dataset(minimal / "sub_1" / "AF_L.trk", n_points=4)
    original = load_bundle(minimal / "sub_1" / "AF_L.trk").streamlines
    expected = np.asarray(dipy_length(original), dtype=np.float32)
    np.testing.assert_allclose(ds.lengths, expected, rtol=1e-5)
    np.testing.assert_allclose(ds.attribute, expected, rtol=1e-5)
    # 4 points cut the corners: measured on x they would be shorter
    assert (streamline_lengths(ds.x) < ds.lengths - 1e-3).mean() > 0.9


# ----------------------------------------------------------------- orientation


def test_orient_bundle_flips_against_reference():
    rng = np.random.default_rng(0)
    base = resample([_helix(40)], 24)[0]
    x = base + rng.normal(0, 0.3, size=(20, 24, 3)).astype(np.float32)
    flip = rng.random(20) < 0.5
    mixed = x.copy()
    mixed[flip] = mixed[flip][:, ::-1]
    out = orient_bundle(mixed, base)
    np.testing.assert_allclose(out, x)
    assert not np.allclose(mixed, x)  # input untouched
    reversed_ref = orient_bundle(mixed, base[::-1])
    np.testing.assert_allclose(reversed_ref, x[:, ::-1])
    # a reference with another number of points is resampled
    np.testing.assert_allclose(orient_bundle(mixed, resample([base], 7)[0]), x)
    orient_bundle(mixed, base, in_place=True)
    np.testing.assert_allclose(mixed, x)


def test_flipped_copies_become_consistent(minimal):
    sfts = [load_bundle(minimal / s / "CST_R.trk") for s in SUBJECTS[:3]]
    reference = dataset_from_tractograms(
        sfts, ["CST_R"] * 3, subjects=SUBJECTS[:3], n_points=32
    )
    rng = np.random.default_rng(1)
    flipped_sets = []
    for sft in sfts:
        flips = rng.random(len(sft)) < 0.5
        flipped_sets.append(
            [s[::-1] if f else s for s, f in zip(sft.streamlines, flips)]
        )
    flipped = dataset_from_tractograms(
        flipped_sets, ["CST_R"] * 3, subjects=SUBJECTS[:3], n_points=32
    )
    np.testing.assert_allclose(flipped.x, reference.x, atol=1e-4)
    # all streamlines run the same way as the reference: start near its start
    ref = reference.orient_refs["CST_R"]
    start = np.linalg.norm(reference.x[:, 0] - ref[0], axis=1)
    end = np.linalg.norm(reference.x[:, -1] - ref[0], axis=1)
    assert (start < end).all()


def test_orient_refs_are_reused(small_ds, minimal):
    refs = small_ds.orient_refs
    assert sorted(refs) == BUNDLES
    assert all(r.shape == (32, 3) and r.dtype == np.float32 for r in refs.values())
    sft = load_bundle(minimal / "sub_4" / "AF_L.trk")
    reversed_streamlines = [s[::-1] for s in sft.streamlines]
    again = dataset_from_tractograms(
        [reversed_streamlines], ["AF_L"], n_points=32, orient_refs=refs
    )
    np.testing.assert_allclose(again.orient_refs["AF_L"], refs["AF_L"])
    np.testing.assert_allclose(
        again.x,
        small_ds.x[small_ds.subjects == "sub_4"][
            small_ds.labels[small_ds.subjects == "sub_4"] == 0
        ],
        atol=1e-4,
    )


# -------------------------------------------------------------------- dataset


def test_load_dataset_fields(small_ds):
    ds = small_ds
    assert isinstance(ds, StreamlineDataset)
    assert len(ds) == 750
    assert ds.x.shape == (750, 32, 3) and ds.x.dtype == np.float32
    assert ds.labels.dtype == np.int32
    assert ds.attribute.dtype == np.float32 and ds.lengths.dtype == np.float32
    assert ds.bundle_names == BUNDLES
    assert ds.attribute_name == "length"
    assert ds.n_points == 32
    assert sorted(np.unique(ds.subjects)) == SUBJECTS
    assert np.bincount(ds.labels).tolist() == [250, 250, 250]
    assert json.loads(json.dumps(ds.space)) == ds.space
    assert (ds.lengths > 20).all() and (ds.lengths < 300).all()
    mask = ds.bundle_mask("CST_R")
    assert mask.sum() == 250 and (ds.labels[mask] == 2).all()
    with pytest.raises(UnknownBundleError, match="XYZ"):
        ds.bundle_mask("XYZ")


def test_subset(small_ds):
    view = small_ds.subset(np.arange(10, 20))
    assert len(view) == 10
    assert np.shares_memory(view.x, small_ds.x)
    picked = small_ds.subset([5, 1, 700])
    np.testing.assert_array_equal(picked.x[2], small_ds.x[700])
    assert picked.subjects[2] == small_ds.subjects[700]
    masked = small_ds.subset(small_ds.labels == 1)
    assert len(masked) == 250 and (masked.labels == 1).all()
    assert masked.bundle_names == small_ds.bundle_names
    with pytest.raises(DatasetError):
        small_ds.subset([10_000])


def test_dataset_from_tractograms(minimal):
    sfts = [load_bundle(minimal / "sub_1" / f"{b}.trk") for b in ("CST_R", "AF_L")]
    ds = dataset_from_tractograms(sfts, ["CST_R", "AF_L"], n_points=20)
    assert ds.bundle_names == ["AF_L", "CST_R"]
    assert ds.labels[:50].tolist() == [1] * 50 and ds.labels[50:].tolist() == [0] * 50
    assert ds.space["voxel_order"] == "RAS"
    assert (ds.subjects == "subject").all()
    assert len(sfts[0]) == 50  # inputs untouched
    # plain arrays with an attribute per tractogram, bad streamlines dropped
    bad = _helix(5)
    bad[2] = np.nan
    arrays = [[_helix(30), _helix(12), bad], [_helix(40, turns=2), _helix(1)]]
    ds = dataset_from_tractograms(
        arrays,
        ["A", "B"],
        subjects=["s1", "s2"],
        n_points=10,
        attribute="age",
        attribute_values={"s1": 30.0, "s2": 50.0},
    )
    assert len(ds) == 3
    assert ds.attribute.tolist() == [30.0, 30.0, 50.0]
    assert ds.subjects.tolist() == ["s1", "s1", "s2"]
    assert ds.space["dimensions"][2] >= 20  # made to hold the streamlines
    per_streamline = dataset_from_tractograms(
        [[_helix(30), _helix(12)]], ["A"], attribute="x", attribute_values=[[1, 2]]
    )
    assert per_streamline.attribute.tolist() == [1.0, 2.0]
    with pytest.raises(DatasetError, match="labels"):
        dataset_from_tractograms(arrays, ["A"])
    with pytest.raises(DatasetError, match="attribute_values"):
        dataset_from_tractograms(arrays, ["A", "B"], attribute="age")
    with pytest.raises(DatasetError, match="s2"):
        dataset_from_tractograms(
            arrays,
            ["A", "B"],
            subjects=["s1", "s2"],
            attribute="age",
            attribute_values={"s1": 3},
        )
    with pytest.raises(DatasetError, match="3 attribute values for 2"):
        dataset_from_tractograms(
            [[_helix(30), _helix(12)]],
            ["A"],
            attribute="x",
            attribute_values=[[1, 2, 3]],
        )


def test_load_dataset_default(monkeypatch):
    pytest.importorskip("aae_tract.data_fetchers")
    from aae_tract import data_fetchers

    if not hasattr(data_fetchers, "fetch_minimal_bundles"):
        pytest.skip("fetch_minimal_bundles not available")
    ds = load_dataset(None, n_points=16)
    assert len(ds) == 750
    assert ds.bundle_names == BUNDLES


# --------------------------------------------------------------- participants


def test_participants_attribute(copy_of_minimal):
    table = copy_of_minimal / "participants.tsv"
    table.write_text(
        "participant_id\tage\tsex\n"
        + "".join(f"sub-{i:02d}\t{20 + 5 * i}\tF\n" for i in range(1, 6))
    )
    ds = load_dataset(copy_of_minimal, n_points=8, attribute="age")
    assert ds.attribute_name == "age"
    for i, subject in enumerate(SUBJECTS, start=1):
        assert (ds.attribute[ds.subjects == subject] == 20 + 5 * i).all()
    # lengths are still measured
    assert (ds.lengths > 20).all()
    # an explicit table elsewhere
    other = copy_of_minimal.parent / "people.csv"
    other.write_text(
        "participant_id,age\n" + "".join(f"sub_{i},{i}\n" for i in range(1, 6))
    )
    ds = load_dataset(copy_of_minimal, n_points=8, attribute="age", participants=other)
    assert ds.attribute[ds.subjects == "sub_3"][0] == 3.0


def test_participants_errors(copy_of_minimal):
    with pytest.raises(DatasetError, match="participants.tsv"):
        load_dataset(copy_of_minimal, n_points=8, attribute="age")
    table = copy_of_minimal / "participants.tsv"
    table.write_text("participant_id\tage\nsub-01\t30\nsub-02\t40\n")
    with pytest.raises(DatasetError, match="no column 'weight'") as info:
        load_dataset(copy_of_minimal, n_points=8, attribute="weight")
    assert "participants.tsv" in str(info.value)
    with pytest.raises(DatasetError, match="sub_3, sub_4, sub_5"):
        load_dataset(copy_of_minimal, n_points=8, attribute="age")
    table.write_text("participant_id\tage\nsub-01\tn/a\n")
    with pytest.raises(DatasetError, match="not a number"):
        read_participants(table, "age")
    table.write_text("subject\tage\n1\t3\n")
    with pytest.raises(DatasetError, match="participant_id"):
        read_participants(table, "age")


# ---------------------------------------------------------------------- split


def test_split_by_subject(small_ds):
    train, val = split_dataset(small_ds, val_fraction=0.2, seed=3)
    assert len(train) + len(val) == len(small_ds)
    assert not set(train.subjects) & set(val.subjects)
    assert len(set(val.subjects)) == 1
    again_train, again_val = split_dataset(small_ds, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(val.subjects, again_val.subjects)
    np.testing.assert_array_equal(val.x, again_val.x)
    chosen = {
        tuple(sorted(set(split_dataset(small_ds, seed=s)[1].subjects)))
        for s in range(10)
    }
    assert len(chosen) > 1  # the seed matters
    train, val = split_dataset(small_ds, val_fraction=0.5, seed=0)
    assert len(set(val.subjects)) in (2, 3)
    assert not set(train.subjects) & set(val.subjects)


def test_split_by_streamline_with_one_subject(minimal):
    ds = load_dataset(minimal / "sub_2", n_points=8)
    train, val = split_dataset(ds, val_fraction=0.2, seed=0)
    assert (len(train), len(val)) == (120, 30)
    x_train = {row.tobytes() for row in train.x}
    assert not any(row.tobytes() in x_train for row in val.x)
    _, val2 = split_dataset(ds, val_fraction=0.2, seed=0)
    np.testing.assert_array_equal(val.x, val2.x)
    _, val3 = split_dataset(ds, val_fraction=0.2, seed=1)
    assert not np.array_equal(val.x, val3.x)
    with pytest.raises(DatasetError, match="val_fraction"):
        split_dataset(ds, val_fraction=1.0)


# ---------------------------------------------------------------- normalizer


def test_normalizer_round_trip(small_ds):
    norm = Normalizer().fit(small_ds.x)
    z = norm.transform(small_ds.x)
    assert z.dtype == np.float32 and z.shape == small_ds.x.shape
    np.testing.assert_allclose(z.reshape(-1, 3).mean(axis=0), 0, atol=1e-4)
    assert abs(float(z.std()) - 1.0) < 1e-3
    np.testing.assert_allclose(norm.inverse(z), small_ds.x, atol=1e-3)
    data = json.loads(json.dumps(norm.to_dict()))
    assert set(data) == {"mean", "scale"} and isinstance(data["scale"], float)
    again = Normalizer.from_dict(data)
    np.testing.assert_allclose(again.transform(small_ds.x[:5]), z[:5], atol=1e-6)
    # in float32: within one rounding of the float64 result, input untouched
    x = np.array(small_ds.x, copy=True)
    fast = norm.transform(x, precise=False)
    assert fast.dtype == np.float32 and fast.shape == z.shape
    np.testing.assert_array_equal(x, small_ds.x)
    np.testing.assert_allclose(fast, z, rtol=1e-6, atol=1e-6)
    with pytest.raises(AAETractError, match="fit"):
        Normalizer().transform(small_ds.x)
    with pytest.raises(DatasetError):
        Normalizer.from_dict({"mean": [0, 0]})
    with pytest.raises(DatasetError):
        Normalizer.from_dict({"mean": [0, 0, 0], "scale": 0})


# ---------------------------------------------------------------------- cache


def test_cache_second_load_equal_and_memmapped(copy_of_minimal, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_dataset(copy_of_minimal, n_points=16, cache_dir=cache_dir)
    entries = [p for p in cache_dir.iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")
    second = load_dataset(copy_of_minimal, n_points=16, cache_dir=cache_dir)
    assert isinstance(second.x, np.memmap)
    assert not second.x.flags.writeable
    for name in ("x", "labels", "attribute", "lengths", "subjects"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.bundle_names == first.bundle_names
    assert second.space == first.space
    for name, ref in first.orient_refs.items():
        np.testing.assert_array_equal(second.orient_refs[name], ref)
    plain = load_dataset(copy_of_minimal, n_points=16)
    np.testing.assert_array_equal(plain.x, second.x)
    # the cached arrays hold no pickled objects
    for npy in entries[0].glob("*.npy"):
        np.load(npy, allow_pickle=False)
    # other options make another entry
    load_dataset(copy_of_minimal, n_points=8, cache_dir=cache_dir)
    assert len(list(cache_dir.iterdir())) == 2


def test_cache_invalidated_when_a_file_changes(copy_of_minimal, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_dataset(copy_of_minimal, n_points=16, cache_dir=cache_dir)
    target = copy_of_minimal / "sub_2" / "CST_R.trk"
    sft = load_bundle(target)
    tractogram = nib.streamlines.Tractogram(
        list(sft.streamlines)[:20], affine_to_rasmm=np.eye(4)
    )
    nib.streamlines.save(tractogram, str(target))
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = load_dataset(copy_of_minimal, n_points=16, cache_dir=cache_dir)
    assert len(first) == 750 and len(second) == 720
    assert len(list(cache_dir.iterdir())) == 2


def test_failed_load_leaves_no_cache(copy_of_minimal, tmp_path):
    cache_dir = tmp_path / "cache"
    (copy_of_minimal / "sub_3" / "AF_L.trk").write_bytes(b"broken")
    with pytest.raises(AAETractError, match="AF_L.trk"):
        load_dataset(copy_of_minimal, n_points=16, cache_dir=cache_dir)
    assert list(cache_dir.iterdir()) == []
