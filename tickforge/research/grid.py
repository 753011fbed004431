"""Parameter grids: inclusive ranges ``start:stop:step`` or comma lists, and ``a < b`` constraints."""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tickforge.research.strategies import Strategy

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "!=": operator.ne,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(<=|>=|!=|<|>)\s*([A-Za-z_]\w*)\s*$")


def expand_values(text: str | Sequence[Any] | Any) -> list[Any]:
    """``"5:50:5"`` -> 5, 10, ..., 50 (inclusive); ``"1,2,3"`` or a list -> its items; a scalar -> [it]."""
    if isinstance(text, list | tuple):
        return list(text)
    if not isinstance(text, str):
        return [text]
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"range {text!r}: use start:stop:step")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"range {text!r}: start, stop and step must be numbers") from None
        if step <= 0 or stop < start:
            raise ValueError(f"range {text!r}: needs step > 0 and stop >= start")
        count = int(round((stop - start) / step + 1e-9)) + 1
        if count > 100_000:
            raise ValueError(f"range {text!r}: {count} values is too many")
        values = [round(start + k * step, 12) for k in range(count)]
        return [int(v) if all(float(p).is_integer() for p in (start, step)) else v for v in values]
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_constraint(text: str, strategy: Strategy) -> Callable[[Mapping[str, Any]], bool]:
    """``"fast < slow"`` as a predicate over a parameter set; names must be the strategy's."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"{strategy.name}: constraint {text!r} must read like 'fast < slow'")
    left, op, right = match.groups()
    for name in (left, right):
        if name not in strategy.param_names:
            raise ValueError(f"{strategy.name}: constraint {text!r} names unknown parameter {name!r}")
    compare = _COMPARE[op]
    return lambda p: compare(p[left], p[right])


def expand_grid(
    strategy: Strategy,
    axes: Mapping[str, Any],
    constraints: Sequence[str] = (),
    fixed: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every validated combination of the axes (plus fixed values) that passes every constraint."""
    fixed = dict(fixed or {})
    unknown = sorted((set(axes) | set(fixed)) - set(strategy.param_names))
    if unknown:
        raise ValueError(
            f"{strategy.name}: unknown parameter {unknown[0]!r} (known: {', '.join(strategy.param_names)})"
        )
    names = list(axes)
    lists = [expand_values(axes[n]) for n in names]
    predicates = [parse_constraint(c, strategy) for c in constraints]
    points = []
    for combo in itertools.product(*lists):
        point = strategy.validate({**fixed, **dict(zip(names, combo, strict=True))}, check_constraint=False)
        if strategy.constraint(point) is None and all(pred(point) for pred in predicates):
            points.append(point)
    return points


def parse_grid_options(options: Sequence[str]) -> dict[str, str]:
    """``["fast=5:50:5", "slow=20,30"]`` -> {"fast": "5:50:5", "slow": "20,30"}."""
    out: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{option!r}: use name=value (a value, a start:stop:step range or a comma list)")
        if name.strip() in out:
            raise ValueError(f"parameter {name.strip()!r} given twice")
        out[name.strip()] = value.strip()
    return out
