"""Applying a policy: the frame plan, the resource output in work/, marks and audit."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import typer
import yaml
from typer.testing import CliRunner

from catalogs.catalog import Catalog
from governance.audit import entries
from pipelines import cli_pii
from privacy.pii.scan import scan_frame
from shuyu_core import keys, snapshots
from shuyu_core.errors import ShuyuError, ValidationError
from shuyu_core.home import Home
from synthetic_data.tricky import tricky_frame
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
    text = "\n".join(
        out.select(pl.concat_str(pl.all().cast(pl.String), separator="|", ignore_nulls=True))
        .to_series()
        .to_list()
    )
    for col in ("公民身份号码", "姓名", "联系电话", "现住址"):
        for value in raw[col].drop_nulls().head(50).to_list():
            assert value not in text, (col, value)
    assert out["出生日期"].str.contains(r"^\d{4}$").all()
    assert out["联系电话"].drop_nulls().str.contains(r"^1\d{2}\*{6}\d{2}$").all()  # floor 3+2
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
    # A k-anonymous copy ('pii risk --enforce') still says it carries a reversible column.
    root = typer.Typer()
    root.callback()(lambda: None)
    cli_pii.register(root)
    args = ["pii", "risk", "RKJBXX", "--output", str(out), "--enforce", "--format", "json"]
    result = CliRunner().invoke(root, args, env={"SHUYU_HOME": str(with_keys.root)})
    assert result.exit_code == 0, result.output
    kanon = Path(json.loads(result.stdout)["enforce_k"]["written"])
    assert reversible_columns(kanon) == ["姓名"]
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


def test_free_text_columns_are_redacted_in_place() -> None:
    df, _ = tricky_frame(300, seed=4)
    frame = df.select("备注", "办理结果").with_columns(
        ("王小明住" + pl.col("办理结果") + "辽宁省营口市站前区渤海大街12号").alias("说明")
    )
    report = scan_frame(frame.select("备注"))
    assert report.detected() == {"备注": "CN_MOBILE"}
    assert report.free_text_columns() == {"备注"}
    detected = {**report.detected(), "说明": "ADDRESS"}
    lf, actions = desensitize_frame(
        frame.lazy(), None, load_policy(), _keys, detected, free_text={"备注", "说明"}
    )
    out = lf.collect()
    by_col = {a.column: a for a in actions}
    assert by_col["备注"].params["free_text"] == "identifiers redacted"
    # Every mobile is gone, the words around it stay.
    assert not out["备注"].str.contains(r"1[3-9][0-9]{9}").any()
    had_phone = frame["备注"].str.contains("请回电")
    assert out.filter(had_phone)["备注"].str.starts_with("请回电****").all()
    assert out.filter(~had_phone)["备注"].to_list() == frame.filter(~had_phone)["备注"].to_list()
    # An address mask on prose would keep the name before the district: all hidden instead.
    assert by_col["说明"].params["free_text"] == "all characters hidden"
    assert out["说明"].str.contains(r"^\*+$").all()
    # The same column as a whole-value address keeps the district convention.
    whole, _ = desensitize_frame(
        pl.LazyFrame({"住址": ["辽宁省营口市站前区渤海大街12号"]}),
        None,
        load_policy(),
        _keys,
        {"住址": "ADDRESS"},
    )
    assert whole.collect()["住址"].to_list() == ["辽宁省营口市站前区"]
