"""Run a resource's compiled rules over one snapshot in one lazy pass.

The pass is a single ``select`` of sums of failure flags (plus, per rule, up to five
offending row numbers for the report, and distinct key-hash counts), collected with the
streaming engine. Reference checks join the distinct values of the referenced resource's
latest snapshot into the same plan. Follow-up passes run only when needed and touch few
rows: the values at the sample rows of failing rules, and the rows whose key repeats (with
whole-record duplicates found among them). See docs/quality.md, "How a check runs".
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.models import Resource
from governance import evidence
from quality.dimensions import Dimension
from quality.masking import SAMPLES, mask_value
from quality.models import CheckResult, RuleResult, Sample
from quality.rules import (
    ROW_INDEX,
    AggRule,
    Plan,
    RowRule,
    RuleSpec,
    as_text,
    compile_resource,
)
from quality.validators import check_digit_valid
from quality.workdays import CHINA, today_cn
from shuyu_core import snapshots
from shuyu_core.errors import NotFoundError
from shuyu_core.home import Home


def _readable(base: Path, files: list[str]) -> list[str]:
    ok = []
    for name in files:
        try:
            pl.read_parquet_schema(base / name)
        except (OSError, pl.exceptions.PolarsError):
            continue
        ok.append(name)
    return ok


def _reference_frame(
    home: Home, plan_res: Resource, code: str, snapshot: str, join_res: str, fld: str
) -> tuple[pl.LazyFrame, str] | None:
    if join_res == plan_res.code:
        m = snapshots.get(home, code, snapshot)
    else:
        try:
            m = snapshots.latest(home, join_res)
        except NotFoundError:
            return None
    lf = snapshots.scan(home, join_res, m.snapshot_id, columns=[fld])
    return lf, m.snapshot_id


def _meta_rules(
    resource: Resource, manifest: snapshots.Manifest, readable: list[str], now: dt.datetime
) -> list[RuleResult]:
    limit = resource.update_frequency.max_age_days
    age = max((now - manifest.ingested_at).total_seconds() / 86400, 0.0)
    absent = set(getattr(manifest, "absent_fields", []) or [])
    absent |= {f for f in resource.field_names if f not in manifest.columns}
    return [
        RuleResult(
            rule="snapshot_age",
            field=None,
            dimension=Dimension.TIMELINESS,
            failed=int(age > limit),
            total=1,
            kind="snapshot_age",
            description=(
                f"snapshot no older than {limit} days for a {resource.update_frequency.value} "
                f"resource (更新频率); age {age:.1f} days"
            ),
        ),
        RuleResult(
            rule="fields_present",
            field=None,
            dimension=Dimension.ACCESSIBILITY,
            failed=len(absent),
            total=len(resource.fields),
            kind="fields_present",
            description="catalogued fields delivered in the snapshot (字段可获取)",
            samples=[Sample(row=0, value=name) for name in sorted(absent)][:SAMPLES],
        ),
        RuleResult(
            rule="files_readable",
            field=None,
            dimension=Dimension.ACCESSIBILITY,
            failed=len(manifest.files) - len(readable),
            total=len(manifest.files),
            kind="files_readable",
            description="snapshot files readable (文件可读)",
        ),
    ]


def _samples(
    resource: Resource, fld: str | None, rows: list[int] | None, vals: list[Any] | None
) -> list[Sample]:
    if not rows:
        return []
    spec = resource.field(fld) if fld is not None else None
    values = vals if vals is not None else [None] * len(rows)
    return [
        Sample(row=int(r) + 1, value=mask_value(spec, v) if spec is not None else None)
        for r, v in zip(rows, values, strict=False)
    ]


_HASH = "__shuyu_h"
_RESIDUE = "__shuyu_res_"
# Whole-record duplicates are looked for among the rows a key rule already singles out
# (repeated key, or key missing), which are collected; beyond this many rows with a missing
# key, every row's whole-record hash is counted instead.
_MISSING_KEY_MAX = 1_000_000


def _repeated_hashes(lf: pl.LazyFrame, rule: AggRule) -> pl.LazyFrame | None:
    """The key hashes that occur more than once (a small frame), or None if there are none."""
    rows_lf = lf if rule.present is None else lf.filter(rule.present)
    repeated = (
        rows_lf.select(rule.key_hash.alias(_HASH))
        .group_by(_HASH)
        .agg(pl.len().alias("__shuyu_n"))
        .filter(pl.col("__shuyu_n") > 1)
        .select(_HASH)
        .collect(engine="streaming")
    )
    return repeated.lazy() if repeated.height else None


def _with_repeated_key(lf: pl.LazyFrame, rule: AggRule, repeated: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of ``lf`` (key present) whose key hash is one of ``repeated``.

    A separate query from :func:`_repeated_hashes`: one plan reading the hashed frame twice
    would cache (materialize) it."""
    rows_lf = lf if rule.present is None else lf.filter(rule.present)
    return (
        rows_lf.with_columns(rule.key_hash.alias(_HASH))
        .join(repeated, on=_HASH, how="semi")
        .drop(_HASH)
    )


