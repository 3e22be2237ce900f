"""National SM algorithms (国密) through OpenSSL: SM3 digests and HMAC-SM3."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def sm3_hex(data: bytes) -> str:
    return hashlib.new("sm3", data).hexdigest()


def sm3_file(path: Path, h: hashlib._Hash | None = None) -> str:
    digest = h or hashlib.new("sm3")
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sm3_files(paths: Iterable[Path]) -> str:
    """One SM3 digest over several files in the given order (name and content)."""
    digest = hashlib.new("sm3")
    for p in paths:
        digest.update(p.name.encode("utf-8") + b"\0")
        sm3_file(p, digest)
    return digest.hexdigest()


def hmac_sm3_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, "sm3").hexdigest()
