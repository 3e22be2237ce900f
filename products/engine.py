"""The build engine: authorize, resolve inputs, release once, charge, draw, post-process, store.

``build(home, product)`` is the one entry point (CLI, Prefect flow, demo). Order of a build:

1. load and check the spec; ``governance.authorization.require_authorized`` (every build);
2. resolve the input snapshots (latest unless pinned) and derive the release id from the
   product id, the spec version and the snapshot ids (plus a verification batch's digest);
3. if ``releases/<id>/`` exists, return it — same spec version over the same snapshots is
   the same release: no new charge, no new noise (a changed spec under the same version is
   refused: bump the version);
4. ``plan``: everything that can refuse the build (declared fields present in the snapshots,
   public key sets, the builder's own ``plan``: spec vs builder, join keys, the lazy query's
   columns) is checked *before* anything is charged; so is where the per-partition work
   runs (``scaleout.placement``: this process, or a Dask cluster when ``--cluster`` /
   ``SHUYU_DASK_SCHEDULER`` / the domain policy names one);
5. under a per-release file lock (threads and processes): charge the ledger (idempotent per
   release id, atomic check-and-charge on verified ledger state) *before* any noise is drawn;
6. draw (on a cluster: the workers bound each co-partition first, then the same measurement
   draws the noise here, once) — or reuse the draw kept in ``work/products/pending/<id>/``
   by an earlier run that crashed after drawing. The draw is written there atomically
   *before* anything is derived from it, so a crash anywhere later never leads to a second
   draw for the same charge;
7. post-process (accuracy, suppression, derived values, HTML) into a staging directory that
   is renamed to ``releases/<id>/`` atomically; mark the ledger entries stored with the SM3
   of ``release.json``; drop pending.

An error raised between the charge (5) and the start of the draw (6), or a refusal raised by
the builder's draw, voids the charge (``ledger.void``: state ``void``, audited). A process
killed in that window leaves the charge without a kept draw: the noisy values existed only in
the memory of the dead process and were never seen, so the next run draws once under the same
charge (the ledger's ``draws`` counter records it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import polars as pl

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec, epsilon_from_rho
from governance import evidence, recovery, roles
from governance.actors import current_actor
from governance.audit import record
from privacy.dp import ledger
from products import release as rel
from products import specs
from products.authz import require_build_authorized
from products.floors import floors, require_within_floors
from scaleout.placement import DistributableBuilder as Distributable
from scaleout.placement import Placement
from scaleout.placement import bounded_frames as bounded_on_cluster
from scaleout.placement import choose as choose_placement
from shuyu_core import atomic, faults, journal, snapshots
from shuyu_core import ids as id_rules
from shuyu_core.errors import BudgetExceeded, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home


@dataclass(frozen=True)
class BuildOptions:
    """Per-build inputs beyond the spec."""

    snapshot_ids: dict[str, str] = field(default_factory=dict)  # pin input snapshots
    queries: Path | None = None  # verification: the batch of queries
    requester: str | None = None  # verification: who asks (quota); default the spec's developer
    at: dt.date | None = None  # authorization date (default today)
    # where the bounding runs: local:N or tcp://host:8786 (default SHUYU_CLUSTER /
    # SHUYU_DASK_SCHEDULER, else this process); see scaleout.placement
    cluster: str | None = None


@dataclass
class BuildContext:
    home: Home
    spec: ProductSpec
    catalog: Catalog
    inputs: dict[str, snapshots.Manifest]
    release_id: str
    options: BuildOptions
    extra_inputs: list[rel.InputRef]
    # The engine's integrity check of the inputs (SM3 of their parts) while the plan reads
    # them; joined before the charge (``_build``).
    checking: Future[None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A context travels to dask workers; the driver's integrity check stays here.
        return {**self.__dict__, "checking": None}

    @property
    def workdir(self) -> Path:
        return self.home.work / "products" / "build" / self.release_id

    @property
    def seed(self) -> int:
        """Deterministic seed for post-processing simulations (never for DP noise)."""
        return zlib.crc32(self.release_id.encode("utf-8"))

    def scan(self, code: str) -> pl.LazyFrame:
        """The declared fields of input ``code`` and nothing else (最小必要)."""
        m = self.inputs[code]
        # While the engine's check runs, do not hash the parts a second time.
        check = self.checking is None or self.checking.done()
        return snapshots.scan(
            self.home, code, m.snapshot_id, columns=self.spec.input(code).fields, check=check
        )


@dataclass
class Draw:
    """What a build drew (noisy tables, or the deterministic result) plus JSON metadata."""

    tables: dict[str, pl.DataFrame]
    meta: dict[str, Any]


@dataclass
class Finished:
    outputs: list[rel.OutputFile]
    accuracy: list[rel.AccuracyCell] = field(default_factory=list)
    suppressed: list[rel.SuppressedCell] = field(default_factory=list)
    contribution_bounds: list[rel.ContributionBound] = field(default_factory=list)
    reversible_columns: list[rel.ReversibleColumn] = field(default_factory=list)
    k_anonymity: rel.KAnonymity | None = None
    verification: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # aggregate outputs computed from released tables only -> the tables they use
    derived_from: dict[str, list[str]] = field(default_factory=dict)


class Builder(Protocol):
    def extra_inputs(
        self, home: Home, spec: ProductSpec, options: BuildOptions
    ) -> list[rel.InputRef]: ...

    def reversible_outputs(self, spec: ProductSpec) -> bool: ...

    def plan(self, ctx: BuildContext) -> None:
        """Raise every refusal the draw could raise (spec vs builder, columns, join keys),
        without drawing noise: the engine calls it before the charge."""
        ...

    def draw(self, ctx: BuildContext) -> Draw: ...

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished: ...


@dataclass(frozen=True)
class BuildOutcome:
    manifest: rel.ReleaseManifest
    reused: bool

    @property
    def release_id(self) -> str:
        return self.manifest.release_id


def _builder(kind: str, spec: ProductSpec | None = None) -> Builder:
    """One builder per kind; imported here, not at module level: builders import the
    engine's types, so the registry never imports them in a circle."""
    if kind == "statistical_report":
        from products.language.builder import LanguageReportBuilder

        return LanguageReportBuilder()
    if kind == "index":
        from products.language.index_builder import LanguageIndexBuilder

        return LanguageIndexBuilder()
    if kind == "verification":
        from products.verification import VerificationBuilder

        return VerificationBuilder()
    from products.desensitized import DesensitizedBuilder

    return DesensitizedBuilder()


