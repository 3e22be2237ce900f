"""Execution backends for per-partition work: ``local`` (this process, the default) and
``dask`` (a ``dask.distributed`` cluster).

The backend only maps a picklable function over partitions and returns the results in
partition order; what runs per partition is in ``scaleout.jobs`` and how partial results are
combined on the driver is in ``scaleout.driver``. Choosing:

- ``--cluster local:N`` (or ``SHUYU_CLUSTER=local:N``): a LocalCluster of N worker processes;
- ``SHUYU_DASK_SCHEDULER=tcp://host:8786``: an existing cluster of the domain;
- neither: ``local``.

``dask`` is imported only when a dask backend is asked for, so the single-machine paths do
not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

T = TypeVar("T")
R = TypeVar("R")

_LOCAL = re.compile(r"^local:([1-9][0-9]{0,2})$")


class Backend(Protocol):
    name: str

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, in order, wherever the backend runs them."""
        ...


class LocalBackend:
    """Today's single process: partitions one after another."""

    name = "local"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(x) for x in items]


class DaskBackend:
    """Partitions as tasks on a ``dask.distributed`` cluster.

    Tasks are marked impure (``pure=False``): each is a side-effecting job (it writes its own
    part file atomically), and a task lost with a killed worker is run again elsewhere by the
    scheduler, which is safe because a part is only visible once complete.
    """

    name = "dask"

    def __init__(self, client: Any) -> None:
        self.client = client

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if not items:
            return []
        futures = self.client.map(fn, list(items), pure=False)
        return list(self.client.gather(futures))


def cluster_setting(cluster: str | None = None, home: Home | None = None) -> str | None:
    """``local:N``, a scheduler address, or None (local backend): the flag, else the env
    (``SHUYU_CLUSTER``, ``SHUYU_DASK_SCHEDULER``), else the domain policy's
    ``scaleout.dask_scheduler`` (when ``home`` is given)."""
    if cluster:
        return cluster
    env = os.environ.get("SHUYU_CLUSTER") or os.environ.get("SHUYU_DASK_SCHEDULER")
    if env:
        return env
    if home is not None:
        from governance.domain_policy import effective

        return effective(home).scaleout.dask_scheduler
    return None


def check_setting(setting: str) -> None:
    """Refuse a cluster setting that is neither ``local:N`` nor a scheduler address (before
    anything is started or charged)."""
    if not (_LOCAL.match(setting) or setting.startswith(("tcp://", "tls://"))):
        raise ValidationError(
            f"cluster {setting!r} is neither local:N nor a scheduler address",
            hint="pass --cluster local:2, or set SHUYU_DASK_SCHEDULER=tcp://host:8786",
        )


# Set by a Prefect flow that runs on DaskTaskRunner (``pipelines.flows_scale``): per-partition
# jobs then run as the flow's own tasks, on its cluster, instead of through a second client.
_FLOW_BACKEND: ContextVar[Backend | None] = ContextVar("shuyu_flow_backend", default=None)


@contextlib.contextmanager
def using(backend: Backend) -> Iterator[None]:
    """Within this block ``open_backend`` yields ``backend`` (whatever the setting)."""
    token = _FLOW_BACKEND.set(backend)
    try:
        yield
    finally:
        _FLOW_BACKEND.reset(token)


@contextlib.contextmanager
def open_backend(cluster: str | None = None, home: Home | None = None) -> Iterator[Backend]:
    """The backend for ``cluster`` (see the module doc); a LocalCluster it starts is closed
    on exit, a client to an existing scheduler is disconnected. Inside ``using(b)``: ``b``."""
    override = _FLOW_BACKEND.get()
    if override is not None:
        yield override
        return
    setting = cluster_setting(cluster, home)
    if setting is None or setting == "local":
        yield LocalBackend()
        return
    from distributed import Client, LocalCluster

    m = _LOCAL.match(setting)
    if m:
        with (
            LocalCluster(
                n_workers=int(m.group(1)),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as lc,
            Client(lc) as client,
        ):
            yield DaskBackend(client)
        return
    check_setting(setting)
    with Client(setting, timeout="30s") as client:
        yield DaskBackend(client)


def task_runner(cluster: str | None = None, home: Home | None = None) -> Any:
    """The Prefect task runner for flows: ``DaskTaskRunner`` on the configured cluster, else
    None (the flow's default runner)."""
    setting = cluster_setting(cluster, home)
    if setting is None or setting == "local":
        return None
    from prefect_dask import DaskTaskRunner

    m = _LOCAL.match(setting)
    if m:
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": int(m.group(1)),
                "threads_per_worker": 1,
                "dashboard_address": None,
            }
        )
    return DaskTaskRunner(address=setting)
