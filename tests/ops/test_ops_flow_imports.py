"""Start-up cost of a flow run: loading a flow module must not import the PII stack, the DP
library, pyarrow or the database drivers. A worker's flow-run process imports the entrypoint
before its first task; these belong inside the tasks that use them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("presidio_analyzer", "spacy", "jieba", "opendp", "pyarrow", "psycopg", "pandas")


@pytest.mark.parametrize(
    "module",
    [
        "pipelines.flows",
        "pipelines.flows_pipeline",
        "pipelines.flows_products",
        "pipelines.flows_assessment",
        "pipelines.flows_quality",
    ],
)
def test_loading_a_flow_module_stays_light(module: str) -> None:
    code = (
        f"import sys, json; import {module}; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
