"""Verification API benchmark: single-query latency and batch throughput of POST /api/v1/verify.

    .venv/bin/python benchmarks/bench_verify_api.py [--persons N] [--singles N] [--batch N]

A small real domain (``--real`` synthetic persons ingested as RKJBXX, consent granted, a
developer account with an API token) is given a keyed index of ``--persons`` entries for
its snapshot: the real persons' tokens plus random tokens, written where the build and the
service keep it (``work/verification/``). Requests then go through the ASGI app in process
(no network) with the token: ``--singles`` single queries (p50/p95/max, goal p95 < 50 ms),
and batches of ``--batch`` queries (queries per second). Everything the API does per request
runs: token check against the audit chain, account and role check, authorization, consent,
quota, lookup and the two audit entries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

GOAL_MS = 50.0


def _random_tokens(n: int, seed: int) -> pl.Series:
    raw = np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)
    return pl.Series([bytes(r) for r in raw], dtype=pl.Binary).bin.encode("hex")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=1_000_000, help="entries in the keyed index")
    ap.add_argument("--real", type=int, default=5_000, help="synthetic persons ingested")
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--batch", type=int, default=5_000, help="at most the 5 000 daily quota")
    ap.add_argument("--batches", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shuyu_bench_api_"))
    os.environ["SHUYU_HOME"] = str(tmp / "home")
    os.environ.pop("SHUYU_DATABASE_URL", None)
    from accounts_testkit import TEST_ADMIN, seed, test_policy

    os.environ["SHUYU_DOMAIN_POLICY"] = str(test_policy(tmp))
    os.environ["SHUYU_ACTOR"] = "test-operator"
    os.environ["SHUYU_ROLE"] = "operator"

    from fastapi.testclient import TestClient

    from governance import accounts, api_tokens
    from governance.actors import Actor, set_current
    from governance.consent import ConsentLedger
    from governance.domain_policy import PortalPolicy
    from pipelines.ingest import ingest_path
    from portal import routes_api
    from portal.app import create_app
    from products import specs
    from products.verification import index_path, normalize_series, tokens
    from shuyu_core import snapshots
    from shuyu_core.home import Home
    from shuyu_core.keys import PSEUDONYM, init_key, load_key
    from synthetic_data.generate import generate_frames_detailed

    home = Home.from_env().ensure()
    seed(home, {"test-operator": ["operator"], "admin-b": ["admin"]})
    set_current(Actor("test-operator", "operator"))
    init_key(home, PSEUDONYM)
    frames = generate_frames_detailed(persons=args.real, seed=11, defect_rate=0.0).frames
    for code in ("RKJBXX", "SCZTDJ"):  # the product's two registries
        frames[code].write_parquet(tmp / f"{code}.parquet")
        ingest_path(home, code, tmp / f"{code}.parquet")
    people = frames["RKJBXX"]
    people = people.unique(subset=["公民身份号码"], keep="none")
    ids = people["公民身份号码"].to_list()
    ConsentLedger(home).import_frame(
        pl.DataFrame(
            {
                "subject_id": ids,
                "purpose": ["identity-verification"] * len(ids),
                "granted_at": ["2025-01-01"] * len(ids),
                "expires_at": ["2099-12-31"] * len(ids),
                "evidence_ref": [f"EV-{i}" for i in range(len(ids))],
            }
        ),
        source="bench",
    )
    admin = Actor("admin-b", "admin")
    accounts.add(home, "dev-bench", ["developer:dev-001"], TEST_ADMIN)
    _, token = api_tokens.issue(home, "dev-bench", admin)

    # The keyed index at the size asked: the real persons' tokens plus random ones.
    t0 = time.perf_counter()
    key = load_key(home, PSEUDONYM)
    spec = specs.get("identity_verification")
    assert spec.verification is not None
    check = next(c for c in spec.verification.checks if c.kind == "person")
    snap = snapshots.latest(home, "RKJBXX")
    real = pl.DataFrame(
        {
            "key_token": tokens(key, normalize_series(people["公民身份号码"], "id")),
            "name_token": tokens(key, normalize_series(people["姓名"], "name")),
        }
    )
    n_fake = max(0, args.persons - real.height)
    fake = pl.DataFrame(
        {"key_token": _random_tokens(n_fake, 1), "name_token": _random_tokens(n_fake, 2)}
    )
    path = index_path(home, check, snap.snapshot_id, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.concat([real, fake]).write_parquet(path)
    print(f"keyed index: {real.height + n_fake:,} entries ({time.perf_counter() - t0:.1f} s)")

    routes_api.policy = lambda _home: PortalPolicy(api_requests_per_minute=100_000)  # type: ignore[assignment]
    names = people["姓名"].to_list()
    rng = np.random.default_rng(5)
    # The daily quota (5 000 per account) binds here too: each batch asks as its own account.
    batch_tokens = []
    for b in range(args.batches):
        accounts.add(home, f"dev-bench-{b}", ["developer:dev-001"], TEST_ADMIN)
        batch_tokens.append(api_tokens.issue(home, f"dev-bench-{b}", admin)[1])
    with TestClient(create_app(home), base_url="http://testserver") as c:
        headers = {"Authorization": f"Bearer {token}"}

        def query(i: int, j: int) -> dict[str, str]:
            return {
                "query_id": f"REQ-{i:07d}",
                "kind": "person",
                "name": names[j] if i % 2 == 0 else names[(j + 1) % len(names)],
                "id_number": ids[j],
                "consent_ref": f"EV-{j}",
            }

        t0 = time.perf_counter()
        first = c.post(
            "/api/v1/verify",
            json={"product": "identity_verification", "query": query(0, 0)},
            headers=headers,
        )
        assert first.status_code == 200, first.text
        print(f"first request (loads and sorts the index): {time.perf_counter() - t0:.2f} s")
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            import pstats

            from products import verification_service

            set_current(Actor("dev-bench", "developer:dev-001"))
            prof = cProfile.Profile()
            prof.enable()
            for i in range(20):
                verification_service.verify(home, "identity_verification", [query(i + 1, i)], {})
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(
                "governance|products|portal|shuyu_core", 30
            )
        lat: list[float] = []
        for i in range(1, args.singles + 1):
            j = int(rng.integers(0, len(ids)))
            t0 = time.perf_counter()
            r = c.post(
                "/api/v1/verify",
                json={"product": "identity_verification", "query": query(i, j)},
                headers=headers,
            )
            lat.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
            want = "match" if i % 2 == 0 else r.json()["result"]["result"]
            assert r.json()["result"]["result"] == want
        lat.sort()
        p50 = statistics.median(lat)
        p95 = lat[int(0.95 * (len(lat) - 1))]
        verdict = "meets" if p95 < GOAL_MS else "misses"
        print(
            f"single query x{len(lat)}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {lat[-1]:.1f} ms "
            f"({verdict} the {GOAL_MS:.0f} ms goal)"
        )
        rates: list[float] = []
        base = args.singles + 1
        for b in range(args.batches):
            js = rng.integers(0, len(ids), size=args.batch)
            batch = [query(base + b * args.batch + k, int(j)) for k, j in enumerate(js)]
            t0 = time.perf_counter()
            r = c.post(
                "/api/v1/verify",
                json={"product": "identity_verification", "queries": batch},
                headers={"Authorization": f"Bearer {batch_tokens[b]}"},
            )
            dt_s = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            res = r.json()["results"]
            refused = sum(a["result"] == "refused" for a in res)
            rates.append(args.batch / dt_s)
            print(f"batch {b + 1}: {args.batch} queries in {dt_s:.2f} s, refused {refused}")
        print(f"batch throughput: {statistics.median(rates):,.0f} queries/s (median)")


if __name__ == "__main__":
    main()
