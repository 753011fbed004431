"""The Grafana dashboard's queries against the real Prometheus: the stack's Prometheus scrapes the
bar, timeframe and bar-store workers and the strategy runner run by the supervisor (through the
target file it keeps), demo traffic goes through them, and every panel's PromQL returns data. A
worker SIGKILLed on the way is scraped again on its new metrics port and counted as a restart.

The strategy runner runs as ``tickforge up`` starts it: on each day's ``next_day_picks``, of which
there are none here, so it trades nothing (its orders rate is 0 for every timeframe, not absent).
Risk and the paper matcher run too: with no orders, the risk panels show the state in force
(ACTIVE) and zero rejections for every rule, which the risk worker reports from its start."""

from __future__ import annotations

import json
import math
import os
import signal
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.integration.pipeline import wait_until
from tickforge.platform.io.files import TickFile, read_quotes, read_trades
from tickforge.platform.io.kafka import make_producer, topic_name
from tickforge.platform.stack import LocalStack
from tickforge.platform.stack.process import any_free_port
from tickforge.platform.stack.prometheus import read_targets
from tickforge.platform.topics import TICKS, partition_for
from tickforge.streaming import registry, supervisor
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "tickforge.json"
WORKERS = ["bar-worker", "timeframe-worker", "bar-store", "strategy-runner", "risk", "paper-matcher"]
TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]
OPEN_UTC_MS = 1381239000000  # 2013-10-08 13:30 UTC, the demo day's open (09:30 New York)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def query(url: str, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def values(result: list[dict[str, Any]], label: str = "") -> dict[str, float]:
    """The finite number of each series, keyed by its ``label`` ("" without)."""
    out = {}
    for series in result:
        value = float(series["value"][1])
        if math.isfinite(value):
            out[series["metric"].get(label, "")] = value
    return out


def scraped(url: str) -> dict[str, float]:
    return {s["metric"]["service"]: float(s["value"][1]) for s in query(url, 'up{job="tickforge"}')}


@pytest.fixture
def demo_traffic(samples) -> tuple[TickFile, TickFile]:
    """The demo day's first 20 minutes of BAC and AIG trades with BAC's quotes."""
    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    quotes = read_quotes(samples / "us_equity_nbbo_BAC_2013-10-08.csv.gz")
    window = pl.col("ts_ms").is_between(OPEN_UTC_MS, OPEN_UTC_MS + 20 * 60_000, closed="left")

    def cut(ticks: TickFile, expr: pl.Expr) -> TickFile:
        return TickFile(ticks.kind, ticks.source, ticks.data.filter(expr), ticks.dead_letters.head(0))

    return cut(trades, window & pl.col("symbol").is_in(["BAC", "AIG"])), cut(quotes, window)


def test_every_dashboard_query_returns_data_from_the_real_prometheus(settings, demo_traffic) -> None:
    state_dir = Path(os.environ["TICKFORGE_STATE_DIR"])  # the supervisor's, from the settings fixture
    stack = LocalStack(
        state_dir=state_dir,
        settings=settings,
        with_prometheus=True,
        scrape_interval_s=1,
        ports={"prometheus": any_free_port(set())},
    )
    url = stack.up(["prometheus"])["prometheus"]["url"]
    try:
        pids = supervisor.start(WORKERS, state_dir=state_dir)
        wait_until(lambda: scraped(url) == dict.fromkeys(WORKERS, 1.0), 90, 1, "Prometheus scraping the workers")

        # A restart: the store comes back on another metrics port, the target file follows it.
        old_port = read_targets(state_dir)["bar-store"]
        os.kill(pids["bar-store"], signal.SIGKILL)
        wait_until(
            lambda: read_targets(state_dir).get("bar-store", old_port) != old_port,
            30,
            0.3,
            "the restarted bar store in the target file",
        )
        wait_until(lambda: scraped(url).get("bar-store") == 1.0, 60, 1, "the restarted bar store scraped")

        trades, quotes = demo_traffic
        producer = make_producer(settings)
        # Bad input as a feed may send it: one message that is no tick batch at all (a dead letter).
        producer.produce(
            topic_name(settings, TICKS),
            b"not a tick batch",
            b"BAC",
            partition=partition_for("BAC", settings.kafka.partitions),
        )
        # Paced over ~10 s, so the rates have samples while ticks flow.
        replay(settings, trades, quotes, producer=producer, rate=(trades.data.height + quotes.data.height) / 10)

        def golden_everywhere() -> bool:
            got = values(query(url, "min by (timeframe) (tickforge_golden_watermark_seconds)"), "timeframe")
            return set(got) == set(TIMEFRAMES)

        wait_until(golden_everywhere, 90, 1, "golden watermarks of every timeframe in Prometheus")

        missing: list[str] = []
        expected = dashboard_queries()

        def every_query_answers() -> bool:
            missing[:] = [f"{title}: {expr}" for title, expr in expected if not values(query(url, expr))]
            return not missing

        try:
            wait_until(every_query_answers, 30, 1, "every dashboard query answering")
        except AssertionError:
            raise AssertionError("queries without data:\n" + "\n".join(missing)) from None

        restarts = values(query(url, 'changes(process_start_time_seconds{job="tickforge"}[1h])'), "service")
        assert restarts == {"bar-store": 1.0, **{w: 0.0 for w in WORKERS if w != "bar-store"}}
        orders = values(
            query(url, 'sum by (timeframe) (tickforge_orders_total{worker="strategy-runner"})'), "timeframe"
        )
        assert orders == dict.fromkeys(registry.STRATEGY_TIMEFRAMES, 0.0)  # no picks for the day: nothing traded
        letters = values(query(url, "sum by (reason) (increase(tickforge_dead_letters_total[5m]))"), "reason")
        assert letters.keys() == {"undecodable"}
        # Every tick read and counted (more only if a transaction was aborted and its input read again).
        assert values(query(url, "sum(tickforge_ticks_in_total)"))[""] >= trades.data.height
        assert values(query(url, "sum(tickforge_quotes_in_total)"))[""] >= quotes.data.height
        bars = values(
            query(url, 'sum by (timeframe) (tickforge_bars_out_total{worker=~"bar-worker|timeframe-worker"})'),
            "timeframe",
        )
        assert set(bars) == set(TIMEFRAMES) and all(n > 0 for n in bars.values())
    finally:
        supervisor.stop(state_dir)
        stack.down()
    assert not any(entry["running"] for entry in stack.status().values())
