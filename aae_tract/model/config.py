"""Hyperparameters of the conditional adversarial autoencoder."""

import dataclasses
import math
import numbers

from aae_tract.errors import ConfigError


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
    n_control : int
        Control points of the cubic B-spline the decoder emits (tangent
        directions or positions, see ``decoder``). Fewer control points give
        smoother streamlines.
    decoder : str
        ``"arclength"``: the decoder emits tangent directions, a length and a
        centre, integrated into equally spaced points, so a streamline has
        exactly its decoded length and turns as smoothly at 25 mm as at
        170 mm; ``"spline"``: it emits point positions (a B-spline sampled at
        ``n_points``), the decoder of model files from before this option.
    disc_units : tuple of int
        Hidden units of the discriminator.
    dropout : float
        Dropout in the discriminator.
    prior : str
        ``"gaussian"`` or ``"mixture"``.
    posterior : str
        ``"gaussian"``: the encoder outputs a mean and a variance and training
        decodes a sample of q(z | x), so latent dimensions the data does not
        use can match the prior without costing reconstruction;
        ``"deterministic"``: z = G(x). Encoding always returns the mean.
    prior_components : int
        Components of the Gaussian mixture prior.
    recon_weight, adv_weight, ar_weight, smooth_weight : float
        Loss weights: reconstruction (MSE), adversarial (encoder against the
        discriminator), attribute regularization, and second-difference
        (curvature) reconstruction.
    length_weight, direction_weight : float
        Weights of the scale-free reconstruction terms: squared log-length
        error, and ``1 - cos`` between matching steps of input and output
        (local direction), which hold short streamlines to the same relative
        accuracy as long ones.
    texture_weight : float
        Weight of the likelihood that fits the texture scale of an
        ``"arclength"`` decoder (it trains only that head).
    ar_delta : float
        Sharpness ``delta`` of ``tanh(delta * D_r)`` in the AR loss.
    ar_within_bundle : bool
        Compare only pairs of streamlines of the same bundle in the AR loss.
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
    mixed_precision : bool
        Compute in float16 (weights stay float32); for GPUs.
    """

    n_points: int = 256
    latent_dims: int = 32
    n_bundles: int = 1
    filters: tuple = (32, 64, 128, 256)
    n_control: int = 32
    decoder: str = "arclength"
    disc_units: tuple = (256, 256)
    dropout: float = 0.2
    prior: str = "gaussian"
    posterior: str = "deterministic"
    prior_components: int = 8
    recon_weight: float = 1.0
    adv_weight: float = 0.005
    ar_weight: float = 0.5
    smooth_weight: float = 0.0
    length_weight: float = 0.1
    direction_weight: float = 0.1
    texture_weight: float = 0.01
    ar_delta: float = 10.0
    ar_within_bundle: bool = True
    learning_rate: float = 1e-3
    disc_learning_rate: float = 2e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 10
    lr_decay: bool = True
    epochs: int = 100
    batch_size: int = 64
    seed: int = 0
    mixed_precision: bool = False

    NETWORK_FIELDS = (
        "n_points",
        "latent_dims",
        "n_bundles",
        "filters",
        "n_control",
        "decoder",
        "disc_units",
        "dropout",
        "prior",
        "posterior",
        "prior_components",
        "recon_weight",
        "adv_weight",
        "ar_weight",
        "smooth_weight",
        "length_weight",
        "direction_weight",
        "texture_weight",
        "ar_delta",
        "ar_within_bundle",
        "label_smoothing",
        "seed",
    )

    def __post_init__(self):
        try:
            self.filters = tuple(_whole(f) for f in self.filters)
            self.disc_units = tuple(_whole(u) for u in self.disc_units)
        except (TypeError, ValueError):
            raise ConfigError(
                "invalid model configuration: filters and disc_units must be "
                f"lists of whole numbers, got {self.filters!r}, {self.disc_units!r}"
            ) from None
        self.validate()

    def validate(self):
        """Raise ConfigError for values that cannot make a model.

        Sizes are bounded (generously) as well: a model file is untrusted, and
        its configuration is built into networks before anything else runs.
        """
        for name, kind in _TYPES.items():
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                and kind is not bool
                or not isinstance(value, kind)
            ):
                raise ConfigError(
                    f"invalid model configuration: {name} must be "
                    f"{_KIND_NAMES[kind]}, got {value!r}"
                )
        for name, (low, high) in _BOUNDS.items():
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if not low <= value <= high:
                    raise ConfigError(
                        f"invalid model configuration: {name} must be between "
                        f"{low} and {high}, got {values!r}"
                    )
        checks = [
            (self.n_points >= 8, f"n_points must be >= 8, got {self.n_points}"),
            (
                self.latent_dims >= 2,
                f"latent_dims must be >= 2, got {self.latent_dims}",
            ),
            (self.n_bundles >= 1, f"n_bundles must be >= 1, got {self.n_bundles}"),
            (
                4 <= self.n_control <= self.n_points,
                f"n_control must be between 4 and n_points ({self.n_points}), "
                f"got {self.n_control}",
            ),
            (1 <= len(self.filters) <= 16, "filters must name 1 to 16 layers"),
            (len(self.disc_units) <= 16, "disc_units must name at most 16 layers"),
            (self.prior in ("gaussian", "mixture"), f"unknown prior {self.prior!r}"),
            (
                self.decoder in DECODERS,
                f"unknown decoder {self.decoder!r} (one of {', '.join(DECODERS)})",
            ),
            (
                self.posterior in ("gaussian", "deterministic"),
                f"unknown posterior {self.posterior!r}",
            ),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
        ]
        for weight in WEIGHTS:
            value = getattr(self, weight)
            checks.append(
                (math.isfinite(value) and value >= 0, f"{weight} must be >= 0")
            )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid model configuration: {message}")

    def network_config(self):
        """The hyperparameters that define the Keras model (JSON-able)."""
        return {k: _jsonable(getattr(self, k)) for k in self.NETWORK_FIELDS}

    def to_dict(self):
        """All hyperparameters as a JSON-able dict."""
        return {
            f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values):
        """Build from a dict, ignoring unknown keys (forward compatibility)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_stored(cls, values):
        """Build from the configuration stored in a model file.

        A field the file lacks takes the value that aae_tract used before the
        field existed (:data:`STORED_DEFAULTS`), else its default, so older
        model files keep the networks they were trained with.
        """
        return cls.from_dict({**STORED_DEFAULTS, **values})


