"""The exactly-once runtime's bookkeeping: checkpoints and when a partition counts as idle."""

from __future__ import annotations

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.streaming.runtime import Checkpoint, _Track


class _Task:
    def __init__(self, watermark: int = NO_WATERMARK) -> None:
        self.watermark = watermark
        self.idle_limit = NO_WATERMARK


def test_checkpoint_is_the_oldest_message_still_needed():
    track = _Track(_Task(1_000), replay_until=-1, position=13)
    track.pending.extend([(10, 900, 1_500), (11, 1_000, 3_000), (12, 1_000, 2_000)])
    assert track.checkpoint() == (10, Checkpoint(lo_wm=900, hi=13, hi_wm=1_000, idle_limit=NO_WATERMARK))
    track.task.watermark = 2_000  # offset 10's window closed; 11 still holds one open
    assert track.checkpoint() == (11, Checkpoint(lo_wm=1_000, hi=13, hi_wm=2_000, idle_limit=NO_WATERMARK))
    track.task.watermark = 3_000
    assert track.checkpoint() == (13, Checkpoint(lo_wm=3_000, hi=13, hi_wm=3_000, idle_limit=NO_WATERMARK))


def test_a_partition_is_idle_only_when_caught_up_and_quiet():
    track = _Track(_Task(), replay_until=50, position=60, last_input_ms=0)
    assert not track.idle_due(10_000, 1_500), "not idle before the end of the partition was seen"
    track.at_end = True
    assert track.idle_due(10_000, 1_500)
    assert not track.idle_due(1_000, 1_500), "quiet for less than the timeout"
    track.position = 40
    assert not track.idle_due(10_000, 1_500), "still replaying what was committed before"


def test_a_checkpoint_taken_while_replaying_keeps_the_replay_end():
    """Killed again mid-replay, the next instance must still suppress everything emitted before."""
    track = _Track(_Task(1_500), replay_until=40, position=25)
    track.restoring = True
    track.restore_wm = 9_000  # the idle-advanced watermark the first instance reached at 40
    track.restore_idle_limit = 12_000
    track.pending.append((20, 1_000, 2_000))
    assert track.checkpoint() == (20, Checkpoint(lo_wm=1_000, hi=40, hi_wm=9_000, idle_limit=12_000))
    track.pending.clear()
    assert track.checkpoint() == (25, Checkpoint(lo_wm=1_500, hi=40, hi_wm=9_000, idle_limit=12_000))


# -- the loop on in-memory clients: real ticks, the real bar task ----------------------------------

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402
import pytest  # noqa: E402

from tests.integration.pipeline import assert_bars_equal, bars_frame  # noqa: E402
from tests.unit.kafka_fakes import FakeBroker  # noqa: E402
from tickforge.platform.bars.offline import build_bars  # noqa: E402
from tickforge.platform.io.files import TickFile, read_trades  # noqa: E402
from tickforge.platform.io.kafka import marker_watermark, topic_name  # noqa: E402
from tickforge.platform.settings import Settings  # noqa: E402
from tickforge.platform.topics import TICKS, bar_topic  # noqa: E402
from tickforge.streaming import runtime  # noqa: E402
from tickforge.streaming.bar_worker import NAME, BarTask  # noqa: E402
from tickforge.streaming.replay import replay  # noqa: E402
from tickforge.streaming.runtime import TransactionalWorker  # noqa: E402

PARTITIONS = 4
SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "data"
    / "samples"
    / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"
)


@pytest.fixture(scope="module")
def crypto_minutes() -> TickFile:
    """Three minutes of the Binance sample: six symbols, four of them on partition 0 (CRC32)."""
    trades = read_trades(SAMPLE)
    start = int(trades.data["ts_ms"].min())
    data = trades.data.filter(pl.col("ts_ms") < start + 180_000)
    return TickFile(trades.kind, trades.source, data, trades.dead_letters.head(0))


@pytest.fixture()
def settings(monkeypatch) -> Settings:
    monkeypatch.setenv("TICKFORGE_KAFKA__TOPIC_PREFIX", "unit.")
    monkeypatch.setenv("TICKFORGE_KAFKA__PARTITIONS", str(PARTITIONS))
    return Settings()


def _filled(settings: Settings, ticks: TickFile, chunk_rows: int = 400) -> FakeBroker:
    broker = FakeBroker(PARTITIONS)
    replay(settings, ticks, producer=broker.producer(), chunk_rows=chunk_rows)  # + the end-of-day marker
    return broker


