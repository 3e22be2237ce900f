"""The checks of the pre-release assessment, one function per check.

Each function takes the assessment context and returns one ``Check``. Evidence holds counts,
shares, column names and public keys only: raw values of the inputs never enter a report.
Thresholds the assessment applies on top of a product's own spec are the constants below
(documented in docs/assessment.md).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from assessment import adapters as ad
from assessment.models import Check, Status
from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec
from catalogs.vocabulary import PiiType
from governance.authorization import AuthorizationResult
from shuyu_core.hashing import sm3_hex

# -- thresholds (policy of the assessment, on top of each product's own spec) --------------
# The suppression threshold, k, l, ρ/ε ceilings and mask floors are the domain policy's
# privacy floors (governance.floors, read through Ctx.floors), not constants of this module.
ACCURACY_PASS = 0.95  # share of released cells meeting the accuracy target
ACCURACY_WARN = 0.80
CONSISTENCY_Z = 3.29  # two-sided 99.9%: totals vs sums of sub-totals
VERIFICATION_SAMPLE = 400  # labelled validation queries per verification check
VERIFICATION_PASS = 0.99
COMPLETENESS_PASS = 0.95  # input completeness score from the quality module
COMPLETENESS_WARN = 0.80
SUPPRESSED_RECORDS_WARN = 0.20  # record-level: share of records suppressed for k
CODES_PASS = 0.99  # share of coded values following their standard
CODES_WARN = 0.95
ICD10_SHAPE = r"^[A-Z][0-9]{2}(\.[0-9A-Za-z]{1,4})?$"  # incl. 国家临床版 codes such as I10.x00

# Identifier types whose raw values must never appear in an output.
IDENTIFIERS = {
    PiiType.CN_RESIDENT_ID,
    PiiType.CN_MOBILE,
    PiiType.CN_PHONE,
    PiiType.EMAIL,
    PiiType.CN_BANK_CARD,
    PiiType.CN_USCC,
    PiiType.CN_PASSPORT,
    PiiType.CN_LICENSE_PLATE,
    PiiType.PERSON_NAME,
    PiiType.ADDRESS,
}
DOMESTIC = {"domestic", "境内", "cn", "china"}
VERIFICATION_COLUMNS = {"query_id", "kind", "result", "reason"}
VERIFICATION_RESULTS = {"match", "mismatch", "not_found", "refused"}
# The only refusal reasons a verification may tell (one for every consent failure, so a refusal
# never reveals the subject's consent state).
VERIFICATION_REASONS = {"quota_exceeded", "consent_not_verified"}
_EGRESS_DOMAIN = b"shuyu/assessment-egress/v1\x00"

# Authorization failure codes -> the check that reports them.
AUTH_CHECKS: dict[str, tuple[str, ...]] = {
    "agreement_in_force": (
        "agreement_unknown",
        "agreement_not_yet_valid",
        "agreement_expired",
        "agreement_suspended",
        "agreement_terminated",
        "developer_mismatch",
        "developer_blacklisted",
    ),
    "purpose_and_scope": (
        "scenario_not_authorized",
        "purpose_not_authorized",
        "resource_out_of_scope",
        "field_out_of_scope",
        "product_kind_not_authorized",
        "verification_pair_not_authorized",
        "consent_purpose_not_authorized",
    ),
    "negative_list": ("negative_listed",),
    "cross_border": ("destination_not_allowed",),
}


@dataclass
class Ctx:
    home: ad.Home
    manifest: ad.ReleaseManifest
    catalog: Catalog
    at: dt.date
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    read_errors: dict[str, str] = field(default_factory=dict)
    # The other formats of an output (its CSV beside its Parquet), by path: published too,
    # so screened too, never assumed to repeat the format the other checks read.
    other_formats: dict[str, tuple[str, pl.DataFrame]] = field(default_factory=dict)
    # SM3 of the very bytes each check read (path -> digest): file_integrity compares them
    # with the seal, so a file swapped while the assessment ran cannot be judged in place of
    # the one that will be published.
    read_sm3: dict[str, str] = field(default_factory=dict)

    @property
    def rdir(self) -> Path:
        return ad.release_dir(self.home, self.manifest.release_id)

    @cached_property
    def spec(self) -> ProductSpec:
        return ad.parse_spec(self.manifest.spec)

    @cached_property
    def current_spec(self) -> ProductSpec | None:
        try:
            return ad.current_spec(self.manifest.product_id)
        except Exception:
            return None

    @property
    def data_inputs(self) -> list[Any]:
        """Inputs that are catalogued resources (a verification batch is not)."""
        return [i for i in self.manifest.inputs if i.resource in self.catalog.resources]

    @cached_property
    def floors(self) -> Any:
        """The domain policy's privacy floors (governance.floors.PrivacyFloors)."""
        return ad.floors(self.home)

    def lineage(self, output: str) -> dict[str, ad.rel.OutputColumn]:
        """Column name -> recorded column (sources, operator) of a tabular output."""
        for out in self.tabular:
            if out.name == output:
                return {c.name: c for c in out.columns}
        return {}

    @cached_property
    def reversible(self) -> list[tuple[str, str, str]]:
        """(output, column, why) of every column reversible to raw values (SM4).

        Judged by the operator each column's lineage records, not by the shape of its values:
        an HMAC-SM3 pseudonym (64 hex characters) is not ciphertext. Only a column whose
        lineage does not explain its values (not a pseudonym) is still flagged by shape.
        """
        found = {
            (r.output, r.column): f"declared {r.operator}" for r in self.manifest.reversible_columns
        }
        for out in self.tabular:
            for col in out.columns:
                if col.operator == "encrypt_sm4":
                    found.setdefault((out.name, col.name), "lineage: encrypt_sm4")
        for name, frame in self.frames.items():
            lineage = self.lineage(name)
            for col_name in _sm4_like_columns(frame):
                op = lineage[col_name].operator if col_name in lineage else None
                if op != "pseudonymize":
                    found.setdefault(
                        (name, col_name),
                        f"values look like SM4 ciphertext (base64 IV+CT) and lineage says {op}",
                    )
        return [(o, c, why) for (o, c), why in sorted(found.items())]

    @cached_property
    def unknown_lineage(self) -> list[tuple[str, str]]:
        """(output, column) of record-level columns without a recorded operator."""
        return [
            (out.name, col.name)
            for out in self.tabular
            if out.values == "desensitized_record"
            for col in out.columns
            if col.operator is None
        ]

    @cached_property
    def auth(self) -> AuthorizationResult:
        m = self.manifest
        inputs = {i.resource: list(i.fields) for i in self.manifest.inputs}
        inputs = {k: v for k, v in inputs.items() if k != "VERIFICATION_QUERIES"}
        return ad.authorization(
            self.home,
            agreement_id=m.agreement_id,
            scenario=m.scenario,
            developer=m.developer,
            inputs=inputs,
            purpose=m.purpose_category,
            destination=m.destination,
            reversible_outputs=bool(self.reversible),
            at=self.at,
            catalog=self.catalog,
            spec=self.spec,
        )

    @cached_property
    def tabular(self) -> list[ad.OutputFile]:
        """One OutputFile per tabular output name (Parquet preferred)."""
        rank = {"parquet": 0, "csv": 1, "json": 2}
        best: dict[str, ad.OutputFile] = {}
        for out in self.manifest.outputs:
            if out.format not in rank:
                continue
            cur = best.get(out.name)
            if cur is None or rank[out.format] < rank[cur.format]:
                best[out.name] = out
        return list(best.values())

    def load_frames(self) -> None:
        chosen = {out.path for out in self.tabular}
        for out in self.manifest.outputs:
            try:
                data = (self.rdir / out.path).read_bytes()
                self.read_sm3[out.path] = sm3_hex(data)
                if out.format not in ("parquet", "csv", "json"):
                    # an HTML page is published as well: its text lines are screened too
                    lines = data.decode("utf-8", errors="replace").splitlines()
                    self.other_formats[out.path] = (out.name, pl.DataFrame({"text": lines}))
                elif out.path in chosen:
                    self.frames[out.name] = read_output_bytes(data, out.format)
                else:
                    frame = read_output_bytes(data, out.format, as_text=True)
                    self.other_formats[out.path] = (out.name, frame)
            except Exception as exc:
                self.read_errors[out.name] = f"{type(exc).__name__}: {str(exc)[:120]}"

    def screened_frames(self) -> list[tuple[str, str, pl.DataFrame]]:
        """(label, output name, frame) of every tabular file read, every format included."""
        found = [(name, name, frame) for name, frame in self.frames.items()]
        found += [(path, name, frame) for path, (name, frame) in self.other_formats.items()]
        return found

    def outputs_of(self, values: str) -> dict[str, pl.DataFrame]:
        names = {o.name for o in self.tabular if o.values == values}
        return {n: f for n, f in self.frames.items() if n in names}


def read_output_bytes(data: bytes, fmt: str, as_text: bool = False) -> pl.DataFrame:
    """A tabular output parsed from bytes already read (and hashed) once."""
    import io

    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(data))
    if fmt == "csv":
        if as_text:  # every cell as written: no leading zero or long number lost to inference
            return pl.read_csv(io.BytesIO(data), infer_schema=False)
        return pl.read_csv(io.BytesIO(data), infer_schema_length=10_000)
    if fmt == "json":
        doc = json.loads(data.decode("utf-8"))
        return pl.DataFrame(doc, infer_schema_length=None) if doc else pl.DataFrame()
    raise ValueError(fmt)


def read_output(path: Path, fmt: str) -> pl.DataFrame:
    if fmt == "parquet":
        return pl.read_parquet(path)
    if fmt == "csv":
        return pl.read_csv(path, infer_schema_length=10_000)
    if fmt == "json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        return pl.DataFrame(doc, infer_schema_length=None) if doc else pl.DataFrame()
    raise ValueError(fmt)


