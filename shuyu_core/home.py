"""The operating domain (SHUYU_HOME) and its zones.

``raw/`` ingested snapshots, ``work/`` desensitized and intermediate data, ``releases/``
built products awaiting review, ``published/`` the only egress. State lives in a database:
SQLite ``state.db`` inside the home by default, or ``SHUYU_DATABASE_URL`` (PostgreSQL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ZONES = ("raw", "work", "releases", "published")


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls, root: str | Path | None = None) -> Home:
        base = root if root is not None else os.environ.get("SHUYU_HOME", ".shuyu")
        return cls(Path(base).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def published(self) -> Path:
        return self.root / "published"

    @property
    def tmp(self) -> Path:
        """Staging area for atomic writes; on the same filesystem as the zones."""
        return self.root / ".tmp"

    @property
    def database_url(self) -> str:
        return os.environ.get("SHUYU_DATABASE_URL") or f"sqlite:///{self.root / 'state.db'}"

    def ensure(self) -> Home:
        for zone in (*ZONES, ".tmp"):
            (self.root / zone).mkdir(parents=True, exist_ok=True)
        return self


def state_engine(home: Home) -> Engine:
    """The SQLAlchemy engine of this home's state database, tables created."""
    from shuyu_core.db import engine_for

    home.ensure()
    return engine_for(home.database_url)
