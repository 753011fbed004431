"""One settings object naming every endpoint and credential.

Values come from, highest priority first: environment variables (``TICKFORGE_`` prefix, nested
with ``__``, e.g. ``TICKFORGE_KAFKA__BOOTSTRAP_SERVERS``), a ``.env`` file, and the file the local
stack writes when it starts (``<state_dir>/stack.env``). Secrets are ``SecretStr`` so that they never
appear in logs or reprs; :func:`redact_dsn` hides a password inside a DSN.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickforge.platform.bars.watermark import MAX_EVENT_JUMP_MS
from tickforge.platform.contracts import MAX_SYMBOL_LENGTH

DEFAULT_STATE_DIR = ".tickforge"


def state_dir_from_env() -> Path:
    """The local stack's state folder (git-ignored), before settings are loaded."""
    return Path(os.environ.get("TICKFORGE_STATE_DIR", DEFAULT_STATE_DIR))


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    # Extra librdkafka properties for production clusters (SASL, TLS), e.g.
    # TICKFORGE_KAFKA__CLIENT_CONFIG='{"security.protocol": "SASL_SSL", ...}'.
    client_config: dict[str, str] = Field(default_factory=dict)
    topic_prefix: str = "tickforge."
    partitions: int = 4
    # Hot symbols with a partition of their own in every topic (the i-th pinned symbol on
    # partition i; the others spread by CRC32 over the rest), e.g. TICKFORGE_KAFKA__PINNED_SYMBOLS
    # '["SPY"]'; `tickforge topics plan --pin` shows the load it gives. Every producer and the
    # offline build read it, so changing it re-maps symbols: drain the workers first.
    pinned_symbols: list[str] = Field(default_factory=list)


class PostgresSettings(BaseModel):
    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/tickforge")
    schema_name: str = "tickforge"


class S3Settings(BaseModel):
    endpoint_url: str | None = None  # None means AWS itself
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    raw_bucket: str = "tickforge-raw"
    archive_bucket: str = "tickforge-archive"


