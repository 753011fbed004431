"""The live view served by ``tickforge dashboard`` on live data, looked at by a real headless Chromium.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). A real slice of SPY around the New
York close (into the sparse after-hours trading) and the real Binance sample go through the
workers (Kafka) and the bar store (PostgreSQL); the page must show the chart (the Vega embed in
the DOM, candle-coloured pixels in the screenshot), the badges and the pair watch, with the time
axis in each symbol's exchange time (the browser sits in a third zone), and the most active
symbol when no symbol is asked for.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
import psycopg
import pytest
from PIL import Image
from websockets.sync.client import connect

from tests.integration.pipeline import start_worker, stop_worker, wait_until
from tickforge.dashboard.view import DOWN, UP
from tickforge.platform.io.files import read_trades
from tickforge.streaming.replay import replay

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SYMBOL = "BTCUSDT-SPOT"
BROWSER_ZONE = "Asia/Kolkata"  # neither New York nor UTC (and a half-hour offset): exchange time can't be browser time
# The chart's time labels and axis titles, as Vega drew them into the page's SVG.
AXIS_JS = """(() => {
  const texts = sel => [...document.querySelectorAll(sel)].map(t => t.textContent);
  return {labels: texts('.vega-embed g.role-axis-label text').filter(t => /^\\d\\d:\\d\\d(:\\d\\d)?$/.test(t)),
          titles: texts('.vega-embed g.role-axis-title text')};
})()"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chromium:
    """Headless Chromium driven over the DevTools protocol: load, wait for a condition, capture.

    (``--dump-dom``/``--screenshot`` do not wait for Streamlit, which renders over a websocket
    after the page has loaded: the DOM they see is the empty shell.)
    """

    def __init__(self, out_dir: Path, width: int = 1400, height: int = 1300) -> None:
        port = _free_port()
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tempfile.mkdtemp(dir=out_dir)}",
                f"--window-size={width},{height}",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(out_dir / "chromium.log", "ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromium did not open its DevTools endpoint")
            time.sleep(0.2)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        self._id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.5)
        return False

    def axis(self) -> dict[str, list[str]]:
        return self.evaluate(AXIS_JS)

    def screenshot(self, path: Path) -> None:
        # A rerun that takes a while fades the elements it has not redrawn yet: capture between reruns.
        self.wait_for("document.querySelectorAll('[data-stale=\"true\"]').length === 0", 30)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self._stack.close()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(20)


