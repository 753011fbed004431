"""Bar-by-bar comparison of produced bars with reference bars, and emit latency percentiles.

Bars are matched on ``symbol, window_start`` (plus ``timeframe`` when both sides carry it).
Every column of the expected frame is checked: integers, strings and keys exactly, floats to a
relative tolerance (summation order legitimately differs between implementations), and a null
on both sides counts as equal. Columns only the actual side has (``closed_at_ms``,
``first_ts``...) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import polars as pl

BASE_KEYS: Final = ("symbol", "window_start")
# Differences listed per kind in BarDiff.summary(); the full frames stay on the BarDiff.
SUMMARY_EXAMPLES: Final = 5


@dataclass(frozen=True)
class BarDiff:
    """Outcome of :func:`compare_bars`. Frames are pandas; ``differing`` is one row per field."""

    keys: tuple[str, ...]
    rows_expected: int
    rows_actual: int
    missing: pd.DataFrame  # keys expected but not produced
    extra: pd.DataFrame  # keys produced but not expected
    duplicated: pd.DataFrame  # keys produced more than once
    differing: pd.DataFrame  # keys + field, actual, expected
    missing_columns: tuple[str, ...]  # expected columns the actual frame lacks

    @property
    def ok(self) -> bool:
        return not (
            len(self.missing) or len(self.extra) or len(self.duplicated) or len(self.differing) or self.missing_columns
        )

    def summary(self) -> dict[str, Any]:
        """Counts and a few examples of each kind of difference, JSON-serialisable."""
        differing_keys = self.differing[list(self.keys)].drop_duplicates()
        return {
            "ok": self.ok,
            "keys": list(self.keys),
            "rows_expected": self.rows_expected,
            "rows_actual": self.rows_actual,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "duplicated": len(self.duplicated),
            "differing_rows": len(differing_keys),
            "differing_fields": {
                str(field): int(count) for field, count in self.differing["field"].value_counts().sort_index().items()
            },
            "missing_columns": list(self.missing_columns),
            "examples": {
                "missing": _records(self.missing),
                "extra": _records(self.extra),
                "duplicated": _records(self.duplicated),
                "differing": _records(self.differing),
            },
        }


def compare_bars(
    actual: pd.DataFrame | pl.DataFrame,
    expected: pd.DataFrame | pl.DataFrame,
    rel_tol: float = 1e-9,
) -> BarDiff:
    """Compare ``actual`` bars with ``expected`` ones (e.g. from :mod:`.reference`)."""
    act, exp = _as_pandas(actual), _as_pandas(expected)
    keys = BASE_KEYS + (("timeframe",) if "timeframe" in act and "timeframe" in exp else ())
    key_list = list(keys)
    fields = [c for c in exp.columns if c not in keys]
    missing_columns = tuple(c for c in fields if c not in act)
    fields = [c for c in fields if c in act]

    rows_actual = len(act)
    repeated = act.duplicated(key_list, keep=False)
    duplicated = act.loc[repeated, key_list].drop_duplicates().reset_index(drop=True)
    # A repeated key is reported once above; comparing its last version keeps the rest meaningful.
    act = act.drop_duplicates(key_list, keep="last")

    presence = exp[key_list].merge(act[key_list], on=key_list, how="outer", indicator=True)
    missing = presence.loc[presence["_merge"] == "left_only", key_list].reset_index(drop=True)
    extra = presence.loc[presence["_merge"] == "right_only", key_list].reset_index(drop=True)
    # Inner join for the values, so that integer columns are not widened to float by the gaps.
    both = exp[key_list + fields].merge(
        act[key_list + fields], on=key_list, how="inner", suffixes=("_expected", "_actual")
    )

    diffs = []
    for field in fields:
        a, e = both[f"{field}_actual"], both[f"{field}_expected"]
        tolerant = pd.api.types.is_float_dtype(exp[field])
        same = _close(a, e, rel_tol) if tolerant else _equal(a, e)
        if not same.all():
            rows = both.loc[~same, key_list].assign(
                field=field, actual=a[~same].astype(object), expected=e[~same].astype(object)
            )
            diffs.append(rows)
    differing = (
        pd.concat(diffs).sort_values([*key_list, "field"], kind="stable").reset_index(drop=True)
        if diffs
        else pd.DataFrame(columns=[*key_list, "field", "actual", "expected"])
    )
    return BarDiff(
        keys=keys,
        rows_expected=len(exp),
        rows_actual=rows_actual,
        missing=missing,
        extra=extra,
        duplicated=duplicated,
        differing=differing,
        missing_columns=missing_columns,
    )


def emit_latency_ms(
    bars_with_closed_at: pd.DataFrame | pl.DataFrame, lateness_ms: int
) -> dict[str, float | int | None]:
    """Percentiles of ``closed_at_ms - (window_end + lateness_ms)`` over bars with ``closed_at_ms``.

    A bar cannot be final before its window end plus the allowed lateness has passed in event
    time, so that instant is the zero of emit latency. ``count`` is the number of bars measured;
    the percentiles are None when it is 0.
    """
    frame = _as_pandas(bars_with_closed_at)
    closed = frame[frame["closed_at_ms"].notna()]
    latency = (
        closed["closed_at_ms"].to_numpy(dtype="float64") - closed["window_end"].to_numpy(dtype="float64") - lateness_ms
    )
    if latency.size == 0:
        return {"count": 0, "p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    return {"count": int(latency.size), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def _as_pandas(frame: pd.DataFrame | pl.DataFrame) -> pd.DataFrame:
    return frame.to_pandas() if isinstance(frame, pl.DataFrame) else frame.reset_index(drop=True)


def _equal(a: pd.Series, e: pd.Series) -> np.ndarray:
    a_null, e_null = a.isna().to_numpy(), e.isna().to_numpy()
    present = ~a_null & ~e_null
    equal = np.zeros(len(a), dtype=bool)
    # Compared as Python objects so that 3 == 3.0 across int/float dtypes; nulls are left out
    # because pd.NA has no truth value.
    equal[present] = np.asarray(a.to_numpy(dtype=object)[present] == e.to_numpy(dtype=object)[present], dtype=bool)
    return (a_null & e_null) | equal


def _close(a: pd.Series, e: pd.Series, rel_tol: float) -> np.ndarray:
    x = a.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    y = e.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):  # inf - inf: the exact-equality term covers it
        within = np.abs(x - y) <= rel_tol * np.maximum(np.abs(x), np.abs(y))
    return (np.isnan(x) & np.isnan(y)) | (x == y) | within


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _json_value(v) for k, v in row.items()} for row in frame.head(SUMMARY_EXAMPLES).to_dict("records")]


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value
