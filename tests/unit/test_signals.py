"""Signals over 1 s bars built from the real sample trades (data/samples): TA-Lib agreement, an independent
plain-Python reference, session resets, streaming == batch bit for bit, precision at BTC prices."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal, localcontext
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import talib
from typer.testing import CliRunner

from tickforge.platform.contracts import JSON_ENCODER, SIGNAL_DECODER, Signal
from tickforge.platform.signals.batch import compute_signals
from tickforge.platform.signals.cli import build_signals, signals_app
from tickforge.platform.signals.kernels import log_return
from tickforge.platform.signals.sessions import session_bounds, session_label_expr
from tickforge.platform.signals.streaming import SignalBatch, SignalState

NY = "America/New_York"
EQUITY_TZ = {"BAC": NY, "AIG": NY}
# Tokyo midnight is 11:00 New York time: a session boundary inside the demo day's trading.
TOKYO = "Asia/Tokyo"
EQUITY_TOKYO_TZ = {"BAC": TOKYO, "AIG": TOKYO}
INDICATORS = [
    "ema12",
    "ema26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi14",
    "boll_mid",
    "boll_upper",
    "boll_lower",
    "vwap_session",
    "vwap_rolling",
    "realized_volatility",
]


def bars_1s(trades: pl.DataFrame, ts: str) -> pl.DataFrame:
    """Plain 1 s bars of every trade (input prep only; the bar kernel has its own tests)."""
    return (
        trades.group_by("symbol", (pl.col(ts) // 1000 * 1000).alias("window_start"), maintain_order=True)
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("size").sum(),
            notional=(pl.col("price") * pl.col("size")).sum(),
            trade_count=pl.len(),
        )
        .with_columns(window_end=pl.col("window_start") + 1000, vwap=pl.col("notional") / pl.col("volume"))
        .sort("symbol", "window_start")
    )


@pytest.fixture(scope="module")
def equity_bars(samples: Path) -> pl.DataFrame:
    """BAC and AIG, 2013-10-08 04:00-20:00 New York (the demo day)."""
    trades = pl.read_csv(
        samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz",
        columns=["ts_ms", "symbol", "price", "size", "suspicious"],
        schema_overrides={"price": pl.Float64, "size": pl.Float64},
    )
    keep = (pl.col("suspicious") == 0) & pl.col("symbol").is_in(["BAC", "AIG"])
    return bars_1s(trades.filter(keep), "ts_ms")


@pytest.fixture(scope="module")
def crypto_bars(samples: Path) -> pl.DataFrame:
    """The six Binance instruments, 23:54 to 00:05 UTC: two UTC sessions."""
    trades = pl.read_csv(
        samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
        columns=["ts_trade_ms", "symbol", "price", "size"],
        schema_overrides={"price": pl.Float64, "size": pl.Float64},
    )
    return bars_1s(trades, "ts_trade_ms")


@pytest.fixture(scope="module")
def equity_signals(equity_bars: pl.DataFrame) -> pl.DataFrame:
    return compute_signals(equity_bars, EQUITY_TZ)


@pytest.fixture(scope="module")
def crypto_signals(crypto_bars: pl.DataFrame) -> pl.DataFrame:
    return compute_signals(crypto_bars)


def session_of(signals: pl.DataFrame, symbol: str, session: str) -> pl.DataFrame:
    out = signals.filter((pl.col("symbol") == symbol) & (pl.col("session") == session))
    assert out.height > 100, (symbol, session, out.height)
    return out


def assert_close(actual: pl.Series, expected: np.ndarray, rel: float = 1e-9, floor: np.ndarray | float = 0.0) -> None:
    """Same readiness (null <-> NaN/None) and ``|a - e| <= rel * max(|e|, floor)``."""
    got = actual.to_numpy().astype(np.float64)  # nulls become NaN
    want = np.array([np.nan if v is None else v for v in expected], dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{actual.name}: readiness differs")
    ready = ~np.isnan(want)
    scale = np.maximum(np.abs(want), floor)[ready]
    err = np.abs(got[ready] - want[ready])
    worst = int(np.argmax(err / scale)) if ready.any() else 0
    assert (err <= rel * scale).all(), f"{actual.name}: relative error {err[worst] / scale[worst]:.3g} at {worst}"


# --- TA-Lib ---------------------------------------------------------------------------------------

TALIB_SESSIONS = [
    ("equity", "BAC", "2013-10-08"),
    ("equity", "AIG", "2013-10-08"),
    ("crypto", "BTCUSDT-SPOT", "2024-08-08"),
    ("crypto", "ETHUSDT-SPOT", "2024-08-09"),
]


@pytest.mark.parametrize(("kind", "symbol", "session"), TALIB_SESSIONS)
def test_matches_talib_over_a_whole_session(kind, symbol, session, equity_signals, crypto_signals):
    signals = session_of(equity_signals if kind == "equity" else crypto_signals, symbol, session)
    close = signals["close"].to_numpy()
    upper, middle, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2, nbdevdn=2, matype=talib.MA_Type.SMA)
    assert_close(signals["ema12"], talib.EMA(close, timeperiod=12))
    assert_close(signals["ema26"], talib.EMA(close, timeperiod=26))
    assert_close(signals["rsi14"], talib.RSI(close, timeperiod=14))
    assert_close(signals["boll_mid"], middle)
    assert_close(signals["boll_upper"], upper)
    assert_close(signals["boll_lower"], lower)


def test_rsi_through_flat_stretches_follows_talib(equity_bars):
    """A session that opens flat has RSI 0 (gain + loss exactly 0); after moves, a long flat
    stretch decays both averages alike and keeps the last ratio, as TA-Lib does."""
    real = equity_bars.filter(pl.col("symbol") == "BAC")["close"].head(100).to_numpy()
    close = np.concatenate([np.full(30, real[0]), real, np.full(400, real[-1])])
    window_start = 1381150800000 + 1000 * np.arange(len(close))
    bars = pl.DataFrame(
        {"symbol": "BAC", "window_start": window_start, "close": close, "notional": close * 100, "volume": 100.0}
    ).with_columns(window_end=pl.col("window_start") + 1000)
    signals = compute_signals(bars, EQUITY_TZ)
    expected = talib.RSI(close, timeperiod=14)
    assert (expected[14:30] == 0.0).all() and 0.0 < expected[-1] < 100.0
    assert_close(signals["rsi14"], expected, floor=1.0)


# --- independent reference --------------------------------------------------------------------------


def reference_session(close: list[float], notional: list[float], volume: list[float]) -> dict[str, list]:
    """The issue's definitions, one session, written out with plain loops (None until ready)."""
    n = len(close)

    def ema(values: list, period: int) -> list:
        out: list = [None] * n
        first = next((i for i, v in enumerate(values) if v is not None), n)
        if n - first < period:
            return out
        level = sum(values[first : first + period]) / period
        out[first + period - 1] = level
        for i in range(first + period, n):
            level += 2.0 / (period + 1) * (values[i] - level)
            out[i] = level
        return out

    out: dict[str, list] = {"ema12": ema(close, 12), "ema26": ema(close, 26)}
    out["macd"] = [None if s is None else f - s for f, s in zip(out["ema12"], out["ema26"], strict=True)]
    out["macd_signal"] = ema(out["macd"], 9)
    out["macd_hist"] = [None if s is None else m - s for m, s in zip(out["macd"], out["macd_signal"], strict=True)]

    rsi: list = [None] * n
    avg_gain = avg_loss = 0.0
    for i in range(1, n):
        change = close[i] - close[i - 1]
        gain, loss = max(change, 0.0), max(-change, 0.0)
        if i <= 14:
            avg_gain += gain / 14
            avg_loss += loss / 14
        else:
            avg_gain = (avg_gain * 13 + gain) / 14
            avg_loss = (avg_loss * 13 + loss) / 14
        if i >= 14:
            total = avg_gain + avg_loss
            rsi[i] = 0.0 if total == 0 else 100.0 * avg_gain / total
    out["rsi14"] = rsi

    out["boll_mid"], out["boll_upper"], out["boll_lower"] = [None] * n, [None] * n, [None] * n
    out["vwap_rolling"], out["vwap_session"], out["realized_volatility"] = [None] * n, [None] * n, [None] * n
    with localcontext() as ctx:
        ctx.prec = 40
        squared = [None] + [float((Decimal(close[i]) / Decimal(close[i - 1])).ln() ** 2) for i in range(1, n)]
    cum_notional = cum_volume = 0.0
    for i in range(n):
        cum_notional += notional[i]
        cum_volume += volume[i]
        out["vwap_session"][i] = cum_notional / cum_volume
        if i >= 19:
            window = close[i - 19 : i + 1]
            mid, sd = statistics.fmean(window), statistics.pstdev(window)
            out["boll_mid"][i], out["boll_upper"][i], out["boll_lower"][i] = mid, mid + 2 * sd, mid - 2 * sd
            out["vwap_rolling"][i] = math.fsum(notional[i - 19 : i + 1]) / math.fsum(volume[i - 19 : i + 1])
        if i >= 60:
            out["realized_volatility"][i] = math.sqrt(math.fsum(squared[i - 59 : i + 1]))
    return out


