"""Each streaming task on its own, without the runtime: real ticks as messages in, an
:class:`~tickforge.streaming.runtime.Output` on a producer that keeps what it is given.

The tasks are driven as the runtime drives them: ``process`` each message, ``close`` when it moved
the watermark and at the end of a batch. What they emit equals the offline build of the same
ticks; bad input becomes a dead letter with its reason; a replayed span emits nothing and a
restored task goes on exactly as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import polars as pl
import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame
from tests.unit.kafka_fakes import FakeBroker, FakeMessage
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import BAR_BATCH_DECODER, DEAD_LETTER_DECODER, JSON_ENCODER, Trade
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.kafka import encode_marker, marker_headers, marker_watermark, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.signals.batch import compute_signals
from tickforge.platform.signals.pairs import pair_stats_from_bars
from tickforge.platform.topics import BINS, DEAD_LETTER, PAIRS, SIGNALS, TICKS, bar_topic, partition_for
from tickforge.streaming.bar_worker import BarTask
from tickforge.streaming.pair_worker import PairBook, PairTask
from tickforge.streaming.replay import replay
from tickforge.streaming.runtime import Output
from tickforge.streaming.signal_worker import SignalTask
from tickforge.streaming.timeframe_worker import TimeframeTask

PARTITIONS = 4
SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "data"
    / "samples"
    / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
)
ROLLUPS = ["1m", "3m", "5m"]
PAIR = ("BTCUSDT-SPOT", "BTCUSD_PERP")  # spot and the coin-margined perpetual: partitions 0 and 1


@dataclass
class Produced:
    topic: str
    partition: int
    key: bytes | str | None
    value: bytes
    headers: Any


@dataclass
class KeepingProducer:
    """The two producer calls an Output makes, kept in order."""

    records: list[Produced] = field(default_factory=list)

    def produce(
        self, topic: str, value: bytes, key: bytes | str | None = None, partition: int = -1, *, headers: Any = None
    ) -> None:
        self.records.append(Produced(topic, partition, key, value, headers))

    def poll(self, timeout: float) -> int:
        return 0

    def on(self, topic: str) -> list[Produced]:
        return [r for r in self.records if r.topic == topic]


@pytest.fixture(scope="module")
def ticks() -> TickFile:
    """The whole Binance sample: eleven minutes of six symbols."""
    return read_trades(SAMPLE)


@pytest.fixture()
def settings(monkeypatch) -> Settings:
    monkeypatch.setenv("TICKFORGE_KAFKA__TOPIC_PREFIX", "unit.")
    monkeypatch.setenv("TICKFORGE_KAFKA__PARTITIONS", str(PARTITIONS))
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIR_LOOKBACK_MINUTES", "6")
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIR_MIN_HISTORY", "4")
    return Settings()


def _tick_messages(settings: Settings, ticks: TickFile) -> dict[int, list[FakeMessage]]:
    """The ticks as the replay publishes them (column batches, then the end-of-day marker)."""
    broker = FakeBroker(PARTITIONS)
    replay(settings, ticks, producer=broker.producer(), chunk_rows=500)
    topic = topic_name(settings, TICKS)
    return {p: broker.logs.get((topic, p), []) for p in range(PARTITIONS)}


def test_a_replay_whose_messages_the_broker_never_took_fails(settings, ticks):
    """flush() empties the queue of failed deliveries too: the replay counts them itself."""
    producer = FakeBroker(PARTITIONS).producer()
    producer.undeliverable = True
    with pytest.raises(RuntimeError, match="not delivered"):
        replay(settings, ticks, producer=producer, chunk_rows=500)


def _as_messages(records: list[Produced], partition: int) -> list[FakeMessage]:
    """What a task sent, as the next task reads it from that partition."""
    return [
        FakeMessage(
            r.topic, partition, offset, r.key.encode() if isinstance(r.key, str) else r.key, r.value, r.headers, 0
        )
        for offset, r in enumerate(r for r in records if r.partition == partition)
    ]


def _drive(task: Any, messages: list[FakeMessage], out: Output) -> None:
    """As the runtime does: close whenever a message moved the watermark, and once at the end."""
    for msg in messages:
        before = task.watermark
        task.process(msg, out)
        if task.watermark > before:
            task.close(out)
    task.close(out)


def _output(settings: Settings, producer: KeepingProducer, partition: int) -> Output:
    return Output(producer=producer, partition=partition, dead_letter_topic=topic_name(settings, DEAD_LETTER))


def _bar_values(records: list[Produced]) -> list[bytes]:
    return [r.value for r in records if marker_watermark(_as_messages([r], r.partition)[0]) is None]


def _markers(records: list[Produced]) -> list[int]:
    marks = (marker_watermark(_as_messages([r], r.partition)[0]) for r in records)
    return [m for m in marks if m is not None]


def _bins_frame(values: list[bytes]) -> pl.DataFrame:
    """The 10 ms bin batches (one column message per symbol) as a frame of bars."""
    ints, floats = (
        ("window_start", "trade_count", "first_ts", "last_ts"),
        ("open", "high", "low", "close", "volume", "notional"),
    )
    parts = []
    for value in values:
        batch = BAR_BATCH_DECODER.decode(value)
        columns = {c: np.frombuffer(getattr(batch, c), np.int64) for c in ints}
        columns |= {c: np.frombuffer(getattr(batch, c), np.float64) for c in floats}
        frame = pl.DataFrame(columns).with_columns(symbol=pl.lit(batch.symbol))
        parts.append(
            frame.with_columns(window_end=pl.col("window_start") + 10, vwap=pl.col("notional") / pl.col("volume"))
        )
    return pl.concat(parts)


def _run_bar_tasks(settings: Settings, ticks: TickFile) -> KeepingProducer:
    producer = KeepingProducer()
    for partition, messages in _tick_messages(settings, ticks).items():
        _drive(BarTask(settings, partition, NO_WATERMARK), messages, _output(settings, producer, partition))
    return producer


def test_bar_task_emits_the_offline_bars_bins_and_markers(settings, ticks):
    producer = _run_bar_tasks(settings, ticks)
    offline = build_bars(ticks, ["10ms", "1s"], partitions=PARTITIONS).bars

    bars = producer.on(topic_name(settings, bar_topic("1s")))
    assert_bars_equal(bars_frame(_bar_values(bars)), offline["1s"])
    assert_bars_equal(_bins_frame(_bar_values(producer.on(topic_name(settings, BINS)))), offline["10ms"])
    assert not producer.on(topic_name(settings, DEAD_LETTER))
    # Every bar goes to the partition of its input, and each partition's output ends with the
    # marker of the end of the day, past every bar window.
    last_end = int(ticks.data["ts_ms"].max())
    for partition in range(PARTITIONS):
        mine = [r for r in bars if r.partition == partition]
        symbols = {msgspec.json.decode(v)["symbol"] for v in _bar_values(mine)}
        assert all(partition_for(s, PARTITIONS) == partition for s in symbols)
        marks = _markers(mine)
        assert marks == sorted(marks) and marks[-1] > last_end
        assert marker_watermark(_as_messages([mine[-1]], partition)[0]) == marks[-1]


def test_bar_task_dead_letters_bad_input_and_goes_on(settings, ticks):
    messages = _tick_messages(settings, ticks)[0]
    row = ticks.data.filter(pl.col("symbol") == "BTCUSDT-SPOT").row(0, named=True)
    good = Trade(symbol=row["symbol"], ts_ms=row["ts_ms"], price=row["price"], size=row["size"])
    bad_price = JSON_ENCODER.encode(good).replace(b'"price":', b'"price":-', 1)
    topic = topic_name(settings, TICKS)
    arrival = int(ticks.data["ts_ms"].min())
    junk = [
        FakeMessage(topic, 0, 0, b"BTCUSDT-SPOT", b"{not json", None, arrival),
        FakeMessage(topic, 0, 1, b"BTCUSDT-SPOT", bad_price, None, arrival),
        FakeMessage(topic, 0, 2, None, encode_marker(arrival + 10 * 86_400_000), marker_headers(), arrival),
    ]
    first = [
        FakeMessage(topic, 0, i + 3, m.key(), m.value(), m.headers(), m.timestamp()[1]) for i, m in enumerate(messages)
    ]
    producer = KeepingProducer()
    _drive(BarTask(settings, 0, NO_WATERMARK), junk + first, _output(settings, producer, 0))

    letters = [DEAD_LETTER_DECODER.decode(r.value) for r in producer.on(topic_name(settings, DEAD_LETTER))]
    assert [letter.reason for letter in letters] == [Reason.UNDECODABLE, Reason.BAD_PRICE, Reason.FUTURE_TIMESTAMP]
    assert letters[0].payload == "{not json" and all(letter.source == topic for letter in letters)
    # The far-future marker moved nothing: the partition's bars are those of its ticks.
    expected = build_bars(ticks, ["1s"], partitions=PARTITIONS).bars["1s"]
    expected = expected.filter(
        pl.col("symbol").map_elements(lambda s: partition_for(s, PARTITIONS) == 0, return_dtype=pl.Boolean)
    )
    assert_bars_equal(bars_frame(_bar_values(producer.on(topic_name(settings, bar_topic("1s"))))), expected)


def test_a_replayed_span_emits_nothing_and_the_restored_task_goes_on_exactly(settings, ticks):
    messages = _tick_messages(settings, ticks)[0]
    cut = len(messages) // 2

    whole = KeepingProducer()
    straight = BarTask(settings, 0, NO_WATERMARK)
    out = _output(settings, whole, 0)
    _drive(straight, messages[:cut], out)
    watermark, idle_limit, emitted_before = straight.watermark, straight.idle_limit, len(whole.records)
    _drive(straight, messages[cut:], out)
    after_cut = whole.records[emitted_before:]

    again = KeepingProducer()
    restored = BarTask(settings, 0, NO_WATERMARK)
    out = _output(settings, again, 0)
    out.replaying = True
    _drive(restored, messages[:cut], out)
    with out.replayed(True):
        restored.restore(watermark, idle_limit, out)
    out.replaying = False
    assert again.records == []
    assert (restored.watermark, restored.idle_limit) == (watermark, idle_limit)
    _drive(restored, messages[cut:], out)
    assert _without_wall_clock(again.records) == _without_wall_clock(after_cut)


def _without_wall_clock(records: list[Produced]) -> list[tuple[str, Any, Any]]:
    """Records as (topic, key, content), a bar's emit time (``closed_at_ms``, wall clock) left out."""
    out = []
    for r in records:
        content = msgspec.json.decode(r.value) if r.value.startswith(b"{") else r.value
        if isinstance(content, dict):
            content.pop("closed_at_ms", None)
        out.append((r.topic, r.key, content))
    return out


