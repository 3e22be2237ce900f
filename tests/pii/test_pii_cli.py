"""``shuyu pii scan|check|risk`` and ``shuyu desensitize`` through typer."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner, Result

from pipelines import cli_pii
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home
from synthetic_data.tricky import tricky_frame
from transforms.apply import read_desensitization


def _app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    cli_pii.register(root)
    return root


def _run(home: Home, *args: str) -> Result:
    return CliRunner().invoke(
        _app(), list(args), env={"SHUYU_HOME": str(home.root), "COLUMNS": "200"}
    )


def test_scan_json_is_exactly_the_contract(home: Home, tmp_path: Path) -> None:
    df, truth = tricky_frame(200, seed=3)
    path = tmp_path / "t.csv"
    path.write_bytes(df.select("sfzh", "商品条码", "lxdh").write_csv().encode("gb18030"))
    result = _run(home, "pii", "scan", str(path), "--format", "json", "--sample", "100")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["columns"]
    assert [(c["column"], c["entity"]) for c in doc["columns"]] == [
        ("sfzh", truth["sfzh"]),
        ("商品条码", None),
        ("lxdh", truth["lxdh"]),
    ]
    table = _run(home, "pii", "scan", str(path))
    assert "CN_RESIDENT_ID" in table.stdout and "商品条码" in table.stdout


def test_check_desensitize_and_risk(with_keys: Home) -> None:
    result = _run(with_keys, "pii", "check", "SCZTDJ", "--format", "json")
    assert result.exit_code == 0, result.output
    findings = json.loads(result.stdout)["findings"]
    assert [(f["column"], f["kind"]) for f in findings] == [("住所", "undeclared_pii")]

    result = _run(with_keys, "desensitize", "RKJBXX", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert Path(doc["output"]).is_relative_to(with_keys.work)
    assert {c["column"]: c["op"] for c in doc["columns"]}["姓名"] == "suppress"

    result = _run(
        with_keys, "pii", "risk", "RKJBXX", "--k", "5", "--sensitive", "民族", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    risk = json.loads(result.stdout)
    assert risk["quasi_identifiers"] == ["性别", "出生日期", "民族", "户籍区划代码"]
    assert 0.0 <= risk["share_below_k"] <= 1.0 and risk["l_diversity"]["民族"] >= 1
    data = pl.read_parquet(Path(doc["output"]) / "data.parquet")
    qis = risk["quasi_identifiers"]
    sizes = data.group_by(qis).len()
    assert risk["min_class_size"] == sizes["len"].min()
    assert risk["records_below_k"] == sizes.filter(pl.col("len") < 5)["len"].sum()

    # --enforce writes a k-anonymous copy into work/kanon/ and reports the cost.
    args = ("pii", "risk", "RKJBXX", "--k", "5", "--enforce", "--format", "json")
    result = _run(with_keys, *args)
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["enforce_k"]
    written = Path(cost["written"])
    assert written.is_relative_to(with_keys.work / "kanon")
    kanon = pl.read_parquet(written / "data.parquet")
    assert kanon.group_by(qis).len().select(pl.col("len").min() >= 5).item()
    assert cost["records_in"] - cost["records_suppressed"] == kanon.height
    record = read_desensitization(written)
    assert record["rows"] == kanon.height and record["resource"] == "RKJBXX"
    assert record["reversible_columns"] == [] and record["source"] == doc["output"]
    assert cost["share_suppressed"] <= 0.05 or cost["notes"]
    again = json.loads(_run(with_keys, *args).stdout)["enforce_k"]
    assert again["reused"] is True and again["records_suppressed"] == cost["records_suppressed"]
    bad = _run(with_keys, "pii", "risk", "RKJBXX", "--enforce", "--max-suppression", "2")
    assert isinstance(bad.exception, ShuyuError)


def test_user_mistakes_raise_shuyu_errors(home: Home, tmp_path: Path) -> None:
    result = _run(home, "pii", "scan", str(tmp_path / "nope.csv"))
    assert isinstance(result.exception, ShuyuError)
    result = _run(home, "desensitize", "RKJBXX", "--policy", str(tmp_path / "nope.yaml"))
    assert isinstance(result.exception, ShuyuError)
    with pytest.raises(ShuyuError):
        cli_pii._format("xml")