# --- pending draws -----------------------------------------------------------------------


def pending_dir(home: Home, release_id: str) -> Path:
    return home.work / "products" / "pending" / release_id


def save_pending(home: Home, release_id: str, draw: Draw, spec_digest: str) -> None:
    final = pending_dir(home, release_id)
    if final.exists():
        shutil.rmtree(final)
    with atomic.staged_dir(final, staging_root=home.tmp) as stage:
        for name, df in draw.tables.items():
            df.write_parquet(stage / f"{name}.parquet")
        doc = {"spec_sm3": spec_digest, "tables": sorted(draw.tables), "meta": draw.meta}
        atomic.write_text(stage / "draw.json", json.dumps(doc, ensure_ascii=False, default=str))


def load_pending(home: Home, release_id: str, spec_digest: str) -> Draw | None:
    path = pending_dir(home, release_id)
    if not (path / "draw.json").exists():
        return None
    doc = json.loads((path / "draw.json").read_text(encoding="utf-8"))
    if doc["spec_sm3"] != spec_digest:
        raise ValidationError(
            f"release {release_id} was drawn from a different spec of the same version",
            hint="bump the spec's version to build a new release",
        )
    tables = {name: pl.read_parquet(path / f"{name}.parquet") for name in doc["tables"]}
    return Draw(tables=tables, meta=doc["meta"])


