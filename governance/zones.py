"""Where a command may write: only ``shuyu publish`` writes under ``published/`` (the egress).

``--out`` options (``audit export``, ``catalog export``, ``synth``, ``sources evaluate``)
write a file or directory the user names. Such a path is refused — one line, exit 5,
audited — when it resolves (symlinks followed) inside a zone the command does not own:
``published/`` (only publish writes there), ``raw/`` (only ingest), ``releases/`` (only
build), ``keys/``, the staging area ``.tmp/`` or the state database. Anywhere else (the
operator's working directory, ``$SHUYU_HOME/sources/``, ``work/exports/``) is allowed.
"""

from __future__ import annotations

from pathlib import Path

from governance.audit import record
from shuyu_core import ids
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home


class ZoneRefused(PermissionDenied):
    """An ``--out`` path inside a zone the command may not write (exit 5)."""


def forbidden_zones(home: Home) -> dict[str, Path]:
    """Zones no ``--out`` may reach, by name as shown to the user."""
    return {
        "published/": home.published,
        "raw/": home.raw,
        "releases/": home.releases,
        "keys/": home.root / "keys",
        ".tmp/": home.tmp,
        "state.db": home.root / "state.db",
    }


def _database_files(home: Home) -> list[Path]:
    """The SQLite state database and its companions (``-wal``, ``-shm``, ``-journal``):
    replacing the WAL file would silently drop the last committed transactions (audit
    entries and head alike), so those names are as forbidden as the database itself."""
    url = home.database_url
    db = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    files = [home.root / "state.db"] + ([db] if db is not None else [])
    return [f.parent / f"{f.name}{suffix}" for f in files for suffix in _DB_SUFFIXES]


_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


def guard_out(home: Home, out: Path, command: str) -> Path:
    """``out`` resolved, unless it lies in a zone ``command`` may not write (audited)."""
    target = out.expanduser()
    zones = forbidden_zones(home)
    zones.update({f.name: f for f in _database_files(home)})
    for name, zone in zones.items():
        if ids.inside(target, zone):
            exc = ZoneRefused(
                f"{command} --out {out} is inside {name} of the operating domain, which "
                f"{command} may not write",
                hint="write it outside raw/, releases/, published/ and keys/ (only "
                "'shuyu publish' writes published/; see docs/governance.md#identifiers-and-zones)",
            )
            record(
                home,
                f"{command.replace(' ', '.')}.out",
                str(out)[:400],
                "refused",
                {"reason": exc.message, "zone": name},
            )
            exc.audited = True
            raise exc
    return target.resolve()
