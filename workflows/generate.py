"""``aae_tract_generate``: new streamlines of a bundle at a requested length."""

import logging
from pathlib import Path

from aae_tract.errors import AAETractError
from aae_tract.generate import (
    DEFAULT_CANDIDATES,
    DEFAULT_MAX_EXTRAPOLATION,
    DEFAULT_NOISE,
    DEFAULT_PRIOR_SPREAD,
    MAX_CANDIDATES,
    NOISE_SCOPES,
    SAMPLING_METHODS,
    check_target,
)

from .base import (
    AAEWorkflow,
    as_list,
    bad_value,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_prior_spread_option,
    check_view_option,
    names_written,
    noise_or_default,
    sampling_for,
    select_backend,
)

logger = logging.getLogger(__name__)

#: Longest streamline length (mm) a request may ask for.
MAX_LENGTH_MM = 1000.0
#: Most streamlines one request may ask for.
MAX_STREAMLINES = 1_000_000
#: Most real tractogram files read for the comparison picture.
MAX_REAL_FILES = 10
FORMATS = ("trk", "tck", "trx")


def condition_label(attribute, value):
    """File-name part for a request: ``length80``, ``age42.5``."""
    return f"{attribute}{float(value):g}"


def real_bundle_files(model, bundle, real=None):
    """Real tractogram files of ``bundle`` for the comparison picture.

    Parameters
    ----------
    model : TractAAE
        Its recorded training inputs are the default source.
    bundle : str
        Bundle name (matched to file names).
    real : list of str, optional
        Files, folders or patterns; a single file is taken whatever its name,
        unless it is named after another of the model's bundles (so that
        ``--real AF_L.trk`` with several bundles is drawn beside AF_L only).

    Returns
    -------
    list of Path
    """
    from aae_tract.io import find_bundles

    if real:
        found = find_bundles(real)
        if len(found) == 1 and Path(real[0]).is_file():
            other = found[0].bundle != bundle and found[0].bundle in model.bundle_names
            return [] if other else [found[0].path]
        return [f.path for f in found if f.bundle == bundle][:MAX_REAL_FILES]
    files = [Path(p) for p in model.metadata.training.get("inputs", [])]
    return [p for p in files if p.stem == bundle and p.is_file()][:MAX_REAL_FILES]


