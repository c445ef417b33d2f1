"""``aae_tract_label``: sort a tractogram's streamlines into the model's bundles."""

import json
import logging
from pathlib import Path

import numpy as np

from aae_tract.errors import AAETractError
from aae_tract.label import (
    DECODE_FROM,
    LABEL_BATCH,
    OTHER,
    PRECISIONS,
    REJECT_RULES,
    SETTLE_BELOW,
)

from .base import (
    AAEWorkflow,
    bad_value,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_view_option,
    names_written,
    select_backend,
)

logger = logging.getLogger(__name__)

FORMATS = ("trk", "tck", "trx")
REGISTER = ("auto", "yes", "no")


class LabelFlow(AAEWorkflow):
    @classmethod
    def get_short_name(cls):
        return "label"

    def run(
        self,
        tractogram,
        model="aae_tract_model.keras",
        reference=None,
        register="auto",
        reject="both",
        decode_from=DECODE_FROM,
        batch_size=LABEL_BATCH,
        precision="auto",
        format="trk",
        skip_picture=False,
        view="oblique",
        backend=None,
        device="auto",
        out_dir="",
        out_tractogram="{label}.trk",
        out_labels="labels.json",
        out_picture="labels.png",
    ):
        """Label the streamlines of a tractogram with the model's bundles.

        Each streamline is encoded with the model and given the bundle whose
        streamlines' encodings it fits best (a Gaussian per bundle in the
        latent space), or "other" when it lies outside every bundle (too far
        from the bundle's encodings, or reconstructed too poorly with the
        bundle's label; thresholds set when the model was trained). Writes one
        tractogram per recognised bundle and one of the other streamlines, in
        the space of the input, a JSON report (counts, and the label and
        confidence of every streamline in file order: the posterior of its
        bundle, or for "other" how far past the thresholds it lies, 0 to 1)
        and a picture coloured by label. A .trk or .tck tractogram is read
        and written a block of streamlines at a time, so its size is not
        limited by memory.

        Parameters
        ----------
        tractogram : string
            The tractogram to label (.trk, .tck or .trx), RAS+ mm, e.g. a
            whole-brain tractography of one subject.
        model : string, optional
            The model file written by aae_tract_train.
        reference : string, optional
            Reference anatomy (NIfTI or .trk) of a .tck or .trx tractogram.
        register : string, optional
            auto, yes or no: bring the streamlines into the model's common
            space first (SLR of a sample of them to the model's common-space
            bundles). auto: when the model was trained with registration.
        reject : string, optional
            both or latent: what makes a streamline "other". both: too far
            from its bundle in the latent space, or reconstructed too poorly
            as that bundle; latent: the latent distance alone (nothing is
            decoded: faster).
        decode_from : float, optional
            With --reject both, the reconstruction is tested only for
            streamlines whose squared latent distance is at least this
            fraction of their bundle's threshold (nearer ones are accepted on
            the latent distance alone); 0 tests every streamline inside the
            threshold (slower).
        batch_size : int, optional
            Streamlines per forward pass of the model.
        precision : string, optional
            auto, float32 or bfloat16: what the encoder computes in. auto:
            bfloat16 on a CPU with native bfloat16 (AVX512-BF16 or AMX) and
            the tensorflow or torch backend, where it labelled about 1.3x
            faster (default rule) and changed about one label in 10,000;
            float32 elsewhere. float32: labels that do not depend on the
            CPU's bfloat16 support. The report records the precision used.
        format : string, optional
            Format of the written tractograms: trk, tck or trx.
        skip_picture : bool, optional
            Write only the tractograms and the report (no FURY rendering).
        view : string, optional
            Camera of the picture: oblique, left, right, superior, inferior,
            anterior or posterior; auto: the one of left, right, anterior and
            superior that faces the axis the drawn streamlines spread least
            along (their widest face).
        backend : string, optional
            Keras backend: tensorflow, torch or jax. Without it: KERAS_BACKEND,
            else tensorflow.
        device : string, optional
            auto, cpu or gpu.
        out_dir : string, optional
            Output folder.
        out_tractogram : string, optional
            Name of each written tractogram; {label} (a bundle name or
            "other") is filled in; the extension follows --format.
        out_labels : string, optional
            Name of the JSON report.
        out_picture : string, optional
            Name of the picture.
        """
        self._begin()
        register = check_choice("register", register, REGISTER)
        reject = check_choice("reject", reject, REJECT_RULES)
        precision = check_choice("precision", precision, PRECISIONS)
        decode_from = check_float("decode_from", decode_from, minimum=0.0, maximum=1.0)
        fmt = check_choice("format", format, FORMATS)
        view = check_view_option(view)
        batch_size = check_int("batch_size", batch_size, maximum=1_000_000)
        if reference is not None and not Path(reference).exists():
            bad_value("reference", reference, "must be an existing file")
        if "{label}" not in str(out_tractogram):
            bad_value(
                "out_tractogram",
                out_tractogram,
                "must contain {label} (one file per label)",
            )

        from aae_tract.io import load_bundle
        from aae_tract.stream import STREAM_EXTENSIONS, TractogramStream

        select_backend(backend, device)
        from aae_tract.model.metadata import read_model_file

        read_model_file(Path(model))  # a missing or broken file fails before Keras
        from aae_tract.label import label_precision, label_streamlines
        from aae_tract.model import TractAAE

        check_device(device)
        requested, precision = precision, label_precision(precision)
        if requested == "auto" and precision == "bfloat16":
            logger.info(
                "Encoding in bfloat16: this CPU computes it natively "
                "(--precision float32: labels that do not depend on it)"
            )
        net = TractAAE.load(Path(model))
        groups = net.bundle_names + [OTHER]
        stem = Path(str(out_tractogram)).with_suffix("")
        names = {f"out_{g}": f"{str(stem).format(label=g)}.{fmt}" for g in groups}
        names["out_labels"] = out_labels
        if not skip_picture:
            names["out_picture"] = out_picture
        paths = self._prepare_outputs(out_dir, names)
        if paths is None:
            return None
        for key, path in paths.items():
            for given in (tractogram, reference):
                if given is not None and path.exists() and path.samefile(given):
                    raise AAETractError(
                        f"{path}: the output {key} would replace the input "
                        f"{given}; choose another --out_dir"
                    )

        if Path(tractogram).suffix.lower() in STREAM_EXTENSIONS:
            source = TractogramStream(tractogram, reference=reference)
        else:
            source = load_bundle(tractogram, reference=reference)
        labels, confidence = label_streamlines(
            net,
            source,
            register={"auto": None, "yes": True, "no": False}[register],
            name=str(tractogram),
            batch_size=batch_size,
            progress=True,
            reject=reject,
            decode_from=decode_from,
            precision=precision,
        )
        written = _write_groups(source, labels, groups, paths)
        counts = {g: int((labels == g).sum()) for g in groups}
        report = {
            "tractogram": str(tractogram),
            "model": str(model),
            "n_streamlines": int(len(labels)),
            "counts": counts,
            "labeller": {
                "method": net.metadata.labeller.get("method"),
                "version": net.metadata.labeller.get("version", 1),
                "quantile": net.metadata.labeller.get("quantile"),
                "reject": reject,
                "decode_from": decode_from if reject == "both" else None,
                # see aae_tract.label.SETTLE_BELOW
                "settle_below": SETTLE_BELOW,
                # what the encoder computed in ("auto" resolved)
                "precision": precision,
                # each bundle's reach (mm); null: every streamline considered
                "reach_mm": {
                    b: e.get("max_ref_mm")
                    for b, e in net.metadata.labeller["bundles"].items()
                },
            },
            "labels": labels.tolist(),
            "confidence": [round(float(c), 4) for c in confidence],
        }
        from aae_tract.atomic import write_text_atomic

        write_text_atomic(paths["out_labels"], json.dumps(report) + "\n")
        written.append(paths["out_labels"])
        if not skip_picture:
            picture = _picture(
                source, labels, groups, paths["out_picture"], tractogram, view=view
            )
            if picture is not None:
                written.append(picture)
        logger.info(
            "Labelled %d streamlines of %s: %s; wrote %s",
            len(labels),
            tractogram,
            ", ".join(f"{g} {n}" for g, n in counts.items() if n),
            names_written(written),
        )
        return written


