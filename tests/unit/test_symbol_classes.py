"""Symbol classes: listed symbols keep their class, unlisted ones are classed by their spelling,
and trading sessions and regular hours follow the class (a ticker the settings never named trades
its venue's session)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from tickforge.platform.io.files import read_trades
from tickforge.platform.settings import SignalSettings
from tickforge.trading.sessions import SessionRule, regular_hours

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
EQUITY = SAMPLES / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
CRYPTO = SAMPLES / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz"


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("SPY", "us_equity"),
        ("MSFT", "us_equity"),
        ("BRK.B", "us_equity"),
        ("GBPUSD", "fx"),
        ("SOLUSDT-PERP", "crypto"),
        ("ETHUSD_PERP", "crypto"),
        ("spy", None),
        ("TOOLONGX", None),
    ],
)
def test_a_symbol_is_classed_by_its_listing_then_its_spelling(symbol, expected):
    assert SignalSettings().classes().of(symbol) == expected


def test_a_listing_overrides_the_spelling_and_a_bad_pattern_is_refused():
    settings = SignalSettings(symbol_classes={"crypto": ["BTC"]})
    assert settings.classes().of("BTC") == "crypto" and settings.session_tz()["BTC"] == "UTC"
    assert settings.session_tz().get("MSFT") == "America/New_York" and "nope" not in settings.session_tz()
    with pytest.raises(ValidationError, match="class_patterns.fx"):
        SignalSettings(class_patterns={"fx": "[A-Z"})


def test_an_unlisted_equity_trades_the_regular_session_and_crypto_its_utc_day():
    rule = SessionRule.from_settings(SignalSettings(symbol_classes={}))
    ten_am = 1381240800000  # 2013-10-08 10:00 New York
    equity = rule.session("MSFT", ten_am)
    assert (equity.open_ms, equity.close_ms) == (ten_am - 30 * 60_000, ten_am + 6 * 3_600_000)
    crypto = rule.session("SOLUSDT-PERP", ten_am)
    assert crypto.close_ms - crypto.open_ms == 86_400_000 and crypto.open_ms % 86_400_000 == 0


def test_regular_hours_by_class_on_real_trades():
    """The equity day classed by spelling alone is cut exactly as when it is listed; the crypto
    minutes around UTC midnight (evening in New York) are all kept."""
    equity = read_trades(EQUITY).data
    listed = regular_hours(equity)
    unlisted = regular_hours(equity, rule=SessionRule.from_settings(SignalSettings(symbol_classes={})))
    assert 0 < listed.height < equity.height and unlisted.equals(listed)
    local = pl.from_epoch("ts_ms", time_unit="ms").dt.convert_time_zone("America/New_York").dt.time()
    assert listed.select(local.min()).item().isoformat() >= "09:30:00"
    assert listed.select(local.max()).item().isoformat() < "16:00:00"
    crypto = read_trades(CRYPTO).data
    assert regular_hours(crypto).height == crypto.height
    both = pl.concat([equity, crypto], how="diagonal_relaxed")
    assert regular_hours(both).height == listed.height + crypto.height
