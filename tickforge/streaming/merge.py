"""Co-partitioned inputs merged in event time: one task over partition ``p`` of several topics.

A worker that needs two streams in event order (the paper matcher: approved orders and market
ticks; risk: orders and quotes) reads partition ``p`` of each (the topics are keyed and partitioned
alike, by symbol) and hands their items to one :class:`MergedTask` in a single order that depends
on the inputs alone, never on when their messages arrived: a replay after a restart or a
rebalance rebuilds exactly the state the task had, and so decides exactly what it decided.

The rule (a k-way merge held back by watermarks):

- Each input has a watermark: the highest event time it has shown (its items' times, or a
  marker's). An item stamped below its input's watermark counts at the watermark (its *effective*
  time), so every input is in nondecreasing effective time.
- Items go to the task in (effective time, input rank, arrival) order. The smallest waiting item
  goes once every other input either has a larger item waiting or has a watermark past it (at its
  time, a lower-ranked input may still send one: it must be past it; a higher-ranked input need
  only have reached it).
- So an input that is ahead is held until the others catch up: a quiet input must forward its
  watermark as markers (the strategy runner and risk do), or the others wait for it. What is held
  is bounded: an input holding ``HOLD_MAX`` items takes no more messages until some are released
  (the runtime leaves its messages in the broker meanwhile).

Each input partition is an :class:`InputPort` (a ``PartitionTask`` for the runtime, with its own
checkpoint): a message stays needed (the committed offset stays at or before it) until its items
were released and their state is no longer needed (``retain_until``, e.g. the end of the trading
day). Whatever a release emits is emitted inside the transaction of the message that made it
possible, and suppressed exactly when that message is a replayed one: its output was committed.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Message

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.platform.io.kafka import marker_watermark
from tickforge.streaming.codec import Undecodable, dead_letter_for
from tickforge.streaming.runtime import Output, PartitionTask

# Items one input may hold before it takes no more messages (a column batch is one message of
# many items, so a port may go past this by one message).
HOLD_MAX = 50_000


class MergedTask(Protocol):
    """A kernel's state for one partition of several inputs, fed in merged event-time order."""

    def decode(self, topic: str, msg: Message) -> Sequence[tuple[int, Any]]:
        """A data message's items with their event times, in input order; raises
        :class:`~tickforge.streaming.codec.Undecodable` for a message that cannot be read."""
        ...

    def retain_until(self, topic: str, ts_ms: int, item: Any) -> int:
        """The watermark (of the item's input) at which the item's effect on the state is no
        longer needed: a restart must replay it while the watermark is below this."""
        ...

    def on_item(self, topic: str, ts_ms: int, item: Any, msg: Message, out: Output) -> None:
        """Apply one item (``ts_ms`` its effective time; ``msg`` the message that carried it)."""
        ...

    def on_frontier(self, frontier_ms: int, out: Output) -> None:
        """Every input has reached ``frontier_ms`` and every item stamped before it was applied."""
        ...

    def close(self, out: Output) -> None:
        """End of a transaction's work on the partition (forward a watermark marker, say)."""
        ...


@dataclass(order=True)
class _Held:
    ts_ms: int
    rank: int
    seq: int
    item: Any = field(compare=False)
    retain: int = field(compare=False)
    msg: Message = field(compare=False)


