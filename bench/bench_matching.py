"""Paper matcher benchmark; prints one JSON object.

The real BAC day of 2013-10-08 (NBBO quotes and BAC prints from data/samples, read with the
platform's file readers) with a stream of paper orders, through
(a) ``tickforge.trading.matching.PaperMatcher`` and
(b) a plain per-event Python loop baseline in the same run: a naive dict-based matcher that looks
    at every open order on every event (takes at the opposite best, fills resting orders from
    prints at or through their limit; no queue position, no latency heap).

Order stream (built once from the quotes, the same for both): every ``--every-ms`` of event time
one order is decided, cycling through a marketable IOC 100-lot, a DAY limit joining the best on
its side, and DAY limits 1-4 ticks behind it; each DAY order is canceled ``--cancel-after-s``
later. Latency ``--latency-ms`` from decision to arrival. Events/s counts market events only;
the orders and cancels ride along. Best of ``--repeat`` runs (the machine is shared).

Then decision-to-fill latency through Kafka (``--kafka-seconds``, 0 skips it): on the local stack's
broker (started if needed, topics of a prefix of their own) the ``risk`` and ``paper-matcher``
workers run as processes, as ``tickforge stream`` runs them, while this process plays a live
feed and a strategy runner at once, in real time from 10:00 New York: the stretch's BAC quotes
and prints go to ``ticks`` in 10 ms batches, and every ``--kafka-order-every-ms`` a marketable IOC
100-lot (buy and sell in turn) goes to ``orders``, with watermark markers every 100 ms as the
runner sends them. A read_committed consumer takes the wall time each order's approval and fill
become visible; latency is that minus the order's send. Percentiles over the orders filled, with
the feed's own gap (decision to the first tick after arrival, which an event-time merge must
wait for) and what the two workers add beyond it. Run:
    .venv/bin/python bench/bench_matching.py [--every-ms 1000 --cancel-after-s 60 --repeat 3]
        [--kafka-seconds 60 --kafka-order-every-ms 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tickforge.platform.contracts import CONTENT_TYPE_BATCH, CONTENT_TYPE_HEADER, Quote, Trade
from tickforge.platform.io.files import TickFile, read_quotes, read_trades
from tickforge.platform.io.kafka import apply_topics, encode_marker, make_producer, marker_headers, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack, endpoints_env
from tickforge.platform.topics import FILLS, ORDERS, ORDERS_APPROVED, ORDERS_REJECTED, TICKS, partition_for
from tickforge.streaming.order_messages import OrderMessage, encode_order_message
from tickforge.streaming.replay import batch_messages, merged_ticks
from tickforge.trading.limits import Bucket
from tickforge.trading.matching import PaperMatcher
from tickforge.trading.orders import Fill, Order, Side, TimeInForce, new_order
from tickforge.trading.stream import MarketEvent, market_events

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
Control = tuple[int, Order | tuple[str, int]]  # (send time, order | (cancel id, cancel arrival))


def load_day() -> list[MarketEvent]:
    quotes = read_quotes(SAMPLES / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    trades = read_trades(SAMPLES / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data
    return market_events(quotes, trades, "BAC")


def marketable_ioc(coid: str, side: Side, at_ms: int, bid: float, ask: float, latency_ms: int) -> Order:
    """A BAC 100-lot IOC limit at the opposite best: it takes what is displayed there."""
    return new_order(
        client_order_id=coid,
        strategy="bench",
        symbol="BAC",
        side=side,
        quantity=100,
        decision_ts_ms=at_ms,
        latency_ms=latency_ms,
        limit_price=ask if side is Side.BUY else bid,
        time_in_force=TimeInForce.IOC,
    )


def order_stream(events: list[MarketEvent], every_ms: int, cancel_after_ms: int, latency_ms: int) -> list[Control]:
    controls: list[Control] = []
    last: Quote | None = None
    next_ms = events[0].ts_ms
    n = 0
    for ev in events:
        if isinstance(ev, Quote):
            last = ev
        if ev.ts_ms < next_ms or last is None or not (last.bid < last.ask):
            continue
        next_ms = ev.ts_ms + every_ms
        n += 1
        side = Side.BUY if n % 2 else Side.SELL
        kind = n % 6  # 0: marketable IOC; 1: join the best; 2-5: 1-4 ticks behind it
        coid = f"b{n}"
        if kind == 0:
            controls.append((ev.ts_ms, marketable_ioc(coid, side, ev.ts_ms, last.bid, last.ask, latency_ms)))
            continue
        behind = (kind - 1) * 0.01
        limit = round(last.bid - behind, 2) if side is Side.BUY else round(last.ask + behind, 2)
        order = new_order(
            client_order_id=coid,
            strategy="bench",
            symbol="BAC",
            side=side,
            quantity=100 * kind,
            decision_ts_ms=ev.ts_ms,
            latency_ms=latency_ms,
            limit_price=limit,
        )
        controls.append((ev.ts_ms, order))
        cancel_ms = ev.ts_ms + cancel_after_ms
        controls.append((cancel_ms, (coid, cancel_ms + latency_ms)))
    controls.sort(key=lambda c: c[0])
    return controls


def run_kernel(events: list[MarketEvent], controls: list[Control]) -> list:
    matcher = PaperMatcher()
    out: list = []
    i, n = 0, len(controls)
    for ev in events:
        while i < n and controls[i][0] <= ev.ts_ms:
            item = controls[i][1]
            out += matcher.submit(item) if isinstance(item, Order) else matcher.cancel(*item)
            i += 1
        out += matcher.on_quote(ev) if isinstance(ev, Quote) else matcher.on_trade(ev)
    out += matcher.end_session(events[-1].ts_ms)
    return out


class NaiveMatcher:
    """Baseline: open orders in a dict, every event scans all of them."""

    def __init__(self) -> None:
        self.orders: dict[str, list] = {}  # id -> [order, remaining, seen_by_book]
        self.bid = self.ask = self.bid_size = self.ask_size = None

    def submit(self, order: Order) -> None:
        self.orders[order.client_order_id] = [order, order.quantity, False]

    def cancel(self, coid: str, at_ms: int) -> None:
        self.orders.pop(coid, None)

    def on_event(self, ev: MarketEvent) -> list[Fill]:
        fills: list[Fill] = []
        if isinstance(ev, Quote):
            self.bid, self.ask, self.bid_size, self.ask_size = ev.bid, ev.ask, ev.bid_size, ev.ask_size
        for coid, entry in list(self.orders.items()):
            order, remaining = entry[0], entry[1]
            if order.arrival_ts_ms > ev.ts_ms:
                continue
            buy = order.side is Side.BUY
            qty, price = 0.0, 0.0
            if isinstance(ev, Quote):
                if not (self.bid < self.ask):
                    continue
                best, size = (self.ask, self.ask_size) if buy else (self.bid, self.bid_size)
                if order.limit_price is None or (order.limit_price >= best if buy else order.limit_price <= best):
                    qty, price = min(remaining, size), best
                elif order.time_in_force is TimeInForce.IOC:
                    del self.orders[coid]
                    continue
            elif isinstance(ev, Trade) and order.time_in_force is TimeInForce.DAY:
                if buy and ev.price <= order.limit_price or not buy and ev.price >= order.limit_price:
                    qty, price = min(remaining, ev.size), order.limit_price
            if qty > 0:
                fills.append(Fill(f"{coid}.n{len(fills)}", coid, "BAC", order.side, ev.ts_ms, price, qty, "taker"))
                entry[1] = remaining - qty
                if entry[1] <= 0 or order.time_in_force is TimeInForce.IOC:
                    del self.orders[coid]
        return fills


def run_naive(events: list[MarketEvent], controls: list[Control]) -> list:
    matcher = NaiveMatcher()
    out: list = []
    i, n = 0, len(controls)
    for ev in events:
        while i < n and controls[i][0] <= ev.ts_ms:
            item = controls[i][1]
            if isinstance(item, Order):
                matcher.submit(item)
            else:
                matcher.cancel(*item)
            i += 1
        out += matcher.on_event(ev)
    return out


def best_of(repeat: int, fn: Callable[[], list]) -> tuple[float, list]:
    best, result = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def summary(seconds: float, events: int, out: list) -> dict:
    fills = [e for e in out if isinstance(e, Fill)]
    return {
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "fills": len(fills),
        "filled_shares": sum(f.quantity for f in fills),
        "taker_fills": sum(1 for f in fills if str(f.liquidity) == "taker"),
    }


# ---------------------------------------------------------------- decision to fill through Kafka

NY_10AM = 1381240800000  # 2013-10-08 10:00 New York
BATCH_MS = 10  # a feed's batching of the ticks
MARKER_EVERY_MS = 100  # the runner's marker cadence on ``orders``
Scheduled = tuple[int, int, str, bytes | None, list | None]  # (event ms, rank, topic, value, headers)


def feed_schedule(
    quotes: TickFile, trades: TickFile, start_ms: int, seconds: float, order_every_ms: int, latency_ms: int
) -> tuple[list[Scheduled], dict[str, int]]:
    """What a live BAC feed and a runner send over ``[start_ms, start_ms + seconds)``: the
    replay's tick batches of each ``BATCH_MS`` of event time, marketable IOC orders at the
    opposite best, and markers on ``orders``. Also, by order id, the event time from its decision
    to the feed's first tick after its arrival: an event-time merge cannot know the quote in force
    at the arrival before then, so no pipeline fills faster in wall time."""
    end_ms = start_ms + int(seconds * 1000)

    def stretch(file: TickFile) -> TickFile:
        window = pl.col("ts_ms").is_between(start_ms, end_ms, closed="left")
        return dataclasses.replace(file, data=file.data.filter(pl.col("symbol") == "BAC", window))

    ticks = merged_ticks(stretch(trades), stretch(quotes))
    batch_headers = [(CONTENT_TYPE_HEADER, CONTENT_TYPE_BATCH.encode())]
    out: list[Scheduled] = []
    for (_,), chunk in ticks.group_by(pl.col("ts_ms") // BATCH_MS, maintain_order=True):
        sent_at = int(chunk["ts_ms"].max())  # sent when its last tick has happened
        out += [(sent_at, 0, TICKS, value, batch_headers) for _, _, value in batch_messages(chunk, lambda _: 0)]
    decided: dict[str, int] = {}  # order id -> event ms from its decision to the first tick after its arrival
    tick_ts = ticks["ts_ms"].to_numpy()
    book = ticks.filter(pl.col("bid").is_not_null()).select("ts_ms", "bid", "ask").rows()
    i, last = 0, None
    for n, at in enumerate(range(start_ms + order_every_ms, end_ms - 2000, order_every_ms), 1):
        while i < len(book) and book[i][0] <= at:
            last, i = book[i], i + 1
        if last is None or not last[1] < last[2]:
            continue
        side = Side.BUY if n % 2 else Side.SELL
        coid = f"latency-{n}"
        order = marketable_ioc(coid, side, at, last[1], last[2], latency_ms)
        message = OrderMessage(order, Bucket.LOW, float(order.limit_price or 0.0), {"timeframe": "1s"})
        out.append((at, 1, ORDERS, encode_order_message(message), None))
        after = int(np.searchsorted(tick_ts, at + latency_ms, side="right"))
        if after < len(tick_ts):
            decided[coid] = int(tick_ts[after]) - at
    for at in range(start_ms, end_ms + MARKER_EVERY_MS, MARKER_EVERY_MS):
        out.append((at, 2, ORDERS, encode_marker(at), marker_headers()))
    out.sort(key=lambda s: (s[0], s[1]))
    return out, decided


class Visible(threading.Thread):
    """The wall time each order's approval, rejection and first fill become visible (read_committed)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"bench-latency-{time.time_ns()}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 5,
            }
        )
        self.topics = {topic_name(settings, t): t for t in (ORDERS_APPROVED, ORDERS_REJECTED, FILLS)}
        self.consumer.subscribe(list(self.topics))
        self.seen: dict[str, dict[str, float]] = {t: {} for t in self.topics.values()}
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            for msg in self.consumer.consume(1000, timeout=0.05):
                if msg.error() or msg.headers():
                    continue
                now = time.perf_counter()
                coid = msgspec.json.decode(msg.value())["client_order_id"]
                self.seen[self.topics[msg.topic()]].setdefault(coid, now)
        self.consumer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "count": len(values),
        **{f"p{q}": round(float(np.percentile(arr, q)), 1) for q in (50, 90, 99)},
        "max": round(float(arr.max()), 1),
    }


