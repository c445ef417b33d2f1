"""What every aae_tract workflow shares: outputs, logging, checks, backend.

The workflows stay thin: they resolve the output paths (refusing to
overwrite without ``--force``, as DIPY does), call the library and log one
line saying what was written. Values that only the command line has (counts
of generated streamlines, picture sizes, choices) are checked here; the
model's hyperparameters are checked once, by
:meth:`aae_tract.model.AAEConfig.validate`, whose messages name the options.
No workflow imports another: what two of them share is here or in the
library.
"""

import logging
import math
import os
import re
import sys
import threading
from pathlib import Path

from dipy.workflows.workflow import Workflow

from aae_tract.atomic import write_json_atomic  # noqa: F401 (used by the flows)
from aae_tract.errors import AAETractError

logger = logging.getLogger(__name__)

#: The word that stands for "no inputs" (the default data) on the command line.
DEFAULT_INPUTS_WORD = "default"

#: Loggers of libraries that are chatty at INFO; kept at WARNING unless DEBUG.
NOISY_LOGGERS = (
    "absl",
    "fury",
    "h5py",
    "matplotlib",
    "numexpr",
    "PIL",
    "tensorflow",
    "urllib3",
    "wgpu",
)

DEVICES = ("auto", "cpu", "gpu")

#: Tractogram formats whose files do not carry their space (``--reference``).
REFERENCE_FORMATS = (".tck", ".trx")


class _QuietLibraries(logging.Filter):
    """Drop INFO and DEBUG records of :data:`NOISY_LOGGERS` (not their warnings).

    A filter on the handler, so that no library logger is created before the
    library itself (wgpu insists on its own logger class).
    """

    def filter(self, record):
        if record.levelno >= logging.WARNING:
            return True
        top = record.name.split(".", 1)[0]
        return top not in NOISY_LOGGERS


class AAEWorkflow(Workflow):
    """Base class of the aae_tract workflows.

    Adds to DIPY's :class:`~dipy.workflows.workflow.Workflow` the log level
    chosen on the command line (DIPY's own ``--log_level`` lookup does not work
    on Python 3), and output handling for workflows whose outputs do not
    follow their inputs one to one.
    """

    #: Log level requested with ``--log_level`` (set by :mod:`.cli`); None
    #: leaves logging as it is.
    _log_level = None

    #: Whether the positional inputs may be left out on the command line
    #: (they then mean the default data).
    optional_inputs = False

    def _begin(self):
        """Apply the requested log level; quiet chatty libraries below DEBUG."""
        level = self._log_level
        if level is None:
            return
        root = logging.getLogger()
        root.setLevel(level)
        for handler in root.handlers:
            handler.setLevel(level)
            if level > logging.DEBUG and not any(
                isinstance(f, _QuietLibraries) for f in handler.filters
            ):
                handler.addFilter(_QuietLibraries())

    def _prepare_outputs(self, out_dir, names, *, overwrite=False):
        """Resolve output paths in ``out_dir``; refuse to overwrite without --force.

        Parameters
        ----------
        out_dir : str or Path
            Output folder ("" is the current folder); created when missing.
        names : dict
            Output key (e.g. ``"out_model"``) -> file name or path.
        overwrite : bool, optional
            Allow replacing existing outputs even without ``--force``.

        Returns
        -------
        dict or None
            Key -> Path, or None when an output exists and neither ``--force``
            nor ``overwrite`` allows replacing it (each such file is logged).
        """
        folder = Path(out_dir) if out_dir else Path(".")
        paths = {key: folder / name for key, name in names.items()}
        self.flat_outputs = [str(p) for p in paths.values()]
        self.last_generated_outputs = {k: str(p) for k, p in paths.items()}
        existing = [p for p in paths.values() if p.exists()]
        if existing:
            if self._force_overwrite or overwrite:
                for path in existing:
                    logger.info("%s exists and will be overwritten", path)
            else:
                for path in existing:
                    logger.warning("%s exists, use --force to overwrite", path)
                return None
        for path in paths.values():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AAETractError(
                    f"{path.parent}: cannot create the output folder ({exc})"
                ) from exc
        return paths


# --------------------------------------------------------------------------
# Checks of command-line values
# --------------------------------------------------------------------------


