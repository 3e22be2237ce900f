"""``shuyu catalog``: list, show, validate and export the resource directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from catalogs.catalog import Catalog
from catalogs.datapackage import to_datapackage
from shuyu_core import atomic, snapshots
from shuyu_core.home import Home

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("list")
def list_resources(
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """List every resource with its source unit, grade and latest snapshot."""
    catalog = Catalog.load()
    home = Home.from_env()
    rows = []
    for res in catalog:
        snaps = snapshots.list_snapshots(home, res.code)
        rows.append(
            {
                "code": res.code,
                "name": res.name,
                "name_en": res.name_en,
                "source_unit": res.source_unit.code,
                "grade": res.grade.value,
                "fields": len(res.fields),
                "negative_listed": res.negative_list.listed,
                "snapshots": len(snaps),
                "latest_rows": snaps[-1].rows if snaps else None,
            }
        )
    if fmt == "json":
        typer.echo(json.dumps({"resources": rows}, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"数据资源目录 resource directory (version {catalog.version})")
    for col in ("code", "name", "source unit", "grade", "fields", "negative list", "snapshots"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["code"]),
            f"{r['name']} / {r['name_en']}",
            str(r["source_unit"]),
            str(r["grade"]),
            str(r["fields"]),
            "yes" if r["negative_listed"] else "no",
            str(r["snapshots"]),
        )
    console.print(table)


@app.command("show")
def show(code: str = typer.Argument(..., help="resource code, e.g. RKJBXX")) -> None:
    """Show one resource: attributes, fields with PI types and rules, snapshots."""
    res = Catalog.load().get(code)
    console.print(f"[bold]{res.code}[/] {res.name} / {res.name_en}")
    console.print(
        f"source unit 数源单位: {res.source_unit.name} ({res.source_unit.code}) · "
        f"grade 分级: {res.grade.value} · sharing 共享: {res.sharing.value} · "
        f"open 开放: {res.open.value} · update: {res.update_frequency.value} · "
        f"privacy unit: {res.privacy_unit}"
    )
    if res.negative_list.listed:
        console.print(
            f"[red]negative list 负面清单[/]: {res.negative_list.reason} "
            f"(review {res.negative_list.review_date})"
        )
    table = Table()
    for col in ("field", "type", "req", "PI type", "sensitivity", "QI", "rules"):
        table.add_column(col)
    for f in res.fields:
        rules = ", ".join(f"{k}={v}" for k, v in f.rules.model_dump(exclude_defaults=True).items())
        table.add_row(
            f.name,
            f.type,
            "yes" if f.required else "",
            f.pii_type.value if f.pii_type else "",
            f.sensitivity.value,
            "yes" if f.quasi_identifier else "",
            rules,
        )
    console.print(table)
    snaps = snapshots.list_snapshots(Home.from_env(), res.code)
    for m in snaps:
        console.print(f"snapshot {m.snapshot_id}: {m.rows} rows, SM3 {m.sm3[:16]}…")
    if not snaps:
        console.print(f"no snapshots yet — run 'shuyu ingest {res.code} --from PATH'")


@app.command("validate")
def validate(
    directory: Path | None = typer.Option(None, "--dir", help="catalog directory to validate"),
) -> None:
    """Validate every resource YAML (types, vocabulary, code lists, references)."""
    catalog = Catalog.load(directory)
    console.print(
        f"[green]ok[/]: {len(catalog.resources)} resources valid in {catalog.directory} "
        f"(version {catalog.version})"
    )


@app.command("export")
def export(
    out: Path = typer.Option(..., "--out", help="where to write datapackage.json"),
) -> None:
    """Export the directory as a Frictionless Data Package descriptor (metadata only)."""
    from governance.zones import guard_out
    from shuyu_core.home import Home

    out = guard_out(Home.from_env(), out, "catalog export")
    pkg = to_datapackage(Catalog.load())
    atomic.write_text(out, json.dumps(pkg, ensure_ascii=False, indent=2) + "\n")
    console.print(f"wrote {out} ({len(pkg['resources'])} resources)")
