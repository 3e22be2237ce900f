"""Desensitized dataset 脱敏数据集: a record-level extract with k-anonymity on its QIs.

1. Every input is read with its declared fields only and desensitized by policy with the
   desensitization operators of ``transforms`` (``transforms.apply.desensitize_frame``): the
   default policy (``catalogs/policies/default.yaml``, or ``desensitize.policy``) with the
   spec's ``overrides``. ID numbers become HMAC-SM3 pseudonyms, names are removed, dates,
   ages and amounts are generalized as the policy says.
2. The inputs are joined on the pseudonymized unit (``join_on``): the other inputs are first
   reduced to one row per unit, so each base row keeps exactly one output row.
3. k-anonymity is enforced with ``privacy.risk.enforce_k`` (generalization along the
   hierarchies below, then suppression) over the quasi-identifiers *by lineage*
   (:func:`quasi_identifiers`): the spec's declared ones, every catalog
   ``quasi_identifier: true`` field present under any output name, and every identifier
   column that is kept, masked or generalized. A spec can add QIs, never remove them.
   k is at least the domain policy's floor ``min_k``; classes with fewer than ``min_l``
   distinct values of a sensitive attribute (the spec's and the catalog's) are suppressed.
4. Because one person can have several rows in one equivalence class, classes are then also
   required to hold at least k distinct persons; rows of classes that do not are suppressed.
   The unit pseudonym is dropped from the output unless ``keep_unit`` says otherwise.

The release records per output column its source fields and operator (lineage), the
reversible columns (SM4) and the k and l reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.product_models import DesensitizeSpec, ProductSpec
from products import outputs
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.floors import floors
from products.release import ColumnLineage, InputRef, KAnonymity, ReversibleColumn
from shuyu_core.errors import ShuyuError, ValidationError
from shuyu_core.home import Home

OUTPUT = "extract"
_UNIT = "__unit"


def policy_for(spec: DesensitizeSpec) -> Any:
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
        policy = policy_for(d)
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
        policy = policy_for(d)
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
        lineage = column_lineage(spec, actions)
        qis = quasi_identifiers(spec, ctx.catalog, lineage, names)
        sensitive = sensitive_attributes(spec, ctx.catalog, lineage, names, qis)
        fl = floors(ctx.home)
        table, k_report = enforce(
            joined.collect(engine="streaming"),
            d,
            qis=qis,
            k=max(d.k, fl.min_k),
            sensitive=sensitive,
            min_l=fl.min_l,
        )
        meta = {
            "actions": actions,
            "k": k_report,
            "policy": policy.name,
            "lineage": lineage,
            "quasi_identifiers": qis,
            "sensitive_attributes": sensitive,
        }
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
        lineage = {
            name: ColumnLineage(
                sources=list(v["sources"]), operator=v["operator"], params=dict(v["params"])
            )
            for name, v in draw.meta.get("lineage", {}).items()
        }
        files = outputs.write_table(
            stage,
            OUTPUT,
            table,
            [f for f in spec.outputs.formats if f != "html"],
            "desensitized_record",
            descriptions,
            lineage,
        )
        qis = list(draw.meta.get("quasi_identifiers", d.quasi_identifiers))
        k_target = max(d.k, int(k.get("target", d.k)))
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
                quasi_identifiers=qis,
                declared_quasi_identifiers=list(d.quasi_identifiers),
                sensitive_attributes=list(draw.meta.get("sensitive_attributes", [])),
                l_achieved=k.get("l_min"),
                target=k_target,
                achieved=int(k["achieved"]),
                records_in=int(k["records_in"]),
                records_out=int(k["records_out"]),
                records_suppressed=int(k["records_suppressed"]),
                generalization={str(a): str(b) for a, b in k.get("generalization", {}).items()},
            ),
            notes=[
                f"Desensitized with policy {draw.meta['policy']} (SM3 "
                f"{draw.meta['policy_sm3'][:16]}…) and the spec's overrides.",
                f"k-anonymity: every combination of {', '.join(qis)} holds at "
                f"least {k_target} records and {k_target} distinct persons; "
                f"{k['records_suppressed']} of {k['records_in']} records were suppressed.",
                *([f"l-diversity: {k['l_by_attribute']}"] if k.get("l_by_attribute") else []),
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


def enforce(
    frame: pl.DataFrame,
    d: DesensitizeSpec,
    qis: list[str] | None = None,
    k: int | None = None,
    sensitive: list[str] | None = None,
    min_l: int = 1,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """k-anonymity over records (``privacy.risk.enforce_k``: generalize, then suppress), then
    over distinct persons: a class must also hold k different units; then distinct
    l-diversity: a class with fewer than ``min_l`` distinct values of a sensitive attribute
    is suppressed."""
    from privacy import risk

    qis = list(qis if qis is not None else d.quasi_identifiers)
    k = k if k is not None else d.k
    sensitive = [c for c in (sensitive or []) if c in frame.columns and c not in qis]
    generalized, report = risk.enforce_k(frame, qis, k, hierarchy(frame, qis))
    out = generalized.collect()
    persons = out.group_by(qis).agg(
        pl.col(_UNIT).n_unique().alias("_persons"),
        *[pl.col(c).drop_nulls().n_unique().alias(f"_l{i}") for i, c in enumerate(sensitive)],
    )
    out = out.join(persons, on=qis, how="left", nulls_equal=True)
    few = int((out["_persons"] < k).sum())
    keep = pl.col("_persons") >= k
    for i in range(len(sensitive)):
        keep = keep & (pl.col(f"_l{i}") >= min_l)
    out = out.filter(keep).drop(["_persons", *[f"_l{i}" for i in range(len(sensitive))]])
    if out.height:
        sizes = out.group_by(qis).agg(pl.len().alias("n"), pl.col(_UNIT).n_unique().alias("p"))
        achieved = int(sizes.select(pl.min_horizontal("n", "p").min()).item())
    else:
        achieved = 0
    if achieved < k and out.height:
        raise ShuyuError(
            f"k-anonymity {achieved} below the target {k} after enforcement",
            hint="report a bug: enforcement must not leave small classes",
        )
    k_doc: dict[str, Any] = {
        "achieved": achieved,
        "target": k,
        "records_in": report.records_in,
        "records_out": out.height,
        "records_suppressed": report.records_in - out.height,
        "records_suppressed_persons": few,
        "generalization": report.level_names,
        "enforce_k": report.to_dict(),
    }
    if out.height and sensitive:
        by_attr = {c: risk.l_diversity(out, qis, c) for c in sensitive}
        k_doc["l_by_attribute"] = by_attr
        k_doc["l_min"] = min(by_attr.values())
    if d.sensitive_attribute and out.height:
        k_doc["l_diversity"] = risk.l_diversity(out, qis, d.sensitive_attribute)
    out = out.drop(_UNIT) if not d.keep_unit else out.rename({_UNIT: d.join_on or "unit"})
    # Sorted by every column: the source's row order (by settlement or ID number) must not
    # survive into the extract.
    return out.sort(out.columns, nulls_last=True), k_doc


# -- lineage ------------------------------------------------------------------------------------


def column_lineage(spec: ProductSpec, actions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Output column -> {sources: [RESOURCE.field], operator, pii_type} from the actions."""
    d = spec.desensitize
    assert d is not None
    out: dict[str, dict[str, Any]] = {}
    for a in actions:
        if a["output"] is None:
            continue
        if d.join_on is not None and a["column"] == d.join_on:
            if not d.keep_unit:
                continue
            name = d.join_on
        else:
            name = d.rename.get(a["output"], a["output"])
        entry = out.setdefault(
            name,
            {
                "sources": [],
                "operator": a["op"],
                "params": dict(a.get("params") or {}),
                "pii_type": a.get("pii_type"),
            },
        )
        entry["sources"].append(f"{a['resource']}.{a['column']}")
        if entry["operator"] != a["op"]:
            entry["operator"] = "mixed"
    return out


