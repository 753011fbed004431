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
the orders and cancels ride along. Best of ``--repeat`` runs (the machine is shared). Run:
    .venv/bin/python bench/bench_matching.py [--every-ms 1000 --cancel-after-s 60 --repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from tickforge.platform.contracts import Quote, Trade
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.trading.matching import PaperMatcher
from tickforge.trading.orders import Fill, Order, Side, TimeInForce, new_order
from tickforge.trading.stream import MarketEvent, market_events

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
Control = tuple[int, Order | tuple[str, int]]  # (send time, order | (cancel id, cancel arrival))


def load_day() -> list[MarketEvent]:
    quotes = read_quotes(SAMPLES / "us_equity_nbbo_BAC_2013-10-08.csv.gz").data
    trades = read_trades(SAMPLES / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data
    return market_events(quotes, trades, "BAC")


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
            limit = last.ask if side is Side.BUY else last.bid
            order = new_order(
                client_order_id=coid,
                strategy="bench",
                symbol="BAC",
                side=side,
                quantity=100,
                decision_ts_ms=ev.ts_ms,
                latency_ms=latency_ms,
                limit_price=limit,
                time_in_force=TimeInForce.IOC,
            )
            controls.append((ev.ts_ms, order))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-ms", type=int, default=1000)
    parser.add_argument("--cancel-after-s", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
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
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
