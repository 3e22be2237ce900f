"""Evidence kept outside the judged object: the build-time seal of a release.

A release directory cannot vouch for itself: anyone who can write under ``releases/`` can
also rewrite the digests inside ``release.json``. So when a build stores a release, it
records the SM3 of ``release.json`` and of every file of the release directory in the audit
chain (one ``release.sealed`` entry, written from the staging directory just before the
atomic rename). The assessment's ``file_integrity`` check, its fingerprint, review approval
and publish recompute the digests *from the files* and compare them with that seal:

- a release with no seal (a directory planted under ``releases/``, not built by shuyu) fails;
- a file whose SM3 differs from the seal (edited counts) fails, whatever ``release.json`` says;
- a ``release.json`` whose own SM3 differs from the seal (rewritten digests) fails;
- a missing or empty digest anywhere fails: nothing is skipped.

The seal entry is re-hashed and its links to its neighbours in the chain are checked when it
is read, so a seal forged into the database (without rewriting the rest of the chain) is not
accepted; ``shuyu audit verify`` checks the whole chain.

Snapshots follow the same rule: ``shuyu ingest`` records the snapshot's SM3 in its ``ingest``
audit entry (object ``CODE/SNAPSHOT``). :func:`verify_snapshot` recomputes the parts' SM3
against the manifest (``shuyu_core.snapshots.verify``) *and* compares the manifest's SM3 with
that record, so rewriting a part together with ``manifest.json`` — or planting a snapshot
directory no ingest made — is refused (``IntegrityError``, exit 8).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from governance.audit import GENESIS, audit_head, audit_log, entry_hash, record
from shuyu_core import ids, snapshots
from shuyu_core.errors import IntegrityError
from shuyu_core.hashing import sm3_file
from shuyu_core.home import Home, state_engine

SEAL_ACTION = "release.sealed"
INGEST_ACTION = "ingest"
MANIFEST = "release.json"


@dataclass(frozen=True)
class Seal:
    """The digests recorded at build time for one release (from the audit chain)."""

    release_id: str
    seq: int
    entry_hash: str
    release_json_sm3: str
    files: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def directory_digests(root: Path) -> dict[str, str]:
    """SM3 of every regular file under ``root`` (relative POSIX path -> digest).

    A symlink anywhere in a release is itself a finding: it is recorded as ``symlink`` so
    it can never match a sealed digest."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "symlink"
        elif path.is_file():
            out[rel] = sm3_file(path)
    return out


def seal(home: Home, release_id: str, stage: Path) -> str:
    """Record the digests of a staged release in the audit chain; return the entry hash."""
    ids.release_id(release_id)
    files = directory_digests(stage)
    return record(
        home,
        SEAL_ACTION,
        release_id,
        "ok",
        {"release_json_sm3": files.get(MANIFEST, ""), "files": files},
    )


def _link_problems(conn: Any, row: Any, what: str = "the seal") -> list[str]:
    """The entry's own hash and its links to the previous and next entries."""
    entry = {
        "seq": int(row.seq),
        "ts": row.ts,
        "actor": row.actor,
        "role": row.role,
        "action": row.action,
        "object": row.object,
        "outcome": row.outcome,
        "details": json.loads(row.details),
    }
    problems = []
    if entry_hash(row.prev_hash, entry) != row.hash:
        problems.append(f"audit entry {row.seq} ({what}) does not match its hash")
    prev = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == row.seq - 1)).first()
    head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
    base_hash = head.base_hash if head is not None and head.base_seq == row.seq - 1 else None
    expected_prev = prev[0] if prev is not None else (base_hash or GENESIS)
    if row.prev_hash != expected_prev:
        problems.append(f"audit entry {row.seq} ({what}) is not linked to entry {row.seq - 1}")
    nxt = conn.execute(select(audit_log.c.prev_hash).where(audit_log.c.seq == row.seq + 1)).first()
    if nxt is not None and nxt[0] != row.hash:
        problems.append(f"audit entry {row.seq + 1} does not link to {what}")
    if head is not None and head.seq == row.seq and head.hash != row.hash:
        problems.append(f"the audit head does not match {what} (entry {row.seq})")
    return problems


