"""The live view's logic on real data: the bounded cache, merging, indicators, badges, and the
Streamlit page itself through ``streamlit.testing`` (the cache fed with bars, signals and pair
statistics computed from the sample Binance trades; the Kafka feed is covered by the integration
test)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import polars as pl
import pytest
from confluent_kafka import TopicPartition
from streamlit.testing.v1 import AppTest

from tickforge.dashboard import cache, source, view
from tickforge.dashboard.feed import committed_position
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.contracts import Bar, Signal
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.settings import SignalSettings
from tickforge.platform.signals.batch import compute_signals
from tickforge.platform.signals.pairs import PairConfig, pair_stats_from_bars
from tickforge.platform.signals.spec import INDICATOR_FIELDS
from tickforge.streaming.runtime import Checkpoint

APP = Path(view.__file__).with_name("app.py")
TZ = SignalSettings().session_tz()  # the symbol classes' exchange zones, as the platform defines them
AFTER_HOURS_MS = 1_381_262_400_000  # 2013-10-08 16:00 New York (20:00 UTC)


def _bar_messages(trades: TickFile, built: dict[str, pl.DataFrame]) -> list[Bar]:
    out: list[Bar] = []
    for tf, frame in built.items():
        length = timeframe_ms(tf)
        span = trades.data.group_by("symbol", window_start=pl.col("ts_ms") // length * length).agg(
            first_ts=pl.col("ts_ms").min(), last_ts=pl.col("ts_ms").max()
        )
        joined = frame.join(span, on=["symbol", "window_start"]).sort("symbol", "window_start")
        out += [Bar(timeframe=tf, **row) for row in joined.iter_rows(named=True)]
    return out


@pytest.fixture(scope="module")
def spy_close(samples) -> list[Bar]:
    """SPY's 1 s and 1 m bars from 15:55 to 16:20 New York time: the close, then sparse after-hours bars."""
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    trades = dataclasses.replace(
        trades,
        symbols=None,
        data=trades.data.filter(
            pl.col("symbol") == "SPY", pl.col("ts_ms").is_between(AFTER_HOURS_MS - 300_000, AFTER_HOURS_MS + 1_200_000)
        ),
    )
    return _bar_messages(trades, build_bars(trades, ["1s", "1m"]).bars)


@pytest.fixture(scope="module")
def records(samples):
    """Bars (1 s, 1 m, 5 m), signals and pair statistics of the Binance sample, as messages."""
    trades = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    built = build_bars(trades, ["1s", "1m", "5m"])
    out: list = _bar_messages(trades, built.bars)
    signals = compute_signals(built.bars["1s"], TZ)
    out += [Signal(seq=i + 1, is_final=True, **row) for i, row in enumerate(signals.iter_rows(named=True))]
    stats = pair_stats_from_bars(built.bars["1m"], "BTCUSDT-SPOT", "BTCUSD_PERP", PairConfig(min_history=4))
    assert stats is not None
    out.append(stats)
    return out, built.bars


def _cache(records, max_bars: int = 3_600) -> cache.LiveCache:
    held = cache.LiveCache(max_bars)
    cache.feed_cache(held, records, received_ms=cache.wall_ms())
    return held


def test_cache_is_bounded_and_keeps_the_latest(records):
    messages, bars = records
    live = _cache(messages, max_bars=100)
    spot = bars["1s"].filter(pl.col("symbol") == "BTCUSDT-SPOT")
    assert spot.height > 600
    held = live.bars("BTCUSDT-SPOT", "1s")
    assert held.height == 100
    assert held["window_start"].to_list() == spot["window_start"].tail(100).to_list()
    assert live.signals("BTCUSDT-SPOT").height == 100
    # An older bar is ignored; a repeat of the latest replaces it (never two rows for one window).
    oldest = next(m for m in messages if isinstance(m, Bar) and m.symbol == "BTCUSDT-SPOT" and m.timeframe == "1s")
    latest = next(
        m for m in reversed(messages) if isinstance(m, Bar) and m.symbol == "BTCUSDT-SPOT" and m.timeframe == "1s"
    )
    live.add_bar(oldest)
    # A redelivery of the latest bar with other (possible) values replaces it.
    flat = {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "vwap": 1.0, "notional": latest.volume}
    live.add_bar(Bar(**{**{f: getattr(latest, f) for f in latest.__struct_fields__}, **flat}))
    again = live.bars("BTCUSDT-SPOT", "1s")
    assert again.height == 100 and again["close"][-1] == 1.0 and again["window_start"][0] == held["window_start"][0]
    assert live.symbols() == sorted(bars["1s"]["symbol"].unique().to_list())