REFERENCE_SESSIONS = [
    ("equity", "BAC", "2013-10-08"),
    ("crypto", "BTCUSDT-SPOT", "2024-08-08"),
    ("crypto", "BTCUSDT-SPOT", "2024-08-09"),
    ("crypto", "ETHUSD_PERP", "2024-08-09"),
]


@pytest.mark.parametrize(("kind", "symbol", "session"), REFERENCE_SESSIONS)
def test_matches_independent_reference(kind, symbol, session, equity_signals, crypto_signals, equity_bars, crypto_bars):
    signals = session_of(equity_signals if kind == "equity" else crypto_signals, symbol, session)
    bars = (equity_bars if kind == "equity" else crypto_bars).join(
        signals.select("symbol", "window_start"), on=["symbol", "window_start"], how="semi"
    )
    assert bars["window_start"].to_list() == signals["window_start"].to_list()
    ref = reference_session(bars["close"].to_list(), bars["notional"].to_list(), bars["volume"].to_list())
    close = bars["close"].to_numpy()
    for name in INDICATORS:
        # MACD values cross zero: their error is judged against the price level (1e-12 of it).
        floor = close * 1e-3 if name.startswith("macd") else (1.0 if name == "rsi14" else 0.0)
        assert_close(signals[name], ref[name], floor=floor)


