"""Trading IO: picks files and limits files in, paper replay outputs out (the edges of the room)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tickforge.research.io import read_picks, write_parquet
from tickforge.trading.limits import LimitsError, RiskLimits, parse_limits
from tickforge.trading.picks import Pick, PicksError, parse_picks
from tickforge.trading.replay import ReplayResult

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Reload:
    changed: bool  # new limits are in force
    error: str | None = None  # the file changed but was rejected; the previous limits stay


class LimitsFile:
    """The limits in force from a YAML file, re-read when it changes.

    The first load must succeed (no limits, no trading). Later a changed file that does not
    parse or validate is rejected with its reason and the previous limits stay in force; the
    same bad content is reported once, not on every poll.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        text, self._stamp = self._read()
        self._digest = hashlib.sha256(text.encode()).hexdigest()
        self.current = parse_limits(text, str(self.path))
        self.last_error: str | None = None

    def reload_if_changed(self) -> Reload:
        try:
            stamp = self._stat()
        except OSError as e:
            return self._rejected(f"{self.path}: cannot read: {e}")
        if stamp == self._stamp:
            return Reload(False, self.last_error)
        try:
            text, stamp = self._read()
        except LimitsError as e:
            self._stamp = stamp
            return self._rejected(str(e))
        except OSError as e:
            return self._rejected(f"{self.path}: cannot read: {e}")
        self._stamp = stamp
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return Reload(False, self.last_error)
        self._digest = digest
        try:
            limits = parse_limits(text, str(self.path))
        except LimitsError as e:
            return self._rejected(str(e))
        self.current = limits
        self.last_error = None
        log.info("risk limits reloaded", extra={"path": str(self.path)})
        return Reload(True)

    def _rejected(self, error: str) -> Reload:
        if error != self.last_error:
            log.error("risk limits rejected, previous limits stay", extra={"path": str(self.path), "error": error})
        self.last_error = error
        return Reload(False, error)

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> tuple[str, tuple[int, int]]:
        stamp = self._stat()
        try:
            return self.path.read_text(encoding="utf-8"), stamp
        except UnicodeDecodeError as e:
            raise LimitsError(f"{self.path}: not UTF-8 text: {e}") from e
