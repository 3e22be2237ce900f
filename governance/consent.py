"""The ledger of data-subject authorizations (信息主体授权台账) for verification services.

A subject is stored only as a keyed pseudonym: ``subject_token`` = HMAC-SM3 under the
pseudonym key (``shuyu keys init``) over a fixed domain prefix and the normalized ID. Raw IDs
are tokenized as a file is read and never written to the database. The prefix keeps these
tokens distinct from other HMAC pseudonyms made with the same key (e.g. in a desensitized
dataset), so a published pseudonym cannot be joined to the ledger.

Times are UTC. A date-only ``granted_at`` means the start of that day; a date-only
``expires_at`` means the consent holds through that whole day.

``check_many`` decides a whole batch of queries with one polars join (no per-row Python); the
reasons are ``ok``, ``missing``, ``wrong_purpose``, ``expired``, ``revoked`` and
``not_yet_valid``.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from governance.actors import current_actor
from governance.audit import record
from shuyu_core.db import METADATA
from shuyu_core.errors import NotFoundError, PermissionDenied, ValidationError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home, state_engine
from shuyu_core.keys import PSEUDONYM, load_key

_DOMAIN = b"shuyu/consent-subject/v1\x00"
REASONS = ("ok", "revoked", "expired", "not_yet_valid", "wrong_purpose", "missing")
_IN_CHUNK = 900

consent_ledger = Table(
    "consent_ledger",
    METADATA,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("subject_token", String(64), nullable=False),
    Column("purpose", String(100), nullable=False),
    # naive UTC: SQLite keeps no zone, so both backends store UTC without one
    Column("granted_at", DateTime(), nullable=False),
    Column("expires_at", DateTime(), nullable=False),
    Column("evidence_ref", String(200), nullable=False),
    Column("revoked", Boolean(), nullable=False, default=False),
    Column("revoked_at", DateTime(), nullable=True),
    Column("revoke_reason", String(500), nullable=True),
    Column("source", String(500), nullable=False),
    Column("recorded_at", DateTime(), nullable=False),
    Column("recorded_by", String(200), nullable=False),
    # Also the lookup index: its prefix (subject_token, purpose) serves every check.
    UniqueConstraint(
        "subject_token", "purpose", "granted_at", "evidence_ref", name="uq_consent_grant"
    ),
)


# --------------------------------------------------------------------------- tokens


def _normalize(value: str) -> str:
    # ID numbers arrive with stray spaces and a lower-case check character 'x'.
    return value.strip().upper()


def subject_token(key: bytes, id_value: str) -> str:
    """The pseudonym of one subject ID (HMAC-SM3, hex)."""
    return hmac.new(key, _DOMAIN + _normalize(id_value).encode("utf-8"), "sm3").hexdigest()


def subject_tokens(key: bytes, ids: pl.Series) -> pl.Series:
    """``subject_token`` over a Series: one HMAC per distinct value, mapped back with a
    vectorized replace. Null or blank IDs give null tokens."""
    norm = ids.cast(pl.String).str.strip_chars().str.to_uppercase()
    norm = pl.select(pl.when(norm.str.len_chars() > 0).then(norm)).to_series()
    uniq = norm.drop_nulls().unique()
    if uniq.len() == 0:
        return pl.Series(ids.name, [None] * ids.len(), dtype=pl.String)
    # The keyed state after the domain prefix is computed once and copied per value.
    base = hmac.new(key, _DOMAIN, "sm3")
    out: list[str] = []
    for v in uniq.to_list():
        h = base.copy()
        h.update(v.encode("utf-8"))
        out.append(h.hexdigest())
    tokens = pl.Series(out, dtype=pl.String)
    return norm.replace_strict(uniq, tokens, default=None, return_dtype=pl.String).alias(ids.name)


def subject_token_expr(key: bytes, column: str) -> pl.Expr:
    """``subject_tokens`` as a lazy expression (batch by batch)."""
    return pl.col(column).map_batches(lambda s: subject_tokens(key, s), return_dtype=pl.String)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class ConsentDecision:
    ok: bool
    reason: str
    consent_id: int | None = None


def _utcnow_naive() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _as_utc_naive(value: dt.date | dt.datetime, *, end_of_day: bool = False) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    start = dt.datetime(value.year, value.month, value.day)
    return start + dt.timedelta(days=1) if end_of_day else start


_PRIORITY = {"ok": 0, "revoked": 1, "expired": 2, "not_yet_valid": 3}


def decide(queries: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Pure decision: ``queries`` (token, purpose, at) against ``ledger`` rows (id,
    subject_token, purpose, granted_at, expires_at, revoked); adds ok, reason, consent_id
    in the order of ``queries``."""
    q = queries.with_row_index("_row")
    led = ledger.select(
        pl.col("id").alias("consent_id"),
        pl.col("subject_token").alias("token"),
        "purpose",
        "granted_at",
        "expires_at",
        "revoked",
    )
    matched = (
        q.select("_row", "token", "purpose", "at")
        .join(led, on=["token", "purpose"], how="inner")
        .with_columns(
            pl.when(pl.col("revoked"))
            .then(pl.lit(_PRIORITY["revoked"]))
            .when(pl.col("granted_at") > pl.col("at"))
            .then(pl.lit(_PRIORITY["not_yet_valid"]))
            .when(pl.col("expires_at") <= pl.col("at"))
            .then(pl.lit(_PRIORITY["expired"]))
            .otherwise(pl.lit(_PRIORITY["ok"]))
            .alias("_prio")
        )
        # The best record decides: any valid one wins, then revoked, expired, future.
        .sort(["_row", "_prio", "expires_at"], descending=[False, False, True])
        .group_by("_row", maintain_order=True)
        .agg(pl.col("_prio").first(), pl.col("consent_id").first())
    )
    known = led.select("token").unique().with_columns(pl.lit(True).alias("_known"))
    names = pl.Series(list(_PRIORITY), dtype=pl.String)
    out = (
        q.join(matched, on="_row", how="left")
        .join(known, on="token", how="left")
        .with_columns(
            pl.when(pl.col("_prio").is_not_null())
            .then(pl.col("_prio").replace_strict(list(_PRIORITY.values()), names))
            .when(pl.col("_known").fill_null(False))
            .then(pl.lit("wrong_purpose"))
            .otherwise(pl.lit("missing"))
            .alias("reason")
        )
        .with_columns((pl.col("reason") == "ok").alias("ok"))
        .sort("_row")
        .drop("_row", "_prio", "_known")
    )
    return out


