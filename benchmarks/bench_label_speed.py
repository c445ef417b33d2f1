"""Labelling speed and memory on a large whole-brain tractogram.

Makes one phantom subject whose whole-brain tractogram holds about
``--n_streamlines`` streamlines (70 % in the six bundles, 30 % distractors),
trains a model for ``--epochs`` epochs on the phantom that
``bench_label.py`` trains its models on (``--train_data label``, the
default: its 8-subject phantom with fragments, 150 streamlines per bundle,
less the 2 subjects it tests on: 5 subjects trained on, 1 setting the
labeller's thresholds; the model labels as well as
that benchmark's do, so the share of streamlines the default rule decodes
is that of a model a user would label with) or on the small phantom of the
runs before (``--train_data small``: 3 subjects of 100 streamlines per
bundle, trained for speed only, 30 epochs), then labels the large
tractogram read from disk a block at a time (``--reader stream``:
:class:`aae_tract.stream.TractogramStream`, as ``aae_tract_label`` reads;
``--reader nibabel``: nibabel's lazy loading, one streamline at a time)
and prints streamlines per second and the peak resident memory before and
during labelling. ``--reference_n`` streamlines are first labelled from
memory: the rate on a small input, for the ratio. Last, the encoder's and
the decoder's forward passes are timed alone, the bound on labelling.

With ``--cli`` the command ``aae_tract_label`` also labels the file, in its
own process, writing every output but the picture: its wall time (start-up,
reading, labelling and writing the tractograms) and its peak resident
memory, once as it runs (the file read and written a block at a time) and
once with the whole file loaded first (as the command did before it
streamed), in the same run.

With ``--reach on off`` the file is labelled twice, in two processes, with
the model's bundle reaches (the default labelling) and without them (every
bundle considered for every streamline): the speed-up they give and the
number of labels they change. ``--cli`` times the command as it runs, with
the reaches.

``--networks MODEL`` only times the two networks, as Keras runs them and
compiled with XLA, on ``--threads`` TensorFlow threads, then the encoder
in float32 and in bfloat16 in turn, ``--rounds`` times, with the gap
between their codes (what ``label_streamlines(..., precision=)`` chooses
between).

With ``--chunk_mib 4 64`` the file is labelled once per size of the chunks
a plain ``.trk`` is read in (``aae_tract.stream.CHUNK_BYTES``), each in a
process of its own (with the first value of ``--reach``).

``--compare_labels A B`` prints how many labels two saved runs (the
``labels_*.npy`` a ``--label`` run saves beside the model) give
differently; with ``--truth TRACTOGRAM`` (the phantom tractogram they
labelled) also the true label and the two runs' labels of those that
differ.

``--label MODEL TRACTOGRAM --profile 30`` also prints the 30 costliest
calls of the labelling (cProfile, cumulative time) to stderr.

``--reject``, ``--decode_from``, ``--settle_below`` and ``--precision``
choose ``label_streamlines``' rule (``--precision float32``: the encoder
in float32 whatever the CPU, the rule before ``precision``; ``--reject
latent``: nothing decoded; ``--decode_from 0``: every streamline inside its
bundle's latent threshold decoded, the default rule before ``decode_from``;
``--settle_below 0``: every streamline within reach of bundles of both
point orders encoded in both, the rule before ``settle_below``).
``--label MODEL TRACTOGRAM`` labels one file in this process and, for a
phantom whole-brain tractogram, scores the labels against the truth beside
it.

Example::

    python benchmarks/bench_label_speed.py --n_streamlines 1000000
    python benchmarks/bench_label_speed.py --n_streamlines 1000000 --reach on off
    python benchmarks/bench_label_speed.py --n_streamlines 1000000 --chunk_mib 4 64
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_baseline import add_reach_argument, drop_reaches  # noqa: E402


def _peak_rss_gib():
    """Peak resident memory of this process (GiB): VmHWM of /proc/self/status,
    which starts afresh at exec (``ru_maxrss`` would carry the parent's peak
    over into a subprocess)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _current_rss_gib():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**30


