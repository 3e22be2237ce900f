"""Writing release outputs (Parquet, CSV, JSON) and describing them for the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from products.release import ColumnLineage, OutputColumn, OutputFile, OutputFormat, ValueKind
from shuyu_core import atomic
from shuyu_core.hashing import sm3_file

DATA_DIR = "data"


def _columns(
    df: pl.DataFrame,
    descriptions: dict[str, str],
    lineage: dict[str, ColumnLineage] | None,
    values: ValueKind,
) -> list[OutputColumn]:
    """Column descriptions with their lineage. Aggregate and verification outputs are whole
    results of their mechanism (operator = the value kind); a record-level column without a
    recorded lineage keeps operator None (unknown: the assessment treats it as unsafe)."""
    out: list[OutputColumn] = []
    for name, dtype in df.schema.items():
        lin = (lineage or {}).get(name)
        op = lin.operator if lin is not None else None
        if op is None and values != "desensitized_record":
            op = values
        out.append(
            OutputColumn(
                name=name,
                type=str(dtype),
                description=descriptions.get(name, ""),
                sources=list(lin.sources) if lin is not None else [],
                operator=op,
                params=dict(lin.params) if lin is not None else {},
            )
        )
    return out


def write_table(
    stage: Path,
    name: str,
    df: pl.DataFrame,
    formats: list[str],
    values: ValueKind,
    descriptions: dict[str, str] | None = None,
    lineage: dict[str, ColumnLineage] | None = None,
) -> list[OutputFile]:
    """Write ``df`` as ``data/<name>.<fmt>`` for each tabular format; HTML is written elsewhere."""
    out_dir = stage / DATA_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = _columns(df, descriptions or {}, lineage, values)
    files: list[OutputFile] = []
    for fmt in formats:
        if fmt == "html":
            continue
        path = out_dir / f"{name}.{fmt}"
        if fmt == "parquet":
            df.write_parquet(path)
        elif fmt == "csv":
            # A BOM so spreadsheet programs read the Chinese labels as UTF-8.
            df.write_csv(path, include_bom=True)
        elif fmt == "json":
            atomic.write_text(
                path, json.dumps(df.to_dicts(), ensure_ascii=False, indent=1, default=str)
            )
        else:  # pragma: no cover - the spec model restricts formats
            raise ValueError(fmt)
        fmt_lit: OutputFormat = fmt  # type: ignore[assignment]
        files.append(
            OutputFile(
                name=name,
                path=f"{DATA_DIR}/{path.name}",
                format=fmt_lit,
                columns=cols,
                rows=df.height,
                values=values,
                sm3=sm3_file(path),
            )
        )
    return files


def html_output(stage: Path, name: str, html: str, values: ValueKind) -> OutputFile:
    path = stage / f"{name}.html"
    atomic.write_text(path, html)
    return OutputFile(
        name=name, path=path.name, format="html", rows=0, values=values, sm3=sm3_file(path)
    )
