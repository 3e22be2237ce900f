"""What runs on a worker, one partition at a time.

Every job takes one picklable argument and reads one part of a snapshot the driver has
verified (SM3 against the manifest and the ingest record). The worker re-checks that the part
still has the size and mtime the driver saw before reading it, so a part rewritten after the
driver's check is refused rather than used. A job that writes writes atomically (a temporary
name, then a rename), so a worker killed mid-task leaves no partial part behind and the
scheduler's retry writes the same part again.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shuyu_core import faults, snapshots
from shuyu_core.errors import IntegrityError
from shuyu_core.home import Home


@dataclass(frozen=True)
class PartRef:
    """One part of one verified snapshot, with the size and mtime the driver verified."""

    home_root: str
    manifest: snapshots.Manifest
    index: int
    size: int
    mtime_ns: int

    @property
    def home(self) -> Home:
        return Home.from_env(self.home_root)

    @property
    def path(self) -> Path:
        return snapshots.part_paths(self.home, self.manifest)[self.index]

    def checked_path(self) -> Path:
        p = self.path
        st = p.stat()
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            raise IntegrityError(
                f"part {p.name} of snapshot {self.manifest.snapshot_id} of "
                f"{self.manifest.resource} changed after the driver verified it",
                hint="nothing was built from it; restore the snapshot from backup or re-ingest",
            )
        return p

    def part_manifest(self) -> snapshots.Manifest:
        """The manifest narrowed to this part (for code that reads ``manifest.files``)."""
        return self.manifest.model_copy(update={"files": [self.manifest.files[self.index]]})


def part_refs(home: Home, m: snapshots.Manifest) -> list[PartRef]:
    """One reference per part of ``m`` (verify ``m`` first: the stats taken here are what the
    workers hold the parts to)."""
    out = []
    for i, p in enumerate(snapshots.part_paths(home, m)):
        st = p.stat()
        out.append(PartRef(str(home.root), m, i, st.st_size, st.st_mtime_ns))
    return out


def _atomic_sink(lf: pl.LazyFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        lf.sink_parquet(tmp, engine="streaming")
        faults.point("scaleout.part_staged")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# -- quality ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityJob:
    part: PartRef
    as_of: dt.date


def quality_counts(job: QualityJob) -> dict[str, Any]:
    """Rows, and (failed, total) of every row rule and the totals of aggregate rules, on one
    part. Row rules judge one row at a time, so the parts' counts add up to the snapshot's."""
    from catalogs.catalog import Catalog
    from quality import engine

    part = job.part
    part.checked_path()
    resource = Catalog.load().get(part.manifest.resource)
    _plain, lf, plan, _refs, _skipped = engine.build_plan(
        part.home, resource, part.part_manifest(), job.as_of, samples=False
    )
    flagged = engine.evaluation_frame(lf, plan)
    exprs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("rows")]
    for i, rule in enumerate(plan.row_rules):
        exprs.extend(engine._row_exprs(i, rule, False))
    for j, agg in enumerate(plan.agg_rules):
        exprs.append(agg.total.cast(pl.Int64).alias(f"at{j}"))
    out = flagged.select(exprs).collect(engine="streaming").row(0, named=True)
    rules = {
        r.spec.id: (int(out[f"f{i}"]), int(out[f"t{i}"])) for i, r in enumerate(plan.row_rules)
    }
    totals = {a.spec.id: int(out[f"at{j}"]) for j, a in enumerate(plan.agg_rules)}
    return {"rows": int(out["rows"]), "row_rules": rules, "agg_totals": totals}


# -- repeated keys (primary_key, unique, duplicate_record) -----------------------------------
#
# A key may repeat across parts (the snapshot is partitioned on the privacy unit, not on every
# rule's key), so repeated keys need a shuffle. It moves 64-bit key hashes only, never key
# values, through files under the home's tmp directory (the storage the workers already share
# to read the parts), in three steps:
#   1. per part: each rule's distinct key hashes and their row counts, split into buckets by
#      hash (:func:`key_hash_buckets`);
#   2. per bucket: the hashes whose counts, summed over the parts, exceed one
#      (:func:`repeated_hashes`; few in any delivery worth checking);
#   3. per part: the key values of the rows with such a hash (:func:`repeated_key_rows`).
# The driver then counts exactly on those rows with the engine's own function, as the
# single-process check does, so a hash collision never becomes a reported failure.
# A rule whose key includes the partitioning field needs none of it: equal keys are then in
# one part, and the parts' exact counts (:func:`repeats_in_part`) add up. That covers
# ``duplicate_record`` always (identical records share the privacy unit) and a key that is
# the privacy unit itself (RKJBXX's ID number).


@dataclass(frozen=True)
class PartRepeatsJob:
    part: PartRef
    as_of: dt.date
    rules: tuple[int, ...]


def repeats_in_part(job: PartRepeatsJob) -> dict[int, int]:
    """Per rule, the rows of one part repeating an earlier row's key (exact)."""
    from catalogs.catalog import Catalog
    from quality import engine

    plain, rules = agg_rules_of(job.part, job.as_of)
    resource = Catalog.load().get(job.part.manifest.resource)
    out: dict[int, int] = {}
    kinds = {j: rules[j].spec.kind for j in job.rules}
    key_j = next((j for j, k in kinds.items() if k in ("primary_key", "unique")), None)
    record_j = next((j for j, k in kinds.items() if k == "duplicate_record"), None)
    if key_j is not None and record_j is not None and rules[key_j].present is not None:
        # As the single-process check does: whole records ride on the key rule (identical
        # records share the key, or both lack it), so no hash of every column is needed.
        key_rule = rules[key_j]
        missing = int(plain.select((~key_rule.present).sum()).collect(engine="streaming").item())
        if missing <= engine._MISSING_KEY_MAX:
            (out[key_j], _), (out[record_j], _) = engine._key_and_records(
                plain, key_rule, rules[record_j], 1, missing, resource, False
            )
    for j in job.rules:
        if j not in out:
            out[j] = engine._duplicates(plain, rules[j], resource, False)[0]
    return out


