"""The streaming kernel on small hand-checkable streams."""

import numpy as np
import pytest

from tickforge.platform.bars.builder import BarBuilder, Reject, RollupChain
from tickforge.platform.bars.kernel import BarColumns, fold_partials, fold_ticks
from tickforge.platform.bars.timeframes import parse_timeframes, rollup_parent, timeframe_ms


def arr(*v, dtype=np.float64):
    return np.array(v, dtype=dtype)


def run(builder, batches):
    out = {tf: [] for tf in builder.timeframes}
    codes = []
    for symbol, ts, price, size, *ids in batches:
        codes.append(
            builder.add_trades(
                symbol, arr(*ts, dtype=np.int64), arr(*price), arr(*size), arr(*ids[0], dtype=np.int64) if ids else None
            )
        )
        for closed in builder.close():
            out[closed.timeframe].append(closed.bars)
    for closed in builder.close(flush=True):
        out[closed.timeframe].append(closed.bars)
    return {tf: BarColumns.concat(parts) for tf, parts in out.items()}, codes


def test_timeframes_parse_and_tile():
    assert parse_timeframes("15m,1s,10ms,1m") == ["10ms", "1s", "1m", "15m"]
    assert timeframe_ms("3m") == 180_000
    assert rollup_parent("5m", ["10ms", "1s", "1m", "3m"]) == "1m"
    assert rollup_parent("3m", ["10ms", "1s", "1m"]) == "1m"
    with pytest.raises(ValueError):
        timeframe_ms("7x")


def test_open_close_ties_keep_input_order_and_out_of_order_ticks_count():
    b = BarBuilder(["1s"], lateness_ms=500)
    bars, codes = run(b, [("X", [1000, 1000, 1500, 1200, 1500], [10, 11, 12, 9, 13], [1, 1, 1, 1, 1])])
    one = bars["1s"]
    assert len(one) == 1 and codes[0].tolist() == [0, 0, 0, 0, 0]
    assert (one.open[0], one.close[0], one.high[0], one.low[0]) == (10, 13, 13, 9)
    assert one.volume[0] == 5 and one.count[0] == 5 and one.start[0] == 1000


def test_late_tick_goes_to_dead_letter_and_never_changes_an_emitted_bar():
    b = BarBuilder(["1s"], lateness_ms=500)
    # 2600 moves the watermark past 1000+1000+500: the 1 s window [1000, 2000) closes.
    bars, codes = run(b, [("X", [1100, 2600], [10, 20], [1, 1]), ("X", [1990, 2700], [99, 21], [5, 1])])
    assert codes[1].tolist() == [Reject.LATE, 0]
    first = bars["1s"]
    assert first.start.tolist() == [1000, 2000]
    assert first.high[0] == 10 and first.volume[0] == 1


def test_within_lateness_a_tick_for_an_earlier_window_is_included():
    b = BarBuilder(["1s"], lateness_ms=500)
    bars, codes = run(b, [("X", [1100, 2300], [10, 20], [1, 1]), ("X", [1990], [99], [5])])
    assert codes[1].tolist() == [0]
    assert bars["1s"].high[0] == 99 and bars["1s"].close[0] == 99


def test_invalid_and_duplicate_trades_are_rejected_with_reasons():
    b = BarBuilder(["1s"], lateness_ms=500)
    ts = arr(1000, 1001, 1002, 1003, 1004, 1005, dtype=np.int64)
    price = arr(10, -1, np.nan, 10, 10, 10)
    size = arr(1, 1, 1, 0, np.inf, 1)
    ids = arr(1, 2, 3, 4, 5, 1, dtype=np.int64)
    codes = b.add_trades("X", ts, price, size, ids)
    assert [Reject(c).reason for c in codes] == [
        "accepted",
        "bad_price",
        "bad_price",
        "bad_size",
        "bad_size",
        "duplicate",
    ]
    assert b.add_trades("", ts[:1], price[:1], size[:1]).tolist() == [Reject.MISSING_SYMBOL]
    # A repeat across batches is a duplicate too; without ids, identical rows are separate trades.
    assert b.add_trades("X", ts[:1], price[:1], size[:1], ids[:1]).tolist() == [Reject.DUPLICATE]
    assert b.add_trades("X", ts[:1], price[:1], size[:1]).tolist() == [0]


