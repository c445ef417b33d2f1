"""Model metadata: everything beside the weights that generation needs.

Stored as JSON (``aae_tract.json``) inside the ``.keras`` archive, never pickle,
and validated before use.
"""

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from aae_tract.errors import ConfigError, ModelFileError
from aae_tract.model.config import STORED_DEFAULTS, AAEConfig

FORMAT_VERSION = 1
METADATA_MEMBER = "aae_tract.json"


def read_model_file(path):
    """The records of a ``.keras`` model file, read without Keras.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    payload : dict
        The metadata as stored (:meth:`ModelMetadata.from_dict` reads it).
    networks : dict or None
        The networks' Keras config (``config.json``), None when absent.

    Raises
    ------
    ModelFileError
        Missing, a folder, not a zip archive, no aae_tract metadata inside,
        or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(
            f"{path}: model file not found (train one with aae_tract_train)"
        )
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a .keras model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a .keras model file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if METADATA_MEMBER not in names:
                raise ModelFileError(
                    f"{path}: not an aae_tract model (no {METADATA_MEMBER} inside)"
                )
            payload = json.loads(zf.read(METADATA_MEMBER))
            networks = (
                json.loads(zf.read("config.json")) if "config.json" in names else None
            )
    except (
        zipfile.BadZipFile,
        zlib.error,
        ValueError,
        RecursionError,
        OSError,
    ) as exc:
        # ValueError: JSONDecodeError, UnicodeDecodeError; zlib.error: a
        # damaged compressed member
        raise ModelFileError(f"{path}: corrupt model file: {exc}") from exc
    return payload, networks


@dataclasses.dataclass
class ModelMetadata:
    """What a trained model knows about its data.

    Parameters
    ----------
    config : dict
        All hyperparameters (:meth:`AAEConfig.to_dict`).
    bundle_names : list of str
        Label vocabulary; index ``i`` is one-hot position ``i``.
    attribute_name : str
        ``"length"`` or a participants.tsv column such as ``"age"``.
    normalizer : dict
        Normalisation statistics fitted on the training split.
    bundle_stats : dict
        Per bundle: ``n``, attribute and length percentiles
        (``min``, ``p05``, ``p50``, ``p95``, ``max``).
    orient_refs : dict
        Per bundle, the reference streamline (``n_points x 3``) that oriented it.
    space : dict or None
        Space attributes of the training data (affine, dimensions, voxel sizes,
        voxel order) so generated tractograms line up with it, and
        ``holds_data``: whether the volume they describe holds every
        streamline of the calibration sample of the training split (then
        generation keeps its streamlines inside it; absent in model files
        from before this test).
    calibration : dict
        Per bundle: monotone map attribute -> z0 (``x``, ``y`` knots, ``slope``).
    latent_bank : dict
        Per bundle: a sample of training encodings (``z``) and attributes (``a``)
        for sampling near the data (GESTA-style).
    training : dict
        Epochs, backend, device, seconds, sizes of the splits.
    registration : dict
        How the training subjects were brought into a common space
        (:meth:`aae_tract.registration.Registration.to_dict`); empty when
        they were not.
    labeller : dict
        Per bundle, the Gaussian of its encodings and its rejection
        thresholds (:func:`aae_tract.label.fit_labeller`); empty in model
        files from before bundle recognition.
    """

    config: dict
    bundle_names: list
    attribute_name: str = "length"
    normalizer: dict = dataclasses.field(default_factory=dict)
    bundle_stats: dict = dataclasses.field(default_factory=dict)
    orient_refs: dict = dataclasses.field(default_factory=dict)
    space: dict | None = None
    calibration: dict = dataclasses.field(default_factory=dict)
    latent_bank: dict = dataclasses.field(default_factory=dict)
    training: dict = dataclasses.field(default_factory=dict)
    registration: dict = dataclasses.field(default_factory=dict)
    labeller: dict = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload, *, source="model file"):
        """Validate and build from a JSON payload; ModelFileError when invalid."""
        if not isinstance(payload, dict):
            raise ModelFileError(f"{source}: metadata is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"config", "bundle_names"} - set(payload)
        if missing:
            raise ModelFileError(
                f"{source}: metadata lacks {', '.join(sorted(missing))}"
            )
        payload = dict(payload)
        if isinstance(payload["config"], dict):  # an older file: what it implies
            payload["config"] = {**STORED_DEFAULTS, **payload["config"]}
        meta = cls(**{k: v for k, v in payload.items() if k in names})
        meta.validate(source=source)
        return meta

    def validate(self, *, source="model file"):
        """Check types, shapes and ranges; raise ModelFileError naming the problem.

        A model file is untrusted: every field is checked before use, numbers
        must be finite and of plausible size (coordinates within
        +/- 1e6 mm, anything else within +/- 1e12).
        """

        def fail(message):
            raise ModelFileError(f"{source}: invalid metadata: {message}")

        _validate_format_version(self.format_version, fail)
        names = self.bundle_names
        _validate_bundle_names(names, fail)
        config = _validate_config(self.config, names, fail)
        if not isinstance(self.attribute_name, str) or not self.attribute_name:
            fail("attribute_name must be a non-empty string")
        for field in ("normalizer", "orient_refs", "calibration", "bundle_stats"):
            if not isinstance(getattr(self, field), dict):
                fail(f"{field} must be an object")
        for field in ("latent_bank", "training", "registration", "labeller"):
            if not isinstance(getattr(self, field), dict):
                fail(f"{field} must be an object")
        _validate_normalizer(self.normalizer, fail)
        _validate_orient_refs(self.orient_refs, names, config.n_points, fail)
        _validate_calibration(self.calibration, names, fail)
        _validate_bundle_stats(self.bundle_stats, names, fail)
        _validate_latent_bank(self.latent_bank, names, config.latent_dims, fail)
        if self.registration:
            _validate_registration(self.registration, fail)
        if self.labeller:
            _validate_labeller(self.labeller, names, config.latent_dims, fail)
        if self.space is not None:
            _validate_space(self.space, fail)


def _validate_format_version(version, fail):
    """Check ``format_version``: an int this aae_tract understands."""
    if not isinstance(version, int) or isinstance(version, bool):
        fail(f"format_version is {version!r}")
    if version > FORMAT_VERSION:
        fail(
            f"format version {version} is newer than this "
            f"aae_tract understands ({FORMAT_VERSION}); upgrade aae_tract"
        )


def _validate_bundle_names(names, fail):
    """Check ``bundle_names``: a non-empty list of distinct non-empty strings."""
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        fail("bundle_names must be a non-empty list of distinct names")


def _validate_config(raw, names, fail):
    """Check ``config`` against ``names``; return it as an :class:`AAEConfig`."""
    if not isinstance(raw, dict):
        fail("config must be an object")
    try:
        config = AAEConfig.from_dict(raw)
    except (ConfigError, TypeError, ValueError) as exc:
        fail(f"config: {exc}")
    if config.n_bundles != len(names):
        fail(f"config says {config.n_bundles} bundles, bundle_names has {len(names)}")
    return config


def _validate_normalizer(normalizer, fail):
    """Check ``normalizer``: a finite 3-vector ``mean`` and a positive ``scale``."""
    mean = _finite_array(normalizer.get("mean"), fail, "normalizer.mean", limit=MAX_MM)
    if mean.shape != (3,):
        fail(f"normalizer.mean has shape {mean.shape}, not (3,)")
    scale = _number(normalizer.get("scale"), fail, "normalizer.scale")
    if not 0 < scale <= MAX_MM:
        fail(f"normalizer.scale is {scale!r}")


def _validate_orient_refs(orient_refs, names, n_points, fail):
    """Check ``orient_refs``: one ``(n_points, 3)`` streamline per known bundle."""
    for key, ref in orient_refs.items():
        if key not in names:
            fail(f"orientation reference for unknown bundle {key!r}")
        arr = _finite_array(ref, fail, f"orient_refs[{key}]", limit=MAX_MM)
        if arr.shape != (n_points, 3):
            fail(f"orient_refs[{key}] has shape {arr.shape}, not ({n_points}, 3)")


def _validate_calibration(calibration, names, fail):
    """Check ``calibration``: monotone knots and a slope >= 0 per known bundle."""
    for key, cal in calibration.items():
        if key not in names:
            fail(f"calibration for unknown bundle {key!r}")
        if not isinstance(cal, dict):
            fail(f"calibration[{key}] must be an object")
        x = _finite_array(cal.get("x"), fail, f"calibration[{key}].x")
        y = _finite_array(cal.get("y"), fail, f"calibration[{key}].y")
        if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
            fail(f"calibration[{key}] knots have mismatched shapes")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            fail(f"calibration[{key}] is not monotone")
        slope = _number(cal.get("slope", 0.0), fail, f"calibration[{key}].slope")
        if slope < 0:
            fail(f"calibration[{key}].slope is {slope!r}")


def _validate_bundle_stats(bundle_stats, names, fail):
    """Check ``bundle_stats``: min <= max of the attribute (and length) per bundle."""
    for key, stats in bundle_stats.items():
        if key not in names:
            fail(f"statistics for unknown bundle {key!r}")
        if not isinstance(stats, dict):
            fail(f"bundle_stats[{key}] must be an object")
        for part in ("attribute", "length"):
            values = stats.get(part)
            if values is None and part == "length":
                continue
            if not isinstance(values, dict):
                fail(f"bundle_stats[{key}].{part} must be an object")
            low = _number(values.get("min"), fail, f"bundle_stats[{key}].{part}.min")
            high = _number(values.get("max"), fail, f"bundle_stats[{key}].{part}.max")
            if low > high:
                fail(f"bundle_stats[{key}].{part}: min {low} > max {high}")


def _validate_latent_bank(latent_bank, names, latent_dims, fail):
    """Check ``latent_bank``: codes of ``latent_dims`` and one value per code."""
    for key, bank in latent_bank.items():
        if key not in names:
            fail(f"latent bank for unknown bundle {key!r}")
        if not isinstance(bank, dict):
            fail(f"latent_bank[{key}] must be an object")
        z = _finite_array(bank.get("z"), fail, f"latent_bank[{key}].z")
        if z.ndim != 2 or z.shape[1] != latent_dims:
            fail(f"latent_bank[{key}].z has shape {z.shape}")
        a = _finite_array(bank.get("a", []), fail, f"latent_bank[{key}].a")
        if a.shape != (len(z),):
            fail(f"latent_bank[{key}] has {len(z)} codes and {a.size} values")
        if "subject" in bank or "subject_means" in bank:
            _validate_bank_subjects(bank, key, z.shape, fail)
        if bank.get("placement") is not None:
            _validate_placement(bank, key, fail)
        if bank.get("noise") is not None:
            _validate_bank_noise(bank, key, fail)


def _validate_bank_noise(bank, key, fail):
    """Check a bank's noise per length band (:mod:`aae_tract.bank_noise`):
    as many finite lengths, in order, as noises, each noise 0 or more."""
    what = f"latent_bank[{key}].noise"
    record = bank["noise"]
    if not isinstance(record, dict):
        fail(f"{what} must be an object")
    at = _finite_array(record.get("at"), fail, f"{what}.at")
    value = _finite_array(record.get("value"), fail, f"{what}.value")
    if at.ndim != 1 or at.size == 0 or value.shape != at.shape:
        fail(f"{what} has {at.size} band lengths and {value.size} noises")
    if np.any(np.diff(at) < 0):
        fail(f"{what}.at must not decrease")
    if np.any(value < 0):
        fail(f"{what}.value must be 0 or more")


def _validate_placement(bank, key, fail):
    """Check a bank's placement spread (:mod:`aae_tract.placement`): three
    numbers each, spreads not negative, measured on 2 to all of the bank's
    subjects."""
    what = f"latent_bank[{key}].placement"
    record = bank["placement"]
    if not isinstance(record, dict):
        fail(f"{what} must be an object")
    for part in ("centre_mm", "rotation_deg", "shift_mm", "n_subjects"):
        if part not in record:
            fail(f"{what} lacks {part}")
    for part in ("centre_mm", "rotation_deg", "shift_mm"):
        arr = _finite_array(record[part], fail, f"{what}.{part}")
        if arr.shape != (3,):
            fail(f"{what}.{part} must hold 3 numbers, has shape {arr.shape}")
        if part != "centre_mm" and np.any(arr < 0):
            fail(f"{what}.{part} must not be negative")
    n = _number(record["n_subjects"], fail, f"{what}.n_subjects")
    n_means = len(bank.get("subject_means") or [])
    if n != round(n) or not 2 <= n <= n_means:
        fail(
            f"{what}.n_subjects must be a whole number from 2 to the bank's "
            f"{n_means} subjects, got {n:g}"
        )


def _validate_bank_subjects(bank, key, z_shape, fail):
    """Check a bank's subjects: one index per code into its subject means."""
    means = _finite_array(
        bank.get("subject_means"), fail, f"latent_bank[{key}].subject_means"
    )
    if means.ndim != 2 or means.shape[1] != z_shape[1] or len(means) == 0:
        fail(f"latent_bank[{key}].subject_means has shape {means.shape}")
    subject = _finite_array(bank.get("subject"), fail, f"latent_bank[{key}].subject")
    if subject.shape != (z_shape[0],):
        fail(f"latent_bank[{key}] has {z_shape[0]} codes and {subject.size} subjects")
    if np.any(subject != np.round(subject)) or np.any(
        (subject < 0) | (subject >= len(means))
    ):
        fail(f"latent_bank[{key}].subject must index its {len(means)} subject means")
    if "subject_spread" in bank:
        spread = _finite_array(
            bank.get("subject_spread"), fail, f"latent_bank[{key}].subject_spread"
        )
        if spread.ndim != 2 or len(spread) != len(means) or spread.shape[1] < 2:
            fail(
                f"latent_bank[{key}].subject_spread has shape {spread.shape}, "
                f"not ({len(means)} subjects, at least 2 quantiles)"
            )
        if np.any(np.diff(spread, axis=1) < 0):
            fail(f"latent_bank[{key}].subject_spread quantiles must not decrease")


