"""A strict, streaming POSIX tar reader and a deterministic tar writer.

The reader never creates files: it yields headers and lets the caller pull each member's bytes
through a fixed buffer, so hashing a large bundle keeps memory flat. It accepts only what
`airgap-bundle/1` allows (regular files, directories, PAX path/size records) and refuses every
other member type. Name rules live in the bundle reader, not here.
"""

from __future__ import annotations

import functools
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from airgap.errors import NotABundle, SizeLimit, UnsafeMember

BLOCK = 512
RECORD = 20 * BLOCK
CHUNK = 1 << 20  # bytes per read while streaming member data
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


@dataclass(frozen=True)
class Entry:
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


class TarReader:
    """Iterates the members of a tar stream; read each member's data before the next header."""

    def __init__(self, source: CountingReader) -> None:
        self._source = source
        self._pending = 0  # data + padding bytes of the current member not yet consumed
        self._data_left = 0  # data bytes of the current member not yet consumed
        self._buffer = bytearray(CHUNK)

    def __iter__(self) -> Iterator[Entry]:
        pax: dict[str, str] = {}
        while True:
            self._skip_pending()
            header = self._source.read(BLOCK)
            if not header:
                raise NotABundle("the file ends without the tar end-of-archive marker")
            if len(header) < BLOCK:
                header += _read_exact(self._source, BLOCK - len(header), what="a tar header")
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

    def stream(self, sink: Callable[[memoryview], object]) -> None:
        """Feed the current member's data, chunk by chunk, to `sink` (one pass, flat memory)."""
        view = memoryview(self._buffer)
        while self._data_left > 0:
            want = min(self._data_left, CHUNK)
            got = self._source.readinto(view[:want])
            if got <= 0:
                raise NotABundle("the file is truncated inside a member")
            sink(view[:got])
            self._data_left -= got
            self._pending -= got

    def read_all(self, size: int) -> bytes:
        """Read the current member's data into memory (callers bound `size` first)."""
        self._data_left = size
        self._pending = size + (-size % BLOCK)
        parts: list[bytes] = []
        self.stream(lambda chunk: parts.append(bytes(chunk)))
        return b"".join(parts)

    def _skip_pending(self) -> None:
        if self._data_left:
            self.stream(lambda chunk: None)
        if self._pending:
            _read_exact(self._source, self._pending, what="member padding")
            self._pending = 0

    def _check_trailer(self) -> None:
        # Anything after the end-of-archive marker other than zero padding could smuggle data
        # past a checker that stops at the marker; refuse it.
        while True:
            rest = self._source.read(CHUNK)
            if not rest:
                return
            if rest.count(0) != len(rest):
                raise NotABundle("data follows the tar end-of-archive marker")


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
