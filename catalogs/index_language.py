"""The ``index`` section of the product language: a composite index as a spec.

An index spec measures noisy tables like a statistical report, but each table's rows come from
a named **row set** (``index.rows``: one product-language query each, e.g. enterprises founded
in the quarter, deregistered in the quarter, active at the start). Everything after the noisy
tables is post-processing written as expressions, with no product-specific Python:

- ``terms``: named intermediate expressions (e.g. the active stock before each quarter);
- ``components``: an expression each, clamped to its valid ``range``, optionally ``log``-ed,
  mapped linearly from its ``anchor`` [a, b] to [0, 1] (clipped), reversed when its
  ``direction`` is negative, and weighted into a 0–100 score.

Expressions use ``+ - * /``, numbers, the names of the index tables' measures (``new`` or
``table.measure``) and of earlier terms, and the functions ``max(a, b)``, ``min(a, b)``,
``abs(x)``, and along the ordered dimension ``index.order``: ``before(x)`` = Σ of x over the
earlier keys, ``cumsum(x)`` = Σ up to and including the key, ``lag(x[, k])`` = x k keys
earlier (undefined, hence withheld, for the first k keys: a public fact).

Everything is checked at load (``check_index``), before any charge: unknown names, dimensions,
functions, a division whose denominator can be 0 given the measures' valid ranges (write
``max(d, 1)``).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalogs.product_language import QuerySpec

if TYPE_CHECKING:
    from catalogs.product_models import ProductSpec

_NAME = r"^[a-z][a-z0-9_]*$"
FUNCTIONS = {"max": 2, "min": 2, "abs": 1, "before": 1, "cumsum": 1, "lag": (1, 2)}
ORDERED = {"before", "cumsum", "lag"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- expressions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    name: str  # a measure (``measure`` or ``table.measure``) or a term


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Bin:
    op: Literal["+", "-", "*", "/"]
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg:
    arg: Node


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Node, ...]
    lag: int = 0  # lag's k


Node = Ref | Const | Bin | Neg | Call
_OPS: dict[type, Literal["+", "-", "*", "/"]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
}


def parse(text: str) -> Node:
    """An expression → its tree; anything outside the small grammar raises ValueError."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"expression {text!r} does not parse ({exc.msg})") from None
    return _node(tree, text)


def _node(n: ast.AST, text: str) -> Node:
    if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
        if isinstance(n.value, bool):
            raise ValueError(f"expression {text!r}: booleans are not numbers")
        return Const(float(n.value))
    if isinstance(n, ast.Name):
        return Ref(n.id)
    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
        return Ref(f"{n.value.id}.{n.attr}")
    if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
        return Bin(_OPS[type(n.op)], _node(n.left, text), _node(n.right, text))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        return Neg(_node(n.operand, text))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.UAdd):
        return _node(n.operand, text)
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and not n.keywords:
        fn = n.func.id
        if fn not in FUNCTIONS:
            raise ValueError(
                f"expression {text!r}: unknown function {fn}; use one of "
                + ", ".join(sorted(FUNCTIONS))
            )
        arity = FUNCTIONS[fn]
        allowed = arity if isinstance(arity, tuple) else (arity,)
        if len(n.args) not in allowed:
            raise ValueError(f"expression {text!r}: {fn} takes {' or '.join(map(str, allowed))}")
        if fn == "lag":
            k = 1
            if len(n.args) == 2:
                a = n.args[1]
                if not (isinstance(a, ast.Constant) and type(a.value) is int and a.value >= 1):
                    raise ValueError(f"expression {text!r}: lag's k is a whole number ≥ 1")
                k = a.value
            return Call("lag", (_node(n.args[0], text),), k)
        return Call(fn, tuple(_node(a, text) for a in n.args))
    raise ValueError(
        f"expression {text!r}: only numbers, names, + - * /, and the functions "
        + ", ".join(sorted(FUNCTIONS))
        + " are allowed"
    )


def refs(node: Node) -> list[str]:
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Bin):
        return refs(node.left) + refs(node.right)
    if isinstance(node, Neg):
        return refs(node.arg)
    if isinstance(node, Call):
        return [r for a in node.args for r in refs(a)]
    return []


def calls(node: Node) -> list[str]:
    if isinstance(node, Bin):
        return calls(node.left) + calls(node.right)
    if isinstance(node, Neg):
        return calls(node.arg)
    if isinstance(node, Call):
        return [node.fn] + [c for a in node.args for c in calls(a)]
    return []


