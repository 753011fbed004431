"""The Alpaca adapter against a local HTTP server (uvicorn + starlette) that serves recorded
request/response pairs (tests/fixtures/alpaca/session.json) in order and refuses any request that
differs from the next recorded one (method, path with query, JSON body, the key headers).

The venue events it reports drive the real OMS: a limit buy filled in two parts, its resubmission
after a restart recognised (422 duplicate id -> the stored order read back), a market sell
rejected with the broker's code, a resting order canceled, a cancel of a filled order refused,
fills re-read by a restarted adapter recognised as repeats, the broker away -> BrokerUnavailable.
Dry-run sends nothing at all.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tickforge.platform.settings import AlpacaSettings
from tickforge.trading import alpaca
from tickforge.trading.alpaca import AlpacaGateway, BrokerProtocolError, BrokerUnavailable, order_request
from tickforge.trading.events import CancelRejected, CancelRejectReason, OrderAccepted, OrderCanceled, OrderRejected
from tickforge.trading.oms import Applied, OrderManager, OrderStatus
from tickforge.trading.orders import Fill, Liquidity, client_order_id, new_order

SESSION = json.loads((Path(__file__).parents[1] / "fixtures" / "alpaca" / "session.json").read_text())
T0 = 1381239300000  # 2013-10-08 09:35 New York


class Recorded:
    """Serves the recorded exchanges in order; anything else is a 418 with what differed."""

    def __init__(self, exchanges: list[dict]) -> None:
        self.exchanges = exchanges
        self.served: list[str] = []
        self.refused: list[str] = []

    async def handle(self, request: Request) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raw = await request.body()
        body = json.loads(raw) if raw else None
        keys = (request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY"))
        if keys != (SESSION["key_id"], SESSION["secret_key"]):
            return JSONResponse({"code": 40110000, "message": "request is not authorized"}, 401)
        if len(self.served) == len(self.exchanges):
            self.refused.append(f"{request.method} {path}: nothing more recorded")
            return JSONResponse({"message": "unexpected"}, 418)
        expected = self.exchanges[len(self.served)]
        got = {"method": request.method, "path": path, "body": body}
        if got != expected["request"]:
            self.refused.append(f"expected {expected['request']}, got {got}")
            return JSONResponse({"message": "unexpected"}, 418)
        self.served.append(expected["note"])
        reply = expected["response"]
        if reply["body"] is None:
            return Response(status_code=reply["status"])
        return JSONResponse(reply["body"], reply["status"])


@pytest.fixture()
def broker():
    recorded = Recorded(SESSION["exchanges"])
    app = Starlette(routes=[Route("/{path:path}", recorded.handle, methods=["GET", "POST", "DELETE"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the recorded broker did not start"
        time.sleep(0.02)
    yield recorded, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(5)


def _settings(url: str, enabled: bool = True) -> AlpacaSettings:
    return AlpacaSettings(base_url=url, key_id=SESSION["key_id"], secret_key=SESSION["secret_key"], enabled=enabled)


def _orders():
    buy = new_order(
        client_order_id=client_order_id("ema_cross", "BAC", {"fast": 5, "slow": 20}, "1m", T0),
        strategy="ema_cross",
        symbol="BAC",
        side="buy",
        quantity=100,
        decision_ts_ms=T0,
        latency_ms=5,
        limit_price=13.89,
    )
    sell_spy = new_order(
        client_order_id=client_order_id("ema_cross", "SPY", {"fast": 5, "slow": 20}, "1m", T0),
        strategy="ema_cross",
        symbol="SPY",
        side="sell",
        quantity=50,
        decision_ts_ms=T0,
        latency_ms=5,
    )
    rest = new_order(
        client_order_id=client_order_id("orb_breakout", "BAC", {"opening_bars": 6}, "5m", T0 + 300_000),
        strategy="orb_breakout",
        symbol="BAC",
        side="sell",
        quantity=100,
        decision_ts_ms=T0 + 300_000,
        latency_ms=5,
        limit_price=13.95,
    )
    return buy, sell_spy, rest


def _apply(oms: OrderManager, events) -> list:
    return [oms.apply(e) for e in events]


def test_a_day_of_orders_through_the_recorded_broker(broker):
    recorded, url = broker
    buy, sell_spy, rest = _orders()
    oms = OrderManager()
    for o in (buy, sell_spy, rest):
        oms.submit(o)

    gateway = AlpacaGateway(_settings(url))
    accepted = gateway.submit(buy)
    assert accepted == [OrderAccepted(buy.client_order_id, 1381239300005)]
    _apply(oms, accepted)
    restarted = AlpacaGateway(_settings(url))  # knows nothing: the broker says the id is taken
    again = restarted.submit(buy)
    assert again == [OrderAccepted(buy.client_order_id, 1381239300005)]
    assert _apply(oms, again) == [Applied.DUPLICATE]

    [rejected] = restarted.submit(sell_spy)
    assert isinstance(rejected, OrderRejected)
    assert rejected.reason == "broker_403_40310000: insufficient qty available for order (requested: 50, available: 0)"
    _apply(oms, [rejected])

    fills = restarted.fills(T0 + 2_000)
    assert [(f.fill_id.rsplit(".A", 1)[0], f.side, f.quantity, f.price, f.ts_ms, f.liquidity) for f in fills] == [
        (buy.client_order_id, "buy", 40.0, 13.89, 1381239300123, Liquidity.TAKER),
        (buy.client_order_id, "buy", 60.0, 13.8833333, 1381239301847, Liquidity.TAKER),
    ]
    assert _apply(oms, fills) == [Applied.APPLIED, Applied.APPLIED]
    assert restarted.fills(T0 + 3_000) == []  # from the last activity on: nothing new

    _apply(oms, restarted.submit(rest))
    canceled = restarted.cancel(rest.client_order_id, T0 + 370_000)
    assert canceled == [OrderCanceled(rest.client_order_id, 1381239670250, "requested")]
    _apply(oms, canceled)
    refused = restarted.cancel(buy.client_order_id, T0 + 380_000)
    assert refused == [CancelRejected(buy.client_order_id, T0 + 380_000, CancelRejectReason.ALREADY_CLOSED)]
    assert _apply(oms, refused) == [None]

    third = AlpacaGateway(_settings(url))  # another restart re-reads the fills from the start
    with pytest.raises(BrokerUnavailable, match="503"):
        third.fills(T0 + 4_000)
    assert not recorded.refused, recorded.refused
    assert len(recorded.served) == len(SESSION["exchanges"])

    statuses = {r.order.symbol + r.order.side: r.status for r in oms.records()}
    assert statuses == {"BACbuy": OrderStatus.FILLED, "SPYsell": OrderStatus.REJECTED, "BACsell": OrderStatus.CANCELED}
    record = oms.get(buy.client_order_id)
    assert record.filled_quantity == 100 and record.average_fill_price == pytest.approx(13.886, abs=1e-6)
    assert len(oms.fills) == 2


def test_fills_reread_after_a_restart_are_repeats(broker):
    recorded, url = broker
    exchanges = SESSION["exchanges"]
    fills_page = next(e for e in exchanges if e["note"] == "both fills of the limit buy")
    buy, _, _ = _orders()
    oms = OrderManager()
    oms.submit(buy)
    oms.accept(buy.client_order_id, T0)
    # the order's broker id comes with the fills: looked up once per adapter
    order_id = fills_page["response"]["body"][0]["order_id"]
    lookup = {
        "note": "the order behind a fill",
        "request": {"method": "GET", "path": f"/v2/orders/{order_id}", "body": None},
        "response": {"status": 200, "body": exchanges[2]["response"]["body"]},
    }
    recorded.exchanges = [fills_page, lookup, fills_page, lookup]
    first = AlpacaGateway(_settings(url)).fills(T0)
    second = AlpacaGateway(_settings(url)).fills(T0)
    assert first == second and all(isinstance(f, Fill) for f in first)
    assert _apply(oms, first) == [Applied.APPLIED, Applied.APPLIED]
    assert _apply(oms, second) == [Applied.DUPLICATE, Applied.DUPLICATE]
    assert not recorded.refused


def test_dry_run_sends_nothing(broker):
    recorded, url = broker
    buy, sell_spy, rest = _orders()
    gateway = AlpacaGateway(_settings(url, enabled=False))
    assert gateway.submit(buy) == [] and gateway.cancel(rest.client_order_id, T0) == [] and gateway.fills(T0) == []
    assert recorded.served == [] and recorded.refused == []
    assert [r.method for r in gateway.dry_run] == ["POST", "DELETE", "GET"]
    assert gateway.dry_run[0].body == order_request(buy)
    # off by default, on the paper endpoint
    assert AlpacaSettings().enabled is False and AlpacaSettings().base_url == "https://paper-api.alpaca.markets"


def test_configuration_and_payloads_are_checked(broker):
    recorded, url = broker
    with pytest.raises(ValueError, match="without key_id"):
        AlpacaGateway(AlpacaSettings(base_url=url, enabled=True))
    with pytest.raises(ValueError, match="http"):
        AlpacaGateway(AlpacaSettings(base_url="paper-api.alpaca.markets"))
    buy, _, _ = _orders()
    assert order_request(buy) == SESSION["exchanges"][0]["request"]["body"]
    broken = dict(SESSION["exchanges"][0]["response"]["body"], status="teleported")
    recorded.exchanges = [dict(SESSION["exchanges"][0], response={"status": 200, "body": broken})]
    with pytest.raises(BrokerProtocolError, match="unknown status 'teleported'"):
        AlpacaGateway(_settings(url)).submit(buy)
    wrong_keys = AlpacaSettings(base_url=url, key_id="PKOTHER", secret_key="nope", enabled=True)
    [rejected] = AlpacaGateway(wrong_keys).submit(buy)
    assert isinstance(rejected, OrderRejected) and rejected.reason.startswith("broker_401_40110000")
    with pytest.raises(BrokerUnavailable):
        AlpacaGateway(_settings("http://127.0.0.1:9")).submit(buy)


def test_a_failure_on_a_later_page_keeps_every_fill_for_the_next_poll(broker, monkeypatch):
    """The recorded two fills are a full page when a page holds two: the adapter reads page 2, the
    broker is away (503); the next poll reads both pages again and reports each fill once."""
    monkeypatch.setattr(alpaca, "PAGE_SIZE", 2)
    recorded, url = broker
    exchanges = SESSION["exchanges"]
    fills_page = next(e for e in exchanges if e["note"] == "both fills of the limit buy")
    activities = fills_page["response"]["body"]
    first_page = {"direction": "asc", "page_size": "2"}
    page_1 = {
        "note": "page 1",
        "request": dict(
            fills_page["request"], path="/v2/account/activities/FILL?" + urllib.parse.urlencode(first_page)
        ),
        "response": fills_page["response"],
    }
    after_last = urllib.parse.urlencode({**first_page, "page_token": activities[-1]["id"]})
    page_2 = {
        "note": "page 2",
        "request": {"method": "GET", "path": f"/v2/account/activities/FILL?{after_last}", "body": None},
    }
    lookup = {
        "note": "the order behind a fill",
        "request": {"method": "GET", "path": f"/v2/orders/{activities[0]['order_id']}", "body": None},
        "response": {"status": 200, "body": exchanges[2]["response"]["body"]},
    }
    recorded.exchanges = [
        page_1,
        lookup,
        dict(page_2, response={"status": 503, "body": {"message": "unavailable"}}),
        page_1,
        dict(page_2, response={"status": 200, "body": []}),
        dict(page_2, note="from the last fill on", response={"status": 200, "body": []}),
    ]
    buy, _, _ = _orders()
    oms = OrderManager()
    oms.submit(buy)
    oms.accept(buy.client_order_id, T0)
    gateway = AlpacaGateway(_settings(url))
    with pytest.raises(BrokerUnavailable, match="503"):
        gateway.fills(T0)
    fills = gateway.fills(T0 + 1_000)
    assert [f.fill_id for f in fills] == [f"{buy.client_order_id}.A{a['id']}" for a in activities]
    assert _apply(oms, fills) == [Applied.APPLIED, Applied.APPLIED]
    assert gateway.fills(T0 + 2_000) == []  # the cursor now stands after the last fill
    assert not recorded.refused, recorded.refused
    assert len(recorded.served) == len(recorded.exchanges)
    assert oms.get(buy.client_order_id).status is OrderStatus.FILLED