def _one_second_bars(settings: Settings, ticks: TickFile) -> list[Produced]:
    return _run_bar_tasks(settings, ticks).on(topic_name(settings, bar_topic("1s")))


def test_timeframe_task_rolls_the_bars_up_as_the_offline_build(settings, ticks, monkeypatch):
    monkeypatch.setenv("TICKFORGE_STREAMING__TIMEFRAMES", '["1s", "1m", "3m", "5m"]')
    settings = Settings()
    seconds = _one_second_bars(settings, ticks)
    producer = KeepingProducer()
    for partition in range(PARTITIONS):
        _drive(
            TimeframeTask(settings, partition, NO_WATERMARK),
            _as_messages(seconds, partition),
            _output(settings, producer, partition),
        )
    offline = build_bars(ticks, ROLLUPS, partitions=PARTITIONS).bars
    for tf in ROLLUPS:
        emitted = producer.on(topic_name(settings, bar_topic(tf)))
        assert_bars_equal(bars_frame(_bar_values(emitted)), offline[tf])
        assert _markers(emitted)  # forwarded on every output topic
    assert not producer.on(topic_name(settings, DEAD_LETTER))


def test_timeframe_task_dead_letters_a_bar_that_does_not_decode(settings, ticks):
    seconds = _as_messages(_one_second_bars(settings, ticks), 0)
    broken = FakeMessage(seconds[0].topic(), 0, 0, b"BAC", b'{"symbol": "BAC"}', None, 0)
    producer = KeepingProducer()
    _drive(TimeframeTask(settings, 0, NO_WATERMARK), [broken], _output(settings, producer, 0))
    [letter] = [DEAD_LETTER_DECODER.decode(r.value) for r in producer.on(topic_name(settings, DEAD_LETTER))]
    assert letter.reason == Reason.UNDECODABLE and letter.payload == '{"symbol": "BAC"}'