def _write_groups(source, labels, groups, paths):
    """One tractogram per label with streamlines; stale files of the others go.

    ``source`` is a TractogramStream (its .trk and .tck outputs written
    together in one pass, a block at a time) or a StatefulTractogram.
    """
    from dipy.io.stateful_tractogram import StatefulTractogram

    from aae_tract.io import save_tractogram

    present = {g: paths[f"out_{g}"] for g in groups if (labels == g).any()}
    if hasattr(source, "write_groups"):
        source.write_groups(present, labels)
    else:
        for group, path in present.items():
            rows = np.flatnonzero(labels == group)
            save_tractogram(
                StatefulTractogram.from_sft(source.streamlines[rows], source), path
            )
    for group in groups:  # once the new files are written
        path = paths[f"out_{group}"]
        if group not in present and path.exists():
            path.unlink()
            logger.info("%s removed: no streamline is labelled %s", path, group)
    return list(present.values())


#: Most streamlines read back for the picture (a seeded sample of larger
#: inputs; render_bundles draws at most as many).
PICTURE_MAX = 10000
#: Most "other" streamlines drawn: more of them hide the bundles.
PICTURE_OTHER_MAX = 1000


def _picture(source, labels, groups, out_png, tractogram, view="oblique"):
    """The streamlines coloured by label (grey for "other"); Path or None.

    At most :data:`PICTURE_MAX` streamlines are drawn (a seeded sample, each
    label keeping its share) and at most :data:`PICTURE_OTHER_MAX` of them
    "other", so that the bundles stay visible in a whole-brain tractogram.
    """
    from aae_tract.colors import bundle_colors
    from aae_tract.viz import render_bundles

    present = [g for g in groups if (labels == g).any()]
    if not present:
        return None
    fraction = min(1.0, PICTURE_MAX / len(labels))
    rng = np.random.default_rng(0)
    picks = {}
    for g in present:
        rows = np.flatnonzero(labels == g)
        n = max(1, int(round(len(rows) * fraction)))
        if g == OTHER:
            n = min(n, PICTURE_OTHER_MAX)
        picks[g] = np.sort(rng.choice(rows, n, replace=False))
    rows = np.concatenate(list(picks.values()))
    if len(rows) < len(labels):
        logger.info(
            "picture: a sample of %d of the %d streamlines", len(rows), len(labels)
        )
    if hasattr(source, "take"):
        drawn = source.take(rows)
    else:
        drawn = [source.streamlines[i] for i in rows]
    ends = np.cumsum([len(p) for p in picks.values()])
    lines = [drawn[end - len(p) : end] for p, end in zip(picks.values(), ends)]
    colors = bundle_colors(present)
    title = f"{Path(tractogram).name}: streamlines by label"
    n_other = int((labels == OTHER).sum())
    if OTHER in picks and len(picks[OTHER]) < n_other:
        title += f" ({len(picks[OTHER]):,} of {n_other:,} other drawn)"
    try:
        return render_bundles(
            lines, out_png, labels=present, colors=colors, title=title, view=view
        )
    except AAETractError as exc:
        logger.warning("no picture made: %s", exc)
        return None
