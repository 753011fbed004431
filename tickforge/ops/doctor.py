"""``tickforge doctor``: is the platform well? One line per check: a verdict and a hint.

The verdicts are pure functions of facts (``*_check``), so each rule is tested without a broken
platform; :func:`run_checks` gathers the facts (``tickforge.ops.probes``) and judges them. A
check whose system is unreachable is ``skip`` (the endpoint's own check fails and says why), so
one dead broker reads as one failure, not ten. Secrets are checked for presence, never printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tickforge.ops.probes import DagsterFacts, GroupLag, TopicState

Status = Literal["ok", "warn", "fail", "skip"]

MAX_LAG_MESSAGES = 10_000  # per group: the tick topic carries column batches, so this is a lot
DEAD_LETTER_WINDOW_MIN = 5.0
MAX_DEAD_LETTERS_PER_MIN = 1_000.0  # above: failing; any at all: a warning
WATERMARK_MAX_AGE_S = 900.0  # a golden watermark not moved for this long while input waits is stuck
RAW_SINK_MAX_AGE_S = 120.0  # the sink writes every 30 s (or 500 k rows): twice that and a margin
MIN_FREE_BYTES = 1 << 30
MIN_FREE_FRACTION = 0.05
DAGSTER_URL_ENV = "TICKFORGE_DAGSTER_URL"
NIGHTLY_JOB = "nightly"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    verdict: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def ok(name: str, verdict: str) -> Check:
    return Check(name, "ok", verdict)


def skipped(name: str, because: str) -> Check:
    return Check(name, "skip", f"not checked: {because}")


# ---- verdicts (pure) -------------------------------------------------------------------------


def settings_check(error: str | None, missing_secrets: Sequence[str]) -> Check:
    if error:
        return Check(
            "settings",
            "fail",
            f"settings do not load: {error}",
            "fix the TICKFORGE_* variable named above (or .env, or <state>/stack.env)",
        )
    if missing_secrets:
        return Check(
            "settings",
            "fail",
            f"secrets missing: {', '.join(missing_secrets)}",
            "set them in the environment or .env (`tickforge config` shows the rest, masked)",
        )
    return ok("settings", "settings load; every secret is set")


def missing_secrets(settings: Any) -> list[str]:
    """Names of the secrets the configured endpoints need and do not have (values never read out)."""
    missing = []
    if not settings.postgres.dsn.get_secret_value():
        missing.append("TICKFORGE_POSTGRES__DSN")
    s3 = settings.s3
    if s3.endpoint_url and not s3.access_key_id:
        missing.append("TICKFORGE_S3__ACCESS_KEY_ID")
    if s3.access_key_id and (s3.secret_access_key is None or not s3.secret_access_key.get_secret_value()):
        missing.append("TICKFORGE_S3__SECRET_ACCESS_KEY")
    if not settings.snowflake.password.get_secret_value():
        missing.append("TICKFORGE_SNOWFLAKE__PASSWORD")
    alpaca = settings.alpaca
    if alpaca.enabled:  # dry-run needs no keys; a live adapter is refused by the broker without them
        for secret, variable in ((alpaca.key_id, "KEY_ID"), (alpaca.secret_key, "SECRET_KEY")):
            if secret is None or not secret.get_secret_value():
                missing.append(f"TICKFORGE_ALPACA__{variable}")
    return missing


def endpoint_check(name: str, error: str | None, detail: str, hint: str) -> Check:
    if error:
        return Check(name, "fail", f"does not answer: {error}", hint)
    return ok(name, detail)


def topics_check(expected: Mapping[str, TopicState], actual: Mapping[str, TopicState]) -> Check:
    """Every registry topic exists with its partitions (fewer fail; more only warn: producers
    place symbols by the configured count) and its configs."""
    missing = [n for n in expected if n not in actual]
    fewer, more, drift = [], [], []
    for name, want in expected.items():
        have = actual.get(name)
        if have is None:
            continue
        if have.partitions < want.partitions:
            fewer.append(f"{name} ({have.partitions} < {want.partitions} partitions)")
        elif have.partitions > want.partitions:
            more.append(f"{name} ({have.partitions} > {want.partitions} partitions)")
        drift += [
            f"{name} {k}={have.config.get(k)} (want {v})" for k, v in want.config.items() if have.config.get(k) != v
        ]
    if missing or fewer or drift:
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + fewer + drift
        return Check("topics", "fail", "; ".join(problems), "run `tickforge topics apply`")
    if more:
        return Check("topics", "warn", "; ".join(more), "more partitions than settings.kafka.partitions stay unused")
    return ok("topics", f"{len(expected)} topics with their partitions and settings")


def lag_check(lags: Mapping[str, GroupLag], max_lag: int = MAX_LAG_MESSAGES) -> Check:
    behind = {name: lag.behind for name, lag in lags.items()}
    text = ", ".join(f"{name} {n}" for name, n in behind.items())
    over = [name for name, n in behind.items() if n > max_lag]
    if over:
        return Check(
            "consumer lag",
            "fail",
            f"behind by more than {max_lag} messages: {text}",
            f"see `tickforge status` and `tickforge logs {over[0]}`",
        )
    never = [name for name, lag in lags.items() if not lag.committed and lag.behind > 0]
    if never:
        return Check(
            "consumer lag",
            "warn",
            f"never committed: {', '.join(never)} ({text})",
            "just started, or not running: see `tickforge status`",
        )
    return ok("consumer lag", f"messages behind: {text}")


def dead_letter_check(
    counts: Mapping[str, int], minutes: float, max_per_min: float = MAX_DEAD_LETTERS_PER_MIN
) -> Check:
    total = sum(counts.values())
    if not total:
        return ok("dead letters", f"none in the last {minutes:g} min")
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    rate = total / minutes
    status: Status = "fail" if rate > max_per_min else "warn"
    return Check(
        "dead letters",
        status,
        f"{total} in the last {minutes:g} min ({rate:.1f}/min): {reasons}",
        "the dead-letter topic holds each payload and its reason; the dashboard counts them by reason",
    )


def watermark_check(
    timeframe: str, report: tuple[int, float] | None, now_s: float, waiting: int, max_age_s: float = WATERMARK_MAX_AGE_S
) -> Check:
    """A golden watermark is fresh while it keeps advancing; one that stands still is only
    stale while input waits upstream (an idle or replayed feed stands still by right)."""
    name = f"golden {timeframe}"
    if report is None:
        if waiting:
            return Check(
                name,
                "warn",
                f"no golden bars yet; {waiting} messages wait upstream",
                "just started? else see `tickforge logs bar-store`",
            )
        return ok(name, "no golden bars yet (no input)")
    mark_ms, updated_s = report
    age = now_s - updated_s
    mark = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mark_ms / 1000))
    if age > max_age_s and waiting:
        return Check(
            name,
            "fail",
            f"watermark {mark} UTC has not moved for {age:.0f} s while {waiting} messages wait upstream",
            "see `tickforge status` and `tickforge logs bar-store`",
        )
    if age > max_age_s:
        return ok(name, f"watermark {mark} UTC; idle for {age:.0f} s (nothing waits upstream)")
    return ok(name, f"watermark {mark} UTC, advanced {age:.0f} s ago")


def raw_sink_check(lag: GroupLag, oldest_age_s: float | None, max_age_s: float = RAW_SINK_MAX_AGE_S) -> Check:
    if lag.behind == 0:
        return ok("raw sink", "caught up: every tick landed in the raw bucket")
    if oldest_age_s is not None and oldest_age_s > max_age_s:
        return Check(
            "raw sink",
            "fail",
            f"{lag.behind} messages not landed, the oldest {oldest_age_s:.0f} s old",
            "see `tickforge logs raw-sink` (S3 reachable? the bucket there?)",
        )
    age = "" if oldest_age_s is None else f", the oldest {oldest_age_s:.0f} s old"
    return ok("raw sink", f"{lag.behind} messages buffered{age} (it writes every 30 s)")


def dagster_check(facts: DagsterFacts, job: str = NIGHTLY_JOB) -> Check:
    sick = [name for name, healthy in facts.daemons.items() if not healthy]
    if sick:
        return Check("dagster", "fail", f"daemons not healthy: {', '.join(sick)}", "see `tickforge logs dagster`")
    run = facts.last_run
    if run is None:
        return ok("dagster", f"daemons healthy; no {job} run yet")
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(run["start_time"])) if run.get("start_time") else "?"
    what = f"last {job} run {run['run_id'][:8]} ({run.get('partition') or 'no partition'}, {when} UTC): {run['status']}"
    if run["status"] in ("FAILURE", "CANCELED"):
        return Check("dagster", "fail", what, "open the run in the Dagster UI")
    if facts.failed_checks:
        return Check(
            "dagster",
            "fail",
            f"{what}; failed checks: {', '.join(facts.failed_checks)}",
            "open the asset checks in the Dagster UI",
        )
    return ok("dagster", f"daemons healthy; {what}, no failed check")


def supervisor_check(running: bool, pid: int | None) -> Check:
    """The supervisor itself: without it nothing restarts a dead worker, and the workers it
    left behind run on unwatched."""
    if not running:
        left = f" (pid {pid} is gone)" if pid else ""
        return Check(
            "supervisor",
            "fail",
            f"not running{left}: no worker is watched or restarted",
            "`tickforge down` then `tickforge up` (or `tickforge stream stop` then `tickforge stream start`)",
        )
    return ok("supervisor", f"running (pid {pid})")


def processes_check(workers: Mapping[str, Mapping[str, Any]]) -> Check:
    """The supervisor's view: every entry it runs is up."""
    down = [f"{name} ({w.get('last_exit') or 'starting'})" for name, w in workers.items() if not w.get("running")]
    if down:
        return Check(
            "processes",
            "fail",
            f"not running: {', '.join(down)}",
            "the supervisor restarts it with backoff; see `tickforge logs <name>`",
        )
    restarts = {name: w["restarts"] for name, w in workers.items() if w.get("restarts")}
    note = f"; restarts: {', '.join(f'{n} {c}' for n, c in restarts.items())}" if restarts else ""
    return ok("processes", f"{len(workers)} supervised, all running{note}")


