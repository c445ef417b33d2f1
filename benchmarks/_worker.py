"""Run a benchmark's measurement in a fresh process and read its result.

Keras fixes its backend (and TensorFlow its devices) per process, so the
benchmarks that compare backends or device counts run themselves again with
``--worker``; the worker prints its numbers as one JSON line after
:data:`RESULT`.
"""

import json
import os
import subprocess
import sys

#: Prefix of the line a worker process prints its result on.
RESULT = "RESULT "


def report_result(payload):
    """Print ``payload`` as the worker's result line."""
    print(RESULT + json.dumps(payload), flush=True)


def run_worker(script, options, *, backend, what):
    """Run ``script --worker --name value ...`` with ``KERAS_BACKEND=backend``.

    Parameters
    ----------
    script : str
        The benchmark's own path (``__file__``).
    options : dict
        Command-line options of the worker, ``{name: value}``.
    backend : str
        Keras backend of the process.
    what : str
        The run, named in the error when it fails.

    Returns
    -------
    dict
        The worker's result.
    """
    command = [sys.executable, os.path.abspath(script), "--worker"]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [x for x in done.stdout.splitlines() if x.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-5:]
        raise SystemExit(f"{what} failed:\n" + "\n".join(tail))
    return json.loads(lines[-1][len(RESULT) :])
