"""Bank sampling's noise, set from how new a new subject's streamlines are.

"Bank" sampling (:func:`aae_tract.generate.sample_latent`) moves training
codes to new subjects and adds noise shaped like the bundle's codes. How far
its streamlines then lie from the training streamlines depends on the data:
in a common space (``aae_tract_train`` registers the subjects by default) a
new subject's streamlines lie much nearer the training subjects' than in the
subjects' own spaces, while the bundle's codes spread about as widely; and
within a bundle, whole streamlines vary less than fragments, which differ in
where along the bundle they lie. One relative noise for every model and
length therefore gives near copies on some data and streamlines newer than a
new subject's on other data, or off the bundle at its longest lengths
(doc/benchmarks.md, "Bank noise set from the training subjects").

The calibration (:meth:`aae_tract.model.TractAAE.calibrate`) sets it per
bundle and length band (quantiles of the training lengths) from the
training subjects alone:

1. the distance of a new subject: the median MDF from each streamline of the
   band of one training subject to its nearest streamline of ``k`` other
   subjects, for two values of ``k``, extrapolated (a power law in ``k``)
   to all the training subjects, as many as a held-out subject is compared
   with (:func:`new_subject_distance`);
2. the noise at which the median MDF from bank-sampled streamlines of the
   band's lengths (the default generation: new subjects, sampled texture)
   to the nearest training streamline is :data:`NOVELTY_TARGET` times that
   distance, interpolated on :data:`NOISE_GRID` with the same draws at
   every noise;
3. below the first noise of the grid at which more of them crumple than
   :data:`ROUGH_LIMIT` (against the bundle's training streamlines), or than
   without noise where the decoder crumples more of them by itself.

Generation interpolates the noise between the bands' median lengths
(:func:`noise_at`). The model file keeps the values and what they were read
from in each bundle's latent bank (key :data:`BANK_KEY`); a model without
them uses the fixed default (:func:`aae_tract.generate.default_noise`), as
does the noise shaped near the target (``noise_scope="target"``).
"""

import logging

import numpy as np

from aae_tract.streamlines import nearest_mdf

logger = logging.getLogger(__name__)

__all__ = [
    "BANK_KEY",
    "NOISE_GRID",
    "NOVELTY_TARGET",
    "calibrate_noise",
    "calibrated_noise",
    "length_bands",
    "new_subject_distance",
    "noise_at",
]

#: Key of the calibrated noise in a bundle's latent bank.
BANK_KEY = "noise"
#: Median distance of bank-sampled streamlines to the training ones, as a
#: share of a new subject's own (a ``novelty_ratio`` of 0.9 where the
#: estimate is right): a little nearer the training data than unseen real
#: streamlines, so that the new subjects' codes stay on the bundle.
NOVELTY_TARGET = 0.9
#: Relative noises the generated distance is measured at (interpolated in
#: between; a band whose streamlines lie farther than the goal even with no
#: noise gets 0, one that needs more than the last gets the last).
NOISE_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6)
#: Largest share of crumpled streamlines (:func:`aae_tract.metrics.rough_fraction`
#: against the bundle's training streamlines, as ``evaluate`` measures it)
#: the noise may give a band, or the share without noise if larger: the
#: noise stays below the first level of the grid that gives more (1 of the
#: :data:`N_GENERATED` streamlines; ``quality.py`` asks at most 0.01 of
#: each bundle's generated streamlines).
ROUGH_LIMIT = 0.01
#: Length bands of a bundle (quantiles of its training lengths), as
#: ``band_precision`` compares them.
N_BANDS = 5
#: Streamlines generated per band and noise of the grid.
N_GENERATED = 100
#: Fewest streamlines of a band for its own noise (fewer: the band takes
#: the noise interpolated from the others).
MIN_BAND = 20
#: At most this many streamlines per training subject and bundle (a seeded
#: sample) in every reference set, so that the sets compared hold the same
#: density of streamlines per subject; fewer with many subjects, so that all
#: of them hold at most :data:`MAX_REFERENCE` (as many training streamlines
#: as ``novelty_ratio`` compares with).
PER_SUBJECT = 300
MAX_REFERENCE = 5000
#: At most this many subjects left out in turn, and at most this many
#: subjects in all (a seeded sample; the extrapolation still goes to all).
MAX_LEFT_OUT = 8
MAX_SUBJECTS = 16
#: Fewest training subjects for the calibration: with two, a left-out
#: subject has one other, and its distance to one subject says too little of
#: its distance to two (nothing to extrapolate from); the fixed default
#: applies.
MIN_SUBJECTS = 3
#: Sets of other subjects drawn per left-out subject when they are not all
#: the others.
DRAWS = 3


