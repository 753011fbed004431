"""The risk and paper-matcher tasks on fake Kafka messages (no broker), each fed through the
event-time merge of its two inputs as the worker runs it: what they emit for each input, dead
letters for bad input, control commands and limits reloaded between messages, suppressed output
while replaying, and a restarted task that rebuilds its state from the day's replayed input and
then decides exactly as the uninterrupted one.

Market data are the real BAC quotes and prints of 2013-10-08 from the repository's samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import msgspec
import numpy as np
import polars as pl
import pytest

from tests.unit.kafka_fakes import FakeBroker, FakeMessage, FakeProducer
from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import BATCH_ENCODER, QuoteBatch
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.platform.io.kafka import encode_marker, marker_headers, marker_watermark
from tickforge.platform.topics import FILLS, ORDER_EVENTS, ORDERS_APPROVED, ORDERS_REJECTED
from tickforge.streaming.matcher_worker import MatcherTask
from tickforge.streaming.merge import InputPort, Junction, MergedTask
from tickforge.streaming.order_messages import OrderMessage, encode_order_message
from tickforge.streaming.risk_worker import RiskTask
from tickforge.streaming.runtime import Output, ProducerClient
from tickforge.trading.control import ControlCommand
from tickforge.trading.io import LimitsFile
from tickforge.trading.limits import Bucket
from tickforge.trading.orders import new_order

OPEN = 1381239000000  # 2013-10-08 09:30 New York
CLOSE = 1381262400000  # 16:00


def _msg(value: bytes | None, topic: str = "orders", offset: int = 0, headers: list | None = None) -> FakeMessage:
    return FakeMessage(topic, 0, offset, None, value, headers, 0)


class _Merged:
    """A task behind the merge of its two inputs, fed message by message as the runtime does."""

    def __init__(self, task: MergedTask, first: str, second: str) -> None:
        self.task = task
        self.junction = Junction([first, second], task)
        self.ports = {topic: InputPort(self.junction, topic, NO_WATERMARK) for topic in (first, second)}

    def process(self, msg: FakeMessage, out: Output) -> int:
        port = self.ports[cast(str, msg.topic())]
        needed = port.process(msg, out)
        port.close(out)
        return needed

    def flush(self, ts_ms: int, out: Output) -> None:
        """Markers at ``ts_ms`` on both inputs: everything stamped before it is applied."""
        for topic, port in self.ports.items():
            port.process(_msg(encode_marker(ts_ms), topic, 0, marker_headers()), out)

    def watermark(self, topic: str) -> int:
        return self.ports[topic].watermark


def _producer() -> FakeProducer:
    """A plain (not transactional) producer of the shared fake broker: what it sends is in its log."""
    return FakeBroker(1).producer()


def _topics(producer: FakeProducer) -> list[str]:
    return [topic for (topic, _), log in sorted(producer.broker.logs.items()) if log]


def _out(producer: FakeProducer, replaying: bool = False) -> Output:
    # the shared fake's produce takes its value positionally, as the runtime calls it
    return Output(cast(ProducerClient, producer), 0, replaying=replaying, dead_letter_topic="dead-letter")


def _sent(producer: FakeProducer, topic: str) -> list[dict]:
    """The data records sent to ``topic`` (its watermark markers left out)."""
    return [
        msgspec.json.decode(m.value() or b"") for m in producer.broker.records(topic) if marker_watermark(m) is None
    ]


def _markers(producer: FakeProducer, topic: str) -> list[int]:
    return [w for m in producer.broker.records(topic) if (w := marker_watermark(m)) is not None]


def _order(
    n: int,
    side: str = "buy",
    qty: float = 100,
    ts: int = OPEN + 300_000,
    limit: float | None = None,
    ref: float = 13.89,
    bucket: str = "LOW",
) -> FakeMessage:
    order = new_order(
        client_order_id=f"ema-BAC-{n}",
        strategy="ema_cross",
        symbol="BAC",
        side=side,
        quantity=qty,
        decision_ts_ms=ts,
        latency_ms=5,
        limit_price=limit,
    )
    return _msg(
        encode_order_message(OrderMessage(order, Bucket(bucket), ref, {"weight": 0.25, "timeframe": "1m"})), offset=n
    )


LIMITS = """\
capital: 100000
bucket_shares: {LOW: 0.4, MED: 0.3, HIGH: 0.2}
max_order_notional: 50000
max_order_quantity: 2000
max_position: 3000
daily_loss_limit: 5000
max_drawdown: 0.1
"""


@pytest.fixture()
def limits(tmp_path: Path) -> LimitsFile:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    return LimitsFile(path)


@pytest.fixture(scope="module")
def bac_open_quote(samples: Path) -> FakeMessage:
    """BAC's first two-sided quote of the 2013-10-08 session: the reference price of the orders."""
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    row = quotes.filter((pl.col("ts_ms") >= OPEN) & (pl.col("bid") < pl.col("ask"))).row(0, named=True)
    assert row["ts_ms"] < OPEN + 60_000
    return _quote_msg(row, 0)


