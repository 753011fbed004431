"""Exponential backoff between attempts at something that is away (a database, a crashed worker)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``initial_s``, ``initial_s * factor``, ... capped at ``cap_s``; :meth:`reset` after a
    success starts again from ``initial_s``. ``attempts`` counts the delays handed out."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    factor: float = 2.0
    attempts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.cap_s < self.initial_s or self.factor < 1:
            raise ValueError("a backoff needs 0 < initial_s <= cap_s and factor >= 1")

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.initial_s * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
