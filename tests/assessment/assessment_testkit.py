"""Helpers for the assessment tests: a small domain with the four demo releases, built once
per session and copied per test, and ways to make deliberately bad products."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from governance import evidence
from governance.agreements import PACKAGED_AGREEMENTS
from governance.consent import ConsentLedger
from products import release as rel
from products import specs
from products.engine import BuildOptions, build
from shuyu_core.hashing import sm3_file, sm3_hex
from shuyu_core.home import Home

AS_OF = dt.date(2026, 1, 15)
PERSONS = 2000
DEMO = (
    "si_enrolment_report",
    "business_vitality_index",
    "identity_verification",
    "medical_desensitized_extract",
)
PURPOSE = "identity-verification"


def frames() -> dict[str, pl.DataFrame]:
    from synthetic_data.generate import generate_frames

    out, _defects = generate_frames(persons=PERSONS, seed=11, defect_rate=0.0, as_of=AS_OF)
    return out


def queries(home: Home, data: dict[str, pl.DataFrame], n: int = 60) -> Path:
    """A verification batch: persons (with a consent for most) and enterprises."""
    people = data["RKJBXX"].unique(subset=["公民身份号码"], keep="none").head(n)
    firms = data["SCZTDJ"].unique(subset=["统一社会信用代码"], keep="none").head(n // 4)
    ids = people["公民身份号码"].to_list()
    ConsentLedger(home).import_frame(
        pl.DataFrame(
            {
                "subject_id": ids[: n - 10],
                "purpose": [PURPOSE] * (n - 10),
                "granted_at": ["2025-01-01"] * (n - 10),
                "expires_at": ["2099-12-31"] * (n - 10),
                "evidence_ref": [f"EV-{i}" for i in range(n - 10)],
            }
        ),
        source="test",
    )
    q = pl.concat(
        [
            pl.DataFrame(
                {"kind": "person", "name": people["姓名"], "id_number": people["公民身份号码"]}
            ),
            pl.DataFrame(
                {
                    "kind": "enterprise",
                    "name": firms["企业名称"],
                    "id_number": firms["统一社会信用代码"],
                }
            ),
        ]
    ).with_row_index("i")
    q = q.select(
        pl.format("Q{}", pl.col("i")).alias("query_id"),
        "kind",
        "name",
        "id_number",
        pl.format("EV-{}", pl.col("i")).alias("consent_ref"),
    )
    path = home.root / "sources" / "queries.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    q.write_csv(path)
    return path


def build_demo(home: Home, data: dict[str, pl.DataFrame]) -> dict[str, str]:
    """Build the four demo products; run quality checks on every input snapshot."""
    from quality.api import run_check

    for code in ("RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"):
        run_check(home, code, open_tickets=False)
    out: dict[str, str] = {}
    for product in DEMO:
        opts = BuildOptions(queries=queries(home, data)) if product == PRODUCT_VER else None
        out[product] = build(home, product, opts).release_id
    return out


PRODUCT_VER = "identity_verification"


def copy_home(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def write_spec(spec_dir: Path, product: str, mutate: Any) -> str:
    """Copy the packaged spec of ``product``, bump its patch version, apply ``mutate(doc)``."""
    doc = yaml.safe_load(specs.spec_path(product, specs.PACKAGED_PRODUCTS).read_text("utf-8"))
    major, minor, patch = (int(x) for x in doc["version"].split("."))
    doc["version"] = f"{major}.{minor}.{patch + 1}"
    mutate(doc)
    (spec_dir / f"{product}.yaml").write_text(
        yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return str(doc["version"])


def agreements_copy(target: Path, mutate: Any) -> Path:
    """A copy of the packaged agreements with ``mutate(docs_by_id)`` applied."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGED_AGREEMENTS, target)
    docs = {p.stem: yaml.safe_load(p.read_text("utf-8")) for p in target.glob("*.yaml")}
    mutate(docs)
    for name, doc in docs.items():
        (target / f"{name}.yaml").write_text(
            yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
    return target


def forge(home: Home, base: str, suffix: str, mutate: Any) -> str:
    """A release written as a faulty builder would: a copy of ``base`` under a new id whose
    outputs ``mutate(stage_dir, manifest_doc)`` changes (SM3s recomputed, so only the
    assessment's content checks can catch it), and sealed in the audit chain as the build
    does: a faulty builder is still shuyu's builder."""
    new_id = f"{base[:-16]}{sm3_hex(f'{base}/{suffix}'.encode())[:16]}"
    src, dst = rel.release_dir(home, base), rel.release_dir(home, new_id)
    shutil.copytree(src, dst)
    doc = json.loads((dst / rel.MANIFEST).read_text("utf-8"))
    doc["release_id"] = new_id
    doc["created_at"] = (dt.datetime.now(dt.UTC)).isoformat()
    mutate(dst, doc)
    for out in doc["outputs"]:
        path = dst / out["path"]
        if path.exists():
            out["sm3"] = sm3_file(path)
    (dst / rel.MANIFEST).write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    evidence.seal(home, new_id, dst)
    return new_id


def relaxed_policy(directory: Path, **floors: Any) -> Path:
    """A copy of the session's domain policy with some privacy floors lowered (as if an admin
    had relaxed them at build time): the assessment, run under the real policy, must still
    hold the product to the real floors."""
    import os

    base = yaml.safe_load(Path(os.environ["SHUYU_DOMAIN_POLICY"]).read_text("utf-8")) or {}
    from governance.floors import PrivacyFloors

    section = dict(base.get("privacy_floors") or {})
    masks = PrivacyFloors().model_dump(mode="json")["masks"]
    masks.update(floors.pop("masks", {}))
    section.update(floors, masks=masks)
    base["privacy_floors"] = section
    path = directory / "relaxed_domain_policy.yaml"
    path.write_text(yaml.safe_dump(base, allow_unicode=True), encoding="utf-8")
    return path
