"""Prometheus metrics of the workers (served when ``streaming.metrics_port`` is set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

TICKS_IN = Counter("tickforge_ticks_in_total", "Trade ticks read", ["worker"])
QUOTES_IN = Counter("tickforge_quotes_in_total", "Quote ticks read", ["worker"])
BARS_OUT = Counter("tickforge_bars_out_total", "Bars emitted", ["worker", "timeframe"])
MESSAGES_OUT = Counter("tickforge_messages_out_total", "Messages committed", ["worker"])
DEAD_LETTERS = Counter("tickforge_dead_letters_total", "Rejected input", ["reason"])
WATERMARK_LAG = Gauge(
    "tickforge_watermark_lag_ms", "Wall clock minus event-time watermark", ["worker", "partition"]
)
EMIT_LATENCY = Histogram(
    "tickforge_emit_latency_ms",
    "From the watermark passing window_end + lateness (wall clock) to the bar being emitted",
    ["worker", "timeframe"],
    buckets=(1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000),
)


def serve(port: int) -> None:
    if port:
        start_http_server(port, addr="127.0.0.1")