def release_lock(home: Home, release_id: str) -> contextlib.AbstractContextManager[None]:
    """Exclusive per-release lock across threads and processes (flock per open file)."""
    return atomic.file_lock(home.work / "products" / "locks" / f"{release_id}.lock")


# --- the build ---------------------------------------------------------------------------


def resolve_spec(product: str | ProductSpec) -> ProductSpec:
    return product if isinstance(product, ProductSpec) else specs.get(product)


def _input_refs(ctx_inputs: dict[str, snapshots.Manifest], spec: ProductSpec) -> list[rel.InputRef]:
    return [
        rel.InputRef(
            resource=i.resource,
            snapshot_id=ctx_inputs[i.resource].snapshot_id,
            fields=list(i.fields),
            rows=ctx_inputs[i.resource].rows,
            snapshot_sm3=ctx_inputs[i.resource].sm3,
        )
        for i in spec.inputs
    ]


def _units(spec: ProductSpec, catalog: Catalog) -> dict[str, str]:
    """Budget line per input: the resource's catalogued privacy unit."""
    units: dict[str, str] = {}
    for i in spec.inputs:
        unit = catalog.get(i.resource).privacy_unit
        if unit is None:
            raise ValidationError(
                f"resource {i.resource} declares no privacy_unit, so no budget can be charged",
                hint=f"set privacy_unit in the catalog entry of {i.resource}",
            )
        units[i.resource] = unit
    return units


def build(
    home: Home,
    product: str | ProductSpec,
    options: BuildOptions | None = None,
    catalog: Catalog | None = None,
) -> BuildOutcome:
    """Build one product, or return its stored release (release-once). See the module doc."""
    opts = options or BuildOptions()
    try:
        spec = resolve_spec(product)
    except ShuyuError as exc:  # a broken spec file is refused and audited like any refusal
        if not exc.audited:
            record(home, "product.build", str(product)[:200], "error", {"error": exc.one_line()})
            exc.audited = True
        raise
    try:
        return _build(home, spec, opts, catalog or Catalog.load())
    except ShuyuError as exc:
        if not exc.audited:
            outcome = "refused" if exc.exit_code in (5, 6) else "error"
            record(home, "product.build", spec.id, outcome, {"error": exc.one_line()})
            exc.audited = True
        raise