def _repeats(
    rows: pl.DataFrame, keys: list[str], fld: str | None, resource: Resource, samples: bool
) -> tuple[int, list[Sample]]:
    """Exact count of rows of ``rows`` repeating an earlier row's ``keys`` (nulls compare
    equal), and up to SAMPLES of them, the first by row number."""
    key = pl.col(keys[0]) if len(keys) == 1 else pl.struct(keys)
    failed = rows.height - rows.select(key.n_unique()).item()
    if not samples or failed == 0:
        return failed, []
    repeats = (
        rows.with_columns(pl.col(ROW_INDEX).rank("ordinal").over(keys).alias("__shuyu_k"))
        .filter(pl.col("__shuyu_k") > 1)
        .sort(ROW_INDEX)
        .head(SAMPLES)
    )
    values = repeats[fld].to_list() if fld else None
    return failed, _samples(resource, fld, repeats[ROW_INDEX].to_list(), values)


def _duplicates(
    lf: pl.LazyFrame, rule: AggRule, resource: Resource, samples: bool
) -> tuple[int, list[Sample]]:
    """Exact count of rows repeating an earlier row's key, and up to SAMPLES of them.

    Runs only when the hash count of the main pass found candidates: rows whose key hash
    repeats are collected (few) and counted on their real key values.
    """
    repeated = _repeated_hashes(lf, rule)
    if repeated is None:
        return 0, []
    keys = list(rule.columns)
    cols = [*keys, ROW_INDEX] if samples else keys
    rows = _with_repeated_key(lf, rule, repeated).select(cols).collect(engine="streaming")
    return _repeats(rows, keys, rule.spec.field, resource, samples)


def _key_and_records(
    lf: pl.LazyFrame,
    key_rule: AggRule,
    record_rule: AggRule,
    key_candidates: int,
    missing_key: int,
    resource: Resource,
    samples: bool,
) -> tuple[tuple[int, list[Sample]], tuple[int, list[Sample]]]:
    """Repeated keys and whole-record duplicates from one collection of suspect rows.

    Two identical records have the same key, so both are among the rows whose key hash
    repeats or, if their key is missing, among the rows without a key. Those rows (few in
    any delivery worth checking) are collected with every field, and both rules are counted
    exactly on them: no hash of every column of every row is needed.
    """
    assert key_rule.present is not None
    parts: list[pl.LazyFrame] = []
    repeated = _repeated_hashes(lf, key_rule) if key_candidates > 0 else None
    if repeated is not None:
        parts.append(_with_repeated_key(lf, key_rule, repeated))
    if missing_key > 0:
        parts.append(lf.filter(~key_rule.present))
    if not parts:
        return (0, []), (0, [])
    suspects = pl.concat(parts).collect(engine="streaming")
    keyed = suspects.filter(key_rule.present)
    key_result = _repeats(keyed, list(key_rule.columns), key_rule.spec.field, resource, samples)
    record_result = _repeats(suspects, list(record_rule.columns), None, resource, samples)
    return key_result, record_result


