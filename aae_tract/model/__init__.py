"""The conditional adversarial autoencoder: networks, losses, priors, training.

The names below are imported on first use, so that ``AAEConfig`` and
``ModelMetadata`` (which check options and read model files' records) come
without Keras, and a command can check its options before it pays for
importing Keras. Any of the others imports Keras: select the backend first
(:func:`aae_tract.backend.set_backend` or ``KERAS_BACKEND``). TensorFlow's
C++ start-up logs are kept quiet unless ``TF_CPP_MIN_LOG_LEVEL`` is set
(:func:`aae_tract.backend.quiet_native_logs`).
"""

import importlib

from aae_tract.backend import quiet_native_logs

quiet_native_logs()  # before Keras imports TensorFlow

#: Where each public name lives.
_MODULES = {
    "AAEConfig": "config",
    "ConditionalAAE": "aae",
    "GaussianMixturePrior": "priors",
    "GaussianPrior": "priors",
    "ModelMetadata": "metadata",
    "TractAAE": "tract_aae",
    "attribute_regularization": "losses",
    "make_prior": "priors",
}

__all__ = sorted(_MODULES)


def __getattr__(name):
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
