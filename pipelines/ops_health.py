"""`shuyu ops check`: Shuyu's own side of a deployment, checked before (and while) a worker
runs flows. Each check is one row: name, ok | warn | fail, and what was seen or how to fix it.

Read-only except for one probe file written to and removed from ``<home>/.tmp``.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from shuyu_core.errors import ShuyuError
from shuyu_core.home import ZONES, Home

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def _home(home: Home) -> Check:
    if not home.root.is_absolute():
        return Check("home", FAIL, f"{home.root} is not absolute")
    missing = [z for z in (*ZONES, ".tmp") if not (home.root / z).is_dir()]
    if missing:
        return Check("home", FAIL, f"{home.root}: zone(s) missing: {', '.join(missing)}")
    probe = home.tmp / f"ops-check-{uuid.uuid4().hex}"
    try:
        probe.write_text("probe", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        return Check("home", FAIL, f"{home.tmp} is not writable: {exc.strerror}")
    return Check("home", OK, f"{home.root} (zones present, writable)")


def _state_db(home: Home) -> Check:
    from sqlalchemy import text

    from shuyu_core.home import state_engine

    url = home.database_url
    shown = url.split("@")[-1] if "@" in url else url  # never print a password
    with state_engine(home).connect() as conn:
        conn.execute(text("SELECT 1"))
    return Check("state database", OK, shown)


def _audit(home: Home) -> Check:
    from governance import audit

    result = audit.verify(home)
    if not result.ok:
        return Check(
            "audit chain",
            FAIL,
            f"broken at entry {result.break_seq} ({result.kind}): {result.problem}",
        )
    return Check(
        "audit chain",
        OK,
        f"{result.entries} entries, head {result.head_seq} {result.head_hash[:16]}…",
    )


def _keys(home: Home) -> Check:
    from shuyu_core import keys

    problems: list[str] = []
    seen: list[str] = []
    for name in (keys.PSEUDONYM, keys.ENCRYPTION):
        env = f"SHUYU_{name.upper()}_KEY"
        if os.environ.get(env):
            seen.append(f"{name} from ${env}")
            continue
        file_env = f"{env}_FILE"
        path = keys.key_path(home, name)
        if os.environ.get(file_env):
            from pathlib import Path

            path = Path(os.environ[file_env])
        if not path.exists():
            problems.append(f"{name} key missing ({path})")
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            problems.append(f"{path} has mode {mode:o}, expected 600")
            continue
        seen.append(f"{name} {path}")
    if problems:
        return Check("keys", FAIL, "; ".join(problems) + " — fix: shuyu keys init / chmod 600")
    return Check("keys", OK, "; ".join(seen))


def _catalog(home: Home) -> Check:
    from catalogs.catalog import Catalog
    from products import specs

    catalog = Catalog.load()
    loaded = specs.load_all()
    for spec in loaded.values():
        specs.check_against_catalog(spec, catalog)
    return Check(
        "catalog",
        OK,
        f"{len(catalog.resources)} resources ({catalog.version}), {len(loaded)} specs",
    )


def _policy(home: Home) -> Check:
    from governance import domain_policy

    policy = domain_policy.effective(home)
    services = ", ".join(s.name for s in policy.service_accounts) or "none"
    return Check("domain policy", OK, f"service accounts: {services}")


def _prefect() -> Check:
    import httpx

    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not api:
        return Check("prefect api", WARN, "PREFECT_API_URL not set (flows run locally only)")
    try:
        response = httpx.get(f"{api}/health", timeout=5)
    except httpx.HTTPError as exc:
        return Check("prefect api", FAIL, f"{api} unreachable: {type(exc).__name__}")
    if response.status_code != 200:
        return Check("prefect api", FAIL, f"{api}/health answered {response.status_code}")
    pools = httpx.post(f"{api}/work_pools/filter", json={}, timeout=5)
    names = {p["name"]: p for p in pools.json()} if pools.status_code == 200 else {}
    pool = names.get("shuyu-domain")
    if pool is None:
        return Check("prefect api", WARN, f"{api} healthy; work pool shuyu-domain missing")
    return Check(
        "prefect api",
        OK,
        f"{api} healthy; pool shuyu-domain {pool.get('status', '?')}, "
        f"concurrency limit {pool.get('concurrency_limit')}",
    )


def run_checks(home: Home) -> list[Check]:
    """Every check; one that raises is a failed row, never an aborted run."""
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("home", lambda: _home(home)),
        ("state database", lambda: _state_db(home)),
        ("audit chain", lambda: _audit(home)),
        ("keys", lambda: _keys(home)),
        ("catalog", lambda: _catalog(home)),
        ("domain policy", lambda: _policy(home)),
        ("prefect api", _prefect),
    ]
    rows: list[Check] = []
    for name, fn in checks:
        try:
            rows.append(fn())
        except ShuyuError as exc:
            rows.append(Check(name, FAIL, exc.one_line()))
        except Exception as exc:  # a health check reports, it does not crash
            rows.append(Check(name, FAIL, f"{type(exc).__name__}: {exc}"))
    return rows
