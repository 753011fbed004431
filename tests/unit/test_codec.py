"""Bar messages on the worker topics: decoded, or a dead letter with its reason, never a crash."""

from __future__ import annotations

from confluent_kafka import Message

from tickforge.platform.contracts import DeadLetter
from tickforge.platform.reasons import Reason
from tickforge.streaming.codec import bar_or_dead_letter, bars_to_messages, encode_bar


class Letters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


def _message(value: bytes | None, offset: int) -> Message:
    return Message(topic="bars.1s", partition=0, offset=offset, value=value)


def test_bar_messages_decode_and_empty_or_garbage_ones_are_dead_letters(samples) -> None:
    from tickforge.platform.bars.builder import BarBuilder
    from tickforge.platform.io.files import read_trades

    trades = read_trades(samples / "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz").data.slice(0, 2_000)
    builder = BarBuilder(["1s"])
    builder.add_trade_columns(
        builder.symbols.codes(trades["symbol"].to_list()),
        trades["ts_ms"].to_numpy(),
        trades["price"].to_numpy(),
        trades["size"].to_numpy(),
    )
    closed = [c for c in builder.close(flush=True) if c.timeframe == "1s"][0]
    bar = next(bar for _, bar in bars_to_messages(closed, builder.symbols, closed_at_ms=0))
    out = Letters()
    values = [encode_bar(bar), None, b"", b"{not json", encode_bar(bar)[:-5]]
    decoded = [bar_or_dead_letter(_message(v, i), out, "bars.1s") for i, v in enumerate(values)]
    assert decoded[0] == bar and decoded[1:] == [None] * 4
    assert [(d.offset, d.reason) for d in out.letters] == [(i, Reason.UNDECODABLE) for i in range(1, 5)]
    assert out.letters[0].detail == "empty message"
