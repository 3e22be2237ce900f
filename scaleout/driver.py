"""The driver side of a partitioned run: verify, dispatch one job per partition to the
backend, combine the partial results.

- quality: the parts' row-rule counts add up (:func:`quality_counts`); repeated keys are
  found by a shuffle of key hashes through shared storage (:func:`repeated_key_counts`);
- PII scan: the workers read the rows of the whole snapshot's evenly spaced sample that fall
  in their part; the driver decides each column on them (:func:`pii_scan`);
- desensitization: the scan's findings and the quantile bounds are decided once for the
  whole snapshot, every part is desensitized with them, the output is the parts in partition
  order (:func:`desensitize`);
- DP products: each co-partition runs the builder's own bounding plans (one row per unit and
  cell, no identifier) and counts its join matches; the driver sums the counts and measures
  the union of the bounded parts with the same mechanism, drawing the noise once
  (:func:`bounded_frames`, :func:`match_counts`, :func:`report_draw`);
- verification: each part's keyed index, the distinct union (:func:`verification_index`)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from governance import evidence, roles
from governance.audit import record
from scaleout.backends import Backend
from scaleout.jobs import (
    BoundJob,
    BoundTablesJob,
    DesensitizeJob,
    IndexJob,
    KeyHashJob,
    MatchJob,
    PartRef,
    PartRepeatsJob,
    PiiSampleJob,
    QualityJob,
    RepeatedHashJob,
    RepeatedRowsJob,
    agg_rules_of,
    bounded_part,
    bounded_tables,
    desensitize_part,
    index_part,
    key_hash_buckets,
    match_counts_part,
    part_refs,
    part_rows,
    pii_sample_part,
    quality_counts,
    repeated_hashes,
    repeated_key_rows,
    repeats_in_part,
)
from scaleout.placement import BoundingPlan
from shuyu_core import atomic, snapshots
from shuyu_core.errors import ValidationError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home


def verified_parts(home: Home, m: snapshots.Manifest) -> list[PartRef]:
    """Verify ``m`` (parts vs manifest vs ingest record) and reference its parts."""
    evidence.verify_snapshot(home, m)
    return part_refs(home, m)


def quality_counts_of(
    home: Home,
    code: str,
    backend: Backend,
    snapshot_id: str | None = None,
    as_of: dt.date | None = None,
) -> dict[str, Any]:
    """Row count, per row rule (failed, total) summed over the parts of one snapshot, and per
    aggregate rule (repeated keys) the exact (failed, total) over the whole snapshot."""
    resource = Catalog.load().get(code)
    roles.require(home, "quality.check", f"resource/{code}", resource.source_unit.code)
    m = snapshots.get(home, code, snapshot_id)
    day = as_of or dt.date.today()
    parts = verified_parts(home, m)
    partials = backend.map(quality_counts, [QualityJob(p, day) for p in parts])
    out = combine_quality(partials)
    totals = out.pop("agg_totals")
    failed = repeated_key_counts(home, parts, day, backend)
    out["agg_rules"] = {rule: (failed.get(rule, 0), total) for rule, total in totals.items()}
    return out


def combine_quality(partials: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' counts added up (row rules judge one row at a time)."""
    rows = sum(p["rows"] for p in partials)
    rules: dict[str, tuple[int, int]] = {}
    totals: dict[str, int] = {}
    for p in partials:
        for rule, (failed, total) in p["row_rules"].items():
            f0, t0 = rules.get(rule, (0, 0))
            rules[rule] = (f0 + failed, t0 + total)
        for rule, total in p["agg_totals"].items():
            totals[rule] = totals.get(rule, 0) + total
    return {"rows": rows, "row_rules": rules, "agg_totals": totals}


def repeated_key_counts(
    home: Home, parts: list[PartRef], day: dt.date, backend: Backend
) -> dict[str, int]:
    """Per aggregate rule, the rows repeating an earlier row's key over the whole snapshot,
    counted exactly (the three steps of ``scaleout.jobs``, "repeated keys")."""
    from quality import engine

    if not parts:
        return {}
    _plain, rules = agg_rules_of(parts[0], day)
    if not rules:
        return {}
    resource = Catalog.load().get(parts[0].manifest.resource)
    split = parts[0].manifest.partitioning
    within = tuple(j for j, r in enumerate(rules) if split is not None and split.by in r.columns)
    across = [j for j in range(len(rules)) if j not in within]
    out: dict[str, int] = {rules[j].spec.id: 0 for j in within}
    if within:
        for counts in backend.map(repeats_in_part, [PartRepeatsJob(p, day, within) for p in parts]):
            for j, failed in counts.items():
                out[rules[j].spec.id] += failed
    if not across:
        return out
    spill = home.tmp / f"scale-keys-{uuid.uuid4().hex[:12]}"
    buckets = len(parts)
    try:
        backend.map(
            key_hash_buckets,
            [KeyHashJob(p, day, str(spill), buckets, tuple(across)) for p in parts],
        )
        steps = [RepeatedHashJob(str(spill), j, b) for j in across for b in range(buckets)]
        found = backend.map(repeated_hashes, steps)
        hashes: dict[int, list[pl.Series]] = {}
        for step, h in zip(steps, found, strict=True):
            if h.len():
                hashes.setdefault(step.rule, []).append(h)
        wanted = {j: pl.concat(hs) for j, hs in hashes.items()}
        rows: dict[int, list[pl.DataFrame]] = {}
        if wanted:
            jobs = [RepeatedRowsJob(p, day, wanted) for p in parts]
            for part_rows in backend.map(repeated_key_rows, jobs):
                for j, frame in part_rows.items():
                    rows.setdefault(j, []).append(frame)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    for j in across:
        rule = rules[j]
        frames = rows.get(j)
        failed = 0
        if frames:
            failed, _ = engine._repeats(
                pl.concat(frames), list(rule.columns), None, resource, False
            )
        out[rule.spec.id] = failed
    return out


