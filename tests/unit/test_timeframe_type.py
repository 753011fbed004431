"""The Timeframe type: parsed from its name, ordered by length, the bins told from the bars."""

from __future__ import annotations

import pytest

from tickforge.platform.bars.timeframes import Timeframe, bar_timeframes


def test_parse_gives_length_and_name():
    five = Timeframe.parse(" 5m ")
    assert (five.ms, five.name, str(five)) == (300_000, "5m", "5m")
    assert Timeframe.parse("10ms").ms == 10 and Timeframe.parse("1h").ms == 3_600_000


def test_ordered_by_length_not_by_name():
    names = ["15m", "1s", "10ms", "3m", "1m", "5m"]
    assert [str(t) for t in sorted(Timeframe.parse(n) for n in names)] == ["10ms", "1s", "1m", "3m", "5m", "15m"]
    assert Timeframe.parse("60s") == Timeframe.parse("1m")  # the same length is the same timeframe


def test_bins_are_not_bars():
    assert Timeframe.parse("10ms").is_bin and not Timeframe.parse("1s").is_bin
    assert bar_timeframes(["10ms", "1s", "1m", "3m", "5m", "15m"]) == ["1s", "1m", "3m", "5m", "15m"]
    assert bar_timeframes(("15m", "1s")) == ["15m", "1s"]  # their order is kept


@pytest.mark.parametrize("name", ["", "5", "0m", "-1s", "5 minutes", "1w"])
def test_impossible_timeframes_are_refused(name):
    with pytest.raises(ValueError):
        Timeframe.parse(name)
    with pytest.raises(ValueError):
        bar_timeframes(["1m", name])


def test_a_name_that_does_not_match_its_length_is_refused():
    with pytest.raises(ValueError):
        Timeframe(ms=1_000, name="1m")
