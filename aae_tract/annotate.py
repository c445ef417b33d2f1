"""The page around a rendered picture: title, panel labels, legend, axes marker.

:mod:`aae_tract.viz` renders streamlines with FURY into an RGBA image; this
module places that image on a PNG page with matplotlib (:func:`annotate`):
a title above it, a label above each panel, a legend of bundle colours and a
small R/A/S marker showing how the RAS+ axes appear on screen, in a column on
the right whose width :func:`side_width` works out beforehand.
"""

import math

import numpy as np

from aae_tract.figures import new_figure, save_figure

__all__ = ["annotate", "side_width"]

_MIN_SIDE = 100
_MAX_SIDE_FRACTION = 0.45
_MAX_MARKER = 90


def _legend_fontsize(n_entries):
    return 10 if n_entries <= 12 else 8


def _legend_columns(n_entries, height):
    rows = max(1, int((height - 120) // (22 if n_entries <= 12 else 16)))
    return max(1, math.ceil(n_entries / rows))


def side_width(names, size):
    """Width in pixels of the column that holds the legend and axes marker.

    Parameters
    ----------
    names : iterable of str
        The legend's entries (none: room for the marker alone).
    size : (int, int)
        Width and height of the whole PNG in pixels.

    Returns
    -------
    int
        Between 100 pixels and 45% of the width.
    """
    names = list(names)
    if not names:
        return _MIN_SIDE
    fontsize = _legend_fontsize(len(names))
    fig = new_figure((2, 2), dpi=100)
    renderer = fig.canvas.get_renderer()
    text_w = max(
        fig.text(0, 0, name, fontsize=fontsize).get_window_extent(renderer).width
        for name in names
    )
    fig.clear()
    columns = _legend_columns(len(names), size[1])
    needed = columns * (text_w + 2.2 * fontsize * 100 / 72 + 12) + 10
    return int(min(max(_MIN_SIDE, needed), _MAX_SIDE_FRACTION * size[0]))


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
        text = {"color": color, "fontsize": 8, "fontweight": "bold"}
        if math.hypot(dx, dy) < 0.15:  # axis points at (or away from) the viewer
            ax.plot(0, 0, "o", color=color, markersize=4)
            ax.text(0.12, 0.12, name, **text)
            continue
        ax.annotate(
            "",
            xy=(dx, dy),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.3},
        )
        ax.text(dx * 1.3, dy * 1.3, name, ha="center", va="center", **text)


def _draw_titles(fig, size, side_w, title, title_h, panel_labels, label_h):
    """The title over the picture area and a label over each panel."""
    width, height = size
    if title:
        x = 0.5 * (width - side_w) / width
        y = 1 - 0.5 * title_h / height
        fig.text(x, y, title, ha="center", va="center", fontsize=13, fontweight="bold")
    if panel_labels:
        panel_w = (width - side_w) / len(panel_labels)
        y = 1 - (title_h + 0.5 * label_h) / height
        for i, label in enumerate(panel_labels):
            x = (i + 0.5) * panel_w / width
            fig.text(x, y, label, ha="center", va="center", fontsize=12)


def _draw_legend(fig, size, side_w, title_h, legend):
    """Colour patches with bundle names at the top of the side column."""
    from matplotlib.patches import Patch

    width, height = size
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


def annotate(
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
    """Place a rendered image, titles, legend and axes marker in one PNG.

    Parameters
    ----------
    image : ndarray of uint8, shape (h, w, 4)
        The rendered picture, placed at the top left of the page below the
        title band.
    out_png : str or Path
        Where to write the PNG (atomically).
    size : (int, int)
        Width and height of the page in pixels.
    frame : (forward, up, right)
        The camera's unit vectors in RAS+, for the axes marker.
    title : str or None
        Title above the picture.
    side_w : int
        Width of the right-hand column (:func:`side_width`).
    title_h : int
        Height of the title band in pixels (0 without a title).
    panel_labels : sequence of str, optional
        A label above each of the equally wide panels.
    label_h : int, optional
        Height of the panel-label band in pixels.
    legend : sequence of (name, rgb), optional
        Legend entries.

    Returns
    -------
    Path
        ``out_png``.
    """
    width, height = size
    fig = new_figure((width / 100, height / 100), dpi=100)
    fig.patch.set_facecolor("white")
    fig.figimage(image, xo=0, yo=0, origin="upper")
    _draw_titles(fig, size, side_w, title, title_h, panel_labels, label_h)
    if legend:
        _draw_legend(fig, size, side_w, title_h, legend)
    marker = min(side_w, _MAX_MARKER)
    _draw_orientation(
        fig,
        ((width - marker - 6) / width, 6 / height, marker / width, marker / height),
        frame,
    )
    return save_figure(fig, out_png, dpi=100)
