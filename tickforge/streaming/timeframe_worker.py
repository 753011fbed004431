"""Timeframe worker: 1 s bars -> 1 m -> 3 m / 5 m / 15 m bars, exactly once.

Windows close on the bar worker's watermark, forwarded as markers on the 1 s topic, so these bars
close at the same event time as offline and the last bars of a session close without new data.
"""

from __future__ import annotations

from confluent_kafka import Message

from tickforge.platform.bars.builder import RollupChain, SymbolTable
from tickforge.platform.bars.timeframes import timeframe_ms
from tickforge.platform.bars.watermark import NO_WATERMARK, wall_ms
from tickforge.platform.contracts import Bar
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.topics import bar_topic
from tickforge.streaming import metrics
from tickforge.streaming.codec import bar_or_dead_letter, bars_from_messages, bars_to_messages, encode_bar
from tickforge.streaming.runtime import InputDrivenTask, Output, TransactionalWorker

NAME = "timeframe-worker"
SOURCE = "1s"


class TimeframeTask(InputDrivenTask):
    def __init__(self, settings: Settings, partition: int, start_watermark: int) -> None:
        self.lateness_ms = settings.streaming.allowed_lateness_ms
        self.symbols = SymbolTable()
        self.chain = RollupChain(SOURCE, settings.streaming.timeframes, self.lateness_ms)
        self.chain.watermark = start_watermark
        self.top_ms = max((timeframe_ms(tf) for tf in self.chain.timeframes), default=1_000)
        self.topics = {tf: topic_name(settings, bar_topic(tf)) for tf in self.chain.timeframes}
        self.source = topic_name(settings, bar_topic(SOURCE))
        self.partition = partition
        self._marked = start_watermark
        self._pending: list[Bar] = []

    @property
    def watermark(self) -> int:
        return self.chain.watermark

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self._flush_pending()
            self.chain.advance_to(marker)
            return NO_WATERMARK
        bar = bar_or_dead_letter(msg, out, self.source)
        if bar is None:
            return NO_WATERMARK
        self._pending.append(bar)
        return bar.window_start - bar.window_start % self.top_ms + self.top_ms + self.lateness_ms

    def _flush_pending(self) -> None:
        if self._pending:
            self.chain.add(bars_from_messages(self._pending, self.symbols))
            self._pending = []

    def close(self, out: Output) -> None:
        self._flush_pending()
        now = wall_ms()
        for closed in self.chain.close():
            if not len(closed.bars):
                continue
            topic = self.topics[closed.timeframe]
            count = 0
            for symbol, bar in bars_to_messages(closed, self.symbols, now):
                out.send(topic, symbol, encode_bar(bar))
                count += 1
            if not out.replaying:
                metrics.BARS_OUT.labels(worker=NAME, timeframe=closed.timeframe).inc(count)
        wm = self.chain.watermark
        if wm > self._marked:
            for topic in self.topics.values():
                out.marker(topic, wm)
            if not out.replaying:
                self._marked = wm


def make_worker(settings: Settings, instance_id: str = "0") -> TransactionalWorker:
    return TransactionalWorker(
        settings,
        NAME,
        bar_topic(SOURCE),
        lambda partition, wm: TimeframeTask(settings, partition, wm),
        instance_id=instance_id,
    )
