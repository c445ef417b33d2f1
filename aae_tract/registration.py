"""Several subjects' bundles in one common space, with DIPY's streamline registration.

Real bundles of several subjects come in each subject's own space; a model
trained on them unaligned learns the offsets between subjects as "style".
:func:`register_groupwise` brings the subjects of a training set together with
DIPY's groupwise streamline linear registration (``groupwise_slr``), one
transform per subject that moves all of its bundles; :func:`register_to_template`
registers each subject to a given template tractogram (SLR) instead. The
result is a :class:`Registration`: the 4x4 transform of every training subject
(native RAS+ mm -> common space) and a small atlas of common-space streamlines
per bundle, to which subjects the model has not seen are registered
(:meth:`Registration.align`).

The default transform is rigid, which keeps streamline lengths (the default
attribute); ``"affine"`` fits better but rescales lengths, and the dataset's
lengths are rescaled with it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from aae_tract.errors import AAETractError, DatasetError
from aae_tract.rows import (
    StreamlineRows,
    apply_affine,
    as_rows,
    is_lazy,
    iter_blocks,
    take,
)

logger = logging.getLogger(__name__)

__all__ = [
    "REGISTER_CHOICES",
    "TRANSFORMS",
    "Registration",
    "check_register",
    "file_placer",
    "RegistrationError",
    "register_groupwise",
    "register_split",
    "register_to_template",
    "transform_streamlines",
]

#: Transform models of DIPY's SLR offered here. Rigid keeps lengths.
TRANSFORMS = ("rigid", "affine")

#: ``aae_tract_train --register`` words; anything else is a template file.
REGISTER_CHOICES = ("groupwise", "none")

#: Points per streamline used to estimate transforms (DIPY's default).
N_POINTS = 20

#: Streamlines per bundle and subject used to estimate a transform.
SAMPLE_PER_BUNDLE = 200

#: Common-space streamlines per bundle kept in the model for new subjects.
ATLAS_PER_BUNDLE = 64

#: QuickBundles threshold (mm) of the groupwise registration: streamlines
#: closer than this are registered as one centroid. Larger is faster; at 8,
#: copies of one subject moved apart no longer come back onto each other.
QBX_THRESHOLD = 6.0

#: Spread ratio (RMS distance to the centre) beyond which two sets of
#: streamlines are taken to be in different spaces or units.
MAX_SPREAD_RATIO = 2.0


class RegistrationError(AAETractError, RuntimeError):
    """Registration failed: no convergence, nothing in common, another space."""


@dataclasses.dataclass
class Registration:
    """How a model's training subjects were brought into its common space.

    Attributes
    ----------
    kind : str
        ``"groupwise"``, ``"template"`` or ``"none"`` (one subject, or
        registration switched off).
    transform : str
        ``"rigid"`` or ``"affine"``.
    transforms : dict of str to ndarray (4, 4)
        Per training subject, native RAS+ mm -> common space.
    atlas : dict of str to ndarray (k, 20, 3)
        Per bundle, common-space streamlines new subjects are registered to.
    template : str or None
        The template file (``kind == "template"``).
    bundles : list of str
        Bundles the transforms were estimated on (those every subject has).
    seed : int
        Seed of the random streamline selection.
    """

    kind: str
    transform: str = "rigid"
    transforms: dict = dataclasses.field(default_factory=dict)
    atlas: dict = dataclasses.field(default_factory=dict)
    template: str | None = None
    bundles: list = dataclasses.field(default_factory=list)
    seed: int = 0

    @property
    def active(self):
        """Whether streamlines are moved at all."""
        return self.kind != "none"

    def describe(self):
        """One line for logs and reports."""
        if not self.active:
            return "no registration"
        where = (
            f"to the template {self.template}"
            if self.kind == "template"
            else "groupwise (DIPY groupwise_slr)"
        )
        note = ", lengths rescaled" if self.transform == "affine" else ""
        return (
            f"{self.transform} {where}, {len(self.transforms)} subjects{note}; "
            f"new subjects: SLR to the common-space bundles"
        )

    # --------------------------------------------------------------- storage

    def to_dict(self):
        """JSON-able form (model metadata)."""
        return {
            "kind": self.kind,
            "transform": self.transform,
            "transforms": {
                s: np.round(np.asarray(m, float), 6).tolist()
                for s, m in self.transforms.items()
            },
            "atlas": {
                b: np.round(np.asarray(a, float), 2).tolist()
                for b, a in self.atlas.items()
            },
            "template": self.template,
            "bundles": list(self.bundles),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, payload, *, source="model file"):
        """Checked inverse of :meth:`to_dict`; ValueError naming the problem."""
        if not isinstance(payload, dict):
            raise ValueError(f"{source}: registration must be an object")
        kind = payload.get("kind")
        if kind not in ("groupwise", "template", "none"):
            raise ValueError(f"{source}: registration kind {kind!r}")
        transform = payload.get("transform", "rigid")
        if transform not in TRANSFORMS:
            raise ValueError(f"{source}: registration transform {transform!r}")
        transforms = {}
        for subject, matrix in dict(payload.get("transforms") or {}).items():
            m = _finite(matrix, f"{source}: transform of {subject}")
            if m.shape != (4, 4) or not np.allclose(m[3], [0, 0, 0, 1]):
                raise ValueError(
                    f"{source}: transform of {subject} is not a 4x4 affine"
                )
            transforms[str(subject)] = m
        atlas = {}
        for bundle, lines in dict(payload.get("atlas") or {}).items():
            a = _finite(lines, f"{source}: registration atlas of {bundle}")
            if a.ndim != 3 or a.shape[2] != 3 or len(a) == 0:
                raise ValueError(
                    f"{source}: registration atlas of {bundle} has shape {a.shape}"
                )
            atlas[str(bundle)] = a.astype(np.float32)
        template = payload.get("template")
        return cls(
            kind=kind,
            transform=transform,
            transforms=transforms,
            atlas=atlas,
            template=None if template is None else str(template),
            bundles=[str(b) for b in payload.get("bundles") or []],
            seed=int(payload.get("seed", 0)),
        )

    # ----------------------------------------------------------- transforms

    def matrix(self, subject):
        """The 4x4 transform of training subject ``subject`` (native -> common).

        Raises
        ------
        RegistrationError
            ``subject`` is not a training subject.
        """
        if not self.active:
            return np.eye(4)
        if subject not in self.transforms:
            known = ", ".join(sorted(self.transforms)) or "none"
            raise RegistrationError(
                f"unknown subject {subject!r}: the model has transforms for {known}"
            )
        return np.asarray(self.transforms[subject], dtype=float)

    def to_common(self, streamlines, subject):
        """Streamlines of training subject ``subject`` in the common space."""
        return transform_streamlines(streamlines, self.matrix(subject))

    def to_subject(self, streamlines, subject):
        """Common-space streamlines in training subject ``subject``'s native space."""
        return transform_streamlines(streamlines, np.linalg.inv(self.matrix(subject)))

    def register_streamlines(self, streamlines, bundles, *, name="streamlines"):
        """The transform that brings one new subject's streamlines to the atlas.

        Parameters
        ----------
        streamlines : sequence of (n, 3) arrays, ndarray (N, P, 3) or StreamlineRows
            All bundles of one subject, RAS+ mm (only a sample is read).
        bundles : sequence of str
            Bundle of each streamline.
        name : str
            What to call them in messages (a subject, a file).

        Returns
        -------
        ndarray (4, 4)
        """
        if not self.active:
            return np.eye(4)
        bundles = np.asarray([str(b) for b in bundles])
        usable = [b for b in self.atlas if np.any(bundles == b)]
        if not usable:
            raise RegistrationError(
                f"{name}: none of its bundles ({', '.join(sorted(set(bundles)))}) "
                "is in the model's common-space atlas; nothing to register to"
            )
        rng = np.random.default_rng(self.seed)
        moving = _sample(streamlines, bundles, usable, rng)
        static = np.concatenate([self.atlas[b] for b in usable])
        return _slr(static, moving, self.transform, name=name, what="the model's atlas")

    def register_tractogram(self, streamlines, *, name="tractogram"):
        """The transform that brings an unlabelled tractogram to the atlas.

        The streamlines' bundles are not known (a whole-brain tractogram to
        label), so a seeded sample of them, at most
        ``SAMPLE_PER_BUNDLE`` per atlas bundle, is registered to all of the
        atlas' bundles together (SLR, as DIPY's whole-brain SLR does);
        streamlines shorter than the shortest atlas streamline's half are
        left out of the sample (fragments and spurious short tracks).

        Parameters
        ----------
        streamlines : sequence of (n, 3) arrays, ndarray (N, P, 3) or TractogramStream
            RAS+ mm.
        name : str
            What to call them in messages.

        Returns
        -------
        ndarray (4, 4)
        """
        from aae_tract.streamlines import resample, streamline_lengths

        if not self.active:
            return np.eye(4)
        static = np.concatenate([np.asarray(a) for a in self.atlas.values()])
        rng = np.random.default_rng(self.seed)
        n = len(streamlines)
        want = SAMPLE_PER_BUNDLE * len(self.atlas)
        rows = np.sort(rng.choice(n, min(n, 4 * want), replace=False))
        if hasattr(streamlines, "take"):  # a TractogramStream: one pass
            picked = resample(streamlines.take(rows), N_POINTS)
        else:
            picked = resample([streamlines[i] for i in rows], N_POINTS)
        lengths = streamline_lengths(picked)
        shortest = float(streamline_lengths(static).min())
        picked = picked[lengths >= 0.5 * shortest][:want]
        if len(picked) < 10:
            raise RegistrationError(
                f"{name}: fewer than 10 streamlines long enough to register it "
                "to the model's common-space bundles"
            )
        return _slr(static, picked, self.transform, name=name, what="the model's atlas")

    def place(self, streamlines, bundle, *, subject=None, space=None, name=None):
        """Streamlines of one subject's ``bundle`` in the model's common space,
        or in training subject ``space``'s native space.

        A training subject (``subject`` with a stored transform) uses it; other
        streamlines are registered to the atlas with SLR.

        Parameters
        ----------
        streamlines : sequence of (n, 3) arrays
            RAS+ mm, in ``subject``'s native space.
        bundle : str
        subject : str, optional
        space : str, optional
            None: the common space; a training subject: its native space.
        name : str, optional
            What to call the streamlines in messages.

        Returns
        -------
        list of (n, 3) float32 arrays
        """
        if not self.active:
            return [np.asarray(s, np.float32) for s in streamlines]
        if subject is not None and subject in self.transforms:
            matrix = self.matrix(subject)
        else:
            matrix = self.register_streamlines(
                streamlines, [bundle] * len(streamlines), name=name or str(subject)
            )
        if space is not None:
            matrix = np.linalg.inv(self.matrix(space)) @ matrix
        return transform_streamlines(streamlines, matrix)

    def align(self, dataset, *, use_stored=False, orient_refs=None):
        """``dataset`` moved into the common space, subject by subject.

        Parameters
        ----------
        dataset : StreamlineDataset
            In native spaces.
        use_stored : bool, optional
            Subjects with a stored transform (the model's own training
            subjects, read from the same files) use it; the others, and every
            subject when False, are registered to the atlas with SLR.
        orient_refs : dict, optional
            Common-space orientation references (the model's) to orient the
            moved streamlines against; default: the dataset's own.

        Returns
        -------
        StreamlineDataset
            Its ``registration`` this one.
        """
        if not self.active or len(dataset) == 0:
            return dataset
        if orient_refs is not None:
            dataset = dataset.subset(np.arange(len(dataset)))
            dataset.orient_refs = dict(orient_refs)
        matrices, new = {}, []
        for subject in np.unique(dataset.subjects):
            if use_stored and subject in self.transforms:
                matrices[subject] = self.matrix(subject)
                continue
            mask = dataset.subjects == subject
            matrices[subject] = self.register_streamlines(
                take(dataset.x, mask),
                np.asarray(dataset.bundle_names)[dataset.labels[mask]],
                name=f"subject {subject}",
            )
            new.append(str(subject))
        if new:
            logger.info(
                "Brought %d subject(s) into the model's common space (%s SLR "
                "to its common-space bundles): %s",
                len(new),
                self.transform,
                ", ".join(new[:8]) + " ..." * (len(new) > 8),
            )
        out = transform_dataset(dataset, matrices, affine=self.transform == "affine")
        out.registration = self
        return out