def anchored_entries(
    home: Home, obj: str, actions: tuple[str, ...], what: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``ok`` entries of ``actions`` about ``obj`` (oldest first), each re-hashed and its
    links to its neighbours checked: a decision or report vouched for by an entry planted in
    the table without re-chaining is reported in the second list."""
    from governance.audit import _row_dict

    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log)
            .where(
                audit_log.c.object == obj,
                audit_log.c.action.in_(actions),
                audit_log.c.outcome == "ok",
            )
            .order_by(audit_log.c.seq)
        ).all()
        problems = [p for r in rows for p in _link_problems(conn, r, what)]
    return [_row_dict(r) for r in rows], problems


def find_seal(home: Home, release_id: str) -> Seal | None:
    """The latest ``release.sealed`` entry for ``release_id``, or None."""
    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(audit_log)
            .where(
                audit_log.c.action == SEAL_ACTION,
                audit_log.c.object == release_id,
                audit_log.c.outcome == "ok",
            )
            .order_by(audit_log.c.seq.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        problems = _link_problems(conn, row)
    details = json.loads(row.details)
    files = details.get("files")
    return Seal(
        release_id=release_id,
        seq=int(row.seq),
        entry_hash=row.hash,
        release_json_sm3=str(details.get("release_json_sm3") or ""),
        files={str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {},
        problems=tuple(problems),
    )


def verify_release(home: Home, release_id: str, rdir: Path, outputs: list[Any]) -> list[str]:
    """Every way the files in ``rdir`` differ from the release's seal (empty: intact).

    ``outputs`` are the manifest's ``OutputFile`` entries; each must have a non-empty SM3
    equal to the sealed one and to the file's recomputed digest."""
    found = find_seal(home, release_id)
    if found is None:
        return [
            f"release {release_id} has no build seal ({SEAL_ACTION}) in the audit chain: "
            "it was not built by shuyu"
        ]
    bad = list(found.problems)
    if not found.release_json_sm3:
        bad.append(f"the seal of {release_id} records no SM3 for {MANIFEST}")
    actual = directory_digests(rdir)
    man = actual.get(MANIFEST)
    if man is None:
        bad.append(f"{MANIFEST} missing")
    elif found.release_json_sm3 and man != found.release_json_sm3:
        bad.append(f"{MANIFEST} differs from its sealed SM3 (rewritten after the build)")
    for out in outputs:
        if not ids.is_relative_inside(out.path):
            bad.append(f"output path {out.path!r} leaves the release directory")
            continue
        sealed = found.files.get(out.path, "")
        now = actual.get(out.path)
        if not sealed:
            bad.append(f"{out.path} has no sealed SM3")
        if not out.sm3:
            bad.append(f"{out.path} has an empty SM3 in {MANIFEST}")
        elif sealed and out.sm3 != sealed:
            bad.append(f"{out.path}: the SM3 in {MANIFEST} is not the sealed one")
        if now is None:
            bad.append(f"{out.path} missing")
        elif now == "symlink":
            bad.append(f"{out.path} is a symlink")
        elif sealed and now != sealed:
            bad.append(f"{out.path} changed since the build (SM3 differs from the seal)")
    for path, digest in sorted(found.files.items()):
        now = actual.get(path)
        if path == MANIFEST or any(o.path == path for o in outputs):
            continue
        if now is None:
            bad.append(f"{path} missing")
        elif now != digest:
            bad.append(f"{path} changed since the build")
    extra = sorted(set(actual) - set(found.files))
    if extra:
        bad.append(f"file(s) not sealed at build: {', '.join(extra[:5])}")
    return bad


def seal_digest(home: Home, release_id: str) -> str:
    """The seal's entry hash, or ``missing`` (a fingerprint component)."""
    found = find_seal(home, release_id)
    return found.entry_hash if found is not None else "missing"


# (resource, snapshot, manifest SM3) already compared with the ingest record in this process.
_SNAPSHOTS_CHECKED: set[tuple[str, str, str]] = set()


def recorded_snapshot_sm3(home: Home, code: str, snapshot_id: str) -> str | None:
    """The SM3 that ``shuyu ingest`` recorded in the audit chain for this snapshot, or None."""
    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(audit_log.c.details)
            .where(
                audit_log.c.action == INGEST_ACTION,
                audit_log.c.object == f"{code}/{snapshot_id}",
                audit_log.c.outcome == "ok",
            )
            .order_by(audit_log.c.seq.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    sm3 = json.loads(row[0]).get("sm3")
    return str(sm3) if sm3 else ""


def _history_purged_after(home: Home, when: dt.datetime) -> bool:
    """Whether audit entries from ``when`` may have been purged (kept five years only)."""
    with state_engine(home).connect() as conn:
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
        if head is None or int(head.base_seq) == 0:
            return False
        first = conn.execute(
            select(audit_log.c.ts).order_by(audit_log.c.seq).limit(1)
        ).scalar_one_or_none()
    stamp = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return first is None or stamp < str(first)


def verify_snapshot(home: Home, m: snapshots.Manifest) -> None:
    """The parts match the manifest, and the manifest's SM3 is the one recorded at ingest."""
    snapshots.verify(home, m)
    key = (m.resource, m.snapshot_id, m.sm3)
    if key in _SNAPSHOTS_CHECKED:
        return
    recorded = recorded_snapshot_sm3(home, m.resource, m.snapshot_id)
    where = f"snapshot {m.snapshot_id} of {m.resource}"
    if recorded is None:
        if not _history_purged_after(home, m.ingested_at):
            raise IntegrityError(
                f"{where} has no ingest record in the audit chain (not made by 'shuyu ingest')",
                hint=f"remove raw/{m.resource}/{m.snapshot_id}/ and ingest the source again",
            )
    elif recorded != m.sm3:
        raise IntegrityError(
            f"{where}: the manifest's SM3 {m.sm3[:16]}… is not the {recorded[:16] or 'empty'}… "
            "recorded at ingest (manifest and parts rewritten)",
            hint=f"restore raw/{m.resource}/{m.snapshot_id}/ from backup or re-ingest",
        )
    _SNAPSHOTS_CHECKED.add(key)