def test_merge_prefers_live_and_indicators_follow_the_definition(records):
    _, bars = records
    minutes = bars["1m"].filter(pl.col("symbol") == "BTCUSDT-SPOT").sort("window_start")
    history, live = minutes.head(8), minutes.tail(6).with_columns(close=pl.col("close") + 1)
    merged = view.merge_bars(history, live, limit=100)
    assert merged["window_start"].to_list() == minutes["window_start"].to_list()
    assert merged.tail(6)["close"].to_list() == live["close"].to_list()
    framed = view.with_indicators(merged, "1m", "BTCUSDT-SPOT", TZ)
    expected = compute_signals(merged, TZ)
    for name in INDICATOR_FIELDS:
        assert framed[name].to_list() == expected[name].to_list(), name
    # The sample crosses midnight UTC: the session VWAP restarts at the first bar of 2024-08-09.
    first_of_day = framed.filter(pl.col("window_start") == 1723161600000).row(0, named=True)
    assert first_of_day["vwap_session"] == pytest.approx(first_of_day["notional"] / first_of_day["volume"])


def test_badges_grade_latency_lag_freshness_and_dead_letters():
    now = 1_000_000
    fresh = cache.Health(latency_ms=[40, 60, 50], last_received_ms=now - 500, lag={"bar-worker": 3}, dead_letters={})
    assert [b.color for b in view.badges(fresh, now)] == ["green", "green", "green", "green"]
    stale = cache.Health(
        latency_ms=[9_000],
        last_received_ms=now - 120_000,
        lag={"signal-worker": 80_000},
        dead_letters={"late": 2, "bad_price": 1},
    )
    graded = view.badges(stale, now)
    assert [b.color for b in graded] == ["red", "red", "red", "orange"]
    assert graded[3].value == "3" and "late: 2" in graded[3].help
    assert view.badges(cache.Health(), now)[2].value == "no data"
    # Each badge's tooltip names what it measures and how it is graded.
    for badge in [*graded, *view.badges(cache.Health(), now)]:
        assert badge.help.startswith(badge.label.capitalize() + ": ") and "Green" in badge.help, badge
    assert "signal-worker 80,000" in graded[1].help


def test_most_active_symbol_is_the_one_with_most_trades_in_the_last_hour(records, spy_close):
    messages, bars = records
    live = _cache(messages)
    trades = bars["1s"].group_by("symbol").agg(pl.col("trade_count").sum()).sort("trade_count", descending=True)
    assert live.most_active() == trades["symbol"][0] == "BTCUSDT-PERP"
    # SPY's bars of 2013 lie years before the latest bar held: not active now.
    cache.feed_cache(live, spy_close)
    assert live.most_active() == "BTCUSDT-PERP"
    assert _cache(spy_close).most_active() == "SPY"
    assert cache.LiveCache().most_active() is None


def _encodings(spec: object, channel: str) -> list[dict]:
    """Every ``channel`` encoding in a Vega-Lite spec (its layers and panes)."""
    if isinstance(spec, dict):
        found = [spec["encoding"][channel]] if channel in spec.get("encoding", {}) else []
        return found + [e for v in spec.values() for e in _encodings(v, channel)]
    if isinstance(spec, list):
        return [e for v in spec for e in _encodings(v, channel)]
    return []


def test_chart_shows_exchange_time_and_keeps_sparse_candles_readable(spy_close):
    """After the New York close SPY trades a few times a minute: the last 120 1 s bars span
    minutes, yet each takes one slot of the axis, as wide as in a busy stretch, and the axis reads
    New York time."""
    frame = cache.bars_frame([msgspec.structs.asdict(b) for b in spy_close if b.timeframe == "1s"]).tail(120)
    assert frame["window_start"].min() >= AFTER_HOURS_MS  # all after hours
    # Sparse: 120 one-second bars over more than three times 120 s (gaps between them).
    assert frame["window_end"].max() - frame["window_start"].min() > 3 * 120_000
    zone = view.exchange_zone(TZ, "SPY")
    assert zone == "America/New_York" and view.exchange_zone(TZ, "BTCUSDT-SPOT") == "UTC"
    framed = view.with_indicators(frame, "1s", "SPY", TZ)
    spec = view.price_chart(framed, zone).to_dict()
    xs = _encodings(spec, "x")
    assert xs and all(x["field"] == "slot" and x["type"] == "ordinal" for x in xs)
    slots = xs[0]["scale"]["domain"]
    assert len(slots) == 120 and slots[0].startswith("2013-10-08 16:") and slots[0].endswith("-0400"), slots[0]
    axes = [x["axis"] for x in xs]
    assert {a.get("title") for a in axes} == {None, "America/New_York time"}  # the title under the bottom pane
    labelled = [a for a in axes if a.get("labels", True)]
    assert labelled and all(a["labelExpr"] == "slice(datum.value, 11, 19)" for a in labelled)
    assert all(v.startswith("2013-10-08 16:") for v in labelled[0]["values"]) and len(labelled[0]["values"]) == 8
    price = spec["vconcat"][0]["layer"]
    sizes = {layer["mark"]["type"]: layer["mark"]["size"] for layer in price if layer["mark"].get("size")}
    assert sizes == {"bar": view.candle_width(120, 900), "tick": view.candle_width(120, 900)} and sizes["bar"] > 5
    # The price axis spans the candles, not an overlay blown wide by the closing auction.
    low, high = _encodings(price, "y")[0]["scale"]["domain"]
    assert low < frame["low"].min() and frame["high"].max() < high
    assert high - low < 1.2 * (frame["high"].max() - frame["low"].min())
    # Few bars: candles stop at a readable width instead of filling the chart.
    assert view.candle_width(3, 900) == 16.0 and view.candle_width(1_000, 900) == 1.0
    details = view.latest_details(framed, zone)
    assert str(details["window_start"]).startswith("2013-10-08 16:") and str(details["window_start"]).endswith(" EDT")