def desensitize(
    home: Home,
    code: str,
    backend: Backend,
    out_dir: Path,
    policy_path: str | None = None,
    sample: int = 2000,
    catalog: Catalog | None = None,
) -> list[Path]:
    """Desensitize the latest snapshot of ``code`` part by part into ``out_dir``."""
    from transforms.apply import SIDECAR, desensitize_frame, home_key_provider
    from transforms.policy import load_policy

    roles.require(home, "desensitize", f"resource/{code}")
    cat = catalog or Catalog.load()
    resource = cat.get(code)
    m = snapshots.latest(home, code)
    parts = verified_parts(home, m)
    lf = snapshots.scan(home, code, m.snapshot_id)
    declared = {f.name for f in resource.fields if f.pii_type is not None}
    undeclared = [c for c in lf.collect_schema().names() if c not in declared]
    report = pii_scan(parts, undeclared, backend, sample) if undeclared else None
    detected = dict(report.detected()) if report is not None else {}
    in_text = tuple(sorted(report.free_text_columns())) if report is not None else ()
    # Compiling over the whole snapshot computes the quantile bounds once (lazy otherwise).
    _plan, actions = desensitize_frame(
        lf, resource, load_policy(policy_path), home_key_provider(home), detected, in_text
    )
    bounds = {
        a.column: float(a.params["computed_bound"]) for a in actions if "computed_bound" in a.params
    }
    jobs = [DesensitizeJob(p, policy_path, str(out_dir), bounds, detected, in_text) for p in parts]
    # A rerun into the same directory: the old record goes first, so parts being replaced
    # are never read as the complete output the old record describes.
    (out_dir / SIDECAR).unlink(missing_ok=True)
    done = backend.map(desensitize_part, jobs)
    files = [out_dir / d["file"] for d in done]
    doc = _desensitization_record(home, cat, m, load_policy(policy_path), actions, files)
    doc["execution"] = {"backend": backend.name, "partitions": len(parts)}
    # Written last, atomically: an output directory with a sidecar is complete.
    atomic.write_text(out_dir / SIDECAR, json.dumps(doc, ensure_ascii=False, indent=2, default=str))
    record(
        home,
        "desensitize",
        f"{code}/{m.snapshot_id}",
        "ok",
        {"backend": backend.name, "parts": len(files), "output": str(out_dir)},
    )
    return files


def _desensitization_record(
    home: Home,
    cat: Catalog,
    m: snapshots.Manifest,
    policy: Any,
    actions: list[Any],
    files: list[Path],
) -> dict[str, Any]:
    """The sidecar of a partitioned desensitization: what ``shuyu desensitize`` records for
    one file (``transforms.apply``), plus each part's rows and SM3."""
    from transforms.apply import _key_fingerprints, home_key_provider

    parts = [
        {
            "file": f.name,
            "rows": pl.scan_parquet(f).select(pl.len()).collect().item(),
            "sm3": sm3_file(f),
        }
        for f in files
    ]
    return {
        "resource": m.resource,
        "snapshot": m.snapshot_id,
        "snapshot_sm3": m.sm3,
        "catalog_version": cat.version,
        "policy": {"name": policy.name, "version": policy.version, "sm3": policy.digest()},
        "key_fingerprints": _key_fingerprints(policy, home_key_provider(home)),
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "columns": [a.to_dict() for a in actions],
        "reversible_columns": [a.output for a in actions if a.reversible and a.output],
        "suppressed_columns": [a.column for a in actions if a.output is None],
        "rows": sum(int(p["rows"]) for p in parts),
        "parts": parts,
    }