def _build(home: Home, spec: ProductSpec, opts: BuildOptions, catalog: Catalog) -> BuildOutcome:
    home.ensure()
    for code, sid in opts.snapshot_ids.items():  # pinned snapshots: ids before any path
        id_rules.resource_code(code)
        id_rules.snapshot_id(sid)
    recovery.sweep(home)
    specs.check_against_catalog(spec, catalog)
    builder = _builder(spec.kind, spec)
    action = "verify.query" if spec.kind == "verification" else "build"
    roles.require(home, action, spec.id, developer=spec.developer)
    at = opts.at or dt.date.today()
    authorization = require_build_authorized(
        home, spec, at, catalog, reversible_outputs=builder.reversible_outputs(spec)
    )
    inputs = {
        i.resource: snapshots.get(home, i.resource, opts.snapshot_ids.get(i.resource))
        for i in spec.inputs
    }
    # Before any charge or draw: a snapshot changed after ingest builds nothing (exit 8). The
    # SM3 of the parts (one core) runs while the plan reads them (polars, the other cores) and
    # is joined before the release is reused or charged; a failed check is the error reported.
    checking = _check_inputs(home, list(inputs.values()))
    extra = builder.extra_inputs(home, spec, opts)
    ids = {code: m.snapshot_id for code, m in inputs.items()}
    ids.update({f"{e.resource}": e.snapshot_id for e in extra})
    # Keyed by content (the snapshots' SM3), not by snapshot id: re-ingesting a byte-identical
    # export is the same release, so it is neither charged nor drawn again.
    content = {code: f"sm3:{m.sm3}" for code, m in inputs.items()}
    content.update({f"{e.resource}": e.snapshot_id for e in extra})
    release_id = rel.derive_release_id(spec.id, spec.version, content)
    digest = specs.spec_sm3(spec)
    # Domain privacy floors (ρ/ε ceilings per release and per unit-year, k, masks, public
    # keys): refused here, before any charge or draw.
    require_within_floors(home, spec, catalog, release_id)

    if rel.exists(home, release_id):
        checking.result()
    stored = _stored(home, release_id, digest)
    if stored is not None:
        return stored
    ctx = BuildContext(home, spec, catalog, inputs, release_id, opts, extra, checking)
    # Everything that can refuse the build is checked before anything is charged.
    try:
        plan(ctx, builder)
        placement = choose_placement(ctx, builder, opts.cluster)
    except BaseException:
        checking.result()  # a changed snapshot is the refusal to report
        raise
    checking.result()
    units = _units(spec, catalog) if spec.budget is not None else {}
    with release_lock(home, release_id):
        stored = _stored(home, release_id, digest)
        if stored is not None:
            return stored
        charge: ledger.ChargeResult | None = None
        if spec.budget is not None:
            charge = ledger.charge(
                home,
                ledger.ChargeRequest(
                    release_id=release_id,
                    product_id=spec.id,
                    version=spec.version,
                    rho=spec.budget.zcdp_rho,
                    delta=spec.budget.delta,
                    units=units,
                    snapshots=ids,
                    unit_year_ceiling=floors(home).max_rho_per_unit_year,
                    data_at=spec.reference_period[1] if spec.reference_period else None,
                ),
            )
        draw, resumed = _draw_once(ctx, builder, digest, charge, placement)
        details: dict[str, Any] = {
            "product": spec.id,
            "version": spec.version,
            "kind": spec.kind,
            "inputs": ids,
            "rho": spec.budget.zcdp_rho if spec.budget else 0.0,
            "resumed_draw": resumed,
            "execution": draw.meta.get("execution"),
        }
        who = current_actor()
        # The release becomes visible by a rename before its entry is written: an intent
        # lets the recovery sweep record it if this process is killed in between.
        # If the entry cannot be written (the chain broke meanwhile), the intent stays for
        # the sweep to record once the chain is repaired; the charged, drawn release is kept.
        intent = journal.begin(
            home,
            "build",
            "product.build",
            release_id,
            rel.release_dir(home, release_id),
            details,
            (who.name, who.role),
        )
        try:
            manifest = _store(ctx, builder, draw, digest, charge, authorization)
            faults.point("build.after_rename")
            if charge is not None:
                ledger.mark(home, release_id, "stored", release_sm3=_manifest_sm3(home, release_id))
                faults.point("build.ledger_marked")
            shutil.rmtree(pending_dir(home, release_id), ignore_errors=True)
            shutil.rmtree(ctx.workdir, ignore_errors=True)
            record(
                home,
                "product.build",
                release_id,
                "ok",
                {**details, "outputs": [o.path for o in manifest.outputs]},
            )
            faults.point("build.audited")
        except ShuyuError:
            if not rel.exists(home, release_id):
                journal.done(intent)
            raise
        journal.done(intent)
    return BuildOutcome(manifest=manifest, reused=False)


def _check_inputs(home: Home, manifests: list[snapshots.Manifest]) -> Future[None]:
    """``evidence.verify_snapshot`` of every input in a background thread (hashlib's SM3
    releases the GIL on large reads). The caller joins it before using anything it read."""

    def run() -> None:
        for m in manifests:
            evidence.verify_snapshot(home, m)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shuyu-check")
    fut = pool.submit(run)
    pool.shutdown(wait=False)  # the thread ends with its task; nothing waits here
    return fut


def _undeclared(spec: ProductSpec, exc: pl.exceptions.ColumnNotFoundError) -> ValidationError:
    # The scan projects the declared fields only (最小必要), so a builder that needs another
    # field cannot read it.
    first = str(exc).splitlines()[0]
    return ValidationError(
        f"product {spec.id} needs a field its spec does not declare ({first})",
        hint="declare the field under inputs (and have the scenario authorize it)",
    )