def check_int(name, value, *, minimum=1, maximum=None):
    """Return ``value`` as int; AAETractError when not in [minimum, maximum]."""
    try:
        number = int(value)
        ok = number == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise AAETractError(f"--{name} must be a whole number, got {value!r}")
    if number < minimum:
        raise AAETractError(f"--{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise AAETractError(f"--{name} must be at most {maximum}, got {number}")
    return number


def noise_or_default(name, value):
    """A generation noise option (``subject_noise``, ``placement_noise``):
    the sampling's default (``aae_tract.generate.DEFAULT``) when not given,
    else a finite number >= 0."""
    from aae_tract.generate import DEFAULT

    return DEFAULT if value is None else check_float(name, value, minimum=0)


def check_prior_spread_option(value):
    """``--prior_spread`` as a float above 0 and at most
    ``aae_tract.generate.MAX_PRIOR_SPREAD``."""
    from aae_tract.generate import MAX_PRIOR_SPREAD

    return check_float(
        "prior_spread", value, minimum=0, exclusive_min=True, maximum=MAX_PRIOR_SPREAD
    )


def sampling_for(model, sampling, noise, noise_scope, prior_spread=1.0):
    """The sampling a generating command uses, with the bank-only options
    checked against it.

    Parameters
    ----------
    model : TractAAE
    sampling : str or None
        ``--sampling`` as checked (None: the model's default,
        :func:`aae_tract.generate.default_sampling`).
    noise : float or None
        ``--noise``.
    noise_scope : str
        ``--noise_scope``.
    prior_spread : float
        ``--prior_spread`` as checked.

    Returns
    -------
    str
        ``"bank"`` or ``"prior"``.

    Raises
    ------
    AAETractError
        ``--noise`` or ``--noise_scope target`` with prior sampling: they
        set bank sampling's noise, which prior samples do not get; or
        ``--prior_spread`` other than 1 with bank sampling.
    """
    from aae_tract.generate import (
        BANK_BY_DEFAULT,
        PRIOR_BY_DEFAULT,
        bank_options_error,
        prior_options_error,
        resolve_sampling,
    )

    resolved = resolve_sampling(model, sampling)
    logger.info(
        "sampling: %s%s",
        resolved,
        " (the model's default)" if sampling is None else "",
    )
    if resolved == "prior":
        error = bank_options_error(
            noise,
            noise_scope,
            why="--sampling prior" if sampling is not None else PRIOR_BY_DEFAULT,
            remedy="add --sampling bank",
            names=("--noise", "--noise_scope target"),
        )
    else:
        error = prior_options_error(
            prior_spread,
            why="--sampling bank" if sampling is not None else BANK_BY_DEFAULT,
            remedy="add --sampling prior",
            name="--prior_spread",
        )
    if error is not None:
        raise error
    return resolved


def check_float(name, value, *, minimum=None, maximum=None, exclusive_min=False):
    """Return ``value`` as a finite float in range; AAETractError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AAETractError(f"--{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise AAETractError(f"--{name} must be a finite number, got {value!r}")
    if minimum is not None:
        if exclusive_min and number <= minimum:
            raise AAETractError(f"--{name} must be above {minimum:g}, got {number:g}")
        if not exclusive_min and number < minimum:
            raise AAETractError(
                f"--{name} must be at least {minimum:g}, got {number:g}"
            )
    if maximum is not None and number > maximum:
        raise AAETractError(f"--{name} must be at most {maximum:g}, got {number:g}")
    return number


def bad_value(name, value, problem):
    """Raise the one-line error for a bad command-line value."""
    raise AAETractError(f"--{name} {problem}, got {value!r}")


def check_view_option(view):
    """``--view``: a name in ``aae_tract.viz.VIEWS`` or ``auto``."""
    from aae_tract.viz import AUTO_VIEW, VIEWS

    return check_choice("view", view, (*VIEWS, AUTO_VIEW))


def check_choice(name, value, choices):
    """Return ``value`` (lower case) if it is one of ``choices``."""
    text = str(value).lower()
    if text not in choices:
        raise AAETractError(
            f"--{name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return text


def as_list(value):
    """A command-line value that may be one item, several or None, as a list."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def check_reference(files, reference):
    """Raise the command-line error for ``.tck``/``.trx`` files without ``--reference``.

    Parameters
    ----------
    files : list of str or Path
        Tractograms a command is about to read.
    reference : str or None
        The ``--reference`` value.

    Raises
    ------
    AAETractError
        Naming the first such file and the option to give.
    """
    if reference is not None:
        return
    for path in files:
        ext = Path(path).suffix.lower()
        if ext in REFERENCE_FORMATS:
            hint = " (or --reference same to use its own header)" * (ext == ".trx")
            raise AAETractError(
                f"{path}: a {ext} file needs a reference image for its space: "
                f"give --reference <NIfTI or .trk file in the same space>{hint}"
            )


def resolve_inputs(inputs):
    """Input paths of a command, or None for the default data.

    Parameters
    ----------
    inputs : str, Path, list or None
        Files, folders or glob patterns. None, an empty list or the word
        ``default`` mean the default data. A name of a dataset that
        ``aae_tract_fetch`` knows (``minimal_bundles``, ``phantom``,
        ``hcp842``) that is not an existing path stands for that dataset's
        folder (fetched when needed).

    Returns
    -------
    list of str or None
    """
    items = [str(item) for item in as_list(inputs)]
    if not items or items == [DEFAULT_INPUTS_WORD]:
        return None
    from aae_tract.data_fetchers import FETCHERS

    resolved = []
    for item in items:
        if not Path(item).exists() and item in FETCHERS:
            folder = FETCHERS[item]()
            logger.info("%s: using %s", item, folder)
            resolved.append(str(folder))
        else:
            resolved.append(item)
    return resolved


# --------------------------------------------------------------------------
# Backend and device
# --------------------------------------------------------------------------


def select_backend(backend=None, device="auto"):
    """Choose the Keras backend and device before anything imports Keras.

    Parameters
    ----------
    backend : str or None
        ``tensorflow``, ``torch`` or ``jax``; None keeps ``KERAS_BACKEND``.
    device : str
        ``auto`` (a GPU when one is visible), ``cpu`` (hide GPUs) or ``gpu``
        (fail when none is visible; checked by :func:`check_device`).

    Returns
    -------
    str
        The backend that will be used.
    """
    from aae_tract.backend import set_backend

    device = check_choice("device", device or "auto", DEVICES)
    if device == "cpu" and "keras" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["KERAS_TORCH_DEVICE"] = "cpu"
        os.environ["JAX_PLATFORMS"] = "cpu"
    return set_backend(backend or None)


def check_device(device):
    """After Keras is imported: the device description; error if a GPU is missing.

    Returns
    -------
    str
        E.g. ``"CPU via tensorflow"``.
    """
    from aae_tract.backend import current_backend, describe_device

    where = describe_device()
    if (device or "auto").lower() == "gpu" and not where.startswith("GPU"):
        raise AAETractError(
            f"--device gpu: no GPU is visible to the {current_backend()} backend "
            "(use --device cpu, or a GPU build of the backend)"
        )
    return where


# --------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------


def names_written(paths):
    """``a.trk, b.png`` (file names) and the folder they share, for a summary."""
    paths = [Path(p) for p in paths if p is not None]
    if not paths:
        return "nothing"
    folders = {p.parent.resolve() for p in paths}
    if len(folders) == 1:
        return f"{', '.join(p.name for p in paths)} in {folders.pop()}"
    return ", ".join(str(p) for p in paths)


# --------------------------------------------------------------------------
# Native library noise on stderr
# --------------------------------------------------------------------------

#: Lines that native libraries print on stderr however logging is set:
#: absl-style records of TensorFlow/XLA (``I0000 00:00:... port.cc:153] ...``,
#: printed before absl is initialised, so TF_CPP_MIN_LOG_LEVEL cannot stop
#: them), CPU feature notices, and Mesa's warning when XDG_RUNTIME_DIR is unset.
STDERR_NOISE = re.compile(
    rb"^\s*(WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|[IWE]\d{4} [\d:.]+\s+\d+ [\w./+-]+:\d+\]"
    rb"|To enable the following instructions:"
    rb"|error: XDG_RUNTIME_DIR is invalid or not set)"
)


class FilteredStderr:
    """Context manager: drop :data:`STDERR_NOISE` lines written to file descriptor 2.

    File descriptor 2 is pointed at a pipe; a thread forwards every other
    line (and ``\\r``-terminated progress updates) to the real stderr as it
    arrives.
    """

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(
            target=self._pump, args=(read_end, os.dup(self._saved)), daemon=True
        )
        self._thread.start()
        return self

    @staticmethod
    def _pump(read_end, out_fd):
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as src:
            with os.fdopen(out_fd, "wb", buffering=0) as dst:
                while chunk := src.read(65536):
                    pending += chunk
                    *lines, pending = re.split(rb"(?<=[\n\r])", pending)
                    for line in lines:
                        if not STDERR_NOISE.match(line):
                            dst.write(line)
                if pending and not STDERR_NOISE.match(pending):
                    dst.write(pending)

    def __exit__(self, *exc):
        try:
            sys.stderr.flush()
        finally:
            os.dup2(self._saved, 2)  # closes the pipe's last write end
            os.close(self._saved)
            self._thread.join(timeout=5)
        return False