def test_no_empty_bars_and_higher_timeframes_equal_direct_folds():
    rng = np.random.default_rng(7)
    ts = np.sort(rng.integers(0, 3_600_000, 20_000))
    ts = np.concatenate([ts[ts < 600_000], ts[ts > 1_800_000]])  # a gap: no bars there
    price = 100 + rng.standard_normal(len(ts)).cumsum() * 0.01
    size = rng.integers(1, 500, len(ts)).astype(float)
    tfs = ["10ms", "1s", "1m", "3m", "5m", "15m"]
    b = BarBuilder(tfs)
    out = {tf: [] for tf in tfs}
    for i in range(0, len(ts), 997):
        b.add_trades("X", ts[i : i + 997], price[i : i + 997], size[i : i + 997])
        for closed in b.close():
            out[closed.timeframe].append(closed.bars)
    for closed in b.close(flush=True):
        out[closed.timeframe].append(closed.bars)
    for tf in tfs:
        got = BarColumns.concat(out[tf])
        want = fold_ticks(0, ts, price, size, timeframe_ms(tf))
        np.testing.assert_array_equal(got.start, want.start)
        for field in ("open", "high", "low", "close", "count", "first_ts", "last_ts"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        np.testing.assert_allclose(got.volume, want.volume, rtol=1e-12)
        assert not np.any((got.start >= 600_000) & (got.start < 1_800_000))


def test_fold_partials_merges_open_and_close_by_event_time():
    a = fold_ticks(0, arr(5, 9, dtype=np.int64), arr(1.0, 2.0), arr(1.0, 1.0), 10)
    b = fold_ticks(0, arr(3, 9, dtype=np.int64), arr(7.0, 8.0), arr(1.0, 1.0), 10)
    merged = fold_partials(BarColumns.concat([a, b]))
    assert len(merged) == 1
    assert merged.open[0] == 7.0  # earliest event time, from the later partial
    assert merged.close[0] == 8.0  # tie at ts 9: the later input wins
    assert merged.count[0] == 4


def test_rollup_chain_closes_on_the_forwarded_watermark():
    b = BarBuilder(["1s"])
    b.add_trades("X", arr(1000, 61_000, dtype=np.int64), arr(1.0, 2.0), arr(1.0, 1.0))
    seconds = BarColumns.concat([c.bars for c in b.close(flush=True)])
    chain = RollupChain("1s", ["1s", "1m"], 500)
    chain.add(seconds)
    chain.advance_to(60_499)
    assert [len(c.bars) for c in chain.close()] == [0]
    chain.advance_to(60_500)
    first = chain.close()[0].bars
    assert first.start.tolist() == [0] and first.close.tolist() == [1.0]


def test_spread_and_imbalance_come_from_the_last_quote_before_window_end():
    b = BarBuilder(["1s"])
    nan = np.nan
    b.add_quotes(
        "X",
        arr(500, 999, 1000, dtype=np.int64),
        arr(9.9, 9.98, 1.0),
        arr(10.1, 10.02, 2.0),
        arr(100, 300, 1),
        arr(100, 100, 1),
    )
    b.add_quotes("Y", arr(10, dtype=np.int64), arr(10.2), arr(10.0), arr(nan), arr(nan))  # crossed
    b.add_trades("X", arr(100, dtype=np.int64), arr(10.0), arr(1.0))
    b.add_trades("Y", arr(100, dtype=np.int64), arr(10.0), arr(1.0))
    closed = b.close(flush=True)[0]
    assert closed.bars.sym.tolist() == [0, 1]
    assert closed.spread_bps[0] == pytest.approx((10.02 - 9.98) / 10.0 * 10_000)
    assert closed.imbalance[0] == pytest.approx(0.5)
    assert np.isnan(closed.spread_bps[1]) and np.isnan(closed.imbalance[1])


@pytest.mark.parametrize("symbols", [1, 3, 6])
@pytest.mark.parametrize("shuffled", [False, True])
def test_fold_ticks_grouping_paths_agree_with_one_symbol_at_a_time(samples, symbols, shuffled):
    """One code, a handful (per-code passes), many (radix sort), out of order (lexsort): every
    grouping path gives each symbol's fold of its own ticks in input order."""
    import polars as pl

    from tickforge.platform.io.files import read_trades

    trades = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz").data
    names = trades["symbol"].unique(maintain_order=True).to_list()[:symbols]
    frame = trades.filter(pl.col("symbol").is_in(names)).head(30_000)
    if shuffled:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=7)
    sym = frame["symbol"].replace_strict(names, [c + 10 for c in range(len(names))], return_dtype=pl.Int32).to_numpy()
    ts, price, size = frame["ts_ms"].to_numpy(), frame["price"].to_numpy(), frame["size"].to_numpy()
    got = fold_ticks(sym, ts, price, size, 1_000)
    for code in np.unique(sym):
        rows = sym == code
        want = fold_ticks(int(code), ts[rows], price[rows], size[rows], 1_000)
        mine = got.take(got.sym == code)
        for field in ("start", "open", "high", "low", "close", "volume", "count", "first_ts", "last_ts"):
            np.testing.assert_array_equal(getattr(mine, field), getattr(want, field), err_msg=field)
        np.testing.assert_allclose(mine.notional, want.notional, rtol=1e-12)
