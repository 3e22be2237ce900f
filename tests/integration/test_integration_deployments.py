"""prefect.yaml on a real `prefect server start` with a process worker, as operators run it.

One stack per module (loopback, SQLite, temporary PREFECT_HOME, a free port): the work pool
is created, `prefect --no-prompt deploy --all` must succeed, a worker picks up the runs, and
the stack stops in order (worker, then server), process groups killed if anything fails.
Every wait is bounded; the whole module fits a 2-core CI runner in a few minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts_testkit import seed

from governance import audit
from governance.identity import login_name
from pipelines import ops_stack
from shuyu_core import snapshots
from shuyu_core.home import Home

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RUN_TIMEOUT = 300.0  # a flow run on two busy cores: process start, imports, the work


@dataclass
class Stack:
    cfg: ops_stack.StackConfig
    home: Home
    logs: Path

    def api(self, method: str, path: str, body: Any = None) -> Any:
        # SQLite under a busy 2-core runner answers 503 now and then; Prefect's own client
        # retries those too (bounded: 6 tries).
        for attempt in range(6):
            r = httpx.request(method, f"{self.cfg.api_url}{path}", json=body, timeout=30)
            if r.status_code < 500 or attempt == 5:
                break
            time.sleep(2.0)
        r.raise_for_status()
        return r.json() if r.content else None

    def trigger(self, flow: str, deployment: str, parameters: dict[str, Any]) -> str:
        dep = self.api("GET", f"/deployments/name/{flow}/{deployment}")
        run = self.api(
            "POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": parameters}
        )
        return str(run["id"])

    def wait(self, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            run: dict[str, Any] = self.api("GET", f"/flow_runs/{run_id}")
            if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            time.sleep(1.0)
        raise AssertionError(f"flow run {run_id} not finished after {RUN_TIMEOUT:.0f} s")

    def logs_of(self, run_id: str) -> list[str]:
        found = self.api(
            "POST",
            "/logs/filter",
            {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200},
        )
        return [str(row["message"]) for row in found]

    def logs_until(self, run_id: str, *needles: str, timeout: float = 60.0) -> list[str]:
        """The run's logs once every needle is in them: the flow-run process ships its logs
        in batches, so the last ones may land after the run's final state (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.logs_of(run_id)
            text = "\n".join(lines)
            if all(n in text for n in needles) or time.monotonic() > deadline:
                return lines
            time.sleep(1.0)

    def artifact(self, key: str) -> dict[str, Any]:
        found = self.api(
            "POST",
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 5},
        )
        assert found, f"no artifact {key}"
        return dict(found[0])

    def first_task_start(self, run_id: str) -> dt.datetime:
        tasks = self.api(
            "POST",
            "/task_runs/filter",
            {"task_runs": {"flow_run_id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        )
        starts = [t["start_time"] for t in tasks if t["start_time"]]
        return min(dt.datetime.fromisoformat(s) for s in starts)

    def latency_breakdown(self, run_id: str, triggered: dt.datetime) -> str:
        """Where trigger-to-task time goes: the worker's poll (→ Pending), the flow-run process
        starting Python, importing Prefect and loading the flow (→ Running), the flow's own
        start-up (→ first task)."""
        states = httpx.get(
            f"{self.cfg.api_url}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30
        ).json()
        at = {
            s["type"]: dt.datetime.fromisoformat(s["timestamp"])
            for s in sorted(states, key=lambda s: s["timestamp"])
            if s["type"] in ("PENDING", "RUNNING")
        }
        task = self.first_task_start(run_id)
        pending, running = at.get("PENDING", triggered), at.get("RUNNING", task)
        return (
            f"poll {(pending - triggered).total_seconds():.1f} s, process start + imports + "
            f"flow load {(running - pending).total_seconds():.1f} s, flow start to first task "
            f"{(task - running).total_seconds():.1f} s"
        )

    def result(self, run: dict[str, Any]) -> Any:
        """The flow run's persisted return value, read back from its result record."""
        from prefect.results import ResultRecordMetadata

        meta = ResultRecordMetadata.model_validate(run["state"]["data"])
        assert meta.storage_key is not None
        return meta.serializer.loads(Path(meta.storage_key).read_bytes())


def _dump(logs: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + p.read_text(errors="replace")[-4000:]
        for p in sorted(logs.glob("*.log"))
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthetic_data.generate import generate_frames

    frames, _ = generate_frames(persons=2000, seed=7, defect_rate=0.0, as_of=dt.date(2026, 1, 15))
    out = tmp_path_factory.mktemp("sources")
    frames["SCZTDJ"].write_parquet(out / "SCZTDJ.parquet")
    return out


@pytest.fixture()
def stack(home: Home, tmp_path: Path) -> Iterator[Stack]:
    from shuyu_core import keys

    seed(home, {"ops-alice": ["operator"]})
    for name in (keys.PSEUDONYM, keys.ENCRYPTION):  # the pipeline desensitizes
        keys.init_key(home, name)
    logs = tmp_path / "logs"
    cfg = ops_stack.StackConfig(
        prefect_home=tmp_path / "prefect_home",
        port=ops_stack.free_port(),
        shuyu_home=home.root,
        scheduler=False,  # no */30 sweep firing in the middle of the test
        extra_env={
            "SHUYU_HOME": str(home.root),  # for `prefect deploy`; the worker gets none
            "SHUYU_DATABASE_URL": os.environ.get("SHUYU_DATABASE_URL", ""),
            "SHUYU_SCHEDULED_BY": "ops-alice",
        },
    )
    server = worker = None
    try:
        server = ops_stack.start_server(cfg, logs / "server.log")
        ops_stack.create_pool_and_deploy(cfg)
        worker = ops_stack.start_worker(cfg, logs / "worker.log")
        yield Stack(cfg, home, logs)
    except BaseException:
        print(_dump(logs))
        raise
    finally:
        ops_stack.stop(worker)  # the worker first: it must not pick up work from a dying server
        ops_stack.stop(server)
    assert worker is not None and worker.poll() is not None
    assert server is not None and server.poll() is not None


def test_deployments_run_the_pipeline_for_the_requester(
    stack: Stack, home: Home, sources: Path
) -> None:
    deployments = stack.api("POST", "/deployments/filter", {})
    assert {d["name"] for d in deployments} >= {
        "ingest-resource",
        "pipeline",
        "build-product",
        "assess-release",
        "quality-sweep",
    }
    # The build schedules rendered from the catalog deploy too, on the server's calendar.
    from catalogs.catalog import Catalog
    from pipelines import schedules
    from products import specs

    rendered = stack.logs / "prefect.catalog.yaml"
    rendered.write_text(
        schedules.render_text(schedules.render(Catalog.load(), specs.load_all())), encoding="utf-8"
    )
    ops_stack.prefect_cli(stack.cfg, "deploy", "--all", "--prefect-file", str(rendered))
    monthly = stack.api("GET", "/deployments/name/shuyu-build-product/build-si-enrolment-report")
    (sched,) = monthly["schedules"]
    assert sched["schedule"]["cron"] == "0 2 1 * *"
    assert sched["schedule"]["timezone"] == "Asia/Shanghai" and sched["active"] is False
    assert sched["parameters"] == {"requested_by": "ops-alice"}

    # One ingest per resource at a time: a global limit of 1 for each catalogued resource.
    limits = {g["name"]: g for g in stack.api("POST", "/v2/concurrency_limits/filter", {})}
    assert limits["ingest-scztdj"]["limit"] == 1 and limits["ingest-scztdj"]["active"]
    # The deployment carries the domain; the worker's environment has none.
    assert all(d["job_variables"]["env"]["SHUYU_HOME"] == str(home.root) for d in deployments)

    triggered = dt.datetime.now(dt.UTC)
    run_id = stack.trigger(
        "shuyu-pipeline",
        "pipeline",
        {
            "code": "SCZTDJ",
            "source": str(sources / "SCZTDJ.parquet"),
            "products": ["business_vitality_index"],
            "requested_by": "ops-alice",
        },
    )
    # Alongside (pool limit 2): an ingest run that names nobody is refused in one line.
    anonymous_id = stack.trigger(
        "shuyu-ingest",
        "ingest-resource",
        {"code": "SCZTDJ", "source": str(sources / "SCZTDJ.parquet")},
    )
    run = stack.wait(run_id)
    assert run["state"]["type"] == "COMPLETED", (run["state"], _dump(stack.logs))
    latency = (stack.first_task_start(run_id) - triggered).total_seconds()
    print(f"trigger-to-task-start: {latency:.1f} s ({stack.latency_breakdown(run_id, triggered)})")
    assert latency < RUN_TIMEOUT

    # The pipeline's ingest held the resource's slot, and gave it back.
    held = stack.api("GET", "/v2/concurrency_limits/ingest-scztdj")
    assert held["active_slots"] == 0
    assert held["updated"] != held["created"]  # taken and released during the run

    # Results are persisted, so the ids travel on without anyone copying them by hand.
    out = stack.result(run)
    release_id = out["releases"]["business_vitality_index"]["release"]
    verdict = out["releases"]["business_vitality_index"]["verdict"]
    (manifest,) = snapshots.list_snapshots(home, "SCZTDJ")
    assert out["snapshot"] == manifest.snapshot_id and out["rows"] == manifest.rows
    assert (home.releases / release_id).is_dir()
    assert (
        str(stack.cfg.shuyu_home / "work" / "prefect-results")
        in run["state"]["data"]["storage_key"]
    )

    # The artifacts, read back through the API.
    assert manifest.snapshot_id in stack.artifact("ingest-scztdj")["data"]
    from pipelines.flows_assessment import artifact_key

    # The release's artifact links its assessment's report, which is an artifact of its own.
    release_md = stack.artifact("release-business-vitality-index")["data"]
    assert release_id in release_md and artifact_key(release_id) in release_md
    assert Path(out["desensitized"]["output"]).name.startswith(manifest.snapshot_id)
    report = stack.artifact(artifact_key(release_id))
    assert release_id in report["data"] and verdict in report["data"]

    # The run logger carries the domain facts.
    facts = (manifest.snapshot_id, manifest.sm3, str(manifest.rows), release_id, "rho")
    text = "\n".join(stack.logs_until(run_id, *facts))
    for fact in (manifest.snapshot_id, manifest.sm3, str(manifest.rows), release_id, "rho"):
        assert fact in text, fact

    # The audit names the requester and the worker's service account.
    entries = audit.tail(home, 10_000)
    done = [
        e for e in entries if e["action"] in ("ingest", "quality.check") and e["outcome"] == "ok"
    ]
    assert {e["action"] for e in done} == {"ingest", "quality.check"}
    assert all(e["actor"] == "ops-alice" and e["details"].get("via") == login_name() for e in done)

    # The run that named nobody: Failed, its message the one line, no traceback, audited.
    anonymous = stack.wait(anonymous_id)
    assert anonymous["state"]["type"] == "FAILED"
    message = anonymous["state"]["message"]
    assert "requested_by" in message and "\n" not in message
    logs = stack.logs_until(anonymous_id, "not retried", "Engine execution")
    assert not [line for line in logs if "Traceback" in line], logs
    assert any(message in line and "not retried" in line for line in logs), logs
    # Prefect's engine re-raises the failed state at the end; its record is the same one line.
    assert any("Engine execution" in line and message in line for line in logs), logs
    assert len(snapshots.list_snapshots(home, "SCZTDJ")) == 1
    refusals = [
        e
        for e in audit.tail(home, 10_000)
        if e["action"] == "flow.identity" and e["outcome"] == "refused"
    ]
    assert len(refusals) == 1 and refusals[0]["actor"] == login_name()

    # The assess-release deployment (no default release_id any more) takes the id passed on.
    again = stack.wait(
        stack.trigger(
            "shuyu-assess-release",
            "assess-release",
            {"release_id": release_id, "requested_by": "ops-alice"},
        )
    )
    assert again["state"]["type"] == "COMPLETED", again["state"]
    assert stack.result(again)["verdict"] == verdict


def test_ops_up_check_down(home: Home, tmp_path: Path) -> None:
    """The operator's kit end to end: up (server, pool with its limit, deployments, worker),
    check (Prefect reachable, pool limit shown), down (worker then server, all gone)."""
    import subprocess
    import sys

    from shuyu_core import keys

    for name in (keys.PSEUDONYM, keys.ENCRYPTION):
        keys.init_key(home, name)
    ph = tmp_path / "prefect_home"
    port = ops_stack.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "SHUYU_HOME": str(home.root),
        "PREFECT_HOME": str(ph),
        "COLUMNS": "200",
    }

    def shuyu(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=400,
            stdin=subprocess.DEVNULL,
            cwd=ops_stack.PROJECT_DIR,
        )

    up = shuyu("ops", "up", "--port", str(port), "--pool-limit", "3")
    state = ops_stack.load_state(ph)
    try:
        assert up.returncode == 0, up.stderr + _dump(ph / "logs")
        assert state is not None
        pids = state["pids"]
        assert ops_stack.is_our_process(pids["server"], "server")
        assert ops_stack.is_our_process(pids["worker"], "worker")
        again = shuyu("ops", "up", "--port", str(ops_stack.free_port()))
        assert again.returncode == 1 and "already running" in again.stderr

        check = shuyu(
            "ops", "check", "--format", "json", PREFECT_API_URL=f"http://127.0.0.1:{port}/api"
        )
        rows = {r["name"]: r for r in json.loads(check.stdout)}
        assert check.returncode == 0, check.stdout + check.stderr
        assert rows["prefect api"]["status"] == "ok"
        assert "concurrency limit 3" in rows["prefect api"]["detail"]
    finally:
        down = shuyu("ops", "down")
    assert down.returncode == 0, down.stderr
    assert "worker" in down.stdout and "server" in down.stdout
    assert not ops_stack.is_our_process(pids["server"], "server")
    assert not ops_stack.is_our_process(pids["worker"], "worker")
    assert ops_stack.load_state(ph) is None
    actions = [e["action"] for e in audit.tail(home, 100)]
    assert "ops.up" in actions and "ops.down" in actions
