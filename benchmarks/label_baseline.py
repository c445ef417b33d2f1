"""Bundle-recognition baseline: DIPY's RecoBundles, and the scoring.

The baseline half of the bundle-recognition benchmark. Our model labels every
streamline of a held-out subject's whole-brain tractogram with a bundle name
or ``"other"``; this module does the same with DIPY's RecoBundles
(Garyfallidis et al. 2018) on the same held-out subjects, and scores either
labelling against the truth:

- :func:`recobundles_labels`: whole-brain SLR of the target to the atlas (the
  training subjects' bundles, concatenated), then ``RecoBundles.recognize``
  once per model bundle; one label per target streamline;
- :func:`score_labels`: per-bundle precision / recall / F1, macro F1, the
  ``"other"`` (distractor) precision / recall, overall accuracy;
- :func:`mix_subject`: one subject's bundles as one shuffled tractogram with
  its true labels;
- :data:`SETTINGS`: named RecoBundles presets (``dipy_defaults``, ``tuned``,
  ``strict``).

Self-check on DIPY's embedded ``minimal_bundles`` (5 subjects x AF_L, CST_R,
CC_ForcepsMajor x 50 streamlines; offline)::

    python benchmarks/label_baseline.py --minimal            # sub_1 held out
    python benchmarks/label_baseline.py --minimal --all      # each in turn
    python benchmarks/label_baseline.py --minimal --all --out rb.json

Each held-out subject's three bundles are mixed into one tractogram; the other
four subjects' bundles are the model bundles; every preset is run and its
macro F1 and streamlines/s printed as a table.

Measured with DIPY 1.12.1, seed 0, every subject held out in turn (macro F1,
mean and worst subject): with whole-brain SLR, ``tuned`` 0.996 / 0.983,
``strict`` 0.861 / 0.485, ``dipy_defaults`` 0.633 / 0.272; without it
(``--no-register``, sub_1 and sub_5), ``tuned`` 1.000 and 0.997, ``strict``
0.265 and 0.304, ``dipy_defaults`` 0.228 and 0.250.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import inspect
import json
import logging
import sys
import time

import numpy as np

logger = logging.getLogger("label_baseline")

#: Label of a streamline that no bundle claimed.
OTHER = "other"

#: Points per streamline of DIPY's model clustering and pruning (hard-wired in
#: ``RecoBundles._cluster_model_bundle`` and ``_prune_what_not_in_model``).
_RB_NB_PTS = 20

#: Keyword arguments of ``RecoBundles.__init__`` that a preset records.
_INIT_KEYS = ("clust_thr", "greater_than", "less_than", "nb_pts")
#: Keyword arguments of ``RecoBundles.recognize`` that a preset records.
_RECOGNIZE_KEYS = (
    "model_clust_thr",
    "reduction_thr",
    "reduction_distance",
    "slr",
    "pruning_thr",
    "pruning_distance",
)
#: Never taken from ``settings``: set by :func:`recobundles_labels` itself.
_RESERVED = ("streamlines", "cluster_map", "rng", "verbose", "model_bundle")

#: How DIPY's RecoBundles tutorial (``doc/examples/bundle_extraction.py``)
#: calls ``whole_brain_slr``: affine, progressive. ``rm_small_clusters`` is
#: DIPY's default (50) and lowered only when a small tractogram leaves no
#: cluster that large (see :func:`whole_brain_register`).
WHOLE_BRAIN_SLR = {"x0": "affine", "progressive": True}


def _signature_defaults(func, keys):
    """Defaults of ``func``'s parameters ``keys`` (those that have one)."""
    params = inspect.signature(func).parameters
    return {
        k: params[k].default
        for k in keys
        if k in params and params[k].default is not inspect.Parameter.empty
    }


