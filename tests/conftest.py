from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from governance.actors import set_current
from shuyu_core.db import reset_engines
from shuyu_core.home import Home


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A fresh operating domain per test, with SHUYU_HOME pointing at it."""
    root = tmp_path / "shuyu_home"
    monkeypatch.setenv("SHUYU_HOME", str(root))
    monkeypatch.delenv("SHUYU_DATABASE_URL", raising=False)
    monkeypatch.setenv("SHUYU_ACTOR", "test-operator")
    monkeypatch.setenv("SHUYU_ROLE", "operator")
    reset_engines()
    yield Home.from_env().ensure()
    reset_engines()


@pytest.fixture(autouse=True)
def _reset_actor() -> Iterator[None]:
    """A CLI invocation sets the acting actor in a context variable; never let it leak."""
    set_current(None)
    yield
    set_current(None)