def test_signal_task_publishes_the_batch_signals_of_the_bars(settings, ticks):
    seconds = _one_second_bars(settings, ticks)
    producer = KeepingProducer()
    for partition in range(PARTITIONS):
        messages = _as_messages(seconds, partition)
        task = SignalTask(settings, partition, NO_WATERMARK)
        out = _output(settings, producer, partition)
        for start in range(0, len(messages), 97):  # steps of a few bars, as transactions cut them
            _drive(task, messages[start : start + 97], out)
    emitted = producer.on(topic_name(settings, SIGNALS))
    got = pl.DataFrame([msgspec.json.decode(v) for v in _bar_values(emitted)], infer_schema_length=None)
    got = got.sort("symbol", "window_start")
    want = compute_signals(bars_frame(_bar_values(seconds)), settings.signals.session_tz())
    assert got.height == want.height and got.select("symbol", "seq").n_unique() == got.height  # seq dense per symbol
    for column in want.columns:
        a, b = got[column], want[column]
        if b.dtype == pl.Float64:
            assert ((a - b).abs().fill_null(0) <= 1e-9 * b.abs().fill_null(0)).all(), column
            assert (a.is_null() == b.is_null()).all(), column
        else:
            assert a.to_list() == b.to_list(), column
    assert _markers(emitted)


