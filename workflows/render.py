"""``aae_tract_render``: a picture of tractograms, coloured by bundle."""

import logging

from aae_tract.errors import AAETractError

from .base import (
    AAEWorkflow,
    as_list,
    check_int,
    check_reference,
    check_view_option,
    names_written,
)

logger = logging.getLogger(__name__)


class RenderFlow(AAEWorkflow):
    @classmethod
    def get_short_name(cls):
        return "render"

    def run(
        self,
        inputs,
        reference=None,
        view="oblique",
        width=800,
        height=600,
        max_streamlines=20000,
        title=None,
        out_dir="",
        out_png="tractograms.png",
    ):
        """Render tractograms to a picture, coloured by bundle (FURY, offscreen).

        Every file is a bundle named after the file (AF_L.trk is AF_L):
        files of the same bundle from several subjects share a colour, and
        each bundle keeps its colour in every aae_tract picture. Without a
        GPU this needs a software Vulkan driver (Debian/Ubuntu:
        mesa-vulkan-drivers); where none exists, no picture is made and a
        warning says why.

        Parameters
        ----------
        inputs : variable string
            Tractograms (.trk, .tck, .trx): files, folders
            (<subject>/<BUNDLE>.trk) or glob patterns.
        reference : string, optional
            Reference anatomy (NIfTI or .trk in the same space) for .tck and
            .trx inputs; for .trx, the word same uses the file's own header.
        view : string, optional
            Camera direction: oblique, left, right, superior, inferior,
            anterior or posterior; auto: the one of left, right, anterior
            and superior that faces the axis the streamlines spread least
            along (their widest face; left or right by the side the bundles'
            names give when all give the same one, AF_L or CST_R, else by
            the side their centre lies on).
        width : int, optional
            Picture width in pixels.
        height : int, optional
            Picture height in pixels.
        max_streamlines : int, optional
            At most this many streamlines are drawn (the same fraction of
            each tractogram).
        title : string, optional
            Title above the picture.
        out_dir : string, optional
            Output folder.
        out_png : string, optional
            Name of the picture.
        """
        self._begin()
        view = check_view_option(view)
        size = (
            check_int("width", width, minimum=64, maximum=8192),
            check_int("height", height, minimum=64, maximum=8192),
        )
        max_streamlines = check_int("max_streamlines", max_streamlines)

        from aae_tract.io import find_bundles, load_bundle

        found = find_bundles([str(p) for p in as_list(inputs)])
        check_reference([f.path for f in found], reference)
        paths = self._prepare_outputs(out_dir, {"out_png": out_png})
        if paths is None:
            return None
        tractograms = [load_bundle(f.path, reference=reference) for f in found]
        n_lines = sum(len(t) for t in tractograms)
        labels = [f.bundle for f in found]
        from aae_tract.viz import render_bundles

        out = render_bundles(
            tractograms,
            paths["out_png"],
            labels=labels,
            title=title,
            size=size,
            view=view,
            max_streamlines=max_streamlines,
        )
        if out is None:
            raise AAETractError(
                f"no picture was made of {n_lines} streamlines (see the warning above)"
            )
        logger.info(
            "Rendered %d streamlines of %d bundles from %d files; wrote %s",
            n_lines,
            len(set(labels)),
            len(found),
            names_written([out]),
        )
        return out
