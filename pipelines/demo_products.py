"""Demo stage "products": build the four demo data products on the ingested snapshots.

Runs after ingestion and governance (which records the consents the verification product
checks). A re-run over the same snapshots returns the stored releases: no new charge, no new
noise, no quota spent again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from governance import roles
from governance.consent import ConsentLedger, subject_tokens
from privacy.dp import ledger
from products import specs
from products.engine import BuildOptions, BuildOutcome, build
from shuyu_core import snapshots
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, load_key

DEMO_PRODUCTS = (
    "si_enrolment_report",
    "business_vitality_index",
    "identity_verification",
    "medical_desensitized_extract",
    # Written only in the product language (no product-specific Python):
    "medical_settlement_report",
    "market_entity_report",
    "si_monthly_contributions",
)
QUERIES = 300
SEED = 20250607


def demo_queries(home: Home, n: int = QUERIES, seed: int = SEED) -> Path:
    """A developer's batch: true pairs, wrong names and unknown identifiers, persons and
    enterprises (deterministic for the snapshots, so a re-run is the same batch)."""
    rng = np.random.default_rng(seed)
    people = (
        snapshots.scan(home, "RKJBXX", columns=["公民身份号码", "姓名"])
        .unique(subset=["公民身份号码"], keep="none")
        .drop_nulls()  # injected defects: a query needs both a name and a number
        .sort("公民身份号码")
        .collect()
    )
    firms = (
        snapshots.scan(home, "SCZTDJ", columns=["统一社会信用代码", "企业名称"])
        .unique(subset=["统一社会信用代码"], keep="none")
        .drop_nulls()  # injected defects: a query needs both a name and a number
        .sort("统一社会信用代码")
        .collect()
    )
    n_firms = n // 5
    n_people = n - n_firms
    p = people.sample(min(n_people, people.height), seed=seed)
    f = firms.sample(min(n_firms, firms.height), seed=seed)
    p_kind = rng.integers(0, 10, p.height)  # 0-5 true, 6-8 wrong name, 9 unknown id
    names = p["姓名"].to_list()
    shuffled = list(rng.permutation(names))
    person_rows = pl.DataFrame(
        {
            "kind": ["person"] * p.height,
            "name": [shuffled[i] if 6 <= k <= 8 else names[i] for i, k in enumerate(p_kind)],
            "id_number": [
                "11010119900307" + str(rng.integers(1000, 9999)) if k == 9 else pid
                for pid, k in zip(p["公民身份号码"], p_kind, strict=True)
            ],
        }
    )
    f_kind = rng.integers(0, 4, f.height)  # 0-1 true, 2 unknown code, 3 wrong name
    firm_rows = pl.DataFrame(
        {
            "kind": ["enterprise"] * f.height,
            "name": [
                nm + "分公司" if k == 3 else nm for nm, k in zip(f["企业名称"], f_kind, strict=True)
            ],
            "id_number": [
                "91210800MA" + f"{rng.integers(10**7, 10**8 - 1)}" if k == 2 else code
                for code, k in zip(f["统一社会信用代码"], f_kind, strict=True)
            ],
        }
    )
    # The requester cites the evidence reference of the authorization it collected; for
    # subjects without one it cites a reference the ledger does not know (refused).
    ver = specs.get("identity_verification").verification
    assert ver is not None
    held = (
        ConsentLedger(home)
        .list(purpose=ver.consent_purpose, include_revoked=True)
        .sort("id")
        .unique(subset=["subject_token"], keep="last")
        .select(pl.col("subject_token").alias("_token"), pl.col("evidence_ref").alias("_ref"))
    )
    queries = pl.concat([person_rows, firm_rows]).with_row_index("n")
    tokens = subject_tokens(load_key(home, PSEUDONYM), queries["id_number"])
    queries = (
        queries.with_columns(tokens.alias("_token"))
        .join(held, on="_token", how="left")
        .sort("n")
        .select(
            pl.format("DEMO-Q{}", pl.col("n").cast(pl.String).str.zfill(5)).alias("query_id"),
            "kind",
            "name",
            "id_number",
            pl.coalesce(
                pl.when(pl.col("kind") == "person").then(pl.col("_ref")),
                pl.format("YK-AUTH-REF-{}", pl.col("n")),
            ).alias("consent_ref"),
        )
    )
    path = home.root / "sources" / "verification_queries.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = queries.write_csv()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def stage(home: Home, console: Console) -> dict[str, object]:
    roles.require(home, "demo", "products stage")
    outcomes: dict[str, BuildOutcome] = {}
    timings: dict[str, float] = {}
    for product in DEMO_PRODUCTS:
        options = BuildOptions()
        if product == "identity_verification":
            options = BuildOptions(queries=demo_queries(home))
        t0 = time.perf_counter()
        with console.status(f"building {product}"):
            outcomes[product] = build(home, product, options)
        timings[product] = time.perf_counter() - t0

    table = Table(title="data products 数据产品")
    for col in ("product", "release", "new?", "seconds", "outputs", "suppressed", "ρ"):
        table.add_column(col)
    for product, out in outcomes.items():
        m = out.manifest
        table.add_row(
            product,
            m.release_id,
            "reused" if out.reused else "new",
            f"{timings[product]:.1f}",
            str(len(m.outputs)),
            str(len(m.suppressed)),
            f"{m.budget.rho:g}" if m.budget else "-",
        )
    console.print(table)
    ver = outcomes["identity_verification"].manifest.verification or {}
    console.print(f"verification results: {ver.get('results')}", highlight=False)
    # Charges are booked in the period of each product's data (its reference period).
    periods = sorted({e.period for e in ledger.all_entries(home) if e.state != "void"})
    budgets = [b for p in periods for b in ledger.show(home, period=p)["budgets"]]
    for b in budgets:
        console.print(
            f"budget {b['resource']}/{b['unit']} {b['total']['period']}: spent "
            f"ρ={b['spent']['rho']:.3g} of "
            f"{b['total']['rho']:g} ({b['releases']} releases), remaining ε≈"
            f"{b['remaining']['epsilon']:.3g} at δ={b['total']['delta']:g}",
            highlight=False,
        )
    console.print(f"releases are in {home.releases}", highlight=False)
    return {
        "releases": {p: o.release_id for p, o in outcomes.items()},
        "reused": {p: o.reused for p, o in outcomes.items()},
        "seconds": {p: round(t, 2) for p, t in timings.items()},
        "verification": ver.get("results"),
        "budget_spent_rho": {
            f"{b['resource']} {b['total']['period']}": b["spent"]["rho"] for b in budgets
        },
    }