def _validate_labeller(labeller, names, latent_dims, fail):
    """Check ``labeller``: per known bundle a finite mean, a positive definite
    covariance, a positive prior and positive thresholds (and reach, where
    stored)."""
    bundles = labeller.get("bundles")
    if not isinstance(bundles, dict) or not bundles:
        fail("labeller.bundles must be a non-empty object")
    for key, entry in bundles.items():
        if key not in names:
            fail(f"labeller for unknown bundle {key!r}")
        if not isinstance(entry, dict):
            fail(f"labeller.bundles[{key}] must be an object")
        mean = _finite_array(entry.get("mean"), fail, f"labeller[{key}].mean")
        cov = _finite_array(entry.get("cov"), fail, f"labeller[{key}].cov")
        if mean.shape != (latent_dims,) or cov.shape != (latent_dims, latent_dims):
            fail(f"labeller[{key}] has shapes {mean.shape}, {cov.shape}")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            fail(f"labeller[{key}].cov is not positive definite")
        optional = ("max_ref_mm",)  # labellers before version 2 have no reach
        for field in ("prior", "max_d2", "max_recon_mm", *optional):
            if field in optional and field not in entry:
                continue
            value = _number(entry.get(field), fail, f"labeller[{key}].{field}")
            if not value > 0:
                fail(f"labeller[{key}].{field} is {value!r}")