class GenerateFlow(AAEWorkflow):
    @classmethod
    def get_short_name(cls):
        return "generate"

    def run(
        self,
        model="aae_tract_model.keras",
        bundle=None,
        length=None,
        attribute_value=None,
        age=None,
        max_extrapolation=DEFAULT_MAX_EXTRAPOLATION,
        n_streamlines=100,
        seed=0,
        sampling=None,
        noise=DEFAULT_NOISE,
        noise_scope="bundle",
        subject_noise=None,
        placement_noise=None,
        extend_reach=False,
        candidates=DEFAULT_CANDIDATES,
        prior_spread=DEFAULT_PRIOR_SPREAD,
        filter=False,
        max_mdf=None,
        length_tolerance=None,
        keep_outside=False,
        real=None,
        reference=None,
        space=None,
        format=None,
        skip_picture=False,
        view="oblique",
        backend=None,
        device="auto",
        out_dir="",
        out_tractogram="{bundle}_{condition}.trk",
        out_picture="{bundle}_{condition}.png",
    ):
        """Generate streamlines of a bundle at a requested length.

        Latent codes of the bundle are sampled with latent dimension 0 set
        for the requested length (or, for a model trained with --attribute,
        the requested attribute value), then decoded. Writes a tractogram in
        the space of the training data and a picture of it beside the real
        bundle (the model's training files of that bundle, or --real): for a
        length, its real streamlines within 10 % of the length, or all of
        them when fewer than 10 lie there (the panel's label says which).
        Several bundles and lengths can be asked at once: one file pair each.

        Parameters
        ----------
        model : string, optional
            The model file written by aae_tract_train.
        bundle : variable string, optional
            Bundle name(s) known to the model. Without it: all of them.
        length : variable float, optional
            Target streamline length(s) in mm. Without it: the bundle's median
            length in training.
        attribute_value : variable float, optional
            Target value(s) of the attribute of a model trained with
            --attribute (e.g. age), instead of --length.
        age : variable float, optional
            Target age(s) in years, for a model trained with --attribute age
            (the same as --attribute_value); files are named age70 etc.
        max_extrapolation : float, optional
            How far beyond the range seen in training for a bundle a
            requested value may lie, in units of that range's width (a
            quarter by default: AF_L seen at 90-150 mm is generated at
            75-165 mm). Beyond it the request is refused before anything is
            generated; between the range and it the model extrapolates and
            warns. A large value lifts the limit.
        n_streamlines : int, optional
            Streamlines to generate per bundle and value.
        seed : int, optional
            Random seed (the same seed gives the same streamlines).
        sampling : string, optional
            prior (samples of the latent prior; of a fitted prior, moved to
            new subjects as bank's encodings are, see subject_noise, and for
            a length model placed as new subjects' bundles lie, see
            placement_noise) or bank (near the training encodings of the
            bundle, with --noise). Without it: prior for a model conditioned
            on length with the fitted mixture prior (aae_tract_train's
            default), bank for a model conditioned on another attribute,
            such as age, or with another prior (doc/benchmarks.md, "Prior
            sampling as the default of length models").
        noise : float, optional
            With bank sampling only: bank sampling adds Gaussian noise to
            each training encoding, with noise^2 times the covariance of the
            bundle's encodings. Default: the bundle's own at the requested
            length, set at training from the training subjects, so that the
            streamlines lie about 0.9 times as far from the training
            streamlines as a new subject's do (doc/benchmarks.md, "Bank
            noise set from the training subjects"); 0.225 with --noise_scope
            target, for a model file from before, or a bundle with fewer
            than three training subjects; 0.2 for a model conditioned on a
            per-subject attribute such as age.
        noise_scope : string, optional
            With bank sampling only: which encodings give bank sampling's
            noise its covariance: bundle (all the bundle's) or target (those
            near the requested length, so that a long streamline varies as
            long ones do; without --noise, 0.225). On the phantom in the
            common space aae_tract_train builds, target with --noise 0.15
            met the length-band target in every band (chosen on the held-out
            subjects it was measured on; doc/benchmarks.md, "The phantom in
            a common space").
        subject_noise : float, optional
            Bank sampling moves each training encoding from its subject to a
            new subject: how far the new subjects spread, relative to the
            training subjects (0: every streamline as in the subjects' mean).
            Prior sampling of a prior fitted to each bundle moves each sample
            alike, from the subject of its nearest training encoding.
            Models saved before banks kept their subjects ignore it. Without
            it: 0.7, or 0.1 for prior sampling of a length model's fitted
            prior (whatever --placement_noise is).
        placement_noise : float, optional
            Each generated streamline is also moved as a new subject's
            bundle lies: rotated about the bundle's centre and shifted, by a
            rigid move drawn per axis with this many times the spread the
            training subjects' bundles show (measured on the model; lengths
            are kept). 0: no move. Without it: 0, or 0.9 for prior sampling
            of a length model's fitted prior (whatever --subject_noise is).
        extend_reach : bool, optional
            For a length model: a streamline the decoder does not bring to
            the requested length within the calibration's range of latent
            dimension 0 (widened by a quarter) is searched again within 1.5
            ranges beyond it on each side. Lengths near the ends of a bundle's
            range then come out as asked more often, drawn by codes farther
            from the training codes and shaped less like the real
            streamlines.
        candidates : int, optional
            For a length model: codes drawn per streamline, of which the
            first whose decoded length already lies within 1.5 % of the
            requested length is brought to it (the first drawn where none
            does; latent dimension 0 then moves less, and the decoder curls
            the streamline's ends less often to make up the length). 1:
            every code drawn is brought to the length.
        prior_spread : float, optional
            With prior sampling only (an error with bank sampling): a
            factor (above 0, at most 10) on the spread of the prior's draws
            about the means of its components, for this run only (the model
            file is not changed). Below 1 the draws keep nearer the
            encodings the prior expects at the requested value: more
            streamlines on the bundle, but gathered in strands that leave
            parts of it empty, and less novel (doc/benchmarks.md keeps 1).
            Default 1: the prior as fitted.
        filter : bool, optional
            Keep only plausible streamlines (near a real one of the bundle and,
            for length, within --length_tolerance of the target), sampling
            again until n_streamlines are kept.
        max_mdf : float, optional
            Filter: largest distance (MDF, mm) to the nearest streamline of
            the bundle. Without it: twice the bundle's own spread.
        length_tolerance : float, optional
            Filter: largest |length - target| in mm. Without it: 10 % of the
            target.
        keep_outside : bool, optional
            Keep streamlines that leave the volume of the written file's
            header (--reference, else the training data's). Without it they
            are drawn again, so that DIPY's load_tractogram reads the file
            with its default bounding-box check. Without --reference there is
            no test when the training data lay outside their own header's
            volume (as the embedded default's does) or with --space.
        real : variable string, optional
            Real tractograms of the bundle for the picture (files, folders or
            patterns; several files go to the bundles their names give, a
            single file to every bundle asked unless it is named after
            another of the model's bundles). Without it: the model's
            training files, when present.
            Beside a length, the picture shows those of their streamlines
            within 10 % of it (all of them when fewer than 10 lie there).
        reference : string, optional
            Reference anatomy (NIfTI or .trk) giving the space of the written
            tractograms, and of .tck and .trx files given with --real.
            Without it: the space of the training data.
        space : string, optional
            Where the streamlines are placed, for a model trained with
            registration: without it, the model's common space (where its
            training subjects were registered); a training subject's name,
            that subject's native space (held-out subjects have no stored
            transform).
        format : string, optional
            Tractogram format: trk, tck or trx. Without it: the extension of
            out_tractogram.
        skip_picture : bool, optional
            Write only the tractograms (no FURY rendering).
        view : string, optional
            Camera of the pictures: oblique, left, right, superior,
            inferior, anterior or posterior; auto: for each bundle, the one
            of left, right, anterior and superior that faces the axis its
            real streamlines of every length spread least along (the
            generated ones of its first length where it has no real ones),
            left or right by the side its name gives (AF_L, CST_R), else by
            its centre's: its widest face, the same in all its pictures (a
            side view of AF_L, a view from above of CC_ForcepsMajor).
        backend : string, optional
            Keras backend: tensorflow, torch or jax. Without it: KERAS_BACKEND, else
            tensorflow.
        device : string, optional
            auto, cpu or gpu.
        out_dir : string, optional
            Output folder.
        out_tractogram : string, optional
            Name of each generated tractogram; {bundle} and {condition} (e.g.
            length80) are filled in.
        out_picture : string, optional
            Name of each picture; {bundle} and {condition} are filled in.
        """
        self._begin()
        lengths, values, ages = _check_targets(length, attribute_value, age)
        n_streamlines, seed, sampling, max_mdf, length_tolerance = (
            _check_sampling_options(
                n_streamlines, seed, sampling, max_mdf, length_tolerance
            )
        )
        if noise is not None:
            noise = check_float("noise", noise, minimum=0)
        noise_scope = check_choice("noise_scope", noise_scope, NOISE_SCOPES)
        candidates = check_int("candidates", candidates, maximum=MAX_CANDIDATES)
        prior_spread = check_prior_spread_option(prior_spread)
        subject_noise = noise_or_default("subject_noise", subject_noise)
        placement_noise = noise_or_default("placement_noise", placement_noise)
        fmt = None if format is None else check_choice("format", format, FORMATS)
        view = check_view_option(view)
        max_extrapolation = check_float(
            "max_extrapolation", max_extrapolation, minimum=0
        )
        real = [str(p) for p in as_list(real)]
        if reference is not None and not Path(reference).exists():
            bad_value("reference", reference, "must be an existing file")
        volume = None
        if reference is not None:
            from aae_tract.io import space_from_reference

            volume = space_from_reference(reference)  # names a file it cannot use

        model_path = Path(model)
        net = _load_model(model_path, backend, device)
        sampling = sampling_for(net, sampling, noise, noise_scope, prior_spread)
        bundles = [str(b) for b in as_list(bundle)] or net.bundle_names
        for name in bundles:
            net.bundle_index(name)  # UnknownBundleError listing the known bundles
        space = _check_space(net, space, model_path)
        requests = _requests(net, bundles, lengths, values + ages, model_path, ages)
        for name, value in requests:
            check_target(net, name, value, max_extrapolation)
        names = _output_names(
            requests,
            net.attribute_name,
            out_tractogram=out_tractogram,
            out_picture=out_picture,
            fmt=fmt,
            skip_picture=skip_picture,
        )
        paths = self._prepare_outputs(out_dir, names)
        if paths is None:
            return None

        written, no_pictures = _generate_requests(
            net,
            requests,
            paths,
            options={
                "n_streamlines": n_streamlines,
                "seed": seed,
                "sampling": sampling,
                "noise": noise,
                "noise_scope": noise_scope,
                "subject_noise": subject_noise,
                "placement_noise": placement_noise,
                "extend_reach": bool(extend_reach),
                "candidates": candidates,
                "prior_spread": prior_spread,
                "filter": bool(filter),
                "max_mdf": max_mdf,
                "length_tolerance": length_tolerance,
                "space": space,
                "keep_inside": not keep_outside,
                "volume": volume,
                "max_extrapolation": max_extrapolation,
            },
            real=real,
            reference=reference,
            skip_picture=skip_picture,
            view=view,
        )
        _log_summary(
            net.attribute_name,
            requests,
            n_streamlines,
            written,
            skip_picture=skip_picture,
            no_pictures=no_pictures,
        )
        return written


