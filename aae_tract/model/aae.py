"""The conditional adversarial autoencoder as a Keras 3 model.

Losses are written once with ``keras.ops``; only the gradient step differs
between backends (TensorFlow's GradientTape, torch's autograd, JAX's stateless
step in :mod:`aae_tract.model.jax_steps`), as in the Keras guides on
customizing ``fit()``.
"""

import keras
import numpy as np
from keras import ops

from aae_tract.model.config import STORED_DEFAULTS, AAEConfig
from aae_tract.model.losses import (
    attribute_regularization,
    binary_crossentropy_logits,
    conditional_mmd,
    direction_loss,
    excess_turn,
    length_target_mse,
    log_length_mse,
    polyline_length,
    reconstruction_mse,
    second_difference_mse,
    texture_nll,
)
from aae_tract.model.networks import build_decoder, build_discriminator, build_encoder
from aae_tract.model.priors import make_prior

#: Range the posterior's log-variance is clipped to before it is used.
LOG_VAR_RANGE = (-12.0, 4.0)


def posterior_draw(mean, log_var, rng):
    """A NumPy sample of q(z | x) = N(mean, exp(log_var)) from ``rng``, with
    the log-variance clipped as in training (:data:`LOG_VAR_RANGE`)."""
    mean = np.asarray(mean)
    std = np.exp(0.5 * np.clip(np.asarray(log_var), *LOG_VAR_RANGE))
    return mean + std * rng.standard_normal(mean.shape)


LOSS_NAMES = (
    "loss",
    "recon_loss",
    "length_loss",
    "direction_loss",
    "texture_loss",
    "smooth_loss",
    "log_var_loss",
    "mmd_loss",
    "ar_loss",
    "gen_loss",
    "disc_loss",
)


class _Optimizers:
    """The two players' optimizers, seen by Keras's trainers as one.

    A plain holder (not a Keras optimizer): ``model.optimizer`` is this pair,
    so the trainers build both optimizers before training, and the JAX
    trainer carries, purges and syncs both optimizers' variables as the
    ``optimizer_variables`` of its state (the autoencoder's first). Their
    state also travels in training checkpoints (see
    :mod:`aae_tract.model.training`).

    Parameters
    ----------
    autoencoder, discriminator : keras.optimizers.Optimizer or None
        The optimizers of the autoencoder and of the discriminator.
    ae_variables, disc_variables : list of keras.Variable
        The variables each one updates.
    """

    def __init__(self, autoencoder, discriminator, ae_variables=(), disc_variables=()):
        self.autoencoder = autoencoder
        self.discriminator = discriminator
        self._players = (
            (autoencoder, list(ae_variables)),
            (discriminator, list(disc_variables)),
        )

    @property
    def built(self):
        """Whether both optimizers have their variables."""
        return all(opt is None or opt.built for opt, _ in self._players)

    def build(self, variables=None):
        """Build each optimizer for its player's variables.

        Parameters
        ----------
        variables : list, optional
            Ignored: Keras passes all the model's trainable variables, but
            each optimizer updates only its player's.
        """
        for opt, player_variables in self._players:
            if opt is not None and not opt.built:
                opt.build(player_variables)

    @property
    def variables(self):
        """The autoencoder optimizer's variables, then the discriminator's."""
        return [v for opt, _ in self._players if opt is not None for v in opt.variables]