@dataclass(frozen=True)
class KeyHashJob:
    part: PartRef
    as_of: dt.date
    spill: str
    buckets: int
    rules: tuple[int, ...]  # indices of the rules whose keys may repeat across parts


def _bucket_path(spill: str, rule: int, bucket: int) -> Path:
    return Path(spill) / f"rule-{rule:03d}" / f"bucket-{bucket:05d}"


def agg_rules_of(part: PartRef, as_of: dt.date) -> tuple[pl.LazyFrame, list[Any]]:
    """The part alone (catalogued columns) and the resource's aggregate rules."""
    from catalogs.catalog import Catalog
    from quality import engine

    part.checked_path()
    resource = Catalog.load().get(part.manifest.resource)
    plain, _lf, plan, _refs, _skipped = engine.build_plan(
        part.home, resource, part.part_manifest(), as_of, samples=False
    )
    return plain, list(plan.agg_rules)


def _keyed(plain: pl.LazyFrame, rule: Any) -> pl.LazyFrame:
    """The rows taking part in ``rule`` (every key part present), with the key hash."""
    rows = plain if rule.present is None else plain.filter(rule.present)
    return rows.with_columns(rule.key_hash.alias("__shuyu_h"))


def key_hash_buckets(job: KeyHashJob) -> int:
    """Step 1 on one part; returns the number of bucket files written."""
    plain, rules = agg_rules_of(job.part, job.as_of)
    written = 0
    for j in job.rules:
        rule = rules[j]
        counts = (
            _keyed(plain, rule)
            .group_by("__shuyu_h")
            .agg(pl.len().cast(pl.UInt64).alias("n"))
            .select(pl.col("__shuyu_h").alias("h"), "n")
            .with_columns((pl.col("h") % job.buckets).alias("b"))
            .collect(engine="streaming")
        )
        for (bucket,), frame in counts.partition_by("b", as_dict=True).items():
            name = f"part-{job.part.index:05d}.parquet"
            _atomic_sink(frame.drop("b").lazy(), _bucket_path(job.spill, j, int(bucket)) / name)
            written += 1
    return written


