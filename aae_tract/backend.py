"""Choosing the Keras backend and describing the compute device.

Keras reads its backend once, when it is first imported. The workflows call
:func:`set_backend` before anything imports Keras, so ``--backend torch`` and
``KERAS_BACKEND=torch`` in the environment behave the same.
"""

import logging
import os
import sys

from aae_tract.errors import AAETractError

logger = logging.getLogger(__name__)

SUPPORTED_BACKENDS = ("tensorflow", "torch", "jax")
TRAINABLE_BACKENDS = ("tensorflow", "torch", "jax")

#: Environment variables read by TensorFlow (and the absl and gRPC libraries
#: under it) when it is imported: these values keep its C++ start-up INFO and
#: WARNING lines (CPU instruction notices, oneDNN, ...) off stderr; errors
#: still print.
QUIET_NATIVE_LOGS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "ABSL_MIN_LOG_LEVEL": "2",
    "GRPC_VERBOSITY": "ERROR",
}
#: The same variables when every log is wanted (``--log_level DEBUG``).
VERBOSE_NATIVE_LOGS = {"TF_CPP_MIN_LOG_LEVEL": "0", "ABSL_MIN_LOG_LEVEL": "0"}


def quiet_native_logs(*, verbose=False):
    """Keep TensorFlow's C++ start-up logs quiet, unless the user chose otherwise.

    Sets each variable of :data:`QUIET_NATIVE_LOGS` (or, with ``verbose``,
    :data:`VERBOSE_NATIVE_LOGS`) that the environment does not already set:
    a value the user exported wins. Has an effect only before TensorFlow is
    imported; :mod:`aae_tract.model` calls it before importing Keras, so the
    Python API is as quiet as the commands.

    Parameters
    ----------
    verbose : bool, optional
        Ask for every log instead (the commands' ``--log_level DEBUG``).
    """
    for name, value in (VERBOSE_NATIVE_LOGS if verbose else QUIET_NATIVE_LOGS).items():
        os.environ.setdefault(name, value)


def set_backend(name=None):
    """Select the Keras backend for this process.

    Parameters
    ----------
    name : str, optional
        ``"tensorflow"``, ``"torch"`` or ``"jax"``. None or an empty string
        keeps ``KERAS_BACKEND`` from the environment (TensorFlow when unset).

    Returns
    -------
    str
        The backend in use.

    Raises
    ------
    AAETractError
        For an unknown name, or when Keras was already imported with another
        backend in this process.
    """
    if name:
        name = name.lower()
        if name not in SUPPORTED_BACKENDS:
            raise AAETractError(
                f"unknown Keras backend {name!r}: choose one of "
                f"{', '.join(SUPPORTED_BACKENDS)}"
            )
        if "keras" in sys.modules:
            current = sys.modules["keras"].backend.backend()
            if current != name:
                raise AAETractError(
                    f"Keras is already running with the {current!r} backend in "
                    f"this process; start a new process with KERAS_BACKEND={name}"
                )
        os.environ["KERAS_BACKEND"] = name
    return current_backend()


def current_backend():
    """Name of the Keras backend that is (or will be) used."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def describe_device():
    """Return a short description of the device Keras will compute on.

    Returns
    -------
    str
        For example ``"GPU (NVIDIA H100) via torch"`` or ``"CPU via tensorflow"``.
    """
    backend = current_backend()
    try:
        if backend == "tensorflow":
            quiet_native_logs()
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return f"GPU ({', '.join(g.name for g in gpus)}) via tensorflow"
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"GPU ({torch.cuda.get_device_name(0)}) via torch"
        elif backend == "jax":
            import jax

            devices = [d for d in jax.devices() if d.platform != "cpu"]
            if devices:
                return f"GPU ({devices[0].device_kind}) via jax"
    except Exception as exc:  # a broken GPU driver must not stop a CPU run
        logger.debug("could not query GPU devices: %s", exc)
    return f"CPU via {backend}"


#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 arithmetic.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Backends whose encoder, on a CPU with native bfloat16, measured faster in
#: bfloat16 than in float32 (``benchmarks/bench_label_speed.py --networks``;
#: doc/benchmarks.md, "Encoding in bfloat16": JAX's, compiled with XLA, was
#: slower).
BFLOAT16_BACKENDS = ("tensorflow", "torch")


def cpu_has_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX).

    Parameters
    ----------
    cpuinfo : str, optional
        The file listing the CPU's flags (Linux). Where it cannot be read
        (macOS, Windows) the answer is False.

    Returns
    -------
    bool
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)
    except OSError:
        pass
    return False


def fast_inference_precision():
    """The precision in which the encoder runs fastest here, as measured.

    Returns
    -------
    str
        ``"bfloat16"`` on a CPU with native bfloat16 under a backend of
        :data:`BFLOAT16_BACKENDS`, ``"float32"`` otherwise (also on a GPU,
        where it has not been measured).
    """
    backend = current_backend()
    if backend not in BFLOAT16_BACKENDS or not cpu_has_bfloat16():
        return "float32"
    if describe_device().startswith("GPU"):
        return "float32"
    return "bfloat16"
