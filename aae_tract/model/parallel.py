"""Data-parallel training over several devices, on each backend's own engine.

``TractAAE.fit(..., devices=N)`` (``aae_tract_train --devices N``) trains one
model on ``N`` devices: every device holds a copy of the weights, each global
batch of ``batch_size`` streamlines is split into ``N`` equal parts, and both
players' gradients are averaged over the devices before each step, so a run
on ``N`` devices follows the run on one device with the same global batch.
The engine is the backend's own:

- JAX: :class:`keras.distribution.DataParallel` over a mesh of the local
  devices (all processes' devices after ``keras.distribution.initialize()``,
  which wraps ``jax.distributed.initialize``, for several machines). XLA
  compiles the step for the whole global batch and inserts the reductions, so
  every loss, the attribute-regularization pairs included, is the loss of the
  global batch.
- TensorFlow: :class:`tf.distribute.MirroredStrategy` over the local GPUs (or
  the logical CPU devices when there is no GPU). The network and both
  optimizers are created in its scope; each replica's losses are divided by
  the number of replicas and Keras's optimizer sums the gradients.
- torch: one process per device, launched by ``torchrun``
  (``torch.distributed``; NCCL on GPUs, gloo on CPUs). Each process reads its
  part of every global batch; after each backward pass both players'
  gradients are all-reduced (averaged) before the optimizer steps, and the
  weights of rank 0 are broadcast before training. Only rank 0 writes
  checkpoints, the model and pictures.

With TensorFlow and torch the attribute-regularization (AR) pairs are those
of one replica's part of the batch (``batch_size / N`` streamlines), not of
the global batch; the other losses are means over streamlines, so their
average over the replicas is the global batch's. ``doc/benchmarks.md``
measures what this does to the AR loss. Random numbers: each torch process
draws its own (its seed states offset by its rank); with TensorFlow the
replicas share one seed generator and draw the same prior samples, noise and
dropout masks, so the discriminator sees ``batch_size / N`` distinct prior
samples a step.

The global batch is split evenly: ``batch_size`` must be a multiple of ``N``,
and the last, smaller batch of an epoch drops the rows that do not divide.
"""

import contextlib
import logging
import os

import keras
import numpy as np

from aae_tract.errors import ConfigError

logger = logging.getLogger(__name__)


def torch_world():
    """``(rank, world_size)`` of this process under ``torchrun``: ``(0, 1)`` else."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def join_hosts():
    """Join the other JAX processes of a run on several machines (once).

    When ``KERAS_DISTRIBUTION_NUM_PROCESSES`` is above 1 (with
    ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``,
    see :func:`keras.distribution.initialize`), calls
    ``keras.distribution.initialize()``, which calls
    ``jax.distributed.initialize``; CPU devices then exchange gradients
    through gloo. It must run before JAX computes anything: the training
    command calls it first. Does nothing otherwise.
    """
    if keras.backend.backend() != "jax":
        return
    text = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "") or "1"
    try:
        processes = int(text)
    except ValueError:
        raise ConfigError(
            f"KERAS_DISTRIBUTION_NUM_PROCESSES must be an integer, got {text!r}"
        ) from None
    if processes <= 1:
        return
    import jax

    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize()
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        raise ConfigError(
            f"cannot join the {processes} JAX processes "
            "(KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES, "
            f"KERAS_DISTRIBUTION_PROCESS_ID): {exc}"
        ) from exc


def process_shard():
    """``(rank, world)``: this process's part of every global batch.

    ``(0, 1)`` for one process; with torch under ``torchrun`` and with JAX
    on several processes, each process reads rows ``rank::world`` of each
    global batch.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return torch_world()
    if backend == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


def is_main_process():
    """Whether this process writes files (rank 0, or the only process)."""
    if keras.backend.backend() == "torch":
        return torch_world()[0] == 0
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    return True


