"""Product commands: ``shuyu build``, ``shuyu products list``, ``shuyu releases show``,
``shuyu budget show``, ``shuyu budget resolve``.

``register(app)`` adds them to the top-level ``shuyu`` app.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

console = Console()

products_app = typer.Typer(help="data product specs (数据产品)", no_args_is_help=True)
releases_app = typer.Typer(help="built releases awaiting review (releases/)", no_args_is_help=True)
budget_app = typer.Typer(help="privacy budgets and the ledger (隐私预算)", no_args_is_help=True)


def _fmt(value: str) -> str:
    if value not in ("table", "json"):
        raise ValidationError(f"unknown format {value!r}", hint="use --format table or json")
    return value


def _confirm_charge(product: str, yes: bool, quiet: bool) -> bool:
    """Show what the build charges; ask only when a person is at a terminal."""
    import sys

    from products import budget_preview, specs

    home = Home.from_env().ensure()
    lines = budget_preview.preview(home, specs.get(product))
    if not lines:
        return True
    if not quiet:
        for text in budget_preview.describe(lines):
            console.print(text, highlight=False)
    if yes or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return True
    return bool(typer.confirm("继续并扣减预算? charge the budget and build?", default=False))


def build(
    product: str = typer.Argument(..., help="product id, e.g. si_enrolment_report"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    queries: Path | None = typer.Option(
        None, "--queries", help="verification products: the batch of queries (CSV/Parquet)"
    ),
    requester: str | None = typer.Option(
        None,
        "--requester",
        help="verification: optional; must name the account you act as (the batch always "
        "counts against that account's daily quota)",
    ),
    snapshot: list[str] = typer.Option(
        [], "--snapshot", help="pin an input snapshot as CODE=SNAPSHOT_ID (repeatable)"
    ),
    prefect: bool = typer.Option(False, "--prefect", help="run as a Prefect flow run"),
    cluster: str | None = typer.Option(
        None,
        "--cluster",
        help="bound per partition on a Dask cluster: local:N or tcp://host:8786 "
        "(default SHUYU_CLUSTER / SHUYU_DASK_SCHEDULER, else this process)",
    ),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="do not ask before charging the privacy budget (scripts)"
    ),
) -> None:
    """Build one product (or return its stored release) and print the release id.

    Prints the ρ the build charges and the budget left first; in a terminal it asks before
    charging (``--yes`` skips the question; without a terminal, e.g. in CI, it never waits).
    A stored release (same spec version, same data) is returned without any charge.
    """
    _fmt(fmt)
    if not _confirm_charge(product, yes, quiet=fmt == "json"):
        console.print("未构建 not built: the budget was not charged")
        raise typer.Exit(1)
    pins: dict[str, str] = {}
    for item in snapshot:
        code, sep, sid = item.partition("=")
        if not sep or not code or not sid:
            raise ValidationError(
                f"--snapshot {item!r} is not CODE=SNAPSHOT_ID", hint="e.g. --snapshot RKJBXX=2025…Z"
            )
        pins[code] = sid
    home = Home.from_env().ensure()
    if prefect:
        from pipelines.flow_support import for_local_flow_run
        from pipelines.flows_products import run_build as run_build_flow

        for_local_flow_run(home)
        release_id, reused = run_build_flow(
            product,
            cluster,
            queries=str(queries) if queries else None,
            requester=requester,
            snapshot_ids=pins or None,
        )
        from products import release as rel

        manifest = rel.load(home, release_id)
    else:
        from products.engine import BuildOptions
        from products.engine import build as run_build

        with console.status(f"building {product}"):
            outcome = run_build(
                home,
                product,
                BuildOptions(
                    snapshot_ids=pins, queries=queries, requester=requester, cluster=cluster
                ),
            )
        manifest, reused = outcome.manifest, outcome.reused
    if fmt == "json":
        doc = {
            "release": manifest.release_id,
            "product": manifest.product_id,
            "version": manifest.version,
            "reused": reused,
            "path": str(home.releases / manifest.release_id),
            "rho": manifest.budget.rho if manifest.budget else 0.0,
            "execution": manifest.execution.model_dump() if manifest.execution else None,
        }
        typer.echo(json.dumps(doc, ensure_ascii=False))
        return
    state = "stored release (no new charge, no new noise)" if reused else "new release"
    console.print(f"[green]{state}[/] {manifest.product_id} v{manifest.version}")
    ex = manifest.execution
    if ex is not None and (ex.backend != "local" or ex.note):
        where = f"{ex.backend}, {ex.partitions} partition(s), on the {ex.ran_on}"
        console.print(f"执行 execution: {where}" + (f" — {ex.note}" if ex.note else ""))
    typer.echo(manifest.release_id)


@products_app.command("plan")
def products_plan(
    product: str = typer.Argument(..., help="product id"),
    target: list[str] = typer.Option(
        [], "--target", help="MEASURE=HALF_WIDTH: the ρ that half-width needs (repeatable)"
    ),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Expected interval half-width per measure, ρ for a target, budget left (no charge)."""
    from dataclasses import asdict

    from governance import roles
    from products import budget_preview, planning, specs

    home = Home.from_env().ensure()
    roles.require(home, "budget.read", product)
    targets: dict[str, float] = {}
    for item in target:
        name, sep, value = item.partition("=")
        try:
            targets[name] = float(value) if sep else float("nan")
        except ValueError:
            targets[name] = float("nan")
        if not sep or not targets[name] > 0:
            raise ValidationError(
                f"--target {item!r} is not MEASURE=HALF_WIDTH", hint="e.g. --target insured=20"
            )
    spec = specs.get(product)
    rows = planning.plan(spec, targets)
    charges = budget_preview.preview(home, spec)
    if _fmt(fmt) == "json":
        doc = {
            "product": spec.id,
            "rho": spec.budget.zcdp_rho if spec.budget else 0.0,
            "measures": [asdict(r) for r in rows],
            "budget": [asdict(c) for c in charges],
        }
        typer.echo(json.dumps(doc, ensure_ascii=False))
        return
    t = Table(title=f"{spec.id}: accuracy at ρ={spec.budget.zcdp_rho if spec.budget else 0:g}")
    for c in ("table", "measure", "cells", "σ", "half-width", "level", "target", "ρ needed"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            r.table,
            r.measure,
            str(r.cells),
            f"{r.scale:.4g}",
            # a quantile's half-width is in ranks (units), not in the value's unit
            f"±{r.half_width:.4g}" + (" 秩 ranks" if "Quantile" in r.aggregate else ""),
            f"{r.level:.2%}",
            "-" if r.target is None else f"±{r.target:g}",
            "-" if r.rho_needed is None else f"{r.rho_needed:.4g}",
        )
    console.print(t)
    for text in budget_preview.describe(charges):
        console.print(text, highlight=False)


