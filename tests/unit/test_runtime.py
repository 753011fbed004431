"""The exactly-once runtime's bookkeeping: checkpoints and when a partition counts as idle."""

from __future__ import annotations

from tickforge.platform.bars.watermark import NO_WATERMARK
from tickforge.streaming.runtime import Checkpoint, _Track


class _Task:
    def __init__(self, watermark: int = NO_WATERMARK) -> None:
        self.watermark = watermark


def test_checkpoint_is_the_oldest_message_still_needed():
    track = _Track(_Task(1_000), replay_until=-1, position=13)
    track.pending.extend([(10, 900, 1_500), (11, 1_000, 3_000), (12, 1_000, 2_000)])
    assert track.checkpoint() == (10, Checkpoint(lo_wm=900, hi=13, hi_wm=1_000))
    track.task.watermark = 2_000  # offset 10's window closed; 11 still holds one open
    assert track.checkpoint() == (11, Checkpoint(lo_wm=1_000, hi=13, hi_wm=2_000))
    track.task.watermark = 3_000
    assert track.checkpoint() == (13, Checkpoint(lo_wm=3_000, hi=13, hi_wm=3_000))


def test_a_partition_is_idle_only_when_caught_up_and_quiet():
    track = _Track(_Task(), replay_until=50, position=60, last_input_ms=0)
    assert not track.idle_due(10_000, 1_500), "not idle before the end of the partition was seen"
    track.at_end = True
    assert track.idle_due(10_000, 1_500)
    assert not track.idle_due(1_000, 1_500), "quiet for less than the timeout"
    track.position = 40
    assert not track.idle_due(10_000, 1_500), "still replaying what was committed before"


def test_a_checkpoint_taken_while_replaying_keeps_the_replay_end():
    """Killed again mid-replay, the next instance must still suppress everything emitted before."""
    track = _Track(_Task(1_500), replay_until=40, position=25)
    track.restore_wm = 9_000  # the idle-advanced watermark the first instance reached at 40
    track.pending.append((20, 1_000, 2_000))
    assert track.checkpoint() == (20, Checkpoint(lo_wm=1_000, hi=40, hi_wm=9_000))
    track.pending.clear()
    assert track.checkpoint() == (25, Checkpoint(lo_wm=1_500, hi=40, hi_wm=9_000))