def build_plan(
    home: Home, resource: Resource, manifest: snapshots.Manifest, as_of: dt.date, samples: bool
) -> tuple[pl.LazyFrame, pl.LazyFrame, Plan, dict[str, str], set[str]]:
    """The snapshot alone (catalogued columns, row index when ``samples``), the same with
    the reference and code-list markers joined, the compiled rules, the reference snapshots
    read and the reference rules skipped.

    The follow-up passes (sample values, duplicates) read the snapshot alone: polars cannot
    drop a left join from a plan (it might multiply rows), so reusing the joined frame
    would redo every join."""
    code = resource.code
    base = snapshots.snapshot_dir(home, code, manifest.snapshot_id)
    readable = _readable(base, manifest.files)
    if readable:
        lf = pl.scan_parquet([str(base / f) for f in readable])
        have = set(lf.collect_schema().names())
    else:
        lf = pl.LazyFrame(schema=resource.polars_schema)
        have = set(resource.field_names)
    fill = [
        pl.lit(None, dtype=f.polars_type).alias(f.name)
        for f in resource.fields
        if f.name not in have
    ]
    lf = lf.select([pl.col(n) for n in resource.field_names if n in have] + fill).select(
        resource.field_names
    )
    if samples:
        lf = lf.with_row_index(ROW_INDEX)
    plain = lf
    plan = compile_resource(resource, as_of)
    refs: dict[str, str] = {}
    skipped: set[str] = set()
    for join in plan.joins:
        found = _reference_frame(
            home, resource, code, manifest.snapshot_id, join.resource, join.target_field
        )
        if found is None:
            skipped.add(f"references:{join.column}")
            continue
        other, sid = found
        refs[join.resource] = sid
        dtype = resource.polars_schema[join.column]
        keys = (
            other.select(pl.col(join.target_field).cast(dtype, strict=False).alias("__shuyu_key"))
            .drop_nulls()
            .unique()
            .with_columns(pl.lit(True).alias(join.marker))
        )
        lf = lf.join(keys, left_on=join.column, right_on="__shuyu_key", how="left")
    for cj in plan.code_joins:
        spec = resource.field(cj.column)
        codes = pl.LazyFrame({"__shuyu_code": list(cj.codes)}, schema={"__shuyu_code": pl.String})
        lf = lf.join(
            codes.unique().with_columns(pl.lit(True).alias(cj.marker)),
            left_on=pl.col(cj.column)
            if spec.type == "string"
            else pl.col(cj.column).cast(pl.String),
            right_on="__shuyu_code",
            how="left",
        )
    for dj in plan.digit_joins:
        spec = resource.field(dj.column)
        # Collected on its own: a plan reading the snapshot twice would cache all of it.
        distinct = plain.select(pl.col(dj.column).drop_nulls().unique()).collect(engine="streaming")
        valid = distinct.with_columns(
            check_digit_valid(dj.kind, as_text(pl.col(dj.column), spec))
            .fill_null(False)
            .alias(dj.marker)
        )
        lf = lf.join(valid.lazy(), on=dj.column, how="left")
    if skipped:
        # The referenced resource has no snapshot: the rule cannot be judged on any row.
        plan.row_rules = [
            replace(r, applies=pl.lit(False), fails=pl.lit(False)) if r.spec.id in skipped else r
            for r in plan.row_rules
        ]
        lf = lf.with_columns(
            [
                pl.lit(None, dtype=pl.Boolean).alias(j.marker)
                for j in plan.joins
                if f"references:{j.column}" in skipped
            ]
        )
    return plain, lf, plan, refs, skipped