# --- static ranges (a division's denominator must exclude 0) --------------------------------

Range = tuple[float, float]


def _times(x: float, y: float) -> float:
    return 0.0 if x == 0 or y == 0 else x * y  # 0 · ∞ = 0: a bound times an exact zero


def _mul(a: Range, b: Range) -> Range:
    ps = [_times(x, y) for x in a for y in b]
    return min(ps), max(ps)


def static_range(node: Node, ranges: dict[str, Range], problems: list[str], where: str) -> Range:
    """The range ``node`` can take for any inputs in their valid ranges (interval arithmetic
    over unknown data); records a division whose denominator can be 0."""
    inf = math.inf
    if isinstance(node, Const):
        return node.value, node.value
    if isinstance(node, Ref):
        return ranges.get(node.name, (-inf, inf))
    if isinstance(node, Neg):
        lo, hi = static_range(node.arg, ranges, problems, where)
        return -hi, -lo
    if isinstance(node, Bin):
        a = static_range(node.left, ranges, problems, where)
        b = static_range(node.right, ranges, problems, where)
        if node.op == "+":
            return a[0] + b[0], a[1] + b[1]
        if node.op == "-":
            return a[0] - b[1], a[1] - b[0]
        if node.op == "*":
            return _mul(a, b)
        if b[0] <= 0 <= b[1]:
            problems.append(
                f"{where} divides by an expression that can be 0 or change sign "
                f"(range [{b[0]:g}, {b[1]:g}]): write max(…, 1) around the denominator"
            )
            return -inf, inf
        return _mul(a, (1 / b[1], 1 / b[0]))
    assert isinstance(node, Call)
    args = [static_range(a, ranges, problems, where) for a in node.args]
    if node.fn == "max":
        return max(args[0][0], args[1][0]), max(args[0][1], args[1][1])
    if node.fn == "min":
        return min(args[0][0], args[1][0]), min(args[0][1], args[1][1])
    if node.fn == "abs":
        lo, hi = args[0]
        return (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))), max(abs(lo), abs(hi))
    if node.fn == "lag":
        return args[0]
    lo, hi = args[0]  # before: a sum of 0 or more such values; cumsum: of 1 or more
    if node.fn == "before":
        return (0.0 if lo >= 0 else -inf), (0.0 if hi <= 0 else inf)
    return (lo if lo >= 0 else -inf), (hi if hi <= 0 else inf)


# --- the section ---------------------------------------------------------------------------


class IndexTerm(_Strict):
    name: str = Field(pattern=_NAME)
    title: str = ""
    expr: str


class IndexComponent(_Strict):
    name: str = Field(pattern=_NAME)
    title: str
    expr: str = Field(description="expression over measures and terms")
    weight: float = Field(gt=0)
    direction: Literal["positive", "negative"] = "positive"
    anchor: tuple[float, float] = Field(
        description="value mapped to 0 and to 100 (fixed, so scores compare across releases)"
    )
    range: tuple[float | None, float | None] = Field(
        default=(None, None), description="valid range: the value is clamped to it"
    )
    log: bool = Field(default=False, description="normalize log(1 + x) instead of x")

    @model_validator(mode="after")
    def _shape(self) -> IndexComponent:
        if self.anchor[1] == self.anchor[0]:
            raise ValueError(f"component {self.name}: the two anchors must differ")
        lo, hi = self.range
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"component {self.name}: range must be (lower, upper)")
        parse(self.expr)
        return self


class IndexSpec(_Strict):
    """Composite index: components over the noisy tables' measures, normalized against fixed
    anchors, weighted onto 0–100, with a band whose coverage is at least ``1 − alpha``."""

    output: str = Field(default="index", pattern=_NAME, description="the index table's name")
    title: str = "指数"
    title_en: str = "Index"
    by: list[str] = Field(min_length=1, description="dimensions of the score grid")
    order: str | None = Field(
        default=None, description="the ordered dimension of before / cumsum / lag"
    )
    rows: dict[str, QuerySpec] = Field(
        min_length=1, description="row sets: tables name theirs with ``filter``"
    )
    terms: list[IndexTerm] = Field(default_factory=list)
    components: list[IndexComponent] = Field(min_length=1)
    max_band_half_width: float = Field(
        default=25.0,
        gt=0,
        description="accuracy target of the score band (assessment); never a reason to withhold",
    )

    @model_validator(mode="after")
    def _names(self) -> IndexSpec:
        names = [t.name for t in self.terms] + [c.name for c in self.components]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"index: term/component name(s) {', '.join(dupes)} given twice")
        if self.order is not None and self.order not in self.by:
            raise ValueError(f"index: order {self.order} is not one of index.by {self.by}")
        return self


