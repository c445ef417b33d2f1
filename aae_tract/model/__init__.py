"""The conditional adversarial autoencoder: networks, losses, priors, training.

Importing this package imports Keras: select the backend first
(:func:`aae_tract.backend.set_backend` or ``KERAS_BACKEND``).
"""

from aae_tract.model.aae import ConditionalAAE
from aae_tract.model.config import AAEConfig
from aae_tract.model.losses import attribute_regularization
from aae_tract.model.metadata import ModelMetadata
from aae_tract.model.priors import GaussianMixturePrior, GaussianPrior, make_prior
from aae_tract.model.tract_aae import TractAAE

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
