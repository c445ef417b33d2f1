"""Bundle recognition: the stored labeller, label_streamlines, aae_tract_label."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli, tamper

from aae_tract.errors import AAETractError, ModelFileError


def _payload(means, covs, priors, max_d2=10.0, max_recon=5.0):
    return {
        "bundles": {
            name: {
                "mean": list(map(float, m)),
                "cov": np.asarray(c, float).tolist(),
                "prior": p,
                "max_d2": max_d2,
                "max_recon_mm": max_recon,
            }
            for name, m, c, p in zip(("A", "B"), means, covs, priors)
        }
    }


def test_labeller_distances_and_posteriors_on_known_gaussians():
    from aae_tract.label import Labeller

    lab = Labeller(
        _payload([[0.0, 0.0], [10.0, 0.0]], [np.diag([4.0, 1.0])] * 2, [1, 1]),
        ["A", "B"],
    )
    z = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    np.testing.assert_allclose(lab.d2(z, 0), [0.0, 1.0, 1.0, 6.25])
    post, d2 = lab.posteriors([z, z])
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    assert post[0, 0] > 0.99 and post[1, 0] > 0.99
    # halfway between equal Gaussians with equal priors: a coin toss
    np.testing.assert_allclose(post[3], [0.5, 0.5])
    # a prior 3:1 tips it to 0.75
    skewed = Labeller(
        _payload([[0.0, 0.0], [10.0, 0.0]], [np.diag([4.0, 1.0])] * 2, [3, 1]),
        ["A", "B"],
    )
    np.testing.assert_allclose(skewed.posteriors([z, z])[0][3], [0.75, 0.25])


@pytest.fixture(scope="module")
def labelled(tiny_trained, tiny_splits):
    model, _ = tiny_trained
    _, validation = tiny_splits
    return model, validation


def test_fit_stores_a_labeller_with_thresholds_from_validation_subjects(labelled):
    model, _ = labelled
    lab = model.metadata.labeller
    assert set(lab["bundles"]) == set(model.bundle_names)
    for entry in lab["bundles"].values():
        assert np.shape(entry["cov"]) == (model.latent_dims, model.latent_dims)
        assert entry["max_d2"] > 0 and entry["max_recon_mm"] > 0
        assert entry["thresholds_from"] == "validation"


def test_held_out_subject_streamlines_get_their_bundle(labelled):
    from aae_tract.label import label_streamlines

    model, validation = labelled
    truth = np.asarray(model.bundle_names)[validation.labels]
    # unoriented, as a tractogram gives them: reverse every other streamline
    x = np.array(validation.x, copy=True)
    x[::2] = x[::2, ::-1]
    labels, confidence = label_streamlines(model, x)
    assert labels.shape == confidence.shape == (len(x),)
    assert np.mean(labels == truth) >= 0.9
    assert np.all((confidence >= 0) & (confidence <= 1))


def test_streamlines_far_from_every_bundle_are_other(labelled):
    from aae_tract.label import OTHER, label_streamlines

    model, validation = labelled
    x = np.asarray(validation.x[:40])
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, x.shape[1])[None, :, None]
    start = rng.uniform(-60, 60, (40, 1, 3))
    direction = rng.normal(size=(40, 1, 3))
    direction *= 80 / np.linalg.norm(direction, axis=-1, keepdims=True)
    lines = (start + t * direction).astype("float32")
    moved = x + np.array([0.0, 0.0, 150.0], dtype="float32")
    mixed = np.concatenate([lines, moved])
    labels, _ = label_streamlines(model, mixed)
    # decoding every streamline inside the latent threshold rejects the
    # most; the default (decoding from half of it) rejects a subset of those,
    # and the latent distance alone a subset of the default's
    strict, _ = label_streamlines(model, mixed, decode_from=0.0)
    latent, _ = label_streamlines(model, mixed, reject="latent")
    for rule in (labels, strict, latent):  # moved out of every bundle's reach
        assert np.all(rule[40:] == OTHER)
    assert np.mean(strict == OTHER) >= 0.9
    assert np.all((strict == OTHER) | (labels != OTHER))
    assert np.all((labels == OTHER) | (latent != OTHER))
    # a 3-epoch model: the default lets in more of the random lines than
    # decoding from 0 (TensorFlow 4 of 40 against 2, JAX 10 against 5)
    assert np.mean(labels == OTHER) >= 0.85


def test_labelling_reads_any_iterable_in_blocks(labelled):
    from aae_tract.label import label_streamlines

    model, validation = labelled
    lines = [np.asarray(s) for s in validation.x[:50]]
    whole, conf = label_streamlines(model, lines)
    streamed, conf2 = label_streamlines(model, iter(lines), block=7)
    np.testing.assert_array_equal(whole, streamed)
    np.testing.assert_allclose(conf, conf2, rtol=1e-5, atol=1e-6)
    # an ArraySequence (a tractogram's streamlines) goes to resampling whole
    sequence = nib.streamlines.ArraySequence(lines)
    sliced, conf3 = label_streamlines(model, sequence, block=7)
    np.testing.assert_array_equal(whole, sliced)
    np.testing.assert_allclose(conf, conf3, rtol=1e-5, atol=1e-6)


def test_small_parts_are_labelled_in_whole_blocks(labelled, monkeypatch):
    """A file read in chunks smaller than a block is labelled a whole block
    at a time (full forward passes), with the labels of one pass."""
    from aae_tract import label

    model, validation = labelled
    lines = [np.asarray(s) for s in validation.x[:50]]
    whole, conf = label.label_streamlines(model, lines)

    class Parts:  # blocks of 3 streamlines, as a TractogramStream gives them
        def blocks(self):
            for start in range(0, len(lines), 3):
                yield nib.streamlines.ArraySequence(lines[start : start + 3])

    sizes = []
    real = label._label_block

    def counting(model, x, **kwargs):
        sizes.append(len(x))
        return real(model, x, **kwargs)

    monkeypatch.setattr(label, "_label_block", counting)
    got, conf2 = label.label_streamlines(model, Parts(), block=8)
    assert sizes == [8] * 6 + [2]
    np.testing.assert_array_equal(whole, got)
    np.testing.assert_allclose(conf, conf2, rtol=1e-5, atol=1e-6)


def test_reconstruction_tests_of_several_blocks_are_decoded_together(
    labelled, monkeypatch
):
    """Blocks hold few streamlines to decode: label_streamlines keeps their
    reconstruction tests until they fill a batch of the decoder, with the
    labels and confidences each block gets alone (a block's rejections land
    in that block)."""
    import aae_tract.label as label_module

    model, validation = labelled
    x = np.array(validation.x[:60], copy=True)
    x[::2] = x[::2, ::-1]  # as a tractogram gives them
    lab = label_module._labeller_of(model)
    # reconstruction thresholds that reject about half of what is decoded
    _, _, test = label_module._label_block(model, x, labeller=lab, decode_from=0)
    recon = label_module._recon_distance(model, test.x, test.z, test.labels)
    lab.max_recon = np.full_like(lab.max_recon, np.median(recon))
    monkeypatch.setattr(label_module, "_labeller_of", lambda model: lab)
    names = np.asarray(model.bundle_names + ["other"])
    alone, alone_conf = [], []
    # each block alone, resampled as label_streamlines resamples it
    for block in label_module._blocks(list(x), model.n_points, 8):
        idx, conf = label_module.label_prepared(model, block, decode_from=0)
        alone.append(names[idx])
        alone_conf.append(conf)
    alone, alone_conf = np.concatenate(alone), np.concatenate(alone_conf)
    assert 0.25 < np.mean(alone == "other") < 0.75
    decoded = _record_decoding(monkeypatch)
    labels, conf = label_module.label_streamlines(
        model, list(x), block=8, batch_size=16, decode_from=0
    )
    np.testing.assert_array_equal(labels, alone)
    np.testing.assert_allclose(conf, alone_conf, rtol=1e-4, atol=1e-6)
    # each pass holds the tests of blocks until they reach 16 streamlines
    assert sum(decoded) == len(test.rows)
    assert len(decoded) < -(-len(x) // 8)
    assert all(n >= 16 for n in decoded[:-1])


def test_blocks_are_read_ahead_in_order_and_their_errors_reach_the_caller():
    """The next block is read in a background thread while one is labelled:
    the same blocks in the same order, at most one held ahead, an error of
    the reader raised in the caller, and a caller that stops early stops
    the reader."""
    import threading
    import time

    from aae_tract.label import _prefetched

    pulled = []

    def source(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise AAETractError(f"corrupt block {i}")
            pulled.append(i)
            yield i

    assert list(_prefetched(source(7))) == list(range(7))
    assert list(_prefetched(source(0))) == []
    pulled.clear()
    got = []
    with pytest.raises(AAETractError, match="corrupt block 3"):
        for item in _prefetched(source(6, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]
    # two blocks ahead at most: while the caller holds block 0, the reader
    # has queued block 1 and read block 2, which waits to be queued
    pulled.clear()
    ahead = _prefetched(source(100))
    assert next(ahead) == 0
    deadline = time.monotonic() + 10
    while len(pulled) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time to pull more, were it allowed to
    assert pulled == [0, 1, 2]
    ahead.close()  # the caller stops: the reader thread ends
    assert not any(t.name == "aae_tract-label-reader" for t in threading.enumerate())
    assert pulled == [0, 1, 2]
    # ... also when the source ends, or fails, while the caller has stopped
    for fail_at in (None, 2):
        ahead = _prefetched(source(2 if fail_at is None else 3, fail_at=fail_at))
        assert next(ahead) == 0
        time.sleep(0.3)  # the reader has queued block 1 and is done
        ahead.close()
        assert not any(
            t.name == "aae_tract-label-reader" for t in threading.enumerate()
        )


def test_batches_are_padded_to_few_shapes_and_little_waste():
    """Small batches go to a power of two, larger ones to a multiple of
    PAD_STEP (never past the batch size); torch pads nothing."""
    import keras

    from aae_tract.model import tract_aae

    seen = []

    class Network:
        def predict_on_batch(self, x):
            seen.append(len(x))
            return x[:, :1] * 2

    sizes = (3, 1000, 1025, 5000, 8192)
    for n in sizes:
        x = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
        np.testing.assert_array_equal(
            tract_aae._predict(Network(), [x], 8192), x[:, :1] * 2
        )
    step = tract_aae.PAD_STEP
    if keras.backend.backend() == "torch":
        assert seen == list(sizes)
        return
    assert seen == [4, 1024, 2 * step, 5 * step, 8192]
    # any size up to a large batch: few shapes (compiled once each), little
    # padding above PAD_STEP
    seen.clear()
    for n in range(1, 65537, 7):
        tract_aae._predict(Network(), [np.zeros((n, 1), np.float32)], 65536)
        assert seen[-1] >= n and seen[-1] - n < max(step, n / 8)
    assert len(set(seen)) <= 11 + 8 * 6  # powers of two to 1,024, then 8 a doubling


def test_odd_sized_batches_give_the_rows_of_one_batch(labelled):
    # inference pads a batch to a power of two; the padding must not leak
    model, validation = labelled
    x = np.asarray(validation.x[:50])
    z = model.encode_prepared(x)
    np.testing.assert_allclose(model.encode_prepared(x[:5]), z[:5], atol=1e-5)
    np.testing.assert_allclose(
        model.encode_prepared(x, batch_size=7), z, rtol=1e-5, atol=1e-5
    )
    bundle = model.bundle_names[0]
    decoded = model.decode(z, bundle)
    np.testing.assert_allclose(
        model.decode(z[:3], bundle), decoded[:3], rtol=1e-5, atol=1e-4
    )


def _record_decoding(monkeypatch):
    """A list that gets the number of streamlines of every decoding pass the
    labelling makes for its reconstruction test."""
    import aae_tract.label as label_module

    recon = label_module._recon_distance
    decoded = []

    def recording(model, x, *args):
        decoded.append(len(x))
        return recon(model, x, *args)

    monkeypatch.setattr(label_module, "_recon_distance", recording)
    return decoded


def test_past_the_latent_threshold_means_other_without_decoding(labelled, monkeypatch):
    import aae_tract.label as label_module

    model, validation = labelled
    x = np.asarray(validation.x[:40])
    both = np.concatenate([x, x + np.array([0.0, 0.0, 150.0], dtype="float32")])
    decoded = _record_decoding(monkeypatch)

    def without_reach():
        # the reaches would turn the moved streamlines away before the
        # latent threshold sees them
        lab = label_module._labeller_of(model)
        lab.max_ref = np.full_like(lab.max_ref, np.inf)
        return lab

    # decode_from=0: every streamline inside the latent threshold is decoded
    labels, _ = label_module.label_prepared(
        model, both, labeller=without_reach(), decode_from=0.0
    )
    n_decoded = sum(decoded)
    # each threshold alone: the latent one rejects without decoding, the
    # reconstruction one (latent threshold off) decodes every streamline
    latent_only = without_reach()
    latent_only.max_recon = np.full_like(latent_only.max_recon, np.inf)
    by_latent, _ = label_module.label_prepared(model, both, labeller=latent_only)
    recon_only = without_reach()
    recon_only.max_d2 = np.full_like(recon_only.max_d2, np.inf)
    decoded.clear()
    by_recon, _ = label_module.label_prepared(
        model, both, labeller=recon_only, decode_from=0.0
    )
    assert sum(decoded) == len(both)
    # only the streamlines inside the latent threshold were decoded ...
    assert n_decoded == np.sum(by_latent != -1) < len(both)
    # ... and the labels are those of decoding every streamline
    expected = np.where((by_latent == -1) | (by_recon == -1), -1, by_recon)
    np.testing.assert_array_equal(labels, expected)
    assert np.all(labels[40:] == -1)
    # the latent rule decodes nothing and keeps the latent threshold's labels
    decoded.clear()
    by_rule, _ = label_module.label_prepared(
        model, both, labeller=without_reach(), reject="latent"
    )
    assert sum(decoded) == 0
    np.testing.assert_array_equal(by_rule, by_latent)
    with pytest.raises(AAETractError, match="reject must be one of both, latent"):
        label_module.label_prepared(model, both, reject="recon")


def test_streamlines_near_their_bundle_are_not_decoded(labelled, monkeypatch):
    import aae_tract.label as label_module

    model, validation = labelled
    # up to 30 streamlines of every bundle
    keep = np.concatenate(
        [
            np.flatnonzero(validation.labels == b)[:30]
            for b in range(len(model.bundle_names))
        ]
    )
    x, truth = np.asarray(validation.x)[keep], np.asarray(validation.labels)[keep]
    decoded = _record_decoding(monkeypatch)
    # latent thresholds that put the streamlines on both sides of half the
    # threshold (and some past it), and a reconstruction threshold that
    # every decoded streamline fails
    own = label_module._labeller_of(model)
    where = {b: k for k, b in enumerate(own.index)}  # bundle -> labeller row
    rows = np.array([where[b] for b in truth])
    z = model.encode_prepared(x)
    d2 = np.array([own.d2(z[i : i + 1], k)[0] for i, k in enumerate(rows)])
    scale = np.array([np.median(d2[rows == k]) for k in range(len(own.index))])
    assert np.all(np.isfinite(scale))  # every bundle is represented

    def labeller(d2_factor=1.0):
        lab = label_module._labeller_of(model)
        lab.max_ref = np.full_like(lab.max_ref, np.inf)
        lab.max_d2 = 1.5 * scale * d2_factor
        lab.max_recon = np.full_like(lab.max_recon, 1e-6)
        return lab

    inside, _ = label_module.label_prepared(
        model, x, labeller=labeller(), reject="latent"
    )
    within_half, _ = label_module.label_prepared(
        model, x, labeller=labeller(0.5), reject="latent"
    )
    n_inside, n_half = np.sum(inside != -1), np.sum(within_half != -1)
    assert 0 < n_half < n_inside < len(x)
    # the default: decoded (and here rejected) from half the latent threshold
    decoded.clear()
    labels, _ = label_module.label_prepared(model, x, labeller=labeller())
    assert label_module.DECODE_FROM == 0.5
    np.testing.assert_array_equal(labels, within_half)
    assert sum(decoded) == n_inside - n_half
    # 0: every streamline inside the threshold decoded (all rejected here)
    decoded.clear()
    labels, _ = label_module.label_prepared(
        model, x, labeller=labeller(), decode_from=0.0
    )
    assert np.all(labels == -1) and sum(decoded) == n_inside
    # 1: none decoded, the latent rule's labels
    decoded.clear()
    labels, _ = label_module.label_prepared(
        model, x, labeller=labeller(), decode_from=1.0
    )
    np.testing.assert_array_equal(labels, inside)
    assert sum(decoded) == 0
    for bad in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(AAETractError, match="decode_from must be a number"):
            label_module.label_prepared(model, x, decode_from=bad)


def test_reference_distance_is_the_mean_distance_in_the_closer_order():
    from aae_tract.orientation import flip_mask, reference_distance

    t = np.linspace(0, 60, 64, dtype="float32")
    ref = np.stack([t, np.zeros_like(t), np.zeros_like(t)], axis=1)
    shifted = ref + np.array([0.0, 3.0, 4.0], dtype="float32")  # 5 mm away
    bent = ref.copy()
    bent[:, 1] = 10 * np.sin(np.pi * t / 60)
    x = np.stack([shifted, shifted[::-1], bent])
    flip, distance = reference_distance(x, ref)
    np.testing.assert_array_equal(flip, [False, True, False])
    np.testing.assert_array_equal(flip, flip_mask(x, ref))
    np.testing.assert_allclose(distance[:2], 5.0, rtol=1e-6)
    # the 12 orientation points of the arc: its mean height above the line
    idx = np.round(np.unique(np.linspace(0, 63, 12))).astype(int)
    np.testing.assert_allclose(distance[2], np.abs(bent[idx, 1]).mean(), rtol=1e-6)


def test_each_bundle_reaches_twice_its_farthest_streamline(labelled, tiny_splits):
    from aae_tract.label import GATE_FACTOR
    from aae_tract.orientation import reference_distance

    model, validation = labelled
    train, _ = tiny_splits
    for i, name in enumerate(model.bundle_names):
        entry = model.metadata.labeller["bundles"][name]
        ref = np.asarray(model.metadata.orient_refs[name])
        farthest = max(
            reference_distance(np.asarray(d.x)[np.asarray(d.labels) == i], ref)[1].max()
            for d in (train, validation)
        )
        assert entry["max_ref_mm"] == pytest.approx(GATE_FACTOR * farthest, abs=0.011)


def _count_encodings(model, monkeypatch):
    """Record the number of rows of every call of the model's encoder: the
    list of counts, and the encoder as it was."""
    encode = type(model).encode_prepared
    encoded = []

    def counting(self, x, **kwargs):
        encoded.append(len(x))
        return encode(self, x, **kwargs)

    monkeypatch.setattr(type(model), "encode_prepared", counting)
    return encoded, encode


def test_streamlines_past_every_reach_are_other_without_being_encoded(
    labelled, monkeypatch
):
    import aae_tract.label as label_module
    from aae_tract.orientation import reference_distances

    model, validation = labelled
    x = np.array(validation.x[:40], copy=True)
    x[::2] = x[::2, ::-1]  # as a tractogram gives them
    far = x + np.array([0.0, 0.0, 150.0], dtype="float32")
    encoded, _ = _count_encodings(model, monkeypatch)
    lab = label_module._labeller_of(model)
    labels, confidence = label_module.label_prepared(model, far)
    assert sum(encoded) == 0
    assert np.all(labels == -1)
    # how far past the reach of the bundle it is least past
    refs = [
        np.asarray(model.metadata.orient_refs[model.bundle_names[i]]) for i in lab.index
    ]
    flips, distance = reference_distances(far, refs)
    ratio = (distance / lab.max_ref).min(axis=1)
    np.testing.assert_allclose(confidence, 1 - 1 / ratio, rtol=1e-5)
    # with settle_below=0 a streamline is encoded once in each point order a
    # bundle within reach gives it: once where those bundles agree
    mixed = np.concatenate([x, far])
    flips, distance = reference_distances(mixed, refs)
    near = distance <= lab.max_ref
    expected = (near & ~flips).any(axis=1).sum() + (near & flips).any(axis=1).sum()
    labels, _ = label_module.label_prepared(model, mixed, settle_below=0.0)
    assert sum(encoded) == expected
    assert len(x) <= expected < 2 * len(x)
    np.testing.assert_array_equal(labels[len(x) :], -1)


def test_the_second_point_order_is_encoded_only_when_the_first_is_unsure(
    labelled, monkeypatch
):
    import aae_tract.label as label_module
    from aae_tract.orientation import reference_distances

    model, validation = labelled
    x = np.array(validation.x, copy=True)
    x[::2] = x[::2, ::-1]  # as a tractogram gives them
    encoded, encode = _count_encodings(model, monkeypatch)

    def labeller(scale):
        lab = label_module._labeller_of(model)
        lab.max_d2 = lab.max_d2 * scale
        return lab

    lab = labeller(1.0)
    refs = [
        np.asarray(model.metadata.orient_refs[model.bundle_names[i]]) for i in lab.index
    ]
    flips, distance = reference_distances(x, refs)
    near = distance <= lab.max_ref
    assert near.any(axis=1).all()
    both = (near & flips).any(axis=1) & (near & ~flips).any(axis=1)
    assert both.sum() > 0
    # every streamline far inside a bundle in its first order: encoded once
    encoded.clear()
    once, _ = label_module.label_prepared(model, x, labeller=labeller(1e6))
    assert sum(encoded) == len(x)
    # no streamline inside any bundle's threshold (scaled down): both orders
    encoded.clear()
    label_module.label_prepared(model, x, labeller=labeller(1e-6))
    assert sum(encoded) == len(x) + both.sum()
    # thresholds that leave half of the streamlines that could go either way
    # unsure in their first order (that of the bundle whose reach they are
    # deepest inside): exactly those are encoded again
    rows = np.arange(len(x))
    nearest = np.where(near, distance / lab.max_ref, np.inf).argmin(axis=1)
    first = flips[rows, nearest]
    codes = encode(model, np.where(first[:, None, None], x[:, ::-1], x))
    ratio = np.full(len(x), np.inf)
    for k in range(len(lab.index)):
        same = near[:, k] & (flips[:, k] == first)
        ratio[same] = np.minimum(ratio[same], lab.d2(codes[same], k) / lab.max_d2[k])
    # (the threshold between two neighbouring ratios: none sits on it)
    r = np.sort(ratio[both])
    half = len(r) // 2
    assert r[half - 1] < r[half]
    scale = np.sqrt(r[half - 1] * r[half]) / label_module.SETTLE_BELOW
    unsure = both & (ratio / scale >= label_module.SETTLE_BELOW)
    assert 0 < unsure.sum() < both.sum()
    seen = []

    def recording(self, rows, **kwargs):
        seen.append(np.array(rows))
        return encode(self, rows, **kwargs)

    monkeypatch.setattr(type(model), "encode_prepared", recording)
    settled, conf = label_module.label_prepared(
        model, x, labeller=labeller(scale), reject="latent"
    )
    # every streamline in its first order, then the unsure ones in the other
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0], np.concatenate([x[~first], x[first, ::-1]]))
    np.testing.assert_array_equal(
        seen[1], np.concatenate([x[unsure & first], x[unsure & ~first, ::-1]])
    )
    monkeypatch.setattr(type(model), "encode_prepared", encode)
    encoded, _ = _count_encodings(model, monkeypatch)
    # the labels of every streamline encoded in each bundle's point order:
    # the rule with settle_below=0, and the rule where the second order was
    # encoded (the right order, not the first again)
    forward, backward = encode(model, x), encode(model, x[:, ::-1])
    ref = labeller(scale)
    post, d2 = ref.posteriors(
        [np.where(flips[:, [k]], backward, forward) for k in range(len(ref.index))],
        near,
    )
    best = post.argmax(axis=1)
    past = d2[rows, best] / ref.max_d2[best] > 1.0
    expected = np.where(past, -1, np.asarray(ref.index)[best])
    encoded.clear()
    full, full_conf = label_module.label_prepared(
        model, x, labeller=labeller(scale), reject="latent", settle_below=0.0
    )
    assert sum(encoded) == len(x) + both.sum()
    np.testing.assert_array_equal(full, expected)
    np.testing.assert_array_equal(settled[unsure], expected[unsure])
    np.testing.assert_allclose(conf[unsure], full_conf[unsure], rtol=1e-4, atol=1e-6)
    # and on these well separated bundles the settled ones keep theirs too
    np.testing.assert_array_equal(settled, expected)
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(AAETractError, match="settle_below must be a number"):
            label_module.label_prepared(model, x, settle_below=bad)


def test_the_first_point_order_is_the_nearest_bundles_even_without_reaches(
    labelled, monkeypatch
):
    """Without reaches (a labeller stored before them) the first point order
    is that of the bundle whose reference is nearest; a bundle without a
    finite latent threshold settles nothing."""
    import aae_tract.label as label_module
    from aae_tract.orientation import reference_distances

    model, validation = labelled
    x = np.array(validation.x, copy=True)
    x[::2] = x[::2, ::-1]
    encode = type(model).encode_prepared
    seen = []

    def recording(self, rows, **kwargs):
        seen.append(np.array(rows))
        return encode(self, rows, **kwargs)

    monkeypatch.setattr(type(model), "encode_prepared", recording)
    lab = label_module._labeller_of(model)
    lab.max_ref = np.full_like(lab.max_ref, np.inf)
    lab.max_d2 = lab.max_d2 * 1e6  # every streamline settled by its first order
    refs = [
        np.asarray(model.metadata.orient_refs[model.bundle_names[i]]) for i in lab.index
    ]
    flips, distance = reference_distances(x, refs)
    first = flips[np.arange(len(x)), distance.argmin(axis=1)]
    label_module.label_prepared(model, x, labeller=lab)
    (rows,) = seen
    expected = np.concatenate([x[~first], x[first, ::-1]])
    np.testing.assert_array_equal(rows, expected)
    # a bundle without a finite threshold settles nothing: both orders
    lab.max_d2 = np.full_like(lab.max_d2, np.inf)
    seen.clear()
    label_module.label_prepared(model, x, labeller=lab)
    both = flips.any(axis=1) & (~flips).any(axis=1)
    assert sum(len(r) for r in seen) == len(x) + both.sum()


def test_a_bundle_out_of_reach_never_wins_and_the_others_keep_their_labels(
    labelled,
):
    import aae_tract.label as label_module
    from aae_tract.orientation import reference_distances

    model, validation = labelled
    x = np.array(validation.x, copy=True)
    x[::2] = x[::2, ::-1]
    ungated = label_module._labeller_of(model)
    ungated.max_ref = np.full_like(ungated.max_ref, np.inf)
    refs = [
        np.asarray(model.metadata.orient_refs[model.bundle_names[i]])
        for i in ungated.index
    ]
    _, distance = reference_distances(x, refs)
    # reaches short enough that most streamlines are within reach of only
    # some bundles (the stored ones reach every streamline of this small set)
    gated = label_module._labeller_of(model)
    gated.max_ref = np.quantile(distance, 0.2, axis=0)
    near = distance <= gated.max_ref
    assert 0 < near.mean() < 1 and np.any(near.sum(axis=1) == 1)
    column = {i: k for k, i in enumerate(gated.index)}
    for reject in ("both", "latent"):
        a, conf = label_module.label_prepared(model, x, labeller=gated, reject=reject)
        b, _ = label_module.label_prepared(model, x, labeller=ungated, reject=reject)
        rows = np.flatnonzero(a >= 0)
        assert len(rows)
        # no label is a bundle the streamline is out of reach of ...
        assert all(near[r, column[a[r]]] for r in rows)
        # ... and where the unrestricted winner is within reach, the label is
        # the unrestricted one
        kept = [r for r in range(len(x)) if b[r] >= 0 and near[r, column[b[r]]]]
        assert kept
        np.testing.assert_array_equal(a[kept], b[kept])
        # a streamline within reach of no bundle: how far past the nearest
        far = ~near.any(axis=1)
        assert far.any() and np.all(a[far] == -1)
        ratio = (distance[far] / gated.max_ref).min(axis=1)
        np.testing.assert_allclose(conf[far], 1 - 1 / ratio, rtol=1e-5, atol=1e-6)


def test_a_labeller_without_reach_labels_as_before(labelled, tmp_path):
    from aae_tract.label import _labeller_of, label_prepared
    from aae_tract.model import TractAAE

    model, validation = labelled
    source = model.save(tmp_path / "m.keras")

    def drop_reach(meta):
        for entry in meta["labeller"]["bundles"].values():
            del entry["max_ref_mm"]
        return meta

    old = TractAAE.load(tamper(source, tmp_path / "old.keras", meta=drop_reach))
    assert np.all(np.isinf(_labeller_of(old).max_ref))
    x = np.asarray(validation.x[:60])
    np.testing.assert_array_equal(
        label_prepared(old, x)[0], label_prepared(model, x)[0]
    )

    def bad_reach(meta):
        meta["labeller"]["bundles"][model.bundle_names[0]]["max_ref_mm"] = -1.0
        return meta

    with pytest.raises(ModelFileError, match="max_ref_mm"):
        TractAAE.load(tamper(source, tmp_path / "bad.keras", meta=bad_reach))


def test_the_labeller_survives_save_and_load(labelled, tmp_path):
    from aae_tract.label import label_streamlines
    from aae_tract.model import TractAAE

    model, validation = labelled
    path = model.save(tmp_path / "m.keras")
    again = TractAAE.load(path)
    assert again.metadata.labeller == model.metadata.labeller
    x = np.asarray(validation.x[:30])
    np.testing.assert_array_equal(
        label_streamlines(model, x)[0], label_streamlines(again, x)[0]
    )


def test_a_model_without_labeller_says_so(labelled, tmp_path):
    from aae_tract.label import label_streamlines
    from aae_tract.model import TractAAE

    model, validation = labelled
    source = model.save(tmp_path / "m.keras")
    old = tamper(
        source,
        tmp_path / "old.keras",
        meta=lambda m: {k: v for k, v in m.items() if k != "labeller"},
    )
    with pytest.raises(AAETractError, match="no labeller"):
        label_streamlines(TractAAE.load(old), np.asarray(validation.x[:3]))


def test_a_tampered_labeller_is_refused_on_load(labelled, tmp_path):
    from aae_tract.model import TractAAE

    model, _ = labelled
    source = model.save(tmp_path / "m.keras")

    def bad_cov(meta):
        name = model.bundle_names[0]
        cov = np.asarray(meta["labeller"]["bundles"][name]["cov"])
        meta["labeller"]["bundles"][name]["cov"] = (-cov).tolist()
        return meta

    bad = tamper(source, tmp_path / "bad.keras", meta=bad_cov)
    with pytest.raises(ModelFileError, match="positive definite"):
        TractAAE.load(bad)


@pytest.fixture(scope="module")
def mixed_tractogram(minimal_bundles_dir, tmp_path_factory):
    """sub_5's three bundles in one .trk, and the true label of each streamline."""
    from dipy.io.stateful_tractogram import StatefulTractogram

    from aae_tract.io import load_bundle, save_tractogram

    lines, truth, sft = [], [], None
    for name in ("AF_L", "CC_ForcepsMajor", "CST_R"):
        sft = load_bundle(minimal_bundles_dir / "sub_5" / f"{name}.trk")
        lines.extend(sft.streamlines)
        truth.extend([name] * len(sft))
    out = tmp_path_factory.mktemp("mixed") / "sub_5_all.trk"
    save_tractogram(StatefulTractogram.from_sft(lines, sft), out)
    return out, np.asarray(truth)


