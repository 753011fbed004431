"""Bar worker: ticks -> 10 ms bins -> 1 s bars, exactly once.

A thin loop around :class:`~tickforge.platform.bars.builder.BarBuilder`, one per input partition.
Reads column batches or JSON edge ticks from the tick topic; writes bins (column batches), 1 s bars
(JSON) and watermark markers to the same partition number of the output topics, and rejected input
to the dead-letter topic. See :mod:`tickforge.streaming.runtime` for the transaction protocol.
"""

from __future__ import annotations

import logging

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from tickforge.platform.bars.builder import BAD_SYMBOL_CODE, MISSING_SYMBOL_CODE, BarBuilder, Reject
from tickforge.platform.bars.timeframes import BIN_TIMEFRAME, timeframe_ms
from tickforge.platform.bars.watermark import NO_WATERMARK, Watermark, wall_ms
from tickforge.platform.contracts import JSON_ENCODER, DeadLetter, Quote, QuoteBatch, Trade, TradeBatch
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import Settings
from tickforge.platform.topics import BINS, TICKS, bar_topic
from tickforge.streaming import metrics
from tickforge.streaming.codec import (
    Undecodable,
    bar_batches,
    bars_to_messages,
    dead_letter_for,
    decode_tick_message,
    encode_bar,
)
from tickforge.streaming.runtime import Output, TransactionalWorker

log = logging.getLogger(__name__)

NAME = "bar-worker"
QUOTE_HORIZON_MS = 60_000  # a restart replays this much quote history for the as-of spread
_REASONS = {code: code.reason for code in Reject}


