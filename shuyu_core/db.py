"""The state database: SQLite by default, PostgreSQL through SHUYU_DATABASE_URL.

Every module that keeps state declares its tables on ``METADATA``; ``engine_for`` creates
them on first use.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.exc import DBAPIError

from shuyu_core.errors import ValidationError

METADATA = MetaData()

_engines: dict[str, Engine] = {}
_created: dict[str, int] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers proceed while one writer holds the lock; busy_timeout makes
    # concurrent writers (several processes) wait instead of failing at once.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def engine_for(url: str) -> Engine:
    """One engine per URL per process, with every declared table created."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 60})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                try:
                    engine = create_engine(url, pool_pre_ping=True)
                except ImportError as exc:  # the URL names a driver that is not installed
                    raise ValidationError(
                        f"SHUYU_DATABASE_URL needs the database driver {exc.name or exc}, "
                        "which is not installed",
                        hint="use postgresql+psycopg://… with the postgres extra installed, "
                        "or unset it for SQLite",
                    ) from exc
            _engines[url] = engine
        # Modules declare tables on import; create whatever is new since the last call.
        if _created.get(url) != len(METADATA.tables):
            _create_tables(engine)
            _created[url] = len(METADATA.tables)
        return engine


# Small in-place schema changes of existing tables (a nullable column added later): each
# callable gets a connection after create_all and must be idempotent.
MIGRATIONS: list[Any] = []


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables; tolerate another process creating them at the same moment.

    ``checkfirst`` looks, then creates: two processes starting on a fresh database can both
    look before either creates, and the loser gets "already exists" (SQLite) or a duplicate
    key on the catalog (PostgreSQL). Looking again then finds the table.
    """
    for attempt in range(attempts):
        try:
            METADATA.create_all(engine, checkfirst=True)
            with engine.begin() as conn:
                for migrate in MIGRATIONS:
                    migrate(conn)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def reset_engines() -> None:
    """Dispose cached engines (tests switch SHUYU_HOME between cases)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _created.clear()
