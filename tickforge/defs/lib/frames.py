"""Pandera schemas of the frames the assets write out, shared by the assets that write them.

A failed validation fails the asset before anything leaves it: an archive object, a compacted
day or a warehouse load is never written from a frame that breaks these rules. The rules are the
bar definition's invariants (one bar per symbol and window, an OHLC that holds together, a VWAP
inside the range), not the data's quirks, so they hold for any symbol or asset class.
"""

from __future__ import annotations

import pandas as pd
import pandera.polars as pa
import polars as pl
from pandera.polars import PolarsData

_REL = 1e-9  # float slack for vwap = notional / volume against low and high


class StoredBars(pa.DataFrameModel):
    """Golden bars as stored, archived and loaded: the bar contract's columns (others allowed)."""

    symbol: str = pa.Field(str_length={"min_value": 1})
    window_start: int = pa.Field(ge=0)
    window_end: int = pa.Field(ge=0)
    open: float = pa.Field(gt=0)
    high: float = pa.Field(gt=0)
    low: float = pa.Field(gt=0)
    close: float = pa.Field(gt=0)
    volume: float = pa.Field(gt=0)
    notional: float = pa.Field(gt=0)
    vwap: float = pa.Field(gt=0)
    trade_count: int = pa.Field(ge=1)

    class Config:
        strict = False
        unique = ["symbol", "window_start"]

    @pa.dataframe_check
    @classmethod
    def window_end_after_start(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("window_end") > pl.col("window_start"))

    @pa.dataframe_check
    @classmethod
    def ohlc_holds_together(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("high") >= pl.max_horizontal("open", "close", "low"))
            & (pl.col("low") <= pl.min_horizontal("open", "close"))
        )

    @pa.dataframe_check
    @classmethod
    def vwap_within_low_high(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("vwap") >= pl.col("low") * (1 - _REL)) & (pl.col("vwap") <= pl.col("high") * (1 + _REL))
        )


class LandedTrades(pa.DataFrameModel):
    """Raw trades as landed (valid or not: reconciliation judges them), in arrival order."""

    ts_ms: int = pa.Field(nullable=True)
    symbol: str = pa.Field(nullable=True)
    price: float = pa.Field(nullable=True)
    size: float = pa.Field(nullable=True)
    trade_id: int = pa.Field(nullable=True)
    partition: pl.Int32 = pa.Field(ge=0)
    row: int = pa.Field(ge=0)

    class Config:
        strict = False

    @pa.dataframe_check
    @classmethod
    def in_arrival_order(cls, data: PolarsData) -> pl.LazyFrame:
        """Sorted by (partition, row): the order the lateness rule is applied in."""
        previous = pl.struct("partition", "row").shift(1)
        return data.lazyframe.select(
            previous.is_null()
            | (pl.col("partition") > previous.struct.field("partition"))
            | (
                (pl.col("partition") == previous.struct.field("partition"))
                & (pl.col("row") >= previous.struct.field("row"))
            )
        )


def validated_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """A pandas frame of golden bars, checked against :class:`StoredBars` (returned unchanged)."""
    columns = list(StoredBars.to_schema().columns)
    StoredBars.validate(pl.from_pandas(frame[columns], schema_overrides={"symbol": pl.String}))
    return frame