def pii_scan(
    parts: list[PartRef], columns: list[str], backend: Backend, sample: int = 2000, seed: int = 0
) -> Any:
    """``privacy.pii.scan.scan_frame`` of the snapshot's ``columns``, its rows read on the
    workers: the same evenly spaced rows (``sampling``) taken part by part in partition order,
    so the driver decides each column on exactly the rows a local scan would."""
    from privacy.pii.scan import sampling, scan_sampled

    if sample < 1:
        raise ValidationError(f"sample size {sample} is too small", hint="use --sample 1 or more")
    sizes = backend.map(part_rows, parts)
    total = sum(sizes)
    step, offset = sampling(total, sample, seed)
    jobs, start = [], 0
    for part, rows in zip(parts, sizes, strict=True):
        # The first sampled global row at or after this part's first row.
        first = offset if start <= offset else offset + -(-(start - offset) // step) * step
        local = first - start
        jobs.append(PiiSampleJob(part, tuple(columns), step, local if local < rows else None))
        start += rows
    frame = pl.concat(backend.map(pii_sample_part, jobs), how="vertical")
    return scan_sampled(frame, total, sample, seed)


def verification_index(
    home: Home, m: snapshots.Manifest, check: Any, backend: Backend
) -> pl.DataFrame:
    """A verification check's keyed index built part by part on the workers (each loads the
    key from the shared home), the distinct union taken here."""
    jobs = [
        IndexJob(p, check, (check.key_field, check.name_field)) for p in verified_parts(home, m)
    ]
    return pl.concat(backend.map(index_part, jobs), how="vertical").unique()


def co_partitions(home: Home, inputs: dict[str, snapshots.Manifest]) -> list[dict[str, PartRef]]:
    """Part *i* of every input, verified; the inputs must share count and scheme (whether
    the joins are on the partitioning fields is the builder's ``partitionwise``)."""
    layouts = {code: m.partitioning for code, m in inputs.items()}
    firsts = {(lay.count, lay.scheme) if lay else None for lay in layouts.values()}
    if None in firsts or len(firsts) != 1:
        raise ValidationError(
            "the inputs are not co-partitioned on the privacy unit ("
            + ", ".join(
                f"{c}: {lay.count if lay else 'unpartitioned'}" for c, lay in layouts.items()
            )
            + ")",
            hint="ingest every input with the same --partitions N to run on a cluster",
        )
    refs = {code: verified_parts(home, m) for code, m in inputs.items()}
    count = next(iter(layouts.values())).count  # type: ignore[union-attr]
    return [{code: refs[code][i] for code in inputs} for i in range(count)]


def bounded_frame(
    ctx: Any,
    backend: Backend,
    plan: Callable[[Any], pl.LazyFrame],
    unit: str,
    name: str = "",
) -> pl.LazyFrame:
    """The builder's bounded frame (one row per unit, identifier dropped) computed per
    co-partition on the backend: a scan of the parts in partition order."""
    out_dir = ctx.workdir / ("bounded-parts" + (f"-{name}" if name else ""))
    jobs = [
        BoundJob(ctx, i, parts, plan, unit, str(out_dir))
        for i, parts in enumerate(co_partitions(ctx.home, ctx.inputs))
    ]
    files = backend.map(bounded_part, jobs)
    return pl.scan_parquet(files)


def bounded_frames(
    ctx: Any, backend: Backend, plans: dict[str, BoundingPlan]
) -> dict[str, pl.LazyFrame]:
    """Every table's bounded cells (one row per unit and cell, identifier dropped) computed
    per co-partition on the backend, one task per co-partition for all tables; each table is
    a scan of its parts in partition order. Units are co-partitioned, so a unit's caps hold
    within its partition exactly as over the whole data."""
    out_dirs = {name: str(ctx.workdir / f"bounded-parts-{name}") for name in plans}
    jobs = [
        BoundTablesJob(ctx, i, parts, plans, out_dirs)
        for i, parts in enumerate(co_partitions(ctx.home, ctx.inputs))
    ]
    done = backend.map(bounded_tables, jobs)
    return {name: pl.scan_parquet([d[name] for d in done]) for name in plans}


def match_counts(ctx: Any, backend: Backend) -> tuple[int, dict[str, int]]:
    """A language report's join match counts (base rows, matched per join) summed over the
    co-partitions, counted on the backend."""
    done = backend.map(
        match_counts_part, [MatchJob(ctx, p) for p in co_partitions(ctx.home, ctx.inputs)]
    )
    found: dict[str, int] = {}
    for _total, per in done:
        for code, n in per.items():
            found[code] = found.get(code, 0) + n
    return sum(t for t, _ in done), found


def report_bounded_frames(ctx: Any, backend: Backend) -> dict[str, pl.LazyFrame]:
    """Every table's bounded cells of a language report, computed per co-partition on the
    backend."""
    from products.language.builder import LanguageReportBuilder

    return bounded_frames(ctx, backend, LanguageReportBuilder().bounding_plans(ctx))


def report_draw(ctx: Any, backend: Backend) -> Any:
    """``LanguageReportBuilder.draw`` with the bounding on the backend: the same OpenDP
    measurement, the noise drawn once here."""
    from products.language.builder import measure

    return measure(ctx, report_bounded_frames(ctx, backend))
