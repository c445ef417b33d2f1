"""Fetchers for the datasets aae_tract trains and tests on.

Two real datasets, both arranged as ``<root>/<subject>/<BUNDLE>.trk``:

- ``minimal_bundles``: the small set of real bundles that ships inside the dipy
  package (``dipy/data/files/minimal_bundles.zip``: 5 subjects x AF_L, CST_R,
  CC_ForcepsMajor, 50 streamlines each). Offline; the embedded default of every
  aae_tract command.
- ``hcp842``: DIPY's 80-bundle HCP842 atlas (one "subject"), downloaded through
  DIPY's own fetcher. Needs the network; without it the fetch fails at once with
  a clear message.

Archives are md5-checked and extracted safely: a member whose path is absolute
or escapes the target folder makes the whole archive refused. Extraction goes to
a temporary folder that is renamed into place once complete, so an interrupted
fetch never leaves a half-extracted dataset behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import stat
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from aae_tract.atomic import temporary_folder, temporary_path
from aae_tract.errors import FetcherError

logger = logging.getLogger(__name__)

#: Environment variable that overrides the data home.
DATA_HOME_ENV = "AAE_TRACT_HOME"

#: md5 of ``dipy/data/files/minimal_bundles.zip`` as shipped with dipy 1.12.
MINIMAL_BUNDLES_MD5 = "c140e79986df788661a7538690ae02e1"
MINIMAL_BUNDLES_SUBJECTS = ("sub_1", "sub_2", "sub_3", "sub_4", "sub_5")
MINIMAL_BUNDLES_NAMES = ("AF_L", "CST_R", "CC_ForcepsMajor")

#: DIPY's download of the 80-bundle HCP842 atlas (see
#: ``dipy.data.fetcher.fetch_bundle_atlas_hcp842``).
HCP842_URL = "https://ndownloader.figshare.com/files/13638644"
HCP842_ZIP = "Atlas_80_Bundles.zip"
HCP842_MD5 = "78331d527a10ec000d4f33bac472e099"
HCP842_SUBJECT = "hcp842"
#: Seconds allowed for the reachability check before DIPY's fetcher is called.
NETWORK_TIMEOUT = 3.0

_COMPLETE_MARKER = ".aae_tract_complete"


def data_home() -> Path:
    """Folder where aae_tract keeps fetched and generated datasets.

    Returns
    -------
    home : Path
        ``$AAE_TRACT_HOME`` when that environment variable is set and not empty,
        else ``~/.aae_tract``. The folder is not created here.
    """
    env = os.environ.get(DATA_HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path("~").expanduser() / ".aae_tract"


def _resolve_home(home) -> Path:
    return data_home() if home is None else Path(home).expanduser()


def md5sum(path, *, chunk_size=1 << 20) -> str:
    """md5 hex digest of a file, read in chunks.

    Parameters
    ----------
    path : str or Path
        File to hash.
    chunk_size : int, optional
        Bytes read at a time.

    Returns
    -------
    digest : str
        Lower-case hexadecimal md5.
    """
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path, expected, *, downloaded=True) -> bool:
    """Compare a file's md5 with the expected one.

    Parameters
    ----------
    path : str or Path
        File to check.
    expected : str or None
        Expected md5 hex digest; None skips the check.
    downloaded : bool, optional
        True for a file that came over the network: a mismatch raises
        :class:`FetcherError`. False for a file shipped inside an installed
        package (whose version may legitimately differ): a mismatch logs a
        warning and the file is used.

    Returns
    -------
    ok : bool
        True when the digest matches (or no digest was given).

    Raises
    ------
    FetcherError
        The file is missing, or a downloaded file's md5 does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FetcherError(f"{path}: archive not found")
    if expected is None:
        return True
    got = md5sum(path)
    if got == expected.lower():
        return True
    msg = f"{path}: md5 checksum mismatch (expected {expected}, got {got})"
    if downloaded:
        raise FetcherError(
            msg + "; the download is corrupt or was tampered with, delete it and "
            "fetch again"
        )
    logger.warning("%s; using it anyway (shipped with an installed package)", msg)
    return False


