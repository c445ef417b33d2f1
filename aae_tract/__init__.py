"""aae_tract: a latent space of tractography streamlines.

A conditional adversarial autoencoder with attribute regularization learns
bundles of streamlines (resampled to a fixed number of points) in a latent space
conditioned on the bundle label, with latent dimension 0 tied to an attribute
(streamline length, or a per-subject value such as age). New streamlines are
generated for a requested bundle and attribute value.
"""

from aae_tract.errors import (
    AAETractError,
    ConfigError,
    DatasetError,
    FetcherError,
    ModelFileError,
    TractogramError,
    TrainingError,
    UnknownBundleError,
)

__version__ = "0.1.0"

__all__ = [
    "AAETractError",
    "ConfigError",
    "DatasetError",
    "FetcherError",
    "ModelFileError",
    "TractogramError",
    "TrainingError",
    "UnknownBundleError",
    "__version__",
]