def _sm4_like_columns(frame: pl.DataFrame) -> list[str]:
    """String columns whose values are base64 of a 16-byte IV plus whole SM4 blocks."""
    out: list[str] = []
    for name, dtype in frame.schema.items():
        if dtype != pl.String:
            continue
        s = frame[name].drop_nulls()
        if s.len() == 0:
            continue
        n = s.str.len_bytes()
        pad = s.str.count_matches("=$") + s.str.count_matches("==$")
        decoded = (n // 4) * 3 - pad
        shaped = (
            s.str.contains(r"^[A-Za-z0-9+/]+={0,2}$")
            & (n % 4 == 0)
            & (decoded >= 32)
            & (decoded % 16 == 0)
        )
        if shaped.mean() >= 0.9:  # type: ignore[operator]
            out.append(name)
    return out


@dataclass(frozen=True)
class _CheckDef:
    """What every outcome of one check shares; calling it gives the ``Check`` of an outcome."""

    dimension: str
    name: str
    title: str
    rule: str
    rectifiable: bool

    def __call__(
        self, status: Status, evidence: str, *, rectifiable: bool | None = None, **data: Any
    ) -> Check:
        return Check(
            dimension=self.dimension,
            name=self.name,
            title=self.title,
            status=status,
            evidence=evidence,
            rule=self.rule,
            rectifiable=self.rectifiable if rectifiable is None else rectifiable,
            data=data,
        )

    def verdict(self, problems: list[str], passed: str) -> Check:
        """Fail with the problems when there are any, else pass with ``passed``."""
        if problems:
            return self("fail", "; ".join(problems))
        return self("pass", passed)

    def fields_present(self, missing: list[str], passed: str) -> Check:
        """Fail naming the ``missing`` fields when there are any, else pass with ``passed``."""
        if missing:
            return self("fail", f"missing {', '.join(missing)}")
        return self("pass", passed)


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _grade(value: float, pass_at: float, warn_at: float) -> Status:
    """Pass from ``pass_at`` up, warn from ``warn_at`` up, fail below (and on NaN)."""
    return "pass" if value >= pass_at else "warn" if value >= warn_at else "fail"


# =========================================================================== legality 合法性


def _auth_check(ctx: Ctx, name: str, title: str, rule: str) -> Check:
    check = _CheckDef("legality", name, title, rule, False)
    codes = AUTH_CHECKS[name]
    mapped = {c for group in AUTH_CHECKS.values() for c in group} | {"reversible_not_allowed"}
    failures = [
        f
        for f in ctx.auth.failures
        # reversible outputs are judged by reversible_columns; a code this module does not
        # know yet must still fail somewhere, so it lands here
        if f.code in codes or (name == "agreement_in_force" and f.code not in mapped)
    ]
    built = ctx.manifest.authorization or {}
    build_note = (
        "build-time authorization ok"
        if built.get("ok")
        else "no build-time authorization evidence in the release"
        if not built
        else "build-time authorization recorded failures"
    )
    if failures:
        ev = "; ".join(f"{f.code}: {f.message}" for f in failures)
        return check("fail", f"{ev} (checked for {ctx.at})")
    return check(
        "pass",
        f"none of the refusal conditions {', '.join(codes)} holds on {ctx.at} under agreement "
        f"{ctx.manifest.agreement_id}, scenario {ctx.manifest.scenario}; {build_note}",
    )


def agreement_in_force(ctx: Ctx) -> Check:
    return _auth_check(
        ctx,
        "agreement_in_force",
        "授权协议有效 agreement in force",
        "the development agreement and its parent operation agreement are in force on the "
        "assessment date, name this developer, and the developer is not blacklisted (黑名单)",
    )


def purpose_and_scope(ctx: Ctx) -> Check:
    return _auth_check(
        ctx,
        "purpose_and_scope",
        "用途与范围 purpose and scope",
        "the scenario is authorized (一场景一授权) and authorizes this product kind (and, for a "
        "verification, every field pair it checks), the purpose category is authorized, and "
        "every field read is within the scenario's scope (最小必要)",
    )


def negative_list(ctx: Ctx) -> Check:
    return _auth_check(
        ctx,
        "negative_list",
        "负面清单 negative list",
        "no input resource is on the negative list (负面清单)",
    )


def cross_border(ctx: Ctx) -> Check:
    dest = ctx.manifest.destination
    base = _auth_check(
        ctx,
        "cross_border",
        "数据出境 cross-border transfer",
        "the output destination is domestic; any other destination fails unless the "
        "agreement explicitly allows it (数据出境)",
    )
    if base.status == "fail":
        return base
    note = "domestic" if dest.lower() in DOMESTIC else f"{dest!r}, allowed by the agreement"
    return base.model_copy(update={"evidence": f"destination {note}; " + base.evidence})


def sources_annotated(ctx: Ctx) -> Check:
    rule = (
        "every declared input is annotated in the release metadata with its resource, source "
        "unit, snapshot id and SM3, and the snapshot still exists with that SM3"
    )
    problems: list[str] = []
    notes: list[str] = []
    annotated = {i.resource: i for i in ctx.manifest.inputs}
    for inp in ctx.spec.inputs:
        ref = annotated.get(inp.resource)
        res = ad.resource(ctx.catalog, inp.resource)
        if ref is None:
            problems.append(f"{inp.resource} read but not annotated")
            continue
        if res is None:
            problems.append(f"{inp.resource} is not in the catalog")
            continue
        snap = ad.snapshot(ctx.home, inp.resource, ref.snapshot_id)
        if snap is None:
            problems.append(f"{inp.resource} snapshot {ref.snapshot_id} no longer exists")
        elif snap.sm3 != ref.snapshot_sm3:
            problems.append(f"{inp.resource} snapshot {ref.snapshot_id} SM3 differs")
        else:
            notes.append(
                f"{inp.resource} ({res.name}, {res.source_unit.name}) snapshot "
                f"{ref.snapshot_id} SM3 {ref.snapshot_sm3[:12]}…"
            )
    check = _CheckDef("legality", "sources_annotated", "来源标注 sources annotated", rule, True)
    return check.verdict(problems, f"{len(notes)} input(s): " + "; ".join(notes))


def minimal_necessary(ctx: Ctx) -> Check:
    rule = "the build read exactly the fields its spec declares (最小必要), and each exists"
    declared = ctx.spec.declared_fields
    problems: list[str] = []
    total = 0
    for ref in ctx.data_inputs:
        total += len(ref.fields)
        extra = [f for f in ref.fields if f not in declared.get(ref.resource, [])]
        if extra:
            problems.append(f"{ref.resource} read undeclared field(s) {', '.join(extra)}")
        res = ad.resource(ctx.catalog, ref.resource)
        unknown = [f for f in ref.fields if res is not None and f not in res.field_names]
        if unknown:
            problems.append(f"{ref.resource} has no field(s) {', '.join(unknown)}")
    title = "最小必要 minimal necessary"
    check = _CheckDef("legality", "minimal_necessary", title, rule, False)
    return check.verdict(
        problems, f"{total} field(s) read across {len(ctx.data_inputs)} input(s), all declared"
    )


def purpose_pricing(ctx: Ctx) -> Check:
    m = ctx.manifest
    rule = (
        "the purpose category (公益无偿 public_good / 产业有偿 industry) and a pricing note "
        "are stated"
    )
    title = "用途类别与定价说明 purpose category and pricing note"
    check = _CheckDef("legality", "purpose_pricing", title, rule, True)
    if m.purpose_category not in ("public_good", "industry") or not m.pricing_note.strip():
        return check("fail", f"purpose {m.purpose_category!r}, pricing note {m.pricing_note!r}")
    return check("pass", f"purpose {m.purpose_category}; pricing: {m.pricing_note}")


# ==================================================================== desensitization 脱敏


# Scan results by the SM3 of the file as read now: an output file is immutable and the scan
# is deterministic, so re-assessing the same bytes (a re-run, the demo) need not rescan.
_SCAN_CACHE: dict[str, list[tuple[str, str | None, float, str]]] = {}


def text_views(name: str, s: pl.Series) -> list[tuple[str, pl.Series]]:
    """Every way ``s`` can carry text, as String series to screen: (label, values).

    A screen that looks at String columns only is walked around by a change of type:
    remarks stored as Categorical/Enum, a mobile as a float or a decimal, ID numbers inside
    a list or a struct, UTF-8 bytes in a Binary column. Lists are exploded and structs
    unnested (recursively), floats holding whole numbers are written as integers, and every
    other type is cast to text; only booleans, temporal and null columns carry none."""
    dtype = s.dtype
    if dtype == pl.String:
        return [(name, s)]
    if dtype == pl.Boolean or dtype == pl.Null or dtype.is_temporal():
        return []
    if isinstance(dtype, pl.Struct):
        return [
            view
            for part in s.struct.unnest().iter_columns()
            for view in text_views(f"{name}.{part.name}", part)
        ]
    if isinstance(dtype, pl.List | pl.Array):
        return text_views(
            f"{name}[]", s.explode() if isinstance(dtype, pl.List) else s.arr.explode()
        )
    if dtype.is_float():
        col = pl.col(s.name)
        whole = col.is_finite() & (col == col.floor()) & (col.abs() < 1e18)
        text = s.to_frame().select(
            pl.when(whole)
            .then(col.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(col.cast(pl.String))
        )
        return [(name, text.to_series().alias(s.name))]
    try:
        return [(name, s.cast(pl.String, strict=False))]
    except pl.exceptions.PolarsError:
        # no text cast (Object; never read from a file, so small): screen each value's str
        return [(name, pl.Series(s.name, [None if v is None else str(v) for v in s], pl.String))]


def _scan_cached(path: Path, frame: pl.DataFrame) -> list[tuple[str, str | None, float, str]]:
    digest = ad.file_sm3(path)
    found = _SCAN_CACHE.get(digest)
    if found is None:
        found = ad.pii_scan(frame)
        if len(_SCAN_CACHE) > 256:
            _SCAN_CACHE.clear()
        _SCAN_CACHE[digest] = found
    return found


def pii_scan(ctx: Ctx) -> Check:
    rule = (
        "the PII scanner finds no personal information in any output column (pseudonyms, "
        "generalized values and DP aggregates carry none)"
    )
    title = "个人信息扫描 PII scan of every output column"
    check = _CheckDef("desensitization", "pii_scan", title, rule, False)
    hits: list[str] = []
    scanned = 0
    paths = {o.name: ctx.rdir / o.path for o in ctx.tabular}
    for name, frame in ctx.frames.items():
        for column, entity, score, _evidence in _scan_cached(paths[name], frame):
            scanned += 1
            if entity is not None:
                hits.append(f"{name}.{column}: {entity} (score {score:.2f})")
    if hits:
        return check(
            "fail",
            f"{len(hits)} of {scanned} output columns hold personal information: "
            + "; ".join(hits),
        )
    return check(
        "pass",
        f"{scanned} column(s) in {len(ctx.frames)} output(s) scanned; none holds personal "
        "information",
    )


def _keyed(key: bytes, values: pl.Series) -> pl.Series:
    """HMAC-SM3 of each distinct value under a per-assessment key (batched per value)."""
    uniq = values.drop_nulls().unique()
    base = hmac.new(key, _EGRESS_DOMAIN, "sm3")
    out: list[str] = []
    for v in uniq.to_list():
        h = base.copy()
        h.update(str(v).encode("utf-8"))
        out.append(h.hexdigest())
    return pl.Series("token", out, dtype=pl.String)


class _Seeds:
    """One-time seeds for polars' vectorized 64-bit hash (stage 1 of the comparison)."""

    def __init__(self) -> None:
        self.values = [secrets.randbits(63) for _ in range(4)]

    def hash(self, s: pl.Series) -> pl.Series:
        a, b, c, d = self.values
        return s.hash(seed=a, seed_1=b, seed_2=c, seed_3=d).alias("h")


def raw_identifiers(ctx: Ctx) -> Check:
    """Compare keyed hashes of every output value with those of the inputs' identifiers.

    Stage 1 compares seeded 64-bit hashes (vectorized, over every value); stage 2 confirms
    the few candidates with HMAC-SM3 under a one-time key, so a 64-bit collision cannot
    raise a false alarm. Both keys die with the assessment: nothing is linkable afterwards,
    and the evidence holds counts and column names only.
    """
    rule = (
        "no output value equals a raw identifier value (ID number, USCC, name, phone, address "
        "…) of any input, compared as keyed hashes under one-time keys (seeded 64-bit, then "
        "HMAC-SM3)"
    )
    title = "原始标识值外泄 raw identifier values in outputs"
    check = _CheckDef("desensitization", "raw_identifiers", title, rule, False)
    key = secrets.token_bytes(32)
    seeds = _Seeds()
    inputs: list[pl.Series] = []
    fields: list[str] = []
    for ref in ctx.data_inputs:
        res = ad.resource(ctx.catalog, ref.resource)
        if res is None:
            continue
        idents = [f.name for f in res.fields if f.name in ref.fields and f.pii_type in IDENTIFIERS]
        if not idents:
            continue
        lf = ad.scan_snapshot(ctx.home, ref.resource, ref.snapshot_id, idents)
        frame = lf.select(
            pl.concat_list([pl.col(c).cast(pl.String) for c in idents]).alias("v")
        ).explode("v")
        values = (
            frame.select(pl.col("v").str.strip_chars())
            .filter(pl.col("v").str.len_chars() >= 2)
            .unique()
            .collect(engine="streaming")["v"]
        )
        inputs.append(values)
        fields += [f"{ref.resource}.{c}" for c in idents]
    if not inputs:
        return check("pass", "the release reads no identifier field")
    known_values = pl.concat(inputs).unique()
    known = pl.DataFrame({"v": known_values, "h": seeds.hash(known_values)})
    hits: list[str] = []
    compared = 0
    for name, _output, out_frame in ctx.screened_frames():
        for col, text in (v for c in out_frame.columns for v in text_views(c, out_frame[c])):
            vals = text.str.strip_chars().drop_nulls().unique()
            compared += vals.len()
            cand = pl.DataFrame({"o": vals, "h": seeds.hash(vals)}).join(known, on="h", how="inner")
            if cand.height == 0:
                continue
            same = (
                _keyed(key, cand["o"])
                .to_frame()
                .join(_keyed(key, cand["v"]).to_frame(), on="token", how="semi")
            )
            if same.height:
                hits.append(f"{name}.{col}: {same.height} distinct value(s)")
    ev_inputs = f"{known.height} distinct identifier values of {', '.join(fields)}"
    if hits:
        return check(
            "fail", "raw input identifiers found in " + "; ".join(hits) + f" (against {ev_inputs})"
        )
    return check("pass", f"0 of {compared} distinct output values match any of {ev_inputs}")


def public_keys(ctx: Ctx) -> Check:
    rule = (
        "aggregate outputs are grouped only by declared dimensions whose keys come from public "
        "key sets (code lists, bands, quarters; a literal values: list holds no identifier and "
        "at most the policy's max_literal_keys) — never by identifiers or private keys"
    )
    title = "公开分组键 public grouping keys (no group-by on identifiers)"
    check = _CheckDef("desensitization", "public_keys", title, rule, False)
    aggs = ctx.outputs_of("dp_aggregate")
    if not aggs:
        return check("pass", "no aggregate output")
    dims = {d.name for d in ctx.spec.dimensions}
    labels = {f"{d}_name" for d in dims} | {"suppression_reason"}
    problems: list[str] = []
    # A literal values: list is written by the spec's author, not read from a catalog code
    # list, bands or a calendar: it must look public (few keys, none an identifier).
    from products.floors import public_key_problems

    problems += public_key_problems(ctx.spec, ctx.floors)
    keys_checked = 0
    for name, frame in aggs.items():
        for col, dtype in frame.schema.items():
            if col in dims:
                public = set(ad.dimension_keys(ctx.spec, col))
                values = frame[col].drop_nulls().cast(pl.String).unique()
                keys_checked += values.len()
                private = int((~values.is_in(list(public))).sum())
                if private:
                    problems.append(f"{name}.{col}: {private} key(s) outside its public key set")
            elif col not in labels and (dtype == pl.String or dtype.is_integer()):
                if dtype.is_integer() and not _looks_like_key(frame[col]):
                    continue
                distinct = frame[col].n_unique()
                problems.append(
                    f"{name}.{col}: undeclared grouping column with {distinct} distinct keys"
                )
    return check.verdict(
        problems,
        f"{len(aggs)} aggregate output(s); {keys_checked} key values, all from public key sets "
        f"of {', '.join(sorted(dims))}",
    )


def _looks_like_key(s: pl.Series) -> bool:
    """An integer column of (almost) all distinct large values is an identifier, not a count."""
    v = s.drop_nulls()
    if v.len() < 2:
        return False
    return bool(v.n_unique() == v.len() and v.min() >= 10**8)  # type: ignore[operator]


def _table_measures(ctx: Ctx) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Output name -> (dimension columns, count measures, all measures) from the spec."""
    out: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for t in ctx.spec.tables:
        counts = [m.name for m in t.measures if m.aggregate == "count"]
        measures = [m.name for m in t.measures] + [d.name for d in t.derived]
        out[t.name] = (list(t.by), counts, measures)
    return out


def ledger_tied(ctx: Ctx) -> Check:
    rule = (
        "every released number of an aggregate output has an accuracy statement from its "
        "mechanism (noise distribution and scale), and the release's privacy loss is charged "
        "in the budget ledger (one stored entry per input resource, ρ as in the release)"
    )
    title = "预算台账关联 every number tied to a ledger entry"
    check = _CheckDef("desensitization", "ledger_tied", title, rule, False)
    aggs = ctx.outputs_of("dp_aggregate")
    if not aggs:
        return check("pass", "no aggregate output")
    m = ctx.manifest
    problems: list[str] = []
    entries = ad.ledger_entries(ctx.home, m.release_id)
    if m.budget is None:
        problems.append("aggregate outputs but no budget charge in the release")
    else:
        charged = {e["resource"] for e in entries}
        want = {e.resource for e in m.budget.entries}
        if charged != want:
            problems.append(
                f"ledger entries for {sorted(charged)} but the release names {sorted(want)}"
            )
        bad_rho = [e["resource"] for e in entries if abs(e["rho"] - m.budget.rho) > 1e-9]
        if bad_rho:
            problems.append(f"ledger ρ differs from the release's ρ={m.budget.rho} for {bad_rho}")
        unstored = [e["resource"] for e in entries if e["state"] != "stored"]
        if unstored:
            problems.append(f"ledger entries not marked stored: {unstored}")
    dims = {d.name for d in ctx.spec.dimensions}
    acc = [c for c in m.accuracy if c.scale is not None or c.method in ("simulation", "interval")]
    rows = tied = 0
    for name, frame in aggs.items():
        keycols = [c for c in frame.columns if c in dims]
        cells = [c.key | {"__out": c.output} for c in acc if c.output == name]
        measure_cols = [
            c
            for c, dt_ in frame.schema.items()
            if dt_.is_numeric() and c not in dims and not c.endswith(("_ci95", "_lo", "_hi"))
        ]
        released = frame.filter(pl.any_horizontal(pl.col(measure_cols).is_not_null()))
        rows += released.height
        if not cells or not keycols:
            continue
        acc_keys = pl.DataFrame(cells, infer_schema_length=None).select(
            [pl.col(k).cast(pl.String) for k in keycols]
        )
        tied += (
            released.select(pl.col(keycols).cast(pl.String))
            .join(acc_keys.unique(), on=keycols, how="semi", nulls_equal=True)
            .height
        )
    if rows > tied:
        problems.append(f"{rows - tied} of {rows} released rows have no accuracy statement")
    implied = _implied_rho(ctx)
    if implied is not None and m.budget is not None and implied > m.budget.rho * (1 + 1e-6):
        problems.append(
            f"the noise scales imply ρ={implied:.4g}, more than the ρ={m.budget.rho:g} charged"
        )
    ev_scale = f"; noise scales imply ρ={implied:.4g}" if implied is not None else ""
    ev_ledger = (
        ", ".join(f"{e['entry_id']} ρ={e['rho']:g} ({e['state']})" for e in entries) or "none"
    )
    if problems:
        return check("fail", "; ".join(problems) + f"; ledger: {ev_ledger}")
    return check(
        "pass",
        f"{tied} of {rows} released rows tied to {len(acc)} accuracy statements; ledger: "
        f"{ev_ledger}{ev_scale}",
    )


def _implied_rho(ctx: Ctx) -> float | None:
    """zCDP ρ the recorded Gaussian noise scales pay for: Σ Δ²/(2σ²) over the measures.

    Δ is the L2 sensitivity of one measure's table: √contributions for a count, and the
    larger bound times √contributions for a bounded sum — with one row per unit and cell, a
    unit changes at most min(contributions, cells of the table) cells, each by one row.
    None when no scale is recorded.
    """
    from products import specs

    pu = ctx.spec.privacy_unit
    k = pu.contributions if pu is not None else 1
    sens: dict[tuple[str, str], float] = {}
    for t in ctx.spec.tables:
        try:
            c = min(k, specs.key_frame(ctx.spec, list(t.by)).height)
        except KeyError:  # a table over undeclared dimensions: other checks report it
            c = k
        for meas in t.measures:
            if meas.aggregate == "count":
                sens[(t.name, meas.name)] = c**0.5
            elif meas.bounds is not None:
                sens[(t.name, meas.name)] = max(abs(meas.bounds[0]), abs(meas.bounds[1])) * c**0.5
    scales: dict[tuple[str, str], float] = {}
    for cell in ctx.manifest.accuracy:
        key = (cell.output, cell.measure)
        if key in sens and cell.scale and "gaussian" in (cell.distribution or "").lower():
            scales[key] = cell.scale
    if not scales:
        return None
    return sum(sens[k] ** 2 / (2 * s**2) for k, s in scales.items())


def small_cells(ctx: Ctx) -> Check:
    floor = float(ctx.floors.min_suppression_threshold)
    threshold = max(ctx.manifest.suppression_threshold or 0.0, floor)
    rule = (
        f"released count cells are at least the suppression threshold (the product's, never "
        f"below the domain floor {floor:g}); suppressed cells are withheld (null) and listed"
    )
    title = "小单元格抑制 small cells suppressed (no cells of one person)"
    check = _CheckDef("desensitization", "small_cells", title, rule, False)
    aggs = ctx.outputs_of("dp_aggregate")
    if not aggs:
        return check("pass", "no aggregate output")
    problems: list[str] = []
    declared = ctx.manifest.suppression_threshold
    if declared is None or declared < floor:
        problems.append(f"declared suppression threshold {declared} is below the floor {floor:g}")
    tables = _table_measures(ctx)
    released = small = 0
    for name, frame in aggs.items():
        _by, counts, _all = tables.get(name, ([], [], []))
        if not counts and name not in tables:
            # an output the spec does not declare: any integer column counts
            counts = [c for c, d in frame.schema.items() if d.is_integer()]
        for col in counts:
            if col not in frame.columns:
                continue
            v = frame[col].drop_nulls()
            released += v.len()
            below = int((v < threshold).sum())
            if below:
                small += below
                problems.append(f"{name}.{col}: {below} released cell(s) below {threshold:g}")
    withheld_bad = 0
    for cell in ctx.manifest.suppressed:
        found = aggs.get(cell.output)
        if found is None or cell.measure not in found.columns:
            continue
        cond = pl.lit(True)
        for k, key_value in cell.key.items():
            if k in found.columns:
                cond = cond & (pl.col(k).cast(pl.String) == key_value)
        hit = found.filter(cond)[cell.measure]
        withheld_bad += int(hit.is_not_null().sum())
    if withheld_bad:
        problems.append(f"{withheld_bad} suppressed cell(s) still carry a value")
    n_supp = len(ctx.manifest.suppressed)
    return check.verdict(
        problems,
        f"{released} released count cell(s), none below {threshold:g} (product threshold "
        f"{declared:g}, floor {floor:g}); {n_supp} cell(s) suppressed and withheld",
    )


def _source_fields(ctx: Ctx, col: Any) -> list[Any]:
    out = []
    for src in col.sources:
        code, _, name = src.partition(".")
        res = ad.resource(ctx.catalog, code)
        if res is not None and name in res.field_names:
            out.append(res.field(name))
    return out


_REMOVING = ("pseudonymize", "suppress", "encrypt_sm4")


def lineage_quasi_identifiers(ctx: Ctx, name: str, frame: pl.DataFrame) -> list[str]:
    """QIs of a record-level output by lineage: the spec's declared ones, every column fed by
    a catalog ``quasi_identifier`` field (whatever it is called now), every identifier column
    kept, masked or generalized, and every column whose lineage is unknown."""
    d = ctx.spec.desensitize
    qis = [q for q in (d.quasi_identifiers if d else []) if q in frame.columns]
    lineage = ctx.lineage(name)
    for col in frame.columns:
        if col in qis:
            continue
        info = lineage.get(col)
        if info is None or info.operator is None:
            qis.append(col)
            continue
        fields = _source_fields(ctx, info)
        if any(f.quasi_identifier for f in fields) or (
            any(f.pii_type is not None for f in fields) and info.operator not in _REMOVING
        ):
            qis.append(col)
    return qis


def lineage_sensitive(ctx: Ctx, name: str, frame: pl.DataFrame, qis: list[str]) -> list[str]:
    """Sensitive attributes for l-diversity: the spec's and every column fed by a catalog
    sensitive attribute (sensitive_personal, not a QI, not an identifier)."""
    from catalogs.vocabulary import Sensitivity

    d = ctx.spec.desensitize
    out = [d.sensitive_attribute] if d and d.sensitive_attribute in frame.columns else []
    for col, info in ctx.lineage(name).items():
        if col in qis or col in out or col not in frame.columns:
            continue
        if any(
            f.sensitivity == Sensitivity.SENSITIVE_PERSONAL
            and not f.quasi_identifier
            and f.pii_type is None
            for f in _source_fields(ctx, info)
        ):
            out.append(col)
    return [c for c in out if c is not None]


def k_anonymity(ctx: Ctx) -> Check:
    fl = ctx.floors
    rule = (
        "record-level outputs are k-anonymous over their quasi-identifiers by lineage (the "
        "spec's, every catalog quasi-identifier under any name, every kept/masked/generalized "
        f"identifier) with k at least the product's k and the domain floor {fl.min_k}, and "
        f"l-diverse (distinct, at least {fl.min_l}) in every sensitive attribute, recomputed "
        "from the output itself"
    )
    title = "k-匿名 / l-多样性 k-anonymity and l-diversity of record-level outputs"
    check = _CheckDef("desensitization", "k_anonymity", title, rule, False)
    recs = ctx.outputs_of("desensitized_record")
    if not recs:
        return check("pass", "no record-level output")
    d = ctx.spec.desensitize
    target = max(d.k if d else fl.min_k, fl.min_k)
    declared = list(d.quasi_identifiers) if d else []
    problems: list[str] = []
    notes: list[str] = []
    data: dict[str, Any] = {"k_floor": fl.min_k, "l_floor": fl.min_l}
    for name, frame in recs.items():
        missing = [q for q in declared if q not in frame.columns]
        if missing:
            problems.append(f"{name}: declared quasi-identifier(s) {missing} missing")
        qis = lineage_quasi_identifiers(ctx, name, frame)
        added = [q for q in qis if q not in declared]
        if not qis:
            problems.append(f"{name}: no quasi-identifier declared or found by lineage")
            continue
        if frame.height == 0:
            notes.append(f"{name}: empty")
            continue
        k = ad.k_anonymity(frame, qis)
        data[f"{name}.k"] = k
        extra = f" (added by lineage: {', '.join(added)})" if added else ""
        notes.append(
            f"{name}: k={k} (target {target}, floor {fl.min_k}) over {', '.join(qis)}{extra}; "
            f"{frame.height} records"
        )
        if k < target:
            problems.append(f"{name}: k={k} below {target} over {', '.join(qis)}{extra}")
        from privacy import risk

        for attr in lineage_sensitive(ctx, name, frame, qis):
            ell = risk.l_diversity(frame, qis, attr)
            data[f"{name}.l.{attr}"] = ell
            notes.append(f"{name}: l={ell} for {attr} (floor {fl.min_l})")
            if ell < fl.min_l:
                problems.append(f"{name}: l={ell} for {attr} below the floor {fl.min_l}")
    ka = ctx.manifest.k_anonymity
    if ka is not None and ka.achieved < target:
        problems.append(f"the release records k={ka.achieved} below {target}")
    if problems:
        return check("fail", "; ".join(problems), **data)
    return check("pass", "; ".join(notes), **data)


def mask_strength(ctx: Ctx) -> Check:
    fl = ctx.floors
    rule = (
        "every identifier column of a record-level output is treated at least as the domain "
        "policy's mask floor for its type says (pseudonymized/removed, or masked within the "
        "kept characters allowed), no mask leaves the identifier recoverable from its kept "
        f"characters, check character and structure (at least {fl.min_mask_candidates} "
        "candidates), and every column's lineage (sources and operator) is recorded"
    )
    title = "掩码强度 mask strength against the domain floors (by lineage)"
    check = _CheckDef("desensitization", "mask_strength", title, rule, False)
    recs = ctx.outputs_of("desensitized_record")
    if not recs:
        return check("pass", "no record-level output")
    from privacy.mask_strength import mask_strength as strength
    from products.floors import identifier_treatment

    problems: list[str] = []
    notes: list[str] = []
    for name in recs:
        for col, info in ctx.lineage(name).items():
            if info.operator is None:
                problems.append(f"{name}.{col}: lineage unknown (treated as unsafe)")
                continue
            for f in _source_fields(ctx, info):
                if f.pii_type is None:
                    continue
                floor = fl.mask_floor(f.pii_type)
                where = f"{name}.{col} ← {f.name}"
                found = identifier_treatment(f.pii_type, info.operator, info.params, fl, where)
                problems += found
                shown = (
                    strength(f.pii_type, info.params).describe()
                    if info.operator == "mask"
                    else info.operator
                )
                kept = (
                    f", ≤{floor.max_head} leading + ≤{floor.max_tail} trailing"
                    if floor.max_head or floor.max_tail
                    else ""
                )
                notes.append(f"{where}: {shown} (floor: {floor.records}{kept})")
    if problems:
        return check("fail", "; ".join(problems))
    return check(
        "pass",
        "; ".join(notes) or "no identifier column in any record-level output (lineage recorded)",
    )


def dp_ceilings(ctx: Ctx) -> Check:
    fl = ctx.floors
    rule = (
        f"a noisy release spends at most ρ={fl.max_rho_per_release:g} and "
        f"ε={fl.max_epsilon_per_release:g} (at its δ, δ ≤ {fl.max_delta:g}), and each privacy "
        f"unit at most ρ={fl.max_rho_per_unit_year:g} per calendar year over every release of "
        "every resource sharing the unit (domain ceilings, whatever the budget file allows)"
    )
    title = "隐私损失上限 privacy-loss ceilings per release and per unit-year"
    check = _CheckDef("desensitization", "dp_ceilings", title, rule, False)
    b = ctx.manifest.budget
    if b is None:
        return check("pass", "no noisy output (no privacy loss)")
    from catalogs.product_models import epsilon_from_rho

    eps = epsilon_from_rho(b.rho, b.delta)
    problems: list[str] = []
    if b.rho > fl.max_rho_per_release * (1 + 1e-9):
        problems.append(f"ρ={b.rho:.4g} above the ceiling {fl.max_rho_per_release:g}")
    if eps > fl.max_epsilon_per_release * (1 + 1e-9):
        problems.append(f"ε={eps:.4g} above the ceiling {fl.max_epsilon_per_release:g}")
    if b.delta > fl.max_delta:
        problems.append(f"δ={b.delta:g} above the ceiling {fl.max_delta:g}")
    entries = ad.ledger_entries(ctx.home, ctx.manifest.release_id)
    # The year of the period paid (the data's reference period), as the ledger charged it.
    years = {str(e["period"])[:4] for e in entries if e.get("period") not in (None, "all")} or {
        str(ctx.manifest.created_at.year)
    }
    units = {e.unit for e in b.entries}
    per_unit: list[str] = []
    for year in sorted(years):
        for unit, spent in sorted(ad.unit_year_spent(ctx.home, units, int(year)).items()):
            per_unit.append(
                f"{unit} {year}: ρ {spent:.4g} (ceiling {fl.max_rho_per_unit_year:g}; "
                f"ε {epsilon_from_rho(spent, b.delta):.3g} at δ={b.delta:g})"
            )
            if spent > fl.max_rho_per_unit_year * (1 + 1e-9):
                problems.append(
                    f"ρ spent on {unit} in {year} is {spent:.4g}, above the ceiling "
                    f"{fl.max_rho_per_unit_year:g}"
                )
    evidence = (
        f"ρ={b.rho:.4g} (ceiling {fl.max_rho_per_release:g}); ε={eps:.4g} at δ={b.delta:g} "
        f"(ceiling {fl.max_epsilon_per_release:g}, δ ceiling {fl.max_delta:g}); "
        + "; ".join(per_unit)
    )
    data = {"rho": b.rho, "epsilon": eps, "rho_floor": fl.max_rho_per_release}
    if problems:
        return check("fail", "; ".join(problems) + f" — {evidence}", **data)
    return check("pass", evidence, **data)


def free_text_screening(ctx: Ctx) -> Check:
    """Every text cell, not a sample: identifier tokens validated as a whole, and the names of
    the persons in the inputs compared as keyed hashes of 2–4 character Han substrings."""
    rule = (
        "no text (or integer) cell of any output holds a valid identifier (resident ID with "
        "check digit, mobile, landline, bank card with Luhn, USCC, e-mail, plate, passport), "
        "and no text cell of a record-level output holds the name of a person in the inputs (keyed "
        "comparison under one-time keys); every cell is screened, none sampled"
    )
    title = "自由文本筛查 exhaustive screening of text cells"
    check = _CheckDef("desensitization", "free_text_screening", title, rule, False)
    from privacy.pii.textscreen import han_ngrams, identifier_hits

    problems: list[str] = []
    cells = 0
    for name, output, frame in ctx.screened_frames():
        lineage = ctx.lineage(output)
        for col, text in (v for c in frame.columns for v in text_views(c, frame[c])):
            cells += text.len()
            hits = identifier_hits(text)
            # A column the floor lets a product keep (an enterprise's USCC) is not a leak of
            # its own type; any other identifier in it still is.
            info = lineage.get(col)
            kept = {
                f.pii_type.value
                for f in (_source_fields(ctx, info) if info is not None else [])
                if f.pii_type is not None and ctx.floors.mask_floor(f.pii_type).records == "keep"
            }
            if kept and info is not None and info.operator == "keep":
                hits = hits.filter(~pl.col("entity").is_in(sorted(kept)))
            if hits.height:
                kinds = ", ".join(sorted(set(hits["entity"].to_list())))
                problems.append(f"{name}.{col}: {hits['r'].n_unique()} cell(s) hold {kinds}")
    recs = ctx.outputs_of("desensitized_record")
    names_note = "no record-level output"
    if recs:
        key = secrets.token_bytes(32)
        seeds = _Seeds()
        found: list[pl.Series] = []
        for ref in ctx.data_inputs:
            res = ad.resource(ctx.catalog, ref.resource)
            if res is None:
                continue
            fields = [f.name for f in res.fields if f.pii_type == PiiType.PERSON_NAME]
            if fields:
                found.append(ad.person_names(ctx.home, ref.resource, ref.snapshot_id, fields))
        known_names = pl.concat(found).unique() if found else pl.Series("v", [], pl.String)
        known = pl.DataFrame({"v": known_names, "h": seeds.hash(known_names)})
        names_note = f"{known.height} distinct names of persons in the inputs"
        rec_names = set(recs)
        shadows = [(p, f) for p, (n, f) in ctx.other_formats.items() if n in rec_names]
        for name, frame in [*recs.items(), *shadows]:
            for col, text in (v for c in frame.columns for v in text_views(c, frame[c])):
                if known.height == 0:
                    continue
                grams = han_ngrams(text)
                if grams.height == 0:
                    continue
                cand = grams.with_columns(seeds.hash(grams["g"])).join(known, on="h")
                if cand.height == 0:
                    continue
                same = (
                    cand.with_columns(
                        _keyed_each(key, cand["g"]).alias("tg"),
                        _keyed_each(key, cand["v"]).alias("tv"),
                    )
                    .filter(pl.col("tg") == pl.col("tv"))
                    .select("r")
                    .unique()
                )
                if same.height:
                    problems.append(
                        f"{name}.{col}: {same.height} cell(s) hold the name of a person in "
                        "the inputs"
                    )
    if problems:
        return check("fail", "; ".join(problems) + f" ({cells} text cells screened)")
    return check(
        "pass",
        f"{cells} text cell(s) of {len(ctx.frames)} output(s) screened: no identifier; "
        f"names compared against {names_note}",
    )


def _keyed_each(key: bytes, values: pl.Series) -> pl.Series:
    """HMAC-SM3 per value (aligned with ``values``), computed once per distinct value."""
    uniq = values.unique()
    tokens = _keyed_aligned(key, uniq)
    return values.replace_strict(uniq, tokens, return_dtype=pl.String)


def _keyed_aligned(key: bytes, uniq: pl.Series) -> pl.Series:
    base = hmac.new(key, _EGRESS_DOMAIN, "sm3")
    out: list[str] = []
    for v in uniq.to_list():
        h = base.copy()
        h.update(str(v).encode("utf-8"))
        out.append(h.hexdigest())
    return pl.Series(out, dtype=pl.String)


def reversible_columns(ctx: Ctx) -> Check:
    rule = (
        "no output column is reversible to raw values (SM4 encryption) unless the agreement "
        "allows reversible outputs (不得通过可逆模型或算法还原); judged by the operator each "
        "column's lineage records (an HMAC-SM3 pseudonym is irreversible), a column without "
        "lineage is treated as reversible"
    )
    title = "不可逆 no reversible (SM4) columns"
    check = _CheckDef("desensitization", "reversible_columns", title, rule, False)
    found = ctx.reversible
    unknown = [f"{o}.{c}" for o, c in ctx.unknown_lineage]
    if unknown:
        return check(
            "fail",
            f"lineage unknown for {', '.join(unknown)}: a column whose operator is not "
            "recorded is treated as reversible"
            + (f"; also {'; '.join(f'{o}.{c} ({w})' for o, c, w in found)}" if found else ""),
        )
    if not found:
        ops = sorted(
            {c.operator or "?" for o in ctx.tabular for c in o.columns if c.operator is not None}
        )
        return check(
            "pass",
            f"no reversible column in {len(ctx.frames)} output(s) (operators by lineage: "
            f"{', '.join(ops)})",
        )
    ag = ad.agreement(ctx.manifest.agreement_id)
    listing = "; ".join(f"{o}.{c} ({why})" for o, c, why in found)
    if ag is not None and ag.reversible_outputs:
        return check("pass", f"{listing}: allowed by agreement {ag.id}")
    return check(
        "fail",
        f"{listing}; agreement {ctx.manifest.agreement_id} does not allow reversible outputs",
    )


def result_only(ctx: Ctx) -> Check:
    rule = (
        "verification outputs carry only the query id, kind, result (match / mismatch / "
        "not_found / refused) and a refusal reason (仅返回核验结果); the reason is one of "
        "quota_exceeded / consent_not_verified, and no query id is shaped like an identifier"
    )
    title = "仅返回核验结果 verification returns results only"
    check = _CheckDef("desensitization", "result_only", title, rule, False)
    ver = ctx.outputs_of("verification_flag")
    if not ver:
        return check("pass", "no verification output")
    problems: list[str] = []
    rows = 0
    for name, frame in ver.items():
        rows += frame.height
        extra = sorted(set(frame.columns) - VERIFICATION_COLUMNS)
        if extra:
            problems.append(f"{name}: extra column(s) {', '.join(extra)}")
        if "result" in frame.columns:
            bad = frame.filter(~pl.col("result").is_in(list(VERIFICATION_RESULTS))).height
            if bad:
                problems.append(f"{name}: {bad} result(s) outside {sorted(VERIFICATION_RESULTS)}")
        else:
            problems.append(f"{name}: no result column")
        if "reason" in frame.columns:
            told = frame["reason"].cast(pl.String).drop_nulls().unique().to_list()
            extra_reasons = sorted(set(told) - VERIFICATION_REASONS)
            if extra_reasons:
                problems.append(
                    f"{name}: refusal reason(s) {', '.join(extra_reasons)} beyond "
                    f"{sorted(VERIFICATION_REASONS)} (a reason must not tell the consent state)"
                )
        if "query_id" in frame.columns:
            bad_ids = ad.query_id_problems(frame)
            if bad_ids:
                problems.append(f"{name}: query ids that may not leave the domain ({bad_ids})")
    return check.verdict(
        problems,
        f"{rows} answer(s) with columns {', '.join(sorted(VERIFICATION_COLUMNS))} only, "
        f"refusal reasons within {', '.join(sorted(VERIFICATION_REASONS))}, no query id "
        "shaped like an identifier",
    )


# ============================================================================ consent 同意


def subject_consent(ctx: Ctx) -> Check:
    rule = (
        "a product that answers about identifiable persons (verification) checks a valid "
        "data-subject authorization (信息主体授权) for every personal query; aggregate (DP) and "
        "k-anonymous record-level products rest on the agreement's scenario instead"
    )
    title = "信息主体授权 data-subject consent coverage"
    check = _CheckDef("consent", "subject_consent", title, rule, False)
    spec = ctx.spec
    if spec.verification is None:
        basis = (
            "differentially private aggregates"
            if ctx.manifest.budget is not None
            else "de-identified records (no direct identifiers, k-anonymity enforced)"
        )
        return check(
            "pass",
            f"no per-person answers: {basis} under agreement {spec.agreement_id}, scenario "
            f"{spec.scenario}",
        )
    problems: list[str] = []
    personal = []
    for chk in spec.verification.checks:
        res = ad.resource(ctx.catalog, chk.resource)
        f = res.field(chk.key_field) if res and chk.key_field in res.field_names else None
        is_personal = chk.kind == "person" or (
            f is not None and f.pii_type is not None and f.pii_type != PiiType.CN_USCC
        )
        if is_personal:
            personal.append(chk.kind)
            if not chk.consent_required:
                problems.append(
                    f"{chk.kind} check on {chk.resource}.{chk.key_field} answers personal "
                    "queries without a consent check"
                )
    meta = ctx.manifest.verification or {}
    results = meta.get("results", {})
    reasons = meta.get("refused_reasons", {})
    consent_refused = sum(v for k, v in reasons.items() if str(k).startswith("consent"))
    frames = ctx.outputs_of("verification_flag")
    answered_personal = 0
    for frame in frames.values():
        if {"kind", "result"} <= set(frame.columns):
            answered_personal += frame.filter(
                pl.col("kind").is_in(personal) & (pl.col("result") != "refused")
            ).height
    ledger_n = ad.consent_count(ctx.home, spec.verification.consent_purpose)
    ev = (
        f"{answered_personal} personal queries answered, each after a valid consent for "
        f"purpose {spec.verification.consent_purpose!r}; {consent_refused} refused for "
        f"missing/invalid consent; results {results}; {ledger_n} active authorization(s) "
        "in the ledger for this purpose"
    )
    if problems:
        return check("fail", "; ".join(problems) + f" ({ev})")
    return check("pass", ev)


# ============================================================================ accuracy 准确性


def accuracy_target(ctx: Ctx) -> Check:
    target = ctx.manifest.accuracy_target
    rule = (
        f"at least {ACCURACY_PASS:.0%} of released cells have a relative CI half-width at "
        f"α=0.05 within the product's accuracy target ({ACCURACY_WARN:.0%} or more: warn); "
        "index scores are held to the index's maximum band half-width; quantiles by their "
        "rank error over the cell's noisy count"
    )
    title = "精度目标 cells meeting the accuracy target"
    check = _CheckDef("accuracy", "accuracy_target", title, rule, True)
    cells = [c for c in ctx.manifest.accuracy if not c.suppressed and c.estimate is not None]
    if ctx.manifest.budget is None:
        return check("pass", "no noisy output (exact results)")
    if target is None:
        return check("warn", "no accuracy target declared")
    if not cells:
        return check("warn", "no released cell")
    band = ctx.spec.index.max_band_half_width if ctx.spec.index is not None else None
    rel = pl.DataFrame(
        {
            "output": [c.output for c in cells],
            "measure": [c.measure for c in cells],
            # a quantile's accuracy is in ranks: its rank error over the cell's noisy count
            "rel": [
                c.relative_error if c.rank_error is None else c.relative_rank_error for c in cells
            ],
            "hw": [c.ci_half_width for c in cells],
        },
        schema={"output": pl.String, "measure": pl.String, "rel": pl.Float64, "hw": pl.Float64},
    )
    # Index scores (0-100) are held to the index's absolute band half-width, not a ratio.
    is_score = pl.lit(band is not None) & (pl.col("measure") == "score")
    met = rel.with_columns(
        pl.when(is_score)
        .then(pl.col("hw").is_not_null() & (pl.col("hw") <= (band or 0.0)))
        .otherwise(pl.col("rel").is_not_null() & (pl.col("rel") <= target))
        .alias("ok")
    )
    share = float(met["ok"].mean())  # type: ignore[arg-type]
    per = (
        met.group_by("output", "measure", maintain_order=True)
        .agg(pl.len().alias("cells"), pl.col("ok").mean().alias("share"), pl.col("rel").median())
        .to_dicts()
    )
    status = _grade(share, ACCURACY_PASS, ACCURACY_WARN)
    detail = "; ".join(
        f"{p['output']}.{p['measure']} {p['share']:.0%} of {p['cells']}" for p in per
    )
    return check(
        status,
        f"{int(met['ok'].sum())} of {met.height} released cells ({_pct(share)}) within relative "
        f"error {target:g}: {detail}",
        per_measure=per,
    )


def verification_correctness(ctx: Ctx) -> Check:
    rule = (
        f"on a labelled validation sample drawn from the input registry (true pairs, other "
        f"persons' names, unknown identifiers), at least {VERIFICATION_PASS:.0%} of answers "
        "from the release's keyed index are correct"
    )
    title = "核验正确率 verification correctness on a labelled sample"
    check = _CheckDef("accuracy", "verification_correctness", title, rule, True)
    spec = ctx.spec
    if spec.verification is None:
        return check("pass", "not a verification product")
    key = ad.pseudonym_key(ctx.home)
    if key is None:
        return check("warn", "no pseudonym key in the home: the keyed index cannot be validated")
    refs = {i.resource: i for i in ctx.manifest.inputs}
    notes: list[str] = []
    total = correct = 0
    missing: list[str] = []
    for chk in spec.verification.checks:
        ref = refs.get(chk.resource)
        index = ad.verification_index(ctx.home, chk, ref.snapshot_id) if ref else None
        if ref is None or index is None:
            missing.append(chk.resource)
            continue
        labelled = _labelled_sample(
            ctx, chk.resource, ref.snapshot_id, chk.key_field, chk.name_field
        )
        q = labelled.with_columns(
            ad.verification_tokens(key, labelled["id"], "id").alias("key_token"),
            ad.verification_tokens(key, labelled["name"], "name").alias("name_token"),
        )
        found = index.select("key_token").unique().with_columns(pl.lit(True).alias("_f"))
        pairs = (
            index.select("key_token", "name_token").unique().with_columns(pl.lit(True).alias("_m"))
        )
        pred = q.join(found, on="key_token", how="left").join(
            pairs, on=["key_token", "name_token"], how="left"
        )
        pred = pred.with_columns(
            pl.when(pl.col("_m").fill_null(False))
            .then(pl.lit("match"))
            .when(pl.col("_f").fill_null(False))
            .then(pl.lit("mismatch"))
            .otherwise(pl.lit("not_found"))
            .alias("predicted")
        )
        ok = int((pred["predicted"] == pred["expected"]).sum())
        by = pred.group_by("expected").agg(pl.len().alias("n")).sort("expected").rows()
        total += pred.height
        correct += ok
        notes.append(
            f"{chk.kind}: {ok} of {pred.height} correct ("
            + ", ".join(f"{e} {n}" for e, n in by)
            + ")"
        )
    if missing and not total:
        return check(
            "warn",
            f"keyed index of {', '.join(missing)} not kept in work/verification: cannot validate",
        )
    share = correct / total if total else 0.0
    status: Status = (
        "pass"
        if share >= VERIFICATION_PASS and not missing
        else "fail"
        if share < VERIFICATION_PASS
        else "warn"
    )
    return check(
        status,
        f"{correct} of {total} labelled queries correct ({_pct(share)}): "
        + "; ".join(notes)
        + (f"; no index for {', '.join(missing)}" if missing else ""),
    )


def _labelled_sample(
    ctx: Ctx, code: str, snapshot_id: str, key_field: str, name_field: str
) -> pl.DataFrame:
    """``id, name, expected`` labelled from the registry itself (stays in memory)."""
    reg = (
        ad.scan_snapshot(ctx.home, code, snapshot_id, [key_field, name_field])
        .select(
            pl.col(key_field).cast(pl.String).str.strip_chars().str.to_uppercase().alias("id"),
            pl.col(name_field).cast(pl.String).str.replace_all(r"\s", "").alias("name"),
        )
        .drop_nulls()
        .collect()
    )
    n = min(VERIFICATION_SAMPLE, reg.height)
    seed = int.from_bytes(ctx.manifest.release_id.encode()[-4:], "big")
    sample = reg.sample(n, seed=seed)
    third = max(n // 3, 1)
    true_pairs = sample.head(third)
    other = sample.slice(third, third)
    swapped = other.with_columns(pl.col("name").shift(1).fill_null(pl.col("name").last()))
    unknown = sample.slice(2 * third).with_columns(
        (pl.col("id").str.slice(0, pl.col("id").str.len_chars() - 1) + pl.lit("Z")).alias("id")
    )
    queries = pl.concat([true_pairs, swapped, unknown])
    ids = reg.select("id").unique().with_columns(pl.lit(True).alias("_known"))
    pairs = reg.unique().with_columns(pl.lit(True).alias("_pair"))
    return (
        queries.join(ids, on="id", how="left")
        .join(pairs, on=["id", "name"], how="left")
        .select(
            "id",
            "name",
            pl.when(pl.col("_pair").fill_null(False))
            .then(pl.lit("match"))
            .when(pl.col("_known").fill_null(False))
            .then(pl.lit("mismatch"))
            .otherwise(pl.lit("not_found"))
            .alias("expected"),
        )
    )


# ======================================================================= consistency 一致性


def totals(ctx: Ctx) -> Check:
    rule = (
        "where one table's dimensions are a subset of another's and both release the same "
        f"count, each total agrees with the sum of its sub-totals within z={CONSISTENCY_Z} "
        "times the combined noise standard deviation (where sub-cells are withheld, the total "
        "must not fall short of the released sub-totals)"
    )
    title = "总分一致 totals vs sums of sub-totals"
    check = _CheckDef("consistency", "totals", title, rule, True)
    tables = {t.name: t for t in ctx.spec.tables}
    aggs = ctx.outputs_of("dp_aggregate")
    compared = outside = 0
    pairs: list[str] = []
    for a in tables.values():
        for b in tables.values():
            if a.name == b.name or not set(a.by) < set(b.by):
                continue
            if a.filter != b.filter or not _units_partition(ctx.spec, a, b):
                continue
            common = {m.name for m in a.measures if m.aggregate == "count"} & {
                m.name for m in b.measures if m.aggregate == "count"
            }
            fa, fb = aggs.get(a.name), aggs.get(b.name)
            if fa is None or fb is None:
                continue
            for meas in sorted(common):
                ci = f"{meas}_ci95"
                if ci not in fa.columns or ci not in fb.columns:
                    continue
                sub = fb.group_by(a.by).agg(
                    pl.col(meas).sum().alias("_sub"),
                    (pl.col(ci) ** 2).sum().alias("_v"),
                    pl.col(meas).is_null().any().alias("_gap"),
                )
                j = fa.select([*a.by, meas, ci]).join(sub, on=a.by, how="inner")
                j = j.filter(pl.col(meas).is_not_null())
                bound = (pl.col("_v") + pl.col(ci) ** 2).sqrt() / 1.96 * CONSISTENCY_Z
                diff = pl.col(meas) - pl.col("_sub")
                # Withheld sub-cells hold non-negative true counts: where some are withheld,
                # the total may exceed the released sub-totals but must not fall short.
                off = pl.when(pl.col("_gap")).then(diff < -bound).otherwise(diff.abs() > bound)
                bad = j.filter(off).height
                compared += j.height
                outside += bad
                pairs.append(f"{a.name}.{meas} vs {b.name} ({j.height} groups, {bad} outside)")
    if not pairs:
        return check("pass", "no pair of nested tables with a shared count")
    status: Status = "pass" if outside == 0 else "warn"
    return check(
        status, f"{compared - outside} of {compared} totals within bounds: " + "; ".join(pairs)
    )


def _units_partition(spec: ProductSpec, a: Any, b: Any) -> bool:
    """A total equals the sum of its sub-totals only when each unit sits in one cell of each
    table. A language table whose dimensions come from the unit's own rows (diagnosis chapter,
    quarter of a settlement) counts a unit in every sub-cell it touches, up to its cap: the
    sub-totals then add up to more than the distinct units of the total, by design."""
    if spec.query is None:
        return True
    from products.language.compile import one_cell_per_unit

    return one_cell_per_unit(spec, a) and one_cell_per_unit(spec, b)


def schema_vs_previous(ctx: Ctx) -> Check:
    rule = "the output schema (outputs, columns, types) equals the previous release's"
    title = "与上一版本结构一致 schema against the previous release"
    check = _CheckDef("consistency", "schema_vs_previous", title, rule, True)
    m = ctx.manifest
    earlier = [r for r in ad.releases_of(ctx.home, m.product_id) if r.created_at < m.created_at]
    if not earlier:
        return check("pass", "first release of the product")
    prev = earlier[-1]

    def shape(r: ad.ReleaseManifest) -> dict[str, list[tuple[str, str]]]:
        return {f"{o.name}.{o.format}": [(c.name, c.type) for c in o.columns] for o in r.outputs}

    a, b = shape(prev), shape(m)
    diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diffs:
        return check(
            "warn", f"differs from {prev.release_id} (v{prev.version}) in {', '.join(diffs)}"
        )
    return check(
        "pass", f"same {len(b)} output file schemas as {prev.release_id} (v{prev.version})"
    )


def _as_dtype(values: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Another format's column (text from a CSV, JSON-inferred) in ``dtype``, for comparison."""
    if values.dtype == dtype:
        return values
    if dtype == pl.Boolean and values.dtype == pl.String:
        return values.str.to_lowercase().replace_strict(
            {"true": True, "false": False}, default=None, return_dtype=pl.Boolean
        )
    try:
        return values.cast(dtype, strict=False)
    except pl.exceptions.PolarsError:
        return values.cast(pl.String, strict=False)


def format_differences(ctx: Ctx) -> list[str]:
    """Where another format of an output (the CSV beside the Parquet) holds other content.

    The k-anonymity, mask and lineage checks measure one format per output; every format is
    published, so each must hold the same cells (empty text and null count as equal)."""
    found: list[str] = []
    for path, (name, other) in ctx.other_formats.items():
        base = ctx.frames.get(name)
        if base is None or path.endswith((".html", ".htm")):
            continue
        if other.columns != base.columns or other.height != base.height:
            found.append(
                f"{path}: columns/rows {other.columns[:8]}×{other.height} differ from "
                f"{base.columns[:8]}×{base.height} of the {name} output the checks measured"
            )
            continue
        for col in base.columns:
            a, b = base[col], _as_dtype(other[col], base[col].dtype)
            if a.dtype != b.dtype:
                a = a.cast(pl.String, strict=False)
            if a.dtype == pl.String:
                a, b = a.fill_null(""), b.fill_null("")
            diff = int((~a.eq_missing(b)).sum())
            if diff:
                found.append(f"{path}: {diff} cell(s) of {col} differ from the {name} output")
    return found


def file_integrity(ctx: Ctx) -> Check:
    rule = (
        "release.json and every output file match the SM3 sealed in the audit chain at build "
        "time (recomputed from the files and from the bytes the checks read; a missing seal or "
        "an empty digest fails), and every format of an output holds the same cells"
    )
    title = "文件完整性 output file integrity (SM3 vs build seal)"
    check = _CheckDef("consistency", "file_integrity", title, rule, False)
    bad = ad.release_evidence(ctx.home, ctx.manifest)
    from governance.evidence import find_seal

    sealed = find_seal(ctx.home, ctx.manifest.release_id)
    bad += format_differences(ctx)
    for path, digest in sorted(ctx.read_sm3.items()):
        if sealed is not None and sealed.files.get(path) != digest:
            bad.append(
                f"{path}: the bytes the checks read differ from the seal (changed while assessed)"
            )
    return check.verdict(
        bad, f"release.json and {len(ctx.manifest.outputs)} output file(s) match the build seal"
    )


def spec_unchanged(ctx: Ctx) -> Check:
    rule = (
        "the release's spec copy is intact, and the product's current spec is the one it was "
        "built from (a changed spec must carry a new version; a newer version warns)"
    )
    title = "规格未变 spec unchanged since the build"
    check = _CheckDef("consistency", "spec_unchanged", title, rule, True)
    m = ctx.manifest
    own = ad.spec_digest(ctx.spec)
    if own != m.spec_sm3:
        return check("fail", "the release's spec copy does not match its SM3", rectifiable=False)
    cur = ctx.current_spec
    if cur is None:
        return check("warn", f"the spec file of {m.product_id} no longer exists")
    cur_sm3 = ad.spec_digest(cur)
    if cur_sm3 == m.spec_sm3:
        return check("pass", f"spec v{m.version} SM3 {own[:16]}… unchanged")
    if cur.version == m.version:
        return check(
            "fail",
            f"the spec of {m.product_id} v{m.version} changed without a new version "
            f"(now SM3 {cur_sm3[:16]}…, built from {own[:16]}…)",
            rectifiable=False,
        )
    return check(
        "warn", f"a newer spec version {cur.version} exists (this release is v{m.version})"
    )


# ======================================================================= normativity 规范性


def output_schema(ctx: Ctx) -> Check:
    rule = (
        "every output file has exactly the columns (and, for Parquet, types) declared in the "
        "release metadata, and aggregate tables carry their spec's dimensions and measures"
    )
    title = "输出结构 output schema as declared"
    check = _CheckDef("normativity", "output_schema", title, rule, True)
    problems: list[str] = []
    tables = _table_measures(ctx)
    for out in ctx.tabular:
        frame = ctx.frames.get(out.name)
        if frame is None:
            continue
        declared = [c.name for c in out.columns]
        if declared != frame.columns:
            problems.append(f"{out.name}: columns {frame.columns} differ from declared {declared}")
        elif out.format == "parquet":
            types = {c.name: c.type for c in out.columns}
            off = [c for c, d in frame.schema.items() if str(d) != types[c]]
            if off:
                problems.append(f"{out.name}: type of {', '.join(off)} differs")
        if out.values == "dp_aggregate" and out.name in tables:
            by, _c, measures = tables[out.name]
            lacking = [c for c in [*by, *measures] if c not in frame.columns]
            if lacking:
                problems.append(f"{out.name}: lacks spec column(s) {', '.join(lacking)}")
    for name, err in ctx.read_errors.items():
        problems.append(f"{name}: unreadable ({err})")
    return check.verdict(problems, f"{len(ctx.tabular)} output(s) match their declared schema")


def code_standards(ctx: Ctx) -> Check:
    rule = (
        f"coded columns follow their standards: region codes GB/T 2260, diagnoses the ICD-10 "
        f"code shape; at least {CODES_PASS:.0%} of values conform ({CODES_WARN:.0%}: warn; "
        "'*' = generalized away). Source defects are fed back through the quality loop"
    )
    title = "编码标准 codes follow their standards"
    check = _CheckDef("normativity", "code_standards", title, rule, True)
    regions = list(ad.codelist("gbt2260_all"))
    checked: list[str] = []
    worst = 1.0
    for name, frame in ctx.frames.items():
        for col, dtype in frame.schema.items():
            if dtype != pl.String:
                continue
            if col == "district" or "区划" in col:
                std, ok = "GB/T 2260", pl.col(col).is_in(regions)
            elif "诊断编码" in col or col.lower().startswith("icd"):
                std, ok = "ICD-10", pl.col(col).str.contains(ICD10_SHAPE)
            else:
                continue
            vals = frame.select(ok.alias("ok"), pl.col(col)).filter(
                pl.col(col).is_not_null() & (pl.col(col) != "*")
            )
            share = float(vals["ok"].mean()) if vals.height else 1.0  # type: ignore[arg-type]
            worst = min(worst, share)
            bad_codes = vals.filter(~pl.col("ok"))[col].n_unique()
            checked.append(
                f"{name}.{col}: {_pct(share)} of {vals.height} values follow {std}"
                + (f" ({bad_codes} distinct non-conforming code(s))" if bad_codes else "")
            )
    status = _grade(worst, CODES_PASS, CODES_WARN)
    ev = "; ".join(checked) if checked else "no coded column"
    return check(status, ev)


def metadata_complete(ctx: Ctx) -> Check:
    rule = (
        "the release metadata names product, bilingual name, version, kind, scenario, "
        "agreement, developer, purpose, pricing, destination, inputs and outputs"
    )
    title = "元数据完整 metadata complete"
    check = _CheckDef("normativity", "metadata_complete", title, rule, True)
    m = ctx.manifest
    required = {
        "name": m.name,
        "name_en": m.name_en,
        "version": m.version,
        "kind": m.kind,
        "scenario": m.scenario,
        "agreement_id": m.agreement_id,
        "developer": m.developer,
        "purpose_category": m.purpose_category,
        "pricing_note": m.pricing_note,
        "destination": m.destination,
    }
    missing = [k for k, v in required.items() if not str(v).strip()]
    if not m.inputs:
        missing.append("inputs")
    if not m.outputs:
        missing.append("outputs")
    return check.fields_present(
        missing,
        f"{len(required) + 2} metadata fields present ({len(m.inputs)} inputs, "
        f"{len(m.outputs)} output files)",
    )


# ===================================================================== completeness 完整性


def expected_keys(ctx: Ctx) -> Check:
    rule = (
        "aggregate tables hold every key of the cross product of their public key sets "
        "(suppressed ones listed); a verification answers every query; a record-level "
        f"extract suppresses at most {SUPPRESSED_RECORDS_WARN:.0%} of records"
    )
    title = "预期键齐全 expected keys present"
    check = _CheckDef("completeness", "expected_keys", title, rule, True)
    problems: list[str] = []
    warns: list[str] = []
    notes: list[str] = []
    aggs = ctx.outputs_of("dp_aggregate")
    for t in ctx.spec.tables:
        frame = aggs.get(t.name)
        if frame is None:
            problems.append(f"table {t.name} missing")
            continue
        expected = 1
        for b in t.by:
            expected *= len(ad.dimension_keys(ctx.spec, b))
        present = frame.select(t.by).unique().height if set(t.by) <= set(frame.columns) else 0
        if present < expected:
            problems.append(f"{t.name}: {present} of {expected} keys")
        supp = ["/".join(c.key.values()) for c in ctx.manifest.suppressed if c.output == t.name]
        notes.append(
            f"{t.name}: {present} of {expected} keys"
            + (f", suppressed: {', '.join(supp[:20])}" if supp else "")
            + (" …" if len(supp) > 20 else "")
        )
    ver = ctx.manifest.verification
    if ver is not None:
        asked = next(
            (i.rows for i in ctx.manifest.inputs if i.resource == "VERIFICATION_QUERIES"), None
        )
        answered = sum(f.height for f in ctx.outputs_of("verification_flag").values())
        if asked is not None and asked != answered:
            problems.append(f"{answered} answers for {asked} queries")
        notes.append(f"{answered} answers for {asked} queries")
    ka = ctx.manifest.k_anonymity
    if ka is not None:
        share = ka.records_suppressed / ka.records_in if ka.records_in else 0.0
        line = f"{ka.records_out} of {ka.records_in} records kept ({_pct(share)} suppressed)"
        (warns if share > SUPPRESSED_RECORDS_WARN else notes).append(line)
    if problems:
        return check("fail", "; ".join(problems + warns + notes))
    if warns:
        return check("warn", "; ".join(warns + notes))
    return check("pass", "; ".join(notes) or "nothing keyed")


def input_completeness(ctx: Ctx) -> Check:
    rule = (
        f"each input snapshot's completeness score (quality module, GB/T 36344) is at least "
        f"{COMPLETENESS_PASS:.0%} ({COMPLETENESS_WARN:.0%} or more: warn); an unchecked "
        "snapshot warns"
    )
    title = "输入完整性 input completeness (quality scores)"
    check = _CheckDef("completeness", "input_completeness", title, rule, True)
    notes: list[str] = []
    status: Status = "pass"
    for ref in ctx.data_inputs:
        scores = ad.quality_scores(ctx.home, ref.resource, ref.snapshot_id)
        if scores is None or "completeness" not in scores:
            notes.append(f"{ref.resource} snapshot {ref.snapshot_id}: no quality check")
            status = "warn" if status == "pass" else status
            continue
        c = scores["completeness"]
        notes.append(f"{ref.resource}: completeness {c:.4f}")
        if c < COMPLETENESS_WARN:
            status = "fail"
        elif c < COMPLETENESS_PASS and status == "pass":
            status = "warn"
    return check(status, "; ".join(notes) or "no input")


# ======================================================================= timeliness 时效性


def snapshot_age(ctx: Ctx) -> Check:
    rule = (
        "each input snapshot is younger than its resource's update frequency allows "
        "(realtime 1 d, daily 2 d, weekly 8 d, monthly 35 d, quarterly 95 d, yearly 370 d)"
    )
    title = "输入时效 input snapshot ages"
    check = _CheckDef("timeliness", "snapshot_age", title, rule, True)
    notes: list[str] = []
    stale: list[str] = []
    now = dt.datetime.now(dt.UTC)
    # ages as of the assessment date: now when assessing today, else the end of that day
    at = now if ctx.at == now.date() else dt.datetime.combine(ctx.at, dt.time.max, tzinfo=dt.UTC)
    for ref in ctx.data_inputs:
        res = ad.resource(ctx.catalog, ref.resource)
        snap = ad.snapshot(ctx.home, ref.resource, ref.snapshot_id)
        if res is None or snap is None:
            stale.append(f"{ref.resource}: snapshot {ref.snapshot_id} not found")
            continue
        age = (at - snap.ingested_at).total_seconds() / 86400
        limit = res.update_frequency.max_age_days
        line = f"{ref.resource} {age:.1f} d (≤ {limit} d, {res.update_frequency.value})"
        (stale if age > limit else notes).append(line)
    if stale:
        return check("warn", "stale: " + "; ".join(stale + notes))
    return check("pass", "; ".join(notes) or "no input")


# ===================================================================== accessibility 可访问性


def formats_readable(ctx: Ctx) -> Check:
    rule = (
        "every output file (Parquet, CSV, JSON) opens with a standard reader and holds the "
        "declared number of rows"
    )
    title = "格式可读 formats readable"
    check = _CheckDef("accessibility", "formats_readable", title, rule, True)
    problems: list[str] = []
    ok = 0
    for out in ctx.manifest.outputs:
        path = ctx.rdir / out.path
        if out.format == "html":
            if path.exists() and path.read_text(encoding="utf-8").lstrip().startswith("<"):
                ok += 1
            else:
                problems.append(f"{out.path}: not an HTML document")
            continue
        try:
            frame = read_output(path, out.format)
        except Exception as exc:
            problems.append(f"{out.path}: unreadable ({type(exc).__name__})")
            continue
        if frame.height != out.rows:
            problems.append(f"{out.path}: {frame.height} rows, {out.rows} declared")
        else:
            ok += 1
    formats = sorted({o.format for o in ctx.manifest.outputs})
    return check.verdict(problems, f"{ok} file(s) readable ({', '.join(formats)})")


def fields_documented(ctx: Ctx) -> Check:
    rule = "every output column has a description in the release metadata"
    title = "字段说明 fields documented"
    check = _CheckDef("accessibility", "fields_documented", title, rule, True)
    undocumented = [
        f"{o.name}.{c.name}" for o in ctx.tabular for c in o.columns if not c.description.strip()
    ]
    total = sum(len(o.columns) for o in ctx.tabular)
    if undocumented:
        return check(
            "warn",
            f"{len(undocumented)} of {total} columns undocumented: {', '.join(undocumented[:15])}",
        )
    return check("pass", f"{total} columns documented")


# ================================================================= circulation 流通交易风险


def price_basis(ctx: Ctx) -> Check:
    rule = (
        "public-good products are free (公益无偿) and industry products priced (产业有偿): the "
        "pricing note agrees with the purpose category"
    )
    title = "价格依据 price basis agrees with the purpose"
    check = _CheckDef("circulation", "price_basis", title, rule, True)
    m = ctx.manifest
    note = m.pricing_note.lower()
    free = any(w in note for w in ("公益", "无偿", "free"))
    priced = any(w in note for w in ("有偿", "价", "price", "priced"))
    agrees = (m.purpose_category == "public_good" and free and "有偿" not in note) or (
        m.purpose_category == "industry" and priced
    )
    status: Status = "pass" if agrees else "fail"
    return check(status, f"purpose {m.purpose_category}; pricing note: {m.pricing_note}")


def no_redevelopment(ctx: Ctx) -> Check:
    rule = (
        "the product is developed by the developer entity its agreement names, not by the "
        "operator itself, and reads catalogued resources only (no re-development of released "
        "products)"
    )
    title = "不得二次开发 no re-development by the operator"
    check = _CheckDef("circulation", "no_redevelopment", title, rule, True)
    m = ctx.manifest
    problems: list[str] = []
    ag = ad.agreement(m.agreement_id)
    operator = None
    if ag is not None:
        operator = (
            ag.parties.grantor.id if ag.kind.value == "development" else ag.parties.grantee.id
        )
        if m.developer == operator:
            problems.append(f"developer {m.developer} is the operator itself")
    other = [
        i.resource
        for i in m.inputs
        if i.resource not in ctx.catalog.resources and i.resource != "VERIFICATION_QUERIES"
    ]
    if other:
        problems.append(f"inputs outside the catalog: {', '.join(other)}")
    return check.verdict(
        problems, f"developer {m.developer} (operator {operator}); inputs are catalogued resources"
    )


def registration_fields(ctx: Ctx) -> Check:
    rule = (
        "the registration (登记) fields are present: product code, name, version, sources, "
        "purpose category, release date, developer"
    )
    title = "登记要素 registration fields present"
    check = _CheckDef("circulation", "registration_fields", title, rule, True)
    m = ctx.manifest
    fields = {
        "product code": m.product_id,
        "name": m.name,
        "version": m.version,
        "sources": ", ".join(i.resource for i in ctx.data_inputs),
        "purpose category": m.purpose_category,
        "release date": m.created_at.date().isoformat(),
        "developer": m.developer,
    }
    missing = [k for k, v in fields.items() if not v]
    return check.fields_present(missing, "; ".join(f"{k}: {v}" for k, v in fields.items()))


CHECKS: list[Callable[[Ctx], Check]] = [
    agreement_in_force,
    purpose_and_scope,
    negative_list,
    cross_border,
    sources_annotated,
    minimal_necessary,
    purpose_pricing,
    pii_scan,
    raw_identifiers,
    public_keys,
    ledger_tied,
    small_cells,
    dp_ceilings,
    k_anonymity,
    mask_strength,
    free_text_screening,
    reversible_columns,
    result_only,
    subject_consent,
    accuracy_target,
    verification_correctness,
    totals,
    schema_vs_previous,
    file_integrity,
    spec_unchanged,
    output_schema,
    code_standards,
    metadata_complete,
    expected_keys,
    input_completeness,
    snapshot_age,
    formats_readable,
    fields_documented,
    price_basis,
    no_redevelopment,
    registration_fields,
]
