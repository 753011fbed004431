"""The strategy runner's tasks on their own, without the runtime: the demo day's BAC 1 m bars as
the timeframe worker publishes them (each bar, then the watermark that closed it as a marker) in,
an :class:`~tickforge.streaming.runtime.Output` on a producer that keeps what it is given.

The orders are the offline runner's; the watermark follows them on ``orders`` as markers, never
past an order still to come: not while another timeframe of the partition lags, not past the last
bar of a book that a session-end flatten may still close. Without picks nothing is traded and the
watermark still moves; a replayed span sends nothing, and the marker goes out after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import cast

import msgspec
import polars as pl
import pytest

from tests.integration.test_strategy_runner_worker import PICKS_CSV, _expected
from tests.unit.kafka_fakes import FakeMessage
from tests.unit.test_tasks import KeepingProducer, _as_messages
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import Bar
from tickforge.platform.io.files import read_trades
from tickforge.platform.io.kafka import encode_marker, marker_headers, marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER, ORDERS, bar_topic, partition_for
from tickforge.streaming.runtime import Output
from tickforge.streaming.strategy_runner import OrdersClock, StrategyRunnerTask, runner_tasks
from tickforge.trading.io import load_limits, read_picks_file
from tickforge.trading.picks import Pick
from tickforge.trading.risk import pick_sizer
from tickforge.trading.runner import StrategyRunner
from tickforge.trading.sessions import regular_hours, regular_session

PARTITIONS = 4


@pytest.fixture()
def settings(monkeypatch) -> Settings:
    monkeypatch.setenv("TICKFORGE_KAFKA__TOPIC_PREFIX", "unit.")
    monkeypatch.setenv("TICKFORGE_KAFKA__PARTITIONS", str(PARTITIONS))
    return Settings()


@pytest.fixture(scope="module")
def bars(samples) -> pl.DataFrame:
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    regular = dataclasses.replace(trades, data=regular_hours(trades.data.filter(pl.col("symbol") == "BAC")))
    return build_bars(regular, ["1m"], lateness_ms=Settings().streaming.allowed_lateness_ms).bars["1m"]


@pytest.fixture(scope="module")
def picks(tmp_path_factory) -> list[Pick]:
    path = tmp_path_factory.mktemp("picks") / "picks.csv"
    path.write_text(PICKS_CSV)
    return read_picks_file(path)


def _bar_messages(settings: Settings, frame: pl.DataFrame, symbol: str = "BAC") -> list[FakeMessage]:
    """Each bar, then the timeframe worker's watermark that closed it (its end plus the lateness)."""
    topic = topic_name(settings, bar_topic("1m"))
    partition = partition_for(symbol, PARTITIONS)
    lateness = settings.streaming.allowed_lateness_ms
    out = []
    for row in frame.to_dicts():
        bar = Bar(timeframe="1m", first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row)
        out.append(FakeMessage(topic, partition, len(out), symbol.encode(), msgspec.json.encode(bar), None, 0))
        out.append(_marker(topic, partition, len(out), row["window_end"] + lateness))
    return out


def _marker(topic: str, partition: int, offset: int, watermark: int) -> FakeMessage:
    return FakeMessage(topic, partition, offset, None, encode_marker(watermark), marker_headers(), 0)


def _task(
    settings: Settings,
    timeframe: str,
    picks: Sequence[Pick],
    clock: OrdersClock,
    start: int = -(2**62),
    symbol: str = "BAC",
) -> StrategyRunnerTask:
    partition = partition_for(symbol, PARTITIONS)
    return StrategyRunnerTask(settings, partition, start, timeframe, lambda day: picks, load_limits(), 5, clock)


def _output(settings: Settings, producer: KeepingProducer, replaying: bool = False, symbol: str = "BAC") -> Output:
    partition = partition_for(symbol, PARTITIONS)
    return Output(producer, partition, replaying, dead_letter_topic=topic_name(settings, DEAD_LETTER))


def _step(task: StrategyRunnerTask, msg: FakeMessage, out: Output) -> None:
    """As the runtime does: close whenever the message moved the watermark."""
    before = task.watermark
    task.process(msg, out)
    if task.watermark > before:
        task.close(out)


