"""A producer fenced because its coordinator timed out a stalled transaction is not another instance.

On a loaded machine the loop can stall past the transaction timeout more than once in a while; each
time the coordinator aborts the transaction and bumps the epoch, and librdkafka reports the next
EndTxn as a fatal _FENCED. The worker must re-initialise and rewind every time (exact output), and
exit only for a fence that a stall does not explain (a young transaction: another process holds
the transactional id).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.integration.pipeline import assert_bars_equal
from tests.unit import test_runtime as base
from tests.unit.kafka_fakes import FakeBroker, FakeProducer
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.settings import Settings
from tickforge.platform.topics import TICKS
from tickforge.streaming import runtime
from tickforge.streaming.bar_worker import NAME, BarTask
from tickforge.streaming.runtime import TransactionalWorker

STALL_S = 0.05
PARTITIONS = base.PARTITIONS
settings = base.settings  # the runtime tests' fixtures: unit settings, three minutes of Binance ticks
crypto_minutes = base.crypto_minutes


@dataclass
class _Fences:
    """Commit attempts (counted over every producer of the broker) at which the coordinator fences."""

    at: set[int]
    stall: bool
    attempts: int = 0
    fenced: list[int] = field(default_factory=list)


@dataclass
class _FencingProducer(FakeProducer):
    fences: _Fences = field(default_factory=lambda: _Fences(set(), True))

    def commit_transaction(self, timeout: float) -> None:
        self.fences.attempts += 1
        if self.fences.attempts in self.fences.at:
            if self.fences.stall:
                time.sleep(STALL_S)  # the loop stalled past the transaction timeout
            self.fences.fenced.append(self.fences.attempts)
            self._end()  # the coordinator aborted it: nothing of it is visible
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))
        super().commit_transaction(timeout)


def _worker(s: Settings, broker: FakeBroker, fences: _Fences) -> TransactionalWorker:
    def producer(_: Any = None, transactional_id: str | None = None, **config: Any) -> _FencingProducer:
        return _FencingProducer(broker, transactional_id, fences=fences)

    worker = TransactionalWorker(
        s,
        NAME,
        TICKS,
        lambda p, wm: BarTask(s, p, wm),
        consumer_factory=broker.consumer,
        producer_factory=producer,
        idle_check_ms=10**9,
    )
    worker.consumer.subscribe(
        [worker.input_topic], on_assign=worker._on_assign, on_revoke=worker._on_revoke, on_lost=worker._on_revoke
    )
    return worker


@pytest.fixture()
def short_timeout(monkeypatch):
    monkeypatch.setattr(runtime, "TRANSACTION_TIMEOUT_MS", int(STALL_S * 1000) // 2)


def test_stalls_past_the_transaction_timeout_re_initialise_every_time_and_stay_exact(
    settings,
    crypto_minutes,
    short_timeout,
):
    broker = base._filled(settings, crypto_minutes)
    fences = _Fences(at={5, 9, 14}, stall=True)  # three stalls within seconds, as under heavy load
    worker = _worker(settings, broker, fences)
    broker.rebalance({worker.consumer: set(range(PARTITIONS))})
    base._until_done(broker, worker)
    assert fences.fenced == [5, 9, 14]
    assert_bars_equal(
        base._bars(settings, broker), build_bars(crypto_minutes, ["1s"], partitions=PARTITIONS).bars["1s"]
    )


def test_a_young_transaction_fenced_twice_means_another_instance_and_exits(
    settings,
    crypto_minutes,
    short_timeout,
):
    broker = base._filled(settings, crypto_minutes)
    fences = _Fences(at={5, 9}, stall=False)
    worker = _worker(settings, broker, fences)
    broker.rebalance({worker.consumer: set(range(PARTITIONS))})
    with pytest.raises(KafkaException):
        base._until_done(broker, worker)
    assert fences.fenced == [5, 9]