def measure_ranges(spec: ProductSpec) -> dict[str, Range]:
    """Valid range of every measure an index may name (a count is ≥ 0; a sum has the sign
    of its per-unit bounds), under both ``measure`` and ``table.measure``."""
    out: dict[str, Range] = {}
    counts: dict[str, int] = {}
    for t in spec.tables:
        for m in t.measures:
            if m.aggregate == "count":
                r: Range = (0.0, math.inf)
            elif m.aggregate == "sum":
                assert m.bounds is not None
                lo, hi = m.bounds
                r = (0.0 if lo >= 0 else -math.inf, 0.0 if hi <= 0 else math.inf)
            else:
                continue  # quantiles: no Gaussian noise to carry into a band
            out[f"{t.name}.{m.name}"] = r
            counts[m.name] = counts.get(m.name, 0) + 1
            out.setdefault(m.name, r)
    for name, n in counts.items():
        if n > 1:
            out.pop(name, None)  # ambiguous: name it table.measure
    return out


def check_index(spec: ProductSpec) -> None:
    """Every load-time refusal of an index spec, as one message (ValueError for pydantic)."""
    idx = spec.index
    assert idx is not None
    problems: list[str] = []
    dims = {d.name for d in spec.dimensions}
    for b in idx.by:
        if b not in dims:
            problems.append(f"index.by names undeclared dimension {b}")
    if spec.reference_period is None:
        problems.append("give reference_period (the period the index covers; it also pays)")
    for t in spec.tables:
        if t.filter is None or t.filter not in idx.rows:
            problems.append(
                f"table {t.name} names row set {t.filter!r}: set filter to one of "
                + ", ".join(sorted(idx.rows))
            )
            continue
        q = idx.rows[t.filter]
        derived = {d.dimension for d in q.derive}
        missing = [b for b in t.by if b not in derived]
        if missing:
            problems.append(
                f"table {t.name}: row set {t.filter} does not derive {', '.join(missing)}"
            )
        extra = [b for b in t.by if b not in idx.by]
        if extra:
            problems.append(f"table {t.name} groups by {', '.join(extra)}, not in index.by")
        values = {v.name: v for v in q.values}
        for m in t.measures:
            if m.aggregate == "quantile":
                problems.append(f"table {t.name}: quantile {m.name} cannot feed an index")
            elif m.aggregate == "sum":
                v = values.get(m.field or "")
                if v is None:
                    problems.append(
                        f"table {t.name}: measure {m.name} sums {m.field}, not a value of "
                        f"row set {t.filter}"
                    )
                elif tuple(m.bounds or ()) != tuple(v.bounds):
                    problems.append(
                        f"table {t.name}: measure {m.name} bounds {m.bounds} differ from value "
                        f"{v.name} bounds {v.bounds}"
                    )
    for name, q in idx.rows.items():
        undeclared = sorted({d.dimension for d in q.derive} - dims)
        if undeclared:
            problems.append(f"row set {name} derives undeclared {', '.join(undeclared)}")
    ranges = measure_ranges(spec)
    known = set(ranges)
    items: list[IndexTerm | IndexComponent] = [*idx.terms, *idx.components]
    for item in items:
        where = f"{'term' if isinstance(item, IndexTerm) else 'component'} {item.name}"
        try:
            node = parse(item.expr)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for r in refs(node):
            if r not in known:
                problems.append(
                    f"{where} names unknown {r}: use a measure of the index tables "
                    f"({', '.join(sorted(k for k in known if '.' in k))}) or an earlier term"
                )
        if idx.order is None and set(calls(node)) & ORDERED:
            problems.append(f"{where} uses before/cumsum/lag: set index.order")
        if not problems:
            ranges[item.name] = static_range(node, ranges, problems, where)
        if isinstance(item, IndexTerm):
            known.add(item.name)
    if problems:
        raise ValueError(f"index of {spec.id}: " + "; ".join(problems))
