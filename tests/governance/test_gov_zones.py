"""Identifiers and zones (issue 11, item 4): id patterns, ``within``, and ``--out`` options
that try to write into published/, raw/ or releases/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from governance.audit import audit_log
from products import specs
from shuyu_core import ids, snapshots
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home, state_engine

RID = "si_enrolment_report-v1.0.0-0123456789abcdef"


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("release", RID, [f"../releases/{RID}", f"{RID}/", f"/{RID}", RID.upper(), f"{RID}x"]),
        ("product", "si_enrolment_report", ["../x", "Si", "a", "x/y", "x.yaml"]),
        ("snapshot", "20260101T120000123456Z", ["2026", "../20260101T120000123456Z", ""]),
        ("assessment", f"{RID}-A001", [RID, f"{RID}-A1", f"{RID}-A001/.."]),
        ("resource", "RKJBXX", ["rkjbxx", "../RKJBXX", "R"]),
        ("ticket", "17", ["0", "-1", "1.5", "x"]),
    ],
)
def test_id_patterns(kind: str, good: str, bad: list[str]) -> None:
    assert ids.check(kind, good) == good
    for value in bad:
        with pytest.raises(ids.InvalidIdentifier, match=f"not a valid {kind} id"):
            ids.check(kind, value)


def test_within_refuses_dotdot_absolute_and_symlinks_out(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    (zone / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (zone / "out").symlink_to(outside, target_is_directory=True)
    (zone / "in").symlink_to(zone / "a", target_is_directory=True)
    assert ids.within(zone, "a/b.txt") == (zone / "a" / "b.txt").resolve()
    assert ids.within(zone, "in/x") == (zone / "a" / "x").resolve()
    for bad in ("../outside", "a/../../outside", "/etc/passwd", "out/x", "out", "a\\..\\x", ""):
        with pytest.raises(ids.OutsideZone):
            ids.within(zone, bad)
    with pytest.raises(ids.OutsideZone):
        ids.within(zone, outside / "x")


def test_snapshot_and_spec_lookups_refuse_paths(home: Home) -> None:
    with pytest.raises(ValidationError):
        snapshots.get(home, "RKJBXX", "../../releases")
    with pytest.raises(ValidationError):
        snapshots.get(home, "../RKJBXX", "20260101T120000123456Z")
    with pytest.raises(ValidationError):
        specs.get("../../catalogs/resources/RKJBXX")


def _audit(home: Home, action: str) -> list[tuple[str, str]]:
    with state_engine(home).connect() as conn:
        rows = conn.execute(
            select(audit_log.c.outcome, audit_log.c.details).where(audit_log.c.action == action)
        ).all()
    return [(r[0], json.loads(r[1])["zone"]) for r in rows]


def _run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    from pipelines import cli

    monkeypatch.setattr(sys, "argv", ["shuyu", *argv])
    try:
        cli.main()
    except SystemExit as ex:
        return int(ex.code or 0)
    return 0


def test_out_options_cannot_write_into_the_zones(
    home: Home, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    link = tmp_path / "innocent"
    link.symlink_to(home.published, target_is_directory=True)
    attempts = [
        (("audit", "export", "--out", str(home.published / "audit.jsonl")), "audit.export.out"),
        (("audit", "export", "--out", str(link / "audit.jsonl")), "audit.export.out"),
        (("catalog", "export", "--out", str(home.published / "dp.json")), "catalog.export.out"),
        (("catalog", "export", "--out", str(home.releases / "dp.json")), "catalog.export.out"),
        (("synth", "--out", str(home.published / "data"), "--persons", "50"), "synth.out"),
        (("synth", "--out", str(home.raw / "RKJBXX"), "--persons", "50"), "synth.out"),
        (
            ("sources", "evaluate", "--format", "json", "--out", str(home.published / "e.json")),
            "sources.evaluate.out",
        ),
    ]
    for argv, action in attempts:
        before = sorted(p for p in home.root.rglob("*") if p.is_file() and "state.db" not in p.name)
        assert _run(monkeypatch, *argv) == 5, argv
        assert _audit(home, action)[-1][0] == "refused", argv
        after = sorted(p for p in home.root.rglob("*") if p.is_file() and "state.db" not in p.name)
        assert after == before, argv
    assert not any(home.published.rglob("*.json*"))
    # Outside the zones the same commands write as before.
    target = tmp_path / "exports" / "datapackage.json"
    target.parent.mkdir()
    assert _run(monkeypatch, "catalog", "export", "--out", str(target)) == 0
    assert target.exists()


def test_cli_id_arguments_are_refused_with_exit_4_and_audited(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    for argv in (
        ("releases", "show", f"../releases/{RID}"),
        ("assess", "/etc"),
        ("build", "../../catalogs/resources/RKJBXX"),
        ("build", "si_enrolment_report", "--snapshot", "RKJBXX=../../published"),
        ("quality", "check", "RKJBXX", "--snapshot", "../x"),
    ):
        with state_engine(home).connect() as conn:
            before = conn.execute(select(audit_log.c.seq)).all()
        assert _run(monkeypatch, *argv) == 4, argv
        with state_engine(home).connect() as conn:
            rows = conn.execute(
                select(audit_log.c.outcome, audit_log.c.details).where(
                    audit_log.c.seq > len(before)
                )
            ).all()
        assert any("not a valid" in r[1] and r[0] in ("error", "refused") for r in rows), argv
