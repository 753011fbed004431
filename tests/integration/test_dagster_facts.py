"""The great-expectations suite on the Snowflake facts (asset check of ``snowflake_bar_facts``),
on the real local stack: an hour of real BAC trades (2013-10-08) built into golden 1 m / 5 m bars,
the nightly job's facts load for that day passes the suite; one fact row corrupted in the
warehouse (HIGH below LOW) fails it, and so does a window start off the clock.
"""

from __future__ import annotations

import uuid

import pytest

from tests.integration.test_dagster_sensors import T1330, _golden

pytestmark = pytest.mark.integration

DAY = "2013-10-08"


def test_fact_expectations_pass_then_fail_on_corrupted_row(settings, monkeypatch, samples):
    import snowflake.connector
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    from tickforge.definitions import build_definitions
    from tickforge.platform.settings import Settings

    monkeypatch.setenv("TICKFORGE_SNOWFLAKE__DATABASE", f"TF_{uuid.uuid4().hex[:8].upper()}")
    s = Settings()
    golden = _golden(s, samples)
    nightly = build_definitions(s).resolve_job_def("nightly")
    instance = DagsterInstance.ephemeral()
    check_key = AssetCheckKey(AssetKey("snowflake_bar_facts"), "facts_pass_expectations")

    loaded = nightly.execute_in_process(
        partition_key=DAY, instance=instance, asset_selection=[AssetKey("snowflake_bar_facts")]
    )
    assert loaded.success
    checks = {e.check_name: e for e in loaded.get_asset_check_evaluations()}
    assert set(checks) == {"facts_match_golden_counts", "facts_pass_expectations"}
    suite = checks["facts_pass_expectations"]
    assert suite.passed, suite.metadata["report"].value
    assert suite.metadata["CORE.FACT_TICKS_60S_rows"].value == golden["1m"]
    assert suite.metadata["CORE.FACT_TICKS_300S_rows"].value == golden["5m"]
    assert suite.metadata["report"].value["CORE.FACT_TICKS_60S"]["evaluated"] == 11

    check_only = nightly.get_subset(asset_selection=set(), asset_check_selection={check_key})

    def run_suite():
        result = check_only.execute_in_process(partition_key=DAY, instance=instance, raise_on_error=False)
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    assert run_suite().passed  # the check alone, on the same facts

    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        cur = conn.cursor()
        cur.execute(f"UPDATE CORE.FACT_TICKS_60S SET HIGH = LOW - 0.01 WHERE WINDOW_START = {T1330 + 7 * 60_000}")
        assert cur.rowcount == 1
    failed = run_suite()
    assert not failed.passed
    report = failed.metadata["report"].value
    assert report["CORE.FACT_TICKS_300S"]["failed"] == []
    broken = {
        (f["kwargs"]["column_A"], f["kwargs"]["column_B"]): f["unexpected_count"]
        for f in report["CORE.FACT_TICKS_60S"]["failed"]
    }
    assert broken[("HIGH", "LOW")] == 1 and set(broken) <= {("HIGH", "LOW"), ("HIGH", "OPEN"), ("HIGH", "CLOSE")}

    # The nightly load repairs the row (it differs from the golden bar); a 5 m window off the clock fails.
    assert nightly.execute_in_process(
        partition_key=DAY, instance=instance, asset_selection=[AssetKey("snowflake_bar_facts")]
    ).success
    with snowflake.connector.connect(**s.snowflake.connect_args()) as conn:
        conn.cursor().execute(
            f"UPDATE CORE.FACT_TICKS_300S SET WINDOW_START = WINDOW_START + 60000 WHERE WINDOW_START = {T1330}"
        )
    shifted = run_suite()
    assert not shifted.passed
    failed_5m = shifted.metadata["report"].value["CORE.FACT_TICKS_300S"]["failed"]
    assert {f["kwargs"]["column"] for f in failed_5m} == {"WINDOW_OFFSET", "WINDOW_LENGTH"}
