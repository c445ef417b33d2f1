"""Training through ``fit()``: batches, checkpoints, resume, NaN guard, history.

A checkpoint is three files in the checkpoint folder, each written to a
temporary name and renamed: ``epoch-NNNN.keras`` (the networks),
``epoch-NNNN.optimizers.npz`` (both optimizers' state, no pickle) and, last,
``checkpoint.json`` which names the complete epoch. A run killed at any moment
leaves ``checkpoint.json`` pointing at a complete pair of files.
"""

import json
import logging
import math
import os
from pathlib import Path

import keras
import numpy as np

from aae_tract import atomic
from aae_tract.errors import TrainingError
from aae_tract.model.aae import posterior_draw
from aae_tract.model.parallel import shard_rows
from aae_tract.rows import as_rows

logger = logging.getLogger(__name__)

CHECKPOINT_STATE = "checkpoint.json"


class StreamlineBatches(keras.utils.PyDataset):
    """Batches ``(x, onehot, attribute)`` read from (memory-mapped) arrays.

    Only one batch is in memory at a time, so a cache of millions of
    streamlines opened with ``mmap_mode="r"`` trains without being loaded:
    each batch gathers its rows (in increasing order) from the map, whose
    pages are released as it is read (:mod:`aae_tract.rows`).

    Parameters
    ----------
    x : array, shape (N, n_points, 3)
        Streamlines in mm (may be a ``np.memmap`` or a
        :class:`~aae_tract.rows.StreamlineRows` of one).
    labels : array of int, shape (N,)
        Bundle index of each streamline.
    attribute : array, shape (N,)
        Attribute of each streamline.
    normalizer : Normalizer-like
        Object with ``transform(x)`` applied to each batch.
    n_bundles : int
        Size of the one-hot code.
    batch_size : int
        Streamlines per batch.
    shuffle : bool
        Reshuffle the order at each epoch (seeded).
    seed : int
        Seed of the shuffling.
    groups : array of int, shape (N,), optional
        Subject of each streamline: the shuffled order then comes in runs of
        ``group_run`` streamlines of one subject (see :func:`grouped_order`),
        for an attribute that is one value per subject.
    group_run : int, optional
        Length of those runs.
    replicas : int, optional
        Devices the global batch is split over (data-parallel training): each
        batch keeps a multiple of ``replicas`` rows (the last, smaller batch
        drops the rows that do not divide, and is dropped when a replica would
        get fewer than 2).
    shard : tuple of int, optional
        ``(rank, world)``: this process reads only its part of every global
        batch (rows ``rank::world`` of it), for one process per device
        (torch, or JAX on several processes); ``replicas`` must then be a
        multiple of ``world``.
    """

    def __init__(
        self,
        x,
        labels,
        attribute,
        normalizer,
        n_bundles,
        *,
        batch_size=64,
        shuffle=True,
        seed=0,
        groups=None,
        group_run=16,
        replicas=1,
        shard=(0, 1),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.replicas = int(replicas)
        self.rank, self.world = (int(v) for v in shard)
        self.groups = None if groups is None else np.asarray(groups)
        self.group_run = int(group_run)
        self.x = as_rows(x)
        self.labels = np.asarray(labels, dtype="int64")
        self.attribute = np.asarray(attribute, dtype="float32")
        self.normalizer = normalizer
        self.n_bundles = int(n_bundles)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.epoch = 0
        self.seed = int(seed)
        self.order = np.arange(len(self.labels))
        self._reorder()

    def _reorder(self):
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            if self.groups is None:
                self.order = rng.permutation(len(self.labels))
            else:
                self.order = grouped_order(self.groups, self.group_run, rng)

    def set_epoch(self, epoch):
        """Put the shuffling where it would be at the start of ``epoch``."""
        self.epoch = int(epoch)
        self._reorder()

    def __len__(self):
        n = len(self.labels)
        # drop a last batch of one (per replica): the AR loss needs pairs
        full, rest = divmod(n, self.batch_size)
        return max(full + (1 if rest >= 2 * self.replicas else 0), 1)

    def __getitem__(self, index):
        idx = np.sort(
            self.order[index * self.batch_size : (index + 1) * self.batch_size]
        )
        if self.replicas > 1:
            idx = idx[: len(idx) - len(idx) % self.replicas]
        idx = shard_rows(idx, self.rank, self.world)
        x = self.normalizer.transform(np.asarray(self.x[idx], dtype="float32"))
        onehot = np.eye(self.n_bundles, dtype="float32")[self.labels[idx]]
        return (x.astype("float32"), onehot, self.attribute[idx])

    def on_epoch_end(self):
        self.epoch += 1
        self._reorder()


def grouped_order(groups, run, rng):
    """A shuffled order of rows in runs of ``run`` rows of one group.

    Each group's rows are shuffled and cut into runs of ``run`` (its last run
    may be shorter); the runs are then shuffled, so a batch of ``B`` rows
    holds about ``B / run`` groups with several rows each.

    Parameters
    ----------
    groups : array, shape (N,)
        Group (subject) of each row.
    run : int
        Rows of one group in a row.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int, shape (N,)
        A permutation of ``range(N)``.
    """
    groups = np.asarray(groups)
    shuffled = rng.permutation(len(groups))
    rows = shuffled[np.argsort(groups[shuffled], kind="stable")]
    sorted_groups = groups[rows]
    first = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    starts = np.flatnonzero(first)
    group_id = np.cumsum(first) - 1
    position = np.arange(len(rows)) - starts[group_id]
    run_id = np.unique(
        np.stack([group_id, position // max(int(run), 1)], axis=1),
        axis=0,
        return_inverse=True,
    )[1].reshape(-1)
    key = rng.permutation(run_id.max() + 1 if len(run_id) else 0)
    return rows[np.lexsort((position, key[run_id]))]


class RegularizationWarmup(keras.callbacks.Callback):
    """Ramp the adversarial and AR loss weights linearly over ``epochs`` epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        scale = 1.0 if self.epochs <= 0 else min(1.0, (epoch + 1) / self.epochs)
        self.model.reg_scale.assign(scale)


class PriorRefit(keras.callbacks.Callback):
    """Refit a :class:`~aae_tract.model.priors.FittedPrior` to the encodings.

    At the start of every epoch the network being trained encodes a fixed
    sample of the training streamlines and its prior takes each bundle's
    mean and covariance; with a Gaussian posterior each code is a sample of
    q(z | x) (the aggregated posterior is what the discriminator sees).
    :meth:`TractAAE.fit` refits once more after the last epoch (also when a
    resumed run had no epoch left to train), so the saved prior is that of
    the final encoder.

    Parameters
    ----------
    x : ndarray, shape (N, n_points, 3)
        Normalised streamlines (the network's input).
    labels : ndarray of int, shape (N,)
        Bundle index of each.
    seed : int
        Seed of the posterior samples.
    batch_size : int
        Streamlines per forward pass.
    """

    def __init__(self, x, labels, *, seed=0, batch_size=1024):
        super().__init__()
        self.x = np.asarray(x, dtype="float32")
        self.labels = np.asarray(labels).reshape(-1)
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def codes(self, network, epoch):
        """``network``'s encodings of the sample (posterior samples seeded by
        ``epoch``, an epoch number or, after the last, the number of epochs)."""
        rng = np.random.default_rng([self.seed, epoch])
        out = []
        for start in range(0, len(self.x), self.batch_size):
            codes = network.encoder(
                self.x[start : start + self.batch_size], training=False
            )
            if isinstance(codes, (list, tuple)):
                mean, log_var = (keras.ops.convert_to_numpy(c) for c in codes)
                out.append(posterior_draw(mean, log_var, rng))
            else:
                out.append(np.asarray(keras.ops.convert_to_numpy(codes)))
        return np.concatenate(out) if out else np.zeros((0, 0), "float32")

    def refit(self, epoch, network=None):
        """Fit the prior of ``network`` (default: the model being trained) to
        its current encodings; warn about bundles left as they were."""
        network = network if network is not None else self.model
        fitted = network.prior.fit(self.codes(network, epoch), self.labels)
        missed = sorted(set(range(network.prior.n_bundles)) - set(fitted))
        if missed:
            logger.warning(
                "fitted prior: bundle(s) %s have fewer than 2 finite encodings "
                "in the sample and keep their previous prior",
                ", ".join(str(b) for b in missed),
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.refit(epoch)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop training when a loss becomes NaN or infinite."""

    def __init__(self):
        super().__init__()
        self.bad = None

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            value = float(value)
            if not math.isfinite(value):
                self.bad = (key, value, batch)
                self.model.stop_training = True
                return


class EpochCheckpoint(keras.callbacks.Callback):
    """Write a resumable checkpoint and the history JSON after every epoch."""

    def __init__(
        self,
        checkpoint_dir,
        history,
        *,
        guard,
        history_path=None,
        extra_state=None,
        keep=1,
    ):
        super().__init__()
        self.dir = Path(checkpoint_dir)
        self.history = history
        self.guard = guard
        self.history_path = Path(history_path) if history_path else None
        self.extra_state = extra_state or {}
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.guard.bad is not None or not all(
            math.isfinite(float(v)) for v in logs.values()
        ):
            return
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        save_checkpoint(self.model, self.dir, epoch + 1, self.history, self.extra_state)
        if self.history_path is not None:
            write_json_atomic(self.history_path, {"epochs": epoch + 1, **self.history})


def write_atomic(path, write):
    """:func:`aae_tract.atomic.write_atomic` raising TrainingError."""
    return atomic.write_atomic(path, write, error=TrainingError)


def write_json_atomic(path, payload):
    """:func:`aae_tract.atomic.write_json_atomic` raising TrainingError."""
    return atomic.write_json_atomic(path, payload, error=TrainingError)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def optimizer_state(optimizer):
    """The optimizer's variables as a dict of NumPy arrays."""
    return {
        f"{i:04d}": np.asarray(keras.ops.convert_to_numpy(v))
        for i, v in enumerate(optimizer.variables)
    }


def restore_optimizer(optimizer, variables, state, name):
    """Build ``optimizer`` for ``variables`` and load ``state`` into it."""
    if not optimizer.built:
        optimizer.build(variables)
    if len(state) != len(optimizer.variables):
        raise TrainingError(
            f"checkpoint holds {len(state)} {name} optimizer variables, the model "
            f"needs {len(optimizer.variables)}: it was made by another configuration"
        )
    for i, var in enumerate(optimizer.variables):
        value = state[f"{i:04d}"]
        if tuple(value.shape) != tuple(var.shape):
            raise TrainingError(
                f"checkpoint {name} optimizer variable {i} has shape {value.shape}, "
                f"expected {tuple(var.shape)}"
            )
        var.assign(value)


def save_checkpoint(model, checkpoint_dir, epoch, history, extra_state=None):
    """Write a resumable checkpoint of ``model`` after ``epoch`` epochs."""
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"epoch-{epoch:04d}"
    model_path = directory / f"{stem}.keras"
    opt_path = directory / f"{stem}.optimizers.npz"

    write_atomic(model_path, model.save)

    arrays = {}
    for prefix, opt in (("ae", model.ae_optimizer), ("disc", model.disc_optimizer)):
        if opt is not None and opt.built:
            for key, value in optimizer_state(opt).items():
                arrays[f"{prefix}_{key}"] = value

    def write_optimizers(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomic(opt_path, write_optimizers)

    state = {
        "epoch": int(epoch),
        "model": model_path.name,
        "optimizers": opt_path.name,
        "history": history,
        **(extra_state or {}),
    }
    write_json_atomic(directory / CHECKPOINT_STATE, state)
    for old in directory.glob("epoch-*"):
        if not old.name.startswith(stem):
            _unlink_quietly(old)
    return directory / CHECKPOINT_STATE


def read_checkpoint_state(checkpoint_dir):
    """Read ``checkpoint.json`` of a checkpoint folder, or None if there is none."""
    path = Path(checkpoint_dir) / CHECKPOINT_STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        int(state["epoch"])
        state["model"], state["optimizers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"checkpoint state {path} is unreadable: {exc}") from exc
    return state


def load_optimizer_arrays(path):
    """Read the optimizer state file of a checkpoint (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"checkpoint optimizer state {path} is unreadable: {exc}"
        ) from exc
    ae = {k[3:]: v for k, v in arrays.items() if k.startswith("ae_")}
    disc = {k[5:]: v for k, v in arrays.items() if k.startswith("disc_")}
    return ae, disc