# ---------------------------------------------------------------------------
# building a registration


def register_groupwise(dataset, *, transform="rigid", seed=0, max_iter=20):
    """Bring every subject of ``dataset`` into one common space, groupwise.

    Each subject's bundles (those every subject has) are pooled and DIPY's
    ``groupwise_slr`` finds one transform per subject; the common space is
    then moved back to the subjects' mean position, so it overlaps their
    native spaces.

    Parameters
    ----------
    dataset : StreamlineDataset
        Training streamlines of several subjects (native RAS+ mm).
    transform : {"rigid", "affine"}, optional
        Rigid keeps lengths; affine rescales them (the dataset's lengths, and
        a length attribute, are rescaled to match).
    seed : int, optional
        Seed of the random streamline selection.
    max_iter : int, optional
        Groupwise iterations at most.

    Returns
    -------
    StreamlineDataset
        The registered dataset, its ``registration`` a :class:`Registration`
        (kind ``"none"`` for a single subject: nothing to register).

    Raises
    ------
    RegistrationError
        No bundle common to all subjects, or a registration that makes the
        subjects farther apart than they were.
    """
    _check_transform(transform)
    subjects = [str(s) for s in np.unique(dataset.subjects)]
    if len(subjects) < 2:
        logger.info(
            "One subject (%s): nothing to register", subjects[0] if subjects else "-"
        )
        out = dataset.subset(np.arange(len(dataset)))
        out.registration = Registration("none", transform, seed=seed)
        return out
    bundles = _common_bundles(dataset, subjects)
    rng = np.random.default_rng(seed)
    samples = [_subject_sample(dataset, s, bundles, rng) for s in subjects]
    from dipy.align.streamlinear import groupwise_slr

    started = time.perf_counter()
    # groupwise_slr draws its pairs from NumPy's global generator: seed it
    # for a repeatable result, and give it back its state afterwards
    state = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(seed)  # noqa: NPY002
        _, matrices, distances = groupwise_slr(
            [list(s) for s in samples],
            x0=transform,
            max_iter=max_iter,
            qbx_thr=(QBX_THRESHOLD,),
            rng=np.random.default_rng(seed),
        )
    finally:
        np.random.set_state(state)  # noqa: NPY002
    centre = np.mean([s.reshape(-1, 3).mean(axis=0) for s in samples], axis=0)
    shift = np.eye(4)
    shift[:3, 3] = centre
    matrices = {s: shift @ np.asarray(m, float) for s, m in zip(subjects, matrices)}
    _check_groupwise(distances, matrices)
    before, after = _spread_between(samples, [matrices[s] for s in subjects])
    if after > 1.05 * before + 0.5:
        raise RegistrationError(
            f"groupwise registration did not converge: the subjects are farther "
            f"apart after it (median nearest-MDF {after:.1f} mm) than before "
            f"({before:.1f} mm); check that every subject's bundles are in RAS+ mm"
        )
    logger.info(
        "Registered %d subjects groupwise (%s, DIPY groupwise_slr on %s, %d "
        "iterations, %.1f s): median distance to the other subjects %.1f -> "
        "%.1f mm",
        len(subjects),
        transform,
        ", ".join(bundles),
        len(distances) - 1,
        time.perf_counter() - started,
        before,
        after,
    )
    registration = Registration(
        "groupwise", transform, matrices, bundles=bundles, seed=seed
    )
    return _finish(dataset, registration)


