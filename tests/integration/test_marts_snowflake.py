"""The dbt marts as views in schema MART of the local Snowflake endpoint, read as a Snowsight user
reads them: through the real Snowflake connector, from a session of its own.

The demo day's BAC and AIG trades (2013-10-08) become golden bars (the streaming kernel, offline,
into PostgreSQL); the nightly job then runs, for that day, the bar facts load, the research loop
(picks for 2013-10-09 and their Snowflake load) and the dbt marts (dbt-snowflake against fakesnow).
Every view answers with rows, and values are checked against computations of their own: from the
trades (session VWAP, hourly volume, 15-minute moves), from PostgreSQL's golden bars (bands,
rolling VWAP, bars per minute) and from PostgreSQL's picks.
"""

from __future__ import annotations

import time
from datetime import date

import polars as pl
import pytest

from tests.integration.test_dagster_nightly import DAY, _day_trades, _store_golden_bars, nightly_settings  # noqa: F401

pytestmark = pytest.mark.integration

PICK_DAY = date(2013, 10, 9)
STRATEGIES = (
    "ema_cross",
    "rsi_reversion",
    "donchian_breakout",
    "macd_cross",
    "bollinger_reversion",
    "vwap_reversion",
    "orb_breakout",
)
RESEARCH = (
    *(f"backtest_sweep/{s}" for s in STRATEGIES),
    "strategy_scores",
    "next_day_picks",
    "picks_scorecard",
    "snowflake_backtest_results",
    "snowflake_next_day_picks",
)
MARTS = (
    "mart_next_day_picks",
    "mart_pipeline_minute_metrics",
    "mart_price_1h",
    "mart_rolling_vwap",
    "mart_session_vwap",
    "mart_top_movers_15m",
    "mart_volatility_bands",
)
HOUR_MS, BUCKET_MS = 3_600_000, 900_000


def _view(cur, view: str, columns: str, order: str) -> pl.DataFrame:
    cur.execute(f"SELECT {columns} FROM MART.{view} ORDER BY {order}")
    names = [d.name.lower() for d in cur.description]
    return pl.DataFrame([dict(zip(names, row, strict=True)) for row in cur.fetchall()], infer_schema_length=None)


def _golden_1m(s) -> pl.DataFrame:
    import psycopg

    from tickforge.platform.io.postgres import bar_table

    with psycopg.connect(s.postgres.dsn.get_secret_value()) as conn:
        rows = conn.execute(
            f"SELECT symbol, window_start, close, volume, notional FROM {s.postgres.schema_name}.{bar_table('1m')} "
            "ORDER BY symbol, window_start"
        ).fetchall()
    return pl.DataFrame(rows, schema=["symbol", "window_start", "close", "volume", "notional"], orient="row")


def _same(got: pl.Series, want: pl.Series, **tolerance: float) -> bool:
    """Null where the other is null, else equal within the tolerance."""
    return got.is_null().to_list() == want.is_null().to_list() and got.drop_nulls().to_list() == pytest.approx(
        want.drop_nulls().to_list(), **tolerance
    )


