"""``shuyu pii scan|check|risk`` and ``shuyu desensitize``.

``register(app)`` adds the ``pii`` group and the top-level ``desensitize`` command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from governance.audit import record
from pipelines.progress import steps
from shuyu_core.errors import ShuyuError, ValidationError
from shuyu_core.home import Home

if TYPE_CHECKING:
    from privacy.pii.check import Finding

app = typer.Typer(
    no_args_is_help=True, help="personal-information detection (个人信息识别) and risk"
)
console = Console()
err_console = Console(stderr=True)


def _format(fmt: str) -> str:
    if fmt not in ("json", "table"):
        raise ValidationError(f"unknown format {fmt!r}", hint="use --format json or table")
    return fmt


@app.command("scan")
def scan(
    path: Path = typer.Argument(..., help="Parquet file or directory of parts, or CSV"),
    sample: int = typer.Option(2000, "--sample", help="non-null values sampled per column"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Decide per column whether it holds personal information, and which type."""
    from privacy.pii.scan import scan_path

    _format(fmt)
    home = Home.from_env().ensure()
    with steps(err_console, f"scan {path.name}") as step:
        step("sampling and matching")
        report = scan_path(path, sample=sample, seed=seed)
    detected = report.detected()
    record(
        home,
        "pii.scan",
        str(path),
        "ok",
        {"columns": len(report.columns), "detected": detected, "sample": sample},
    )
    if fmt == "json":
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        return
    table = Table(title=f"PII scan 个人信息识别: {path} ({report.total_rows or 0:,} rows)")
    for col in ("column", "entity", "score", "hit rate", "evidence"):
        table.add_column(col, overflow="fold")
    for c in report.columns:
        table.add_row(
            c.column,
            c.entity or "-",
            f"{c.score:.2f}",
            f"{c.hit_rate:.1%}",
            c.evidence,
            style="bold" if c.entity else None,
        )
    console.print(table)


@app.command("check")
def check(
    code: str = typer.Argument(..., help="resource code, e.g. RKJBXX"),
    sample: int = typer.Option(2000, "--sample", help="non-null values sampled per column"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Scan the latest snapshot and compare with the catalog's pii_type declarations."""
    from privacy.pii.check import check_resource

    _format(fmt)
    home = Home.from_env().ensure()
    with steps(err_console, f"pii check {code}") as step:
        step("scanning the latest snapshot")
        findings = check_resource(home, code, sample=sample)
    if fmt == "json":
        doc = {"resource": code, "findings": [f.to_dict() for f in findings]}
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    print_findings(console, code, findings)


def print_findings(out: Console, code: str, findings: list[Finding]) -> None:
    if not findings:
        out.print(f"[green]{code}[/]: data agree with the catalog's PII declarations")
        return
    table = Table(title=f"{code}: PII findings 个人信息声明核对")
    for col in ("column", "kind", "severity", "declared", "detected", "message"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(f.column, f.kind, f.severity, f.declared or "-", f.detected or "-", f.message)
    out.print(table)


@app.command("risk")
def risk(
    code: str = typer.Argument(..., help="resource code"),
    k: int = typer.Option(5, "--k", help="target k for the share below k"),
    sensitive: str | None = typer.Option(
        None, "--sensitive", help="sensitive attribute for distinct l-diversity"
    ),
    output: Path | None = typer.Option(
        None, "--output", help="a desensitized output directory (default: the latest one)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """k-anonymity (and l-diversity) of a desensitized output over declared quasi-identifiers."""
    import polars as pl

    from catalogs.catalog import Catalog
    from privacy.risk import k_anonymity, l_diversity
    from transforms.apply import DATA_FILE, latest_output

    _format(fmt)
    home = Home.from_env().ensure()
    resource = Catalog.load().get(code)
    directory = output or latest_output(home, code)
    lf = pl.scan_parquet(directory / DATA_FILE)
    names = lf.collect_schema().names()
    qis = [f.name for f in resource.fields if f.quasi_identifier and f.name in names]
    if not qis:
        raise ShuyuError(
            f"{code} has no declared quasi-identifier in {directory}",
            hint="mark quasi_identifier fields in the catalog",
        )
    report = k_anonymity(lf, qis)
    doc: dict[str, object] = {
        "resource": code,
        "output": str(directory),
        "quasi_identifiers": qis,
        **report.to_dict(k),
    }
    if sensitive is not None:
        doc["sensitive"] = sensitive
        doc["l_diversity"] = l_diversity(lf, qis, sensitive)
    record(home, "pii.risk", code, "ok", doc)
    if fmt == "json":
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    for key, value in doc.items():
        console.print(f"{key}: {value}")


def desensitize(
    code: str = typer.Argument(..., help="resource code, e.g. RKJBXX"),
    policy: Path | None = typer.Option(
        None, "--policy", help="policy YAML (default: catalogs/policies/default.yaml)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Desensitize the latest snapshot into work/ (脱敏), streaming, atomically."""
    from transforms.apply import desensitize_resource as run
    from transforms.apply import read_desensitization

    _format(fmt)
    home = Home.from_env().ensure()
    with steps(err_console, f"desensitize {code}") as step:
        step("scanning undeclared columns, compiling the policy, streaming to work/")
        out = run(home, code, policy)
    doc = read_desensitization(out)
    if fmt == "json":
        typer.echo(json.dumps({"output": str(out), **doc}, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{code} → {out} ({doc.get('rows', 0):,} rows)")
    for col in ("column", "type", "operator", "rule", "reversible"):
        table.add_column(col, overflow="fold")
    for a in doc["columns"]:
        table.add_row(
            a["column"],
            a.get("pii_type") or "-",
            a["op"] if a.get("output") else "suppress (dropped)",
            a.get("source", ""),
            "yes" if a.get("reversible") else "no",
        )
    console.print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="pii")
    root.command("desensitize")(desensitize)
