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
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

if TYPE_CHECKING:
    import polars as pl

    from catalogs.models import Resource
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
    sensitive: list[str] | None = typer.Option(
        None,
        "--sensitive",
        help="sensitive attribute for distinct l-diversity (repeatable; default: the "
        "catalog's sensitive_personal attributes)",
    ),
    output: Path | None = typer.Option(
        None, "--output", help="a desensitized output directory (default: the latest one)"
    ),
    enforce: bool = typer.Option(
        False,
        "--enforce",
        help="reach k by generalization then suppression; write the result to work/kanon/",
    ),
    max_suppression: float = typer.Option(
        0.05, "--max-suppression", help="with --enforce: share of records that may be dropped"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """k-anonymity and l-diversity of a desensitized output over declared quasi-identifiers."""
    import polars as pl

    from catalogs.catalog import Catalog
    from privacy.risk import record_risk
    from transforms.apply import DATA_FILE, latest_output, output_root

    _format(fmt)
    home = Home.from_env().ensure()
    resource = Catalog.load().get(code)
    if output is not None:
        from shuyu_core import ids

        # Only a desensitized output (work/desensitized/<CODE>/…) is measured, never raw/.
        output = ids.within(output_root(home, code), output)
    directory = output or latest_output(home, code)
    if not (directory / DATA_FILE).is_file():
        raise ValidationError(
            f"{directory} holds no {DATA_FILE}",
            hint=f"pass a directory written by 'shuyu desensitize {code}'",
        )
    lf = pl.scan_parquet(directory / DATA_FILE)
    measured = record_risk(lf, resource, k, sensitive or None)
    doc: dict[str, object] = {"resource": code, "output": str(directory), **measured.to_dict()}
    if enforce:
        doc["enforce_k"] = _enforce(home, resource, directory, lf, k, max_suppression)
    record(home, "pii.risk", code, "ok", doc)
    if fmt == "json":
        typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    for key, value in doc.items():
        console.print(f"{key}: {value}", highlight=False)


def _enforce(
    home: Home,
    resource: Resource,
    directory: Path,
    lf: pl.LazyFrame,
    k: int,
    max_suppression: float,
) -> dict[str, object]:
    """Write the k-anonymous version of a desensitized output next to it, in work/kanon/."""
    from privacy.risk import declared_quasi_identifiers, enforce_k, hierarchy_for
    from shuyu_core import atomic
    from transforms.apply import DATA_FILE, SIDECAR, read_desensitization

    if not 0.0 <= max_suppression <= 1.0:
        raise ValidationError(
            f"--max-suppression {max_suppression} is not a share",
            hint="use a number between 0 and 1, e.g. 0.05",
        )
    final = home.work / "kanon" / resource.code / f"{directory.name}-k{k}-max{max_suppression:g}"
    if (final / SIDECAR).is_file():
        # Same input, k and budget give the same output: report the stored cost.
        stored = json.loads((final / SIDECAR).read_text(encoding="utf-8"))
        return {"written": str(final), "reused": True, **stored["enforce_k"]}
    schema = lf.collect_schema()
    qis = declared_quasi_identifiers(resource, schema.names())
    out, cost = enforce_k(
        lf, qis, k, hierarchy_for(resource, qis, dict(schema)), max_suppression=max_suppression
    )
    # The source's desensitization record stays at the top level, so reversible columns
    # (SM4) are still visible to ``transforms.apply.reversible_columns`` on this copy.
    doc = {
        **read_desensitization(directory),
        "source": str(directory),
        "rows": cost.records_in - cost.records_suppressed,
        "enforce_k": cost.to_dict(),
    }
    with atomic.staged_dir(final, staging_root=home.tmp) as stage:
        out.sink_parquet(stage / DATA_FILE)
        atomic.write_text(
            stage / SIDECAR, json.dumps(doc, ensure_ascii=False, indent=2, default=str)
        )
    return {"written": str(final), **cost.to_dict()}


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
