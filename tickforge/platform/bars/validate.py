"""Bars from some source (files, the golden tables) against the independent reference.

The sources live at the edges: a folder of bar files (:mod:`tickforge.platform.io.bar_files`), the
golden tables (:func:`tickforge.platform.io.postgres.golden_bar_source`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from tickforge.platform.bars.compare import compare_bars, emit_latency_ms
from tickforge.platform.bars.reference import reference_bars
from tickforge.platform.bars.timeframes import bar_timeframes, parse_timeframes, timeframe_ms

DAY_MS = 86_400_000

BarSource = Callable[[str, list[str], int, int], pl.DataFrame]
"""The bars to check: (timeframe, symbols, start_ms, end_ms) -> the bars of one timeframe (a
source may return more than the range, e.g. a whole file)."""


def validate_bars(
    trades: pl.DataFrame,
    bars: BarSource,
    timeframes: str,
    lateness_ms: int = 500,
    quotes: pl.DataFrame | None = None,
    source: str = "",
) -> dict[str, Any]:
    """A report per timeframe of ``bars`` against :func:`reference_bars` of ``trades`` (and
    ``quotes``, for the 1 s spread and imbalance); ``source`` names the bars in the report."""
    tfs = bar_timeframes(parse_timeframes(timeframes))
    expected = reference_bars(trades, tfs, lateness_ms, quotes)
    symbols = trades["symbol"].unique().to_list()
    first, last = trades.select(pl.col("ts_ms").min().alias("first"), pl.col("ts_ms").max().alias("last")).row(0)
    start = int(first)
    report: dict[str, Any] = {"ok": True, "source": source, "timeframes": {}}
    for tf in tfs:
        length = timeframe_ms(tf)
        actual = bars(tf, symbols, start - start % length, int(last) + length)
        want = expected[tf]
        if quotes is None or tf != "1s":
            want = want.drop(columns=[c for c in ("spread_bps", "imbalance") if c in want.columns])
        diff = compare_bars(actual, want)
        entry = diff.summary()
        if "closed_at_ms" in actual.columns:
            latency = emit_latency_ms(actual, lateness_ms)
            # Meaningful only when event time ran with the wall clock (a live or real-time replay).
            p50 = latency["p50"]
            if latency["count"] and p50 is not None and abs(p50) < DAY_MS:
                entry["emit_latency_ms"] = latency
        report["timeframes"][tf] = entry
        report["ok"] = report["ok"] and diff.ok
    return report