def register_to_template(
    dataset, template, *, transform="rigid", seed=0, reference=None
):
    """Register each subject of ``dataset`` to a template tractogram (SLR).

    Parameters
    ----------
    dataset : StreamlineDataset
        Training streamlines (native RAS+ mm).
    template : str or Path
        A tractogram, or a folder of bundle files (``<BUNDLE>.trk``); bundle
        files named as the dataset's bundles are matched to them, otherwise
        every streamline is used. Its space becomes the common space.
    transform : {"rigid", "affine"}, optional
        As in :func:`register_groupwise`.
    seed : int, optional
        Seed of the random streamline selection.
    reference : str, optional
        Reference anatomy when the template is a ``.tck``/``.trx`` file.

    Returns
    -------
    StreamlineDataset
        Registered, in the template's space, with its ``registration``.

    Raises
    ------
    RegistrationError
        A template in another space or unit, or one that shares nothing with
        a subject.
    TractogramError
        The template cannot be read.
    """
    _check_transform(transform)
    static, space = _template_streamlines(template, dataset.bundle_names, reference)
    rng = np.random.default_rng(seed)
    matrices = {}
    started = time.perf_counter()
    names = np.asarray(dataset.bundle_names)
    for subject in (str(s) for s in np.unique(dataset.subjects)):
        mask = dataset.subjects == subject
        labels = names[dataset.labels[mask]]
        present = sorted(set(labels))
        moving = _sample(take(dataset.x, mask), labels, present, rng)
        matrices[subject] = _slr(
            _static_for(static, present),
            moving,
            transform,
            name=f"subject {subject}",
            what=f"the template {template}",
        )
    logger.info(
        "Registered %d subjects to the template %s (%s SLR, %.1f s)",
        len(matrices),
        template,
        transform,
        time.perf_counter() - started,
    )
    registration = Registration(
        "template",
        transform,
        matrices,
        template=str(template),
        bundles=list(dataset.bundle_names),
        seed=seed,
    )
    out = _finish(dataset, registration)
    if space:
        out.space = space
    return out


