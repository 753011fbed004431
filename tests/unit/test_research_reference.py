"""``tickforge backtest run`` against an independent per-bar reference, trade by trade, on real bars.

The reference below is written from the issue's contract with plain Python loops and lists: its
own indicators (TA-Lib definitions), its own rules, its own book. It shares no code with the
engine. (``bench/bench_backtest.py`` times it as the per-bar Python baseline.)
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

NY = ZoneInfo("America/New_York")


# --- reference indicators ---------------------------------------------------------------------------


def ref_ema(x: list[float], period: int) -> list[float | None]:
    out: list[float | None] = [None] * len(x)
    if len(x) < period:
        return out
    value = sum(x[:period]) / period
    out[period - 1] = value
    alpha = 2.0 / (period + 1)
    for i in range(period, len(x)):
        value = alpha * x[i] + (1 - alpha) * value
        out[i] = value
    return out


def ref_wilder(x: list[float], period: int) -> list[float | None]:
    out: list[float | None] = [None] * len(x)
    if len(x) < period:
        return out
    value = sum(x[:period]) / period
    out[period - 1] = value
    for i in range(period, len(x)):
        value = value + (x[i] - value) / period
        out[i] = value
    return out


def ref_rsi(close: list[float], period: int) -> list[float | None]:
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    avg_gain, avg_loss = ref_wilder(gains, period), ref_wilder(losses, period)
    out: list[float | None] = [None]
    for a, b in zip(avg_gain, avg_loss, strict=True):
        out.append(None if a is None else (0.0 if a + b == 0 else 100.0 * a / (a + b)))
    return out


def ref_macd(close: list[float], fast: int, slow: int, signal: int) -> tuple[list, list]:
    n = len(close)
    slow_ema = ref_ema(close, slow)
    fast_ema = [None] * (slow - fast) + ref_ema(close[slow - fast :], fast)  # TA-Lib: seeds end together
    line = [None if slow_ema[i] is None else fast_ema[i] - slow_ema[i] for i in range(n)]
    sig = [None] * (slow - 1) + ref_ema([v for v in line[slow - 1 :]], signal) if n >= slow else [None] * n
    ready = slow + signal - 2
    return (
        [v if i >= ready else None for i, v in enumerate(line)],
        [v if i >= ready else None for i, v in enumerate(sig)],
    )


def ref_bbands(close: list[float], period: int, ndev: float) -> tuple[list, list, list]:
    lower, mid, upper = [None] * len(close), [None] * len(close), [None] * len(close)
    for i in range(period - 1, len(close)):
        w = close[i - period + 1 : i + 1]
        m = sum(w) / period
        sd = math.sqrt(sum((v - m) ** 2 for v in w) / period)
        lower[i], mid[i], upper[i] = m - ndev * sd, m, m + ndev * sd
    return lower, mid, upper


# --- reference rules: target per bar ---------------------------------------------------------------


def ref_targets(name: str, bars: dict, p: dict) -> list[int]:
    c, h, lo = bars["close"], bars["high"], bars["low"]
    n = len(c)
    out, prev = [], 0
    if name == "ema_cross":
        f, s = ref_ema(c, p["fast"]), ref_ema(c, p["slow"])
        for i in range(n):
            t = 0
            if f[i] is not None and s[i] is not None:
                t = 1 if f[i] > s[i] else (-1 if f[i] < s[i] and p.get("allow_short") else 0)
            out.append(t)
        return out
    if name == "macd_cross":
        line, sig = ref_macd(c, p["fast"], p["slow"], p["signal"])
        for i in range(n):
            t = 0
            if line[i] is not None:
                t = 1 if line[i] > sig[i] else (-1 if line[i] < sig[i] and p.get("allow_short") else 0)
            out.append(t)
        return out
    if name == "rsi_reversion":
        r = ref_rsi(c, p["period"])
        for i in range(n):
            if r[i] is not None:
                if prev == 0 and r[i] < p["lower"]:
                    prev = 1
                elif prev == 1 and r[i] > p["upper"]:
                    prev = 0
            out.append(prev)
        return out
    if name == "donchian_breakout":
        k = p["period"]
        for i in range(n):
            if i >= k:
                top, bottom = max(h[i - k : i]), min(lo[i - k : i])
                if prev == 0 and c[i] > top:
                    prev = 1
                elif prev == 1 and c[i] < bottom:
                    prev = 0
            out.append(prev)
        return out
    if name == "bollinger_reversion":
        lower, mid, upper = ref_bbands(c, p["period"], p["ndev"])
        for i in range(n):
            if mid[i] is not None:
                if prev == 0:
                    prev = 1 if c[i] < lower[i] else (-1 if p.get("allow_short") and c[i] > upper[i] else 0)
                elif prev == 1 and c[i] >= mid[i]:
                    prev = 0
                elif prev == -1 and c[i] <= mid[i]:
                    prev = 0
            out.append(prev)
        return out
    if name == "vwap_reversion":
        k, band = p["period"], p["band_bps"] / 10_000
        value = [(a + b + d) / 3 * v for a, b, d, v in zip(h, lo, c, bars["volume"], strict=True)]
        for i in range(n):
            if i >= k - 1 and sum(bars["volume"][i - k + 1 : i + 1]) > 0:
                vwap = sum(value[i - k + 1 : i + 1]) / sum(bars["volume"][i - k + 1 : i + 1])
                if prev == 0:
                    prev = (
                        1
                        if c[i] < vwap * (1 - band)
                        else (-1 if p.get("allow_short") and c[i] > vwap * (1 + band) else 0)
                    )
                elif prev == 1 and c[i] >= vwap:
                    prev = 0
                elif prev == -1 and c[i] <= vwap:
                    prev = 0
            out.append(prev)
        return out
    if name == "orb_breakout":
        k, day, first = p["opening_bars"], None, 0
        for i in range(n):
            if bars["day"][i] != day:
                day, first = bars["day"][i], i
            if i - first < k:
                prev = 0
            else:
                top, bottom = max(h[first : first + k]), min(lo[first : first + k])
                if prev == 0:
                    prev = 1 if c[i] > top else (-1 if p.get("allow_short") and c[i] < bottom else 0)
                elif prev == 1 and c[i] < bottom:
                    prev = 0
                elif prev == -1 and c[i] > top:
                    prev = 0
            out.append(prev)
        return out
    raise AssertionError(name)


# --- reference book -------------------------------------------------------------------------------------


def ref_book(bars: dict, targets: list[int], fee_bps: float, slip_bps: float, cash0: float, intraday: bool) -> dict:
    """The execution contract, bar by bar."""
    f, s = fee_bps / 10_000, slip_bps / 10_000
    o, c, days = bars["open"], bars["close"], bars["day"]
    n = len(c)
    last_of_day = [intraday and (i == n - 1 or days[i + 1] != days[i]) for i in range(n)]
    cash, units, side = cash0, 0.0, 0
    trades, equity, position = [], [], []
    entry: dict = {}

    def close_at(price: float, i: int) -> None:
        nonlocal cash, units, side
        fill = price * (1 - s) if side > 0 else price * (1 + s)
        proceeds = units * fill - f * abs(units * fill)
        cash += proceeds
        trades.append(
            {
                "side": "long" if side > 0 else "short",
                "entry_bar": entry["bar"],
                "entry_price": entry["price"],
                "exit_bar": i,
                "exit_price": fill,
                "units": abs(units),
                "pnl": proceeds + entry["cash"],
            }
        )
        units, side = 0.0, 0

    for i in range(n):
        want = targets[i - 1] if i > 0 and not last_of_day[i - 1] else 0
        if want != side:
            if side != 0:
                close_at(o[i], i)
            if want != 0 and cash > 0:
                fill = o[i] * (1 + s) if want > 0 else o[i] * (1 - s)
                units = want * cash / (fill * (1 + f))
                spent = -(units * fill) - f * abs(units * fill)
                cash += spent
                side = want
                entry = {"bar": i, "price": fill, "cash": spent}
        position.append(side)
        if side != 0 and (i == n - 1 or last_of_day[i]):
            close_at(c[i], i)
        equity.append(cash + units * c[i])
    return {"trades": trades, "equity": equity, "position": position}


def ref_metrics(book: dict, cash0: float, bars_per_year: float) -> dict:
    eq = book["equity"]
    r = [eq[0] / cash0 - 1] + [eq[i] / eq[i - 1] - 1 for i in range(1, len(eq))]
    mean = sum(r) / len(r)
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r))
    peak, mdd = cash0, 0.0
    for e in eq:
        peak = max(peak, e)
        mdd = max(mdd, 1 - e / peak)
    trades = book["trades"]
    return {
        "total_return": eq[-1] / cash0 - 1,
        "sharpe": mean / sd * math.sqrt(bars_per_year) if sd > 0 else 0.0,
        "sortino": mean / down * math.sqrt(bars_per_year) if down > 0 else 0.0,
        "max_drawdown": mdd,
        "n_trades": len(trades),
        "win_rate": sum(t["pnl"] > 0 for t in trades) / len(trades) if trades else 0.0,
        "exposure": sum(p != 0 for p in book["position"]) / len(eq),
    }


# --- real bars -----------------------------------------------------------------------------------------


def daily_bars(path: Path) -> dict[str, dict]:
    """Adjusted daily bars per symbol from the shared CSV layout, read with the csv module's rules."""
    out: dict[str, dict] = {}
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        for line in fh:
            row = dict(zip(header, line.strip().split(","), strict=True))
            k = float(row["adj_factor"])
            d = date.fromisoformat(row["date"])
            b = out.setdefault(
                row["symbol"], {c: [] for c in ("time", "day", "open", "high", "low", "close", "volume")}
            )
            b["time"].append(int(datetime(d.year, d.month, d.day, tzinfo=NY).timestamp()) * 1000)
            b["day"].append(d)
            for col in ("open", "high", "low", "close"):
                b[col].append(float(row[col]) * k)
            b["volume"].append(float(row["volume"]))
    return out


