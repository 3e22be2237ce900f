from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from portal_testkit import build_template, copy_home  # noqa: E402

from governance.actors import set_current  # noqa: E402
from shuyu_core.db import reset_engines  # noqa: E402
from shuyu_core.home import Home  # noqa: E402


@pytest.fixture(scope="session")
def portal_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A small domain with tickets for two units and one assessed release, built once."""
    from accounts_testkit import seed

    root = tmp_path_factory.mktemp("portal_template") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHUYU_HOME", str(root))
        for var in ("SHUYU_DATABASE_URL", "SHUYU_PRODUCTS", "SHUYU_CATALOG", "SHUYU_AGREEMENTS"):
            mp.delenv(var, raising=False)
        reset_engines()
        home = Home.from_env().ensure()
        seed(home, {"test-operator": ["operator"]})
        releases = build_template(home)
        reset_engines()
    return root, releases


@pytest.fixture()
def domain(
    home: Home, portal_template: tuple[Path, dict[str, str]]
) -> Iterator[tuple[Home, dict[str, str]]]:
    src, releases = portal_template
    reset_engines()
    copy_home(src, home.root)
    reset_engines()
    yield home, releases
    set_current(None)
    reset_engines()


@pytest.fixture()
def client(domain: tuple[Home, dict[str, str]]) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from portal.app import create_app

    with TestClient(create_app(domain[0]), base_url="http://testserver") as c:
        yield c
