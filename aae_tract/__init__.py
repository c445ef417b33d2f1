"""aae_tract: a latent space of tractography streamlines.

A conditional adversarial autoencoder with attribute regularization learns
bundles of streamlines (resampled to a fixed number of points) in a latent space
conditioned on the bundle label, with latent dimension 0 tied to an attribute
(streamline length, or a per-subject value such as age). New streamlines are
generated for a requested bundle and attribute value.
"""

import os as _os

# pyproject.toml installs the top-level folders workflows/ and data_fetchers/ as
# aae_tract.workflows and aae_tract.data_fetchers. When this package is imported
# from a source checkout (e.g. ``python -m pytest`` run in the repository, which
# puts the checkout first on sys.path), find them there too.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and all(
    _os.path.isfile(_os.path.join(_checkout, sub, "__init__.py"))
    for sub in ("workflows", "data_fetchers")
):
    __path__.append(_checkout)  # noqa: F821 (set by the import system)

from aae_tract.errors import (  # noqa: E402
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