def _flags(i: int, rule: RowRule) -> list[pl.Expr]:
    out = [rule.offending.alias(f"__shuyu_bad_{i}")]
    if not rule.all_rows:
        out.append(rule.applies.fill_null(False).alias(f"__shuyu_app_{i}"))
    return out


def _row_exprs(i: int, rule: RowRule, samples: bool) -> list[pl.Expr]:
    bad = pl.col(f"__shuyu_bad_{i}")
    total = pl.len() if rule.all_rows else pl.col(f"__shuyu_app_{i}").sum()
    out = [total.cast(pl.Int64).alias(f"t{i}"), bad.sum().cast(pl.Int64).alias(f"f{i}")]
    if samples:
        # Up to SAMPLES offending rows as plain reductions (the first offending row in each
        # residue class of the row number): filter/head/implode would leave the stream.
        row = pl.col(ROW_INDEX)
        out.extend(
            pl.when(bad & pl.col(f"{_RESIDUE}{k}")).then(row).min().alias(f"r{i}_{k}")
            for k in range(SAMPLES)
        )
    return out


def _sample_values(lf: pl.LazyFrame, wanted: dict[str, set[int]]) -> dict[tuple[str, int], object]:
    """The values of ``field`` at the given row numbers, in one streaming semi-join pass."""
    rows = sorted({r for rs in wanted.values() for r in rs})
    if not rows or not wanted:
        return {}
    keys = pl.LazyFrame({ROW_INDEX: rows}, schema={ROW_INDEX: pl.UInt32})
    got = (
        lf.join(keys, on=ROW_INDEX, how="semi")
        .select([ROW_INDEX, *sorted(wanted)])
        .collect(engine="streaming")
    )
    out: dict[tuple[str, int], object] = {}
    for rec in got.iter_rows(named=True):
        for fld, rs in wanted.items():
            if rec[ROW_INDEX] in rs:
                out[(fld, rec[ROW_INDEX])] = rec[fld]
    return out


def evaluation_frame(lf: pl.LazyFrame, plan: Plan) -> pl.LazyFrame:
    """The snapshot with helper columns and one applies/offending flag pair per row rule.

    Still one lazy plan: the with_columns stages stream with the scan; each flag is
    computed once and then both summed and used to pick sample rows.
    """
    if plan.stage1:
        lf = lf.with_columns([e.alias(n) for n, e in plan.stage1.items()])
    if plan.stage2:
        lf = lf.with_columns([e.alias(n) for n, e in plan.stage2.items()])
    flags = [e for i, r in enumerate(plan.row_rules) for e in _flags(i, r)]
    if ROW_INDEX in lf.collect_schema().names():
        # The residue classes of the row number that pick sample rows, computed once here
        # rather than once per rule and class.
        row = pl.col(ROW_INDEX) % SAMPLES
        flags.extend((row == k).alias(f"{_RESIDUE}{k}") for k in range(SAMPLES))
    return lf.with_columns(flags) if flags else lf


