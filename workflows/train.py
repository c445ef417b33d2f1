"""``aae_tract_train``: train the conditional AAE on labelled bundles."""

import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from aae_tract.backend import TRAINABLE_BACKENDS

from .base import (
    AAEWorkflow,
    as_list,
    bad_value,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_reference,
    names_written,
    resolve_inputs,
    select_backend,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

#: How the training curves name the self-training phase, by mode.
SELF_TRAINING_PHASE = {
    "continue": "self-training (trained further)",
    "restart": "self-training (new model)",
}

#: Hidden folder in ``out_dir`` holding the resumable checkpoint.
CHECKPOINT_DIR = ".aae_tract_checkpoint"


class StopAfterEpoch:
    """Context manager: Ctrl-C stops training after the current epoch.

    The first interrupt lets the epoch finish and its checkpoint be written,
    then training stops (``requested`` is True; the caller raises
    KeyboardInterrupt and ``--resume`` continues). A second interrupt stops
    the process at once; the last complete checkpoint is kept, since
    checkpoints are written to a temporary name and renamed.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handle(self, signum, frame):
        if self.requested:
            os.write(2, b"aae_tract_train: stopped (continue with --resume)\n")
            os._exit(130)
        self.requested = True
        os.write(
            2,
            b"aae_tract_train: interrupt: stopping after this epoch, whose "
            b"checkpoint is kept (interrupt again to stop now)\n",
        )

    def callback(self):
        """A Keras callback that ends training at the end of an interrupted epoch."""
        import keras

        outer = self

        class _Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if outer.requested:
                    self.model.stop_training = True

        return _Stop()


def _keras_verbosity():
    """Keras progress: a bar on a terminal, a line per epoch otherwise, none
    above INFO."""
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        return 0
    return "auto" if sys.stdout.isatty() else 2


class TrainFlow(AAEWorkflow):
    optional_inputs = True

    @classmethod
    def get_short_name(cls):
        return "train"

    def run(
        self,
        inputs,
        epochs=100,
        batch_size=64,
        latent_dims=32,
        n_points=256,
        attribute="length",
        participants=None,
        reference=None,
        register="groupwise",
        register_transform="rigid",
        n_control=None,
        decoder="arclength",
        filters=None,
        disc_units=None,
        disc_norm="none",
        dropout=0.2,
        prior=None,
        prior_components=32,
        prior_component_codes=None,
        learning_rate=1e-3,
        adv_weight=None,
        ar_weight=None,
        ar_soft=None,
        smooth_weight=0.0,
        length_weight=0.1,
        direction_weight=0.1,
        texture_weight=0.01,
        texture_width=1.0,
        warmup_epochs=10,
        polish_epochs=None,
        polish_warmup_epochs=0,
        polish_noise=0.05,
        polish_turn_weight=0.0006,
        polish_swap_weight=0.0,
        constant_lr=False,
        val_fraction=0.2,
        seed=0,
        resume=False,
        backend=None,
        device="auto",
        devices="1",
        cache_dir=None,
        unlabelled=None,
        label_fraction=1.0,
        self_train_epochs=None,
        self_train_mode="continue",
        min_confidence=0.9,
        out_dir="",
        out_model="aae_tract_model.keras",
        out_history="training_history.json",
        out_curves="training_curves.png",
        out_latent="latent_space.png",
    ):
        """Train a conditional adversarial autoencoder on labelled bundles.

        Streamlines are resampled to n_points, oriented within each bundle and
        encoded into a latent space conditioned on the bundle label, with
        latent dimension 0 ordered by the attribute (streamline length, or a
        participants.tsv column such as age). Whole subjects are held out for
        validation. Without inputs it trains on the embedded default (DIPY's
        minimal_bundles: 5 subjects x AF_L, CST_R, CC_ForcepsMajor), which
        takes a few minutes on a laptop CPU.

        Parameters
        ----------
        inputs : variable string
            Tractograms (.trk, .tck, .trx): files, folders laid out as
            <subject>/<BUNDLE>.trk (or <BUNDLE>.trk) or glob patterns; the
            bundle label is the file name. Leave out (or write default) for
            the embedded default; a dataset name of aae_tract_fetch
            (minimal_bundles, phantom) works too.
        epochs : int, optional
            Training epochs.
        batch_size : int, optional
            Streamlines per batch.
        latent_dims : int, optional
            Size of the latent space.
        n_points : int, optional
            Points per resampled streamline.
        attribute : string, optional
            What latent dimension 0 encodes: length (streamline length in mm)
            or a column of participants.tsv such as age.
        participants : string, optional
            The participants table for --attribute other than length. Without
            it: participants.tsv beside the subject folders.
        reference : string, optional
            Reference anatomy (NIfTI or .trk in the same space) for .tck and
            .trx inputs; for .trx, the word same uses the file's own header.
        register : string, optional
            How the subjects are brought into one common space before
            training: groupwise (DIPY's groupwise streamline registration of
            the training subjects, all bundles of a subject moved together),
            none, or a template tractogram (or folder of <BUNDLE>.trk files)
            every subject is registered to (SLR), whose space becomes the
            common space. Either way, held-out subjects are then registered
            (SLR) to the training subjects' common-space bundles.
        register_transform : string, optional
            rigid (keeps streamline lengths) or affine (fits better, but
            rescales lengths: the lengths used for training are rescaled too).
        n_control : int, optional
            Control points of the B-spline the decoder emits (fewer: smoother
            streamlines). Without it: 32, at most n_points.
        decoder : string, optional
            arclength (step directions, length and centre: exact lengths, a
            sampled texture) or spline (point positions, the earlier decoder).
        filters : variable int, optional
            Channels of the encoder's convolution layers (mirrored by the
            decoder). Without it: 32 64 128 256.
        disc_units : variable int, optional
            Hidden units of the discriminator layers. Without it: 256 256.
        disc_norm : string, optional
            none, or spectral: spectral normalization of every discriminator
            layer, which bounds the push the discriminator gives the encoder.
        dropout : float, optional
            Dropout in the discriminator.
        prior : string, optional
            Latent prior: fitted_mixture (a Gaussian mixture per bundle,
            refitted to its encodings every epoch; its components follow the
            bundle's arc, so its samples stay on the bundle), fitted (one
            Gaussian per bundle, refitted the same way), gaussian (N(0, I)
            for every bundle) or mixture. Without it: fitted_mixture for
            --attribute length, fitted for an attribute of the subject such
            as age (the setting its models were measured with).
        prior_components : int, optional
            Most components of each bundle's fitted_mixture prior (a bundle
            uses at most one per --prior_component_codes training
            streamlines), or the components of the mixture prior.
        prior_component_codes : int, optional
            Fewest encodings per component of a bundle's fitted_mixture
            prior, of the at most 2,000 training streamlines of the bundle
            that each fit encodes (default: latent_dims); fewer give a
            finer mixture that follows the bundle's codes more closely.
        learning_rate : float, optional
            Adam learning rate of the autoencoder.
        adv_weight : float, optional
            Weight of the adversarial loss. Without it: 0.001 for --attribute
            length, 0.005 for an attribute of the subject such as age.
        ar_weight : float, optional
            Weight of the attribute regularization loss. Without it: 0.1 for
            --attribute length (with the fitted mixture prior it reconstructs
            nearer a plain autoencoder than 0.5 at the same length control),
            0.5 for an attribute of the subject such as age
            (doc/benchmarks.md).
        ar_soft : float, optional
            0: the attribute regularization asks every two streamlines of
            different attribute to be ordered in latent dimension 0 by a
            fixed margin, however close their values (Pati & Lerch). Above
            0: pairs of close values are asked for close codes (the target
            is tanh(difference / (ar_soft x the batch's mean difference))).
            Without it: 0.1 for --attribute length (it reconstructs better
            at the same length control), 0 for an attribute of the subject
            such as age (doc/benchmarks.md).
        smooth_weight : float, optional
            Weight of the curvature (second difference) reconstruction loss.
        length_weight : float, optional
            Weight of the squared log-length error (scale-free: a fragment
            counts as much as a long streamline).
        direction_weight : float, optional
            Weight of the step-direction error (1 - cos, scale-free).
        texture_weight : float, optional
            Weight of the texture likelihood (trains only the texture head).
        texture_width : float, optional
            Steps over which the sampled texture (the small turns of
            tracking) is correlated along a streamline: its perturbations
            are the steps of a displacement smoothed by a Gaussian of this
            standard deviation; 0: independent perturbations, a zig-zag that
            looks straighter than tracking at a coarser resolution.
        warmup_epochs : int, optional
            Epochs over which the adversarial and attribute weights rise from
            0 to their values.
        polish_epochs : int, optional
            Epochs of a decoder-only stage after --epochs: the encoder, so
            every latent code and the prior fitted to them, stays as the
            adversarial training left it, while the decoder converges on the
            final codes: held-out reconstruction improves (without
            --polish_noise, bank sampling then crumples more streamlines; see
            doc/benchmarks.md). 0: no such stage. Without it: 0.6 x
            --epochs, rounded (60 after 100 epochs), for --attribute length;
            none for an attribute of the subject such as age.
        polish_warmup_epochs : int, optional
            Epochs at the start of the decoder-only stage over which its
            learning rate rises from 5% to --learning_rate before the cosine
            decay (at most half the stage; none with --constant_lr). The
            stage starts a fresh optimizer, whose first steps at the full
            rate throw the decoder off its fit for a few epochs; on the
            phantom and the embedded default a warm-up of 5 epochs left
            held-out reconstruction where it was, within a seed's spread
            (see doc/benchmarks.md). 0: none.
        polish_noise : float, optional
            Noise on the codes during the decoder-only stage, relative to the
            batch's spread of each latent dimension: the decoder learns a
            neighbourhood of each code and bends less between codes, where
            bank sampling draws (fewer crumpled streamlines; with
            --polish_turn_weight 0 some of the reconstruction gain is given
            back; see doc/benchmarks.md). 0: none.
        polish_turn_weight : float, optional
            With --polish_noise: the reconstruction losses see the codes
            themselves, and the noisy codes only a penalty of this weight on
            how much more their streamlines turn than the codes' own, so the
            decoder crumples fewer streamlines between codes without giving
            back the reconstruction gain (see doc/benchmarks.md). 0: the
            noisy codes feed the reconstruction losses. With
            --polish_swap_weight it also weights the same penalty on the
            swapped codes' streamlines.
        polish_swap_weight : float, optional
            Weight, during the decoder-only stage, of a loss on the length
            each code decodes to with latent dimension 0 of another code of
            its bundle, scored against that code's streamline length: the
            decoder learns to follow dimension 0 whatever the other
            dimensions, as generation does when it sets a length, so that
            requests near the ends of a bundle's range come out at the
            length asked; those streamlines also pay the --polish_turn_weight
            penalty on turning more per step than the codes' own. Only for
            --attribute length (see doc/benchmarks.md). 0: none.
        constant_lr : bool, optional
            Keep the learning rate constant instead of the cosine decay.
        val_fraction : float, optional
            Fraction of subjects (or of streamlines, with one subject) held
            out for validation, in [0, 1).
        seed : int, optional
            Random seed (split, initialisation, shuffling).
        resume : bool, optional
            Continue a run from the checkpoint in out_dir; also allows
            replacing the outputs of that run. The settings must be that run's
            (an error names any that differ), except --epochs, which only
            moves where training stops: the learning rate keeps the first
            run's schedule (epochs past its end train at the final rate), and
            a warning says so. Checked: the network's settings, batch size,
            learning rates, decay and warm-up; the inputs are not.
        backend : string, optional
            Keras backend: tensorflow, torch or jax. Without it: KERAS_BACKEND, else
            tensorflow.
        device : string, optional
            auto (a GPU when one is visible), cpu or gpu.
        devices : string, optional
            Train data-parallel on this many devices: 1, a number, or all;
            each batch of --batch_size streamlines is split evenly over them
            (a multiple of the number). JAX: keras.distribution.DataParallel;
            TensorFlow: MirroredStrategy over the GPUs; torch: one process per
            device, launched with torchrun --nproc_per_node N (only rank 0
            writes files). With TensorFlow and torch the AR pairs are those of
            each device's part of the batch.
        cache_dir : string, optional
            Folder where the resampled data is cached and reused.
        unlabelled : variable string, optional
            Tractograms whose streamlines have no bundle label (e.g. whole-brain
            tractographies of more subjects; .tck and .trx need --reference).
            After training on the labelled inputs, the model labels them; those
            it recognises with at least --min_confidence join the training
            set, and training on them all follows for --self_train_epochs
            (self-training, see --self_train_mode).
            Needs --attribute length. Brought into the common space like a new
            subject (SLR to the common-space bundles).
        label_fraction : float, optional
            Keep the labels of only this share of each bundle's training
            streamlines; the others are used as unlabelled streamlines (to
            measure what labels are worth). 1 keeps all.
        self_train_epochs : int, optional
            Epochs of training after the unlabelled streamlines are labelled.
            Without it: half of --epochs (continue) or --epochs (restart).
        self_train_mode : string, optional
            continue: the model trained on the labelled streamlines trains
            further on them and the recognised ones. restart: the saved model
            is a new one, trained on both from its first epoch (the model
            trained on the labelled ones alone only labels them).
        min_confidence : float, optional
            Smallest confidence (posterior) with which an unlabelled streamline
            joins training.
        out_dir : string, optional
            Output folder.
        out_model : string, optional
            Name of the model file.
        out_history : string, optional
            Name of the JSON file with the losses of every epoch (after
            self-training, "phases" gives the epoch at which it began); the
            decoder-only stage's reconstruction losses follow apart, under
            "decoder_only_stage".
        out_curves : string, optional
            Name of the picture of the training curves.
        out_latent : string, optional
            Name of the picture of the held-out latent space.

        References
        ----------
        .. [1] Makhzani et al. Adversarial autoencoders. arXiv:1511.05644, 2015.

        .. [2] Pati, Lerch. Attribute-based regularization of latent spaces. 2021.

        .. [3] Legarreta et al. FINTA. Medical Image Analysis 68, 101907, 2021.

        .. [4] Legarreta et al. GESTA. Medical Image Analysis 84, 102761, 2023.
        """
        self._begin()
        # every check that needs no Keras first: a bad value ends the command
        # before it pays for importing Keras
        semi = _check_semi_supervised(
            unlabelled,
            label_fraction,
            self_train_epochs,
            self_train_mode,
            min_confidence,
            epochs=epochs,
            attribute=attribute,
            resume=resume,
        )
        config = _build_config(
            epochs=epochs,
            batch_size=batch_size,
            latent_dims=latent_dims,
            n_points=n_points,
            n_control=n_control,
            decoder=decoder,
            filters=filters,
            disc_units=disc_units,
            disc_norm=disc_norm,
            dropout=dropout,
            prior=prior,
            prior_components=prior_components,
            prior_component_codes=prior_component_codes,
            learning_rate=learning_rate,
            adv_weight=adv_weight,
            ar_weight=ar_weight,
            ar_soft=ar_soft,
            smooth_weight=smooth_weight,
            length_weight=length_weight,
            direction_weight=direction_weight,
            texture_weight=texture_weight,
            texture_width=texture_width,
            warmup_epochs=warmup_epochs,
            polish_epochs=polish_epochs,
            polish_warmup_epochs=polish_warmup_epochs,
            polish_noise=polish_noise,
            polish_turn_weight=polish_turn_weight,
            polish_swap_weight=polish_swap_weight,
            constant_lr=constant_lr,
            seed=seed,
        )
        from aae_tract.model.config import check_swap_weight
        from aae_tract.registration import check_register

        check_swap_weight(config.polish_swap_weight, attribute)

        register, register_transform = check_register(register, register_transform)
        backend_name = _training_backend(backend, device)  # sets, not imports
        inputs, files = _input_files(inputs, reference, val_fraction)

        from aae_tract.model.parallel import (
            check_batch,
            is_main_process,
            resolve_devices,
        )

        check_batch(batch_size, resolve_devices(devices))
        if not is_main_process():
            # one process per device: rank 0 speaks for all
            logging.getLogger("aae_tract").setLevel(logging.WARNING)
        paths = self._prepare_train_outputs(
            out_dir, out_model, out_history, out_curves, out_latent, resume
        )
        if paths is None:
            return None
        train, validation, started = _load_data(
            inputs,
            files,
            config,
            attribute=attribute,
            participants=participants,
            reference=reference,
            cache_dir=cache_dir,
            val_fraction=val_fraction,
            register=register,
            register_transform=register_transform,
        )
        pool = None
        if semi is not None and semi["label_fraction"] < 1.0:
            from aae_tract.label import split_labelled

            train, pool = split_labelled(
                train, semi["label_fraction"], seed=config.seed
            )
            logger.info(
                "--label_fraction %g: %d training streamlines keep their label, "
                "%d are used unlabelled",
                semi["label_fraction"],
                len(train),
                len(pool["x"]),
            )
        model, history, where = _train_model(
            train, validation, config, paths, device, resume, devices
        )
        phases = None
        if semi is not None:
            first = len(next(iter(history.values()), []))
            model, more = _self_train(
                model,
                train,
                validation,
                pool,
                semi,
                reference=reference,
                devices=devices,
            )
            # one history: the labelled epochs, then the self-training ones
            history = {k: list(history.get(k, [])) + list(v) for k, v in more.items()}
            phases = [(first + 1, SELF_TRAINING_PHASE[semi["mode"]])]
        if not is_main_process():
            return paths
        n_epochs = _save_outputs(
            model,
            history,
            paths,
            files=files,
            train=train,
            validation=validation,
            val_fraction=val_fraction,
            seed=config.seed,
            participants=participants,
            reference=reference,
            backend_name=backend_name,
            phases=phases,
        )
        _log_trained(
            history,
            n_epochs,
            started,
            where,
            paths,
            polish=model.metadata.training.get("polish"),
        )
        return paths

    def _prepare_train_outputs(
        self, out_dir, out_model, out_history, out_curves, out_latent, resume
    ):
        """Output paths (None: they exist, no --force); checks the model's suffix."""
        paths = self._prepare_outputs(
            out_dir,
            {
                "out_model": out_model,
                "out_history": out_history,
                "out_curves": out_curves,
                "out_latent": out_latent,
            },
            overwrite=resume,
        )
        if paths is not None and paths["out_model"].suffix != ".keras":
            bad_value("out_model", out_model, "must end in .keras")
        return paths


def _training_backend(backend, device):
    """Select the Keras backend; an error when it cannot train."""
    backend_name = select_backend(backend, device)
    if backend_name not in TRAINABLE_BACKENDS:
        bad_value(
            "backend",
            backend_name,
            f"must be one of {', '.join(TRAINABLE_BACKENDS)} to train",
        )
    return backend_name


def _build_config(*, filters, disc_units, constant_lr, **options):
    """The :class:`AAEConfig` of the command-line options (``options`` are
    AAEConfig fields of the same names)."""
    from aae_tract.model import AAEConfig

    sizes = {"filters": as_list(filters), "disc_units": as_list(disc_units)}
    return AAEConfig(  # checks every value, naming its option
        lr_decay=not constant_lr,
        **options,
        **{name: tuple(values) for name, values in sizes.items() if values},
    )


def _input_files(inputs, reference, val_fraction):
    """The inputs (the embedded default without any) and the tractograms
    they hold, checked with ``reference`` and ``val_fraction``."""
    if not 0 <= float(val_fraction) < 1:
        bad_value("val_fraction", val_fraction, "must be in [0, 1)")

    from aae_tract.splits import input_files

    inputs = resolve_inputs(inputs)
    files = input_files(inputs)
    check_reference(files, reference)
    return inputs, files


def _load_data(
    inputs,
    files,
    config,
    *,
    attribute,
    participants,
    reference,
    cache_dir,
    val_fraction,
    register,
    register_transform,
):
    """Load, split and register the inputs (:func:`_input_files`).

    Returns
    -------
    train, validation : StreamlineDataset
        The splits, in the common space.
    started : float
        ``time.perf_counter()`` when loading started.
    """
    from aae_tract.data import load_dataset, split_dataset

    started = time.perf_counter()
    dataset = load_dataset(
        inputs,
        n_points=config.n_points,
        attribute=attribute,
        participants=participants,
        reference=reference,
        cache_dir=cache_dir,
    )
    train, validation = split_dataset(
        dataset, val_fraction=val_fraction, seed=config.seed
    )
    from aae_tract.registration import register_split

    train, validation = register_split(
        train,
        validation,
        register,
        transform=register_transform,
        seed=config.seed,
        reference=reference,
    )
    logger.info(
        "%d streamlines of %d bundles (%s) from %d files: %d for training, "
        "%d held out; registration: %s",
        len(dataset),
        len(dataset.bundle_names),
        ", ".join(dataset.bundle_names),
        len(files),
        len(train),
        len(validation),
        train.registration.describe() if train.registration else "none",
    )
    return train, validation, started


def _check_semi_supervised(
    unlabelled,
    label_fraction,
    self_train_epochs,
    self_train_mode,
    min_confidence,
    *,
    epochs,
    attribute,
    resume,
):
    """The self-training options, checked; None when there is no self-training."""
    unlabelled = [str(p) for p in as_list(unlabelled)]
    fraction = check_float(
        "label_fraction",
        label_fraction,
        minimum=0.0,
        maximum=1.0,
        exclusive_min=True,
    )
    confidence = check_float("min_confidence", min_confidence, minimum=0.0, maximum=1.0)
    if not unlabelled and fraction == 1.0:
        return None
    if attribute != "length":
        bad_value(
            "unlabelled",
            " ".join(unlabelled) or "(from --label_fraction)",
            "self-training needs --attribute length (an unlabelled streamline "
            "has no subject value)",
        )
    if resume:
        bad_value(
            "resume",
            resume,
            "cannot be combined with --unlabelled or "
            "--label_fraction (the self-training phase is not resumable)",
        )
    for path in unlabelled:
        if not Path(path).is_file():
            bad_value("unlabelled", path, "no such file")
    from aae_tract.label import SELF_TRAIN_MODES

    mode = check_choice("self_train_mode", self_train_mode, SELF_TRAIN_MODES)
    if self_train_epochs is not None:
        epochs_after = check_int("self_train_epochs", self_train_epochs)
    else:
        epochs_after = int(epochs) if mode == "restart" else max(1, int(epochs) // 2)
    return {
        "unlabelled": unlabelled,
        "label_fraction": fraction,
        "epochs": epochs_after,
        "mode": mode,
        "min_confidence": confidence,
    }


def _unlabelled_pool(model, files, reference, pool=None):
    """Streamlines of ``files`` resampled and moved into the model's space,
    joined to ``pool`` (from --label_fraction)."""
    from aae_tract.io import load_bundle
    from aae_tract.rows import apply_affine
    from aae_tract.streamlines import resample, streamline_lengths

    xs, lengths, subjects = [], [], []
    if pool is not None:
        xs.append(pool["x"])
        lengths.append(pool["lengths"])
        subjects.append(np.asarray(pool["subjects"]).astype(str))
    for path in files:
        sft = load_bundle(path, reference=reference)
        lines = sft.streamlines
        matrix = model.registration.register_tractogram(lines, name=str(path))
        x = resample(lines, model.n_points)
        xs.append(apply_affine(x, matrix))
        lengths.append(streamline_lengths(lines))
        subjects.append(np.full(len(x), Path(path).stem))
    return {
        "x": np.concatenate(xs),
        "lengths": np.concatenate(lengths),
        "subjects": np.concatenate(subjects),
    }


def _self_train(model, train, validation, pool, semi, *, reference, devices):
    """Label the unlabelled streamlines and train on the recognised ones;
    the model to save and the history of that training."""
    from aae_tract.label import self_train

    pool = _unlabelled_pool(model, semi["unlabelled"], reference, pool)
    model, history, _ = self_train(
        model,
        train,
        validation,
        pool,
        epochs=semi["epochs"],
        min_confidence=semi["min_confidence"],
        mode=semi["mode"],
        verbose=_keras_verbosity(),
        devices=devices,
    )
    return model, history


def _train_model(train, validation, config, paths, device, resume, devices="1"):
    """Train a new model (Ctrl-C stops after the epoch); model, history, device."""
    from aae_tract.model import TractAAE
    from aae_tract.model.parallel import is_main_process

    where = check_device(device)
    checkpoint_dir = paths["out_model"].parent / CHECKPOINT_DIR
    if not resume and checkpoint_dir.is_dir() and is_main_process():
        shutil.rmtree(checkpoint_dir)
    model = TractAAE.from_dataset(train, config)
    with StopAfterEpoch() as interrupt:
        history = model.fit(
            train,
            validation,
            checkpoint_dir=checkpoint_dir,
            history_path=paths["out_history"],
            resume=resume,
            verbose=_keras_verbosity(),
            callbacks=[interrupt.callback()],
            devices=devices,
        )
    if interrupt.requested:
        raise KeyboardInterrupt
    return model, history, where


def _save_outputs(
    model,
    history,
    paths,
    *,
    files,
    train,
    validation,
    val_fraction,
    seed,
    participants,
    reference,
    backend_name,
    phases=None,
):
    """Write the model, the history and the pictures; return the epochs trained.

    ``phases``: [(first epoch, name)] of the phases after the first (the
    self-training), recorded in the history file and marked on the curves."""
    from aae_tract.splits import split_record

    model.metadata.training.update(
        split_record(
            files,
            validation,
            val_fraction=val_fraction,
            seed=seed,
            participants=participants,
            reference=reference,
        )
    )
    model.save(paths["out_model"])
    n_epochs = len(next(iter(history.values()), []))
    record = {"epochs": n_epochs}
    if phases:
        record["phases"] = [{"from_epoch": e, "name": n} for e, n in phases]
    stage = model.metadata.training.get("polish")
    if stage:
        # after the epochs of the lists below (the curves draw it after the
        # longest), recorded apart from them; after self-training, the stage
        # of its last model
        last = max((len(v) for v in history.values()), default=0)
        record["decoder_only_stage"] = {"from_epoch": last + 1, **stage}
    write_json_atomic(paths["out_history"], {**record, **history})
    extra = _stage_title(stage)
    _plot_outputs(
        model,
        history,
        paths,
        train,
        validation,
        title=f"aae_tract training ({backend_name}, {n_epochs} epochs{extra})",
        phases=phases,
        stage=stage,
    )
    return n_epochs


def _stage_title(stage):
    """`` + N decoder-only`` for the curves' title, or nothing."""
    return f" + {stage['epochs']} decoder-only" if stage and stage.get("epochs") else ""


def _plot_outputs(
    model, history, paths, train, validation, *, title, phases=None, stage=None
):
    """Draw the training curves and the latent space of the held-out streamlines."""
    from aae_tract.plots import plot_latent_space, plot_training_curves

    plot_training_curves(
        history, paths["out_curves"], title=title, phases=phases, stage=stage
    )
    shown, what = (validation, "held-out") if len(validation) else (train, "train")
    z = model.encode_prepared(shown.x)
    rng = np.random.default_rng(0)
    # as many prior samples of each bundle as it has codes drawn (a fitted
    # prior is one Gaussian per bundle)
    bundles = rng.choice(np.asarray(shown.labels), min(len(z), 2000), replace=False)
    prior = model.network.prior.sample_numpy(len(bundles), rng, bundles)
    plot_latent_space(
        z,
        shown.labels,
        shown.attribute,
        shown.bundle_names,
        paths["out_latent"],
        attribute_name=shown.attribute_name,
        title=f"latent space of {len(shown)} {what} streamlines",
        prior_samples=prior,
    )


def _log_trained(history, n_epochs, started, where, paths, polish=None):
    """Log the epochs (and those of the decoder-only stage), time, device,
    last validation loss and files written."""
    seconds = time.perf_counter() - started
    val_recon = history.get("val_recon_loss")
    stage = ""
    if polish:
        stage = f" and {polish['epochs']} of the decoder alone"
        val_recon = polish.get("val_recon_loss") or val_recon
    tail = f", val_recon_loss {val_recon[-1]:.4g}" if val_recon else ""
    logger.info(
        "Trained %d epochs%s in %.0f s on %s%s; wrote %s",
        n_epochs,
        stage,
        seconds,
        where,
        tail,
        names_written(paths.values()),
    )


if __name__ == "__main__":
    # ``python -m aae_tract.workflows.train ...`` is ``aae_tract_train ...``:
    # what ``torchrun -m`` starts once per device
    from aae_tract.workflows.cli import main

    sys.exit(main("aae_tract_train", sys.argv[1:]))
