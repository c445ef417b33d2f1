"""Pictures of bundles (FURY offscreen rendering) and plots (matplotlib).

Rendering goes through FURY 2 (pygfx on wgpu). A machine without a GPU needs a
software Vulkan driver (Debian/Ubuntu: ``mesa-vulkan-drivers``, which provides
lavapipe). Where no wgpu adapter can be had, :func:`render_bundles` and
:func:`render_comparison` log a warning "no picture was made: <reason>" and
return ``None``, so a command that renders as a side job still writes its
other outputs. :func:`adapter_problem` says beforehand whether rendering works.

Pictures are in RAS+ millimetres, on a white background, with an orthographic
camera fitted to the streamlines. Each bundle name keeps its colour in every
picture (:func:`aae_tract.colors.bundle_colors`). The rendered image is placed
on its page (title, legend, R/A/S orientation marker) by
:func:`aae_tract.annotate.annotate`.

The matplotlib figures (training curves, latent space, evaluation) are in
:mod:`aae_tract.plots`.
"""

import functools
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from aae_tract.annotate import annotate, side_width
from aae_tract.colors import bundle_colors
from aae_tract.errors import TractogramError

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_VIEW",
    "VIEWS",
    "adapter_problem",
    "bundle_colors",
    "facing_view",
    "render_bundles",
    "render_comparison",
]

#: Figures that moved to :mod:`aae_tract.plots`; still found here (lazily).
_MOVED_TO_PLOTS = ("plot_evaluation", "plot_latent_space", "plot_training_curves")


