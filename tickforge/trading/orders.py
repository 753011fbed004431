"""Orders and fills: immutable domain objects that refuse impossible values.

``client_order_id`` is derived from what caused the order (strategy, symbol, params, bar window),
so a restarted runner that re-decides the same bar emits the same id and every downstream stage
recognises the repeat. Fill ids are derived from the order id and the fill's ordinal, which the
deterministic matcher reproduces on a replay.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

MAX_CLIENT_ORDER_ID_LENGTH: Final = 128  # broker limit (Alpaca) and the PostgreSQL column


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    DAY = "DAY"
    IOC = "IOC"


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _positive_finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _timestamp(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and value.strip() == value and value != ""


@dataclass(frozen=True, slots=True)
class Order:
    """One order as decided by a strategy; ``arrival_ts_ms`` is when the venue first sees it."""

    client_order_id: str
    strategy: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    limit_price: float | None
    time_in_force: TimeInForce
    decision_ts_ms: int
    arrival_ts_ms: int

    def __post_init__(self) -> None:
        _require(
            _nonempty(self.client_order_id), f"client_order_id must be a non-empty string: {self.client_order_id!r}"
        )
        _require(len(self.client_order_id) <= MAX_CLIENT_ORDER_ID_LENGTH, "client_order_id too long")
        _require(_nonempty(self.strategy), f"strategy must be a non-empty string: {self.strategy!r}")
        _require(_nonempty(self.symbol), f"symbol must be a non-empty string: {self.symbol!r}")
        # str values are accepted and turned into the enums, so rows read back from a file work
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "order_type", OrderType(self.order_type))
        object.__setattr__(self, "time_in_force", TimeInForce(self.time_in_force))
        _require(_positive_finite(self.quantity), f"quantity must be positive and finite: {self.quantity!r}")
        if self.order_type is OrderType.LIMIT:
            _require(
                self.limit_price is not None and _positive_finite(self.limit_price),
                f"a limit order needs a positive finite limit_price: {self.limit_price!r}",
            )
        else:
            _require(self.limit_price is None, "a market order has no limit_price")
        _require(_timestamp(self.decision_ts_ms), f"decision_ts_ms must be an int >= 0: {self.decision_ts_ms!r}")
        _require(
            _timestamp(self.arrival_ts_ms) and self.arrival_ts_ms >= self.decision_ts_ms,
            f"arrival_ts_ms {self.arrival_ts_ms!r} before decision_ts_ms {self.decision_ts_ms}",
        )

    def signed_quantity(self) -> float:
        return self.side.sign * self.quantity


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of (part of) an order."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    ts_ms: int
    price: float
    quantity: float
    liquidity: Liquidity

    def __post_init__(self) -> None:
        _require(_nonempty(self.fill_id), f"fill_id must be a non-empty string: {self.fill_id!r}")
        _require(_nonempty(self.client_order_id), "client_order_id must be a non-empty string")
        _require(_nonempty(self.symbol), "symbol must be a non-empty string")
        object.__setattr__(self, "side", Side(self.side))
        object.__setattr__(self, "liquidity", Liquidity(self.liquidity))
        _require(_timestamp(self.ts_ms), f"ts_ms must be an int >= 0: {self.ts_ms!r}")
        _require(_positive_finite(self.price), f"price must be positive and finite: {self.price!r}")
        _require(_positive_finite(self.quantity), f"quantity must be positive and finite: {self.quantity!r}")

    @property
    def notional(self) -> float:
        return self.price * self.quantity


def params_hash(params: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``params`` (key order irrelevant)."""
    try:
        text = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"params must be a JSON object of finite values: {e}") from e
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def client_order_id(
    strategy: str,
    symbol: str,
    params: Mapping[str, Any],
    timeframe: str,
    window_start_ms: int,
    leg: int = 0,
) -> str:
    """Deterministic id of the order a strategy decides on one bar window.

    ``leg`` numbers several orders decided on the same bar (e.g. a session-end flatten next to a
    signal); 0 for the usual single order. Readable prefix for people, digest for uniqueness.
    """
    _require(
        _nonempty(strategy) and _nonempty(symbol) and _nonempty(timeframe),
        "strategy, symbol and timeframe must be non-empty",
    )
    _require(_timestamp(window_start_ms), "window_start_ms must be an int >= 0")
    _require(isinstance(leg, int) and leg >= 0, "leg must be an int >= 0")
    cause = json.dumps([strategy, symbol, params_hash(params), timeframe, window_start_ms, leg], separators=(",", ":"))
    digest = hashlib.sha256(cause.encode()).hexdigest()[:20]
    return f"{strategy[:40]}-{symbol[:24]}-{timeframe[:8]}-{window_start_ms}-{leg}-{digest}"


def fill_id(client_order_id: str, ordinal: int) -> str:
    """Id of the ``ordinal``-th (1-based) fill of an order."""
    _require(isinstance(ordinal, int) and ordinal >= 1, "fill ordinal must be an int >= 1")
    return f"{client_order_id}.F{ordinal}"


def new_order(
    *,
    client_order_id: str,
    strategy: str,
    symbol: str,
    side: Side | str,
    quantity: float,
    decision_ts_ms: int,
    latency_ms: int,
    limit_price: float | None = None,
    time_in_force: TimeInForce | str = TimeInForce.DAY,
) -> Order:
    """An order decided at ``decision_ts_ms`` that reaches the venue ``latency_ms`` later.

    Market order when ``limit_price`` is None, limit order otherwise.
    """
    _require(
        isinstance(latency_ms, int) and not isinstance(latency_ms, bool) and latency_ms >= 0,
        "latency_ms must be an int >= 0",
    )
    return Order(
        client_order_id=client_order_id,
        strategy=strategy,
        symbol=symbol,
        side=Side(side),
        quantity=quantity,
        order_type=OrderType.MARKET if limit_price is None else OrderType.LIMIT,
        limit_price=limit_price,
        time_in_force=TimeInForce(time_in_force),
        decision_ts_ms=decision_ts_ms,
        arrival_ts_ms=decision_ts_ms + latency_ms,
    )