@products_app.command("list")
def products_list(fmt: str = typer.Option("table", "--format", help="table | json")) -> None:
    """The product specs and their latest release."""
    from products import release as rel
    from products import specs

    home = Home.from_env()
    rows = []
    for spec in specs.load_all().values():
        releases = rel.list_releases(home, spec.id)
        rows.append(
            {
                "id": spec.id,
                "name": spec.name,
                "name_en": spec.name_en,
                "version": spec.version,
                "kind": spec.kind,
                "purpose": spec.purpose_category,
                "scenario": spec.scenario,
                "rho": spec.budget.zcdp_rho if spec.budget else 0.0,
                "releases": len(releases),
                "latest_release": releases[-1].release_id if releases else None,
            }
        )
    if _fmt(fmt) == "json":
        typer.echo(json.dumps({"products": rows}, ensure_ascii=False))
        return
    cols = ("id", "name", "version", "kind", "purpose", "rho", "releases", "latest_release")
    table = Table(title="data products 数据产品")
    id_width = max((len(str(r["latest_release"] or "")) for r in rows), default=0)
    for col in cols:
        if col == "latest_release":
            # a release id is copied into other commands: printed whole on one line, never cut
            table.add_column(col, no_wrap=True, min_width=id_width)
        else:
            table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(str(r[c]) if r[c] is not None else "" for c in cols))
    console.print(table)