def minute_bars(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        for line in fh:
            row = dict(zip(header, line.strip().split(","), strict=True))
            b = out.setdefault(
                row["symbol"], {c: [] for c in ("time", "day", "open", "high", "low", "close", "volume")}
            )
            ts = int(row["ts_ms"])
            b["time"].append(ts)
            b["day"].append(datetime.fromtimestamp(ts / 1000, NY).date())
            for col in ("open", "high", "low", "close", "volume"):
                b[col].append(float(row[col]))
    return out


SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
DAILY_FILE = SAMPLES / "us_equity_daily_bars_10_symbols_1998-2021.csv.gz"
FEE, SLIP, CASH = 1.5, 2.5, 100_000.0


def run_cli(bars: Path, strategy: str, params: dict, out: Path) -> dict[str, pl.DataFrame]:
    args = [
        sys.executable,
        "-m",
        "tickforge.cli",
        "backtest",
        "run",
        "--bars",
        str(bars),
        "--strategy",
        strategy,
        "--fee-bps",
        str(FEE),
        "--slippage-bps",
        str(SLIP),
        "--initial-cash",
        str(CASH),
        "--out",
        str(out),
    ]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {name: pl.read_parquet(out / f"{name}.parquet") for name in ("trades", "equity", "metrics")}


def assert_same(a: float, b: float, what: str) -> None:
    assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{what}: engine {a!r} reference {b!r}"


def compare(
    out: dict[str, pl.DataFrame],
    bars: dict[str, dict],
    strategy: str,
    params: dict,
    intraday: bool,
    bars_per_year: dict[str, float],
) -> int:
    checked = 0
    for symbol, b in bars.items():
        book = ref_book(b, ref_targets(strategy, b, params), FEE, SLIP, CASH, intraday)
        trades = out["trades"].filter(pl.col("symbol") == symbol).to_dicts()
        assert len(trades) == len(book["trades"]), f"{symbol}: {len(trades)} trades, reference {len(book['trades'])}"
        for k, (got, want) in enumerate(zip(trades, book["trades"], strict=True)):
            assert got["side"] == want["side"], (symbol, k)
            assert got["entry_time"] == b["time"][want["entry_bar"]], (symbol, k)
            assert got["exit_time"] == b["time"][want["exit_bar"]], (symbol, k)
            for field in ("entry_price", "exit_price", "units", "pnl"):
                assert_same(got[field], want[field], f"{symbol} trade {k} {field}")
        equity = out["equity"].filter(pl.col("symbol") == symbol)
        assert equity["window_start"].to_list() == b["time"]
        assert equity["position"].to_list() == book["position"]
        for i, (got, want) in enumerate(zip(equity["equity"].to_list(), book["equity"], strict=True)):
            assert_same(got, want, f"{symbol} equity at bar {i}")
        metrics = out["metrics"].filter(pl.col("symbol") == symbol).row(0, named=True)
        stored = json.loads(metrics["params"])
        assert {k: stored[k] for k in params} == params
        for name, want in ref_metrics(book, CASH, bars_per_year[symbol]).items():
            assert_same(float(metrics[name]), float(want), f"{symbol} {name}")
        checked += len(trades)
    return checked


DAILY_CASES = [
    ("ema_cross", {"fast": 10, "slow": 50}),
    ("ema_cross", {"fast": 20, "slow": 60, "allow_short": True}),
    ("rsi_reversion", {"period": 14, "lower": 30, "upper": 70}),
    ("donchian_breakout", {"period": 20}),
    ("macd_cross", {"fast": 12, "slow": 26, "signal": 9, "allow_short": True}),
    ("bollinger_reversion", {"period": 20, "ndev": 2.0, "allow_short": True}),
    ("vwap_reversion", {"period": 10, "band_bps": 150.0}),
]


@pytest.fixture(scope="module")
def daily() -> dict[str, dict]:
    return daily_bars(DAILY_FILE)


@pytest.mark.parametrize(("strategy", "params"), DAILY_CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(DAILY_CASES)])
def test_run_equals_reference_on_daily_bars(strategy, params, daily, tmp_path):
    out = run_cli(DAILY_FILE, strategy, params, tmp_path)
    assert sorted(out["metrics"]["symbol"].to_list()) == sorted(daily)
    checked = compare(out, daily, strategy, params, intraday=False, bars_per_year={s: 252.0 for s in daily})
    assert checked > 20  # the strategies really trade on these bars