def test_readiness_bars(crypto_signals):
    """First published bar (1-based) of each field, per the issue, in every session."""
    first_bar = {
        "ema12": 12,
        "ema26": 26,
        "macd": 26,
        "macd_signal": 34,
        "macd_hist": 34,
        "rsi14": 15,
        "boll_mid": 20,
        "boll_upper": 20,
        "boll_lower": 20,
        "vwap_session": 1,
        "vwap_rolling": 20,
        "realized_volatility": 61,
    }
    sessions = crypto_signals.filter(pl.len().over("symbol", "session") > 61).partition_by("symbol", "session")
    assert len(sessions) >= 10
    for frame in sessions:
        for name, bar in first_bar.items():
            nulls = frame[name].is_null().to_list()
            assert nulls == [True] * (bar - 1) + [False] * (frame.height - bar + 1), name


# --- sessions ---------------------------------------------------------------------------------------


def test_every_state_resets_at_a_session_boundary(equity_bars, equity_signals, crypto_bars, crypto_signals):
    """A session's signals are those of that session alone: nothing leaks from the day before."""
    cases = [
        # Tokyo's 2013-10-09 opens at 11:00 New York time, after a morning of BAC trading.
        (equity_bars, compute_signals(equity_bars, EQUITY_TOKYO_TZ), EQUITY_TOKYO_TZ, "BAC", "2013-10-09"),
        (crypto_bars, crypto_signals, "UTC", "BTCUSDT-SPOT", "2024-08-09"),
    ]
    for bars, signals, tz, symbol, day in cases:
        both_days = session_of(signals, symbol, day)
        keys = both_days.select("symbol", "window_start")
        day_bars = bars.join(keys, on=["symbol", "window_start"], how="semi")
        assert both_days.equals(compute_signals(day_bars, tz))
        first = both_days.row(0, named=True)
        assert first["vwap_session"] == day_bars["notional"][0] / day_bars["volume"][0]
        assert all(first[name] is None for name in INDICATORS if name != "vwap_session")
    btc_sessions = crypto_signals.filter(pl.col("symbol") == "BTCUSDT-SPOT")["session"].unique().sort()
    assert btc_sessions.to_list() == ["2024-08-08", "2024-08-09"]


