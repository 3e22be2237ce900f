"""The domain privacy policy: floors and switches set by the domain, never by a product spec.

Where the policy comes from (the trust model, docs/governance.md):

1. after ``shuyu init``, the latest version stored in the state database
   (``domain_policy_versions``). Each version is written by an ``admin`` with an audit entry
   carrying the SM3 of its canonical JSON; loading recomputes the digest and compares it with
   that audit entry, so an edited row stops every gate with exit 8;
2. before ``init`` (a fresh domain), the file named by ``SHUYU_DOMAIN_POLICY``, else the
   shipped ``catalogs/domain_policy.yaml``. ``init`` stores that file as version 1.

Gates read the policy through :func:`effective` and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, Text, select

from catalogs.loading import load_model, parse_model
from governance.actors import Actor
from governance.floors import PrivacyFloors
from shuyu_core.db import METADATA
from shuyu_core.errors import IntegrityError, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_hex
from shuyu_core.home import Home, state_engine

PACKAGED_POLICY = Path(__file__).resolve().parent.parent / "catalogs" / "domain_policy.yaml"

domain_policy_versions = Table(
    "domain_policy_versions",
    METADATA,
    Column("version", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("content", Text, nullable=False),
    Column("sm3", String(64), nullable=False),
    Column("applied_by", String(200), nullable=False),
    Column("applied_at", DateTime(), nullable=False),
    Column("reason", Text, nullable=False),
    Column("audit_hash", String(64), nullable=False),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceAccount(_Strict):
    name: str = Field(min_length=1, max_length=64)
    purpose: str = ""


class SeparationOfDuties(_Strict):
    enabled: bool = True
    reason: str | None = Field(
        default=None, description="required when enabled is false; recorded in the audit chain"
    )

    @model_validator(mode="after")
    def _reason_when_relaxed(self) -> SeparationOfDuties:
        if not self.enabled and not (self.reason or "").strip():
            raise ValueError("separation_of_duties.enabled: false needs a reason")
        return self


class PortalPolicy(_Strict):
    """Session rules of the portal (数据运营门户)."""

    idle_timeout_minutes: int = Field(default=30, ge=1, le=720)
    session_max_hours: int = Field(default=12, ge=1, le=24)
    max_failed_logins: int = Field(default=5, ge=1, le=20)
    lockout_minutes: int = Field(default=15, ge=1, le=1440)
    # POST /api/v1/verify: requests per API token per minute (more get 429)
    api_requests_per_minute: int = Field(default=600, ge=1, le=100_000)


class VerificationPolicy(_Strict):
    """Ceilings on verification (数据核验): how many queries one requester (an authenticated
    account, operators included) may ask per UTC day across all verification products. A
    product spec's ``quota_per_day`` above it is refused at validation and at build."""

    max_quota_per_requester_per_day: int = Field(default=5000, gt=0, le=1_000_000)


class ScaleOutPolicy(_Strict):
    """The domain's Dask cluster (docs/scale.md): builds, quality and desensitization of
    partitioned snapshots run their per-partition work there unless told otherwise."""

    dask_scheduler: str | None = Field(default=None, pattern=r"^(tcp|tls)://[^\s]+$")


