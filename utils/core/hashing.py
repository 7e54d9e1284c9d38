"""Digests of files and short keys of settings: the one place the suite hashes anything.

Every digest is SHA-256. A *key* is the first ``length`` hex digits of one; each use keeps the length
it has always had (run folders 12, embedding-cache signatures and slice stores 16), because the keys
name folders on disk and a changed key would orphan every run, cache and store made before.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

_BLOCK = 1 << 22  # 4 MiB reads: a SAM checkpoint (2.5 GB) never sits in memory whole


def file_sha256(path: str | Path) -> str:
    """The 64 hex digits of the SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def short_digest(data: bytes | str, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data`` (str: its UTF-8 bytes)."""
    if not 1 <= length <= 64:
        raise ValueError(f"length must be 1..64 hex digits, got {length}")
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:length]


def json_key(record: dict, length: int) -> str:
    """Key of a JSON-able dict: its ``json.dumps`` with sorted keys (so field order does not matter),
    anything JSON cannot hold (a Path) written as its ``str``, hashed and cut to ``length`` hex digits."""
    return short_digest(json.dumps(record, sort_keys=True, default=str), length)


def files_digest(paths: Iterable[str | Path], length: int = 64) -> str:
    """One digest of several files: each file's name, size and bytes, in the order given (sort the paths
    for a digest that does not depend on listing order)."""
    digest = hashlib.sha256()
    for path in paths:
        data = Path(path).read_bytes()
        digest.update(f"{Path(path).name}\n{len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()[:length]