def test_every_mart_view_answers_through_the_snowflake_connector(nightly_settings, samples):  # noqa: F811
    import snowflake.connector
    from dagster import AssetKey, DagsterInstance

    from tickforge.definitions import build_definitions
    from tickforge.research.store import NEXT_DAY_PICKS, read_table

    s = nightly_settings
    day_trades = _day_trades(samples)
    trades = day_trades.data.sort("ts_ms", maintain_order=True)  # first / last trade as the bars take them
    golden = _store_golden_bars(s, day_trades)
    job = build_definitions(s).resolve_job_def("nightly")
    selection = [
        AssetKey("snowflake_bar_facts"),
        *(AssetKey(k.split("/")) for k in RESEARCH),
        *(AssetKey(["marts", m]) for m in MARTS),
    ]
    started = time.monotonic()
    result = job.execute_in_process(partition_key=DAY, instance=DagsterInstance.ephemeral(), asset_selection=selection)
    print(f"bar facts, research and marts {time.monotonic() - started:.1f}s")
    assert result.success
    assert {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()} >= {
        f"marts/{m}" for m in MARTS
    }
    dbt_tests = {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key.path[0] == "marts"}
    assert len(dbt_tests) == 19 and all(dbt_tests.values()), dbt_tests

    # A session of its own, as Snowsight opens one: the views are there, and they are views.
    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        cur = conn.cursor()
        shown = cur.execute("SHOW TERSE VIEWS IN SCHEMA MART").fetchall()
        assert sorted(r[1] for r in shown) == [m.upper() for m in MARTS] and {r[2] for r in shown} == {"VIEW"}
        session = _view(
            cur, "MART_SESSION_VWAP", "symbol, window_start, session_vwap, session_volume", "symbol, window_start"
        )
        hourly = _view(cur, "MART_PRICE_1H", "symbol, hour_start, volume, bars_5m, open, close", "symbol, hour_start")
        movers = _view(
            cur,
            "MART_TOP_MOVERS_15M",
            "symbol, bucket_start, open_price, close_price, pct_change, move_rank, bars",
            "bucket_start, move_rank, symbol",
        )
        bands = _view(
            cur, "MART_VOLATILITY_BANDS", "symbol, window_start, band_mid, band_std, band_upper", "symbol, window_start"
        )
        rolling = _view(cur, "MART_ROLLING_VWAP", "symbol, window_start, rolling_vwap_30m", "symbol, window_start")
        minute = _view(
            cur,
            "MART_PIPELINE_MINUTE_METRICS",
            "minute_start, timeframe, symbol, bars",
            "minute_start, timeframe, symbol",
        )
        picks = _view(
            cur,
            "MART_NEXT_DAY_PICKS",
            "day, pick_rank, symbol, strategy, timeframe, params, weight, day_weight, score",
            "day, pick_rank, symbol, strategy",
        )

    # Session VWAP: at each symbol's last bar, the VWAP of all its trades of the day.
    for symbol in ("BAC", "AIG"):
        own = trades.filter(pl.col("symbol") == symbol)
        last = session.filter(pl.col("symbol") == symbol).row(-1, named=True)
        assert last["session_vwap"] == pytest.approx((own["price"] * own["size"]).sum() / own["size"].sum(), rel=1e-12)
        assert last["session_volume"] == pytest.approx(own["size"].sum())
    assert session.height == golden["1m"]

    # One-hour price: volume per symbol and hour equals the trades', open/close their first/last price.
    by_hour = (
        trades.group_by("symbol", (pl.col("ts_ms") // HOUR_MS * HOUR_MS).alias("hour_start"))
        .agg(
            pl.col("size").sum().alias("volume"),
            pl.col("price").first().alias("open"),
            pl.col("price").last().alias("close"),
        )
        .sort("symbol", "hour_start")
    )
    assert hourly.select("symbol", "hour_start").rows() == by_hour.select("symbol", "hour_start").rows()
    assert hourly["volume"].to_list() == pytest.approx(by_hour["volume"].to_list())
    assert (
        hourly["open"].to_list() == by_hour["open"].to_list()
        and hourly["close"].to_list() == by_hour["close"].to_list()
    )
    assert int(hourly["bars_5m"].sum()) == golden["5m"]

    # Top movers: each 15-minute bucket's move from its first to its last trade, ranked per bucket.
    by_bucket = (
        trades.group_by("symbol", (pl.col("ts_ms") // BUCKET_MS * BUCKET_MS).alias("bucket_start"))
        .agg(pl.col("price").first().alias("open_price"), pl.col("price").last().alias("close_price"))
        .with_columns(((pl.col("close_price") - pl.col("open_price")) / pl.col("open_price") * 100).alias("pct"))
    )
    joined = movers.join(by_bucket, on=["symbol", "bucket_start"], how="full", coalesce=True)
    assert joined.height == movers.height == by_bucket.height
    assert joined["pct_change"].to_list() == pytest.approx(joined["pct"].to_list(), abs=1e-9)
    leaders = movers.filter(pl.col("move_rank") == 1).join(
        by_bucket.group_by("bucket_start").agg(pl.col("pct").abs().max().alias("top")), on="bucket_start"
    )
    assert leaders.height >= movers["bucket_start"].n_unique()
    assert leaders["pct_change"].abs().to_list() == pytest.approx(leaders["top"].to_list(), abs=1e-9)

    # Bands and rolling VWAP: the last 20 / 30 golden 1 m bars of the session, null before that.
    bars = _golden_1m(s).with_columns(
        pl.col("close").rolling_mean(20).over("symbol").alias("mid"),
        pl.col("close").rolling_std(20, ddof=1).over("symbol").alias("std"),
        (pl.col("notional").rolling_sum(30) / pl.col("volume").rolling_sum(30)).over("symbol").alias("vwap30"),
    )
    assert bands.select("symbol", "window_start").rows() == bars.select("symbol", "window_start").rows()
    assert bands["band_mid"].null_count() == 2 * 19 and rolling["rolling_vwap_30m"].null_count() == 2 * 29
    assert _same(bands["band_mid"], bars["mid"], rel=1e-12)
    assert _same(bands["band_std"], bars["std"], rel=1e-9, abs=1e-6)
    assert _same(bands["band_upper"], bars["mid"] + 2 * bars["std"], rel=1e-9)
    assert _same(rolling["rolling_vwap_30m"], bars["vwap30"], rel=1e-12)

    # Pipeline minute metrics: every golden bar counted once, in the minute its window closed.
    assert int(minute.filter(pl.col("timeframe") == "1m")["bars"].sum()) == golden["1m"]
    assert int(minute.filter(pl.col("timeframe") == "5m")["bars"].sum()) == golden["5m"]
    assert minute.filter(pl.col("timeframe") == "1m").height == golden["1m"]  # a 1 m bar closes every minute

    # Next-day picks: PostgreSQL's picks of the pick day, ranked by score, weights summing to one.
    expected = read_table(
        s.postgres.dsn.get_secret_value(), s.postgres.schema_name, NEXT_DAY_PICKS, '"day" = %s', [PICK_DAY]
    )
    assert picks.height == expected.height >= 1 and set(picks["day"]) == {PICK_DAY}
    assert sorted(picks.select("symbol", "strategy", "timeframe", "params").rows()) == sorted(
        expected.select("symbol", "strategy", "timeframe", "params").rows()
    )
    assert picks["score"].to_list() == sorted(expected["score"].to_list(), reverse=True)
    assert picks["pick_rank"][0] == 1 and picks["day_weight"].to_list() == pytest.approx([1.0] * picks.height)
