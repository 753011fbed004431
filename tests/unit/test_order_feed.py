"""The OMS fed by the trading path's records, in whatever order they arrive.

The records are the paper path's on the BAC morning of the demo day: the runner's orders on its
1 m bars, what risk decides over them and what the paper matcher does with the approvals (the
kernels without Kafka). Fed in source order at once, or shuffled across topics in small polls with
the orders taken back from what was written after each poll (as the OMS store does), the feed
writes the same orders, trails and fills.
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from tests.integration.test_paper_path_workers import PICKS_CSV, _morning, _orders, _without_kafka, oms_records
from tickforge.streaming.order_messages import decode_event, decode_fill, encode_event
from tickforge.trading.events import OrderAccepted, OrderCanceled, OrderExpired
from tickforge.trading.order_feed import Decided, Entry, OrderFeed, RiskRefused, restore_stored
from tickforge.trading.orders import Fill

SOURCES = ("orders", "orders.rejected", "orders.events", "fills")


@pytest.fixture(scope="module")
def records(tmp_path_factory, samples) -> list[Entry]:
    """The morning's records as the OMS store decodes them, with their source positions."""
    from tickforge.platform.settings import Settings

    picks = Path(tmp_path_factory.mktemp("picks")) / "picks.csv"
    picks.write_text(PICKS_CSV)
    bars, ticks, _ = _morning(Settings(), samples)
    orders = _orders(bars, picks)
    decided, matched = _without_kafka(orders, ticks)
    return oms_records(orders, decided, matched)


def _frames(feed: OrderFeed) -> tuple[pl.DataFrame, ...]:
    return feed.frames(r.order.client_order_id for r in feed.oms.records())


def test_the_morning_in_source_order_is_each_order_once_with_its_fills(records):
    kinds = {type(e.record) for e in records}
    assert {Decided, OrderAccepted, Fill} <= kinds, f"the morning exercises too little: {kinds}"
    feed = OrderFeed()
    applied = feed.apply(records)
    assert not applied.waiting and not applied.refused
    orders, transitions, fills = _frames(feed)
    decided = {e.record.order.client_order_id for e in records if isinstance(e.record, Decided)}
    assert set(orders["client_order_id"]) == decided
    assert orders["book"].null_count() == 0, "the runner's orders name their book"
    filled = fills.group_by("client_order_id").agg(pl.col("quantity").sum().alias("sum"))
    check = orders.join(filled, on="client_order_id", how="left").with_columns(pl.col("sum").fill_null(0.0))
    assert (check["filled_quantity"] - check["sum"]).abs().max() < 1e-9
    assert set(check.filter(pl.col("status") == "FILLED")["client_order_id"]) <= set(fills["client_order_id"])
    again = feed.apply(records)
    assert not again.touched and not again.refused and not again.waiting, "a redelivery moves nothing"


def test_shuffled_small_polls_restored_from_the_store_write_the_same(records):
    whole = OrderFeed()
    whole.apply(records)
    expected = _frames(whole)

    # Each source in its own order, the sources interleaved at random, read in polls of a few.
    rng = random.Random(7)
    queues = [[e for e in records if e.position[0] == rank] for rank in range(len(SOURCES))]
    arrival = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        arrival.append(queue.pop(0))
    stored: dict[str, tuple[pl.DataFrame, ...]] = {}
    waiting: list[Entry] = []
    held_back = 0
    for start in range(0, len(arrival), 5):
        pending = waiting + arrival[start : start + 5]
        feed = OrderFeed()
        ids = {e.client_order_id for e in pending}
        mine = [stored[i] for i in sorted(ids) if i in stored]
        if mine:
            restore_stored(feed, *(pl.concat(parts) for parts in zip(*mine, strict=True)))
        applied = feed.apply(pending)
        assert not applied.refused
        for cid in applied.touched:
            o, t, f = feed.frames([cid])
            stored[cid] = (o, t, f)
        waiting = applied.waiting
        held_back += len(waiting)
    assert not waiting
    assert held_back, "the shuffle never read a record before the one it follows"
    got = tuple(pl.concat(parts).sort(parts[0].columns[0]) for parts in zip(*stored.values(), strict=True))
    for mine, theirs, key in zip(
        got, expected, (["client_order_id"], ["client_order_id", "seq"], ["fill_id"]), strict=True
    ):
        assert mine.sort(key).equals(theirs.sort(key)), f"{key}: {mine.sort(key)} != {theirs.sort(key)}"


def test_a_move_out_of_a_closed_order_is_refused_and_a_fill_before_its_acceptance_waits(records):
    fill = next(e for e in records if isinstance(e.record, Fill))
    order = next(e for e in records if isinstance(e.record, Decided) and e.client_order_id == fill.client_order_id)
    accepted = next(
        e for e in records if isinstance(e.record, OrderAccepted) and e.client_order_id == fill.client_order_id
    )
    feed = OrderFeed()
    early = feed.apply([order, fill])
    assert early.waiting == [fill] and early.touched == {fill.client_order_id}
    feed.apply([*early.waiting, accepted])
    mine = [e for e in records if e.client_order_id == fill.client_order_id]
    feed.apply(mine)
    if feed.oms.get(fill.client_order_id).status.is_terminal:
        f = fill.record
        after = Fill(f"{f.fill_id}-again", f.client_order_id, f.symbol, f.side, f.ts_ms + 1, f.price, 1.0, f.liquidity)
        late = feed.apply([Entry(after, (3, 0, 10_000))])
        assert [e for e, _ in late.refused] == [Entry(after, (3, 0, 10_000))], "a fill of a filled order"
    unknown = feed.apply([Entry(OrderExpired("never-decided", 1), (2, 0, 1))])
    assert [e.client_order_id for e in unknown.waiting] == ["never-decided"]


def test_a_risk_refusal_is_the_order_and_its_rejection_with_the_rule(records):
    order = next(e.record for e in records if isinstance(e.record, Decided))
    refusal = Entry(RiskRefused(order.order, order.meta, order.order.decision_ts_ms + 3, "max_position"), (1, 0, 0))
    feed = OrderFeed()
    assert feed.apply([refusal]).touched == {order.order.client_order_id}
    _, transitions, _ = _frames(feed)
    assert transitions.select("seq", "to_status", "reason").rows() == [
        (0, "NEW", "submitted"),
        (1, "REJECTED", "max_position"),
    ]
    again = feed.apply([Entry(order, (0, 0, 0)), refusal])
    assert not again.touched and not again.refused, "the decided order and the refusal again: nothing moves"


def test_a_stored_trail_restores_to_the_same_numbering(records):
    feed = OrderFeed()
    feed.apply(records)
    orders, transitions, fills = _frames(feed)
    again = OrderFeed()
    restore_stored(again, orders, transitions, fills)
    for got, want in zip(_frames(again), (orders, transitions, fills), strict=True):
        assert got.equals(want)
    broken = transitions.filter(pl.col("seq") != 1)
    with pytest.raises(Exception, match="trail numbers"):
        restore_stored(OrderFeed(), orders, broken, fills)


def test_order_events_decode_as_they_were_encoded():
    for event in (OrderAccepted("c1", 5), OrderCanceled("c1", 6, "ioc_remainder"), OrderExpired("c1", 7)):
        assert decode_event(encode_event(event)) == event
    from tickforge.streaming.codec import Undecodable

    with pytest.raises(Undecodable):
        decode_event(b'{"event": "teleported", "client_order_id": "c", "ts_ms": 1}')
    with pytest.raises(Undecodable):
        decode_fill(b'{"fill_id": "f"}')
