"""``aae_tract_evaluate``: measure a trained model on held-out streamlines."""

import logging
from pathlib import Path

from aae_tract.generate import DEFAULT_PRIOR_SPREAD, NOISE_SCOPES, SAMPLING_METHODS

from .base import (
    AAEWorkflow,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_prior_spread_option,
    check_reference,
    names_written,
    noise_or_default,
    resolve_inputs,
    sampling_for,
    select_backend,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


class EvaluateFlow(AAEWorkflow):
    optional_inputs = True

    @classmethod
    def get_short_name(cls):
        return "evaluate"

    def run(
        self,
        inputs,
        model="aae_tract_model.keras",
        n_generate=100,
        seed=0,
        sampling=None,
        noise=None,
        noise_scope="bundle",
        subject_noise=None,
        placement_noise=None,
        prior_spread=DEFAULT_PRIOR_SPREAD,
        reference=None,
        backend=None,
        device="auto",
        out_dir="",
        out_metrics="metrics.json",
        out_figure="evaluation.png",
    ):
        """Measure a trained model on held-out streamlines.

        Metrics (keys of metrics.json): recon_mdf_mm (held-out
        reconstruction distance), label_fidelity, length_mae_mm, ar_spearman
        (latent dimension 0 against the attribute), diversity_ratio (1: as
        diverse as real data, 0: collapse), density_dice, curvature_ratio
        (turning angle per mm, generated / real), rough_fraction (share
        of generated streamlines turning over 3 times the real median: 0
        is ideal), hooked_fraction (share of generated streamlines whose
        ends turn more within 10 mm than 99 % of the real ones': about
        0.01 for real streamlines), recon_length_ratio
        (reconstruction / input length, worst length quintile),
        length_error_pct and length_error_pct_mean (generated length error
        at target lengths, in percent), shape_similarity (DIPY's BUAN) and
        realism_c2st (accuracy of a classifier telling generated from real
        streamlines; 0.5 is ideal), prior_match (a classifier telling
        held-out encodings from prior samples; 0.5: a match), novelty_ratio
        (distance of generated streamlines to the training ones, against
        held-out real ones; 1: as new), band_precision (per length band,
        the share on the real bundle against the training streamlines') and
        band_recall (per length band, the share of the real bundle the
        generated streamlines cover, against the training streamlines'),
        with a real-vs-real reference row; subject_noise and
        placement_noise record the generation settings used.
        Without inputs the model is measured on the held-out subjects of the
        data it was trained on (the embedded default unless trained on other
        files); inputs that are the training data use the same held-out
        split, other inputs are used whole. A model that records no training
        files (trained through the Python API), or whose files are gone and
        were not the embedded default, is measured on the whole embedded
        default, with a warning that these may be its training streamlines.
        For a model trained with
        registration, the streamlines are first brought into its common
        space: training subjects by their stored transforms, other subjects
        by SLR to the model's common-space bundles (the log and metrics.json
        say so).

        Parameters
        ----------
        inputs : variable string
            Held-out tractograms: files, folders (<subject>/<BUNDLE>.trk) or
            patterns. Leave out (or write default) for the held-out split of
            the training data.
        model : string, optional
            The model file written by aae_tract_train.
        n_generate : int, optional
            Streamlines generated per bundle (and per target length).
        seed : int, optional
            Random seed of the generation.
        sampling : string, optional
            prior or bank: how latent codes are sampled for generation (as
            aae_tract_generate's). Without it: the model's default (prior
            for a length model with the fitted mixture prior, bank for a
            model conditioned on another attribute, such as age, or with
            another prior); metrics.json records it.
        noise : float, optional
            With bank sampling only: bank sampling's noise (as
            aae_tract_generate's). Without it: each bundle's own per length
            band, set at training from its training subjects (0.225 with
            --noise_scope target, for a model file from before, or a bundle
            with fewer than three training subjects; 0.2 for one conditioned
            on a per-subject attribute such as age).
        noise_scope : string, optional
            With bank sampling only: bundle or target: which encodings shape
            bank sampling's noise (as aae_tract_generate's). metrics.json
            records both as used (noise per bundle, with the lengths of its
            bands where it was set at training; null for prior sampling,
            which adds no bank noise).
        subject_noise : float, optional
            Spread of the new subjects generation moves codes to, relative
            to the training subjects' (as aae_tract_generate's). Without it:
            the sampling's default (0.7; 0.1 for prior sampling of a length
            model's fitted prior).
        placement_noise : float, optional
            Spread of the new subjects' placement of each bundle (as
            aae_tract_generate's). Without it: the sampling's default (0; 0.9
            for prior sampling of a length model's fitted prior).
            metrics.json records both as used.
        prior_spread : float, optional
            With prior sampling only (an error with bank sampling): a
            factor (above 0, at most 10) on the spread of the prior's draws
            (as aae_tract_generate's; default 1: the prior as fitted).
            metrics.json records it (null for bank sampling); prior_match
            measures the prior itself whatever it is.
        reference : string, optional
            Reference anatomy (NIfTI or .trk in the same space) for .tck and
            .trx inputs (for .trx, the word same uses the file's own header).
            Without it, the model's own training data is read with the
            reference it was trained with.
        backend : string, optional
            Keras backend: tensorflow, torch or jax. Without it: KERAS_BACKEND, else
            tensorflow.
        device : string, optional
            auto, cpu or gpu.
        out_dir : string, optional
            Output folder.
        out_metrics : string, optional
            Name of the metrics JSON file.
        out_figure : string, optional
            Name of the figure of the metrics.
        """
        self._begin()
        n_generate = check_int("n_generate", n_generate, maximum=100_000)
        seed = check_int("seed", seed, minimum=0)
        if sampling is not None:
            sampling = check_choice("sampling", sampling, SAMPLING_METHODS)
        if noise is not None:
            noise = check_float("noise", noise, minimum=0)
        noise_scope = check_choice("noise_scope", noise_scope, NOISE_SCOPES)
        subject_noise = noise_or_default("subject_noise", subject_noise)
        placement_noise = noise_or_default("placement_noise", placement_noise)
        prior_spread = check_prior_spread_option(prior_spread)
        select_backend(backend, device)
        from aae_tract.splits import (
            held_out_data,
            input_files,
            is_training_data,
            known_files,
        )

        inputs = resolve_inputs(inputs)
        # bad inputs fail before Keras is loaded
        files = None if inputs is None else input_files(inputs)
        model_path = Path(model)
        from aae_tract.model.metadata import read_model_file

        read_model_file(model_path)
        from aae_tract.model import TractAAE

        where = check_device(device)
        net = TractAAE.load(model_path)
        sampling = sampling_for(net, sampling, noise, noise_scope, prior_spread)
        if files is not None and not is_training_data(net, files):
            check_reference(known_files(net, files), reference)
        paths = self._prepare_outputs(
            out_dir, {"out_metrics": out_metrics, "out_figure": out_figure}
        )
        if paths is None:
            return None
        held = held_out_data(net, files, reference=reference)
        logger.info("evaluating %s on %s, %s", model_path, held.description, where)

        from aae_tract.metrics import METRIC_NAMES, evaluate
        from aae_tract.plots import plot_evaluation

        metrics = evaluate(
            net,
            held.dataset,
            n_generate=n_generate,
            seed=seed,
            sampling=sampling,
            train=held.train,
            noise=noise,
            noise_scope=noise_scope,
            subject_noise=subject_noise,
            placement_noise=placement_noise,
            prior_spread=prior_spread,
        )
        from aae_tract.generate import bank_noise_used, resolve_noises

        bank = sampling == "bank"  # prior sampling adds no bank noise
        metrics["noise"] = (
            {
                name: bank_noise_used(net, name, noise, noise_scope)
                for name in net.bundle_names
            }
            if bank
            else None
        )
        metrics["noise_scope"] = noise_scope if bank else None
        metrics["prior_spread"] = None if bank else prior_spread

        metrics["subject_noise"], metrics["placement_noise"] = resolve_noises(
            net, sampling, subject_noise, placement_noise
        )
        metrics["model"] = str(model_path)
        metrics["data"] = held.description
        write_json_atomic(paths["out_metrics"], metrics)
        kind = "held-out " if held.split else ""
        plot_evaluation(
            metrics,
            paths["out_figure"],
            reference=metrics.get("reference"),
            title=f"{model_path.name} on {len(held.dataset)} {kind}streamlines",
        )
        shown = ", ".join(
            f"{k} {metrics[k]:.3g}" if metrics.get(k) is not None else f"{k} n/a"
            for k in METRIC_NAMES
        )
        logger.info(
            "Evaluated in %.0f s: %s; wrote %s",
            metrics.get("seconds", 0),
            shown,
            names_written(paths.values()),
        )
        return metrics