def plan(ctx: BuildContext, builder: Builder) -> None:
    """Every refusal a build can meet, raised before the charge (nothing is read but schemas).

    The snapshot holds every declared field; every table's public key set can be formed from
    declared dimensions; then the builder's own ``plan`` (spec vs builder, join keys, the
    lazy query's columns).
    """
    spec = ctx.spec
    for i in spec.inputs:
        m = ctx.inputs[i.resource]
        missing = [f for f in i.fields if f not in m.columns]
        if missing:
            raise ValidationError(
                f"product {spec.id}: snapshot {m.snapshot_id} of {i.resource} has no field(s) "
                f"{', '.join(missing)}",
                hint="ingest a snapshot that carries them, or pin one with --snapshot",
            )
    for t in spec.tables:
        try:
            specs.key_frame(spec, list(t.by))
        except KeyError as exc:
            raise ValidationError(
                f"product {spec.id}: table {t.name} groups by unknown dimension {exc.args[0]}",
                hint="declare the dimension with a public key set",
            ) from None
    try:
        builder.plan(ctx)
    except pl.exceptions.ColumnNotFoundError as exc:
        raise _undeclared(spec, exc) from exc


def _draw_once(
    ctx: BuildContext,
    builder: Builder,
    digest: str,
    charge: ledger.ChargeResult | None,
    placement: Placement | None = None,
) -> tuple[Draw, bool]:
    """The kept draw, or one new draw under ``charge``; returns (draw, resumed).

    An error after the charge and before the noise is drawn releases the charge (``void``,
    audited); so does a refusal raised by the builder's draw (it produced nothing). A crash
    while or after drawing keeps the charge: the next run draws once under it, and a charge
    whose noise was drawn and kept is never voided nor drawn again.
    """
    home, spec, release_id = ctx.home, ctx.spec, ctx.release_id
    drawing = False
    try:
        if charge is not None and charge.reused and spec.budget is not None:
            _check_same_charge(charge, spec.budget.zcdp_rho, set(spec.declared_fields))
        draw = load_pending(home, release_id, digest)
        if draw is not None:
            return draw, True
        if charge is not None and charge.reused:
            _refuse_second_draw(charge)
        _before_draw(ctx)
        frames = None
        if placement is not None and placement.distributed and isinstance(builder, Distributable):
            # The workers bound and write; no noise yet, so a failure here voids the charge.
            frames = bounded_on_cluster(ctx, builder, placement)
        drawing = True
        try:
            if frames is None:
                draw = builder.draw(ctx)
            else:  # the same measurement as draw(), over the bounded parts
                draw = cast(Distributable, builder).measure(ctx, frames)
        except pl.exceptions.ColumnNotFoundError as exc:
            drawing = False
            raise _undeclared(spec, exc) from exc
        except ShuyuError:
            drawing = False  # a refusal: nothing was released, nothing kept
            raise
        if placement is not None:
            draw.meta["execution"] = placement.record()
        save_pending(home, release_id, draw, digest)
        if charge is not None:
            ledger.mark(home, release_id, "drawn", drew=True)
        return draw, False
    except BaseException as exc:
        if charge is not None and not drawing:
            reason = exc.one_line() if isinstance(exc, ShuyuError) else repr(exc)[:300]
            # A refused void (a ledger break) is audited on its own; the build's error stands.
            with contextlib.suppress(ShuyuError):
                ledger.void(home, release_id, f"build stopped before its draw: {reason}")
        raise


def _before_draw(ctx: BuildContext) -> None:
    """The last step before noise is drawn (a seam for tests that inject failures)."""


def _manifest_sm3(home: Home, release_id: str) -> str:
    return sm3_file(rel.release_dir(home, release_id) / rel.MANIFEST)