def test_label_command_writes_a_tractogram_per_bundle_and_a_report(
    labelled, mixed_tractogram, tmp_path, monkeypatch
):
    from aae_tract.io import load_bundle

    model, _ = labelled
    model_path = model.save(tmp_path / "m.keras")
    tractogram, truth = mixed_tractogram
    out = tmp_path / "out"
    args = [tractogram, "--model", model_path, "--out_dir", out, "--skip_picture"]
    assert run_cli("aae_tract_label", *args) == 0
    report = json.loads((out / "labels.json").read_text())
    labels = np.asarray(report["labels"])
    assert report["n_streamlines"] == len(truth) == len(labels)
    assert sum(report["counts"].values()) == len(truth)
    assert np.mean(labels == truth) >= 0.9
    for name, count in report["counts"].items():
        path = out / f"{name}.trk"
        assert path.exists() == (count > 0)
        if count:
            assert len(load_bundle(path)) == count
    # a second run refuses to overwrite; --force replaces and drops stale files
    (out / "other.trk").write_bytes((out / "AF_L.trk").read_bytes())
    assert run_cli("aae_tract_label", *args) == 0
    assert (out / "other.trk").exists()
    assert run_cli("aae_tract_label", *args, "--force") == 0
    assert (out / "other.trk").exists() == (report["counts"]["other"] > 0)
    # the latent rule alone: recorded in the report; it rejects no more
    assert run_cli("aae_tract_label", *args, "--force", "--reject", "latent") == 0
    latent = json.loads((out / "labels.json").read_text())
    assert latent["labeller"]["reject"] == "latent"
    assert report["labeller"]["reject"] == "both"
    assert report["labeller"]["decode_from"] == 0.5
    assert latent["labeller"]["decode_from"] is None
    assert report["labeller"]["version"] == 2
    assert set(report["labeller"]["reach_mm"]) == set(report["counts"]) - {"other"}
    assert all(r > 0 for r in report["labeller"]["reach_mm"].values())
    assert latent["counts"]["other"] <= report["counts"]["other"]
    # the precision used is recorded: float32 here (the conftest fixture),
    # bfloat16 when asked, or under auto on a CPU with native bfloat16
    assert report["labeller"]["precision"] == "float32"
    _auto_means_bfloat16(monkeypatch)
    for given in (["--precision", "bfloat16"], []):
        assert run_cli("aae_tract_label", *args, "--force", *given) == 0
        fast = json.loads((out / "labels.json").read_text())
        assert fast["labeller"]["precision"] == "bfloat16"
        assert np.mean(np.asarray(fast["labels"]) == truth) >= 0.9


