"""``shuyu pull CODE``: take what is new from the source the catalog declares for a resource.

- A file drop: every file matching the glob that was not taken before is ingested, one snapshot
  per file, oldest name first. What was taken (name, size, mtime, SM3, snapshot) is kept in
  ``work/pulls/<CODE>.json`` inside the home, written atomically after each snapshot. A file
  re-dropped with the same content is not taken again; a crash between a snapshot and that
  record is reconciled from the snapshots' ``source_path`` on the next pull.
- A 前置库 table: the rows whose watermark is greater than the last snapshot's watermark are
  read with polars' database reader in batches into a staging directory, then ingested like
  any export; the largest watermark read goes into the snapshot's manifest, so the next pull
  starts there. The snapshot appears by the ingest's atomic rename or not at all.

A source that cannot be reached raises :class:`SourceDown`, which is not a ``ShuyuError``: flows
retry it (``with_retries``), the CLI turns it into a one-line error. The URI is never printed
with its password.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.models import Resource
from catalogs.source_models import DatabaseSource, FileDropSource
from governance import roles
from governance.audit import record
from pipelines.ingest import PulledFrom, ingest_path
from shuyu_core import atomic, snapshots
from shuyu_core.errors import PermissionDenied, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_files
from shuyu_core.home import Home
from shuyu_core.journal import owner_tag

Progress = Callable[[str], None]
_BATCH_ROWS = 200_000


class SourceDown(ConnectionError):
    """The declared source did not answer; transient, so a flow retries it."""


@dataclass
class PullResult:
    resource: str
    kind: str
    snapshots: list[snapshots.Manifest] = field(default_factory=list)
    watermark_before: str | None = None
    watermark_after: str | None = None
    refused: dict[str, str] = field(default_factory=dict)  # file → the ingest's one line

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.snapshots)


def pull(
    home: Home, code: str, catalog: Catalog | None = None, progress: Progress | None = None
) -> PullResult:
    """Pull what is new for ``code`` from its declared ``source:``; audited as ``pull``."""
    home.ensure()
    roles.require(home, "ingest", f"resource/{code}")
    cat = catalog or Catalog.load()
    resource = cat.get(code)
    src = resource.source
    if src is None:
        exc = ValidationError(
            f"resource {code} declares no source: in the catalog",
            hint=f"add a source: block (file_drop or database) to {code}.yaml, or use "
            f"`shuyu ingest {code} --from FILE`",
        )
        record(home, "pull", code, "refused", {"error": exc.one_line()})
        exc.audited = True
        raise exc
    step = progress or (lambda _msg: None)
    with _pull_lock(home, code):
        try:
            if isinstance(src, FileDropSource):
                result = _pull_files(home, resource, src, cat, step)
            else:
                result = _pull_table(home, resource, src, cat, step)
        except SourceDown as exc:
            record(home, "pull", code, "error", {"kind": src.kind, "reason": str(exc)})
            raise
        except ShuyuError as exc:  # configuration (URI unset, file mode) or a refused export
            if not exc.audited:
                record(home, "pull", code, "refused", {"kind": src.kind, "error": exc.one_line()})
                exc.audited = True
            raise
    record(
        home,
        "pull",
        code,
        "ok",
        {
            "kind": result.kind,
            "snapshots": [m.snapshot_id for m in result.snapshots],
            "rows": result.rows,
            "watermark_before": result.watermark_before,
            "watermark_after": result.watermark_after,
            "refused": result.refused,
        },
    )
    if result.refused:
        # The good exports are in; the refused ones stay visible until the source unit drops
        # a corrected file (changed content is taken again).
        refusal = ValidationError(
            f"pull {code}: {len(result.snapshots)} snapshot(s) taken, {len(result.refused)} "
            "export(s) refused: "
            + "; ".join(f"{name}: {why}" for name, why in sorted(result.refused.items())),
            hint="the source unit corrects and drops the file again",
        )
        refusal.audited = True
        raise refusal
    return result


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text, bounded (driver errors span many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else type(exc).__name__


@contextlib.contextmanager
def _pull_lock(home: Home, code: str) -> Iterator[None]:
    """One pull per resource per home at a time (a second one waits), whatever the entry."""
    home.tmp.mkdir(parents=True, exist_ok=True)
    with (home.tmp / f"pull-{code}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- file drop --------------------------------------------------------------------------


def taken_path(home: Home, code: str) -> Path:
    return home.work / "pulls" / f"{code}.json"


def _load_taken(home: Home, code: str) -> dict[str, dict[str, Any]]:
    path = taken_path(home, code)
    if not path.exists():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _save_taken(home: Home, code: str, taken: dict[str, dict[str, Any]]) -> None:
    path = taken_path(home, code)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(taken, ensure_ascii=False, indent=1, sort_keys=True))


def _pull_files(
    home: Home,
    resource: Resource,
    src: FileDropSource,
    cat: Catalog,
    step: Progress,
) -> PullResult:
    code = resource.code
    directory = Path(src.directory)
    if not directory.is_dir():
        # A drop directory on a mount that is away is the file-drop form of a source that is down.
        raise SourceDown(f"file drop {directory} of {code} is not a reachable directory")
    # Dot files are uploads in progress by convention (the source unit renames when complete).
    files = sorted(p for p in directory.glob(src.glob) if p.is_file() and p.name[0] != ".")
    taken = _load_taken(home, code)
    by_source = {m.source_path: m for m in snapshots.list_snapshots(home, code)}
    result = PullResult(code, src.kind)
    for f in files:
        st = f.stat()
        prev = taken.get(f.name)
        if prev and prev["size"] == st.st_size and prev["mtime_ns"] == st.st_mtime_ns:
            if "refused" in prev:  # still the refused export: say so again, do not re-ingest
                result.refused[f.name] = prev["refused"]
            continue
        digest = sm3_files([f])
        label = str(f.resolve())
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sm3": digest}
        earlier = by_source.get(label)
        if prev and prev["sm3"] == digest:
            taken[f.name] = prev | entry
            if "refused" in prev:
                result.refused[f.name] = prev["refused"]
        elif prev is None and earlier and earlier.ingested_at.timestamp() >= st.st_mtime:
            # Ingested by a pull that stopped before it could record the file as taken.
            taken[f.name] = entry | {"snapshot": earlier.snapshot_id}
        else:
            step(f"ingesting {f.name}")
            try:
                manifest = ingest_path(home, code, f, catalog=cat, pulled=PulledFrom(label))
            except ValidationError as exc:  # a bad export (audited by the ingest): next file
                result.refused[f.name] = exc.one_line()
                taken[f.name] = entry | {"refused": exc.one_line()}
            else:
                result.snapshots.append(manifest)
                taken[f.name] = entry | {"snapshot": manifest.snapshot_id}
        _save_taken(home, code, taken)
    return result


# ---- 前置库 table -------------------------------------------------------------------------


def database_uri(home: Home, src: DatabaseSource, code: str) -> str:
    """The SQLAlchemy URI from the environment or a 0600 file; never from the catalog."""
    if src.uri_env is not None:
        uri = os.environ.get(src.uri_env, "").strip()
        if not uri:
            raise ShuyuError(
                f"{src.uri_env} (the 前置库 URI of {code}) is not set",
                hint=f"export {src.uri_env}=postgresql+psycopg://… on the worker, or name a "
                "uri_file in the catalog's source block",
            )
        return uri
    assert src.uri_file is not None
    path = Path(src.uri_file)
    path = path if path.is_absolute() else home.root / path
    if not path.is_file():
        raise ShuyuError(
            f"uri_file {path} of {code} does not exist",
            hint="write the SQLAlchemy URI into it (one line) with mode 0600",
        )
    if path.stat().st_mode & 0o077:
        raise PermissionDenied(
            f"uri_file {path} of {code} is readable by group or others",
            hint=f"chmod 600 {path} (it holds the 前置库 password)",
        )
    return path.read_text(encoding="utf-8").strip()


def _typed(resource: Resource, column: str, text: str) -> Any:
    """The stored watermark text back as the column's type, for a bound parameter."""
    kind = resource.field(column).type
    if kind == "date":
        return dt.date.fromisoformat(text[:10])
    if kind == "datetime":
        return dt.datetime.fromisoformat(text)
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return text