def check_snapshot(
    home: Home,
    resource: Resource,
    snapshot_id: str | None = None,
    as_of: dt.date | None = None,
    now: dt.datetime | None = None,
    samples: bool = True,
    streaming: bool = True,
) -> CheckResult:
    """Evaluate every rule of ``resource`` on one snapshot (default: the latest)."""
    started = time.perf_counter()
    manifest = snapshots.get(home, resource.code, snapshot_id)
    # An overwritten part is exit 8, not a quality finding.
    evidence.verify_snapshot(home, manifest)
    day = as_of or today_cn()
    if now is None:
        now = (
            dt.datetime.now(dt.UTC)
            if as_of is None
            else dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=CHINA)
        )
    plain, lf, plan, refs, skipped = build_plan(home, resource, manifest, day, samples)
    flagged = evaluation_frame(lf, plan)
    exprs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("rows")]
    for i, rule in enumerate(plan.row_rules):
        exprs.extend(_row_exprs(i, rule, samples))
    # Whole-record duplicates ride on a key rule when there is one (see _key_and_records).
    kinds = [a.spec.kind for a in plan.agg_rules]
    key_j = next((j for j, k in enumerate(kinds) if k in ("primary_key", "unique")), None)
    record_j = kinds.index("duplicate_record") if "duplicate_record" in kinds else None
    for j, agg in enumerate(plan.agg_rules):
        exprs.append(agg.total.cast(pl.Int64).alias(f"at{j}"))
        if j != record_j or key_j is None:
            exprs.append(agg.candidates.cast(pl.Int64).alias(f"ac{j}"))
    query = flagged.select(exprs)
    frame = query.collect(engine="streaming") if streaming else query.collect()
    out = frame.row(0, named=True)

    sample_rows: dict[int, list[int]] = {}
    if samples:
        for i in range(len(plan.row_rules)):
            found = [out[f"r{i}_{k}"] for k in range(SAMPLES)]
            sample_rows[i] = sorted(int(r) for r in found if r is not None)
    wanted: dict[str, set[int]] = {}
    for i, rows in sample_rows.items():
        fld = plan.row_rules[i].spec.field
        if fld is not None and rows:
            wanted.setdefault(fld, set()).update(rows)
    values = _sample_values(plain, wanted) if wanted else {}

    results: list[RuleResult] = []
    for i, rule in enumerate(plan.row_rules):
        spec = rule.spec
        failed = int(out[f"f{i}"])
        rows = sample_rows.get(i, [])
        vals = [values.get((spec.field, r)) for r in rows] if spec.field else None
        results.append(
            _result(
                spec,
                failed,
                int(out[f"t{i}"]),
                _samples(resource, spec.field, rows, vals) if failed else [],
                "referenced resource has no snapshot" if spec.id in skipped else None,
            )
        )
    repeats: dict[int, tuple[int, list[Sample]]] = {}
    if key_j is not None and record_j is not None:
        missing_key = int(out["rows"]) - int(out[f"at{key_j}"])
        if missing_key <= _MISSING_KEY_MAX:
            repeats[key_j], repeats[record_j] = _key_and_records(
                plain,
                plan.agg_rules[key_j],
                plan.agg_rules[record_j],
                int(out[f"ac{key_j}"]),
                missing_key,
                resource,
                samples,
            )
        else:
            repeats[record_j] = _duplicates(plain, plan.agg_rules[record_j], resource, samples)
    for j, agg in enumerate(plan.agg_rules):
        if j not in repeats:
            repeats[j] = (0, [])
            if int(out[f"ac{j}"]) > 0:
                repeats[j] = _duplicates(plain, agg, resource, samples)
        failed, dup = repeats[j]
        results.append(_result(agg.spec, failed, int(out[f"at{j}"]), dup, None))
    base = snapshots.snapshot_dir(home, resource.code, manifest.snapshot_id)
    results.extend(_meta_rules(resource, manifest, _readable(base, manifest.files), now))
    return CheckResult(
        resource=resource.code,
        snapshot=manifest.snapshot_id,
        source_unit=resource.source_unit.code,
        rows=int(out["rows"]),
        checked_at=dt.datetime.now(dt.UTC),
        as_of=day,
        catalog_version=manifest.catalog_version,
        references=refs,
        rules=results,
        seconds=time.perf_counter() - started,
    )


def _result(
    spec: RuleSpec, failed: int, total: int, samples: list[Sample], note: str | None
) -> RuleResult:
    return RuleResult(
        rule=spec.id,
        field=spec.field,
        dimension=spec.dimension,
        failed=failed,
        total=total,
        kind=spec.kind,
        description=spec.description,
        samples=samples,
        note=note,
    )


def check(
    home: Home,
    code: str,
    snapshot_id: str | None = None,
    as_of: dt.date | None = None,
    catalog: Catalog | None = None,
    samples: bool = True,
) -> CheckResult:
    cat = catalog or Catalog.load()
    return check_snapshot(home, cat.get(code), snapshot_id, as_of=as_of, samples=samples)
