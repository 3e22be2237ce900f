"""Portal benchmark: page render time with many tickets and releases.

    .venv/bin/python benchmarks/bench_portal.py [--tickets N] [--releases N] [--repeat N]

A small real domain (one built and assessed release, tickets from a real check) is grown to
``--tickets`` tickets (copies of the real ones, spread over two units) and ``--releases``
releases (copies of the real release directory under new ids, half of them assessed). Each
page is then requested ``--repeat`` times through the ASGI app in process (no network) by a
logged-in user; the table gives p50 and p95 per page against the goal (200 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "portal"))

GOAL_MS = 200.0


def _grow(home: object, rid: str, n_tickets: int, n_releases: int) -> None:
    from assessment import engine
    from products import release as rel
    from quality.store import quality_tickets
    from shuyu_core.home import Home, state_engine

    assert isinstance(home, Home)
    eng = state_engine(home)
    with eng.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(quality_tickets))]
        batch = []
        for i in range(n_tickets - len(rows)):
            row = dict(rows[i % len(rows)])
            row.pop("id")
            row["rule"] = f"{row['rule']}#{i}"
            batch.append(row)
        for start in range(0, len(batch), 2000):
            conn.execute(insert(quality_tickets), batch[start : start + 2000])
        run = dict(
            conn.execute(
                select(engine.assessment_runs).where(engine.assessment_runs.c.release_id == rid)
            )
            .first()
            ._mapping  # type: ignore[union-attr]
        )
    src = rel.release_dir(home, rid)
    manifest = json.loads((src / rel.MANIFEST).read_text("utf-8"))
    runs = []
    for i in range(n_releases - 1):
        new_id = f"{rid}-copy{i:04d}"
        dst = rel.release_dir(home, new_id)
        shutil.copytree(src, dst)
        (dst / rel.MANIFEST).write_text(
            json.dumps({**manifest, "release_id": new_id}, ensure_ascii=False), "utf-8"
        )
        if i % 2 == 0:
            runs.append({**run, "assessment_id": f"{new_id}-A001", "release_id": new_id})
    with eng.begin() as conn:
        conn.execute(insert(engine.assessment_runs), runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--releases", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-portal-")) / "home"
    os.environ["SHUYU_HOME"] = str(root)
    from accounts_testkit import test_policy

    os.environ["SHUYU_DOMAIN_POLICY"] = str(test_policy(root.parent))
    from fastapi.testclient import TestClient
    from portal_testkit import ADMIN, SI, build_template, login

    from governance import accounts
    from portal.app import create_app
    from shuyu_core.home import Home

    home = Home.from_env().ensure()
    accounts.add(home, "test-operator", ["operator"], ADMIN)
    t0 = time.perf_counter()
    rid = build_template(home)[SI]
    _grow(home, rid, args.tickets, args.releases)
    print(
        f"domain: {args.tickets:,} tickets, {args.releases:,} releases "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )
    pages = {
        "scjg-clerk": ["/unit", "/unit/tickets", "/unit/tickets/1", "/notices"],
        "reviewer-li": ["/review", f"/review/{rid}", "/notices"],
        "ops-zhao": ["/ops", "/ops/tickets", "/ops/budgets", f"/ops/releases/{rid}", "/notices"],
        "": ["/public"],
    }
    print(f"{'user':<12} {'page':<58} {'p50 ms':>8} {'p95 ms':>8}  goal {GOAL_MS:.0f} ms")
    with TestClient(create_app(home)) as client:
        for user, urls in pages.items():
            client.cookies.clear()
            if user:
                login(client, user)
            for url in urls:
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = client.get(url)
                    times.append(1000 * (time.perf_counter() - t))
                    assert r.status_code == 200, (url, r.status_code)
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                mark = "ok" if p95 <= GOAL_MS else "SLOW"
                print(
                    f"{user or 'public':<12} {url[:58]:<58} {statistics.median(times):>8.1f} "
                    f"{p95:>8.1f}  {mark}"
                )
    shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