@releases_app.command("list")
def releases_list(
    product: str | None = typer.Option(None, "--product", help="only this product's releases"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Every built release with its stage (assessed, decided, published), full ids."""
    from assessment import status
    from governance import roles

    home = Home.from_env()
    roles.require(home, "release.read", f"releases/{product or 'all'}", developer=None)
    rows = status.all_statuses(home, product)
    if _fmt(fmt) == "json":
        typer.echo(json.dumps({"releases": [s.to_dict() for s in rows]}, ensure_ascii=False))
        return
    table = Table(title="releases 版本")
    # a release id is copied into other commands: printed whole on one line, never cut
    table.add_column(
        "release", no_wrap=True, min_width=max((len(s.release) for s in rows), default=0)
    )
    for col in ("product", "version", "built (UTC)", "verdict", "decision", "stage"):
        table.add_column(col, overflow="fold")
    for s in rows:
        table.add_row(
            s.release,
            s.product,
            s.version,
            f"{s.built_at:%Y-%m-%d %H:%M}",
            s.verdict or "",
            s.decision or "",
            s.stage_zh,
        )
    console.print(table)


@products_app.command("validate")
def products_validate(
    product: str | None = typer.Argument(None, help="one product id (default: every spec)"),
) -> None:
    """Check specs against the catalog, their scenario (product kind, verified field pairs) and
    the domain policy's ceilings, as a build would; exit 4 listing every problem."""
    import datetime as dt

    from catalogs.catalog import Catalog
    from governance import roles
    from products import specs
    from products.validate import problems

    home = Home.from_env().ensure()
    roles.require(home, "agreements.read", product or "products")
    catalog = Catalog.load()
    chosen = [specs.get(product)] if product else list(specs.load_all().values())
    found: list[str] = []
    for spec in chosen:
        for p in problems(home, spec, catalog, dt.date.today()):
            found.append(f"{spec.id}: {p}")
    if found:
        exc = ValidationError(
            f"{len(found)} product spec problem(s): " + "; ".join(found),
            hint="correct the specs (the scenario and the domain policy are not theirs to change)",
        )
        exc.audited = True  # each problem was recorded by its own gate
        raise exc
    console.print(f"[green]ok[/]: {len(chosen)} product spec(s) valid", highlight=False)


@releases_app.command("show")
def releases_show(
    release_id: str = typer.Argument(..., help="release id printed by 'shuyu build'"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """A release manifest: inputs, budget, outputs, accuracy summary."""
    from governance import roles
    from products import release as rel

    home = Home.from_env()
    manifest = rel.load(home, release_id)
    roles.require(home, "release.read", release_id, developer=manifest.developer)
    if _fmt(fmt) == "json":
        typer.echo(rel.manifest_json(manifest))
        return
    console.print(f"[bold]{manifest.name}[/] ({manifest.name_en}) v{manifest.version}")
    console.print(f"release {manifest.release_id} · {manifest.kind} · {manifest.purpose_category}")
    console.print(f"built {manifest.created_at:%Y-%m-%d %H:%M} UTC by {manifest.actor}")
    console.print(f"directory {rel.release_dir(home, release_id)}")
    t = Table(title="inputs")
    for c in ("resource", "snapshot", "rows", "fields"):
        t.add_column(c)
    for i in manifest.inputs:
        t.add_row(i.resource, i.snapshot_id, f"{i.rows:,}", ", ".join(i.fields))
    console.print(t)
    if manifest.budget:
        b = manifest.budget
        console.print(
            f"budget: ρ={b.rho:g} ⇒ (ε={b.epsilon:.3g}, δ={b.delta:g}); ledger "
            + ", ".join(e.entry_id for e in b.entries)
        )
        for mech in manifest.mechanisms:
            noise = ", ".join(
                f"{n.column} {n.distribution} σ={n.scale:.4g} "
                + (
                    f"±{n.rank_error:.4g} 秩 ranks"
                    if n.rank_error is not None
                    else f"±{n.ci_half_width or 0:.4g}"
                )
                for n in mech.measures
            )
            console.print(f"  {mech.output}: ρ={mech.rho:.4g}; {noise}", highlight=False)
    o = Table(title="outputs")
    for c in ("name", "path", "format", "rows", "values"):
        o.add_column(c)
    for out in manifest.outputs:
        o.add_row(out.name, out.path, out.format, str(out.rows), out.values)
    console.print(o)
    if manifest.accuracy:
        shown = [c for c in manifest.accuracy if not c.suppressed]
        console.print(
            f"accuracy: {len(manifest.accuracy)} cells, {len(manifest.suppressed)} suppressed "
            f"measure values, {len(shown)} released with a "
            f"{round(100 * (1 - manifest.accuracy[0].alpha))}% CI"
        )
    if manifest.k_anonymity:
        k = manifest.k_anonymity
        console.print(f"k-anonymity: target {k.target}, achieved {k.achieved}")
    if manifest.verification:
        console.print(f"verification: {json.dumps(manifest.verification['results'])}")


@budget_app.command("show")
def budget_show(
    code: str | None = typer.Argument(None, help="resource code (default: all)"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    period: str | None = typer.Option(
        None, "--period", help="budget period, e.g. 2025 (default: the current one)"
    ),
) -> None:
    """Total, spent and remaining privacy budget per resource and privacy unit."""
    from governance import roles
    from privacy.dp import ledger

    home = Home.from_env()
    roles.require(home, "budget.read", code or "budgets")
    doc = ledger.show(home, code, period=period)
    if _fmt(fmt) == "json":
        typer.echo(json.dumps(doc, ensure_ascii=False))
        return
    t = Table(title=f"privacy budgets (zCDP ρ; ε at δ), period {_period(doc)}")
    for c in (
        "resource",
        "unit",
        "total ρ",
        "spent ρ",
        "remaining ρ",
        "remaining ε",
        "δ",
        "releases",
    ):
        t.add_column(c)
    for b in doc["budgets"]:
        t.add_row(
            b["resource"],
            b["unit"],
            f"{b['total']['rho']:g}",
            f"{b['spent']['rho']:.4g}",
            f"{b['remaining']['rho']:.4g}",
            f"{b['remaining']['epsilon']:.3g}",
            f"{b['total']['delta']:g}",
            str(b["releases"]),
        )
    console.print(t)


@budget_app.command("resolve")
def budget_resolve(
    reason: str = typer.Option(..., "--reason", help="why the break is resolved (audited)"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Resolve a ledger break (admin): restore the audited ledger and let charges proceed."""
    from privacy.dp import ledger

    home = Home.from_env()
    _fmt(fmt)
    doc = ledger.resolve(home, reason)
    if fmt == "json":
        typer.echo(json.dumps(doc, ensure_ascii=False, default=str))
        return
    found = doc["findings"]
    console.print(
        f"[green]已处理[/] ledger break resolved: {len(found)} finding(s), "
        f"{len(doc['actions'])} row(s) restored from the audit record",
        highlight=False,
    )
    for f in found:
        console.print(f"  {f['kind']}: {f['problem']}", highlight=False)
    t = Table(title="spent ρ recomputed from the audit record (已用预算, 以审计记录为准)")
    for c in ("resource", "unit", "period", "from audit", "table before", "now"):
        t.add_column(c)
    for line in doc["spent"]:
        t.add_row(
            line["resource"],
            line["unit"],
            line["period"],
            f"{line['rho_from_audit']:.6g}",
            f"{line['rho_in_table_before']:.6g}",
            f"{line['rho_after']:.6g}",
        )
    console.print(t)


def _period(doc: dict[str, list[dict[str, dict[str, object]]]]) -> str:
    budgets = doc["budgets"]
    return str(budgets[0]["total"]["period"]) if budgets else "-"


def register(app: typer.Typer) -> None:
    app.command("build")(build)
    app.add_typer(products_app, name="products")
    app.add_typer(releases_app, name="releases")
    app.add_typer(budget_app, name="budget")