class Junction:
    """The merge of one partition's inputs into one :class:`MergedTask`."""

    def __init__(self, inputs: Sequence[str], task: MergedTask) -> None:
        if len(set(inputs)) != len(inputs) or len(inputs) < 2:
            raise ValueError(f"a merge needs two or more distinct inputs, not {list(inputs)}")
        self.inputs = tuple(inputs)
        self.task = task
        self.ports: dict[str, InputPort] = {}
        self._rank = {topic: i for i, topic in enumerate(self.inputs)}
        self._held: dict[str, deque[_Held]] = {topic: deque() for topic in self.inputs}
        # The retentions of what each input holds, counted: a few distinct day ends, so the least
        # is found without a pass over every held item (the runtime reads it per message).
        self._retains: dict[str, Counter[int]] = {topic: Counter() for topic in self.inputs}
        self._watermark: dict[str, int] = {topic: NO_WATERMARK for topic in self.inputs}
        self._seq = 0
        self._frontier = NO_WATERMARK

    # -- what the ports report ----------------------------------------------------------------
    def watermark(self, topic: str) -> int:
        """The input's watermark, kept below the retention of the oldest item it still holds (so
        the runtime never commits past a message whose items were not applied)."""
        wm = self._watermark[topic]
        retains = self._retains[topic]
        return min(wm, min(retains) - 1) if retains else wm

    def holding(self, topic: str) -> int:
        return len(self._held[topic])

    @property
    def frontier(self) -> int:
        """The event time every input has reached."""
        return self._frontier

    # -- input ------------------------------------------------------------------------------
    def start(self, topic: str, watermark: int) -> None:
        self._watermark[topic] = max(self._watermark[topic], watermark)

    def advance(self, topic: str, watermark: int, out: Output) -> None:
        """A marker: the input shows nothing below ``watermark`` from now on."""
        if watermark > self._watermark[topic]:
            self._watermark[topic] = watermark
            self._release(out)

    def offer(self, topic: str, items: Sequence[tuple[int, Any]], msg: Message, out: Output) -> int:
        """Items of one message, held until the merge lets them go; returns their retention."""
        rank = self._rank[topic]
        held = self._held[topic]
        wm = self._watermark[topic]
        retain = NO_WATERMARK
        for ts_ms, item in items:
            wm = max(wm, ts_ms)
            keep = self.task.retain_until(topic, wm, item)
            retain = max(retain, keep)
            self._seq += 1
            held.append(_Held(wm, rank, self._seq, item, keep, msg))
            self._retains[topic][keep] += 1
        self._watermark[topic] = wm
        self._release(out)
        return retain

    def _release(self, out: Output) -> None:
        heads = [(held[0], topic) for topic, held in self._held.items() if held]
        heapq.heapify(heads)
        while heads:
            head, topic = heads[0]
            if not self._may_go(head, topic):
                break
            heapq.heappop(heads)
            held = self._held[topic]
            held.popleft()
            retains = self._retains[topic]
            retains[head.retain] -= 1
            if not retains[head.retain]:
                del retains[head.retain]
            self.task.on_item(topic, head.ts_ms, head.item, head.msg, out)
            if held:
                heapq.heappush(heads, (held[0], topic))
        frontier = min(self._watermark.values())
        if frontier > self._frontier:
            self._frontier = frontier
            self.task.on_frontier(frontier, out)

    def _may_go(self, head: _Held, topic: str) -> bool:
        for other in self.inputs:
            if other == topic or self._held[other]:
                continue  # a waiting head of another input is larger (it is not the heap's top)
            wm, rank = self._watermark[other], self._rank[other]
            if wm < head.ts_ms or (wm == head.ts_ms and rank < head.rank):
                return False
        return True


class InputPort:
    """One input partition of a :class:`Junction`, as the runtime's ``PartitionTask``."""

    def __init__(self, junction: Junction, topic: str, start_watermark: int) -> None:
        self.junction, self.topic = junction, topic
        junction.ports[topic] = self
        junction.start(topic, start_watermark)

    @property
    def watermark(self) -> int:
        return self.junction.watermark(self.topic)

    @property
    def accepting(self) -> bool:
        return self.junction.holding(self.topic) < HOLD_MAX

    def process(self, msg: Message, out: Output) -> int:
        marker = marker_watermark(msg)
        if marker is not None:
            self.junction.advance(self.topic, marker, out)
            return NO_WATERMARK
        try:
            items = self.junction.task.decode(self.topic, msg)
        except Undecodable as exc:
            out.dead_letter(dead_letter_for(msg, exc.reason, self.topic, exc.detail))
            return NO_WATERMARK
        return self.junction.offer(self.topic, items, msg, out)

    def close(self, out: Output) -> None:
        """Items are applied as the merge releases them; the task may forward its watermark."""
        self.junction.task.close(out)

    def idle(self, out: Output) -> None:
        """Event time moves only with input."""

    @property
    def idle_limit(self) -> int:
        return self.watermark

    def restore(self, watermark: int, idle_limit: int | None, out: Output) -> None:
        """The replay rebuilt the input's watermark from its messages."""


def merged_ports(
    inputs: Sequence[str], make_task: Callable[[int], MergedTask]
) -> Callable[[str, int, int], PartitionTask]:
    """The runtime's task factory for a merged worker: ``(topic, partition, start watermark)`` ->
    that input's port. The ports of one partition share a junction; a port for an input the
    partition's junction has already (the runtime starting over from its checkpoints) begins a
    new junction, with a fresh task from ``make_task(partition)``."""
    junctions: dict[int, Junction] = {}

    def port(topic: str, partition: int, start_watermark: int) -> PartitionTask:
        junction = junctions.get(partition)
        if junction is None or topic in junction.ports:
            junction = junctions[partition] = Junction(inputs, make_task(partition))
        return InputPort(junction, topic, start_watermark)

    return port