def _validate_registration(registration, fail):
    """Check ``registration`` by reading it as a :class:`Registration`."""
    from aae_tract.registration import Registration

    try:
        Registration.from_dict(registration, source="registration")
    except ValueError as exc:
        fail(str(exc))


def _validate_space(space, fail):
    """Check ``space``: an invertible affine, whole dimensions, positive voxels."""
    if not isinstance(space, dict):
        fail("space must be an object")
    affine = _finite_array(space.get("affine"), fail, "space.affine", limit=MAX_MM)
    if affine.shape != (4, 4):
        fail(f"space.affine has shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        fail("space.affine is singular")
    dims = _finite_array(space.get("dimensions"), fail, "space.dimensions")
    if dims.shape != (3,) or (dims < 1).any() or (dims != np.round(dims)).any():
        fail(f"space.dimensions is {space.get('dimensions')!r}")
    sizes = _finite_array(
        space.get("voxel_sizes"), fail, "space.voxel_sizes", limit=MAX_MM
    )
    if sizes.shape != (3,) or (sizes <= 0).any():
        fail(f"space.voxel_sizes is {space.get('voxel_sizes')!r}")
    if not isinstance(space.get("holds_data", False), bool):
        fail(f"space.holds_data is {space.get('holds_data')!r}, not true or false")


#: Largest coordinate (mm) accepted in the metadata (as aae_tract.io accepts).
MAX_MM = 1e6
#: Largest magnitude of any other number in the metadata.
MAX_VALUE = 1e12


def _finite_array(value, fail, what, *, limit=MAX_VALUE):
    try:
        arr = np.asarray(value, dtype="float64")
    except (TypeError, ValueError, OverflowError):
        fail(f"{what} is not numeric")
    if not np.all(np.isfinite(arr)):
        fail(f"{what} holds non-finite values")
    if arr.size and np.abs(arr).max() > limit:
        fail(f"{what} holds values beyond +/-{limit:g}")
    return arr


def _number(value, fail, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{what} is {value!r}, not a number")
    arr = _finite_array(value, fail, what)
    return float(arr)
