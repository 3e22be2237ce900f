"""`shuyu stack up`: server, worker and portal as children, health-checked, stopped in order
(portal, worker, server) on a signal. Driven as an operator would: a subprocess and SIGINT."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from governance import audit
from pipelines import ops_stack
from shuyu_core.home import Home

pytestmark = pytest.mark.integration


class _Lines:
    """The child's output, read line by line on a thread, so every wait can be bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.queue.put(x) for x in stream], daemon=True).start()

    def until(self, wanted: str, timeout: float) -> list[str]:
        mark = len(self.seen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=0.5).rstrip("\n")
            except queue.Empty:
                continue
            self.seen.append(line)
            if wanted in line:
                return self.seen[mark:]
        raise AssertionError(f"no line with {wanted!r} within {timeout} s: {self.seen}")


def test_stack_up_starts_three_children_and_stops_them_in_order(home: Home, tmp_path: Path) -> None:
    sig = signal.SIGINT  # what Ctrl-C sends
    ph = tmp_path / "prefect_home"
    port, portal_port = ops_stack.free_port(), ops_stack.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "SHUYU_HOME": str(home.root),
        "PREFECT_HOME": str(ph),
        "COLUMNS": "200",
    }
    argv = [sys.executable, "-m", "pipelines", "stack", "up", "--no-deploy"]
    argv += ["--port", str(port), "--portal-port", str(portal_port)]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ops_stack.PROJECT_DIR,
    )
    lines = _Lines(proc)
    try:
        lines.until("ready:", timeout=300)
        children = psutil.Process(proc.pid).children()
        names = [" ".join(c.cmdline()) for c in children]
        assert len(children) == 3, names
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{portal_port}/healthz", timeout=5).status_code == 200
        # Loopback only: every listening socket of the children is on 127.0.0.1.
        for c in children:
            for conn in c.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip == "127.0.0.1", (c.cmdline(), conn)
        proc.send_signal(sig)
        rest = lines.until("stopped:", timeout=120)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    order = [line.split()[1] for line in rest if line.startswith("stopping ")]
    assert order == ["portal", "worker", "server"], rest
    assert any(line.startswith(f"{sig.name}: stopping") for line in rest), rest
    for c in children:
        assert not c.is_running() or c.status() == psutil.STATUS_ZOMBIE
    actions = [e["action"] for e in audit.tail(home, 100)]
    assert "stack.up" in actions and "stack.down" in actions
