"""Streaming signals: indicator state of many symbols, updated for a batch of closed bars at once.

:class:`SignalState` keeps every symbol's state in numpy arrays (one column per symbol) and
updates all symbols that got a bar in one vectorized call, with the same kernels and the same
order of floating-point operations as :func:`.batch.compute_signals`, so live values equal the
offline ones bit for bit. The state snapshots to bytes for recovery: restore the snapshot, replay
bars from before it, and the bars it already holds are skipped (a bar is applied only if its
``window_start`` is after the symbol's last one), so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl

from tickforge.platform.contracts import Signal
from tickforge.platform.signals import kernels as k
from tickforge.platform.signals.sessions import SessionTz, session_bounds, validate_session_tz, zone_for
from tickforge.platform.signals.spec import (
    BOLL_NDEV,
    BOLL_PERIOD,
    CARRIED_FIELDS,
    EMA_SLOW,
    KEY_COLUMNS,
    READY_FROM_BAR,
    RV_WINDOW,
    SIGNAL_COLUMNS,
    VALUE_FIELDS,
    VWAP_WINDOW,
)

SNAPSHOT_VERSION: Final = 1
_NEVER: Final = np.iinfo(np.int64).min

# Per-symbol state: name -> (leading shape, dtype, initial value); the last axis is the symbol.
_STATE: Final[dict[str, tuple[tuple[int, ...], type, float | int]]] = {
    "last_ws": ((), np.int64, _NEVER),
    "session_lo": ((), np.int64, 0),  # [lo, hi): UTC span of the current session; empty at first
    "session_hi": ((), np.int64, 0),
    "count": ((), np.int64, 0),  # bars in the current session
    "last_close": ((), np.float64, np.nan),
    "cum_notional": ((), np.float64, 0.0),
    "cum_volume": ((), np.float64, 0.0),
    "ema12": ((), np.float64, np.nan),
    "ema12_seed": ((), np.float64, 0.0),
    "ema26": ((), np.float64, np.nan),
    "ema26_seed": ((), np.float64, 0.0),
    "macd_signal": ((), np.float64, np.nan),
    "macd_signal_seed": ((), np.float64, 0.0),
    "rsi": ((2,), np.float64, np.nan),  # Wilder average gain, average loss
    "rsi_seed": ((2,), np.float64, 0.0),
    # Rings of twice the window: item b (1-based in the session) sits in rows (b - 1) % width and
    # that + width, so the window ending at item b is the contiguous rows b % width + [0, width).
    "ring_close": ((2 * BOLL_PERIOD,), np.float64, np.nan),
    "ring_notional": ((2 * VWAP_WINDOW,), np.float64, np.nan),
    "ring_volume": ((2 * VWAP_WINDOW,), np.float64, np.nan),
    "ring_sq_return": ((2 * RV_WINDOW,), np.float64, np.nan),  # item q: the return from bar q to q + 1
}
_RESET_ON_SESSION: Final = (
    "count",
    "cum_notional",
    "cum_volume",
    "ema12_seed",
    "ema26_seed",
    "macd_signal_seed",
    "rsi_seed",
)


@dataclass(frozen=True, slots=True)
class SignalBatch:
    """Signals of the bars applied by one :meth:`SignalState.update`, in input order.

    ``index`` is each row's position in the update's input (stale bars are left out).
    ``values`` maps every field of :data:`VALUE_FIELDS` to float64, NaN where not ready or absent.
    """

    index: np.ndarray
    symbol: np.ndarray
    window_start: np.ndarray
    window_end: np.ndarray
    close: np.ndarray
    session: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def concat(cls, batches: Sequence[SignalBatch]) -> SignalBatch:
        """All rows, batch after batch; ``index`` stays each row's position in its own update."""
        if not batches:
            return _empty_batch()
        return cls(
            index=np.concatenate([b.index for b in batches]),
            symbol=np.concatenate([b.symbol for b in batches]),
            window_start=np.concatenate([b.window_start for b in batches]),
            window_end=np.concatenate([b.window_end for b in batches]),
            close=np.concatenate([b.close for b in batches]),
            session=np.concatenate([b.session for b in batches]),
            values={name: np.concatenate([b.values[name] for b in batches]) for name in VALUE_FIELDS},
        )

    def take(self, rows: np.ndarray) -> SignalBatch:
        """The batch of the given row positions."""
        return SignalBatch(
            index=self.index[rows],
            symbol=self.symbol[rows],
            window_start=self.window_start[rows],
            window_end=self.window_end[rows],
            close=self.close[rows],
            session=self.session[rows],
            values={name: v[rows] for name, v in self.values.items()},
        )

    def to_polars(self) -> pl.DataFrame:
        """The rows with the columns of :func:`.batch.compute_signals` (NaN as null)."""
        keys = {
            "symbol": pl.Series(self.symbol.tolist(), dtype=pl.String),
            "window_start": pl.Series(self.window_start, dtype=pl.Int64),
            "window_end": pl.Series(self.window_end, dtype=pl.Int64),
            "close": pl.Series(self.close, dtype=pl.Float64),
            "session": pl.Series(self.session.tolist(), dtype=pl.String),
        }
        values = {name: pl.Series(self.values[name], dtype=pl.Float64).fill_nan(None) for name in VALUE_FIELDS}
        return pl.DataFrame(keys | values).select(SIGNAL_COLUMNS)

    def to_signals(self, seq: Sequence[int] | np.ndarray, is_final: bool = True) -> list[Signal]:
        """:class:`Signal` messages of the rows; ``seq`` (one per row) comes from the worker."""
        if len(seq) != len(self):
            raise ValueError(f"{len(seq)} seq numbers for {len(self)} signals")
        columns = {name: [None if v != v else v for v in self.values[name].tolist()] for name in VALUE_FIELDS}
        keys = [getattr(self, name).tolist() for name in KEY_COLUMNS]
        seqs = np.asarray(seq, np.int64).tolist()
        return [
            Signal(
                symbol=keys[0][i],
                window_start=keys[1][i],
                window_end=keys[2][i],
                close=keys[3][i],
                session=keys[4][i],
                seq=seqs[i],
                is_final=is_final,
                **{name: columns[name][i] for name in VALUE_FIELDS},
            )
            for i in range(len(self))
        ]