def disk_check(
    path: Path, free: int, total: int, min_free: int = MIN_FREE_BYTES, min_fraction: float = MIN_FREE_FRACTION
) -> Check:
    text = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB under {path}"
    if free < min_free or free < min_fraction * total:
        return Check("disk", "fail", text, "free space, or `tickforge down --wipe` a state folder you no longer need")
    return ok("disk", text)


# ---- gathering -------------------------------------------------------------------------------


@dataclass
class Options:
    state_dir: Path
    max_lag: int = MAX_LAG_MESSAGES
    dead_letter_minutes: float = DEAD_LETTER_WINDOW_MIN
    max_dead_letters_per_min: float = MAX_DEAD_LETTERS_PER_MIN
    watermark_max_age_s: float = WATERMARK_MAX_AGE_S
    dagster_url: str | None = None


def _error(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """The call's result, or the one-line reason it failed."""
    try:
        return call(), None
    except Exception as exc:  # any client error is the verdict's subject, not a crash
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"{type(exc).__name__}: {text}"[:200]


def dagster_url(state_dir: Path) -> str:
    """Where Dagster answers: the port ``up`` gave it, else ``TICKFORGE_DAGSTER_URL``, else :3000."""
    from tickforge.streaming import supervisor

    entry = supervisor.status(state_dir)["workers"].get("dagster", {})
    if entry.get("http_port"):
        return f"http://127.0.0.1:{entry['http_port']}"
    return os.environ.get(DAGSTER_URL_ENV, "http://127.0.0.1:3000")


def run_checks(options: Options) -> list[Check]:
    from tickforge.ops import probes
    from tickforge.platform.settings import load_settings
    from tickforge.streaming import registry, supervisor

    checks: list[Check] = []
    settings, error = _error(load_settings)
    checks.append(settings_check(error, missing_secrets(settings) if settings is not None else []))
    if settings is None:
        return checks

    brokers, kafka_error = _error(lambda: probes.kafka_reachable(settings))
    checks.append(
        endpoint_check(
            "kafka",
            kafka_error,
            f"{settings.kafka.bootstrap_servers}: {brokers} broker(s)",
            "is the stack up? `tickforge up` (or `tickforge stack up`)",
        )
    )
    version, pg_error = _error(lambda: probes.postgres_version(settings))
    checks.append(
        endpoint_check("postgres", pg_error, f"PostgreSQL {version}", "is the stack up? check TICKFORGE_POSTGRES__DSN")
    )
    buckets, s3_error = _error(lambda: probes.s3_buckets(settings))
    if s3_error is None and not all(buckets.values()):
        s3_error = "missing buckets: " + ", ".join(b for b, there in buckets.items() if not there)
    checks.append(
        endpoint_check(
            "s3",
            s3_error,
            f"{settings.s3.endpoint_url or 'AWS'}: buckets {', '.join(buckets or [])}",
            "`tickforge stack up` creates the buckets; check TICKFORGE_S3__ENDPOINT_URL and the keys",
        )
    )
    host, port = probes.snowflake_address(settings)
    _, sf_error = _error(lambda: probes.tcp_reachable(host, port))
    checks.append(
        endpoint_check(
            "snowflake",
            sf_error,
            f"{host}:{port} accepts connections",
            "is the stack up? check TICKFORGE_SNOWFLAKE__HOST/PORT",
        )
    )
    url = options.dagster_url or dagster_url(options.state_dir)
    dagster_up = probes.http_ok(f"{url}/server_info")
    checks.append(
        endpoint_check(
            "dagster webserver",
            None if dagster_up else f"{url}/server_info",
            f"{url} answers",
            "`tickforge up` runs dagster dev; see `tickforge logs dagster`",
        )
    )
    checks += _prometheus(options.state_dir)

    supervised = supervisor.status(options.state_dir)
    workers = supervised["workers"]
    if workers:
        checks.append(supervisor_check(supervised["supervisor"]["running"], supervised["supervisor"]["pid"]))
        checks.append(processes_check(workers))

    if kafka_error:
        for name in ("topics", "consumer lag", "dead letters", "raw sink"):
            checks.append(skipped(name, "Kafka does not answer"))
        lags: dict[str, GroupLag] = {}
    else:
        checks.append(_topics(settings))
        lags, lag_error = _error(lambda: probes.consumer_lag(settings, registry.consuming()))
        checks.append(
            lag_check(lags, options.max_lag)
            if lag_error is None
            else Check("consumer lag", "fail", lag_error, "see `tickforge logs kafka`")
        )
        lags = lags or {}
        since_ms = int((time.time() - options.dead_letter_minutes * 60) * 1000)
        counts, dl_error = _error(lambda: probes.dead_letters_since(settings, since_ms))
        checks.append(
            dead_letter_check(counts, options.dead_letter_minutes, options.max_dead_letters_per_min)
            if dl_error is None
            else Check("dead letters", "fail", dl_error, "run `tickforge topics apply`")
        )
        checks.append(_raw_sink(settings, lags))

    checks += _watermarks(settings, lags, pg_error, options.watermark_max_age_s)
    if dagster_up:
        facts, dagster_error = _error(lambda: probes.dagster_facts(url, NIGHTLY_JOB))
        checks.append(
            dagster_check(facts)
            if dagster_error is None
            else Check("dagster", "fail", dagster_error, "see `tickforge logs dagster`")
        )
    else:
        checks.append(skipped("dagster", "the webserver does not answer"))
    free, total = probes.disk_free(options.state_dir)
    checks.append(disk_check(options.state_dir.resolve(), free, total))
    return checks


def _prometheus(state_dir: Path) -> list[Check]:
    """Prometheus, when this state folder's stack runs (or ran) one."""
    from tickforge.ops.probes import http_ok
    from tickforge.platform.stack.launcher import LocalStack

    entry = LocalStack(state_dir=state_dir).status().get("prometheus")
    if not entry or not entry.get("url"):
        return []
    url = str(entry["url"])
    answers = http_ok(f"{url}/-/ready")
    return [
        endpoint_check(
            "prometheus",
            None if answers else f"{url}/-/ready",
            f"{url} ready",
            "`tickforge up` starts it; see `tickforge logs prometheus`",
        )
    ]


def _topics(settings: Any) -> Check:
    from tickforge.ops.probes import topic_states
    from tickforge.platform.io.kafka import topic_name
    from tickforge.platform.topics import registry

    expected = {
        topic_name(settings, spec.name): TopicState(spec.partitions or settings.kafka.partitions, spec.config())
        for spec in registry(settings.streaming.timeframes)
    }
    actual, error = _error(lambda: topic_states(settings, list(expected)))
    if error is not None:
        return Check("topics", "fail", error, "see `tickforge logs kafka`")
    return topics_check(expected, actual)


def _raw_sink(settings: Any, lags: Mapping[str, GroupLag]) -> Check:
    from tickforge.ops.probes import oldest_unread_age_s
    from tickforge.streaming.registry import worker

    lag = lags.get("raw-sink")
    if lag is None:
        return skipped("raw sink", "its lag is unknown")
    age, error = _error(lambda: oldest_unread_age_s(settings, worker("raw-sink"))) if lag.behind else (None, None)
    if error is not None:
        return Check("raw sink", "fail", error, "see `tickforge logs raw-sink`")
    return raw_sink_check(lag, age)


def _watermarks(settings: Any, lags: Mapping[str, GroupLag], pg_error: str | None, max_age_s: float) -> list[Check]:
    from tickforge.ops.probes import watermark_reports
    from tickforge.platform.bars.timeframes import bar_timeframes

    timeframes = bar_timeframes(settings.streaming.timeframes)
    if pg_error:
        return [skipped(f"golden {tf}", "PostgreSQL does not answer") for tf in timeframes]
    reports, error = _error(lambda: watermark_reports(settings, timeframes))
    if error is not None:
        return [Check("golden bars", "fail", error, "run the migrations: `tickforge stack up`")]
    # Input waiting anywhere on the way to the golden tables keeps a standing watermark stale.
    waiting = sum(lags[name].behind for name in ("bar-worker", "timeframe-worker", "bar-store") if name in lags)
    now = time.time()
    return [watermark_check(tf, reports.get(tf), now, waiting, max_age_s) for tf in timeframes]


def as_json(checks: Sequence[Check]) -> dict[str, Any]:
    return {"ok": not any(c.failed for c in checks), "checks": [asdict(c) for c in checks]}


def format_checks(checks: Sequence[Check]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    lines = []
    for check in checks:
        line = f"{marks[check.status]} {check.name:<18} {check.verdict}"
        if check.hint and check.status != "ok":
            line += f"\n     {'':<18} hint: {check.hint}"
        lines.append(line)
    failed = sum(c.failed for c in checks)
    lines.append(f"{failed} check(s) failed" if failed else "all checks passed")
    return "\n".join(lines)
