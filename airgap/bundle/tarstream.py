"""A strict, streaming POSIX tar reader and a deterministic tar writer.

The reader never creates files: it yields headers and lets the caller pull each member's bytes
through a fixed buffer, so hashing a large bundle keeps memory flat. It accepts only what
`airgap-bundle/1` allows (regular files, directories, PAX path/size records) and refuses every
other member type. Name rules live in the bundle reader, not here.
"""

from __future__ import annotations

import functools
import hashlib
import io
import operator
import os
import re
import tarfile
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, repeat
from typing import BinaryIO, NamedTuple

from airgap.errors import NotABundle, SizeLimit, UnsafeMember

BLOCK = 512
RECORD = 20 * BLOCK
CHUNK = 1 << 20  # bytes per read while streaming member data
RUN_MAX = 4 << 20  # bytes of small members read ahead to be checked at once
PAX_MAX = 64 * 1024  # bytes; a PAX record block larger than this is hostile
_PAX_ALLOWED = frozenset(
    {"path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment"}
)
_REFUSED_TYPES = {
    tarfile.LNKTYPE: "hard link",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "sparse file",
    tarfile.GNUTYPE_LONGNAME: "GNU long-name header",
    tarfile.GNUTYPE_LONGLINK: "GNU long-link header",
    tarfile.XGLTYPE: "PAX global header",
}