def _check_targets(length, attribute_value, age):
    """The checked --length, --attribute_value and --age lists (one kind only)."""
    lengths = [
        check_float("length", v, minimum=0, maximum=MAX_LENGTH_MM, exclusive_min=True)
        for v in as_list(length)
    ]
    values = [check_float("attribute_value", v) for v in as_list(attribute_value)]
    ages = [check_float("age", v, minimum=0) for v in as_list(age)]
    if sum(map(bool, (lengths, values, ages))) > 1:
        raise AAETractError(
            "give one of --length (a model trained on length), --age (a model "
            "trained with --attribute age) or --attribute_value, not several"
        )
    return lengths, values, ages


def _check_sampling_options(n_streamlines, seed, sampling, max_mdf, length_tolerance):
    """The checked --n_streamlines, --seed, --sampling and filter options."""
    n_streamlines = check_int("n_streamlines", n_streamlines, maximum=MAX_STREAMLINES)
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    if sampling is not None:
        sampling = check_choice("sampling", sampling, SAMPLING_METHODS)
    if max_mdf is not None:
        max_mdf = check_float("max_mdf", max_mdf, minimum=0, exclusive_min=True)
    if length_tolerance is not None:
        length_tolerance = check_float(
            "length_tolerance", length_tolerance, minimum=0, exclusive_min=True
        )
    return n_streamlines, seed, sampling, max_mdf, length_tolerance