def file_placer(model, bundle, space=None):
    """A function that moves a real tractogram's streamlines where ``model``'s
    generated ones are: ``place(path, streamlines) -> streamlines``.

    The model's own training files use their subject's stored transform;
    other files are registered to the model's common-space bundles. None
    for a model trained without registration (nothing to move).

    Parameters
    ----------
    model : TractAAE
    bundle : str
        The bundle the files hold.
    space : str, optional
        None: the common space; a training subject: its native space.
    """
    from pathlib import Path

    registration = model.registration
    if not registration.active:
        return None
    trained = set(model.metadata.training.get("inputs") or [])

    def place(path, streamlines):
        path = Path(path)
        subject = path.parent.name if str(path.resolve()) in trained else None
        return registration.place(
            streamlines, bundle, subject=subject, space=space, name=str(path)
        )

    return place


def register_split(
    train,
    validation,
    register="groupwise",
    *,
    transform="rigid",
    seed=0,
    reference=None,
):
    """Register a training split and bring its held-out subjects to it.

    Parameters
    ----------
    train, validation : StreamlineDataset
        The splits (:func:`aae_tract.splits.split_dataset`), native spaces.
    register : str or Path, optional
        ``"groupwise"`` (:func:`register_groupwise`), ``"none"``, or a template
        tractogram (:func:`register_to_template`).
    transform : {"rigid", "affine"}, optional
        Rigid keeps lengths; affine rescales them.
    seed : int, optional
        Seed of the random streamline selection.
    reference : str, optional
        Reference anatomy of a ``.tck``/``.trx`` template.

    Returns
    -------
    (StreamlineDataset, StreamlineDataset)
        Both in the common space (unchanged for ``"none"``); the held-out
        subjects registered to the training subjects with SLR, as a new
        subject would be.
    """
    register = str(register)
    if register == "none":
        return train, validation
    if register == "groupwise":
        train = register_groupwise(train, transform=transform, seed=seed)
    else:
        train = register_to_template(
            train, register, transform=transform, seed=seed, reference=reference
        )
    if len(validation):
        validation = train.registration.align(validation, orient_refs=train.orient_refs)
    return train, validation


