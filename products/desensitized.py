"""Desensitized dataset 脱敏数据集: a record-level extract with k-anonymity on its QIs.

1. Every input is read with its declared fields only and desensitized by policy with the
   desensitization operators of ``transforms`` (``transforms.apply.desensitize_frame``): the
   default policy (``catalogs/policies/default.yaml``, or ``desensitize.policy``) with the
   spec's ``overrides``. ID numbers become HMAC-SM3 pseudonyms, names are removed, dates,
   ages and amounts are generalized as the policy says.
2. The inputs are joined on the pseudonymized unit (``join_on``): the other inputs are first
   reduced to one row per unit, so each base row keeps exactly one output row.
3. k-anonymity on the declared quasi-identifiers is enforced with ``privacy.risk.enforce_k``
   (generalization along the hierarchies below, then suppression).
4. Because one person can have several rows in one equivalence class, classes are then also
   required to hold at least k distinct persons; rows of classes that do not are suppressed.
   The unit pseudonym is dropped from the output unless ``keep_unit`` says otherwise.

The release records the operators per column, reversible columns (SM4) and the k reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from catalogs.product_models import DesensitizeSpec, ProductSpec
from products import outputs
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.release import InputRef, KAnonymity, ReversibleColumn
from shuyu_core.errors import ShuyuError, ValidationError
from shuyu_core.home import Home

OUTPUT = "extract"
_UNIT = "__unit"


def _policy(spec: DesensitizeSpec) -> Any:
    """The transforms Policy with the spec's overrides applied."""
    from transforms.policy import Policy, Rule, load_policy

    base = load_policy(spec.policy)
    fields = dict(base.fields)
    for key, rule in spec.overrides.items():
        fields[key] = Rule(op=rule.op, params=dict(rule.params))  # type: ignore[arg-type]
    return Policy.model_validate({**base.model_dump(), "fields": fields})


def _check(spec: ProductSpec) -> DesensitizeSpec:
    d = spec.desensitize
    assert d is not None
    codes = [i.resource for i in spec.inputs]
    if d.base_resource not in codes:
        raise ValidationError(
            f"product {spec.id}: base_resource {d.base_resource} is not an input",
            hint="name one of the declared inputs",
        )
    if len(codes) > 1 and (
        d.join_on is None or any(d.join_on not in i.fields for i in spec.inputs)
    ):
        raise ValidationError(
            f"product {spec.id}: several inputs need join_on, a field every input declares",
            hint="set desensitize.join_on (e.g. 公民身份号码)",
        )
    return d