def minute_parquet(shared_data: Path, tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    source = shared_data / "us_equity_minute_bars_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz"
    frame = (
        pl.read_csv(source)
        .rename({"ts_ms": "window_start"})
        .with_columns(window_end=pl.col("window_start") + 60_000, timeframe=pl.lit("1m"))
    )
    path = tmp_path / "bars_1m.parquet"
    frame.write_parquet(path)
    return path, minute_bars(source)


@pytest.mark.full_data
@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("orb_breakout", {"opening_bars": 30, "allow_short": True}),
        ("ema_cross", {"fast": 5, "slow": 30, "allow_short": True}),
    ],
)
def test_run_equals_reference_on_minute_bars_flat_at_each_session_end(strategy, params, shared_data, tmp_path):
    path, bars = minute_parquet(shared_data, tmp_path)
    out = run_cli(path, strategy, params, tmp_path / "out")
    per_session = {s: 252.0 * sorted(pl.Series(b["day"]).value_counts()["count"].to_list())[2] for s, b in bars.items()}
    assert compare(out, bars, strategy, params, intraday=True, bars_per_year=per_session) > 10
    equity = out["equity"].with_columns(
        day=pl.from_epoch("window_start", "ms").dt.convert_time_zone("America/New_York").dt.date()
    )
    last = equity.group_by("symbol", "day").agg(pl.col("window_start").max())
    trades = out["trades"]
    # no trade spans two sessions, and every session's last bar ends flat (closed at its close)
    spans = trades.with_columns(
        d0=pl.from_epoch("entry_time", "ms").dt.convert_time_zone("America/New_York").dt.date(),
        d1=pl.from_epoch("exit_time", "ms").dt.convert_time_zone("America/New_York").dt.date(),
    )
    assert (spans["d0"] == spans["d1"]).all()
    closing = trades.join(last, left_on=["symbol", "exit_time"], right_on=["symbol", "window_start"], how="inner")
    assert closing.height > 0
