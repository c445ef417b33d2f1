"""Tractograms larger than memory: read and write them block by block.

:func:`aae_tract.io.load_bundle` reads a whole tractogram at once, which suits
bundles. A whole-brain tractogram of millions of streamlines does not fit so
easily: :class:`TractogramStream` reads a ``.trk`` or ``.tck`` file a block of
streamlines at a time (plain ``.trk`` files with the chunked reader of
:mod:`aae_tract.trk`, the others with nibabel's lazy loading), in RAS+ mm, with
the same checks as ``load_bundle`` (unusable streamlines skipped and counted,
truncated files refused, the header's count compared), and writes any subset
of its streamlines to a new file in the same space, again a block at a time.
Memory then depends on the block size, not on the file.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from aae_tract.errors import TractogramError
from aae_tract.io import _file_identity

logger = logging.getLogger(__name__)

__all__ = ["STREAM_EXTENSIONS", "TractogramStream"]

#: Extensions read block by block (``.trx`` is read whole by ``load_bundle``).
STREAM_EXTENSIONS = (".trk", ".tck")

#: Bytes of a plain ``.trk`` body read at a time (4 MiB: a million
#: streamlines labelled 1.10-1.12x faster than with 64 MiB chunks,
#: ``benchmarks/bench_label_speed.py --chunk_mib 4 64``).
CHUNK_BYTES = 1 << 22

#: Streamlines per block of the other readers.
BLOCK = 65536


class TractogramStream:
    """A ``.trk`` or ``.tck`` file read block by block, in RAS+ mm.

    Its usable streamlines (finite, in range, at least ``min_points`` points)
    are numbered from 0 in file order: that is the order of iteration, of
    :meth:`take` and of the mask given to :meth:`write`. Each pass reads the
    file again; the first one counts what it skips (logged once) and checks
    the file against its header.

    Parameters
    ----------
    path : str or Path
        A ``.trk`` or ``.tck`` file.
    reference : str or Path, optional
        Space of a ``.tck`` file: a NIfTI image or a ``.trk`` in the same
        space. Ignored for ``.trk``.
    min_points : int, optional
        Streamlines with fewer points are skipped.

    Raises
    ------
    TractogramError
        Missing file, another extension, missing or unusable reference, or a
        header that describes an invalid space. An unreadable body, an empty
        file or one without a usable streamline is reported by the first pass.
    """

    def __init__(self, path, *, reference=None, min_points=2):
        from dipy.io.utils import get_reference_info

        from aae_tract.io import _check_path, _check_space, _reference_for

        self.path, self.ext = _check_path(path)
        if self.ext not in STREAM_EXTENSIONS:
            raise TractogramError(
                f"{self.path}: only {' and '.join(STREAM_EXTENSIONS)} files are "
                "read block by block"
            )
        self.reference = _reference_for(self.path, self.ext, reference)
        try:
            if self.ext == ".trk":  # the header alone (DIPY would peek at the body)
                from aae_tract.trk import _HEADER_BYTES, _parse_header

                with open(self.path, "rb") as handle:
                    header, _ = _parse_header(handle.read(_HEADER_BYTES))
                self.space = get_reference_info(header)
            else:
                self.space = get_reference_info(self.reference)
        except Exception as exc:
            raise TractogramError(
                f"{self.path}: cannot read its space ({type(exc).__name__}: {exc})"
            ) from exc
        if self.ext == ".trk":
            _check_space(self.path, *self.space[:3], what="header")
        self.min_points = int(min_points)
        self._count = None

    # -- reading ---------------------------------------------------------------
    def _raw_blocks(self):
        """ArraySequences of every streamline, in file order, RAS+ mm."""
        try:
            plain = _plain_trk(self.path) if self.ext == ".trk" else None
            if plain is not None:
                yield from _plain_trk_blocks(self.path, *plain)
                return
            lazy = nib.streamlines.load(str(self.path), lazy_load=True)
            block = []
            for s in lazy.tractogram.to_world().streamlines:
                block.append(s)
                if len(block) == BLOCK:
                    yield nib.streamlines.ArraySequence(block)
                    block = []
            if block:
                yield nib.streamlines.ArraySequence(block)
        except TractogramError:
            raise
        except Exception as exc:  # nibabel raises many kinds
            raise TractogramError(
                f"{self.path}: cannot read tractogram, the file is truncated or "
                f"corrupt ({type(exc).__name__}: {exc})"
            ) from exc

    def blocks(self):
        """Yield the usable streamlines, a block (ArraySequence) at a time.

        Raises
        ------
        TractogramError
            The file cannot be read, holds another number of streamlines than
            its header declares, is empty, has no usable streamline, or was
            replaced or modified since the first pass.
        """
        from aae_tract.io import check_counts, valid_streamline_mask

        first = self._count is None
        if first:
            self._identity = _file_identity(self.path)
        self._check_unchanged()
        n_total = n_usable = n_nonfinite = n_short = n_points = 0
        for block in self._raw_blocks():
            with np.errstate(invalid="ignore", over="ignore"):
                keep, nonfinite, short = valid_streamline_mask(
                    block, min_points=self.min_points
                )
            n_total += len(block)
            n_points += int(np.sum(block._lengths))
            n_nonfinite += nonfinite
            n_short += short
            if not keep.all():
                block = block[np.flatnonzero(keep)]
            n_usable += len(block)
            if len(block):
                yield block
        self._check_unchanged()
        if not first:
            return
        check_counts(self.path, self.ext, n_total, n_points)
        if n_total == 0:
            raise TractogramError(
                f"{self.path}: the tractogram is empty (no streamlines)"
            )
        if n_usable == 0:
            raise TractogramError(
                f"{self.path}: no usable streamline: {n_nonfinite} of {n_total} "
                "have NaN/inf or out-of-range coordinates, "
                f"{n_short} have fewer than {self.min_points} points"
            )
        if n_usable < n_total:
            logger.warning(
                "%s: skipped %d of %d streamlines (%d with NaN/inf or "
                "out-of-range coordinates, %d with fewer than %d points)",
                self.path,
                n_total - n_usable,
                n_total,
                n_nonfinite,
                n_short,
                self.min_points,
            )
        self._count = n_usable

    def _check_unchanged(self):
        if _file_identity(self.path) != self._identity:
            raise TractogramError(
                f"{self.path}: the file changed since it was first read (another "
                "process wrote it?); read it again"
            )

    def __iter__(self):
        for block in self.blocks():
            yield from block

    @property
    def size_hint(self):
        """The number of usable streamlines if a pass has counted them, else
        the number the header declares (which also counts streamlines a pass
        would skip), else None. Reads no body: for progress bars."""
        if self._count is not None:
            return self._count
        from aae_tract.io import declared_count

        try:
            return declared_count(self.path, self.ext)
        except Exception:  # an unreadable header is the first pass's to report
            return None

    def __len__(self):
        """Number of usable streamlines (a pass over the file the first time)."""
        if self._count is None:
            for _ in self.blocks():
                pass
        return self._count

    def take(self, rows):
        """The usable streamlines at ``rows`` (in that order), one pass.

        Parameters
        ----------
        rows : array_like of int
            Positions among the usable streamlines.

        Returns
        -------
        list of ndarray (n, 3)
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        out = [None] * len(rows)
        start, k = 0, 0
        with contextlib.closing(self.blocks()) as blocks:
            for block in blocks:
                stop = start + len(block)
                while k < len(wanted) and wanted[k] < stop:
                    out[order[k]] = np.array(block[wanted[k] - start])
                    k += 1
                start = stop
                if k == len(wanted):
                    break
        if k < len(wanted):
            raise IndexError(f"row {wanted[k]} past the {start} usable streamlines")
        return out

    # -- writing ---------------------------------------------------------------
    def write(self, path, keep):
        """Write the usable streamlines where ``keep`` is True, in this file's space.

        See :meth:`write_groups`, of which this is the one-file case.

        Parameters
        ----------
        path : str or Path
            Destination ``.trk``, ``.tck`` or ``.trx`` file.
        keep : array_like of bool, shape (len(self),)
            Which usable streamlines to write.

        Returns
        -------
        Path
        """
        keep = np.asarray(keep, dtype=bool)
        return self.write_groups({True: path}, keep)[True]

    def write_groups(self, paths, groups):
        """Write each group of usable streamlines to its own file, in this file's space.

        ``.trk`` and ``.tck`` files are written together in one pass over
        this file, a block at a time, byte for byte as DIPY's
        ``save_tractogram`` writes them; a ``.trx`` file (no streaming
        writer) takes a pass of its own and holds its streamlines in memory.
        Atomic: each file appears complete or not at all.

        Parameters
        ----------
        paths : dict
            Group value -> destination ``.trk``, ``.tck`` or ``.trx`` file.
            Streamlines of a group without a path are not written.
        groups : array_like, shape (len(self),)
            The group of each usable streamline.

        Returns
        -------
        dict
            Group value -> written Path.
        """
        from aae_tract.io import check_extension

        groups = np.asarray(groups)
        if len(groups) != len(self):
            raise ValueError(f"{len(groups)} flags for {len(self)} streamlines")
        paths = {g: Path(p) for g, p in paths.items()}
        together = {
            g: p for g, p in paths.items() if check_extension(p) in STREAM_EXTENSIONS
        }
        written = self._write_streamed(together, groups) if together else {}
        for group, path in paths.items():
            if group not in together:
                written[group] = self._write_one(path, groups == group)
        return written

    def _write_streamed(self, paths, groups):
        """The ``.trk`` and ``.tck`` files of :meth:`write_groups`, in one pass."""
        writers = {}
        try:
            for group, path in paths.items():
                kind = _TrkWriter if path.suffix.lower() == ".trk" else _TckWriter
                writers[group] = kind(path, self.space)
            start = 0
            for block in self.blocks():
                labels = groups[start : start + len(block)]
                start += len(block)
                for group, writer in writers.items():
                    rows = np.flatnonzero(labels == group)
                    if len(rows):
                        writer.append(block[rows] if len(rows) < len(block) else block)
            return {g: w.close() for g, w in writers.items()}
        finally:
            for writer in writers.values():
                writer.abort()

    def _write_one(self, path, keep):
        """One ``.trx`` file of :meth:`write_groups` (held in memory)."""
        from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram

        from aae_tract.io import _check_trx_available, save_tractogram

        _check_trx_available(path)
        lines, start = [], 0
        for block in self.blocks():
            rows = np.flatnonzero(keep[start : start + len(block)])
            lines.extend(np.array(block[i]) for i in rows)  # copies: blocks can go
            start += len(block)
        reference = str(self.path) if self.ext == ".trk" else self.reference
        sft = StatefulTractogram(lines, reference, Space.RASMM, origin=Origin.NIFTI)
        return save_tractogram(sft, path)


