"""Losses of the model, written with ``keras.ops`` so every backend shares them."""

from keras import ops


def attribute_regularization(
    z0, attribute, *, delta=10.0, labels=None, groups=False, soft=0.0
):
    """Attribute-regularization loss of Pati & Lerch (2020).

    For the pairs (i, j) of a batch, ``D_r[i, j] = z0[i] - z0[j]`` and
    ``D_a[i, j] = a[i] - a[j]``; the loss is the mean absolute difference
    between ``tanh(delta * D_r)`` and ``sign(D_a)``. Minimising it makes latent
    dimension 0 increase with the attribute.

    The sign asks every pair of different values to lie at least about
    ``2 / delta`` apart in ``z0``, however close the values, so ``z0`` spreads
    with the number of distinct values a batch holds. With ``soft > 0`` the
    target is ``tanh(D_a / (soft * s))`` instead, ``s`` the mean ``|D_a|`` of
    the pairs compared: pairs of close values are asked for close codes, and
    the loss is smallest when ``z0`` is about a linear function of the
    attribute, ``delta * soft * s`` attribute units per unit of ``z0``.

    Parameters
    ----------
    z0 : tensor, shape (B,)
        Latent dimension 0 of the batch.
    attribute : tensor, shape (B,)
        Attribute of each streamline (length in mm, age, ...).
    delta : float
        Sharpness of the tanh.
    labels : tensor, shape (B,), optional
        Integer bundle labels; when given, only pairs of the same bundle count.
    groups : bool, optional
        Order groups instead of streamlines, for an attribute that is one
        value per subject (age): the streamlines of the batch with the same
        attribute value (and bundle, with ``labels``) form a group, ``z0`` is
        replaced by its group mean, and only pairs of different groups count,
        each pair of groups once. A single streamline cannot tell a
        subject's age, the mean of several can; and ties (two streamlines of
        one subject) no longer pull their ``z0`` together, which only
        memorising the subject would satisfy.
    soft : float, optional
        0: the target is ``sign(D_a)``; above 0: ``tanh(D_a / (soft * s))``.

    Returns
    -------
    tensor
        Scalar loss.
    """
    z0 = ops.cast(ops.reshape(z0, (-1,)), "float32")
    attribute = ops.cast(ops.reshape(attribute, (-1,)), "float32")
    d_a = ops.expand_dims(attribute, 1) - ops.expand_dims(attribute, 0)
    same = ops.ones_like(d_a)
    if labels is not None:
        labels = ops.reshape(labels, (-1,))
        same = ops.cast(
            ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0)),
            "float32",
        )
    if not groups:
        d_r = ops.expand_dims(z0, 1) - ops.expand_dims(z0, 0)
        target = _ar_target(d_a, same, soft)
        diff = ops.abs(ops.tanh(delta * d_r) - target)
        if labels is None:
            return ops.mean(diff)
        return ops.sum(diff * same) / ops.maximum(ops.sum(same), 1.0)
    member = same * ops.cast(ops.equal(d_a, 0.0), "float32")
    size = ops.sum(member, axis=1)
    mean = ops.matmul(member, ops.expand_dims(z0, 1))[:, 0] / size
    d_r = ops.expand_dims(mean, 1) - ops.expand_dims(mean, 0)
    weight = (same - member) / (ops.expand_dims(size, 1) * ops.expand_dims(size, 0))
    diff = ops.abs(ops.tanh(delta * d_r) - _ar_target(d_a, weight, soft))
    return ops.sum(diff * weight) / ops.maximum(ops.sum(weight), 1e-6)


def _ar_target(d_a, weight, soft):
    """``sign(d_a)``, or with ``soft > 0`` ``tanh(d_a / (soft * s))``, ``s``
    the mean ``|d_a|`` of the differing pairs that ``weight`` counts."""
    if soft <= 0:
        return ops.sign(d_a)
    counted = weight * ops.cast(ops.not_equal(d_a, 0.0), "float32")
    scale = ops.sum(ops.abs(d_a) * counted) / ops.maximum(ops.sum(counted), 1e-6)
    scale = ops.stop_gradient(ops.maximum(scale * soft, 1e-6))
    return ops.tanh(d_a / scale)


def reconstruction_mse(x, x_hat):
    """Mean squared error over points and coordinates."""
    return ops.mean(ops.square(ops.cast(x, "float32") - ops.cast(x_hat, "float32")))


def second_difference_mse(x, x_hat):
    """MSE between the second differences (discrete curvature) of x and x_hat.

    Penalises point-to-point jitter that the plain MSE barely sees but that adds
    length to a streamline.
    """
    x = ops.cast(x, "float32")
    x_hat = ops.cast(x_hat, "float32")
    d2 = x[:, 2:] - 2.0 * x[:, 1:-1] + x[:, :-2]
    d2_hat = x_hat[:, 2:] - 2.0 * x_hat[:, 1:-1] + x_hat[:, :-2]
    n = ops.cast(ops.shape(x)[1], "float32")
    # scale by n^2 so the term does not vanish as sampling gets finer
    return ops.mean(ops.square(d2 - d2_hat)) * n * n


