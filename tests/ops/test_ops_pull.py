"""`shuyu pull` from a file drop, and the gates of a declared source (normal suite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydantic
import pytest
from pull_testkit import catalog_with_source, scztdj_rows
from typer.testing import CliRunner

from catalogs.source_models import DatabaseSource
from governance import audit
from pipelines.pull import pull, taken_path
from shuyu_core import snapshots
from shuyu_core.errors import PermissionDenied, ValidationError
from shuyu_core.home import Home


def _pull_entries(home: Home) -> list[dict[str, object]]:
    return [e for e in audit.tail(home, 1000) if e["action"] == "pull"]


def test_a_file_drop_is_taken_once_per_new_file(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    catalog_with_source(
        tmp_path, monkeypatch, f"source: {{kind: file_drop, directory: {drop}, glob: '*.parquet'}}"
    )
    rows = scztdj_rows()
    half = rows.height // 2
    first, second = rows.head(half), rows.tail(rows.height - half)
    first.write_parquet(drop / "2026-01-01.parquet")
    first.write_parquet(drop / ".2026-01-02.parquet")  # an upload in progress: not taken

    one = pull(home, "SCZTDJ")
    assert [m.rows for m in one.snapshots] == [half]
    assert one.snapshots[0].source_path == str((drop / "2026-01-01.parquet").resolve())
    taken = json.loads(taken_path(home, "SCZTDJ").read_text(encoding="utf-8"))
    assert set(taken) == {"2026-01-01.parquet"}
    assert taken["2026-01-01.parquet"]["snapshot"] == one.snapshots[0].snapshot_id

    assert pull(home, "SCZTDJ").snapshots == []  # nothing new

    # The same export touched again is not new; a new file is.
    os.utime(drop / "2026-01-01.parquet", (1, 1))
    second.write_parquet(drop / "2026-01-02.parquet")
    three = pull(home, "SCZTDJ")
    assert [m.rows for m in three.snapshots] == [second.height]
    assert len(snapshots.list_snapshots(home, "SCZTDJ")) == 2
    assert [e["outcome"] for e in _pull_entries(home)] == ["ok", "ok", "ok"]
    assert _pull_entries(home)[-1]["details"]["rows"] == second.height  # type: ignore[index]


def test_a_crash_before_the_taken_record_does_not_ingest_twice(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    catalog_with_source(tmp_path, monkeypatch, f"source: {{kind: file_drop, directory: {drop}}}")
    scztdj_rows().write_parquet(drop / "a.parquet")
    pull(home, "SCZTDJ")
    taken_path(home, "SCZTDJ").unlink()  # as if killed between the snapshot and its record
    assert pull(home, "SCZTDJ").snapshots == []
    assert len(snapshots.list_snapshots(home, "SCZTDJ")) == 1


def test_pull_through_the_cli_checks_the_new_snapshot(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import cli

    drop = tmp_path / "drop"
    drop.mkdir()
    catalog_with_source(tmp_path, monkeypatch, f"source: {{kind: file_drop, directory: {drop}}}")
    scztdj_rows().write_parquet(drop / "a.parquet")
    cli._register()
    result = CliRunner().invoke(cli.app, ["pull", "SCZTDJ", "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[0])
    assert out["kind"] == "file_drop" and len(out["snapshots"]) == 1
    actions = [e["action"] for e in audit.tail(home, 1000)]
    assert actions.index("pull") > actions.index("ingest")
    assert "quality.check" in actions[actions.index("ingest") :]


def test_a_resource_without_source_is_refused_and_audited(home: Home) -> None:
    with pytest.raises(ValidationError, match="declares no source"):
        pull(home, "RKJBXX")
    assert _pull_entries(home)[-1]["outcome"] == "refused"


def test_a_down_file_drop_is_a_source_down(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.pull import SourceDown

    catalog_with_source(
        tmp_path, monkeypatch, f"source: {{kind: file_drop, directory: {tmp_path / 'away'}}}"
    )
    with pytest.raises(SourceDown, match="not a reachable directory"):
        pull(home, "SCZTDJ")
    assert _pull_entries(home)[-1]["outcome"] == "error"
    assert snapshots.list_snapshots(home, "SCZTDJ") == []


def test_credentials_never_in_the_catalog() -> None:
    with pytest.raises(pydantic.ValidationError, match="uri"):
        DatabaseSource.model_validate(
            {"kind": "database", "uri": "postgresql://u:pw@h/db", "table": "t"}
        )
    with pytest.raises(pydantic.ValidationError, match="exactly one of uri_env or uri_file"):
        DatabaseSource.model_validate({"kind": "database", "table": "t"})
    # Identifiers are spliced into SQL, so only plain names pass.
    with pytest.raises(pydantic.ValidationError, match="identifier"):
        DatabaseSource.model_validate(
            {"kind": "database", "uri_env": "X", "table": "t; DROP TABLE t"}
        )


def test_a_watermark_must_be_a_catalog_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catalogs.catalog import Catalog

    catalog_with_source(
        tmp_path,
        monkeypatch,
        "source: {kind: database, uri_env: SRC_URI, table: t, watermark: 修改时间}",
    )
    with pytest.raises(ValidationError, match="watermark"):
        Catalog.load()


def test_a_uri_file_readable_by_others_is_refused(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri_file = tmp_path / "src.uri"
    uri_file.write_text("sqlite:///" + str(tmp_path / "x.db"), encoding="utf-8")
    uri_file.chmod(0o644)
    catalog_with_source(
        tmp_path,
        monkeypatch,
        f"source: {{kind: database, uri_file: {uri_file}, table: t, watermark: 更新日期}}",
    )
    with pytest.raises(PermissionDenied, match="readable by group or others"):
        pull(home, "SCZTDJ")


def test_a_bad_export_does_not_block_the_good_ones(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl

    drop = tmp_path / "drop"
    drop.mkdir()
    catalog_with_source(tmp_path, monkeypatch, f"source: {{kind: file_drop, directory: {drop}}}")
    pl.DataFrame({"not_a_field": [1]}).write_parquet(drop / "a.parquet")
    scztdj_rows().write_parquet(drop / "b.parquet")
    with pytest.raises(ValidationError, match=r"1 snapshot\(s\) taken, 1 export\(s\) refused: a"):
        pull(home, "SCZTDJ")
    assert len(snapshots.list_snapshots(home, "SCZTDJ")) == 1
    ingests = [e for e in audit.tail(home, 1000) if e["action"] == "ingest"]
    assert [e["outcome"] for e in ingests] == ["refused", "ok"]
    # Still refused next time (same content), and still not taken twice; a corrected file is.
    with pytest.raises(ValidationError, match="refused"):
        pull(home, "SCZTDJ")
    scztdj_rows().head(5).write_parquet(drop / "a.parquet")
    assert [m.rows for m in pull(home, "SCZTDJ").snapshots] == [5]
