"""The one list of the platform's long-running processes.

The CLI, the supervisor, ``tickforge up``/``status``/``doctor``, the Prometheus target file and the
live view's lag badges all read this list; adding a worker is one entry here plus its module.
Plain data only: nothing here imports a worker, so reading the registry costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickforge.platform.topics import FILLS, ORDER_EVENTS, ORDERS, ORDERS_APPROVED, ORDERS_REJECTED, TICKS, bar_topic

BAR_TIMEFRAMES = ("1s", "1m", "3m", "5m", "15m")
# The bars the strategy runner trades on: every intraday bar topic but 1 s (the research universe's
# intraday timeframes are among them; a pick on another timeframe is not traded live).
STRATEGY_TIMEFRAMES = ("1m", "3m", "5m", "15m")


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # also its consumer group (after the topic prefix) and its log file's name
    command: tuple[str, ...]  # ``tickforge`` arguments that run one instance
    summary: str
    input_topics: tuple[str, ...] = ()  # unprefixed; empty for a service that consumes nothing
    metrics: bool = True  # serves Prometheus metrics (and the liveness gauge) on its metrics port
    started_by_default: bool = True  # part of ``stream start`` without --only (``tickforge up`` starts all)
    # "module:callable" building it from (settings, *command options); its result has run(exit_when_idle).
    factory: str | None = None
    # A service with a web UI: its usual port, passed as ``--port`` (a taken one becomes a free port).
    http_port: int | None = None
    health_path: str = "/"  # answers 200 on the web UI once it serves

    @property
    def consumes(self) -> bool:
        return bool(self.input_topics)

    def group_id(self, topic_prefix: str) -> str:
        return f"{topic_prefix}{self.name}"


WORKERS: tuple[WorkerSpec, ...] = (
    WorkerSpec(
        "bar-worker",
        ("stream", "bar-worker"),
        "ticks -> 10 ms bins -> 1 s bars (exactly once)",
        (TICKS,),
        factory="tickforge.streaming.bar_worker:make_worker",
    ),
    WorkerSpec(
        "timeframe-worker",
        ("stream", "timeframe-worker"),
        "1 s bars -> 1 m -> 3 m / 5 m / 15 m bars (exactly once)",
        (bar_topic("1s"),),
        factory="tickforge.streaming.timeframe_worker:make_worker",
    ),
    WorkerSpec(
        "bar-store",
        ("stream", "bar-store"),
        "closed bars -> golden tables in PostgreSQL (idempotent upserts)",
        tuple(bar_topic(tf) for tf in BAR_TIMEFRAMES),
        factory="tickforge.streaming.bar_store:BarStore",
    ),
    WorkerSpec(
        "raw-sink", ("stream", "raw-sink"), "ticks -> hourly Parquet objects in the raw bucket", (TICKS,), metrics=False
    ),
    WorkerSpec(
        "signal-worker",
        ("stream", "signal-worker"),
        "1 s bars -> one indicator signal per bar on signals.1s (exactly once)",
        (bar_topic("1s"),),
        factory="tickforge.streaming.signal_worker:make_worker",
    ),
    WorkerSpec(
        "pair-worker",
        ("stream", "pair-worker"),
        "1 m bars -> statistics of the candidate pairs on pairs.1m each minute (exactly once; one instance)",
        (bar_topic("1m"),),
        factory="tickforge.streaming.pair_worker:make_worker",
    ),
    WorkerSpec(
        "strategy-runner",
        ("stream", "strategy-runner"),
        "closed 1 m / 3 m / 5 m / 15 m bars + the day's picks -> orders, with watermark markers (exactly once)",
        tuple(bar_topic(tf) for tf in STRATEGY_TIMEFRAMES),
        factory="tickforge.streaming.strategy_runner:make_worker",
    ),
    WorkerSpec(
        "risk",
        ("stream", "risk"),
        "orders + ticks merged in event time -> orders.approved | orders.rejected with the rule (exactly once)",
        (ORDERS, TICKS),
        factory="tickforge.streaming.risk_worker:make_worker",
    ),
    WorkerSpec(
        "paper-matcher",
        ("stream", "paper-matcher"),
        "orders.approved + ticks merged in event time -> fills and order events on the paper venue (exactly once)",
        (ORDERS_APPROVED, TICKS),
        factory="tickforge.streaming.matcher_worker:make_worker",
    ),
    WorkerSpec(
        "oms-store",
        ("stream", "oms-store"),
        "orders, risk rejections, order events and fills -> the OMS tables in PostgreSQL (idempotent)",
        (ORDERS, ORDERS_REJECTED, ORDER_EVENTS, FILLS),
        factory="tickforge.streaming.oms_store:OmsStore",
    ),
    WorkerSpec(
        "dashboard",
        ("dashboard",),
        "the Streamlit live view",
        metrics=False,
        http_port=8501,
        health_path="/_stcore/health",
    ),
    # Started by ``tickforge up`` (``stream start`` leaves Dagster to the demo or to the user).
    WorkerSpec(
        "dagster",
        ("dagster-dev",),
        "dagster dev: the webserver and the daemon",
        metrics=False,
        started_by_default=False,
        http_port=3000,
        health_path="/server_info",
    ),
)

_BY_NAME = {spec.name: spec for spec in WORKERS}


def worker(name: str) -> WorkerSpec:
    """The entry called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown worker {name!r}; known: {list(_BY_NAME)}") from None


def names(default_only: bool = True) -> list[str]:
    return [spec.name for spec in WORKERS if spec.started_by_default or not default_only]


def consuming() -> list[WorkerSpec]:
    """The entries with a consumer group (the ones whose lag means something)."""
    return [spec for spec in WORKERS if spec.consumes]