def _log(settings: Settings, producer: KeepingProducer) -> list[tuple[str, int]]:
    """``orders`` as a reader of the partition sees it: ("order", decision time) | ("marker", watermark)."""
    out = []
    for msg in _as_messages(producer.on(topic_name(settings, ORDERS)), partition_for("BAC", PARTITIONS)):
        wm = marker_watermark(msg)
        out.append(("marker", wm) if wm is not None else ("order", msgspec.json.decode(msg.value())["decision_ts_ms"]))
    return out


def _assert_markers_keep_their_promise(entries: list[tuple[str, int]]) -> None:
    marks = [ts for kind, ts in entries if kind == "marker"]
    assert marks == sorted(marks) and len(set(marks)) == len(marks)
    promised = -1
    for kind, ts in entries:
        if kind == "marker":
            promised = ts
        else:
            assert ts >= promised, f"an order decided at {ts} after the marker {promised}"


def test_orders_are_the_offline_runners_and_the_watermark_follows_once_every_timeframe_moved(
    settings, bars, picks
) -> None:
    clock = OrdersClock(["1m", "5m"])
    minute, five = _task(settings, "1m", picks, clock), _task(settings, "5m", picks, clock)
    producer = KeepingProducer()
    out = _output(settings, producer)
    five_topic = topic_name(settings, bar_topic("5m"))
    messages = _bar_messages(settings, bars)
    for i, msg in enumerate(messages):
        _step(minute, msg, out)
        if i == 40:
            assert not [e for e in _log(settings, producer) if e[0] == "marker"]  # 5 m has shown nothing yet
        wm = marker_watermark(msg)
        if wm is not None and i >= 40:  # the 5 m topic's markers, as the timeframe worker sends them to each
            _step(five, _marker(five_topic, msg.partition(), i, wm), out)
    minute.close(out)

    entries = _log(settings, producer)
    keys = ("client_order_id", "symbol", "side", "quantity", "decision_ts_ms", "arrival_ts_ms")
    orders = [msgspec.json.decode(r.value) for r in producer.on(topic_name(settings, ORDERS)) if r.key is not None]
    assert [tuple(o[k] for k in keys) for o in orders] == _expected(bars, picks, load_limits())
    _assert_markers_keep_their_promise(entries)
    marks = [ts for kind, ts in entries if kind == "marker"]
    assert len(marks) > bars.height // 2  # the watermark moved with (nearly) every bar once both timeframes had
    # The day is over: the marker is the last bar's end (nothing of the day can be decided any more).
    assert marks[-1] == int(bars["window_end"].max()) + 1


def test_without_picks_nothing_is_traded_and_the_watermark_still_moves(settings, bars) -> None:
    clock = OrdersClock(["1m"])
    task = _task(settings, "1m", [], clock)
    producer = KeepingProducer()
    out = _output(settings, producer)
    for msg in _bar_messages(settings, bars.head(30)):
        _step(task, msg, out)
    entries = _log(settings, producer)
    assert entries and all(kind == "marker" for kind, _ in entries)
    assert entries[-1][1] == int(bars["window_end"][29]) + 1


def test_a_book_still_exposed_holds_the_watermark_at_its_last_bar_until_the_session_end_flatten(
    settings, bars, picks
) -> None:
    """The bars stop at 14:00 New York with a position open: the watermark moves on to the close,
    but the marker stays at the book's last bar, where the flatten (leg 2) is then stamped."""
    opens, closes = regular_session(int(bars["window_start"][0]))
    cut = opens + 270 * 60_000
    clock = OrdersClock(["1m"])
    task = _task(settings, "1m", picks, clock)
    producer = KeepingProducer()
    out = _output(settings, producer)
    head = bars.filter(pl.col("window_end") <= cut)
    messages = _bar_messages(settings, head)
    for msg in messages:
        _step(task, msg, out)
    session = task._sessions["us_equity"]
    assert session.runner.session_end_floor() == cut  # exposed at its last bar
    topic, partition = messages[0].topic(), messages[0].partition()
    lateness = settings.streaming.allowed_lateness_ms
    for i, wm in enumerate(range(cut + 60_000, closes + lateness, 60_000)):
        _step(task, _marker(topic, partition, len(messages) + i, wm), out)
    held = _log(settings, producer)
    assert held[-1] == ("marker", cut)  # the watermark is past 15:59, the promise is not
    _step(task, _marker(topic, partition, 10_000, closes + lateness), out)
    entries = _log(settings, producer)
    flatten = entries[len(held) :]
    assert flatten[0] == ("order", cut) and flatten[-1] == ("marker", closes + 1)
    _assert_markers_keep_their_promise(entries)
    assert "us_equity" not in task._sessions  # the session is over


