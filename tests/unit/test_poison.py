"""Whatever a tick message contains, the bar task turns it into bars or a dead letter with a reason.

The task runs on real Kafka ``Message`` objects (confluent-kafka builds them without a broker) and
writes into an in-memory producer, so every poison case is checked message by message, beside
the real trades around it.
"""

from __future__ import annotations

import random

import msgspec
import numpy as np
import polars as pl
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaException, Message, Producer

from tickforge.platform.bars.builder import BarBuilder, Reject
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.bars.watermark import NO_WATERMARK, Watermark
from tickforge.platform.contracts import (
    BATCH_ENCODER,
    DEAD_LETTER_DECODER,
    JSON_ENCODER,
    DeadLetter,
    Trade,
    TradeBatch,
)
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.kafka import encode_marker, marker_headers
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.streaming.bar_worker import BarTask
from tickforge.streaming.codec import Undecodable, decode_tick_message, payload_text
from tickforge.streaming.runtime import Output

NOW_MS = 1_764_633_600_000  # the arrival time stamped on test messages (2025-12-02)


class RecordingProducer:
    """What a task produced, per topic, in order (stands in for the transactional producer)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | str | None, bytes, object]] = []

    def produce(self, topic, value, key=None, partition=None, headers=None) -> None:
        self.sent.append((topic, key, value, headers))

    def poll(self, timeout: float = 0) -> int:
        return 0


@pytest.fixture(scope="module")
def trades(samples) -> pl.DataFrame:
    """2,000 consecutive real BAC and AIG trades of the demo day."""
    data = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data
    return data.filter(pl.col("symbol").is_in(["BAC", "AIG"])).slice(50_000, 2_000)


def _batch(frame: pl.DataFrame) -> TradeBatch:
    names = frame["symbol"].unique(maintain_order=True).to_list()
    index = frame["symbol"].replace_strict(names, list(range(len(names))), return_dtype=pl.Int32).to_numpy()
    return TradeBatch.from_rows(
        names, index, frame["ts_ms"].to_numpy(), frame["price"].to_numpy(), frame["size"].to_numpy()
    )


def _message(value: bytes, offset: int, headers=None, arrived_ms: int = NOW_MS) -> Message:
    return Message(
        topic="ticks",
        partition=0,
        offset=offset,
        value=value,
        headers=headers,
        timestamp=(TIMESTAMP_CREATE_TIME, arrived_ms),
    )


def _run(messages: list[Message]) -> tuple[list[DeadLetter], pl.DataFrame, BarTask]:
    """Feed the messages to one bar task; return its dead letters and 1 s bars (after a final
    end-of-day marker closed every window)."""
    settings = Settings()
    task = BarTask(settings, 0, NO_WATERMARK, emit_bins=False)
    producer = RecordingProducer()
    out = Output(producer, 0, dead_letter_topic="dead")
    end = messages[-1].offset() + 1 if messages else 0
    marker = _message(encode_marker(1381291200500), end, marker_headers())
    for msg in [*messages, marker]:
        task.process(msg, out)
        task.close(out)
    letters = [DEAD_LETTER_DECODER.decode(v) for t, _, v, _ in producer.sent if t == "dead"]
    bars = [msgspec.json.decode(v) for t, _, v, h in producer.sent if t == task.bars_topic and h is None]
    frame = pl.DataFrame(bars) if bars else pl.DataFrame()
    return letters, frame, task


def _expected(good: pl.DataFrame) -> pl.DataFrame:
    tick_file = TickFile("trades", "test", good, pl.DataFrame())
    return build_bars(tick_file, ["1s"]).bars["1s"]


def _assert_same_bars(live: pl.DataFrame, expected: pl.DataFrame) -> None:
    keys = ["symbol", "window_start"]
    cols = ["open", "high", "low", "close", "volume", "trade_count"]
    got = live.select(keys + cols).sort(keys)
    want = expected.select(keys + cols).sort(keys)
    assert got.height == want.height
    assert got.equals(want)


def test_poison_messages_are_dead_lettered_and_the_good_bars_stay_exact(trades):
    first, second = trades.slice(0, 1_000), trades.slice(1_000, 1_000)
    sound = BATCH_ENCODER.encode(_batch(second.head(10)))
    short_ts = msgspec.structs.replace(_batch(second.head(10)), ts_ms=b"\x00" * 7)
    more_ts = msgspec.structs.replace(_batch(second.head(10)), ts_ms=_batch(second.head(11)).ts_ms)
    past_symbols = msgspec.structs.replace(
        _batch(second.head(10)), symbol_idx=np.full(10, 5, np.int32).tobytes(), symbols=["BAC", "AIG"]
    )
    last = second["ts_ms"][0]
    huge_symbol = Trade(ts_ms=last, symbol="X" * 1_000_000, price=10.0, size=1.0)
    in_2030 = Trade(ts_ms=1_900_000_000_000, symbol="BAC", price=14.0, size=100.0)
    poison = [
        (BATCH_ENCODER.encode(short_ts), None, Reason.MALFORMED_BATCH),
        (BATCH_ENCODER.encode(more_ts), None, Reason.MALFORMED_BATCH),
        (BATCH_ENCODER.encode(past_symbols), None, Reason.MALFORMED_BATCH),
        (b"{not a marker", marker_headers(), Reason.UNDECODABLE),
        (JSON_ENCODER.encode(huge_symbol), None, Reason.BAD_SYMBOL),
        (JSON_ENCODER.encode(in_2030), None, Reason.FUTURE_TIMESTAMP),
        (sound[: len(sound) // 2], None, Reason.UNDECODABLE),
        (bytes(random.Random(3).randrange(256) for _ in range(300)), None, Reason.UNDECODABLE),
    ]
    messages = [_message(BATCH_ENCODER.encode(_batch(first)), 0)]
    messages += [_message(value, 1 + i, headers) for i, (value, headers, _) in enumerate(poison)]
    messages.append(_message(BATCH_ENCODER.encode(_batch(second)), len(messages)))
    letters, bars, task = _run(messages)
    assert [letter.reason for letter in letters] == [reason for _, _, reason in poison]
    assert all(len(letter.payload) < 5_000 and len(letter.symbol or "") < 100 for letter in letters)
    assert task.watermark < 1_900_000_000_000, "a future trade moved the watermark"
    _assert_same_bars(bars, _expected(trades))


def test_random_bytes_and_truncations_of_real_batches_never_escape_the_decoder(trades):
    value = BATCH_ENCODER.encode(_batch(trades.head(300)))
    rng = random.Random(11)
    cases = [value[:cut] for cut in range(0, len(value), 97)]
    for _ in range(300):
        corrupt = bytearray(value)
        for _ in range(rng.randrange(1, 8)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        cases.append(bytes(corrupt))
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2_000))) for _ in range(200)]
    decoded = 0
    for case in cases:
        try:
            tick = decode_tick_message(case)
        except Undecodable as exc:
            assert exc.reason in set(Reason)
            continue
        decoded += 1
        if isinstance(tick, TradeBatch):
            ts, price, size, _ = tick.arrays()
            names, index = tick.row_symbols()
            assert len(ts) == len(price) == len(size)
            if index is not None:
                assert len(index) == len(ts) and (len(index) == 0 or index.max() < len(names))
    assert decoded > 0  # corruptions inside the price bytes still decode: the kernel judges them


DAY_MS = 86_400_000


def test_a_tick_far_ahead_of_the_watermark_does_not_move_it():
    builder = BarBuilder(["1s"], max_event_jump_ms=DAY_MS, max_future_ms=1_000)
    ones = np.ones(3)
    assert builder.add_trades("X", np.array([1_000, 2_000], np.int64), ones[:2], ones[:2]).tolist() == [0, 0]
    jump = np.array([2_000 + DAY_MS + 1, 3_000], np.int64)
    assert builder.add_trades("X", jump, ones[:2], ones[:2]).tolist() == [Reject.FUTURE_TIMESTAMP, 0]
    assert builder.watermark == 3_000
    # Row by row within one batch: the rejected row does not raise the bound for the next ones.
    rows = np.array([4_000, 4_000 + DAY_MS + 1, 4_000 + 2 * DAY_MS], np.int64)
    assert builder.add_trades("X", rows, ones, ones).tolist() == [0, Reject.FUTURE_TIMESTAMP, Reject.FUTURE_TIMESTAMP]
    # Ahead of its arrival by more than the clock skew: future, whatever the watermark.
    ahead = np.array([5_000, 9_000], np.int64)
    codes = builder.add_trades("X", ahead, ones[:2], ones[:2], arrived_ms=5_000)
    assert codes.tolist() == [0, Reject.FUTURE_TIMESTAMP] and builder.watermark == 5_000


def test_a_new_session_or_a_live_feed_may_start_past_the_jump():
    builder = BarBuilder(["1s"], max_event_jump_ms=DAY_MS)
    one = np.ones(1)
    builder.add_trades("X", np.array([1_000], np.int64), one, one)
    builder.advance_to(DAY_MS, ends_session=True)  # a replay's end-of-day marker
    later = np.array([400 * DAY_MS], np.int64)  # the next data set, a year on
    assert builder.add_trades("X", later, one, one).tolist() == [0]
    # A live feed back after a week's outage: its ticks are stamped when they arrive.
    live = np.array([410 * DAY_MS], np.int64)
    assert builder.add_trades("X", live, one, one, arrived_ms=410 * DAY_MS + 50).tolist() == [0]


def test_only_a_live_feed_advances_by_the_wall_clock():
    now = [1_000_000_000_000]
    clock = Watermark(idle_timeout_ms=2_000, clock_ms=lambda: now[0], live_lag_ms=10_000)
    clock.observe(now[0] - 3_600_000, arrived_ms=now[0])  # a replay of an hour ago
    now[0] += 60_000
    assert clock.idle_advance() == now[0] - 60_000 - 3_600_000, "a replay moved by the wall clock"
    clock.observe(now[0] - 200, arrived_ms=now[0])  # the feed caught up: live
    now[0] += 2_500
    assert clock.idle_advance() == now[0] - 200


def test_an_output_the_client_refuses_is_dead_lettered_and_the_rest_goes_on():
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.max.bytes": 10_000})
    out = Output(producer, 0, dead_letter_topic="dead")
    with pytest.raises(KafkaException):
        producer.produce("bars", b"x" * 20_000)  # what the client does with it alone
    out.send("bars", "BAC", b"x" * 20_000)
    out.send("bars", "BAC", b"small")
    assert out.produced == 2  # the dead letter and the small bar
    producer.purge()


def test_dead_letters_and_payloads_are_bounded():
    letter = DeadLetter(reason="bad_symbol", source="t", payload="p" * 2_000_000, symbol="S" * 1_000_000)
    bounded = letter.bounded()
    assert len(bounded.payload) < 5_000 and len(bounded.symbol) < 100
    assert "2,000,000 characters" in bounded.payload
    assert payload_text(b"\xff" * 100_000).endswith("(100,000 bytes)")
    assert payload_text("é".encode() * 10_000).startswith("é")
    assert all(Reject(code).reason in set(Reason) for code in range(1, len(Reject)))