def last_watermark(home: Home, code: str) -> str | None:
    for m in reversed(snapshots.list_snapshots(home, code)):
        if m.watermark is not None:
            return m.watermark
    return None


def _select(src: DatabaseSource, quote: Callable[[str], str], since: bool) -> str:
    if src.table is not None:
        base = "SELECT * FROM " + ".".join(quote(p) for p in src.table.split("."))
    else:
        assert src.query is not None
        base = src.query.strip().rstrip(";")
    sql = f"SELECT * FROM ({base}) AS shuyu_src"
    if src.watermark is not None:
        wm = quote(src.watermark)
        sql += (f" WHERE {wm} > :since" if since else "") + f" ORDER BY {wm}"
    return sql


def _normalized(batch: pl.DataFrame, resource: Resource) -> pl.DataFrame:
    """One schema for every part: an all-null column gets its catalog type, numbers widen."""
    schema = resource.polars_schema
    casts = []
    for name, dtype in batch.schema.items():
        want = schema.get(name)
        if dtype == pl.Null:
            casts.append(pl.col(name).cast(want or pl.String()))
        elif want == pl.Int64() and dtype.is_integer():
            casts.append(pl.col(name).cast(pl.Int64()))
        elif want == pl.Float64() and dtype.is_numeric():
            casts.append(pl.col(name).cast(pl.Float64()))
    return batch.with_columns(casts) if casts else batch