def test_a_replayed_span_sends_nothing_and_its_marker_follows_after_it(settings, bars, picks) -> None:
    clock = OrdersClock(["1m"])
    task = _task(settings, "1m", picks, clock)
    producer = KeepingProducer()
    replayed = _output(settings, producer, replaying=True)
    messages = _bar_messages(settings, bars.head(60))
    for msg in messages[:-2]:
        _step(task, msg, replayed)
    assert producer.records == []
    live = _output(settings, producer)
    for msg in messages[-2:]:
        _step(task, msg, live)
    entries = _log(settings, producer)
    assert entries[-1] == ("marker", task.floor) and task.floor >= int(bars["window_end"][59])
    assert [kind for kind, _ in entries].count("marker") <= 2  # the replay's markers are not sent late


def test_the_tasks_of_a_partition_share_one_clock_and_a_new_install_begins_another(settings) -> None:
    factory = runner_tasks(settings, ["1m", "5m"], lambda day: [], load_limits(), 5)
    minute, five = (topic_name(settings, bar_topic(tf)) for tf in ("1m", "5m"))
    first = [cast(StrategyRunnerTask, factory(t, 1, -(2**62))) for t in (minute, five)]
    other = cast(StrategyRunnerTask, factory(minute, 2, -(2**62)))
    again = [cast(StrategyRunnerTask, factory(t, 1, -(2**62))) for t in (five, minute)]  # the runtime starting over
    assert first[0].clock is first[1].clock and other.clock is not first[0].clock
    assert again[0].clock is again[1].clock and again[0].clock is not first[0].clock


def test_crypto_trades_its_utc_day_and_flattens_at_its_midnight(settings, samples, tmp_path) -> None:
    """Binance minutes around UTC midnight (evening in New York, outside any equity session): the
    task trades the crypto class's session, the UTC day, with the offline runner's orders, the
    bar ending at midnight deciding flat, and the new day's bars a session of their own."""
    symbol = "BTCUSDT-SPOT"
    trades = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    btc = dataclasses.replace(trades, data=trades.data.filter(pl.col("symbol") == symbol))
    bars = build_bars(btc, ["1m"], lateness_ms=settings.streaming.allowed_lateness_ms).bars["1m"]
    path = tmp_path / "picks.csv"
    path.write_text(
        "symbol,strategy,timeframe,params,bucket,weight\n"
        f'{symbol},ema_cross,1m,"{{""fast"": 2, ""slow"": 3, ""allow_short"": true}}",MED,0.25\n'
    )
    crypto_picks = read_picks_file(path)
    size = pick_sizer(load_limits(), settings.signals.classes())  # crypto in fractions of a coin
    offline = StrategyRunner(crypto_picks, size, 5)
    expected = []
    for row in bars.to_dicts():
        bar = Bar(timeframe="1m", first_ts=row["window_start"], last_ts=row["window_end"] - 1, **row)
        if row["window_start"] % 86_400_000 == 0:  # a new UTC day: a new runner, as the task starts one
            offline = StrategyRunner(crypto_picks, size, 5)
        step = offline.on_bar(bar, session_last=row["window_end"] % 86_400_000 == 0)
        expected += [o.order.client_order_id for o in step.orders]
    expected += [o.order.client_order_id for o in offline.end_session(symbol, "1m").orders]

    task = _task(settings, "1m", crypto_picks, OrdersClock(["1m"]), symbol=symbol)
    producer = KeepingProducer()
    out = _output(settings, producer, symbol=symbol)
    messages = _bar_messages(settings, bars, symbol)
    for msg in messages:
        _step(task, msg, out)
    end = int(bars["window_end"].max()) + 86_400_000
    _step(task, _marker(messages[0].topic(), messages[0].partition(), len(messages), end), out)
    sent = [
        msgspec.json.decode(m.value())["client_order_id"]
        for m in _as_messages(producer.on(topic_name(settings, ORDERS)), partition_for(symbol, PARTITIONS))
        if marker_watermark(m) is None
    ]
    midnight = next(w for w in bars["window_end"] if w % 86_400_000 == 0)
    assert len(expected) >= 2 and sent == expected
    assert any(f"-{midnight - 60_000}-" in c for c in sent)  # flat on the bar ending at midnight
