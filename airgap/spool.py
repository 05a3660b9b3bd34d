"""Records spilled to an anonymous temporary file and read back in order.

A large pack produces a few small records per device (an attachment's member entry, an item's
state row, a duplicate key) that are needed again only once every input has been read. Held as
Python objects they cost a few hundred bytes each, which is most of the memory of a 100,000-device
pack; spilled here they cost nothing until they are read back, a batch at a time.

The file is created unlinked (`tempfile.TemporaryFile`), so nothing is left behind however the
process ends. Records are tuples of `str`, `int`, `bytes` and `None`, written with `marshal` in
batches: the file is private to this process and read only by it, never by anyone else. Each
batch is framed by its length and read back with one `read` (`marshal.load` on a file object
reads value by value, ten times slower).
"""

from __future__ import annotations

import marshal
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

_BATCH = 4096  # records per marshal call: large enough to amortize it, small enough to hold
_FRAME = struct.Struct("<Q")  # the length of the batch that follows


class RecordSpool:
    """An append-only sequence of records on disk; iterate to read them back in order."""

    def __init__(self, directory: Path | None = None, *, batch: int | None = None) -> None:
        """Create the (unlinked) spool file in `directory`, or the system's temporary folder.

        Args:
            directory: where the file goes.
            batch: records held before they are written (default 4096); lower it for large
                records.
        """
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (see close())
        self._pending: list[tuple[Any, ...]] = []
        self._batch = batch or _BATCH
        self.count = 0

    def append(self, record: tuple[Any, ...]) -> None:
        """Add one record at the end."""
        self._pending.append(record)
        self.count += 1
        if len(self._pending) >= self._batch:
            self._spill()

    def _spill(self) -> None:
        if self._pending:
            data = marshal.dumps(self._pending)
            self._file.seek(0, 2)
            self._file.write(_FRAME.pack(len(data)))
            self._file.write(data)
            self._pending = []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        """Every record so far, in the order appended. Appending while iterating is an error."""
        self._spill()
        self._file.seek(0)
        while frame := self._file.read(_FRAME.size):
            (length,) = _FRAME.unpack(frame)
            yield from marshal.loads(self._file.read(length))

    def close(self) -> None:
        """Drop the records (the file goes with its descriptor)."""
        self._pending = []
        self._file.close()

    def __enter__(self) -> RecordSpool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
