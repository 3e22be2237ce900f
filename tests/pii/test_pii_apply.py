"""Applying a policy: the frame plan, the resource output in work/, marks and audit."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from catalogs.catalog import Catalog
from governance.audit import entries
from shuyu_core import keys, snapshots
from shuyu_core.errors import ShuyuError, ValidationError
from shuyu_core.home import Home
from transforms.apply import (
    DATA_FILE,
    SIDECAR,
    desensitize_frame,
    desensitize_resource,
    latest_output,
    read_desensitization,
    reversible_columns,
)
from transforms.operators import decrypt_sm4
from transforms.policy import DEFAULT_POLICY, load_policy

KEY = bytes(range(32))


def _keys(name: str) -> bytes:
    return KEY if name == keys.PSEUDONYM else bytes(range(16))


def test_frame_plan_removes_direct_identifiers(small_frames: dict[str, pl.DataFrame]) -> None:
    raw = small_frames["RKJBXX"]
    resource = Catalog.load().get("RKJBXX")
    lf, actions = desensitize_frame(raw.lazy(), resource, load_policy(), _keys)
    out = lf.collect()
    by_col = {a.column: a for a in actions}
    assert "姓名" not in out.columns and by_col["姓名"].output is None
    ids = raw["公民身份号码"].to_list()
    assert out["公民身份号码"][0] == hmac.new(KEY, ids[0].upper().encode(), "sm3").hexdigest()
    assert not set(out["公民身份号码"].to_list()) & set(ids)
    # No ID number, name, phone or full address survives anywhere in the output.
    text = out.select(pl.all().cast(pl.String)).to_pandas().to_string()
    for col in ("公民身份号码", "姓名", "联系电话", "现住址"):
        for value in raw[col].drop_nulls().head(50).to_list():
            assert value not in text, (col, value)
    assert out["出生日期"].str.contains(r"^\d{4}$").all()
    assert out["联系电话"].drop_nulls().str.contains(r"^1\d{2}\*{4}\d{4}$").all()
    assert by_col["民族"].op == "keep" and by_col["民族"].source.startswith("by_sensitivity")


def test_undeclared_detected_column_gets_its_type_default(
    small_frames: dict[str, pl.DataFrame],
) -> None:
    raw = small_frames["SCZTDJ"]
    resource = Catalog.load().get("SCZTDJ")
    lf, actions = desensitize_frame(
        raw.lazy(), resource, load_policy(), _keys, detected={"住所": "ADDRESS"}
    )
    by_col = {a.column: a for a in actions}
    assert by_col["住所"].op == "mask" and "detected" in by_col["住所"].source
    out = lf.collect()
    assert not out["住所"].str.contains(r"[路街]\d").any()


def test_operator_that_does_not_fit_the_column_is_refused(
    small_frames: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    doc["fields"] = {"RKJBXX.姓名": {"op": "top_code", "params": {"value": 3}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    resource = Catalog.load().get("RKJBXX")
    with pytest.raises(ValidationError, match="姓名"):
        desensitize_frame(small_frames["RKJBXX"].lazy(), resource, load_policy(path), _keys)


def test_desensitize_resource_writes_work_atomically_with_marks(with_keys: Home) -> None:
    home = with_keys
    out = desensitize_resource(home, "RKJBXX")
    assert out.is_relative_to(home.work)
    assert not any(p for p in home.published.rglob("*") if p.is_file())
    assert not any(home.tmp.iterdir()), "staging left behind"
    doc = read_desensitization(out)
    manifest = snapshots.latest(home, "RKJBXX")
    assert doc["snapshot"] == manifest.snapshot_id and doc["rows"] == manifest.rows
    assert doc["reversible_columns"] == [] and "姓名" in doc["suppressed_columns"]
    meta = pq.ParquetFile(out / DATA_FILE)
    assert json.loads(meta.metadata.metadata[b"shuyu.desensitization"])["resource"] == "RKJBXX"
    field = meta.schema_arrow.field("公民身份号码")
    assert field.metadata[b"shuyu.operator"] == b"pseudonymize"
    assert field.metadata[b"shuyu.reversible"] == b"false"
    # Deterministic: the same snapshot, policy and keys give the same output, reused.
    assert desensitize_resource(home, "RKJBXX") == out
    assert latest_output(home, "RKJBXX") == out
    actions = [e for e in entries(home) if e["action"] == "desensitize"]
    assert [e["outcome"] for e in actions] == ["ok", "ok"]
    assert actions[-1]["details"]["reused"] is True


def test_pseudonyms_join_across_resources(with_keys: Home) -> None:
    people = pl.read_parquet(desensitize_resource(with_keys, "RKJBXX") / DATA_FILE)
    visits = pl.read_parquet(desensitize_resource(with_keys, "YBJS") / DATA_FILE)
    joined = visits.join(people, on="公民身份号码", how="inner")
    assert joined.height == visits.height


def test_reversible_encryption_is_marked(with_keys: Home, tmp_path: Path) -> None:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    doc["name"] = "agency-internal"
    doc["fields"] = {"RKJBXX.姓名": {"op": "encrypt_sm4"}}
    path = tmp_path / "agency.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    out = desensitize_resource(with_keys, "RKJBXX", path)
    assert reversible_columns(out) == ["姓名"]
    # The Parquet file alone (without the sidecar) still tells.
    (out / SIDECAR).unlink()
    assert reversible_columns(out / DATA_FILE) == ["姓名"]
    field = pq.ParquetFile(out / DATA_FILE).schema_arrow.field("姓名")
    assert field.metadata[b"shuyu.reversible"] == b"true"
    names = pl.read_parquet(out / DATA_FILE)["姓名"]
    raw = snapshots.scan(with_keys, "RKJBXX").select("姓名").collect()["姓名"]
    key = keys.load_key(with_keys, keys.ENCRYPTION)
    assert decrypt_sm4(names, key).to_list() == raw.to_list()


def test_missing_key_is_a_clear_audited_error(ingested: Home) -> None:
    with pytest.raises(ShuyuError, match="pseudonym key") as info:
        desensitize_resource(ingested, "RKJBXX")
    assert info.value.audited
    last = list(entries(ingested))[-1]
    assert last["action"] == "desensitize" and last["outcome"] == "error"
    assert not (ingested.work / "desensitized").exists()
