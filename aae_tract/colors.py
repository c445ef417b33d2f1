"""Bundle colours: the same colour for a bundle name in every picture and plot.

Used by the FURY pictures (:mod:`aae_tract.viz`) and the matplotlib figures
(:mod:`aae_tract.plots`) alike; the colour depends on the name alone.
"""

import colorsys
import re
import zlib

__all__ = ["bundle_colors", "bundle_side"]

# Colours for bundle names met in DIPY's atlases (HCP842 / RecoBundles names).
# Left/right pairs share a family colour: the left bundle gets the colour, the
# right one a lighter tint of it.
_EXACT_COLORS = {
    # streamlines of no known bundle (aae_tract.label.OTHER): neutral grey
    "other": "#999999",
    "CC": "#2ca02c",
    "CC_ForcepsMajor": "#2ca02c",
    "CC_ForcepsMinor": "#98c000",
    "CC_Mid": "#17a589",
    "AC": "#7f7f7f",
    "PC": "#5c5c5c",
    "MCP": "#17becf",
    "CTT": "#6b6ecf",
    "V": "#b5cf6b",
}
_FAMILY_COLORS = {
    "AF": "#d62728",
    "CST": "#1f77b4",
    "UF": "#ff7f0e",
    "IFOF": "#9467bd",
    "ILF": "#8c564b",
    "SLF": "#e377c2",
    "OR": "#bcbd22",
    "C": "#17becf",
    "CG": "#17becf",
    "MdLF": "#393b79",
    "EMC": "#ad494a",
    "FPT": "#3182bd",
    "PPT": "#6baed6",
    "OPT": "#756bb1",
    "TPT": "#31a354",
    "ML": "#843c39",
    "ICP": "#637939",
    "SCP": "#8c6d31",
    "VOF": "#e6550d",
    "F": "#a55194",
    "FX": "#a55194",
    "STT": "#7b4173",
    "CB": "#e7969c",
}
_SIDE_RE = re.compile(r"^(?P<family>.+?)[_-](?P<side>L|R|left|right|lh|rh)$", re.I)
#: A name that ends in both sides (``F_L_R``): a bundle of both hemispheres.
_BOTH_SIDES_RE = re.compile(r"[_-](L|left|lh)[_-](R|right|rh)$", re.I)
_RIGHT_TINT = 0.45  # fraction of white mixed into the right-hemisphere colour
#: The names aae_tract_generate gives its files: ``<bundle>_length80``,
#: ``<bundle>_age42.5`` (drawn in the bundle's colour).
_GENERATED_RE = re.compile(r"^(?P<bundle>.+)_(?:length|age)\d+(?:\.\d+)?$")


def _hex_to_rgb(value):
    value = value.lstrip("#")
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))


def _hashed_rgb(name):
    """A colour from the name alone (CRC32: the same in every process)."""
    code = zlib.crc32(name.encode("utf-8"))
    hue = (code % 3600) / 3600.0
    saturation = 0.55 + 0.3 * ((code >> 12) % 100) / 100.0
    value = 0.6 + 0.3 * ((code >> 20) % 100) / 100.0
    return colorsys.hsv_to_rgb(hue, saturation, value)


def _tint(rgb, amount):
    return tuple(c + (1.0 - c) * amount for c in rgb)


def _split_side(name):
    """``(family, side)`` of a bundle name: side ``"l"``, ``"left"``,
    ``"lh"``, ``"r"``, ... or ``""`` (no side, or both: ``F_L_R``, the
    fornix of DIPY's atlas)."""
    match = _SIDE_RE.match(name)
    if not match or _BOTH_SIDES_RE.search(name):
        return name, ""
    return match["family"], match["side"].lower()


def bundle_side(name):
    """The hemisphere a bundle's name gives.

    A name ends with its side after ``_`` or ``-``, in any case: ``L``,
    ``left`` or ``lh`` for the left, ``R``, ``right`` or ``rh`` for the
    right (``AF_L``, ``CST_R``, ``UF-left``). Names without a side
    (``CC_Mid``, ``MCP``) or with both (``F_L_R``) give none.

    Parameters
    ----------
    name : str
        A bundle name.

    Returns
    -------
    str or None
        ``"left"``, ``"right"`` or None.
    """
    side = _split_side(str(name))[1]
    if not side:
        return None
    return "left" if side in ("l", "left", "lh") else "right"


def _one_bundle_color(name):
    generated = _GENERATED_RE.match(name)
    if generated and name not in _EXACT_COLORS:
        name = generated["bundle"]
    if name in _EXACT_COLORS:
        return _hex_to_rgb(_EXACT_COLORS[name])
    family, side = _split_side(name)
    if family in _FAMILY_COLORS:
        base = _hex_to_rgb(_FAMILY_COLORS[family])
    elif family in _EXACT_COLORS:
        base = _hex_to_rgb(_EXACT_COLORS[family])
    else:
        base = _hashed_rgb(family)
    if side in ("r", "right", "rh"):
        return _tint(base, _RIGHT_TINT)
    return base


def bundle_colors(names):
    """Colour of each bundle name, the same in every picture.

    The colour depends on the name alone (not on the other names or their
    order): common bundle names of DIPY's atlases have fixed colours, a right
    hemisphere bundle (``*_R``) is a lighter tint of its left partner, the
    names aae_tract_generate gives its files of a length or an age
    (``AF_L_length80``, ``CST_R_age70``) take their bundle's colour, and any
    other name gets a colour derived from a CRC32 checksum of the name.

    Parameters
    ----------
    names : str or iterable of str
        Bundle names, for example ``["AF_L", "CST_R"]``.

    Returns
    -------
    dict
        ``{name: (r, g, b)}`` with floats in [0, 1], one entry per distinct name.
    """
    if isinstance(names, str):
        names = [names]
    return {str(name): _one_bundle_color(str(name)) for name in names}
