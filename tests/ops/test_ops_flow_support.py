"""The guards every flow passes before doing anything: the home, the requester, retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from accounts_testkit import seed

from governance import audit
from governance.actors import Actor
from governance.identity import login_name
from pipelines import flow_support
from shuyu_core.errors import PermissionDenied, ShuyuError, ValidationError
from shuyu_core.home import Home


def _refusals(home: Home, action: str) -> list[dict[str, object]]:
    return [
        e for e in audit.tail(home, 1000) if e["action"] == action and e["outcome"] == "refused"
    ]


def test_flow_home_refuses_unset_relative_and_unresolved(
    home: Home, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("SHUYU_HOME")
    with pytest.raises(ShuyuError, match="SHUYU_HOME is not set"):
        flow_support.flow_home()
    monkeypatch.setenv("SHUYU_HOME", "relative/home")
    with pytest.raises(ShuyuError, match="is relative"):
        flow_support.flow_home()
    # `prefect deploy` ran without the variable: the literal template reaches the flow.
    monkeypatch.setenv("SHUYU_HOME", "{{ $SHUYU_HOME }}")
    with pytest.raises(ShuyuError, match="unresolved template"):
        flow_support.flow_home()
    monkeypatch.setenv("SHUYU_HOME", str(home.root))
    monkeypatch.setenv("SHUYU_DATABASE_URL", "{{ $SHUYU_DATABASE_URL }}")
    with pytest.raises(ShuyuError, match="SHUYU_DATABASE_URL is the unresolved template"):
        flow_support.flow_home()
    # Nothing was written into the working directory (the code checkout under a worker).
    assert list(checkout.iterdir()) == []
    monkeypatch.delenv("SHUYU_DATABASE_URL")
    assert flow_support.flow_home() == home


def test_requested_by_acts_for_the_account_and_records_the_worker(home: Home) -> None:
    seed(home, {"ops-alice": ["operator"]})
    actor = flow_support.flow_actor(home, "ops-alice")
    assert actor == Actor("ops-alice", "operator", via=login_name())
    audit.record(home, "probe", "x")
    entry = audit.tail(home, 1)[0]
    assert entry["actor"] == "ops-alice" and entry["details"]["via"] == login_name()


def test_requested_by_without_an_account_is_refused_and_audited(home: Home) -> None:
    with pytest.raises(PermissionDenied, match="no account"):
        flow_support.flow_actor(home, "mallory")
    (entry,) = _refusals(home, "identity.resolve")
    assert entry["actor"] == "mallory" and entry["details"]["via"] == login_name()


def test_requested_by_without_the_role_cannot_ingest(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl

    from pipelines.flows import ingest_task
    from shuyu_core import snapshots

    source = tmp_path / "SCZTDJ.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(source)
    monkeypatch.delenv("SHUYU_ROLE")  # a worker has none: the account's only role is taken
    seed(home, {"rita": ["reviewer"]})
    actor = flow_support.flow_actor(home, "rita")
    assert actor.role == "reviewer"
    with pytest.raises(PermissionDenied, match="may not ingest"):
        ingest_task.fn("SCZTDJ", str(source), actor)
    last = audit.tail(home, 1)[0]
    assert (last["actor"], last["action"], last["outcome"]) == ("rita", "ingest", "refused")
    assert snapshots.list_snapshots(home, "SCZTDJ") == []


def test_a_deployment_run_must_name_its_requester(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flow_support, "in_deployment_run", lambda: True)
    # SHUYU_ACTOR on the worker must not stand in for the person.
    monkeypatch.setenv("SHUYU_ACTOR", "test-operator")
    with pytest.raises(PermissionDenied, match="names no requested_by"):
        flow_support.flow_actor(home, None)
    (entry,) = _refusals(home, "flow.identity")
    assert entry["actor"] == login_name()
    with pytest.raises(ShuyuError, match="unresolved template"):
        flow_support.flow_actor(home, "{{ $SHUYU_SCHEDULED_BY }}")


def test_with_retries_retries_transient_errors_but_never_user_errors() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("source down")
        return "ok"

    assert flow_support.with_retries(flaky, what="t", retries=2, delay=0) == "ok"
    assert len(calls) == 3

    calls.clear()

    def always_down() -> str:
        calls.append(1)
        raise ConnectionError("source down")

    with pytest.raises(ConnectionError):
        flow_support.with_retries(always_down, what="t", retries=2, delay=0)
    assert len(calls) == 3

    calls.clear()

    def bad_input() -> str:
        calls.append(1)
        raise ValidationError("field X missing", hint="fix the export")

    with pytest.raises(ValidationError):
        flow_support.with_retries(bad_input, what="t", retries=2, delay=0)
    assert len(calls) == 1


@pytest.mark.filterwarnings("ignore:Logger 'prefect.flow_runs' attempted to send logs")
def test_a_user_error_logged_with_a_traceback_becomes_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    logger = logging.getLogger("prefect.flow_runs")
    try:
        raise ValidationError("field X missing", hint="fix the export")
    except ValidationError:
        logger.error("Engine execution exited with unexpected exception", exc_info=True)
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        logger.error("Engine execution exited with unexpected exception", exc_info=True)
    user, bug = [r for r in caplog.records if r.name == "prefect.flow_runs"][-2:]
    assert user.exc_info is None and "field X missing — fix: fix the export" in user.getMessage()
    assert bug.exc_info is not None  # a bug keeps its traceback


def test_user_error_state_carries_the_cli_line() -> None:
    exc = ValidationError("field X missing", hint="fix the export")
    state = flow_support.user_error(exc)
    assert state.is_failed()
    assert state.message == "field X missing — fix: fix the export"
