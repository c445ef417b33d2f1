"""Model metadata: everything beside the weights that generation needs.

Stored as JSON (``aae_tract.json``) inside the ``.keras`` archive, never pickle,
and validated before use.
"""

import dataclasses
import math

import numpy as np

from aae_tract.errors import ModelFileError

FORMAT_VERSION = 1
METADATA_MEMBER = "aae_tract.json"


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
        voxel order) so generated tractograms line up with it.
    calibration : dict
        Per bundle: monotone map attribute -> z0 (``x``, ``y`` knots, ``slope``).
    latent_bank : dict
        Per bundle: a sample of training encodings (``z``) and attributes (``a``)
        for sampling near the data (GESTA-style).
    training : dict
        Epochs, backend, device, seconds, sizes of the splits.
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
        meta = cls(**{k: v for k, v in payload.items() if k in names})
        meta.validate(source=source)
        return meta

    def validate(self, *, source="model file"):
        """Check types, shapes and ranges; raise ModelFileError naming the problem."""

        def fail(message):
            raise ModelFileError(f"{source}: invalid metadata: {message}")

        if self.format_version > FORMAT_VERSION:
            fail(
                f"format version {self.format_version} is newer than this "
                f"aae_tract understands ({FORMAT_VERSION}); upgrade aae_tract"
            )
        names = self.bundle_names
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            fail("bundle_names must be a non-empty list of distinct names")
        if not isinstance(self.config, dict):
            fail("config must be an object")
        n_points = self.config.get("n_points")
        if not isinstance(n_points, int) or n_points < 2:
            fail(f"config n_points is {n_points!r}")
        if self.config.get("n_bundles") != len(names):
            fail(
                f"config says {self.config.get('n_bundles')} bundles, "
                f"bundle_names has {len(names)}"
            )
        if not isinstance(self.attribute_name, str) or not self.attribute_name:
            fail("attribute_name must be a non-empty string")
        for key, ref in self.orient_refs.items():
            if key not in names:
                fail(f"orientation reference for unknown bundle {key!r}")
            arr = _finite_array(ref, fail, f"orient_refs[{key}]")
            if arr.shape != (n_points, 3):
                fail(f"orient_refs[{key}] has shape {arr.shape}, not ({n_points}, 3)")
        for key, cal in self.calibration.items():
            if key not in names:
                fail(f"calibration for unknown bundle {key!r}")
            x = _finite_array(cal.get("x"), fail, f"calibration[{key}].x")
            y = _finite_array(cal.get("y"), fail, f"calibration[{key}].y")
            if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
                fail(f"calibration[{key}] knots have mismatched shapes")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                fail(f"calibration[{key}] is not monotone")
        for key, stats in self.bundle_stats.items():
            if key not in names:
                fail(f"statistics for unknown bundle {key!r}")
            for field in ("min", "max"):
                value = stats.get("attribute", {}).get(field)
                if value is None or not math.isfinite(float(value)):
                    fail(f"bundle_stats[{key}].attribute.{field} is {value!r}")
        latent_dims = self.config.get("latent_dims")
        for key, bank in self.latent_bank.items():
            if key not in names:
                fail(f"latent bank for unknown bundle {key!r}")
            z = _finite_array(bank.get("z"), fail, f"latent_bank[{key}].z")
            if z.ndim != 2 or z.shape[1] != latent_dims:
                fail(f"latent_bank[{key}].z has shape {z.shape}")
        if self.space is not None:
            affine = _finite_array(self.space.get("affine"), fail, "space.affine")
            if affine.shape != (4, 4):
                fail(f"space.affine has shape {affine.shape}")


def _finite_array(value, fail, what):
    try:
        arr = np.asarray(value, dtype="float64")
    except (TypeError, ValueError):
        fail(f"{what} is not numeric")
    if not np.all(np.isfinite(arr)):
        fail(f"{what} holds non-finite values")
    return arr
