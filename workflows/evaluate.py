"""``aae_tract_evaluate``: measure a trained model on held-out streamlines."""

import logging
from pathlib import Path

from aae_tract.errors import AAETractError

from .base import (
    AAEWorkflow,
    check_choice,
    check_device,
    check_int,
    names_written,
    resolve_inputs,
    select_backend,
    write_json_atomic,
)
from .generate import check_model_path
from .train import training_files

logger = logging.getLogger(__name__)


def held_out_data(model, inputs, *, reference=None):
    """The streamlines to evaluate ``model`` on, and where they come from.

    Parameters
    ----------
    model : TractAAE
        A trained model; its training record says which files it was trained
        on and how they were split.
    inputs : list of str or None
        Files, folders or patterns; None: the model's own training data when
        its files are still there, else the embedded default.
    reference : str, optional
        Reference anatomy for .tck inputs.

    Returns
    -------
    dataset : StreamlineDataset
        The held-out split when the inputs are the model's training data,
        otherwise all streamlines of the inputs; only bundles the model knows.
    description : str
        Where the data comes from, for the log.
    """
    from aae_tract.data import load_dataset, split_dataset

    record = model.metadata.training
    trained_files = list(record.get("inputs") or [])
    trained_on = set(trained_files)
    if inputs is None and trained_on and all(Path(p).is_file() for p in trained_on):
        inputs = trained_files
    files = training_files(inputs)
    known = set(model.bundle_names)
    usable = [f for f in files if Path(f).stem in known]
    if not usable:
        raise AAETractError(
            f"none of the {len(files)} input tractograms is a bundle the model "
            f"knows ({', '.join(model.bundle_names)}); bundle names are file names"
        )
    skipped = len(files) - len(usable)
    if skipped:
        logger.warning(
            "%d input file(s) of bundles the model does not know are ignored", skipped
        )
    same_data = bool(trained_on) and set(files) == trained_on
    if reference is None and same_data:
        reference = record.get("reference")
    dataset = load_dataset(
        usable,
        n_points=model.n_points,
        attribute=model.attribute_name,
        participants=record.get("participants") if same_data else None,
        reference=reference,
        orient_refs={k: v for k, v in model.metadata.orient_refs.items()},
    )
    if same_data:
        _, held_out = split_dataset(
            dataset,
            val_fraction=record.get("val_fraction", 0.2),
            seed=record.get("split_seed", model.config.seed),
        )
        if len(held_out) == 0:
            raise AAETractError(
                "the model was trained on these inputs without holding any out "
                "(--val_fraction 0): give other data to evaluate on"
            )
        subjects = sorted({str(s) for s in held_out.subjects})
        return held_out, (
            f"the held-out split of the training data ({len(held_out)} streamlines; "
            f"subjects {', '.join(subjects[:8])}{' ...' * (len(subjects) > 8)})"
        )
    return dataset, f"{len(dataset)} streamlines from {len(usable)} files"


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
        sampling="bank",
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
        (turning angle per mm, generated / real), recon_length_ratio
        (reconstruction / input length, worst length quintile),
        length_error_pct and length_error_pct_mean (generated length error
        at target lengths, in percent), shape_similarity (DIPY's BUAN) and
        realism_c2st (accuracy of a classifier telling generated from real
        streamlines; 0.5 is ideal), with a real-vs-real reference row.
        Without inputs the model is measured on the held-out subjects of the
        data it was trained on (the embedded default unless trained on other
        files); inputs that are the training data use the same held-out
        split, other inputs are used whole.

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
            bank or prior: how latent codes are sampled for generation.
        reference : string, optional
            Reference anatomy (NIfTI or .trk) for .tck inputs.
        backend : string, optional
            Keras backend: tensorflow or torch. Without it: KERAS_BACKEND, else
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
        model_path = check_model_path(model)
        n_generate = check_int("n_generate", n_generate, maximum=100_000)
        seed = check_int("seed", seed, minimum=0)
        sampling = check_choice("sampling", sampling, ("bank", "prior"))
        paths = self._prepare_outputs(
            out_dir, {"out_metrics": out_metrics, "out_figure": out_figure}
        )
        if paths is None:
            return None

        select_backend(backend, device)
        inputs = resolve_inputs(inputs)
        if inputs is not None:
            training_files(inputs)  # bad inputs fail before Keras is loaded
        from aae_tract.model import TractAAE

        where = check_device(device)
        net = TractAAE.load(model_path)
        dataset, description = held_out_data(net, inputs, reference=reference)
        logger.info("evaluating %s on %s, %s", model_path, description, where)

        from aae_tract.metrics import METRIC_NAMES, evaluate
        from aae_tract.viz import plot_evaluation

        metrics = evaluate(
            net, dataset, n_generate=n_generate, seed=seed, sampling=sampling
        )
        metrics["model"] = str(model_path)
        metrics["data"] = description
        write_json_atomic(paths["out_metrics"], metrics)
        kind = "held-out " if description.startswith("the held-out") else ""
        plot_evaluation(
            metrics,
            paths["out_figure"],
            reference=metrics.get("reference"),
            title=f"{model_path.name} on {len(dataset)} {kind}streamlines",
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