def _member_relpath(name: str, archive) -> PurePosixPath:
    """Relative path of a zip member, or FetcherError when it is unsafe."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    drive_like = len(norm) >= 2 and norm[1] == ":"
    if norm.startswith("/") or drive_like or p.is_absolute():
        raise FetcherError(
            f"{archive}: refusing archive, member {name!r} has an absolute path"
        )
    parts = [q for q in p.parts if q not in ("", ".")]
    if ".." in parts:
        raise FetcherError(
            f"{archive}: refusing archive, member {name!r} has a '..' component "
            "that may escape the target folder"
        )
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def check_zip_members(zf: zipfile.ZipFile, archive) -> list[tuple]:
    """Validate every member of an open zip archive.

    Parameters
    ----------
    zf : zipfile.ZipFile
        Open archive.
    archive : str or Path
        Its path, for messages.

    Returns
    -------
    members : list of (zipfile.ZipInfo, PurePosixPath)
        Each member with its safe relative path.

    Raises
    ------
    FetcherError
        A member has an absolute path, a ``..`` component, or is a symbolic
        link: the whole archive is refused.
    """
    out = []
    for info in zf.infolist():
        rel = _member_relpath(info.filename, archive)
        mode = (info.external_attr >> 16) & 0xFFFF
        if stat.S_ISLNK(mode):
            raise FetcherError(
                f"{archive}: refusing archive, member {info.filename!r} is a "
                "symbolic link"
            )
        out.append((info, rel))
    return out


def extract_zip(
    archive,
    target,
    *,
    md5=None,
    downloaded=True,
    rename: Callable[[PurePosixPath], PurePosixPath | None] | None = None,
) -> Path:
    """Check and extract a zip archive into a folder, atomically.

    All members are validated before anything is written. Files go to a
    temporary folder beside ``target`` which is renamed to ``target`` when
    complete; an existing ``target`` is replaced.

    Parameters
    ----------
    archive : str or Path
        The zip file.
    target : str or Path
        Folder to create with the archive's content.
    md5 : str, optional
        Expected md5 of the archive (see :func:`check_md5`).
    downloaded : bool, optional
        Whether a checksum mismatch is an error (True) or a warning (False).
    rename : callable, optional
        Maps a member's relative path to the relative path to write it to, or
        None to skip the member. Directories are created as needed.

    Returns
    -------
    target : Path
        The extracted folder.

    Raises
    ------
    FetcherError
        Checksum mismatch, unsafe member, or an unreadable archive.
    """
    archive = Path(archive)
    target = Path(target)
    check_md5(archive, md5, downloaded=downloaded)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_folder(target)
    except OSError as e:
        raise FetcherError(f"{target}: cannot extract {archive} here ({e})") from e
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as e:
            raise FetcherError(f"{archive}: not a readable zip archive ({e})") from e
        with zf:
            members = check_zip_members(zf, archive)
            tmp_resolved = tmp.resolve()
            for info, rel in members:
                if info.is_dir():
                    continue
                dest_rel = rename(rel) if rename is not None else rel
                if dest_rel is None:
                    continue
                dest = (tmp / Path(*PurePosixPath(dest_rel).parts)).resolve()
                if tmp_resolved not in dest.parents:
                    raise FetcherError(
                        f"{archive}: refusing archive, member {info.filename!r} "
                        "escapes the target folder"
                    )
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except (zipfile.BadZipFile, EOFError) as e:
                    raise FetcherError(
                        f"{archive}: member {info.filename!r} cannot be read ({e})"
                    ) from e
        (tmp / _COMPLETE_MARKER).write_text(md5sum(archive) + "\n")
        _move_into_place(tmp, target)
    except OSError as e:  # disk full, read-only folder, ...
        raise FetcherError(f"{target}: cannot extract {archive} here ({e})") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename folder ``tmp`` to ``target``, replacing an existing ``target``."""
    old = None
    if target.exists():
        old = temporary_path(target)
        try:
            os.replace(target, old)
        except FileNotFoundError:
            # Another process moved it away first, to put its own copy there.
            old = None
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process put a complete copy there first.
        if not _is_complete(target):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_complete(folder: Path, expected=()) -> bool:
    folder = Path(folder)
    if not (folder / _COMPLETE_MARKER).is_file():
        return False
    return all(
        (folder / e).is_file() and (folder / e).stat().st_size > 0 for e in expected
    )


def _minimal_expected() -> list[str]:
    return [
        f"{s}/{b}.trk" for s in MINIMAL_BUNDLES_SUBJECTS for b in MINIMAL_BUNDLES_NAMES
    ]


def minimal_bundles_archive() -> Path:
    """Path of the ``minimal_bundles.zip`` shipped inside the dipy package.

    Returns
    -------
    path : Path
        The zip file.

    Raises
    ------
    FetcherError
        The installed dipy does not ship it.
    """
    try:
        from dipy.data import get_fnames

        path = Path(get_fnames(name="minimal_bundles"))
    except Exception as e:  # dipy raises several kinds for unknown names
        raise FetcherError(
            f"the installed dipy does not ship minimal_bundles.zip ({e}); "
            "install dipy >= 1.9"
        ) from e
    if not path.is_file():
        raise FetcherError(f"{path}: dipy's minimal_bundles.zip is missing")
    return path


