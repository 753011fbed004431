"""Value-level validity of trades, shared by the file readers and the streaming worker.

A trade is valid when it has a timestamp, a non-empty symbol of at most ``MAX_SYMBOL_LENGTH``
characters, and a finite price and size above
zero. The check is one vectorized expression so that a file of millions of rows and a decoded
batch of JSON edge messages are judged by exactly the same rule.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from tickforge.platform.contracts import MAX_SYMBOL_LENGTH

BAD_TIMESTAMP: Final = "bad_timestamp"
MISSING_SYMBOL: Final = "missing_symbol"
BAD_SYMBOL: Final = "bad_symbol"
BAD_PRICE: Final = "bad_price"
BAD_SIZE: Final = "bad_size"

# Rows that went to the dead letter: the data-row number in file order (or the position in a
# stream), the reason, the row's text as read and a detail naming the fields at fault.
DEAD_LETTER_SCHEMA: Final = pl.Schema({"row": pl.Int64, "reason": pl.String, "raw": pl.String, "detail": pl.String})

# Precedence when a row has several faults: the first applicable reason in this order is reported.
TRADE_REJECT_REASONS: Final = (BAD_TIMESTAMP, MISSING_SYMBOL, BAD_SYMBOL, BAD_PRICE, BAD_SIZE)


def _not_positive_finite(column: str) -> pl.Expr:
    value = pl.col(column).cast(pl.Float64)
    # fill_null(True): a null must count as bad, and `null > 0` would otherwise stay null.
    return (~(value.is_finite() & (value > 0))).fill_null(True)


def trade_reject_reasons(df: pl.DataFrame) -> pl.Series:
    """Reason each trade is rejected, null where it is valid (same length and order as ``df``).

    ``df`` needs the canonical trade columns ``ts_ms``, ``symbol``, ``price`` and ``size``; nulls in
    them are faults (a reader leaves a field null when it cannot parse it).
    """
    symbol = pl.col("symbol").cast(pl.String)
    reason = (
        pl.when(pl.col("ts_ms").is_null())
        .then(pl.lit(BAD_TIMESTAMP))
        .when(symbol.is_null() | (symbol.str.strip_chars() == ""))
        .then(pl.lit(MISSING_SYMBOL))
        .when(symbol.str.len_chars() > MAX_SYMBOL_LENGTH)
        .then(pl.lit(BAD_SYMBOL))
        .when(_not_positive_finite("price"))
        .then(pl.lit(BAD_PRICE))
        .when(_not_positive_finite("size"))
        .then(pl.lit(BAD_SIZE))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return df.select(reason.alias("reason")).to_series()
