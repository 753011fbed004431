"""The gateway interface: where approved orders go and where fills come from.

One protocol for every venue: the paper matcher (:class:`~tickforge.trading.matching.PaperMatcher`,
fed the market stream) and a broker adapter (:class:`~tickforge.trading.alpaca.AlpacaGateway`).
Every call returns the venue events it learnt of (accepts, rejects, cancels, expiries, fills),
which the caller applies to the OMS; the OMS recognises repeats by ``client_order_id`` and fill
id, so a gateway may report an event twice (a restart re-reading a broker's fills).
"""

from __future__ import annotations

from typing import Protocol

from tickforge.trading.events import VenueEvent
from tickforge.trading.orders import Order


class Gateway(Protocol):
    def submit(self, order: Order) -> list[VenueEvent]:
        """Send an order (a repeat of one already sent is recognised, not sent twice)."""
        ...

    def cancel(self, client_order_id: str, arrival_ts_ms: int) -> list[VenueEvent]:
        """Ask to cancel an order; it may have filled first (``CancelRejected``)."""
        ...

    def fills(self, now_ms: int) -> list[VenueEvent]:
        """What happened at the venue up to ``now_ms`` not reported yet: fills, and the order
        closes that came with them."""
        ...
