"""Verification 身份信息核验 / 企业信息核验 (batch): only ``match``, ``mismatch`` or ``not_found``.

A batch file of queries (CSV or Parquet, strings) has the columns ``query_id``, ``kind``
(``person`` or ``enterprise``), ``name``, ``id_number`` (ID number or USCC) and
``consent_ref``. For each query the answer says only whether the name agrees with the record
of that identifier — no other attribute leaves the domain (数据不落地，仅返回核验结果).

- **Keyed index.** Per input snapshot the registry is reduced once to HMAC-SM3 tokens of the
  identifier and of the normalized name (pseudonym key, own domain prefix) in
  ``work/verification/``; queries are tokenized the same way and joined, so raw values are
  not needed at query time. HMAC runs once per distinct value (batched).
- **Authorized pairs.** The spec's checks are authorized by its scenario
  (``governance.authorization``): the scenario lists ``verification`` among its product kinds
  and names each (resource, key field, name field) pair; only the scenario may waive consent.
  The keyed index is cached per resource, snapshot, field pair and key, so a spec checking
  another field can never serve (or poison) the answers of another check.
- **Consent.** Each query's subject (the identifier) must hold a valid authorization for the
  spec's ``consent_purpose`` in the consent ledger (``governance.consent``): not missing,
  not for another purpose, not expired, not revoked. The query's ``consent_ref`` must be the
  evidence reference (``evidence_ref``) of one such valid authorization of that subject, so
  a requester cannot lean on a consent collected by someone else or for another request.
  Otherwise the query is refused with the one reason ``consent_not_verified`` whatever the
  subject's consent state (missing, expired, revoked, other purpose, other reference): the
  detailed reason goes to the audit log only, so refusals reveal nothing about the subject.
- **Query ids.** A ``query_id`` is the requester's own short reference; a batch whose ids look
  like identifiers is refused as a whole (``products.query_ids``), before any lookup.
- **Requester and quota.** The requester is the authenticated account (``current_actor()``),
  operators included; a ``requester`` option other than that account is refused. An account
  may ask ``quota_per_day`` queries per UTC day over all verification products (refused ones
  count, so the quota also stops probing the consent ledger); queries beyond it are refused.
  A spec's ``quota_per_day`` above the domain policy's
  ``verification.max_quota_per_requester_per_day`` is refused before anything is read.
- **Audit.** Every batch writes an audit entry listing every query id with its outcome, and
  refused queries another one with their detailed reasons.
"""

from __future__ import annotations

import datetime as dt
import hmac
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Column, Date, Integer, String, Table, select, text

from catalogs.product_models import ProductSpec, VerificationCheck
from governance import domain_policy
from governance.actors import Actor, current_actor
from governance.audit import record
from governance.consent import ConsentLedger, consent_ledger, subject_tokens
from products import outputs, query_ids
from products.engine import BuildContext, BuildOptions, Draw, Finished
from products.release import InputRef
from shuyu_core import atomic
from shuyu_core.db import METADATA
from shuyu_core.errors import NotFoundError, PermissionDenied, ValidationError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home, state_engine
from shuyu_core.keys import PSEUDONYM, load_key

_DOMAIN = b"shuyu/verification-index/v1\x00"
_INDEX_ID = b"shuyu/verification-index-id/v1\x00"
QUERY_COLUMNS = ("query_id", "kind", "name", "id_number", "consent_ref")
RESULTS = ("match", "mismatch", "not_found", "refused")
# The only refusal reasons a requester sees. Every consent failure (no reference, no consent,
# another purpose, expired, revoked, another reference) is the one CONSENT_REFUSED, so the
# answer never tells the subject's consent state; the audit log keeps the detailed reason.
QUOTA_REFUSED = "quota_exceeded"
CONSENT_REFUSED = "consent_not_verified"

