"""Console entry point of every aae_tract command.

Every script (``aae_tract_fetch``, ``aae_tract_train``, ``aae_tract_generate``,
``aae_tract_evaluate``, ``aae_tract_render``, ``aae_tract_label``) points at
:func:`run`, which picks the workflow from the script name, as
``dipy/workflows/cli.py`` does, and runs it through DIPY's ``run_flow``
(``--help``, ``--out_dir``, ``--force``, ``--log_level``, ``--log_file``).

Errors a user can cause end the command with one line on stderr,
``aae_tract_<name>: error: <message>``, and exit status 1; the traceback is
shown only with ``--log_level DEBUG``.
"""

import argparse
import contextlib
import importlib
import logging
import re
import sys
import traceback
from pathlib import Path

#: Script name -> (module, workflow class).
CLI_FLOWS = {
    "aae_tract_fetch": ("aae_tract.workflows.fetch", "FetchFlow"),
    "aae_tract_train": ("aae_tract.workflows.train", "TrainFlow"),
    "aae_tract_generate": ("aae_tract.workflows.generate", "GenerateFlow"),
    "aae_tract_evaluate": ("aae_tract.workflows.evaluate", "EvaluateFlow"),
    "aae_tract_render": ("aae_tract.workflows.render", "RenderFlow"),
    "aae_tract_label": ("aae_tract.workflows.label", "LabelFlow"),
}

#: Options a command no longer has -> why (said instead of argparse's
#: "unrecognized arguments").
REMOVED_OPTIONS = {
    "aae_tract_train": {
        "--mixed_precision": (
            "training computes in float32 (float16 never took effect, and the "
            "arc-length decoder, which sums every step of a streamline, needs "
            "float32)"
        ),
    },
}

#: DIPY's note of an option's default at the end of its help. It is left out
#: where the help says what happens without the option ("Without it: ..."),
#: which DIPY's note would contradict ("current directory" for a folder that
#: is not), and where it would only say "None".
_DEFAULT_NOTE = re.compile(r"\s*\(default:[^()]*\)\s*$")

#: Exit status of a command stopped by an error.
EXIT_ERROR = 1
#: Exit status of a command interrupted with Ctrl-C.
EXIT_INTERRUPTED = 130


class _ProbeError(Exception):
    pass


class _Probe(argparse.ArgumentParser):
    """A parser that raises instead of printing usage and exiting."""

    def error(self, message):
        raise _ProbeError(message)


def _early_level(argv):
    """``--log_level`` before the workflow parses anything."""
    probe = _Probe(add_help=False)
    probe.add_argument("--log_level", default="INFO")
    try:
        known, _ = probe.parse_known_args(argv)
    except _ProbeError:
        return "INFO"
    return known.log_level


def _log_level(name):
    level = logging.getLevelName(str(name).upper())
    if not isinstance(level, int):
        raise ValueError(
            f"unknown --log_level {name!r}: choose one of CRITICAL, ERROR, "
            "WARNING, INFO, DEBUG"
        )
    return level


def _flow_parser(flow):
    """DIPY's argument parser class, with aae_tract's adjustments to the help.

    Inputs that may be left out (``flow.optional_inputs``: the default data)
    are shown and parsed as optional (``[inputs ...]``), and DIPY's
    "(default: ...)" note is dropped where the help explains the default.
    """
    from dipy.workflows.base import IntrospectiveArgumentParser

    optional_inputs = getattr(flow, "optional_inputs", False)

    class FlowParser(IntrospectiveArgumentParser):
        def add_workflow(self, workflow):
            sub_flows = super().add_workflow(workflow)
            for action in self._actions:
                text = action.help or ""
                if "Without it" in text or text.endswith("(default: None)"):
                    action.help = _DEFAULT_NOTE.sub("", text)
                else:
                    action.help = text.replace("(default:  ", "(default: ")
                if optional_inputs and not action.option_strings:
                    if action.nargs == "+":
                        action.nargs = "*"
            return sub_flows

    return FlowParser


