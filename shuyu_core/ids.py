"""Validated identifiers, and paths that must stay inside their zone.

Every id a user passes (a release, product, snapshot, assessment, resource code or ticket)
becomes part of a path under ``SHUYU_HOME`` or a key in the state database. An id is checked
against its pattern *before* anything is derived from it, and every path built from one is
checked by :func:`within` after resolving symlinks, so ``../releases/x``, ``/etc``, or a
symlink planted inside a zone can never lead a read or a write outside that zone.

The patterns (documented in docs/governance.md, "Identifiers and zones"):

=============  ===============================================  =============================
id             pattern                                          example
=============  ===============================================  =============================
product        ``[a-z][a-z0-9_]{1,63}``                         ``si_enrolment_report``
release        ``<product>-v<major.minor.patch>-<16 hex>``      ``si_enrolment_report-v1.0.0-
                                                                 0123456789abcdef``
assessment     ``<release>-A<3+ digits>``                       ``…-0123456789abcdef-A001``
snapshot       ``YYYYMMDDTHHMMSS`` + 6 digits + ``Z``           ``20260101T120000123456Z``
resource code  ``[A-Z][A-Z0-9_-]{1,31}``                        ``RKJBXX``
ticket         a positive integer                               ``17``
=============  ===============================================  =============================
"""

from __future__ import annotations

import re
from pathlib import Path

from shuyu_core.errors import ValidationError

PRODUCT_ID = r"[a-z][a-z0-9_]{1,63}"
RELEASE_ID = rf"{PRODUCT_ID}-v\d{{1,6}}\.\d{{1,6}}\.\d{{1,6}}-[0-9a-f]{{16}}"
ASSESSMENT_ID = rf"{RELEASE_ID}-A\d{{3,9}}"
SNAPSHOT_ID = r"\d{8}T\d{6}\d{6}Z"
RESOURCE_CODE = r"[A-Z][A-Z0-9_-]{1,31}"
TICKET_ID = r"[1-9]\d{0,17}"

PATTERNS: dict[str, str] = {
    "product": PRODUCT_ID,
    "release": RELEASE_ID,
    "assessment": ASSESSMENT_ID,
    "snapshot": SNAPSHOT_ID,
    "resource": RESOURCE_CODE,
    "ticket": TICKET_ID,
}
# ASCII: \d would otherwise accept other scripts' digits (e.g. Arabic-Indic) in ids.
_COMPILED = {kind: re.compile(rf"\A{p}\Z", re.ASCII) for kind, p in PATTERNS.items()}
_EXAMPLES = {
    "product": "si_enrolment_report",
    "release": "si_enrolment_report-v1.0.0-0123456789abcdef",
    "assessment": "si_enrolment_report-v1.0.0-0123456789abcdef-A001",
    "snapshot": "20260101T120000123456Z",
    "resource": "RKJBXX",
    "ticket": "17",
}


class InvalidIdentifier(ValidationError):
    """An id that does not match its documented pattern (exit 4)."""


class OutsideZone(ValidationError):
    """A path that resolves outside the zone it must stay in (exit 4)."""


def is_valid(kind: str, value: object) -> bool:
    return isinstance(value, str) and _COMPILED[kind].match(value) is not None


def check(kind: str, value: object) -> str:
    """``value`` if it matches the ``kind`` pattern; else an ``InvalidIdentifier``."""
    if is_valid(kind, value):
        return str(value)
    shown = repr(value)[:80]
    raise InvalidIdentifier(
        f"{shown} is not a valid {kind} id",
        hint=f"a {kind} id matches {PATTERNS[kind]} (e.g. {_EXAMPLES[kind]}); see "
        "docs/governance.md#identifiers-and-zones",
    )


def release_id(value: object) -> str:
    return check("release", value)


def product_id(value: object) -> str:
    return check("product", value)


def snapshot_id(value: object) -> str:
    return check("snapshot", value)


def assessment_id(value: object) -> str:
    return check("assessment", value)


def resource_code(value: object) -> str:
    return check("resource", value)


def is_relative_inside(relpath: str) -> bool:
    """A relative path with no ``..``, no absolute or drive part and no empty component."""
    if not relpath or "\\" in relpath or "\0" in relpath:
        return False
    p = Path(relpath)
    if p.is_absolute() or relpath.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in relpath.split("/"))


def within(zone: Path, path: str | Path) -> Path:
    """``path`` (absolute, or relative to ``zone``) resolved, if it stays inside ``zone``.

    Refuses ``..`` components, an absolute path given as a relative part, and symlinks (of
    the path or any parent) that resolve outside the zone.
    """
    base = zone.resolve()
    raw = Path(path)
    if not raw.is_absolute():
        if not is_relative_inside(str(path).replace("\\", "/")) or "\\" in str(path):
            raise OutsideZone(
                f"path {str(path)[:120]!r} is not a plain relative path inside {zone.name}/",
                hint="use a name without '..', '/' at the start or backslashes",
            )
        raw = zone / raw
    elif ".." in raw.parts:
        raise OutsideZone(
            f"path {str(path)[:120]!r} contains '..'", hint="give the path without '..'"
        )
    resolved = raw.resolve()
    if resolved != base and base not in resolved.parents:
        raise OutsideZone(
            f"path {str(path)[:120]!r} resolves to {resolved}, outside {base}",
            hint=f"keep it inside {zone.name}/ (a symlink out of the zone is refused)",
        )
    return resolved


def inside(path: Path, zone: Path) -> bool:
    """Whether ``path`` (resolved, symlinks followed) lies in ``zone`` or is the zone."""
    p, z = path.expanduser().resolve(), zone.resolve()
    return p == z or z in p.parents
