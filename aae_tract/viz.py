"""Pictures of bundles (FURY offscreen rendering) and plots (matplotlib).

Rendering goes through FURY 2 (pygfx on wgpu). A machine without a GPU needs a
software Vulkan driver (Debian/Ubuntu: ``mesa-vulkan-drivers``, which provides
lavapipe). Where no wgpu adapter can be had, :func:`render_bundles` and
:func:`render_comparison` log a warning "no picture was made: <reason>" and
return ``None``, so a command that renders as a side job still writes its
other outputs. :func:`adapter_problem` says beforehand whether rendering works.

Pictures are in RAS+ millimetres, on a white background, with an orthographic
camera fitted to the streamlines and a small R/A/S orientation marker. Each
bundle name keeps its colour in every picture (:func:`bundle_colors`).

The matplotlib figures (:func:`plot_training_curves`, :func:`plot_latent_space`,
:func:`plot_evaluation`) live in :mod:`aae_tract.plots` and are re-exported
here.
"""

import functools
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from aae_tract.errors import TractogramError
from aae_tract.plots import (
    _new_figure,
    _save_figure,
    bundle_colors,
    plot_evaluation,
    plot_latent_space,
    plot_training_curves,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VIEWS",
    "adapter_problem",
    "bundle_colors",
    "plot_evaluation",
    "plot_latent_space",
    "plot_training_curves",
    "render_bundles",
    "render_comparison",
]

#: Named camera directions: the direction the camera looks along, in RAS+.
#: "oblique" looks from the left, slightly behind and above the bundles.
VIEWS = {
    "oblique": (1.0, 0.6, -0.5),
    "left": (1.0, 0.0, 0.0),
    "right": (-1.0, 0.0, 0.0),
    "superior": (0.0, 0.0, -1.0),
    "inferior": (0.0, 0.0, 1.0),
    "anterior": (0.0, -1.0, 0.0),
    "posterior": (0.0, 1.0, 0.0),
}
_BACKGROUND = (1.0, 1.0, 1.0, 1.0)
# Render at twice the size and downsample (smooth lines) unless there are so
# many segments that a software renderer would take long.
_PIXEL_RATIO = 2
_SUPERSAMPLE_MAX_SEGMENTS = 200_000
_FIT_MARGIN = 1.1
_NO_ADAPTER_HINT = (
    "install a GPU driver, or on Linux without a GPU a software Vulkan driver "
    "(Debian/Ubuntu: mesa-vulkan-drivers)"
)


# --------------------------------------------------------------------------
# Rendering beside TensorFlow
# --------------------------------------------------------------------------
# Mesa's software Vulkan driver (lavapipe) and TensorFlow each bring their own
# LLVM; rendering in a process where TensorFlow is loaded crashes it. Pictures
# are then made by a child Python process that never imports TensorFlow:
# streamlines travel as .npy files (no pickle), options as JSON.

_CHILD_ENV = "AAE_TRACT_RENDER_CHILD"
_CHILD_TIMEOUT = 600


def _needs_child():
    return "tensorflow" in sys.modules and os.environ.get(_CHILD_ENV) != "1"


