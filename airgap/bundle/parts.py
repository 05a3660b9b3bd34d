"""Media-sized parts: one bundle written as `NAME.001`, `NAME.002`, … and read back as one stream.

A part is a plain slice of the bundle's bytes, with no header of its own, so
`cat NAME.* > NAME` gives the whole bundle and the stock-tool checks of the README still work.
What this module checks is what the names and sizes can tell: numbering contiguous from 001,
every part but the last of one size, the last no larger. Parts in the wrong order, or changed
in transit, are caught by the bundle's own signature and hashes when it is read. This module
does no verification of content, and knows nothing of tar, gzip or age.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from airgap.errors import ConfigError, DecryptFailed, MissingPart, NotABundle
from airgap.units import format_size, parse_size

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

MIN_PART_SIZE = 1024**2  # bytes; smaller parts would only multiply files on the medium
MAX_PARTS = 999  # three digits keep `cat NAME.*` in numeric order
_PART = re.compile(r"^(?P<base>.+)\.(?P<number>[0-9]{3})$")


def part_path(base: Path, number: int) -> Path:
    """`NAME.airgap` and 3 → `NAME.airgap.003`."""
    return base.with_name(f"{base.name}.{number:03d}")


def split_name(path: Path) -> tuple[Path, int] | None:
    """`NAME.airgap.002` → (`NAME.airgap`, 2); None when the name is not a part's."""
    match = _PART.match(path.name)
    if match is None:
        return None
    return path.with_name(match.group("base")), int(match.group("number"))


def parse_split(text: str) -> int:
    """Parse a `--split` size such as `650MiB` or `4GiB`.

    Raises:
        ConfigError: not a size, or below the 1 MiB minimum.
    """
    size = parse_size(text, what="--split")
    if size < MIN_PART_SIZE:
        raise ConfigError(
            f"--split {text} is below the minimum part size of 1 MiB",
            hint="Write it like 650MiB (CD) or 4GiB (FAT32), less a little for the file system.",
        )
    return size


