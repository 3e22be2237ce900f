from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from portal_testkit import build_template, copy_home

from governance.actors import set_current
from shuyu_core.db import reset_engines
from shuyu_core.home import Home


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


@pytest.fixture()
def users(home: Home) -> Iterator[Home]:
    """A fresh domain holding only the test accounts: works on SQLite and PostgreSQL alike
    (the session tests run on both; the template domain is a copied SQLite home)."""
    from portal_testkit import add_users

    add_users(home)
    yield home
    set_current(None)


@pytest.fixture()
def auth_client(users: Home) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from portal.app import create_app

    with TestClient(create_app(users), base_url="http://testserver") as c:
        yield c