class CountingReader:
    """Reads from a stream and refuses to go past `limit` bytes in total."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self.limit = limit
        self.count = 0

    def _charge(self, n: int) -> None:
        self.count += n
        if self.count > self.limit:
            raise SizeLimit(
                f"the bundle is larger than the limit of {self.limit} bytes",
                hint="Raise bundle.max_bytes if this bundle is expected to be this large.",
            )

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        self._charge(len(data))
        return data

    def readinto(self, buffer: memoryview) -> int:
        n = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        n = n or 0
        self._charge(n)
        return int(n)


class Entry(NamedTuple):
    """One tar member as read from its header (after any PAX record applied)."""

    name: str
    kind: str  # "file" or "dir"
    size: int
    mtime: int
    mode: int


def _read_exact(source: CountingReader, n: int, *, what: str) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = source.read(n - len(data))
        if not chunk:
            raise NotABundle(f"the file is truncated inside {what}")
        data += chunk
    return bytes(data)


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise NotABundle("malformed PAX header record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise NotABundle("malformed PAX header record length") from None
        if length <= 0 or pos + length > len(data):
            raise NotABundle("malformed PAX header record length")
        record = data[space + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise NotABundle("malformed PAX header record")
        key, _, value = record[:-1].partition(b"=")
        try:
            records[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeMember("a PAX header record is not UTF-8") from None
        pos += length
    return records


# The ustar header of a regular file as `header_bytes` writes it (and GNU tar, given the same
# ownership): mode 0644, uid and gid 0, type "0", no link, "ustar\0" "00", no user, group,
# device or prefix. Such a header is read here directly, to the same Entry `tarfile` would
# give, at a fifth of the cost; a bundle of 100,000 reports has 100,000 of them. Any other
# header, or a checksum that does not add up, goes through `tarfile.TarInfo.frombuf`.
_PLAIN_IDS = b"0000644\x000000000\x000000000\x00"  # bytes 100:124
_PLAIN_TAIL = b"0" + bytes(100) + tarfile.POSIX_MAGIC + bytes(247)  # bytes 156:512
_PLAIN_NUMBERS = re.compile(rb"([0-7]{11})\x00([0-7]{11})\x00([0-7]{6})\x00 ")  # 124:156
# A checksum sums the header with its own field as spaces: the fixed fields' part of it.
_PLAIN_SUM = sum(_PLAIN_IDS) + sum(_PLAIN_TAIL) + 8 * 32


_OCTAL_11 = re.compile(rb"[0-7]{11}\x00")
_DIGEST = operator.methodcaller("digest")


def _plain_header(header: bytes) -> tuple[str, int, int] | None:
    """Name, size and mtime of a header in the plain form above, else None."""
    if header[156:] != _PLAIN_TAIL or header[100:124] != _PLAIN_IDS:
        return None
    numbers = _PLAIN_NUMBERS.match(header, 124)
    raw = header[:100]
    name = raw.rstrip(b"\0")
    if numbers is None or not name or b"\0" in name or not name.isascii():
        return None
    if int(numbers[3], 8) != _PLAIN_SUM + sum(raw) + sum(header[124:148]):
        return None
    return name.decode("ascii"), int(numbers[1], 8), int(numbers[2], 8)


class TarReader:
    """Iterates the members of a tar stream; read each member's data before the next header.

    Reads the stream in 1 MiB chunks and takes headers and small members from that buffer, so
    a member costs no read call of its own (a bundle may hold 100,000 of them); large member
    data is read straight into a fixed buffer. Bytes count against the source's limit as they
    are consumed, not as they are read ahead.
    """

    def __init__(self, source: CountingReader) -> None:
        self._source = source
        self._stream = source._stream
        self._pending = 0  # data + padding bytes of the current member not yet consumed
        self._data_left = 0  # data bytes of the current member not yet consumed
        self._buffer: bytearray | None = None  # large member data is read into this
        self._buf = b""  # read-ahead
        self._pos = 0

    def _fill(self, n: int) -> int:
        """Make at least `n` bytes available from the read-ahead if the stream has them;
        returns how many are available."""
        avail = len(self._buf) - self._pos
        if avail >= n:
            return avail
        parts = [self._buf[self._pos :]]
        self._buf, self._pos = b"", 0  # let the old chunk go before reading the next
        while avail < n:
            want = max(CHUNK, n - avail)
            remaining = getattr(self._stream, "remaining", None)
            if remaining is not None:  # parts: never ask past the end for read-ahead's sake
                want = max(n - avail, min(want, remaining))
            chunk = self._stream.read(want)
            if not chunk:
                break
            parts.append(chunk)
            avail += len(chunk)
        # One chunk after an empty remainder is kept as it is: no copy of a MiB.
        self._buf = parts[1] if len(parts) == 2 and not parts[0] else b"".join(parts)
        parts.clear()
        self._pos = 0
        return avail

    def _take(self, n: int) -> bytes:
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        self._source._charge(n)
        return data

    def __iter__(self) -> Iterator[Entry]:
        pax: dict[str, str] = {}
        while True:
            self._skip_pending()
            avail = self._fill(BLOCK)
            if avail < BLOCK:
                if not avail:
                    raise NotABundle("the file ends without the tar end-of-archive marker")
                self._take(avail)
                raise NotABundle("the file is truncated inside a tar header")
            header = self._take(BLOCK)
            if not pax:
                plain = _plain_header(header)
                if plain is not None:
                    name, size, mtime = plain
                    if size > self._source.limit:
                        raise SizeLimit(
                            f"{name!r} claims {size} bytes, above the bundle size limit"
                        )
                    self._pending = size + (-size % BLOCK)
                    self._data_left = size
                    yield Entry(name, "file", size, mtime, 0o644)
                    continue
            if header == b"\0" * BLOCK:
                self._check_trailer()
                return
            try:
                info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
            except UnicodeDecodeError:
                raise UnsafeMember("a member name is not UTF-8") from None
            except tarfile.HeaderError as exc:
                raise NotABundle(f"not a valid tar header ({exc})") from None
            if info.type in _REFUSED_TYPES:
                raise UnsafeMember(f"{info.name!r} is a {_REFUSED_TYPES[info.type]}")
            if info.type == tarfile.XHDTYPE:
                if pax:
                    raise UnsafeMember("two PAX headers in a row")
                if info.size > PAX_MAX:
                    raise SizeLimit(f"a PAX header of {info.size} bytes is larger than allowed")
                pax = _parse_pax(self.read_all(info.size))
                self._skip_pending()
                unknown = sorted(set(pax) - _PAX_ALLOWED)
                if unknown:
                    raise UnsafeMember(f"PAX header carries unsupported records: {unknown}")
                continue
            if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
                raise UnsafeMember(f"{info.name!r} has unsupported tar type {info.type!r}")
            name, size = info.name, info.size
            if "path" in pax:
                name = pax["path"]
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise NotABundle("malformed PAX size record") from None
            pax = {}
            kind = "dir" if info.type == tarfile.DIRTYPE else "file"
            if kind == "dir":
                name = name.rstrip("/")
                size = 0
            if size < 0:
                raise NotABundle(f"{name!r} has a negative size")
            if size > self._source.limit:
                raise SizeLimit(f"{name!r} claims {size} bytes, above the bundle size limit")
            self._pending = size + (-size % BLOCK)
            self._data_left = size
            yield Entry(name=name, kind=kind, size=size, mtime=int(info.mtime), mode=info.mode)

    def take_plain_files(
        self, names: Sequence[bytes], sizes: Sequence[int], sha256: bytes
    ) -> int | None:
        """Consume the next members at once if they are exactly the plain regular files
        `names` (ASCII) of `sizes` bytes whose data has the SHA-256 digests `sha256` (32 bytes
        each, concatenated): the members of a bundle as airgap writes them, checked with a few
        calls over the read-ahead buffer instead of a dozen per member.

        "Exactly" means each header is byte-equal to the plain ustar header `_plain_header`
        reads, with that name and size, a valid checksum and the first member's mtime, so a
        member taken here is one `__iter__` would have yielded as `Entry(name, "file", size,
        mtime, 0o644)` and whose data `digest()` would have hashed to that digest. Call it only
        between members (after the last one's data was consumed), never after a PAX header.

        Returns:
            How many members were consumed: the longest run of them the read-ahead holds (up to
            `RUN_MAX` bytes; 0 when the first one alone is larger). None, with nothing
            consumed, when any of those is not as expected or would pass the size limit: read
            them one at a time, which finds the first that differs and says why.
        """
        assert self._pending == 0
        pos = self._pos
        spans = map(operator.and_, map(operator.add, sizes, repeat(2 * BLOCK - 1)), repeat(-BLOCK))
        offsets = list(accumulate(spans, initial=pos))  # offsets[i]: member i's header
        avail = self._fill(min(offsets[-1] - pos, RUN_MAX))
        pos = self._pos  # the fill may have moved the remainder to the start of a new buffer
        if pos != offsets[0]:
            offsets = [offset - offsets[0] + pos for offset in offsets]
        count = bisect_right(offsets, pos + avail) - 1  # members whose padding ends in the buffer
        if count <= 0:
            return 0
        end = offsets[count]
        if self._source.count + (end - pos) > self._source.limit:
            return None
        buf = self._buf
        starts = offsets[:count]
        names, sizes = names[:count], sizes[:count]
        mtime = buf[pos + 136 : pos + 148]
        if not _OCTAL_11.fullmatch(mtime):
            return None
        size_fields = list(map(b"%011o\x00".__mod__, sizes))
        base = _PLAIN_SUM + sum(mtime)
        checksums = map(operator.add, map(sum, names), map(sum, size_fields))
        expected: list[bytes] = [_PLAIN_IDS] * (6 * count)
        expected[0::6] = map(bytes.ljust, names, repeat(100), repeat(b"\x00"))
        expected[2::6] = size_fields
        expected[3::6] = repeat(mtime, count)
        expected[4::6] = map(b"%06o\x00 ".__mod__, map(operator.add, checksums, repeat(base)))
        expected[5::6] = repeat(_PLAIN_TAIL, count)
        headers = map(slice, starts, map(operator.add, starts, repeat(BLOCK)))
        if b"".join(map(buf.__getitem__, headers)) != b"".join(expected):
            return None
        view = memoryview(buf)
        data_starts = list(map(operator.add, starts, repeat(BLOCK)))
        data = map(view.__getitem__, map(slice, data_starts, map(operator.add, data_starts, sizes)))
        if b"".join(map(_DIGEST, map(hashlib.sha256, data))) != sha256[: 32 * count]:
            return None
        self._pos = end
        self._source._charge(end - pos)
        return count

    def offset(self) -> int | None:
        """Where the next header starts in the underlying file, between members, when that
        is a plain file (its reads are its bytes); else None."""
        if self._pending or not isinstance(self._stream, io.BufferedReader):
            return None
        return self._stream.tell() - (len(self._buf) - self._pos)

    def skip_to(self, offset: int) -> None:
        """Go on at `offset` of the plain file (`offset()` said where we are), past members
        verified another way: their bytes count against the limit as if read."""
        here = self.offset()
        assert here is not None and offset >= here
        self._source._charge(offset - here)
        self._buf, self._pos = b"", 0
        self._stream.seek(offset)

    def stream(self, sink: Callable[[memoryview], object] | None) -> None:
        """Feed the current member's data, chunk by chunk, to `sink` (one pass, flat memory),
        and consume its padding."""
        source = self._source
        while self._pending > 0:
            avail = len(self._buf) - self._pos
            if avail == 0 and self._pending >= CHUNK:
                # Large data: straight into the fixed buffer, no read-ahead copies.
                if self._buffer is None:
                    self._buffer = bytearray(CHUNK)
                view = memoryview(self._buffer)
                got = self._stream.readinto(view)  # type: ignore[attr-defined]
                if not got:
                    raise NotABundle("the file is truncated inside a member")
                source._charge(got)
                data = min(got, self._data_left)
                if data and sink is not None:
                    sink(view[:data])
                self._data_left -= data
                self._pending -= got
                continue
            if avail == 0:
                avail = self._fill(self._pending)
                if avail == 0:
                    raise NotABundle("the file is truncated inside a member")
            take = min(avail, self._pending)
            data = min(take, self._data_left)
            if data and sink is not None:
                sink(memoryview(self._buf)[self._pos : self._pos + data])
            self._pos += take
            source._charge(take)
            self._data_left -= data
            self._pending -= take

    def digest(self, handle: BinaryIO | None = None) -> str:
        """Hex SHA-256 of the current member's data, read with its padding (one pass, flat
        memory); the data is also written to `handle` if given."""
        digest = hashlib.sha256()
        if handle is None:
            self.stream(digest.update)
        else:

            def both(chunk: memoryview) -> None:
                digest.update(chunk)
                handle.write(chunk)

            self.stream(both)
        return digest.hexdigest()

    def read_all(self, size: int) -> bytes:
        """Read the current member's data into memory (callers bound `size` first)."""
        self._data_left = size
        self._pending = size + (-size % BLOCK)
        parts: list[bytes] = []
        self.stream(lambda chunk: parts.append(bytes(chunk)))
        return b"".join(parts)

    def _skip_pending(self) -> None:
        if self._pending:
            self.stream(None)

    def _check_trailer(self) -> None:
        # Anything after the end-of-archive marker other than zero padding could smuggle data
        # past a checker that stops at the marker; refuse it.
        while True:
            avail = self._fill(1)
            if not avail:
                return
            zeros = self._buf.count(0, self._pos)
            self._pos = len(self._buf)
            self._source._charge(avail)
            if zeros != avail:
                raise NotABundle("data follows the tar end-of-archive marker")