def binary_crossentropy_logits(target, logits):
    """Sigmoid cross-entropy of ``logits`` against ``target``, mean over the batch."""
    loss = ops.binary_crossentropy(
        ops.cast(target, "float32"), ops.cast(logits, "float32"), from_logits=True
    )
    return ops.mean(loss)


def _steps(x):
    x = ops.cast(x, "float32")
    return x[:, 1:] - x[:, :-1]


def polyline_length(x):
    """Polyline length of each streamline of a batch ``(B, P, 3)``: ``(B,)``."""
    return ops.sum(ops.sqrt(ops.sum(ops.square(_steps(x)), axis=-1) + 1e-12), axis=1)


def log_length_mse(x, x_hat):
    """Squared difference of the log polyline lengths of x and x_hat.

    Scale-free: a 10 % error costs the same on a 25 mm fragment as on a
    170 mm streamline, which the point MSE does not (it is dominated by long
    streamlines).
    """
    return length_target_mse(x_hat, polyline_length(x))


def length_target_mse(x_hat, length):
    """Squared difference of the log polyline lengths of ``x_hat`` and the
    target lengths ``length`` ``(B,)``, mean over the batch."""
    return ops.mean(ops.square(ops.log(polyline_length(x_hat)) - ops.log(length)))


def direction_loss(x, x_hat):
    """Mean ``1 - cos`` of the angle between matching steps of x and x_hat.

    The local direction of a streamline, independent of its length and
    position: it penalises ripples and end hooks as much on a short fragment
    as on a long streamline.
    """
    d, d_hat = _steps(x), _steps(x_hat)
    dot = ops.sum(d * d_hat, axis=-1)
    squares = ops.sum(ops.square(d), axis=-1) * ops.sum(ops.square(d_hat), axis=-1)
    return ops.mean(1.0 - dot / ops.sqrt(squares + 1e-20))


def _mean_turn(d):
    """Mean change of the unit step direction per step, per streamline."""
    u = d / ops.sqrt(ops.sum(ops.square(d), axis=-1, keepdims=True) + 1e-20)
    change = u[:, 1:] - u[:, :-1]
    return ops.mean(ops.sqrt(ops.sum(ops.square(change), axis=-1) + 1e-20), axis=1)


def excess_turn(x_moved, x_ref):
    """How much more streamlines turn than their counterparts do.

    The mean turn per step (:func:`_mean_turn`) of each streamline of
    ``x_moved`` past that of the same row of ``x_ref`` (held fixed: no
    gradient flows into it), relative to it, squared and averaged over the
    batch. Turning less costs nothing. A crumpled streamline turns 5-30
    times as much as a smooth one of its bundle, so it dominates the mean.

    Parameters
    ----------
    x_moved, x_ref : tensor, shape (batch, n_points, 3)
        E.g. mean streamlines of codes with noise and of the same codes.

    Returns
    -------
    scalar tensor
    """
    t_moved = _mean_turn(_steps(x_moved))
    t_ref = ops.stop_gradient(_mean_turn(_steps(x_ref)))
    return ops.mean(ops.square(ops.relu(t_moved - t_ref) / (t_ref + 1e-6)))