def _flow_default(name):
    """Default of ``name`` in DIPY's ``RecoBundlesFlow.run``, read from source.

    ``RecoBundles.recognize`` has no default ``model_clust_thr``; the value
    DIPY's own ``dipy_recobundles`` command uses is the nearest thing to one.
    The module is parsed, not imported: importing ``dipy.workflows`` pulls in
    TensorFlow (~10 s).
    """
    spec = importlib.util.find_spec("dipy.workflows.segment")
    if spec is None or spec.origin is None:
        raise RuntimeError("dipy.workflows.segment not found")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "RecoBundlesFlow":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "run":
                    args = fn.args.args
                    defaults = fn.args.defaults
                    for arg, default in zip(
                        args[len(args) - len(defaults) :], defaults
                    ):
                        if arg.arg == name:
                            return ast.literal_eval(default)
    raise RuntimeError(f"RecoBundlesFlow.run has no default for {name!r}")


def _dipy_defaults():
    """The ``dipy_defaults`` preset, read from the installed DIPY."""
    from dipy.segment.bundles import RecoBundles

    preset = _signature_defaults(RecoBundles.__init__, _INIT_KEYS)
    preset.update(_signature_defaults(RecoBundles.recognize, _RECOGNIZE_KEYS))
    if "model_clust_thr" not in preset:
        preset["model_clust_thr"] = _flow_default("model_clust_thr")
    return preset


def _make_settings():
    base = _dipy_defaults()
    return {
        "dipy_defaults": dict(base),
        "tuned": {**base, "reduction_thr": 25, "pruning_thr": 15, "slr": True},
        "strict": {**base, "reduction_thr": 10, "pruning_thr": 8},
    }


#: Named RecoBundles presets: keyword values for ``RecoBundles.__init__``
#: (``clust_thr``, ``greater_than``, ``less_than``, ``nb_pts``) and
#: ``RecoBundles.recognize`` (``model_clust_thr``, ``reduction_thr``,
#: ``reduction_distance``, ``slr``, ``pruning_thr``, ``pruning_distance``).
#:
#: - ``dipy_defaults``: the defaults of the installed DIPY's
#:   ``RecoBundles.__init__`` and ``RecoBundles.recognize``, read with
#:   :func:`inspect.signature` (DIPY 1.12: ``clust_thr=15``,
#:   ``greater_than=50``, ``less_than=1000000``, ``nb_pts=20``,
#:   ``reduction_thr=10``, ``slr=True``, ``pruning_thr=5``, both distances
#:   ``"mdf"``). ``recognize`` has no default ``model_clust_thr``; it is taken
#:   from DIPY's ``RecoBundlesFlow.run`` (``dipy_recobundles``), 2.5 in DIPY
#:   1.12.
#: - ``tuned``: ``reduction_thr=25``, ``pruning_thr=15``, ``slr=True``, the
#:   rest as ``dipy_defaults`` (measured to reach F1 1.0 on minimal_bundles).
#: - ``strict``: ``reduction_thr=10``, ``pruning_thr=8``, the rest as
#:   ``dipy_defaults``.
SETTINGS = _make_settings()


@contextlib.contextmanager
def _dipy_quiet(verbose):
    """Raise DIPY's logger to WARNING for the block unless ``verbose``."""
    dipy_logger = logging.getLogger("dipy")
    old = dipy_logger.level
    if not verbose:
        dipy_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dipy_logger.setLevel(old)


def _as_streamlines(streamlines):
    from dipy.tracking.streamline import Streamlines

    return Streamlines(streamlines)


def _concatenate(bundles):
    from dipy.tracking.streamline import Streamlines

    out = Streamlines()
    for b in bundles:
        out.extend(b)
    return out


def _split_settings(settings):
    """``settings`` as (RecoBundles.__init__ kwargs, recognize kwargs)."""
    from dipy.segment.bundles import RecoBundles

    init_params = set(inspect.signature(RecoBundles.__init__).parameters)
    rec_params = set(inspect.signature(RecoBundles.recognize).parameters)
    init_kw, rec_kw = {}, {}
    for key, value in settings.items():
        if key in _RESERVED or key == "self":
            raise ValueError(f"settings: {key!r} is set by recobundles_labels")
        if key in init_params:
            init_kw[key] = value
        elif key in rec_params:
            rec_kw[key] = value
        else:
            raise ValueError(
                f"settings: {key!r} is no keyword of RecoBundles.__init__ or "
                "RecoBundles.recognize"
            )
    if "model_clust_thr" not in rec_kw:
        raise ValueError("settings: 'model_clust_thr' is required")
    return init_kw, rec_kw


