"""The whole demo on a small population: every stage runs, and a second run reuses its work."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from governance import accounts, audit, separation
from governance.identity import login_name
from pipelines.demo import run_demo, stages
from shuyu_core import snapshots
from shuyu_core.home import Home

CODES = ("RKJBXX", "SCZTDJ", "SBCBJF", "YBJS")

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_and_reuses_its_work_on_a_second_run(
    bare_home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a fresh domain the demo bootstraps its accounts and runs as the OS login."""
    home = bare_home
    monkeypatch.delenv("SHUYU_ACTOR")
    monkeypatch.delenv("SHUYU_ROLE")
    out = io.StringIO()
    summary = run_demo(home, Console(file=out, width=160), persons=2000, seed=5, rate=0.02)

    assert list(summary) == [name for name, _ in stages(2000, 5, 0.02)]
    first_snapshots = {code: snapshots.latest(home, code).snapshot_id for code in CODES}
    releases = summary["data products 数据产品"]["releases"]
    assert len(releases) == 7  # the four demo products and three written only as specs
    assert all((home.releases / rid / "release.json").is_file() for rid in releases.values())
    assessed = summary["assessment 发布前评估与发布"]
    assert assessed["verdicts"] == {product: "pass" for product in releases}
    assert sorted(assessed["published"]) == sorted(releases.values())
    catalog_path = Path(assessed["catalog"])
    assert catalog_path.is_relative_to(home.published)
    registered = json.dumps(json.loads(catalog_path.read_text(encoding="utf-8")))
    assert all(rid in registered for rid in releases.values())
    assert audit.verify(home).ok
    # four-eyes held: the demo reviewer approved, the login (operator) built and published
    login = login_name()
    for rid in releases.values():
        did = separation.parties(home, rid)
        assert did[login] >= {"built", "assessed", "published"}
        assert "demo-reviewer" not in did
    assert {a.name for a in accounts.list_all(home)} >= {login, "demo-reviewer", "demo-SU-GA"}

    again = run_demo(home, Console(file=io.StringIO(), width=160), 2000, 5, 0.02)
    # Same data, same snapshots, same releases: nothing re-ingested, re-charged or redrawn.
    assert {c: snapshots.latest(home, c).snapshot_id for c in CODES} == first_snapshots
    assert again["data products 数据产品"]["releases"] == releases
    assert all(again["data products 数据产品"]["reused"].values())
    assert audit.verify(home).ok
    assert str(home.root) in out.getvalue()
