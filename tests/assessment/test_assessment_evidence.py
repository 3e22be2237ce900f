"""Evidence outside the judged object (issue 11, items 3-5): the attacks of the review.

Each attack tries to get a release past the assessment, the reviewer and publish, or to make
a build read changed raw data, and asserts the refusal, its audit entry, and that nothing was
written (no new release, nothing in published/).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from assessment_testkit import write_spec
from sqlalchemy import func, select

from assessment import engine, publish, review
from governance import evidence
from governance.actors import Actor, set_current
from governance.audit import audit_head, audit_log
from privacy.dp.ledger import dp_ledger
from products import release as rel
from products.engine import build
from shuyu_core import snapshots
from shuyu_core.errors import IntegrityError, PermissionDenied, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_file, sm3_hex
from shuyu_core.home import Home, state_engine

SI = "si_enrolment_report"


@pytest.fixture()
def as_role() -> Iterator[object]:
    def switch(role: str) -> None:
        set_current(Actor(f"test-{role}", role))

    yield switch
    set_current(None)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _audit(home: Home, action: str, obj: str | None = None) -> list[tuple[str, dict[str, object]]]:
    with state_engine(home).connect() as conn:
        q = select(audit_log.c.outcome, audit_log.c.details, audit_log.c.object).where(
            audit_log.c.action == action
        )
        rows = conn.execute(q.order_by(audit_log.c.seq)).all()
    return [(r[0], json.loads(r[1])) for r in rows if obj is None or r[2] == obj]


def _other_id(rid: str, salt: str) -> str:
    """A well-formed release id no build made."""
    return f"{rid[:-16]}{sm3_hex(f'{rid}/{salt}'.encode())[:16]}"


def _approve(home: Home, rid: str, as_role: object) -> None:
    engine.assess(home, rid)
    as_role("reviewer")  # type: ignore[operator]
    review.decide(home, rid, "approve", "评估通过")
    as_role("operator")  # type: ignore[operator]


def _raw_rows(home: Home) -> pl.DataFrame:
    m = snapshots.latest(home, "RKJBXX")
    return snapshots.scan(home, "RKJBXX", m.snapshot_id).collect()


# -- item 3: the seal ---------------------------------------------------------------------------


def test_every_release_is_sealed_in_the_audit_chain(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    for rid in releases.values():
        seal = evidence.find_seal(home, rid)
        assert seal is not None and not seal.problems
        rdir = home.releases / rid
        assert seal.release_json_sm3 == sm3_file(rdir / "release.json")
        manifest = rel.load(home, rid)
        for out in manifest.outputs:
            assert out.sm3 and seal.files[out.path] == out.sm3 == sm3_file(rdir / out.path)
        assert evidence.verify_release(home, rid, rdir, list(manifest.outputs)) == []


def test_planted_directory_with_raw_rows_and_empty_sm3_is_refused_everywhere(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    home, releases = demo
    rid = releases[SI]
    planted = _other_id(rid, "planted")
    dst = home.releases / planted
    shutil.copytree(home.releases / rid, dst)
    raw = _raw_rows(home)
    doc = json.loads((dst / "release.json").read_text("utf-8"))
    doc["release_id"] = planted
    for out in doc["outputs"]:
        path = dst / out["path"]
        if out["format"] == "parquet":
            raw.write_parquet(path)
        elif out["format"] == "csv":
            raw.write_csv(path)
        out["sm3"] = ""
    (dst / "release.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")

    a = engine.assess(home, planted)
    check = a.check("file_integrity")
    assert a.verdict == "fail" and check.status == "fail"
    assert "no build seal" in check.evidence
    assert [d["verdict"] for o, d in _audit(home, "assessment.run", planted)] == ["fail"]
    as_role("reviewer")  # type: ignore[operator]
    with pytest.raises(PermissionDenied, match="verdict is fail"):
        review.decide(home, planted, "approve", "looks fine")
    assert [o for o, _ in _audit(home, "review.approve", planted)] == ["refused"]
    as_role("operator")  # type: ignore[operator]
    with pytest.raises(PermissionDenied):
        publish.publish(home, planted)
    assert [o for o, _ in _audit(home, "publish", planted)] == ["refused"]
    assert not (home.published / "products" / planted).exists()


def test_planted_directory_cannot_pass_even_with_a_forged_passing_assessment(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    """The seal check in publish does not depend on the assessment having caught it."""
    home, releases = demo
    rid = releases[SI]
    _approve(home, rid, as_role)
    # Swap the approved release's content for raw rows, rewriting every digest in release.json
    # *and* re-pointing nothing else: publish must judge by the seal.
    rdir = home.releases / rid
    doc = json.loads((rdir / "release.json").read_text("utf-8"))
    raw = _raw_rows(home)
    for out in doc["outputs"]:
        if out["format"] == "csv":
            raw.write_csv(rdir / out["path"])
            out["sm3"] = sm3_file(rdir / out["path"])
    (rdir / "release.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    before = _files(home.published)
    with pytest.raises(PermissionDenied, match="changed since assessment"):
        publish.publish(home, rid)
    assert _files(home.published) == before
    assert [o for o, _ in _audit(home, "publish", rid)] == ["refused"]


def test_edited_counts_with_rewritten_sm3_fail_assessment(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases[SI]
    rdir = home.releases / rid
    doc = json.loads((rdir / "release.json").read_text("utf-8"))
    csv = next(o for o in doc["outputs"] if o["format"] == "csv")
    frame = pl.read_csv(rdir / csv["path"])
    count = next(c for c, t in frame.schema.items() if t.is_numeric())
    frame.with_columns(pl.col(count) + 1000).write_csv(rdir / csv["path"])
    csv["sm3"] = sm3_file(rdir / csv["path"])
    (rdir / "release.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")

    a = engine.assess(home, rid)
    check = a.check("file_integrity")
    assert check.status == "fail" and a.verdict == "fail"
    assert "release.json differs from its sealed SM3" in check.evidence
    assert f"{csv['path']} changed since the build" in check.evidence
    assert f"{csv['path']}: the SM3 in release.json is not the sealed one" in check.evidence


def test_empty_digest_fails_even_when_the_files_are_untouched(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, releases = demo
    rid = releases[SI]
    rdir = home.releases / rid
    doc = json.loads((rdir / "release.json").read_text("utf-8"))
    doc["outputs"][0]["sm3"] = ""
    (rdir / "release.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    check = engine.assess(home, rid).check("file_integrity")
    assert check.status == "fail" and "empty SM3" in check.evidence


def test_a_forged_seal_entry_is_not_accepted(demo: tuple[Home, dict[str, str]]) -> None:
    """A seal inserted into the table (triggers dropped) without re-chaining is rejected."""
    home, releases = demo
    rid = releases[SI]
    planted = _other_id(rid, "forged-seal")
    shutil.copytree(home.releases / rid, home.releases / planted)
    doc = json.loads((home.releases / planted / "release.json").read_text("utf-8"))
    doc["release_id"] = planted
    (home.releases / planted / "release.json").write_text(json.dumps(doc), "utf-8")
    files = evidence.directory_digests(home.releases / planted)
    with state_engine(home).begin() as conn:
        top = conn.execute(select(func.max(audit_log.c.seq))).scalar_one()
        conn.execute(
            audit_log.insert().values(
                seq=top + 1,
                ts="2026-01-01T00:00:00.000000Z",
                actor="mallory",
                role="operator",
                action=evidence.SEAL_ACTION,
                object=planted,
                outcome="ok",
                details=json.dumps({"release_json_sm3": files["release.json"], "files": files}),
                prev_hash="f" * 64,
                hash="e" * 64,
            )
        )
        conn.execute(
            audit_head.update().where(audit_head.c.id == 1).values(seq=top + 1, hash="e" * 64)
        )
    check = engine.assess(home, planted).check("file_integrity")
    assert check.status == "fail" and "(the seal)" in check.evidence


# -- item 3/4: publish reads only releases/<id>/, ids and paths ----------------------------------


def test_directory_whose_manifest_names_another_release_is_refused(
    demo: tuple[Home, dict[str, str]], as_role: object
) -> None:
    home, releases = demo
    rid = releases[SI]
    _approve(home, rid, as_role)
    copy = _other_id(rid, "copy")
    shutil.copytree(home.releases / rid, home.releases / copy)  # manifest still says rid
    with pytest.raises(ValidationError, match="holds the manifest of release"):
        engine.assess(home, copy)
    assert [o for o, _ in _audit(home, "assessment.run", copy)] == ["error"]
    with pytest.raises(ValidationError, match="holds the manifest of release"):
        publish.publish(home, copy)
    assert [o for o, _ in _audit(home, "publish", copy)] == ["refused"]
    assert not (home.published / "products" / copy).exists()
    assert copy not in {m.release_id for m in rel.list_releases(home)}


def _bad_ids(home: Home, rid: str, tmp_path: Path) -> list[str]:
    outside = tmp_path / "outside"
    shutil.copytree(home.releases / rid, outside / rid)
    link_out = _other_id(rid, "link-out")
    (home.releases / link_out).symlink_to(outside / rid, target_is_directory=True)
    return [
        f"../releases/{rid}",
        f"{rid}/../{rid}",
        str(home.releases / rid),
        f"{rid}/.",
        ".",
        "",
        f"../published/products/{rid}",
        link_out,  # well-formed, but a symlink leading out of releases/
    ]


def test_traversal_absolute_and_symlinked_ids_are_refused_and_audited(
    demo: tuple[Home, dict[str, str]], as_role: object, tmp_path: Path
) -> None:
    home, releases = demo
    rid = releases[SI]
    _approve(home, rid, as_role)
    before_pub = _files(home.published)
    before_rel = _files(home.releases / rid)
    for bad in _bad_ids(home, rid, tmp_path):
        with pytest.raises(ValidationError):
            engine.assess(home, bad)
        assert _audit(home, "assessment.run", bad[:200])[-1][0] == "error", bad
        as_role("reviewer")  # type: ignore[operator]
        for decision in ("approve", "reject", "rectify"):
            with pytest.raises(ValidationError):
                review.decide(home, bad, decision, "x")  # type: ignore[arg-type]
            assert _audit(home, f"review.{decision}", bad[:200])[-1][0] == "refused", bad
        with pytest.raises(ValidationError):
            review.show(home, bad)
        as_role("operator")  # type: ignore[operator]
        with pytest.raises(ValidationError):
            publish.publish(home, bad)
        assert _audit(home, "publish", bad[:200])[-1][0] == "refused", bad
    # Nothing was written, nothing removed: the release that was approved is intact.
    assert _files(home.published) == before_pub
    assert _files(home.releases / rid) == before_rel
    publish.publish(home, rid)  # and still publishes, from its own directory
    assert (home.published / "products" / rid / "registration.json").exists()


def test_output_path_outside_the_release_is_refused(demo: tuple[Home, dict[str, str]]) -> None:
    home, releases = demo
    rid = releases[SI]
    rdir = home.releases / rid
    doc = json.loads((rdir / "release.json").read_text("utf-8"))
    doc["outputs"][0]["path"] = "../../raw/RKJBXX"
    (rdir / "release.json").write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    with pytest.raises(ValidationError, match="not a valid release manifest"):
        engine.assess(home, rid)
    assert _audit(home, "assessment.run", rid)[-1][0] == "error"


# -- item 5: snapshot integrity on read --------------------------------------------------------


def _overwrite_part(home: Home, code: str) -> Path:
    m = snapshots.latest(home, code)
    part = snapshots.part_paths(home, m)[0]
    frame = pl.read_parquet(part)
    col = frame.columns[-1]
    frame.with_columns(pl.col(col).shuffle(seed=1)).write_parquet(part)
    return part


def _ledger_rows(home: Home) -> int:
    with state_engine(home).connect() as conn:
        return int(conn.execute(select(func.count()).select_from(dp_ledger)).scalar_one())


def test_overwritten_raw_part_stops_build_desensitize_quality_and_assessment(
    demo: tuple[Home, dict[str, str]], spec_dir: Path
) -> None:
    from quality.api import run_check
    from transforms.apply import desensitize_resource

    home, releases = demo
    _overwrite_part(home, "RKJBXX")
    snapshots._VERIFIED.clear()  # the test process hashed the parts while building
    releases_before, ledger_before = _files(home.releases), _ledger_rows(home)
    work_before = _files(home.work)

    write_spec(spec_dir, SI, lambda doc: None)  # a new version: a new release, a new charge
    with pytest.raises(IntegrityError) as err:
        build(home, SI)
    assert err.value.exit_code == 8
    assert _audit(home, "product.build", SI)[-1][0] == "error"
    assert "changed after ingest" in str(_audit(home, "product.build", SI)[-1][1])
    assert _files(home.releases) == releases_before and _ledger_rows(home) == ledger_before

    with pytest.raises(IntegrityError):
        desensitize_resource(home, "RKJBXX")
    with pytest.raises(IntegrityError):
        run_check(home, "RKJBXX", open_tickets=False)
    assert _audit(home, "quality.check", "resource/RKJBXX")[-1][0] == "error"
    rid = releases[SI]
    with pytest.raises(IntegrityError):
        engine.assess(home, rid)
    assert _audit(home, "assessment.run", rid)[-1][0] == "error"
    assert engine.latest(home, rid) is None
    new_work = set(_files(home.work)) - set(work_before)
    assert not [f for f in new_work if "desensitized" in f]


def test_overwritten_part_exits_8_on_the_command_line(
    demo: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch, capsys: object
) -> None:
    from pipelines import cli

    home, _ = demo
    _overwrite_part(home, "SCZTDJ")
    snapshots._VERIFIED.clear()
    monkeypatch.setattr(sys, "argv", ["shuyu", "quality", "check", "SCZTDJ"])
    with pytest.raises(SystemExit) as ex:
        cli.main()
    assert ex.value.code == 8
    assert _audit(home, "quality.check", "resource/SCZTDJ")[-1][0] == "error"


def test_verification_is_cached_per_process_until_a_part_changes(
    demo: tuple[Home, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _ = demo
    calls: list[int] = []
    real = snapshots.sm3_files

    def counting(paths: object) -> str:
        calls.append(1)
        return real(paths)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshots, "sm3_files", counting)
    snapshots._VERIFIED.clear()
    m = snapshots.latest(home, "SBCBJF")
    snapshots.scan(home, "SBCBJF", m.snapshot_id, columns=[next(iter(m.columns))])
    snapshots.verify(home, m)
    assert len(calls) == 1
    part = snapshots.part_paths(home, m)[0]
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: re-verified
    snapshots.verify(home, m)
    assert len(calls) == 2
    with part.open("r+b") as fh:  # same size, same mtime restored, but different bytes
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    with pytest.raises(IntegrityError):
        snapshots.verify(home, m)


def test_snapshot_manifest_copied_under_another_id_is_refused(
    demo: tuple[Home, dict[str, str]],
) -> None:
    home, _ = demo
    m = snapshots.latest(home, "RKJBXX")
    src = snapshots.snapshot_dir(home, "RKJBXX", m.snapshot_id)
    shutil.copytree(src, src.parent / "29990101T000000000000Z")
    with pytest.raises(ShuyuError, match="holds the manifest of"):
        snapshots.latest(home, "RKJBXX")


def test_part_and_manifest_rewritten_together_are_caught_by_the_ingest_record(
    demo: tuple[Home, dict[str, str]], spec_dir: Path
) -> None:
    home, releases = demo
    part = _overwrite_part(home, "RKJBXX")
    m = snapshots.latest(home, "RKJBXX")
    doc = json.loads((part.parent / snapshots.MANIFEST).read_text("utf-8"))
    doc["sm3"] = snapshots.sm3_files([part])  # the manifest now vouches for the new bytes
    (part.parent / snapshots.MANIFEST).write_text(json.dumps(doc), "utf-8")
    snapshots._VERIFIED.clear()
    evidence._SNAPSHOTS_CHECKED.clear()
    snapshots.verify(home, snapshots.latest(home, "RKJBXX"))  # the manifest alone is fooled
    write_spec(spec_dir, SI, lambda doc: None)
    before = _files(home.releases)
    with pytest.raises(IntegrityError, match="recorded at ingest") as err:
        build(home, SI)
    assert err.value.exit_code == 8 and m.snapshot_id in err.value.message
    assert _audit(home, "product.build", SI)[-1][0] == "error"
    assert _files(home.releases) == before
    with pytest.raises(IntegrityError, match="recorded at ingest"):
        engine.assess(home, releases[SI])
    assert _audit(home, "assessment.run", releases[SI])[-1][0] == "error"


def test_snapshot_directory_not_made_by_ingest_is_refused(
    demo: tuple[Home, dict[str, str]],
) -> None:
    from quality.api import run_check

    home, _ = demo
    m = snapshots.latest(home, "SCZTDJ")
    src = snapshots.snapshot_dir(home, "SCZTDJ", m.snapshot_id)
    sid = "29990101T000000000000Z"
    dst = src.parent / sid
    shutil.copytree(src, dst)
    doc = json.loads((dst / snapshots.MANIFEST).read_text("utf-8"))
    doc["snapshot_id"] = sid
    (dst / snapshots.MANIFEST).write_text(json.dumps(doc), "utf-8")
    with pytest.raises(IntegrityError, match="no ingest record"):
        run_check(home, "SCZTDJ", open_tickets=False)
    assert _audit(home, "quality.check", "resource/SCZTDJ")[-1][0] == "error"