def _finish(dataset, registration):
    """Move ``dataset`` with the registration's transforms, re-orient it
    against common-space references, and keep an atlas for new subjects."""
    from aae_tract.orientation import choose_reference

    out = transform_dataset(
        dataset, registration.transforms, affine=registration.transform == "affine"
    )
    rng = np.random.default_rng(registration.seed)
    refs = {}
    for i, bundle in enumerate(out.bundle_names):
        rows = np.flatnonzero(out.labels == i)
        if rows.size == 0:
            continue
        refs[bundle] = choose_reference(take(out.x, rows))
        out.x = _oriented(out.x, rows, refs[bundle])
        pick = rng.choice(rows, min(ATLAS_PER_BUNDLE, rows.size), replace=False)
        registration.atlas[bundle] = _points(out.x[np.sort(pick)])
    out.orient_refs = refs
    out.registration = registration
    return out


# ---------------------------------------------------------------------------
# applying transforms


def transform_streamlines(streamlines, matrix):
    """Apply a 4x4 affine to streamlines.

    Parameters
    ----------
    streamlines : ndarray (N, P, 3) or sequence of (n, 3) arrays
        RAS+ mm.
    matrix : array_like (4, 4)

    Returns
    -------
    Same kind as the input (an ndarray, or a list of arrays), float32.
    """
    if isinstance(streamlines, np.ndarray) and streamlines.ndim == 3:
        return apply_affine(streamlines, matrix)
    return [apply_affine(np.asarray(s), matrix) for s in streamlines]


