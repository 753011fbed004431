"""The OMS in the local stack's PostgreSQL: ``tickforge paper replay --postgres`` on the real demo
day (2013-10-08, BAC NBBO, SPY/BAC/AIG trades) stores every order, transition and fill; a second
run stores nothing new; an older snapshot never moves an order's status back; a write whose keys
are stored with other content is refused whole; what is read back equals what the replay wrote.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner

from tickforge.cli import app
from tickforge.trading.oms import ConflictingDuplicate
from tickforge.trading.store import ORDERS, ensure_oms_tables, read_oms, store_oms

pytestmark = pytest.mark.integration

TRADES = "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz"
QUOTES = "us_equity_nbbo_BAC_2013-10-08.csv.gz"
PICKS_CSV = """\
symbol,strategy,timeframe,params,bucket,weight
BAC,ema_cross,1m,"{""fast"": 5, ""slow"": 20, ""allow_short"": true}",MED,0.25
BAC,orb_breakout,5m,"{""opening_bars"": 6, ""allow_short"": true}",HIGH,0.25
SPY,vwap_reversion,5m,"{""period"": 12, ""band_bps"": 10}",LOW,0.25
"""


def _replay(samples: Path, tmp: Path, *extra: str) -> dict:
    picks = tmp / "picks.csv"
    picks.write_text(PICKS_CSV)
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
            "--regular-hours",
            "--out",
            str(tmp / "out"),
            "--postgres",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _frames(out: Path) -> dict[str, pl.DataFrame]:
    return {name: pl.read_parquet(out / f"{name}.parquet") for name in ("orders", "transitions", "fills")}


def test_replay_stores_the_oms_once_and_reads_back_equal(settings, samples, tmp_path):
    first = _replay(samples, tmp_path)
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    written = _frames(tmp_path / "out")
    assert first["postgres"] == {
        "account": "paper-replay",
        "schema": schema,
        "orders_new": first["orders"],
        "orders_moved": 0,
        "transitions_new": written["transitions"].height,
        "fills_new": first["fills"],
    }
    assert first["fills"] > 20 and written["transitions"].height > first["orders"]

    again = _replay(samples, tmp_path)
    assert again["postgres"]["orders_new"] == again["postgres"]["orders_moved"] == 0
    assert again["postgres"]["transitions_new"] == again["postgres"]["fills_new"] == 0

    with psycopg.connect(dsn) as conn:
        stored = read_oms(conn, schema, "paper-replay")
    orders = written["orders"].sort("client_order_id")
    assert stored.orders.select("client_order_id", "symbol", "side", "quantity", "status", "filled_quantity").equals(
        orders.select("client_order_id", "symbol", "side", "quantity", "status", "filled_quantity")
    )
    assert (
        stored.orders["last_seq"].to_list()
        == written["transitions"]
        .group_by("client_order_id")
        .agg(pl.col("seq").max())
        .sort("client_order_id")["seq"]
        .to_list()
    )
    assert stored.transitions.equals(written["transitions"].sort("client_order_id", "seq"))
    assert stored.fills.equals(written["fills"].select(stored.fills.columns).sort("fill_id"))
    # every order's trail starts at NEW and ends at the status the order row carries
    ends = stored.transitions.group_by("client_order_id").agg(
        pl.col("to_status").first().alias("start"), pl.col("to_status").last().alias("end")
    )
    joined = ends.join(stored.orders, on="client_order_id")
    assert (joined["start"] == "NEW").all() and (joined["end"] == joined["status"]).all()


def test_status_moves_only_forward_and_conflicts_write_nothing(settings, samples, tmp_path):
    _replay(samples, tmp_path, "--account", "a1")
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    written = _frames(tmp_path / "out")
    filled = written["orders"].filter(pl.col("status") == "FILLED")["client_order_id"][0]
    ensure_oms_tables(dsn, schema)  # idempotent on tables that exist
    with psycopg.connect(dsn) as conn:
        # the same orders as they stood at submission (only their NEW entry) under a new account,
        # then the full trail: the statuses move forward
        early = written["orders"].with_columns(
            status=pl.lit("NEW"), filled_quantity=pl.lit(0.0), average_fill_price=pl.lit(None, pl.Float64)
        )
        new_only = written["transitions"].filter(pl.col("seq") == 0)
        counts = store_oms(conn, schema, "a2", early, new_only, written["fills"].clear())
        assert (counts.orders_new, counts.transitions_new, counts.fills_new) == (
            written["orders"].height,
            written["orders"].height,
            0,
        )
        counts = store_oms(conn, schema, "a2", written["orders"], written["transitions"], written["fills"])
        assert counts.orders_new == 0 and counts.orders_moved == written["orders"].height
        assert counts.fills_new == written["fills"].height
        # the early snapshot again: nothing moves back
        assert store_oms(conn, schema, "a2", early, new_only, written["fills"].clear()).orders_moved == 0
        conn.commit()
        assert read_oms(conn, schema, "a2").orders.filter(pl.col("client_order_id") == filled)["status"][0] == "FILLED"

        # a fill id stored with another price, an order id with another side: refused, nothing written
        moved = written["fills"].with_columns(price=pl.col("price") + 0.01)
        with pytest.raises(ConflictingDuplicate, match="oms_fills"):
            store_oms(conn, schema, "a1", written["orders"], written["transitions"], moved)
        conn.rollback()
        flipped = written["orders"].with_columns(
            side=pl.when(pl.col("side") == "buy").then(pl.lit("sell")).otherwise(pl.lit("buy"))
        )
        extra = written["orders"].head(1).with_columns(client_order_id=pl.lit("fresh-order"))
        extra_trail = (
            written["transitions"]
            .filter(pl.col("client_order_id") == written["orders"]["client_order_id"][0])
            .with_columns(client_order_id=pl.lit("fresh-order"))
        )
        with pytest.raises(ConflictingDuplicate, match="oms_orders"):
            store_oms(
                conn,
                schema,
                "a1",
                pl.concat([flipped, extra]),
                pl.concat([written["transitions"], extra_trail]),
                written["fills"].clear(),
            )
        conn.rollback()
        count = conn.execute(f'SELECT count(*) FROM "{schema}".{ORDERS.name} WHERE account = %s', ["a1"]).fetchone()
        assert count == (written["orders"].height,)
        # a fill of an order the write does not carry is refused before the database is asked
        with pytest.raises(ValueError, match="not in the write"):
            store_oms(conn, schema, "a1", written["orders"].head(0), written["transitions"].head(0), written["fills"])


def test_a_database_that_is_not_there_is_a_clear_error(samples, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKFORGE_POSTGRES__DSN", "postgresql://postgres@127.0.0.1:1/nowhere")
    picks = tmp_path / "picks.csv"
    picks.write_text(PICKS_CSV)
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
            "--regular-hours",
            "--out",
            str(tmp_path / "out"),
            "--postgres",
        ],
    )
    assert result.exit_code == 2 and "error: postgres:" in result.output


def test_the_demo_step_trades_the_research_picks_and_stores_them(settings, samples, tmp_path):
    """The demo's trading step: the day's next_day_picks rows (as the research assets store them)
    traded on paper over the demo day, the OMS stored under the paper-demo account."""
    from datetime import date

    from tickforge.defs.postgres.resources import PostgresResource
    from tickforge.defs.research.store import replace_rows
    from tickforge.research.scoring import PICK_SCHEMA
    from tickforge.research.store import NEXT_DAY_PICKS
    from tickforge.trading.cli import demo_paper_day

    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    assert "error" in demo_paper_day(
        samples / TRADES, samples / QUOTES, "2013-10-09", tmp_path / "none"
    )  # no picks yet
    picks = tmp_path / "picks.csv"
    picks.write_text(PICKS_CSV)
    rows = pl.read_csv(picks, infer_schema=False).with_columns(
        day=pl.lit(date(2013, 10, 9)), weight=pl.col("weight").cast(pl.Float64)
    )
    replace_rows(
        PostgresResource(dsn=dsn, schema_name=schema),
        NEXT_DAY_PICKS,
        rows.with_columns(pl.lit(None).alias(c) for c in PICK_SCHEMA if c not in rows.columns),
        '"day" = %s',
        [date(2013, 10, 9)],
    )
    summary = demo_paper_day(samples / TRADES, samples / QUOTES, "2013-10-09", tmp_path / "paper")
    assert summary["picks"] == 3 and summary["fills"] > 20 and summary["parity"] is True
    assert summary["postgres"]["account"] == "paper-demo" and summary["postgres"]["orders_new"] == summary["orders"]
    with psycopg.connect(dsn) as conn:
        stored = read_oms(conn, schema, "paper-demo")
    assert stored.orders.height == summary["orders"] and stored.fills.height == summary["fills"]


def test_two_writers_of_one_key_with_other_content_one_is_refused(settings, samples, tmp_path):
    """Writer A stores the demo day's orders and holds its transaction open; writer B writes the same
    ids with the sides flipped and waits for A's account lock; A commits: B sees A's rows and is
    refused whole, and what is stored is A's."""
    _replay(samples, tmp_path, "--account", "race-source")
    dsn, schema = settings.postgres.dsn.get_secret_value(), settings.postgres.schema_name
    written = _frames(tmp_path / "out")
    flipped = written["orders"].with_columns(
        side=pl.when(pl.col("side") == "buy").then(pl.lit("sell")).otherwise(pl.lit("buy"))
    )
    no_fills = written["fills"].clear()
    outcome: dict[str, object] = {}

    def writer_b(conn: psycopg.Connection) -> None:
        try:
            outcome["counts"] = store_oms(conn, schema, "race", flipped, written["transitions"], no_fills)
            conn.commit()
        except ConflictingDuplicate as exc:
            conn.rollback()
            outcome["refused"] = exc

    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b, psycopg.connect(dsn, autocommit=True) as watch:
        counts = store_oms(a, schema, "race", written["orders"], written["transitions"], no_fills)
        assert counts.orders_new == written["orders"].height
        b_pid = b.info.backend_pid
        thread = threading.Thread(target=writer_b, args=(b,))
        thread.start()
        deadline = time.monotonic() + 20
        while watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [b_pid]).fetchone() != (
            "Lock",
        ):
            assert time.monotonic() < deadline and thread.is_alive(), f"writer B did not wait for A: {outcome}"
            time.sleep(0.02)
        a.commit()
        thread.join(20)
        assert not thread.is_alive()
        assert "counts" not in outcome and isinstance(outcome.get("refused"), ConflictingDuplicate)
        assert "oms_orders" in str(outcome["refused"])
        stored = read_oms(watch, schema, "race").orders.sort("client_order_id")
        assert stored["side"].to_list() == written["orders"].sort("client_order_id")["side"].to_list()
