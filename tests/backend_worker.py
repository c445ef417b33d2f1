"""One backend's part of tests/test_backends.py, run in its own process.

Keras fixes its backend when it is first imported, so the comparison of the
backends runs this script once per backend, with ``KERAS_BACKEND`` set::

    KERAS_BACKEND=jax python tests/backend_worker.py train DATA WORK --interrupt

``train`` starts from ``WORK/init.keras`` (written first with ``--init``: a
model that has not trained), trains it for two epochs and saves
``WORK/trained-<backend>.keras``. With ``--interrupt`` the run stops after
the first epoch, as a killed run would, and a new model resumes it from the
checkpoint. ``load`` only reads models. Both end by encoding a few
streamlines with every ``WORK/trained-*.keras`` there is, and write what they
saw to ``WORK/<task>-<backend>.json``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np

#: The model compared: tiny, and with the terms that draw random numbers
#: (adversarial, texture, MMD, dropout, a sampled posterior) kept out of the
#: autoencoder's gradient, so that its training is the same on every backend.
CONFIG = {
    "n_points": 32,
    "n_control": 8,
    "filters": (16, 32),
    "disc_units": (32,),
    "latent_dims": 8,
    "batch_size": 16,
    "epochs": 2,
    "warmup_epochs": 2,
    "adv_weight": 0.0,
    "texture_weight": 0.0,
    "dropout": 0.0,
    "polish_epochs": 0,  # the adversarial stage only (tests/test_parallel.py has both)
    "seed": 0,
}
#: Streamlines trained on: 6 full batches, all three bundles.
N_TRAIN = 96
#: Streamlines encoded to compare the saved models.
N_ENCODED = 16


class Recorder(keras.callbacks.Callback):
    """Keep the logs after every batch and the seed state after every epoch."""

    def __init__(self):
        super().__init__()
        self.batches, self.seed_states = [], []
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.batches.append({"epoch": self.epoch, "batch": batch, **logs})

    def on_epoch_end(self, epoch, logs=None):
        state = _numpy(self.model.seed_generator.state).tolist()
        self.seed_states.append({"epoch": epoch, "state": state})


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """End training after the first epoch, as if the run had been killed."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _dataset(data_dir):
    from aae_tract.data import load_dataset

    dataset = load_dataset(data_dir, n_points=CONFIG["n_points"])
    step = len(dataset) // N_TRAIN
    return dataset.subset(np.arange(0, step * N_TRAIN, step))


def _fit(work, dataset, recorder, interrupt, *, name=None, **options):
    """Train ``init.keras`` for two epochs (resumed after one with ``interrupt``).

    The checkpoint goes to ``work/checkpoint-<name>`` (default: the backend);
    ``options`` are more keyword arguments of ``TractAAE.fit``.
    """
    from aae_tract.model import TractAAE

    checkpoint = work / f"checkpoint-{name or keras.backend.backend()}"
    model = TractAAE.load(work / "init.keras")
    if interrupt:
        model.fit(
            dataset,
            checkpoint_dir=checkpoint,
            verbose=0,
            callbacks=[recorder, StopAfterFirstEpoch()],
            **options,
        )
        model = TractAAE.load(work / "init.keras")
    model.fit(
        dataset,
        checkpoint_dir=checkpoint,
        resume=interrupt,
        verbose=0,
        callbacks=[recorder],
        **options,
    )
    return model


def train(work, dataset, interrupt):
    """Train from ``init.keras`` and save; what happened, as a dict."""
    from aae_tract.model import TractAAE

    start = TractAAE.load(work / "init.keras").network.discriminator.get_weights()
    recorder = Recorder()
    model = _fit(work, dataset, recorder, interrupt)
    model.save(work / f"trained-{keras.backend.backend()}.keras")
    net = model.network
    end = net.discriminator.get_weights()
    return {
        "batches": recorder.batches,
        "seed_states": recorder.seed_states,
        "ae_steps": int(_numpy(net.ae_optimizer.iterations)),
        "disc_steps": int(_numpy(net.disc_optimizer.iterations)),
        "disc_moved": any(not np.array_equal(a, b) for a, b in zip(start, end)),
        "reg_scale": float(_numpy(net.reg_scale)),
        "codes": model.encode_prepared(dataset.x[:N_ENCODED]).tolist(),
    }


def encode_saved(work, dataset):
    """Codes of the first streamlines by every ``trained-*.keras`` in ``work``."""
    from aae_tract.model import TractAAE

    x = dataset.x[:N_ENCODED]
    return {
        path.stem: TractAAE.load(path).encode_prepared(x).tolist()
        for path in sorted(work.glob("trained-*.keras"))
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("train", "load"))
    parser.add_argument("data", type=Path, help="folder of bundles")
    parser.add_argument("work", type=Path, help="folder shared by the processes")
    parser.add_argument("--init", action="store_true", help="write init.keras")
    parser.add_argument("--interrupt", action="store_true")
    args = parser.parse_args(argv)
    dataset = _dataset(args.data)
    result = {}
    if args.init:
        from aae_tract.model import TractAAE

        TractAAE.from_dataset(dataset, **CONFIG).save(args.work / "init.keras")
    if args.task == "train":
        result = train(args.work, dataset, args.interrupt)
    result["loaded"] = encode_saved(args.work, dataset)
    name = f"{args.task}-{os.environ.get('KERAS_BACKEND', 'tensorflow')}.json"
    (args.work / name).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
