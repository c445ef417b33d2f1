"""Splits of a memory-mapped dataset read row by row (aae_tract.rows)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from aae_tract.data import Normalizer, load_dataset, split_dataset
from aae_tract.model import TractAAE
from aae_tract.model.training import StreamlineBatches
from aae_tract.registration import register_split, transform_dataset
from aae_tract.rows import StreamlineRows, apply_affine, release_pages, take

N_POINTS = 16


@pytest.fixture(scope="module")
def cached(minimal_bundles_dir, tmp_path_factory):
    """(memory-mapped dataset, the same dataset in memory)."""
    cache = tmp_path_factory.mktemp("rows_cache")
    load_dataset(minimal_bundles_dir, n_points=N_POINTS, cache_dir=cache)
    mapped = load_dataset(minimal_bundles_dir, n_points=N_POINTS, cache_dir=cache)
    assert isinstance(mapped.x, np.memmap)
    return mapped, dataclasses.replace(mapped, x=np.array(mapped.x))


@pytest.fixture
def rows_and_array(tmp_path):
    """A memmap of 500 random streamlines, rows of it in a shuffled order with
    repeats, and the same rows as an array."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(500, 8, 3)).astype(np.float32))
    base = np.load(tmp_path / "x.npy", mmap_mode="r")
    index = np.concatenate([rng.permutation(500)[:300], [7, 7, 499, 0]])
    return StreamlineRows(base, index), np.array(base)[index]


KEYS = [
    3,
    -1,
    np.int64(303),
    slice(None),
    slice(10, 200, 7),
    slice(None, None, -3),
    [5, 1, 1, 300, -2],
    np.arange(304) % 3 == 0,
    (slice(2, 50), 0),
    ([4, 2], slice(None), 1),
    (Ellipsis, 2),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_rows_index_like_the_array(rows_and_array, key):
    rows, array = rows_and_array
    got = rows[key]
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, array[key])


def test_rows_behave_as_an_array(rows_and_array):
    rows, array = rows_and_array
    assert len(rows) == 304 and rows.shape == array.shape and rows.ndim == 3
    assert rows.nbytes == array.nbytes
    np.testing.assert_array_equal(np.asarray(rows), array)
    np.testing.assert_array_equal(np.stack(list(rows)), array)
    for bad in (304, -305, [0, 304]):
        with pytest.raises(IndexError):
            rows[bad]
    with pytest.raises(IndexError):
        rows[np.ones(3, dtype=bool)]


def test_rows_subset_moved_and_flipped(rows_and_array):
    rows, array = rows_and_array
    pick = np.array([9, 3, 3, 250])
    np.testing.assert_array_equal(np.asarray(rows.subset(pick)), array[pick])
    np.testing.assert_array_equal(rows.subset(slice(5, 9))[1], array[6])
    shift, turn = np.eye(4), np.eye(4)
    shift[:3, 3] = [10.0, -2.0, 3.0]
    turn[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]
    which = np.arange(len(rows)) % 3 - 1  # -1: not moved, 0: shift, 1: turn
    moved = rows.moved([shift, turn], which)
    expected = array.copy()
    for k, matrix in enumerate((shift, turn)):
        expected[which == k] = apply_affine(array[which == k], matrix)
    np.testing.assert_array_equal(np.asarray(moved), expected)
    twice = moved.moved([turn], np.zeros(len(rows), dtype=int))
    np.testing.assert_allclose(
        np.asarray(twice), apply_affine(expected, turn), atol=1e-4
    )
    mask = np.arange(len(rows)) % 2 == 0
    flipped = moved.flipped(mask)
    expected[mask] = expected[mask, ::-1]
    np.testing.assert_array_equal(np.asarray(flipped), expected)
    np.testing.assert_array_equal(
        np.asarray(flipped.flipped(mask).subset(pick)), np.asarray(moved)[pick]
    )