def _serving(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def kafka_latency(seconds: float, order_every_ms: int, latency_ms: int) -> dict:
    status = LocalStack().up(["kafka"])
    os.environ.update(endpoints_env(status))
    os.environ["TICKFORGE_KAFKA__TOPIC_PREFIX"] = f"benchmatch{int(time.time())}."
    os.environ["TICKFORGE_KAFKA__PARTITIONS"] = "1"
    settings = Settings()
    apply_topics(settings)
    quotes = read_quotes(SAMPLES / "us_equity_nbbo_BAC_2013-10-08.csv.gz")
    trades = read_trades(SAMPLES / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    schedule, decided = feed_schedule(quotes, trades, NY_10AM, seconds, order_every_ms, latency_ms)
    workers = []
    for name in ("risk", "paper-matcher"):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickforge.cli", "stream", name],
            env={**os.environ, "TICKFORGE_STREAMING__METRICS_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        workers.append((proc, port))
    visible = Visible(settings)
    visible.start()
    producer = make_producer(settings, **{"linger.ms": 0})
    partition = partition_for("BAC", 1, settings.kafka.pinned_symbols)
    sent: dict[str, float] = {}
    try:
        for proc, port in workers:
            if not _serving(port, 60):
                raise RuntimeError(f"worker {proc.args[-1]} did not start")
        time.sleep(5)  # group join and the transactional producers' init, after the metrics come up
        names = {t: topic_name(settings, t) for t in (TICKS, ORDERS)}
        first = schedule[0][0]
        began = time.perf_counter()
        for at, rank, topic, value, headers in schedule:
            wait = (at - first) / 1000 - (time.perf_counter() - began)
            if wait > 0:
                time.sleep(wait)
            key = None if headers and rank == 2 else b"BAC"
            producer.produce(names[topic], value, key, partition=partition, headers=headers)
            producer.poll(0)
            if rank == 1:
                sent[msgspec.json.decode(value or b"")["client_order_id"]] = time.perf_counter()
        producer.flush(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(visible.seen[FILLS]) + len(visible.seen[ORDERS_REJECTED]) < len(
            decided
        ):
            time.sleep(0.2)
    finally:
        for proc, _ in workers:
            proc.terminate()
        for proc, _ in workers:
            proc.wait(30)
        visible.stop = True
        visible.join(10)
    fills, approved = visible.seen[FILLS], visible.seen[ORDERS_APPROVED]
    return {
        "stretch": f"BAC 2013-10-08 from 10:00 New York, {seconds:g} s in real time",
        "orders": len(decided),
        "approved": len(approved),
        "rejected": len(visible.seen[ORDERS_REJECTED]),
        "filled": len(fills),
        "simulated_venue_latency_ms": latency_ms,
        "decision_to_fill_ms": _percentiles([(fills[c] - sent[c]) * 1000 for c in fills if c in sent]),
        "decision_to_approval_ms": _percentiles([(approved[c] - sent[c]) * 1000 for c in approved if c in sent]),
        "approval_to_fill_ms": _percentiles([(fills[c] - approved[c]) * 1000 for c in fills if c in approved]),
        "feed_gap_ms": _percentiles([float(decided[c]) for c in fills]),
        "beyond_feed_gap_ms": _percentiles([(fills[c] - sent[c]) * 1000 - decided[c] for c in fills if c in sent]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-ms", type=int, default=1000)
    parser.add_argument("--cancel-after-s", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kafka-seconds", type=float, default=60.0, help="real-time stretch through Kafka; 0 skips")
    parser.add_argument("--kafka-order-every-ms", type=int, default=1000)
    args = parser.parse_args()
    events = load_day()
    controls = order_stream(events, args.every_ms, int(args.cancel_after_s * 1000), args.latency_ms)
    orders = sum(1 for _, c in controls if isinstance(c, Order))
    kernel_s, kernel_out = best_of(args.repeat, lambda: run_kernel(events, controls))
    naive_s, naive_out = best_of(args.repeat, lambda: run_naive(events, controls))
    result = {
        "bench": "matching",
        "data": "BAC 2013-10-08: NBBO quotes + BAC prints (data/samples)",
        "market_events": len(events),
        "quotes": sum(1 for e in events if isinstance(e, Quote)),
        "trades": sum(1 for e in events if isinstance(e, Trade)),
        "orders": orders,
        "cancels": len(controls) - orders,
        "every_ms": args.every_ms,
        "cancel_after_s": args.cancel_after_s,
        "latency_ms": args.latency_ms,
        "repeat": args.repeat,
        "kernel": summary(kernel_s, len(events), kernel_out),
        "naive_loop_baseline": summary(naive_s, len(events), naive_out),
        "speedup_vs_baseline": round(naive_s / kernel_s, 2),
        **(
            {"through_kafka": kafka_latency(args.kafka_seconds, args.kafka_order_every_ms, args.latency_ms)}
            if args.kafka_seconds > 0
            else {}
        ),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
