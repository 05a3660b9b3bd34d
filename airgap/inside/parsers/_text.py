"""Shared helpers for reading terminal captures: decoding, cleaning and prompt detection.

Internal and unstable: the public parsers in this package are the interface. Nothing here knows
about a particular command's output; that is left to `udi`, `codes`, `rum` and `f5`.
"""

from __future__ import annotations

import re

from airgap.formats.text import (
    HOSTNAME_RE,
    PID_RE,
    SN_RE,
    decode_capture,
    read_bytes,
    read_capture,
    where,
)

__all__ = [
    "HOSTNAME_RE",
    "PID_RE",
    "SN_RE",
    "UDI_FIELDS_RE",
    "decode_capture",
    "is_command",
    "is_neutral_command",
    "match_prompt",
    "read_bytes",
    "read_capture",
    "terminal_lines",
    "where",
]

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


# `PID:<pid>,SN:<sn>` as `show license udi` prints it; extra `,KEY:value` fields are tolerated
# because some trains append a VID.
UDI_FIELDS_RE = re.compile(
    r"PID\s*:\s*(?P<pid>[^,\s]+)\s*,\s*SN\s*:\s*(?P<sn>[^,\s]+)(?:\s*,\s*[A-Za-z]+\s*:\s*[^,\s]*)*$"
)


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
