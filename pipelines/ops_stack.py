"""A one-machine Prefect stack for Shuyu: server → work pool (with a concurrency limit) →
deployments (prefect.yaml) → process worker, stopped in the reverse order.

Used by ``shuyu ops up|down`` and by the deployment integration test, so the path operators
take is the path CI takes. The server listens on loopback only and keeps its SQLite database
in ``PREFECT_HOME``. Children run in their own process groups, so stopping one also stops what
it started (the worker's flow-run processes, the server's services), and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shuyu_core import atomic
from shuyu_core.errors import ShuyuError

PROJECT_DIR = Path(__file__).resolve().parent.parent
POOL = "shuyu-domain"
STATE_FILE = "shuyu-ops.json"


@dataclass
class StackConfig:
    prefect_home: Path
    port: int
    shuyu_home: Path
    host: str = "127.0.0.1"
    pool: str = POOL
    pool_limit: int = 2
    project_dir: Path = PROJECT_DIR
    # The worker polls the server this often; the default 10 s is most of the trigger latency.
    query_seconds: float = 2.0
    scheduler: bool = True
    # Extra environment for every child (e.g. SHUYU_DATABASE_URL, SHUYU_SCHEDULED_BY).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    """The console script next to this interpreter (the project's venv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def child_env(cfg: StackConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server, the prefect CLI and the worker.

    The worker gets no SHUYU_HOME / SHUYU_ACTOR / SHUYU_ROLE of its own: the deployment carries
    the home (job_variables.env) and each run names its requester.
    """
    env = dict(os.environ if base is None else base)
    for name in ("SHUYU_ACTOR", "SHUYU_ROLE", "PREFECT_PROFILE"):
        env.pop(name, None)
    env.update(
        {
            "PREFECT_HOME": str(cfg.prefect_home),
            "PREFECT_API_URL": cfg.api_url,
            "PREFECT_SERVER_API_HOST": cfg.host,
            "PREFECT_SERVER_API_PORT": str(cfg.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true" if cfg.scheduler else "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(cfg.query_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(cfg.query_seconds),
            "SHUYU_PROJECT_DIR": str(cfg.project_dir),
        }
    )
    env.update(cfg.extra_env)
    return env


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=env.get("SHUYU_PROJECT_DIR"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() ends it and its children
        )


def healthy(api_url: str, timeout: float = 3.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(cfg: StackConfig, log: Path, timeout: float = 180.0) -> subprocess.Popen[bytes]:
    """Start ``prefect server start`` and wait (bounded) until /api/health answers."""
    cfg.prefect_home.mkdir(parents=True, exist_ok=True)
    proc = _spawn(
        [_bin("prefect"), "server", "start", "--host", cfg.host, "--port", str(cfg.port)],
        child_env(cfg),
        log,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ShuyuError(
                f"prefect server exited with code {proc.returncode} while starting",
                hint=f"see {log}",
            )
        if healthy(cfg.api_url):
            return proc
        time.sleep(1.0)
    stop(proc)
    raise ShuyuError(
        f"prefect server not healthy at {cfg.api_url} after {timeout:.0f} s", hint=f"see {log}"
    )


def prefect_cli(cfg: StackConfig, *args: str, timeout: float = 300.0) -> str:
    """Run one ``prefect`` command against the stack; a failure is a one-line error."""
    done = subprocess.run(
        [_bin("prefect"), "--no-prompt", *args],
        env=child_env(cfg),
        cwd=cfg.project_dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ShuyuError(
            f"prefect {' '.join(args)} failed (exit {done.returncode}): {tail[0][:300]}",
            hint="rerun it by hand with the same PREFECT_API_URL to see the whole output",
        )
    return done.stdout


def create_pool_and_deploy(cfg: StackConfig) -> None:
    """The work pool with its concurrency limit, one ingest per resource at a time, then every
    deployment of prefect.yaml."""
    prefect_cli(cfg, "work-pool", "create", cfg.pool, "--type", "process", "--overwrite")
    prefect_cli(cfg, "work-pool", "set-concurrency-limit", cfg.pool, str(cfg.pool_limit))
    create_ingest_limits(cfg.api_url)
    prefect_cli(cfg, "deploy", "--all")


def create_ingest_limits(api_url: str) -> list[str]:
    """A global concurrency limit of 1 named ``ingest-<CODE>`` for every catalogued resource
    (what ``pipelines.flows.ingest_task`` occupies); existing ones are left as they are."""
    from catalogs.catalog import Catalog
    from pipelines.flows_concurrency import ingest_limit_name

    made = []
    for code in sorted(Catalog.load().resources):
        name = ingest_limit_name(code)
        r = httpx.post(
            f"{api_url}/v2/concurrency_limits/", json={"name": name, "limit": 1}, timeout=30
        )
        if r.status_code == 409:  # already there (a second `ops up`, or made by hand)
            continue
        r.raise_for_status()
        made.append(name)
    return made


def start_worker(cfg: StackConfig, log: Path) -> subprocess.Popen[bytes]:
    env = child_env(cfg)
    env.pop("SHUYU_HOME", None)  # the deployments carry it; the worker must not supply one
    return _spawn(
        [_bin("prefect"), "worker", "start", "--pool", cfg.pool, "--type", "process"],
        env,
        log,
    )


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it outlives ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    stop_group(proc.pid, timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def stop_group(pid: int, timeout: float = 30.0) -> None:
    """Stop the process group led by ``pid`` (started by this module with a new session), and
    any descendant that left the group (a flow-run process in a session of its own)."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    _stop_group(pid, timeout)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _stop_group(pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (shuyu ops down in another process): probe it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the detached stack of `shuyu ops up` / `shuyu ops down` ---------------------------------


def save_state(cfg: StackConfig, pids: dict[str, int]) -> Path:
    path = cfg.prefect_home / STATE_FILE
    doc: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "pids": pids,
    }
    atomic.write_text(path, json.dumps(doc, indent=2))
    return path


def load_state(prefect_home: Path) -> dict[str, Any] | None:
    path = prefect_home / STATE_FILE
    if not path.exists():
        return None
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def is_our_process(pid: int, role: str) -> bool:
    """The pid still runs the prefect command we started (a pid can be reused)."""
    import psutil

    try:
        cmd = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    wanted = {"server": "server", "worker": "worker"}[role]
    return any(Path(c).name == "prefect" for c in cmd[:2]) and wanted in cmd
