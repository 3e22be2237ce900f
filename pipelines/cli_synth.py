"""``shuyu synth``: generate the four synthetic public datasets (合成数据) and defects.json."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from governance.audit import record
from shuyu_core.errors import ShuyuError, ValidationError
from shuyu_core.home import Home

console = Console()

_NAMES = {
    "RKJBXX": "人口基本信息 population",
    "SCZTDJ": "市场主体登记 enterprises",
    "SBCBJF": "社会保险参保缴费 social insurance",
    "YBJS": "医疗保障结算 medical settlements",
}


def _parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(
            f"--as-of {value!r} is not a date", hint="write it as YYYY-MM-DD, e.g. 2025-06-30"
        ) from exc


def synth(
    out: Path = typer.Option(..., "--out", help="output directory (created if absent)"),
    persons: int = typer.Option(200_000, "--persons", help="number of persons (rows of RKJBXX)"),
    seed: int = typer.Option(0, "--seed", help="generator seed (same seed, same data)"),
    defect_rate: float = typer.Option(
        0.02, "--defect-rate", help="share of rows per dataset carrying one injected defect"
    ),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv-gb18030"),
    as_of: str | None = typer.Option(
        None, "--as-of", help="reference date YYYY-MM-DD for ages and dates (default: today)"
    ),
) -> None:
    """Generate realistic Yingkou (营口市) public datasets with ground-truth defects.

    Writes RKJBXX, SCZTDJ, SBCBJF and YBJS as Parquet (one file, or a directory of parts
    above 250 000 persons) or GB18030 CSV, plus defects.json listing every injected defect.
    """
    from synthetic_data.generate import generate

    if fmt not in ("parquet", "csv-gb18030"):
        raise ValidationError(
            f"unknown format {fmt!r}", hint="use --format parquet or --format csv-gb18030"
        )
    day = _parse_date(as_of)
    home = Home.from_env()
    from governance.zones import guard_out

    out = guard_out(home, out, "synth")
    params = {
        "out": str(out),
        "persons": persons,
        "seed": seed,
        "defect_rate": defect_rate,
        "format": fmt,
        "as_of": (day or dt.date.today()).isoformat(),
    }
    with Progress(
        TextColumn("[bold]synth[/] persons"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("generate", total=persons)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = generate(
                out,
                persons=persons,
                seed=seed,
                defect_rate=defect_rate,
                fmt=fmt,  # type: ignore[arg-type]
                as_of=day,
                progress=progress,
            )
        except ShuyuError as exc:
            record(home, "synth.generate", str(out), "error", {**params, "error": exc.one_line()})
            exc.audited = True
            raise
    record(
        home,
        "synth.generate",
        str(out),
        "ok",
        {**params, "rows": result.rows, "seconds": round(result.seconds, 2)},
    )
    datasets = result.defects["datasets"]
    table = Table(title=f"synthetic data → {out} ({result.seconds:.1f} s, seed {seed})")
    for col in ("dataset", "name", "rows", "defect rows", "written to"):
        table.add_column(col, justify="right" if "rows" in col else "left")
    for code, info in datasets.items():
        path = result.paths[code]
        table.add_row(
            code,
            _NAMES[code],
            f"{info['rows']:,}",
            f"{sum(v['rows'] for v in info['defects'].values()):,}",
            path.name + ("/" if path.is_dir() else ""),
        )
    console.print(table)
    kinds = Table(title="injected defects (rows) — ground truth in defects.json")
    kinds.add_column("kind")
    for code in datasets:
        kinds.add_column(code, justify="right")
    all_kinds = dict.fromkeys(k for info in datasets.values() for k in info["defects"])
    for kind in all_kinds:
        cells = []
        for info in datasets.values():
            entry = info["defects"].get(kind)
            cells.append(f"{entry['rows']:,}" if entry else "-")
        kinds.add_row(kind, *cells)
    console.print(kinds)
    console.print(
        f"ground truth: {out / 'defects.json'} "
        f"(as_of {result.defects['as_of']}; {json.dumps(result.chunks)} chunk(s))"
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
