"""Hyperparameters of the conditional adversarial autoencoder."""

import dataclasses
import math
import numbers

from aae_tract.errors import ConfigError

#: Loss weights (each >= 0).
WEIGHTS = (
    "recon_weight",
    "adv_weight",
    "ar_weight",
    "smooth_weight",
    "length_weight",
    "direction_weight",
    "texture_weight",
    "log_var_weight",
    "mmd_weight",
)


@dataclasses.dataclass
class AAEConfig:
    """Every hyperparameter of the model and of its training.

    The network hyperparameters (first block) define the architecture and are
    stored in the model file; the training hyperparameters (second block) are
    recorded there as well so that a run can be repeated or resumed.

    Parameters
    ----------
    n_points : int
        Points per resampled streamline.
    latent_dims : int
        Size of the latent code ``z``. Dimension 0 is tied to the attribute.
    n_bundles : int
        Number of bundle labels (size of the one-hot condition).
    filters : tuple of int
        Channels of the strided Conv1D stack of the encoder (mirrored by the
        decoder). Layers are dropped when ``n_points`` is too short for them.
    n_control : int or None
        Control points of the cubic B-spline the decoder emits (tangent
        directions or positions, see ``decoder``). Fewer control points give
        smoother streamlines. None: :data:`DEFAULT_N_CONTROL`, at most
        ``n_points``.
    decoder : str
        ``"arclength"``: the decoder emits tangent directions, a length and a
        centre, integrated into equally spaced points, so a streamline has
        exactly its decoded length and turns as smoothly at 25 mm as at
        170 mm; ``"spline"``: it emits point positions (a B-spline sampled at
        ``n_points``), the decoder of model files from before this option.
    disc_units : tuple of int
        Hidden units of the discriminator.
    disc_norm : str
        ``"spectral"``: every dense layer of the discriminator is spectrally
        normalized (Miyato et al. 2018), so the discriminator is
        1-Lipschitz in each layer and the push it gives the encoder stays
        bounded however well it tells codes from prior samples (how each
        backend applies it: :func:`~aae_tract.model.networks._disc_layer`);
        ``"none"`` (default): plain dense layers.
    dropout : float
        Dropout in the discriminator.
    prior : str or None
        ``"fitted_mixture"`` (a Gaussian mixture per bundle fitted to the
        bundle's training encodings, refitted every epoch:
        :class:`~aae_tract.model.priors.FittedMixturePrior`; its components
        follow a bundle's arc, so short streamlines drawn from it stay on
        the bundle), ``"fitted"`` (one Gaussian per bundle with the mean and
        covariance of its encodings: :class:`~aae_tract.model.priors.FittedPrior`),
        ``"gaussian"`` (N(0, I) for every bundle; a bundle's codes fill only
        a few of its directions, so its samples leave the bundle) or
        ``"mixture"`` (a fixed Gaussian mixture). None (default):
        ``"fitted_mixture"`` when the AR loss orders streamlines (length),
        ``"fitted"`` when it orders subjects (age); see
        :data:`LEVEL_DEFAULTS` and :meth:`resolved`.
    posterior : str
        ``"gaussian"``: the encoder outputs a mean and a variance and training
        decodes a sample of q(z | x), so latent dimensions the data does not
        use can match the prior without costing reconstruction;
        ``"deterministic"``: z = G(x). Encoding always returns the mean.
    prior_components : int
        Components of the ``"mixture"`` prior; the most components of each
        bundle's ``"fitted_mixture"``.
    prior_component_codes : int or None
        Fewest training codes of a bundle per component of the
        ``"fitted_mixture"`` prior (a bundle with fewer codes uses fewer
        components). None (default): one per latent dimension. With the
        default 32 components and 32 dimensions, a bundle of 800 training
        streamlines gets 25 components and one of 200 gets 6
        (doc/benchmarks.md, "A finer mixture for new subjects' codes").
    recon_weight, smooth_weight : float
        Loss weights: reconstruction (MSE) and second-difference (curvature)
        reconstruction.
    adv_weight, ar_weight : float or None
        Weights of the adversarial loss (encoder against the discriminator)
        and of the attribute regularization. None (default): 0.001 and 0.1
        when the AR loss orders streamlines (length), 0.005 and 0.5 when it
        orders subjects (age, whose models were measured with them;
        :data:`LEVEL_DEFAULTS`); :meth:`TractAAE.from_dataset` stores the
        values they resolve to (:meth:`resolved`).
    length_weight, direction_weight : float
        Weights of the scale-free reconstruction terms: squared log-length
        error, and ``1 - cos`` between matching steps of input and output
        (local direction), which hold short streamlines to the same relative
        accuracy as long ones.
    texture_weight : float
        Weight of the likelihood that fits the texture scale of an
        ``"arclength"`` decoder (it trains only that head).
    texture_width : float
        How far, in steps between points, the texture of an ``"arclength"``
        decoder is correlated along a streamline: its step perturbations are
        the steps of a displacement smoothed by a Gaussian of this standard
        deviation (:func:`~aae_tract.model.networks.texture_kernel`).
        Tracking turns the same way over a few steps; independent
        perturbations (0, model files from before this field) turn as much
        per step but in a zig-zag that cancels over a millimetre or two, so
        generated streamlines looked straighter than real ones
        (doc/benchmarks.md, "Texture that turns like tracking"). Default 1;
        0 or at least 0.5.
    mmd_weight : float
        Weight of the maximum mean discrepancy between each bundle's codes
        and prior samples (:func:`~aae_tract.model.losses.conditional_mmd`),
        beside the adversarial loss; ramped up with it.
    log_var_weight : float
        With a Gaussian posterior, weight of the mean ``|log sigma^2|`` of
        q(z | x) (Rubenstein et al. 2018): without it the variances collapse
        to 0 and the encoder is deterministic again; with it, dimensions the
        data does not need keep unit variance and match the prior at no cost
        to reconstruction.
    ar_delta : float
        Sharpness ``delta`` of ``tanh(delta * D_r)`` in the AR loss.
    ar_soft : float or None
        0: the AR loss's target for a pair is the sign of their attribute
        difference ``D_a`` (Pati & Lerch), which keeps pushing any two
        streamlines of different attribute apart in ``z0``, however close
        their values. Above 0: the target is ``tanh(D_a / (ar_soft * s))``,
        ``s`` the mean ``|D_a|`` of the pairs compared in the batch, so close
        values ask for close ``z0`` (see
        :func:`~aae_tract.model.losses.attribute_regularization`). None
        (default): :data:`DEFAULT_AR_SOFT` when the AR loss orders
        streamlines (length), 0 when it orders subjects (age, where the soft
        target measured a worse age slope); :meth:`TractAAE.from_dataset`
        stores the value it resolves to (:meth:`resolved_ar_soft`).
    ar_within_bundle : bool
        Compare only pairs of streamlines of the same bundle in the AR loss.
    ar_level : str
        What the AR loss orders: ``"streamline"`` (each streamline has its
        own value, e.g. length) or ``"subject"`` (the value is a subject's,
        e.g. age: the mean ``z0`` of each subject's streamlines in a batch,
        over all its bundles, is ordered (``ar_within_bundle`` does not
        apply), and batches are made of runs of ``subject_batch``
        streamlines of one subject; see
        :func:`~aae_tract.model.losses.attribute_regularization`).
        ``"auto"`` (default): :meth:`TractAAE.from_dataset` picks
        ``"subject"`` for a dataset whose attribute is not length, else
        ``"streamline"``.
    subject_batch : int
        With ``ar_level="subject"``, streamlines of one subject in a row
        within a training batch (a batch of 128 holds 8 subjects at 16).
    learning_rate, disc_learning_rate : float
        Adam learning rates of the autoencoder and of the discriminator.
    label_smoothing : float
        One-sided label smoothing of the discriminator's "real" targets.
    warmup_epochs : int
        Epochs over which the adversarial and AR weights ramp up from 0, so
        the autoencoder first learns to reconstruct.
    lr_decay : bool
        Cosine decay of both learning rates to 5% over the run.
    epochs, batch_size, seed : int
        Training length, batch size and random seed.
    polish_epochs : int or None
        Epochs of a second stage after the ``epochs`` of adversarial
        training, in which only the decoder learns (reconstruction losses,
        its own Adam and cosine decay from ``learning_rate``): the encoder,
        and so every code and the prior fitted to them, stays as the
        adversary left it. During adversarial training the decoder chases
        codes that keep moving; this stage lets it converge on the final
        ones. On the phantom it lowers held-out reconstruction error by about
        a tenth, and bank sampling then crumples more streamlines (see
        ``polish_noise``; doc/benchmarks.md, "A decoder-only stage after
        training"). 0: no such stage. None (default): 0.6x the epochs
        trained, rounded (60 after the default 100), for length; none for
        age (:data:`LEVEL_DEFAULTS`); :meth:`TractAAE.fit` stores the value
        it resolves to (:meth:`resolved_polish_epochs`).
    polish_warmup_epochs : int
        Epochs at the start of the decoder-only stage over which its learning
        rate rises linearly from 5% to ``learning_rate`` before the cosine
        decay (at most half the stage; none without ``lr_decay``). The stage
        starts a fresh Adam, whose first updates at the full rate throw the
        decoder off the fit it had (on the embedded default the validation
        reconstruction loss of the stage's first epoch is 3-4x that of the
        last adversarial epoch); the warm-up keeps that first epoch near it,
        but the loss still rises as the rate reaches its peak, and held-out
        reconstruction after the stage is the same within a seed's spread
        (doc/benchmarks.md, "A warm-up for the decoder-only stage"). 0 (the
        default): none.
    polish_noise : float
        During the decoder-only stage, Gaussian noise added to every code,
        this many times the batch's standard deviation of each latent
        dimension: the decoder then learns to decode a neighbourhood of each
        code, not the code alone, and bends less between codes, where bank
        sampling draws (doc/benchmarks.md). 0: none. Default 0.05.
    polish_turn_weight : float
        With ``polish_noise`` > 0: the reconstruction losses of the
        decoder-only stage see the codes themselves, and the noisy codes
        only a penalty of this weight on how much more their mean
        streamlines turn than those of the codes themselves
        (:func:`~aae_tract.model.losses.excess_turn`). It keeps the decoder
        from crumpling streamlines between codes without blurring what it
        reconstructs, which decoding the noisy codes does
        (doc/benchmarks.md). 0: the noisy codes feed the losses. Default
        0.0006. With ``polish_swap_weight`` > 0 it also weights the same
        penalty on the swapped codes' streamlines (with or without noise).
    polish_swap_weight : float
        During the decoder-only stage, weight of a loss on the length that
        each code decodes to when its latent dimension 0 is that of another
        code of its bundle, against the length of that code's streamline:
        the decoder learns to follow dimension 0 whatever the other
        dimensions, as generation asks it to when it sets a length, also at
        the ends of a bundle's range where the data hold few streamlines.
        Those streamlines also pay ``polish_turn_weight``'s penalty on
        turning more per step than the codes' own, as noisy codes do. Only
        for a length model (:func:`check_swap_weight`). 0: none. Default 0.

    Raises
    ------
    ConfigError
        For a value that cannot make a model (see :meth:`validate`).

    Notes
    -----
    Fields that older versions stored and that are gone
    (:data:`REMOVED_FIELDS`, e.g. ``mixed_precision``) are ignored when a
    model file or checkpoint is read; passing one as a new hyperparameter
    (:meth:`from_dict` with ``strict=True``) raises ConfigError saying why.
    """

    n_points: int = 256
    latent_dims: int = 32
    n_bundles: int = 1
    filters: tuple = (32, 64, 128, 256)
    n_control: int | None = None
    decoder: str = "arclength"
    disc_units: tuple = (256, 256)
    disc_norm: str = "none"
    dropout: float = 0.2
    prior: str | None = None
    posterior: str = "deterministic"
    prior_components: int = 32
    prior_component_codes: int | None = None
    recon_weight: float = 1.0
    adv_weight: float | None = None
    ar_weight: float | None = None
    smooth_weight: float = 0.0
    length_weight: float = 0.1
    direction_weight: float = 0.1
    texture_weight: float = 0.01
    texture_width: float = 1.0
    log_var_weight: float = 0.0
    mmd_weight: float = 0.0
    ar_delta: float = 10.0
    ar_soft: float | None = None
    ar_within_bundle: bool = True
    ar_level: str = "auto"
    subject_batch: int = 16
    learning_rate: float = 1e-3
    disc_learning_rate: float = 2e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 10
    lr_decay: bool = True
    epochs: int = 100
    polish_epochs: int | None = None
    polish_warmup_epochs: int = 0
    polish_noise: float = 0.05
    polish_turn_weight: float = 0.0006
    polish_swap_weight: float = 0.0
    batch_size: int = 64
    seed: int = 0

    #: Fields that shape the networks and their losses: stored in the model
    #: file and compared on ``--resume``.
    NETWORK_FIELDS = (
        "n_points",
        "latent_dims",
        "n_bundles",
        "filters",
        "n_control",
        "decoder",
        "disc_units",
        "disc_norm",
        "dropout",
        "prior",
        "posterior",
        "prior_components",
        "prior_component_codes",
        *WEIGHTS,
        "texture_width",
        "ar_delta",
        "ar_soft",
        "ar_within_bundle",
        "ar_level",
        "label_smoothing",
        "seed",
    )

    def __post_init__(self):
        for name in ("filters", "disc_units"):
            value = getattr(self, name)
            try:
                setattr(self, name, tuple(_whole(v) for v in value))
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{option_name(name)} must be a list of whole numbers, "
                    f"got {value!r}"
                ) from None
        if self.n_control is None and isinstance(self.n_points, numbers.Integral):
            self.n_control = min(DEFAULT_N_CONTROL, int(self.n_points))
        self.validate()

    def validate(self):
        """Raise ConfigError for values that cannot make a model.

        This is the one check of every hyperparameter: for the Python API,
        for ``aae_tract_train`` (whose options are these fields) and for the
        configuration read from a model file. Messages name the
        command-line option where there is one (``--latent_dims must be at
        least 2, got 1``), else the field. Sizes are bounded (generously) as
        well: a model file is untrusted, and its configuration is built into
        networks before anything else runs.

        Raises
        ------
        ConfigError
            Naming the first value that is wrong and what it must be.
        """
        for name, kind in _TYPES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if (
                isinstance(value, bool)
                and kind is not bool
                or not isinstance(value, kind)
            ):
                _fail(name, f"must be {_KIND_NAMES[kind]}", value)
        for name, (low, high) in _INT_RANGES.items():
            values = getattr(self, name)
            if values is None and name in _OPTIONAL:
                continue
            for value in values if isinstance(values, tuple) else (values,):
                if value < low or high is not None and value > high:
                    each = "each " if isinstance(values, tuple) else ""
                    _fail(name, f"must {each}be {_range_text(low, high)}", values)
        for name, (low, high, open_low, open_high) in _REAL_RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not math.isfinite(value):
                _fail(name, "must be a finite number", value)
            if not (
                (value > low if open_low else value >= low)
                and (high is None or (value < high if open_high else value <= high))
            ):
                text = _range_text(low, high, open_low=open_low, open_high=open_high)
                _fail(name, f"must be {text}", value)
        if 0 < self.texture_width < MIN_TEXTURE_WIDTH:
            _fail(
                "texture_width",
                f"must be 0 (independent perturbations) or at least "
                f"{MIN_TEXTURE_WIDTH}",
                self.texture_width,
            )
        if not 4 <= self.n_control <= self.n_points:
            _fail(
                "n_control",
                f"must be between 4 and {option_name('n_points')} ({self.n_points})",
                self.n_control,
            )
        if not 1 <= len(self.filters) <= 16:
            _fail("filters", "must name 1 to 16 layers", self.filters)
        if len(self.disc_units) > 16:
            _fail("disc_units", "must name at most 16 layers", self.disc_units)
        for name, choices in _CHOICES.items():
            if getattr(self, name) is None and name in _OPTIONAL:
                continue
            if getattr(self, name) not in choices:
                _fail(name, f"must be one of {', '.join(choices)}", getattr(self, name))

    def _level_default(self, name):
        """The value of ``name`` by default, for what the AR loss orders."""
        level = "subject" if self.ar_level == "subject" else "streamline"
        return LEVEL_DEFAULTS[level][name]

    def resolved_ar_soft(self):
        """The AR loss's ``ar_soft``, with None resolved.

        Returns
        -------
        float
            ``ar_soft`` when it is set; else 0 for ``ar_level="subject"``
            and :data:`DEFAULT_AR_SOFT` otherwise (``"streamline"``, and
            ``"auto"``, which orders streamlines until
            :meth:`TractAAE.from_dataset` resolves it).
        """
        if self.ar_soft is not None:
            return float(self.ar_soft)
        return float(self._level_default("ar_soft"))

    def resolved_ar_weight(self):
        """The AR loss's weight, with None resolved (:data:`LEVEL_DEFAULTS`).

        Returns
        -------
        float
        """
        if self.ar_weight is not None:
            return float(self.ar_weight)
        return float(self._level_default("ar_weight"))

    def resolved_polish_epochs(self, epochs=None):
        """Epochs of the decoder-only stage, with None resolved.

        Parameters
        ----------
        epochs : int, optional
            Epochs of the adversarial training it follows (default:
            ``self.epochs``).

        Returns
        -------
        int
            ``polish_epochs`` when it is set; else the share of ``epochs``
            that :data:`LEVEL_DEFAULTS` gives (0.6 for length, none for
            age), rounded.
        """
        if self.polish_epochs is not None:
            return int(self.polish_epochs)
        epochs = self.epochs if epochs is None else epochs
        return int(round(self._level_default("polish_fraction") * epochs))

    def resolved(self):
        """A copy whose fields chosen by ``ar_level`` hold their values.

        ``prior``, ``adv_weight``, ``ar_weight`` and ``ar_soft`` may be None:
        their value then depends on what the AR loss orders
        (:data:`LEVEL_DEFAULTS`; ``"auto"`` orders streamlines until
        :meth:`TractAAE.from_dataset` resolves it). The copy holds their
        values, as a model file stores them. (``polish_epochs`` is resolved
        by training, from the epochs it runs.)

        Returns
        -------
        AAEConfig
        """
        return dataclasses.replace(
            self,
            prior=self.prior or self._level_default("prior"),
            adv_weight=(
                self._level_default("adv_weight")
                if self.adv_weight is None
                else self.adv_weight
            ),
            ar_soft=self.resolved_ar_soft(),
            ar_weight=self.resolved_ar_weight(),
        )

    def network_config(self):
        """The hyperparameters that define the Keras model (JSON-able), with
        the fields chosen by ``ar_level`` resolved (:meth:`resolved`)."""
        config = self.resolved()
        return {k: _jsonable(getattr(config, k)) for k in self.NETWORK_FIELDS}

    def to_dict(self):
        """All hyperparameters as a JSON-able dict."""
        return {
            f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values, *, strict=False):
        """Build from a dict of hyperparameters.

        Parameters
        ----------
        values : dict
            Field name -> value; missing fields take their defaults.
        strict : bool, optional
            False (for stored configurations): unknown keys are ignored, so a
            file written by a newer aae_tract, or one holding a field that was
            removed (:data:`REMOVED_FIELDS`), still loads. True (for new
            hyperparameters): an unknown key raises ConfigError.

        Raises
        ------
        ConfigError
            For an invalid value, or with ``strict`` an unknown name (a
            removed field says why it was removed).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if strict:
            for key in sorted(set(values) - names):
                if key in REMOVED_FIELDS:
                    raise ConfigError(f"{key} was removed: {REMOVED_FIELDS[key]}")
                raise ConfigError(
                    f"unknown hyperparameter {key!r}; known: {', '.join(sorted(names))}"
                )
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_stored(cls, values):
        """Build from the configuration stored in a model file.

        A field the file lacks takes the value that aae_tract used before the
        field existed (:data:`STORED_DEFAULTS`), else its default, so older
        model files keep the networks they were trained with.
        """
        return cls.from_dict({**STORED_DEFAULTS, **values})


#: Smallest non-zero ``texture_width``: narrower kernels hardly smooth the
#: noise before it is differenced (each step's perturbation is then about
#: the difference of its neighbours' noise, not independent), and a width of
#: a few hundredths leaves no weight at all.
MIN_TEXTURE_WIDTH = 0.5

#: Decoders :func:`~aae_tract.model.networks.build_decoder` can build.
DECODERS = ("arclength", "spline")

#: ``ar_soft`` of a model whose AR loss orders streamlines (length) when none
#: is given. With the fitted prior it reconstructs better than the sign target
#: at the same length control, and holds length in every seed where the sign
#: target loosened it in one of three (doc/benchmarks.md, "Embedded default:
#: the Gaussian prior against the fitted prior").
DEFAULT_AR_SOFT = 0.1

#: Values of the fields left to None by default, by what the AR loss orders.
#: For length (``"streamline"``): the fitted mixture, a small adversary, a
#: fifth of the earlier attribute weight and a decoder-only stage of 0.6x the
#: epochs, which on the phantom reconstruct within 1.1x a plain autoencoder
#: and keep prior samples of fragments on the bundle (doc/benchmarks.md,
#: "The fitted mixture and the decoder-only stage as the default"; 0.4x
#: until "A longer decoder-only stage"). For age
#: (``"subject"``): the settings the age models were measured with (the
#: fitted prior, ``adv_weight`` 0.005, ``ar_weight`` 0.5, the sign target,
#: no stage); with the length settings one seed in three missed the age
#: slope target (same section).
LEVEL_DEFAULTS = {
    "streamline": {
        "prior": "fitted_mixture",
        "adv_weight": 0.001,
        "ar_weight": 0.1,
        "ar_soft": DEFAULT_AR_SOFT,
        "polish_fraction": 0.6,
    },
    "subject": {
        "prior": "fitted",
        "adv_weight": 0.005,
        "ar_weight": 0.5,
        "ar_soft": 0.0,
        "polish_fraction": 0.0,
    },
}

#: How :func:`~aae_tract.model.networks.build_discriminator` may constrain
#: its layers: ``"none"`` or ``"spectral"`` (spectral normalization).
DISC_NORMS = ("none", "spectral")

#: Control points of the decoder's spline when ``n_control`` is not given
#: (at most ``n_points``).
DEFAULT_N_CONTROL = 32

#: Fields that older versions had, and why they are gone. A stored
#: configuration holding one still loads (the value is ignored).
REMOVED_FIELDS = {
    "mixed_precision": (
        "float16 computation never took effect (the precision policy was set "
        "after the networks were built and the torch step did not scale the "
        "loss), and the arc-length decoder integrates its streamline by a "
        "cumulative sum over every step, which float16 would make imprecise; "
        "training computes in float32"
    ),
}

#: Fields that ``aae_tract_train`` sets through an option of the same name;
#: error messages name the option (``--latent_dims``).
TRAIN_OPTIONS = (
    "n_points",
    "latent_dims",
    "n_control",
    "decoder",
    "filters",
    "disc_units",
    "disc_norm",
    "dropout",
    "prior",
    "prior_component_codes",
    "learning_rate",
    "adv_weight",
    "ar_weight",
    "ar_soft",
    "smooth_weight",
    "length_weight",
    "direction_weight",
    "texture_weight",
    "texture_width",
    "warmup_epochs",
    "epochs",
    "polish_epochs",
    "polish_warmup_epochs",
    "polish_noise",
    "polish_turn_weight",
    "polish_swap_weight",
    "batch_size",
    "seed",
)


def option_name(field):
    """How messages name ``field``: its ``aae_tract_train`` option, else itself.

    Parameters
    ----------
    field : str
        An :class:`AAEConfig` field.

    Returns
    -------
    str
        ``"--latent_dims"`` for ``"latent_dims"``; ``"ar_delta"`` (no option).
    """
    return f"--{field}" if field in TRAIN_OPTIONS else field


def check_swap_weight(weight, attribute_name, what="--polish_swap_weight"):
    """ConfigError for a swapped-length weight above 0 on a model whose
    attribute is not length.

    The loss (``polish_swap_weight``) scores streamline lengths against latent
    dimension 0, which any other model ties to its own attribute.

    Parameters
    ----------
    weight : float
        The weight asked for.
    attribute_name : str
        The model's attribute (``"length"``, ``"age"``, ...).
    what : str, optional
        How the message names the weight.

    Raises
    ------
    ConfigError
        When ``weight`` > 0 and ``attribute_name`` is not ``"length"``.
    """
    if weight > 0 and attribute_name != "length":
        raise ConfigError(
            f"{what} asks latent dimension 0 for streamline lengths, which only "
            f"a length model ties to it; this model's attribute is "
            f"{attribute_name!r} (leave it at 0)"
        )


#: Values of fields that model files written before the field existed imply.
STORED_DEFAULTS = {
    "prior": "gaussian",
    "ar_soft": 0.0,
    "decoder": "spline",
    "length_weight": 0.0,
    "direction_weight": 0.0,
    "texture_weight": 0.0,
    "texture_width": 0.0,
    "ar_level": "streamline",
    "polish_epochs": 0,
    "polish_warmup_epochs": 0,
    "polish_noise": 0.0,
    "polish_turn_weight": 0.0,
    "polish_swap_weight": 0.0,
}


_TYPES = {
    **dict.fromkeys(
        (
            "n_points",
            "latent_dims",
            "n_bundles",
            "n_control",
            "prior_components",
            "prior_component_codes",
            "warmup_epochs",
            "epochs",
            "polish_epochs",
            "polish_warmup_epochs",
            "batch_size",
            "subject_batch",
            "seed",
        ),
        numbers.Integral,
    ),
    **dict.fromkeys(
        (
            "dropout",
            *WEIGHTS,
            "ar_delta",
            "ar_soft",
            "learning_rate",
            "disc_learning_rate",
            "label_smoothing",
            "polish_noise",
            "polish_turn_weight",
            "polish_swap_weight",
            "texture_width",
        ),
        numbers.Real,
    ),
    **dict.fromkeys(("ar_within_bundle", "lr_decay"), bool),
    **dict.fromkeys(("prior", "decoder", "posterior", "ar_level", "disc_norm"), str),
}
#: Fields that may be None (resolved later: see their documentation).
_OPTIONAL = (
    "prior",
    "prior_component_codes",
    "adv_weight",
    "ar_soft",
    "ar_weight",
    "polish_epochs",
)

_KIND_NAMES = {
    numbers.Integral: "a whole number",
    numbers.Real: "a number",
    bool: "true or false",
    str: "a string",
}

#: Ranges (inclusive; None: unbounded) of the whole-number fields. The largest
#: sizes are far beyond any useful model: a corrupt or hostile model file must
#: not make the loader allocate terabytes. (``n_control`` is checked against
#: ``n_points``.)
_INT_RANGES = {
    "n_points": (8, 65536),
    "latent_dims": (2, 4096),
    "n_bundles": (1, 100_000),
    "prior_components": (1, 1024),
    "prior_component_codes": (1, None),
    "filters": (1, 4096),
    "disc_units": (1, 65536),
    "epochs": (1, None),
    "batch_size": (2, None),
    "subject_batch": (2, None),
    "warmup_epochs": (0, None),
    "polish_epochs": (0, None),
    "polish_warmup_epochs": (0, None),
    "seed": (0, 2**32 - 1),  # what NumPy's seeding accepts
}

#: Ranges of the real-valued fields: (low, high, low excluded, high excluded);
#: every one must also be finite.
_REAL_RANGES = {
    "dropout": (0, 1, False, True),
    "learning_rate": (0, None, True, False),
    "disc_learning_rate": (0, None, True, False),
    "label_smoothing": (0, 1, False, True),
    "ar_delta": (0, None, True, False),
    "ar_soft": (0, None, False, False),
    "polish_noise": (0, None, False, False),
    "polish_turn_weight": (0, None, False, False),
    "polish_swap_weight": (0, None, False, False),
    "texture_width": (0, 1000, False, False),
    **dict.fromkeys(WEIGHTS, (0, None, False, False)),
}

_CHOICES = {
    "prior": ("gaussian", "mixture", "fitted", "fitted_mixture"),
    "decoder": DECODERS,
    "posterior": ("gaussian", "deterministic"),
    "ar_level": ("auto", "streamline", "subject"),
    "disc_norm": DISC_NORMS,
}


def _fail(field, problem, value):
    raise ConfigError(f"{option_name(field)} {problem}, got {value!r}")


def _range_text(low, high, *, open_low=False, open_high=False):
    """``"between 8 and 65536"``, ``"at least 1"``, ``"above 0"``, ``"in [0, 1)"``."""
    if high is None:
        return f"above {low}" if open_low else f"at least {low}"
    if open_low or open_high:
        return f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return f"between {low} and {high}"


def _whole(value):
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(value)
    return int(value)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