def fetch_minimal_bundles(data_home=None) -> Path:
    """Extract the real bundles shipped inside dipy into the data home.

    Five subjects (``sub_1`` ... ``sub_5``), each with ``AF_L.trk``,
    ``CST_R.trk`` and ``CC_ForcepsMajor.trk`` (50 streamlines each). Works
    offline. Does nothing when the folder is already complete.

    Parameters
    ----------
    data_home : str or Path, optional
        Data home; default :func:`data_home`.

    Returns
    -------
    folder : Path
        ``<data_home>/minimal_bundles``, holding ``<subject>/<BUNDLE>.trk``.

    Raises
    ------
    FetcherError
        The archive is missing, unreadable or unsafe.
    """
    home = _resolve_home(data_home)
    target = home / "minimal_bundles"
    expected = _minimal_expected()
    if _is_complete(target, expected):
        logger.debug("minimal_bundles already in %s", target)
        return target
    archive = minimal_bundles_archive()
    logger.info("extracting %s into %s", archive, target)
    extract_zip(archive, target, md5=MINIMAL_BUNDLES_MD5, downloaded=False)
    missing = [e for e in expected if not (target / e).is_file()]
    if missing:
        raise FetcherError(
            f"{archive}: archive lacks {len(missing)} expected bundle file(s), "
            f"e.g. {missing[0]}"
        )
    return target


def check_network(url, *, timeout=NETWORK_TIMEOUT) -> None:
    """Fail fast when the host of ``url`` cannot be reached.

    Name resolution and a TCP connection to the host's port are both bounded by
    ``timeout`` (name resolution runs in a daemon thread, since the resolver
    has no timeout of its own).

    Parameters
    ----------
    url : str
        URL whose host must be reachable.
    timeout : float, optional
        Seconds allowed in all.

    Raises
    ------
    FetcherError
        The host cannot be resolved or connected to within ``timeout``.
    """
    parsed = urlparse(url)
    host = parsed.hostname
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: dict = {}

    def _try():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except BaseException as e:  # reported to the caller below
            result["error"] = e

    worker = threading.Thread(target=_try, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if result.get("ok"):
        return
    reason = result.get("error", f"no answer within {timeout:g} s")
    raise FetcherError(
        f"{url}: this dataset needs the network, and could not reach {host}: "
        f"{reason}. Connect to the internet and try again, or use the offline "
        "datasets 'minimal_bundles' or 'phantom'."
    )


def _dipy_fetch_hcp842() -> Path:
    """Run DIPY's HCP842 fetcher; return the folder holding its zip."""
    from dipy.data import fetcher as dipy_fetcher

    _, folder = dipy_fetcher.fetch_bundle_atlas_hcp842()
    return Path(folder)


def _hcp842_rename(rel: PurePosixPath) -> PurePosixPath | None:
    parts = rel.parts
    if len(parts) >= 2 and parts[-2] == "bundles" and rel.suffix == ".trk":
        return PurePosixPath(HCP842_SUBJECT) / rel.name
    return None


def fetch_hcp842(data_home=None) -> Path:
    """DIPY's 80-bundle HCP842 atlas, arranged as labelled bundles.

    Downloads through :func:`dipy.data.fetch_bundle_atlas_hcp842` (into DIPY's
    own data folder, about 300 MB), checks its md5, and extracts the bundle
    files as one subject. Needs the network: the host is checked first and the
    fetch fails within seconds when it cannot be reached.

    Parameters
    ----------
    data_home : str or Path, optional
        Data home; default :func:`data_home`.

    Returns
    -------
    folder : Path
        ``<data_home>/hcp842`` holding ``hcp842/<BUNDLE>.trk``.

    Raises
    ------
    FetcherError
        No network, a failed download, a checksum mismatch or an unsafe
        archive.
    """
    home = _resolve_home(data_home)
    target = home / "hcp842"
    if _is_complete(target) and any((target / HCP842_SUBJECT).glob("*.trk")):
        logger.debug("hcp842 already in %s", target)
        return target
    check_network(HCP842_URL)
    logger.info("downloading the HCP842 atlas with DIPY (about 300 MB)")
    try:
        folder = _dipy_fetch_hcp842()
    except FetcherError:
        raise
    except Exception as e:  # DIPY raises its own FetcherError, URLError, OSError
        raise FetcherError(f"{HCP842_URL}: DIPY could not fetch the atlas: {e}") from e
    archive = folder / HCP842_ZIP
    extract_zip(archive, target, md5=HCP842_MD5, downloaded=True, rename=_hcp842_rename)
    n = len(list((target / HCP842_SUBJECT).glob("*.trk")))
    if n == 0:
        shutil.rmtree(target, ignore_errors=True)
        raise FetcherError(f"{archive}: no bundles/*.trk found in the archive")
    logger.info("hcp842: %d bundles in %s", n, target / HCP842_SUBJECT)
    return target
