"""The HTTP NDJSON source as its own process on the real broker: pushed ticks become bars, and
what a network throws at it (huge, garbage, mistyped, chunked, malformed, half-sent, retried,
unauthenticated requests) gets an answer without publishing anything twice or wrongly."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
import polars as pl
import pytest

from tests.integration.pipeline import assert_bars_equal, bars_frame, read_topic, start_worker, stop_worker, wait_until
from tickforge.platform.bars.offline import build_bars
from tickforge.platform.contracts import DEAD_LETTER_PAYLOAD_LIMIT, DeadLetter, Trade
from tickforge.platform.io.files import TickFile, read_trades
from tickforge.platform.io.kafka import encode_marker, make_producer, marker_headers, topic_name
from tickforge.platform.stack.process import any_free_port, port_accepts
from tickforge.platform.topics import DAY_MS, DEAD_LETTER, TICKS, bar_topic
from tickforge.streaming.http_source import push_file

pytestmark = pytest.mark.integration
NDJSON = "application/x-ndjson"
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 3
MAX_BODY = 8 * 1024 * 1024  # the default bound


@pytest.fixture(scope="module")
def crypto(samples) -> TickFile:
    return read_trades(samples / "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz")


@pytest.fixture(scope="module")
def lines(crypto) -> list[bytes]:
    """The sample's trades as NDJSON lines, as a pushing feed sends them."""
    encoder = msgspec.json.Encoder()
    return [
        encoder.encode(
            Trade(ts_ms=r["ts_ms"], symbol=r["symbol"], price=r["price"], size=r["size"], trade_id=r["trade_id"])
        )
        for r in crypto.data.head(20_000).iter_rows(named=True)
    ]


class Source:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://127.0.0.1:{port}/ticks"

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", "/ticks", body=body, headers={"Content-Type": NDJSON, **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
            try:
                answer = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                answer = {"text": raw.decode(errors="replace")}  # uvicorn's own plain-text answers
            return response.status, answer, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

    def sockets(self) -> int:
        fds = Path(f"/proc/{self.proc.pid}/fd")
        count = 0
        for fd in fds.iterdir():
            try:
                count += fd.readlink().name.startswith("socket:")
            except FileNotFoundError:
                pass
        return count


