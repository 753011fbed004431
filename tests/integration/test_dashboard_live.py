"""The live view served by ``tickforge dashboard`` on live data, looked at by a real headless Chromium.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). The real Binance sample goes through
the workers (Kafka) and the bar store (PostgreSQL); the page must show the chart (the Vega embed
in the DOM, candle-coloured pixels in the screenshot), the badges and the pair watch.
"""

from __future__ import annotations

import base64
import contextlib
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
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp(dir=out_dir)}", f"--window-size={width},{height}",
             f"--remote-debugging-port={port}", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(out_dir / "chromium.log", "ab"), start_new_session=True,
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
        self.call("Emulation.setDeviceMetricsOverride",
                  width=width, height=height, deviceScaleFactor=1, mobile=False)

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

    def screenshot(self, path: Path) -> None:
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
        stdout=open(log_dir / "dashboard.log", "ab"), stderr=subprocess.STDOUT,
        env=dict(os.environ), start_new_session=True,
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


def test_dashboard_renders_live_chart_in_headless_chromium(settings, samples, tmp_path, monkeypatch):
    # `make test` installs Debian's chromium where it is missing: its absence is a failure.
    assert CHROMIUM is not None, "needs Debian's chromium: apt-get install -y chromium"
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIR_MIN_HISTORY", "4")
    monkeypatch.setenv("TICKFORGE_SIGNALS__PAIRS", '["BTCUSDT-SPOT/BTCUSD_PERP"]')
    crypto = read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")
    started = time.monotonic()
    workers = [start_worker(name, log_dir=tmp_path) for name in
               ("bar-worker", "timeframe-worker", "signal-worker", "pair-worker", "bar-store")]
    dashboard, url = start_dashboard(tmp_path)
    browser = None
    try:
        browser = Chromium(tmp_path)
        # Open the page before the data: the view's feed then receives it live (the latency badge
        # measures it) and the page picks the deep-linked symbol up when it appears.
        browser.call("Page.navigate", url=f"{url}/?symbol={SYMBOL}&timeframe=1s")
        assert browser.wait_for("document.body.innerText.includes('Waiting for data')", 60), "page not served"
        replay(settings, crypto)
        rendered = browser.wait_for(
            "!!document.querySelector('.vega-embed canvas, .vega-embed svg') && "
            f"document.body.innerText.includes('{SYMBOL} · 1s') && "
            "document.body.innerText.includes('BTCUSDT-SPOT/BTCUSD_PERP') && "
            "document.body.innerText.includes('history 240') && "
            "/rsi14\\s+[0-9]/.test(document.body.innerText)", 180)  # signals and golden bars arrived (2 busy cores)
        time.sleep(1.0)  # let the chart's last frame paint
        dom = browser.evaluate("document.documentElement.outerHTML")
        text = browser.evaluate("document.body.innerText")
        shot = tmp_path / "dashboard.png"
        browser.screenshot(shot)
        (tmp_path / "page.html").write_text(dom)
        assert rendered, f"the page did not render the chart and the pair watch: {text[:2_000]}"
        assert "vega-embed" in dom
        for label in ("latency", "consumer lag", "freshness", "dead letters"):
            assert label in text
        assert "ms p50" in text, "no end-to-end latency measured on live data"

        image = Image.open(shot).convert("RGB")
        pixels = list(image.get_flattened_data())
        up = sum(_near(p, _rgb(UP)) for p in pixels)
        down = sum(_near(p, _rgb(DOWN)) for p in pixels)
        assert up > 300 and down > 300, f"no rendered candles in the screenshot ({up} up, {down} down pixels)"
        print(f"dashboard: page rendered {time.monotonic() - started:.1f}s after start; "
              f"{up} up / {down} down candle pixels; screenshot {shot}")
    finally:
        if browser is not None:
            browser.close()
        stop_dashboard(dashboard)
        for w in workers:  # all at once, then wait for each
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            stop_worker(w)
