"""Losses of the model, written with ``keras.ops`` so every backend shares them."""

from keras import ops


def attribute_regularization(z0, attribute, *, delta=10.0, labels=None):
    """Attribute-regularization loss of Pati & Lerch (2020).

    For the pairs (i, j) of a batch, ``D_r[i, j] = z0[i] - z0[j]`` and
    ``D_a[i, j] = a[i] - a[j]``; the loss is the mean absolute difference
    between ``tanh(delta * D_r)`` and ``sign(D_a)``. Minimising it makes latent
    dimension 0 increase with the attribute.

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

    Returns
    -------
    tensor
        Scalar loss.
    """
    z0 = ops.cast(ops.reshape(z0, (-1,)), "float32")
    attribute = ops.cast(ops.reshape(attribute, (-1,)), "float32")
    d_r = ops.expand_dims(z0, 1) - ops.expand_dims(z0, 0)
    d_a = ops.expand_dims(attribute, 1) - ops.expand_dims(attribute, 0)
    diff = ops.abs(ops.tanh(delta * d_r) - ops.sign(d_a))
    if labels is None:
        return ops.mean(diff)
    labels = ops.reshape(labels, (-1,))
    same = ops.cast(
        ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0)), "float32"
    )
    return ops.sum(diff * same) / ops.maximum(ops.sum(same), 1.0)


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
    """Numerically stable sigmoid cross-entropy, mean over the batch."""
    logits = ops.cast(logits, "float32")
    target = ops.cast(target, "float32")
    loss = ops.relu(logits) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.mean(loss)