def __getattr__(name):
    """``aae_tract.viz.plot_*`` still work, with a DeprecationWarning: the
    matplotlib figures of :mod:`aae_tract.plots`, imported only when asked for."""
    if name in _MOVED_TO_PLOTS:
        import warnings

        from aae_tract import plots

        warnings.warn(
            f"aae_tract.viz.{name} moved to aae_tract.plots.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
#: The view name that picks one of :data:`VIEWS` from the streamlines drawn
#: (:func:`facing_view`).
AUTO_VIEW = "auto"
#: Named views ``auto`` chooses from, by the axis the streamlines spread
#: least along (R-L, A-P, S-I).
_AXIS_VIEWS = (("left", "right"), ("anterior",), ("superior",))
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
# LLVM; a process that holds both crashes, whichever came first (TensorFlow
# loaded, then a picture; or a picture, then TensorFlow, which Keras imports
# even under the torch backend, e.g. in keras.utils.set_random_seed). Wherever
# TensorFlow is installed, pictures are therefore made by a child Python
# process that never imports it: streamlines travel as .npy files (no
# pickle), options as JSON.

_CHILD_ENV = "AAE_TRACT_RENDER_CHILD"
_CHILD_TIMEOUT = 600


@functools.lru_cache(maxsize=1)
def _tensorflow_installed():
    if "tensorflow" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return True


def _needs_child():
    """Whether pictures must be made in a child process (see above)."""
    return os.environ.get(_CHILD_ENV) != "1" and _tensorflow_installed()


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


def _cannot_render(n_lines):
    """Why no picture can be made of ``n_lines`` streamlines (logged), or None."""
    reason = "there are no streamlines to draw" if n_lines == 0 else adapter_problem()
    if reason:
        _no_picture(reason)
    return reason


def _render_or_none(panels, **options):
    """:func:`_render_panels`, or None (logged) when the renderer fails."""
    try:
        return _render_panels(panels, **options)
    except Exception as exc:  # a driver failure must not stop the caller
        logger.debug("rendering failed", exc_info=True)
        _no_picture(f"rendering failed ({type(exc).__name__}: {exc})")
        return None


def _as_json(options):
    """Options for the rendering child: JSON-able (``size`` as a list, a
    ``view`` direction as a list of floats)."""
    view = options["view"]
    if not isinstance(view, str):
        view = [float(v) for v in np.asarray(view, dtype=float).reshape(3)]
    return dict(options, size=list(options["size"]), view=view)


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


def facing_view(streamlines, names=None):
    """The anatomical view that shows a bundle's widest face.

    The camera looks along the axis of RAS+ space (R-L, A-P or S-I) along
    which the points of the streamlines spread least (smallest standard
    deviation), so that the two axes along which they spread most face the
    viewer: a side view of an arcuate or uncinate fasciculus, a view from
    above of the forceps of the corpus callosum. Along A-P it looks from
    the front ("anterior"), along S-I from above ("superior"). Along R-L the
    camera is on the bundles' side, so that a bundle of one hemisphere is
    seen from outside the brain: the side their names give (``AF_L``,
    ``CST_R``, ``..._left``, ``..._rh``: :func:`aae_tract.colors.bundle_side`)
    when they all give the same one, otherwise the side of their centre
    (x < 0: "left", x > 0: "right"), which is the hemisphere where x = 0 is
    the midline, as in MNI-like spaces.

    Parameters
    ----------
    streamlines : list of (k, 3) arrays
        Every streamline the picture draws (all panels together, so that
        they share the view).
    names : list of str, optional
        The names of the bundles drawn.

    Returns
    -------
    str
        A name in :data:`VIEWS`; ``"oblique"`` when there is no point.
    """
    from aae_tract.colors import bundle_side

    points = [np.asarray(s, dtype=float).reshape(-1, 3) for s in streamlines]
    points = np.concatenate(points) if points else np.empty((0, 3))
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return "oblique"
    axis = int(np.argmin(points.std(axis=0)))
    if axis != 0:
        return _AXIS_VIEWS[axis][0]
    sides = {bundle_side(str(name)) for name in names or ()}
    if len(sides) == 1 and None not in sides:
        return sides.pop()
    return "right" if points[:, 0].mean() > 0 else "left"


def _resolve_view(view, groups, names=None):
    """``view``, or for :data:`AUTO_VIEW` the named view of
    :func:`facing_view` for the streamlines of ``groups`` (lists of
    streamlines) of the bundles ``names``, logged."""
    if not (isinstance(view, str) and view == AUTO_VIEW):
        return view
    chosen = facing_view([s for lines in groups for s in lines], names)
    logger.info("view: %s (facing the streamlines' widest face)", chosen)
    return chosen


def _check_view(view):
    """Raise ValueError unless ``view`` is :data:`AUTO_VIEW`, a name in
    :data:`VIEWS` or a non-zero 3-vector."""
    if not (isinstance(view, str) and view == AUTO_VIEW):
        _view_frame(view)


def _view_frame(view):
    """Unit (forward, up, right) vectors of the camera for a view (a name in
    :data:`VIEWS` or a direction; :data:`AUTO_VIEW` is resolved before)."""
    if isinstance(view, str):
        if view not in VIEWS:
            choices = sorted([*VIEWS, AUTO_VIEW])
            raise ValueError(f"unknown view {view!r}; choose from {choices}")
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
        "inferior", "anterior", "posterior"), ``"auto"`` (the one of them
        that shows the streamlines' widest face, :func:`facing_view`) or the
        direction the camera looks along in RAS+.
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
    _check_view(view)
    groups = [
        (_streamlines_of(item, f"tractogram {label!r}"), color)
        for item, label, color in zip(items, labels, rgb)
    ]
    groups = _subsample(groups, max_streamlines)
    if _cannot_render(sum(len(lines) for lines, _ in groups)):
        return None
    view = _resolve_view(view, [lines for lines, _ in groups], labels)
    options = {"title": title, "size": size, "view": view, "thickness": thickness}
    if _needs_child():
        options.update(
            labels=labels,
            colors=[list(map(float, c)) for _, c in groups],
            max_streamlines=max_streamlines,
        )
        return _render_in_child(
            "bundles", [lines for lines, _ in groups], out_png, _as_json(options)
        )
    return _draw_bundles(groups, labels, out_png, **options)


def _draw_bundles(groups, labels, out_png, *, title, size, view, thickness):
    """Render (streamlines, rgb) groups in one panel with a legend of labels."""
    n_lines = sum(len(lines) for lines, _ in groups)
    legend = {}
    for (lines, color), label in zip(groups, labels):
        if lines:
            legend.setdefault(label, color)
    side_w = side_width(legend, size)
    title_h = 40 if title else 0
    rendered = _render_or_none(
        [groups],
        size=(size[0] - side_w, size[1] - title_h),
        view=view,
        thickness=thickness or _auto_thickness(n_lines),
    )
    if rendered is None:
        return None
    image, frame = rendered
    out = annotate(
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
    real_label="real",
    generated_label="generated",
):
    """Render real and generated streamlines side by side with FURY offscreen.

    Both panels share one camera (same view and scale), so shape, spread and
    length can be compared directly. Both are drawn in the bundle's colour
    and labelled (``real_label`` and ``generated_label``) with the number of
    streamlines drawn.

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
    real_label : str, optional
        Label of the real panel (its streamline count is added), e.g.
        ``"real, 72-88 mm"`` when it shows only streamlines near a requested
        length.
    generated_label : str, optional
        Label of the generated panel (its streamline count is added), e.g.
        ``"generated, median 147.3 mm"``.

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
    _check_view(view)
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
    if _cannot_render(len(real_lines) + len(gen_lines)):
        return None
    view = _resolve_view(view, [real_lines, gen_lines], [name] if name else None)
    options = {"title": title, "size": size, "view": view, "thickness": thickness}
    if _needs_child():
        options.update(
            bundle=bundle,
            max_streamlines=max_streamlines,
            real_label=str(real_label),
            generated_label=str(generated_label),
        )
        return _render_in_child(
            "comparison", [real_lines, gen_lines], out_png, _as_json(options)
        )
    options["real_label"] = str(real_label)
    options["generated_label"] = str(generated_label)
    if title is None and name:
        options["title"] = f"{name}: real vs generated"
    return _draw_comparison(real_lines, gen_lines, name, color, out_png, **options)


def _draw_comparison(
    real,
    generated,
    name,
    color,
    out_png,
    *,
    title,
    size,
    view,
    thickness,
    real_label,
    generated_label,
):
    """Render real and generated streamlines in two panels under one camera."""
    side_w = side_width([name] if name else [], size)
    title_h = 40 if title else 0
    label_h = 30
    render_size = (size[0] - side_w, size[1] - title_h - label_h)
    n_max = max(len(real), len(generated))
    rendered = _render_or_none(
        [[(real, color)], [(generated, color)]],
        size=render_size,
        view=view,
        thickness=thickness or _auto_thickness(n_max),
    )
    if rendered is None:
        return None
    image, frame = rendered
    canvas = np.full((size[1] - title_h, render_size[0], 4), 255, np.uint8)
    canvas[label_h:] = image
    out = annotate(
        canvas,
        out_png,
        size=size,
        frame=frame,
        title=title,
        side_w=side_w,
        title_h=title_h,
        panel_labels=(
            f"{real_label} (n={len(real)})",
            f"{generated_label} (n={len(generated)})",
        ),
        label_h=label_h,
        legend=[(name, color)] if name else (),
    )
    logger.info(
        "Wrote comparison of %d real and %d generated streamlines to %s",
        len(real),
        len(generated),
        out,
    )
    return out


if __name__ == "__main__":
    _child_main(sys.argv[1])
