"""The demo stage: checks, desensitizes and reports on every ingested demo resource."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from pipelines.demo_pii import stage
from shuyu_core import keys
from shuyu_core.home import Home


def test_demo_stage(ingested: Home) -> None:
    buf = io.StringIO()
    summary = stage(ingested, Console(file=buf, width=200))
    assert set(summary) == {"RKJBXX", "SCZTDJ", "SBCBJF", "YBJS"}
    assert summary["SCZTDJ"]["findings"] == ["住所: undeclared_pii (ADDRESS)"]
    for entry in summary.values():
        assert Path(entry["output"]).is_relative_to(ingested.work)
    k5 = summary["RKJBXX"]["k_anonymity"]["enforce_k5"]
    assert k5["min_class_size"] >= 5 or k5["classes"] == 0
    assert keys.key_path(ingested, keys.PSEUDONYM).exists()
    text = buf.getvalue()
    assert "住所" in text and "desensitized outputs" in text
    # A second run reuses the outputs (same snapshot, policy and keys).
    again = stage(ingested, Console(file=io.StringIO()))
    assert again["RKJBXX"]["output"] == summary["RKJBXX"]["output"]