def transform_dataset(dataset, matrices, *, affine=False):
    """``dataset`` with each subject's streamlines moved by its matrix.

    Parameters
    ----------
    dataset : StreamlineDataset
    matrices : dict of str to (4, 4)
        One per subject of ``dataset``.
    affine : bool, optional
        The matrices may scale: lengths (and a length attribute) are rescaled
        by the change of each streamline's polyline length.

    Returns
    -------
    StreamlineDataset
        Oriented against ``dataset.orient_refs`` again. A copy when
        ``dataset.x`` is an array in memory; when it is read on demand (a
        memmap or :class:`~aae_tract.rows.StreamlineRows`), rows of the same
        map that are moved and reversed as they are read, so nothing is
        loaded whole.
    """
    out = dataset.subset(np.arange(len(dataset)))
    moved = _moved_rows if is_lazy(dataset.x) else _moved_copy
    out.x, lengths = moved(dataset, matrices, affine)
    out.lengths = lengths
    if affine and dataset.attribute_name == "length":
        out.attribute = lengths.copy()
    for i, bundle in enumerate(out.bundle_names):
        ref = (out.orient_refs or {}).get(bundle)
        rows = np.flatnonzero(out.labels == i)
        if ref is not None and rows.size:
            out.x = _oriented(out.x, rows, ref)
    return out


def _moved_copy(dataset, matrices, affine):
    """``(x, lengths)``: a copy of the streamlines moved subject by subject."""
    from aae_tract.streamlines import streamline_lengths

    x = np.array(dataset.x, dtype=np.float32, copy=True)
    lengths = np.array(dataset.lengths, dtype=np.float32, copy=True)
    for subject, matrix in matrices.items():
        rows = np.flatnonzero(dataset.subjects == subject)
        if rows.size == 0:
            continue
        moved = transform_streamlines(x[rows], matrix)
        if affine:
            ratio = streamline_lengths(moved) / np.maximum(
                streamline_lengths(x[rows]), 1e-6
            )
            lengths[rows] *= ratio.astype(np.float32)
        x[rows] = moved
    return x, lengths


def _moved_rows(dataset, matrices, affine):
    """``(x, lengths)``: the rows moved as they are read; lengths by blocks."""
    from aae_tract.streamlines import streamline_lengths

    subjects = list(matrices)
    which = np.full(len(dataset), -1, dtype=np.int32)
    for k, subject in enumerate(subjects):
        which[dataset.subjects == subject] = k
    table = np.asarray([matrices[s] for s in subjects], dtype=np.float64)
    before = as_rows(dataset.x)
    x = before.moved(table.reshape(-1, 4, 4), which)
    lengths = np.array(dataset.lengths, dtype=np.float32, copy=True)
    if affine:
        for start, block in iter_blocks(x):
            stop = start + len(block)
            ratio = streamline_lengths(block) / np.maximum(
                streamline_lengths(before[start:stop]), 1e-6
            )
            lengths[start:stop] *= ratio.astype(np.float32)
    return x, lengths


def _oriented(x, rows, ref):
    """``x`` with its ``rows`` oriented against ``ref``: in place for an array
    in memory, as reversed rows of a :class:`~aae_tract.rows.StreamlineRows`
    (read block by block to decide) otherwise."""
    from aae_tract.orientation import flip_mask, orient_bundle

    ref = np.asarray(ref, np.float32)
    if not is_lazy(x):
        x[rows] = orient_bundle(x[rows], ref)
        return x
    x = as_rows(x)
    mask = np.zeros(len(x), dtype=bool)
    mask[rows] = flip_mask(x.subset(rows), ref)
    return x.flipped(mask)