def test_lag_counts_from_the_position_a_checkpoint_records():
    """An exactly-once worker commits its replay point with its position in the metadata: the
    position counts; a plain commit (or metadata that is no checkpoint) counts as the position."""
    point = msgspec.json.encode(Checkpoint(lo_wm=1_000, hi=25, hi_wm=2_000)).decode()
    assert committed_position(TopicPartition("bars.1s", 0, 10, metadata=point)) == 25
    assert committed_position(TopicPartition("ticks", 0, 10)) == 10
    assert committed_position(TopicPartition("ticks", 0, 10, metadata="not a checkpoint")) == 10
    assert committed_position(TopicPartition("ticks", 0, 10, metadata='{"hi": "x"}')) == 10


@pytest.fixture()
def app(records):
    messages, _ = records
    source.use_source(source.DashboardSource(_cache(messages), None, TZ))
    yield AppTest.from_file(str(APP), default_timeout=60)
    source.use_source(None)


def test_page_shows_chart_details_badges_and_pairs_and_keeps_the_selection(app):
    app.query_params["symbol"] = "ETHUSDT-SPOT"
    app.run()
    assert not app.exception
    assert app.selectbox(key="symbol").value == "ETHUSDT-SPOT"
    assert "BTCUSDT-SPOT" in app.selectbox(key="symbol").options
    assert app.radio(key="timeframe").value == "1s" and app.toggle(key="auto").value is True
    assert len(app.get("vega_lite_chart")) == 1
    assert [c.value for c in app.caption][:4] == ["latency", "consumer lag", "freshness", "dead letters"]
    badges = [m.value for m in app.markdown if "-badge[" in m.value]
    assert len(badges) == 4 and badges[3].startswith(":green-badge[0"), badges
    latest, pairs = (t.value for t in app.table)
    assert pairs.index.tolist() == ["BTCUSDT-SPOT/BTCUSD_PERP"] and pairs["n_obs"].tolist() == [12]

    details = dict(zip(latest["field"], latest["value"], strict=True))
    assert details["rsi14"] != "–" and details["ema26"] != "–" and details["boll_upper"] != "–"
    assert details["window_start"].endswith(" UTC")  # crypto trades on UTC
    assert any(c.value.startswith("No trading data") for c in app.caption)  # no OMS tables in this source

    app.radio(key="timeframe").set_value("5m").run()
    assert not app.exception
    assert app.selectbox(key="symbol").value == "ETHUSDT-SPOT"
    assert app.subheader[0].value == "ETHUSDT-SPOT · 5m"

    app.toggle(key="auto").set_value(False).run()
    app.selectbox(key="symbol").set_value("BTCUSDT-SPOT").run()
    assert not app.exception
    assert app.subheader[0].value == "BTCUSDT-SPOT · 5m" and app.toggle(key="auto").value is False


def test_page_opens_on_the_most_active_symbol_with_badge_tooltips(app):
    app.run()
    assert not app.exception
    assert app.selectbox(key="symbol").value == "BTCUSDT-PERP"  # the most trades in the sample
    assert app.subheader[0].value == "BTCUSDT-PERP · 1s" and app.slider(key="window").value == 120
    helps = [m.help for m in app.markdown if "-badge[" in m.value]
    assert len(helps) == 4 and all(h and ": " in h for h in helps)
    assert [c.help for c in app.caption][:4] == helps  # the label says the same on hover
    # A pick is kept: the busiest symbol no longer takes over.
    app.selectbox(key="symbol").set_value("ETHUSDT-SPOT").run()
    app.run()
    assert app.selectbox(key="symbol").value == "ETHUSDT-SPOT"
