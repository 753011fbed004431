"""The bar store rides out a PostgreSQL outage on its own: the database stopped ~30 s mid-replay
and started again, the same store process reconnects and resumes from its committed offsets, and
the golden tables end equal, bar for bar, to ``bars build`` on the same input.

The database is a private PostgreSQL of this test (the project's stack code, a temporary state
folder, a free port): stopping the shared test stack's one would disturb other test sessions.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration import test_live_bars
from tests.integration.pipeline import assert_bars_equal, start_worker, stop_worker, wait_until
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.io.files import read_trades
from tickforge.platform.settings import Settings
from tickforge.platform.stack.launcher import LocalStack
from tickforge.platform.stack.process import any_free_port
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
TIMEFRAMES = ["1s", "1m", "3m", "5m", "15m"]
OUTAGE_S = 30


@pytest.fixture()
def private_postgres(settings, monkeypatch):
    # Not under pytest's temp folder: as root PostgreSQL runs as `postgres`, which may not enter it.
    state_dir = Path(tempfile.mkdtemp(prefix="tickforge-pg-outage-"))
    state_dir.chmod(state_dir.stat().st_mode | stat.S_IXOTH)
    stack = LocalStack(state_dir=state_dir, ports={"postgres": any_free_port(set())}, settings=settings)
    try:
        dsn = stack.up(["postgres"])["postgres"]["dsn"]
        monkeypatch.setenv("TICKFORGE_POSTGRES__DSN", dsn)
        yield stack, Settings()
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def _stored(settings: Settings, timeframe: str) -> int:
    try:
        with psycopg.connect(settings.postgres.dsn.get_secret_value(), connect_timeout=2) as conn:
            return conn.execute(f"SELECT count(*) FROM {settings.postgres.schema_name}.bars_{timeframe}").fetchone()[0]
    except psycopg.OperationalError:
        return 0


def test_bar_store_rides_out_a_30s_postgres_outage_mid_replay(private_postgres, samples, tmp_path):
    stack, settings = private_postgres
    crypto = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    expected = build_bars(crypto, TIMEFRAMES, partitions=settings.kafka.partitions).bars
    workers = [start_worker(name, log_dir=tmp_path) for name in ("bar-worker", "timeframe-worker")]
    store = start_worker("bar-store", log_dir=tmp_path)
    done = threading.Event()

    def publish() -> None:
        # ~11 minutes of trades at 8x: about 80 s of replay, with the outage in the middle.
        replay(settings, crypto, speed=8.0, chunk_rows=500)
        done.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_until(lambda: _stored(settings, "1s") > 0, 90, 0.5, "the first golden bars")
        stack.down()  # fast shutdown: the store's connection is cut (AdminShutdown)
        stopped_at = time.monotonic()
        while time.monotonic() - stopped_at < OUTAGE_S:
            assert store.poll() is None, "the bar store exited during the outage"
            time.sleep(1)
        assert not done.is_set(), "the replay ended before the database came back: the outage was not mid-replay"
        stack.up(["postgres"])
        publisher.join(300)
        assert done.is_set()
        wait_until(
            lambda: all(_stored(settings, tf) >= expected[tf].height for tf in TIMEFRAMES),
            180,
            1,
            "the golden bars to catch up",
        )
        time.sleep(3)  # extra or repeated rows would land now
        assert store.poll() is None, "the bar store did not ride out the outage"
        for tf in TIMEFRAMES:
            assert_bars_equal(test_live_bars._golden(settings, tf), expected[tf])
        log = (tmp_path / "bar-store.log").read_text()
        assert "postgres" in log and "retrying" in log  # it did see the outage and reconnect
    finally:
        publisher.join(300)
        assert stop_worker(store) == 0
        for worker in workers:
            stop_worker(worker)
