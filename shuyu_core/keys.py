"""Keys for keyed pseudonymization (HMAC-SM3) and SM4 encryption.

Keys never live in the repository. Lookup order for a key named ``NAME``:
``SHUYU_<NAME>_KEY`` (hex) in the environment, then the file named by ``SHUYU_<NAME>_KEY_FILE``,
then ``<SHUYU_HOME>/keys/<name>.key``. A missing key is a clear error.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shuyu_core import atomic
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home

PSEUDONYM = "pseudonym"
ENCRYPTION = "sm4"
_LENGTHS = {PSEUDONYM: 32, ENCRYPTION: 16}


def key_path(home: Home, name: str) -> Path:
    return home.root / "keys" / f"{name}.key"


def _decode(text: str, source: str, name: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ShuyuError(
            f"{name} key in {source} is not hex", hint="store the key as hexadecimal text"
        ) from None
    want = _LENGTHS.get(name)
    if want is not None and len(key) != want:
        raise ShuyuError(
            f"{name} key in {source} has {len(key)} bytes, expected {want}",
            hint=f"generate one with 'shuyu keys init' ({want} random bytes, hex)",
        )
    return key


def load_key(home: Home, name: str) -> bytes:
    env = f"SHUYU_{name.upper()}_KEY"
    if os.environ.get(env):
        return _decode(os.environ[env], f"${env}", name)
    file_env = f"SHUYU_{name.upper()}_KEY_FILE"
    path = Path(os.environ[file_env]) if os.environ.get(file_env) else key_path(home, name)
    if not path.exists():
        raise ShuyuError(
            f"no {name} key: ${env} is unset and {path} does not exist",
            hint=f"run 'shuyu keys init' or set ${env} / ${file_env}",
        )
    return _decode(path.read_text(encoding="utf-8"), str(path), name)


def init_key(home: Home, name: str) -> tuple[Path, bool]:
    """Create ``<home>/keys/<name>.key`` with fresh random bytes unless it exists."""
    path = key_path(home, name)
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic.write_text(path, secrets.token_hex(_LENGTHS.get(name, 32)) + "\n")
    os.chmod(path, 0o600)
    return path, True
