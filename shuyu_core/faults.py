"""Fault injection for crash tests: ``SHUYU_FAULT=<point>`` kills the process at that point.

A test-only hook. Each long operation names the moments between its durable steps
(``ingest.staged``, ``ingest.after_rename``, ``ingest.audited``, ``build.staged``,
``build.after_rename``, ``build.ledger_marked``, ``build.audited``, ``publish.staged``,
``publish.after_rename``, ``publish.registered``, ``publish.audited``). When the variable
names the point reached, the process ends at once with ``os._exit(137)`` — as ``kill -9``
would end it: no exception handler, no ``finally``, no flush. Unset (always, outside tests),
a point costs one environment lookup.
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
)
KILLED = 137


def point(name: str) -> None:
    """Die here if ``SHUYU_FAULT`` names this point."""
    if os.environ.get("SHUYU_FAULT") == name:
        os._exit(KILLED)