# --------------------------------------------------------------------------- the ledger

_LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "subject_token": pl.String(),
    "purpose": pl.String(),
    "granted_at": pl.Datetime("us"),
    "expires_at": pl.Datetime("us"),
    "evidence_ref": pl.String(),
    "revoked": pl.Boolean(),
    "revoked_at": pl.Datetime("us"),
    "revoke_reason": pl.String(),
    "source": pl.String(),
    "recorded_at": pl.Datetime("us"),
    "recorded_by": pl.String(),
}


class ConsentLedger:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.engine = state_engine(home)
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = load_key(self.home, PSEUDONYM)
        return self._key

    def token(self, subject_id: str) -> str:
        return subject_token(self.key, subject_id)

    # ------------------------------------------------------------------ writes

    def _insert(self, data: pl.DataFrame) -> int:
        """Insert new rows, skipping grants already recorded; returns how many were added."""
        if data.is_empty():
            return 0
        # Sorted by token, inserts walk the B-tree indexes in order instead of at random.
        data = data.sort("subject_token", "purpose", "granted_at")
        with self.engine.begin() as conn:
            before = conn.execute(select(func.count()).select_from(consent_ledger)).scalar_one()
            if self.engine.dialect.name == "sqlite":
                # Bulk path: datetimes pre-formatted in SQLAlchemy's SQLite storage format by
                # polars, so no per-value Python conversion runs on a large import.
                ts = "%Y-%m-%d %H:%M:%S.%6f"
                rows = data.select(
                    "subject_token",
                    "purpose",
                    pl.col("granted_at").dt.strftime(ts),
                    pl.col("expires_at").dt.strftime(ts),
                    "evidence_ref",
                    pl.col("revoked").cast(pl.Int8),
                    "source",
                    pl.col("recorded_at").dt.strftime(ts),
                    "recorded_by",
                ).rows()
                conn.exec_driver_sql(
                    "INSERT INTO consent_ledger (subject_token, purpose, granted_at, expires_at,"
                    " evidence_ref, revoked, source, recorded_at, recorded_by)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    rows,
                )
            else:
                stmt = postgresql.insert(consent_ledger).on_conflict_do_nothing(
                    index_elements=["subject_token", "purpose", "granted_at", "evidence_ref"]
                )
                for chunk in data.iter_slices(5000):
                    conn.execute(stmt, chunk.to_dicts())
            after = conn.execute(select(func.count()).select_from(consent_ledger)).scalar_one()
        return int(after) - int(before)

    def import_frame(
        self,
        frame: pl.DataFrame,
        *,
        source: str,
        id_column: str = "subject_id",
        purpose: str | None = None,
    ) -> dict[str, Any]:
        """Tokenize and store authorizations. Columns: ``id_column`` (raw subject ID),
        ``purpose`` (unless given), ``granted_at``, ``expires_at``, ``evidence_ref``."""
        need = [id_column, "granted_at", "expires_at", "evidence_ref"]
        if purpose is None:
            need.append("purpose")
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValidationError(
                f"{source}: missing column(s) {', '.join(missing)} (has: "
                f"{', '.join(frame.columns)})",
                hint=f"provide {', '.join(need)}" + ("" if purpose else " or pass --purpose"),
            )
        if purpose is not None:
            frame = frame.with_columns(pl.lit(purpose).alias("purpose"))
        tokens = subject_tokens(self.key, frame[id_column])
        # The raw ID column goes out of scope here; only the token goes on.
        data = pl.DataFrame(
            {
                "subject_token": tokens,
                "purpose": frame["purpose"].cast(pl.String).str.strip_chars(),
                "granted_at": _parse_times(frame["granted_at"], source, end_of_day=False),
                "expires_at": _parse_times(frame["expires_at"], source, end_of_day=True),
                "evidence_ref": frame["evidence_ref"].cast(pl.String).str.strip_chars(),
            }
        )
        _reject(data, source, pl.col("subject_token").is_null(), f"an empty {id_column}")
        _reject(
            data,
            source,
            pl.col("purpose").is_null() | (pl.col("purpose") == ""),
            "an empty purpose",
        )
        _reject(
            data,
            source,
            pl.col("evidence_ref").is_null() | (pl.col("evidence_ref") == ""),
            "an empty evidence_ref",
        )
        _reject(
            data,
            source,
            pl.col("expires_at") <= pl.col("granted_at"),
            "expires_at not after granted_at",
        )
        who = current_actor()
        now = _utcnow_naive()
        data = data.with_columns(
            pl.lit(False).alias("revoked"),
            pl.lit(source[:500]).alias("source"),
            pl.lit(now).cast(pl.Datetime("us")).alias("recorded_at"),
            pl.lit(who.name[:200]).alias("recorded_by"),
        )
        added = self._insert(data)
        purposes = data["purpose"].value_counts(sort=True).rows()
        summary = {
            "source": source,
            "rows": data.height,
            "added": added,
            "duplicates": data.height - added,
            "subjects": int(data["subject_token"].n_unique()),
            "purposes": {str(p): int(n) for p, n in purposes},
        }
        record(self.home, "consent.import", source, "ok", summary)
        return summary

    def import_file(
        self, path: Path, *, id_column: str = "subject_id", purpose: str | None = None
    ) -> dict[str, Any]:
        """Import a CSV or Parquet file of authorizations with raw subject IDs."""
        if not path.exists():
            raise NotFoundError(f"consent file {path} does not exist", hint="check the path")
        suffix = path.suffix.lower()
        try:
            if suffix == ".parquet":
                frame = pl.read_parquet(path)
            elif suffix in (".csv", ".txt"):
                # Strings only: ID numbers keep their leading zeros and trailing X.
                frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
            else:
                raise ValidationError(
                    f"{path}: unsupported consent file type {suffix!r}",
                    hint="use a .csv or .parquet file",
                )
        except (pl.exceptions.ComputeError, OSError, UnicodeDecodeError) as exc:
            raise ValidationError(
                f"{path}: cannot read ({exc})".splitlines()[0],
                hint="provide a UTF-8 CSV with a header row, or a Parquet file",
            ) from exc
        source = f"{path.name} sm3:{sm3_file(path)[:16]}"
        return self.import_frame(frame, source=source, id_column=id_column, purpose=purpose)

    def grant(
        self,
        *,
        purpose: str,
        evidence_ref: str,
        expires_at: dt.date | dt.datetime,
        granted_at: dt.date | dt.datetime | None = None,
        subject_id: str | None = None,
        token: str | None = None,
    ) -> int:
        """Record one authorization (raw ``subject_id`` is tokenized) and return its id."""
        if (subject_id is None) == (token is None):
            raise ValueError("give exactly one of subject_id and token")
        tok = token if token is not None else self.token(subject_id or "")
        start = _as_utc_naive(granted_at) if granted_at is not None else _utcnow_naive()
        end = _as_utc_naive(expires_at, end_of_day=True)
        if end <= start:
            raise ValidationError(
                f"consent for {purpose}: expires_at {end} is not after granted_at {start}",
                hint="give an expiry after the grant",
            )
        who = current_actor()
        with self.engine.begin() as conn:
            result = conn.execute(
                consent_ledger.insert().values(
                    subject_token=tok,
                    purpose=purpose,
                    granted_at=start,
                    expires_at=end,
                    evidence_ref=evidence_ref,
                    revoked=False,
                    source="grant",
                    recorded_at=_utcnow_naive(),
                    recorded_by=who.name[:200],
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            new_id = int(key[0])
        record(
            self.home,
            "consent.grant",
            f"consent {new_id}",
            "ok",
            {"token": tok[:16], "purpose": purpose, "expires_at": end.isoformat()},
        )
        return new_id

    def revoke(
        self,
        *,
        consent_id: int | None = None,
        subject_id: str | None = None,
        token: str | None = None,
        purpose: str | None = None,
        reason: str = "revoked by the data subject",
        at: dt.datetime | None = None,
    ) -> int:
        """Revoke by consent id, or every active grant of a subject (for one purpose)."""
        cond: ColumnElement[bool] = consent_ledger.c.revoked.is_(False)
        if consent_id is not None:
            cond = cond & (consent_ledger.c.id == consent_id)
            what = f"consent {consent_id}"
        else:
            if (subject_id is None) == (token is None):
                raise ValueError("give consent_id, or exactly one of subject_id and token")
            tok = token if token is not None else self.token(subject_id or "")
            cond = cond & (consent_ledger.c.subject_token == tok)
            what = f"subject {tok[:16]}"
            if purpose is not None:
                cond = cond & (consent_ledger.c.purpose == purpose)
                what += f" purpose {purpose}"
        when = _as_utc_naive(at) if at is not None else _utcnow_naive()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(consent_ledger)
                .where(cond)
                .values(revoked=True, revoked_at=when, revoke_reason=reason[:500])
            ).rowcount
        if not n:
            exc = NotFoundError(
                f"no active consent matches {what}",
                hint="see 'shuyu consent list' for consent ids",
            )
            record(self.home, "consent.revoke", what, "error", {"error": exc.message})
            exc.audited = True
            raise exc
        record(self.home, "consent.revoke", what, "ok", {"revoked": int(n), "reason": reason})
        return int(n)

    # ------------------------------------------------------------------ reads

    def list(
        self,
        *,
        purpose: str | None = None,
        token: str | None = None,
        include_revoked: bool = True,
        limit: int | None = None,
    ) -> pl.DataFrame:
        stmt = select(consent_ledger).order_by(consent_ledger.c.id)
        if purpose is not None:
            stmt = stmt.where(consent_ledger.c.purpose == purpose)
        if token is not None:
            stmt = stmt.where(consent_ledger.c.subject_token == token)
        if not include_revoked:
            stmt = stmt.where(consent_ledger.c.revoked.is_(False))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return pl.DataFrame([tuple(r) for r in rows], schema=_LEDGER_SCHEMA, orient="row")

    def _ledger_for(self, tokens: pl.Series) -> pl.DataFrame:
        cols = [
            consent_ledger.c.id,
            consent_ledger.c.subject_token,
            consent_ledger.c.purpose,
            consent_ledger.c.granted_at,
            consent_ledger.c.expires_at,
            consent_ledger.c.revoked,
        ]
        schema = {k: _LEDGER_SCHEMA[k] for k in (c.name for c in cols)}
        uniq = tokens.drop_nulls().unique().to_list()
        rows: list[tuple[Any, ...]] = []
        with self.engine.connect() as conn:
            if len(uniq) > 50_000:
                # A batch this large is cheaper as one scan than as many IN lists.
                rows = [tuple(r) for r in conn.execute(select(*cols)).all()]
            else:
                for i in range(0, len(uniq), _IN_CHUNK):
                    chunk = uniq[i : i + _IN_CHUNK]
                    stmt = select(*cols).where(consent_ledger.c.subject_token.in_(chunk))
                    rows.extend(tuple(r) for r in conn.execute(stmt).all())
        return pl.DataFrame(rows, schema=schema, orient="row")

    def check_many(
        self,
        queries: pl.DataFrame,
        at: dt.date | dt.datetime | None = None,
        *,
        audit: bool = True,
    ) -> pl.DataFrame:
        """Decide every (token, purpose) row; adds ``ok``, ``reason``, ``consent_id``.

        ``at`` defaults to now; a per-row ``at`` column (datetime) takes precedence.
        """
        missing = [c for c in ("token", "purpose") if c not in queries.columns]
        if missing:
            raise ValueError(f"check_many needs columns token and purpose; missing {missing}")
        moment = _as_utc_naive(at) if at is not None else _utcnow_naive()
        q = queries.with_columns(pl.col("token").cast(pl.String), pl.col("purpose").cast(pl.String))
        if "at" in q.columns:
            q = q.with_columns(pl.col("at").cast(pl.Datetime("us")))
        else:
            q = q.with_columns(pl.lit(moment).cast(pl.Datetime("us")).alias("at"))
        out = decide(q, self._ledger_for(q["token"]))
        if "at" not in queries.columns:
            out = out.drop("at")
        if audit:
            counts = (
                Counter(out["reason"].to_list())
                if out.height < 1_000_000
                else Counter(dict(out["reason"].value_counts().rows()))
            )
            refused = out.height - counts.get("ok", 0)
            record(
                self.home,
                "consent.check",
                f"batch of {out.height}",
                "refused" if refused else "ok",
                {
                    "queries": out.height,
                    "reasons": dict(sorted(counts.items())),
                    "purposes": sorted(q["purpose"].drop_nulls().unique().to_list()),
                    "at": moment.isoformat(),
                },
            )
        return out

    def check(
        self, token: str, purpose: str, at: dt.date | dt.datetime | None = None
    ) -> ConsentDecision:
        out = self.check_many(
            pl.DataFrame({"token": [token], "purpose": [purpose]}), at, audit=False
        )
        cid = out["consent_id"][0]
        return ConsentDecision(
            bool(out["ok"][0]), str(out["reason"][0]), int(cid) if cid is not None else None
        )

    def require(
        self, token: str, purpose: str, at: dt.date | dt.datetime | None = None
    ) -> ConsentDecision:
        """``check``, raising an audited PermissionDenied when there is no valid consent."""
        decision = self.check(token, purpose, at)
        moment = _as_utc_naive(at) if at is not None else _utcnow_naive()
        obj = f"subject {token[:16]} purpose {purpose}"
        details = {"reason": decision.reason, "consent_id": decision.consent_id}
        details["at"] = moment.isoformat()
        if decision.ok:
            record(self.home, "consent.check", obj, "ok", details)
            return decision
        text = {
            "missing": "no authorization is recorded",
            "wrong_purpose": "authorizations exist only for other purposes",
            "expired": "the authorization has expired",
            "revoked": "the authorization was revoked",
            "not_yet_valid": "the authorization is not yet in force",
        }[decision.reason]
        exc = PermissionDenied(
            f"consent refused ({decision.reason}) for subject {token[:16]}… and purpose "
            f"{purpose}: {text} (信息主体授权)",
            hint="import the subject's authorization with 'shuyu consent import FILE'",
        )
        record(self.home, "consent.check", obj, "refused", details)
        exc.audited = True
        raise exc


def _parse_times(col: pl.Series, source: str, *, end_of_day: bool) -> pl.Series:
    """Dates or datetimes (strings or typed) as naive UTC datetimes."""
    name = col.name
    extra = dt.timedelta(days=1 if end_of_day else 0)
    if col.dtype == pl.Date:
        return col.cast(pl.Datetime("us")) + extra
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    text = col.cast(pl.String).str.strip_chars()
    date_only = text.str.contains(r"^\d{4}-\d{2}-\d{2}$").fill_null(False)
    dates = pl.select(pl.when(date_only).then(text)).to_series()
    parsed = dates.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")) + extra
    # ISO 8601 only: polars would read 01/02/2025 as 1 February, a guess we refuse to make.
    iso_time = text.str.contains(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}").fill_null(False)
    times = pl.select(pl.when(iso_time).then(text)).to_series()
    if times.null_count() < times.len():
        # One datetime format per column: polars infers it from the first value.
        moments = times.str.to_datetime(time_unit="us", strict=False)
        if isinstance(moments.dtype, pl.Datetime) and moments.dtype.time_zone is not None:
            moments = moments.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        parsed = parsed.fill_null(moments.cast(pl.Datetime("us")))
    bad = text.is_not_null() & parsed.is_null()
    if bad.any():
        first = int(bad.arg_true()[0])
        raise ValidationError(
            f"{source}: column {name}: {int(bad.sum())} value(s) are not dates or ISO times "
            f"(first at data row {first + 1}: {text[first]!r})",
            hint="write dates as YYYY-MM-DD or times as ISO 8601",
        )
    return parsed.alias(name)


def _reject(data: pl.DataFrame, source: str, bad: pl.Expr, what: str) -> None:
    flags = data.select(bad.fill_null(True).alias("bad"))["bad"]
    if flags.any():
        first = int(flags.arg_true()[0])
        raise ValidationError(
            f"{source}: {int(flags.sum())} row(s) have {what} (first at data row {first + 1})",
            hint="fix those rows and import again (nothing was imported)",
        )