def _pull_table(
    home: Home,
    resource: Resource,
    src: DatabaseSource,
    cat: Catalog,
    step: Progress,
) -> PullResult:
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.exc import SQLAlchemyError

    code = resource.code
    uri = database_uri(home, src, code)
    try:
        where = make_url(uri).render_as_string(hide_password=True)
    except Exception as exc:  # a malformed URI must not be echoed: it may hold the password
        raise ShuyuError(
            f"the 前置库 URI of {code} is not a SQLAlchemy URL",
            hint="dialect+driver://user@host:port/database",
        ) from exc
    label = f"{where} {src.table or 'query'}"
    before = last_watermark(home, code) if src.watermark else None
    result = PullResult(code, src.kind, watermark_before=before, watermark_after=before)
    try:
        engine = create_engine(uri, pool_pre_ping=True)
    except ImportError as exc:
        raise ShuyuError(
            f"the database driver for the 前置库 of {code} is not installed ({one_line(exc)})",
            hint="install it on the worker, e.g. pip install 'shuyu[postgres]'",
        ) from exc
    stage = Path(tempfile.mkdtemp(prefix=f"pull-{code}{owner_tag()}", dir=home.tmp))
    try:
        sql = _select(src, engine.dialect.identifier_preparer.quote, before is not None)
        params: dict[str, Any] = {}
        if before is not None and src.watermark is not None:
            params["since"] = _typed(resource, src.watermark, before)
        newest: Any = None
        parts = 0
        step(f"reading {label}" + (f" after {src.watermark} {before}" if before else ""))
        try:
            with engine.connect() as conn:
                batches = pl.read_database(
                    text(sql),
                    conn,
                    iter_batches=True,
                    batch_size=_BATCH_ROWS,
                    execute_options={"parameters": params},
                )
                for batch in batches:
                    if batch.height == 0:
                        continue
                    batch = _normalized(batch, resource)
                    if src.watermark is not None:
                        top = batch.get_column(src.watermark).max()
                        newest = top if newest is None or top > newest else newest
                    batch.write_parquet(stage / f"part-{parts:05d}.parquet")
                    parts += 1
        except SQLAlchemyError as exc:
            raise SourceDown(f"前置库 of {code} ({where}): {one_line(exc)}") from exc
        except OSError as exc:
            raise SourceDown(f"前置库 of {code} ({where}): {one_line(exc)}") from exc
        if parts == 0:
            step("nothing new")
            return result
        after = str(newest) if newest is not None else None
        manifest = ingest_path(home, code, stage, catalog=cat, pulled=PulledFrom(label, after))
        result.snapshots.append(manifest)
        result.watermark_after = after
        return result
    finally:
        engine.dispose()
        shutil.rmtree(stage, ignore_errors=True)
