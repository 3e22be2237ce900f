"""Load and validate YAML specs with errors that name the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pydantic
import yaml

from shuyu_core.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="save the spec as UTF-8",
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValidationError(
            f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})",
            hint="fix the YAML syntax",
        ) from exc


def parse_model(model: type[M], data: object, source: Path | str) -> M:
    """Validate ``data`` as ``model``; every problem listed as ``file: field: message``."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{_location(err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ValidationError(f"{source}: {problems}", hint="correct the spec") from exc


def load_model(model: type[M], path: Path) -> M:
    return parse_model(model, read_yaml(path), path)
