"""The research page of ``tickforge dashboard``, on research tables the research job wrote, looked
at by a real headless Chromium (Debian's ``chromium``).

The research job materializes one day on the local stack (the repository's daily-bar sample); the
page at ``/research`` must show the cohorts, the picks, the equity curve of a pick (the Vega embed
and line-coloured pixels in the screenshot), the parameter heatmap and the scorecard.
"""

from __future__ import annotations

import time

import pytest
from PIL import Image

from tests.integration.test_dagster_nightly import DAY, nightly_settings  # noqa: F401
from tests.integration.test_dashboard_live import CHROMIUM, Chromium, _near, _rgb, start_dashboard, stop_dashboard
from tickforge.dashboard.research_view import EQUITY_COLOR

pytestmark = pytest.mark.integration


def test_research_page_renders_in_headless_chromium(nightly_settings, tmp_path):  # noqa: F811
    assert CHROMIUM is not None, "needs Debian's chromium: apt-get install -y chromium"
    from dagster import DagsterInstance

    from tickforge.definitions import build_definitions
    from tickforge.research.store import NEXT_DAY_PICKS, read_table

    s = nightly_settings
    run = (
        build_definitions(s)
        .resolve_job_def("research")
        .execute_in_process(partition_key=DAY, instance=DagsterInstance.ephemeral())
    )
    assert run.success
    picks = read_table(s.postgres.dsn.get_secret_value(), s.postgres.schema_name, NEXT_DAY_PICKS)
    assert picks.height > 0
    dashboard, url = start_dashboard(tmp_path)
    browser = None
    try:
        browser = Chromium(tmp_path, height=2600)
        started = time.monotonic()
        browser.call("Page.navigate", url=f"{url}/research")
        first = picks.sort("weight", "score", descending=True).row(0, named=True)
        rendered = browser.wait_for(
            "document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length >= 2 && "
            "document.body.innerText.includes('Cohorts') && document.body.innerText.includes('Scorecard') && "
            "document.body.innerText.includes('Equity curve of') && "
            "document.body.innerText.includes('bars before')",
            120,
        )
        time.sleep(1.5)  # let the charts' last frame paint
        text = browser.evaluate("document.body.innerText")
        shot = tmp_path / "research.png"
        browser.screenshot(shot)
        assert rendered, f"the research page did not render: {text[:2_000]}"
        assert first["strategy"] in text and first["params"].split(",")[0] in text
        assert "2013-10-09 00:00" not in text  # days shown as days
        for cohort in ("ema_cross", "rsi_reversion", "donchian_breakout", "macd_cross", "bollinger_reversion"):
            assert cohort in text
        assert "Parameter heatmap" in text and "fast" in text and "slow" in text
        assert "realized_return" in text and "portfolio_return" in text
        pixels = list(Image.open(shot).convert("RGB").get_flattened_data())
        line = sum(_near(p, _rgb(EQUITY_COLOR), 30) for p in pixels)
        assert line > 200, f"no equity curve in the screenshot ({line} line pixels)"
        print(
            f"research page rendered {time.monotonic() - started:.1f}s after navigation; {line} equity-line pixels; {shot}"
        )
    finally:
        if browser is not None:
            browser.close()
        stop_dashboard(dashboard)
