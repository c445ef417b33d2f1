"""Encoder, decoder and discriminator networks.

Shapes are derived from the configuration (``n_points``, ``latent_dims``,
``n_bundles``, ``filters``, ``n_control``); nothing is hard-coded.
"""

import keras
import numpy as np
from keras import layers, ops
from scipy.interpolate import BSpline


def bspline_basis(n_points, n_control, degree=3, *, at=None):
    """Design matrix of a clamped uniform B-spline.

    Parameters
    ----------
    n_points : int
        Samples along the curve (rows), equally spaced over [0, 1].
    n_control : int
        Control points (columns).
    degree : int
        Spline degree (3: cubic).
    at : array_like, optional
        Sample positions in [0, 1] (instead of ``n_points`` equally spaced).

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
    t = np.linspace(0.0, 1.0, n_points) if at is None else np.asarray(at, float)
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


@keras.saving.register_keras_serializable(package="aae_tract")
class StopGradient(layers.Layer):
    """Identity whose input receives no gradient (a head that must not steer
    the features it reads)."""

    def call(self, x):
        return ops.stop_gradient(x)


@keras.saving.register_keras_serializable(package="aae_tract")
class ArcLengthCurve(layers.Layer):
    """A streamline from its tangent directions, length, centre and texture.

    The decoder describes a streamline the way a tracker draws it: a direction
    at every step, a number of equal steps, and where it sits. The mean
    directions are a cubic B-spline of ``n_control`` control vectors, sampled
    at the ``n_points - 1`` steps; every step is ``length / (n_points - 1)``
    long; the integrated curve is centred on the predicted centre. So the
    output has exactly the predicted length (nothing can add to it), its
    points are equally spaced as the resampled inputs are, and its turning is
    that of a smooth direction field whatever the streamline's length.

    Real streamlines also have a texture that no code of a few dimensions can
    hold: the small, random turns of tracking. The decoder models it as
    Gaussian perturbations of the step directions whose scale is
    drawn per streamline: ``2 * scale`` is log-normal,
    ``log (2 * scale) = mu + tau * xi``, with ``mu`` and ``log tau``
    predicted from the code (fitted by likelihood; see
    :func:`~aae_tract.model.losses.texture_nll`) and ``xi`` a standard normal
    variate, so streamlines of a bundle differ in roughness as real ones do.
    With ``noise`` and ``xi`` of zeros the output is the mean streamline, with
    standard normal ones a sample. The length stays exact either way. The
    perturbations are the steps of a smooth displacement of ``texture_width``
    steps made from the ``noise`` (:func:`texture_kernel`): tracking turns
    the same way over a few steps, and independent perturbations
    (``texture_width`` 0) make a zig-zag that turns as much per step but
    cancels over a millimetre or two, so that such streamlines look
    straighter than real ones at any coarser resolution.

    Inputs ``[(batch, n_control, 3) direction controls, (batch, 4) frame,
    (batch, 2) texture, (batch, n_points - 1, 3) noise, (batch, 1) xi]``, the
    frame being the centre (3) and the log-length (1) in normalised units, the
    texture ``(mu, log tau)``; output ``(batch, n_points, 3)``.

    Parameters
    ----------
    n_points : int
        Output samples.
    n_control : int
        Control vectors of the direction spline.
    texture_width : float
        Width, in steps, of the smooth displacement whose steps perturb the
        step directions (:func:`texture_kernel`); 0 (the layer of model
        files from before it): independent perturbations.
    """

    #: Bounds of the predicted log-length (normalised units), for stability.
    LOG_LENGTH_RANGE = (-8.0, 8.0)
    #: Bounds of ``mu``, the log of twice the texture's scale (radians).
    LOG_TEXTURE_RANGE = (-9.0, 0.0)
    #: Bounds of the log spread ``log tau`` of the texture between streamlines.
    LOG_SPREAD_RANGE = (-5.0, 1.0)

    def __init__(self, n_points, n_control, texture_width=0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_points = int(n_points)
        self.n_control = int(n_control)
        self.texture_width = float(texture_width)
        steps = self.n_points - 1
        self._kernel = texture_kernel(steps, self.texture_width)
        self._basis = bspline_basis(
            steps, self.n_control, at=(np.arange(steps) + 0.5) / steps
        )

    def call(self, inputs):
        controls, frame, texture, noise, xi = inputs
        basis = ops.convert_to_tensor(self._basis, dtype=controls.dtype)
        tangent = ops.einsum("pk,bkc->bpc", basis, controls)
        tangent = tangent / _norm(tangent)
        mu = ops.clip(texture[:, 0:1], *self.LOG_TEXTURE_RANGE)
        tau = ops.exp(ops.clip(texture[:, 1:2], *self.LOG_SPREAD_RANGE))
        scale = 0.5 * ops.exp(mu + tau * ops.cast(xi, mu.dtype))
        noise = self.texture_noise(ops.cast(noise, tangent.dtype))
        tangent = tangent + ops.expand_dims(scale, 1) * noise
        log_length = ops.clip(frame[:, 3:4], *self.LOG_LENGTH_RANGE)
        step = ops.exp(log_length) / float(self.n_points - 1)
        steps = tangent / _norm(tangent) * ops.expand_dims(step, 1)
        start = ops.zeros_like(steps[:, :1, :])
        points = ops.concatenate([start, ops.cumsum(steps, axis=1)], axis=1)
        points = points - ops.mean(points, axis=1, keepdims=True)
        return points + ops.expand_dims(frame[:, :3], 1)

    def texture_noise(self, noise):
        """Standard normal step perturbations ``(batch, n_points - 1, 3)``
        smoothed along the streamline as the layer smooths its ``noise``
        input (unit variance at every step)."""
        if self._kernel is None:
            return noise
        kernel = ops.convert_to_tensor(self._kernel, dtype=noise.dtype)
        return ops.einsum("pq,bqc->bpc", kernel, noise)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.n_points, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n_points": self.n_points,
                "n_control": self.n_control,
                "texture_width": self.texture_width,
            }
        )
        return config


def texture_kernel(steps, width):
    """The matrix that turns white noise into a streamline's texture.

    The texture is a smooth displacement of the points across the
    streamline: white noise at the steps' midpoints smoothed by a Gaussian of
    ``width`` steps. The decoder perturbs the step directions, so the rows
    hold that displacement's differences from one point to the next
    (``G[p + 1] - G[p]``, ``G[p, q] = exp(-(p - q - 1/2)^2 / (2 width^2))``),
    scaled so that their squares sum to 1: every step's perturbation has a
    variance of 1, ends included (the texture likelihood fits its scale).
    The perturbations of neighbouring steps correlate, so the streamline
    turns the same way over a few steps, as tracking does; and, being the
    steps of a displacement that stays put, they do not add up along the
    streamline into a drift away from its mean curve, as independent or
    merely smoothed perturbations do.

    Parameters
    ----------
    steps : int
        Steps of a streamline (``n_points - 1``).
    width : float
        Standard deviation of the smoothing Gaussian, in steps.

    Returns
    -------
    ndarray of float32, shape (steps, steps), or None
        None for a width of 0 (independent perturbations of the steps).
    """
    if width <= 0:
        return None
    points = np.arange(int(steps) + 1, dtype=np.float64)[:, None]
    noise = np.arange(int(steps), dtype=np.float64)[None, :] + 0.5
    smooth = np.exp(-0.5 * ((points - noise) / float(width)) ** 2)
    kernel = smooth[1:] - smooth[:-1]
    norms = np.sqrt(np.sum(kernel**2, axis=1, keepdims=True))
    if not np.all(norms > 0):
        raise ValueError(f"texture width {width} is too narrow for a kernel")
    return (kernel / norms).astype("float32")


def _norm(v):
    return ops.sqrt(ops.sum(ops.square(v), axis=-1, keepdims=True) + 1e-12)


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

    Dense to a short sequence, then an upsampling Conv1D stack (mirror of the
    encoder) to ``n_control`` control points of a cubic B-spline:

    - ``decoder="arclength"`` (default): the controls are tangent directions
      and a dense head gives the centre and log-length; see
      :class:`ArcLengthCurve`.
    - ``decoder="spline"``: the controls are positions, sampled at ``n_points``
      (:class:`SplineCurve`; the decoder of model files written before
      ``decoder`` existed).

    Parameters
    ----------
    config : AAEConfig

    Returns
    -------
    keras.Model
        ``"arclength"``: ``[(batch, latent_dims), (batch, n_bundles),
        (batch, n_points - 1, 3) texture noise, (batch, 1) roughness
        variate] -> [(batch, n_points, 3), (batch, 2) texture]`` (see
        :class:`ArcLengthCurve`); ``"spline"``: ``[(batch, latent_dims),
        (batch, n_bundles)] -> (batch, n_points, 3)``.
    """
    filters = usable_filters(config.n_control, config.filters, min_length=2)
    lengths = conv_lengths(config.n_control, len(filters))
    z_in = keras.Input((config.latent_dims,), name="z")
    c_in = keras.Input((config.n_bundles,), name="bundle_onehot")
    h = layers.Concatenate(name="dec_concat")([z_in, c_in])
    start, width = lengths[-1], filters[-1]
    h = layers.Dense(start * width, name="dec_dense")(h)
    flat = layers.LeakyReLU(0.2, name="dec_dense_act")(h)
    h = layers.Reshape((start, width), name="dec_reshape")(flat)
    for i, (f, target) in enumerate(zip(reversed(filters), reversed(lengths[:-1]))):
        h = layers.UpSampling1D(2, name=f"dec_up{i}")(h)
        if h.shape[1] != target:
            h = layers.Cropping1D((0, h.shape[1] - target), name=f"dec_crop{i}")(h)
        h = layers.Conv1D(f, 3, padding="same", name=f"dec_conv{i}")(h)
        h = layers.LeakyReLU(0.2, name=f"dec_act{i}")(h)
    control = layers.Conv1D(
        3, 3, padding="same", name="control_points", dtype="float32"
    )(h)
    if config.decoder == "spline":
        x_out = SplineCurve(
            config.n_points, config.n_control, name="spline", dtype="float32"
        )(control)
        return keras.Model([z_in, c_in], x_out, name="decoder")
    noise_in = keras.Input((config.n_points - 1, 3), name="texture_noise")
    xi_in = keras.Input((1,), name="texture_xi")
    frame = layers.Dense(4, name="frame", dtype="float32")(flat)
    texture = layers.Dense(2, name="texture", dtype="float32")(
        StopGradient(name="texture_features")(flat)
    )
    x_out = ArcLengthCurve(
        config.n_points,
        config.n_control,
        texture_width=config.texture_width,
        name="arclength",
        dtype="float32",
    )([control, frame, texture, noise_in, xi_in])
    return keras.Model([z_in, c_in, noise_in, xi_in], [x_out, texture], name="decoder")


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
        h = _disc_layer(config, layers.Dense(units, name=f"disc_dense{i}"), i)(h)
        h = layers.LeakyReLU(0.2, name=f"disc_act{i}")(h)
        if config.dropout > 0:
            h = layers.Dropout(config.dropout, name=f"disc_dropout{i}")(h)
    last = layers.Dense(1, name="logit", dtype="float32")
    logit = _disc_layer(config, last, None)(h)
    return keras.Model([z_in, c_in], logit, name="discriminator")


def _disc_layer(config, dense, index):
    """``dense``, spectrally normalized when ``config.disc_norm`` says so.

    Keras's ``SpectralNormalization``: at every training call one power
    iteration estimates the kernel's largest singular value and the call uses
    the kernel divided by it. With TensorFlow and torch the divided kernel is
    written back to the variable (gradients then reach it directly); with
    JAX the training step keeps the stored kernel as it is and the division
    is part of the differentiated function, so a JAX-trained discriminator
    called outside training uses its undivided kernel.
    """
    if config.disc_norm != "spectral":
        return dense
    name = "logit_sn" if index is None else f"disc_sn{index}"
    return layers.SpectralNormalization(dense, name=name)