def test_label_command_draws_its_picture_with_the_view_asked(
    labelled, mixed_tractogram, tmp_path, monkeypatch
):
    from aae_tract import viz

    model, _ = labelled
    model_path = model.save(tmp_path / "m.keras")
    tractogram, _ = mixed_tractogram
    views = []

    def fake_render(lines, out_png, *, view, **kw):
        views.append(view)
        return None  # as when no picture can be made

    monkeypatch.setattr(viz, "render_bundles", fake_render)
    args = [tractogram, "--model", model_path, "--out_dir", tmp_path / "out"]
    assert run_cli("aae_tract_label", *args, "--view", "superior") == 0
    assert views == ["superior"]


def test_label_command_streams_its_input_and_labels_as_the_api_does(
    labelled, mixed_tractogram, tmp_path, monkeypatch, capsys
):
    from aae_tract import stream
    from aae_tract.io import load_bundle, save_tractogram
    from aae_tract.label import label_streamlines
    from workflows import label as label_flow

    model, _ = labelled
    model_path = model.save(tmp_path / "m.keras")
    tractogram, _ = mixed_tractogram
    sft = load_bundle(tractogram)
    expected, _ = label_streamlines(model, sft)
    tck = save_tractogram(sft, tmp_path / "all.tck")
    # small chunks and a small picture sample: several blocks, a sample drawn
    monkeypatch.setattr(stream, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(label_flow, "PICTURE_MAX", 40)
    read = []
    real_blocks = stream.TractogramStream.blocks

    def counting(self):
        for block in real_blocks(self):
            read.append(len(block))
            yield block

    monkeypatch.setattr(stream.TractogramStream, "blocks", counting)
    out = tmp_path / "out"
    args = ["--model", model_path, "--out_dir", out, "--skip_picture"]
    assert run_cli("aae_tract_label", tractogram, *args) == 0
    assert max(read) < len(sft) / 4  # never the whole file at once
    # two passes: labelling (the progress bar's total is the header's count)
    # and writing; no pass only to count the streamlines
    assert sum(read) == 2 * len(sft)
    report = json.loads((out / "labels.json").read_text())
    np.testing.assert_array_equal(report["labels"], expected)
    for name, count in report["counts"].items():
        if count:
            back = load_bundle(out / f"{name}.trk")
            rows = np.flatnonzero(expected == name)
            np.testing.assert_allclose(
                back.streamlines.get_data(), sft.streamlines[rows].get_data(), atol=1e-3
            )
    # a .tck with its reference, written as .tck: the same labels
    out_tck = tmp_path / "out_tck"
    tck_args = ["--reference", tractogram, "--format", "tck", "--out_dir", out_tck]
    assert run_cli("aae_tract_label", tck, *args[:2], *tck_args, "--skip_picture") == 0
    report = json.loads((out_tck / "labels.json").read_text())
    np.testing.assert_array_equal(report["labels"], expected)
    # an output that would replace the input is refused before anything is written
    again = ["--model", model_path, "--out_dir", out, "--skip_picture", "--force"]
    before = (out / "AF_L.trk").read_bytes()
    assert run_cli("aae_tract_label", out / "AF_L.trk", *again) == 1
    assert "would replace the input" in capsys.readouterr().err
    assert (out / "AF_L.trk").read_bytes() == before
    no_ref = ["--model", model_path, "--out_dir", tmp_path / "no_ref"]
    assert run_cli("aae_tract_label", tck, *no_ref) == 1
    assert "all.tck: a .tck file needs a reference" in capsys.readouterr().err


def test_the_label_picture_draws_a_sample_of_every_label(
    mixed_tractogram, tmp_path, monkeypatch
):
    from aae_tract import viz
    from aae_tract.stream import TractogramStream
    from workflows import label as label_flow

    tractogram, truth = mixed_tractogram
    drawn = {}

    def fake_render(lines, out_png, *, labels, colors, title, view):
        drawn.update(zip(labels, (np.asarray(x) for x in lines)))
        drawn["colors"] = colors
        drawn["title"] = title
        drawn["view"] = view
        return out_png

    monkeypatch.setattr(viz, "render_bundles", fake_render)
    monkeypatch.setattr(label_flow, "PICTURE_MAX", 30)
    monkeypatch.setattr(label_flow, "PICTURE_OTHER_MAX", 1)
    labels = truth.copy()
    labels[:2] = "other"  # a label of two streamlines keeps one in the sample
    source = TractogramStream(tractogram)
    groups = ["AF_L", "CC_ForcepsMajor", "CST_R", "other"]
    out = label_flow._picture(source, labels, groups, tmp_path / "p.png", tractogram)
    assert out == tmp_path / "p.png"
    every = list(source)
    for group in groups:
        rows = np.flatnonzero(labels == group)
        assert 1 <= len(drawn[group]) <= max(1, round(len(rows) * 30 / len(labels)))
        for line in drawn[group]:  # each drawn streamline is one of its label's
            assert any(np.array_equal(line, every[r]) for r in rows)
    assert len(drawn["other"]) == 1  # at most PICTURE_OTHER_MAX: bundles stay visible
    assert drawn["title"].endswith("(1 of 2 other drawn)")
    assert tuple(drawn["colors"]["other"]) == pytest.approx((0.6, 0.6, 0.6), abs=0.01)
    assert drawn["view"] == "oblique"
    label_flow._picture(source, labels, groups, tmp_path / "q.png", tractogram, "auto")
    assert drawn["view"] == "auto"  # render_bundles resolves it


def test_label_command_errors_are_one_line(
    labelled, mixed_tractogram, tmp_path, capsys
):
    model, _ = labelled
    model_path = model.save(tmp_path / "m.keras")
    tractogram, _ = mixed_tractogram
    code = run_cli(
        "aae_tract_label",
        tractogram,
        "--model",
        model_path,
        "--out_tractogram",
        "x.trk",
    )
    assert code == 1
    assert "{label}" in capsys.readouterr().err
    code = run_cli(
        "aae_tract_label", tractogram, "--model", model_path, "--reject", "x"
    )
    assert code == 1
    assert "reject" in capsys.readouterr().err
    code = run_cli(
        "aae_tract_label", tractogram, "--model", model_path, "--decode_from", "2"
    )
    assert code == 1
    assert "--decode_from must be at most 1" in capsys.readouterr().err
    code = run_cli(
        "aae_tract_label", tractogram, "--model", model_path, "--precision", "half"
    )
    assert code == 1
    assert "--precision must be one of auto, float32, bfloat16" in (
        capsys.readouterr().err
    )
    code = run_cli("aae_tract_label", tmp_path / "missing.trk", "--model", model_path)
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.trk" in err and "Traceback" not in err


def test_split_labelled_keeps_a_share_of_each_bundle_and_unorients_the_rest(
    tiny_splits,
):
    from aae_tract.label import split_labelled

    train, _ = tiny_splits
    few, pool = split_labelled(train, 0.2, seed=0)
    counts = np.bincount(train.labels)
    kept = np.bincount(few.labels, minlength=len(counts))
    np.testing.assert_array_equal(kept, np.maximum(2, np.round(0.2 * counts)))
    assert len(few) + len(pool["x"]) == len(train)
    assert pool["x"].shape[1:] == (train.n_points, 3)
    # about half of the unlabelled streamlines run against their bundle's order
    from aae_tract.orientation import flip_mask

    x = np.asarray(train.x)
    rest = np.setdiff1d(np.arange(len(train)), _rows_of(few, train))
    flipped = [flip_mask(pool["x"][i : i + 1], x[r])[0] for i, r in enumerate(rest)]
    assert 0.3 < np.mean(flipped) < 0.7
    with pytest.raises(AAETractError, match="label_fraction"):
        split_labelled(train, 0.0)


def test_self_train_restart_trains_a_new_model_and_leaves_the_teacher(tiny_splits):
    from conftest import TINY

    from aae_tract.label import self_train, split_labelled
    from aae_tract.model import TractAAE

    train, validation = tiny_splits
    few, pool = split_labelled(train, 0.3, seed=0)
    teacher = TractAAE.from_dataset(few, epochs=1, **TINY)
    teacher.fit(few, validation, verbose=0)
    before = [w.copy() for w in teacher.network.get_weights()]
    student, history, report = self_train(
        teacher,
        few,
        validation,
        pool,
        epochs=1,
        min_confidence=0.0,
        mode="restart",
        verbose=0,
    )
    assert student is not teacher and report["mode"] == "restart"
    assert student.metadata.training["self_training"] == report
    assert "self_training" not in teacher.metadata.training
    for old, now in zip(before, teacher.network.get_weights(), strict=True):
        np.testing.assert_array_equal(old, now)
    assert student.config.to_dict() == teacher.config.to_dict()
    added = sum(v for k, v in report["added"].items() if k != "not_kept")
    assert added > 0 and len(history["loss"]) == 1
    # the new model's normalisation is fitted on the labelled and added ones
    assert student.metadata.normalizer != teacher.metadata.normalizer
    assert student.metadata.labeller["bundles"]
    # continue (the default): the teacher itself trains further
    same, _, report = self_train(teacher, few, validation, pool, epochs=1, verbose=0)
    assert same is teacher and report["mode"] == "continue"
    assert teacher.metadata.normalizer != student.metadata.normalizer
    with pytest.raises(AAETractError, match="sideways"):
        self_train(teacher, few, validation, pool, epochs=1, mode="sideways")


def _rows_of(subset, dataset):
    """Rows of ``dataset`` that ``subset`` holds (matched by first point)."""
    firsts = {tuple(np.round(p, 4)) for p in np.asarray(subset.x)[:, 0]}
    return np.array(
        [
            i
            for i, p in enumerate(np.asarray(dataset.x)[:, 0])
            if tuple(np.round(p, 4)) in firsts
        ]
    )


@pytest.mark.parametrize(
    "mode, phase",
    [
        (None, "self-training (trained further)"),
        ("restart", "self-training (new model)"),
    ],
)
def test_train_command_self_trains_on_unlabelled_streamlines(
    mode, phase, mixed_tractogram, minimal_bundles_dir, tmp_path
):
    from test_workflows import TINY_ARGS

    from aae_tract.model import TractAAE

    tractogram, _ = mixed_tractogram
    out = tmp_path / "semi"
    args = [
        minimal_bundles_dir,
        *TINY_ARGS,
        "--label_fraction",
        "0.3",
        "--unlabelled",
        tractogram,
        "--out_dir",
        out,
    ]
    if mode is not None:
        args += ["--self_train_mode", mode]
    assert run_cli("aae_tract_train", *args) == 0
    model = TractAAE.load(out / "aae_tract_model.keras")
    report = model.metadata.training["self_training"]
    # TINY_ARGS train 2 epochs: continue adds half of them, restart all
    expected = 1 if mode is None else 2
    assert report["epochs"] == expected and report["min_confidence"] == 0.9
    assert report["mode"] == (mode or "continue")
    added = sum(v for k, v in report["added"].items() if k != "not_kept")
    assert added + report["added"]["not_kept"] == report["unlabelled"]
    history = json.loads((out / "training_history.json").read_text())
    assert history["epochs"] == 2 + expected
    assert history["phases"] == [{"from_epoch": 3, "name": phase}]
    assert model.metadata.labeller["bundles"]
    assert model.metadata.training["validation_subjects"]  # the split record


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label_fraction", "0"], "label_fraction"),
        (["--label_fraction", "0.5", "--attribute", "age"], "attribute length"),
        (["--label_fraction", "0.5", "--resume"], "resume"),
        (["--unlabelled", "nowhere.trk"], "nowhere.trk"),
        (
            ["--label_fraction", "0.5", "--self_train_mode", "sideways"],
            "--self_train_mode must be one of continue, restart",
        ),
    ],
)
def test_train_command_refuses_bad_self_training_options(
    extra, message, minimal_bundles_dir, tmp_path, capsys
):
    from test_workflows import TINY_ARGS

    args = [minimal_bundles_dir, *TINY_ARGS, "--out_dir", tmp_path, *extra]
    assert run_cli("aae_tract_train", *args) == 1
    assert message in capsys.readouterr().err