class _TrkWriter:
    """A ``.trk`` file written a block at a time under a temporary name.

    The header is nibabel's (written for an empty tractogram of the space,
    as DIPY's ``save_tractogram`` makes it); each block's streamlines go to
    TrackVis voxmm with the header's affine and are appended as the int32
    point count and float32 points of each streamline; :meth:`close` sets the
    streamline count and renames the file into place.
    """

    def __init__(self, path, space):
        from aae_tract.atomic import temporary_path

        self.path = Path(path)
        self.tmp = temporary_path(self.path)
        self.count = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._start(space)
        except Exception as exc:
            self.abort()
            why = exc.strerror if isinstance(exc, OSError) else None
            raise TractogramError(
                f"{self.path}: cannot write ({why or f'{type(exc).__name__}: {exc}'})"
            ) from exc

    def _start(self, space):
        """Write the header of an empty file; open it for the body."""
        from dipy.io.utils import create_tractogram_header
        from nibabel.streamlines import Tractogram
        from nibabel.streamlines.trk import TrkFile, get_affine_rasmm_to_trackvis

        header = create_tractogram_header(TrkFile, *space)
        empty = Tractogram([], affine_to_rasmm=np.eye(4))
        TrkFile(empty, header=header).save(str(self.tmp))
        written = TrkFile.load(str(self.tmp), lazy_load=True).header
        self.affine = get_affine_rasmm_to_trackvis(written).astype(np.float64)
        self.handle = open(self.tmp, "r+b")
        self.handle.seek(0, 2)

    def _body(self, block):
        """The bytes of a block's streamlines."""
        lengths = np.asarray(block._lengths, dtype=np.int64)
        points = _points(block).astype(np.float64)
        voxmm = np.empty_like(points)
        for row in range(3):  # matrix-vector products: (n, 3) @ (3, 3) is slow
            voxmm[:, row] = points @ self.affine[row, :3] + self.affine[row, 3]
        words = np.empty(len(lengths) + 3 * len(voxmm), dtype="<i4")
        starts = np.concatenate([[0], np.cumsum(1 + 3 * lengths)[:-1]])
        is_point = np.ones(len(words), dtype=bool)
        is_point[starts] = False
        words[starts] = lengths
        words[is_point] = voxmm.astype("<f4").reshape(-1).view("<i4")
        return words.tobytes()

    def _finish(self):
        """Set the streamline count in the header."""
        self.handle.seek(988)  # nb_streamlines in the 1000-byte header
        self.handle.write(np.array([self.count], dtype="<i4").tobytes())

    def append(self, block):
        """Append the streamlines of an ArraySequence (RAS+ mm)."""
        try:
            self.handle.write(self._body(block))
        except OSError as exc:
            raise TractogramError(
                f"{self.path}: cannot write ({exc.strerror or exc})"
            ) from exc
        self.count += len(block)

    def close(self):
        """Finish the file, flush and rename it into place; the Path."""
        import os

        try:
            self._finish()
            self.handle.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise TractogramError(
                f"{self.path}: cannot write ({exc.strerror or exc})"
            ) from exc
        return self.path

    def abort(self):
        """Close and remove the temporary file (nothing once closed)."""
        handle = getattr(self, "handle", None)
        if handle is not None and not handle.closed:
            handle.close()
        try:
            self.tmp.unlink()
        except OSError:
            pass


