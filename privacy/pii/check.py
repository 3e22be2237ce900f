"""``pii check``: compare what a snapshot holds with what the catalog declares.

Findings (consumed by the pre-release assessment as well as printed by the CLI):

- ``undeclared_pii``: the scanner finds a personal-information type in a column the catalog
  declares no ``pii_type`` for (severity high for identifiers that single a person out —
  ID, bank card, passport, mobile — and medium otherwise);
- ``contradicted_declaration``: the column is declared as one type but the data look like
  another, or like none (high when the declared type is not found at all in most values:
  the declaration, and so the desensitization chosen by it, is wrong).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from catalogs.catalog import Catalog
from catalogs.vocabulary import PiiType
from governance import evidence
from governance.audit import record
from privacy.pii.scan import DEFAULT_SAMPLE, ScanReport, scan_frame
from shuyu_core import snapshots
from shuyu_core.errors import ShuyuError
from shuyu_core.home import Home

Kind = Literal["undeclared_pii", "contradicted_declaration"]
Severity = Literal["high", "medium", "low"]
_DIRECT = {
    PiiType.CN_RESIDENT_ID.value,
    PiiType.CN_BANK_CARD.value,
    PiiType.CN_PASSPORT.value,
    PiiType.CN_MOBILE.value,
}
# A declared type whose own hit rate stays below this is contradicted by the data.
CONFIRM_RATE = 0.5


@dataclass(frozen=True)
class Finding:
    resource: str
    snapshot: str
    column: str
    kind: Kind
    severity: Severity
    declared: str | None
    detected: str | None
    score: float
    hit_rate: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def findings_from_report(
    code: str, snapshot_id: str, report: ScanReport, declared: dict[str, str | None]
) -> list[Finding]:
    """Compare a scan with declarations (column -> declared pii_type or None)."""
    out: list[Finding] = []
    for col in report.columns:
        if col.column not in declared:
            continue
        want = declared[col.column]
        got = col.entity
        if want is None and got is not None:
            out.append(
                Finding(
                    code,
                    snapshot_id,
                    col.column,
                    "undeclared_pii",
                    "high" if got in _DIRECT else "medium",
                    None,
                    got,
                    col.score,
                    col.hit_rate,
                    f"{col.column} holds {got} but the catalog declares no pii_type "
                    f"({col.evidence})",
                )
            )
        elif want is not None and got != want:
            own_rate = col.rates.get(want, 0.0)
            if got is None and own_rate >= CONFIRM_RATE:
                continue  # the declared type is there; the scan's doubt is not a contradiction
            severity: Severity = "high" if own_rate < CONFIRM_RATE else "medium"
            looks = f"looks like {got}" if got is not None else "shows no personal identifier"
            out.append(
                Finding(
                    code,
                    snapshot_id,
                    col.column,
                    "contradicted_declaration",
                    severity,
                    want,
                    got,
                    col.score,
                    col.hit_rate,
                    f"{col.column} is declared {want} but {looks}; only {own_rate:.1%} of "
                    f"sampled values match {want} ({col.evidence})",
                )
            )
    return out


def check_resource(
    home: Home, code: str, sample: int = DEFAULT_SAMPLE, catalog: Catalog | None = None
) -> list[Finding]:
    """Scan the latest snapshot of ``code`` and return the findings against the catalog."""
    try:
        resource = (catalog or Catalog.load()).get(code)
        manifest = snapshots.latest(home, code)
        evidence.verify_snapshot(home, manifest)
        lf = snapshots.scan(home, code, manifest.snapshot_id)
        report = scan_frame(lf, sample=sample)
    except ShuyuError as exc:
        record(home, "pii.check", code, "error", {"error": exc.one_line()})
        exc.audited = True
        raise
    declared = {f.name: (f.pii_type.value if f.pii_type else None) for f in resource.fields}
    findings = findings_from_report(code, manifest.snapshot_id, report, declared)
    record(
        home,
        "pii.check",
        code,
        "ok",
        {
            "snapshot": manifest.snapshot_id,
            "findings": len(findings),
            "by_kind": {
                k: sum(1 for f in findings if f.kind == k)
                for k in ("undeclared_pii", "contradicted_declaration")
            },
            "columns": [f"{f.column}:{f.kind}:{f.detected}" for f in findings],
        },
    )
    return findings
