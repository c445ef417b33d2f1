"""Encoder, decoder and discriminator networks.

Shapes are derived from the configuration (``n_points``, ``latent_dims``,
``n_bundles``, ``filters``, ``n_control``); nothing is hard-coded.
"""

import keras
import numpy as np
from keras import layers, ops
from scipy.interpolate import BSpline


def bspline_basis(n_points, n_control, degree=3):
    """Design matrix of a clamped uniform B-spline.

    Parameters
    ----------
    n_points : int
        Samples along the curve (rows).
    n_control : int
        Control points (columns).
    degree : int
        Spline degree (3: cubic).

    Returns
    -------
    ndarray, shape (n_points, n_control), float32
        Row ``i`` holds the weights of the control points for sample ``i``;
        rows sum to one and the first and last samples are the first and last
        control points.
    """
    degree = min(degree, n_control - 1)
    n_inner = n_control - degree + 1
    inner = np.linspace(0.0, 1.0, n_inner)
    knots = np.concatenate([[0.0] * degree, inner, [1.0] * degree])
    t = np.linspace(0.0, 1.0, n_points)
    basis = BSpline.design_matrix(t, knots, degree).toarray()
    return basis.astype("float32")


@keras.saving.register_keras_serializable(package="aae_tract")
class SplineCurve(layers.Layer):
    """Sample a cubic B-spline given its control points.

    Input ``(batch, n_control, 3)`` control points; output ``(batch, n_points, 3)``
    points. The basis is fixed (not trained): the decoder's output is a smooth
    curve by construction, so its length is not inflated by point jitter.

    Parameters
    ----------
    n_points : int
        Output samples.
    n_control : int
        Input control points.
    """

    def __init__(self, n_points, n_control, **kwargs):
        super().__init__(**kwargs)
        self.n_points = int(n_points)
        self.n_control = int(n_control)
        self._basis = bspline_basis(self.n_points, self.n_control)

    def call(self, control):
        basis = ops.convert_to_tensor(self._basis, dtype=control.dtype)
        return ops.einsum("pk,bkc->bpc", basis, control)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_points, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"n_points": self.n_points, "n_control": self.n_control})
        return config


def conv_lengths(n_points, n_layers):
    """Sequence lengths after each stride-2 convolution ('same' padding)."""
    lengths = [n_points]
    for _ in range(n_layers):
        lengths.append(int(np.ceil(lengths[-1] / 2)))
    return lengths


def usable_filters(n_points, filters, min_length=4):
    """The prefix of ``filters`` that keeps the sequence at least ``min_length``."""
    kept = []
    length = n_points
    for f in filters:
        if int(np.ceil(length / 2)) < min_length:
            break
        kept.append(int(f))
        length = int(np.ceil(length / 2))
    return kept or [int(filters[0])]


def build_encoder(config):
    """FINTA-style encoder: strided Conv1D stack, flatten, dense to z.

    With ``config.posterior == "gaussian"`` it also outputs the log-variance
    of a Gaussian posterior q(z | x) (Makhzani et al., section 2).

    Parameters
    ----------
    config : AAEConfig

    Returns
    -------
    keras.Model
        ``(batch, n_points, 3) -> (batch, latent_dims)``.
    """
    filters = usable_filters(config.n_points, config.filters)
    x_in = keras.Input((config.n_points, 3), name="streamline")
    h = x_in
    for i, f in enumerate(filters):
        h = layers.Conv1D(f, 3, strides=2, padding="same", name=f"enc_conv{i}")(h)
        h = layers.LeakyReLU(0.2, name=f"enc_act{i}")(h)
    h = layers.Flatten(name="enc_flatten")(h)
    z = layers.Dense(config.latent_dims, name="z", dtype="float32")(h)
    if config.posterior == "gaussian":
        log_var = layers.Dense(config.latent_dims, name="z_log_var", dtype="float32")(h)
        return keras.Model(x_in, [z, log_var], name="encoder")
    return keras.Model(x_in, z, name="encoder")


def build_decoder(config):
    """Decoder F([z, onehot(bundle)]) -> streamline.

    Dense to a short sequence, upsampling Conv1D stack (mirror of the encoder),
    a Conv1D to 3 coordinates at ``n_control`` control points, and a fixed cubic
    B-spline sampled at ``n_points``.

    Parameters
    ----------
    config : AAEConfig

    Returns
    -------
    keras.Model
        ``[(batch, latent_dims), (batch, n_bundles)] -> (batch, n_points, 3)``.
    """
    filters = usable_filters(config.n_control, config.filters, min_length=2)
    lengths = conv_lengths(config.n_control, len(filters))
    z_in = keras.Input((config.latent_dims,), name="z")
    c_in = keras.Input((config.n_bundles,), name="bundle_onehot")
    h = layers.Concatenate(name="dec_concat")([z_in, c_in])
    start, width = lengths[-1], filters[-1]
    h = layers.Dense(start * width, name="dec_dense")(h)
    h = layers.LeakyReLU(0.2, name="dec_dense_act")(h)
    h = layers.Reshape((start, width), name="dec_reshape")(h)
    for i, (f, target) in enumerate(zip(reversed(filters), reversed(lengths[:-1]))):
        h = layers.UpSampling1D(2, name=f"dec_up{i}")(h)
        if h.shape[1] != target:
            h = layers.Cropping1D((0, h.shape[1] - target), name=f"dec_crop{i}")(h)
        h = layers.Conv1D(f, 3, padding="same", name=f"dec_conv{i}")(h)
        h = layers.LeakyReLU(0.2, name=f"dec_act{i}")(h)
    control = layers.Conv1D(
        3, 3, padding="same", name="control_points", dtype="float32"
    )(h)
    x_out = SplineCurve(
        config.n_points, config.n_control, name="spline", dtype="float32"
    )(control)
    return keras.Model([z_in, c_in], x_out, name="decoder")


def build_discriminator(config):
    """Discriminator D([z, onehot(bundle)]) -> logit (prior sample vs encoding).

    Parameters
    ----------
    config : AAEConfig

    Returns
    -------
    keras.Model
        ``[(batch, latent_dims), (batch, n_bundles)] -> (batch, 1)`` logits.
    """
    z_in = keras.Input((config.latent_dims,), name="z")
    c_in = keras.Input((config.n_bundles,), name="bundle_onehot")
    h = layers.Concatenate(name="disc_concat")([z_in, c_in])
    for i, units in enumerate(config.disc_units):
        h = layers.Dense(units, name=f"disc_dense{i}")(h)
        h = layers.LeakyReLU(0.2, name=f"disc_act{i}")(h)
        if config.dropout > 0:
            h = layers.Dropout(config.dropout, name=f"disc_dropout{i}")(h)
    logit = layers.Dense(1, name="logit", dtype="float32")(h)
    return keras.Model([z_in, c_in], logit, name="discriminator")
