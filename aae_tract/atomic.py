"""Writing files so that a reader never sees half of one.

Every output of aae_tract (models, checkpoints, tractograms, JSON, pictures) is
written under a hidden temporary name in its destination folder and renamed
into place once complete: a killed run, a full disk or a second writer leaves
either the old file or the new one, never a mix.
"""

import json
import os
import uuid
from pathlib import Path

from aae_tract.errors import AAETractError


def temporary_path(path):
    """A unique hidden name beside ``path``, keeping its extension.

    The file is not created, so whatever writes it gives it the usual
    permissions (the umask), unlike ``tempfile.mkstemp``'s 0600.
    """
    path = Path(path)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.stem}.{tag}.tmp{path.suffix}")


def temporary_folder(path):
    """Create and return a unique hidden folder beside ``path``.

    Made with ``mkdir``, so it gets the permissions the umask gives (unlike
    ``tempfile.mkdtemp``'s 0700); rename it to ``path`` once complete.
    """
    tmp = temporary_path(path)
    tmp.mkdir()
    return tmp


def write_atomic(path, write, *, error=AAETractError):
    """Call ``write(tmp)`` for a temporary name beside ``path``, then rename it.

    Parameters
    ----------
    path : str or Path
        The destination; its folder is created.
    write : callable
        Writes the whole file at the path it is given.
    error : type
        Exception class an ``OSError`` (full disk, read-only folder, ...) is
        turned into, with a message naming ``path``.

    Returns
    -------
    Path
        ``path``. On any failure the temporary file is removed and an existing
        file at ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise error(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        try:
            tmp.unlink()
        except OSError:  # never created, or the folder is read-only
            pass
    return path


def write_text_atomic(path, text, *, error=AAETractError):
    """Write ``text`` to ``path`` atomically (flushed to disk before the rename)."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write, error=error)


def write_json_atomic(path, payload, *, error=AAETractError):
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n", error=error)