def _local_devices():
    """The devices this backend would train on: GPUs when any, else CPUs."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return list(jax.devices())  # every process's, after join_hosts()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
    return []


def resolve_devices(devices):
    """The number of devices a ``devices`` option asks for.

    Parameters
    ----------
    devices : int, str or None
        ``None``, ``1`` or ``"1"``: one device. An integer ``N`` (or its
        string): ``N`` devices. ``"all"``: every device there is (with torch:
        every process ``torchrun`` started).

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        For a value that is not a positive integer or ``all``, more devices
        than there are, or, with torch, a number that is not the number of
        processes ``torchrun`` started.
    """
    if devices is None:
        return 1
    text = str(devices).strip().lower()
    backend = keras.backend.backend()
    join_hosts()
    if backend == "torch":
        _, world = torch_world()
        wanted = world if text == "all" else _positive(text)
        if world > 1:
            _torch_local_device()
        if wanted != world:
            raise ConfigError(
                f"devices={devices} with torch needs {wanted} processes, one per "
                f"device: launch with 'torchrun --nproc_per_node {wanted} -m "
                f"aae_tract.workflows.train ... --devices {wanted}' (this is "
                f"{world} process{'es' if world > 1 else ''})"
            )
        return wanted
    if text == "all":
        return max(len(_local_devices()), 1)
    wanted = _positive(text)
    if backend == "jax" and process_shard()[1] > 1 and wanted != len(_local_devices()):
        raise ConfigError(
            f"devices={devices}: a JAX run on {process_shard()[1]} processes "
            f"trains on all their devices ({len(_local_devices())}): use 'all'"
        )
    if wanted > 1:
        there = len(_local_devices())
        if wanted > there:
            raise ConfigError(
                f"devices={devices}: the {backend} backend sees {there} "
                f"device{'s' if there != 1 else ''}"
            )
    return wanted


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text:
        raise ConfigError(f"devices must be a positive integer or 'all', got {text!r}")
    return value


def check_batch(batch_size, n_devices):
    """Raise ConfigError unless ``batch_size`` splits evenly over the devices."""
    if n_devices > 1 and batch_size % n_devices:
        raise ConfigError(
            f"batch_size {batch_size} does not split evenly over {n_devices} "
            f"devices: use a multiple of {n_devices}"
        )


@contextlib.contextmanager
def replicated(n_devices):
    """Scope in which the network, its optimizers and ``fit()`` are replicated.

    Parameters
    ----------
    n_devices : int
        From :func:`resolve_devices`; 1 gives an empty scope.

    Yields
    ------
    str
        What the scope is, for the log (e.g. ``"2 devices (JAX DataParallel)"``).
    """
    backend = keras.backend.backend()
    if n_devices <= 1:
        yield "1 device"
        return
    if backend == "jax":
        devices = keras.distribution.list_devices()[:n_devices]
        # each process reads its own part of every batch (process_shard)
        distribution = keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=False
        )
        with distribution.scope():
            yield f"{n_devices} devices (JAX DataParallel)"
    elif backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices=_local_devices()[:n_devices])
        with strategy.scope():
            yield f"{n_devices} devices (TensorFlow MirroredStrategy)"
    elif backend == "torch":
        _init_torch_group()
        yield f"{n_devices} processes (torch.distributed)"
    else:  # pragma: no cover - the trainable backends are the three above
        raise ConfigError(f"no data-parallel training with the {backend} backend")


def _torch_local_device():
    """Make this process's GPU (``LOCAL_RANK``) torch's current device.

    Keras's torch backend puts variables on the current CUDA device, so this
    must run before the model is built: :func:`resolve_devices` calls it, and
    the training command calls that before building the model.
    """
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def _init_torch_group():
    """Join the process group ``torchrun`` set up (once)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    _torch_local_device()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def seed_states(network):
    """The state variables of every seed generator of ``network``.

    The model's own (prior samples, posterior and texture noise) and those of
    its layers (dropout), in a fixed order.
    """
    states = [network.seed_generator.state]
    for layer in network._flatten_layers(include_self=False):
        for generator in getattr(layer, "_seed_generators", ()):
            states.append(generator.state)
    return states


def torch_offset_seeds(network, rank):
    """Give process ``rank`` its own random numbers (rank 0 keeps its own).

    Every process starts from rank 0's seed states; without an offset each
    would draw the same prior samples, noise and dropout masks, and the
    discriminator would see ``B / N`` distinct prior samples a step, not
    ``B``.
    """
    if rank == 0:
        return
    for state in seed_states(network):
        value = np.asarray(keras.ops.convert_to_numpy(state))
        value = value.copy()
        value[0] = value[0] + np.asarray(1_000_003 * rank, dtype=value.dtype)
        state.assign(value)


def torch_all_reduce_mean(tensors):
    """Average torch tensors over the processes, in place (one call)."""
    import torch
    import torch.distributed as dist

    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    start = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[start : start + n].view_as(t))
        start += n


def torch_broadcast_weights(network):
    """Give every process rank 0's weights."""
    import torch.distributed as dist

    for variable in network.weights:
        dist.broadcast(variable.value.data, src=0)


def torch_replicas():
    """The number of torch processes training together (1 outside torchrun)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def shard_rows(rows, rank, world):
    """The part of a batch's ``rows`` that process ``rank`` of ``world`` reads."""
    rows = np.asarray(rows)
    return rows[rank::world] if world > 1 else rows
