"""Where a build's per-unit bounding runs: in this process (``local``) or per co-partition on
the workers of a dask cluster (``dask``). The engine decides it once per build:

1. ``choose`` after the builder's plan and before the charge, so that every refusal (a cluster
   setting that is neither ``local:N`` nor a scheduler address, inputs partitioned into
   different counts) charges nothing. Unpartitioned inputs, or a builder without per-table
   bounding plans, fall back to ``local`` with a note that the release manifest keeps;
2. ``bounded_frames`` after the charge and before any noise: the builder's own bounding plans
   run on the workers, one task per co-partition, each writing its bounded cells without the
   identifier; the driver gets scans of those parts and hands them to the builder's
   ``measure`` — the same OpenDP measurement as a local build, the noise drawn once, here.

A builder takes part by exposing ``bounding_plans(ctx)`` (table → :class:`BoundingPlan`) and
``measure(ctx, frames)``; the backend only decides where the plans run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import polars as pl

from scaleout.backends import check_setting, cluster_setting, open_backend
from shuyu_core import snapshots
from shuyu_core.errors import ValidationError


@dataclass(frozen=True)
class BoundingPlan:
    """One table's per-unit bounding plan: ``plan(ctx)`` is a lazy frame with one row per unit
    and cell (the unit column ``unit`` kept, dropped before anything is written). ``plan``
    must be picklable (a module-level function or a ``functools.partial`` of one): the
    workers call it with a context whose ``scan`` reads their co-partition only."""

    plan: Callable[[Any], pl.LazyFrame]
    unit: str


@runtime_checkable
class PartitionedBuilder(Protocol):
    def partitionwise(self, ctx: Any) -> str | None:
        """None when its per-partition work combined gives the whole data's result (for a
        DP builder: every unit cap and every join is on the partitioning field); else the
        reason why not."""
        ...


@runtime_checkable
class DistributableBuilder(PartitionedBuilder, Protocol):
    """A DP builder whose bounding the engine runs on the cluster (then ``measure``)."""

    def bounding_plans(self, ctx: Any) -> dict[str, BoundingPlan]: ...

    def measure(self, ctx: Any, frames: dict[str, pl.LazyFrame]) -> Any: ...


@dataclass(frozen=True)
class Placement:
    backend: str  # "local" | "dask"
    setting: str | None  # local:N or a scheduler address (dask only)
    partitions: int
    note: str | None = None

    @property
    def distributed(self) -> bool:
        return self.backend == "dask"

    def record(self) -> dict[str, Any]:
        """What the release manifest keeps (``products.release.Execution``)."""
        return {
            "backend": self.backend,
            "partitions": self.partitions,
            "ran_on": "workers" if self.distributed else "driver",
            "note": self.note,
        }


def _co_partition_count(inputs: dict[str, snapshots.Manifest]) -> int | None:
    """The inputs' common partition count, None if any is unpartitioned; refuses inputs
    partitioned differently (part *i* of one would not hold the units of part *i* of the
    other)."""
    layouts = {code: m.partitioning for code, m in inputs.items()}
    if any(lay is None for lay in layouts.values()):
        return None
    # The fields may differ (joined on equal values under other names): the builder's
    # ``partitionwise`` judges the fields, this the hash layout.
    kinds = {(lay.count, lay.scheme) for lay in layouts.values() if lay is not None}
    if len(kinds) != 1:
        raise ValidationError(
            "the inputs are not co-partitioned on the privacy unit ("
            + ", ".join(f"{c}: {lay.count}" for c, lay in layouts.items() if lay is not None)
            + ")",
            hint="ingest every input with the same --partitions N, or build without --cluster",
        )
    return next(iter(kinds))[0]


def choose(ctx: Any, builder: Any, cluster: str | None = None) -> Placement:
    """Where ``builder``'s bounding of ``ctx`` runs (see the module doc); refuses before the
    charge. ``cluster``: the build's ``--cluster``, else ``SHUYU_CLUSTER`` /
    ``SHUYU_DASK_SCHEDULER``."""
    setting = cluster_setting(cluster, ctx.home)
    if setting is not None and setting != "local":
        check_setting(setting)
    if setting is None or setting == "local":
        try:
            count = _co_partition_count(ctx.inputs) if ctx.inputs else None
        except ValidationError:  # one process reads every part of each input: no matter
            count = None
        return Placement("local", None, count or 1)
    if not isinstance(builder, PartitionedBuilder):
        return Placement(
            "local",
            None,
            1,
            f"产品类型 {ctx.spec.kind} 在驱动端计算 (a {ctx.spec.kind} build does not run on "
            "the cluster; it ran in one process)",
        )
    if isinstance(builder, DistributableBuilder):
        count = _co_partition_count(ctx.inputs)
    else:  # each input on its own (a verification index): any counts will do
        counts = [m.partitioning.count if m.partitioning else None for m in ctx.inputs.values()]
        count = None if None in counts else max(c for c in counts if c is not None)
    why_not = builder.partitionwise(ctx) if count is not None else None
    if why_not:
        return Placement(
            "local",
            None,
            1,
            f"分区计算结果与整体不同，已在本机计算 ({why_not}: bounded in one process)",
        )
    if count is None:
        unparted = sorted(c for c, m in ctx.inputs.items() if m.partitioning is None)
        return Placement(
            "local",
            None,
            1,
            f"输入快照未按隐私单位分区，已在本机计算 (unpartitioned input(s) "
            f"{', '.join(unparted)}: bounded in one process; ingest with --partitions N to "
            "run on the cluster)",
        )
    return Placement("dask", setting, count)


def partitioned_on(inputs: dict[str, snapshots.Manifest]) -> dict[str, str]:
    """Each partitioned input's partitioning field."""
    return {c: m.partitioning.by for c, m in inputs.items() if m.partitioning is not None}


def bounded_frames(ctx: Any, builder: Any, placement: Placement) -> dict[str, pl.LazyFrame]:
    """The builder's bounded frames computed per co-partition on the cluster (no noise)."""
    assert isinstance(builder, DistributableBuilder)
    from scaleout.driver import bounded_frames as on_backend

    with open_backend(placement.setting, ctx.home) as backend:
        return on_backend(ctx, backend, builder.bounding_plans(ctx))
