"""The training and evaluation steps of :class:`ConditionalAAE` with JAX.

With the JAX backend, ``fit()`` and ``evaluate()`` call stateless steps: they
receive the values of every variable as the ``state`` tuple and return new
values instead of assigning them (see the Keras guide "Customizing what
happens in fit() with JAX"). Here the state of ``fit()`` is

``(trainable, non_trainable, optimizers, metrics)``

with ``optimizers`` the autoencoder optimizer's variables followed by the
discriminator optimizer's (``model.optimizer.variables``, the pair of
:class:`~aae_tract.model.aae._Optimizers`). The non-trainable values carry the
seed generators (posterior noise, texture noise, prior samples, dropout) and
``reg_scale``, which a callback assigns between epochs. The losses are the
model's own (:meth:`ConditionalAAE.autoencoder_losses`,
:meth:`ConditionalAAE.discriminator_loss`), run inside a
``keras.StatelessScope`` that maps each variable to its value in the state.

Like the TensorFlow and torch steps, the autoencoder moves first, then the
discriminator learns to tell the (fixed) encodings of the batch from prior
samples.
"""

import jax
import keras


def train_step(model, state, data):
    """One stateless training step of both players.

    Parameters
    ----------
    model : ConditionalAAE
        The compiled model (its two optimizers built).
    state : tuple
        ``(trainable, non_trainable, optimizers, metrics)``: lists of arrays,
        in the order of ``model.trainable_variables``,
        ``model.non_trainable_variables``, ``model.optimizer.variables`` and
        ``model.metrics_variables``.
    data : tuple
        A batch ``(x, onehot, attribute)``.

    Returns
    -------
    logs, state
        The running mean of every loss, and the new state.
    """
    trainable, non_trainable, optimizer_values, metric_values = state
    x, onehot, attribute = model._unpack(data)
    split = len(model.ae_optimizer.variables)

    def autoencoder():
        total, parts, z = model.autoencoder_losses(x, onehot, attribute)
        return total, (parts, z)

    total, (parts, z), (trainable, non_trainable), ae_values = _descend(
        model,
        model.ae_optimizer,
        model.ae_variables,
        autoencoder,
        (trainable, non_trainable),
        optimizer_values[:split],
    )
    z_fake = jax.lax.stop_gradient(z)

    def discriminator():
        return model.discriminator_loss(z_fake, onehot), None

    disc, _, (trainable, non_trainable), disc_values = _descend(
        model,
        model.disc_optimizer,
        model.discriminator.trainable_variables,
        discriminator,
        (trainable, non_trainable),
        optimizer_values[split:],
    )
    logs, metric_values = _record(model, metric_values, total, parts, disc)
    return logs, (trainable, non_trainable, [*ae_values, *disc_values], metric_values)


def test_step(model, state, data):
    """The losses of a batch with the mean codes, without training.

    Parameters
    ----------
    model : ConditionalAAE
        The model.
    state : tuple
        ``(trainable, non_trainable, metrics)`` as in :func:`train_step`.
    data : tuple
        A batch ``(x, onehot, attribute)``.

    Returns
    -------
    logs, state
        The running mean of every loss, and the new state.
    """
    trainable, non_trainable, metric_values = state
    x, onehot, attribute = model._unpack(data)
    with keras.StatelessScope(
        state_mapping=_mapping(model, trainable, non_trainable)
    ) as scope:
        total, parts, z = model.autoencoder_losses(x, onehot, attribute, training=False)
        disc = model.discriminator_loss(z, onehot, training=False)
    non_trainable = _current(scope, model.non_trainable_variables)
    logs, metric_values = _record(model, metric_values, total, parts, disc)
    return logs, (trainable, non_trainable, metric_values)


def _descend(model, optimizer, player, losses, values, optimizer_values):
    """One gradient step of the player whose variables are ``player``.

    Parameters
    ----------
    model : ConditionalAAE
        The model.
    optimizer : keras.optimizers.Optimizer
        The player's optimizer, built for ``player``.
    player : list of keras.Variable
        The variables the step updates (a subset of the trainable ones).
    losses : callable
        ``losses() -> (loss, aux)``, run with every variable mapped to its
        value in ``values``; ``loss`` is differentiated.
    values : tuple
        ``(trainable, non_trainable)`` arrays of the model's variables.
    optimizer_values : list
        The optimizer's variables.

    Returns
    -------
    loss, aux, values, optimizer_values
        ``values`` with the player's weights moved and the non-trainable
        values (seed generators) advanced.
    """
    trainable, non_trainable = values
    where = _positions(model.trainable_variables, player)

    def objective(weights, non_trainable):
        mapping = _mapping(model, _replace(trainable, where, weights), non_trainable)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, aux = losses()
        return loss, (aux, _current(scope, model.non_trainable_variables))

    weights = [trainable[i] for i in where]
    (loss, (aux, non_trainable)), grads = jax.value_and_grad(objective, has_aux=True)(
        weights, non_trainable
    )
    weights, optimizer_values = optimizer.stateless_apply(
        optimizer_values, grads, weights
    )
    values = (_replace(trainable, where, weights), non_trainable)
    return loss, aux, values, optimizer_values


def _record(model, metric_values, total, parts, disc):
    """Update the loss trackers statelessly: ``(logs, new metric values)``."""
    variables = model.metrics_variables
    with keras.StatelessScope(state_mapping=list(zip(variables, metric_values))) as s:
        logs = model._record(total, parts, disc)
    return logs, _current(s, variables)


def _positions(variables, subset):
    """Index in ``variables`` of each variable of ``subset``."""
    index = {id(v): i for i, v in enumerate(variables)}
    return [index[id(v)] for v in subset]


def _replace(values, where, new):
    """``values`` with ``values[where[k]]`` replaced by ``new[k]``."""
    out = list(values)
    for i, value in zip(where, new):
        out[i] = value
    return out


def _mapping(model, trainable, non_trainable):
    """The model's variables paired with their values, for a StatelessScope."""
    return [
        *zip(model.trainable_variables, trainable),
        *zip(model.non_trainable_variables, non_trainable),
    ]


def _current(scope, variables):
    """The values of ``variables`` in ``scope`` (assigned or mapped)."""
    return [scope.get_current_value(v) for v in variables]
