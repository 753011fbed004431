"""The event-time merge of co-partitioned inputs: one order whatever the arrival interleaving, held
input never committed past, bounded holding, and a replay that emits only what was not emitted.

The items are the real BAC quotes and prints of 2013-10-08 09:40 from the repository's samples,
one edge message each."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import msgspec
import polars as pl
import pytest

from tests.unit.kafka_fakes import FakeBroker, FakeMessage
from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.platform.io.kafka import encode_marker, marker_headers
from tickforge.streaming import merge
from tickforge.streaming.merge import InputPort, Junction
from tickforge.streaming.runtime import Output, ProducerClient

START = 1381239600000  # 2013-10-08 09:40 New York
DAY_END = 1381291200000  # the next New York midnight


class _Recorder:
    """A MergedTask that records what it is given, and emits one record per item."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, int]] = []  # topic, effective time, the item's own time
        self.frontiers: list[int] = []

    def decode(self, topic: str, msg: Any) -> list[tuple[int, Any]]:
        row = msgspec.json.decode(msg.value())
        return [(row["ts_ms"], row)]

    def retain_until(self, topic: str, ts_ms: int, item: Any) -> int:
        return DAY_END

    def on_item(self, topic: str, ts_ms: int, item: Any, msg: Any, out: Output) -> None:
        self.items.append((topic, ts_ms, item["ts_ms"]))
        out.send("merged", None, msgspec.json.encode([topic, item["ts_ms"]]))

    def on_frontier(self, frontier_ms: int, out: Output) -> None:
        self.frontiers.append(frontier_ms)

    def close(self, out: Output) -> None:
        pass


@pytest.fixture(scope="module")
def inputs(samples: Path) -> dict[str, list[FakeMessage]]:
    pick = pl.col("ts_ms").is_between(START, START + 30_000, closed="left") & (pl.col("symbol") == "BAC")
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data.filter(pick)
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data.filter(pick)
    assert quotes.height > 50 and trades.height > 20
    return {
        "quotes": [
            FakeMessage("quotes", 0, i, None, msgspec.json.encode({"ts_ms": t}), None, 0)
            for i, t in enumerate(quotes["ts_ms"])
        ],
        "trades": [
            FakeMessage("trades", 0, i, None, msgspec.json.encode({"ts_ms": t}), None, 0)
            for i, t in enumerate(trades["ts_ms"])
        ],
    }


def _end(topic: str, offset: int) -> FakeMessage:
    return FakeMessage(topic, 0, offset, None, encode_marker(DAY_END), marker_headers(), 0)


def _out(replaying: bool = False) -> Output:
    return Output(cast(ProducerClient, FakeBroker(1).producer()), 0, replaying=replaying)


def _run(inputs: dict[str, list[FakeMessage]], seed: int) -> _Recorder:
    """Both inputs (each in its own order, as a partition is) interleaved at random, then ended."""
    task = _Recorder()
    junction = Junction(["quotes", "trades"], task)
    ports = {topic: InputPort(junction, topic, NO_WATERMARK) for topic in inputs}
    queues = {topic: [*msgs, _end(topic, len(msgs))] for topic, msgs in inputs.items()}
    rng = random.Random(seed)
    out = _out()
    while any(queues.values()):
        topic = rng.choice([t for t, q in queues.items() if q])
        ports[topic].process(queues[topic].pop(0), out)
    return task


def test_the_merged_order_is_the_same_whatever_the_arrival_interleaving(inputs):
    runs = [_run(inputs, seed).items for seed in range(5)]
    assert all(run == runs[0] for run in runs)
    merged = runs[0]
    assert len(merged) == len(inputs["quotes"]) + len(inputs["trades"])
    # nondecreasing effective time; at the same millisecond the first input (quotes) goes first
    keys = [(ts, topic != "quotes") for topic, ts, _ in merged]
    assert keys == sorted(keys)
    # each input's own order is kept; an item stamped below its input's watermark counts at it
    for topic in inputs:
        own = [(eff, ts) for t, eff, ts in merged if t == topic]
        assert [ts for _, ts in own] == [msgspec.json.decode(m.value())["ts_ms"] for m in inputs[topic]]
        assert all(eff >= ts for eff, ts in own)


def test_held_input_keeps_the_watermark_and_is_bounded(inputs, monkeypatch):
    """Quotes run ahead while no print has come: they are held, their port's watermark (what the
    runtime commits by) stays below their retention, and past the bound the port takes no more."""
    monkeypatch.setattr(merge, "HOLD_MAX", 10)
    task = _Recorder()
    junction = Junction(["quotes", "trades"], task)
    quotes, trades = InputPort(junction, "quotes", NO_WATERMARK), InputPort(junction, "trades", NO_WATERMARK)
    out = _out()
    needed = [quotes.process(m, out) for m in inputs["quotes"][:12]]
    assert task.items == [] and all(n == DAY_END for n in needed)
    assert quotes.watermark < DAY_END and not quotes.accepting and trades.accepting
    trades.process(_end("trades", 0), out)
    assert len(task.items) == 12 and quotes.accepting
    assert task.frontiers[-1] == msgspec.json.decode(inputs["quotes"][11].value())["ts_ms"]


def test_a_replay_emits_only_what_the_committed_run_had_not(inputs):
    """A run committed after some quotes and a print (quotes past the print still held, so never
    emitted), then a restart that replays that input silently and goes on: the output of the two
    runs together is the uninterrupted run's, each record once."""
    committed = [("quotes", m) for m in inputs["quotes"][:20]] + [("trades", inputs["trades"][0])]
    rest = [("trades", m) for m in inputs["trades"][1:]] + [
        ("trades", _end("trades", 999)),
        ("quotes", _end("quotes", 999)),
    ]

    def feed(steps: list[tuple[str, FakeMessage, bool]]) -> list[Any]:
        broker = FakeBroker(1)
        producer = cast(ProducerClient, broker.producer())
        junction = Junction(["quotes", "trades"], _Recorder())
        ports = {topic: InputPort(junction, topic, NO_WATERMARK) for topic in ("quotes", "trades")}
        for topic, msg, replaying in steps:
            ports[topic].process(msg, Output(producer, 0, replaying=replaying))
        return [msgspec.json.decode(m.value() or b"") for m in broker.records("merged")]

    whole = feed([(t, m, False) for t, m in committed + rest])
    before = feed([(t, m, False) for t, m in committed])
    after = feed([(t, m, True) for t, m in committed] + [(t, m, False) for t, m in rest])
    held = len(inputs["quotes"][:20]) + 1 - len(before)
    assert before and held > 0  # the crash came with released and held input
    assert before + after == whole
