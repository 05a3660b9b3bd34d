"""`items.json` read a batch of items at a time, so 200,000 items never sit in memory at once.

airgap writes `items.json` as `{"items":[…]}` with sorted keys and no whitespace, so in the
file every item starts with `{"action":` and items are separated by `},{"action":`. That
sequence cannot occur inside a JSON string (its quotes are not escaped), so cutting there
either separates two items of the top-level array or leaves a piece that does not parse (when
the cut fell inside an item), and a piece that does not parse stops the fast reading. Each
piece is parsed with orjson, or with `json` when it holds a number orjson would read as a
float; either gives exactly what `json.loads` gives for those bytes.

Anything unusual (another shape, a piece that does not parse, an item the schema refuses)
raises `Unusual`, and the caller reads the whole document the general way, which decides and
words every refusal. This module does no I/O beyond the file handle it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

HEAD = b'{"items":['
TAIL = b"]}"
SEPARATOR = b'},{"action":'
WINDOW = 1 << 20  # bytes read per step (a few thousand items are in memory at once)
# orjson reads integers beyond 64 bits as floats, `json` as integers: a piece with a run of 19
# digits anywhere goes to `json`. Found by mapping digits to "0" and all else to "." (a
# translate and a substring search run ~10x faster than a regular expression here).
_DIGITS = bytes(48 if 48 <= c <= 57 else 46 for c in range(256))
_LONG_NUMBER = b"0" * 19


class Unusual(Exception):
    """The document is not in the shape this module reads; read it the general way."""


def batches(handle: BinaryIO, size: int, *, max_piece: int) -> Iterator[list[Any]]:
    """The items of the `items.json` in `handle` (`size` bytes), a list per piece.

    Args:
        handle: the file, positioned anywhere (it is rewound).
        size: its size in bytes.
        max_piece: the largest piece (bytes) to hold while looking for a separator.

    Raises:
        Unusual: the document is not `{"items":[…]}` as airgap writes it, or a piece does not
            parse as a run of items.
    """

    def read_at(offset: int, n: int) -> bytes:
        handle.seek(offset)
        return handle.read(n)

    start, stop = bounds(read_at, size)
    return range_batches(read_at, start, stop, max_piece=max_piece)


ReadAt = Callable[[int, int], bytes]  # (offset, count) -> at most count bytes from offset


def bounds(read_at: ReadAt, size: int) -> tuple[int, int]:
    """Where the items of an `items.json` of `size` bytes lie: between `{"items":[` and `]}`.

    Raises:
        Unusual: the document does not start and end that way.
    """
    if size < len(HEAD) + len(TAIL):
        raise Unusual("too short")
    if read_at(0, len(HEAD)) != HEAD:
        raise Unusual("another head")
    if read_at(size - len(TAIL), len(TAIL)) != TAIL:
        raise Unusual("another tail")
    return len(HEAD), size - len(TAIL)


def split(read_at: ReadAt, start: int, stop: int, parts: int, *, max_piece: int) -> list[range]:
    """Cut the items between `start` and `stop` (from `bounds`) into at most `parts` ranges of
    about the same size, each a run of items joined by commas, cut where `batches` cuts.

    A range holds the bytes of its items; the comma between two ranges belongs to neither.
    Where no separator lies within `max_piece` bytes of a cut's place, that cut is left out.
    """
    cuts = [start]
    for part in range(1, parts):
        at = max(start + (stop - start) * part // parts, cuts[-1])
        found = -1
        window = b""
        while found < 0 and len(window) < max_piece and at + len(window) < stop:
            more = read_at(at + len(window), min(WINDOW, stop - at - len(window)))
            if not more:
                break
            window += more
            found = window.find(SEPARATOR)
        if found >= 0 and at + found + 2 < stop:
            cuts.append(at + found + 2)  # the next range starts at the item's `{`
    ends = [cut - 1 for cut in cuts[1:]] + [stop]  # a comma lies before each later cut
    return [range(a, b) for a, b in zip(cuts, ends, strict=True)]


def range_batches(read_at: ReadAt, start: int, stop: int, *, max_piece: int) -> Iterator[list[Any]]:
    """The items in bytes `start` to `stop`, a run of items joined by commas (the inside of the
    `items` array, or a range of `split`), a list per piece of about `WINDOW` bytes.

    Raises:
        Unusual: a piece does not parse as a run of items, or holds no separator within
            `max_piece` bytes.
    """
    at = start
    left = stop - start
    pending = b""
    while left > 0 or pending:
        chunk = read_at(at, min(WINDOW, left)) if left > 0 else b""
        if left > 0 and not chunk:
            raise Unusual("the file ended early")
        at += len(chunk)
        left -= len(chunk)
        pending += chunk
        if left > 0:
            cut = pending.rfind(SEPARATOR)
            if cut < 0:
                if len(pending) > max_piece:
                    raise Unusual("an item larger than a piece")
                continue
            piece, pending = pending[: cut + 1], pending[cut + 2 :]
        else:
            piece, pending = pending, b""
        yield _parse_piece(piece)


def _parse_piece(piece: bytes) -> list[Any]:
    text = b"[" + piece + b"]"
    try:
        if _LONG_NUMBER in piece.translate(_DIGITS):
            value = json.loads(text.decode("utf-8"))
        else:
            value = orjson.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Unusual("a piece does not parse") from None
    if not isinstance(value, list):
        raise Unusual("not a list")
    return value