def _check_space(net, space, model_path):
    """The checked --space: None, or a training subject of a registered model."""
    if space is None:
        return None
    if not net.registration.active:
        bad_value(
            "space",
            space,
            f"needs a model trained with registration; {model_path} was "
            "not (its streamlines are in the training data's space)",
        )
    if str(space) not in net.registration.transforms:
        known = ", ".join(sorted(net.registration.transforms))
        bad_value("space", space, f"must be a training subject ({known})")
    return str(space)


def _load_model(model_path, backend, device):
    """The model at ``model_path``, loaded with the chosen backend and device."""
    select_backend(backend, device)
    from aae_tract.model.metadata import read_model_file

    read_model_file(model_path)  # a missing or broken file fails before Keras loads
    from aae_tract.model import TractAAE

    check_device(device)
    return TractAAE.load(model_path)


def _requests(net, bundles, lengths, values, model_path, ages=()):
    """(bundle, value) pairs to generate; the training median without targets."""
    attr = net.attribute_name
    if ages and attr != "age":
        raise AAETractError(
            f"--age needs a model trained with --attribute age; {model_path} is "
            f"conditioned on {attr!r}"
            + (" (use --length)" if attr == "length" else " (use --attribute_value)")
        )
    if attr != "length" and lengths:
        raise AAETractError(
            f"{model_path} is conditioned on {attr!r}, not on streamline "
            f"length: use --attribute_value <{attr}> instead of --length"
        )
    targets = lengths or values
    requests = []
    for name in bundles:
        # the median, rounded for the file name but kept within the seen range
        low, high = net.attribute_range(name)
        median = round(net.metadata.bundle_stats[name]["attribute"]["p50"], 1)
        chosen = targets or [min(max(median, low), high)]
        requests.extend((name, v) for v in chosen)
    return requests


