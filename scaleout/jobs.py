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