class DomainPolicy(BaseModel):
    """The whole policy. Sections other than identity are added by the areas that enforce them;
    unknown keys are refused so that a misspelt floor is never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_accounts: list[ServiceAccount] = Field(default_factory=list)
    separation_of_duties: SeparationOfDuties = SeparationOfDuties()
    portal: PortalPolicy = PortalPolicy()
    privacy_floors: PrivacyFloors = PrivacyFloors()
    verification: VerificationPolicy = VerificationPolicy()
    scaleout: ScaleOutPolicy = ScaleOutPolicy()

    def is_service_account(self, login: str) -> bool:
        return any(s.name == login for s in self.service_accounts)

    def canonical(self) -> str:
        return json.dumps(
            self.model_dump(mode="json"), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )

    def digest(self) -> str:
        return sm3_hex(self.canonical().encode("utf-8"))


def bootstrap_path() -> Path:
    env = os.environ.get("SHUYU_DOMAIN_POLICY")
    return Path(env).expanduser() if env else PACKAGED_POLICY


def load_file(path: Path) -> DomainPolicy:
    if not path.is_file():
        raise ValidationError(
            f"domain policy file {path} does not exist",
            hint="give an existing YAML file (see catalogs/domain_policy.yaml)",
        )
    return load_model(DomainPolicy, path)


class PolicySource(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: int | None
    origin: str
    applied_by: str | None = None
    applied_at: dt.datetime | None = None
    sm3: str


def _latest_row(home: Home) -> Any:
    with state_engine(home).connect() as conn:
        return conn.execute(
            select(domain_policy_versions).order_by(domain_policy_versions.c.version.desc())
        ).first()


def _verified(home: Home, row: Any) -> DomainPolicy:
    """The stored version, after checking its content against its digest and audit entry."""
    from governance.audit import entry_by_hash

    where = f"domain policy version {row.version}"
    hint = "an admin investigates with 'shuyu audit verify' and re-applies the policy"
    if sm3_hex(row.content.encode("utf-8")) != row.sm3:
        raise IntegrityError(f"{where} was edited in the database (digest mismatch)", hint=hint)
    entry = entry_by_hash(home, row.audit_hash)
    if (
        entry is None
        or entry["action"] != "policy.apply"
        or entry["details"].get("sm3") != row.sm3
        or entry["details"].get("version") != int(row.version)
    ):
        raise IntegrityError(f"{where} has no matching audit record", hint=hint)
    return parse_model(DomainPolicy, json.loads(row.content), where)


def _latest_applied(home: Home) -> Any:
    """The newest ``policy.apply`` entry of the audit chain (hash and details), or None."""
    from governance.audit import audit_log

    with state_engine(home).connect() as conn:
        return conn.execute(
            select(audit_log.c.hash, audit_log.c.details)
            .where(audit_log.c.action == "policy.apply", audit_log.c.outcome == "ok")
            .order_by(audit_log.c.seq.desc())
            .limit(1)
        ).first()


def _refuse_rollback(home: Home, message: str) -> IntegrityError:
    """A stored policy that is not the newest one applied: exit 8, audited."""
    from governance.audit import record
    from governance.identity import login_name

    exc = IntegrityError(
        message,
        hint="an admin investigates with 'shuyu audit verify' and re-applies the policy "
        "('shuyu policy apply FILE --reason TEXT')",
    )
    with contextlib.suppress(ShuyuError):
        # Named explicitly: resolving the current actor would read this very policy.
        record(
            home,
            "policy.verify",
            "domain-policy",
            "refused",
            {"reason": message},
            actor=Actor(login_name(), "none"),
        )
        exc.audited = True
    return exc


def effective_with_source(home: Home) -> tuple[DomainPolicy, PolicySource]:
    row = _latest_row(home)
    applied = _latest_applied(home)
    # The newest version row must be the newest one an admin applied: deleting rows would
    # otherwise replay an older (relaxed) version, or, with none left, fall back to the
    # SHUYU_DOMAIN_POLICY file of whoever runs the command.
    if applied is not None and (row is None or row.audit_hash != applied.hash):
        version = json.loads(applied.details).get("version")
        raise _refuse_rollback(
            home,
            f"domain policy version {version}, the newest applied in the audit chain, is "
            "missing from the state database"
            + (f" (newest stored: version {row.version})" if row is not None else ""),
        )
    if row is not None:
        policy = _verified(home, row)
        at = row.applied_at
        return policy, PolicySource(
            version=int(row.version),
            origin="state database",
            applied_by=row.applied_by,
            applied_at=at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at,
            sm3=row.sm3,
        )
    path = bootstrap_path()
    policy = load_file(path)
    return policy, PolicySource(version=None, origin=f"bootstrap file {path}", sm3=policy.digest())


def problems(home: Home) -> list[str]:
    """Every stored policy version that does not match its audit record."""
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(domain_policy_versions).order_by(domain_policy_versions.c.version)
        ).all()
    found: list[str] = []
    for row in rows:
        try:
            _verified(home, row)
        except (IntegrityError, ValidationError) as exc:
            found.append(exc.message)
    return found


def effective(home: Home) -> DomainPolicy:
    """The policy every gate enforces (see the module doc)."""
    return effective_with_source(home)[0]


def is_applied(home: Home) -> bool:
    return _latest_row(home) is not None


def apply(
    home: Home, policy: DomainPolicy, reason: str, applied_by: str, actor: Actor | None = None
) -> int:
    """Store ``policy`` as the next version, with its audit entry. Callers check the admin role;
    ``actor`` is who the audit entry names (default: the current actor)."""
    from governance.audit import record

    if not reason.strip():
        raise ValidationError(
            "a domain policy change needs a reason", hint="give --reason TEXT (it is audited)"
        )
    content = policy.canonical()
    digest = sm3_hex(content.encode("utf-8"))
    previous = _latest_row(home)
    version = int(previous.version) + 1 if previous is not None else 1
    details: dict[str, Any] = {
        "version": version,
        "sm3": digest,
        "reason": reason.strip(),
        "previous_sm3": previous.sm3 if previous is not None else None,
        "separation_of_duties": policy.separation_of_duties.model_dump(),
        "changes": changes(
            json.loads(previous.content) if previous is not None else {},
            json.loads(content),
        ),
    }
    audit_hash = record(home, "policy.apply", f"domain-policy v{version}", "ok", details, actor)
    with state_engine(home).begin() as conn:
        conn.execute(
            domain_policy_versions.insert().values(
                version=version,
                content=content,
                sm3=digest,
                applied_by=applied_by,
                applied_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                reason=reason.strip(),
                audit_hash=audit_hash,
            )
        )
    return version


def changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths whose value differs between two policies (for the audit entry)."""
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        path = f"{prefix}{key}"
        if isinstance(b, dict) and isinstance(a, dict):
            out.extend(changes(b, a, path + "."))
        elif b != a:
            out.append(path)
    return out