def quasi_identifiers(
    spec: ProductSpec, catalog: Catalog, lineage: dict[str, dict[str, Any]], names: list[str]
) -> list[str]:
    """The spec's QIs, every output column fed by a catalog QI field, and every identifier
    column that is kept, masked or generalized (a 7-digit mobile stub singles people out)."""
    d = spec.desensitize
    assert d is not None
    qis = list(d.quasi_identifiers)
    for name, info in lineage.items():
        if name not in names or name in qis or name == d.join_on:
            continue
        fields = [_field(catalog, src) for src in info["sources"]]
        catalog_qi = any(f is not None and f.quasi_identifier for f in fields)
        weakened_id = info.get("pii_type") is not None and info["operator"] not in (
            "pseudonymize",
            "suppress",
            "encrypt_sm4",
        )
        if catalog_qi or weakened_id:
            qis.append(name)
    return qis


def sensitive_attributes(
    spec: ProductSpec,
    catalog: Catalog,
    lineage: dict[str, dict[str, Any]],
    names: list[str],
    qis: list[str],
) -> list[str]:
    """The spec's sensitive attribute and every output column fed by a catalog sensitive
    attribute (``privacy.risk.declared_sensitive_attributes``)."""
    from catalogs.vocabulary import Sensitivity

    d = spec.desensitize
    assert d is not None
    out = [d.sensitive_attribute] if d.sensitive_attribute else []
    for name, info in lineage.items():
        if name not in names or name in qis or name in out:
            continue
        for src in info["sources"]:
            f = _field(catalog, src)
            if (
                f is not None
                and f.sensitivity == Sensitivity.SENSITIVE_PERSONAL
                and not f.quasi_identifier
                and f.pii_type is None
            ):
                out.append(name)
                break
    return out


def _field(catalog: Catalog, source: str) -> Any:
    code, _, name = source.partition(".")
    res = catalog.resources.get(code)
    if res is None or name not in res.field_names:
        return None
    return res.field(name)
