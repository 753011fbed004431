"""HTTP NDJSON tick source: for feeds that push rather than publish to Kafka.

``POST /ticks`` with ``Content-Type: application/x-ndjson`` (or ``application/ndjson``), one JSON
tick per line (the edge ``Trade`` or ``Quote`` contract). Each valid line is produced to the tick
topic keyed by symbol (as the replay does, so it lands on the symbol's partition); a line that is
not a tick goes to the dead-letter topic with its reason (payload cut to a bounded size). The
answer comes only once every line is acknowledged by the broker: ``200 {"accepted", "rejected",
"request_id"}``. JSON text sequences (RFC 7464, ``application/json-seq``) frame records with RS
bytes, not newlines: they are refused like any other type (415).

What a network can throw at it, and the answer (bounds in ``settings.http_source``):

- a body over ``max_body_bytes``: 413, from the declared length before reading, or as soon as a
  chunked body passes it (nothing of it is published);
- a malformed ``Content-Length`` (``abc``, ``-1``): 400 from the HTTP parser; a body shorter than
  its length, or one that trickles: 408 after ``body_timeout_s``;
- request headers not complete within ``header_timeout_s`` (half-requests, slow headers) and idle
  keep-alive connections after ``keep_alive_s``: the connection is closed. Connections are tasks on
  one event loop, not threads; past ``max_connections`` a request gets 503;
- the broker away (lines not acknowledged within ``delivery_timeout_s``): 503 with
  ``Retry-After``. Lines of such a request may be partly published; a retry repeats them, and the
  bar worker drops repeated trade ids within its dedup horizon;
- a retry of an answered request with the same ``Idempotency-Key`` header: the first answer again
  (``Idempotent-Replayed: true``), nothing published twice; a repeat while the first is still in
  flight waits for its answer. Keys are kept ``idempotency_ttl_s`` (at most ``idempotency_keys``);
  the same key with another body is 422;
- with ``token`` set, no ``Authorization: Bearer <token>``: 401. Off loopback a token and TLS are
  required: :func:`check_exposure` refuses to start without them.

:func:`push_file` replays a file into such an endpoint, paced like ``stream replay``, retrying
with the same idempotency key per chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import uvicorn
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from tickforge.platform.contracts import JSON_ENCODER, DeadLetter, Quote, Trade
from tickforge.platform.io.files import TickFile
from tickforge.platform.io.kafka import make_producer, topic_name
from tickforge.platform.reasons import Reason
from tickforge.platform.settings import HttpSourceSettings, Settings
from tickforge.platform.topics import DEAD_LETTER, TICKS, partition_for
from tickforge.streaming import metrics
from tickforge.streaming.codec import Undecodable, decode_tick_message, payload_text

log = logging.getLogger(__name__)
SOURCE = "http-ndjson"
CONTENT_TYPES = ("application/x-ndjson", "application/ndjson")
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255


class BrokerUnavailable(Exception):
    """Lines were not acknowledged in time: the broker is away (the answer is 503)."""


class _Deliveries:
    """Delivery reports of one request's messages (called on the producer's poll thread)."""

    def __init__(self) -> None:
        self._done = threading.Condition()
        self.pending = 0
        self.failures: list[str] = []

    def sent(self) -> None:
        with self._done:
            self.pending += 1

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        with self._done:
            self.pending -= 1
            if err is not None:
                self.failures.append(str(err))
            self._done.notify_all()

    def wait(self, deadline: float) -> bool:
        with self._done:
            while self.pending and (left := deadline - time.monotonic()) > 0:
                self._done.wait(left)
            return not self.pending


class TickGateway:
    """Validates NDJSON lines and produces them durably; shared by the request threads.

    One producer for the process; a thread serves its delivery reports, so a full local queue
    (``BufferError``) drains while a request waits, and each request learns its own outcome.
    """

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.config = settings.http_source
        timeout_ms = int(self.config.delivery_timeout_s * 1000)
        overrides: dict[str, Any] = {"message.timeout.ms": timeout_ms}
        self.producer = producer or make_producer(settings, **overrides)
        self.topic = topic_name(settings, TICKS)
        self.pinned = settings.kafka.pinned_symbols
        self.dead_letter_topic = topic_name(settings, DEAD_LETTER)
        self.partitions = self._partition_count(10.0)
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_deliveries, name="delivery-reports", daemon=True)
        self._poller.start()

    def _partition_count(self, timeout: float) -> int:
        try:
            topic = self.producer.list_topics(self.topic, timeout=timeout).topics[self.topic]
        except KafkaException as exc:
            raise BrokerUnavailable(str(exc)) from exc
        if topic.error is not None or not topic.partitions:
            raise BrokerUnavailable(f"topic {self.topic}: {topic.error or 'no partitions'}")
        return len(topic.partitions)

    def _serve_deliveries(self) -> None:
        while not self._closed.is_set():
            self.producer.poll(0.1)

    def close(self) -> None:
        self.producer.flush(self.config.delivery_timeout_s)
        self._closed.set()
        self._poller.join(5)

    def ingest(self, body: bytes) -> dict[str, int]:
        """Produce every line; returns the counts once all are acknowledged, else raises
        :class:`BrokerUnavailable`."""
        deadline = time.monotonic() + self.config.delivery_timeout_s
        # A quick metadata round trip first: with the broker away, answer at once and publish nothing.
        self.partitions = self._partition_count(min(2.0, self.config.delivery_timeout_s))
        deliveries = _Deliveries()
        accepted = rejected = 0
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                if len(line) > self.config.max_line_bytes:
                    raise Undecodable(
                        Reason.UNDECODABLE,
                        f"a line of {len(line)} bytes, over the {self.config.max_line_bytes}-byte line limit",
                    )
                tick = decode_tick_message(line)
                if not isinstance(tick, (Trade, Quote)):
                    raise Undecodable("schema_violation", "a pushed tick is one JSON object")
            except Undecodable as exc:
                letter = DeadLetter(reason=exc.reason, source=SOURCE, payload=payload_text(line), detail=exc.detail)
                self._produce(deliveries, deadline, self.dead_letter_topic, JSON_ENCODER.encode(letter), SOURCE)
                metrics.DEAD_LETTERS.labels(reason=exc.reason).inc()
                rejected += 1
                continue
            # The line as sent is what goes on: the bar worker applies the value rules.
            self._produce(
                deliveries,
                deadline,
                self.topic,
                line,
                tick.symbol,
                partition_for(tick.symbol, self.partitions, self.pinned),
            )
            accepted += 1
        if not deliveries.wait(deadline):
            raise BrokerUnavailable(
                f"{deliveries.pending} lines not acknowledged in {self.config.delivery_timeout_s:.0f} s"
            )
        if deliveries.failures:
            raise BrokerUnavailable(f"{len(deliveries.failures)} lines not delivered: {deliveries.failures[0]}")
        return {"accepted": accepted, "rejected": rejected}

    def _produce(
        self, deliveries: _Deliveries, deadline: float, topic: str, value: bytes, key: str, partition: int = -1
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition=partition, on_delivery=deliveries.report)
                deliveries.sent()
                return
            except BufferError:
                # The local queue is full: the poll thread drains it as acknowledgements come.
                if time.monotonic() > deadline:
                    raise BrokerUnavailable("the producer queue stayed full") from None
                time.sleep(0.005)


@dataclass
class _Answer:
    digest: bytes
    status: int
    body: dict
    at: float


class IdempotencyCache:
    """Answers of recent requests by idempotency key, bounded in count and age. Only successful
    answers are kept: a failed request may be retried with its key."""

    def __init__(self, max_keys: int, ttl_s: float) -> None:
        self.max_keys, self.ttl_s = max_keys, ttl_s
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    def _expire(self, now: float) -> None:
        while self._answers and (
            len(self._answers) > self.max_keys or now - next(iter(self._answers.values())).at > self.ttl_s
        ):
            self._answers.popitem(last=False)

    async def answer(
        self, key: str, digest: bytes, compute: Callable[[], Awaitable[tuple[int, dict]]]
    ) -> tuple[int, dict, bool]:
        """(status, body, replayed): the stored answer of ``key``, or ``compute()``'s."""
        while (running := self._in_flight.get(key)) is not None:
            await asyncio.shield(running)
        self._expire(time.monotonic())
        stored = self._answers.get(key)
        if stored is not None:
            if not hmac.compare_digest(stored.digest, digest):
                return 422, {"error": "this Idempotency-Key was used with another body"}, False
            return stored.status, stored.body, True
        done = self._in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            status, body = await compute()
            if status == 200 and self.max_keys:
                self._answers[key] = _Answer(digest, status, body, time.monotonic())
                self._expire(time.monotonic())
            return status, body, False
        finally:
            del self._in_flight[key]
            done.set_result(None)


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, counted as it streams in (chunked or not): 413 past ``limit``, 408 when not
    complete within ``timeout_s``."""
    body = bytearray()
    chunks = request.stream().__aiter__()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            return bytes(body)
        except TimeoutError:
            raise _BodyError(408, f"the body did not arrive within {timeout_s:g} s") from None
        body += chunk
        if len(body) > limit:
            raise _BodyError(413, f"the body is over {limit} bytes")


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    if status in (400, 408, 413):  # the rest of the request is not read: this connection is done
        headers["connection"] = "close"
    return JSONResponse({"error": message}, status, headers=headers)


def make_app(gateway: TickGateway, config: HttpSourceSettings) -> Starlette:
    token = config.token.get_secret_value().encode() if config.token else None
    cache = IdempotencyCache(config.idempotency_keys, config.idempotency_ttl_s)

    async def ticks(request: Request) -> Response:
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
                return _error(401, "a bearer token is required", **{"www-authenticate": "Bearer"})
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in CONTENT_TYPES:
            return _error(415, f"Content-Type must be one of {', '.join(CONTENT_TYPES)}, not {media_type or 'missing'}")
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            return _error(400, "Content-Length is not a number of bytes")
        if declared is not None and int(declared) > config.max_body_bytes:
            return _error(413, f"the body is over {config.max_body_bytes} bytes")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
            return _error(400, f"an Idempotency-Key has 1 to {MAX_KEY_LENGTH} characters")
        try:
            body = await _read_body(request, config.max_body_bytes, config.body_timeout_s)
        except _BodyError as exc:
            return _error(exc.status, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; nothing was published
        request_id = key or uuid.uuid4().hex

        async def publish() -> tuple[int, dict]:
            try:
                counts = await anyio.to_thread.run_sync(gateway.ingest, body)
            except BrokerUnavailable as exc:
                log.warning("broker unavailable", extra={"request_id": request_id, "error": str(exc)})
                return 503, {"error": f"the broker is unavailable: {exc}"}
            return 200, {**counts, "request_id": request_id}

        if key is None:
            status, answer, replayed = (*await publish(), False)
        else:
            status, answer, replayed = await cache.answer(key, hashlib.sha256(body).digest(), publish)
        headers = {"x-request-id": request_id}
        if status == 503:
            headers["retry-after"] = str(config.retry_after_s)
        if replayed:
            headers["idempotent-replayed"] = "true"
        return JSONResponse(answer, status, headers=headers)

    return Starlette(routes=[Route("/ticks", ticks, methods=["POST"])])


def _with_header_timeout(timeout_s: float) -> type[H11Protocol]:
    class HeaderTimeoutProtocol(H11Protocol):
        """uvicorn's h11 protocol plus a bound on receiving a request's line and headers: its
        keep-alive timer only runs after a response, so a half-sent request would hold its
        connection for ever."""

        _header_timer: asyncio.TimerHandle | None = None

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(timeout_s, self._headers_overdue)

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self._between_requests():
                self._header_timer = self.loop.call_later(timeout_s, self._headers_overdue)
            super().data_received(data)
            if self._header_timer is not None and not self._between_requests():
                self._header_timer.cancel()
                self._header_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            super().connection_lost(exc)

        def _headers_overdue(self) -> None:
            self._header_timer = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def check_exposure(config: HttpSourceSettings) -> None:
    """Off loopback the source needs a bearer token and TLS; raises ValueError otherwise."""
    try:
        loopback = ipaddress.ip_address(config.host).is_loopback
    except ValueError:
        loopback = config.host == "localhost"
    if loopback:
        return
    missing = [
        name
        for name, value in (
            ("token", config.token),
            ("tls_certfile", config.tls_certfile),
            ("tls_keyfile", config.tls_keyfile),
        )
        if not value
    ]
    if missing:
        raise ValueError(
            f"the HTTP source binds {config.host}, not loopback: set TICKFORGE_HTTP_SOURCE__"
            + ", TICKFORGE_HTTP_SOURCE__".join(m.upper() for m in missing)
        )


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """An HTTP server ready to ``run()`` (``host``/``port`` override the settings)."""
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    config = settings.http_source.model_copy(update=updates)
    check_exposure(config)
    gateway = TickGateway(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(gateway, config),
            host=config.host,
            port=config.port,
            http=_with_header_timeout(config.header_timeout_s),
            loop="asyncio",
            lifespan="off",
            limit_concurrency=config.max_connections,
            timeout_keep_alive=int(config.keep_alive_s) or 1,
            timeout_graceful_shutdown=int(config.delivery_timeout_s) + 5,
            h11_max_incomplete_event_size=65_536,  # request line and headers
            ssl_certfile=config.tls_certfile,
            ssl_keyfile=config.tls_keyfile,
            access_log=False,
            log_level="warning",
        )
    )
    server.gateway = gateway  # type: ignore[attr-defined]  # closed by run()
    return server


def run(server: uvicorn.Server) -> None:
    """Serve until SIGTERM/SIGINT, then deliver what is queued and exit 0."""
    # uvicorn re-raises the stop signal once it has shut down; handled, it ends run() normally.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        server.gateway.close()  # type: ignore[attr-defined]


def push_file(
    url: str,
    trades: TickFile,
    speed: float | None = None,
    chunk_rows: int = 5_000,
    token: str | None = None,
    attempts: int = 10,
) -> dict[str, int]:
    """Replay a trades file to an NDJSON endpoint in event-time order; returns the totals.

    Each chunk carries its own idempotency key and is retried with it (on 503, after
    ``Retry-After``; on a lost connection, at once), so a retry never publishes a chunk twice.
    """
    totals = {"accepted": 0, "rejected": 0}
    data = trades.data
    started = time.perf_counter()
    first_ts = data["ts_ms"][0] if data.height else 0
    encoder = msgspec.json.Encoder()
    headers = {"Content-Type": CONTENT_TYPES[0]}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for offset in range(0, data.height, chunk_rows):
        chunk = data.slice(offset, chunk_rows)
        if speed:
            wait = (chunk["ts_ms"][0] - first_ts) / speed / 1000 - (time.perf_counter() - started)
            if wait > 0:
                time.sleep(wait)
        body = b"\n".join(
            encoder.encode(
                Trade(ts_ms=r["ts_ms"], symbol=r["symbol"], price=r["price"], size=r["size"], trade_id=r["trade_id"])
            )
            for r in chunk.iter_rows(named=True)
        )
        result = _post_with_retries(url, body, {**headers, "Idempotency-Key": uuid.uuid4().hex}, attempts)
        totals["accepted"] += result["accepted"]
        totals["rejected"] += result["rejected"]
    return totals


def _post_with_retries(url: str, body: bytes, headers: dict[str, str], attempts: int) -> dict:
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == attempts:
                raise
            time.sleep(float(exc.headers.get("Retry-After", 1)))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == attempts:
                raise
            time.sleep(min(2**attempt * 0.1, 5))
    raise AssertionError("unreachable")
