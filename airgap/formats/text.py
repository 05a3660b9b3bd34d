"""Reading text files operators carry: bytes, decoding, and the shapes of UDI fields.

Shared by both sides of the gap (the inside reads captures, the outside re-reads the RUM reports
it was sent), so it lives outside `airgap.inside` and `airgap.outside`.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

from airgap.errors import InputError

PID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/+._-]{0,63}$")
SN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_READ_CHUNK = 64 * 1024  # below malloc's mmap threshold, so small files cost one small buffer
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)


def decode_capture(data: bytes, *, source: str) -> str:
    """Decode the bytes of a text capture, refusing what is not text.

    Args:
        data: the raw file content.
        source: the name used in error messages.

    Raises:
        InputError: the data is empty, binary (holds a NUL byte) or not valid UTF-8.

    Returns:
        The text, without a byte-order mark.
    """
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Windows terminal programs save logs as UTF-16 with a BOM; everything else is UTF-8.
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}:1: not valid UTF-16 text ({e.reason})") from e
    if not data or data.isspace():
        raise InputError(
            f"{source}:1: the file is empty", hint="Capture the command's output again."
        )
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(f"{source}:{line}: binary data (NUL byte at offset {nul}), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{source}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})",
            hint="Save the capture as UTF-8 text.",
        ) from e


def read_capture(path: Path) -> str:
    """Read and decode a text file, mapping OS errors to InputError.

    Raises:
        InputError: the file is missing, unreadable, empty, binary or not UTF-8.
    """
    return decode_capture(read_bytes(path), source=str(path))


def read_bytes(path: Path | str) -> bytes:
    """Read a whole input file.

    Raises:
        InputError: the file is missing or cannot be read.
    """
    # os.open/os.read rather than open(): no buffered file object per file, which halves the
    # cost of reading the 20,000 small captures of a large pack.
    chunks: list[bytes] = []
    try:
        fd = os.open(path, _READ_FLAGS)
        try:
            while chunk := os.read(fd, _READ_CHUNK):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{path}: is a directory, not a file") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def where(source: str, line: int) -> str:
    """`source:line`, the prefix of every located error message."""
    return f"{source}:{line}"