def _network_rates(model, batch_size, n=16384, precision="float32"):
    """Streamlines/s of the encoder's (computing in ``precision``) and the
    decoder's forward passes alone (the bound on labelling: it encodes a
    streamline once or twice and decodes those its rule tests)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, model.n_points, 3)).astype(np.float32)
    encode = functools.partial(
        model.encode_prepared, batch_size=batch_size, precision=precision
    )
    encode(x[:batch_size])
    start = time.perf_counter()
    z = encode(x)
    encoder = n / (time.perf_counter() - start)
    bundle = model.bundle_names[0]
    model.decode(z[:batch_size], bundle, batch_size=batch_size)
    start = time.perf_counter()
    model.decode(z, bundle, batch_size=batch_size)
    decoder = n / (time.perf_counter() - start)
    return {"encoder_streamlines_per_s": encoder, "decoder_streamlines_per_s": decoder}


def _networks_only(model_path, args):
    """Time the encoder's and the decoder's forward passes alone, as Keras
    runs them and compiled with XLA (TensorFlow and JAX), on ``--threads``
    TensorFlow threads (0: its default), then the encoder as Keras runs it
    in float32 and in bfloat16, in turn, ``--rounds`` times, with how far
    the bfloat16 codes of generated streamlines lie from their float32
    ones (the mean absolute gap over each latent dimension's standard
    deviation, averaged over dimensions); print one JSON line."""
    import keras

    from aae_tract.backend import cpu_has_bfloat16

    if args.threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from aae_tract.model import TractAAE

    model = TractAAE.load(model_path)
    result = {"backend": keras.backend.backend(), "threads": args.threads}
    modes = ["keras"] + (["xla"] if keras.backend.backend() != "torch" else [])
    networks = (model.network.encoder, model.network.decoder)
    # as Keras runs them: its own choice (compiled with XLA under JAX, not
    # under TensorFlow on a CPU)
    default = [network.jit_compile for network in networks]
    for mode in modes:
        for network, own in zip(networks, default):
            network.jit_compile = True if mode == "xla" else own
            network.predict_function = None  # rebuilt with the setting
        rates = _network_rates(model, args.batch_size)
        result |= {f"{mode}_{k}": v for k, v in rates.items()}
    for network, own in zip(networks, default):
        network.jit_compile = own
        network.predict_function = None
    rates = {"float32": [], "bfloat16": []}
    for _ in range(args.rounds):
        for precision, runs in rates.items():
            rate = _network_rates(model, args.batch_size, precision=precision)
            runs.append(rate["encoder_streamlines_per_s"])
    # streamlines like those labelled: 1,000 generated for each bundle
    from aae_tract.generate import generate

    x = np.concatenate(
        [
            generate(model, bundle, n_streamlines=1000, seed=0).streamlines
            for bundle in model.bundle_names
        ]
    )
    codes = {p: model.encode_prepared(x, precision=p) for p in rates}
    gap = np.abs(codes["bfloat16"] - codes["float32"]).mean(axis=0)
    result |= {
        "cpu_has_bfloat16": cpu_has_bfloat16(),
        "encoder_float32_per_s": rates["float32"],
        "encoder_bfloat16_per_s": rates["bfloat16"],
        "bfloat16_over_float32": [
            b / f for b, f in zip(rates["bfloat16"], rates["float32"])
        ],
        "bfloat16_code_gap_sd": float((gap / codes["float32"].std(axis=0)).mean()),
    }
    print(json.dumps(result))
    return result


def _label_only(model_path, path, args):
    """Label ``path`` lazily with the model at ``model_path``; print one JSON line."""
    import nibabel as nib

    from aae_tract.label import label_precision, label_streamlines
    from aae_tract.model import TractAAE

    if args.chunk_mib:
        from aae_tract import stream

        stream.CHUNK_BYTES = int(args.chunk_mib[0] * 2**20)
    model = TractAAE.load(model_path)
    rule_precision = label_precision(args.precision)
    reach = args.reach[0]
    if reach == "off":  # every bundle considered for every streamline
        drop_reaches(model.metadata.labeller)
    rss_loaded = _current_rss_gib()
    lazy = nib.streamlines.load(path, lazy_load=True)
    head = []
    for s in lazy.tractogram.to_world().streamlines:
        head.append(np.asarray(s, np.float32))
        if len(head) == args.reference_n:
            break
    rule = {
        "register": False,
        "batch_size": args.batch_size,
        "reject": args.reject,
        "decode_from": args.decode_from,
        "settle_below": args.settle_below,
        "precision": args.precision,
    }
    start = time.perf_counter()
    label_streamlines(model, head, **rule)
    small_rate = len(head) / (time.perf_counter() - start)
    del head
    rss_before = _current_rss_gib()
    if args.reader == "stream":  # what aae_tract_label reads with
        from aae_tract.stream import TractogramStream

        streamlines = TractogramStream(path)
    else:
        lazy = nib.streamlines.load(path, lazy_load=True)
        streamlines = (
            np.asarray(s, np.float32) for s in lazy.tractogram.to_world().streamlines
        )
    decoded = _count_decoded()
    encoded = _count_encoded(model)
    profile = None
    if args.profile:  # where the time goes (cProfile adds its own overhead)
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    start = time.perf_counter()
    labels, _ = label_streamlines(model, streamlines, block=args.block, **rule)
    seconds = time.perf_counter() - start
    if profile is not None:
        import pstats

        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(
            args.profile
        )
    shares = {
        "decoded_share": decoded[0] / max(len(labels), 1),
        "encoded_per_streamline": encoded[0] / max(len(labels), 1),
    }
    peak = _peak_rss_gib()  # of everything so far: loading, both labelling runs
    np.save(Path(model_path).parent / f"labels_{_run_name(args)}.npy", labels)
    # the networks alone, the encoder in the precision the labelling used
    rates = _network_rates(model, args.batch_size, precision=rule_precision)
    result = rates | _truth_scores(path, labels)
    result |= {
        "n_streamlines": int(len(labels)),
        **shares,
        "batch_size": args.batch_size,
        "block": args.block,
        "reject": args.reject,
        "decode_from": args.decode_from,
        "settle_below": args.settle_below,
        "precision": rule_precision,
        "reach": reach,
        "reader": args.reader,
        "chunk_mib": args.chunk_mib[0] if args.chunk_mib else None,
        "seconds": seconds,
        "streamlines_per_s": len(labels) / seconds,
        "in_memory_streamlines_per_s": small_rate,
        "rss_loaded_gib": rss_loaded,
        "rss_before_gib": rss_before,
        "peak_rss_gib": peak,
        "file_gib": Path(path).stat().st_size / 2**30,
    }
    print(json.dumps(result))
    return result


def _count_decoded():
    """Count, from now on, the streamlines labelling decodes (for its
    reconstruction test): a one-item list that grows as they are."""
    import aae_tract.label as label_module

    count = [0]
    decode = label_module._recon_distance

    def counting(model, x, *rest, **options):
        count[0] += len(x)
        return decode(model, x, *rest, **options)

    label_module._recon_distance = counting
    return count


def _count_encoded(model):
    """Count, from now on, the rows ``model`` encodes (a streamline encoded
    in both point orders counts twice): a one-item list that grows."""
    count = [0]
    encode = model.encode_prepared

    def counting(x, **options):
        count[0] += len(x)
        return encode(x, **options)

    model.encode_prepared = counting
    return count


def _print_changes(path, first, second):
    """For the labels two runs on the phantom tractogram ``path`` give
    differently: the counts of (true label, first run's, second run's)."""
    from collections import Counter

    from aae_tract.data_fetchers import load_wholebrain_labels

    truth = np.asarray(load_wholebrain_labels(Path(path).parent, Path(path).stem))
    changed = np.flatnonzero(first != second)
    moves = Counter(zip(truth[changed], first[changed], second[changed]))
    for (true, a, b), count in moves.most_common():
        print(f"{count:,}: true {true}, {a} -> {b}")


def _truth_scores(path, labels):
    """Accuracy and "other" shares of ``labels`` against the phantom's truth
    beside ``path`` (a :func:`make_wholebrain` tractogram); nothing when
    there is none."""
    from aae_tract.data_fetchers import load_wholebrain_labels
    from aae_tract.errors import AAETractError

    try:
        truth = np.asarray(load_wholebrain_labels(Path(path).parent, Path(path).stem))
    except AAETractError:
        return {}
    if len(truth) != len(labels):
        return {}
    return {
        "accuracy": float(np.mean(labels == truth)),
        "other_share": float(np.mean(labels == "other")),
        "true_other_share": float(np.mean(truth == "other")),
    }


def _label_cli(model_path, path, out_dir, args):
    """Run aae_tract_label in this process; print one JSON line."""
    from aae_tract.workflows import cli

    if args.whole:  # no extension is streamed: the file is loaded whole
        import aae_tract.stream

        aae_tract.stream.STREAM_EXTENSIONS = ()

    start = time.perf_counter()
    code = cli.main(
        "aae_tract_label",
        [path, "--model", model_path, "--out_dir", out_dir, "--skip_picture"]
        + ["--batch_size", str(args.batch_size), "--reject", args.reject, "--force"]
        + ["--decode_from", str(args.decode_from), "--precision", args.precision],
    )
    seconds = time.perf_counter() - start
    report = json.loads((Path(out_dir) / "labels.json").read_text())
    result = {
        "exit_code": code,
        "precision": report["labeller"]["precision"],
        "seconds": seconds,
        "n_streamlines": report["n_streamlines"],
        "peak_rss_gib": _peak_rss_gib(),
    }
    print(json.dumps(result))
    return result


def main(argv=None):
    from aae_tract.label import (
        DECODE_FROM,
        LABEL_BATCH,
        LABEL_BLOCK,
        PRECISIONS,
        REJECT_RULES,
        SETTLE_BELOW,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_streamlines", type=int, default=1_000_000)
    parser.add_argument("--n_points", type=int, default=64)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: 40 with --train_data label, 30 with small)",
    )
    parser.add_argument(
        "--train_data",
        default="label",
        choices=("label", "small"),
        help="the phantom the model trains on: bench_label.py's (label) or "
        "the small one of the earlier runs (small)",
    )
    parser.add_argument("--batch_size", type=int, default=LABEL_BATCH)
    parser.add_argument(
        "--block",
        type=int,
        default=LABEL_BLOCK,
        help="streamlines labelled at a time (label_streamlines' block)",
    )
    parser.add_argument("--reference_n", type=int, default=20_000)
    parser.add_argument(
        "--reject",
        default="both",
        choices=list(REJECT_RULES),
        help="label_streamlines' rejection rule (latent: nothing is decoded)",
    )
    parser.add_argument(
        "--decode_from",
        type=float,
        default=DECODE_FROM,
        help="label_streamlines' decode_from with --reject both (0: decode "
        "every streamline inside its bundle's latent threshold)",
    )
    parser.add_argument(
        "--settle_below",
        type=float,
        default=SETTLE_BELOW,
        help="label_streamlines' settle_below (0: every streamline within "
        "reach of bundles of both point orders encoded in both)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="label_streamlines' precision (what the encoder computes in)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --networks: times the encoder is timed in each precision",
    )
    add_reach_argument(
        parser,
        "label with the bundles' reaches (on: the default) and/or without "
        "them (off: every bundle considered for every streamline), each in its "
        "own process, on the same model and file",
    )
    parser.add_argument(
        "--reader",
        default="stream",
        choices=["stream", "nibabel"],
        help="how the large file is read: aae_tract.stream.TractogramStream "
        "(blocks of streamlines, as aae_tract_label reads) or nibabel's lazy "
        "loading (one streamline at a time)",
    )
    parser.add_argument(
        "--chunk_mib",
        type=float,
        nargs="+",
        default=None,
        help="label once per size (MiB) of the chunks a plain .trk is read in, "
        "each in its own process (default: aae_tract.stream.CHUNK_BYTES)",
    )
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--cli",
        action="store_true",
        help="also time aae_tract_label on the file and take its peak memory",
    )
    parser.add_argument("--label", nargs=2, metavar=("MODEL", "TRACTOGRAM"))
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="with --label: profile the labelling (cProfile) and print its N "
        "costliest calls, cumulative time, to stderr",
    )
    parser.add_argument(
        "--compare_labels",
        nargs=2,
        metavar=("A", "B"),
        help="print how many labels two saved runs (labels_*.npy beside the "
        "model) give differently",
    )
    parser.add_argument(
        "--truth",
        metavar="TRACTOGRAM",
        help="with --compare_labels: the phantom whole-brain tractogram both "
        "runs labelled; also print, for the labels that differ, the true "
        "label and the two runs' labels, with their counts",
    )
    parser.add_argument(
        "--networks",
        metavar="MODEL",
        help="only time the encoder's and the decoder's forward passes of MODEL, "
        "as Keras runs them and compiled with XLA",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="with --networks: TensorFlow's threads (0: its default)",
    )
    parser.add_argument("--label_cli", nargs=3, metavar=("MODEL", "TRACTOGRAM", "OUT"))
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.compare_labels:
        first, second = (np.load(p) for p in args.compare_labels)
        differ = int(np.sum(first != second)) if len(first) == len(second) else None
        print(
            f"{differ:,} of {len(first):,} labels differ"
            if differ is not None
            else f"different lengths: {len(first):,} and {len(second):,} labels"
        )
        if differ and args.truth:
            _print_changes(args.truth, first, second)
        return differ
    if args.networks:
        return _networks_only(args.networks, args)
    if args.label:
        return _label_only(*args.label, args)
    if args.label_cli:
        return _label_cli(*args.label_cli, args)

    from aae_tract.data import load_dataset, split_dataset
    from aae_tract.data_fetchers import (
        make_phantom,
        make_wholebrain,
    )
    from aae_tract.model import TractAAE

    root = Path(args.data_dir or tempfile.mkdtemp(prefix="aae_label_speed_"))
    if args.train_data == "label":
        from bench_label import PHANTOM, PHANTOM_TEST

        folder = make_phantom(root / "label_phantom", **PHANTOM)
        train_dirs = sorted(
            str(p)
            for p in folder.iterdir()
            if p.is_dir() and p.name not in PHANTOM_TEST
        )
        epochs = 40 if args.epochs is None else args.epochs
    else:
        train_dirs = make_phantom(
            root / "small", n_subjects=3, n_per_bundle=100, seed=1
        )
        epochs = 30 if args.epochs is None else args.epochs
    dataset = load_dataset(train_dirs, n_points=args.n_points)
    train, validation = split_dataset(
        dataset, val_fraction=1 / len(np.unique(dataset.subjects)), seed=0
    )
    model = TractAAE.from_dataset(train, epochs=epochs, n_points=args.n_points)
    model.fit(train, validation, verbose=0)

    per_bundle = int(np.ceil(0.7 * args.n_streamlines / 6))
    big = make_phantom(root / "big", n_subjects=1, n_per_bundle=per_bundle, seed=2)
    whole = make_wholebrain(big, root / "big_wholebrain", distractors=0.3)
    path = whole / "sub-01.trk"

    model_path = model.save(root / "model.keras")
    runs = {}
    if args.chunk_mib and len(args.chunk_mib) > 1:
        result = _chunk_runs(model_path, path, args)
    else:
        for reach in args.reach:
            runs[reach] = result = _label_run(model_path, path, args, reach)
            _report(result, args)
    if len(runs) == 2:
        on, off = (
            np.load(root / f"labels_{_run_name(_with(args, reach=[r]))}.npy")
            for r in ("on", "off")
        )
        changed = int(np.sum(on != off))
        ratio = runs["on"]["streamlines_per_s"] / runs["off"]["streamlines_per_s"]
        result = runs["on"] | {"reach_off": runs["off"], "labels_changed": changed}
        print(
            f"with the reaches / without: {ratio:.2f}x the streamlines/s; "
            f"{changed:,} of {len(on):,} labels differ"
        )
    if args.cli:
        _cli_runs(model, model_path, path, root, result, args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _with(args, **changes):
    """A copy of the parsed arguments with some of them changed."""
    return argparse.Namespace(**{**vars(args), **changes})


def _run_name(args):
    """Name of one labelling run's saved labels."""
    from aae_tract.label import DECODE_FROM, SETTLE_BELOW

    name = f"reach_{args.reach[0]}"
    if args.reject != "both":
        name += f"_{args.reject}"
    elif args.decode_from != DECODE_FROM:
        name += f"_decode_{args.decode_from:g}"
    if args.settle_below != SETTLE_BELOW:
        name += f"_settle_{args.settle_below:g}"
    if args.precision != "auto":
        name += f"_{args.precision}"
    return name + (f"_chunk_{args.chunk_mib[0]:g}" if args.chunk_mib else "")


