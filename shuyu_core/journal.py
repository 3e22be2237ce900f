"""Intent records for steps that become visible before they are audited.

A snapshot, release or publication appears by an atomic rename, and its audit entry is a
second, separate write (the state database is not the file system). Between the two a kill
would leave a visible result nobody recorded. So the writer first leaves an *intent* in
``<home>/.journal/`` (what it is about to make visible and the audit entry that will record it),
then renames, audits, and removes the intent. A run killed in between leaves its intent
behind; the recovery sweep (``governance/recovery.py``) then finds the result either absent
(nothing happened: drop the intent) or present (write the missing entry, finish the step).

Staging directories and temporary files carry their owner's host and pid in their name
(``owner_tag``), so the sweep removes only those of processes that are gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shuyu_core import atomic
from shuyu_core.home import Home

_TAG = re.compile(r"\.p(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]{1,40})-")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def owner_tag() -> str:
    """``.p<pid>@<host>-``: embedded in staging names so a sweep knows whose they are."""
    return f".p{os.getpid()}@{_host()}-"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_gone(name: str) -> bool | None:
    """True if the process named in ``name``'s owner tag is gone, False if it runs, None if
    the name has no tag or the owner ran on another host (its liveness is unknowable here)."""
    m = _TAG.search(name)
    if m is None or m.group("host") != _host():
        return None
    pid = int(m.group("pid"))
    return pid != os.getpid() and not pid_alive(pid)


def journal_dir(home: Home) -> Path:
    # Beside .tmp/, not in it: .tmp/ holds only staging that a sweep may delete.
    return home.root / ".journal"


@dataclass(frozen=True)
class Intent:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    def final(self, home: Home) -> Path:
        return home.root / self.doc["final"]


def begin(
    home: Home,
    kind: str,
    action: str,
    obj: str,
    final: Path,
    details: dict[str, Any],
    actor: tuple[str, str],
) -> Intent:
    """Leave an intent before making ``final`` visible; ``details`` is the audit entry's."""
    doc = {
        "kind": kind,
        "action": action,
        "object": obj,
        "final": str(final.relative_to(home.root)),
        "details": details,
        "actor": list(actor),
        "pid": os.getpid(),
        "host": _host(),
        "started": dt.datetime.now(dt.UTC).isoformat(),
    }
    path = journal_dir(home) / f"{kind}{owner_tag()}{uuid.uuid4().hex[:12]}.json"
    atomic.write_text(path, json.dumps(doc, ensure_ascii=False, default=str))
    return Intent(path, doc)


def done(intent: Intent) -> None:
    with contextlib.suppress(FileNotFoundError):
        intent.path.unlink()


@contextlib.contextmanager
def intent(
    home: Home,
    kind: str,
    action: str,
    obj: str,
    final: Path,
    details: dict[str, Any],
    actor: tuple[str, str],
) -> Iterator[Intent]:
    """An intent held across the block; removed when the block ends, with or without error
    (an error is handled by its raiser). Only a killed process leaves it behind."""
    it = begin(home, kind, action, obj, final, details, actor)
    try:
        yield it
    finally:
        done(it)


def open_objects(home: Home) -> set[str]:
    """Objects of every intent still open (live writers included)."""
    found = set()
    for path in journal_dir(home).glob("*.json") if journal_dir(home).is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.add(str(json.loads(path.read_text(encoding="utf-8"))["object"]))
    return found


def orphans(home: Home) -> list[Intent]:
    """Intents whose writer is gone (on this host)."""
    base = journal_dir(home)
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.glob("*.json")):
        if owner_gone(path.name) is not True:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and {"kind", "action", "object", "final"} <= doc.keys():
            found.append(Intent(path, doc))
        else:  # written by atomic rename, so unreadable means foreign: drop it
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return found