class PreadFile:
    """Reads a file by offset (`os.pread`) from `start` to `end`: a stream of its own over a
    descriptor another reader shares."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd, self.pos, self.end = fd, start, end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def read(self, n: int) -> bytes:
        data = os.pread(self.fd, max(0, min(n, self.end - self.pos)), self.pos)
        self.pos += len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


_USTAR_MAX_SIZE = 8**11 - 1  # bytes: the largest size 11 octal digits hold


@functools.lru_cache(maxsize=4)
def _ustar_template(mtime: int) -> tuple[bytes, int]:
    """A ustar header with every field but name and size filled in, and its byte sum."""
    block = bytearray(BLOCK)
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[136:148] = b"%011o\0" % mtime
    block[148:156] = b"        "  # the checksum is summed with its own field as spaces
    block[156:157] = tarfile.REGTYPE
    block[257:265] = tarfile.POSIX_MAGIC
    return bytes(block), sum(block)


def header_bytes(name: str, size: int, mtime: int) -> bytes:
    """The tar header block(s) of a regular file as bundles write them: deterministic ownership.

    Short names and sizes below 8 GiB (every member of a normal bundle) get a plain ustar
    block built here from a template, byte-identical to what `tarfile` writes but far cheaper,
    which matters when a bundle carries ten thousand reports; anything else goes through
    `tarfile` (PAX).
    """
    encoded = name.encode("utf-8")
    if len(encoded) <= 100 and name.isascii() and 0 <= size <= _USTAR_MAX_SIZE and mtime >= 0:
        template, template_sum = _ustar_template(mtime)
        size_field = b"%011o\0" % size
        checksum = template_sum + sum(encoded) + sum(size_field)
        return b"".join(
            (
                encoded,
                template[len(encoded) : 124],
                size_field,
                template[136:148],
                b"%06o\0 " % checksum,
                template[156:],
            )
        )
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    """Zero bytes that pad member data of `size` bytes to a whole block."""
    return b"\0" * (-size % BLOCK)


def end_of_archive(written: int) -> bytes:
    """The two zero blocks that end an archive, padded to a whole record like tar(1) writes."""
    total = written + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-total % RECORD))