def _chunk_runs(model_path, path, args):
    """Label ``path`` once per chunk size, each in its own process; print the
    rates and their ratio to the first size's."""
    runs = []
    for mib in args.chunk_mib:
        one = _with(args, chunk_mib=[mib])
        runs.append(_label_run(model_path, path, one, args.reach[0]))
        _report(runs[-1], one)
    first = runs[0]
    same = np.load(Path(model_path).parent / f"labels_{_run_name(one)}.npy")
    for run, mib in zip(runs, args.chunk_mib):
        one = _with(args, chunk_mib=[mib])
        labels = np.load(Path(model_path).parent / f"labels_{_run_name(one)}.npy")
        print(
            f"chunks of {mib:g} MiB: {run['streamlines_per_s']:,.0f} streamlines/s, "
            f"{run['streamlines_per_s'] / first['streamlines_per_s']:.2f}x the "
            f"{args.chunk_mib[0]:g} MiB rate; peak RSS {run['peak_rss_gib']:.2f} GiB; "
            f"{int(np.sum(labels != same)):,} labels differ from the "
            f"{args.chunk_mib[-1]:g} MiB run"
        )
    return first | {"chunks": runs}


def _label_run(model_path, path, args, reach):
    """Label ``path`` in a process of its own (so its peak memory is its own;
    it scores the labels against the phantom's truth beside ``path``)."""
    command = [sys.executable, __file__, "--label", str(model_path), str(path)]
    command += ["--batch_size", str(args.batch_size), "--reach", reach]
    command += ["--block", str(args.block)]
    command += ["--reader", args.reader]
    command += ["--reference_n", str(args.reference_n), "--reject", args.reject]
    command += ["--decode_from", str(args.decode_from)]
    command += ["--settle_below", str(args.settle_below)]
    command += ["--precision", args.precision]
    if args.chunk_mib:
        command += ["--chunk_mib", str(args.chunk_mib[0])]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["n_points"] = args.n_points
    return result


