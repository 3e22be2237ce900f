"""What a build will charge, and the budget left, before anything is charged.

``shuyu build`` prints this and asks for confirmation when it runs in a terminal (``--yes``
for scripts; without a terminal it never waits). Reading the budget charges nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec, epsilon_from_rho
from privacy.dp import ledger
from shuyu_core.home import Home


@dataclass(frozen=True)
class ChargeLine:
    resource: str
    unit: str
    period: str
    rho: float  # what the build charges
    epsilon: float  # at the budget line's δ (the ledger's convention)
    delta: float
    remaining_rho: float  # before this build
    declared: bool  # a budget line exists (else the build is refused before the charge)


def preview(home: Home, spec: ProductSpec, catalog: Catalog | None = None) -> list[ChargeLine]:
    """One line per input resource of a noisy product; empty for products without noise."""
    if spec.budget is None:
        return []
    cat = catalog or Catalog.load()
    policy = ledger.load_policy()
    at = ledger.data_time(spec.reference_period[1]) if spec.reference_period else None
    period = policy.period_key(at) if at else None
    rho = spec.budget.zcdp_rho
    out: list[ChargeLine] = []
    for i in spec.inputs:
        unit = cat.get(i.resource).privacy_unit or ""
        line = policy.line(i.resource, unit)
        shown = ledger.show(home, i.resource, period=period)["budgets"] if line else []
        row = next((b for b in shown if b["unit"] == unit), None)
        delta = line.delta if line else spec.budget.delta
        out.append(
            ChargeLine(
                resource=i.resource,
                unit=unit,
                period=row["total"]["period"] if row else (period or "-"),
                rho=rho,
                epsilon=epsilon_from_rho(rho, delta),
                delta=delta,
                remaining_rho=float(row["remaining"]["rho"]) if row else 0.0,
                declared=line is not None,
            )
        )
    return out


def describe(lines: list[ChargeLine]) -> list[str]:
    """Chinese-first lines for the terminal."""
    return [
        f"通过检查后将扣减 will charge ρ={x.rho:g} (ε≈{x.epsilon:.3g} at δ={x.delta:g}) to "
        f"{x.resource} ({x.unit}, period {x.period}) once the spec and inputs pass their checks; "
        f"剩余 remaining ρ={x.remaining_rho:.4g} → {max(x.remaining_rho - x.rho, 0.0):.4g}"
        if x.declared
        else f"{x.resource} ({x.unit}): 未声明预算 no budget declared — the build will be refused"
        for x in lines
    ]
