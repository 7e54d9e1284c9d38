"""Atomic writes: every result, cache index and checkpoint is written to a temporary file in the
same folder and renamed into place, so an interrupted run never leaves a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in configs and metrics; store them as plain JSON values.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def check_output_path(path: str | os.PathLike, reads: dict[str, Any], flag: str = "--out", fix: str = "") -> Path:
    """``path`` as an output a script may write, checked before any work: it is none of the files the run
    reads (``reads``: {flag: path or None}; the same file by any name), its nearest existing parent is a
    folder, and that folder is writable (``fix``: the flag to change, when ``flag`` names a file derived from
    it). Raises :class:`utils.core.errors.OutputError` naming the flag and the
    fix; returns ``path``."""
    from utils.core.errors import OutputError

    path = Path(path)
    for name, other in reads.items():
        if other is None:
            continue
        other = Path(other)
        same = path.resolve() == other.resolve() or (path.exists() and other.exists() and path.samefile(other))
        if same:
            raise OutputError(f"{flag} {path}: that is the file given as {name}; this run would overwrite your "
                              f"input. Choose another {fix or flag}")
    if path.is_dir():
        raise OutputError(f"{flag} {path}: a folder of that name exists; give a file path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder; choose an output path under a folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{flag} {path}: cannot write in {parent} (permission denied); choose a writable folder")
    return path