def _report(result, args):
    print(json.dumps(result, indent=1))
    reader = "by TractogramStream" if args.reader == "stream" else "lazily by nibabel"
    print(
        f"reach {result['reach']}: "
        f"labelled {result['n_streamlines']:,} streamlines read {reader} in "
        f"{result['seconds']:.0f} s: {result['streamlines_per_s']:,.0f} "
        f"streamlines/s ({result['in_memory_streamlines_per_s']:,.0f}/s on "
        f"{args.reference_n:,} in memory); peak RSS of the labelling process "
        f"{result['peak_rss_gib']:.2f} GiB (model loaded: "
        f"{result['rss_loaded_gib']:.2f} GiB; after the in-memory run, before "
        f"the lazy one: {result['rss_before_gib']:.2f} GiB; the file is "
        f"{result['file_gib']:.2f} GiB); accuracy {result['accuracy']:.4f}, "
        f"{result['other_share']:.0%} labelled other "
        f"({result['true_other_share']:.0%} truly); "
        f"{result['decoded_share']:.1%} decoded; "
        f"{result['encoded_per_streamline']:.2f} encodings a streamline, "
        f"in {result['precision']}; "
        f"the networks alone: encoder {result['encoder_streamlines_per_s']:,.0f}/s, "
        f"decoder {result['decoder_streamlines_per_s']:,.0f}/s"
    )


def _cli_runs(model, model_path, path, root, result, args):
    """Time aae_tract_label on the file, streamed and loaded whole."""
    result["cli"] = {}
    for mode in ("stream", "whole"):
        command = [sys.executable, __file__, "--label_cli", str(model_path)]
        command += [str(path), str(root / f"cli_{mode}")]
        command += ["--batch_size", str(args.batch_size), "--reject", args.reject]
        command += ["--decode_from", str(args.decode_from)]
        command += ["--precision", args.precision]
        command += ["--whole"] if mode == "whole" else []
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        result["cli"][mode] = run
        how = "loaded whole" if mode == "whole" else "streamed"
        print(
            f"aae_tract_label, file {how}"
            f" (start-up, read, label, write {len(model.bundle_names) + 1} "
            f"tractograms, no picture): {run['seconds']:.0f} s, "
            f"{run['n_streamlines'] / run['seconds']:,.0f} streamlines/s; "
            f"peak RSS {run['peak_rss_gib']:.2f} GiB"
        )


if __name__ == "__main__":
    main()
