"""Bars from some source (files, the golden tables) against the independent reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from tickforge.platform.bars.compare import compare_bars, emit_latency_ms
from tickforge.platform.bars.reference import reference_bars
from tickforge.platform.bars.timeframes import parse_timeframes, timeframe_ms

DAY_MS = 86_400_000

BarSource = Callable[[str, list[str], int, int], pl.DataFrame]
"""The bars to check: (timeframe, symbols, start_ms, end_ms) -> the bars of one timeframe (a
source may return more than the range, e.g. a whole file)."""


def golden_bars(timeframe: str, symbols: list[str], start_ms: int, end_ms: int) -> pl.DataFrame:
    """Golden bars of one timeframe for some symbols and a time range (settings' PostgreSQL)."""
    import psycopg
    from psycopg import sql

    from tickforge.platform.io.postgres import bar_table
    from tickforge.platform.settings import load_settings

    settings = load_settings()
    query = sql.SQL(
        "SELECT symbol, window_start, window_end, open, high, low, close, volume, notional, vwap, "
        "trade_count, spread_bps, imbalance, closed_at_ms FROM {} "
        "WHERE symbol = ANY(%s) AND window_start >= %s AND window_start < %s"
    ).format(sql.Identifier(settings.postgres.schema_name, bar_table(timeframe)))
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        cur = conn.execute(query, (symbols, start_ms, end_ms))
        names = [d.name for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None)


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
    tfs = [tf for tf in parse_timeframes(timeframes) if tf != "10ms"]
    expected = reference_bars(trades, tfs, lateness_ms, quotes)
    symbols = trades["symbol"].unique().to_list()
    start = int(trades["ts_ms"].min())
    report: dict[str, Any] = {"ok": True, "source": source, "timeframes": {}}
    for tf in tfs:
        length = timeframe_ms(tf)
        actual = bars(tf, symbols, start - start % length, int(trades["ts_ms"].max()) + length)
        want = expected[tf]
        if quotes is None or tf != "1s":
            want = want.drop(columns=[c for c in ("spread_bps", "imbalance") if c in want.columns])
        diff = compare_bars(actual, want)
        entry = diff.summary()
        if "closed_at_ms" in actual.columns:
            latency = emit_latency_ms(actual, lateness_ms)
            # Meaningful only when event time ran with the wall clock (a live or real-time replay).
            if latency["count"] and abs(latency["p50"]) < DAY_MS:
                entry["emit_latency_ms"] = latency
        report["timeframes"][tf] = entry
        report["ok"] = report["ok"] and diff.ok
    return report
