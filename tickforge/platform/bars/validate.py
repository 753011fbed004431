"""``tickforge bars validate``: bars from files or the golden tables against the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from tickforge.platform.bars.compare import compare_bars, emit_latency_ms
from tickforge.platform.bars.reference import reference_bars
from tickforge.platform.bars.timeframes import parse_timeframes, timeframe_ms
from tickforge.platform.io.files import read_quotes, read_trades

DAY_MS = 86_400_000


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
    trades_path: Path,
    bars: str,
    timeframes: str,
    lateness_ms: int = 500,
    quotes_path: Path | None = None,
) -> dict[str, Any]:
    trades = read_trades(trades_path).data
    quotes = read_quotes(quotes_path).data if quotes_path else None
    tfs = [tf for tf in parse_timeframes(timeframes) if tf != "10ms"]
    expected = reference_bars(trades, tfs, lateness_ms, quotes)
    symbols = trades["symbol"].unique().to_list()
    start = int(trades["ts_ms"].min())
    report: dict[str, Any] = {"ok": True, "source": bars, "timeframes": {}}
    for tf in tfs:
        length = timeframe_ms(tf)
        if bars == "postgres":
            actual = golden_bars(tf, symbols, start - start % length, int(trades["ts_ms"].max()) + length)
        else:
            actual = pl.read_parquet(Path(bars) / f"bars_{tf}.parquet")
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
