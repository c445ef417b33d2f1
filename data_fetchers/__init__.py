"""Datasets for aae_tract: real bundles shipped with dipy, DIPY's HCP842 atlas,
and a synthetic phantom with ground truth (and its subjects' whole-brain
tractograms with distractor streamlines, for bundle recognition).

Every dataset is a folder of ``<subject>/<BUNDLE>.trk`` files.
:data:`FETCHERS` maps the names the ``aae_tract_fetch`` command accepts to
callables taking an optional ``data_home``.
"""

from pathlib import Path

from aae_tract.data_fetchers.fetcher import (
    DATA_HOME_ENV,
    check_md5,
    check_network,
    data_home,
    extract_zip,
    fetch_hcp842,
    fetch_minimal_bundles,
)
from aae_tract.data_fetchers.phantom import (
    BUNDLE_SPECS,
    PHANTOM_BUNDLES,
    load_ground_truth,
    load_wholebrain_labels,
    make_phantom,
    make_wholebrain,
    subject_ages,
    subject_ids,
)


def fetch_phantom(data_home=None, **kwargs) -> Path:
    """Make the default synthetic phantom under the data home.

    Parameters
    ----------
    data_home : str or Path, optional
        Data home; default :func:`data_home`. The phantom goes to
        ``<data_home>/phantom``.
    **kwargs
        Options of :func:`make_phantom` (``n_subjects``, ``n_per_bundle``,
        ``seed``, ...).

    Returns
    -------
    folder : Path
        The phantom folder.
    """
    from aae_tract.data_fetchers.fetcher import data_home as _default_home

    home = _default_home() if data_home is None else Path(data_home).expanduser()
    return make_phantom(home / "phantom", **kwargs)


#: Dataset name -> callable(data_home=None, ...) returning the dataset folder.
FETCHERS = {
    "minimal_bundles": fetch_minimal_bundles,
    "hcp842": fetch_hcp842,
    "phantom": fetch_phantom,
}

__all__ = [
    "BUNDLE_SPECS",
    "DATA_HOME_ENV",
    "FETCHERS",
    "PHANTOM_BUNDLES",
    "check_md5",
    "check_network",
    "data_home",
    "extract_zip",
    "fetch_hcp842",
    "fetch_minimal_bundles",
    "fetch_phantom",
    "load_ground_truth",
    "load_wholebrain_labels",
    "make_phantom",
    "make_wholebrain",
    "subject_ages",
    "subject_ids",
]
