"""Parse return-code and SLR request-code captures from Cisco devices.

A return code comes from `license smart authorization return local offline`; a request code from
`license smart reservation request local` (classic SLR), in its two known layouts. Codes are
opaque to airgap: only their shape is checked, never their content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from airgap.errors import InputError
from airgap.inside.parsers._text import (
    UDI_FIELDS_RE,
    match_prompt,
    read_capture,
    terminal_lines,
    where,
)

__all__ = [
    "REQUEST_CODE_RE",
    "RETURN_CODE_RE",
    "CaptureKind",
    "ReturnCode",
    "SlrRequest",
    "capture_kind",
    "parse_return_capture",
    "parse_return_file",
    "parse_slr_request",
    "parse_slr_request_file",
    "slr_request_udi",
]

# `C` + 8 dash-separated groups of 6 (the `C` is part of the first) + 1 group of 3.
RETURN_CODE_RE = re.compile(r"C[A-Za-z0-9]{5}(?:-[A-Za-z0-9]{6}){7}-[A-Za-z0-9]{3}")
# Classic SLR request code: `CB-Z<PID>:<SN>-<token>-<2 hex check chars>`.
_SLR_CLASSIC_RE = re.compile(
    r"(?P<code>[A-Z]{1,3}-Z(?P<pid>[A-Za-z0-9][A-Za-z0-9/+._-]*?):(?P<sn>[A-Za-z0-9]+)"
    r"-[A-Za-z0-9]+-[0-9A-Fa-f]{2})"
)
# Any request code, whatever its layout: one opaque token of safe characters.
REQUEST_CODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:/+=_.-]{7,511}")
_UDI_LINE_RE = re.compile(r"^UDI\s*:\s*(?P<rest>.*)$")
_RETURN_LINE_RE = re.compile(r"^Return code\s*:\s*(?P<code>\S*)\s*$", re.IGNORECASE)
_REQUEST_LINE_RE = re.compile(r"^Request code\s*:\s*(?P<code>\S*)\s*$", re.IGNORECASE)
_REQUEST_INTRO_RE = re.compile(r"^Enter this request code", re.IGNORECASE)
_RETURN_INTRO_RE = re.compile(r"^Enter this return code", re.IGNORECASE)

CaptureKind = Literal["return", "slr_request", "other"]


@dataclass(frozen=True)
class ReturnCode:
    """A return code with the device it releases; hostname only if a prompt named it."""

    pid: str
    sn: str
    code: str
    hostname: str | None
    line: int = 0  # 1-based line of the code, for error messages and plan origins


@dataclass(frozen=True)
class SlrRequest:
    """An SLR reservation request code; pid/sn when the capture or the code names the device."""

    code: str
    pid: str | None
    sn: str | None
    line: int = 0  # 1-based line of the code


def capture_kind(text: str) -> CaptureKind:
    """Guess what a device capture holds, without validating it.

    Used by directory intake to pass over the other kinds of capture that `airgap emulate
    device` and operators keep in the same folder. Anything not recognised is "other".
    """
    for _, line in terminal_lines(text):
        if _RETURN_LINE_RE.match(line) or _RETURN_INTRO_RE.match(line):
            return "return"
        if _REQUEST_LINE_RE.match(line) or _REQUEST_INTRO_RE.match(line):
            return "slr_request"
    return "other"


def _first_host(lines: list[tuple[int, str]]) -> str | None:
    for _, line in lines:
        prompt = match_prompt(line)
        if prompt is not None:
            return prompt[0]
    return None


def _udi(lines: list[tuple[int, str]], *, source: str) -> tuple[str, str, int] | None:
    """The one `UDI: PID:…,SN:…` of a capture, or None; two different ones are an error."""
    found: tuple[str, str, int] | None = None
    for number, line in lines:
        m = _UDI_LINE_RE.match(line)
        if m is None:
            continue
        fields = UDI_FIELDS_RE.fullmatch(m.group("rest").strip())
        if fields is None:
            raise InputError(f"{where(source, number)}: expected 'UDI: PID:…,SN:…', got {line!r}")
        pid, sn = fields.group("pid"), fields.group("sn")
        if found is not None and (found[0], found[1]) != (pid, sn):
            raise InputError(
                f"{where(source, number)}: a second UDI {pid}:{sn} "
                f"(line {found[2]} has {found[0]}:{found[1]}); one device per capture"
            )
        found = found or (pid, sn, number)
    return found


def _next_value(lines: list[tuple[int, str]], index: int) -> tuple[int, str] | None:
    """The first non-blank, non-prompt line after `lines[index]`."""
    for number, line in lines[index + 1 :]:
        if not line:
            continue
        if match_prompt(line) is not None:
            return None
        return number, line
    return None


def parse_return_capture(text: str, *, source: str = "<capture>") -> ReturnCode:
    """Parse a `license smart authorization return` capture.

    Args:
        text: the capture, with or without prompts, indentation and CRLF.
        source: the name used in error messages.

    Raises:
        InputError: no return code, a malformed code, no UDI, or more than one device.

    Returns:
        The code and the device it belongs to.
    """
    lines = terminal_lines(text)
    code: tuple[int, str] | None = None
    for index, (number, line) in enumerate(lines):
        m = _RETURN_LINE_RE.match(line)
        if m is None:
            continue
        value: tuple[int, str] | None = (number, m.group("code"))
        if not m.group("code"):
            # Some trains print the label and the code on separate lines.
            value = _next_value(lines, index)
            if value is None:
                raise InputError(f"{where(source, number)}: 'Return code:' without a code")
        assert value is not None
        if not RETURN_CODE_RE.fullmatch(value[1]):
            raise InputError(
                f"{where(source, value[0])}: {value[1]!r} is not a return code "
                "(expected C + 8 groups of 6 + 1 of 3, dash separated)"
            )
        if code is not None and code[1] != value[1]:
            raise InputError(
                f"{where(source, value[0])}: a second return code (line {code[0]} has one); "
                "one code per capture"
            )
        code = code or value
    if code is None:
        # No label: accept a bare code on a line of its own, as some guides show it.
        for number, line in lines:
            if RETURN_CODE_RE.fullmatch(line):
                code = (number, line)
                break
    if code is None:
        raise InputError(
            f"{where(source, 1)}: no 'Return code: …' found",
            hint="Capture the output of `license smart authorization return local offline`.",
        )
    udi = _udi(lines, source=source)
    if udi is None:
        raise InputError(
            f"{where(source, code[0])}: the return code has no 'UDI: PID:…,SN:…' line, "
            "so the device is unknown"
        )
    return ReturnCode(udi[0], udi[1], code[1], _first_host(lines), code[0])


def slr_request_udi(code: str) -> tuple[str, str] | None:
    """The (pid, sn) embedded in a classic SLR request code, or None for other layouts."""
    m = _SLR_CLASSIC_RE.fullmatch(code)
    return (m.group("pid"), m.group("sn")) if m else None


def parse_slr_request(text: str, *, source: str = "<capture>") -> SlrRequest:
    """Parse a `license smart reservation request local` capture (or a bare request code).

    Args:
        text: the capture: the classic two-line message and code, the 17.x variant with
            `UDI:` and `Request code:` lines, or just the code.
        source: the name used in error messages.

    Raises:
        InputError: no request code, or a UDI line that contradicts the code.

    Returns:
        The code, and the device when the capture or the code's classic shape names it.
    """
    lines = terminal_lines(text)
    code: tuple[int, str] | None = None
    for index, (number, line) in enumerate(lines):
        m = _REQUEST_LINE_RE.match(line)
        if m is not None:
            code = (number, m.group("code")) if m.group("code") else _next_value(lines, index)
            if code is None:
                raise InputError(f"{where(source, number)}: 'Request code:' without a code")
            break
    if code is None:
        for number, line in lines:
            if _SLR_CLASSIC_RE.fullmatch(line):
                code = (number, line)
                break
    if code is None:
        for index, (number, line) in enumerate(lines):
            if _REQUEST_INTRO_RE.match(line):
                code = _next_value(lines, index)
                if code is None:
                    raise InputError(f"{where(source, number)}: no request code after {line!r}")
                break
    if code is None:
        # A file holding nothing but the code.
        content = [(n, line) for n, line in lines if line]
        if len(content) == 1 and match_prompt(content[0][1]) is None:
            code = content[0]
    if code is None:
        raise InputError(
            f"{where(source, 1)}: no SLR request code found",
            hint="Capture the output of `license smart reservation request local`.",
        )
    number, value = code
    if not REQUEST_CODE_RE.fullmatch(value):
        raise InputError(f"{where(source, number)}: {value!r} is not a request code")
    embedded = slr_request_udi(value)
    udi = _udi(lines, source=source)
    if udi is not None and embedded is not None and embedded != udi[:2]:
        raise InputError(
            f"{where(source, number)}: the request code names {embedded[0]}:{embedded[1]} "
            f"but line {udi[2]} has UDI {udi[0]}:{udi[1]}"
        )
    pid, sn = udi[:2] if udi is not None else embedded if embedded is not None else (None, None)
    return SlrRequest(value, pid, sn, number)


def parse_return_file(path: Path) -> ReturnCode:
    """Read and parse a return-code capture file.

    Raises:
        InputError: the file is unreadable, not text, or not a return-code capture.
    """
    return parse_return_capture(read_capture(path), source=str(path))


def parse_slr_request_file(path: Path) -> SlrRequest:
    """Read and parse an SLR request-code capture file.

    Raises:
        InputError: the file is unreadable, not text, or holds no request code.
    """
    return parse_slr_request(read_capture(path), source=str(path))
