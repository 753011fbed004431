"""The golden bar store (platform/io/postgres.py) against the real PostgreSQL of the local stack:
bars of a real trading day written with their watermarks, read back by range, symbol and recency,
counted, signed per window, and deleted by key."""

from __future__ import annotations

import uuid

import polars as pl
import psycopg
import pytest

from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import Bar
from tickforge.platform.io.files import read_trades
from tickforge.platform.io.postgres import (
    BAR_COLUMNS,
    BAR_SCHEMA,
    apply_migrations,
    bar_symbols,
    count_bars,
    delete_bars,
    golden_bar_source,
    golden_bars,
    latest_bars,
    store_bars,
    watermark_reports,
    window_signatures,
)

pytestmark = pytest.mark.integration

TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
MIN = 60_000
OPEN_MS = 1_381_239_000_000  # 2013-10-08 13:30 UTC, the regular session's open


@pytest.fixture()
def pg(stack_env, monkeypatch):
    """A connection to the stack's PostgreSQL with a schema of its own (no Kafka needed)."""
    from tickforge.platform.settings import Settings

    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    schema = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TICKFORGE_POSTGRES__SCHEMA_NAME", schema)
    settings = Settings()
    dsn = settings.postgres.dsn.get_secret_value()
    apply_migrations(dsn, schema, ["1m", "5m"])
    with psycopg.connect(dsn) as conn:
        yield settings, conn, schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _day_bars(samples) -> dict[str, list[Bar]]:
    trades = read_trades(samples / TRADES)
    built = build_bars(trades, ["1m", "5m"])
    return {
        tf: [
            Bar(timeframe=tf, first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row)
            for row in frame.to_dicts()
        ]
        for tf, frame in built.bars.items()
    }


def test_store_writes_bars_and_watermarks_and_reads_them_back(pg, samples):
    settings, conn, schema = pg
    bars = _day_bars(samples)
    first = min(b.window_start for b in bars["1m"])
    watermark = first + 90 * MIN
    assert store_bars(conn, schema, bars, {("1m", 0): watermark, ("1m", 1): watermark + MIN, ("5m", 0): watermark}) == (
        len(bars["1m"]) + len(bars["5m"])
    )

    day = golden_bars(conn, schema, "1m", first, first + 86_400_000)
    assert day.schema == BAR_SCHEMA and tuple(day.columns) == BAR_COLUMNS
    assert day.height == len(bars["1m"])
    assert day.equals(day.sort(["symbol", "window_start"]))
    by_key = {(b.symbol, b.window_start): b for b in bars["1m"]}
    for row in day.head(50).to_dicts():
        bar = by_key[(row["symbol"], row["window_start"])]
        assert {c: row[c] for c in BAR_COLUMNS} == {c: getattr(bar, c) for c in BAR_COLUMNS}

    bac = OPEN_MS
    hour = golden_bars(conn, schema, "1m", bac, bac + 60 * MIN, symbols=["BAC"])
    assert set(hour["symbol"]) == {"BAC"} and hour["window_start"].max() < bac + 60 * MIN
    assert (
        hour.height == sum(1 for b in bars["1m"] if b.symbol == "BAC" and bac <= b.window_start < bac + 60 * MIN) > 30
    )
    assert count_bars(conn, schema, "1m", first, first + 60 * MIN) == sum(
        1 for b in bars["1m"] if b.window_start < first + 60 * MIN
    )

    latest = latest_bars(conn, schema, "5m", "SPY", 3)
    spy = sorted(b.window_start for b in bars["5m"] if b.symbol == "SPY")
    assert latest["window_start"].to_list() == spy[-3:]
    assert bar_symbols(conn, schema, "1m") == sorted({b.symbol for b in bars["1m"]})

    # The golden watermark is the minimum over partitions; a report never moves one back.
    store_bars(conn, schema, {}, {("1m", 0): watermark - MIN})
    reports = watermark_reports(conn, schema, ["1m", "5m", "15m"])
    assert {tf: mark for tf, (mark, _) in reports.items()} == {"1m": watermark, "5m": watermark}

    # One stuck partition makes the golden watermark stale however much another advances: its age
    # is the age of the partition holding the minimum, and a report that does not move a
    # partition's watermark on leaves its age alone.
    conn.execute(f"UPDATE {schema}.bar_watermarks SET updated_at = now() - interval '1 hour' WHERE timeframe = '1m'")
    store_bars(conn, schema, {}, {("1m", 0): watermark, ("1m", 1): watermark + 30 * MIN})
    (now_s,) = conn.execute("SELECT extract(epoch FROM now())").fetchone()
    mark, updated_s = watermark_reports(conn, schema, ["1m"])["1m"]
    assert mark == watermark and float(now_s) - updated_s == pytest.approx(3_600, abs=5)
    store_bars(conn, schema, {}, {("1m", 0): watermark + MIN})
    mark, updated_s = watermark_reports(conn, schema, ["1m"])["1m"]
    assert mark == watermark + MIN and updated_s == pytest.approx(float(now_s), abs=5)

    # The validate command's source reads the same rows on its own connection.
    conn.commit()
    source = golden_bar_source(settings)
    assert source("1m", ["BAC"], bac, bac + 60 * MIN).equals(hour)


def test_window_signatures_change_with_a_correction_and_deleted_keys_are_gone(pg, samples):
    _, conn, schema = pg
    bars = _day_bars(samples)
    store_bars(conn, schema, bars, {})
    conn.commit()
    first = min(b.window_start for b in bars["5m"])
    span = (first, first + 30 * MIN)
    before = window_signatures(conn, schema, ["1m", "5m"], *span, 5 * MIN)
    assert sorted(before) == sorted({b.window_start for b in bars["5m"] if span[0] <= b.window_start < span[1]})

    target = sorted(before)[1]
    bar = next(b for b in bars["1m"] if target <= b.window_start < target + 5 * MIN)
    store_bars(conn, schema, {"1m": [bar]}, {})  # a redelivery of the same bar is still a new row version
    conn.commit()
    after = window_signatures(conn, schema, ["1m", "5m"], *span, 5 * MIN)
    assert {w for w in before if before[w] != after[w]} == {target}

    gone = golden_bars(conn, schema, "1m", first, first + 2 * MIN)
    assert delete_bars(conn, schema, "1m", gone["symbol"].to_list(), gone["window_start"].to_list()) == gone.height
    assert count_bars(conn, schema, "1m", first, first + 2 * MIN) == 0
    assert golden_bars(conn, schema, "1m", first, first + 2 * MIN).is_empty()
    assert isinstance(golden_bars(conn, schema, "1m", 0, 1), pl.DataFrame)
