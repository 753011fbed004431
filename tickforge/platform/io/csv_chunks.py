"""A CSV file's bytes after its header, in chunks of whole lines, gunzipped where it is gzip.

Light on purpose (no polars at import, numpy only once a chunk is scanned): a command can start
:class:`ChunksAhead` before it imports the kernels, so inflating the first chunks (zlib lets go
of the GIL) runs on a second CPU while the main thread is still importing.
"""

from __future__ import annotations

import os
import queue
import threading
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# ~400 k equity rows per chunk: large enough for polars to be efficient, small enough that
# progress moves on a multi-million-row file.
BLOCK_BYTES: Final = 16 * 1024 * 1024
_READ_BYTES: Final = 4 * 1024 * 1024  # compressed bytes per read
# Chunks a reading thread may be ahead of its reader: enough to cover the kernels' imports.
AHEAD: Final = 4


def is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def decompressed(path: Path) -> Iterator[bytes]:
    """The file's bytes in pieces of at most ``BLOCK_BYTES``, gunzipped if it is gzip (every
    member of a multi-member file)."""
    try:
        with path.open("rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if not gzipped:
                while piece := f.read(BLOCK_BYTES):
                    yield piece
                return
            inflate = zlib.decompressobj(31)
            while compressed := f.read(_READ_BYTES):
                while compressed:
                    # Bounded output: a piece is cut into chunks without a copy of the whole.
                    yield inflate.decompress(compressed, BLOCK_BYTES)
                    compressed = inflate.unconsumed_tail
                    if inflate.eof:  # a member ended; another may follow
                        compressed = inflate.unused_data
                        if compressed.strip(b"\0"):
                            inflate = zlib.decompressobj(31)
                        else:
                            compressed = b""
            if not inflate.eof:
                raise EOFError("the gzip stream ends before its end-of-stream marker")
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read the file: {e}") from e


@dataclass(frozen=True)
class Chunk:
    """Whole lines of a CSV file and what the fast path needs to know about their bytes."""

    data: bytes
    plain: bool  # ASCII without double quotes or CRs: lines are split at commas, nothing else
    lines: int  # line ends, plus one for a last line without one (0 where not plain)
    commas: int  # 0 where not plain

    @classmethod
    def of(cls, data: bytes) -> Chunk:
        plain = data.isascii() and b'"' not in data and b"\r" not in data
        if not plain:
            return cls(data, False, 0, 0)
        import numpy as np  # here, not at import: see the module docstring

        # numpy compares and counts with SIMD: ~3x faster than bytes.count.
        buffer = np.frombuffer(data, np.uint8)
        line_ends = int(np.count_nonzero(buffer == ord("\n")))
        return cls(data, True, line_ends + (not data.endswith(b"\n")), int(np.count_nonzero(buffer == ord(","))))


def csv_chunks(path: Path) -> Generator[Chunk, None, None]:
    """The bytes after the header line in pieces of whole lines, each about ``BLOCK_BYTES``
    (at least one line; the last one may lack its line end)."""
    carry = b""  # the start of a line whose end is in a later piece
    header_done = False
    for piece in decompressed(path):
        if not header_done:
            carry += piece
            end = carry.find(b"\n")
            if end < 0:
                continue
            header_done = True
            piece, carry = carry[end + 1 :], b""
        cut = piece.rfind(b"\n") + 1
        if not cut:
            carry += piece
            continue
        # One copy: the carried line start and the piece up to its last line end.
        yield Chunk.of(b"".join((carry, memoryview(piece)[:cut])) if carry or cut < len(piece) else piece)
        carry = piece[cut:]
    if header_done and carry:
        yield Chunk.of(carry)


class ChunksAhead:
    """:func:`csv_chunks` of ``path``, made by a thread that starts at once (where there is a
    second CPU) and stays up to ``ahead`` chunks ahead: decompressing and scanning bytes overlap
    the reader's parsing, and the first chunks the imports before it. Iterate once; ``close``
    (or the end of the iteration) stops the thread."""

    def __init__(self, path: str | Path, ahead: int = AHEAD) -> None:
        self.path = Path(path)
        self._chunks = csv_chunks(self.path)
        self._ready: queue.Queue[Chunk | BaseException | None] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        if len(os.sched_getaffinity(0)) > 1:
            self._worker = threading.Thread(target=self._produce, name="csv-chunks", daemon=True)
            self._worker.start()

    def _hand(self, item: Chunk | BaseException | None) -> bool:
        """Queue ``item`` unless the reader stopped listening (then never block)."""
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._hand(chunk):
                    return
            self._hand(None)
        except BaseException as e:  # handed to the reader, which raises it
            self._hand(e)

    def __iter__(self) -> Iterator[Chunk]:
        if self._worker is None:
            yield from self._chunks
            return
        try:
            while (item := self._ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def __enter__(self) -> ChunksAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join()
        self._chunks.close()
