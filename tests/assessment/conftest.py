from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounts_testkit import seed
from assessment_testkit import build_demo, copy_home, frames

from products import specs
from shuyu_core.db import reset_engines
from shuyu_core.home import Home
from shuyu_core.keys import ENCRYPTION, PSEUDONYM, init_key


@pytest.fixture(scope="session")
def template_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A domain with the four demo releases on 2 000 generated persons, built once."""
    root = tmp_path_factory.mktemp("assessment_template") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHUYU_HOME", str(root))
        mp.setenv("SHUYU_ACTOR", "test-operator")
        mp.setenv("SHUYU_ROLE", "operator")
        for var in ("SHUYU_DATABASE_URL", "SHUYU_PRODUCTS", "SHUYU_CATALOG", "SHUYU_AGREEMENTS"):
            mp.delenv(var, raising=False)
        reset_engines()
        home = Home.from_env().ensure()
        seed(home, {"test-operator": ["operator"], "test-reviewer": ["reviewer"]})
        init_key(home, PSEUDONYM)
        init_key(home, ENCRYPTION)
        data = frames()
        from pipelines.ingest import ingest_path

        src = root / "sources"
        src.mkdir(parents=True, exist_ok=True)
        for code in ("RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"):
            data[code].write_parquet(src / f"{code}.parquet")
            ingest_path(home, code, src / f"{code}.parquet")
        releases = build_demo(home, data)
        reset_engines()
    return root, releases


@pytest.fixture()
def demo(
    home: Home, template_home: tuple[Path, dict[str, str]]
) -> Iterator[tuple[Home, dict[str, str]]]:
    """A fresh copy of the template domain as this test's home."""
    src, releases = template_home
    reset_engines()
    copy_home(src, home.root)
    reset_engines()
    yield home, releases
    reset_engines()


@pytest.fixture()
def spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the product specs (SHUYU_PRODUCTS) that tests may edit."""
    target = tmp_path / "product_specs"
    shutil.copytree(specs.PACKAGED_PRODUCTS, target)
    monkeypatch.setenv("SHUYU_PRODUCTS", str(target))
    return target
