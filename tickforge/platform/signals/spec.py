"""The one definition of the 1 s bar signals: periods, readiness and output columns.

Batch (:mod:`.batch`) and streaming (:mod:`.streaming`) both read these constants, so a period
cannot differ between the offline and the live side.
"""

from __future__ import annotations

from typing import Final

EMA_FAST: Final = 12
EMA_SLOW: Final = 26
MACD_SIGNAL: Final = 9
RSI_PERIOD: Final = 14
BOLL_PERIOD: Final = 20
BOLL_NDEV: Final = 2.0
VWAP_WINDOW: Final = 20
RV_WINDOW: Final = 60  # log returns in the realized volatility window

# First bar of a session (1-based) at which each field is published; null before.
READY_FROM_BAR: Final[dict[str, int]] = {
    "ema12": EMA_FAST,
    "ema26": EMA_SLOW,
    "macd": EMA_SLOW,
    "macd_signal": EMA_SLOW + MACD_SIGNAL - 1,
    "macd_hist": EMA_SLOW + MACD_SIGNAL - 1,
    "rsi14": RSI_PERIOD + 1,
    "boll_mid": BOLL_PERIOD,
    "boll_upper": BOLL_PERIOD,
    "boll_lower": BOLL_PERIOD,
    "vwap_session": 1,
    "vwap_rolling": VWAP_WINDOW,
    "realized_volatility": RV_WINDOW + 1,
}

INDICATOR_FIELDS: Final = tuple(READY_FROM_BAR)
CARRIED_FIELDS: Final = ("spread_bps", "imbalance")
VALUE_FIELDS: Final = INDICATOR_FIELDS + CARRIED_FIELDS
KEY_COLUMNS: Final = ("symbol", "window_start", "window_end", "close", "session")
SIGNAL_COLUMNS: Final = KEY_COLUMNS + VALUE_FIELDS
BAR_INPUT_COLUMNS: Final = ("symbol", "window_start", "window_end", "close", "volume", "notional")
