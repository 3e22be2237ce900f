"""Shared helpers of the reliability tests: a valid population export, the CLI in a child
process (exit codes and stderr as a user sees them), and the audit entries of a home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
from sqlalchemy import select

from governance.audit import audit_log
from shuyu_core.home import Home, state_engine


def population() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "公民身份号码": ["11010519491231002X", "210802199001011234"],
            "姓名": ["张三", "李四"],
            "性别": ["女", "男"],
            "出生日期": ["1949-12-31", "1990-01-01"],
            "民族": ["汉族", "满族"],
            "户籍地址": ["辽宁省营口市站前区建设街道1号", "辽宁省营口市西市区渔市街道2号"],
            "现住址": [None, "辽宁省营口市西市区渔市街道2号"],
            "联系电话": ["13800001111", "13900002222"],
            "户籍区划代码": ["210802", "210803"],
            "登记日期": ["2000-01-01", "2001-02-03"],
            "更新日期": ["2026-01-01", "2026-02-01"],
        }
    )


def shuyu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``shuyu`` entry point in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def audit_rows(home: Home) -> list[tuple[str, str, str]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.action, audit_log.c.object, audit_log.c.outcome).order_by(
                audit_log.c.seq
            )
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def snapshot_dirs(home: Home) -> list[Path]:
    return sorted(p.parent for p in home.raw.rglob("manifest.json"))