class DesensitizedBuilder:
    def extra_inputs(self, home: Home, spec: ProductSpec, options: BuildOptions) -> list[InputRef]:
        return []

    def reversible_outputs(self, spec: ProductSpec) -> bool:
        from catalogs.catalog import Catalog

        d = _check(spec)
        policy = _policy(d)
        catalog = Catalog.load()
        for inp in spec.inputs:
            res = catalog.get(inp.resource)
            for name in inp.fields:
                f = res.field(name)
                rule, _src = policy.resolve(inp.resource, name, f.pii_type, f.sensitivity)
                if rule.reversible:
                    return True
        return False

    def plan(self, ctx: BuildContext) -> None:
        """Spec vs builder and the join key; this kind draws no noise and charges nothing."""
        spec = ctx.spec
        d = _check(spec)
        outputs = {d.rename.get(f, f) for i in spec.inputs for f in i.fields}
        missing = [q for q in d.quasi_identifiers if q not in outputs]
        if missing:
            raise ValidationError(
                f"product {spec.id}: quasi-identifier(s) {', '.join(missing)} are not among "
                "the declared fields (after rename)",
                hint="name QIs by their output names (after rename)",
            )

    def draw(self, ctx: BuildContext) -> Draw:
        from transforms.apply import desensitize_frame, home_key_provider

        spec = ctx.spec
        d = _check(spec)
        policy = _policy(d)
        keys = home_key_provider(ctx.home)
        frames: dict[str, pl.LazyFrame] = {}
        actions: list[dict[str, Any]] = []
        for inp in spec.inputs:
            resource = ctx.catalog.get(inp.resource)
            lf, acts = desensitize_frame(ctx.scan(inp.resource), resource, policy, keys)
            for a in acts:
                actions.append({"resource": inp.resource, **a.to_dict()})
            if d.join_on is not None:
                if d.join_on not in lf.collect_schema().names():
                    raise ValidationError(
                        f"product {spec.id}: the policy suppresses the join field {d.join_on}",
                        hint="pseudonymize it instead (the default for ID numbers)",
                    )
                lf = lf.rename({d.join_on: _UNIT})
            frames[inp.resource] = lf
        joined = frames[d.base_resource]
        for code, lf in frames.items():
            if code == d.base_resource:
                continue
            # One row per unit in the joined inputs: a base row keeps exactly one output row.
            joined = joined.join(lf.unique(subset=[_UNIT], keep="any"), on=_UNIT, how="left")
        joined = joined.rename({k: v for k, v in d.rename.items() if k != d.join_on})
        names = joined.collect_schema().names()
        missing = [q for q in d.quasi_identifiers if q not in names]
        if missing:
            raise ValidationError(
                f"product {spec.id}: quasi-identifier(s) {', '.join(missing)} are not output "
                f"columns (columns: {', '.join(n for n in names if n != _UNIT)})",
                hint="name QIs by their output names (after rename)",
            )
        table, k_report = enforce(joined.collect(engine="streaming"), d)
        meta = {"actions": actions, "k": k_report, "policy": policy.name}
        meta["policy_sm3"] = policy.digest()
        return Draw(tables={OUTPUT: table}, meta=meta)

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
        spec = ctx.spec
        d = _check(spec)
        table = draw.tables[OUTPUT]
        actions = draw.meta["actions"]
        descriptions: dict[str, str] = {}
        for a in actions:
            if a["output"] is None:
                continue
            out_name = d.rename.get(a["output"], a["output"])
            descriptions[out_name] = f"{a['resource']}.{a['column']}: {a['op']}" + (
                f" {a['params']}" if a["params"] else ""
            )
        k = draw.meta["k"]
        for name, level in k.get("generalization", {}).items():
            if level != "original" and name in descriptions:
                descriptions[name] += f"; generalized for k-anonymity ({level})"
        files = outputs.write_table(
            stage,
            OUTPUT,
            table,
            [f for f in spec.outputs.formats if f != "html"],
            "desensitized_record",
            descriptions,
        )
        reversible = [
            ReversibleColumn(
                output=OUTPUT, column=d.rename.get(a["output"], a["output"]), operator=a["op"]
            )
            for a in actions
            if a["reversible"] and a["output"] is not None and a["output"] != d.join_on
        ]
        return Finished(
            outputs=files,
            reversible_columns=reversible,
            k_anonymity=KAnonymity(
                quasi_identifiers=list(d.quasi_identifiers),
                target=d.k,
                achieved=int(k["achieved"]),
                records_in=int(k["records_in"]),
                records_out=int(k["records_out"]),
                records_suppressed=int(k["records_suppressed"]),
                generalization={str(a): str(b) for a, b in k.get("generalization", {}).items()},
            ),
            notes=[
                f"Desensitized with policy {draw.meta['policy']} (SM3 "
                f"{draw.meta['policy_sm3'][:16]}…) and the spec's overrides.",
                f"k-anonymity: every combination of {', '.join(d.quasi_identifiers)} holds at "
                f"least {d.k} records and {d.k} distinct persons; "
                f"{k['records_suppressed']} of {k['records_in']} records were suppressed.",
                *(
                    [f"l-diversity of {d.sensitive_attribute}: {k['l_diversity']}"]
                    if "l_diversity" in k
                    else []
                ),
            ],
        )


