"""Per-subject values (e.g. age) from a BIDS-style ``participants.tsv``.

A model conditioned on a subject attribute reads one numeric column of the
participants table (:func:`read_participants`) and gives each subject folder
its value (:func:`participant_values`; ``sub-01`` matches ``sub_1`` and ``1``).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from aae_tract.errors import DatasetError

__all__ = ["find_participants", "participant_values", "read_participants"]


def _subject_key(name):
    name = str(name).strip()
    stripped = re.sub(r"^sub[-_]?", "", name, flags=re.IGNORECASE)
    return str(int(stripped)) if stripped.isdigit() else stripped.lower()


def _read_rows(path):
    """The rows of a table and its column names (stripped)."""
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter=delimiter))
        fields = rows[0].keys() if rows else []
    return rows, [f.strip() for f in fields if f is not None]


def _number(path, column, row):
    """The participant id of a row and its ``column`` value as a float."""
    row = {(k or "").strip(): v for k, v in row.items()}
    pid = (row["participant_id"] or "").strip()
    raw = (row[column] or "").strip()
    try:
        value = float(raw)
    except ValueError:
        raise DatasetError(
            f"{path}: {column} of {pid} is {raw!r}, not a number"
        ) from None
    if not np.isfinite(value):
        raise DatasetError(f"{path}: {column} of {pid} is {raw!r}, not finite")
    return pid, value


def read_participants(path, column):
    """Read one numeric column of a BIDS-style ``participants.tsv``.

    Parameters
    ----------
    path : str or Path
        Tab-separated (``.tsv``) or comma-separated (``.csv``) table with a
        ``participant_id`` column.
    column : str
        The column to read (e.g. ``"age"``).

    Returns
    -------
    dict of str to float
        participant_id -> value.

    Raises
    ------
    DatasetError
        Missing file, no ``participant_id`` or ``column`` column, or a value
        that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: participants table not found")
    rows, fields = _read_rows(path)
    if "participant_id" not in fields:
        raise DatasetError(
            f"{path}: no 'participant_id' column (columns: {', '.join(fields)})"
        )
    if column not in fields:
        raise DatasetError(
            f"{path}: no column {column!r} (columns: {', '.join(fields)})"
        )
    return dict(_number(path, column, row) for row in rows)


def participant_values(table, subjects, path, column):
    """Each subject's value, matching folder names to participant ids.

    Parameters
    ----------
    table : dict of str to float
        From :func:`read_participants`.
    subjects : iterable of str
        Subject folder names; ``sub-01``, ``sub_1`` and ``1`` name the same
        participant.
    path : str or Path
        The table, for messages.
    column : str
        The column read, for messages.

    Returns
    -------
    dict of str to float
        subject -> value.

    Raises
    ------
    DatasetError
        A subject without a value.
    """
    by_key = {}
    for pid, value in table.items():
        by_key.setdefault(_subject_key(pid), value)
    out, missing = {}, []
    for subject in subjects:
        if subject in table:
            out[subject] = table[subject]
        elif _subject_key(subject) in by_key:
            out[subject] = by_key[_subject_key(subject)]
        else:
            missing.append(subject)
    if missing:
        raise DatasetError(
            f"{path}: no {column} for subject(s) {', '.join(sorted(missing))}"
        )
    return out


def find_participants(inputs, files):
    """The ``participants.tsv`` beside the inputs, or None.

    Parameters
    ----------
    inputs : str, Path or sequence of them
        As given to :func:`aae_tract.loading.load_dataset`; a folder's own
        table is looked for first.
    files : list of aae_tract.io.BundleFile
        The tractograms found; tables in their folder and its parent follow.

    Returns
    -------
    Path or None
    """
    candidates = []
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    for item in inputs:
        if Path(item).is_dir():
            candidates.append(Path(item) / "participants.tsv")
    for bundle_file in files:
        candidates.append(bundle_file.path.parent / "participants.tsv")
        candidates.append(bundle_file.path.parent.parent / "participants.tsv")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None