def _risk(limits: LimitsFile, control: list, quote: FakeMessage | None = None, out: Output | None = None) -> _Merged:
    """Risk behind its merge; with ``quote``: that quote applied, and the ticks' watermark at the
    close, so each order is checked as it comes."""
    merged = _Merged(
        RiskTask(
            "orders",
            "ticks",
            ORDERS_APPROVED,
            ORDERS_REJECTED,
            limits,
            lambda: control[-1] if control else None,
            reload_every_s=0.0,
        ),
        "orders",
        "ticks",
    )
    if quote is not None:
        assert out is not None
        merged.process(quote, out)
        merged.process(_msg(encode_marker(CLOSE), "ticks", 1, marker_headers()), out)
    return merged


def test_risk_task_approves_rejects_and_follows_control_and_limits(limits, bac_open_quote):
    control: list[ControlCommand] = []
    producer = _producer()
    out = _out(producer)
    task = _risk(limits, control, bac_open_quote, out)
    assert task.process(_order(1), out) == 1381291200000  # needed until the next New York midnight
    assert task.process(_order(2, qty=2500), out) > 0
    assert task.process(_order(1), out) > 0  # a redelivered order: nothing new
    approved, rejected = _sent(producer, ORDERS_APPROVED), _sent(producer, ORDERS_REJECTED)
    assert [a["client_order_id"] for a in approved] == ["ema-BAC-1"] and approved[0]["weight"] == 0.25
    assert [(r["client_order_id"], r["rule"]) for r in rejected] == [("ema-BAC-2", "max_quantity")]
    assert task.watermark("orders") == OPEN + 300_000

    control.append(ControlCommand("halt", "desk says stop", "alice", 1))
    task.process(_order(3), out)
    control.append(ControlCommand("reduce", "wind down", "alice", 2))
    task.process(_order(4), out)  # adds to the long: refused while reducing
    task.process(_order(5, side="sell", qty=100), out)  # reduces the (assumed filled) 100 long: passes
    control.append(ControlCommand("resume", "clear", "alice", 3))
    task.process(_order(6), out)
    rules = {r["client_order_id"]: r["rule"] for r in _sent(producer, ORDERS_REJECTED)}
    assert rules["ema-BAC-3"] == "trading_halted" and rules["ema-BAC-4"] == "trading_reducing"
    assert {a["client_order_id"] for a in _sent(producer, ORDERS_APPROVED)} == {"ema-BAC-1", "ema-BAC-5", "ema-BAC-6"}

    # tighter limits in the file apply to the next order; a bad file leaves them in force
    os.utime(limits.path, ns=(1, 1))
    limits.path.write_text(LIMITS.replace("max_order_quantity: 2000", "max_order_quantity: 50"))
    task.process(_order(7), out)
    limits.path.write_text(LIMITS.replace("max_order_quantity: 2000", "max_order_quantity: many"))
    task.process(_order(8, qty=60), out)
    rules = {r["client_order_id"]: r["rule"] for r in _sent(producer, ORDERS_REJECTED)}
    assert rules["ema-BAC-7"] == rules["ema-BAC-8"] == "max_quantity"
    assert "max_order_quantity" in limits.last_error

    task.process(_msg(b'{"client_order_id": "x"}', offset=9), out)
    task.process(_msg(b"\xff", offset=10), out)
    assert [d["reason"] for d in _sent(producer, "dead-letter")] == ["schema_violation", "undecodable"]