def test_session_is_the_day_in_the_configured_zone(equity_bars):
    """Tokyo midnight is 15:00 UTC, inside the US trading day: each trading day spans two sessions."""
    bac = equity_bars.filter(pl.col("symbol") == "BAC")
    assert compute_signals(bac, EQUITY_TZ)["session"].unique().sort().to_list() == ["2013-10-08"]
    tokyo = compute_signals(bac, {"BAC": TOKYO})
    assert tokyo["session"].unique().sort().to_list() == ["2013-10-08", "2013-10-09"]
    tokyo_midnight = 1381244400000  # 2013-10-09 00:00 JST = 2013-10-08 15:00 UTC
    day_before, day = (tokyo.filter(pl.col("session") == d) for d in ("2013-10-08", "2013-10-09"))
    assert day_before["window_start"].max() < tokyo_midnight <= day["window_start"].min()
    assert day["ema12"][0] is None and day_before["ema12"][-1] is not None
    with pytest.raises(ValueError, match="unknown session time zone"):
        compute_signals(bac, "Mars/Olympus_Mons")


def test_session_bounds_span_the_local_day_across_dst():
    """2013-11-03 in New York lasts 25 hours (EDT to EST); the streaming state caches these bounds."""
    noon = 1383494400000  # 2013-11-03 16:00 UTC
    assert session_bounds(noon, NY) == ("2013-11-03", 1383451200000, 1383541200000)
    assert session_bounds(1383541200000 - 1, NY)[0] == "2013-11-03"
    assert session_bounds(1383541200000, NY)[0] == "2013-11-04"
    times = pl.DataFrame({"symbol": "X", "window_start": np.arange(1383440000000, 1383560000000, 600_000)})
    labels = times.select(session_label_expr(["X"], NY)).to_series().to_list()
    assert labels == [session_bounds(int(t), NY)[0] for t in times["window_start"]]


# --- streaming == batch -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_bars(equity_bars, crypto_bars) -> pl.DataFrame:
    """Crypto across UTC midnight plus BAC and AIG across Tokyo midnight (11:00 New York time)."""
    equity = equity_bars.filter(pl.col("window_start").is_between(1381240800000, 1381248000000))  # 10:00 .. 12:00 ET
    return pl.concat([crypto_bars, equity], how="vertical_relaxed")


def stream(state: SignalState, bars: pl.DataFrame, group: pl.Expr, newest_first: bool = False) -> SignalBatch:
    """One update per group of bars (all symbols interleaved), groups in time order; within a
    group the rows come oldest first or, to exercise the update's own ordering, newest first."""
    bars = bars.with_columns(group=group).sort(
        "group", "window_start", "symbol", descending=[False, newest_first, False]
    )
    cut = np.flatnonzero(np.diff(bars["group"].to_numpy())) + 1
    parts = []
    for chunk in np.split(np.arange(bars.height), cut):
        part = bars[chunk]
        parts.append(
            state.update(
                part["symbol"].to_numpy(),
                part["close"].to_numpy(),
                part["notional"].to_numpy(),
                part["volume"].to_numpy(),
                part["window_start"].to_numpy(),
                spread_bps=part["spread_bps"].to_numpy() if "spread_bps" in part.columns else None,
                imbalance=part["imbalance"].to_numpy() if "imbalance" in part.columns else None,
            )
        )
    return SignalBatch.concat(parts)


def assert_identical(streamed: pl.DataFrame, batch: pl.DataFrame) -> None:
    """Bit-identical: same rows, same nulls, equal floats (not approximately)."""
    streamed = streamed.sort("symbol", "window_start")
    assert streamed.columns == batch.columns and streamed.height == batch.height
    for name in batch.columns:
        a, b = streamed[name], batch[name]
        assert a.is_null().to_list() == b.is_null().to_list(), name
        assert (a.drop_nulls() == b.drop_nulls()).all(), f"{name}: {(a != b).sum()} values differ"


def test_streaming_equals_batch_bit_for_bit(mixed_bars):
    expected = compute_signals(mixed_bars, EQUITY_TOKYO_TZ)
    streamed = stream(SignalState(EQUITY_TOKYO_TZ), mixed_bars, pl.col("window_end"))
    assert_identical(streamed.to_polars(), expected)
    assert streamed.to_polars()["session"].n_unique() == 4


