"""``aae_tract_fetch``: get a dataset by name."""

import logging
from pathlib import Path

from aae_tract.errors import AAETractError

from .base import AAEWorkflow, check_float, check_int

logger = logging.getLogger(__name__)

DATASETS = {
    "minimal_bundles": "real bundles shipped inside dipy: 5 subjects x AF_L, "
    "CST_R, CC_ForcepsMajor (offline)",
    "phantom": "synthetic bundles with ground truth (lengths, ages); "
    "--n_subjects, --n_per_bundle, --seed, --fragments",
    "hcp842": "DIPY's 80-bundle HCP842 atlas (about 300 MB, needs the network)",
}


def _summary(folder):
    files = sorted(Path(folder).glob("*/*.trk")) + sorted(Path(folder).glob("*.trk"))
    subjects = {f.parent.name for f in files}
    bundles = {f.stem for f in files}
    return (
        f"{len(subjects)} subject{'s' * (len(subjects) != 1)} x "
        f"{len(bundles)} bundles ({len(files)} files)"
    )


class FetchFlow(AAEWorkflow):
    @classmethod
    def get_short_name(cls):
        return "fetch"

    def run(
        self,
        name,
        n_subjects=4,
        n_per_bundle=100,
        seed=0,
        fragments=0.0,
        wholebrain=0.0,
        out_dir="",
    ):
        """Fetch a dataset of labelled bundles by name.

        Writes a folder of <subject>/<BUNDLE>.trk files that aae_tract_train
        reads. Names: minimal_bundles (real bundles shipped inside dipy,
        offline), phantom (synthetic bundles with ground truth: lengths,
        participants.tsv with ages, ground_truth.json) and hcp842 (DIPY's
        online bundle atlas). The word list shows them.

        Parameters
        ----------
        name : string
            minimal_bundles, phantom, hcp842, or list.
        n_subjects : int, optional
            Phantom: number of subjects.
        n_per_bundle : int, optional
            Phantom: streamlines per bundle and subject.
        seed : int, optional
            Phantom: random seed (the same options give the same files).
        fragments : float, optional
            Phantom: share (0 to 0.9) of each bundle's streamlines that are
            fragments, contiguous pieces of full streamlines as premature
            termination leaves in real tractography (0: none; 0.5: lengths
            within a bundle span more than 4x).
        wholebrain : float, optional
            Phantom: also write every subject's whole-brain tractogram, its
            bundles together with this share (0 to 0.9) of distractor
            streamlines that belong to no bundle, shuffled, to
            out_dir/phantom_wholebrain/<subject>.trk, the true label of every
            streamline in its ground_truth.json (for aae_tract_label). 0: none.
        out_dir : string, optional
            Data home: the dataset goes to out_dir/NAME. Without it:
            $AAE_TRACT_HOME, else ~/.aae_tract.
        """
        self._begin()
        name = str(name).lower()
        if name == "list":
            for key, text in DATASETS.items():
                logger.info("%-16s %s", key, text)
            return None
        if name not in DATASETS:
            raise AAETractError(
                f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}"
            )
        from aae_tract.data_fetchers import FETCHERS, data_home
        from aae_tract.data_fetchers.phantom import MAX_FRAGMENTS

        home = Path(out_dir) if out_dir else data_home()
        target = home / name
        self.last_generated_outputs = {"out_dir": str(target)}
        if name == "phantom":
            options = {
                "n_subjects": check_int("n_subjects", n_subjects),
                "n_per_bundle": check_int("n_per_bundle", n_per_bundle),
                "seed": check_int("seed", seed, minimum=0),
                "fragments": check_float(
                    "fragments", fragments, minimum=0.0, maximum=MAX_FRAGMENTS
                ),
            }
            share = check_float("wholebrain", wholebrain, minimum=0.0, maximum=0.9)
            if not self._phantom_may_write(target, options):
                return None
            folder = FETCHERS[name](home, force=self._force_overwrite, **options)
            if share > 0:
                from aae_tract.data_fetchers import make_wholebrain

                whole = make_wholebrain(
                    folder,
                    home / "phantom_wholebrain",
                    distractors=share,
                    seed=options["seed"],
                    force=self._force_overwrite,
                )
                logger.info(
                    "Whole-brain tractograms (%g %% distractors) in %s",
                    100 * share,
                    whole,
                )
        else:
            folder = FETCHERS[name](home)
        logger.info("Fetched %s: %s in %s", name, _summary(folder), folder)
        return folder

    def _phantom_may_write(self, target, options):
        """False (with a message) when a different phantom is there and no --force."""
        truth = target / "ground_truth.json"
        if self._force_overwrite or not target.exists():
            return True
        if not truth.is_file():
            if any(target.iterdir()):
                logger.warning(
                    "%s exists and is not a phantom, use --force to overwrite", target
                )
                return False
            return True
        from aae_tract.data_fetchers import load_ground_truth

        # phantoms made before --fragments existed had none
        old = {"fragments": 0.0, **load_ground_truth(target).get("options", {})}
        differ = {k: old.get(k) for k, v in options.items() if old.get(k) != v}
        if differ:
            logger.warning(
                "%s holds a phantom made with other options (%s), use --force to "
                "overwrite",
                target,
                ", ".join(f"{k} {v}" for k, v in differ.items()),
            )
            return False
        return True
