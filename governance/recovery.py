"""Recovery sweep: complete or roll back what a killed run left behind.

Rule (docs/governance.md, "Crash recovery"): every command that changes files first runs
``sweep`` — before its own first side effect. The sweep

1. checks that the audit chain accepts entries (``audit.head_check``; a broken head is exit 8
   and the command does nothing);
2. completes every orphaned intent (``shuyu_core/journal.py``) of a dead writer: the result it
   announced is either absent (nothing became visible: the intent is dropped) or present (its
   missing audit entry is written, marked ``recovered``, under the original actor, and the
   step is finished — a publication gets its row, catalog and disclosure listing);
3. removes staging directories and temporary files of dead runs from ``.tmp/``, and the
   working files of builds whose release is stored.

It is idempotent and cheap when nothing was interrupted (a directory listing or three).
``shuyu doctor`` reports the same findings; ``shuyu doctor --repair`` runs the sweep.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from governance import audit
from governance.actors import Actor
from shuyu_core import atomic, journal
from shuyu_core.home import Home, state_engine

# A staging entry without an owner tag (written before tags existed, or by another host) is
# removed only once it is this old, so no live writer of an unknown kind loses its stage.
UNTAGGED_STALE_SECONDS = 3600


@dataclass
class RecoveryReport:
    recorded: list[str] = field(default_factory=list)  # visible results given their entry
    finished: list[str] = field(default_factory=list)  # steps completed (listings, ledger)
    dropped: list[str] = field(default_factory=list)  # intents whose result never appeared
    removed: list[str] = field(default_factory=list)  # stale staging and working files

    @property
    def empty(self) -> bool:
        return not (self.recorded or self.finished or self.dropped or self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "finished": self.finished,
            "dropped": self.dropped,
            "removed": self.removed,
        }


def _audited(home: Home, it: journal.Intent) -> bool:
    """Did the dead writer get as far as its audit entry? (looked up from its start on)"""
    started = dt.datetime.fromisoformat(it.doc["started"]) - dt.timedelta(seconds=1)
    with state_engine(home).connect() as conn:
        row = conn.execute(
            select(audit.audit_log.c.seq)
            .where(audit.audit_log.c.ts >= audit.format_ts(started))
            .where(audit.audit_log.c.action == it.doc["action"])
            .where(audit.audit_log.c.object == it.doc["object"])
            .where(audit.audit_log.c.outcome == "ok")
            .limit(1)
        ).first()
    return row is not None


def _finish(home: Home, it: journal.Intent, report: RecoveryReport) -> None:
    """The kind-specific rest of a step whose result is visible."""
    if it.kind == "publish":
        from assessment.publish import complete_publication

        name = (it.doc.get("actor") or ["unknown"])[0]
        complete_publication(home, it.doc["object"], name)
        report.finished.append(f"publish {it.doc['object']}: registration and listings")


def _complete(home: Home, it: journal.Intent, report: RecoveryReport, repair: bool) -> None:
    what = f"{it.doc['action']} {it.doc['object']}"
    if not it.final(home).exists():
        report.dropped.append(what)
        if repair:
            journal.done(it)
        return
    if not _audited(home, it):
        report.recorded.append(what)
        if repair:
            name, role = it.doc.get("actor") or ["unknown", "operator"]
            details = {**it.doc.get("details", {}), "recovered": True}
            audit.record(home, it.doc["action"], it.doc["object"], "ok", details, Actor(name, role))
    if repair:
        _finish(home, it, report)
        journal.done(it)


def _stale_tmp(home: Home) -> list[Path]:
    if not home.tmp.is_dir():
        return []
    now = time.time()
    stale = []
    jdir = journal.journal_dir(home)
    # An intent's own temporary file (a kill inside its atomic write) carries the tag too.
    partial = [p for p in jdir.glob(".*.tmp")] if jdir.is_dir() else []
    for entry in [*home.tmp.iterdir(), *partial]:
        gone = journal.owner_gone(entry.name)
        if gone is True:
            stale.append(entry)
        elif gone is None:
            with contextlib.suppress(FileNotFoundError):
                if now - entry.lstat().st_mtime > UNTAGGED_STALE_SECONDS:
                    stale.append(entry)
    return stale


def _stale_workdirs(home: Home, busy: set[str]) -> list[Path]:
    """Working files of builds whose release is stored (the per-person bounded frame, a kept
    draw): of no further use, and they must not linger (最小必要)."""
    found = []
    for base in (home.work / "products" / "build", home.work / "products" / "pending"):
        if base.is_dir():
            found += [
                p
                for p in base.iterdir()
                if p.name not in busy and (home.releases / p.name).is_dir()
            ]
    return found


# Visible results and the audit action that records each (object: the path below the zone).
_ZONES = (
    ("raw", "ingest", 2),
    ("releases", "product.build", 1),
    ("published/products", "publish", 1),
)


def unrecorded(home: Home) -> list[tuple[str, str]]:
    """(action, object) of every snapshot, release and publication without an ``ok`` entry.

    A full scan (the directory zones, and the log's entries of three actions), for
    ``shuyu doctor``: results left by runs killed before intents existed, or whose intent
    was lost. The per-command sweep relies on intents instead and stays cheap.
    """
    recorded: set[tuple[str, str]] = set()
    actions = [a for _, a, _ in _ZONES]
    with state_engine(home).connect() as conn:
        rows = conn.execution_options(yield_per=5000).execute(
            select(audit.audit_log.c.action, audit.audit_log.c.object)
            .where(audit.audit_log.c.action.in_(actions))
            .where(audit.audit_log.c.outcome == "ok")
        )
        recorded = {(r[0], r[1]) for r in rows}
    missing = []
    for zone, action, depth in _ZONES:
        base = home.root / zone
        if not base.is_dir():
            continue
        pattern = "/".join(["[!.]*"] * depth)
        for path in sorted(base.glob(pattern)):
            obj = str(path.relative_to(base))
            if path.is_dir() and (action, obj) not in recorded:
                missing.append((action, obj))
    return missing


def sweep(home: Home, repair: bool = True, deep: bool = False) -> RecoveryReport:
    """Check the audit head, then complete or roll back what dead runs left (module doc).

    With ``repair=False`` it only reports (``shuyu doctor``); ``deep`` also scans every zone
    for results without an entry (``unrecorded``)."""
    audit.head_check(home)
    report = RecoveryReport()
    # One sweeper at a time: two commands starting together must not both record an orphan.
    with atomic.file_lock(home.work / "recovery.lock"):
        for it in journal.orphans(home):
            _complete(home, it, report, repair)
        # A build between its rename and its cleanup still holds its intent: not stale.
        busy = journal.open_objects(home)
        if deep:
            for action, obj in unrecorded(home):
                if obj in busy:
                    continue
                report.recorded.append(f"{action} {obj}")
                if repair:
                    audit.record(home, action, obj, "ok", {"recovered": True, "by": "doctor"})
                    if action == "publish":
                        from assessment.publish import complete_publication

                        complete_publication(home, obj, "recovered")
                        report.finished.append(f"publish {obj}: registration and listings")
        for path in [*_stale_tmp(home), *_stale_workdirs(home, busy)]:
            report.removed.append(str(path.relative_to(home.root)))
            if repair:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
    if repair and not report.empty:
        audit.record(home, "recovery.sweep", str(home.root), "ok", report.to_dict())
    return report
