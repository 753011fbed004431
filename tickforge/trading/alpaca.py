"""Alpaca's REST order API behind the gateway interface (an IO module at the room's edge).

- ``submit``: ``POST /v2/orders`` with the order's ``client_order_id``. A 422 that the id is
  taken means the order was sent before (a restart): the stored order is read back
  (``GET /v2/orders:by_client_order_id``) and reported as it stands, so a resubmission is
  idempotent. Other 4xx answers reject the order with the broker's code and message.
- ``cancel``: ``DELETE /v2/orders/{id}`` (204), then the order is read back: canceled, or
  already closed (``CancelRejected``); 404 and 422 (not cancelable) are ``CancelRejected``.
- ``fills``: ``GET /v2/account/activities/FILL`` in ascending order from the last activity seen
  (``page_token``), every page; each activity is one fill whose id is the activity's id, so a
  re-read after a restart repeats fill ids the OMS already has. Alpaca does not say which side of
  the book a fill took: market orders and marketable limits are reported as taker, all as taker.

Dry-run (``enabled`` false, the default): nothing is sent; every request that would have been
is kept in :attr:`AlpacaGateway.dry_run` and logged, and no venue event is reported.
Network failures and 5xx answers raise :class:`BrokerUnavailable` (retry with the same order:
the id makes it safe); a payload that does not follow Alpaca's schema raises
:class:`BrokerProtocolError` with what is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tickforge.platform.settings import AlpacaSettings
from tickforge.trading.events import (
    CancelReason,
    CancelRejected,
    CancelRejectReason,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    VenueEvent,
)
from tickforge.trading.orders import Fill, Liquidity, Order, OrderType, Side

log = logging.getLogger(__name__)

PAGE_SIZE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"\.\d+")
# Alpaca order statuses -> what the OMS is told (statuses not listed are still working: nothing new)
_ACCEPTED = frozenset(
    {
        "new",
        "accepted",
        "pending_new",
        "accepted_for_bidding",
        "partially_filled",
        "filled",
        "done_for_day",
        "pending_cancel",
        "pending_replace",
        "calculated",
        "held",
    }
)
_CLOSED_BY_BROKER = frozenset({"canceled", "expired", "rejected", "replaced", "stopped", "suspended"})


class BrokerError(Exception):
    """Something the broker call could not do, with the reason."""


class BrokerUnavailable(BrokerError):
    """The broker did not answer (network, timeout, 5xx): try again later with the same order."""


class BrokerProtocolError(BrokerError, ValueError):
    """An answer that does not follow the broker's documented schema."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # with its query string
    body: dict[str, Any] | None


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # decoded JSON (None for an empty body)


def order_request(order: Order) -> dict[str, Any]:
    """The ``POST /v2/orders`` body of an order (quantities and prices as decimal strings)."""
    body: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": _decimal(order.quantity),
        "side": str(order.side),
        "type": str(order.order_type),
        "time_in_force": str(order.time_in_force).lower(),
        "client_order_id": order.client_order_id,
    }
    if order.order_type is OrderType.LIMIT:
        assert order.limit_price is not None
        body["limit_price"] = _decimal(order.limit_price)
    return body