def _worker(settings: Settings, broker: FakeBroker, instance: str = "0", **options) -> TransactionalWorker:
    worker = TransactionalWorker(
        settings,
        NAME,
        TICKS,
        lambda p, wm: BarTask(settings, p, wm),
        instance_id=instance,
        consumer_factory=broker.consumer,
        producer_factory=broker.producer,
        idle_check_ms=10**9,
        **options,
    )
    worker.consumer.subscribe(
        [worker.input_topic], on_assign=worker._on_assign, on_revoke=worker._on_revoke, on_lost=worker._on_revoke
    )
    return worker


def _turn(*workers: TransactionalWorker, times: int = 1) -> None:
    for _ in range(times):
        for w in workers:
            w.serve()
            w.step()


def _until_done(broker: FakeBroker, *workers: TransactionalWorker, limit: int = 10_000) -> None:
    """Turn the workers until every tick partition's committed offset is its end (and once more)."""
    topic = workers[0].input_topic
    group = workers[0].group_id
    for _ in range(limit):
        _turn(*workers)
        done = all(
            broker.offsets.get((group, topic, p), (0, None))[0] >= len(broker.logs.get((topic, p), []))
            for p in range(PARTITIONS)
        )
        if done and not any(w._queued for w in workers):
            return
    raise AssertionError("the workers did not get through the input")


def _bars(settings: Settings, broker: FakeBroker) -> pl.DataFrame:
    values = [m.value() for m in broker.records(topic_name(settings, bar_topic("1s"))) if marker_watermark(m) is None]
    return bars_frame(values)


def test_one_worker_on_fake_clients_equals_offline(settings, crypto_minutes):
    broker = _filled(settings, crypto_minutes)
    worker = _worker(settings, broker)
    broker.rebalance({worker.consumer: set(range(PARTITIONS))})
    _until_done(broker, worker)
    assert_bars_equal(_bars(settings, broker), build_bars(crypto_minutes, ["1s"], partitions=PARTITIONS).bars["1s"])


def test_a_killed_worker_open_transaction_is_lost_and_its_successor_is_exact(settings, crypto_minutes):
    broker = _filled(settings, crypto_minutes)
    first = _worker(settings, broker)
    broker.rebalance({first.consumer: set(range(PARTITIONS))})
    _turn(first, times=15)
    # Killed inside a transaction: what it produced there is never committed.
    first.producer.begin_transaction()
    first.producer.produce(topic_name(settings, bar_topic("1s")), b"never committed", b"X", partition=0)
    broker.members.remove(first.consumer)
    second = _worker(settings, broker, instance="0")
    broker.rebalance({second.consumer: set(range(PARTITIONS))})
    _until_done(broker, second)
    assert_bars_equal(_bars(settings, broker), build_bars(crypto_minutes, ["1s"], partitions=PARTITIONS).bars["1s"])


def test_partitions_handed_over_in_a_cooperative_rebalance_stay_exact(settings, crypto_minutes):
    broker = _filled(settings, crypto_minutes)
    a = _worker(settings, broker, "a")
    broker.rebalance({a.consumer: set(range(PARTITIONS))})
    _turn(a, times=10)
    b = _worker(settings, broker, "b")
    broker.rebalance({a.consumer: {0, 1}, b.consumer: {2, 3}})
    while set(b.by_partition) != {2, 3}:
        _turn(a, b)
    # Cooperative: the callbacks got only the partitions that moved; a keeps its own tasks.
    assert set(a.by_partition) == {0, 1} and set(b.by_partition) == {2, 3}
    kept = a.by_partition[0]
    _turn(a, b, times=5)
    assert a.by_partition[0] is kept
    _until_done(broker, a, b)
    assert_bars_equal(_bars(settings, broker), build_bars(crypto_minutes, ["1s"], partitions=PARTITIONS).bars["1s"])


def test_rebalances_are_served_while_a_backlog_is_worked_through(settings, crypto_minutes, monkeypatch):
    broker = _filled(settings, crypto_minutes, chunk_rows=50)
    a = _worker(settings, broker, "a", transaction_budget_ms=0, batch_size=500)
    broker.rebalance({a.consumer: set(range(PARTITIONS))})
    a.serve()
    assert a._queued > 100
    b = _worker(settings, broker, "b")
    broker.rebalance({a.consumer: {0, 1}, b.consumer: {2, 3}})
    started = time.monotonic()
    while set(b.by_partition) != {2, 3}:
        _turn(a, b)
        assert time.monotonic() - started < 2 * runtime.SERVE_INTERVAL_S + 1, "rebalance waited for the backlog"
    assert a._queued > 0, "the hand-over came only once the backlog was gone"
    _until_done(broker, a, b)
    assert_bars_equal(_bars(settings, broker), build_bars(crypto_minutes, ["1s"], partitions=PARTITIONS).bars["1s"])