def test_streaming_catch_up_batches_snapshot_and_replay(mixed_bars):
    """Many bars per symbol per update, a snapshot taken mid-way, a restore, and a replay from before
    the snapshot: replayed bars are skipped and the rest equal the batch values."""
    expected = compute_signals(mixed_bars, EQUITY_TOKYO_TZ)
    cut = 1381242600000  # 10:30 ET on 2013-10-08, before Tokyo midnight
    state = SignalState(EQUITY_TOKYO_TZ)
    minute = pl.col("window_start") // 60_000
    first = stream(state, mixed_bars.filter(pl.col("window_start") < cut), minute, newest_first=True)
    restored = SignalState.from_bytes(state.to_bytes())
    assert restored.to_dict() == state.to_dict()
    replay = mixed_bars.filter(pl.col("window_start") >= cut - 600_000)
    second = stream(restored, replay, minute, newest_first=True)
    assert len(second) == mixed_bars.filter(pl.col("window_start") >= cut).height
    assert_identical(SignalBatch.concat([first, second]).to_polars(), expected)


def test_streaming_duplicates_in_one_update(crypto_bars):
    """Two bars of one symbol in one call apply in time order; a repeated bar is skipped."""
    btc = crypto_bars.filter(pl.col("symbol") == "BTCUSDT-PERP").head(40)
    state = SignalState()
    rows = [5, 3, 3, 4]  # out of order, bar 3 twice
    out = state.update(
        ["BTCUSDT-PERP"] * 4,
        btc["close"].gather(rows).to_numpy(),
        btc["notional"].gather(rows).to_numpy(),
        btc["volume"].gather(rows).to_numpy(),
        btc["window_start"].gather(rows).to_numpy(),
    )
    assert out.index.tolist() == [0, 1, 3]  # results in input order, the repeat left out
    assert out.window_start.tolist() == btc["window_start"].gather([5, 3, 4]).to_list()
    assert_identical(out.to_polars(), compute_signals(btc.slice(3, 3)))
    again = state.update(["BTCUSDT-PERP"], [1.0], [1.0], [1.0], btc["window_start"].gather([4]).to_numpy())
    assert len(again) == 0 and state.symbols == ("BTCUSDT-PERP",)


# --- precision at BTC prices ----------------------------------------------------------------------


def test_precision_at_btc_prices_with_tiny_moves(crypto_bars, crypto_signals):
    """Bollinger width and realized volatility against exact arithmetic on BTC (~61,000, 0.01 ticks).

    The band tolerance is tight enough that the textbook one-pass variance (mean of squares minus
    square of mean) fails it on the same data.
    """
    for symbol in ("BTCUSDT-SPOT", "BTCUSDT-PERP"):
        signals = crypto_signals.filter(pl.col("symbol") == symbol)
        ready = signals.filter(pl.col("realized_volatility").is_not_null())
        assert ready.height > 200
        cents = [round(c * 100) for c in signals["close"].to_list()]
        assert all(abs(c / 100 - p) < 1e-9 for c, p in zip(cents, signals["close"].to_list(), strict=True))
        index = {ws: i for i, ws in enumerate(signals["window_start"].to_list())}
        naive_fails = 0
        for row in ready.iter_rows(named=True):
            i = index[row["window_start"]]
            window = cents[i - 19 : i + 1]
            exact_var_cents2 = (20 * sum(c * c for c in window) - sum(window) ** 2) / 400  # exact ints, one rounding
            sigma = math.sqrt(exact_var_cents2) / 100
            mid = row["boll_mid"]
            tol = 1e-9 * 2 * sigma + 4 * math.ulp(mid)  # the inputs themselves are 1/2 ulp from whole cents
            assert abs((row["boll_upper"] - mid) - 2 * sigma) <= tol, (symbol, row["window_start"])
            assert abs((mid - row["boll_lower"]) - 2 * sigma) <= tol, (symbol, row["window_start"])
            assert abs(mid - sum(window) / 2000) <= 1e-13 * mid
            floats = [c / 100 for c in window]
            one_pass = math.sqrt(max(sum(x * x for x in floats) / 20 - (sum(floats) / 20) ** 2, 0.0))
            naive_fails += abs(2 * one_pass - 2 * sigma) > tol

            closes = [c / 100 for c in cents[i - 60 : i + 1]]
            with localcontext() as ctx:
                ctx.prec = 40
                exact_rv = math.sqrt(sum(float((Decimal(b) / Decimal(a)).ln()) ** 2 for a, b in pairwise(closes)))
            assert abs(row["realized_volatility"] - exact_rv) <= 1e-9 * exact_rv, (symbol, row["window_start"])
        assert naive_fails > ready.height // 2

        # Each return keeps its digits: a 0.01 move at 61,000 is 1.6e-7, and log(c) - log(p)
        # would carry a 1e-15 absolute error (1e-8 of it).
        closes = signals["close"].to_numpy()
        returns = log_return(closes[:-1], closes[1:])
        with localcontext() as ctx:
            ctx.prec = 40
            exact = [float((Decimal(b) / Decimal(a)).ln()) for a, b in pairwise(closes.tolist())]
        moved = np.flatnonzero(np.asarray(exact) != 0)
        assert len(moved) > 200
        np.testing.assert_allclose(returns[moved], np.asarray(exact)[moved], rtol=1e-13, atol=0)


