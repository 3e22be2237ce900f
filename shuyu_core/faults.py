"""Fault injection for crash tests: ``SHUYU_FAULT=<point>`` kills the process at that point.

A test-only hook. Each long operation names the moments between its durable steps
(``ingest.staged``, ``ingest.after_rename``, ``ingest.audited``, ``build.staged``,
``build.after_rename``, ``build.ledger_marked``, ``build.audited``, ``publish.staged``,
``publish.after_rename``, ``publish.registered``, ``publish.audited``). When the variable
names the point reached, the process ends at once with ``os._exit(137)`` — as ``kill -9``
would end it: no exception handler, no ``finally``, no flush. Unset (always, outside tests),
a point costs one environment lookup. With ``SHUYU_FAULT_ONCE=<path>`` as well, only the first
process to create that file dies (a cluster worker killed once; its task's retry then runs).
"""

from __future__ import annotations

import os

POINTS = (
    "ingest.staged",
    "ingest.after_rename",
    "ingest.audited",
    "build.staged",
    "build.after_rename",
    "build.ledger_marked",
    "build.audited",
    "publish.staged",
    "publish.after_rename",
    "publish.registered",
    "publish.audited",
    "scaleout.part_staged",
)
KILLED = 137


def point(name: str) -> None:
    """Die here if ``SHUYU_FAULT`` names this point."""
    if os.environ.get("SHUYU_FAULT") != name:
        return
    once = os.environ.get("SHUYU_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os._exit(KILLED)