def _output_names(requests, attr, *, out_tractogram, out_picture, fmt, skip_picture):
    """Output names of every request (``out_tractogram_<i>``, ``out_picture_<i>``)."""
    names = {}
    for i, (name, value) in enumerate(requests):
        fill = {"bundle": name, "condition": condition_label(attr, value)}
        tract_name = Path(_fill(out_tractogram, fill, "out_tractogram"))
        if fmt is not None:
            tract_name = tract_name.with_suffix(f".{fmt}")
        elif tract_name.suffix.lstrip(".").lower() not in FORMATS:
            bad_value(
                "out_tractogram", str(tract_name), "must end in .trk, .tck or .trx"
            )
        names[f"out_tractogram_{i}"] = tract_name
        if not skip_picture:
            picture = _fill(out_picture, fill, "out_picture")
            names[f"out_picture_{i}"] = Path(picture)
    if len({str(n) for n in names.values()}) != len(names):
        raise AAETractError(
            "several requests would write the same file: put {bundle} and "
            "{condition} in --out_tractogram and --out_picture"
        )
    return names


def _generate_requests(
    net, requests, paths, *, options, real, reference, skip_picture, view="oblique"
):
    """Generate and write every request; the files written and why no pictures.

    ``options`` are keyword arguments of :func:`aae_tract.generate.generate`.
    """
    from aae_tract.generate import generate
    from aae_tract.io import save_tractogram

    attr = net.attribute_name
    no_pictures = None if skip_picture else _picture_problem()
    pictures = []
    views = {}  # --view auto: each bundle's, chosen at its first picture
    for i, (name, value) in enumerate(requests):
        kwargs = {"length": value} if attr == "length" else {"attribute": value}
        result = generate(net, name, **options, **kwargs)
        save_tractogram(
            result.tractogram, paths[f"out_tractogram_{i}"], reference=reference
        )
        if not skip_picture and not no_pictures:
            unit = " mm" if attr == "length" else ""
            pictures.append(
                _picture(
                    net,
                    result,
                    paths[f"out_picture_{i}"],
                    title=f"{name} at {attr} {value:g}{unit}"
                    + (f", {options['space']}'s space" if options["space"] else ""),
                    real=real,
                    reference=reference,
                    space=options["space"],
                    view=view,
                    views=views,
                )
            )
    written = [paths[f"out_tractogram_{i}"] for i in range(len(requests))]
    written += [p for p in pictures if p is not None]
    return written, no_pictures


def _log_summary(attr, requests, n_streamlines, written, *, skip_picture, no_pictures):
    """Log what was generated and written, and why pictures are missing."""
    missing = 0 if skip_picture else 2 * len(requests) - len(written)
    if no_pictures:
        note = f" (no pictures: {no_pictures})"
    elif missing:
        note = f" (no picture for {missing}: see the warning above)"
    else:
        note = ""
    logger.info(
        "Generated %d streamlines for each of %d request%s (%s); wrote %s%s",
        n_streamlines,
        len(requests),
        "s" * (len(requests) != 1),
        ", ".join(f"{b} {attr} {v:g}" for b, v in requests),
        names_written(written),
        note,
    )


def _picture_problem():
    """Why no picture can be made here (logged once), or None when they can."""
    from aae_tract.viz import adapter_problem

    problem = adapter_problem()
    if problem:
        logger.warning("no picture will be made: %s", problem)
    return problem