#: Loss weights (each >= 0).
WEIGHTS = (
    "recon_weight",
    "adv_weight",
    "ar_weight",
    "smooth_weight",
    "length_weight",
    "direction_weight",
    "texture_weight",
)

#: Decoders :func:`~aae_tract.model.networks.build_decoder` can build.
DECODERS = ("arclength", "spline")

#: Values of fields that model files written before the field existed imply.
STORED_DEFAULTS = {
    "decoder": "spline",
    "length_weight": 0.0,
    "direction_weight": 0.0,
    "texture_weight": 0.0,
}


_TYPES = {
    **dict.fromkeys(
        (
            "n_points",
            "latent_dims",
            "n_bundles",
            "n_control",
            "prior_components",
            "warmup_epochs",
            "epochs",
            "batch_size",
            "seed",
        ),
        numbers.Integral,
    ),
    **dict.fromkeys(
        (
            "dropout",
            *WEIGHTS,
            "ar_delta",
            "learning_rate",
            "disc_learning_rate",
            "label_smoothing",
        ),
        numbers.Real,
    ),
    **dict.fromkeys(("ar_within_bundle", "lr_decay", "mixed_precision"), bool),
    "prior": str,
    "decoder": str,
}
_KIND_NAMES = {
    numbers.Integral: "a whole number",
    numbers.Real: "a number",
    bool: "true or false",
    str: "a string",
}

#: Largest sizes accepted (far beyond any useful model; a corrupt or hostile
#: model file must not make the loader allocate terabytes).
_BOUNDS = {
    "n_points": (8, 65536),
    "latent_dims": (2, 4096),
    "n_bundles": (1, 100_000),
    "n_control": (4, 65536),
    "prior_components": (1, 1024),
    "filters": (1, 4096),
    "disc_units": (1, 65536),
}


def _whole(value):
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(value)
    return int(value)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