def _auto_means_bfloat16(monkeypatch):
    """Make ``precision="auto"`` resolve to bfloat16 here, whatever the CPU,
    backend or device."""
    import aae_tract.backend as backend

    monkeypatch.setattr(backend, "cpu_has_bfloat16", lambda *a: True)
    monkeypatch.setattr(backend, "BFLOAT16_BACKENDS", backend.SUPPORTED_BACKENDS)
    monkeypatch.setattr(backend, "describe_device", lambda: "CPU")


def test_bfloat16_labels_agree_with_float32_and_training_stays_float32(
    labelled, monkeypatch
):
    from aae_tract import label as label_module
    from aae_tract.label import label_streamlines

    model, validation = labelled
    x = np.array(validation.x, copy=True)
    x[::2] = x[::2, ::-1]
    truth = np.asarray(model.bundle_names)[validation.labels]
    labels, conf = label_streamlines(model, x, precision="bfloat16")
    exact_labels, exact_conf = label_streamlines(model, x, precision="float32")
    assert np.mean(labels == exact_labels) >= 0.98
    assert np.mean(labels == truth) >= 0.9
    same = labels == exact_labels
    np.testing.assert_allclose(conf[same], exact_conf[same], atol=0.05)
    # under auto meaning bfloat16, labelling uses it; self-training's
    # pseudo-labels do not (what a model learns must not depend on the CPU)
    _auto_means_bfloat16(monkeypatch)
    used = []
    encode = type(model).encode_prepared

    def recording(self, rows, **kwargs):
        used.append(kwargs.get("precision", "float32"))
        return encode(self, rows, **kwargs)

    monkeypatch.setattr(type(model), "encode_prepared", recording)
    label_module.label_prepared(model, x)
    assert used and set(used) == {"bfloat16"}
    used.clear()
    label_module.pseudo_labelled(model, x)
    assert used and set(used) == {"float32"}


