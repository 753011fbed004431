"""The raw landing sink on the real broker and the S3 stand-in.

A slice of real BAC/AIG trades and BAC quotes (2013-10-08, 13:50-14:10 UTC, across an hour
boundary) is replayed to the tick topic. A first sink dies after writing the objects of its first
flush but before committing past them; the next sink of the same group redoes exactly that flush
(same object names, same bytes) and lands the rest. Every replayed tick is in exactly one object,
in stream order, and a third run from the same group writes nothing.
"""

from __future__ import annotations

import time
import uuid

import polars as pl
import pytest

pytestmark = pytest.mark.integration

TRADES_FILE = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
QUOTES_FILE = "us_equity_nbbo_BAC_2013-10-08.csv.gz"
START_MS = 1381240200000  # 2013-10-08 13:50 UTC
END_MS = START_MS + 20 * 60_000


class _Crash(Exception):
    pass


def _sink_settings(settings, monkeypatch):
    import boto3

    from tickforge.platform.settings import Settings

    monkeypatch.setenv("TICKFORGE_S3__RAW_BUCKET", f"raw-{uuid.uuid4().hex[:8]}")
    s = Settings()
    client = boto3.client(
        "s3",
        endpoint_url=s.s3.endpoint_url,
        region_name=s.s3.region,
        aws_access_key_id=s.s3.access_key_id,
        aws_secret_access_key=s.s3.secret_access_key.get_secret_value(),
    )
    client.create_bucket(Bucket=s.s3.raw_bucket)
    return s, client


def _slice(tick_file, symbols):
    from tickforge.platform.io.files import TickFile

    data = tick_file.data.filter(
        pl.col("symbol").is_in(symbols) & (pl.col("ts_ms") >= START_MS) & (pl.col("ts_ms") < END_MS)
    )
    return TickFile(tick_file.kind, tick_file.source, data, tick_file.dead_letters.clear())


def _objects(client, bucket) -> dict[str, str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def _read_all(client, bucket, kind) -> pl.DataFrame:
    import io

    keys = sorted(k for k in _objects(client, bucket) if k.startswith(f"{kind}/"))
    frames = [pl.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read())) for k in keys]
    return pl.concat(frames)


def test_raw_sink_lands_hourly_objects_exactly_once(settings, monkeypatch, samples):
    from tickforge.platform.io.files import QUOTE_SCHEMA, TRADE_SCHEMA, read_quotes, read_trades
    from tickforge.platform.io.raw_layout import parse_object_key
    from tickforge.streaming.raw_sink import RawSink
    from tickforge.streaming.replay import replay

    s, client = _sink_settings(settings, monkeypatch)
    t0 = time.monotonic()
    trades = _slice(read_trades(samples / TRADES_FILE), ["BAC", "AIG"])
    quotes = _slice(read_quotes(samples / QUOTES_FILE), ["BAC"])
    stats = replay(s, trades, quotes, chunk_rows=2_000)
    assert stats.trades == trades.data.height > 3_000 and stats.quotes == quotes.data.height > 3_000
    print(f"replay {time.monotonic() - t0:.1f}s: {stats.trades} trades, {stats.quotes} quotes")

    class CrashingSink(RawSink):
        def _commit_done(self, partition, next_offset):
            raise _Crash(f"killed before committing partition {partition} up to {next_offset}")

    t1 = time.monotonic()
    crashing = CrashingSink(s, flush_rows=3_000, flush_interval_s=60)
    with pytest.raises(_Crash):
        crashing.run(max_idle_s=20, install_signals=False)
    first_keys = _objects(client, s.s3.raw_bucket)
    assert first_keys, "the first flush wrote its objects before the crash"

    # Bigger flushes from now on: only the committed plan makes the redone flush cut alike.
    sink = RawSink(s, flush_rows=50_000, flush_interval_s=60)
    run = sink.run(max_idle_s=3, install_signals=False)
    print(f"sink {time.monotonic() - t1:.1f}s: {run.objects} objects in {run.flushes} flushes")
    landed = _objects(client, s.s3.raw_bucket)
    # The crashed flush was redone with the same cut: same names, same bytes.
    assert {k: landed[k] for k in first_keys} == first_keys
    assert set(first_keys) <= set(run.keys)
    for key in landed:
        kind, date, hour, name = key.split("/")
        assert kind in ("trades", "quotes") and date == "date=2013-10-08" and hour in ("hour=13", "hour=14")
        assert parse_object_key(key) is not None
    assert {k.split("/")[2] for k in landed} == {"hour=13", "hour=14"}

    got_trades = _read_all(client, s.s3.raw_bucket, "trades")
    got_quotes = _read_all(client, s.s3.raw_bucket, "quotes")
    assert got_trades.schema == TRADE_SCHEMA and got_quotes.schema == QUOTE_SCHEMA
    assert got_trades.height == trades.data.height and got_quotes.height == quotes.data.height
    # Per symbol, the landed trades are the replayed ones in stream order (row = Kafka offset).
    cols = ["ts_ms", "price", "size"]
    for symbol in ("BAC", "AIG"):
        landed_sym = got_trades.filter(pl.col("symbol") == symbol).sort("row", maintain_order=True)
        sent = trades.data.filter(pl.col("symbol") == symbol)
        assert landed_sym.select(cols).equals(sent.select(cols))
    bac_quotes = got_quotes.sort("row", maintain_order=True).select("ts_ms", "bid", "ask", "bid_size", "ask_size")
    assert bac_quotes.equals(quotes.data.select("ts_ms", "bid", "ask", "bid_size", "ask_size"))
    assert got_trades["trade_id"].null_count() == got_trades.height

    # A rerun from the same group finds everything committed: nothing new is written.
    again = RawSink(s, flush_rows=3_000, flush_interval_s=60).run(max_idle_s=2, install_signals=False)
    assert again.objects == 0
    assert _objects(client, s.s3.raw_bucket) == landed
    print(f"total {time.monotonic() - t0:.1f}s")