def _render_in_child(kind, groups, out_png, options):
    """Render ``groups`` (lists of (k, 3) arrays) with ``kind`` in a child process."""
    out_png = Path(out_png).resolve()
    with tempfile.TemporaryDirectory(prefix="aae_tract_render_") as tmp:
        folder = Path(tmp)
        for i, lines in enumerate(groups):
            points = (
                np.concatenate(lines).astype(np.float32)
                if lines
                else np.zeros((0, 3), np.float32)
            )
            offsets = np.cumsum([0] + [len(line) for line in lines]).astype(np.int64)
            np.save(folder / f"points_{i}.npy", points)
            np.save(folder / f"offsets_{i}.npy", offsets)
        spec = {
            "kind": kind,
            "n_groups": len(groups),
            "out_png": str(out_png),
            "options": options,
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ, **{_CHILD_ENV: "1"})
        try:
            done = subprocess.run(
                [sys.executable, "-m", "aae_tract.viz", str(folder)],
                env=env,
                capture_output=True,
                text=True,
                timeout=_CHILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            _no_picture(f"rendering took over {_CHILD_TIMEOUT} s")
            return None
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
        _no_picture(
            f"the rendering process failed (exit status {done.returncode}) {tail[0]}"
        )
        return None
    written = done.stdout.strip().splitlines()[-1:] or [""]
    return Path(written[0]) if written[0] else None


def _child_main(folder):
    """Entry point of the rendering child process (``python -m aae_tract.viz``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    folder = Path(folder)
    spec = json.loads((folder / "spec.json").read_text())
    groups = []
    for i in range(spec["n_groups"]):
        points = np.load(folder / f"points_{i}.npy", allow_pickle=False)
        offsets = np.load(folder / f"offsets_{i}.npy", allow_pickle=False)
        groups.append([points[a:b] for a, b in zip(offsets[:-1], offsets[1:])])
    options = spec["options"]
    if options.get("size") is not None:
        options["size"] = tuple(options["size"])
    if spec["kind"] == "comparison":
        out = render_comparison(groups[0], groups[1], spec["out_png"], **options)
    else:
        out = render_bundles(groups, spec["out_png"], **options)
    print("" if out is None else str(out), flush=True)


# --------------------------------------------------------------------------
# Adapter check
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _probe_adapter():
    if _needs_child():
        return _probe_adapter_in_child()
    try:
        import wgpu
    except Exception as exc:  # ImportError, or a broken native library
        return f"wgpu cannot be imported ({type(exc).__name__}: {exc})"
    try:
        import fury.actor  # noqa: F401
        import fury.window  # noqa: F401
    except Exception as exc:
        return f"FURY cannot be imported ({type(exc).__name__}: {exc})"
    try:
        adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception as exc:
        return f"no wgpu adapter ({type(exc).__name__}: {exc}); {_NO_ADAPTER_HINT}"
    if adapter is None:
        return f"no wgpu adapter was found; {_NO_ADAPTER_HINT}"
    info = getattr(adapter, "info", None) or {}
    logger.debug("wgpu adapter: %s", dict(info))
    return None


def _probe_adapter_in_child():
    code = (
        "from aae_tract.viz import adapter_problem; "
        "print(adapter_problem() or '', end='')"
    )
    env = dict(os.environ, **{_CHILD_ENV: "1"})
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "probing for a wgpu adapter took over 120 s"
    if done.returncode != 0:
        return f"probing for a wgpu adapter failed (exit status {done.returncode})"
    return done.stdout.strip() or None


def adapter_problem():
    """Say why FURY pictures cannot be rendered here, or None when they can.

    The answer is found once per process (importing FURY and asking wgpu for
    an adapter) and remembered.

    Returns
    -------
    str or None
        A one-line reason (no wgpu, no FURY, no adapter), or None.
    """
    return _probe_adapter()


def _no_picture(reason):
    logger.warning("no picture was made: %s", reason)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def _is_tractogram_object(obj):
    return hasattr(obj, "streamlines") and hasattr(obj, "to_rasmm")


def _streamlines_of(obj, what):
    """Finite float32 (k, 3) arrays (k >= 2) in RAS+ mm from one tractogram."""
    if _is_tractogram_object(obj):
        from dipy.io.stateful_tractogram import StatefulTractogram

        sft = StatefulTractogram.from_sft(obj.streamlines, obj)
        sft.to_rasmm()
        sft.to_center()
        lines = sft.streamlines
    elif isinstance(obj, np.ndarray) and obj.ndim == 3:
        lines = list(obj)
    else:
        lines = obj
    try:
        arrays = [np.asarray(s, dtype=np.float32) for s in lines]
    except (TypeError, ValueError) as exc:
        raise TractogramError(f"{what} is not a set of streamlines: {exc}") from exc
    kept = []
    for arr in arrays:
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise TractogramError(
                f"{what} holds a streamline of shape {arr.shape}; expected (k, 3)"
            )
        if len(arr) >= 2 and np.isfinite(arr).all():
            kept.append(arr)
    if len(kept) < len(arrays):
        logger.info(
            "%s: %d streamline(s) with fewer than 2 points or non-finite "
            "coordinates are not drawn",
            what,
            len(arrays) - len(kept),
        )
    return kept


def _as_tractogram_list(tractograms):
    """A single tractogram (SFT, (N, P, 3) array, list of (k, 3)) -> [it]."""
    if _is_tractogram_object(tractograms):
        return [tractograms]
    if isinstance(tractograms, np.ndarray):
        return [tractograms]
    if type(tractograms).__name__ == "ArraySequence":
        return [tractograms]
    items = list(tractograms)
    if items and all(
        isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[-1] == 3 for x in items
    ):
        return [items]
    return items


def _subsample(groups, max_streamlines, seed=0):
    """Keep at most ``max_streamlines`` in all, the same fraction of each group."""
    total = sum(len(lines) for lines, _ in groups)
    if max_streamlines is None or total <= max_streamlines:
        return groups
    fraction = max_streamlines / total
    rng = np.random.default_rng(seed)
    out = []
    for lines, color in groups:
        n = max(1, int(round(len(lines) * fraction))) if lines else 0
        keep = np.sort(rng.choice(len(lines), size=n, replace=False)) if n else []
        out.append(([lines[i] for i in keep], color))
    logger.info("Drawing %d of %d streamlines", sum(len(g[0]) for g in out), total)
    return out


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _view_frame(view):
    """Unit (forward, up, right) vectors of the camera for a view."""
    if isinstance(view, str):
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; choose from {sorted(VIEWS)}")
        view = VIEWS[view]
    forward = np.asarray(view, dtype=float).reshape(3)
    norm = np.linalg.norm(forward)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"view direction must be a non-zero 3-vector, got {view}")
    forward /= norm
    up = np.array([0.0, 0.0, 1.0])  # superior is up on screen
    if abs(forward @ up) > 0.95:  # looking along S-I: anterior is up
        up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return forward, up, right


def _fit(points, frame, aspect):
    """Camera target, width and height that frame ``points`` tightly."""
    forward, up, right = frame
    u, v = points @ right, points @ up
    w = float(u.max() - u.min()) or 1.0
    h = float(v.max() - v.min()) or 1.0
    w, h = w * _FIT_MARGIN, h * _FIT_MARGIN
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    depth_center = float((points @ forward).mean())
    target = (
        right * (u.max() + u.min()) / 2 + up * (v.max() + v.min()) / 2
    ) + forward * depth_center
    depth = float(np.ptp(points @ forward)) + max(w, h)
    return target, w, h, depth


def _make_camera(target, width, height, depth, frame):
    """An orthographic pygfx camera that keeps its fit when FURY resizes."""
    import pygfx as gfx

    forward, up, _ = frame

    class _FittedCamera(gfx.PerspectiveCamera):
        # FURY re-fits every camera on resize: to the bounding sphere of a
        # scene with several objects, or to the viewport size in pixels for a
        # scene with one. This camera keeps the tight fit computed from the
        # streamlines: re-fits are ignored and width/height are fixed.
        width = property(lambda self: width, lambda self, value: None)
        height = property(lambda self: height, lambda self, value: None)

        def show_object(self, *args, **kwargs):
            self._apply_fit()

        def _apply_fit(self):
            self.world.reference_up = up
            self.world.position = target - forward * depth
            self.look_at(target)
            self.depth_range = (0.05 * depth, 2.0 * depth)
            self.flag_update()

    camera = _FittedCamera(0)  # fov 0: orthographic
    camera._apply_fit()
    return camera


def _render_panels(panels, *, size, view, thickness):
    """Render panels side by side; RGBA uint8 array of ``size`` (w, h).

    ``panels`` is a list of panels, each a list of (streamlines, rgb) groups.
    All panels share one camera fit, so they are drawn at the same scale.
    """
    from fury import actor, window

    frame = _view_frame(view)
    points = np.concatenate(
        [np.concatenate(lines) for panel in panels for lines, _ in panel if lines]
    ).astype(float)
    n_segments = len(points) - sum(len(g[0]) for panel in panels for g in panel)
    n_panels = len(panels)
    panel_w, panel_h = size[0] / n_panels, size[1]
    target, width, height, depth = _fit(points, frame, panel_w / panel_h)

    scenes, cameras = [], []
    for panel in panels:
        scene = window.Scene(background=_BACKGROUND)
        for lines, color in panel:
            if lines:
                scene.add(
                    actor.streamlines(
                        lines,
                        colors=tuple(float(c) for c in color),
                        thickness=thickness,
                        outline_thickness=max(0.5, thickness / 3),
                        outline_color=(0.1, 0.1, 0.1),
                        enable_picking=False,
                    )
                )
        scenes.append(scene)
        cameras.append(_make_camera(target, width, height, depth, frame))
    show_m = window.ShowManager(
        scene=scenes,
        camera=cameras,
        screen_config=[1] * n_panels,
        size=(int(size[0]), int(size[1])),
        window_type="offscreen",
        pixel_ratio=_PIXEL_RATIO if n_segments <= _SUPERSAMPLE_MAX_SEGMENTS else 1,
        enable_events=False,
        title="aae_tract",
    )
    try:
        show_m.render()
        show_m.window.draw()
        rgba = np.asarray(show_m.snapshot(fname=None))
    finally:
        show_m.close()
    if rgba.ndim != 3 or rgba.shape[2] < 3:
        raise RuntimeError(f"the renderer returned an image of shape {rgba.shape}")
    if rgba.shape[2] == 3:
        rgba = np.dstack([rgba, np.full(rgba.shape[:2], 255, np.uint8)])
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgba[..., :4]), "RGBA")
    image = image.resize((int(size[0]), int(size[1])), Image.Resampling.LANCZOS)
    return np.asarray(image), frame


def _auto_thickness(n_streamlines):
    if n_streamlines <= 300:
        return 2.5
    if n_streamlines <= 3000:
        return 1.8
    return 1.2


def _draw_orientation(fig, rect, frame):
    """Small R/A/S arrows showing how the RAS+ axes appear on screen."""
    _, up, right = frame
    ax = fig.add_axes(rect)
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.axis("off")
    for axis, name, color in (
        ((1.0, 0.0, 0.0), "R", "#c0392b"),
        ((0.0, 1.0, 0.0), "A", "#27ae60"),
        ((0.0, 0.0, 1.0), "S", "#2e6fd1"),
    ):
        dx, dy = 0.8 * float(np.dot(axis, right)), 0.8 * float(np.dot(axis, up))
        if math.hypot(dx, dy) < 0.15:  # axis points at (or away from) the viewer
            ax.plot(0, 0, "o", color=color, markersize=4)
            ax.text(0.12, 0.12, name, color=color, fontsize=8, fontweight="bold")
            continue
        ax.annotate(
            "",
            xy=(dx, dy),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.3},
        )
        ax.text(
            dx * 1.3,
            dy * 1.3,
            name,
            color=color,
            fontsize=8,
            fontweight="bold",
            ha="center",
            va="center",
        )


def _compose(
    image,
    out_png,
    *,
    size,
    frame,
    title,
    side_w,
    title_h,
    panel_labels=(),
    label_h=0,
    legend=(),
):
    """Place the rendered image, titles, legend and orientation in one PNG."""
    from matplotlib.patches import Patch

    width, height = size
    fig = _new_figure((width / 100, height / 100), dpi=100)
    fig.patch.set_facecolor("white")
    fig.figimage(image, xo=0, yo=0, origin="upper")
    if title:
        fig.text(
            0.5 * (width - side_w) / width,
            1 - 0.5 * title_h / height,
            title,
            ha="center",
            va="center",
            fontsize=13,
            fontweight="bold",
        )
    if panel_labels:
        panel_w = (width - side_w) / len(panel_labels)
        y = 1 - (title_h + 0.5 * label_h) / height
        for i, label in enumerate(panel_labels):
            fig.text(
                (i + 0.5) * panel_w / width,
                y,
                label,
                ha="center",
                va="center",
                fontsize=12,
            )
    if legend:
        handles = [
            Patch(facecolor=color, edgecolor="#1a1a1a", label=name)
            for name, color in legend
        ]
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=((width - side_w + 4) / width, 1 - (title_h + 8) / height),
            frameon=False,
            fontsize=_legend_fontsize(len(handles)),
            ncol=_legend_columns(len(handles), height),
            handlelength=1.2,
            borderaxespad=0,
        )
    marker = min(side_w, 90)
    _draw_orientation(
        fig,
        ((width - marker - 6) / width, 6 / height, marker / width, marker / height),
        frame,
    )
    return _save_figure(fig, out_png, dpi=100)


def _legend_fontsize(n_entries):
    return 10 if n_entries <= 12 else 8


def _legend_columns(n_entries, height):
    rows = max(1, int((height - 120) // (22 if n_entries <= 12 else 16)))
    return max(1, math.ceil(n_entries / rows))


def _side_width(names, size):
    """Width in pixels of the column that holds the legend and orientation."""
    names = list(names)
    if not names:
        return 100
    fontsize = _legend_fontsize(len(names))
    fig = _new_figure((2, 2), dpi=100)
    renderer = fig.canvas.get_renderer()
    text_w = max(
        fig.text(0, 0, name, fontsize=fontsize).get_window_extent(renderer).width
        for name in names
    )
    fig.clear()
    columns = _legend_columns(len(names), size[1])
    needed = columns * (text_w + 2.2 * fontsize * 100 / 72 + 12) + 10
    return int(min(max(100, needed), 0.45 * size[0]))


def _check_size(size):
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        msg = f"size must be (width, height) in pixels, got {size!r}"
        raise ValueError(msg) from exc
    if w < 200 or h < 150:
        raise ValueError(f"size must be at least (200, 150) pixels, got {size!r}")
    return w, h


def _resolve_colors(labels, colors):
    if colors is None:
        table = bundle_colors(labels)
        return [table[name] for name in labels]
    if isinstance(colors, dict):
        table = bundle_colors(labels)
        return [tuple(colors.get(name, table[name]))[:3] for name in labels]
    colors = list(colors)
    if len(colors) != len(labels):
        raise ValueError(
            f"colors has {len(colors)} entries for {len(labels)} tractograms"
        )
    return [tuple(float(c) for c in color)[:3] for color in colors]


def render_bundles(
    tractograms,
    out_png,
    *,
    labels=None,
    colors=None,
    title=None,
    size=(800, 600),
    view="oblique",
    max_streamlines=10000,
    thickness=None,
):
    """Render tractograms, coloured by bundle, to a PNG with FURY offscreen.

    Parameters
    ----------
    tractograms : list
        Tractograms, each a StatefulTractogram (drawn in RAS+ mm; the object
        is not modified), an ArraySequence, a list of (k, 3) arrays or an
        (N, P, 3) array. A single tractogram may be passed without the list.
    out_png : str or Path
        Where to write the PNG (atomically).
    labels : list of str, optional
        Bundle name of each tractogram: sets its colour and legend entry.
        Tractograms sharing a label share a colour and a legend entry.
        Default: "tractogram 1", "tractogram 2", ...
    colors : list of RGB or dict, optional
        Colour of each tractogram (floats in [0, 1]), or a dict label -> RGB.
        Default: :func:`bundle_colors` of the labels.
    title : str, optional
        Title above the picture.
    size : (int, int), optional
        Width and height of the PNG in pixels.
    view : str or 3-tuple, optional
        A name in :data:`VIEWS` ("oblique", "left", "right", "superior",
        "inferior", "anterior", "posterior") or the direction the camera looks
        along in RAS+.
    max_streamlines : int or None, optional
        At most this many streamlines are drawn (a seeded subset, the same
        fraction of each tractogram); None draws all.
    thickness : float, optional
        Line width in pixels; default from the number of streamlines.

    Returns
    -------
    Path or None
        ``out_png``, or None when no picture could be made (no wgpu adapter,
        nothing to draw, or a rendering failure), after a logged warning.

    Raises
    ------
    TractogramError
        If an input is not a set of (k, 3) streamlines.
    ValueError
        If ``labels``/``colors`` do not match the tractograms, or ``size`` or
        ``view`` is invalid.
    """
    size = _check_size(size)
    items = _as_tractogram_list(tractograms)
    if labels is None:
        labels = [f"tractogram {i + 1}" for i in range(len(items))]
    labels = [str(label) for label in labels]
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} labels for {len(items)} tractograms")
    rgb = _resolve_colors(labels, colors)
    _view_frame(view)
    groups = [
        (_streamlines_of(item, f"tractogram {label!r}"), color)
        for item, label, color in zip(items, labels, rgb)
    ]
    groups = _subsample(groups, max_streamlines)
    n_lines = sum(len(lines) for lines, _ in groups)
    if n_lines == 0:
        _no_picture("there are no streamlines to draw")
        return None
    problem = adapter_problem()
    if problem:
        _no_picture(problem)
        return None
    if _needs_child():
        return _render_in_child(
            "bundles",
            [lines for lines, _ in groups],
            out_png,
            {
                "labels": labels,
                "colors": [list(map(float, c)) for _, c in groups],
                "title": title,
                "size": list(size),
                "view": view,
                "max_streamlines": max_streamlines,
                "thickness": thickness,
            },
        )

    legend = {}
    for (lines, color), label in zip(groups, labels):
        if lines:
            legend.setdefault(label, color)
    side_w = _side_width(legend, size)
    title_h = 40 if title else 0
    render_size = (size[0] - side_w, size[1] - title_h)
    try:
        image, frame = _render_panels(
            [groups],
            size=render_size,
            view=view,
            thickness=thickness or _auto_thickness(n_lines),
        )
    except Exception as exc:  # a driver failure must not stop the caller
        logger.debug("rendering failed", exc_info=True)
        _no_picture(f"rendering failed ({type(exc).__name__}: {exc})")
        return None
    out = _compose(
        image,
        out_png,
        size=size,
        frame=frame,
        title=title,
        side_w=side_w,
        title_h=title_h,
        legend=list(legend.items()),
    )
    logger.info("Wrote picture of %d streamlines to %s", n_lines, out)
    return out


def render_comparison(
    real,
    generated,
    out_png,
    *,
    bundle=None,
    title=None,
    size=(1200, 600),
    view="oblique",
    max_streamlines=3000,
    thickness=None,
):
    """Render real and generated streamlines side by side with FURY offscreen.

    Both panels share one camera (same view and scale), so shape, spread and
    length can be compared directly. Both are drawn in the bundle's colour
    and labelled "real" and "generated" with their streamline counts.

    Parameters
    ----------
    real : StatefulTractogram, ArraySequence, list of (k, 3) arrays or array
        The real bundle.
    generated : same types as ``real``
        The generated streamlines.
    out_png : str or Path
        Where to write the PNG (atomically).
    bundle : str, optional
        Bundle name: sets the colour and the default title.
    title : str, optional
        Title above the panels (default "<bundle>: real vs generated").
    size : (int, int), optional
        Width and height of the PNG in pixels.
    view : str or 3-tuple, optional
        As in :func:`render_bundles`.
    max_streamlines : int or None, optional
        At most this many streamlines per panel (a seeded subset).
    thickness : float, optional
        Line width in pixels; default from the number of streamlines.

    Returns
    -------
    Path or None
        ``out_png``, or None when no picture could be made, after a logged
        warning.

    Raises
    ------
    TractogramError
        If an input is not a set of (k, 3) streamlines.
    """
    size = _check_size(size)
    _view_frame(view)
    name = str(bundle) if bundle is not None else None
    color = bundle_colors([name])[name] if name else (0.35, 0.45, 0.6)
    real_lines = _subsample(
        [(_streamlines_of(real, "real streamlines"), color)], max_streamlines
    )[0][0]
    gen_lines = _subsample(
        [(_streamlines_of(generated, "generated streamlines"), color)],
        max_streamlines,
        seed=1,
    )[0][0]
    if not real_lines and not gen_lines:
        _no_picture("there are no streamlines to draw")
        return None
    problem = adapter_problem()
    if problem:
        _no_picture(problem)
        return None
    if _needs_child():
        return _render_in_child(
            "comparison",
            [real_lines, gen_lines],
            out_png,
            {
                "bundle": bundle,
                "title": title,
                "size": list(size),
                "view": view,
                "max_streamlines": max_streamlines,
                "thickness": thickness,
            },
        )

    if title is None and name:
        title = f"{name}: real vs generated"
    side_w = _side_width([name] if name else [], size)
    title_h = 40 if title else 0
    label_h = 30
    render_size = (size[0] - side_w, size[1] - title_h - label_h)
    n_max = max(len(real_lines), len(gen_lines))
    try:
        image, frame = _render_panels(
            [[(real_lines, color)], [(gen_lines, color)]],
            size=render_size,
            view=view,
            thickness=thickness or _auto_thickness(n_max),
        )
    except Exception as exc:
        logger.debug("rendering failed", exc_info=True)
        _no_picture(f"rendering failed ({type(exc).__name__}: {exc})")
        return None
    canvas = np.full((size[1] - title_h, render_size[0], 4), 255, np.uint8)
    canvas[label_h:] = image
    out = _compose(
        canvas,
        out_png,
        size=size,
        frame=frame,
        title=title,
        side_w=side_w,
        title_h=title_h,
        panel_labels=(
            f"real (n={len(real_lines)})",
            f"generated (n={len(gen_lines)})",
        ),
        label_h=label_h,
        legend=[(name, color)] if name else (),
    )
    logger.info(
        "Wrote comparison of %d real and %d generated streamlines to %s",
        len(real_lines),
        len(gen_lines),
        out,
    )
    return out


if __name__ == "__main__":
    _child_main(sys.argv[1])
