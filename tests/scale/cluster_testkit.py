"""A real dask cluster on loopback for tests: ``dask scheduler`` and two ``dask worker``
processes (one thread each), on free ports, with bounded waits, killed at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"dask scheduler did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def dask_cluster(
    log_dir: Path, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Yield the scheduler address of a fresh loopback cluster; every process is killed
    (its whole process group) on exit."""
    full_env = {**os.environ, **(env or {}), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    log_dir.mkdir(parents=True, exist_ok=True)

    def start(args: list[str], name: str) -> subprocess.Popen:
        log = (log_dir / f"{name}.log").open("wb")
        p = subprocess.Popen(
            [str(BIN / "dask"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
        procs.append(p)
        return p

    try:
        sched = start(
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            "scheduler",
        )
        _wait_port(port, sched)
        for i in range(workers):
            start(
                [
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--memory-limit",
                    "2GiB",
                    "--name",
                    f"w{i}",
                ],
                f"worker{i}",
            )
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(workers, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
