"""Desensitization policy (脱敏策略): which operator each column gets.

A policy is YAML validated by :class:`Policy`. Resolution for one column, first match wins:

1. ``fields``: an override by ``CODE.field`` or by bare field name;
2. ``by_type``: the catalog's declared ``pii_type`` (every vocabulary type must have one);
3. ``by_type`` for the type the scanner *detected* in an undeclared column
   (``detected: apply``, the default; ``ignore`` turns this off);
4. ``by_sensitivity``: the field's declared sensitivity (none / personal /
   sensitive_personal); 5. ``keep``.

See ``catalogs/policies/default.yaml`` for the annotated default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalogs.loading import load_model
from catalogs.vocabulary import PiiType, Sensitivity
from shuyu_core.errors import NotFoundError
from shuyu_core.hashing import sm3_hex

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "catalogs" / "policies" / "default.yaml"

Op = Literal[
    "keep",
    "mask",
    "pseudonymize",
    "generalize_date",
    "generalize_age",
    "generalize_region",
    "generalize_amount",
    "suppress",
    "top_code",
    "bottom_code",
    "encrypt_sm4",
]

# Parameters each operator accepts, with their types and allowed values (None: any value).
_PARAMS: dict[str, dict[str, tuple[type | tuple[type, ...], tuple[Any, ...] | None]]] = {
    "keep": {},
    "mask": {
        "keep_region": (bool, None),
        "keep_birth": (bool, None),
        "keep_sex": (bool, None),
        "keep_sequence": (bool, None),
        "keep_check": (bool, None),
        "keep_head": (int, None),
        "keep_tail": (int, None),
    },
    "pseudonymize": {},
    "generalize_date": {"level": (str, ("month", "year"))},
    "generalize_age": {"width": (int, None), "top": (int, None), "as_of": (str, None)},
    "generalize_region": {"level": (str, ("prefecture", "province"))},
    "generalize_amount": {"width": ((int, float), None), "top": ((int, float), None)},
    "suppress": {},
    "top_code": {"value": ((int, float), None), "quantile": (float, None)},
    "bottom_code": {"value": ((int, float), None), "quantile": (float, None)},
    "encrypt_sm4": {},
}
_REQUIRED: dict[str, tuple[str, ...]] = {"generalize_amount": ("width",)}
REVERSIBLE_OPS = frozenset({"encrypt_sm4"})


class Rule(BaseModel):
    """One operator and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Op
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params_known(self) -> Rule:
        allowed = _PARAMS[self.op]
        for name, value in self.params.items():
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise ValueError(f"operator {self.op} has no parameter {name!r} (known: {known})")
            types, choices = allowed[name]
            if isinstance(value, bool) and bool not in (
                types if isinstance(types, tuple) else (types,)
            ):
                raise ValueError(f"{self.op}.{name} must not be a boolean")
            if not isinstance(value, types):
                raise ValueError(f"{self.op}.{name} has the wrong type ({type(value).__name__})")
            if choices is not None and value not in choices:
                raise ValueError(f"{self.op}.{name} must be one of {', '.join(map(str, choices))}")
        for name in _REQUIRED.get(self.op, ()):
            if name not in self.params:
                raise ValueError(f"operator {self.op} needs parameter {name!r}")
        if self.op in ("top_code", "bottom_code"):
            given = [k for k in ("value", "quantile") if k in self.params]
            if len(given) != 1:
                raise ValueError(f"{self.op} needs exactly one of value or quantile")
            q = self.params.get("quantile")
            if q is not None and not 0.0 < q < 1.0:
                raise ValueError(f"{self.op}.quantile must be between 0 and 1")
        for name in ("keep_head", "keep_tail"):
            if self.params.get(name, 0) < 0:
                raise ValueError(f"{self.op}.{name} must not be negative")
        width = self.params.get("width")
        if width is not None and width <= 0:
            raise ValueError(f"{self.op}.width must be positive")
        return self

    @property
    def reversible(self) -> bool:
        return self.op in REVERSIBLE_OPS


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    version: int = 1
    by_type: dict[PiiType, Rule]
    by_sensitivity: dict[Sensitivity, Rule] = Field(default_factory=dict)
    detected: Literal["apply", "ignore"] = "apply"
    fields: dict[str, Rule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_type_has_a_default(self) -> Policy:
        missing = [t.value for t in PiiType if t not in self.by_type]
        if missing:
            raise ValueError(f"by_type has no rule for {', '.join(missing)}")
        return self

    def resolve(
        self,
        code: str,
        field: str,
        declared: PiiType | None,
        sensitivity: Sensitivity,
        detected: PiiType | None = None,
    ) -> tuple[Rule, str]:
        """The rule for one column and where it came from (for the action record)."""
        for key in (f"{code}.{field}", field):
            if key in self.fields:
                return self.fields[key], f"fields[{key}]"
        if declared is not None:
            return self.by_type[declared], f"by_type[{declared.value}] (declared)"
        if detected is not None and self.detected == "apply":
            return self.by_type[detected], f"by_type[{detected.value}] (detected, undeclared)"
        if sensitivity in self.by_sensitivity:
            return self.by_sensitivity[sensitivity], f"by_sensitivity[{sensitivity.value}]"
        return Rule(op="keep"), "default keep"

    def digest(self) -> str:
        """SM3 of the canonical JSON form: names the policy content in outputs and audit."""
        return sm3_hex(self.model_dump_json().encode("utf-8"))


def load_policy(path: Path | str | None = None) -> Policy:
    """Load and validate a policy file (the shipped default when ``path`` is None)."""
    p = Path(path) if path is not None else DEFAULT_POLICY
    if not p.is_file():
        raise NotFoundError(
            f"policy file {p} does not exist",
            hint=f"pass --policy with a policy YAML (the default is {DEFAULT_POLICY})",
        )
    return load_model(Policy, p)