def _median_nearest(streamlines, reference):
    return float(np.median(nearest_mdf(streamlines, reference)[0]))


def _per_subject(subjects, rng, cap):
    """Rows of each subject, at most ``cap`` each and :data:`MAX_REFERENCE`
    in all (seeded)."""
    cap = max(1, min(cap, MAX_REFERENCE // max(1, len(np.unique(subjects)))))
    rows = {}
    for s in np.unique(subjects):
        idx = np.flatnonzero(subjects == s)
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        rows[s] = idx
    return rows


def new_subject_distance(x, subjects, *, query=None, rng=0, per_subject=PER_SUBJECT):
    """How far a new subject's streamlines lie from the training subjects'.

    Parameters
    ----------
    x : ndarray, shape (N, P, 3)
        One bundle's training streamlines (mm).
    subjects : array_like, shape (N,)
        Each streamline's subject.
    query : ndarray of bool, shape (N,), optional
        The streamlines whose distance is measured (e.g. one length band;
        default all); the reference sets hold all the other subjects'.
    rng : numpy.random.Generator or int
        Random source of the samples.
    per_subject : int
        At most this many streamlines of each subject.

    Returns
    -------
    distance : float or None
        The median MDF (mm) from a left-out subject's streamlines to their
        nearest streamline of the other subjects, averaged over the left-out
        subjects and extrapolated from ``k`` of the others to all (a power
        law through two values of ``k``: about half and all of the others);
        None with fewer than 2 subjects with streamlines in ``query``.
    by_k : dict
        ``k`` -> the mean over the left-out subjects of that median.
    """
    rng = np.random.default_rng(rng)
    x = np.asarray(x)
    subjects = np.asarray(subjects).astype(str)
    query = np.ones(len(x), bool) if query is None else np.asarray(query, bool)
    rows = _per_subject(subjects, rng, per_subject)
    names = list(rows)
    n = len(names)
    if n > MAX_SUBJECTS:
        names = list(rng.choice(names, MAX_SUBJECTS, replace=False))
    used = len(names)
    left_out = [s for s in names if query[rows[s]].any()]
    if used < 2 or not left_out:
        return None, {}
    if len(left_out) > MAX_LEFT_OUT:
        left_out = list(rng.choice(left_out, MAX_LEFT_OUT, replace=False))
    ks = sorted({max(1, (used - 1) // 2), used - 1})
    by_k = {}
    for k in ks:
        values = []
        # every set of all the others is the same one; fewer are drawn a few
        # times, their distance varying with the subjects drawn
        draws = 1 if k == used - 1 else DRAWS
        for out in left_out:
            mine = rows[out][query[rows[out]]]
            others = [s for s in names if s != out]
            for _ in range(draws):
                ref = rng.choice(len(others), k, replace=False)
                idx = np.concatenate([rows[others[i]] for i in ref])
                values.append(_median_nearest(x[mine], x[idx]))
        by_k[k] = float(np.mean(values))
    if len(ks) == 1:
        # two subjects: one other, nothing to extrapolate from
        return by_k[ks[0]], by_k
    (k1, d1), (k2, d2) = sorted(by_k.items())
    if d1 <= 0 or d2 <= 0:
        return by_k[ks[-1]], by_k
    # more subjects to compare with never put the nearest one farther: a
    # rise between the two (noisy draws of few subjects) is taken as flat
    power = min(float(np.log(d2 / d1) / np.log(k2 / k1)), 0.0)
    return float(d2 * (n / k2) ** power), by_k


def length_bands(lengths, of=None, n_bands=N_BANDS):
    """Band of each length of ``of`` (default ``lengths`` themselves), the
    bands being the ``n_bands`` quantile ranges of ``lengths``."""
    edges = np.quantile(lengths, np.linspace(0, 1, n_bands + 1))
    of = lengths if of is None else of
    return np.clip(np.searchsorted(edges[1:-1], of, side="right"), 0, n_bands - 1)


def calibrate_noise(model, bundle, x, subjects, attribute, *, rng=0, candidates=None):
    """The relative noise of bank sampling for one bundle, per length band.

    Parameters
    ----------
    model : TractAAE
        Calibrated up to the latent bank of ``bundle``.
    bundle : str
    x : ndarray, shape (N, P, 3)
        The bundle's training streamlines (mm, as the model prepares them).
    subjects : array_like, shape (N,)
    attribute : array_like, shape (N,)
        Their attribute values (lengths): the bands are its quantiles, and
        the lengths asked of the generated streamlines of a band are drawn
        from its streamlines'.
    rng : numpy.random.Generator or int
    candidates : int, optional
        ``candidates`` of the generation measured
        (:func:`aae_tract.generate.sample_latent`); None: its default.

    Returns
    -------
    dict or None
        Per band (lists): ``at`` (its median length), ``value`` (the noise),
        ``reference_mm`` (a new subject's distance,
        :func:`new_subject_distance`), ``goal_mm``, ``distance_mm`` (the
        generated streamlines' median distance at each noise of ``grid``),
        ``rough`` (their share of crumpled streamlines at each noise; the
        noise stops below the first over :data:`ROUGH_LIMIT` and the share
        without noise);
        and ``target`` (:data:`NOVELTY_TARGET`), ``grid``, ``candidates``.
        None with fewer
        than :data:`MIN_SUBJECTS` subjects, or no band with
        :data:`MIN_BAND` streamlines of 2 of them.
    """
    from aae_tract.generate import DEFAULT_CANDIDATES, draw_streamlines
    from aae_tract.metrics import rough_fraction

    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    rng = np.random.default_rng(rng)
    x = np.asarray(x)
    subjects = np.asarray(subjects).astype(str)
    attribute = np.asarray(attribute, dtype="float64")
    if len(np.unique(subjects)) < MIN_SUBJECTS:
        return None
    rows = _per_subject(subjects, rng, PER_SUBJECT)
    train = x[np.sort(np.concatenate(list(rows.values())))]
    band = length_bands(attribute)
    record = {key: [] for key in ("at", "value", "reference_mm", "goal_mm")}
    record["distance_mm"], record["rough"] = [], []
    for b in range(N_BANDS):
        mask = band == b
        if mask.sum() < MIN_BAND or len(np.unique(subjects[mask])) < 2:
            continue
        reference, _ = new_subject_distance(x, subjects, query=mask, rng=rng)
        if reference is None:
            continue
        targets = rng.choice(attribute[mask], N_GENERATED)
        seed = int(rng.integers(2**31))
        distance, rough = [], []
        for noise in NOISE_GRID:
            # the same draws at every noise: the distance grows smoothly
            _, generated = draw_streamlines(
                model,
                bundle,
                targets,
                rng=seed,
                sampling="bank",
                noise=noise,
                candidates=candidates,
            )
            distance.append(_median_nearest(generated, train))
            rough.append(rough_fraction(generated, train))
        if not np.all(np.isfinite(distance)):
            continue  # a decoder that diverges there: the band takes its neighbours'
        goal = NOVELTY_TARGET * reference
        rising = np.maximum.accumulate(distance)
        value = float(np.interp(goal, rising, NOISE_GRID))
        # no more than the last noise of the grid before the noise crumples
        # streamlines (more than the limit, or than the decoder does without)
        rough = np.nan_to_num(np.asarray(rough, dtype=float))
        crumpled = np.flatnonzero(rough > max(ROUGH_LIMIT, rough[0]))
        if len(crumpled):
            value = min(value, NOISE_GRID[crumpled[0] - 1])
        record["at"].append(round(float(np.median(attribute[mask])), 4))
        record["value"].append(round(value, 4))
        record["rough"].append([round(float(r), 4) for r in rough])
        record["reference_mm"].append(round(reference, 4))
        record["goal_mm"].append(round(goal, 4))
        record["distance_mm"].append([round(d, 4) for d in distance])
    if not record["at"]:
        return None
    return {
        **record,
        "target": NOVELTY_TARGET,
        "grid": list(NOISE_GRID),
        "candidates": int(candidates),
    }


def calibrated_noise(model, bundle):
    """The calibration's noise record of a bundle (:func:`calibrate_noise`),
    or None (a model file from before it, a bundle with fewer than three
    training subjects, or a model conditioned on a per-subject attribute
    such as age, whose calibration sets none)."""
    if model.config.ar_level == "subject":
        return None
    record = (model.metadata.latent_bank.get(bundle) or {}).get(BANK_KEY)
    return record or None


def noise_at(record, targets):
    """The calibrated noise at each target value: interpolated between the
    bands' median lengths, the end bands' beyond them.

    Parameters
    ----------
    record : dict
        A record of :func:`calibrate_noise`.
    targets : array_like of float, shape (N,)

    Returns
    -------
    ndarray of float, shape (N,)
    """
    return np.interp(
        np.asarray(targets, dtype="float64"),
        np.asarray(record["at"], dtype="float64"),
        np.asarray(record["value"], dtype="float64"),
    )