def _refuse_second_draw(charge: ledger.ChargeResult) -> None:
    """A charge whose draw was kept once may not pay for another draw.

    The ledger marks a release ``drawn`` only after its draw is durable in
    ``work/products/pending/<id>/``; that draw is deleted only once the release is stored. So
    a drawn (or stored) charge with neither a kept draw nor a release means someone removed
    them: drawing again would show a second, independent noisy answer under one charge.
    """
    drawn = [e for e in charge.entries if e.draws > 0 or e.state != "charged"]
    if drawn:
        first = drawn[0]
        raise BudgetExceeded(
            f"release {first.release_id} already drew its noise (ledger {first.entry_id}: "
            f"state {first.state}, {first.draws} draw) but neither its kept draw nor its "
            "release exists; drawing again would spend its ρ twice",
            hint="restore releases/<id>/ or work/products/pending/<id>/ from backup, or bump "
            "the spec's version to build (and charge) a new release",
        )


def _check_same_charge(charge: ledger.ChargeResult, rho: float, resources: set[str]) -> None:
    """A resumed build must be the one that was charged (same ρ, same inputs)."""
    charged = {e.resource for e in charge.entries}
    if charged != resources or any(abs(e.rho - rho) > 1e-12 for e in charge.entries):
        first = charge.entries[0]
        raise ValidationError(
            f"release {first.release_id} was charged ρ={first.rho:g} on {sorted(charged)}, "
            f"but the spec now asks ρ={rho:g} on {sorted(resources)}",
            hint="bump the spec's version: a changed spec is a new release",
        )


def _stored(home: Home, release_id: str, digest: str) -> BuildOutcome | None:
    if not rel.exists(home, release_id):
        return None
    manifest = rel.load(home, release_id)
    if manifest.spec_sm3 != digest:
        raise ValidationError(
            f"release {release_id} of {manifest.product_id} v{manifest.version} exists but was "
            "built from a different spec",
            hint="bump the spec's version: a changed spec is a new release",
        )
    # A run that crashed after the atomic rename and before its bookkeeping left the ledger
    # at "drawn" and the kept draw behind: finish both (idempotent).
    if manifest.budget is not None and any(
        e.state not in ("stored", "void") for e in ledger.entries_for_release(home, release_id)
    ):
        ledger.mark(home, release_id, "stored", release_sm3=_manifest_sm3(home, release_id))
    shutil.rmtree(pending_dir(home, release_id), ignore_errors=True)
    # The per-person working file of a run that stopped after its rename (最小必要).
    shutil.rmtree(home.work / "products" / "build" / release_id, ignore_errors=True)
    record(home, "product.build", release_id, "ok", {"reused": True})
    return BuildOutcome(manifest=manifest, reused=True)


