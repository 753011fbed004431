"""Live signals and pair watch on the real broker: records equal the offline definitions.

Real sample data is replayed through bar-worker -> signal-worker (and timeframe-worker ->
pair-worker); the signal records must equal ``compute_signals`` over the offline 1 s bars of the
same ticks (values bit for bit, readiness nulls included), once each, with ``seq`` dense and
increasing per symbol within a session, also across a SIGKILL of the signal worker mid-stream;
the pair records must equal ``pair_stats`` over the offline 1 m bars.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import msgspec
import numpy as np
import polars as pl
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tests.integration.pipeline import bars_frame, read_topic, start_worker, stop_worker, wait_until
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import SIGNAL_DECODER
from tickforge.platform.io.files import TickFile, read_quotes, read_trades
from tickforge.platform.io.kafka import topic_name
from tickforge.platform.signals.batch import compute_signals
from tickforge.platform.signals.pairs import PairConfig, PairStats, align_closes, pair_stats
from tickforge.platform.signals.spec import SIGNAL_COLUMNS, VALUE_FIELDS
from tickforge.platform.topics import PAIRS, SIGNALS, bar_topic
from tickforge.streaming.replay import replay
from tickforge.streaming.signal_worker import SEQ_SESSION_STRIDE, session_seq_base

pytestmark = pytest.mark.integration
DAY = 1381204800000  # 2013-10-08 00:00 UTC
# The sample's USDT perpetuals stop at midnight: the coin-margined perpetual has all 12 minutes.
PAIRS_UNDER_WATCH = [("BTCUSDT-SPOT", "BTCUSD_PERP"), ("ETHUSDT-SPOT", "BTCUSDT-SPOT")]
MIN_HISTORY = 4


def _slice(tick_file: TickFile, expr) -> TickFile:
    return TickFile(tick_file.kind, tick_file.source, tick_file.data.filter(expr), tick_file.dead_letters.head(0))


@pytest.fixture(scope="module")
def crypto(samples):
    """Six instruments, 23:54 to 00:05 UTC: every symbol crosses a session boundary."""
    return read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")


@pytest.fixture(scope="module")
def bac(samples):
    """BAC trades and quotes, 25 minutes after the New York open (spread and imbalance carried)."""
    window = pl.col("ts_ms").is_between(DAY + 13 * 3_600_000 + 30 * 60_000, DAY + 13 * 3_600_000 + 55 * 60_000)
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz")
    return _slice(trades, window & (pl.col("symbol") == "BAC")), _slice(quotes, window)


def _published(settings, topic: str) -> int:
    """Messages on a topic so far (end offsets: data, markers and transaction markers)."""
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "probe"})
    try:
        name = topic_name(settings, topic)
        return sum(
            probe.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in range(settings.kafka.partitions)
        )
    except KafkaException:  # metadata not there yet: no progress seen
        return 0
    finally:
        probe.close()


def _signals_frame(values: list[bytes]) -> pl.DataFrame:
    rows = [msgspec.structs.asdict(SIGNAL_DECODER.decode(v)) for v in values]
    return pl.DataFrame(rows, infer_schema_length=None, schema_overrides={c: pl.Float64 for c in VALUE_FIELDS})


def _assert_signals_equal(live: pl.DataFrame, expected: pl.DataFrame, rel: float = 0.0) -> None:
    """Same records once each, same readiness nulls, values equal (bit for bit when rel is 0)."""
    keys = ["symbol", "window_start"]
    assert live.select(keys).is_duplicated().sum() == 0, "a signal appears more than once"
    if live.height != expected.height:
        missing = expected.join(live, on=keys, how="anti")
        summary = missing.group_by("symbol", "session").agg(
            pl.len(), first=pl.col("window_start").min(), last=pl.col("window_start").max()
        )
        extra = live.join(expected, on=keys, how="anti").height
        raise AssertionError(
            f"{live.height} signals, expected {expected.height}; {extra} unexpected; missing:\n{summary}"
        )
    assert live["is_final"].all()
    joined = expected.join(live, on=keys, how="left", suffix="_live")
    for col in SIGNAL_COLUMNS:
        if col in keys:
            continue
        want, got = joined[col], joined[f"{col}_live"]
        # Same nulls (readiness), same values bit for bit.
        assert (want.is_null() != got.is_null()).sum() == 0, f"readiness differs in {col}"
        if rel and want.dtype == pl.Float64:
            bad = ((got - want).abs() > rel * want.abs()).sum()
        else:
            bad = (want != got).sum()
        assert bad == 0, f"{bad} signals differ in {col}"
    for col in ("ema26", "macd_signal", "rsi14", "boll_upper", "vwap_rolling", "realized_volatility"):
        assert joined[col].null_count() < joined.height, f"{col} never ready"


def _assert_seq(live: pl.DataFrame) -> None:
    """Dense within each (symbol, session), increasing per symbol in window_start order."""
    ordered = live.sort("symbol", "window_start")
    for (symbol,), part in ordered.group_by(["symbol"], maintain_order=True):
        seq = part["seq"].to_numpy()
        assert (np.diff(seq) > 0).all(), f"seq of {symbol} not increasing"
        n = part.with_columns(n=pl.int_range(1, pl.len() + 1).over("session"))
        base = np.array([session_seq_base(s) for s in part["session"].to_list()])
        assert (seq == base + n["n"].to_numpy()).all(), f"seq of {symbol} not dense per session"
    assert (live["seq"] % SEQ_SESSION_STRIDE > 0).all()


def test_live_signals_and_pairs_equal_offline(settings, crypto, bac, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIR_MIN_HISTORY", str(MIN_HISTORY))
    monkeypatch.setenv("TICKFORGE_LOG_LEVEL", "INFO")  # the runtime logs each assignment's replay range
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIRS", json.dumps([f"{a}/{b}" for a, b in PAIRS_UNDER_WATCH]))
    session_tz = settings.signals.session_tz()
    trades, quotes = bac
    started = time.monotonic()
    workers = [
        start_worker("bar-worker", log_dir=tmp_path),
        start_worker("timeframe-worker", log_dir=tmp_path),
        start_worker("signal-worker", log_dir=tmp_path),
        start_worker("pair-worker", log_dir=tmp_path),
    ]
    done = threading.Event()

    def publish():
        # Paced, so that the SIGKILL below lands with a session open and commits behind.
        # In event-time order: 2013 first, else the 2024 watermark makes every 2013 tick late.
        replay(settings, trades, quotes, end_marker=False)
        replay(settings, crypto, speed=40.0, chunk_rows=400)
        done.set()

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        expected_crypto = build_bars(crypto, ["1s", "1m"], partitions=settings.kafka.partitions)
        expected_bac = build_bars(trades, ["1s"], quotes, partitions=settings.kafka.partitions)
        bars_1s = pl.concat([expected_crypto.bars["1s"], expected_bac.bars["1s"]], how="diagonal_relaxed")
        expected = compute_signals(bars_1s, session_tz)
        assert expected["session"].n_unique() >= 3  # 2024-08-08, 2024-08-09 (UTC), 2013-10-08 (NY)

        # Kill the signal worker once it has published part of the (paced) crypto stream.
        bac_signals = expected_bac.bars["1s"].height
        wait_until(
            lambda: _published(settings, SIGNALS) > bac_signals + 600 or done.is_set(),
            60,
            0.2,
            "signal worker progress before the kill",
        )
        assert not done.is_set(), "the replay ended before the kill"
        worker = workers[2]
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        workers[2] = start_worker("signal-worker", log_dir=tmp_path)
        thread.join(120)
        assert done.is_set()

        values, markers = read_topic(settings, SIGNALS, idle_s=4, max_s=60, expect=expected.height)
        assert markers, "no watermark markers forwarded on signals.1s"
        live = _signals_frame(values)
        # The live bars are the offline bars to 1e-9 (a live bar's sums are folded from 10 ms
        # bins in transaction-sized steps, so notional may differ in the last bits) ...
        _assert_signals_equal(live, expected, rel=1e-9)
        # ... and over the very bars the worker read, the signals are equal bit for bit.
        bar_values, _ = read_topic(settings, bar_topic("1s"), idle_s=1, expect=bars_1s.height)
        _assert_signals_equal(live, compute_signals(bars_frame(bar_values), session_tz))
        _assert_seq(live)
        # The restart did go through the recovery path: a partition replayed part of its input.
        assigned = [
            json.loads(line)
            for line in (tmp_path / "signal-worker.log").read_text().splitlines()
            if '"assigned"' in line
        ]
        assert any(0 <= a["offset"] < a["replay_until"] for a in assigned), assigned

        config = PairConfig(lookback=settings.signals.pair_lookback_minutes, min_history=MIN_HISTORY)
        want = []
        for a, b in PAIRS_UNDER_WATCH:
            minutes = align_closes(expected_crypto.bars["1m"], a, b)
            for i in range(minutes.height):
                stats = pair_stats(
                    minutes["close_a"][: i + 1].to_numpy(),
                    minutes["close_b"][: i + 1].to_numpy(),
                    symbol_a=a,
                    symbol_b=b,
                    as_of=int(minutes["window_end"][i]),
                    config=config,
                )
                if stats is not None:
                    want.append(stats)
        assert len(want) >= 12
        values, _ = read_topic(settings, PAIRS, idle_s=3, max_s=60, expect=len(want))
        order = lambda s: (s.symbol_a, s.symbol_b, s.as_of)  # noqa: E731
        got = sorted((msgspec.json.decode(v, type=PairStats) for v in values), key=order)
        want.sort(key=order)
        assert [order(g) for g in got] == [order(w) for w in want]
        for g, w in zip(got, want, strict=True):
            assert g.n_obs == w.n_obs and (g.half_life is None) == (w.half_life is None)
            if w.half_life is not None:
                assert g.half_life == pytest.approx(w.half_life, rel=1e-9)
            for field in ("return_correlation", "hedge_ratio", "intercept", "coint_pvalue", "spread", "spread_zscore"):
                assert getattr(g, field) == pytest.approx(getattr(w, field), rel=1e-9, abs=1e-9), field
        print(f"live signals: {live.height} records, {time.monotonic() - started:.1f}s")
    finally:
        done.wait(120)
        for w in workers:  # all at once, then wait for each
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            stop_worker(w)
