"""Trading IO: picks files and limits files in, paper replay outputs out (the edges of the room)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tickforge.research.io import read_picks, write_parquet
from tickforge.trading.limits import LimitsError, RiskLimits, parse_limits
from tickforge.trading.picks import Pick, PicksError, parse_picks
from tickforge.trading.replay import ReplayResult

DEFAULT_LIMITS = Path(__file__).with_name("limits.yaml")
REPLAY_FILES = ("orders", "transitions", "fills", "positions", "pnl", "decisions")


def read_picks_file(path: str | Path) -> list[Pick]:
    """Picks from the research picks file (Parquet or YAML) or a CSV with the same columns."""
    path = Path(path)
    if not path.is_file():
        raise PicksError(f"no picks file at {path}")
    try:
        if path.suffix in (".csv", ".gz"):
            frame = pl.read_csv(path, infer_schema=False)
        else:
            frame = read_picks(path)
    except (pl.exceptions.PolarsError, OSError, ValueError, AttributeError, KeyError) as e:
        raise PicksError(f"{path}: cannot read picks: {e}") from None
    try:
        return parse_picks(frame.iter_rows(named=True))
    except PicksError as e:
        raise PicksError(f"{path}: {e}") from None


def load_limits(path: str | Path | None = None) -> RiskLimits:
    """Risk limits from a YAML file (the packaged defaults when ``path`` is None), validated."""
    path = Path(path) if path is not None else DEFAULT_LIMITS
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LimitsError(f"{path}: cannot read: {e}") from None
    return parse_limits(text, str(path))


def write_replay(result: ReplayResult, out: str | Path) -> list[Path]:
    """``OUT/{orders,transitions,fills,positions,pnl,decisions}.parquet``."""
    out = Path(out)
    return [write_parquet(getattr(result, name), out / f"{name}.parquet") for name in REPLAY_FILES]
