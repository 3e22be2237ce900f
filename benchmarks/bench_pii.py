"""PII benchmark: column scan + desensitization against Presidio's structured path, a
10-million-row streaming desensitization, and HMAC-SM3 pseudonymization throughput.

    .venv/bin/python benchmarks/bench_pii.py [--rows N] [--big-rows N] [--baseline-rows N]
                                             [--full-baseline] [--hmac-rows N]

1. Scan + desensitize, ``--rows`` (default 100 000) rows of the population table (RKJBXX,
   11 columns, synthetic). Shuyu: ``privacy.pii.scan.scan_frame`` (2 000-value sample per
   column) then ``transforms.apply.desensitize_frame`` with the default policy, collected.
   Baseline, same table and the same recognizers (Shuyu's Presidio ``AnalyzerEngine``):
   presidio-structured ``PandasAnalysisBuilder.generate_analysis`` — by default it analyzes
   every cell — then ``StructuredEngine.anonymize`` (redact names, SHA-256 hash IDs, mask
   phones and addresses). Presidio's analysis costs the same per cell, so by default it is
   timed on ``--baseline-rows`` rows (default 2 000) and scaled linearly to ``--rows``
   (printed as "extrapolated"); ``--full-baseline`` times it on every row instead. A second
   baseline row gives presidio-structured the same 2 000-row sample Shuyu uses (``n=2000``).
2. Streaming: ``--big-rows`` (default 10 000 000; 0 skips) rows x 10 columns written as
   1 000 000-row Parquet parts, then desensitized by ``desensitize_frame`` and
   ``sink_parquet`` in a fresh process (its own peak RSS); baseline: the same read and write
   with no transform.
3. HMAC-SM3: ``transforms.operators.pseudonymize`` (streaming) on ``--hmac-rows`` values
   (default 1 000 000): all distinct, and 10% distinct (each value ten times, cyclic and
   shuffled), against a per-row ``hmac.new(key, v, "sm3")`` loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEY = bytes(range(32))
PART = 1_000_000


def _keys(name: str) -> bytes:
    return KEY if name == "pseudonym" else KEY[:16]


def _peak_rss_mb() -> float:
    """Peak resident set of this process in MiB.

    Linux's ``/proc/self/status`` VmHWM belongs to the current address space; getrusage's
    ru_maxrss survives exec, so a worker started by fork+exec would report its parent's
    peak if that were larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM"


# -- 1. scan + desensitize vs presidio-structured ----------------------------------------------


def _population(rows: int) -> pl.DataFrame:
    from synthetic_data.generate import generate_frames

    frames, _ = generate_frames(persons=rows, seed=11, defect_rate=0.01, as_of=dt.date(2025, 6, 30))
    return frames["RKJBXX"].head(rows)


def _shuyu_scan_and_desensitize(df: pl.DataFrame, analyzer_factory: Any) -> tuple[float, Any]:
    from catalogs.catalog import Catalog
    from privacy.pii.scan import scan_frame
    from transforms.apply import desensitize_frame
    from transforms.policy import load_policy

    resource_ = Catalog.load().get("RKJBXX")
    policy = load_policy()
    t = time.perf_counter()
    report = scan_frame(df, sample=2000, make_analyzer=analyzer_factory)
    lf, _ = desensitize_frame(df.lazy(), resource_, policy, _keys, detected=report.detected())
    out = lf.collect()
    return time.perf_counter() - t, (report, out)


def _presidio_structured(pdf: Any, analyzer: Any, n: int | None) -> tuple[float, float, Any]:
    from presidio_anonymizer.entities import OperatorConfig
    from presidio_structured import PandasAnalysisBuilder, StructuredEngine

    builder = PandasAnalysisBuilder(analyzer=analyzer)
    t = time.perf_counter()
    analysis = builder.generate_analysis(pdf, n=n, language="zh")
    t_analysis = time.perf_counter() - t
    operators = {
        "PERSON_NAME": OperatorConfig("redact"),
        "CN_RESIDENT_ID": OperatorConfig("hash", {"hash_type": "sha256"}),
        "CN_MOBILE": OperatorConfig(
            "mask", {"masking_char": "*", "chars_to_mask": 4, "from_end": False}
        ),
        "ADDRESS": OperatorConfig("replace", {"new_value": "<ADDRESS>"}),
        "DATE_OF_BIRTH": OperatorConfig("replace", {"new_value": "<DOB>"}),
        "DEFAULT": OperatorConfig("replace"),
    }
    t = time.perf_counter()
    StructuredEngine().anonymize(pdf, analysis, operators)
    t_anon = time.perf_counter() - t
    return t_analysis, t_anon, analysis


