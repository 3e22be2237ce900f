"""Top-level data commands: ``shuyu ingest`` and ``shuyu demo``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console

from pipelines.progress import steps
from shuyu_core import atomic, snapshots
from shuyu_core.home import Home

console = Console()


def ingest(
    code: str = typer.Argument(..., help="resource code from the catalog, e.g. RKJBXX"),
    source: Path = typer.Option(
        ..., "--from", help="Parquet file, directory of parquet parts, or CSV (UTF-8/GB18030)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    prefect: bool = typer.Option(
        False, "--prefect", help="run as a Prefect flow run (needs a Prefect API or starts one)"
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="run the quality checks on the new snapshot (verifies or reopens tickets)",
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="accept an export without data rows (refused by default)"
    ),
    partitions: int | None = typer.Option(
        None,
        "--partitions",
        help="parts hash-partitioned on the privacy unit (default $SHUYU_PARTITIONS or 1)",
    ),
) -> None:
    """Validate an export against the catalog and write an immutable snapshot into raw/."""
    home = Home.from_env().ensure()
    if prefect:
        from pipelines.flow_support import for_local_flow_run
        from pipelines.flows import ingest_flow

        if partitions is not None:
            # The flow's ingest task reads the count from the environment it inherits.
            os.environ["SHUYU_PARTITIONS"] = str(partitions)
        for_local_flow_run(home)
        # The flow runs the quality checks itself, as a task of the same flow run.
        ran = ingest_flow(code, str(source), check=check, allow_empty=allow_empty)
        assert isinstance(ran, snapshots.Manifest)  # given a source, the flow ingests just it
        manifest = ran
        check = False
    else:
        from pipelines.ingest import ingest_path

        with steps(console, f"ingest {code}") as step:
            manifest = ingest_path(
                home,
                code,
                source,
                progress=step,
                allow_empty=allow_empty,
                partitions=partitions,
            )
    if fmt == "json":
        typer.echo(snapshots.manifest_json(manifest))
    else:
        console.print(
            f"[green]ingested[/] {code}: {manifest.rows:,} rows → "
            f"{snapshots.snapshot_dir(home, code, manifest.snapshot_id)} "
            f"(SM3 {manifest.sm3[:16]}…, encoding {manifest.source_encoding or 'parquet'})"
        )
    if check:
        _check_new_snapshot(home, code, manifest.snapshot_id, quiet=fmt == "json")


def _check_new_snapshot(home: Home, code: str, snapshot_id: str, *, quiet: bool) -> None:
    """A new snapshot re-runs its quality checks, so tickets are verified or reopened."""
    from quality.api import run_check

    result, changes = run_check(home, code, snapshot_id)
    if quiet:
        return
    failing = sum(1 for r in result.rules if r.failed)
    console.print(
        f"quality: {failing} of {len(result.rules)} rules with failures; "
        f"{len(changes)} ticket change(s) — `shuyu quality check {code}` for details"
    )


def pull(
    code: str = typer.Argument(..., help="resource code whose catalog entry declares a source:"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    check: bool = typer.Option(
        True, "--check/--no-check", help="run the quality checks on each new snapshot"
    ),
) -> None:
    """Take what is new from the resource's declared source (file drop or 前置库 table)."""
    from pipelines.pull import SourceDown
    from pipelines.pull import pull as pull_new
    from shuyu_core.errors import ShuyuError

    home = Home.from_env().ensure()
    try:
        with steps(console, f"pull {code}") as step:
            result = pull_new(home, code, progress=step)
    except SourceDown as exc:
        err = ShuyuError(str(exc), hint="check that the source is up; the pull wrote nothing")
        err.audited = True
        raise err from exc
    if fmt == "json":
        typer.echo(
            json.dumps(
                {
                    "resource": code,
                    "kind": result.kind,
                    "snapshots": [m.snapshot_id for m in result.snapshots],
                    "rows": result.rows,
                    "watermark_before": result.watermark_before,
                    "watermark_after": result.watermark_after,
                },
                ensure_ascii=False,
            )
        )
    elif not result.snapshots:
        console.print(f"{code}: 没有新数据 (nothing new; watermark {result.watermark_after})")
    else:
        for m in result.snapshots:
            console.print(
                f"[green]pulled[/] {code}: {m.rows:,} rows → snapshot {m.snapshot_id}"
                + (f" (watermark {m.watermark})" if m.watermark else "")
            )
    if check:
        for m in result.snapshots:
            _check_new_snapshot(home, code, m.snapshot_id, quiet=fmt == "json")


def demo(
    persons: int = typer.Option(200_000, "--persons", help="size of the synthetic population"),
    seed: int = typer.Option(20251, "--seed", help="generator seed"),
    defect_rate: float = typer.Option(0.02, "--defect-rate", help="share of defective rows"),
) -> None:
    """Run the whole pipeline on generated demo data, stage by stage."""
    from pipelines.demo import run_demo

    home = Home.from_env().ensure()
    summary = run_demo(home, console, persons, seed, defect_rate)
    # The per-stage details are for reading later, not for scrolling past.
    path = home.work / "demo_summary.json"
    atomic.write_text(path, json.dumps(summary, ensure_ascii=False, indent=2, default=str))
    console.print(f"stage details: {path}")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("pull")(pull)
    app.command("demo")(demo)