class SnowflakeSettings(BaseModel):
    account: str = "fakesnow"
    user: str = "fake"
    password: SecretStr = SecretStr("snow")
    database: str = "TICKFORGE"
    warehouse: str | None = None
    role: str | None = None
    # host/port/protocol are set for the local stand-in; leave unset for a real account.
    host: str | None = None
    port: int | None = None
    protocol: str | None = None

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect``."""
        args: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "password": self.password.get_secret_value(),
            "database": self.database,
        }
        for key in ("warehouse", "role", "host", "port", "protocol"):
            value = getattr(self, key)
            if value is not None:
                args[key] = value
        if self.host is not None:
            # The local stand-in: no telemetry calls, fail fast.
            args["network_timeout"] = 15
            args["session_parameters"] = {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False}
        return args


class StreamingSettings(BaseModel):
    allowed_lateness_ms: int = Field(default=500, ge=0)
    # A caught-up partition with no input for this long advances its watermark with the wall
    # clock. Keep it above the source's worst stall: ticks that arrive after an idle advance
    # passed their window are late, as they would be if the feed were live.
    idle_timeout_ms: int = 2_000
    # Only a live feed idles: its event time is within this of the input's arrival (Kafka) time.
    # A replay or backfill of past data never advances by wall clock, whatever its pacing.
    live_lag_ms: int = Field(default=10_000, ge=0)
    # Bounds on event time (dead letter ``future_timestamp``, the watermark does not move): ahead
    # of the arrival time by more than a clock skew, or ahead of the partition's watermark by more
    # than a replay can jump (weekends and holidays included).
    max_future_ms: int = Field(default=30_000, ge=0)
    max_event_jump_ms: int = Field(default=MAX_EVENT_JUMP_MS, gt=0)
    max_symbol_length: int = Field(default=MAX_SYMBOL_LENGTH, gt=0)  # longer symbols are ``bad_symbol``
    timeframes: list[str] = Field(default_factory=lambda: ["1s", "1m", "3m", "5m", "15m"])
    dedup_horizon_ms: int = 60_000
    metrics_port: int = 0  # 0: no Prometheus endpoint
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a container: Prometheus scrapes from another one
    # Supervision (`stream start`): a worker whose liveness gauge is older than this is restarted;
    # restarts of a worker that keeps failing wait 1 s, 2 s, 4 s, ... up to the cap.
    liveness_timeout_s: float = Field(default=60.0, gt=0)
    restart_backoff_max_s: float = Field(default=60.0, ge=1)


class HttpSourceSettings(BaseModel):
    """The HTTP NDJSON tick source (``TICKFORGE_HTTP_SOURCE__...``).

    Bound to anything but loopback it refuses to start without both a bearer token and TLS.
    """

    host: str = "127.0.0.1"
    port: int = 8090
    token: SecretStr | None = None  # clients send ``Authorization: Bearer <token>``
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)  # 413 over it
    max_line_bytes: int = Field(default=65_536, gt=0)  # a longer line is a dead letter
    max_connections: int = Field(default=32, gt=0)  # open connections; more get 503
    header_timeout_s: float = Field(default=10.0, gt=0)  # request line and headers complete
    body_timeout_s: float = Field(default=30.0, gt=0)  # the whole body read (408 after)
    keep_alive_s: float = Field(default=5.0, gt=0)  # an idle connection between requests
    delivery_timeout_s: float = Field(default=15.0, gt=0)  # every line acknowledged (503 after)
    retry_after_s: int = Field(default=5, ge=1)
    idempotency_keys: int = Field(default=10_000, ge=0)  # answers kept for retried requests
    idempotency_ttl_s: float = Field(default=900.0, gt=0)


class SymbolClasses:
    """A symbol's class: the one it is listed under, else the first class whose pattern matches
    the whole symbol, else none. Answers are cached: workers ask for every bar."""

    def __init__(self, listed: Mapping[str, list[str]], patterns: Mapping[str, str]) -> None:
        self.listed = {symbol: name for name, symbols in listed.items() for symbol in symbols}
        self.patterns = [(name, re.compile(pattern)) for name, pattern in patterns.items()]
        self._inferred: dict[str, str | None] = {}

    def of(self, symbol: str) -> str | None:
        name = self.listed.get(symbol)
        if name is not None:
            return name
        if symbol not in self._inferred:
            if len(self._inferred) > 100_000:  # bad symbols are dead letters, but never let a flood grow this
                self._inferred.clear()
            self._inferred[symbol] = next((n for n, p in self.patterns if p.fullmatch(symbol)), None)
        return self._inferred[symbol]


class SymbolZones(Mapping[str, str]):
    """Symbol -> its class's session zone (a ``session_tz`` mapping): listed symbols iterate, any
    other symbol of an inferred class is looked up too; a symbol of no class is missing (UTC)."""

    def __init__(self, classes: SymbolClasses, zones: Mapping[str, str]) -> None:
        self.classes, self.zones = classes, dict(zones)

    def __getitem__(self, symbol: str) -> str:
        name = self.classes.of(symbol)
        if name is None:
            raise KeyError(symbol)
        return self.zones.get(name, "UTC")

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes.listed)

    def __len__(self) -> int:
        return len(self.classes.listed)

    def values(self) -> Any:  # every zone a symbol can get, inferred classes' included
        return [*(self[s] for s in self.classes.listed), *(self.zones.get(n, "UTC") for n, _ in self.classes.patterns)]


class SignalSettings(BaseModel):
    """Live signals, pair watch and the live view (``TICKFORGE_SIGNALS__...``)."""

    # A session is a calendar day in the zone of the symbol's class; symbols of no class use UTC.
    # A symbol's class is the one it is listed under, else the first of ``class_patterns`` that
    # matches all of it: unlisted symbols are classed by their spelling (exchange tickers, Binance
    # -SPOT/-PERP instruments, six-letter currency pairs), so a new ticker gets its venue's session.
    symbol_classes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "us_equity": ["SPY", "BAC", "AIG"],
            "crypto": ["BTCUSDT-SPOT", "BTCUSDT-PERP", "BTCUSD_PERP", "ETHUSDT-SPOT", "ETHUSDT-PERP", "ETHUSD_PERP"],
            "fx": ["EURUSD", "NZDUSD"],
        }
    )
    class_patterns: dict[str, str] = Field(
        default_factory=lambda: {
            "crypto": r"[A-Z0-9]+(-SPOT|-PERP|_PERP)",
            "fx": r"[A-Z]{6}",
            "us_equity": r"[A-Z]{1,5}([.][A-Z])?",
        }
    )
    class_session_tz: dict[str, str] = Field(
        default_factory=lambda: {"us_equity": "America/New_York", "crypto": "UTC", "fx": "UTC"}
    )

    @field_validator("class_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"class_patterns.{name}: {exc}") from None
        return patterns

    # Candidate pairs "A/B" (A regressed on B) on 1 m bars.
    pairs: list[str] = Field(default_factory=lambda: ["BTCUSDT-SPOT/BTCUSDT-PERP", "SPY/BAC"])
    pair_lookback_minutes: int = 240  # the statistics use the aligned bars of the last N minutes
    pair_min_history: int = 30  # aligned bars needed before anything is published
    dashboard_cache_bars: int = 3_600  # live view: latest N bars (and signals) per symbol and timeframe

    def classes(self) -> SymbolClasses:
        return SymbolClasses(self.symbol_classes, self.class_patterns)

    def session_tz(self) -> SymbolZones:
        """Symbol -> IANA zone (the ``session_tz`` mapping of the signal kernels)."""
        return SymbolZones(self.classes(), self.class_session_tz)

    def pair_list(self) -> list[tuple[str, str]]:
        out = []
        for pair in self.pairs:
            a, sep, b = pair.partition("/")
            if not sep or not a or not b or a == b:
                raise ValueError(f"a candidate pair is 'A/B' with two symbols, not {pair!r}")
            out.append((a, b))
        return out


class ResearchSettings(BaseModel):
    """Inputs of the research assets (``TICKFORGE_RESEARCH__...``)."""

    daily_bars_path: Path | None = None  # daily bars CSV(.gz) or Parquet; None: the repository's sample
    registry_path: Path | None = None  # strategy registry YAML; None: the packaged strategies.yaml


class AlpacaSettings(BaseModel):
    """The Alpaca broker adapter (``TICKFORGE_ALPACA__...``): the paper endpoint, and dry-run
    (no request leaves the process) unless ``enabled`` is set."""

    base_url: str = "https://paper-api.alpaca.markets"
    key_id: SecretStr | None = None
    secret_key: SecretStr | None = None
    enabled: bool = False
    timeout_s: float = Field(default=10.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TICKFORGE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    state_dir: Path = Path(DEFAULT_STATE_DIR)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    snowflake: SnowflakeSettings = Field(default_factory=SnowflakeSettings)
    streaming: StreamingSettings = Field(default_factory=StreamingSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    http_source: HttpSourceSettings = Field(default_factory=HttpSourceSettings)
    research: ResearchSettings = Field(default_factory=ResearchSettings)
    alpaca: AlpacaSettings = Field(default_factory=AlpacaSettings)

    def redacted(self) -> dict[str, Any]:
        """A printable view: secrets masked, DSN passwords hidden."""
        data = self.model_dump(mode="json")
        data["postgres"]["dsn"] = redact_dsn(self.postgres.dsn.get_secret_value())
        return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, ``.env`` and the local stack's ``stack.env``."""
    state_dir = state_dir_from_env()
    env_files = [p for p in (state_dir / "stack.env", Path(".env")) if p.exists()]
    return Settings(_env_file=env_files or None, **overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


_DSN_PASSWORD = re.compile(r"(://[^:/@]+:)([^@]*)(@)")


def redact_dsn(dsn: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``."""
    return _DSN_PASSWORD.sub(r"\1***\3", dsn)