# ---------------------------------------------------------------------------
# helpers


def check_register(register, transform="rigid"):
    """Checked registration options, as ``aae_tract_train`` takes them.

    Parameters
    ----------
    register : str or Path
        ``"groupwise"``, ``"none"`` (any case) or an existing template file.
    transform : str
        ``"rigid"`` or ``"affine"`` (any case).

    Returns
    -------
    (str, str)
        ``register`` (lower case for a word) and ``transform``.

    Raises
    ------
    ConfigError
        Naming ``--register`` or ``--register_transform``.
    """
    from pathlib import Path

    from aae_tract.errors import ConfigError

    word = str(transform).lower()
    if word not in TRANSFORMS:
        raise ConfigError(
            f"--register_transform must be one of {', '.join(TRANSFORMS)}, "
            f"got {transform!r}"
        )
    if str(register).lower() in REGISTER_CHOICES:
        return str(register).lower(), word
    if not Path(register).exists():
        raise ConfigError(
            f"--register must be {' or '.join(REGISTER_CHOICES)} or an existing "
            f"template tractogram, got {register!r}"
        )
    return str(register), word


def _check_transform(transform):
    if transform not in TRANSFORMS:
        raise DatasetError(
            f"unknown registration transform {transform!r}; use one of "
            f"{', '.join(TRANSFORMS)}"
        )


def _finite(values, what):
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not numeric") from None
    if not np.all(np.isfinite(arr)) or np.abs(arr).max(initial=0) > 1e6:
        raise ValueError(f"{what} holds non-finite or implausible values")
    return arr