class AlpacaGateway:
    def __init__(self, settings: AlpacaSettings) -> None:
        if settings.enabled and (settings.key_id is None or settings.secret_key is None):
            raise ValueError("the Alpaca adapter is enabled without key_id and secret_key (TICKFORGE_ALPACA__...)")
        parsed = urllib.parse.urlsplit(settings.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"alpaca base_url must be an http(s) URL: {settings.base_url!r}")
        self._settings = settings
        self._base = settings.base_url.rstrip("/")
        self.dry_run: list[Request] = []
        self._broker_ids: dict[str, str] = {}  # client_order_id -> broker order id
        self._client_ids: dict[str, str] = {}  # broker order id -> client_order_id
        self._after: str | None = None  # the last fill activity reported

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    # ---------------------------------------------------------------- the gateway

    def submit(self, order: Order) -> list[VenueEvent]:
        if order.client_order_id in self._broker_ids:
            return []
        answer = self._call(Request("POST", "/v2/orders", order_request(order)))
        if answer is None:
            return []
        if answer.status == 200:
            return self._order_events(answer.body, order.arrival_ts_ms)
        code, message = _error(answer)
        if answer.status == 422 and "client_order_id" in message and "unique" in message:
            stored = self._order_by_client_id(order.client_order_id)
            return self._order_events(stored, order.arrival_ts_ms)
        return [OrderRejected(order.client_order_id, order.arrival_ts_ms, f"broker_{answer.status}_{code}: {message}")]

    def cancel(self, client_order_id: str, arrival_ts_ms: int) -> list[VenueEvent]:
        broker_id = self._broker_ids.get(client_order_id)
        if broker_id is None and self.enabled:
            stored = self._order_by_client_id(client_order_id, missing_ok=True)
            if stored is None:
                return [CancelRejected(client_order_id, arrival_ts_ms, CancelRejectReason.UNKNOWN_ORDER)]
            broker_id = self._remember(stored)
        answer = self._call(Request("DELETE", f"/v2/orders/{urllib.parse.quote(broker_id or client_order_id)}", None))
        if answer is None:
            return []
        if answer.status == 404:
            return [CancelRejected(client_order_id, arrival_ts_ms, CancelRejectReason.UNKNOWN_ORDER)]
        if answer.status == 422:
            return [CancelRejected(client_order_id, arrival_ts_ms, CancelRejectReason.ALREADY_CLOSED)]
        if answer.status not in (200, 204):
            code, message = _error(answer)
            raise BrokerError(f"cancel of {client_order_id}: broker answered {answer.status} {code}: {message}")
        read = self._call(Request("GET", f"/v2/orders/{urllib.parse.quote(str(broker_id))}", None))
        assert read is not None
        if read.status != 200:
            raise BrokerError(f"order {client_order_id} cannot be read back after its cancel: {read.status}")
        status = _field(read.body, "status", str)
        if status == "canceled":
            return [
                OrderCanceled(
                    client_order_id, _ts_ms(read.body.get("canceled_at")) or arrival_ts_ms, CancelReason.REQUESTED
                )
            ]
        if status in ("filled", "expired", "rejected"):
            return [CancelRejected(client_order_id, arrival_ts_ms, CancelRejectReason.ALREADY_CLOSED)]
        return []  # pending_cancel: the cancel shows in a later read

    def fills(self, now_ms: int) -> list[VenueEvent]:
        # The cursor moves only once every page is read and mapped: a failure on a later page (or in
        # an order lookup) leaves it where it was, so the next poll reads those activities again.
        out: list[VenueEvent] = []
        after = self._after
        while True:
            query = {"direction": "asc", "page_size": str(PAGE_SIZE)}
            if after is not None:
                query["page_token"] = after
            answer = self._call(Request("GET", "/v2/account/activities/FILL?" + urllib.parse.urlencode(query), None))
            if answer is None:
                break
            if answer.status != 200:
                code, message = _error(answer)
                raise BrokerError(f"fill activities: broker answered {answer.status} {code}: {message}")
            if not isinstance(answer.body, list):
                raise BrokerProtocolError("fill activities: expected a JSON list")
            for activity in answer.body:
                out.append(self._fill(activity))
                after = _field(activity, "id", str)
            if len(answer.body) < PAGE_SIZE:
                break
        self._after = after
        return out

    # ---------------------------------------------------------------- mapping

    def _order_events(self, body: Any, ts_ms: int) -> list[VenueEvent]:
        coid = _field(body, "client_order_id", str)
        self._remember(body)
        status = _field(body, "status", str)
        stamp = _ts_ms(body.get("submitted_at")) or _ts_ms(body.get("created_at")) or ts_ms
        if status == "rejected":
            return [OrderRejected(coid, _ts_ms(body.get("failed_at")) or stamp, "broker_rejected")]
        events: list[VenueEvent] = [OrderAccepted(coid, stamp)]
        if status == "canceled":
            events.append(OrderCanceled(coid, _ts_ms(body.get("canceled_at")) or stamp, CancelReason.REQUESTED))
        elif status == "expired":
            events.append(OrderExpired(coid, _ts_ms(body.get("expired_at")) or stamp))
        elif status not in _ACCEPTED and status not in _CLOSED_BY_BROKER:
            raise BrokerProtocolError(f"order {coid}: unknown status {status!r}")
        return events

    def _fill(self, activity: Any) -> Fill:
        if _field(activity, "activity_type", str) != "FILL":
            raise BrokerProtocolError(f"not a fill activity: {activity.get('activity_type')!r}")
        broker_order = _field(activity, "order_id", str)
        coid = self._client_ids.get(broker_order)
        if coid is None:
            read = self._call(Request("GET", f"/v2/orders/{urllib.parse.quote(broker_order)}", None))
            assert read is not None
            if read.status != 200:
                raise BrokerError(f"fill of an order the broker cannot show: {broker_order} ({read.status})")
            coid = _field(read.body, "client_order_id", str)
            self._remember(read.body)
        side = _field(activity, "side", str)
        if side not in ("buy", "sell", "sell_short"):
            raise BrokerProtocolError(f"fill side {side!r}")
        stamp = _ts_ms(_field(activity, "transaction_time", str))
        assert stamp is not None
        return Fill(
            fill_id=f"{coid}.A{_field(activity, 'id', str)}",
            client_order_id=coid,
            symbol=_field(activity, "symbol", str),
            side=Side.BUY if side == "buy" else Side.SELL,
            ts_ms=stamp,
            price=_number(activity, "price"),
            quantity=_number(activity, "qty"),
            liquidity=Liquidity.TAKER,
        )

    def _remember(self, body: Any) -> str:
        broker_id, coid = _field(body, "id", str), _field(body, "client_order_id", str)
        self._broker_ids[coid] = broker_id
        self._client_ids[broker_id] = coid
        return broker_id

    def _order_by_client_id(self, client_order_id: str, missing_ok: bool = False) -> Any:
        query = urllib.parse.urlencode({"client_order_id": client_order_id})
        answer = self._call(Request("GET", f"/v2/orders:by_client_order_id?{query}", None))
        assert answer is not None
        if answer.status == 404 and missing_ok:
            return None
        if answer.status != 200:
            code, message = _error(answer)
            raise BrokerError(f"order {client_order_id} cannot be read: {answer.status} {code}: {message}")
        return answer.body

    # ---------------------------------------------------------------- HTTP

    def _call(self, request: Request) -> Response | None:
        """One request; None in dry-run (kept in :attr:`dry_run`, nothing sent)."""
        if not self.enabled:
            self.dry_run.append(request)
            log.info("alpaca dry-run", extra={"method": request.method, "path": request.path})
            return None
        assert self._settings.key_id is not None and self._settings.secret_key is not None
        data = None if request.body is None else json.dumps(request.body).encode()
        http = urllib.request.Request(
            self._base + request.path,
            data=data,
            method=request.method,
            headers={
                "APCA-API-KEY-ID": self._settings.key_id.get_secret_value(),
                "APCA-API-SECRET-KEY": self._settings.secret_key.get_secret_value(),
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(http, timeout=self._settings.timeout_s) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise BrokerUnavailable(f"{request.method} {request.path}: {e}") from None
        if status >= 500:
            raise BrokerUnavailable(f"{request.method} {request.path}: broker answered {status}")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise BrokerProtocolError(f"{request.method} {request.path}: answer {status} is not JSON") from None
        return Response(status, body)


def _decimal(x: float) -> str:
    return format(x, ".10g") if not float(x).is_integer() else str(int(x))


def _field(body: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(body, dict):
        raise BrokerProtocolError(f"expected a JSON object with {name!r}")
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value):
        raise BrokerProtocolError(f"field {name!r} missing or of the wrong type: {value!r}")
    return value


def _number(body: Any, name: str) -> float:
    """Alpaca sends quantities and prices as decimal strings."""
    raw = _field(body, name, (str, int, float))
    try:
        value = float(raw)
    except ValueError:
        raise BrokerProtocolError(f"field {name!r} is not a number: {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise BrokerProtocolError(f"field {name!r} must be positive: {raw!r}")
    return value


def _ts_ms(raw: Any) -> int | None:
    """Epoch ms of an RFC 3339 timestamp (Alpaca gives nanoseconds: cut to microseconds)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BrokerProtocolError(f"timestamp is not a string: {raw!r}")
    text = _FRACTION.sub(lambda m: m.group(0)[:7], raw.replace("Z", "+00:00"), count=1)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise BrokerProtocolError(f"not an RFC 3339 timestamp: {raw!r}") from None
    if stamp.tzinfo is None:
        raise BrokerProtocolError(f"timestamp without a zone: {raw!r}")
    return (stamp - _EPOCH) // timedelta(milliseconds=1)


def _error(answer: Response) -> tuple[str, str]:
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("code", "")), str(body.get("message", ""))
