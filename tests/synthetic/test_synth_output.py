"""Writing the datasets: determinism, Parquet file and partitioned layouts, GB18030 CSV
round trip, atomic output, the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

import synthetic_data.generate as gen
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

AS_OF = dt.date(2025, 6, 30)


def test_deterministic_for_seed() -> None:
    a, da = gen.generate_frames(1_500, seed=11, defect_rate=0.05, as_of=AS_OF)
    b, db = gen.generate_frames(1_500, seed=11, defect_rate=0.05, as_of=AS_OF)
    c, _ = gen.generate_frames(1_500, seed=12, defect_rate=0.05, as_of=AS_OF)
    for code in gen.CODES:
        assert_frame_equal(a[code], b[code])
        assert not a[code].equals(c[code])
    assert da == db
    assert da["as_of"] == "2025-06-30" and da["seed"] == 11 and da["persons"] == 1_500


def test_addresses_agree_with_region_codes() -> None:
    f, _ = gen.generate_frames(2_000, seed=3, defect_rate=0.1, as_of=AS_OF)
    names = {"210802": "站前区", "210803": "西市区", "210804": "鲅鱼圈区"} | {
        "210811": "老边区",
        "210881": "盖州市",
        "210882": "大石桥市",
    }
    rk = f["RKJBXX"].with_columns(d=pl.col("户籍区划代码").replace_strict(names))
    assert rk.select(pl.col("户籍地址").str.slice(6).str.starts_with(pl.col("d")).all()).item()
    sc = f["SCZTDJ"].with_columns(d=pl.col("区划代码").replace_strict(names))
    assert (sc["统一社会信用代码"].str.slice(2, 6) == sc["区划代码"]).all()
    assert sc.select(pl.col("住所").str.slice(6).str.starts_with(pl.col("d")).all()).item()


def test_partitioned_chunks_are_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "PERSONS_PER_CHUNK", 1_000)
    calls: list[tuple[int, int]] = []
    result = gen.generate(
        tmp_path / "out", 2_500, seed=4, defect_rate=0.04, as_of=AS_OF,
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert result.chunks == 3
    assert calls[-1] == (2_500, 2_500) and len(calls) == 3
    frames, doc = gen.generate_frames(2_500, seed=4, defect_rate=0.04, as_of=AS_OF)
    on_disk = json.loads((tmp_path / "out" / "defects.json").read_text(encoding="utf-8"))
    assert on_disk == doc == result.defects
    for code in gen.CODES:
        part_dir = tmp_path / "out" / code
        parts = sorted(part_dir.glob("part-*.parquet"))
        assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(3)]
        read = pl.read_parquet(part_dir)
        assert_frame_equal(read, frames[code])
        assert read.height == doc["datasets"][code]["rows"]
    rk, sc, sb, yb = (frames[c] for c in gen.CODES)
    dup_rk = doc["datasets"]["RKJBXX"]["defects"]["duplicate_key"]["rows"]
    assert rk["公民身份号码"].n_unique() == rk.height - dup_rk  # unique across chunks
    dup_sc = doc["datasets"]["SCZTDJ"]["defects"]["duplicate_key"]["rows"]
    assert sc["统一社会信用代码"].n_unique() == sc.height - dup_sc
    dup_yb = doc["datasets"]["YBJS"]["defects"]["duplicate_key"]["rows"]
    assert yb["结算单号"].n_unique() == yb.height - dup_yb
    assert sb["公民身份号码"].is_in(rk["公民身份号码"].implode()).all()
    assert sb["单位统一社会信用代码"].is_in(sc["统一社会信用代码"].implode()).all()
    assert yb["公民身份号码"].is_in(rk["公民身份号码"].implode()).all()
    assert not list((tmp_path / "out").glob(".*"))  # no staging left behind


def test_single_file_parquet_and_layout_switch(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r1 = gen.generate(out, 800, seed=1, defect_rate=0.02, as_of=AS_OF, fmt="csv-gb18030")
    assert all(p.suffix == ".csv" for p in r1.paths.values())
    r2 = gen.generate(out, 800, seed=1, defect_rate=0.02, as_of=AS_OF)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{c}.parquet" for c in gen.CODES] + ["defects.json"]
    )
    frames, _ = gen.generate_frames(800, seed=1, defect_rate=0.02, as_of=AS_OF)
    for code in gen.CODES:
        assert_frame_equal(pl.read_parquet(r2.paths[code]), frames[code])


def test_gb18030_csv_round_trip(tmp_path: Path) -> None:
    result = gen.generate(tmp_path, 1_200, seed=9, defect_rate=0.05, as_of=AS_OF, fmt="csv-gb18030")
    frames, _ = gen.generate_frames(1_200, seed=9, defect_rate=0.05, as_of=AS_OF)
    for code in gen.CODES:
        raw = result.paths[code].read_bytes()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")  # really GB18030, not UTF-8
        text = raw.decode("gb18030")
        back = pl.read_csv(io.StringIO(text), schema=gen.SCHEMAS[code])
        assert_frame_equal(back, frames[code])


def test_crash_leaves_no_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gen.generate(out, 500, seed=1, defect_rate=0.02, as_of=AS_OF, progress=boom)
    assert list(out.iterdir()) == []


def test_invalid_parameters_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="defect-rate"):
        gen.generate_frames(100, seed=1, defect_rate=0.9, as_of=AS_OF)
    with pytest.raises(ValidationError, match="persons"):
        gen.generate(tmp_path, 0, seed=1, defect_rate=0.0, as_of=AS_OF)
    with pytest.raises(ValidationError, match="format"):
        gen.generate(tmp_path, 10, seed=1, defect_rate=0.0, fmt="xlsx")  # type: ignore[arg-type]


def test_tiny_population_without_defects() -> None:
    frames, doc = gen.generate_frames(7, seed=2, defect_rate=0.0, as_of=AS_OF)
    assert frames["RKJBXX"].height == 7
    assert all(v["rows"] == 0 for d in doc["datasets"].values() for v in d["defects"].values())
    assert frames["SCZTDJ"].height == 1


def test_cli_synth_writes_and_audits(tmp_path: Path, home: Home) -> None:
    import typer

    from pipelines.cli_synth import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keep synth a named sub-command
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        ["synth", "--out", str(out), "--persons", "600", "--seed", "3", "--defect-rate",
         "0.05", "--as-of", "2025-06-30"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "defects.json").read_text(encoding="utf-8"))
    assert doc["persons"] == 600 and doc["as_of"] == "2025-06-30"
    assert "RKJBXX" in res.output and "duplicate_key" in res.output
    from sqlalchemy import text

    from shuyu_core.home import state_engine

    with state_engine(home).connect() as conn:
        actions = [r[0] for r in conn.execute(text("select action, outcome from audit_log"))]
    assert "synth.generate" in actions
    bad = CliRunner().invoke(app, ["synth", "--out", str(out), "--as-of", "2025-02-30"])
    assert bad.exit_code != 0