def start_dashboard(log_dir: Path) -> tuple[subprocess.Popen, str]:
    """``tickforge dashboard`` on a free port, answering its health check: the process and its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickforge.cli", "dashboard", "--port", str(port)],
        stdout=open(log_dir / "dashboard.log", "ab"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 60, 0.5, "streamlit health")
    except BaseException:
        stop_dashboard(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


def stop_dashboard(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _near(pixel: tuple[int, ...], color: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(int(p) - c) <= tol for p, c in zip(pixel[:3], color, strict=True))


def _golden_rows(settings) -> int:
    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        try:
            return conn.execute(f"SELECT count(*) FROM {settings.postgres.schema_name}.bars_1s").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


def _hours(labels: list[str]) -> set[int]:
    return {int(label[:2]) for label in labels}


def test_dashboard_renders_live_chart_in_headless_chromium(settings, samples, tmp_path, monkeypatch):
    # `make test` installs Debian's chromium where it is missing: its absence is a failure.
    assert CHROMIUM is not None, "needs Debian's chromium: apt-get install -y chromium"
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIR_MIN_HISTORY", "4")
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIRS", '["BTCUSDT-SPOT/BTCUSD_PERP"]')
    crypto = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    equity = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz")
    # SPY from 15:55 to 16:20 New York time (19:55-20:20 UTC): the close, then sparse after-hours bars.
    close = dataclasses.replace(
        equity,
        symbols=None,
        dead_letters=equity.dead_letters.head(0),
        data=equity.data.filter(
            pl.col("symbol") == "SPY", pl.col("ts_ms").is_between(1_381_262_100_000, 1_381_263_600_000, closed="left")
        ),
    )
    busiest = crypto.data.group_by("symbol").len().sort("len", "symbol", descending=[True, False])["symbol"][0]
    started = time.monotonic()
    workers = [
        start_worker(name, log_dir=tmp_path)
        for name in ("bar-worker", "timeframe-worker", "signal-worker", "pair-worker", "bar-store")
    ]
    dashboard, url = start_dashboard(tmp_path)
    browser = None
    try:
        browser = Chromium(tmp_path)
        browser.call("Emulation.setTimezoneOverride", timezoneId=BROWSER_ZONE)
        # Open the page before the data: the view's feed then receives it live (the latency badge
        # measures it) and the page picks the deep-linked symbol up when it appears.
        browser.call("Page.navigate", url=f"{url}/?symbol={SYMBOL}&timeframe=1s")
        assert browser.wait_for("document.body.innerText.includes('Waiting for data')", 60), "page not served"
        replay(settings, close)  # its end-of-session marker closes the day before the crypto ticks
        replay(settings, crypto)
        rendered = browser.wait_for(
            "!!document.querySelector('.vega-embed canvas, .vega-embed svg') && "
            f"document.body.innerText.includes('{SYMBOL} · 1s') && "
            "document.body.innerText.includes('BTCUSDT-SPOT/BTCUSD_PERP') && "
            "document.body.innerText.includes('history 120') && "
            "/rsi14\\s+[0-9]/.test(document.body.innerText)",
            180,
        )  # signals and golden bars arrived (2 busy cores)
        time.sleep(1.0)  # let the chart's last frame paint
        dom = browser.evaluate("document.documentElement.outerHTML")
        text = browser.evaluate("document.body.innerText")
        axis = browser.axis()
        shot = tmp_path / "dashboard.png"
        browser.screenshot(shot)
        (tmp_path / "page.html").write_text(dom)
        assert rendered, f"the page did not render the chart and the pair watch: {text[:2_000]}"
        assert "vega-embed" in dom
        for label in ("latency", "consumer lag", "freshness", "dead letters"):
            assert label in text
        assert "ms p50" in text, "no end-to-end latency measured on live data"
        # Crypto trades on UTC: the sample's 23:54-00:06 UTC, not Kolkata's 05:24-05:36.
        assert axis["labels"] and _hours(axis["labels"]) <= {23, 0}, axis
        assert "UTC time" in axis["titles"] and "times in UTC" in text, axis

        image = Image.open(shot).convert("RGB")
        pixels = list(image.get_flattened_data())
        up = sum(_near(p, _rgb(UP)) for p in pixels)
        down = sum(_near(p, _rgb(DOWN)) for p in pixels)
        assert up > 300 and down > 300, f"no rendered candles in the screenshot ({up} up, {down} down pixels)"

        # SPY on New York time: 15:55-16:20 EDT, not 19:55-20:20 UTC nor Kolkata's 01:25-01:50.
        browser.call("Page.navigate", url=f"{url}/?symbol=SPY&timeframe=1s")
        spy = browser.wait_for(
            "document.body.innerText.includes('SPY · 1s') && document.body.innerText.includes('history 120') && "
            "document.body.innerText.includes('EDT') && "
            "document.querySelectorAll('.vega-embed g.role-axis-label text').length > 0",
            60,
        )
        time.sleep(1.0)
        axis, text = browser.axis(), browser.evaluate("document.body.innerText")
        browser.screenshot(tmp_path / "spy.png")
        assert spy, f"the SPY chart did not render: {text[:2_000]}"
        assert axis["labels"] and _hours(axis["labels"]) <= {15, 16}, axis
        assert "America/New_York time" in axis["titles"] and "times in America/New_York" in text, axis
        assert "EDT" in text  # the latest bar's window, in New York time (the wait asked for it too)

        # No symbol asked for: the one with the most trades in the last hour (SPY's 2013 bars are older).
        browser.call("Page.navigate", url=f"{url}/")
        default = browser.wait_for(f"document.body.innerText.includes('{busiest} · 1s')", 60)
        assert default, f"not the most active symbol ({busiest}): {browser.evaluate('document.body.innerText')[:1_000]}"
        print(
            f"dashboard: page rendered {time.monotonic() - started:.1f}s after start; "
            f"{up} up / {down} down candle pixels; SPY axis {axis['labels']}; screenshot {shot}"
        )
    finally:
        if browser is not None:
            browser.close()
        stop_dashboard(dashboard)
        for w in workers:  # all at once, then wait for each
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            stop_worker(w)
