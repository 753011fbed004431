"""HTTP NDJSON tick source: for feeds that push rather than publish to Kafka.

``POST /ticks`` with one JSON tick per line (the edge ``Trade`` or ``Quote`` contract). Each valid
line is produced to the tick topic keyed by symbol (as the replay does, so it lands on the
symbol's partition); a line that is not a tick goes to the dead-letter topic with its reason. The
response says how many lines were accepted and rejected. :func:`push_file` replays a file into
such an endpoint, paced like ``stream replay``.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
from confluent_kafka import Producer

from tickforge.platform.contracts import JSON_ENCODER, DeadLetter, Quote, Trade
from tickforge.platform.io.files import TickFile
from tickforge.platform.io.kafka import make_producer, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import DEAD_LETTER, TICKS, partition_for
from tickforge.streaming import metrics
from tickforge.streaming.codec import Undecodable, decode_tick_message

log = logging.getLogger(__name__)
SOURCE = "http-ndjson"


class TickGateway:
    """Validates NDJSON lines and produces them; shared by the HTTP handler threads."""

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.producer = producer or make_producer(settings)
        self.topic = topic_name(settings, TICKS)
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self.partitions = len(self.producer.list_topics(self.topic, timeout=10).topics[self.topic].partitions)

    def ingest(self, body: bytes) -> dict[str, int]:
        accepted = rejected = 0
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                tick = decode_tick_message(line)
                if not isinstance(tick, (Trade, Quote)):
                    raise Undecodable("schema_violation", "a pushed tick is one JSON object")
            except Undecodable as exc:
                letter = DeadLetter(reason=exc.reason, source=SOURCE, payload=line.decode("utf-8", "replace"),
                                    detail=exc.detail)
                self.producer.produce(self.dead_letter_topic, JSON_ENCODER.encode(letter), SOURCE)
                metrics.DEAD_LETTERS.labels(reason=exc.reason).inc()
                rejected += 1
                continue
            # The line as sent is what goes on: the bar worker applies the value rules.
            self.producer.produce(self.topic, line, tick.symbol,
                                  partition=partition_for(tick.symbol, self.partitions))
            accepted += 1
        self.producer.flush(30)
        return {"accepted": accepted, "rejected": rejected}


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8090) -> ThreadingHTTPServer:
    """An HTTP server ready to ``serve_forever()`` (its ``server_port`` is the bound port)."""
    gateway = TickGateway(settings)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/ticks":
                self.send_error(404, "POST NDJSON ticks to /ticks")
                return
            length = int(self.headers.get("Content-Length", 0))
            result = gateway.ingest(self.rfile.read(length))
            payload = json.dumps(result).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # quiet by default
            log.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def push_file(url: str, trades: TickFile, speed: float | None = None, chunk_rows: int = 5_000) -> dict[str, int]:
    """Replay a trades file to an NDJSON endpoint in event-time order; returns the totals."""
    totals = {"accepted": 0, "rejected": 0}
    data = trades.data
    started = time.perf_counter()
    first_ts = data["ts_ms"][0] if data.height else 0
    encoder = msgspec.json.Encoder()
    for offset in range(0, data.height, chunk_rows):
        chunk = data.slice(offset, chunk_rows)
        if speed:
            wait = (chunk["ts_ms"][0] - first_ts) / speed / 1000 - (time.perf_counter() - started)
            if wait > 0:
                time.sleep(wait)
        body = b"\n".join(
            encoder.encode(Trade(ts_ms=r["ts_ms"], symbol=r["symbol"], price=r["price"], size=r["size"],
                                 trade_id=r["trade_id"]))
            for r in chunk.iter_rows(named=True)
        )
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/x-ndjson"})
        with urllib.request.urlopen(request, timeout=60) as response:
            result = json.loads(response.read())
        totals["accepted"] += result["accepted"]
        totals["rejected"] += result["rejected"]
    return totals
