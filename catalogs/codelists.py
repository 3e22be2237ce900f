"""Code lists used by quality rules and as public key sets for DP products.

Shipped lists live in ``catalogs/codelists/<name>.csv`` (code,name). The GB/T 2260 region
codes come from the table that python-stdnum maintains (``stdnum/cn/loc.dat``):

- ``gbt2260``: current county-level codes (no end year in their history);
- ``gbt2260_all``: every code that has ever been valid (an ID number's birth place may be
  a code that has since been abolished).
"""

from __future__ import annotations

import csv
import re
from functools import cache
from importlib import resources
from pathlib import Path

from shuyu_core.errors import NotFoundError

_HERE = Path(__file__).parent / "codelists"
_HISTORY = re.compile(r"\[(\d{4})?-(\d{4})?\]([^,]*)")


def _loc_dat() -> str:
    return resources.files("stdnum").joinpath("cn/loc.dat").read_text(encoding="utf-8")


@cache
def _regions() -> tuple[dict[str, str], dict[str, str]]:
    current: dict[str, str] = {}
    every: dict[str, str] = {}
    province = ""
    for line in _loc_dat().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith(" "):
            province = line.split()[0]
            continue
        suffix, _, rest = line.strip().partition(" ")
        name_spec = rest.partition("=")[2].strip().strip('"')
        code = province + suffix
        history = _HISTORY.findall(name_spec)
        if history:
            _start, end, name = history[-1]
            is_current = end == ""
        else:
            name, is_current = name_spec, True
        every[code] = name
        if is_current and not code.endswith(("00", "01")):
            current[code] = name
    return current, every


@cache
def load(name: str) -> dict[str, str]:
    """The code list ``name`` as {code: label}."""
    if name == "gbt2260":
        return _regions()[0]
    if name == "gbt2260_all":
        return _regions()[1]
    path = _HERE / f"{name}.csv"
    if not path.exists():
        raise NotFoundError(
            f"unknown code list {name!r}", hint=f"use one of: {', '.join(available())}"
        )
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["code"]: row["name"] for row in csv.DictReader(fh)}


def available() -> list[str]:
    return sorted(["gbt2260", "gbt2260_all", *(p.stem for p in _HERE.glob("*.csv"))])
