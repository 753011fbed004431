"""Prometheus metrics of the workers (served when ``streaming.metrics_port`` is set)."""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.core import HistogramMetricFamily

TICKS_IN = Counter("tickforge_ticks_in_total", "Trade ticks read", ["worker"])
QUOTES_IN = Counter("tickforge_quotes_in_total", "Quote ticks read", ["worker"])
BARS_OUT = Counter("tickforge_bars_out_total", "Bars emitted", ["worker", "timeframe"])
MESSAGES_OUT = Counter("tickforge_messages_out_total", "Messages committed", ["worker"])
DEAD_LETTERS = Counter("tickforge_dead_letters_total", "Rejected input", ["reason"])
WATERMARK_LAG = Gauge("tickforge_watermark_lag_ms", "Wall clock minus event-time watermark", ["worker", "partition"])
# Unix time of a worker's last loop iteration: the supervisor's health signal (a loop that stops
# making progress ages it, even while the process stays alive).
WORKER_LIVENESS = Gauge(
    "tickforge_worker_liveness_seconds", "Unix time of the worker loop's last iteration", ["worker"]
)
TRANSACTIONS_ABORTED = Counter(
    "tickforge_transactions_aborted_total", "Transactions aborted and their input read again", ["worker"]
)
# The golden tables' event-time watermark per timeframe and partition: what the bar store has made
# durable up to; its age (time() minus it) is how stale the golden bars are.
GOLDEN_WATERMARK = Gauge(
    "tickforge_golden_watermark_seconds",
    "Event-time watermark recorded with the golden bars in PostgreSQL (unix seconds)",
    ["timeframe", "partition"],
)
# Seen from the worker itself: input of an assigned partition not processed yet, in messages.
CONSUMER_LAG = Gauge(
    "tickforge_consumer_lag_messages",
    "Input of an assigned partition not processed yet: its high offset minus the worker's position",
    ["worker", "partition"],
)
# The trading state a risk instance applies (TradingState.severity): 0 ACTIVE, 1 REDUCING, 2 HALTED.
TRADING_STATE = Gauge(
    "tickforge_trading_state", "Trading state of a risk instance: 0 ACTIVE, 1 REDUCING, 2 HALTED", ["worker", "account"]
)
ORDERS_DECIDED = Counter(
    "tickforge_orders_total", "Orders decided by the strategy runner (committed to orders)", ["worker", "timeframe"]
)
RISK_REJECTIONS = Counter("tickforge_risk_rejections_total", "Orders rejected by the risk layer", ["worker", "rule"])
LATENCY_BUCKETS_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000)


class WeightedHistogram:
    """A Prometheus histogram that takes many equal observations in one call.

    A transaction commits hundreds of bars that share one latency; prometheus_client's
    ``Histogram.observe`` would need a Python call per bar on the worker's hot path.
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.label_names = name, documentation, labels
        self.bounds = np.asarray(buckets, float)
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts, sum]
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe(self, labels: tuple[str, ...], value: float, count: int = 1) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [np.zeros(len(self.bounds) + 1, np.int64), 0.0])
            series[0][int(np.searchsorted(self.bounds, value, side="left"))] += count
            series[1] += value * count

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.label_names))
        with self._lock:
            for labels, (counts, total) in self._series.items():
                cumulative = np.cumsum(counts)
                buckets = [
                    (repr(float(b)) if b != int(b) else f"{b:.1f}", int(c))
                    for b, c in zip(self.bounds, cumulative, strict=False)
                ]
                buckets.append(("+Inf", int(cumulative[-1])))
                family.add_metric(list(labels), buckets, total)
        yield family


EMIT_LATENCY = WeightedHistogram(
    "tickforge_emit_latency_ms",
    "From the watermark passing window_end + lateness (wall clock) to the bar's transaction committed",
    ("worker", "timeframe"),
    LATENCY_BUCKETS_MS,
)

TRANSACTION_MS = WeightedHistogram(
    "tickforge_transaction_ms",
    "Wall time of a worker transaction's parts: processing input, and committing (flush + EndTxn)",
    ("worker", "part"),
    LATENCY_BUCKETS_MS,
)


def serve(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host)