@contextlib.contextmanager
def _parser_for(flow):
    """Make DIPY's ``run_flow`` build :func:`_flow_parser`'s parser for ``flow``."""
    from dipy.workflows import flow_runner

    saved = flow_runner.IntrospectiveArgumentParser
    flow_runner.IntrospectiveArgumentParser = _flow_parser(flow)
    try:
        yield
    finally:
        flow_runner.IntrospectiveArgumentParser = saved


def _removed_option(prog, argv):
    """The error message for an option ``prog`` no longer has, or None."""
    removed = REMOVED_OPTIONS.get(prog, {})
    for arg in argv:
        option = str(arg).split("=", 1)[0]
        if option in removed:
            return f"{option} was removed: {removed[option]}"
    return None


def _quiet_backends(level):
    """Keep TensorFlow's C++ start-up logs out of the output unless debugging."""
    from aae_tract.backend import quiet_native_logs

    quiet_native_logs(verbose=level <= logging.DEBUG)


def _fail(prog, message, *, show_traceback):
    if show_traceback:
        traceback.print_exc(file=sys.stderr)
    message = " ".join(str(message).split()) or "failed"
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def main(prog, argv):
    """Run the command ``prog`` with arguments ``argv``; return the exit status.

    Parameters
    ----------
    prog : str
        Script name, e.g. ``"aae_tract_train"``.
    argv : list of str
        Command-line arguments (without the script name).

    Returns
    -------
    int
        0 on success, 1 on an error, 130 when interrupted; ``--help`` and
        command-line syntax errors exit through argparse (0 and 2).
    """
    from aae_tract.errors import AAETractError

    if prog not in CLI_FLOWS:
        return _fail(
            prog,
            f"unknown command; aae_tract commands are {', '.join(CLI_FLOWS)}",
            show_traceback=False,
        )
    if "--version" in argv:
        from dipy import __version__ as dipy_version

        from aae_tract import __version__

        print(f"{prog} (aae_tract {__version__}, DIPY {dipy_version})")
        return 0
    level_name = _early_level(argv)
    try:
        level = _log_level(level_name)
    except ValueError as exc:
        return _fail(prog, exc, show_traceback=False)
    debug = level <= logging.DEBUG
    removed = _removed_option(prog, argv)
    if removed:
        return _fail(prog, removed, show_traceback=False)
    _quiet_backends(level)

    from dipy.workflows.flow_runner import run_flow

    module, name = CLI_FLOWS[prog]
    flow = getattr(importlib.import_module(module), name)()
    flow._log_level = level

    from aae_tract.workflows.base import FilteredStderr

    quiet = contextlib.nullcontext() if debug else FilteredStderr()
    saved_argv = sys.argv
    sys.argv = [prog, *argv]
    try:
        with _parser_for(flow), quiet:
            run_flow(flow)
    except (AAETractError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"
        else:
            message = str(exc) or type(exc).__name__
        return _fail(prog, message, show_traceback=debug)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        hint = {
            "torch": ' (install the torch extra: pip install "aae_tract[torch]")',
            "jax": ' (install the jax extra: pip install "aae_tract[jax]")',
            "jaxlib": ' (install the jax extra: pip install "aae_tract[jax]")',
            "trx": ' (install the trx extra: pip install "aae_tract[trx]")',
        }.get(missing.split(".")[0], " (a package this needs is missing)")
        return _fail(prog, f"{exc}{hint}", show_traceback=debug)
    except KeyboardInterrupt:
        hint = " (continue with --resume)" if prog == "aae_tract_train" else ""
        print(f"{prog}: interrupted{hint}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        sys.argv = saved_argv
    return 0


def run():
    """Run the aae_tract command named by the script (``sys.argv[0]``)."""
    prog = Path(sys.argv[0]).name
    if prog.endswith(".py"):
        prog = prog[:-3]
    sys.exit(main(prog, sys.argv[1:]))