def _age_band_levels() -> list[Any]:
    """'30-39' / '80+' bands -> 20-year bands -> suppressed."""
    from privacy import risk

    def wider(e: pl.Expr) -> pl.Expr:
        lo = (e.cast(pl.String).str.extract(r"^(\d+)").cast(pl.Int64, strict=False) // 20) * 20
        return lo.cast(pl.String) + "-" + (lo + 19).cast(pl.String)

    return [wider, lambda e: pl.lit(risk.SUPPRESSED)]


def _month_text_levels() -> list[Any]:
    """'2025-03' -> '2025Q1' -> '2025' -> suppressed."""
    from privacy import risk

    def quarter(e: pl.Expr) -> pl.Expr:
        s = e.cast(pl.String)
        q = (s.str.slice(5, 2).cast(pl.Int64, strict=False) - 1) // 3 + 1
        return s.str.slice(0, 4) + "Q" + q.cast(pl.String)

    return [quarter, lambda e: e.cast(pl.String).str.slice(0, 4), lambda e: pl.lit(risk.SUPPRESSED)]


def hierarchy(frame: pl.DataFrame, qis: list[str]) -> dict[str, list[Any]]:
    """Generalization levels per quasi-identifier, by what the column holds."""
    from privacy import risk

    out: dict[str, list[Any]] = {}
    for q in qis:
        sample = frame[q].drop_nulls().cast(pl.String).head(1000)
        if sample.str.contains(r"^\d{6}$").all() and sample.len():
            out[q] = risk.region_levels()
        elif sample.str.contains(r"^\d{4}-\d{2}$").all() and sample.len():
            out[q] = _month_text_levels()
        elif sample.str.contains(r"^\d+(-\d+|\+)$").all() and sample.len():
            out[q] = _age_band_levels()
        else:
            out[q] = risk.suppress_levels()
    return out


def enforce(frame: pl.DataFrame, d: DesensitizeSpec) -> tuple[pl.DataFrame, dict[str, Any]]:
    """k-anonymity over records (``privacy.risk.enforce_k``: generalize, then suppress), then
    over distinct persons: a class must also hold k different units."""
    from privacy import risk

    qis = list(d.quasi_identifiers)
    generalized, report = risk.enforce_k(frame, qis, d.k, hierarchy(frame, qis))
    out = generalized.collect()
    persons = out.group_by(qis).agg(pl.col(_UNIT).n_unique().alias("_persons"))
    out = out.join(persons, on=qis, how="left", nulls_equal=True)
    few = int((out["_persons"] < d.k).sum())
    out = out.filter(pl.col("_persons") >= d.k).drop("_persons")
    if out.height:
        sizes = out.group_by(qis).agg(pl.len().alias("n"), pl.col(_UNIT).n_unique().alias("p"))
        achieved = int(sizes.select(pl.min_horizontal("n", "p").min()).item())
    else:
        achieved = 0
    if achieved < d.k and out.height:
        raise ShuyuError(
            f"k-anonymity {achieved} below the target {d.k} after enforcement",
            hint="report a bug: enforcement must not leave small classes",
        )
    k_doc: dict[str, Any] = {
        "achieved": achieved,
        "records_in": report.records_in,
        "records_out": out.height,
        "records_suppressed": report.records_in - out.height,
        "records_suppressed_persons": few,
        "generalization": report.level_names,
        "enforce_k": report.to_dict(),
    }
    if d.sensitive_attribute and out.height:
        k_doc["l_diversity"] = risk.l_diversity(out, qis, d.sensitive_attribute)
    out = out.drop(_UNIT) if not d.keep_unit else out.rename({_UNIT: d.join_on or "unit"})
    # Sorted by every column: the source's row order (by settlement or ID number) must not
    # survive into the extract.
    return out.sort(out.columns, nulls_last=True), k_doc