@pytest.fixture()
def start_source(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("TICKFORGE_HTTP_SOURCE__HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))
    monkeypatch.setenv("TICKFORGE_HTTP_SOURCE__BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))
    started: list[subprocess.Popen] = []

    def start(**env: str) -> Source:
        for key, value in env.items():
            monkeypatch.setenv(f"TICKFORGE_HTTP_SOURCE__{key.upper()}", value)
        port = any_free_port(set())
        proc = start_worker("http-source", "--port", str(port), log_dir=tmp_path)
        started.append(proc)
        wait_until(lambda: port_accepts(port) or proc.poll() is not None, 60, 0.2, "the HTTP source to listen")
        assert proc.poll() is None, (tmp_path / "http-source.log").read_text()
        return Source(proc, port)

    yield start
    for proc in started:
        assert stop_worker(proc) == 0, "the source did not stop cleanly on SIGTERM"


def _answer(port: int, head: bytes, body_chunks: list[bytes] = (), timeout: float = 30) -> tuple[int, bytes, float]:
    """Send raw bytes (a body fed from another thread, as a client that does not wait) and read
    the answer: (status, body, seconds until it came). Status 0: closed without an answer."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def feed() -> None:
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: the rest is not wanted

    sender = threading.Thread(target=feed, daemon=True)
    try:
        sock.sendall(head)
        sender.start()
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
        except http.client.RemoteDisconnected:
            return 0, b"", time.monotonic() - started
        return response.status, response.read(), time.monotonic() - started
    finally:
        sock.close()
        sender.join(10)


def _published(settings, name: str, expect: int, idle_s: float = 2.0) -> list[bytes]:
    values, _ = read_topic(settings, name, idle_s=idle_s, max_s=120, expect=expect)
    return values


def _end_of_feed(settings, sample: TickFile) -> None:
    """The end-of-day watermark on every tick partition, as the replay ends a bounded source: a
    pushed historical day does not idle by wall clock, so its last windows close on this."""
    last = int(sample.data["ts_ms"].max())
    end = last - last % DAY_MS + DAY_MS + settings.streaming.allowed_lateness_ms
    producer = make_producer(settings)
    for p in range(settings.kafka.partitions):
        producer.produce(topic_name(settings, TICKS), encode_marker(end), None, partition=p, headers=marker_headers())
    assert producer.flush(30) == 0


def test_pushed_ticks_become_the_same_bars_as_offline(settings, crypto, start_source, tmp_path):
    sample = TickFile(
        "trades",
        crypto.source,
        crypto.data.filter(pl.col("symbol").is_in(["ETHUSD_PERP", "BTCUSD_PERP"])),
        crypto.dead_letters,
    )
    source = start_source()
    worker = start_worker("bar-worker", log_dir=tmp_path)
    try:
        totals = push_file(source.url, sample)
        assert totals == {"accepted": sample.data.height, "rejected": 0}
        status, answer, headers = source.post(b'{"ts_ms": 1, "symbol": "X", "price": "x", "size": 1}\nnot json\n')
        assert (status, answer["accepted"], answer["rejected"]) == (200, 0, 2)
        assert headers["x-request-id"] == answer["request_id"]
        _end_of_feed(settings, sample)
        letters = _published(settings, DEAD_LETTER, 2)
        assert sorted(msgspec.json.decode(v, type=DeadLetter).reason for v in letters) == [
            "schema_violation",
            "undecodable",
        ]
        expected = build_bars(sample, ["1s"], partitions=settings.kafka.partitions).bars["1s"]
        values, _ = read_topic(settings, bar_topic("1s"), idle_s=3, expect=expected.height)
        assert_bars_equal(bars_frame(values), expected)
    finally:
        stop_worker(worker)


def test_a_50mb_body_is_refused_with_413_and_nothing_is_published(settings, lines, start_source):
    source = start_source()
    block = b"\n".join(lines) + b"\n"
    body = block * (50 * 1024 * 1024 // len(block) + 1)
    assert len(body) > 50 * 1024 * 1024
    head = (
        f"POST /ticks HTTP/1.1\r\nHost: x\r\nContent-Type: {NDJSON}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    status, _, seconds = _answer(source.port, head, [body[i : i + 65_536] for i in range(0, len(body), 65_536)])
    assert status == 413 and seconds < 10
    # Chunked, so the size is only known while it streams in: refused once past the bound.
    chunked = [
        b"%x\r\n%s\r\n" % (len(body[i : i + 1_048_576]), body[i : i + 1_048_576])
        for i in range(0, len(body), 1_048_576)
    ]
    head = f"POST /ticks HTTP/1.1\r\nHost: x\r\nContent-Type: {NDJSON}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    status, _, seconds = _answer(source.port, head, [*chunked, b"0\r\n\r\n"])
    assert status == 413 and seconds < 20
    assert _published(settings, TICKS, 0) == []
    # The source is not broken by it: the next request is answered and published.
    status, answer, _ = source.post(b"\n".join(lines[:100]))
    assert (status, answer["accepted"]) == (200, 100)
    assert len(_published(settings, TICKS, 100)) == 100


def test_a_2mb_garbage_line_is_a_truncated_dead_letter_and_the_rest_is_published(settings, lines, start_source):
    source = start_source()
    garbage = bytes(range(33, 127)) * (2 * 1024 * 1024 // 94 + 1)
    status, answer, _ = source.post(b"\n".join([*lines[:500], garbage, *lines[500:1000]]))
    assert (status, answer["accepted"], answer["rejected"]) == (200, 1000, 1)
    (letter,) = [msgspec.json.decode(v, type=DeadLetter) for v in _published(settings, DEAD_LETTER, 1)]
    assert letter.reason == "undecodable" and letter.source == "http-ndjson" and "line limit" in letter.detail
    head, _, note = letter.payload.partition("... (")
    assert len(head) == DEAD_LETTER_PAYLOAD_LIMIT and garbage.decode().startswith(head)
    assert note == f"{len(garbage):,} bytes)"
    assert sorted(_published(settings, TICKS, 1000)) == sorted(lines[:1000])


def test_a_wrong_content_type_is_415_and_nothing_is_published(settings, lines, start_source):
    source = start_source()
    body = b"\n".join(lines[:50])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json-seq"):
        status, answer, _ = source.post(body, {"Content-Type": content_type})
        assert status == 415, content_type
        assert "application/x-ndjson" in answer["error"]
    head = f"POST /ticks HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    assert _answer(source.port, head + body)[0] == 415  # no Content-Type at all
    status, answer, _ = source.post(body, {"Content-Type": "application/x-ndjson; charset=utf-8"})
    assert (status, answer["accepted"]) == (200, 50)
    assert len(_published(settings, TICKS, 50)) == 50  # only the well-typed request


def test_a_chunked_body_is_read_whole_and_published(settings, lines, start_source):
    source = start_source()
    sent = lines[:3000]
    conn = http.client.HTTPConnection("127.0.0.1", source.port, timeout=60)
    # Chunk borders fall inside lines: the source must join them.
    blob = b"\n".join(sent)
    conn.request(
        "POST",
        "/ticks",
        body=iter(blob[i : i + 10_007] for i in range(0, len(blob), 10_007)),
        headers={"Content-Type": NDJSON},
        encode_chunked=True,
    )
    response = conn.getresponse()
    answer = msgspec.json.decode(response.read())
    conn.close()
    assert (response.status, answer["accepted"], answer["rejected"]) == (200, 3000, 0)
    assert sorted(_published(settings, TICKS, 3000)) == sorted(sent)


@pytest.mark.parametrize(("length", "expected"), [("abc", 400), ("-1", 400), ("1e3", 400), ("larger", 408)])
def test_a_malformed_or_unkept_content_length_gets_an_answer_not_a_hang(
    settings, lines, start_source, length, expected
):
    source = start_source()
    body = b"\n".join(lines[:10])
    declared = str(len(body) + 1000) if length == "larger" else length
    head = (f"POST /ticks HTTP/1.1\r\nHost: x\r\nContent-Type: {NDJSON}\r\nContent-Length: {declared}\r\n\r\n").encode()
    status, _, seconds = _answer(source.port, head + body)
    assert status == expected
    assert seconds < BODY_TIMEOUT_S + 3
    assert _published(settings, TICKS, 0) == []


def test_400_idle_half_requests_hold_no_threads_and_are_closed_by_the_timeout(settings, lines, start_source):
    source = start_source()
    threads_before = source.threads()
    half = [socket.create_connection(("127.0.0.1", source.port), timeout=30) for _ in range(400)]
    try:
        for sock in half:
            sock.sendall(b"POST /ticks HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-")
        time.sleep(0.5)
        assert source.threads() <= threads_before + 2  # connections are tasks, not threads
        # The number of connections is bounded: past it a request is told to come back.
        assert source.post(b"\n".join(lines[:10]))[0] == 503
        started = time.monotonic()
        for sock in half:
            assert sock.recv(1024) == b""  # closed by the server, without a request to answer
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 5
    finally:
        for sock in half:
            sock.close()
    wait_until(lambda: source.sockets() < 20, 10, 0.2, "the half-requests' sockets to be released")
    status, answer, _ = source.post(b"\n".join(lines[:10]))
    assert (status, answer["accepted"]) == (200, 10)


def test_a_retried_request_with_the_same_idempotency_key_is_published_once(settings, lines, start_source):
    source = start_source()
    body = b"\n".join(lines[:2000])
    first = source.post(body, {"Idempotency-Key": "feed-7-batch-1"})
    again = source.post(body, {"Idempotency-Key": "feed-7-batch-1"})
    assert first[0] == again[0] == 200
    assert first[1] == again[1] and first[1]["request_id"] == "feed-7-batch-1"
    assert again[2].get("idempotent-replayed") == "true"
    # Two retries at once (the first answer lost on the way): one publishes, the other waits for it.
    answers: list = []
    racers = [
        threading.Thread(
            target=lambda: answers.append(
                source.post(body[: len(body) // 2].rsplit(b"\n", 1)[0], {"Idempotency-Key": "feed-7-batch-2"})
            )
        )
        for _ in range(2)
    ]
    for t in racers:
        t.start()
    for t in racers:
        t.join(60)
    assert [a[0] for a in answers] == [200, 200] and answers[0][1] == answers[1][1]
    half = answers[0][1]["accepted"]
    assert source.post(b"\n".join(lines[:5]), {"Idempotency-Key": "feed-7-batch-1"})[0] == 422  # another body
    published = Counter(_published(settings, TICKS, 2000 + half))
    assert sum(published.values()) == 2000 + half
    assert all(n == 1 + (line in lines[:half]) for line, n in published.items())
    assert set(published) == set(lines[:2000])


def test_a_configured_token_is_required(settings, crypto, lines, start_source):
    source = start_source(token="s3cret-token")
    body = b"\n".join(lines[:20])
    assert source.post(body)[0] == 401
    assert source.post(body, {"Authorization": "Bearer wrong"})[0] == 401
    status, answer, _ = source.post(body, {"Authorization": "Bearer s3cret-token"})
    assert (status, answer["accepted"]) == (200, 20)
    rows = TickFile("trades", crypto.source, crypto.data.slice(20, 20), crypto.dead_letters)  # lines[20:40]
    assert push_file(source.url, rows, token="s3cret-token") == {"accepted": 20, "rejected": 0}
    assert len(_published(settings, TICKS, 40)) == 40


def test_off_loopback_the_source_refuses_to_start_without_token_and_tls(settings):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tickforge.cli",
            "stream",
            "http-source",
            "--host",
            "0.0.0.0",
            "--port",
            str(any_free_port(set())),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "TICKFORGE_HTTP_SOURCE__TOKEN" in result.stderr and "TLS_CERTFILE" in result.stderr
