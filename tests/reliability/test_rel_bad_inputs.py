"""Bad inputs through the real CLI: exit 4, one line naming the file and the fix, an audit
entry, and nothing written (no snapshot in raw/, no staging left in .tmp/)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from reliability_testkit import audit_rows, population, snapshot_dirs

from pipelines import cli
from shuyu_core.home import Home

_TRADITIONAL = population().with_columns(
    pl.Series("姓名", ["陳大文", "黃曉明"]),
    pl.Series("户籍地址", ["遼寧省營口市站前區建設街道1號", "遼寧省營口市西市區漁市街道2號"]),
)


def _csv_text(df: pl.DataFrame) -> str:
    return df.write_csv()


# The simplified header and code columns have no Big5 form; "?" stands in for them.
_BIG5 = _csv_text(_TRADITIONAL).encode("big5", errors="replace")


def _corrupt_parquet(path: Path) -> Path:
    good = path.with_name("good.parquet")
    pl.concat([population()] * 3000).write_parquet(good, statistics=False)
    data = bytearray(good.read_bytes())
    mid = len(data) // 3
    data[mid : mid + 2000] = b"\xff" * 2000
    path.write_bytes(bytes(data))
    return path


def _truncated_parquet(path: Path) -> Path:
    good = path.with_name("good.parquet")
    population().write_parquet(good)
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def _csv(text: str | bytes, name: str = "export.csv") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    return make


def _rows(text: str) -> list[str]:
    return text.strip("\n").split("\n")


_GOOD = _rows(_csv_text(population()))
_RAGGED_SHORT = "\n".join([*_GOOD[:2], _GOOD[2].rsplit(",", 1)[0]]) + "\n"
_RAGGED_LONG = "\n".join([*_GOOD[:2], _GOOD[2] + ",extra"]) + "\n"
_UNTERMINATED = "\n".join([_GOOD[0], _GOOD[1].replace("张三", '"张三', 1), _GOOD[2]]) + "\n"


def _parts(tmp: Path) -> Path:
    d = tmp / "parts"
    d.mkdir()
    population().write_parquet(d / "part-0.parquet")
    population().with_columns(pl.col("登记日期").str.to_date()).write_parquet(d / "part-1.parquet")
    return d


def _typed_date(value: pl.Series) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "export.parquet"
        population().with_columns(value.alias("出生日期")).write_parquet(path)
        return path

    return make


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "corrupt-parquet": (lambda t: _corrupt_parquet(t / "export.parquet"), "cannot be read"),
    "truncated-parquet": (lambda t: _truncated_parquet(t / "export.parquet"), "cannot be read"),
    "unterminated-quote": (_csv(_UNTERMINATED), "never closed"),
    "ragged-short-row": (_csv(_RAGGED_SHORT), "line 3 has 10 field(s) but the header has 11"),
    "ragged-long-row": (_csv(_RAGGED_LONG), "line 3 has 12 field(s) but the header has 11"),
    "parts-differ": (_parts, "differs from part part-0.parquet in field 登记日期"),
    "int-as-date": (_typed_date(pl.Series([1, 2], dtype=pl.Int64)), "Int64 in the file"),
    "float-as-date": (_typed_date(pl.Series([1.5, 2.0])), "Float64 in the file"),
    "bool-as-date": (_typed_date(pl.Series([True, False])), "Boolean in the file"),
    "big5-as-gb18030": (
        _csv(_csv_text(_TRADITIONAL).encode("big5", errors="replace")),
        "look like Big5",
    ),
    "utf16": (_csv(_csv_text(population()).encode("utf-16")), "look like UTF-16"),
    "header-only": (_csv(_GOOD[0] + "\n"), "no data rows"),
    "nul-in-cell": (_csv(_csv_text(population()).replace("张三", "张\x00三")), "NUL"),
    "bell-in-cell": (_csv(_csv_text(population()).replace("汉族", "汉\x07族")), "control byte"),
}


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    argv = sys.argv
    sys.argv = ["shuyu", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_cleanly(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    make, phrase = CASES[case]
    src = make(tmp_path)
    code, err = _run(capsys, "ingest", "RKJBXX", "--from", str(src), "--no-check")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 4, err
    assert len(lines) == 1, err
    assert phrase in lines[0] and src.name in lines[0] and "fix:" in lines[0], lines[0]
    assert "internal error" not in err
    assert audit_rows(home)[-1] == ("ingest", "RKJBXX", "refused")
    assert snapshot_dirs(home) == []
    assert list(home.tmp.iterdir()) == []
    assert not any((home.root / ".journal").glob("*"))


def test_allow_empty_records_a_header_only_export(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _csv(_GOOD[0] + "\n")(tmp_path)
    code, err = _run(capsys, "ingest", "RKJBXX", "--from", str(src), "--no-check", "--allow-empty")
    assert code == 0, err
    [snap] = snapshot_dirs(home)
    assert audit_rows(home)[-1] == ("ingest", f"RKJBXX/{snap.name}", "ok")


def test_simplified_gb18030_with_rare_name_characters_is_accepted(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The garbling check must not refuse real GB18030 data with a few rare hanzi."""
    df = population().with_columns(pl.Series("姓名", ["王堃", "李喆"]))
    src = _csv(_csv_text(df).encode("gb18030"))(tmp_path)
    code, err = _run(capsys, "ingest", "RKJBXX", "--from", str(src), "--no-check")
    assert code == 0, err
    assert len(snapshot_dirs(home)) == 1


@pytest.mark.parametrize("case", ["unterminated-quote", "ragged-long-row", "truncated-parquet"])
def test_bad_verification_batch_is_a_validation_error(tmp_path: Path, case: str) -> None:
    """The --queries file of a verification build is user input too: exit 4, not 70."""
    from products.verification import read_queries
    from shuyu_core.errors import ValidationError

    make, _ = CASES[case]
    with pytest.raises(ValidationError, match="cannot be read as a query batch"):
        read_queries(make(tmp_path), 100)