class _TckWriter(_TrkWriter):
    """A ``.tck`` file written a block at a time under a temporary name.

    nibabel writes the header of an empty file (its fixed-width count and the
    end marker); the points, RAS+ mm, float32, go before the end marker with
    a NaN triple after each streamline, and :meth:`close` writes the end
    marker again and the count into the header.
    """

    def _start(self, space):
        from dipy.io.utils import create_tractogram_header
        from nibabel.streamlines import Tractogram
        from nibabel.streamlines.tck import TckFile

        header = create_tractogram_header(TckFile, *space)
        TckFile(Tractogram([], affine_to_rasmm=np.eye(4)), header=header).save(
            str(self.tmp)
        )
        raw = self.tmp.read_bytes()
        end = TckFile.EOF_DELIMITER.astype("<f4").tobytes()
        self.count_at = raw.find(b"\ncount: ") + len(b"\ncount: ")
        if self.count_at < len(b"\ncount: ") or not raw.endswith(end):
            raise TractogramError(f"{self.path}: unexpected .tck header from nibabel")
        self.end = end
        self.handle = open(self.tmp, "r+b")
        self.handle.seek(len(raw) - len(end))

    def _body(self, block):
        lengths = np.asarray(block._lengths, dtype=np.int64)
        points = _points(block).astype("<f4")
        out = np.full((len(points) + len(lengths), 3), np.nan, dtype="<f4")
        rows = np.arange(len(points)) + np.repeat(np.arange(len(lengths)), lengths)
        out[rows] = points
        return out.tobytes()

    def _finish(self):
        self.handle.write(self.end)
        self.handle.seek(self.count_at)
        self.handle.write(f"{self.count:010}".encode())


