"""Eight processes appending at once leave one valid chain."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

from governance import audit
from governance.actors import Actor
from shuyu_core.db import reset_engines
from shuyu_core.home import Home

WRITERS = 8
PER_WRITER = 25


def _writer(root: str, n: int, barrier: Any, worker: int) -> None:
    os.environ["SHUYU_HOME"] = root
    home = Home.from_env()
    who = Actor(f"writer-{worker}", "operator")
    barrier.wait()  # start together so the appends really contend for the lock
    for i in range(n):
        audit.record(
            home, "concurrency.append", f"w{worker}", "ok", {"i": i, "w": worker}, actor=who
        )


def test_eight_processes_keep_one_valid_chain(bare_home: Home) -> None:
    home = bare_home
    audit.record(
        home, "concurrency.start", "test", actor=Actor("writer-main", "operator")
    )  # tables and the head exist first
    reset_engines()  # no connection of ours crosses into the children
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [
        ctx.Process(target=_writer, args=(str(home.root), PER_WRITER, barrier, w))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    result = audit.verify(home)
    assert result.ok, result.one_line()
    total = 1 + WRITERS * PER_WRITER
    assert (result.entries, result.head_seq) == (total, total)
    rows = list(audit.entries(home))
    assert [r["seq"] for r in rows] == list(range(1, total + 1))
    per_writer: dict[str, list[int]] = {}
    for r in rows[1:]:
        per_writer.setdefault(r["actor"], []).append(r["details"]["i"])
    # Every append landed once, in each writer's own order.
    assert per_writer == {f"writer-{w}": list(range(PER_WRITER)) for w in range(WRITERS)}