def whole_brain_register(atlas, target, *, rng_seed=0, options=None):
    """Bring ``target`` to ``atlas`` with DIPY's ``whole_brain_slr``.

    Called as in DIPY's RecoBundles tutorial (``x0="affine"``,
    ``progressive=True``, a seeded generator). When the moving or static
    tractogram is too small for DIPY's ``rm_small_clusters=50`` (no QuickBundles
    cluster that large, which DIPY reports as a ``ValueError``), the threshold
    is halved until clusters remain (logged as a warning).

    Parameters
    ----------
    atlas : Streamlines
        Static streamlines (RAS+ mm).
    target : Streamlines
        Moving streamlines (RAS+ mm).
    rng_seed : int, optional
        Seed of the generator handed to ``whole_brain_slr``.
    options : dict, optional
        More ``whole_brain_slr`` keywords, over :data:`WHOLE_BRAIN_SLR`.

    Returns
    -------
    moved : Streamlines
        ``target`` in the space of ``atlas``, same order.
    matrix : ndarray, shape (4, 4)
        The affine applied.
    """
    from dipy.align.streamlinear import whole_brain_slr

    kwargs = {**WHOLE_BRAIN_SLR, **(options or {})}
    rm_small = kwargs.pop(
        "rm_small_clusters",
        inspect.signature(whole_brain_slr).parameters["rm_small_clusters"].default,
    )
    while True:
        try:
            moved, matrix, _, _ = whole_brain_slr(
                atlas,
                target,
                rm_small_clusters=rm_small,
                rng=np.random.default_rng(rng_seed),
                **kwargs,
            )
            return moved, matrix
        except ValueError as e:
            if "rm_small_clusters" not in str(e) or rm_small <= 1:
                raise
            lower = max(1, rm_small // 2)
            logger.warning(
                "whole_brain_slr: no cluster of >= %d streamlines (%d static, "
                "%d moving); retrying with rm_small_clusters=%d",
                rm_small,
                len(atlas),
                len(target),
                lower,
            )
            rm_small = lower


def _pruned_distances(model_bundle, recognized, rec_kw, start_thr, rng):
    """Distance of each recognised streamline to its nearest model centroid.

    RecoBundles prunes by the distance (``pruning_distance``: MDF or MAM, in
    mm) between the model bundle's QuickBundles centroids and the clusters of
    the locally registered neighbourhood; it does not return it. This is the
    same distance per streamline: the recognised streamlines (as
    ``recognize`` returns them, in the model bundle's space after local SLR,
    resampled to 20 points) against the model centroids clustered as
    RecoBundles clusters them (thresholds ``start_thr + [model_clust_thr]``).
    """
    from dipy.segment.clustering import qbx_and_merge
    from dipy.tracking.distances import bundles_distances_mam, bundles_distances_mdf
    from dipy.tracking.streamline import set_number_of_points

    thresholds = list(start_thr) + [rec_kw["model_clust_thr"]]
    centroids = qbx_and_merge(
        model_bundle,
        thresholds,
        nb_pts=_RB_NB_PTS,
        select_randomly=500000,
        rng=rng,
    ).centroids
    points = set_number_of_points(recognized, nb_points=_RB_NB_PTS)
    if rec_kw.get("pruning_distance", "mdf").lower() == "mam":
        dist = bundles_distances_mam(centroids, points)
    else:
        dist = bundles_distances_mdf(centroids, points)
    dist = np.asarray(dist, dtype=float)
    dist[np.isnan(dist)] = np.inf
    return dist.min(axis=0)


def recobundles_labels(
    model_bundles,
    streamlines,
    *,
    settings,
    rng_seed=0,
    register=True,
    register_options=None,
    verbose=False,
):
    """Label every target streamline with DIPY's RecoBundles.

    Parameters
    ----------
    model_bundles : dict
        Bundle name -> streamlines (list of (N, 3) arrays or ArraySequence, RAS+
        mm): the training subjects' bundles concatenated, used as RecoBundles
        model bundles.
    streamlines : list or ArraySequence
        The target whole-brain tractogram's streamlines (RAS+ mm).
    settings : dict
        Keywords of ``RecoBundles.__init__`` (``clust_thr``, ...) and
        ``RecoBundles.recognize`` (``model_clust_thr`` required,
        ``reduction_thr``, ``pruning_thr``, ``slr``, ...); e.g. a value of
        :data:`SETTINGS`.
    rng_seed : int, optional
        Seed of the generators given to ``whole_brain_slr`` and RecoBundles.
    register : bool, optional
        First bring the target to the atlas (all model bundles concatenated)
        with ``whole_brain_slr`` (:func:`whole_brain_register`), as DIPY's
        RecoBundles tutorial does. False: the target is taken as already in the
        model bundles' space.
    register_options : dict, optional
        More ``whole_brain_slr`` keywords (see :func:`whole_brain_register`).
    verbose : bool, optional
        Let DIPY log (RecoBundles ``verbose=True``); quiet otherwise.

    Returns
    -------
    labels : ndarray of str, shape (len(streamlines),)
        The bundle recognised for each target streamline, or ``"other"`` when
        no bundle claimed it. A streamline claimed by several bundles gets the
        one whose pruning distance to it (MDF, or MAM with
        ``pruning_distance="mam"``, to the nearest model centroid, after that
        bundle's local SLR) is smallest; ties go to the bundle first in
        ``model_bundles``.
    seconds : float
        Wall time of registration and recognition (RecoBundles' clustering of
        the target, every ``recognize``, and the conflict resolution).

    Raises
    ------
    ValueError
        Empty ``model_bundles``, a bundle named ``"other"``, or a key of
        ``settings`` that is no RecoBundles keyword.
    """
    from dipy.segment.bundles import RecoBundles

    if not model_bundles:
        raise ValueError("model_bundles is empty")
    names = [str(n) for n in model_bundles]
    if OTHER in names:
        raise ValueError(f"a model bundle may not be called {OTHER!r}")
    init_kw, rec_kw = _split_settings(settings)
    target = _as_streamlines(streamlines)
    models = {str(n): _as_streamlines(b) for n, b in model_bundles.items()}
    n = len(target)
    width = max(len(OTHER), *(len(x) for x in names))
    labels = np.full(n, OTHER, dtype=f"<U{width}")
    if n == 0:
        return labels, 0.0
    best = np.full(n, np.inf)
    claims = np.zeros(n, dtype=np.intp)

    with _dipy_quiet(verbose):
        start = time.perf_counter()
        if register:
            atlas = _concatenate(models.values())
            target, matrix = whole_brain_register(
                atlas, target, rng_seed=rng_seed, options=register_options
            )
            logger.debug("whole_brain_slr matrix:\n%s", np.round(matrix, 3))
        rb = RecoBundles(
            target, rng=np.random.default_rng(rng_seed), verbose=verbose, **init_kw
        )
        # A generator of its own, so that RecoBundles draws what it would
        # draw without the distance computation in between.
        dist_rng = np.random.default_rng(rng_seed)
        for name in names:
            model = models[name]
            if len(model) == 0:
                logger.warning("model bundle %s is empty; skipped", name)
                continue
            recognized, idx = rb.recognize(model_bundle=model, **rec_kw)
            idx = np.asarray(idx, dtype=np.intp)
            logger.debug("%s: %d streamlines recognised", name, len(idx))
            if len(idx) == 0:
                continue
            dist = _pruned_distances(model, recognized, rec_kw, rb.start_thr, dist_rng)
            # Farthest first, so that of repeated indices the nearest is
            # written last.
            order = np.argsort(-dist, kind="stable")
            idx, dist = idx[order], dist[order]
            np.add.at(claims, idx, 1)
            better = dist < best[idx]
            labels[idx[better]] = name
            best[idx[better]] = dist[better]
        seconds = time.perf_counter() - start
    logger.debug(
        "%d of %d streamlines claimed by a bundle, %d by several (given to the "
        "nearest)",
        int(np.sum(claims > 0)),
        n,
        int(np.sum(claims > 1)),
    )
    return labels, seconds


def _ratio(num, den, empty):
    return float(num) / float(den) if den else empty


def _f1(p, r):
    if p is None or r is None or p + r == 0:
        return 0.0
    return 2.0 * p * r / (p + r)


def score_labels(true, pred, bundles):
    """Score a labelling against the truth.

    Parameters
    ----------
    true, pred : array-like of str, shape (n,)
        True and predicted label of each streamline: a bundle name or
        ``"other"``.
    bundles : sequence of str
        The bundles scored (not ``"other"``); macro F1 is their mean F1.

    Returns
    -------
    scores : dict
        JSON-able:

        - ``per_bundle``: name -> ``precision``, ``recall``, ``f1``,
          ``support`` (true count), ``predicted`` (predicted count). A bundle
          never predicted has precision 0, one with no true streamline recall
          0 (F1 is then 0), by convention;
        - ``macro_f1``: mean F1 over ``bundles``;
        - ``other``: ``precision``, ``recall`` (the share of true ``"other"``
          labelled ``"other"``: accuracy on distractors), ``support``,
          ``predicted``; a ratio with a zero denominator is None (e.g. recall
          when there are no distractors);
        - ``accuracy``: share of streamlines whose label is right (any label);
        - ``n``: number of streamlines;
        - ``confusion``: true label -> predicted label -> count (non-zero).

    Raises
    ------
    ValueError
        ``true`` and ``pred`` differ in length or are not 1-D, ``bundles`` is
        empty or names ``"other"``.
    """
    true = np.asarray(true, dtype=str)
    pred = np.asarray(pred, dtype=str)
    if true.ndim != 1 or pred.ndim != 1 or true.shape != pred.shape:
        raise ValueError(
            f"true and pred must be 1-D of equal length, got {true.shape} and "
            f"{pred.shape}"
        )
    bundles = [str(b) for b in bundles]
    if not bundles:
        raise ValueError("bundles is empty")
    if OTHER in bundles:
        raise ValueError(f"{OTHER!r} is not a bundle; it is scored separately")
    per_bundle = {}
    for b in bundles:
        is_true, is_pred = true == b, pred == b
        tp = int(np.sum(is_true & is_pred))
        p = _ratio(tp, is_pred.sum(), 0.0)
        r = _ratio(tp, is_true.sum(), 0.0)
        per_bundle[b] = {
            "precision": p,
            "recall": r,
            "f1": _f1(p, r),
            "support": int(is_true.sum()),
            "predicted": int(is_pred.sum()),
        }
    is_true, is_pred = true == OTHER, pred == OTHER
    tp = int(np.sum(is_true & is_pred))
    other = {
        "precision": _ratio(tp, is_pred.sum(), None),
        "recall": _ratio(tp, is_true.sum(), None),
        "support": int(is_true.sum()),
        "predicted": int(is_pred.sum()),
    }
    confusion = {}
    for t in np.unique(true):
        row = true == t
        values, counts = np.unique(pred[row], return_counts=True)
        confusion[str(t)] = {str(v): int(c) for v, c in zip(values, counts)}
    return {
        "per_bundle": per_bundle,
        "macro_f1": float(np.mean([s["f1"] for s in per_bundle.values()])),
        "other": other,
        "accuracy": float(np.mean(true == pred)) if len(true) else None,
        "n": int(len(true)),
        "confusion": confusion,
    }


def mix_subject(bundles_by_name, seed=0):
    """One subject's bundles as one shuffled tractogram with its true labels.

    Parameters
    ----------
    bundles_by_name : dict
        Bundle name -> streamlines (list of (N, 3) arrays or ArraySequence).
        A name may be ``"other"`` (distractors).
    seed : int, optional
        Seed of the shuffle.

    Returns
    -------
    streamlines : Streamlines
        All streamlines, shuffled.
    labels : ndarray of str
        The name of the bundle each came from.
    """
    names, parts = [], []
    for name, bundle in bundles_by_name.items():
        bundle = _as_streamlines(bundle)
        parts.append(bundle)
        names.extend([str(name)] * len(bundle))
    allsl = _concatenate(parts)
    labels = np.asarray(names, dtype=str)
    order = np.random.default_rng(seed).permutation(len(allsl))
    return allsl[order] if len(order) else allsl, labels[order]


# --------------------------------------------------------------------------
# Self-check on DIPY's minimal_bundles.


def load_minimal_bundles(data_home=None):
    """DIPY's embedded minimal_bundles, read into RAS+ mm.

    Parameters
    ----------
    data_home : str or Path, optional
        Data home of :func:`aae_tract.data_fetchers.fetch_minimal_bundles`
        (which extracts the zip shipped inside DIPY; offline).

    Returns
    -------
    data : dict
        Subject -> bundle name -> Streamlines.
    """
    from aae_tract.data_fetchers import fetch_minimal_bundles
    from aae_tract.data_fetchers.fetcher import (
        MINIMAL_BUNDLES_NAMES,
        MINIMAL_BUNDLES_SUBJECTS,
    )
    from aae_tract.io import load_bundle

    folder = fetch_minimal_bundles(data_home)
    return {
        s: {
            b: load_bundle(folder / s / f"{b}.trk").streamlines
            for b in MINIMAL_BUNDLES_NAMES
        }
        for s in MINIMAL_BUNDLES_SUBJECTS
    }


def run_minimal(
    held_out, presets, *, seed=0, register=True, data_home=None, verbose=False
):
    """Leave-one-subject-out RecoBundles on minimal_bundles.

    Parameters
    ----------
    held_out : sequence of str
        Subjects held out in turn (target); the others' bundles are the model
        bundles.
    presets : sequence of str
        Names in :data:`SETTINGS`.
    seed : int, optional
        Seed of the mixing and of :func:`recobundles_labels`.
    register : bool, optional
        Whole-brain SLR of each target to the atlas first.
    data_home : str or Path, optional
        Where minimal_bundles is extracted.
    verbose : bool, optional
        Let DIPY log.

    Returns
    -------
    rows : list of dict
        One per (subject, preset): ``subject``, ``preset``, ``n_streamlines``,
        ``seconds``, ``streamlines_per_s`` and the :func:`score_labels` dict
        under ``scores``.
    """
    data = load_minimal_bundles(data_home)
    rows = []
    for subject in held_out:
        if subject not in data:
            raise ValueError(f"unknown subject {subject!r}; have {sorted(data)}")
        bundles = list(data[subject])
        model_bundles = {
            b: _concatenate(data[s][b] for s in data if s != subject) for b in bundles
        }
        target, truth = mix_subject(data[subject], seed=seed)
        for preset in presets:
            pred, seconds = recobundles_labels(
                model_bundles,
                target,
                settings=SETTINGS[preset],
                rng_seed=seed,
                register=register,
                verbose=verbose,
            )
            scores = score_labels(truth, pred, bundles)
            rows.append(
                {
                    "subject": subject,
                    "preset": preset,
                    "n_streamlines": len(target),
                    "seconds": seconds,
                    "streamlines_per_s": len(target) / seconds if seconds else None,
                    "scores": scores,
                }
            )
            logger.info(
                "%s %-13s macro F1 %.3f  accuracy %.3f  %.2f s",
                subject,
                preset,
                scores["macro_f1"],
                scores["accuracy"],
                seconds,
            )
    return rows


def format_table(rows, presets):
    """Per-subject rows and a per-preset summary as text."""
    bundles = list(rows[0]["scores"]["per_bundle"]) if rows else []
    head = f"{'subject':<8} {'preset':<14} {'macro F1':>8} " + " ".join(
        f"{b[:15]:>15}" for b in bundles
    )
    head += f" {'accuracy':>8} {'sl/s':>8} {'s':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["scores"]
        lines.append(
            f"{r['subject']:<8} {r['preset']:<14} {s['macro_f1']:>8.3f} "
            + " ".join(f"{s['per_bundle'][b]['f1']:>15.3f}" for b in bundles)
            + f" {s['accuracy']:>8.3f} {r['streamlines_per_s']:>8.1f}"
            + f" {r['seconds']:>6.2f}"
        )
    lines += ["", f"{'preset':<14} {'macro F1 mean':>13} {'min':>6} {'sl/s':>8}"]
    for p in presets:
        sel = [r for r in rows if r["preset"] == p]
        if not sel:
            continue
        f1 = [r["scores"]["macro_f1"] for r in sel]
        rate = sum(r["n_streamlines"] for r in sel) / sum(r["seconds"] for r in sel)
        lines.append(f"{p:<14} {np.mean(f1):>13.3f} {np.min(f1):>6.3f} {rate:>8.1f}")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv=None):
    """Command line: ``python benchmarks/label_baseline.py --minimal``."""
    parser = argparse.ArgumentParser(
        description="RecoBundles baseline for bundle recognition.",
    )
    parser.add_argument(
        "--minimal",
        action="store_true",
        help="self-check on DIPY's embedded minimal_bundles",
    )
    parser.add_argument(
        "--all", action="store_true", help="hold out every subject in turn"
    )
    parser.add_argument(
        "--subjects", nargs="+", help="subjects held out (default: sub_1)"
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        choices=sorted(SETTINGS),
        default=list(SETTINGS),
        help="presets run (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-register", action="store_true", help="skip whole-brain SLR"
    )
    parser.add_argument("--data-home", help="aae_tract data home")
    parser.add_argument("--out", help="write the rows and presets as JSON here")
    parser.add_argument("--verbose", action="store_true", help="let DIPY log")
    args = parser.parse_args(argv)
    if not args.minimal:
        parser.error("nothing to do: pass --minimal")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from aae_tract.data_fetchers.fetcher import MINIMAL_BUNDLES_SUBJECTS

    if args.all:
        held_out = list(MINIMAL_BUNDLES_SUBJECTS)
    else:
        held_out = args.subjects or [MINIMAL_BUNDLES_SUBJECTS[0]]
    start = time.perf_counter()
    rows = run_minimal(
        held_out,
        args.presets,
        seed=args.seed,
        register=not args.no_register,
        data_home=args.data_home,
        verbose=args.verbose,
    )
    total = time.perf_counter() - start
    print(format_table(rows, args.presets))
    print(f"\ntotal {total:.1f} s")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(
                _json_safe(
                    {
                        "dataset": "minimal_bundles",
                        "held_out": held_out,
                        "register": not args.no_register,
                        "seed": args.seed,
                        "settings": {p: SETTINGS[p] for p in args.presets},
                        "whole_brain_slr": WHOLE_BRAIN_SLR,
                        "rows": rows,
                        "total_seconds": total,
                    }
                ),
                f,
                indent=2,
            )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- the model's side, shared by bench_label.py and bench_label_speed.py ------


def add_reach_argument(parser, help):
    """``--reach on off``: label with the bundles' reaches and/or without."""
    parser.add_argument(
        "--reach", nargs="+", default=["on"], choices=["on", "off"], help=help
    )


def drop_reaches(labeller):
    """Remove every bundle's reach from a stored labeller (in place): every
    bundle is then considered for every streamline, as labellers stored
    before reaches existed do."""
    for entry in labeller["bundles"].values():
        entry.pop("max_ref_mm", None)
    return labeller
