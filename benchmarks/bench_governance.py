"""Governance benchmarks: subject tokens (HMAC-SM3), consent checks, audit appends and verify.

    .venv/bin/python benchmarks/bench_governance.py [--rows N] [--audit N]

Each line compares against a baseline computed in the same process:
- tokens: ``subject_tokens`` vs polars' built-in (unkeyed, non-cryptographic) ``Series.hash``;
- consent check: ``ConsentLedger.check_many`` (database read + join) vs the same polars join
  on frames already in memory (``decide``);
- audit append: ``record`` (lock, chain, head update) vs a plain INSERT per entry;
- audit verify: recomputing the chain vs reading the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import psutil
from sqlalchemy import text

from governance import audit
from governance.consent import ConsentLedger, decide, subject_token, subject_tokens
from shuyu_core.db import reset_engines
from shuyu_core.home import Home, state_engine
from shuyu_core.keys import PSEUDONYM, init_key


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ids(n: int) -> pl.Expr:
    # 18-character ID-like strings; a tenth repeated, as real query batches repeat subjects.
    base = pl.int_range(0, n, eager=True) % max(1, int(n * 0.9))
    return (pl.lit("2108") + base.cast(pl.String).str.zfill(14)).alias("id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="IDs to tokenize / check")
    parser.add_argument("--audit", type=int, default=2_000, help="audit entries to append")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-gov-"))
    os.environ["SHUYU_HOME"] = str(root)
    os.environ.setdefault("SHUYU_ACTOR", "bench")
    home = Home.from_env().ensure()
    init_key(home, PSEUDONYM)
    ledger = ConsentLedger(home)
    key = ledger.key
    results: list[tuple[str, int, float, str, float]] = []

    ids = pl.select(_ids(args.rows)).to_series()
    base_s, _ = _timed(lambda: ids.hash(seed=1))
    tok_s, tokens = _timed(lambda: subject_tokens(key, ids))
    results.append(("subject_tokens (HMAC-SM3)", args.rows, tok_s, "Series.hash", tok_s / base_s))
    naive_s, naive = _timed(
        lambda: ids.map_elements(lambda v: subject_token(key, v), return_dtype=pl.String)
    )
    assert naive.equals(tokens)
    results.append(
        ("subject_token per row (naive)", args.rows, naive_s, "subject_tokens", naive_s / tok_s)
    )

    consents = pl.DataFrame(
        {
            "subject_id": ids.unique().head(int(args.rows * 0.6)),
        }
    ).with_columns(
        pl.lit("identity-verification").alias("purpose"),
        pl.lit(dt.date(2025, 1, 1)).alias("granted_at"),
        pl.lit(dt.date(2030, 1, 1)).alias("expires_at"),
        pl.format("EV-{}", pl.int_range(pl.len())).alias("evidence_ref"),
    )
    imp_s, _ = _timed(lambda: ledger.import_frame(consents, source="bench"))
    results.append(("consent import (tokenize + insert)", consents.height, imp_s, "-", 0.0))

    queries = pl.DataFrame({"token": tokens, "purpose": ["identity-verification"] * args.rows})
    chk_s, out = _timed(lambda: ledger.check_many(queries, dt.date(2026, 1, 1)))
    in_memory = ledger.list().select(
        "id", "subject_token", "purpose", "granted_at", "expires_at", "revoked"
    )
    q_at = queries.with_columns(pl.lit(dt.datetime(2026, 1, 1)).alias("at"))
    join_s, _ = _timed(lambda: decide(q_at, in_memory))
    assert out["ok"].sum() > 0
    results.append(("consent check_many", args.rows, chk_s, "polars join", chk_s / join_s))

    engine = state_engine(home)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE plain_log (id INTEGER PRIMARY KEY, payload TEXT)"))

    def plain() -> None:
        for i in range(args.audit):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO plain_log (payload) VALUES (:p)"), {"p": str(i)})

    plain_s, _ = _timed(plain)
    rec_s, _ = _timed(
        lambda: [audit.record(home, "bench", f"o{i}", details={"i": i}) for i in range(args.audit)]
    )
    results.append(("audit record (chained)", args.audit, rec_s, "plain INSERT", rec_s / plain_s))

    read_s, _ = _timed(lambda: sum(1 for _ in audit.entries(home)))
    ver_s, res = _timed(lambda: audit.verify(home))
    assert res.ok
    results.append(("audit verify", res.entries, ver_s, "read rows", ver_s / read_s))

    cores = os.cpu_count()
    ram = psutil.virtual_memory().total / 2**30
    print(f"machine: {cores} cores, {ram:.0f} GiB RAM")
    print(
        f"{'benchmark':38} {'rows':>10} {'seconds':>9} {'rows/s':>12} {'baseline':>14} {'ratio':>7}"
    )
    for name, rows, secs, base, ratio in results:
        print(
            f"{name:38} {rows:>10,} {secs:>9.3f} {rows / secs:>12,.0f} {base:>14} "
            f"{(f'{ratio:.1f}x' if ratio else '-'):>7}"
        )
    print(f"peak RSS: {_peak_mib():.0f} MiB")
    reset_engines()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