def bench_scan(rows: int, baseline_rows: int, full_baseline: bool) -> list[dict[str, Any]]:
    from privacy.pii.engine import build_analyzer

    df = _population(rows)
    model = Path(tempfile.mkdtemp(prefix="shuyu-bench-model-"))
    analyzer = build_analyzer(model / "m")
    analyzer.analyze("warm-up 13812345678", language="zh")
    ours, (report, out) = _shuyu_scan_and_desensitize(df, lambda: analyzer)
    rows_out = out.height
    # Presidio's operators need text in every cell: dates as ISO text, nulls as "".
    pdf = (
        df.with_columns(pl.col(pl.Date).cast(pl.String))
        .with_columns(pl.col(pl.String).fill_null(""))
        .to_pandas()
    )
    results: list[dict[str, Any]] = [
        {
            "case": f"shuyu scan (2 000 sample/column) + desensitize, {rows:,} rows",
            "rows": rows,
            "seconds": ours,
            "detected": report.detected(),
            "rows_out": rows_out,
        }
    ]
    # presidio-structured, default: every cell analyzed.
    n_base = rows if full_baseline else min(baseline_rows, rows)
    t_an, t_anon, analysis = _presidio_structured(pdf.head(n_base), analyzer, None)
    # Both steps work cell by cell, so their cost scales linearly with the rows.
    total = (t_an + t_anon) * rows / n_base
    label = "measured" if n_base == rows else f"extrapolated from {n_base:,} rows"
    results.append(
        {
            "case": f"presidio-structured, all cells analyzed ({label})",
            "rows": rows,
            "seconds": total,
            "ratio": total / ours,
            "entities": analysis.entity_mapping,
        }
    )
    t_an2, t_anon2, analysis2 = _presidio_structured(pdf, analyzer, 2000)
    results.append(
        {
            "case": "presidio-structured, n=2000 sample (measured)",
            "rows": rows,
            "seconds": t_an2 + t_anon2,
            "ratio": (t_an2 + t_anon2) / ours,
            "entities": analysis2.entity_mapping,
        }
    )
    shutil.rmtree(model, ignore_errors=True)
    return results


# -- 2. streaming 10M x 10 --------------------------------------------------------------------


def _big_part(n: int, seed: int) -> pl.DataFrame:
    from synthetic_data import ids
    from synthetic_data import pools as P

    rng = np.random.default_rng(seed)
    pools = P.pools()
    counties = np.array([210802, 210803, 210804, 210811, 210881, 210882])
    region = counties[rng.integers(0, len(counties), n)]
    born = np.datetime64("1940-01-01") + rng.integers(0, 30000, n).astype("timedelta64[D]")
    ymd = pl.Series(born).dt.strftime("%Y%m%d").cast(pl.Int64).to_numpy()
    seq = rng.integers(0, 1000, n)
    body = region * 10**11 + ymd * 1000 + seq
    rid = ids.ric_strings(body, ids.ric_check_index(body))
    surname = pl.Series(pools.surnames).gather(rng.integers(0, len(pools.surnames), n))
    given_pool = pools.given_male + pools.given_female
    given = pl.Series(given_pool).gather(rng.integers(0, len(given_pool), n))
    streets = [s for v in P.YINGKOU_STREETS.values() for s in v]
    street = pl.Series(streets).gather(rng.integers(0, len(streets), n))
    district = pl.Series(["站前区", "西市区", "鲅鱼圈区", "老边区", "盖州市", "大石桥市"]).gather(
        rng.integers(0, 6, n)
    )
    mobile_prefix = pl.Series(P.MOBILE_PREFIXES).gather(rng.integers(0, len(P.MOBILE_PREFIXES), n))
    frame = pl.DataFrame(
        {
            "公民身份号码": rid,
            "姓名": surname + given,
            "性别": np.where(seq % 2 == 1, "男", "女"),
            "出生日期": pl.Series(born),
            "民族": np.array(["汉族", "满族", "回族", "蒙古族"])[
                rng.choice(4, n, p=[0.83, 0.14, 0.02, 0.01])
            ],
            "现住址": "辽宁省营口市"
            + district
            + street
            + pl.Series(rng.integers(1, 400, n)).cast(pl.String)
            + "号"
            + pl.Series(rng.integers(1, 30, n)).cast(pl.String)
            + "号楼"
            + pl.Series(rng.integers(101, 1800, n)).cast(pl.String)
            + "室",
            "联系电话": mobile_prefix
            + pl.Series(rng.integers(0, 10**8, n)).cast(pl.String).str.zfill(8),
            "户籍区划代码": pl.Series(region).cast(pl.String),
            "登记日期": pl.Series(born + rng.integers(0, 3000, n).astype("timedelta64[D]")),
            "月收入": np.round(rng.gamma(2.0, 2500.0, n), 2),
        }
    )
    return frame