def texture_nll(x, x_mean, texture, noise):
    """Negative log-likelihood of how much a streamline turns around its mean.

    How rough a streamline is, is its mean turn per step ``m`` (the mean
    change of its unit step direction from one step to the next, radians).
    The decoder makes a streamline rough by perturbing the step directions
    of its mean curve with Gaussian noise of scale
    ``exp(mu + tau * xi) / 2`` (``xi`` a standard normal variate per
    streamline; the noise correlated along the streamline as
    :func:`~aae_tract.model.networks.texture_kernel` makes it). Here the
    mean curve ``x_mean`` is perturbed with ``noise`` at ``xi = 0``, its
    mean turn ``m(mu)`` measured, and ``log m`` of the real streamline
    ``x`` is scored under ``N(log m(mu), tau**2)``. Fitted
    so, sampled streamlines turn as much per step on average as real ones,
    their mean curve's own turns included (a mean, not an energy: a few sharp
    kinks of real tracking do not make every sampled step rough), and differ
    from each other in roughness as real ones do. Only the texture output
    learns from it (``x_mean`` is held fixed). An output outside the bounds
    the decoder clips it to (:class:`~aae_tract.model.networks.ArcLengthCurve`)
    is pulled back by its squared distance to them (part of the loss, so
    ``texture_loss`` of training histories from before it is not comparable).

    Parameters
    ----------
    x, x_mean : tensor, shape (B, P, 3)
        Input streamlines and their mean reconstructions.
    texture : tensor, shape (B, 2)
        Predicted ``(mu, log tau)``.
    noise : tensor, shape (B, P - 1, 3)
        Perturbations of the steps as the decoder draws them: standard
        normal, smoothed along the streamline by its texture kernel
        (:meth:`~aae_tract.model.networks.ArcLengthCurve.texture_noise`).

    Returns
    -------
    tensor
        Scalar loss (up to a constant).
    """
    from aae_tract.model.networks import ArcLengthCurve

    d_mean = ops.stop_gradient(_steps(x_mean))
    u_mean = d_mean / ops.sqrt(
        ops.sum(ops.square(d_mean), axis=-1, keepdims=True) + 1e-20
    )
    texture = ops.cast(texture, "float32")
    mu = ops.clip(texture[:, 0:1], *ArcLengthCurve.LOG_TEXTURE_RANGE)
    log_tau = ops.clip(texture[:, 1], *ArcLengthCurve.LOG_SPREAD_RANGE)
    scale = 0.5 * ops.expand_dims(ops.exp(mu), 1)
    m_model = _mean_turn(u_mean + scale * ops.cast(noise, "float32"))
    m_real = _mean_turn(_steps(x))
    z = (ops.log(m_real + 1e-12) - ops.log(m_model + 1e-12)) / ops.exp(log_tau)
    # The clips pass no gradient: an output that leaves its range (the
    # spread does, while the mean curve is still poor) would stay out for
    # good, and the decoder would sample its texture with the largest spread.
    outside = _outside(texture[:, 0], ArcLengthCurve.LOG_TEXTURE_RANGE) + _outside(
        texture[:, 1], ArcLengthCurve.LOG_SPREAD_RANGE
    )
    return ops.mean(0.5 * ops.square(z) + log_tau + outside)


def _outside(value, bounds):
    """Squared distance of ``value`` outside the interval ``bounds``."""
    low, high = bounds
    return ops.square(ops.relu(value - high)) + ops.square(ops.relu(low - value))


def _imq_kernel(a, b, dims):
    """Inverse multiquadric kernel summed over scales (Tolstikhin et al. 2018)."""
    d2 = (
        ops.sum(ops.square(a), axis=1, keepdims=True)
        + ops.expand_dims(ops.sum(ops.square(b), axis=1), 0)
        - 2.0 * ops.matmul(a, ops.transpose(b))
    )
    d2 = ops.maximum(d2, 0.0)
    out = 0.0
    for scale in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        c = 2.0 * dims * scale
        out = out + c / (c + d2)
    return out


def conditional_mmd(z, prior_z, onehot):
    """Maximum mean discrepancy between each bundle's codes and the prior.

    For every bundle of the batch, the (unbiased) squared MMD with an
    inverse multiquadric kernel between its codes and the prior samples
    ``prior_z``; averaged over bundles with weights their counts. Zero in
    expectation when every bundle's codes follow the prior; unlike a
    discriminator it gives every code a gradient toward the prior's mass at
    once, also when the codes lie on a low-dimensional set that a
    discriminator separates perfectly.

    Parameters
    ----------
    z : tensor, shape (B, D)
        Codes of the batch.
    prior_z : tensor, shape (M, D)
        Samples of the prior.
    onehot : tensor, shape (B, n_bundles)
        Bundle of each code.

    Returns
    -------
    tensor
        Scalar loss.
    """
    z = ops.cast(z, "float32")
    prior_z = ops.cast(prior_z, "float32")
    onehot = ops.cast(onehot, "float32")
    dims = ops.cast(ops.shape(z)[1], "float32")
    same = ops.matmul(onehot, ops.transpose(onehot))
    eye = ops.eye(ops.shape(z)[0])
    off = same * (1.0 - eye)
    # per code: mean kernel to the other codes of its bundle and to the prior
    k_zz = ops.sum(_imq_kernel(z, z, dims) * off, axis=1) / ops.maximum(
        ops.sum(off, axis=1), 1.0
    )
    k_zp = ops.mean(_imq_kernel(z, prior_z, dims), axis=1)
    m = ops.shape(prior_z)[0]
    eye_p = ops.eye(m)
    k_pp = ops.sum(_imq_kernel(prior_z, prior_z, dims) * (1.0 - eye_p)) / ops.cast(
        m * (m - 1), "float32"
    )
    # codes of bundles with a single code in the batch have no pair: skip them
    paired = ops.cast(ops.sum(off, axis=1) > 0, "float32")
    per_code = (k_zz - 2.0 * k_zp + k_pp) * paired
    return ops.sum(per_code) / ops.maximum(ops.sum(paired), 1.0)