def load_lines(files, *, reference=None, space=None, place=None):
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
    place : callable, optional
        ``place(path, streamlines)`` -> streamlines moved where they are shown
        (e.g. into a model's common space).
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
        streamlines = sft.streamlines
        if place is not None:
            try:
                streamlines = place(path, streamlines)
            except AAETractError as exc:
                logger.warning("not shown in the picture: %s: %s", path, exc)
                continue
        lines.extend(streamlines)
    return lines or None


#: Real streamlines shown beside a length request: those within this share
#: of the requested length, when there are at least :data:`MIN_REAL_NEAR`.
REAL_NEAR_SHARE = 0.1
MIN_REAL_NEAR = 10


def real_near_request(lines, result):
    """The real streamlines to draw beside ``result`` and their panel label.

    For a length model, the real streamlines within :data:`REAL_NEAR_SHARE`
    of the requested length, so that the picture compares like with like
    (labelled with their range, e.g. ``"real, 72-88 mm"``); the whole bundle
    when fewer than :data:`MIN_REAL_NEAR` lie there (labelled ``"real, all
    lengths"``, and logged). For any other attribute, every real streamline
    (``"real"``).

    Parameters
    ----------
    lines : list of (k, 3) arrays
        The real bundle.
    result : aae_tract.generate.GeneratedBundle
        What was generated.

    Returns
    -------
    (list of arrays, str)
    """
    from aae_tract.streamlines import streamline_lengths

    if result.attribute_name != "length":
        return lines, "real"
    low = result.target * (1 - REAL_NEAR_SHARE)
    high = result.target * (1 + REAL_NEAR_SHARE)
    lengths = streamline_lengths(lines)
    near = [line for line, n in zip(lines, lengths) if low <= n <= high]
    if len(near) >= MIN_REAL_NEAR:
        return near, f"real, {round(low, 1):g}-{round(high, 1):g} mm"
    logger.info(
        "the picture's real panel shows every %s streamline: %d of %d lie "
        "within %d %% of %g mm",
        result.bundle,
        len(near),
        len(lines),
        round(REAL_NEAR_SHARE * 100),
        result.target,
    )
    return lines, "real, all lengths"


def _picture(
    model,
    result,
    out_png,
    *,
    title,
    real=None,
    reference=None,
    space=None,
    view="oblique",
    views=None,
):
    """The generated streamlines beside the real bundle (or alone); Path or None.

    With ``view`` auto, the view is the one :func:`aae_tract.viz.facing_view`
    gives the bundle's real streamlines of every length (the generated ones
    where there are none), kept in ``views`` so that every picture of the
    bundle in a run shares it.
    """
    from aae_tract.registration import file_placer
    from aae_tract.viz import AUTO_VIEW, render_bundles, render_comparison

    files = real_bundle_files(model, result.bundle, real)
    if real and not files:
        logger.warning("no real %s streamlines in %s", result.bundle, " ".join(real))
    elif not real and not files:
        logger.info(
            "the picture shows the generated %s alone: the model records no "
            "training file of it that is here (--real adds real streamlines)",
            result.bundle,
        )
    lines = None
    if files:
        lines = load_lines(
            files,
            reference=reference,
            space=model.metadata.space,
            place=file_placer(model, result.bundle, space),
        )
    if view == AUTO_VIEW:
        view = _bundle_view(result, lines, {} if views is None else views)
    made = generated_label(result)
    if lines:
        lines, label = real_near_request(lines, result)
        return render_comparison(
            lines,
            result.streamlines,
            out_png,
            bundle=result.bundle,
            title=f"{title}: real vs generated",
            real_label=label,
            generated_label=made,
            view=view,
        )
    return render_bundles(
        [result.streamlines],
        out_png,
        labels=[result.bundle],
        title=f"{title}: {made}",
        view=view,
    )


def generated_label(result):
    """What the picture calls the generated streamlines: for a length model
    with the median length they came out at (``"generated, median 147.3
    mm"``), since the title gives the length asked; else ``"generated"``."""
    if result.attribute_name != "length":
        return "generated"
    return f"generated, median {result.median_length:.1f} mm"


def _bundle_view(result, real_lines, views):
    """The view of ``result``'s bundle for ``--view auto``: ``views``' entry,
    else :func:`aae_tract.viz.facing_view` of its real streamlines (the
    generated ones where there are none), stored there and logged."""
    from aae_tract.viz import facing_view

    name = result.bundle
    if name not in views:
        lines = real_lines if real_lines else result.streamlines
        views[name] = facing_view(lines, [name])
        logger.info("view of %s: %s (facing its widest face)", name, views[name])
    return views[name]


def _fill(template, values, option):
    try:
        return str(template).format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise AAETractError(
            f"--{option} {template!r}: only {{bundle}} and {{condition}} can be "
            f"filled in ({exc})"
        ) from None
