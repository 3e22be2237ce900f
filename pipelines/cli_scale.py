"""``shuyu scale``: one partitioned resource's work on a backend (``local`` or ``dask``).

Wire with ``cli_scale.register(app)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shuyu_core.home import Home

scale_app = typer.Typer(
    help="one large resource over partitions, locally or on a Dask cluster (横向扩展)",
    no_args_is_help=True,
)
CLUSTER_HELP = (
    "local:N (a LocalCluster of N workers) or tcp://host:8786; "
    "default SHUYU_CLUSTER / SHUYU_DASK_SCHEDULER, else local"
)


@scale_app.command("quality")
def quality(
    code: str = typer.Argument(..., help="resource code, e.g. SBCBJF"),
    cluster: str | None = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Rule counts of the latest snapshot over its parts (JSON): row rules summed, repeated
    keys counted across parts."""
    from scaleout import driver
    from scaleout.backends import open_backend

    home = Home.from_env().ensure()
    with open_backend(cluster) as backend:
        out = driver.quality_counts_of(home, code, backend)
        out["backend"] = backend.name
    out["row_rules"] = {k: list(v) for k, v in out["row_rules"].items()}
    out["agg_rules"] = {k: list(v) for k, v in out["agg_rules"].items()}
    typer.echo(json.dumps(out, ensure_ascii=False, indent=2))


@scale_app.command("desensitize")
def desensitize(
    code: str = typer.Argument(..., help="resource code, e.g. RKJBXX"),
    out: Path = typer.Option(..., "--out", help="directory for the desensitized parts"),
    policy: Path | None = typer.Option(None, "--policy", help="policy YAML (default policy)"),
    cluster: str | None = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Desensitize the latest snapshot part by part into --out (one file per part)."""
    from scaleout import driver
    from scaleout.backends import open_backend

    home = Home.from_env().ensure()
    with open_backend(cluster) as backend:
        files = driver.desensitize(
            home, code, backend, out.resolve(), str(policy) if policy else None
        )
        name = backend.name
    typer.echo(json.dumps({"backend": name, "parts": [str(f) for f in files]}, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(scale_app, name="scale")