def _mapped_rss_kib(path):
    """Resident KiB of the mappings of ``path`` in this process (Linux)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only")
def test_reading_rows_does_not_keep_the_map_resident(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.ones((8192, 256, 3), dtype=np.float32))  # 24 MiB
    order = np.random.default_rng(0).permutation(8192)
    base = np.load(path, mmap_mode="r")
    for start in range(0, 8192, 64):  # what a memmap alone keeps
        base[np.sort(order[start : start + 64])].sum()
    plain = _mapped_rss_kib(path.resolve())
    assert release_pages(base) and _mapped_rss_kib(path.resolve()) < plain
    rows = StreamlineRows(base)
    for start in range(0, 8192, 64):
        rows[np.sort(order[start : start + 64])].sum()
    assert plain > 8 * 1024  # the measure sees the pages a memmap keeps
    assert _mapped_rss_kib(path.resolve()) < 1024
    assert not release_pages(np.ones(3))


def _backed_by(x, mapped):
    """Whether ``x`` reads the memmap ``mapped`` (rows of it, or a view)."""
    if isinstance(x, StreamlineRows):
        return x.base is mapped
    return isinstance(x, np.memmap) and np.shares_memory(x, mapped)


def test_split_of_memmapped_dataset_is_not_a_copy(cached):
    mapped, memory = cached
    train, val = split_dataset(mapped, val_fraction=0.2, seed=0)
    train_mem, val_mem = split_dataset(memory, val_fraction=0.2, seed=0)
    assert isinstance(train.x, StreamlineRows)  # 4 subjects out of 5
    for part, copy in ((train, train_mem), (val, val_mem)):
        assert _backed_by(part.x, mapped.x)
        np.testing.assert_array_equal(np.asarray(part.x), copy.x)
        np.testing.assert_array_equal(part.labels, copy.labels)
        np.testing.assert_array_equal(part.subjects, copy.subjects)
    again = train.subset(train.labels == 1).subset([3, 0])
    assert isinstance(again.x, StreamlineRows) and again.x.base is mapped.x
    np.testing.assert_array_equal(
        np.asarray(again.x), train_mem.x[train_mem.labels == 1][[3, 0]]
    )
    assert isinstance(mapped.subset(np.arange(5, 50)).x, np.memmap)


def test_batches_gather_the_rows_of_a_copy(cached):
    mapped, memory = cached
    train = split_dataset(mapped, seed=0)[0]
    train_mem = split_dataset(memory, seed=0)[0]
    norm = Normalizer().fit(train_mem.x)

    def batches(ds):
        return StreamlineBatches(
            ds.x, ds.labels, ds.attribute, norm, 3, batch_size=50, seed=4
        )

    lazy, copy = batches(train), batches(train_mem)
    assert isinstance(lazy.x, StreamlineRows) and len(lazy) == len(copy)
    for epoch in (0, 1):
        lazy.set_epoch(epoch)
        copy.set_epoch(epoch)
        for i in range(len(lazy)):
            for a, b in zip(lazy[i], copy[i]):
                np.testing.assert_array_equal(a, b)


def test_normalizer_by_chunks_equals_the_whole(cached):
    mapped, memory = cached
    train = split_dataset(mapped, seed=0)[0]
    whole = np.asarray(split_dataset(memory, seed=0)[0].x, dtype=np.float64)
    mean = whole.reshape(-1, 3).mean(axis=0)
    scale = np.sqrt(((whole - mean) ** 2).mean())
    for x in (train.x, mapped.x):
        norm = Normalizer().fit(x)
        expected = memory.x if x is mapped.x else whole
        np.testing.assert_allclose(
            norm.mean, np.asarray(expected, np.float64).reshape(-1, 3).mean(0)
        )
    norm = Normalizer().fit(train.x)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(norm.scale, scale, rtol=1e-10)


def test_registering_a_memmapped_split_moves_rows_as_read(cached):
    mapped, memory = cached
    lazy = register_split(*split_dataset(mapped, seed=0))
    copy = register_split(*split_dataset(memory, seed=0))
    for part in lazy:
        assert isinstance(part.x, StreamlineRows) and _backed_by(part.x.base, mapped.x)
    assert lazy[0].x.affines is not None and lazy[1].x.affines is not None
    for part, expected in zip(lazy, copy):
        np.testing.assert_allclose(np.asarray(part.x), expected.x, atol=1e-5)
        np.testing.assert_array_equal(part.lengths, expected.lengths)
    registration = lazy[0].registration
    for subject, matrix in copy[0].registration.transforms.items():
        np.testing.assert_allclose(registration.transforms[subject], matrix)
    for bundle, ref in copy[0].orient_refs.items():
        np.testing.assert_allclose(lazy[0].orient_refs[bundle], ref, atol=1e-5)


def test_affine_transform_of_memmapped_rows_rescales_and_orients(cached):
    mapped, memory = cached
    matrices = {}
    for k, subject in enumerate(np.unique(memory.subjects)):
        matrices[subject] = np.diag([1.0 + 0.1 * k, 1.0, 0.9, 1.0])
        matrices[subject][:3, 3] = [k, -k, 2.0]
    moved = []
    for ds in (mapped, memory):
        train = split_dataset(ds, seed=0)[0]
        # references run the other way: most streamlines are reversed
        train.orient_refs = {b: r[::-1] for b, r in train.orient_refs.items()}
        moved.append(transform_dataset(train, matrices, affine=True))
    lazy, copy = moved
    assert isinstance(lazy.x, StreamlineRows) and lazy.x.base is mapped.x
    assert lazy.x.flip.mean() > 0.5
    np.testing.assert_array_equal(np.asarray(lazy.x), copy.x)
    np.testing.assert_array_equal(lazy.lengths, copy.lengths)
    np.testing.assert_array_equal(lazy.attribute, copy.attribute)
    assert not np.allclose(lazy.lengths, split_dataset(memory, seed=0)[0].lengths)


def test_bundle_sample_keeps_at_most_so_many_per_bundle(cached):
    from aae_tract.model.tract_aae import _bundle_sample

    mapped, memory = cached
    labels, x, attribute, subjects = _bundle_sample(memory, 10_000, seed=0)
    assert x is memory.x and len(labels) == len(memory) == len(subjects)
    labels, x, attribute, subjects = _bundle_sample(mapped, 40, seed=0)
    assert np.bincount(labels).tolist() == [40, 40, 40]
    assert isinstance(x, StreamlineRows) and len(x) == 120
    again = _bundle_sample(mapped, 40, seed=0)
    np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(x))
    rows = x.index
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(attribute, memory.attribute[rows])
    np.testing.assert_array_equal(subjects, memory.subjects[rows])
    np.testing.assert_array_equal(np.asarray(x), memory.x[rows])
    np.testing.assert_array_equal(np.asarray(take(memory.x, rows)), memory.x[rows])


def test_training_on_a_memmapped_split_equals_training_in_memory(cached):
    mapped, memory = cached
    runs = []
    for ds in (mapped, memory):
        train, val = split_dataset(ds, seed=0)
        model = TractAAE.from_dataset(train, **{**TINY, "n_points": N_POINTS})
        history = model.fit(train, val, epochs=1, verbose=0)
        runs.append((model, history))
    (lazy, lazy_history), (copy, copy_history) = runs
    np.testing.assert_allclose(
        lazy.metadata.normalizer["mean"], copy.metadata.normalizer["mean"]
    )
    assert lazy.metadata.normalizer["scale"] == pytest.approx(
        copy.metadata.normalizer["scale"]
    )
    for key, values in copy_history.items():
        np.testing.assert_allclose(lazy_history[key], values, rtol=1e-4, err_msg=key)
    for bundle, cal in copy.metadata.calibration.items():
        np.testing.assert_allclose(lazy.metadata.calibration[bundle]["y"], cal["y"])
    assert (
        lazy.metadata.training["prior_match"] == copy.metadata.training["prior_match"]
    )


def test_per_bundle_rows_caps_each_bundle_with_a_seed():
    from aae_tract.rows import per_bundle_rows

    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    assert per_bundle_rows(labels, 10, seed=0) is None
    keep = per_bundle_rows(labels, 4, seed=0)
    assert np.all(np.diff(keep) > 0)
    assert np.bincount(labels[keep]).tolist() == [4, 3, 4]
    np.testing.assert_array_equal(keep, per_bundle_rows(labels, 4, seed=0))
    assert not np.array_equal(keep, per_bundle_rows(labels, 4, seed=1))
