"""FURY pictures made by the workflows, safely beside TensorFlow.

FURY renders through wgpu; on a machine without a GPU that is Mesa's lavapipe,
which crashes the process once TensorFlow is loaded in it (both bring their
own LLVM). When TensorFlow is loaded, pictures are therefore made by a child
Python process that never imports it: streamlines go through temporary
``.npy`` files (no pickle), everything else through JSON.

Two kinds of job:

``"comparison"``
    Generated streamlines (an array) beside the real streamlines of the
    bundle read from ``real_files`` (or alone when there are none).
``"files"``
    Tractogram files, one colour per label.
"""

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Longest a child process may take to render (seconds).
CHILD_TIMEOUT = 600
_CHILD = (
    "import sys; from aae_tract.workflows.picture import _child_main; "
    "_child_main(*sys.argv[1:])"
)


def load_lines(files, *, reference=None, space=None):
    """Streamlines (RAS+ mm) of ``files`` concatenated; None when none are readable.

    Parameters
    ----------
    files : list of str or Path
        Tractograms.
    reference : str, optional
        Reference anatomy for .tck/.trx files.
    space : dict, optional
        Space of the training data (:func:`aae_tract.io.space_from_sft`), the
        reference when ``reference`` is not given.
    """
    from aae_tract.errors import TractogramError
    from aae_tract.io import load_bundle, reference_from_space

    if reference is None and space:
        reference = reference_from_space(space)
    lines = []
    for path in files:
        try:
            sft = load_bundle(path, reference=reference)
        except TractogramError as exc:
            logger.warning("not shown in the picture: %s", exc)
            continue
        lines.extend(np.asarray(s, dtype=np.float32) for s in sft.streamlines)
    return lines or None


def comparison_job(generated, out_png, *, bundle, title, real_files=()):
    """A picture of generated streamlines beside the real bundle.

    Parameters
    ----------
    generated : ndarray, shape (N, n_points, 3)
        Generated streamlines, RAS+ mm.
    out_png : str or Path
        The picture to write.
    bundle : str
        Bundle name (colour, legend).
    title : str
        Start of the title, e.g. ``"AF_L at length 80 mm"``.
    real_files : sequence of path, optional
        Real tractograms of the bundle; none: the generated streamlines alone.
    """
    return {
        "kind": "comparison",
        "generated": np.asarray(generated, dtype=np.float32),
        "out_png": str(out_png),
        "bundle": str(bundle),
        "title": str(title),
        "real_files": [str(f) for f in real_files],
    }


def files_job(files, labels, out_png, **options):
    """A picture of tractogram files coloured by label.

    ``options`` go to :func:`aae_tract.viz.render_bundles` (``title``,
    ``size``, ``view``, ``max_streamlines``; JSON-able values).
    """
    return {
        "kind": "files",
        "files": [str(f) for f in files],
        "labels": [str(label) for label in labels],
        "out_png": str(out_png),
        "options": options,
    }


def render_jobs(jobs, *, reference=None, space=None):
    """Make the pictures of ``jobs``, in a child process when TensorFlow is loaded.

    Parameters
    ----------
    jobs : list of dict
        From :func:`comparison_job` and :func:`files_job`.
    reference, space : optional
        For reading tractogram files, see :func:`load_lines`.

    Returns
    -------
    list of Path or None
        Each picture, or None where none could be made (a warning says why).
    """
    shared = {
        "reference": None if reference is None else str(reference),
        "space": space,
    }
    if not jobs:
        return []
    if "tensorflow" not in sys.modules:
        return [_render(job, shared) for job in jobs]
    return _render_in_child(jobs, shared)


def _render(job, shared):
    from aae_tract.viz import render_bundles, render_comparison

    if job["kind"] == "files":
        tractograms = [
            load_lines([f], reference=shared["reference"], space=shared["space"]) or []
            for f in job["files"]
        ]
        options = dict(job.get("options") or {})
        if options.get("size") is not None:
            options["size"] = tuple(options["size"])
        return render_bundles(
            tractograms, job["out_png"], labels=job["labels"], **options
        )
    real = None
    if job["real_files"]:
        real = load_lines(
            job["real_files"], reference=shared["reference"], space=shared["space"]
        )
    if real:
        return render_comparison(
            real,
            job["generated"],
            job["out_png"],
            bundle=job["bundle"],
            title=f"{job['title']}: real vs generated",
        )
    return render_bundles(
        [job["generated"]],
        job["out_png"],
        labels=[job["bundle"]],
        title=f"{job['title']}: generated",
    )


def _render_in_child(jobs, shared):
    folder = Path(jobs[0]["out_png"]).parent
    with tempfile.TemporaryDirectory(dir=folder, prefix=".aae_tract_picture_") as tmp:
        specs = []
        for i, job in enumerate(jobs):
            spec = dict(job)
            if "generated" in spec:
                np.save(Path(tmp) / f"generated_{i}.npy", spec.pop("generated"))
            specs.append(spec)
        (Path(tmp) / "spec.json").write_text(json.dumps({"jobs": specs, **shared}))
        debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, tmp, "DEBUG" if debug else "WARNING"],
                stdout=subprocess.PIPE,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            logger.warning(
                "no picture was made: rendering took over %d s", CHILD_TIMEOUT
            )
            return [None] * len(jobs)
        if done.returncode != 0:
            logger.warning(
                "no picture was made: the rendering process failed (exit status %d)",
                done.returncode,
            )
            return [None] * len(jobs)
        lines = done.stdout.splitlines()[-len(jobs) :]
        out = [Path(line) if line.strip() else None for line in lines]
        return out + [None] * (len(jobs) - len(out))


def _child_main(folder, level="WARNING"):
    """Render the jobs of ``folder`` (spec.json, generated_<i>.npy).

    Prints one line per picture: its path, or an empty line when none was made.
    """
    logging.basicConfig(
        level=level, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    payload = json.loads((Path(folder) / "spec.json").read_text())
    shared = {"reference": payload.get("reference"), "space": payload.get("space")}
    for i, job in enumerate(payload["jobs"]):
        if job["kind"] == "comparison":
            job["generated"] = np.load(
                Path(folder) / f"generated_{i}.npy", allow_pickle=False
            )
        try:
            out = _render(job, shared)
        except Exception as exc:  # one bad picture must not lose the others
            logger.warning("no picture was made: %s", exc)
            out = None
        print("" if out is None else str(out), flush=True)