def _points(sequence):
    """The points of an ArraySequence (also of a view of some of its
    streamlines) as one (n, 3) array, in order."""
    lengths = np.asarray(sequence._lengths, dtype=np.int64)
    offsets = np.asarray(sequence._offsets, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    index = np.arange(int(lengths.sum())) + np.repeat(offsets - starts, lengths)
    return np.asarray(sequence._data)[index].reshape(-1, 3)


def _plain_trk(path):
    """``(offset, affine)`` of a plain ``.trk`` (see :mod:`aae_tract.trk`), or
    None for one that nibabel's reader should take."""
    from aae_tract.trk import _HEADER_BYTES, _is_plain, _parse_header

    try:
        with open(path, "rb") as handle:
            header, affine = _parse_header(handle.read(_HEADER_BYTES))
    except Exception:
        return None
    if not _is_plain(header):
        return None
    return int(header.get("_offset_data", _HEADER_BYTES)), affine


def _plain_trk_blocks(path, offset, affine):
    """ArraySequences of a plain ``.trk`` body, reading :data:`CHUNK_BYTES`
    at a time."""
    from aae_tract.trk import _streamlines

    body_bytes = path.stat().st_size - offset
    if body_bytes < 0 or body_bytes % 4:
        raise TractogramError(
            f"{path}: the body is {body_bytes} bytes, not whole 4-byte words: "
            "truncated or corrupt"
        )
    chunk_words = max(CHUNK_BYTES // 4, 4)
    rest = np.zeros(0, dtype="<i4")
    left = body_bytes // 4  # words not yet read
    with open(path, "rb") as handle:
        handle.seek(offset)
        while True:
            new = np.fromfile(handle, dtype="<i4", count=min(chunk_words, left))
            if not new.size:
                break
            left -= new.size
            words = np.concatenate([rest, new]) if rest.size else new
            counts, used = _whole_streamlines(path, words, left)
            if counts:
                yield _streamlines(words[:used], np.asarray(counts, np.int64), affine)
            rest = words[used:].copy()
    if rest.size:
        raise TractogramError(
            f"{path}: the file ends inside a streamline: truncated or corrupt"
        )


def _whole_streamlines(path, words, left):
    """Point counts of the streamlines complete in ``words``, and the words
    they take; ``left`` words of the file follow ``words``."""
    view = memoryview(np.ascontiguousarray(words)).cast("B").cast("i")
    n_words, position, counts = len(words), 0, []
    while position < n_words:
        count = view[position]
        end = position + 1 + 3 * count
        if count < 0 or end > n_words + left:
            raise TractogramError(
                f"{path}: a streamline of {count} points where "
                f"{max(n_words + left - position - 1, 0) // 3} are left in the "
                "file: truncated or corrupt"
            )
        if end > n_words:
            break
        counts.append(count)
        position = end
    return counts, position
