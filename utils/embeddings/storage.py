"""Keyed, memory-mapped storage of image-encoder outputs: one folder per signature.

A storage folder ``<root>/<prefix>-<key>/`` holds::

    signature.json   everything the stored rows depend on (the key is a hash of it); checked on every open
    embeddings.npy   float16 (rows, C, h, w), memory-mapped (see :class:`MappedNpy`)
    done.npy         bool (rows,): which rows are written; merged under a lock, replaced atomically
    labels.npy       uint8 (rows, H, W), only when the rows carry their own labels (augmented views)

The folder is built in a private temporary folder and renamed into place, so two processes creating
the same storage at once both end with the one complete folder (the second rename fails and its
temporary folder is removed). Rows are written before ``done`` marks them, and ``done`` is merged
with what is on disk under a file lock, so processes filling rows side by side never unmark each
other's rows. Every damaged or missing file stops with an error that names it and the fix.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.core.errors import SuiteError
from utils.core.hashing import json_key
from utils.core.io import atomic_path, write_json


class CacheError(SuiteError, RuntimeError):
    """A damaged or mismatched cache file; the message names the file and how to fix it."""


def _rebuild_hint(folder: Path) -> str:
    return f"delete the folder {folder} and rerun to rebuild it"


class MappedNpy:
    """A .npy file memory-mapped as an ndarray, whose pages this process can let go of after use.

    A mapping keeps every page it has touched resident in the process: reading a whole cache through
    ``np.load(mmap_mode=...)`` makes peak RSS grow with the number of slices. :meth:`release` drops
    them (MADV_DONTNEED; the data stay in the file and the OS page cache), so memory stays flat in the
    store size however many rows a task reads.
    """

    def __init__(self, path: Path, writable: bool = False, shape: tuple | None = None, dtype=None):
        self.path = Path(path)
        self.writable = writable
        try:
            with open(self.path, "r+b" if writable else "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                file_shape, fortran_order, file_dtype = read_header(f)
                offset = f.tell()
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
            self.array = np.ndarray(file_shape, file_dtype, buffer=self._mmap, offset=offset,
                                    order="F" if fortran_order else "C")
        except (OSError, ValueError, TypeError) as exc:
            raise CacheError(f"{self.path}: not a readable cache array ({exc}); {_rebuild_hint(self.path.parent)}") from exc
        if (shape is not None and tuple(file_shape) != tuple(shape)) or (dtype is not None and file_dtype != dtype):
            raise CacheError(f"{self.path}: holds {file_dtype} {tuple(file_shape)}, expected {np.dtype(dtype)} "
                             f"{tuple(shape)}; {_rebuild_hint(self.path.parent)}")
        if not writable:
            self.array.flags.writeable = False

    def release(self) -> None:
        """Write dirty pages back (writable maps) and drop every mapped page from this process."""
        if self.writable:
            self._mmap.flush()
        if hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


def signature_key(signature: dict) -> str:
    """16 hex digits of the signature's SHA-256 (sorted keys, so field order does not matter)."""
    return json_key(signature, 16)


class EmbeddingStorage:
    """The storage folder of one signature: created if absent, validated on open."""

    def __init__(self, root: str | Path, prefix: str, signature: dict, row_shape: tuple[int, ...],
                 label_shape: tuple[int, int] | None = None):
        self.signature = signature
        self.rows = int(signature["rows"])
        self.row_shape = tuple(row_shape)
        self.label_shape = tuple(label_shape) if label_shape else None
        self.path = Path(root) / f"{prefix}-{signature_key(signature)}"
        if not self.path.exists():
            self._create()
        self._open()

    # ------------------------------------------------------------------------------------ files
    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        try:
            np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float16,
                                      shape=(self.rows, *self.row_shape)).flush()
            np.save(tmp / "done.npy", np.zeros(self.rows, dtype=bool))
            if self.label_shape:
                np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.uint8,
                                          shape=(self.rows, *self.label_shape)).flush()
            write_json(tmp / "signature.json", self.signature)
            try:
                os.rename(tmp, self.path)
            except OSError:
                if not (self.path / "signature.json").is_file():
                    raise  # not a lost race: a real failure
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _open(self) -> None:
        sig_path = self.path / "signature.json"
        if not sig_path.is_file():
            raise CacheError(f"{sig_path}: missing, so the cache in this folder cannot be trusted; "
                             f"{_rebuild_hint(self.path)}")
        try:
            stored = json.loads(sig_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CacheError(f"{sig_path}: unreadable ({exc}); {_rebuild_hint(self.path)}") from exc
        if stored != self.signature:
            raise CacheError(f"{sig_path}: cache signature does not match this run (stored {stored}, wanted "
                             f"{self.signature}); {_rebuild_hint(self.path)}")
        self._embeddings = MappedNpy(self.path / "embeddings.npy", shape=(self.rows, *self.row_shape),
                                     dtype=np.float16)
        self._labels = (MappedNpy(self.path / "labels.npy", shape=(self.rows, *self.label_shape), dtype=np.uint8)
                        if self.label_shape else None)
        self.done = self._read_done()

    def _read_done(self) -> np.ndarray:
        path = self.path / "done.npy"
        try:
            done = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CacheError(f"{path}: unreadable ({exc}); {_rebuild_hint(self.path)}") from exc
        if done.dtype != bool or done.shape != (self.rows,):
            raise CacheError(f"{path}: holds {done.dtype} {done.shape}, expected bool ({self.rows},); "
                             f"{_rebuild_hint(self.path)}")
        return done

    @contextlib.contextmanager
    def _locked(self):
        with open(self.path / ".done.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def refresh(self) -> np.ndarray:
        """Re-read ``done`` from disk (rows other processes finished since); returns it."""
        with self._locked():
            self.done |= self._read_done()
        return self.done

    # ------------------------------------------------------------------------------------ rows
    def missing(self, rows: Sequence[int]) -> list[int]:
        """The rows of ``rows`` not yet written, sorted and unique."""
        return sorted({int(r) for r in rows if not self.done[int(r)]})

    def write(self, rows: Sequence[int], embeddings: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Write float16 ``embeddings`` (len(rows), C, h, w) (and uint8 labels) to ``rows``, then mark them done."""
        rows = list(rows)
        array = MappedNpy(self.path / "embeddings.npy", writable=True)
        array.array[rows] = embeddings
        array.release()
        if labels is not None:
            label_array = MappedNpy(self.path / "labels.npy", writable=True)
            label_array.array[rows] = labels
            label_array.release()
        with self._locked():  # only after the rows are on disk, merged with other writers' rows
            self.done |= self._read_done()
            self.done[rows] = True
            with atomic_path(self.path / "done.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, self.done)

    def read(self, rows: Sequence[int]) -> np.ndarray:
        """float16 (len(rows), C, h, w) copy of written rows; unwritten rows are refused."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.done[rows].all():
            self.refresh()
            if not self.done[rows].all():
                missing = rows[~self.done[rows]][:5].tolist()
                raise CacheError(f"{self.path}: rows {missing} are not encoded yet; call ensure() first")
        chunk = self._embeddings.array[rows]  # fancy indexing copies
        self._embeddings.release()
        return chunk

    def read_label(self, row: int) -> np.ndarray:
        """uint8 (H, W) label stored with ``row`` (storages made with ``label_shape`` only)."""
        if self._labels is None:
            raise CacheError(f"{self.path}: this cache stores no labels")
        if not self.done[row] and not self.refresh()[row]:
            raise CacheError(f"{self.path}: row {row} is not built yet; call ensure() first")
        label = np.array(self._labels.array[row])
        self._labels.release()
        return label