class SignalState:
    """Indicator state of many symbols (see module doc)."""

    def __init__(self, session_tz: SessionTz = "UTC", bar_ms: int = 1000, capacity: int = 64) -> None:
        validate_session_tz(session_tz)
        self._session_tz: SessionTz = session_tz if isinstance(session_tz, str) else dict(session_tz)
        self._bar_ms = bar_ms
        self._row: dict[str, int] = {}
        self._zones: list[str] = []
        self._capacity = 0
        self._a: dict[str, np.ndarray] = {}
        # Symbol names and session labels as object arrays, so a batch's are one fancy index.
        self._names = np.empty(0, dtype=object)
        self._sessions = np.empty(0, dtype=object)
        self._grow(max(capacity, 1))

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._names[: len(self._row)].tolist())

    def update(
        self,
        symbols: Sequence[str] | np.ndarray,
        closes: Sequence[float] | np.ndarray,
        notionals: Sequence[float] | np.ndarray,
        volumes: Sequence[float] | np.ndarray,
        window_starts: Sequence[int] | np.ndarray,
        spread_bps: Sequence[float] | np.ndarray | None = None,
        imbalance: Sequence[float] | np.ndarray | None = None,
        window_ends: Sequence[int] | np.ndarray | None = None,
    ) -> SignalBatch:
        """Apply one closed bar per row and return the rows' signals.

        The normal call has at most one bar per symbol; several bars of a symbol are applied in
        ``window_start`` order. A bar whose ``window_start`` is not after the symbol's last
        applied one is skipped (a replay after recovery, or a duplicate). ``spread_bps`` and
        ``imbalance`` use NaN for absent; ``window_ends`` defaults to ``window_start + bar_ms``.
        """
        m = len(symbols)
        ws = np.asarray(window_starts, np.int64)
        columns = {
            "window_end": ws + self._bar_ms if window_ends is None else np.asarray(window_ends, np.int64),
            "close": np.asarray(closes, np.float64),
            "notional": np.asarray(notionals, np.float64),
            "volume": np.asarray(volumes, np.float64),
            "spread_bps": np.full(m, np.nan) if spread_bps is None else np.asarray(spread_bps, np.float64),
            "imbalance": np.full(m, np.nan) if imbalance is None else np.asarray(imbalance, np.float64),
        }
        if any(len(v) != m for v in columns.values()) or len(ws) != m:
            raise ValueError("update arrays differ in length")
        rows = self._rows(symbols)
        index = np.arange(m)
        if len(set(rows.tolist())) == m:
            return self._apply(rows, ws, columns, index)
        # Several bars of one symbol: round r applies each symbol's r-th bar in time order.
        order = np.lexsort((index, ws, rows))
        sorted_rows = rows[order]
        first = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
        rank = np.empty(m, np.int64)
        rank[order] = index - np.repeat(first, np.diff(np.r_[first, m]))
        parts = []
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            parts.append(self._apply(rows[sel], ws[sel], {key: v[sel] for key, v in columns.items()}, sel))
        merged = SignalBatch.concat(parts)
        return merged.take(np.argsort(merged.index, kind="stable"))

    def _apply(self, rows: np.ndarray, ws: np.ndarray, cols: dict[str, np.ndarray], index: np.ndarray) -> SignalBatch:
        a = self._a
        fresh = ws > a["last_ws"][rows]
        if not fresh.all():
            rows, ws, index = rows[fresh], ws[fresh], index[fresh]
            cols = {key: v[fresh] for key, v in cols.items()}
        if not len(rows):
            return _empty_batch()
        self._roll_sessions(rows, ws)
        close, notional, volume = cols["close"], cols["notional"], cols["volume"]

        a["count"][rows] += 1
        c = a["count"][rows]
        prev = a["last_close"][rows]
        a["last_close"][rows] = close
        a["last_ws"][rows] = ws
        cum_notional = a["cum_notional"][rows] + notional
        cum_volume = a["cum_volume"][rows] + volume
        a["cum_notional"][rows] = cum_notional
        a["cum_volume"][rows] = cum_volume

        # The first bar of a session has no return: its garbage lands in the row of return
        # RV_WINDOW, which is overwritten before any published window reads it.
        r = k.log_return(prev, close)
        self._push("ring_close", rows, c, close)
        self._push("ring_notional", rows, c, notional)
        self._push("ring_volume", rows, c, volume)
        self._push("ring_sq_return", rows, c - 1, r * r)

        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):  # windows of not-ready bars hold NaN
            ema12 = self._smooth(k.EMA12, "ema12", rows, close, c)
            ema26 = self._smooth(k.EMA26, "ema26", rows, close, c)
            macd = ema12 - ema26
            signal = self._smooth(k.EMA_SIGNAL, "macd_signal", rows, macd, c - (EMA_SLOW - 1))
            gain, loss = k.gains_losses(close - prev)
            averages = self._smooth(k.WILDER, "rsi", rows, np.stack([gain, loss]), c - 1)
            mean, std = k.window_mean_std(self._window("ring_close", rows, c))
            out["ema12"] = ema12
            out["ema26"] = ema26
            out["macd"] = macd
            out["macd_signal"] = signal
            out["macd_hist"] = macd - signal
            out["rsi14"] = k.rsi_from_averages(averages[0], averages[1])
            out["boll_mid"] = mean
            out["boll_upper"] = mean + BOLL_NDEV * std
            out["boll_lower"] = mean - BOLL_NDEV * std
            out["vwap_session"] = cum_notional / cum_volume
            out["vwap_rolling"] = k.window_sum(self._window("ring_notional", rows, c)) / k.window_sum(
                self._window("ring_volume", rows, c)
            )
            out["realized_volatility"] = np.sqrt(k.window_sum(self._window("ring_sq_return", rows, c - 1)))
        for name in ("boll_mid", "boll_upper", "boll_lower", "vwap_rolling", "realized_volatility"):
            out[name] = np.where(c >= READY_FROM_BAR[name], out[name], np.nan)
        for name in CARRIED_FIELDS:
            out[name] = cols[name]
        return SignalBatch(
            index=index,
            symbol=self._names[rows],
            window_start=ws,
            window_end=cols["window_end"],
            close=close,
            session=self._sessions[rows],
            values={name: out[name] for name in VALUE_FIELDS},
        )

    def _smooth(
        self, smoother: k.Smoother, key: str, rows: np.ndarray, x: np.ndarray, ordinal: np.ndarray
    ) -> np.ndarray:
        """One seeded-recursion step; ``ordinal`` is x's 1-based position in the session's inputs."""
        n = smoother.period
        seed_state = self._a[key + "_seed"]
        seed = seed_state[..., rows]
        seed = np.where((ordinal >= 1) & (ordinal <= n), seed + x, seed)
        seed_state[..., rows] = seed
        y = smoother.step(self._a[key][..., rows], x)
        y = np.where(ordinal == n, seed / n, y)
        y = np.where(ordinal < n, np.nan, y)
        self._a[key][..., rows] = y
        return y

    def _push(self, key: str, rows: np.ndarray, number: np.ndarray, x: np.ndarray) -> None:
        ring = self._a[key]
        slot = (number - 1) % (ring.shape[0] // 2)
        ring[slot, rows] = x
        ring[slot + ring.shape[0] // 2, rows] = x

    def _window(self, key: str, rows: np.ndarray, number: np.ndarray) -> np.ndarray:
        """``(width, len(rows))`` windows ending at item ``number``, oldest first."""
        ring = self._a[key]
        width = ring.shape[0] // 2
        # One flat take: row offsets plus each symbol's start (cheaper than a 2-D fancy index).
        start = (number % width) * self._capacity + rows
        return np.take(ring.reshape(-1), start[None, :] + self._ring_offsets[width])

    def _roll_sessions(self, rows: np.ndarray, ws: np.ndarray) -> None:
        """Reset the symbols whose bar starts a new session (rare: one time-zone lookup each)."""
        a = self._a
        outside = np.flatnonzero((ws < a["session_lo"][rows]) | (ws >= a["session_hi"][rows]))
        reset = []
        for i in outside.tolist():
            row = int(rows[i])
            label, a["session_lo"][row], a["session_hi"][row] = session_bounds(int(ws[i]), self._zones[row])
            if label != self._sessions[row]:
                self._sessions[row] = label
                reset.append(row)
        if reset:
            for key in _RESET_ON_SESSION:
                self._a[key][..., reset] = _STATE[key][2]

    def _rows(self, symbols: Sequence[str] | np.ndarray) -> np.ndarray:
        found = list(map(self._row.get, symbols))
        if None in found:
            for symbol in symbols:
                if symbol not in self._row:
                    self._add_symbol(str(symbol))
            found = [self._row[symbol] for symbol in symbols]
        return np.asarray(found, np.int64)

    def _add_symbol(self, symbol: str) -> int:
        r = len(self._row)
        if r == self._capacity:
            self._grow(2 * self._capacity)
        self._names[r] = symbol
        self._row[symbol] = r
        self._zones.append(zone_for(symbol, self._session_tz))
        return r

    def _grow(self, capacity: int) -> None:
        for key, (lead, dtype, init) in _STATE.items():
            grown: np.ndarray = np.full((*lead, capacity), init, dtype=dtype)
            if key in self._a:
                grown[..., : self._capacity] = self._a[key]
            self._a[key] = grown
        for attr in ("_names", "_sessions"):
            grown_labels = np.full(capacity, "", dtype=object)
            grown_labels[: self._capacity] = getattr(self, attr)
            setattr(self, attr, grown_labels)
        self._capacity = capacity
        # Flat offsets of each row of a ring, by window width, for _window's single take.
        widths = {lead[0] // 2 for key, (lead, _, _) in _STATE.items() if key.startswith("ring_")}
        self._ring_offsets = {width: np.arange(width)[:, None] * capacity for width in widths}

    def to_dict(self) -> dict[str, Any]:
        """Snapshot: plain types and little-endian array bytes (msgpack- and pickle-safe)."""
        n = len(self._row)
        return {
            "version": SNAPSHOT_VERSION,
            "session_tz": self._session_tz,
            "bar_ms": self._bar_ms,
            "symbols": self._names[:n].tolist(),
            "sessions": self._sessions[:n].tolist(),
            "arrays": {key: _to_le(arr[..., :n]).tobytes() for key, arr in self._a.items()},
        }

    @classmethod
    def from_dict(cls, snapshot: Mapping[str, Any]) -> SignalState:
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported signal state snapshot version {snapshot.get('version')!r}")
        names = list(snapshot["symbols"])
        sessions = list(snapshot["sessions"])
        arrays = snapshot["arrays"]
        if set(arrays) != set(_STATE) or len(sessions) != len(names):
            raise ValueError("signal state snapshot does not match this version's state layout")
        state = cls(snapshot["session_tz"], snapshot["bar_ms"], capacity=len(names))
        for name in names:
            state._add_symbol(name)
        state._sessions[: len(names)] = sessions
        for key, (lead, dtype, _) in _STATE.items():
            values = np.frombuffer(arrays[key], dtype=np.dtype(dtype).newbyteorder("<"))
            state._a[key][..., : len(names)] = values.reshape(*lead, len(names))
        return state

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> SignalState:
        return cls.from_dict(msgspec.msgpack.decode(data))


def _to_le(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def _empty_batch() -> SignalBatch:
    return SignalBatch(
        index=np.empty(0, np.int64),
        symbol=np.empty(0, dtype=object),
        window_start=np.empty(0, np.int64),
        window_end=np.empty(0, np.int64),
        close=np.empty(0),
        session=np.empty(0, dtype=object),
        values={name: np.empty(0) for name in VALUE_FIELDS},
    )