@dataclass(frozen=True)
class RepeatedHashJob:
    spill: str
    rule: int
    bucket: int


def repeated_hashes(job: RepeatedHashJob) -> pl.Series:
    """Step 2 on one bucket of one rule: the hashes held by more than one row in all."""
    where = _bucket_path(job.spill, job.rule, job.bucket)
    files = sorted(str(p) for p in where.glob("part-*.parquet")) if where.is_dir() else []
    if not files:
        return pl.Series("h", [], dtype=pl.UInt64)
    return (
        pl.scan_parquet(files)
        .group_by("h")
        .agg(pl.col("n").sum())
        .filter(pl.col("n") > 1)
        .select("h")
        .collect(engine="streaming")
        .to_series()
    )


@dataclass(frozen=True)
class RepeatedRowsJob:
    part: PartRef
    as_of: dt.date
    # rule index -> the hashes repeated over the whole snapshot
    hashes: dict[int, pl.Series]


def repeated_key_rows(job: RepeatedRowsJob) -> dict[int, pl.DataFrame]:
    """Step 3 on one part: per rule, the key columns of the rows whose hash repeats."""
    plain, rules = agg_rules_of(job.part, job.as_of)
    out: dict[int, pl.DataFrame] = {}
    for j, hashes in job.hashes.items():
        rule = rules[j]
        out[j] = (
            _keyed(plain, rule)
            .join(hashes.to_frame("__shuyu_h").lazy(), on="__shuyu_h", how="semi")
            .select(list(rule.columns))
            .collect(engine="streaming")
        )
    return out


# -- desensitization ------------------------------------------------------------------------


@dataclass(frozen=True)
class DesensitizeJob:
    part: PartRef
    policy_path: str | None
    out_dir: str
    # column -> top/bottom-code bound computed over the whole snapshot on the driver, so
    # that every part clips at the same value (a per-part quantile would differ).
    bounds: dict[str, float] = field(default_factory=dict)
    # the driver's sampled PII scan of the undeclared columns (column -> entity), and which
    # of them hold the entity inside free text
    detected: dict[str, str] = field(default_factory=dict)
    free_text: tuple[str, ...] = ()


def desensitize_part(job: DesensitizeJob) -> dict[str, Any]:
    """Desensitize one part with the policy into ``out_dir/part-NNNNN.parquet``."""
    from catalogs.catalog import Catalog
    from transforms.apply import desensitize_frame, home_key_provider
    from transforms.policy import load_policy

    part = job.part
    path = part.checked_path()
    resource = Catalog.load().get(part.manifest.resource)
    lf, actions = desensitize_frame(
        pl.scan_parquet(path),
        resource,
        load_policy(job.policy_path),
        home_key_provider(part.home),
        job.detected,
        job.free_text,
        fixed_bounds=job.bounds,
    )
    out = _atomic_sink(lf, Path(job.out_dir) / path.name)
    return {"file": out.name, "actions": [a.op for a in actions]}


# -- per-unit bounding --------------------------------------------------------------------


@dataclass(frozen=True)
class BoundJob:
    """One co-partition of a product's inputs: part ``index`` of every input snapshot."""

    ctx: Any  # products.engine.BuildContext (kept Any: products imports are worker-side)
    index: int
    parts: dict[str, PartRef]
    plan: Callable[[Any], pl.LazyFrame]
    unit: str
    out_dir: str


def bounded_part(job: BoundJob) -> str:
    """The builder's own bounding plan over one co-partition, one row per unit, written
    without the unit identifier (``privacy.dp.bounding``), atomically."""
    ctx = _part_context(job.ctx, job.parts)
    lf = job.plan(ctx).drop(job.unit)
    out = _atomic_sink(lf, Path(job.out_dir) / f"bounded-{job.index:05d}.parquet")
    return str(out)


