"""The conditional adversarial autoencoder: networks, losses, priors, training.

Importing this package imports Keras: select the backend first
(:func:`aae_tract.backend.set_backend` or ``KERAS_BACKEND``). TensorFlow's
C++ start-up logs are kept quiet unless ``TF_CPP_MIN_LOG_LEVEL`` is set
(:func:`aae_tract.backend.quiet_native_logs`).
"""

from aae_tract.backend import quiet_native_logs

quiet_native_logs()  # before Keras imports TensorFlow

from aae_tract.model.aae import ConditionalAAE  # noqa: E402
from aae_tract.model.config import AAEConfig  # noqa: E402
from aae_tract.model.losses import attribute_regularization  # noqa: E402
from aae_tract.model.metadata import ModelMetadata  # noqa: E402
from aae_tract.model.priors import GaussianMixturePrior, GaussianPrior, make_prior  # noqa: E402
from aae_tract.model.tract_aae import TractAAE  # noqa: E402

__all__ = [
    "AAEConfig",
    "ConditionalAAE",
    "GaussianMixturePrior",
    "GaussianPrior",
    "ModelMetadata",
    "TractAAE",
    "attribute_regularization",
    "make_prior",
]
