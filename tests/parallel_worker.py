"""One data-parallel run of tests/test_parallel.py, in its own process(es).

::

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/parallel_worker.py DATA WORK --devices 2 --interrupt
    KERAS_BACKEND=torch python -m torch.distributed.run --standalone \\
        --nproc_per_node 2 tests/parallel_worker.py DATA WORK --devices 2

Trains ``WORK/init.keras`` (written first with ``--init``) for two epochs and
one decoder-only epoch on ``--devices`` devices, with the model of
``backend_worker.py`` (its random terms kept out of the autoencoder's
gradient), and writes the losses after
every batch to ``WORK/<backend>-<devices>.json`` (rank 0). TensorFlow gets
two logical CPU devices. With ``--interrupt`` the run stops after the first
epoch and a new model resumes it from the checkpoint.
"""

import os
import sys

if os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as tf

    # two logical CPU devices for MirroredStrategy (before TensorFlow starts)
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from backend_worker import (  # noqa: E402
    CONFIG,
    Recorder,
    _dataset,
    _fit,
    _numpy,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of bundles")
    parser.add_argument("work", type=Path, help="folder shared by the runs")
    parser.add_argument("--devices", default="1")
    parser.add_argument("--init", action="store_true", help="write init.keras")
    parser.add_argument("--interrupt", action="store_true")
    args = parser.parse_args(argv)
    from aae_tract.model import TractAAE
    from aae_tract.model.parallel import is_main_process, join_hosts

    join_hosts()  # JAX on several processes: before JAX computes anything
    dataset = _dataset(args.data)
    if args.init:
        # no AR weight: the per-replica AR pairs of TensorFlow and torch
        # then do not move the weights (see tests/test_parallel.py); the
        # fitted prior, refitted every epoch by a callback, must be refitted
        # alike on every device and after the resume
        # after the two epochs, one epoch of the decoder alone
        config = {**CONFIG, "ar_weight": 0.0, "prior": "fitted", "polish_epochs": 1}
        TractAAE.from_dataset(dataset, **config).save(args.work / "init.keras")
    recorder = Recorder()
    backend = keras.backend.backend()
    model = _fit(
        args.work,
        dataset,
        recorder,
        args.interrupt,
        name=f"{backend}-{args.devices}",
        devices=args.devices,
    )
    if not is_main_process():
        return 0
    net = model.network
    result = {
        "batches": recorder.batches,
        "devices": model.metadata.training["devices"],
        "codes": model.encode_prepared(dataset.x[:16]).tolist(),
        "decoded": model.decode(
            model.encode_prepared(dataset.x[:16]),
            [dataset.bundle_names[i] for i in dataset.labels[:16]],
        ).tolist(),
        "polish_recon": model.metadata.training["polish"]["recon_loss"],
        "reg_scale": float(_numpy(net.reg_scale)),
        "prior_means": _numpy(net.prior_means).tolist(),
        "ae_steps": int(_numpy(net.ae_optimizer.iterations)),
        "disc_steps": int(_numpy(net.disc_optimizer.iterations)),
    }
    name = f"{backend}-{args.devices}.json"
    (args.work / name).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