# --- messages, carried fields, CLI ------------------------------------------------------------------


def test_signal_messages_and_carried_fields(crypto_bars):
    btc = crypto_bars.filter(pl.col("symbol") == "BTCUSDT-SPOT").head(70)
    spread = np.where(np.arange(70) % 7 == 0, np.nan, np.linspace(0.1, 0.8, 70))
    btc = btc.with_columns(spread_bps=pl.Series(spread).fill_nan(None), imbalance=pl.lit(0.25))
    batch = compute_signals(btc)
    assert batch["spread_bps"].to_list() == btc["spread_bps"].to_list()
    streamed = stream(SignalState(), btc, pl.col("window_end"))
    assert_identical(streamed.to_polars(), batch)

    messages = streamed.to_signals(np.arange(100, 170), is_final=True)
    assert [m.seq for m in messages] == list(range(100, 170))
    assert messages[0].ema12 is None and messages[0].spread_bps is None and messages[0].vwap_session is not None
    last = messages[-1]
    assert last.realized_volatility == batch["realized_volatility"][-1] and last.imbalance == 0.25
    assert SIGNAL_DECODER.decode(JSON_ENCODER.encode(last)) == last
    assert isinstance(last, Signal) and b'"ema12":null' in JSON_ENCODER.encode(messages[0])
    with pytest.raises(ValueError, match="seq numbers"):
        streamed.to_signals([1, 2], is_final=False)


def test_input_checks(crypto_bars):
    with pytest.raises(ValueError, match="repeat"):
        compute_signals(pl.concat([crypto_bars.head(3), crypto_bars.head(1)]))
    with pytest.raises(ValueError, match="lack columns"):
        compute_signals(crypto_bars.drop("notional"))
    empty = compute_signals(crypto_bars.head(0))
    assert empty.is_empty() and empty.columns == compute_signals(crypto_bars.head(5)).columns
    assert len(SignalState().update([], [], [], [], [])) == 0
    state = SignalState()
    with pytest.raises(ValueError, match="length"):
        state.update(["A", "B"], [1.0], [1.0], [1.0], [0, 0])
    assert state.symbols == ()


def test_build_signals_cli(tmp_path, crypto_bars, crypto_signals):
    bars_path = tmp_path / "bars_1s.parquet"
    crypto_bars.write_parquet(bars_path)
    path = build_signals(bars_path, tmp_path / "api")
    assert path == tmp_path / "api" / "signals.parquet"
    assert pl.read_parquet(path).equals(crypto_signals)

    def cli(out: Path, zone: str):
        args = ["build", "--bars", str(bars_path), "--out", str(out), "--session-tz", zone]
        return CliRunner().invoke(signals_app, args)

    result = cli(tmp_path / "cli", "UTC")
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "cli" / "signals.parquet").equals(crypto_signals)
    bad = cli(tmp_path / "bad", "Nowhere/City")
    assert bad.exit_code != 0 and "unknown session time zone" in bad.output
