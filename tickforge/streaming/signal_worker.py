"""Signal worker: closed 1 s bars -> one :class:`Signal` per bar on ``signals.1s``, exactly once.

One :class:`~tickforge.platform.signals.streaming.SignalState` per input partition. The bars a
transaction reads are buffered and applied in one vectorized ``SignalState.update`` when the
runtime closes the step (numpy over all symbols at once, no Python loop per symbol per indicator),
then published keyed by symbol to the same partition number, followed by the forwarded watermark
marker, so a downstream reader sees every signal of a bar before the marker that passes it.

Recovery: indicator state depends on every bar of the symbol's session (session VWAP, the seeded
EMAs), so a bar stays *needed* (see :mod:`tickforge.streaming.runtime`) until the upstream
watermark passes the end of its session in the symbol's session time zone. The committed offset
therefore never moves past the first bar of an open session, and after a crash or a rebalance the
runtime replays the whole open session with output suppressed, which rebuilds the state exactly,
bit for bit, and the same ``seq`` numbers. The replay costs at most one session of 1 s bars
(86,400 per symbol for a 24 h market), read at ~100k bars/s. (Snapshotting the state into the
transaction would bound the replay further, but the offset metadata is limited to a few KB and a
state topic would have to be kept consistent with the checkpoint; the session replay needs no
extra storage and is exact by construction.)

Late data never reaches an indicator twice: bars are final, and a bar whose ``window_start`` is not
after its symbol's last applied bar is skipped by ``SignalState.update`` (a duplicate or a
replayed bar) and not published.

``seq`` is dense within a symbol's session and increases across sessions:
``session_day.toordinal() * SEQ_SESSION_STRIDE + n`` with ``n`` the bar's 1-based number in the
session, so a reader can both order a symbol's records and see a gap inside a session.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
from confluent_kafka import Message

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.contracts import JSON_ENCODER, Bar
from tickforge.platform.io.kafka import marker_watermark, topic_name
from tickforge.platform.settings import Settings
from tickforge.platform.signals.sessions import session_bounds, zone_for
from tickforge.platform.signals.streaming import SignalState
from tickforge.platform.topics import SIGNALS, bar_topic
from tickforge.streaming import metrics
from tickforge.streaming.codec import bar_or_dead_letter
from tickforge.streaming.runtime import InputDrivenTask, Output, TransactionalWorker

log = logging.getLogger(__name__)

NAME = "signal-worker"
SOURCE = "1s"
BAR_MS = 1_000
SEQ_SESSION_STRIDE = 1_000_000  # > bars in a session (at most 90,000 1 s bars on a 25 h day)


def session_seq_base(label: str) -> int:
    return date.fromisoformat(label).toordinal() * SEQ_SESSION_STRIDE


class SignalTask(InputDrivenTask):
    """The signal worker's state for one ``bars.1s`` partition."""

    def __init__(self, settings: Settings, partition: int, start_watermark: int) -> None:
        self.session_tz = settings.signals.session_tz()
        self.state = SignalState(self.session_tz, bar_ms=BAR_MS)
        self.partition = partition
        self.source = topic_name(settings, bar_topic(SOURCE))
        self.topic = topic_name(settings, SIGNALS)
        self._watermark = start_watermark
        self._marked = start_watermark
        self._pending: list[Bar] = []
        self._pending_replaying = False  # whether the buffered bars were read in the replay region
        # symbol -> [lo, hi) UTC span of the session of its latest bar (one zone lookup a session)
        self._session_span: dict[str, tuple[int, int]] = {}
        # symbol -> (session label, bars published in it)
        self._counts: dict[str, tuple[str, int]] = {}
        self._seq_base: dict[str, int] = {}

    @property
    def watermark(self) -> int:
        return self._watermark

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            # Signals do not depend on the watermark: bars are buffered until the step closes and
            # the marker is forwarded after their signals (see close).
            if marker > self._watermark:
                self._watermark = marker
            return NO_WATERMARK
        bar = bar_or_dead_letter(msg, out, self.source)
        if bar is None:
            return NO_WATERMARK
        if self._pending and out.replaying != self._pending_replaying:
            # Leaving the replay region: the buffered bars' signals were committed before the
            # restart, the next ones were not. Never mix the two in one flush.
            self._flush(out)
        self._pending_replaying = out.replaying
        self._pending.append(bar)
        return self._session_end(bar.symbol, bar.window_start)

    def _session_end(self, symbol: str, window_start: int) -> int:
        span = self._session_span.get(symbol)
        if span is None or not span[0] <= window_start < span[1]:
            _, lo, hi = session_bounds(window_start, zone_for(symbol, self.session_tz))
            span = self._session_span[symbol] = (lo, hi)
        return span[1]

    def close(self, out: Output) -> None:
        self._flush(out)
        if self._watermark > self._marked:
            out.marker(self.topic, self._watermark)
            if not out.replaying:
                self._marked = self._watermark

    def _flush(self, out: Output) -> None:
        """Apply the buffered bars, publishing unless they were read in the replay region."""
        if not self._pending:
            return
        with out.replayed(self._pending_replaying):
            self._apply(out)

    def _apply(self, out: Output) -> None:
        bars, self._pending = self._pending, []
        n = len(bars)
        nan = float("nan")
        batch = self.state.update(
            [b.symbol for b in bars],
            np.fromiter((b.close for b in bars), np.float64, n),
            np.fromiter((b.notional for b in bars), np.float64, n),
            np.fromiter((b.volume for b in bars), np.float64, n),
            np.fromiter((b.window_start for b in bars), np.int64, n),
            spread_bps=np.fromiter((nan if b.spread_bps is None else b.spread_bps for b in bars), np.float64, n),
            imbalance=np.fromiter((nan if b.imbalance is None else b.imbalance for b in bars), np.float64, n),
            window_ends=np.fromiter((b.window_end for b in bars), np.int64, n),
        )
        if len(batch) < n:
            log.info("stale bars skipped", extra={"worker": NAME, "partition": self.partition, "bars": n - len(batch)})
        if not len(batch):
            return
        signals = batch.to_signals(self._seqs(batch.symbol.tolist(), batch.session.tolist()), is_final=True)
        for signal in signals:
            out.send(self.topic, signal.symbol, JSON_ENCODER.encode(signal))
        if not out.replaying:
            metrics.BARS_OUT.labels(worker=NAME, timeframe=SOURCE).inc(len(signals))

    def _seqs(self, symbols: list[str], sessions: list[str]) -> list[int]:
        """Per row (in the batch's time order per symbol): the next seq of its symbol."""
        counts = self._counts
        seqs = []
        for symbol, session in zip(symbols, sessions, strict=True):
            label, count = counts.get(symbol, ("", 0))
            if label != session:
                label, count = session, 0
                self._seq_base[symbol] = session_seq_base(session)
            count += 1
            counts[symbol] = (label, count)
            seqs.append(self._seq_base[symbol] + count)
        return seqs


def make_worker(settings: Settings, instance_id: str = "0") -> TransactionalWorker:
    settings.signals.session_tz()  # fail at start on a bad configuration
    return TransactionalWorker(
        settings,
        NAME,
        bar_topic(SOURCE),
        lambda partition, wm: SignalTask(settings, partition, wm),
        instance_id=instance_id,
    )
