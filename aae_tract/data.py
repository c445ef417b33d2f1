"""Training-ready streamline datasets: the public names in one place.

Each job has its own module; this one gathers their public names so that
``from aae_tract.data import load_dataset, split_dataset`` keeps working:

- :mod:`aae_tract.streamlines`: :func:`resample`, :func:`streamline_lengths`;
- :mod:`aae_tract.orientation`: :func:`orient_bundle`;
- :mod:`aae_tract.dataset`: :class:`StreamlineDataset`;
- :mod:`aae_tract.loading`: :func:`load_dataset`,
  :func:`dataset_from_tractograms` (with the cache of
  :mod:`aae_tract.dataset_cache`);
- :mod:`aae_tract.participants`: :func:`read_participants`;
- :mod:`aae_tract.splits`: :func:`split_dataset`;
- :mod:`aae_tract.normalize`: :class:`Normalizer`.
"""

from aae_tract.dataset import StreamlineDataset
from aae_tract.loading import dataset_from_tractograms, load_dataset
from aae_tract.normalize import Normalizer
from aae_tract.orientation import orient_bundle
from aae_tract.participants import read_participants
from aae_tract.splits import split_dataset
from aae_tract.streamlines import resample, streamline_lengths

__all__ = [
    "Normalizer",
    "StreamlineDataset",
    "dataset_from_tractograms",
    "load_dataset",
    "orient_bundle",
    "read_participants",
    "resample",
    "split_dataset",
    "streamline_lengths",
]