def _part_context(ctx: Any, parts: dict[str, PartRef]) -> Any:
    """The build context with ``scan`` narrowed to one co-partition (declared fields only)."""
    from products.engine import BuildContext

    class PartContext(BuildContext):
        def scan(self, code: str) -> pl.LazyFrame:
            cols = self.spec.input(code).fields
            return pl.scan_parquet(parts[code].checked_path()).select(cols)

    return PartContext(**{f: getattr(ctx, f) for f in _CTX_FIELDS})


@dataclass(frozen=True)
class BoundTablesJob:
    """Every table's bounding plan over one co-partition (one scan of the inputs for all)."""

    ctx: Any  # products.engine.BuildContext
    index: int
    parts: dict[str, PartRef]
    plans: dict[str, Any]  # table -> scaleout.placement.BoundingPlan
    out_dirs: dict[str, str]  # table -> directory of its bounded parts


def bounded_tables(job: BoundTablesJob) -> dict[str, str]:
    """Each table's bounded cells of one co-partition, without the unit identifier, sunk in
    one streaming ``collect_all`` (polars shares the inputs' scan and joins between the
    tables) to temporary names, then renamed: a killed worker leaves no partial part."""
    ctx = _part_context(job.ctx, job.parts)
    finals = {
        name: Path(job.out_dirs[name]) / f"bounded-{job.index:05d}.parquet" for name in job.plans
    }
    tmps = {
        name: p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        for name, p in finals.items()
    }
    try:
        sinks = []
        for name, bp in job.plans.items():
            tmps[name].parent.mkdir(parents=True, exist_ok=True)
            sinks.append(bp.plan(ctx).drop(bp.unit).sink_parquet(tmps[name], lazy=True))
        pl.collect_all(sinks, engine="streaming")
        faults.point("scaleout.part_staged")
        for name, tmp in tmps.items():
            os.replace(tmp, finals[name])
    finally:
        for tmp in tmps.values():
            if tmp.exists():
                tmp.unlink()
    return {name: str(p) for name, p in finals.items()}


_CTX_FIELDS = ("home", "spec", "catalog", "inputs", "release_id", "options", "extra_inputs")


@dataclass(frozen=True)
class MatchJob:
    """One co-partition's join match counts of a language report."""

    ctx: Any  # products.engine.BuildContext
    parts: dict[str, PartRef]


def match_counts_part(job: MatchJob) -> tuple[int, dict[str, int]]:
    from products.language.compile import match_counts

    return match_counts(_part_context(job.ctx, job.parts))


# -- column PII scan ----------------------------------------------------------------------


def part_rows(part: PartRef) -> int:
    """Rows of one part (from its Parquet metadata)."""
    return int(pl.scan_parquet(part.checked_path()).select(pl.len()).collect().item())


@dataclass(frozen=True)
class PiiSampleJob:
    """The rows of one part that the whole snapshot's evenly spaced PII sample takes: every
    ``step``-th row from the part's own row ``offset`` (None: the sample has none here)."""

    part: PartRef
    columns: tuple[str, ...]
    step: int
    offset: int | None


def pii_sample_part(job: PiiSampleJob) -> pl.DataFrame:
    lf = pl.scan_parquet(job.part.checked_path()).select(job.columns)
    if job.offset is None:
        return lf.head(0).collect()
    if job.step > 1:
        lf = lf.gather_every(job.step, offset=job.offset)
    return lf.collect(engine="streaming")


# -- verification index -------------------------------------------------------------------


@dataclass(frozen=True)
class IndexJob:
    """One part's share of a verification check's keyed index. The key is read from the
    shared home on the worker, never sent with the task."""

    part: PartRef
    check: Any  # catalogs.product_models.VerificationCheck
    fields: tuple[str, str]  # key field, name field


def index_part(job: IndexJob) -> pl.DataFrame:
    """``key_token, name_token`` of one part (normalized, HMAC-SM3, distinct)."""
    from products.verification import index_frame
    from shuyu_core.keys import PSEUDONYM, load_key

    raw = pl.scan_parquet(job.part.checked_path()).select(job.fields).collect()
    return index_frame(raw, job.check, load_key(job.part.home, PSEUDONYM))
