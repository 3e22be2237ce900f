from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from accounts_testkit import seed, test_policy
from sqlalchemy import create_engine, make_url

from governance.actors import set_request
from shuyu_core.db import reset_engines
from shuyu_core.home import Home


@contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the server of ``admin_url``, dropped afterwards."""
    name = f"shuyu_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        reset_engines()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


_SESSION: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SESSION["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave as soon as the results are reported. Prefect's event worker otherwise spends
    minutes at interpreter exit retrying to send queued events to the temporary servers the
    flow tests already stopped (seen: 188 000 events, CI hanging after "N passed"). The exit
    status is pytest's own."""
    status = _SESSION.get("status")
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


@pytest.fixture(scope="session", autouse=True)
def _domain_policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test domain starts from a policy that names the test runner as a service account."""
    path = test_policy(tmp_path_factory.mktemp("policy"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHUYU_DOMAIN_POLICY", str(path))
        yield


@pytest.fixture()
def home(bare_home: Home) -> Home:
    """A fresh operating domain whose operator account ``test-operator`` exists."""
    seed(bare_home, {"test-operator": ["operator"]})
    return bare_home


@pytest.fixture()
def bare_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A fresh operating domain per test, with SHUYU_HOME pointing at it, and no account yet.

    State is in the home's SQLite file, or, when SHUYU_TEST_DATABASE_URL names a PostgreSQL
    server (``make test-postgres``), in a fresh database on it.
    """
    root = tmp_path / "shuyu_home"
    monkeypatch.setenv("SHUYU_HOME", str(root))
    monkeypatch.delenv("SHUYU_DATABASE_URL", raising=False)
    monkeypatch.setenv("SHUYU_ACTOR", "test-operator")
    monkeypatch.setenv("SHUYU_ROLE", "operator")
    reset_engines()
    with ExitStack() as stack:
        admin_url = os.environ.get("SHUYU_TEST_DATABASE_URL")
        if admin_url:
            monkeypatch.setenv(
                "SHUYU_DATABASE_URL", stack.enter_context(_postgres_database(admin_url))
            )
        yield Home.from_env().ensure()
        reset_engines()


@pytest.fixture(autouse=True)
def _reset_actor() -> Iterator[None]:
    """A CLI invocation sets the acting actor in a context variable; never let it leak."""
    set_request(None)
    yield
    set_request(None)
