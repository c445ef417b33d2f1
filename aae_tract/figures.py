"""Matplotlib figures that nothing global tracks, saved atomically as PNG.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas,
never through ``pyplot``: no global backend is switched, no figure is kept
alive after it is saved, and it works on machines without a display. A PNG is
written to a temporary name in the destination folder and then renamed, so an
existing picture is never left half written.
"""

from aae_tract.atomic import write_atomic

__all__ = ["new_figure", "save_figure"]


def new_figure(figsize, dpi=100):
    """A Figure on an Agg canvas that pyplot does not track.

    Parameters
    ----------
    figsize : (float, float)
        Width and height in inches.
    dpi : int, optional
        Dots per inch.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_png, *, dpi=None):
    """Save ``fig`` atomically as a PNG and release it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        From :func:`new_figure`; cleared afterwards, even on failure.
    out_png : str or Path
        Destination.
    dpi : int, optional
        Dots per inch (default: the figure's).

    Returns
    -------
    Path
        ``out_png``.
    """
    try:
        return write_atomic(
            out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi)
        )
    finally:
        fig.clear()
