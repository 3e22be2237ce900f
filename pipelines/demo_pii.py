"""Demo stage: check every demo resource's PII declarations and desensitize it into work/.

Runs after ingestion. For the demo only, missing pseudonymization and SM4 keys are created
in ``<home>/keys`` (a real deployment provisions them outside the repository and the home).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from catalogs.catalog import Catalog
from pipelines.cli_pii import print_findings
from privacy.pii.check import check_resource
from privacy.risk import enforce_k, hierarchy_for, k_anonymity
from shuyu_core import keys, snapshots
from shuyu_core.home import Home
from transforms.apply import DATA_FILE, desensitize_resource, read_desensitization
from transforms.policy import DEFAULT_POLICY

DEMO_CODES = ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS")
DEMO_K = 5


def stage(home: Home, console: Console) -> dict[str, Any]:
    catalog = Catalog.load()
    for name in (keys.PSEUDONYM, keys.ENCRYPTION):
        path, created = keys.init_key(home, name)
        if created:
            console.print(f"created demo key {path} (demo only)")
    summary: dict[str, Any] = {}
    outputs = Table(title="desensitized outputs 脱敏结果 (work/)")
    for col in ("resource", "rows", "suppressed", "masked/generalized", "pseudonymized", "output"):
        outputs.add_column(col, overflow="fold")
    for code in DEMO_CODES:
        if not snapshots.list_snapshots(home, code):
            console.print(f"  {code}: no snapshot, skipped")
            continue
        findings = check_resource(home, code, catalog=catalog)
        print_findings(console, code, findings)
        out = desensitize_resource(home, code, DEFAULT_POLICY, catalog=catalog)
        doc = read_desensitization(out)
        cols = doc["columns"]
        outputs.add_row(
            code,
            f"{doc.get('rows', 0):,}",
            ", ".join(c["column"] for c in cols if c["output"] is None) or "-",
            ", ".join(
                c["column"] for c in cols if c["op"] not in ("keep", "pseudonymize", "suppress")
            )
            or "-",
            ", ".join(c["column"] for c in cols if c["op"] == "pseudonymize") or "-",
            str(out.relative_to(home.root)),
        )
        entry: dict[str, Any] = {
            "findings": [f"{f.column}: {f.kind} ({f.detected or f.declared})" for f in findings],
            "output": str(out),
            "rows": doc.get("rows"),
        }
        resource = catalog.get(code)
        lf = pl.scan_parquet(out / DATA_FILE)
        schema = lf.collect_schema()
        qis = [f.name for f in resource.fields if f.quasi_identifier and f.name in schema]
        if qis:
            before = k_anonymity(lf, qis)
            _, cost = enforce_k(lf, qis, DEMO_K, hierarchy_for(resource, qis, dict(schema)))
            entry["k_anonymity"] = {
                "quasi_identifiers": qis,
                "k_before": before.min_class_size,
                "share_below_5": round(before.share_below_k(DEMO_K), 4),
                "enforce_k5": cost.to_dict(),
            }
            console.print(
                f"  {code}: quasi-identifiers {', '.join(qis)} — smallest class "
                f"{before.min_class_size}, {before.share_below_k(DEMO_K):.1%} of records in "
                f"classes < {DEMO_K}; reaching k={DEMO_K} costs levels {cost.levels_used} "
                f"and {cost.records_suppressed:,} suppressed records"
            )
        summary[code] = entry
    console.print(outputs)
    return summary
