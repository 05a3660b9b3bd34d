"""Parse `show license udi` captures into one record per device UDI.

Understands the IOS-XE 17.x single line (`UDI: PID:…,SN:…`), the HA/stack list that follows it
(`HA UDI List:` then `Active:`/`Standby:`/`Member:` lines), the older `SlotID PID SN UDI` table
(and the IOS 15 `Device#` variant), and terminal logs around them: prompts, `terminal length 0`,
`--More--` debris, backspaces, CRLF and tabs. Output of other commands in the same log is skipped.
It does not read `show inventory` or `show license status`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from airgap.errors import InputError
from airgap.inside.parsers._text import (
    PID_RE,
    SN_RE,
    UDI_FIELDS_RE,
    is_command,
    is_neutral_command,
    match_prompt,
    read_capture,
    terminal_lines,
    where,
)

__all__ = ["UdiRecord", "parse_plain_udi_capture", "parse_udi_capture", "parse_udi_file"]


@dataclass(frozen=True)
class UdiRecord:
    """One device UDI found in a capture.

    `role` is `Active`/`Standby`/`Member` (as the device wrote it) for HA lists and stack tables,
    None for a standalone device. `line` is the 1-based line the UDI was read from.
    """

    hostname: str | None
    pid: str
    sn: str
    role: str | None
    line: int


_UDI_LINE_RE = re.compile(r"^UDI\s*:\s*(?P<rest>.*)$")
_HA_HEADER_RE = re.compile(r"^HA\s+UDI\s+List\s*:?$", re.IGNORECASE)
# The role ends in a letter or digit (the lazy `[…]*?\s*` it replaces was quadratic in spaces).
_ROLE_LINE_RE = re.compile(
    r"^(?P<role>[A-Za-z](?:[A-Za-z0-9 ]*[A-Za-z0-9])?)\s*:\s*(?P<rest>PID\s*:.*)$"
)
_TABLE_HEADER_RE = re.compile(r"^(?:SlotID|Device\s*#?)\s+PID\s+SN\s+UDI$", re.IGNORECASE)
_TABLE_ROW_RE = re.compile(
    r"^(?P<star>\*)?\s*(?:(?P<slot>\d+)\s+)?(?P<pid>\S+)\s+(?P<sn>\S+)\s+(?P<udi>\S+)$"
)
_RULE_RE = re.compile(r"^-{3,}$")
# Text that belongs to `license smart authorization return` or an SLR request, which also print
# a `UDI:` line: reading those as a device list would reserve licences for the wrong reason.
_OTHER_CAPTURE_RE = re.compile(
    r"^(?:Return code\s*:|Request code\s*:|Enter this (?:return|request) code)", re.IGNORECASE
)

_SHOW_LICENSE_UDI = (("show", 2), ("license", 3), ("udi", 3))

# The one shape most captures have (one standalone device, as `airgap emulate device` and a
# plain `show license udi` session write it), matched in one go. Every piece is a strict subset
# of what the general parser accepts, and tests hold the two to the same answers.
_HOST = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_PLAIN_CAPTURE_RE = re.compile(
    r"(?:[ \t]*\r?\n)*"
    rf"(?:(?P<h1>{_HOST})#terminal length 0[ \t]*\r?\n)?"
    rf"(?:(?P<h2>{_HOST})#show license udi[ \t]*\r?\n)?"
    r"UDI: PID:(?P<pid>[A-Za-z0-9][A-Za-z0-9/+._-]{0,63}),"
    r"SN:(?P<sn>[A-Za-z0-9][A-Za-z0-9._-]{0,63})"
    r"[ \t]*\r?\n"
    r"(?:[ \t]*\r?\n)*"
    rf"(?:(?P<h3>{_HOST})#[ \t]*(?:\r?\n(?:[ \t]*\r?\n)*)?)?"
)


def _udi_fields(text: str, *, source: str, line: int, expected: str) -> tuple[str, str]:
    """Split `PID:…,SN:…` into checked (pid, sn)."""
    m = UDI_FIELDS_RE.fullmatch(text.strip())
    if m is None:
        raise InputError(f"{where(source, line)}: expected '{expected}', got {text.strip()!r}")
    pid, sn = m.group("pid"), m.group("sn")
    _check_pid_sn(pid, sn, source=source, line=line)
    return pid, sn


def _check_pid_sn(pid: str, sn: str, *, source: str, line: int) -> None:
    if not PID_RE.match(pid):
        raise InputError(f"{where(source, line)}: {pid!r} is not a product id")
    if not SN_RE.match(sn):
        raise InputError(f"{where(source, line)}: {sn!r} is not a serial number")


@dataclass
class _Found:
    pid: str
    sn: str
    role: str | None
    line: int
    host: str | None
    from_list: bool  # read from an HA list or a table, as opposed to a lone `UDI:` line
    in_table: bool  # a table row; its role is settled once the whole table is known


def parse_plain_udi_capture(text: str) -> list[UdiRecord] | None:
    """The record of a capture in the most common shape, or None for any other shape.

    The common shape is one `UDI: PID:…,SN:…` line, optionally after `terminal length 0` and
    `show license udi` prompts and before a last prompt, all of one hostname. For such a text
    the answer is exactly `parse_udi_capture`'s, at a fraction of the cost; None says "use
    `parse_udi_capture`", never "not a capture".
    """
    m = _PLAIN_CAPTURE_RE.fullmatch(text)
    if m is None:
        return None
    hosts = {h for h in m.group("h1", "h2", "h3") if h is not None}
    if len(hosts) > 1:
        return None  # a prompt that changed hostname: the general parser decides
    line = text.count("\n", 0, m.start("pid")) + 1
    return [UdiRecord(hosts.pop() if hosts else None, m.group("pid"), m.group("sn"), None, line)]


def parse_udi_capture(text: str, *, source: str = "<capture>") -> list[UdiRecord]:
    """Parse the text of a `show license udi` capture.

    Args:
        text: the capture, possibly a whole terminal log.
        source: the name used in error messages and nowhere else.

    Raises:
        InputError: a UDI line or table row is malformed, the text is another command's
            capture (return code, SLR request), or no UDI is found at all.

    Returns:
        One record per UDI, in the order of the capture. The lone `UDI:` line that precedes an HA
        list repeats the active unit and is folded into the list's `Active` record; a UDI repeated
        in the same capture for the same hostname is reported once.
    """
    plain = parse_plain_udi_capture(text)
    return plain if plain is not None else _parse_any_shape(text, source=source)


def _parse_any_shape(text: str, *, source: str) -> list[UdiRecord]:
    found: list[_Found] = []
    host: str | None = None
    first_host: str | None = None
    # "udi" after a `show license udi` prompt, "other" after any other command whose output
    # must be skipped, "none" while no prompt has been seen (a bare capture).
    context = "none"
    other_command: tuple[int, str] | None = None  # the first command whose output was skipped
    in_table = False  # inside a `SlotID PID SN UDI` table, which ends at a blank line

    for number, line in terminal_lines(text):
        if not line:
            in_table = False
            continue
        # The IOS 15 table header `Device#  PID …` looks like a prompt, so it is tested first.
        if context != "other" and _TABLE_HEADER_RE.match(line):
            in_table = True
            continue
        prompt = match_prompt(line)
        if prompt is not None:
            host, cmd = prompt
            first_host = first_host or host
            in_table = False
            if is_command(cmd, *_SHOW_LICENSE_UDI):
                context = "udi"
            elif not is_neutral_command(cmd):
                context = "other"
                other_command = other_command or (number, cmd)
            continue
        if context == "other":
            continue
        if _RULE_RE.match(line):
            continue
        if in_table:
            found.append(_table_row(line, host, source=source, number=number))
            continue
        udi_line = _UDI_LINE_RE.match(line)
        if udi_line is not None:
            pid, sn = _udi_fields(
                udi_line.group("rest"), source=source, line=number, expected="UDI: PID:…,SN:…"
            )
            found.append(_Found(pid, sn, None, number, host, from_list=False, in_table=False))
            continue
        if _HA_HEADER_RE.match(line):
            continue  # the role lines that follow are recognised on their own
        role_line = _ROLE_LINE_RE.match(line)
        if role_line is not None:
            pid, sn = _udi_fields(
                role_line.group("rest"), source=source, line=number, expected="PID:…,SN:…"
            )
            role = role_line.group("role")
            found.append(_Found(pid, sn, role, number, host, from_list=True, in_table=False))
            continue
        if "PID:" in line or "PID :" in line:
            raise InputError(
                f"{where(source, number)}: expected 'PID:…,SN:…', got {line!r}",
                hint="Is this a complete `show license udi` capture?",
            )
        if _OTHER_CAPTURE_RE.match(line):
            raise InputError(
                f"{where(source, number)}: this is a return-code or SLR request capture, "
                "not `show license udi`",
                hint="Put return captures in the --returns directory.",
            )
        # Anything else (banners, `terminal length 0` echoed without a prompt, PuTTY log
        # headers) carries no UDI and is skipped.

    if not found and other_command is not None:
        raise InputError(
            f"{where(source, other_command[0])}: this capture holds `{other_command[1]}`, "
            "not `show license udi`",
            hint="Capture the output of `show license udi` on the device.",
        )
    if not found:
        raise InputError(
            f"{where(source, 1)}: no 'UDI: PID:…,SN:…' line or UDI table found",
            hint="Capture the output of `show license udi` on the device.",
        )
    return _records(found, first_host)


def _table_row(line: str, host: str | None, *, source: str, number: int) -> _Found:
    m = _TABLE_ROW_RE.match(line)
    if m is None:
        raise InputError(
            f"{where(source, number)}: expected a 'SlotID PID SN UDI' table row, got {line!r}"
        )
    pid, sn, udi = m.group("pid"), m.group("sn"), m.group("udi")
    _check_pid_sn(pid, sn, source=source, line=number)
    # The UDI column repeats PID:SN; a different value means the columns were misread.
    if udi != f"{pid}:{sn}":
        raise InputError(
            f"{where(source, number)}: UDI column {udi!r} does not match PID {pid!r} and SN {sn!r}"
        )
    role = "Active" if m.group("star") else None
    return _Found(pid, sn, role, number, host, from_list=True, in_table=True)


def _records(found: list[_Found], first_host: str | None) -> list[UdiRecord]:
    # A capture with only a trailing prompt names its host after the output.
    for f in found:
        if f.host is None:
            f.host = first_host
    in_lists = {(f.pid, f.sn, f.host) for f in found if f.from_list}
    # `*` marks the active unit of a stack, so the other rows are members; a table without any
    # `*` says nothing about roles and its rows keep none.
    stacked = any(f.role == "Active" for f in found if f.in_table)
    records: list[UdiRecord] = []
    seen: set[tuple[str, str, str | None]] = set()
    for f in found:
        key = (f.pid, f.sn, f.host)
        if not f.from_list and key in in_lists:
            continue  # the lone `UDI:` line repeating the active unit of the HA list
        if key in seen:
            continue
        seen.add(key)
        role = f.role
        if f.in_table and stacked and role is None:
            role = "Member"
        records.append(UdiRecord(f.host, f.pid, f.sn, role, f.line))
    return records


def parse_udi_file(path: Path) -> list[UdiRecord]:
    """Read and parse a `show license udi` capture file.

    Args:
        path: the capture; its path names it in error messages.

    Raises:
        InputError: the file is missing, empty, binary, not UTF-8, or not a UDI capture.

    Returns:
        As `parse_udi_capture`.
    """
    return parse_udi_capture(read_capture(path), source=str(path))