@keras.saving.register_keras_serializable(package="aae_tract")
class ConditionalAAE(keras.Model):
    """Supervised adversarial autoencoder with attribute regularization.

    The encoder maps a normalised streamline to ``z``; the decoder maps
    ``[z, onehot(bundle)]`` back to a streamline; the discriminator tells
    encodings from prior samples, both with the bundle's one-hot, which pushes
    ``q(z | bundle)`` toward the prior. Latent dimension 0 is ordered by the
    attribute through the AR loss.

    Parameters
    ----------
    **config
        The network fields of :class:`~aae_tract.model.config.AAEConfig`.

    Notes
    -----
    A training batch is a tuple ``(x, onehot, attribute)`` with shapes
    ``(B, n_points, 3)``, ``(B, n_bundles)`` and ``(B,)``.
    """

    def __init__(self, name="conditional_aae", **config):
        trainable = config.pop("trainable", True)
        config.pop("dtype", None)
        super().__init__(name=name, trainable=trainable)
        # fields left to None by default take their values for what the AR
        # loss orders (AAEConfig.resolved)
        self.config = AAEConfig.from_dict(config).resolved()
        self.encoder = build_encoder(self.config)
        self.decoder = build_decoder(self.config)
        self.discriminator = build_discriminator(self.config)
        self.prior = make_prior(
            self.config.prior,
            self.config.latent_dims,
            n_components=self.config.prior_components,
            codes_per_component=self.config.prior_component_codes,
            seed=self.config.seed,
            n_bundles=self.config.n_bundles,
            owner=self,
        )
        self.seed_generator = keras.random.SeedGenerator(self.config.seed)
        # True during the decoder-only stage (``polish_epochs``): the
        # autoencoder's step then moves the decoder alone, and decodes codes
        # with noise of ``code_noise`` times the batch's sd per dimension
        # (with ``turn_weight`` > 0: for the excess-turn penalty alone)
        self.decoder_only = False
        self.code_noise = 0.0
        self.turn_weight = 0.0
        # during the decoder-only stage: weight of the length that each code
        # decodes to with dimension 0 of another code of its bundle
        # (``polish_swap_weight``)
        self.swap_weight = 0.0
        self._opt = _Optimizers(None, None)
        self.trackers = {
            n: keras.metrics.Mean(name=n) for n in LOSS_NAMES if self._reports(n)
        }
        # ramps the adversarial and AR weights from 0 to 1 over the warm-up
        self.reg_scale = keras.Variable(
            1.0, trainable=False, dtype="float32", name="reg_scale"
        )
        self.built = True

    # -- Keras plumbing -------------------------------------------------------
    def get_config(self):
        return {"name": self.name, **self.config.network_config()}

    @classmethod
    def from_config(cls, config):
        return cls(**{**STORED_DEFAULTS, **config})

    def get_compile_config(self):
        return None

    def compile_from_config(self, config):
        self.compile()

    def compile(self, ae_optimizer=None, disc_optimizer=None, **kwargs):
        """Compile with one optimizer per player.

        Parameters
        ----------
        ae_optimizer, disc_optimizer : keras.optimizers.Optimizer, optional
            Optimizers of the autoencoder (encoder + decoder) and of the
            discriminator; Adam with the configured learning rates otherwise.
        """
        super().compile(optimizer=None, **kwargs)
        if ae_optimizer is None:
            ae_optimizer = keras.optimizers.Adam(1e-3, name="ae_adam")
        if disc_optimizer is None:
            disc_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5, name="disc_adam")
        self._opt = _Optimizers(
            ae_optimizer,
            disc_optimizer,
            self.ae_variables,
            self.discriminator.trainable_variables,
        )
        self.optimizer = self._opt

    @property
    def ae_optimizer(self):
        return self._opt.autoencoder

    @property
    def disc_optimizer(self):
        return self._opt.discriminator

    @property
    def metrics(self):
        return list(self.trackers.values())

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, training=False):
        """Reconstruct: ``inputs = (x, onehot)`` -> ``x_hat``.

        A bare ``x`` (as Keras passes when it builds the model) is decoded with
        an all-zero condition.
        """
        if isinstance(inputs, (list, tuple)):
            x, onehot = inputs[0], inputs[1]
        else:
            x = inputs
            onehot = ops.zeros((ops.shape(x)[0], self.config.n_bundles), "float32")
        z = self.encode_mean(x, training=training)
        return self.decode(z, onehot, training=training)[0]

    def decode(self, z, onehot, noise=None, training=False):
        """``(x, texture)``: the decoded streamline and its texture parameters.

        ``noise``, a pair of standard normal arrays ``(batch, n_points - 1, 3)``
        and ``(batch, 1)``, samples the texture of an ``"arclength"`` decoder
        (see :class:`~aae_tract.model.networks.ArcLengthCurve`); None gives
        the mean streamline. A ``"spline"`` decoder has no texture
        (``texture`` is None).
        """
        z = ops.convert_to_tensor(z, "float32")
        onehot = ops.convert_to_tensor(onehot, "float32")
        if self.config.decoder == "spline":
            return self.decoder([z, onehot], training=training), None
        n = ops.shape(z)[0]
        if noise is None:
            noise = (ops.zeros((n, self.config.n_points - 1, 3)), ops.zeros((n, 1)))
        steps, xi = (ops.convert_to_tensor(v, "float32") for v in noise)
        x, texture = self.decoder([z, onehot, steps, xi], training=training)
        return x, texture

    def encode_mean(self, x, training=False):
        """The code of ``x``: G(x), or the posterior mean."""
        out = self.encoder(x, training=training)
        return out[0] if isinstance(out, (list, tuple)) else out

    def encode_sample(self, x, training=True):
        """A sample of q(z | x) (the mean for a deterministic posterior)."""
        return self._posterior_sample(x, training=training)[0]

    def _posterior_sample(self, x, training=True):
        """``(z, log_var)``: a sample of q(z | x) and its log-variance (None
        for a deterministic posterior)."""
        out = self.encoder(x, training=training)
        if not isinstance(out, (list, tuple)):
            return out, None
        mean, log_var = out
        log_var = ops.clip(log_var, *LOG_VAR_RANGE)
        noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * noise, log_var

    @property
    def ae_variables(self):
        """What the autoencoder's optimizer moves: the encoder's and the
        decoder's weights, or the decoder's alone while ``decoder_only``
        (set it before :meth:`compile`, which builds the optimizer for them)."""
        if self.decoder_only:
            return list(self.decoder.trainable_variables)
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    # -- losses shared by all backends ---------------------------------------
    def _unpack(self, data):
        if isinstance(data, (list, tuple)) and len(data) == 1:
            data = data[0]
        x, onehot, attribute = data
        return x, ops.cast(onehot, "float32"), ops.cast(attribute, "float32")

    def autoencoder_losses(self, x, onehot, attribute, training=True):
        """Compute the autoencoder's losses for one batch.

        Returns
        -------
        total, parts, z
            ``total`` the weighted sum, ``parts`` a dict of the unweighted
            terms, ``z`` the encodings.
        """
        cfg = self.config
        if training:
            z, log_var = self._posterior_sample(x)
        else:
            z, log_var = self.encode_mean(x), None
        decoded = z
        x_noisy = None
        if training and self.decoder_only and self.code_noise > 0:
            spread = ops.std(z, axis=0, keepdims=True)
            noisy = z + self.code_noise * spread * keras.random.normal(
                ops.shape(z), seed=self.seed_generator
            )
            if self.turn_weight > 0:
                # the losses see the codes; the noisy codes' mean curves
                # only the excess-turn penalty
                x_noisy, _ = self.decode(noisy, onehot, training=training)
            else:
                decoded = noisy
        x_hat, texture_out = self.decode(decoded, onehot, training=training)
        turn = (
            excess_turn(x_noisy, x_hat)
            if x_noisy is not None
            else ops.zeros((), "float32")
        )
        swap = swap_turn = ops.zeros((), "float32")
        if training and self.decoder_only and self.swap_weight > 0:
            swap, swap_turn = self._swap_terms(x, z, onehot, x_hat)
        recon = reconstruction_mse(x, x_hat)
        smooth = second_difference_mse(x, x_hat)
        length = log_length_mse(x, x_hat)
        direction = direction_loss(x, x_hat)
        texture = (
            texture_nll(
                x,
                x_hat,
                texture_out,
                self.decoder.get_layer("arclength").texture_noise(
                    keras.random.normal(
                        ops.shape(x_hat[:, 1:]), seed=self.seed_generator
                    )
                ),
            )
            if texture_out is not None
            else ops.zeros((), "float32")
        )
        spread = ops.mean(ops.abs(log_var)) if log_var is not None else ops.zeros(())
        # a subject's age is the same in every bundle: its mean over bundles
        by_subject = cfg.ar_level == "subject"
        labels = (
            ops.argmax(onehot, axis=-1)
            if cfg.ar_within_bundle and not by_subject
            else None
        )
        ar = attribute_regularization(
            z[:, 0],
            attribute,
            delta=cfg.ar_delta,
            soft=cfg.resolved_ar_soft(),
            labels=labels,
            groups=by_subject,
        )
        mmd = (
            conditional_mmd(
                z,
                self.prior.sample(ops.shape(z)[0], self.seed_generator, onehot),
                onehot,
            )
            if cfg.mmd_weight > 0
            else ops.zeros((), "float32")
        )
        fake_logits = self.discriminator([z, onehot], training=training)
        gen = binary_crossentropy_logits(ops.ones_like(fake_logits), fake_logits)
        total = (
            cfg.recon_weight * recon
            + cfg.length_weight * length
            + cfg.direction_weight * direction
            + cfg.texture_weight * texture
            + cfg.smooth_weight * smooth
            + self.turn_weight * turn
            + self.swap_weight * swap
            + self.turn_weight * swap_turn
            + cfg.log_var_weight * spread
            + self.reg_scale
            * (cfg.ar_weight * ar + cfg.adv_weight * gen + cfg.mmd_weight * mmd)
        )
        parts = {
            "recon_loss": recon,
            "length_loss": length,
            "direction_loss": direction,
            "texture_loss": texture,
            "smooth_loss": smooth,
            "ar_loss": ar,
            "gen_loss": gen,
        }
        if self._reports("log_var_loss"):
            parts["log_var_loss"] = spread
        if self._reports("mmd_loss"):
            parts["mmd_loss"] = mmd
        return total, parts, z

    def _swap_terms(self, x, z, onehot, x_hat):
        """How far from the length it stands for each code decodes when its
        latent dimension 0 is that of another code of its bundle, and how
        much more it turns then.

        Each code of the batch takes dimension 0 from a code of its bundle
        drawn at random (itself included) and keeps its other dimensions; its
        decoded mean streamline is scored against the polyline length of the
        streamline that dimension 0 came from
        (:func:`~aae_tract.model.losses.length_target_mse`). Reconstruction
        alone asks the decoder for a code's length only where codes lie,
        where dimension 0 and the other dimensions go together; this term
        asks it to follow dimension 0 whatever the others, which is how
        generation sets a length (:func:`aae_tract.generate.match_length`
        moves dimension 0 alone), also at the ends of a bundle's range where
        the data hold few streamlines.

        The second term holds the swapped codes' streamlines, as the noisy
        codes' are held, to turn no more per step than ``x_hat``, the codes'
        own (:func:`~aae_tract.model.losses.excess_turn`, weighted by
        ``turn_weight``): a code asked for another length than its own is
        off the codes the decoder learned to draw.

        Returns
        -------
        length, turn : scalar tensors
        """
        same = ops.matmul(onehot, ops.transpose(onehot))
        # logits: 0 for the codes of the row's bundle, -1e9 (never) for others
        partner = keras.random.categorical(
            ops.where(same > 0.5, 0.0, -1e9), 1, seed=self.seed_generator
        )[:, 0]
        z0 = ops.take(z[:, :1], partner, axis=0)
        swapped, _ = self.decode(
            ops.concatenate([z0, z[:, 1:]], axis=1), onehot, training=True
        )
        target = ops.take(polyline_length(ops.cast(x, "float32")), partner, axis=0)
        return (
            length_target_mse(swapped, ops.stop_gradient(target)),
            excess_turn(swapped, x_hat),
        )

    def _reports(self, name):
        """Whether the loss ``name`` is part of this model (always, except the
        optional prior-matching terms, which are reported only when used)."""
        cfg = self.config
        if name == "log_var_loss":
            return cfg.posterior == "gaussian" and cfg.log_var_weight > 0
        if name == "mmd_loss":
            return cfg.mmd_weight > 0
        return True

    def discriminator_loss(self, z_fake, onehot, training=True):
        """Cross-entropy of the discriminator: prior samples real, encodings fake."""
        n = ops.shape(z_fake)[0]
        z_real = self.prior.sample(n, self.seed_generator, onehot)
        if self.config.disc_norm == "spectral":
            # one call: a spectral layer renormalizes its kernel in place at
            # every training call, which torch's autograd refuses between
            # two calls of one step
            logits = self.discriminator(
                [ops.concatenate([z_real, z_fake], 0), ops.tile(onehot, (2, 1))],
                training=training,
            )
            real_logits, fake_logits = logits[:n], logits[n:]
        else:
            real_logits = self.discriminator([z_real, onehot], training=training)
            fake_logits = self.discriminator([z_fake, onehot], training=training)
        real_target = ops.ones_like(real_logits) * (1.0 - self.config.label_smoothing)
        return binary_crossentropy_logits(
            real_target, real_logits
        ) + binary_crossentropy_logits(ops.zeros_like(fake_logits), fake_logits)

    def _record(self, total, parts, disc):
        self.trackers["loss"].update_state(total)
        self.trackers["disc_loss"].update_state(disc)
        for name, value in parts.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    # -- one training step per backend ---------------------------------------
    def train_step(self, *args):
        """One step of both players: ``train_step(data)`` with TensorFlow and
        torch, the stateless ``train_step(state, data)`` with JAX."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._train_step_tensorflow(*args)
        if backend == "torch":
            return self._train_step_torch(*args)
        if backend == "jax":
            from aae_tract.model import jax_steps

            return jax_steps.train_step(self, *args)
        raise NotImplementedError(
            f"training with the {backend!r} Keras backend is not supported; "
            "use KERAS_BACKEND=tensorflow, torch or jax"
        )

    def _train_step_tensorflow(self, data):
        import tensorflow as tf

        x, onehot, attribute = self._unpack(data)
        # under MirroredStrategy each replica sees its part of the batch and
        # the optimizer sums the replicas' gradients: divide to average them
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            total, parts, z = self.autoencoder_losses(x, onehot, attribute)
            scaled = self.ae_optimizer.scale_loss(total / replicas)
        ae_vars = self.ae_variables
        grads = tape.gradient(scaled, ae_vars)
        self.ae_optimizer.apply(grads, ae_vars)

        z_fake = tf.stop_gradient(z)
        with tf.GradientTape() as tape:
            disc = self.discriminator_loss(z_fake, onehot)
            scaled = self.disc_optimizer.scale_loss(disc / replicas)
        d_vars = self.discriminator.trainable_variables
        grads = tape.gradient(scaled, d_vars)
        self.disc_optimizer.apply(grads, d_vars)
        return self._record(total, parts, disc)

    def _train_step_torch(self, data):
        import torch

        from aae_tract.model import parallel

        # one process per device (torchrun): each holds its part of the batch,
        # and both players' gradients are averaged over the processes
        synced = parallel.torch_replicas() > 1
        x, onehot, attribute = self._unpack(data)
        ae_vars = self.ae_variables
        self.zero_grad()
        total, parts, z = self.autoencoder_losses(x, onehot, attribute)
        total.backward()
        grads = [v.value.grad for v in ae_vars]
        with torch.no_grad():
            if synced:
                parallel.torch_all_reduce_mean(grads)
            self.ae_optimizer.apply(grads, ae_vars)

        z_fake = z.detach()
        d_vars = self.discriminator.trainable_variables
        self.zero_grad()
        disc = self.discriminator_loss(z_fake, onehot)
        disc.backward()
        grads = [v.value.grad for v in d_vars]
        with torch.no_grad():
            if synced:
                parallel.torch_all_reduce_mean(grads)
            self.disc_optimizer.apply(grads, d_vars)
        return self._record_torch(total, parts, disc, synced)

    def _record_torch(self, total, parts, disc, synced):
        """Record torch losses, averaged over the processes when ``synced``."""
        import torch

        values = [t.detach().reshape(()) for t in (total, disc, *parts.values())]
        if synced:
            from aae_tract.model import parallel

            stacked = torch.stack(values)
            parallel.torch_all_reduce_mean([stacked])
            values = list(stacked)
        total, disc, *rest = values
        return self._record(total, dict(zip(parts, rest)), disc)

    def test_step(self, *args):
        """The losses of a batch without training: ``test_step(data)``, or the
        stateless ``test_step(state, data)`` with JAX."""
        if keras.backend.backend() == "jax":
            from aae_tract.model import jax_steps

            return jax_steps.test_step(self, *args)
        return self._test_step(*args)

    def _test_step(self, data):
        x, onehot, attribute = self._unpack(data)
        total, parts, z = self.autoencoder_losses(x, onehot, attribute, training=False)
        disc = self.discriminator_loss(z, onehot, training=False)
        if keras.backend.backend() == "torch":
            from aae_tract.model import parallel

            return self._record_torch(total, parts, disc, parallel.torch_replicas() > 1)
        return self._record(total, parts, disc)
