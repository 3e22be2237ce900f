"""The governance demo stage on a small RKJBXX snapshot."""

from __future__ import annotations

import datetime as dt
import io
import json

import polars as pl
import pytest
from rich.console import Console

from governance import audit
from governance.actors import Actor, set_current
from governance.consent import ConsentLedger, subject_token_expr
from pipelines.demo_governance import CONSENT_PURPOSE, stage
from shuyu_core import snapshots
from shuyu_core.errors import PermissionDenied
from shuyu_core.hashing import sm3_files
from shuyu_core.home import Home

PERSONS = 500


def _snapshot(home: Home) -> list[str]:
    """A minimal RKJBXX snapshot in the shared snapshot layout."""
    ids = [f"2108{i:014d}" for i in range(PERSONS)]
    frame = pl.DataFrame({"公民身份号码": ids, "姓名": [f"人{i}" for i in range(PERSONS)]})
    sid = snapshots.new_snapshot_id()
    folder = snapshots.snapshot_dir(home, "RKJBXX", sid)
    folder.mkdir(parents=True)
    frame.write_parquet(folder / "part-0.parquet")
    manifest = snapshots.Manifest(
        resource="RKJBXX",
        snapshot_id=sid,
        rows=PERSONS,
        sm3=sm3_files([folder / "part-0.parquet"]),
        files=["part-0.parquet"],
        columns={"公民身份号码": "String", "姓名": "String"},
        source_path="test",
        source_format="parquet",
        ingested_at=dt.datetime.now(dt.UTC),
        catalog_version="test",
    )
    (folder / snapshots.MANIFEST).write_text(
        json.dumps(manifest.model_dump(mode="json")), encoding="utf-8"
    )
    return ids


def test_stage_records_consents_and_verifies(home: Home) -> None:
    ids = _snapshot(home)
    summary = stage(home, Console(file=io.StringIO()))
    assert summary["agreements"] == ["DA-2025-001", "OA-2025-001"]
    # 7 scenarios in each of the two agreements (3 for the reports written only as specs)
    assert summary["scenarios_authorized"] == summary["scenarios_checked"] == 14
    assert summary["consents_imported"] == int(PERSONS * 0.8)
    assert summary["consents_revoked"] == 20
    assert (home.root / "keys" / "pseudonym.key").exists()
    check = audit.verify(home)
    assert check.ok and summary["audit_head"] == f"{check.head_seq}:{check.head_hash}"

    ledger = ConsentLedger(home)
    tokens = ledger.list()["subject_token"]
    assert tokens.n_unique() == int(PERSONS * 0.8)
    queries = pl.DataFrame({"subject_id": ids}).with_columns(
        subject_token_expr(ledger.key, "subject_id").alias("token"),
        pl.lit(CONSENT_PURPOSE).alias("purpose"),
    )
    counts = dict(ledger.check_many(queries.drop("subject_id"))["reason"].value_counts().rows())
    expired = int(str(summary["consents_expired"]))
    assert counts == {
        "ok": int(PERSONS * 0.8) - expired - 20,
        "expired": expired,
        "revoked": 20,
        "missing": PERSONS - int(PERSONS * 0.8),
    }
    assert audit.verify(home).ok


def test_stage_refused_for_a_reviewer(home: Home) -> None:
    set_current(Actor("rita", "reviewer"))
    try:
        with pytest.raises(PermissionDenied, match="may not demo"):
            stage(home, Console(file=io.StringIO()))
    finally:
        set_current(None)
    assert audit.tail(home, 1)[0]["outcome"] == "refused"