class BarTask:
    """The bar worker's state for one tick partition."""

    def __init__(self, settings: Settings, partition: int, start_watermark: int, emit_bins: bool = True) -> None:
        streaming = settings.streaming
        self.lateness_ms = streaming.allowed_lateness_ms
        self.dedup_horizon_ms = streaming.dedup_horizon_ms
        self.builder = BarBuilder(
            [BIN_TIMEFRAME, "1s"],
            lateness_ms=self.lateness_ms,
            dedup_horizon_ms=streaming.dedup_horizon_ms,
            max_event_jump_ms=streaming.max_event_jump_ms,
            max_future_ms=streaming.max_future_ms,
            live_lag_ms=streaming.live_lag_ms,
        )
        self.builder.watermark = start_watermark
        self.clock = Watermark(streaming.idle_timeout_ms, start=start_watermark, live_lag_ms=streaming.live_lag_ms)
        self.max_symbol_length = streaming.max_symbol_length
        self.partition = partition
        self.emit_bins = emit_bins
        self.bins_topic = topic_name(settings, BINS)
        self.bars_topic = topic_name(settings, bar_topic("1s"))
        self.source = topic_name(settings, TICKS)
        self._marked = start_watermark
        # (watermark, wall ms) each time the watermark moved since the last close: the moment a
        # window's end + lateness was passed, for the emit-latency metric.
        self._steps_wm: list[int] = []
        self._steps_at: list[int] = []
        # Idle advance stops once the longest configured timeframe has closed downstream.
        self._downstream_horizon_ms = max(timeframe_ms(tf) for tf in streaming.timeframes) + self.lateness_ms
        self._idle_limit = (
            start_watermark + self._downstream_horizon_ms if start_watermark > NO_WATERMARK else NO_WATERMARK
        )
        self._idle_marked_at = 0

    @property
    def watermark(self) -> int:
        return self.builder.watermark

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            # A marker ends a session, so only its arrival bounds it (a replay of an earlier
            # day ends where the next data set's marker says, however far ahead).
            if marker > _arrival_ms(msg) + self.builder.max_future_ms:
                out.dead_letter(
                    dead_letter_for(msg, Reason.FUTURE_TIMESTAMP, self.source, "watermark marker", ts_ms=marker)
                )
            else:
                self._advance(marker, ends_session=True)
            return NO_WATERMARK
        try:
            tick = decode_tick_message(msg.value())
        except Undecodable as exc:
            out.dead_letter(dead_letter_for(msg, exc.reason, self.source, exc.detail))
            return NO_WATERMARK
        if isinstance(tick, TradeBatch):
            ts, price, size, ids = tick.arrays()
            names, index = tick.row_symbols()
            return self._trades(msg, out, names, index, ts, price, size, ids, batch=True)
        if isinstance(tick, Trade):
            ids = None if tick.trade_id is None else np.array([tick.trade_id], np.int64)
            return self._trades(
                msg,
                out,
                [tick.symbol],
                None,
                np.array([tick.ts_ms], np.int64),
                np.array([tick.price]),
                np.array([tick.size]),
                ids,
                batch=False,
            )
        if isinstance(tick, QuoteBatch):
            ts, bid, ask, bid_size, ask_size = tick.arrays()
            symbol = tick.symbol
        else:
            assert isinstance(tick, Quote)
            ts = np.array([tick.ts_ms], np.int64)
            bid, ask = np.array([tick.bid]), np.array([tick.ask])
            nan = float("nan")
            bid_size = np.array([nan if tick.bid_size is None else tick.bid_size])
            ask_size = np.array([nan if tick.ask_size is None else tick.ask_size])
            symbol = tick.symbol
        metrics.QUOTES_IN.labels(worker=NAME).inc(len(ts))
        self.builder.add_quotes(symbol, ts, bid, ask, bid_size, ask_size)
        return int(ts.max()) + QUOTE_HORIZON_MS if len(ts) else NO_WATERMARK

    def _trades(
        self,
        msg: Message,
        out: Output,
        names: list[str],
        index: np.ndarray | None,
        ts: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        ids: np.ndarray | None,
        batch: bool,
    ) -> int:
        """Fold one message's trades; dead-letter the rejected rows; return how long it is needed."""
        metrics.TICKS_IN.labels(worker=NAME).inc(len(ts))
        before = self.builder.watermark
        codes_of = np.array([self._symbol_code(n) for n in names], np.int32)
        sym = np.full(len(ts), codes_of[0], np.int32) if index is None else codes_of[index]
        # The arrival time (the message's Kafka timestamp) bounds event time and tells a live feed
        # from a replay; being part of the input, a restart's replay decides exactly the same.
        arrived = _arrival_ms(msg)
        codes = self.builder.add_trade_columns(sym, ts, price, size, ids, arrived_ms=arrived)
        if self.builder.watermark > before:
            self.clock.observe(self.builder.watermark, arrived)
            self._moved(self.builder.watermark)
            self._idle_limit = self.builder.watermark + self._downstream_horizon_ms
        rejected = np.flatnonzero(codes)
        for row in rejected.tolist():
            reason = _REASONS[Reject(int(codes[row]))]
            symbol = names[0] if index is None else names[index[row]]
            letter = (
                dead_letter_for(msg, reason, self.source, symbol=symbol or None, ts_ms=int(ts[row]))
                if not batch
                else DeadLetter(
                    reason=reason,
                    source=self.source,
                    payload=_tick_json(symbol, ts, price, size, ids, row),
                    symbol=symbol or None,
                    ts_ms=int(ts[row]),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    detail=f"row {row} of a batch",
                )
            )
            out.dead_letter(letter)
        accepted = codes == 0
        needed = NO_WATERMARK
        if accepted.any():
            # Needed until its last 1 s window closes.
            needed = int(ts[accepted].max()) // 1_000 * 1_000 + 1_000 + self.lateness_ms
        if ids is not None:
            # And while its trade ids are remembered for duplicate detection (the builder keeps an
            # id until the watermark passes its time + the horizon): a restart replays them too,
            # so a repeat of an id seen before the restart is still a duplicate, not late.
            remembered = (accepted | (codes == Reject.LATE)) & (ids >= 0)
            if remembered.any():
                needed = max(needed, int(ts[remembered].max()) + self.dedup_horizon_ms + 1)
        return needed

    def _symbol_code(self, name: str) -> int:
        if not name:
            return MISSING_SYMBOL_CODE
        if len(name) > self.max_symbol_length:
            return BAD_SYMBOL_CODE
        return self.builder.symbols.code(name)

    def _advance(self, watermark: int, ends_session: bool = False) -> None:
        moved = watermark > self.builder.watermark
        self.builder.advance_to(watermark, ends_session=ends_session)
        if moved:
            self.clock.advance_to(watermark)
            self._moved(watermark)

    @property
    def idle_limit(self) -> int:
        return self._idle_limit

    @property
    def accepting(self) -> bool:
        return True  # it holds nothing back

    def restore(self, watermark: int, idle_limit: int | None, out: Output) -> None:
        """After a restart's replay: the idle-advanced watermark the checkpoint recorded (its
        windows were emitted then; ``out`` is replaying, so closing them now emits nothing), and
        the idle limit, which depends on trades before the replay (a task restored past the end
        of a session must not idle beyond it)."""
        self._advance(watermark)
        self.close(out, measure=False)
        self._marked = max(self._marked, watermark)
        if idle_limit is not None:
            self._idle_limit = idle_limit

    def idle(self, out: Output) -> None:
        """Advance with the wall clock, at most once a second, until every window any timeframe
        downstream may still hold open has closed (then a quiet stream costs nothing)."""
        if self.builder.watermark >= self._idle_limit or wall_ms() - self._idle_marked_at < 1_000:
            return
        wm = min(self.clock.idle_advance(), self._idle_limit)
        if wm > self.builder.watermark:
            log.info(
                "idle advance",
                extra={"partition": self.partition, "from": self.builder.watermark, "to": wm},
            )
            self.builder.advance_to(wm)
            self._idle_marked_at = wall_ms()
            self.close(out, measure=False)

    def _moved(self, watermark: int) -> None:
        self._steps_wm.append(watermark)
        self._steps_at.append(wall_ms())

    def _observe_latency(self, out: Output, timeframe: str, bars) -> None:
        """Per closed bar: when did the watermark first pass its window_end + lateness?"""
        if not self._steps_wm:
            return
        due = bars.start + timeframe_ms(timeframe) + self.lateness_ms
        step = np.searchsorted(np.asarray(self._steps_wm), due, side="left")
        step = step[step < len(self._steps_wm)]
        at = np.asarray(self._steps_at)[step]
        for passed_at, count in zip(*np.unique(at, return_counts=True), strict=True):
            out.latencies.append((NAME, timeframe, int(passed_at), int(count)))

    def close(self, out: Output, measure: bool = True) -> None:
        now = wall_ms()
        for closed in self.builder.close():
            if not len(closed.bars):
                continue
            if closed.timeframe == BIN_TIMEFRAME:
                if self.emit_bins:
                    for symbol, value in bar_batches(closed, self.builder.symbols):
                        out.send(self.bins_topic, symbol, value)
                continue
            count = 0
            for symbol, bar in bars_to_messages(closed, self.builder.symbols, now):
                out.send(self.bars_topic, symbol, encode_bar(bar))
                count += 1
            if not out.replaying:
                metrics.BARS_OUT.labels(worker=NAME, timeframe=closed.timeframe).inc(count)
                if measure:
                    self._observe_latency(out, closed.timeframe, closed.bars)
        self._steps_wm.clear()
        self._steps_at.clear()
        wm = self.builder.watermark
        if wm > self._marked and wm != NO_WATERMARK:
            out.marker(self.bars_topic, wm)
            if self.emit_bins:
                out.marker(self.bins_topic, wm)
            if not out.replaying:
                self._marked = wm
            metrics.WATERMARK_LAG.labels(worker=NAME, partition=str(self.partition)).set(now - wm)


def _arrival_ms(msg: Message) -> int:
    """When the message reached Kafka (its timestamp), or now where it carries none."""
    kind, ts = msg.timestamp()
    return ts if kind != TIMESTAMP_NOT_AVAILABLE and ts > 0 else wall_ms()


def _tick_json(
    symbol: str, ts: np.ndarray, price: np.ndarray, size: np.ndarray, ids: np.ndarray | None, row: int
) -> str:
    """One row of a column batch as the edge JSON, for its dead letter."""
    tid = None if ids is None or ids[row] < 0 else int(ids[row])
    trade = Trade(ts_ms=int(ts[row]), symbol=symbol, price=float(price[row]), size=float(size[row]), trade_id=tid)
    return JSON_ENCODER.encode(trade).decode()


def make_worker(settings: Settings, instance_id: str = "0", emit_bins: bool = True) -> TransactionalWorker:
    return TransactionalWorker(
        settings,
        NAME,
        TICKS,
        lambda partition, wm: BarTask(settings, partition, wm, emit_bins=emit_bins),
        instance_id=instance_id,
    )