def part_count(total: int, part_size: int) -> int:
    """How many parts `total` bytes make in parts of `part_size` bytes (at least one)."""
    return max(1, -(-total // part_size))


def first_part(path: Path) -> Path:
    """The file whose first bytes are the bundle's first bytes (no checks of the other parts).

    `NAME` names its parts when `NAME` does not exist but `NAME.001` does.
    """
    if not path.exists() and part_path(path, 1).exists():
        return part_path(path, 1)
    return path


def _siblings(base: Path) -> dict[int, Path]:
    """Every `base.NNN` (NNN ≥ 001) in base's folder, by number."""
    found: dict[int, Path] = {}
    prefix = base.name + "."
    try:
        names = os.listdir(base.parent)
    except OSError:
        return found
    for name in names:
        if name.startswith(prefix):
            parsed = split_name(base.parent / name)
            if parsed is not None and parsed[0].name == base.name and parsed[1] >= 1:
                found[parsed[1]] = base.parent / name
    return found


def part_group(path: Path) -> list[Path]:
    """The files a bundle path stands for as they lie on disk, gaps and all (for moving them).

    A whole file is its own group; a part set is every `NAME.NNN` present, in numeric order.
    """
    path = first_part(path)
    parsed = split_name(path)
    if parsed is None:
        return [path]
    found = _siblings(parsed[0])
    return [found[n] for n in sorted(found)] or [path]


def bundle_parts(path: Path) -> list[Path]:
    """The files that make up the bundle `path` names, in reading order.

    A path that is not a part's name (`NAME.airgap`) is the whole bundle. `NAME.airgap.001`
    (or `NAME.airgap` when only its parts exist) stands for `NAME.airgap.001`, `.002`, … up to
    the highest number present.

    Raises:
        MissingPart: a part other than the first was given, the numbering has a gap, or the
            sizes show a part cut short (only the last part may be smaller than the first).
    """
    path = first_part(path)
    parsed = split_name(path)
    if parsed is None:
        return [path]
    base, number = parsed
    if number != 1:
        raise MissingPart(
            f"{path.name} is part {number} of {base.name}; give the first part "
            f"{part_path(base, 1).name}",
            hint="Parts are read in order from .001; every part must lie in the same folder.",
        )
    if not path.exists():
        return [path]  # the reader reports the missing file with its own code
    found = _siblings(base)
    last = max(found)
    missing = [n for n in range(1, last + 1) if n not in found]
    if missing:
        names = ", ".join(part_path(base, n).name for n in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise MissingPart(
            f"{names}{more} missing: {base.name} has parts up to .{last:03d}",
            hint="Copy every part of the bundle into the same folder, then try again.",
        )
    parts = [found[n] for n in range(1, last + 1)]
    _check_sizes(parts)
    return parts


def _check_sizes(parts: Sequence[Path]) -> None:
    sizes = [p.stat().st_size for p in parts]
    first = sizes[0]
    for part, size in zip(parts[1:], sizes[1:], strict=True):
        is_last = part == parts[-1]
        if size > first or (size < first and not is_last):
            raise MissingPart(
                f"{part.name} is {format_size(size)} where {parts[0].name} is "
                f"{format_size(first)}: a part was cut short, or the parts are out of order",
                hint="Every part but the last has the same size; copy the parts again.",
            )


class PartsReader(io.RawIOBase):
    """Consecutive files read as one stream (only one of them open at a time)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self.paths = list(paths)
        self.sizes = [p.stat().st_size for p in self.paths]
        self.size = sum(self.sizes)
        self.exhausted = False  # a read wanted bytes after the end of the last part
        self._pos = 0
        self._index = -1
        self._handle: io.BufferedReader | None = None

    @property
    def remaining(self) -> int:
        """Bytes left before the end of the last part (a reader reading ahead asks no more,
        so `exhausted` still means the bundle itself needed bytes past the end)."""
        return max(0, self.size - self._pos)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        self._close_handle()
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill `buffer` from the parts in order; fewer bytes only at the very end.

        Raises:
            NotABundle: a part shrank since it was sized.
            OSError: a part cannot be opened or read.
        """
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            handle, left = self._current()
            if handle is None:
                self.exhausted = True
                break
            got = handle.readinto(view[filled : filled + min(left, len(view) - filled)])
            if not got:
                raise NotABundle(f"{self.paths[self._index].name} shrank while it was read")
            filled += got
            self._pos += got
        return filled

    def write(self, data: ReadableBuffer) -> int:
        raise io.UnsupportedOperation("parts are read-only")

    def close(self) -> None:
        self._close_handle()
        super().close()

    def _current(self) -> tuple[io.BufferedReader | None, int]:
        """The open part at the current position and how many bytes are left in it."""
        start = 0
        for index, size in enumerate(self.sizes):
            if self._pos < start + size:
                if index != self._index or self._handle is None:
                    self._close_handle()
                    self._handle = self.paths[index].open("rb")
                    self._index = index
                    self._handle.seek(self._pos - start)
                return self._handle, start + size - self._pos
            start += size
        return None, 0

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._index = -1


def open_parts(parts: Sequence[Path]) -> BinaryIO:
    """One readable stream over `parts` (a plain file when there is only one).

    Raises:
        OSError: a part cannot be opened or sized.
    """
    if len(parts) == 1:
        return parts[0].open("rb")
    return cast(BinaryIO, PartsReader(parts))


def stream_size(stream: BinaryIO) -> int:
    """The total size in bytes of a stream `open_parts` returned."""
    if isinstance(stream, PartsReader):
        return stream.size
    return os.fstat(stream.fileno()).st_size


@contextlib.contextmanager
def ended_early_is_missing_part(stream: BinaryIO, path: Path) -> Iterator[None]:
    """Report a part set whose bytes ran out before the bundle ended as `E_MISSING_PART`.

    Parts have no header, so a set missing its last part(s) is only noticed when the stream
    ends early; without this the reader would call it truncated (`E_NOT_A_BUNDLE`).

    Raises:
        MissingPart: the stream was read to its end and then found cut short.
    """
    try:
        yield
    except MissingPart:
        raise
    except (NotABundle, DecryptFailed, OSError, EOFError) as exc:
        # A wrong key fails on the age header, in the first part, long before the end.
        if isinstance(stream, PartsReader) and stream.exhausted:
            raise MissingPart(
                f"the bundle ends early in its last part {stream.paths[-1].name}: a later "
                f"part of {path.name} is missing, or a part was cut short",
                hint="Copy every part of the bundle into the same folder, then try again.",
            ) from exc
        raise


class _PartWriter(io.RawIOBase):
    """Writes a stream into temporary part files of `part_size` bytes each."""

    def __init__(self, base: Path, part_size: int) -> None:
        super().__init__()
        self.base = base
        self.part_size = part_size
        self.temps: list[Path] = []
        self._handle: BinaryIO | None = None
        self._in_part = 0
        self._pos = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            if self._handle is None or self._in_part == self.part_size:
                self._next_part()
            assert self._handle is not None
            take = min(len(view) - done, self.part_size - self._in_part)
            self._handle.write(view[done : done + take])
            done += take
            self._in_part += take
            self._pos += take
        return done

    def _next_part(self) -> None:
        self._finish_part()
        if len(self.temps) == MAX_PARTS:
            raise ConfigError(
                f"the bundle would need more than {MAX_PARTS} parts of "
                f"{format_size(self.part_size)}",
                hint="Choose a larger --split size.",
            )
        number = len(self.temps) + 1
        fd, name = tempfile.mkstemp(
            prefix=f".{self.base.name}.{number:03d}.", suffix=".tmp", dir=self.base.parent
        )
        self.temps.append(Path(name))
        os.fchmod(fd, 0o644)
        self._handle = os.fdopen(fd, "wb")
        self._in_part = 0

    def _finish_part(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        self._finish_part()
        super().close()


@contextlib.contextmanager
def split_output(base: Path, part_size: int) -> Iterator[BinaryIO]:
    """Write `base.001`, `base.002`, … through temporary files, renamed into place on success.

    Parts are renamed last to first, so whoever sees `base.001` appear (a transfer station)
    finds every other part already there. Stale parts of an older, longer bundle of the same
    name are removed first: they would be read as part of this one. A failure leaves nothing
    behind.

    Raises:
        ConfigError: `part_size` is not positive, or the bundle needs more than 999 parts.
    """
    if part_size < 1:
        raise ConfigError(f"a part size must be positive, not {part_size}")
    base.parent.mkdir(parents=True, exist_ok=True)
    writer = _PartWriter(base, part_size)
    try:
        yield cast(BinaryIO, writer)
        if not writer.temps:  # an empty stream still makes one (empty) part
            writer._next_part()
        writer.close()
        count = len(writer.temps)
        for number, stale in sorted(_siblings(base).items(), reverse=True):
            if number > count:
                stale.unlink()
        for number in range(count, 0, -1):
            os.replace(writer.temps[number - 1], part_path(base, number))
    except BaseException:
        writer.close()
        for temp in writer.temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        raise


def part_paths(base: Path, total: int, part_size: int) -> list[Path]:
    """The part files `split_output` writes for `total` bytes."""
    return [part_path(base, n) for n in range(1, part_count(total, part_size) + 1)]