def test_backlogs_are_taken_round_robin(settings, crypto_minutes):
    """Partition 0 (four symbols) is queued before the others; they still progress alongside it."""
    broker = _filled(settings, crypto_minutes, chunk_rows=50)
    worker = _worker(settings, broker, transaction_budget_ms=0, batch_size=2_000, slice_messages=4)
    broker.rebalance({worker.consumer: set(range(PARTITIONS))})
    worker.serve()
    counts = {p: len(t.backlog) for p, t in worker.by_partition.items()}
    assert counts[0] > 2 * counts[1] > 0, counts
    start = {p: t.position for p, t in worker.by_partition.items()}
    for _ in range(12):
        worker.step()
    moved = {p: worker.by_partition[p].position - max(start[p], 0) for p in (0, 1, 3)}
    assert moved[1] > 0 and moved[3] > 0 and moved[0] <= 2 * max(moved[1], moved[3]), moved


def test_a_restored_task_takes_the_idle_limit_of_its_checkpoint(settings, crypto_minutes):
    """Restored at the end of the data (nothing to replay), a bar task may idle no further than the
    one before it: its idle limit comes from the checkpoint, not from the restored watermark."""
    broker = _filled(settings, crypto_minutes)
    first = _worker(settings, broker)
    broker.rebalance({first.consumer: set(range(PARTITIONS))})
    _until_done(broker, first)
    limits = {p: t.task.idle_limit for p, t in first.by_partition.items()}
    broker.members.remove(first.consumer)
    second = _worker(settings, broker)
    broker.rebalance({second.consumer: set(range(PARTITIONS))})
    second.serve()
    assert {p: t.task.idle_limit for p, t in second.by_partition.items()} == limits
    # Without it the limit would count from the restored watermark (the end-of-day marker's).
    horizon = first.by_partition[0].task._downstream_horizon_ms
    assert all(limits[p] < t.task.watermark + horizon for p, t in second.by_partition.items())


def test_a_fenced_consumer_is_replaced_and_the_partitions_read_again(settings, crypto_minutes):
    """After an outage the coordinator may fence a static member (its instance id went to a new
    member id): a fatal consumer error. The worker joins again with a new consumer, exactly."""
    from confluent_kafka import KafkaError

    from tests.unit.kafka_fakes import FakeMessage

    broker = _filled(settings, crypto_minutes)
    worker = _worker(settings, broker)
    fenced = worker.consumer
    broker.rebalance({fenced: set(range(PARTITIONS))})
    _turn(worker, times=8)
    time.sleep(runtime.SERVE_INTERVAL_S)
    fenced.injected.append(
        FakeMessage("", -1, -1, None, None, None, 0, KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    )
    _turn(worker)
    assert fenced.closed and worker.consumer is not fenced and not worker.by_partition
    broker.rebalance({worker.consumer: set(range(PARTITIONS))})
    _until_done(broker, worker)
    assert_bars_equal(_bars(settings, broker), build_bars(crypto_minutes, ["1s"], partitions=PARTITIONS).bars["1s"])


def test_a_partition_with_a_full_backlog_is_paused_until_worked_down(settings, crypto_minutes):
    """Its prefetched messages would stand in the client's one queue before the other partitions'."""
    ticks = TickFile(
        crypto_minutes.kind, crypto_minutes.source, crypto_minutes.data.head(3_000), crypto_minutes.dead_letters
    )
    broker = FakeBroker(PARTITIONS)
    replay(settings, ticks, producer=broker.producer(), encoding="json")  # one message per tick
    worker = _worker(settings, broker, batch_size=2_000)
    broker.rebalance({worker.consumer: set(range(PARTITIONS))})
    worker.serve()
    assert worker.consumer.paused == {0} and worker.by_partition[0].paused
    while worker.by_partition[0].paused:
        worker.step()
        time.sleep(runtime.SERVE_INTERVAL_S)
        worker.serve()
    assert 0 not in worker.consumer.paused
    _until_done(broker, worker)
    assert_bars_equal(_bars(settings, broker), build_bars(ticks, ["1s"], partitions=PARTITIONS).bars["1s"])