def _write_big(rows: int, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    done, i = 0, 0
    while done < rows:
        n = min(PART, rows - done)
        _big_part(n, seed=1000 + i).write_parquet(directory / f"part-{i:05d}.parquet")
        done += n
        i += 1


def _worker(kind: str, src: Path, out: Path) -> None:
    """Runs in a fresh process so its peak RSS is its own."""
    from catalogs.catalog import Catalog
    from transforms.apply import desensitize_frame
    from transforms.policy import load_policy

    base_rss = psutil.Process().memory_info().rss / 2**20
    lf = pl.scan_parquet(sorted(str(p) for p in src.glob("*.parquet")))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    if kind == "baseline":
        lf.sink_parquet(out)
    else:
        plan, _ = desensitize_frame(lf, Catalog.load().get("RKJBXX"), load_policy(), _keys)
        plan.sink_parquet(out)
    seconds = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    rows = pl.scan_parquet(out).select(pl.len()).collect().item()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "rows": rows,
                "peak_rss_mb": _peak_rss_mb(),
                "base_rss_mb": base_rss,
            }
        )
    )


def bench_big(rows: int) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="shuyu-bench-big-"))
    try:
        t = time.perf_counter()
        _write_big(rows, tmp / "src")
        gen = time.perf_counter() - t
        out: dict[str, dict[str, Any]] = {}
        for kind in ("baseline", "desensitize"):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--_worker",
                    kind,
                    str(tmp / "src"),
                    str(tmp / f"{kind}.parquet"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            out[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in (tmp / "src").glob("*.parquet")) / 2**20
        base = out["baseline"]
        des = out["desensitize"]
        return [
            {
                "case": (
                    f"plain read + write, {rows:,} x 10 (baseline; input {size:.0f} MiB, "
                    f"generated in {gen:.0f} s; CPU {base['cpu_seconds']:.1f} s)"
                ),
                "rows": base["rows"],
                "seconds": base["seconds"],
                "peak_rss_mb": base["peak_rss_mb"],
            },
            {
                "case": (
                    f"desensitize (default policy) streaming, {rows:,} x 10 (CPU "
                    f"{des['cpu_seconds']:.1f} s = {des['cpu_seconds'] / base['cpu_seconds']:.1f}x)"
                ),
                "rows": des["rows"],
                "seconds": des["seconds"],
                "ratio": des["seconds"] / base["seconds"],
                "peak_rss_mb": des["peak_rss_mb"],
                "rows_per_s": des["rows"] / des["seconds"],
            },
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- 3. HMAC-SM3 --------------------------------------------------------------------------------


def bench_hmac(rows: int) -> list[dict[str, Any]]:
    from transforms.operators import pseudonymize

    unique = pl.Series("v", [f"2108021990{i:08d}" for i in range(rows)])
    repeated = pl.Series("v", [f"2108021990{i % max(rows // 10, 1):08d}" for i in range(rows)])
    # Repeats scattered at random (one person's visits across a table), not in runs.
    shuffled = repeated.sample(fraction=1.0, shuffle=True, seed=5)
    values = unique.to_list()
    t = time.perf_counter()
    naive = [hmac.new(KEY, v.encode("utf-8"), "sm3").hexdigest() for v in values]
    t_naive = time.perf_counter() - t
    out: list[dict[str, Any]] = [
        {
            "case": "per-row hmac.new(key, v, 'sm3') loop (baseline)",
            "rows": rows,
            "seconds": t_naive,
            "rows_per_s": rows / t_naive,
        }
    ]
    # The two ways one batch of distinct values is hashed, on the same values: the per-value
    # loop over OpenSSL's SM3 with the key's pads precomputed (one core, holds the GIL), and
    # the compiled batch (transforms.sm3_batch, numba) on one thread and on every core. The
    # batch is called once on a few values first: its compiled code is loaded from numba's
    # cache (or compiled, about 3 s, on a machine's first run), which is not hashing.
    from transforms import sm3_batch
    from transforms.operators import hmac_sm3_tokens

    t = time.perf_counter()
    loop = hmac_sm3_tokens(values, KEY)
    t_loop = time.perf_counter() - t
    out.append(
        {
            "case": "hmac_sm3_tokens: per-value loop, pads precomputed (1 core)",
            "rows": rows,
            "seconds": t_loop,
            "ratio": t_naive / t_loop,
            "rows_per_s": rows / t_loop,
        }
    )
    saved = os.environ.get("SHUYU_HMAC_THREADS")
    sm3_batch.hmac_sm3_hex(unique.head(8), KEY)
    for threads in ("1", str(len(os.sched_getaffinity(0)))):
        os.environ["SHUYU_HMAC_THREADS"] = threads
        sm3_batch._POOL = None
        t = time.perf_counter()
        vec = sm3_batch.hmac_sm3_hex(unique, KEY)
        seconds = time.perf_counter() - t
        assert vec.to_list() == loop
        out.append(
            {
                "case": f"sm3_batch.hmac_sm3_hex: compiled (numba), {threads} thread(s)",
                "rows": rows,
                "seconds": seconds,
                "ratio": t_naive / seconds,
                "rows_per_s": rows / seconds,
            }
        )
    if saved is None:
        os.environ.pop("SHUYU_HMAC_THREADS", None)
    else:
        os.environ["SHUYU_HMAC_THREADS"] = saved
    sm3_batch._POOL = None
    cases = (
        ("all distinct", unique),
        ("10% distinct, cyclic", repeated),
        ("10% distinct, shuffled", shuffled),
    )
    for label, series in cases:
        frame = series.to_frame()
        t = time.perf_counter()
        res = frame.lazy().select(pseudonymize(pl.col("v"), KEY)).collect(engine="streaming")
        seconds = time.perf_counter() - t
        if label == "all distinct":
            assert res["v"][5] == naive[5]
        out.append(
            {
                "case": f"shuyu pseudonymize (streaming), {label}",
                "rows": rows,
                "seconds": seconds,
                "ratio": t_naive / seconds,
                "rows_per_s": rows / seconds,
            }
        )
    return out


# -- report ------------------------------------------------------------------------------------


def _print(section: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {section}")
    print(
        f"{'case':<92} {'rows':>12} {'seconds':>9} {'ratio':>9} {'rows/s':>12} {'peak RSS MiB':>13}"
    )
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if "ratio" in r else ""
        rps = f"{r['rows_per_s']:,.0f}" if "rows_per_s" in r else ""
        rss = f"{r['peak_rss_mb']:,.0f}" if "peak_rss_mb" in r else ""
        print(
            f"{r['case']:<92} {r['rows']:>12,} {r['seconds']:>9.2f} {ratio:>9} {rps:>12} {rss:>13}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=2_000)
    ap.add_argument("--full-baseline", action="store_true")
    ap.add_argument("--big-rows", type=int, default=10_000_000)
    ap.add_argument("--hmac-rows", type=int, default=1_000_000)
    ap.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        kind, src, out = args._worker
        _worker(kind, Path(src), Path(out))
        return 0
    print(
        f"# bench_pii — machine: {_machine()}; "
        f"python {sys.version.split()[0]}, polars {pl.__version__}"
    )
    scan = bench_scan(args.rows, args.baseline_rows, args.full_baseline)
    _print("1. scan + desensitize vs presidio-structured (same table, same recognizers)", scan)
    print(f"   shuyu detected: {scan[0]['detected']}")
    print(f"   presidio-structured entity mapping (all cells): {scan[1]['entities']}")
    print(f"   presidio-structured entity mapping (n=2000):    {scan[2]['entities']}")
    _print("3. HMAC-SM3 pseudonymization", bench_hmac(args.hmac_rows))
    if args.big_rows > 0:
        _print("2. streaming desensitization, bounded memory", bench_big(args.big_rows))
    print(f"\npeak RSS of this process: {_peak_rss_mb():,.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
