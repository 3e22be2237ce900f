from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from products_testkit import frames, ingest_frames

from products import specs
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, init_key


@pytest.fixture()
def data_home(home: Home) -> Home:
    """A home with RKJBXX, SBCBJF and SCZTDJ snapshots of 3 000 synthetic persons."""
    ingest_frames(home, frames(), ["RKJBXX", "SBCBJF", "SCZTDJ"])
    init_key(home, PSEUDONYM)
    return home


@pytest.fixture()
def spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the product specs (SHUYU_PRODUCTS) that tests may edit."""
    target = tmp_path / "product_specs"
    shutil.copytree(specs.PACKAGED_PRODUCTS, target)
    monkeypatch.setenv("SHUYU_PRODUCTS", str(target))
    return target


@pytest.fixture()
def budgets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write a budgets YAML and point SHUYU_BUDGETS at it: ``budgets_file({code: rho})``."""

    def write(rhos: dict[str, float], units: dict[str, str] | None = None) -> Path:
        unit_of = {"SCZTDJ": "统一社会信用代码"} | (units or {})
        doc = {
            "period": "year",
            "budgets": [
                {"resource": c, "unit": unit_of.get(c, "公民身份号码"), "rho": r, "delta": 1e-6}
                for c, r in rhos.items()
            ],
        }
        path = tmp_path / "budgets.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        monkeypatch.setenv("SHUYU_BUDGETS", str(path))
        return path

    return write