def test_a_restarted_risk_task_rebuilds_the_day_and_decides_the_same(limits, bac_open_quote):
    day = [_order(i, qty=900, ts=OPEN + 60_000 * i) for i in range(1, 5)]  # the 4th would pass max_position 3000
    producer = _producer()
    whole = _risk(limits, [], bac_open_quote, _out(producer))
    for m in day:
        whole.process(m, _out(producer))
    decided = [(d.client_order_id, d.approved, d.rule) for d in whole.task.decisions]
    assert decided[-1] == ("ema-BAC-4", False, "max_position")

    again = _producer()
    restarted = _risk(limits, [], bac_open_quote, _out(again, replaying=True))
    for m in day[:3]:  # committed before the crash: replayed silently
        restarted.process(m, _out(again, replaying=True))
    restarted.process(day[3], _out(again))
    assert [(d.client_order_id, d.approved, d.rule) for d in restarted.task.decisions] == decided
    assert not _sent(again, ORDERS_APPROVED) and len(_sent(again, ORDERS_REJECTED)) == 1  # only the new one
    # the next New York day starts flat, and with no quote of its own yet: no reference price
    restarted.process(_order(9, qty=1000, ts=OPEN + 86_400_000), _out(again))
    restarted.process(_msg(encode_marker(CLOSE + 86_400_000), "ticks", 2, marker_headers()), _out(again))
    assert restarted.task.decisions[-1].rule == "no_reference_price"
    assert restarted.task.engine.ledger.net_quantity("BAC") == 0


