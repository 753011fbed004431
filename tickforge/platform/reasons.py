"""Why input went to the dead letter: the one vocabulary of reasons.

Every producer of dead letters (file readers, the bar kernel, the decoders, the workers and the
stores) and every reader of them (sensors, facts, marts) names a reason from this list.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # a trade's own values
    BAD_TIMESTAMP = "bad_timestamp"
    MISSING_SYMBOL = "missing_symbol"
    BAD_SYMBOL = "bad_symbol"  # longer than the configured maximum
    BAD_PRICE = "bad_price"
    BAD_SIZE = "bad_size"
    BAD_TRADE_ID = "bad_trade_id"
    # a trade against the stream it is in
    DUPLICATE = "duplicate"
    LATE = "late"
    FUTURE_TIMESTAMP = "future_timestamp"  # further ahead than event time may jump
    # messages and rows that are not ticks at all
    MALFORMED_ROW = "malformed_row"
    MALFORMED_BATCH = "malformed_batch"  # a column batch whose buffers do not fit together
    UNDECODABLE = "undecodable"
    SCHEMA_VIOLATION = "schema_violation"
    # output and processing
    UNPRODUCIBLE = "unproducible"  # an output the broker refuses (e.g. over the message size)
    PROCESSING_ERROR = "processing_error"  # the worker failed on this message; it moved on
    # an order's records against its order
    UNKNOWN_ORDER = "unknown_order"  # a venue event or fill whose order never came
    ORDER_REFUSED = "order_refused"  # a move the OMS refuses (out of a closed order, an overfill)
