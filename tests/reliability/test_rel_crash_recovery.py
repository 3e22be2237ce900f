"""kill -9 at named points (``SHUYU_FAULT``) of ingest, build and publish, then a rerun.

After every kill: only complete directories are visible. After the rerun: every visible
result has its audit entry, at most one charge and one draw per release, no intent, staging
or working file is left, the publication is listed, and ``audit verify`` passes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from accounts_testkit import act_as
from reliability_testkit import audit_rows, population, shuyu, snapshot_dirs

from governance import audit
from governance.actors import set_current
from pipelines.ingest import ingest_path
from privacy.dp import ledger
from shuyu_core import faults
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, init_key

KILLED = faults.KILLED


def _leftovers(home: Home) -> list[str]:
    """Anything in .tmp/ or the intent journal."""
    journal = home.root / ".journal"
    left = [p.name for p in home.tmp.iterdir()]
    return left + ([p.name for p in journal.iterdir()] if journal.exists() else [])


def _complete_dirs_only(home: Home) -> None:
    for zone in (home.raw, home.releases, home.published / "products"):
        if zone.exists():
            for d in zone.rglob("*"):
                assert not d.name.endswith(".staging"), d


@pytest.mark.parametrize("point", ["ingest.staged", "ingest.after_rename", "ingest.audited"])
def test_killed_ingest_is_repaired_by_the_next_command(
    home: Home, tmp_path: Path, point: str
) -> None:
    src = tmp_path / "export.csv"
    src.write_bytes(population().write_csv().encode("gb18030"))  # transcoded: a temp file too
    proc = shuyu("ingest", "RKJBXX", "--from", str(src), "--no-check", env={"SHUYU_FAULT": point})
    assert proc.returncode == KILLED, proc.stderr
    _complete_dirs_only(home)
    visible = snapshot_dirs(home)
    assert len(visible) == (0 if point == "ingest.staged" else 1)
    if point == "ingest.staged":
        assert _leftovers(home)  # the dead run's stage and transcoded copy

    if point == "ingest.after_rename":
        doctor = shuyu("doctor", "--format", "json")  # reports, changes nothing
        assert doctor.returncode == 0, doctor.stderr
        assert json.loads(doctor.stdout)["recorded"] == [f"ingest RKJBXX/{visible[0].name}"]
        assert ("ingest", f"RKJBXX/{visible[0].name}", "ok") not in audit_rows(home)

    rerun = shuyu("ingest", "RKJBXX", "--from", str(src), "--no-check")
    assert rerun.returncode == 0, rerun.stderr
    snaps = snapshot_dirs(home)
    assert len(snaps) == len(visible) + 1
    rows = audit_rows(home)
    for snap in snaps:
        assert rows.count(("ingest", f"RKJBXX/{snap.name}", "ok")) == 1, rows
    assert _leftovers(home) == []
    assert audit.verify(home).ok


def test_doctor_finds_a_snapshot_without_entry_even_without_intent(
    home: Home, tmp_path: Path
) -> None:
    """A result that appeared without any intent (an older version, a lost journal) is found
    by the full scan of ``shuyu doctor`` and recorded by ``--repair``, once."""
    import shutil

    src = tmp_path / "export.csv"
    population().write_csv(src)
    snap = ingest_path(home, "RKJBXX", src)
    stray = home.raw / "RKJBXX" / "20260101T000000000000Z"
    shutil.copytree(home.raw / "RKJBXX" / snap.snapshot_id, stray)
    report = json.loads(shuyu("doctor", "--format", "json").stdout)
    assert report["recorded"] == [f"ingest RKJBXX/{stray.name}"]
    assert shuyu("doctor", "--repair").returncode == 0
    assert audit_rows(home).count(("ingest", f"RKJBXX/{stray.name}", "ok")) == 1
    assert json.loads(shuyu("doctor", "--format", "json").stdout)["recorded"] == []
    assert audit.verify(home).ok


AS_OF = dt.date(2026, 1, 15)


def _domain(home: Home) -> None:
    """RKJBXX and SBCBJF snapshots of 1 500 generated persons, checked, and a key."""
    from quality.api import run_check
    from synthetic_data.generate import generate_frames

    data, _ = generate_frames(persons=1500, seed=5, defect_rate=0.0, as_of=AS_OF)
    for code in ("RKJBXX", "SBCBJF"):
        path = home.root / f"{code}.parquet"
        data[code].write_parquet(path)
        ingest_path(home, code, path)
        run_check(home, code, open_tickets=False)
    init_key(home, PSEUDONYM)


def _run(*args: str, fault: str | None = None, code: int = 0) -> str:
    proc = shuyu(*args, env={"SHUYU_FAULT": fault or ""})
    assert proc.returncode == code, (args, fault, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


def _assess_and_approve(home: Home, release: str) -> None:
    from assessment import engine, review

    engine.assess(home, release)
    act_as(home, "li.reviewer", "reviewer")
    review.decide(home, release, "approve", "通过")
    set_current(None)


def test_killed_build_and_publish_are_completed_by_reruns(home: Home) -> None:
    _domain(home)
    product = "si_enrolment_report"
    # build: killed with the release staged (charged, drawn), then right after its rename.
    _run("build", product, fault="build.staged", code=KILLED)
    assert list(home.releases.iterdir()) == []
    _complete_dirs_only(home)
    _run("build", product, fault="build.after_rename", code=KILLED)
    [release] = [p.name for p in home.releases.iterdir()]
    assert ("product.build", release, "ok") not in audit_rows(home)
    # the draw kept until the release is stored (a count/sum report writes no per-person frame)
    assert (home.work / "products" / "pending" / release).exists()

    out = json.loads(_run("build", product, "--format", "json"))  # the stored release
    assert out["release"] == release
    rows = audit_rows(home)
    assert rows.count(("product.build", release, "ok")) == 2  # recovered + reused
    entries = ledger.entries_for_release(home, release)
    assert entries and all(e.draws == 1 and e.state == "stored" for e in entries)
    assert not (home.work / "products" / "build" / release).exists()
    assert not (home.work / "products" / "pending" / release).exists()

    # publish: killed while staging (nothing visible), then right after the rename.
    _assess_and_approve(home, release)
    _run("publish", release, fault="publish.staged", code=KILLED)
    assert not (home.published / "products" / release).exists()
    _run("publish", release, fault="publish.after_rename", code=KILLED)
    assert (home.published / "products" / release / "registration.json").exists()
    assert ("publish", release, "ok") not in audit_rows(home)
    assert not (home.published / "catalog.json").exists()

    _run("publish", release)  # the rerun completes: entry, registration, listings
    rows = audit_rows(home)
    assert rows.count(("publish", release, "ok")) == 2  # recovered + already published
    catalog = json.loads((home.published / "catalog.json").read_text("utf-8"))
    assert [p["release"] for p in catalog["products"]] == [release]
    disclosure = json.loads((home.published / "disclosure.json").read_text("utf-8"))
    assert [p["product_code"] for p in disclosure["products_and_services"]] == [product]
    assert _leftovers(home) == []
    _complete_dirs_only(home)

    # A listing lost otherwise (removed by hand) comes back with the next publish, too.
    (home.published / "catalog.json").unlink()
    _run("publish", release)
    assert (home.published / "catalog.json").exists()
    assert audit.verify(home).ok
