"""Exceptions raised by aae_tract.

Every error that a user can cause (a missing or corrupt file, a bundle name the
model does not know, a value out of range) is raised as a subclass of
:class:`AAETractError`, with a message that names the file or value and the
problem. Command-line workflows print that message on one line and exit with a
non-zero status.
"""


class AAETractError(Exception):
    """Base class of every error aae_tract raises on purpose."""


class ConfigError(AAETractError, ValueError):
    """An option value that cannot be used (negative count, unknown name, ...)."""


class TractogramError(AAETractError, ValueError):
    """A tractogram file cannot be used (missing, unknown format, corrupt, empty)."""


class DatasetError(AAETractError, ValueError):
    """The inputs do not make a usable dataset (no bundles, bad table, ...)."""


class ModelFileError(AAETractError, ValueError):
    """A model file is missing, corrupt, unsafe or does not match the request."""


class UnknownBundleError(AAETractError, KeyError):
    """A bundle name the model was not trained on."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FetcherError(AAETractError, RuntimeError):
    """A dataset could not be fetched (offline, checksum mismatch, unsafe archive)."""


class TrainingError(AAETractError, RuntimeError):
    """Training had to stop (non-finite loss, unusable checkpoint)."""