def _store(
    ctx: BuildContext,
    builder: Builder,
    draw: Draw,
    digest: str,
    charge: ledger.ChargeResult | None,
    authorization: dict[str, Any],
) -> rel.ReleaseManifest:
    spec = ctx.spec
    final = rel.release_dir(ctx.home, ctx.release_id)
    with atomic.staged_dir(final, staging_root=ctx.home.tmp) as stage:
        fin = builder.finish(ctx, draw, stage)
        budget = None
        if charge is not None and spec.budget is not None:
            rho = spec.budget.zcdp_rho
            # One ε convention: the ledger's (its budget lines' δ), so release.json and
            # `shuyu budget show` state the same ε for the same charge. With several lines the
            # smallest δ is stated (the largest, most conservative ε of the entries).
            delta = min(e.delta for e in charge.entries)
            budget = rel.BudgetCharge(
                rho=rho,
                epsilon=epsilon_from_rho(rho, delta),
                delta=delta,
                entries=[
                    rel.LedgerRef(
                        resource=e.resource, unit=e.unit, period=e.period, entry_id=e.entry_id
                    )
                    for e in charge.entries
                ],
            )
        pu = spec.privacy_unit
        execution = rel.Execution(**draw.meta["execution"]) if "execution" in draw.meta else None
        mechanisms = [] if budget is None else _mechanisms(draw, budget)
        manifest = rel.ReleaseManifest(
            release_id=ctx.release_id,
            product_id=spec.id,
            name=spec.name,
            name_en=spec.name_en,
            version=spec.version,
            kind=spec.kind,
            purpose_category=spec.purpose_category,
            pricing_note=spec.pricing_note,
            scenario=spec.scenario,
            agreement_id=spec.agreement_id,
            developer=spec.developer,
            destination=spec.destination,
            spec=spec.model_dump(mode="json"),
            spec_sm3=digest,
            inputs=[*_input_refs(ctx.inputs, spec), *ctx.extra_inputs],
            privacy_unit=None
            if pu is None
            else rel.PrivacyUnit(
                resource=pu.resource, field=pu.field, max_contributions=pu.contributions
            ),
            contribution_bounds=fin.contribution_bounds,
            budget=budget,
            mechanisms=mechanisms,
            derived_from=fin.derived_from,
            outputs=[
                o if o.sm3 else o.model_copy(update={"sm3": sm3_file(stage / o.path)})
                for o in fin.outputs
            ],
            accuracy=fin.accuracy,
            accuracy_target=spec.suppression.max_relative_error if spec.budget else None,
            suppression_threshold=spec.suppression.min_count if spec.budget else None,
            suppressed=fin.suppressed,
            reversible_columns=fin.reversible_columns,
            k_anonymity=fin.k_anonymity,
            verification=fin.verification,
            authorization=authorization,
            notes=[*fin.notes, *([execution.note] if execution and execution.note else [])],
            execution=execution,
            created_at=dt.datetime.now(dt.UTC),
            actor=str(current_actor()),
        )
        atomic.write_text(stage / "spec.yaml", specs.spec_yaml(spec))
        if manifest.accuracy:
            _accuracy_frame(manifest).write_csv(stage / "accuracy.csv", include_bom=True)
        atomic.write_text(stage / rel.MANIFEST, rel.manifest_json(manifest))
        # The evidence the assessment and publish judge by lives outside the release: the
        # SM3 of release.json and of every file, in the audit chain, before the rename.
        evidence.seal(ctx.home, ctx.release_id, stage)
        faults.point("build.staged")
    return manifest


def _mechanisms(draw: Draw, budget: rel.BudgetCharge) -> list[rel.Mechanism]:
    """Per noisy table: the noise of each measure and the ledger entries that paid for it."""
    entries = [e.entry_id for e in budget.entries]
    out: list[rel.Mechanism] = []
    for table, noise in sorted(draw.meta.get("noise", {}).items()):
        measures = [
            rel.MeasureNoise(
                column=n["column"],
                aggregate=n["aggregate"],
                distribution=n["distribution"],
                scale=float(n["scale"]),
                ci_half_width=None if n.get("rank_error") is not None else float(n["accuracy"]),
                alpha=float(n["alpha"]),
                rho=float(n["rho"]),
                rank_scale=n.get("rank_scale"),
                rank_error=n.get("rank_error"),
                candidates=n.get("candidates"),
            )
            for n in noise
        ]
        out.append(
            rel.Mechanism(
                output=table,
                rho=sum(m.rho for m in measures),
                measures=measures,
                ledger_entries=entries,
            )
        )
    return out


def _accuracy_frame(m: rel.ReleaseManifest) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "output": c.output,
                "key": json.dumps(c.key, ensure_ascii=False, sort_keys=True),
                "measure": c.measure,
                "estimate": c.estimate,
                "ci_half_width": c.ci_half_width,
                "alpha": c.alpha,
                "relative_error": c.relative_error,
                "method": c.method,
                "distribution": c.distribution,
                "scale": c.scale,
                "suppressed": c.suppressed,
                "reason": c.reason,
            }
            for c in m.accuracy
        ],
        infer_schema_length=None,
    )
