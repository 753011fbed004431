"""The doctor's verdicts, from facts as the probes report them (the probes themselves run against
the real platform in tests/integration/test_platform_up.py)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from tickforge.ops.doctor import (
    Check,
    as_json,
    dagster_check,
    dead_letter_check,
    disk_check,
    format_checks,
    lag_check,
    missing_secrets,
    processes_check,
    raw_sink_check,
    settings_check,
    supervisor_check,
    topics_check,
    watermark_check,
)
from tickforge.ops.lifecycle import STARTED_KEY, ServiceStatus, format_status, last_error_line, started_services
from tickforge.ops.probes import DagsterFacts, GroupLag, TopicState, _position
from tickforge.platform.settings import AlpacaSettings, Settings
from tickforge.platform.topics import registry
from tickforge.streaming.runtime import Checkpoint

CONFIG = {"retention.ms": "604800000", "cleanup.policy": "delete"}


def test_settings_name_missing_secrets_without_values():
    assert settings_check(None, []).status == "ok"
    check = settings_check(None, ["TICKFORGE_S3__SECRET_ACCESS_KEY"])
    assert check.failed and "TICKFORGE_S3__SECRET_ACCESS_KEY" in check.verdict
    assert settings_check("kafka.partitions: not an int", []).failed


def test_topics_missing_fewer_partitions_or_drifted_config_fail_and_more_partitions_warn():
    want = {"t.ticks": TopicState(4, CONFIG), "t.bars.1s": TopicState(4, CONFIG)}
    assert topics_check(want, dict(want)).status == "ok"
    missing = topics_check(want, {"t.ticks": TopicState(4, CONFIG)})
    assert missing.failed and "missing: t.bars.1s" in missing.verdict and "topics apply" in missing.hint
    assert topics_check(want, {**want, "t.ticks": TopicState(2, CONFIG)}).failed
    drift = topics_check(want, {**want, "t.ticks": TopicState(4, {**CONFIG, "retention.ms": "1"})})
    assert drift.failed and "retention.ms=1" in drift.verdict
    assert topics_check(want, {**want, "t.ticks": TopicState(8, CONFIG)}).status == "warn"


def test_topic_registry_configs_are_strings_the_broker_reports():
    assert all(isinstance(v, str) for spec in registry(["1s"]) for v in spec.config().values())


def test_lag_over_the_bound_fails_and_a_group_that_never_committed_warns():
    assert lag_check({"bar-worker": GroupLag(0, True), "bar-store": GroupLag(5, True)}).status == "ok"
    over = lag_check({"bar-worker": GroupLag(20_000, True)}, max_lag=10_000)
    assert over.failed and "bar-worker 20000" in over.verdict
    assert lag_check({"raw-sink": GroupLag(7, False)}).status == "warn"
    assert lag_check({"raw-sink": GroupLag(0, False)}).status == "ok"  # nothing to read yet


def test_dead_letters_none_is_ok_some_warn_a_flood_fails():
    assert dead_letter_check({}, 5).status == "ok"
    some = dead_letter_check({"bad_price": 3, "bad_symbol": 9}, 5)
    assert some.status == "warn" and some.verdict.index("bad_symbol") < some.verdict.index("bad_price")
    assert dead_letter_check({"bad_price": 6_000}, 5, max_per_min=1_000).failed


def test_a_standing_watermark_is_stale_only_while_input_waits():
    now = 1_700_000_000.0
    fresh = watermark_check("1m", (1_381_262_400_000, now - 10), now, waiting=50)
    assert fresh.status == "ok" and "2013-10-08 20:00:00" in fresh.verdict
    assert watermark_check("1m", (1_381_262_400_000, now - 3_600), now, waiting=0).status == "ok"
    stuck = watermark_check("1m", (1_381_262_400_000, now - 3_600), now, waiting=50, max_age_s=900)
    assert stuck.failed and "50 messages wait" in stuck.verdict
    assert watermark_check("5m", None, now, waiting=0).status == "ok"
    assert watermark_check("5m", None, now, waiting=3).status == "warn"


def test_raw_sink_buffering_is_fine_until_the_oldest_tick_is_overdue():
    assert raw_sink_check(GroupLag(0, True), None).status == "ok"
    assert raw_sink_check(GroupLag(10, True), 20.0).status == "ok"
    late = raw_sink_check(GroupLag(10, True), 600.0, max_age_s=120)
    assert late.failed and "600 s old" in late.verdict


def test_dagster_daemons_last_run_and_failed_checks():
    run = {
        "run_id": "abcdef0123",
        "status": "SUCCESS",
        "start_time": 1_700_000_000.0,
        "end_time": None,
        "partition": "2013-10-08",
    }
    assert dagster_check(DagsterFacts({"SCHEDULER": True}, None, [])).status == "ok"
    assert dagster_check(DagsterFacts({"SCHEDULER": True}, run, [])).status == "ok"
    assert dagster_check(DagsterFacts({"SCHEDULER": False}, run, [])).failed
    assert dagster_check(DagsterFacts({}, {**run, "status": "FAILURE"}, [])).failed
    failed = dagster_check(DagsterFacts({}, run, ["postgres/bars_1m:golden_matches_reference"]))
    assert failed.failed and "golden_matches_reference" in failed.verdict and "2013-10-08" in failed.verdict


def test_processes_down_fail_and_restarts_are_reported():
    assert processes_check({"bar-worker": {"running": False, "last_exit": "exit 1"}}).failed
    running = processes_check({"bar-worker": {"running": True, "restarts": 2}, "dashboard": {"running": True}})
    assert running.status == "ok" and "bar-worker 2" in running.verdict


def test_disk_fails_below_an_absolute_or_relative_floor():
    gib = 2**30
    assert disk_check(Path("/s"), 50 * gib, 100 * gib).status == "ok"
    assert disk_check(Path("/s"), gib // 2, 100 * gib).failed
    assert disk_check(Path("/s"), 3 * gib, 100 * gib).failed  # under 5 %


def test_output_any_failure_makes_the_report_fail():
    checks = [Check("kafka", "ok", "fine"), Check("postgres", "fail", "does not answer: refused", "is it up?")]
    assert as_json(checks)["ok"] is False and as_json(checks[:1])["ok"] is True
    text = format_checks(checks)
    assert "FAIL postgres" in text and "hint: is it up?" in text and "1 check(s) failed" in text


def test_last_error_line_reads_json_errors_and_tracebacks(tmp_path):
    log = tmp_path / "w.log"
    assert last_error_line(log) is None
    log.write_text(
        '{"level": "warning", "msg": "slow"}\n{"level": "error", "msg": "commit failed"}\n'
        '{"level": "info", "msg": "ok again"}\n'
    )
    assert last_error_line(log) == "commit failed"
    log.write_text(
        log.read_text() + 'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "psycopg.OperationalError: connection refused\n"
    )
    assert last_error_line(log) == "psycopg.OperationalError: connection refused"


def test_status_table_has_one_row_per_service():
    rows = [
        ServiceStatus("kafka", "stack", True, 10, 3_700.0, None, None, None),
        ServiceStatus("bar-worker", "worker", True, 11, 5.0, 1, 0, "killed by signal 9"),
    ]
    lines = format_status(rows).splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "LAG", "LAST", "ERROR"]
    assert lines[1].split()[:4] == ["kafka", "running", "10", "1h01m"]
    assert lines[2].split()[:6] == ["bar-worker", "running", "11", "5s", "1", "0"]
    assert lines[2].endswith("killed by signal 9")


def test_a_dead_supervisor_fails_even_when_its_orphans_run():
    assert supervisor_check(True, 4242).status == "ok"
    dead = supervisor_check(False, 4242)
    assert dead.failed and "4242" in dead.verdict and "restarted" in dead.verdict


def test_alpaca_keys_are_secrets_only_when_the_adapter_is_enabled(monkeypatch):
    for name in ("TICKFORGE_ALPACA__KEY_ID", "TICKFORGE_ALPACA__SECRET_KEY", "TICKFORGE_ALPACA__ENABLED"):
        monkeypatch.delenv(name, raising=False)
    alpaca_keys = {"TICKFORGE_ALPACA__KEY_ID", "TICKFORGE_ALPACA__SECRET_KEY"}
    assert not alpaca_keys & set(missing_secrets(Settings()))
    enabled = Settings(alpaca=AlpacaSettings(enabled=True))
    assert alpaca_keys <= set(missing_secrets(enabled))
    blank = Settings(alpaca=AlpacaSettings(enabled=True, key_id="PK123", secret_key=""))
    assert set(missing_secrets(blank)) & alpaca_keys == {"TICKFORGE_ALPACA__SECRET_KEY"}
    keyed = Settings(alpaca=AlpacaSettings(enabled=True, key_id="PK123", secret_key="s3cr3t"))
    assert not alpaca_keys & set(missing_secrets(keyed))


def test_a_committed_position_is_the_checkpoints_hi_and_bad_metadata_is_the_offset():
    checkpoint = msgspec.json.encode(Checkpoint(lo_wm=1_000, hi=120, hi_wm=2_000)).decode()
    assert _position(100, checkpoint) == 120
    assert _position(130, checkpoint) == 130  # never behind the committed offset
    assert _position(100, None) == 100
    assert _position(100, "not json") == 100
    assert _position(100, '{"lo": 3}') == 100  # not a checkpoint


def test_down_stops_only_the_stack_services_up_started():
    assert started_services({}) == []  # `down` without `up`: the stack is not ours
    assert started_services({STARTED_KEY: ["prometheus"]}) == ["prometheus"]
    assert started_services({"stack_started": True}) is None  # an older record: all of it