def test_pseudo_labels_are_settled_as_self_training_was_measured(labelled, monkeypatch):
    """Labelling settles further out than the pseudo-labelling of
    self-training, whose rule stays the one it was measured with."""
    import aae_tract.label as label_module

    model, validation = labelled
    x = np.array(validation.x[:40], copy=True)
    assert label_module.PSEUDO_SETTLE < label_module.SETTLE_BELOW
    rules = []
    real = label_module._label_block

    def recording(model, x, **kwargs):
        rules.append(kwargs["settle_below"])
        return real(model, x, **kwargs)

    monkeypatch.setattr(label_module, "_label_block", recording)
    _, counts = label_module.pseudo_labelled(model, x)
    assert rules == [label_module.PSEUDO_SETTLE]
    expected, _ = label_module.label_prepared(
        model, x, precision="float32", settle_below=label_module.PSEUDO_SETTLE
    )
    assert counts["not_kept"] >= int(np.sum(expected < 0))


def test_auto_precision_is_bfloat16_only_where_it_was_measured_faster(
    tmp_path, monkeypatch
):
    import aae_tract.backend as backend
    from aae_tract.label import label_precision

    flags = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f {}\n"
    native, plain = tmp_path / "native", tmp_path / "plain"
    native.write_text(flags.format("avx512_bf16 avx512_vnni"))
    plain.write_text(flags.format("avx512_vnni"))
    monkeypatch.undo()  # the conftest fixture's stand-in: the real check
    checker = backend.cpu_has_bfloat16
    assert checker(native) and not checker(plain)
    assert not checker(tmp_path / "missing")
    amx = tmp_path / "amx"
    amx.write_text(flags.format("amx_bf16 amx_tile"))
    assert checker(amx)
    cases = [
        ("tensorflow", True, "CPU via tensorflow", "bfloat16"),
        ("torch", True, "CPU via torch", "bfloat16"),
        ("jax", True, "CPU via jax", "float32"),  # measured slower in bfloat16
        ("tensorflow", False, "CPU via tensorflow", "float32"),
        ("tensorflow", True, "GPU (x) via tensorflow", "float32"),  # unmeasured
    ]
    for name, has, device, expected in cases:
        monkeypatch.setattr(backend, "current_backend", lambda n=name: n)
        monkeypatch.setattr(backend, "cpu_has_bfloat16", lambda h=has: h)
        monkeypatch.setattr(backend, "describe_device", lambda d=device: d)
        assert label_precision("auto") == expected, (name, has, device)
        assert label_precision("float32") == "float32"
        assert label_precision("bfloat16") == "bfloat16"
    with pytest.raises(AAETractError, match="precision must be one of"):
        label_precision("float16")


def test_nan_coordinates_are_refused_by_name(labelled):
    from aae_tract.label import label_streamlines

    model, validation = labelled
    lines = [np.array(s, copy=True) for s in validation.x[:30]]
    lines[17][5, 1] = np.nan
    # refused before resampling, which would turn them into arbitrary numbers
    sequence = nib.streamlines.ArraySequence(lines)
    for given in (iter(lines), np.stack(lines), sequence):
        with pytest.raises(AAETractError, match="mine.trk: streamlines with NaN"):
            label_streamlines(model, given, name="mine.trk", block=8)
    lines[17] = lines[17][:1]
    with pytest.raises(AAETractError, match="mine.trk: .*at least 2 points.* has 1"):
        label_streamlines(model, iter(lines), name="mine.trk", block=8)
