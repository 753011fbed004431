"""The baseline of bench_e2e.py: a Quix Streams application computing the same 1 s bars.

Quix Streams pins an older confluent-kafka, so it runs in its own virtualenv
(``.tickforge/quix-venv``, made on first use) as a separate process, on the same broker and the
same ticks (one JSON message per trade, as a Quix source would read them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".tickforge" / "quix-venv"

APP = r"""
import json, sys, time
from quixstreams import Application

bootstrap, source, sink, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
app = Application(broker_address=bootstrap, consumer_group=f"quix-{time.time_ns()}", auto_offset_reset="earliest",
                  processing_guarantee="exactly-once", state_dir="/tmp/quix-state-" + str(time.time_ns()))
ticks = app.topic(source, value_deserializer="json",
                  timestamp_extractor=lambda value, headers, ts, ttype: value["ts_ms"])
bars = app.topic(sink, value_serializer="json")

def initializer(t):
    return {"open": t["price"], "high": t["price"], "low": t["price"], "close": t["price"],
            "volume": t["size"], "notional": t["price"] * t["size"], "trade_count": 1}

def reducer(bar, t):
    bar["high"] = max(bar["high"], t["price"]); bar["low"] = min(bar["low"], t["price"])
    bar["close"] = t["price"]; bar["volume"] += t["size"]; bar["notional"] += t["price"] * t["size"]
    bar["trade_count"] += 1
    return bar

seen = {"n": 0, "first": None}
def count(value):
    seen["n"] += 1
    if seen["first"] is None:
        seen["first"] = time.monotonic()
    return value

sdf = app.dataframe(ticks).update(count)
sdf = sdf.tumbling_window(duration_ms=1000, grace_ms=500).reduce(reducer, initializer).final()
sdf.to_topic(bars)
started = time.monotonic()
app.run(timeout=5.0)
print(json.dumps({"ticks": seen["n"], "seconds": time.monotonic() - (seen["first"] or started) - 5.0}))
"""


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "quixstreams>=3.10"], check=True)
    return python


def run_quix_baseline(settings, trades, limit: int = 300_000) -> dict:
    """Publish ``limit`` trades as JSON, run the Quix app over them; ticks/s and bar count."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    from tickforge.platform.io.files import TickFile
    from tickforge.streaming.replay import replay

    python = ensure_venv()
    prefix = settings.kafka.topic_prefix
    source, sink = f"{prefix}quix-ticks", f"{prefix}quix-bars"
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for future in admin.create_topics([NewTopic(t, settings.kafka.partitions, 1) for t in (source, sink)]).values():
        future.result()
    sample = TickFile(trades.kind, trades.source, trades.data.head(limit), trades.dead_letters.head(0))
    json_settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_prefix": f"{prefix}quix-"})}
    )
    # replay() writes to <prefix>ticks: with the quix- prefix that is the source topic above.
    replay(json_settings, sample, encoding="json", end_marker=False)
    result = subprocess.run(
        [str(python), "-c", APP, settings.kafka.bootstrap_servers, source, sink, str(limit)],
        capture_output=True,
        text=True,
        timeout=1_800,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"count-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([sink])
    bars, idle = 0, time.monotonic()
    while time.monotonic() - idle < 3:
        msgs = [m for m in consumer.consume(10_000, timeout=0.5) if m.error() is None]
        if msgs:
            bars += len(msgs)
            idle = time.monotonic()
    consumer.close()
    return {
        "ticks": figures["ticks"],
        "ticks_per_s": round(figures["ticks"] / max(figures["seconds"], 1e-9)),
        "bars_1s": bars,
        "note": "JSON ticks, one message each; exactly-once; same broker",
    }