verification_quota = Table(
    "verification_quota",
    METADATA,
    Column("requester", String(200), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("used", Integer, nullable=False),
)


def normalize_name(value: str) -> str:
    """NFKC (full-width brackets and digits), no whitespace: how names are compared."""
    return "".join(unicodedata.normalize("NFKC", value).split())


def normalize_series(s: pl.Series, kind: str) -> pl.Series:
    s = s.cast(pl.String)
    if kind == "name":
        # NFKC per distinct value (Python), mapped back vectorized.
        uniq = s.drop_nulls().unique()
        mapped = pl.Series([normalize_name(v) for v in uniq.to_list()], dtype=pl.String)
        out = s.replace_strict(uniq, mapped, default=None, return_dtype=pl.String)
    else:
        out = s.str.strip_chars().str.to_uppercase()
    return pl.select(pl.when(out.str.len_chars() > 0).then(out)).to_series().alias(s.name)


def tokens(key: bytes, values: pl.Series) -> pl.Series:
    """HMAC-SM3 (index domain) of already-normalized values, one HMAC per distinct value."""
    uniq = values.drop_nulls().unique()
    base = hmac.new(key, _DOMAIN, "sm3")
    out: list[str] = []
    for v in uniq.to_list():
        h = base.copy()
        h.update(v.encode("utf-8"))
        out.append(h.hexdigest())
    return values.replace_strict(
        uniq, pl.Series(out, dtype=pl.String), default=None, return_dtype=pl.String
    )


def index_path(home: Home, check: VerificationCheck, snapshot_id: str, key: bytes) -> Path:
    """One index per resource, snapshot, field pair and key: a spec verifying another field
    (or a rotated key) gets its own file and never reads or writes another check's."""
    fields = f"{check.resource}\x00{check.key_field}\x00{check.name_field}".encode()
    tag = hmac.new(key, _INDEX_ID + fields, "sm3").hexdigest()[:20]
    return home.work / "verification" / f"{check.resource}-{snapshot_id}-{tag}.parquet"


def keyed_index(ctx: BuildContext, check: VerificationCheck, key: bytes) -> pl.DataFrame:
    """``key_token, name_token`` for one registry snapshot and field pair, built once and kept
    in work/ — per partition on the cluster when the build has one (``scaleout.placement``)."""
    from scaleout.placement import choose

    snap = ctx.inputs[check.resource]
    placement = choose(ctx, VerificationBuilder(), ctx.options.cluster)
    built: Callable[[], pl.DataFrame] | None = None
    if placement.distributed:
        from scaleout.backends import open_backend
        from scaleout.driver import verification_index

        def on_cluster() -> pl.DataFrame:
            with open_backend(placement.setting, ctx.home) as backend:
                return verification_index(ctx.home, snap, check, backend)

        built = on_cluster
    return snapshot_index(
        ctx.home, check, snap.snapshot_id, key, lambda: ctx.scan(check.resource), built
    )


def index_frame(raw: pl.DataFrame, check: VerificationCheck, key: bytes) -> pl.DataFrame:
    """Distinct ``key_token, name_token`` of rows holding the check's key and name fields.

    Normalizing and HMAC are per value, so the index of a snapshot is the distinct union of
    its parts' indexes (how the cluster builds it, ``scaleout.jobs.index_part``)."""
    keys = normalize_series(raw[check.key_field], "id")
    names = normalize_series(raw[check.name_field], "name")
    return (
        pl.DataFrame({"key_token": tokens(key, keys), "name_token": tokens(key, names)})
        .drop_nulls("key_token")
        .unique()
    )


def snapshot_index(
    home: Home,
    check: VerificationCheck,
    snapshot_id: str,
    key: bytes,
    scan: Callable[[], pl.LazyFrame],
    built: Callable[[], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """The keyed index of ``check`` over one snapshot (``scan`` reads it when not yet built;
    ``built``, when given, builds it instead, e.g. on a cluster)."""
    path = index_path(home, check, snapshot_id, key)
    if path.exists():
        return pl.read_parquet(path)
    if built is not None:
        index = built()
    else:
        raw = scan().select(check.key_field, check.name_field).collect()
        index = index_frame(raw, check, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    index.write_parquet(tmp)
    atomic.write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return index


def read_queries(path: Path, max_batch: int) -> pl.DataFrame:
    if not path.exists():
        raise NotFoundError(f"query file {path} does not exist", hint="check --queries PATH")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".txt"):
        raise ValidationError(
            f"{path}: unsupported query file type", hint="use a .csv or .parquet file"
        )
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
    except (pl.exceptions.PolarsError, OSError) as exc:
        # A corrupt, truncated, ragged or non-UTF-8 batch is the user's to fix, not a crash.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValidationError(
            f"{path}: cannot be read as a query batch ({first})",
            hint="provide a complete UTF-8 CSV with a header row, or a Parquet file",
        ) from exc
    return validate_queries(frame, max_batch, str(path))


def validate_queries(frame: pl.DataFrame, max_batch: int, source: str) -> pl.DataFrame:
    """The batch in ``frame`` checked (columns, size, unique ids, kinds) and cast to strings:
    the same rules for a file (CLI) and a JSON body (``POST /api/v1/verify``)."""
    if "kind" not in frame.columns:
        frame = frame.with_columns(pl.lit("person").alias("kind"))
    missing = [c for c in QUERY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValidationError(
            f"{source}: missing column(s) {', '.join(missing)}",
            hint=f"a query file has columns {', '.join(QUERY_COLUMNS)}",
        )
    frame = frame.select(pl.col(c).cast(pl.String) for c in QUERY_COLUMNS)
    if frame.height > max_batch:
        raise ValidationError(
            f"{source}: {frame.height} queries exceed the batch limit {max_batch}",
            hint="split the batch",
        )
    if frame["query_id"].is_null().any() or frame["query_id"].is_duplicated().any():
        raise ValidationError(
            f"{source}: query_id must be unique and non-empty", hint="fix the ids"
        )
    bad = frame.filter(~pl.col("kind").is_in(["person", "enterprise"]))
    if bad.height:
        raise ValidationError(
            f"{source}: kind must be person or enterprise (query {bad['query_id'][0]})",
            hint="fix the kind column",
        )
    return frame


def take_quota(home: Home, requester: str, wanted: int, per_day: int, day: dt.date) -> int:
    """Atomically reserve up to ``wanted`` queries of today's quota; returns how many."""
    engine = state_engine(home)
    with engine.connect() as conn:
        # Take the write lock before reading the count (check-then-reserve is one step).
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            conn.execute(text("LOCK TABLE verification_quota IN EXCLUSIVE MODE"))
        try:
            key = (verification_quota.c.requester == requester) & (verification_quota.c.day == day)
            row = conn.execute(select(verification_quota.c.used).where(key)).first()
            used = int(row[0]) if row else 0
            granted = max(0, min(wanted, per_day - used))
            if row is None:
                conn.execute(
                    verification_quota.insert().values(requester=requester, day=day, used=granted)
                )
            else:
                conn.execute(verification_quota.update().where(key).values(used=used + granted))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return granted


def _valid_refs(home: Home, decided: pl.DataFrame, purpose: str) -> pl.DataFrame:
    """``_token, _ref, _ref_ok``: evidence references of the currently valid authorizations
    (for ``purpose``) of the subjects whose consent ``check_many`` found valid."""
    tokens = decided.filter(pl.col("ok").fill_null(False))["token"].unique().to_list()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # the consent ledger stores naive UTC
    c = consent_ledger.c
    rows: list[tuple[str, str]] = []
    with state_engine(home).connect() as conn:
        for i in range(0, len(tokens), 900):  # SQLite's bound-parameter limit
            stmt = select(c.subject_token, c.evidence_ref).where(
                c.subject_token.in_(tokens[i : i + 900]),
                c.purpose == purpose,
                c.revoked.is_(False),
                c.granted_at <= now,
                c.expires_at > now,
            )
            rows.extend((str(t), str(r)) for t, r in conn.execute(stmt).all())
    return (
        pl.DataFrame(rows, schema={"_token": pl.String, "_ref": pl.String}, orient="row")
        .unique()
        .with_columns(pl.lit(True).alias("_ref_ok"))
    )


def requester(home: Home, spec: ProductSpec, options: BuildOptions) -> Actor:
    """The authenticated account asking (its quota binds, whatever its role).

    ``options.requester`` (``--requester``) is accepted only when it names that same account:
    a free-text name never opens a fresh quota.
    """
    actor = current_actor()
    if options.requester is not None and options.requester != actor.name:
        reason = f"requester {options.requester!r} is not the authenticated account {actor.name!r}"
        record(
            home,
            "verify.query",
            spec.id,
            "refused",
            {"check": "requester", "reason": reason, "requested": options.requester},
        )
        exc = PermissionDenied(
            f"verification {spec.id} refused: {reason}",
            hint="drop --requester: the batch counts against the account you act as",
        )
        exc.audited = True
        raise exc
    return actor


def quota_ceiling(home: Home) -> int:
    """The domain policy's ceiling on queries per requester per day."""
    return domain_policy.effective(home).verification.max_quota_per_requester_per_day


def check_quota_ceiling(home: Home, spec: ProductSpec, *, action: str = "product.build") -> None:
    """Refuse (audited under ``action``) a spec whose ``quota_per_day`` exceeds the domain
    policy's ceiling."""
    if spec.verification is None:
        return
    ceiling = quota_ceiling(home)
    asked = spec.verification.quota_per_day
    if asked <= ceiling:
        return
    message = (
        f"product {spec.id}: verification.quota_per_day {asked} exceeds the domain policy's "
        f"ceiling of {ceiling} queries per requester per day"
    )
    exc = ValidationError(
        message,
        hint=f"lower quota_per_day to at most {ceiling} (only an admin changes the ceiling: "
        "verification.max_quota_per_requester_per_day)",
    )
    record(
        home,
        action,
        spec.id,
        "refused",
        {"check": "verification_quota_ceiling", "quota_per_day": asked, "ceiling": ceiling},
    )
    exc.audited = True
    raise exc


def screen_query_ids(home: Home, spec: ProductSpec, frame: pl.DataFrame, who: Actor) -> None:
    """Refuse (audited) a batch with a query id that looks like an identifier."""
    found = query_ids.problems(frame)
    if not found.height:
        return
    text_ = query_ids.summary(found)
    record(
        home,
        "verify.refused",
        spec.id,
        "refused",
        {
            "check": "query_id",
            "requester": who.name,
            # rows and kinds of problem only: the offending values are never stored
            "rows": found["row"].to_list(),
            "problems": {str(k): int(v) for k, v in found["problem"].value_counts().rows()},
        },
    )
    exc = ValidationError(
        f"verification {spec.id}: {found.height} query id(s) may not be used ({text_})",
        hint="give each query a short reference of your own (e.g. REQ-000123), never a "
        "resident ID, phone, card number, USCC, e-mail or the queried identifier",
    )
    exc.audited = True
    raise exc


def _counts(s: pl.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in s.value_counts().rows()} if s.len() else {}


Lookup = Callable[[VerificationCheck, pl.DataFrame], pl.DataFrame]


def join_lookup(index_for: Callable[[VerificationCheck], pl.DataFrame]) -> Lookup:
    """``_found`` / ``_match`` for tokenized queries by joining the check's keyed index."""

    def lookup(check: VerificationCheck, sub: pl.DataFrame) -> pl.DataFrame:
        index = index_for(check)
        found = index.select("key_token").unique().with_columns(pl.lit(True).alias("_found"))
        matched = index.with_columns(pl.lit(True).alias("_match"))
        return sub.join(found, on="key_token", how="left").join(
            matched, on=["key_token", "name_token"], how="left"
        )

    return lookup


def answer(
    home: Home,
    spec: ProductSpec,
    queries: pl.DataFrame,
    who: Actor,
    target: str,
    lookup: Lookup,
    channel: dict[str, Any] | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Answer a validated, screened batch: quota, consent per query, lookup, audit.

    The one core of the CLI build (``target`` = the release id) and of the verification API
    (``target`` = the product id, ``channel`` names the token); returns ``query_id, kind,
    result, reason`` and the batch metadata.
    """
    ver = spec.verification
    assert ver is not None
    queries = queries.with_row_index("_row")
    today = dt.datetime.now(dt.UTC).date()
    # The policy ceiling binds even if it was lowered after the spec was checked.
    ceiling = quota_ceiling(home)
    per_day = min(ver.quota_per_day, ceiling)
    granted = take_quota(home, who.name, queries.height, per_day, today)
    key = load_key(home, PSEUDONYM)

    # Consent per query where the check needs it: the subject is the identifier verified.
    exempt = [c.kind for c in ver.checks if not c.consent_required]
    needs = queries.filter(~pl.col("kind").is_in(exempt))
    decided = ConsentLedger(home).check_many(
        pl.DataFrame(
            {
                "token": subject_tokens(key, needs["id_number"]),
                "purpose": [ver.consent_purpose] * needs.height,
            }
        )
    )
    valid_refs = _valid_refs(home, decided, ver.consent_purpose)
    consent = (
        needs.select(
            "_row",
            pl.col("consent_ref").str.strip_chars().alias("_ref"),
            decided["token"].alias("_token"),
            decided["ok"].fill_null(False).alias("_consent_ok"),
            decided["reason"].alias("_consent_reason"),
        )
        .join(valid_refs, on=["_token", "_ref"], how="left")
        .select(
            "_row",
            "_consent_ok",
            "_consent_reason",
            pl.col("_ref_ok").fill_null(False),
        )
    )
    queries = queries.join(consent, on="_row", how="left").with_columns(
        pl.col("_consent_ok").fill_null(True),  # exempt kinds
        pl.col("_ref_ok").fill_null(True),
        (pl.col("_row") < granted).alias("_in_quota"),
        pl.col("consent_ref")
        .str.strip_chars()
        .fill_null("")
        .str.len_chars()
        .gt(0)
        .alias("_has_ref"),
    )
    parts = []
    for check in ver.checks:
        sub = queries.filter(pl.col("kind") == check.kind)
        sub = sub.with_columns(
            tokens(key, normalize_series(sub["id_number"], "id")).alias("key_token"),
            tokens(key, normalize_series(sub["name"], "name")).alias("name_token"),
        )
        parts.append(lookup(check, sub))
    joined = pl.concat(parts, how="diagonal_relaxed").sort("_row")
    # The detailed reason (audit log only), then what the requester is told.
    detail = (
        pl.when(~pl.col("_in_quota"))
        .then(pl.lit(QUOTA_REFUSED))
        .when(~pl.col("_has_ref") & ~pl.col("kind").is_in(exempt))
        .then(pl.lit("consent_ref_missing"))
        .when(~pl.col("_consent_ok"))
        .then(pl.lit("consent_") + pl.col("_consent_reason"))
        .when(~pl.col("_ref_ok"))
        .then(pl.lit("consent_ref_mismatch"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    decided_rows = joined.select(
        "query_id",
        "kind",
        pl.when(detail.is_not_null())
        .then(pl.lit("refused"))
        .when(pl.col("_match").fill_null(False))
        .then(pl.lit("match"))
        .when(pl.col("_found").fill_null(False))
        .then(pl.lit("mismatch"))
        .otherwise(pl.lit("not_found"))
        .alias("result"),
        pl.when(detail == QUOTA_REFUSED)
        .then(pl.lit(QUOTA_REFUSED))
        .when(detail.is_not_null())
        .then(pl.lit(CONSENT_REFUSED))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("reason"),
        detail.alias("_detail"),
    )
    result = decided_rows.drop("_detail")
    counts = {r: int((result["result"] == r).sum()) for r in RESULTS}
    refused = decided_rows.filter(pl.col("result") == "refused")
    reasons = _counts(refused["reason"])
    via = {"via": who.via} if who.via else {}
    extra = channel or {}
    record(
        home,
        "verify.batch",
        target,
        "ok",
        {
            "requester": who.name,
            "role": who.role,
            **via,
            **extra,
            "queries": result.height,
            "results": counts,
            "answers": [[q, r] for q, r in zip(result["query_id"], result["result"], strict=True)],
        },
    )
    if refused.height:
        record(
            home,
            "verify.refused",
            target,
            "refused",
            {
                "requester": who.name,
                "refused": [
                    [q, r] for q, r in zip(refused["query_id"], refused["_detail"], strict=True)
                ],
                "reasons": _counts(refused["_detail"]),
                "told": reasons,
            },
        )
    meta: dict[str, Any] = {
        "requester": who.name,
        "queries": result.height,
        "results": counts,
        "refused_reasons": reasons,
        "quota": {
            "per_day": per_day,
            "spec_per_day": ver.quota_per_day,
            "policy_ceiling": ceiling,
            "day": today.isoformat(),
            "granted": granted,
        },
        "consent_purpose": ver.consent_purpose,
    }
    return result, meta


class VerificationBuilder:
    def partitionwise(self, ctx: BuildContext) -> str | None:
        """The keyed index is a distinct union of per-value tokens: any partitioning will do
        (``scaleout.placement`` then builds it on the cluster)."""
        return None

    def extra_inputs(self, home: Home, spec: ProductSpec, options: BuildOptions) -> list[InputRef]:
        if options.queries is None:
            raise ValidationError(
                f"product {spec.id} answers a batch of queries",
                hint=f"run 'shuyu build {spec.id} --queries FILE'",
            )
        assert spec.verification is not None
        who = requester(home, spec, options)
        check_quota_ceiling(home, spec)
        frame = read_queries(options.queries, spec.verification.max_batch)
        screen_query_ids(home, spec, frame, who)
        digest = sm3_file(options.queries)
        return [
            InputRef(
                resource="VERIFICATION_QUERIES",
                snapshot_id=f"{digest[:16]}-{who.name}",
                fields=list(QUERY_COLUMNS),
                rows=frame.height,
                snapshot_sm3=digest,
            )
        ]

    def reversible_outputs(self, spec: ProductSpec) -> bool:
        return False

    def plan(self, ctx: BuildContext) -> None:
        """Each check's key and name fields are declared inputs (the batch was read by
        ``extra_inputs``); this kind draws no noise and charges nothing."""
        spec = ctx.spec
        assert spec.verification is not None
        declared = spec.declared_fields
        for c in spec.verification.checks:
            fields = declared.get(c.resource, [])
            missing = [f for f in (c.key_field, c.name_field) if f not in fields]
            if missing:
                raise ValidationError(
                    f"product {spec.id}: check {c.kind} reads {c.resource} field(s) "
                    f"{', '.join(missing)} the spec does not declare",
                    hint="declare them under inputs",
                )

    def draw(self, ctx: BuildContext) -> Draw:
        spec = ctx.spec
        ver = spec.verification
        assert ver is not None and ctx.options.queries is not None
        who = requester(ctx.home, spec, ctx.options)
        batch = ctx.extra_inputs[0]
        if sm3_file(ctx.options.queries) != batch.snapshot_sm3:
            raise ValidationError(
                f"query file {ctx.options.queries} changed while the batch was being built",
                hint="run the build again with a file that is not being written",
            )
        queries = read_queries(ctx.options.queries, ver.max_batch)
        screen_query_ids(ctx.home, spec, queries, who)
        result, meta = answer(
            ctx.home,
            spec,
            queries,
            who,
            ctx.release_id,
            join_lookup(lambda check: keyed_index(ctx, check, load_key(ctx.home, PSEUDONYM))),
        )
        return Draw(tables={"results": result}, meta=meta)

    def finish(self, ctx: BuildContext, draw: Draw, stage: Path) -> Finished:
        spec = ctx.spec
        df = draw.tables["results"]
        files = outputs.write_table(
            stage,
            "results",
            df,
            [f for f in spec.outputs.formats if f != "html"],
            "verification_flag",
            {
                "query_id": "the requester's query id",
                "kind": "person (身份信息核验) or enterprise (企业信息核验)",
                "result": "match | mismatch | not_found | refused",
                "reason": f"why a query was refused: {QUOTA_REFUSED} or {CONSENT_REFUSED} "
                "(one reason for every consent failure); null otherwise",
            },
        )
        return Finished(
            outputs=files,
            verification=draw.meta,
            notes=[
                "Only match / mismatch / not_found leave the domain; refused queries carry "
                "the refusal reason only.",
                "Names are compared after NFKC normalization without whitespace; identifiers "
                "after trimming and upper-casing.",
            ],
        )
