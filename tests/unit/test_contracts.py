import json

import msgspec
import numpy as np
import pytest

from tickforge.platform.contracts import (
    BATCH_DECODER,
    BATCH_ENCODER,
    SCHEMA_DIR,
    QuoteBatch,
    Trade,
    TradeBatch,
    json_schemas,
)


def test_schema_files_match_the_contracts():
    """Regenerate with `python -m tickforge.platform.contracts` when a contract changes."""
    expected = json_schemas()
    on_disk = {p.stem: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == json.loads(json.dumps(expected))


def test_trade_batch_round_trip_keeps_columns_exactly():
    ts = np.array([1, 2, 2, 5], np.int64)
    price = np.array([10.5, 10.25, 1e-8, 61_234.99])
    size = np.array([1.0, 0.001, 3.0, 2.5])
    ids = np.array([7, 8, 9, 10], np.int64)
    raw = BATCH_ENCODER.encode(TradeBatch.from_arrays("BTCUSDT-SPOT", ts, price, size, ids))
    decoded = BATCH_DECODER.decode(raw)
    assert isinstance(decoded, TradeBatch) and decoded.symbol == "BTCUSDT-SPOT"
    for got, want in zip(decoded.arrays(), (ts, price, size, ids), strict=True):
        np.testing.assert_array_equal(got, want)


def test_quote_batch_is_told_apart_from_trade_batch():
    nan = np.array([np.nan])
    raw = BATCH_ENCODER.encode(
        QuoteBatch.from_arrays("EURUSD", np.array([1]), np.array([1.1]), np.array([1.2]), nan, nan)
    )
    assert isinstance(BATCH_DECODER.decode(raw), QuoteBatch)


def test_trade_json_rejects_a_string_price():
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"ts_ms": 1, "symbol": "X", "price": "abc", "size": 1}', type=Trade)
