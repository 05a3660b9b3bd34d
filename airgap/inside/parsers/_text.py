"""Shared helpers for reading terminal captures: decoding, cleaning and prompt detection.

Internal and unstable: the public parsers in this package are the interface. Nothing here knows
about a particular command's output; that is left to `udi`, `codes`, `rum` and `f5`.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

from airgap.errors import InputError

# A device prompt: `sw-core-01#`, `rtr>`, `sw(config)#`, optionally followed by the typed command.
# Hostnames hold no spaces or colons, so output lines such as `UDI: PID:…` never match.
_PROMPT_RE = re.compile(
    r"^(?P<host>[A-Za-z0-9][A-Za-z0-9._-]{0,62})(?:\([A-Za-z0-9-]*\))?[#>](?P<cmd>.*)$"
)
# Pagination debris from IOS (` --More-- `), NX-OS/ASA (`<--- More --->`) and ANSI colour codes.
# `(?<!-)`: a match starts where a run of dashes does; without it a long rule of dashes took
# quadratic time (every dash a new start that scans the whole run).
_MORE_RE = re.compile(r"<-+\s*More\s*-+>|(?<!-)-+\s*More\s*-+", re.IGNORECASE)
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

PID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/+._-]{0,63}$")
SN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_READ_CHUNK = 64 * 1024  # below malloc's mmap threshold, so small files cost one small buffer
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

# `PID:<pid>,SN:<sn>` as `show license udi` prints it; extra `,KEY:value` fields are tolerated
# because some trains append a VID.
UDI_FIELDS_RE = re.compile(
    r"PID\s*:\s*(?P<pid>[^,\s]+)\s*,\s*SN\s*:\s*(?P<sn>[^,\s]+)(?:\s*,\s*[A-Za-z]+\s*:\s*[^,\s]*)*$"
)


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


def _render(line: str) -> str:
    """What a terminal shows for one line: backspaces erase, a bare CR returns to column 0."""
    if "\b" not in line and "\r" not in line:
        return line
    cells: list[str] = []
    col = 0
    for ch in line:
        if ch == "\b":
            col = max(0, col - 1)
        elif ch == "\r":
            col = 0
        else:
            if col < len(cells):
                cells[col] = ch
            else:
                cells.append(ch)
            col += 1
    return "".join(cells)


def terminal_lines(text: str) -> list[tuple[int, str]]:
    """Split a capture into (line number, cleaned text) pairs.

    Cleaning renders backspaces and carriage returns the way a terminal would, drops `--More--`
    prompts and ANSI escapes, turns tabs into spaces and strips surrounding whitespace. Line
    numbers count `\\n` in the original text, so they match what an editor shows.
    """
    out: list[tuple[int, str]] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if "\x1b" in line:
            line = _ANSI_RE.sub("", line)
        line = _render(line)
        if "-" in line:
            line = _MORE_RE.sub(" ", line)
        out.append((number, line.replace("\t", " ").strip()))
    return out


def match_prompt(line: str) -> tuple[str, str] | None:
    """Split a prompt line into (hostname, typed command), or None if it is not a prompt."""
    m = _PROMPT_RE.match(line)
    if m is None:
        return None
    return m.group("host"), m.group("cmd").strip()


def is_command(cmd: str, *words: tuple[str, int]) -> bool:
    """Whether `cmd` is the IOS command `words`, each word abbreviated to at least n letters.

    Output filters (`| include …`) are ignored, as IOS applies them after the command.
    """
    tokens = cmd.split("|", 1)[0].lower().split()
    if len(tokens) != len(words):
        return False
    return all(
        len(tok) >= least and word.startswith(tok)
        for tok, (word, least) in zip(tokens, words, strict=True)
    )


def is_neutral_command(cmd: str) -> bool:
    """Session housekeeping (`terminal length 0`, `enable`) that prints nothing of interest."""
    tokens = cmd.lower().split()
    if not tokens:
        return True
    first = tokens[0]
    return (len(first) >= 3 and "terminal".startswith(first)) or first in ("en", "ena", "enable")


def where(source: str, line: int) -> str:
    """`source:line`, the prefix of every located error message."""
    return f"{source}:{line}"
