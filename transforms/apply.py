"""Apply a desensitization policy to a resource: a lazy polars plan, sunk to ``work/``.

``desensitize_frame`` compiles the policy into one ``select`` over the lazy frame (one
expression per kept column) and returns the plan with a list of :class:`ColumnAction`.
``desensitize_resource`` runs it on a resource's latest snapshot and streams the result with
``sink_parquet`` into ``work/desensitized/<CODE>/<snapshot>-<digest>/`` atomically, with:

- ``data.parquet``: the output; file-level metadata ``shuyu.desensitization`` (the JSON below)
  and field-level metadata ``shuyu.operator`` / ``shuyu.reversible`` per column;
- ``desensitization.json``: resource, snapshot, policy name and SM3, and per column the
  operator, its parameters, where the rule came from and ``reversible``; the list
  ``reversible_columns`` is what the pre-release assessment refuses to publish.

The same snapshot, policy and keys always give the same output, so a rerun reuses it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from polars.io.parquet import ParquetFieldOverwrites

from catalogs.catalog import Catalog
from catalogs.models import Resource
from catalogs.vocabulary import PiiType, Sensitivity
from governance import evidence
from governance.audit import record
from privacy.pii.entities import FREE_TEXT_ENTITIES
from privacy.pii.textscreen import redact_valid_identifiers
from shuyu_core import atomic, keys, snapshots
from shuyu_core.errors import NotFoundError, ShuyuError, ValidationError
from shuyu_core.hashing import hmac_sm3_hex, sm3_hex
from shuyu_core.home import Home
from transforms import operators as ops
from transforms.policy import Policy, Rule, load_policy

SIDECAR = "desensitization.json"
DATA_FILE = "data.parquet"
METADATA_KEY = "shuyu.desensitization"
KeyProvider = Callable[[str], bytes]


@dataclass(frozen=True)
class ColumnAction:
    """What happened to one input column."""

    column: str
    op: str
    params: dict[str, Any] = field(default_factory=dict)
    pii_type: str | None = None
    source: str = ""
    reversible: bool = False
    output: str | None = None  # None when the column was dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def home_key_provider(home: Home) -> KeyProvider:
    """Keys from ``shuyu_core.keys`` (environment, key file, or ``<home>/keys``), cached."""
    cache: dict[str, bytes] = {}

    def provide(name: str) -> bytes:
        if name not in cache:
            cache[name] = keys.load_key(home, name)
        return cache[name]

    return provide


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def _need(cond: bool, column: str, rule: Rule, why: str) -> None:
    if not cond:
        raise ValidationError(
            f"column {column}: operator {rule.op} {why}",
            hint="choose an operator that fits the column type in the policy's fields section",
        )


def _quantile(lf: pl.LazyFrame, column: str, q: float) -> float:
    value = lf.select(pl.col(column).quantile(q)).collect(engine="streaming").item()
    return float(value) if value is not None else 0.0


def _expression(
    lf: pl.LazyFrame,
    column: str,
    dtype: pl.DataType,
    pii_type: PiiType | None,
    rule: Rule,
    key_provider: KeyProvider,
    free_text: bool = False,
    fixed_bound: float | None = None,
) -> tuple[pl.Expr, dict[str, Any]]:
    """The output expression for one column, and the parameters actually used."""
    col = pl.col(column)
    params = dict(rule.params)
    temporal = dtype.is_temporal()
    if rule.op == "keep" and dtype == pl.String and pii_type is None:
        # Text kept as it is may still hold an identifier in a few cells (a remark with a
        # phone number): every cell is screened and identifier tokens are redacted, at any
        # share of cells (the scanner's column threshold does not apply here).
        return redact_valid_identifiers(col), params
    if rule.op == "keep":
        return col, params
    if rule.op == "mask" and free_text:
        # A type's mask convention assumes the value *is* the identifier: on a remark it
        # would keep whatever precedes the cut (an address mask keeps text up to the
        # district, a name included). Shaped identifiers are redacted in place; names and
        # addresses cannot be found by a pattern, so the whole text is hidden.
        if pii_type in FREE_TEXT_ENTITIES:
            params["free_text"] = "identifiers redacted"
            return ops.redact_identifiers(col), params
        params["free_text"] = "all characters hidden"
        return ops.mask(col, ""), params
    if rule.op == "mask":
        expr = ops.mask(
            col,
            pii_type.value if pii_type is not None else "",
            keep_region=bool(params.get("keep_region", False)),
            keep_birth=bool(params.get("keep_birth", False)),
            keep_sex=bool(params.get("keep_sex", False)),
            keep_sequence=bool(params.get("keep_sequence", True)),
            keep_check=bool(params.get("keep_check", True)),
            keep_head=params.get("keep_head"),
            keep_tail=params.get("keep_tail"),
            temporal=temporal,
        )
        return expr, params
    if rule.op == "pseudonymize":
        source = col.cast(pl.String).str.strip_chars()
        if pii_type == PiiType.CN_RESIDENT_ID:
            # 'x' and 'X' are the same check character: one person, one token.
            source = source.str.to_uppercase()
        elif pii_type == PiiType.CN_MOBILE:
            source = ops.normalize_mobile(source)
        return ops.pseudonymize(source, key_provider(keys.PSEUDONYM)), params
    if rule.op == "encrypt_sm4":
        return ops.encrypt_sm4(col.cast(pl.String), key_provider(keys.ENCRYPTION)), params
    if rule.op == "generalize_date":
        base = col if temporal else col.cast(pl.String).str.to_date(strict=False)
        return ops.generalize_date(base, str(params.get("level", "month"))), params
    if rule.op == "generalize_age":
        width = int(params.get("width", 10))
        top = params.get("top")
        if temporal:
            as_of = dt.date.fromisoformat(params["as_of"]) if "as_of" in params else dt.date.today()
            params["as_of"] = as_of.isoformat()
            age = ops.age_from_birth(col, as_of)
        else:
            _need(_is_numeric(dtype), column, rule, "needs ages (numbers) or birth dates")
            age = col
        return ops.generalize_age(age, width, top), params
    if rule.op == "generalize_region":
        return ops.generalize_region(col, str(params.get("level", "prefecture"))), params
    if rule.op == "generalize_amount":
        _need(_is_numeric(dtype), column, rule, "needs a numeric column")
        return ops.generalize_amount(col, float(params["width"]), params.get("top")), params
    if rule.op in ("top_code", "bottom_code"):
        _need(_is_numeric(dtype), column, rule, "needs a numeric column")
        bound = params.get("value")
        if bound is None:
            # A part of a partitioned snapshot clips at the whole snapshot's quantile, computed
            # once by the driver (scaleout); otherwise the quantile of ``lf``.
            if fixed_bound is not None:
                bound = fixed_bound
            else:
                bound = _quantile(lf, column, float(params["quantile"]))
            params["computed_bound"] = bound
        fn = ops.top_code if rule.op == "top_code" else ops.bottom_code
        return fn(col, float(bound)).cast(dtype), params
    raise ValidationError(f"operator {rule.op} cannot be applied to column {column}")


def desensitize_frame(
    lf: pl.LazyFrame,
    resource: Resource | None,
    policy: Policy,
    key_provider: KeyProvider,
    detected: Mapping[str, str] | None = None,
    free_text: Collection[str] = (),
    fixed_bounds: Mapping[str, float] | None = None,
) -> tuple[pl.LazyFrame, list[ColumnAction]]:
    """Compile ``policy`` for ``lf``: the desensitized lazy frame and one action per column.

    ``resource`` supplies declared types and sensitivities (None: all undeclared);
    ``detected`` maps columns to entities the scanner found (used for undeclared columns);
    ``free_text`` names the detected columns whose entity sits inside free text
    (``ScanReport.free_text_columns()``): their ``mask`` redacts identifiers in place;
    ``fixed_bounds`` gives quantile top/bottom-code bounds already computed (per column).
    """
    schema = lf.collect_schema()
    code = resource.code if resource is not None else ""
    declared_fields = {f.name: f for f in resource.fields} if resource is not None else {}
    exprs: list[pl.Expr] = []
    actions: list[ColumnAction] = []
    for column, dtype in schema.items():
        spec = declared_fields.get(column)
        declared = spec.pii_type if spec is not None else None
        sensitivity = spec.sensitivity if spec is not None else Sensitivity.NONE
        found = (detected or {}).get(column)
        detected_type = PiiType(found) if found else None
        rule, source = policy.resolve(code, column, declared, sensitivity, detected_type)
        pii_type = declared or (detected_type if "detected" in source else None)
        if rule.op == "suppress":
            actions.append(ColumnAction(column, "suppress", {}, _v(pii_type), source, False, None))
            continue
        in_text = column in free_text and "detected" in source
        expr, params = _expression(
            lf,
            column,
            dtype,
            pii_type,
            rule,
            key_provider,
            in_text,
            (fixed_bounds or {}).get(column),
        )
        exprs.append(expr.alias(column))
        actions.append(
            ColumnAction(column, rule.op, params, _v(pii_type), source, rule.reversible, column)
        )
    if not exprs:
        raise ValidationError(
            f"policy {policy.name} suppresses every column of {code or 'the input'}",
            hint="keep at least one column, or do not produce this output",
        )
    return lf.select(exprs), actions


def _v(t: PiiType | None) -> str | None:
    return t.value if t is not None else None


# -- resources ---------------------------------------------------------------------------------


def _key_fingerprints(policy: Policy, provider: KeyProvider) -> dict[str, str]:
    """Short HMAC fingerprints of the keys a run uses (never the keys), to name the output."""
    used = set()
    rules = [*policy.by_type.values(), *policy.by_sensitivity.values(), *policy.fields.values()]
    for rule in rules:
        if rule.op == "pseudonymize":
            used.add(keys.PSEUDONYM)
        if rule.op == "encrypt_sm4":
            used.add(keys.ENCRYPTION)
    return {
        name: hmac_sm3_hex(provider(name), b"shuyu-key-fingerprint")[:16] for name in sorted(used)
    }


def desensitize_resource(
    home: Home,
    code: str,
    policy_path: Path | str | None = None,
    *,
    catalog: Catalog | None = None,
    scan_sample: int = 2000,
) -> Path:
    """Desensitize the latest snapshot of ``code`` with a policy; return the output directory.

    Writes only under ``home.work``; the output appears atomically (staged, then renamed).
    """
    try:
        return _desensitize_resource(home, code, policy_path, catalog, scan_sample)
    except ShuyuError as exc:
        if not exc.audited:
            record(home, "desensitize", code, "error", {"error": exc.one_line()})
            exc.audited = True
        raise


def _desensitize_resource(
    home: Home, code: str, policy_path: Path | str | None, catalog: Catalog | None, sample: int
) -> Path:
    from privacy.pii.scan import scan_frame

    home.ensure()
    cat = catalog or Catalog.load()
    resource = cat.get(code)
    policy = load_policy(policy_path)
    manifest = snapshots.latest(home, code)
    evidence.verify_snapshot(home, manifest)  # parts vs manifest vs ingest record
    lf = snapshots.scan(home, code, manifest.snapshot_id)
    provider = home_key_provider(home)
    fingerprints = _key_fingerprints(policy, provider)
    digest = sm3_hex(
        json.dumps(
            {"policy": policy.digest(), "catalog": cat.version, "keys": fingerprints},
            sort_keys=True,
        ).encode("utf-8")
    )[:12]
    final = output_root(home, code) / f"{manifest.snapshot_id}-{digest}"
    if (final / SIDECAR).exists():
        record(
            home,
            "desensitize",
            code,
            "ok",
            {
                "snapshot": manifest.snapshot_id,
                "policy": policy.name,
                "output": str(final),
                "reused": True,
            },
        )
        return final

    # Undeclared personal information is protected too: scan the columns the catalog
    # declares no type for, and let the policy's ``detected`` rule decide.
    declared = {f.name for f in resource.fields if f.pii_type is not None}
    undeclared = [c for c in lf.collect_schema().names() if c not in declared]
    report = scan_frame(lf.select(undeclared), sample=sample) if undeclared else None
    detected = report.detected() if report is not None else {}
    in_text = report.free_text_columns() if report is not None else set()
    plan, actions = desensitize_frame(lf, resource, policy, provider, detected, in_text)

    doc: dict[str, Any] = {
        "resource": code,
        "snapshot": manifest.snapshot_id,
        "snapshot_sm3": manifest.sm3,
        "catalog_version": cat.version,
        "policy": {"name": policy.name, "version": policy.version, "sm3": policy.digest()},
        "key_fingerprints": fingerprints,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "columns": [a.to_dict() for a in actions],
        "reversible_columns": [a.output for a in actions if a.reversible and a.output],
        "suppressed_columns": [a.column for a in actions if a.output is None],
    }
    overwrites = {
        a.output: ParquetFieldOverwrites(
            metadata={"shuyu.operator": a.op, "shuyu.reversible": str(a.reversible).lower()}
        )
        for a in actions
        if a.output is not None
    }
    with atomic.staged_dir(final, staging_root=home.tmp) as stage:
        plan.sink_parquet(
            stage / DATA_FILE,
            metadata={METADATA_KEY: json.dumps(doc, ensure_ascii=False, default=str)},
            field_overwrites=overwrites,
        )
        rows = pl.scan_parquet(stage / DATA_FILE).select(pl.len()).collect().item()
        doc["rows"] = rows
        atomic.write_text(
            stage / SIDECAR, json.dumps(doc, ensure_ascii=False, indent=2, default=str)
        )
    record(
        home,
        "desensitize",
        code,
        "ok",
        {
            "snapshot": manifest.snapshot_id,
            "policy": policy.name,
            "policy_sm3": policy.digest(),
            "output": str(final),
            "rows": rows,
            "operators": {a.column: a.op for a in actions},
            "undeclared_detected": {k: v for k, v in detected.items()},
            "reversible_columns": doc["reversible_columns"],
        },
    )
    return final


# -- reading the marks ---------------------------------------------------------------------------


def read_desensitization(path: Path) -> dict[str, Any]:
    """The desensitization record of an output directory or its Parquet file.

    Prefers the sidecar; falls back to the Parquet file-level metadata.
    """
    directory = path if path.is_dir() else path.parent
    sidecar = directory / SIDECAR
    if sidecar.exists():
        return dict(json.loads(sidecar.read_text(encoding="utf-8")))
    data = path if path.is_file() else directory / DATA_FILE
    meta = pl.read_parquet_metadata(data)
    if METADATA_KEY not in meta:
        raise ValidationError(
            f"{path} carries no desensitization record",
            hint="desensitize with 'shuyu desensitize CODE --policy FILE'",
        )
    return dict(json.loads(meta[METADATA_KEY]))


def reversible_columns(path: Path) -> list[str]:
    """Columns of a desensitized output that can be turned back into raw values (SM4)."""
    doc = read_desensitization(path)
    return [str(c) for c in doc.get("reversible_columns", [])]


def output_root(home: Home, code: str) -> Path:
    return home.work / "desensitized" / code


def latest_output(home: Home, code: str) -> Path:
    """The most recently written desensitized output of ``code``."""
    root = output_root(home, code)
    outs = [p for p in root.iterdir() if (p / SIDECAR).exists()] if root.is_dir() else []
    if not outs:
        raise NotFoundError(
            f"no desensitized output of {code} in {root}",
            hint=f"run 'shuyu desensitize {code}' first",
        )
    return max(outs, key=lambda p: (p / SIDECAR).stat().st_mtime)
