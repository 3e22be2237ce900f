"""``shuyu stack up``: the one-machine trial in the foreground — Prefect server, work pool and
deployments, process worker, and the portal (``shuyu serve``) as child processes.

Each child is started only after the one before it is healthy (server: ``/api/health``;
worker: registered with the pool through the API; portal: ``/healthz``), all on loopback.
Ctrl-C (SIGINT) or SIGTERM stops them in the reverse order — portal, worker, server — so no
flow run is picked up from a server that is going away; if a child dies on its own, the rest
are stopped the same way and the command fails naming it. Every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from pipelines import ops_stack
from shuyu_core.errors import ShuyuError

Say = Callable[[str], None]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class ForegroundStack:
    cfg: ops_stack.StackConfig
    portal_port: int
    logs: Path
    deploy: bool = True
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    signal_name: str = ""

    @property
    def portal_url(self) -> str:
        return f"http://{self.cfg.host}:{self.portal_port}"

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self.stopping.set()

    def install_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def start(self, say: Say) -> None:
        """Server → pool and deployments → worker → portal, each healthy before the next."""
        say(f"starting the Prefect server on {self.cfg.api_url}")
        server = ops_stack.start_server(self.cfg, self.logs / "server.log")
        self.children.append(Child("server", server, self.logs / "server.log"))
        self._check_stop()
        if self.deploy:
            say("work pool, concurrency limits and deployments")
            ops_stack.create_pool_and_deploy(self.cfg)
        else:
            ops_stack.prefect_cli(
                self.cfg, "work-pool", "create", self.cfg.pool, "--type", "process", "--overwrite"
            )
        self._check_stop()
        say("starting the worker")
        worker = ops_stack.start_worker(self.cfg, self.logs / "worker.log")
        self.children.append(Child("worker", worker, self.logs / "worker.log"))
        self._wait("worker", worker, self._worker_registered, 120.0)
        say(f"starting the portal on {self.portal_url}")
        portal = _spawn_portal(self.cfg, self.portal_port, self.logs / "portal.log")
        self.children.append(Child("portal", portal, self.logs / "portal.log"))
        self._wait("portal", portal, self._portal_healthy, 120.0)

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise KeyboardInterrupt

    def _wait(
        self, name: str, proc: subprocess.Popen[bytes], ok: Callable[[], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_stop()
            if proc.poll() is not None:
                raise ShuyuError(
                    f"{name} exited with code {proc.returncode} while starting",
                    hint=f"see {self.logs / (name + '.log')}",
                )
            if ok():
                return
            time.sleep(0.5)
        raise ShuyuError(
            f"{name} not healthy after {timeout:.0f} s", hint=f"see {self.logs / (name + '.log')}"
        )

    def _worker_registered(self) -> bool:
        try:
            r = httpx.post(
                f"{self.cfg.api_url}/work_pools/{self.cfg.pool}/workers/filter", json={}, timeout=5
            )
            return r.status_code == 200 and bool(r.json())
        except httpx.HTTPError:
            return False

    def _portal_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.portal_url}/healthz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def watch(self, say: Say, poll: float = 1.0) -> str | None:
        """Until a signal (returns None) or a child exits on its own (returns its name)."""
        while not self.stopping.wait(poll):
            for c in self.children:
                if c.proc.poll() is not None:
                    say(f"{c.name} exited with code {c.proc.returncode}; stopping the rest")
                    return c.name
        return None

    def stop_all(self, say: Say) -> list[str]:
        """Portal, worker, server: the reverse of the start order. Returns the names stopped."""
        stopped = []
        for c in reversed(self.children):
            say(f"stopping {c.name} (pid {c.proc.pid})")
            ops_stack.stop(c.proc)
            stopped.append(c.name)
        self.children.clear()
        return stopped


def _spawn_portal(cfg: ops_stack.StackConfig, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = ops_stack.child_env(cfg)
    argv = [sys.executable, "-m", "pipelines", "serve", "--host", cfg.host, "--port", str(port)]
    return ops_stack._spawn(argv, env, log)


def run(stack: ForegroundStack, say: Say) -> str | None:
    """Bring the stack up, wait for Ctrl-C / SIGTERM or a child's death, stop it in order.

    Returns the name of a child that died on its own (the caller fails), else None.
    """
    stack.install_handlers()
    try:
        stack.start(say)
        say(
            f"ready: Prefect {stack.cfg.api_url}, pool {stack.cfg.pool}, portal "
            f"{stack.portal_url} — Ctrl-C stops portal, worker, server"
        )
        died = stack.watch(say)
    except KeyboardInterrupt:
        died = None
    finally:
        if stack.signal_name:
            say(f"{stack.signal_name}: stopping")
        stopped = stack.stop_all(say)
        say(f"stopped: {', '.join(stopped) or 'nothing'}")
    return died
