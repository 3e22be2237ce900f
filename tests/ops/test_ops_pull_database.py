"""`shuyu pull` from a 前置库 table: a real PostgreSQL table under `make test-postgres`
(SHUYU_TEST_DATABASE_URL), a SQLite file in the normal suite.

Pulled twice, the second pull takes only the rows newer than the first's watermark; a source
that is down is retried, then fails with one line and leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from pull_testkit import catalog_with_source, scztdj_rows

from catalogs.catalog import Catalog
from governance import audit
from pipelines.flow_support import with_retries
from pipelines.pull import SourceDown, pull
from shuyu_core import snapshots
from shuyu_core.home import Home

_SA_TYPES = {pl.String: sa.Text, pl.Int64: sa.BigInteger, pl.Float64: sa.Float, pl.Date: sa.Date}


@pytest.fixture()
def source_url(tmp_path: Path) -> Iterator[str]:
    """A fresh database standing in for the 前置库."""
    admin_url = os.environ.get("SHUYU_TEST_DATABASE_URL")
    if not admin_url:
        yield f"sqlite:///{tmp_path / 'qianzhiku.db'}"
        return
    name = f"qianzhiku_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _insert(url: str, frame: pl.DataFrame) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "scztdj_export",
        meta,
        *(sa.Column(n, _SA_TYPES[type(t)]()) for n, t in frame.schema.items()),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), frame.to_dicts())
    engine.dispose()


def _declare(tmp_path: Path, mp: pytest.MonkeyPatch, url: str) -> None:
    mp.setenv("QIANZHIKU_SCZTDJ_URI", url)
    catalog_with_source(
        tmp_path,
        mp,
        "source: {kind: database, uri_env: QIANZHIKU_SCZTDJ_URI, table: scztdj_export, "
        "watermark: 更新日期}",
    )


def _split_by_watermark(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, dt.date]:
    cut = rows.get_column("更新日期").sort()[rows.height // 2]
    return rows.filter(pl.col("更新日期") <= cut), rows.filter(pl.col("更新日期") > cut), cut


def test_second_pull_takes_only_the_new_rows(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_url: str
) -> None:
    rows = scztdj_rows(3000)
    old, new, cut = _split_by_watermark(rows)
    assert old.height and new.height
    _declare(tmp_path, monkeypatch, source_url)
    _insert(source_url, old)

    first = pull(home, "SCZTDJ")
    assert first.rows == old.height
    assert first.watermark_before is None and first.watermark_after == cut.isoformat()
    assert first.snapshots[0].watermark == cut.isoformat()

    _insert(source_url, new)
    second = pull(home, "SCZTDJ")
    assert second.watermark_before == cut.isoformat()
    assert second.rows == new.height
    taken = snapshots.scan(home, "SCZTDJ", second.snapshots[0].snapshot_id).collect()
    assert sorted(taken.get_column("统一社会信用代码")) == sorted(
        new.get_column("统一社会信用代码")
    )
    assert second.watermark_after == new.get_column("更新日期").max().isoformat()  # type: ignore[union-attr]

    third = pull(home, "SCZTDJ")
    assert third.snapshots == [] and third.watermark_after == second.watermark_after
    assert len(snapshots.list_snapshots(home, "SCZTDJ")) == 2
    pulls = [e for e in audit.tail(home, 1000) if e["action"] == "pull"]
    assert [e["details"]["rows"] for e in pulls] == [old.height, new.height, 0]  # type: ignore[index]
    # The manifest names the source without its password.
    assert "scztdj_export" in first.snapshots[0].source_path


def _dead_url(source_url: str, tmp_path: Path) -> str:
    if source_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    return (
        sa.make_url(source_url)
        .set(port=1, password="s3cret-pw")
        .render_as_string(hide_password=False)
    )


def test_a_source_that_is_down_is_retried_then_fails_in_one_line(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_url: str
) -> None:
    _declare(tmp_path, monkeypatch, _dead_url(source_url, tmp_path))
    with pytest.raises(SourceDown) as caught:
        with_retries(lambda: pull(home, "SCZTDJ"), what="pull SCZTDJ", delay=0)
    line = str(caught.value)
    assert "\n" not in line and "SCZTDJ" in line
    assert "s3cret-pw" not in line
    errors = [e for e in audit.tail(home, 1000) if e["action"] == "pull"]
    assert [e["outcome"] for e in errors] == ["error"] * 3  # first try and two retries
    assert snapshots.list_snapshots(home, "SCZTDJ") == []
    assert not [p for p in home.tmp.iterdir() if p.name.startswith("pull-SCZTDJ") and p.is_dir()]


def test_a_source_that_dies_mid_read_leaves_nothing(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_url: str
) -> None:
    rows = scztdj_rows(3000)
    _declare(tmp_path, monkeypatch, source_url)
    _insert(source_url, rows)
    real = pl.read_database

    def first_batch_then_gone(*args: object, **kwargs: object) -> Iterator[pl.DataFrame]:
        yield from (b for i, b in enumerate(real(*args, **kwargs)) if i == 0)  # type: ignore[arg-type, call-overload]
        raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr("pipelines.pull._BATCH_ROWS", 100)
    monkeypatch.setattr(pl, "read_database", first_batch_then_gone)
    with pytest.raises(SourceDown, match="server closed the connection"):
        pull(home, "SCZTDJ")
    assert snapshots.list_snapshots(home, "SCZTDJ") == []
    assert not [p for p in home.tmp.iterdir() if p.name.startswith("pull-SCZTDJ") and p.is_dir()]
    monkeypatch.setattr(pl, "read_database", real)
    assert pull(home, "SCZTDJ", catalog=Catalog.load()).rows == rows.height