@pytest.fixture(scope="module")
def bac(samples: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    window = (OPEN + 600_000, OPEN + 660_000)  # 09:40-09:41
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data
    pick = pl.col("ts_ms").is_between(*window, closed="left")
    return quotes.filter(pick & (pl.col("symbol") == "BAC")), trades.filter(pick & (pl.col("symbol") == "BAC"))


def _quote_msg(row: dict, n: int) -> FakeMessage:
    return _msg(
        msgspec.json.encode({k: row[k] for k in ("ts_ms", "symbol", "bid", "ask", "bid_size", "ask_size")}), "ticks", n
    )


def _matcher() -> _Merged:
    return _Merged(MatcherTask(ORDERS_APPROVED, "ticks", FILLS, ORDER_EVENTS), ORDERS_APPROVED, "ticks")


def test_matcher_task_fills_a_marketable_order_at_the_prevailing_ask(bac):
    quotes, _ = bac
    rows = quotes.filter(pl.col("bid") < pl.col("ask")).head(3).to_dicts()
    task, producer = _matcher(), _producer()
    out = _out(producer)
    task.process(_quote_msg(rows[0], 0), out)
    big = rows[0]["ask_size"] + 500
    order = new_order(
        client_order_id="ema-BAC-m",
        strategy="ema_cross",
        symbol="BAC",
        side="buy",
        quantity=big,
        decision_ts_ms=rows[0]["ts_ms"],
        latency_ms=0,
    )
    assert (
        task.process(
            _msg(encode_order_message(OrderMessage(order, Bucket.LOW, rows[0]["ask"], {})), ORDERS_APPROVED, 1), out
        )
        == 1381291200000
    )
    task.process(_quote_msg(rows[1], 2), out)
    task.flush(rows[1]["ts_ms"] + 1, out)
    fills = _sent(producer, FILLS)
    assert fills and fills[0]["price"] == rows[0]["ask"] and fills[0]["liquidity"] == "taker"
    assert fills[0]["quantity"] <= rows[0]["ask_size"]
    assert _sent(producer, ORDER_EVENTS)[0]["event"] == "accepted"


def test_matcher_task_on_column_batches_and_prints_then_expiry_at_the_close(bac):
    quotes, trades = bac
    task, producer = _matcher(), _producer()
    out = _out(producer)
    first = quotes.filter(pl.col("bid") < pl.col("ask")).row(0, named=True)
    head = quotes.filter(pl.col("ts_ms") <= first["ts_ms"])
    batch = QuoteBatch.from_arrays(
        "BAC",
        head["ts_ms"].to_numpy(),
        head["bid"].to_numpy(),
        head["ask"].to_numpy(),
        head["bid_size"].fill_null(np.nan).to_numpy(),
        head["ask_size"].fill_null(np.nan).to_numpy(),
    )
    task.process(_msg(BATCH_ENCODER.encode(batch), "ticks", 0), out)
    # a resting buy at the bid joins behind the 41,000 shares displayed there; prints at its price
    # consume that queue first, then fill it (hand-computed from the prints below)
    assert (first["bid"], first["bid_size"]) == (13.81, 41000.0)
    order = new_order(
        client_order_id="orb-BAC-r",
        strategy="orb_breakout",
        symbol="BAC",
        side="buy",
        quantity=100,
        decision_ts_ms=first["ts_ms"],
        latency_ms=0,
        limit_price=13.81,
    )
    task.process(_msg(encode_order_message(OrderMessage(order, Bucket.LOW, first["bid"], {})), ORDERS_APPROVED, 1), out)
    later = trades.filter(pl.col("ts_ms") > first["ts_ms"])
    for i, row in enumerate(later.to_dicts()):
        task.process(
            _msg(msgspec.json.encode({k: row[k] for k in ("ts_ms", "symbol", "price", "size")}), "ticks", 2 + i), out
        )
    task.flush(int(later["ts_ms"].max()) + 1, out)
    at_bid = later.filter(pl.col("price") == 13.81).with_columns(cum=pl.col("size").cum_sum())
    first_fill = at_bid.filter(pl.col("cum") > 41_000)["ts_ms"][0]
    last_fill = at_bid.filter(pl.col("cum") >= 41_100)["ts_ms"][0]
    fills = _sent(producer, FILLS)
    assert sum(f["quantity"] for f in fills) == 100
    assert all(f["price"] == 13.81 and f["liquidity"] == "maker" for f in fills)
    assert (fills[0]["ts_ms"], fills[-1]["ts_ms"]) == (first_fill, last_fill)
    below = new_order(
        client_order_id="orb-BAC-low",
        strategy="orb_breakout",
        symbol="BAC",
        side="buy",
        quantity=100,
        decision_ts_ms=int(later["ts_ms"].max()),
        latency_ms=0,
        limit_price=13.80,
    )
    task.process(_msg(encode_order_message(OrderMessage(below, Bucket.LOW, 13.81, {})), ORDERS_APPROVED, 9_999), out)
    task.flush(CLOSE + 1, out)
    events = [(e["client_order_id"], e["event"]) for e in _sent(producer, ORDER_EVENTS)]
    # the filled order has nothing more; the one no print reached expires at the close
    assert events == [("orb-BAC-r", "accepted"), ("orb-BAC-low", "accepted"), ("orb-BAC-low", "expired")]
    task.process(_msg(b"not a tick", "ticks", 10_001), out)
    assert [d["reason"] for d in _sent(producer, "dead-letter")] == ["undecodable"]


def test_an_order_of_an_older_day_is_a_dead_letter_and_keeps_the_new_day(limits):
    """Orders of the next New York day, then a redelivered order of the day before: dead-lettered
    as late; the new day's engine (its positions) goes on as if it had not come."""
    next_day = OPEN + 86_400_000
    producer = _producer()
    task = _risk(limits, [])
    task.process(_msg(encode_marker(next_day + 86_400_000), "ticks", 0, marker_headers()), _out(producer))
    for i in range(1, 4):
        task.process(_order(i, qty=900, ts=next_day + 60_000 * i), _out(producer))
    engine = task.task.engine
    task.process(_order(50, qty=10, ts=OPEN + 60_000), _out(producer))
    [letter] = _sent(producer, "dead-letter")
    assert letter["reason"] == "late" and "ema-BAC-50" in letter["detail"]
    task.process(_order(4, qty=900, ts=next_day + 240_000), _out(producer))
    assert task.task.engine is engine and len(task.task.decisions) == 4
    assert "ema-BAC-50" not in {d.client_order_id for d in task.task.decisions}


def _order_msg(
    coid: str,
    symbol: str,
    side: str,
    qty: float,
    decided: int,
    offset: int,
    latency_ms: int = 0,
    limit: float | None = None,
) -> FakeMessage:
    order = new_order(
        client_order_id=coid,
        strategy="orb_breakout",
        symbol=symbol,
        side=side,
        quantity=qty,
        decision_ts_ms=decided,
        latency_ms=latency_ms,
        limit_price=limit,
    )
    return _msg(encode_order_message(OrderMessage(order, Bucket.LOW, limit or 0.0, {})), ORDERS_APPROVED, offset)


def _events(producer: FakeProducer) -> list[tuple[str, str, str | None]]:
    return [(e["client_order_id"], e["event"], e["reason"]) for e in _sent(producer, ORDER_EVENTS)]


def test_a_us_equity_session_ends_at_the_close_late_orders_are_rejected(samples):
    """BAC's last regular-session quotes, then its after-hours ones: a resting buy expires when the
    session ends, the sell decided at the bell reaches the closing book, an order decided after
    the close is rejected, and nothing fills on the after-hours quotes."""
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    regular = quotes.filter(
        pl.col("ts_ms").is_between(CLOSE - 5_000, CLOSE, closed="left") & (pl.col("bid") < pl.col("ask"))
    )
    after = quotes.filter(pl.col("ts_ms") >= CLOSE).head(20)
    task, producer = _matcher(), _producer()
    out = _out(producer)
    for i, row in enumerate(regular.to_dicts()):
        task.process(_quote_msg(row, i), out)
    last = regular.row(-1, named=True)
    task.process(_order_msg("rest", "BAC", "buy", 100, last["ts_ms"], 1_000, limit=round(last["bid"] - 0.05, 2)), out)
    task.process(_order_msg("bell", "BAC", "sell", 100, CLOSE, 1_001, latency_ms=5), out)
    for i, row in enumerate(after.to_dicts()):
        task.process(_quote_msg(row, 2_000 + i), out)
    task.process(_order_msg("late", "BAC", "buy", 100, CLOSE + 60_000, 3_000, latency_ms=5), out)
    assert _events(producer) == [
        ("rest", "accepted", None),
        ("bell", "accepted", None),
        ("rest", "expired", None),
        ("late", "rejected", "session_closed"),
    ]
    [fill] = _sent(producer, FILLS)
    assert (fill["client_order_id"], fill["price"], fill["ts_ms"]) == ("bell", last["bid"], CLOSE + 5)
    assert [d["reason"] for d in _sent(producer, "dead-letter")] == []


def test_a_crypto_session_is_the_utc_day_and_a_new_day_expires_the_old_one(samples):
    """BTCUSDT-SPOT trades its UTC calendar day (after the US close too): a marketable buy at 23:55
    fills; the first quote after UTC midnight ends the day (its resting order expires, a terminal
    event); a redelivered order of the old day is then a dead letter and the new day's resting
    order survives it (it expires at the new day's end)."""
    midnight = 1723161600000  # 2024-08-09 00:00 UTC
    quotes = read_quotes(samples / "crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz").data
    btc = quotes.filter((pl.col("symbol") == "BTCUSDT-SPOT") & (pl.col("bid") < pl.col("ask")))
    old = btc.filter(pl.col("ts_ms").is_between(midnight - 300_000, midnight - 299_000)).to_dicts()
    new = btc.filter(pl.col("ts_ms").is_between(midnight, midnight + 1_000)).to_dicts()
    task, producer = _matcher(), _producer()
    out = _out(producer)
    task.process(_quote_msg(old[0], 0), out)
    task.process(_order_msg("buy", "BTCUSDT-SPOT", "buy", 0.001, old[0]["ts_ms"], 1, latency_ms=5), out)
    task.process(_order_msg("rest-old", "BTCUSDT-SPOT", "buy", 0.001, old[0]["ts_ms"], 2, limit=50_000.0), out)
    for i, row in enumerate(old[1:]):
        task.process(_quote_msg(row, 10 + i), out)
    task.flush(old[-1]["ts_ms"] + 1, out)
    assert [f["client_order_id"] for f in _sent(producer, FILLS)] == ["buy"]
    task.process(_quote_msg(new[0], 1_000), out)
    task.process(_order_msg("rest-new", "BTCUSDT-SPOT", "buy", 0.001, new[0]["ts_ms"], 1_001, limit=50_000.0), out)
    task.process(_order_msg("stale", "BTCUSDT-SPOT", "buy", 0.001, midnight - 60_000, 1_002, limit=50_000.0), out)
    task.process(_quote_msg(old[-1], 1_003), out)  # an old quote after the new day began
    task.flush(midnight + 86_400_000 + 1, out)
    assert [d["reason"] for d in _sent(producer, "dead-letter")] == ["late", "late"]
    assert _events(producer) == [
        ("rest-old", "accepted", None),
        ("buy", "accepted", None),
        ("rest-old", "expired", None),
        ("rest-new", "accepted", None),
        ("rest-new", "expired", None),
    ]
    expired = {e["client_order_id"]: e["ts_ms"] for e in _sent(producer, ORDER_EVENTS) if e["event"] == "expired"}
    assert expired == {"rest-old": midnight, "rest-new": midnight + 86_400_000}


def test_the_workers_read_the_research_tables_without_the_dagster_room():
    """The strategy runner's picks from PostgreSQL and the paper tasks import no Dagster definitions
    (a fresh interpreter; reading the picks needs no database until a day is asked for)."""
    code = (
        "import sys; import tickforge.streaming.risk_worker, tickforge.streaming.matcher_worker; from tickforge.platform.settings import Settings; "
        "from tickforge.streaming.strategy_runner import postgres_picks; postgres_picks(Settings()); "
        "print(sorted(m for m in sys.modules if m.startswith('tickforge.defs') or m == 'dagster'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