def test_signal_task_replays_its_session_silently(settings, ticks):
    messages = _as_messages(_one_second_bars(settings, ticks), partition_for(PAIR[0], PARTITIONS))
    cut = len(messages) // 3
    straight_out = KeepingProducer()
    _drive(SignalTask(settings, 0, NO_WATERMARK), messages, _output(settings, straight_out, 0))

    replayed = KeepingProducer()
    task = SignalTask(settings, 0, NO_WATERMARK)
    out = _output(settings, replayed, 0)
    out.replaying = True
    _drive(task, messages[:cut], out)
    out.replaying = False
    assert replayed.records == []
    _drive(task, messages[cut:], out)
    # The state rebuilt from the replayed bars: the signals of the later bars, bit for bit, with
    # the same seq numbers as a task that never stopped.
    straight = _bar_values(straight_out.on(topic_name(settings, SIGNALS)))
    after = _bar_values(replayed.on(topic_name(settings, SIGNALS)))
    later_bars = [m for m in messages[cut:] if marker_watermark(m) is None]
    assert 0 < len(after) == len(later_bars) < len(straight)
    assert after == straight[-len(after) :]


def _minute_bars(settings: Settings, ticks: TickFile) -> list[Produced]:
    seconds = _one_second_bars(settings, ticks)
    producer = KeepingProducer()
    for partition in range(PARTITIONS):
        _drive(
            TimeframeTask(settings, partition, NO_WATERMARK),
            _as_messages(seconds, partition),
            _output(settings, producer, partition),
        )
    return producer.on(topic_name(settings, bar_topic("1m")))


def _book(settings: Settings, published: dict[str, int] | None = None) -> PairBook:
    s = settings.signals
    return PairBook(
        [PAIR],
        PARTITIONS,
        s.pair_lookback_minutes,
        s.pair_min_history,
        settings.streaming.allowed_lateness_ms,
        published,
    )


def _run_pairs(settings: Settings, minutes: list[Produced], book: PairBook) -> KeepingProducer:
    producer = KeepingProducer()
    tasks = {p: PairTask(settings, book, p, NO_WATERMARK) for p in range(PARTITIONS)}
    for partition, task in tasks.items():
        _drive(task, _as_messages(minutes, partition), _output(settings, producer, partition))
    for partition, task in tasks.items():  # every leg's watermark known: the last minutes are due
        task.close(_output(settings, producer, partition))
    return producer


def test_pair_book_publishes_each_aligned_minute_once_with_the_offline_statistics(settings, ticks):
    assert partition_for(PAIR[0], PARTITIONS) != partition_for(PAIR[1], PARTITIONS)  # legs on two partitions
    minutes = _minute_bars(settings, ticks)
    producer = _run_pairs(settings, minutes, _book(settings))
    stats = [msgspec.json.decode(r.value) for r in producer.on(topic_name(settings, PAIRS))]
    key = f"{PAIR[0]}/{PAIR[1]}"
    assert stats and {r.key for r in producer.on(topic_name(settings, PAIRS))} == {key}
    assert all(r.partition == partition_for(key, PARTITIONS) for r in producer.on(topic_name(settings, PAIRS)))
    as_of = [s["as_of"] for s in stats]
    assert as_of == sorted(set(as_of))  # each minute once, in order

    bars = bars_frame(_bar_values(minutes))
    for s in stats:
        upto = bars.filter(pl.col("window_end") <= s["as_of"])
        want = pair_stats_from_bars(upto, *PAIR, _book(settings).config)
        assert want is not None and msgspec.json.decode(JSON_ENCODER.encode(want)) == s


def test_pair_book_restored_from_its_published_cursor_publishes_only_what_is_new(settings, ticks):
    minutes = _minute_bars(settings, ticks)
    first = [msgspec.json.decode(r.value) for r in _run_pairs(settings, minutes, _book(settings)).records]
    key = f"{PAIR[0]}/{PAIR[1]}"
    middle = first[len(first) // 2]["as_of"]
    again = _run_pairs(settings, minutes, _book(settings, published={key: middle}))
    assert [msgspec.json.decode(r.value) for r in again.records] == [s for s in first if s["as_of"] > middle]
