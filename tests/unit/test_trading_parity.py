"""The paper path on the real demo day (2013-10-08: SPY/BAC/AIG trades, BAC NBBO) through
``tickforge paper replay``, with a hand-written picks file of intraday strategies on 1m and 5m bars
built from the regular session's trades (``--regular-hours``: the session's last bar closes at
16:00; over all hours it closes at 20:00:00, 97 ms before the data ends, where BAC shows 500
shares and a larger closing order cannot be completed on paper).

- Parity: every pick's runner decision equals the backtest's (``engine.backtest`` on the same
  bars) at every bar, and the check fails on one changed decision.
- Fills: every taker fill is at the opposite best of the uncrossed quote prevailing at it, never
  more than its displayed size; no order overfills; the checks fail on a moved price or size.
- Accounting identity after every fill; intraday books flat at the session end, closed by an
  order decided at the session's last bar.
- SPY has no quotes in the data: its orders are rejected by the reference-price rule, with it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tickforge.cli import app
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import read_quotes, read_trades
from tickforge.research.bars import split_bars
from tickforge.trading.audit import identity_violations, overfill_violations, taker_fill_violations
from tickforge.trading.io import read_picks_file
from tickforge.trading.orders import client_order_id
from tickforge.trading.parity import decision_parity
from tickforge.trading.runner import StrategyRunner
from tickforge.trading.sessions import regular_hours

TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
QUOTES = "us_equity_nbbo_BAC_2013-10-08.csv.gz"
PICKS_CSV = """\
symbol,strategy,timeframe,params,bucket,weight
BAC,ema_cross,1m,"{""fast"": 5, ""slow"": 20, ""allow_short"": true}",MED,0.25
BAC,rsi_reversion,1m,"{""period"": 14, ""lower"": 30, ""upper"": 70}",LOW,0.25
BAC,orb_breakout,5m,"{""opening_bars"": 6, ""allow_short"": true}",HIGH,0.25
BAC,bollinger_reversion,5m,"{""period"": 20, ""ndev"": 2.0, ""allow_short"": true}",LOW,0.25
SPY,vwap_reversion,5m,"{""period"": 12, ""band_bps"": 10}",LOW,0.25
"""


@pytest.fixture(scope="module")
def day(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("paper")
    picks_path = tmp / "picks.csv"
    picks_path.write_text(PICKS_CSV)
    out = tmp / "out"
    result = CliRunner().invoke(
        app,
        [
            "paper",
            "replay",
            "--trades",
            str(samples / TRADES),
            "--quotes",
            str(samples / QUOTES),
            "--picks",
            str(picks_path),
            "--bars-from",
            "trades",
            "--regular-hours",
            "--latency-ms",
            "5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    trades = read_trades(samples / TRADES)
    return {
        "summary": json.loads(result.stdout),
        "picks": read_picks_file(picks_path),
        "bars": build_bars(dataclasses.replace(trades, data=regular_hours(trades.data)), ["1m", "5m"]).bars,
        "quotes": read_quotes(samples / QUOTES).data,
        **{
            name: pl.read_parquet(out / f"{name}.parquet")
            for name in ("orders", "fills", "positions", "pnl", "decisions")
        },
    }


def test_output_files_have_the_issue_columns(day):
    assert day["orders"].columns[:9] == [
        "client_order_id",
        "symbol",
        "side",
        "quantity",
        "order_type",
        "limit_price",
        "decision_ts_ms",
        "arrival_ts_ms",
        "status",
    ]
    assert day["fills"].columns[:7] == ["client_order_id", "symbol", "side", "ts_ms", "price", "quantity", "liquidity"]
    assert set(day["orders"]["side"]) <= {"buy", "sell"} and set(day["fills"]["liquidity"]) <= {"maker", "taker"}
    assert (day["orders"]["arrival_ts_ms"] - day["orders"]["decision_ts_ms"] == 5).all()
    assert day["summary"]["parity"] is True and day["summary"]["illegal_transitions"] == 0


def test_runner_decisions_equal_the_backtest_bar_for_bar(day):
    report = decision_parity(day["decisions"], day["bars"], day["picks"])
    assert [p.passed for p in report] == [True] * len(day["picks"]), report
    assert all(p.backtest_changes >= 2 for p in report), report  # every pick traded: the check is exercised
    series = {(s.symbol, tf): len(s) for tf in ("1m", "5m") for s in split_bars(day["bars"][tf], tf)[0]}
    assert [p.bars for p in report] == [series[(p.symbol, p.timeframe)] for p in day["picks"]]


def test_parity_fails_on_one_changed_decision(day):
    d = day["decisions"]
    book = day["picks"][0].book
    i = d.with_row_index().filter((pl.col("book") == book) & (pl.col("target") != 0))["index"][0]
    changed = d.with_columns(
        target=pl.when(pl.int_range(pl.len()) == i).then(0).otherwise(pl.col("target")).cast(pl.Int8)
    )
    report = {p.book: p for p in decision_parity(changed, day["bars"], day["picks"])}
    assert report[book].mismatches == 1 and not report[book].passed
    dropped = {p.book: p for p in decision_parity(d.filter(pl.int_range(pl.len()) != i), day["bars"], day["picks"])}
    assert not dropped[book].passed


def test_every_taker_fill_is_at_the_opposite_best_within_the_displayed_size(day):
    fills, quotes = day["fills"], day["quotes"]
    assert fills.filter(pl.col("liquidity") == "taker").height > 50
    assert taker_fill_violations(fills, quotes) == []
    assert overfill_violations(day["orders"], fills) == []
    moved = fills.with_columns(
        price=pl.when(pl.int_range(pl.len()) == 0).then(pl.col("price") + 0.01).otherwise(pl.col("price"))
    )
    assert len(taker_fill_violations(moved, quotes)) == 1
    first = fills.row(0, named=True)
    ts = first["ts_ms"]
    shown = quotes.filter((pl.col("symbol") == first["symbol"]) & (pl.col("ts_ms") <= ts)).row(-1, named=True)
    size = shown["ask_size" if first["side"] == "buy" else "bid_size"]
    too_big = fills.with_columns(
        quantity=pl.when(pl.int_range(pl.len()) == 0).then(size + 1).otherwise(pl.col("quantity"))
    )
    assert any("displayed" in v for v in taker_fill_violations(too_big, quotes))


def test_accounting_identity_after_every_fill(day):
    pnl, fills = day["pnl"], day["fills"]
    assert pnl.height == fills.height + 1 and pnl["fill_id"].drop_nulls().to_list() == fills["fill_id"].to_list()
    assert identity_violations(pnl) == []
    off = pnl.with_columns(
        identity_gap=pl.when(pl.int_range(pl.len()) == 3).then(0.5).otherwise(pl.col("identity_gap"))
    )
    assert len(identity_violations(off)) == 1
    last = pnl.row(-1, named=True)
    assert last["equity"] == pytest.approx(
        100_000 + last["realized_pnl"] + last["unrealized_pnl"] - last["fees"], abs=1e-6
    )
    assert last["fees"] == pytest.approx(fills["fee"].sum()) and last["fees"] > 0


def test_intraday_books_are_flat_at_session_end_by_an_order_at_the_last_bar(day):
    final = day["positions"].filter(pl.col("fill_id").is_null())
    assert set(final["book"]) == {p.book for p in day["picks"] if p.symbol == "BAC"}
    assert (final["quantity"] == 0).all(), final
    d, orders = day["decisions"], day["orders"]
    closed_at_the_bell = 0
    for pick in day["picks"]:
        if pick.symbol != "BAC":
            continue
        mine = d.filter(pl.col("book") == pick.book)
        last = mine.row(-1, named=True)
        assert last["session_last"] and last["target"] == 0 and mine["session_last"].sum() == 1
        closing = orders.filter((pl.col("book") == pick.book) & (pl.col("decision_ts_ms") == last["decision_ts_ms"]))
        if last["previous"] != 0:
            assert closing.height == 1 and closing["status"][0] == "FILLED"
            closed_at_the_bell += 1
    assert closed_at_the_bell >= 1


def test_orders_without_a_reference_quote_are_rejected_by_that_rule(day):
    orders = day["orders"]
    spy = orders.filter(pl.col("symbol") == "SPY")
    assert spy.height > 0 and set(spy["status"]) == {"REJECTED"} and set(spy["reject_rule"]) == {"no_reference_price"}
    assert day["summary"]["rejected_by_rule"] == {"no_reference_price": spy.height}
    assert set(orders.filter(pl.col("symbol") == "BAC")["status"]) == {"FILLED"}
    assert orders["reason"].null_count() == 0


def test_client_order_ids_are_the_bar_window_and_leg_digest(day):
    pick = next(p for p in day["picks"] if p.strategy == "ema_cross")
    d = day["decisions"].filter((pl.col("book") == pick.book) & (pl.col("target") != pl.col("previous")))
    expected = {
        client_order_id(pick.strategy, pick.symbol, pick.params, pick.timeframe, w, leg)
        for w, prev, target in d.select("window_start", "previous", "target").iter_rows()
        for leg in ((0,) if target == 0 else (1,) if prev == 0 else (0, 1))
    }
    assert set(day["orders"].filter(pl.col("book") == pick.book)["client_order_id"]) == expected


def test_a_bar_delivered_twice_decides_nothing_new(day):
    pick = next(p for p in day["picks"] if p.strategy == "ema_cross")
    runner = StrategyRunner([pick], lambda p, price: 100.0, latency_ms=5)
    series = next(s for s in split_bars(day["bars"]["1m"], "1m")[0] if s.symbol == "BAC")
    bars = day["bars"]["1m"].filter(pl.col("symbol") == "BAC").with_columns(timeframe=pl.lit("1m"))

    class Row:
        def __init__(self, row: dict) -> None:
            self.__dict__.update(row)

    orders, repeats = [], []
    for i, row in enumerate(bars.iter_rows(named=True)):
        bar = Row(row)
        step = runner.on_bar(bar, bool(series.session_last[i]))
        orders += [o.order.client_order_id for o in step.orders]
        again = runner.on_bar(bar, bool(series.session_last[i]))  # a consumer re-delivering the bar
        repeats += again.decisions + again.orders
    assert repeats == [] and runner.duplicate_bars == bars.height
    assert set(orders) == set(day["orders"].filter(pl.col("book") == pick.book)["client_order_id"])


@pytest.mark.parametrize(
    "picks, message",
    [
        ("symbol,strategy,timeframe,params,bucket,weight\nBAC,nope,1m,{},LOW,1\n", "unknown strategy 'nope'"),
        (
            'symbol,strategy,timeframe,params,bucket,weight\nBAC,ema_cross,1m,"{""fast"": 5}",LOW,1\n',
            "missing parameter 'slow'",
        ),
        (
            'symbol,strategy,timeframe,params,bucket,weight\nBAC,ema_cross,1m,"{""fast"": 5, ""slow"": 9}",MAX,1\n',
            "'MAX' is not a valid Bucket",
        ),
        (
            "symbol,strategy,timeframe,params,bucket,weight\nBAC,ema_cross,1m,[1],LOW,1\n",
            "params must be a JSON object",
        ),
        ("symbol,strategy\nBAC,ema_cross\n", "missing timeframe, params, bucket, weight"),
    ],
)
def test_bad_picks_are_one_clear_error(samples, tmp_path, picks, message):
    path = tmp_path / "picks.csv"
    path.write_text(picks)
    result = CliRunner().invoke(
        app,
        [
            "paper",
            "replay",
            "--trades",
            str(samples / TRADES),
            "--quotes",
            str(samples / QUOTES),
            "--picks",
            str(path),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output, result.output


def test_bad_limits_file_is_rejected_before_anything_runs(samples, tmp_path):
    picks, limits = tmp_path / "picks.csv", tmp_path / "limits.yaml"
    picks.write_text(PICKS_CSV)
    limits.write_text(
        "capital: 100000\nbucket_shares: {LOW: 0.5}\nmax_order_notional: 1\nmax_order_quantity: 1\n"
        "max_position: 1\nmax_positon: 5\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "paper",
            "replay",
            "--trades",
            "missing.csv",
            "--quotes",
            "missing.csv",
            "--picks",
            str(picks),
            "--limits",
            str(limits),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2 and "max_positon: Extra inputs are not permitted" in result.stderr, result.output


def test_report_figures_add_up_to_the_ledger(day):
    from tickforge.trading.report import paper_report

    report = paper_report(day["orders"], day["fills"], day["positions"], day["pnl"])
    last = day["pnl"].row(-1, named=True)
    assert report.pnl_by_strategy["net_pnl"].sum() == pytest.approx(last["equity"] - 100_000, abs=1e-6)
    assert set(report.pnl_by_strategy["strategy"]) == {p.strategy for p in day["picks"] if p.symbol == "BAC"}
    assert report.fill_ratio == 1.0  # every BAC order filled in full
    assert report.rejected_by_rule == {"no_reference_price": day["orders"].filter(pl.col("symbol") == "SPY").height}
    # slippage of the first fill by hand: bps of its decision bar's close, positive = paid more
    fill = day["fills"].row(0, named=True)
    order = day["orders"].filter(pl.col("client_order_id") == fill["client_order_id"]).row(0, named=True)
    bar = (
        day["bars"][order["timeframe"]]
        .filter((pl.col("symbol") == fill["symbol"]) & (pl.col("window_end") == order["decision_ts_ms"]))
        .row(0, named=True)
    )
    assert order["reference_price"] == bar["close"]
    mine = report.slippage_by_strategy.filter(pl.col("strategy") == order["strategy"]).row(0, named=True)
    one = day["fills"].join(
        day["orders"].select("client_order_id", "strategy", "reference_price"), on="client_order_id"
    )
    one = one.filter(pl.col("strategy") == order["strategy"])
    by_hand = (
        sum(
            (1 if s == "buy" else -1) * (p - r) / r * 1e4 * q
            for s, p, r, q in one.select("side", "price", "reference_price", "quantity").iter_rows()
        )
        / one["quantity"].sum()
    )
    assert mine["slippage_bps"] == pytest.approx(by_hand) and mine["fills"] == one.height


def test_bars_from_a_bar_folder_daily_picks_and_picks_without_bars(day, samples, tmp_path):
    # The bars `tickforge bars build` writes give the same decisions as bars built from the trades;
    # a daily pick is reported, not traded; a pick whose symbol has no bars decides nothing.
    folder = tmp_path / "bars"
    folder.mkdir()
    for tf, frame in day["bars"].items():
        frame.write_parquet(folder / f"bars_{tf}.parquet")
    picks = tmp_path / "picks.csv"
    picks.write_text(
        PICKS_CSV + 'MSFT,ema_cross,1m,"{""fast"": 5, ""slow"": 20}",MED,0.1\n'
        'BAC,donchian_breakout,1d,"{""period"": 20}",LOW,0.1\n'
    )
    result = CliRunner().invoke(
        app,
        [
            "paper",
            "replay",
            "--trades",
            str(samples / TRADES),
            "--quotes",
            str(samples / QUOTES),
            "--picks",
            str(picks),
            "--bars-from",
            str(folder),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["daily_picks_not_traded"] == 1 and summary["picks"] == len(day["picks"]) + 1
    assert summary["picks_without_bars"] == ["MSFT ema_cross/1m/7c9ef88f"] and summary["parity"] is True
    decisions = pl.read_parquet(tmp_path / "out" / "decisions.parquet")
    assert decisions.equals(day["decisions"])
    assert pl.read_parquet(tmp_path / "out" / "orders.parquet").equals(day["orders"])


def test_a_bar_the_engine_refuses_is_not_in_the_history(day):
    # A real BAC bar with its high below its close is a dead letter for split_bars: the runner
    # refuses it with that reason, decides nothing on it, and the next bars decide as without it.
    pick = next(p for p in day["picks"] if p.strategy == "rsi_reversion")
    rows = day["bars"]["1m"].filter(pl.col("symbol") == "BAC").with_columns(timeframe=pl.lit("1m")).to_dicts()

    class Row:
        def __init__(self, row: dict) -> None:
            self.__dict__.update(row)

    def run(bars: list[dict]) -> tuple[list, list[str]]:
        runner = StrategyRunner([pick], lambda p, price: 100.0)
        decided, refused = [], []
        for row in bars:
            step = runner.on_bar(Row(row), False)
            decided += [(d.window_start_ms, d.target) for d in step.decisions]
            refused += step.refused
        return decided, refused

    broken = {**rows[30], "high": rows[30]["close"] - 0.01}
    with_bad, refused = run(rows[:30] + [broken] + rows[31:60])
    without, _ = run(rows[:30] + rows[31:60])
    assert refused == [f"BAC 1m {rows[30]['window_start']}: high/low do not bracket open and close"]
    assert with_bad == without and len(without) == 59
