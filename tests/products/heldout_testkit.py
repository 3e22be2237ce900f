"""Held-out specs: written from docs/products.md only, into a temporary spec directory.

``spec(id, **sections)`` is a statistical report under a test scenario (``heldout-reports`` of
DA-2025-001, added to a temporary copy of the agreements) that authorizes every field the
held-out specs read; ``write`` puts it where ``shuyu build ID`` finds it (SHUYU_PRODUCTS).
``run_cli`` runs the real ``shuyu`` entry point in-process (its one-line error printing and
its audit of failures included) and returns the exit code.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from governance.agreements import PACKAGED_AGREEMENTS

SCENARIO = "heldout-reports"
FIELDS = {
    "RKJBXX": ["公民身份号码", "姓名", "性别", "出生日期", "户籍区划代码"],
    "SBCBJF": ["公民身份号码", "单位统一社会信用代码", "缴费基数", "缴费月份", "参保状态", "险种"],
    "SCZTDJ": [
        "统一社会信用代码",
        "法定代表人证件号码",
        "注册资本",
        "成立日期",
        "行业代码",
        "登记状态",
        "区划代码",
    ],
    "YBJS": ["公民身份号码", "就诊日期", "诊断编码", "医疗总费用", "统筹支付金额", "个人自付金额"],
}


def agreements(target: Path) -> Path:
    """The packaged agreements plus one scenario reading the fields above."""
    shutil.copytree(PACKAGED_AGREEMENTS, target)
    for name in ("OA-2025-001", "DA-2025-001"):
        path = target / f"{name}.yaml"
        doc = yaml.safe_load(path.read_text("utf-8"))
        for code, fields in FIELDS.items():
            have = doc["resources"].setdefault(code, [])
            have += [f for f in fields if f not in have]
        doc["scenarios"].append(
            {
                "id": SCENARIO,
                "name": "held-out statistical reports",
                "inputs": FIELDS,
                "products": ["statistical_report"],
            }
        )
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
    return target


def spec(product_id: str, **sections: Any) -> dict[str, Any]:
    """A statistical report spec: the boilerplate, then the sections given."""
    doc: dict[str, Any] = {
        "id": product_id,
        "name": f"留出规格 {product_id}",
        "name_en": f"held-out {product_id}",
        "version": "1.0.0",
        "kind": "statistical_report",
        "scenario": SCENARIO,
        "agreement_id": "DA-2025-001",
        "developer": "dev-001",
        "purpose_category": "public_good",
        "pricing_note": "公益无偿",
        "destination": "domestic",
        "budget": {"rho": 0.05, "delta": 1.0e-7},
        "reference_period": ["2025-01-01", "2025-12-31"],
        "suppression": {"min_count": 10, "max_relative_error": 0.5},
        "outputs": {"formats": ["parquet", "csv"]},
    }
    doc.update(sections)
    return doc


def write(spec_dir: Path, doc: dict[str, Any]) -> str:
    path = spec_dir / f"{doc['id']}.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
    return str(doc["id"])


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    from pipelines import cli

    monkeypatch.setattr(sys, "argv", ["shuyu", *argv])
    try:
        cli.main()
    except SystemExit as ex:
        return int(ex.code or 0)
    return 0