def _points(x, n=N_POINTS):
    """Streamlines (N, P, 3), already resampled, at ``n`` evenly spaced points."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1] == n:
        return x.copy()
    idx = np.round(np.linspace(0, x.shape[1] - 1, n)).astype(np.intp)
    return x[:, idx]


def _sample(streamlines, bundles, usable, rng):
    """Up to SAMPLE_PER_BUNDLE streamlines of each usable bundle, at N_POINTS."""
    from aae_tract.streamlines import resample

    resampled = isinstance(streamlines, (np.ndarray, StreamlineRows))
    if not (resampled and streamlines.ndim == 3):
        streamlines = resample(streamlines, N_POINTS)
    bundles = np.asarray(bundles)
    picked = []
    for bundle in usable:
        rows = np.flatnonzero(bundles == bundle)
        if rows.size > SAMPLE_PER_BUNDLE:
            rows = np.sort(rng.choice(rows, SAMPLE_PER_BUNDLE, replace=False))
        picked.append(_points(streamlines[rows]))
    return np.concatenate(picked)


def _subject_sample(dataset, subject, bundles, rng):
    mask = dataset.subjects == subject
    labels = np.asarray(dataset.bundle_names)[dataset.labels[mask]]
    return _sample(take(dataset.x, mask), labels, bundles, rng)


def _common_bundles(dataset, subjects):
    """Bundles every subject has (warning about the others)."""
    names = np.asarray(dataset.bundle_names)
    have = {
        s: set(names[np.unique(dataset.labels[dataset.subjects == s])])
        for s in subjects
    }
    common = sorted(set.intersection(*have.values()))
    missing = {s: sorted(set(names) - h) for s, h in have.items() if set(names) - h}
    if not common:
        raise RegistrationError(
            "no bundle is present in every subject, so the subjects cannot be "
            "registered together: "
            + "; ".join(f"{s} lacks {', '.join(b)}" for s, b in missing.items())
            + " (train with --register none, or give a template)"
        )
    if missing:
        logger.warning(
            "registering on the bundles every subject has (%s): %s",
            ", ".join(common),
            "; ".join(f"subject {s} lacks {', '.join(b)}" for s, b in missing.items()),
        )
    return common


def _spread(x):
    """RMS distance of the points of ``x`` to their centre (mm)."""
    points = np.asarray(x, float).reshape(-1, 3)
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def _slr(static, moving, transform, *, name, what):
    """SLR of ``moving`` onto ``static`` (both (N, 20, 3)), centres aligned first."""
    from dipy.align.streamlinear import StreamlineLinearRegistration

    ratio = _spread(moving) / max(_spread(static), 1e-6)
    if not 1 / MAX_SPREAD_RATIO <= ratio <= MAX_SPREAD_RATIO:
        raise RegistrationError(
            f"{name} spans {ratio:.2f}x the size of {what}: they look like "
            "different spaces or units (voxel coordinates, another scale); "
            "give streamlines in RAS+ mm"
        )
    c_static = static.reshape(-1, 3).mean(axis=0)
    c_moving = moving.reshape(-1, 3).mean(axis=0)
    srr = StreamlineLinearRegistration(x0=transform)
    result = srr.optimize(
        static=list(static - c_static), moving=list(moving - c_moving)
    )
    matrix = np.asarray(result.matrix, dtype=float)
    to_origin, back = np.eye(4), np.eye(4)
    to_origin[:3, 3] = -c_moving
    back[:3, 3] = c_static
    matrix = back @ matrix @ to_origin
    if not np.all(np.isfinite(matrix)):
        raise RegistrationError(f"registering {name} to {what} did not converge")
    before = _median_nearest(moving + (c_static - c_moving), static)
    after = _median_nearest(transform_streamlines(moving, matrix), static)
    if after > before * 1.05 + 0.5:
        raise RegistrationError(
            f"registering {name} to {what} did not converge: median distance "
            f"{after:.1f} mm after, {before:.1f} mm with the centres aligned"
        )
    return matrix


def _median_nearest(a, b):
    from aae_tract.streamlines import nearest_mdf

    return float(np.median(nearest_mdf(np.asarray(a), np.asarray(b))[0]))


def _spread_between(samples, matrices):
    """Median nearest-MDF of each subject to the others, before and after."""
    moved = [transform_streamlines(s, m) for s, m in zip(samples, matrices)]

    def median_to_others(sets):
        values = [
            _median_nearest(s, np.concatenate(sets[:i] + sets[i + 1 :]))
            for i, s in enumerate(sets)
        ]
        return float(np.median(values))

    return median_to_others(list(samples)), median_to_others(moved)


def _check_groupwise(distances, matrices):
    distances = np.asarray(distances, dtype=float)
    bad = [s for s, m in matrices.items() if not np.all(np.isfinite(m))]
    if bad or not np.all(np.isfinite(distances)):
        raise RegistrationError(
            "groupwise registration did not converge (non-finite transform"
            + (f" for {', '.join(bad)}" if bad else "")
            + ")"
        )


def _template_streamlines(template, bundle_names, reference):
    """Template streamlines at N_POINTS, by bundle when its files are named
    as ``bundle_names``; and the template's space."""
    from pathlib import Path

    from aae_tract.io import find_bundles, load_bundle, space_from_sft
    from aae_tract.streamlines import resample

    path = Path(template)
    if not path.exists():
        raise RegistrationError(f"template {template} not found")
    files = find_bundles([path])
    by_bundle, space = {}, None
    for f in files:
        sft = load_bundle(f.path, reference=reference)
        space = space or space_from_sft(sft)
        lines = resample(sft.streamlines, N_POINTS)
        by_bundle.setdefault(f.bundle, []).append(lines)
    by_bundle = {b: np.concatenate(v) for b, v in by_bundle.items()}
    rng = np.random.default_rng(0)
    for b, lines in by_bundle.items():
        if len(lines) > 4 * SAMPLE_PER_BUNDLE:
            pick = rng.choice(len(lines), 4 * SAMPLE_PER_BUNDLE, replace=False)
            by_bundle[b] = lines[np.sort(pick)]
    if not set(by_bundle) & set(bundle_names):
        by_bundle = {None: np.concatenate(list(by_bundle.values()))}
    return by_bundle, space


def _static_for(static, present):
    """The template streamlines of the bundles in ``present`` (all without names)."""
    if None in static:
        return static[None]
    usable = [b for b in present if b in static]
    if not usable:
        raise RegistrationError(
            f"the template has none of the bundles {', '.join(present)}"
        )
    return np.concatenate([static[b] for b in usable])
