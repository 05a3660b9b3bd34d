"""Read RUM usage-report files (`license smart save usage … file flash:rum.xml`).

A RUM file is `<smartLicense>` holding an optional `<smartLicenseSystemInfo>` and one or more
`<RUMReport>` elements, each a CDATA JSON object `{"payload": "<JSON as a string>", "header",
"signature"}`. Reports are also passed around without the wrapper: one or more `<RUMReport>`
elements (with or without a `<smartLicenseSystemInfo>` beside them) at the top of the file, as a
report saved from a C9800-CL is often published, its CDATA a pretty-printed JSON object. Both
shapes are read the same way. The payload string is signed by the device, so it is kept exactly
as the device wrote it (the value of the "payload" key after decoding the outer JSON) and never
re-serialized.

The file is scanned with string searches rather than an XML parser: it is faster for the 10,000
small files of a large pack, and the format is machine-written with no nesting to speak of. This
module does not check report signatures; Cisco does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap import fastjson
from airgap.errors import InputError
from airgap.formats.text import PID_RE, SN_RE, decode_capture, read_bytes, where

__all__ = ["RumFile", "RumReport", "parse_rum_bytes", "parse_rum_file"]


@dataclass(frozen=True)
class RumReport:
    """One signed usage report.

    `payload` is the exact signed string; `signature` the report's signature object
    (`sudi`, `signing_type`, `key`, `value`) as decoded JSON; `udi` the (pid, sn) the report is
    about; `report_id` the device's report id as a decimal string, when it has one.
    """

    payload: str
    signature: dict[str, Any]
    udi: tuple[str, str]
    report_id: str | None


@dataclass(frozen=True)
class RumFile:
    """A parsed RUM file: its reports and the device that wrote it (`path` as given)."""

    path: Path | str
    reports: list[RumReport]
    udi: tuple[str, str]
    hostname: str | None


# The first element may follow an XML declaration, comments and whitespace; it is the
# <smartLicense> wrapper, or (unwrapped) a <RUMReport> or the <smartLicenseSystemInfo> beside
# them. Anything else is not RUM. Each comment is atomic, `(?>…)`: letting `.*?` run on past
# `-->` made a few dozen `<!---->` take exponential time to refuse.
_ROOT_RE = re.compile(
    r"\A\s*(?:<\?xml[^>]*\?>\s*)?(?:(?><!--.*?-->)\s*)*"
    r"<(smartLicense|RUMReport|smartLicenseSystemInfo)(?:\s[^>]*)?>",
    re.S,
)
_DATA_OPEN_RE = re.compile(r"<data(?:\s[^>]*)?>")
_CLOSE_ROOT_RE = re.compile(r"</smartLicense\s*>\s*\Z")
# Unwrapped, the file ends with the last report (or the system info) closed.
_CLOSE_UNWRAPPED_RE = re.compile(r"</(?:RUMReport|smartLicenseSystemInfo)\s*>\s*\Z")
_ENTITY_RE = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|lt|gt|amp|quot|apos);")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
# report_id is a number in both layouts (under asset_identification or meta); nothing else in a
# payload carries that key.
_REPORT_ID_RE = re.compile(r'"report_id"\s*:\s*"?([0-9]+)')
_OPEN = "<RUMReport"
_CLOSE = "</RUMReport>"
_CDATA_OPEN = "<![CDATA["
_CDATA_CLOSE = "]]>"


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _entity(m: re.Match[str]) -> str:
    name = m.group(1)
    if name.startswith("#x"):
        return chr(int(name[2:], 16))
    if name.startswith("#"):
        return chr(int(name[1:]))
    return _ENTITIES[name]


def _element_text(text: str, start: int, end: int, *, source: str, what: str) -> str:
    """The character data of `text[start:end]`: CDATA sections verbatim, other text unescaped.

    The CDATA around the data is uncertain for some trains, so entity-escaped text is read too.
    """
    # The usual content, one CDATA section and nothing around it, is sliced out directly.
    inner_start, inner_end = start + len(_CDATA_OPEN), end - len(_CDATA_CLOSE)
    if (
        inner_start <= inner_end
        and text.startswith(_CDATA_OPEN, start, end)
        and text.endswith(_CDATA_CLOSE, start, end)
        and text.find(_CDATA_CLOSE, inner_start, inner_end) < 0
    ):
        return text[inner_start:inner_end]
    return _element_text_in_parts(text, start, end, source=source, what=what)


def _element_text_in_parts(text: str, start: int, end: int, *, source: str, what: str) -> str:
    parts: list[str] = []
    pos = start
    while pos < end:
        k = text.find(_CDATA_OPEN, pos, end)
        plain = text[pos : end if k < 0 else k]
        if "<" in plain:
            offset = pos + plain.index("<")
            raise InputError(
                f"{where(source, _line_at(text, offset))}: unexpected markup inside {what} "
                "(truncated or not a RUM report?)"
            )
        try:
            parts.append(_ENTITY_RE.sub(_entity, plain) if "&" in plain else plain)
        except (ValueError, OverflowError):  # `&#x110000;` and beyond: no such character
            raise InputError(
                f"{where(source, _line_at(text, pos))}: a character reference in {what} "
                "names no Unicode character"
            ) from None
        if k < 0:
            break
        e = text.find(_CDATA_CLOSE, k + len(_CDATA_OPEN), end)
        if e < 0:
            raise InputError(
                f"{where(source, _line_at(text, k))}: unterminated CDATA in {what} "
                "(truncated file?)"
            )
        parts.append(text[k + len(_CDATA_OPEN) : e])
        pos = e + len(_CDATA_CLOSE)
    return "".join(parts)


def _sudi(value: object) -> tuple[str, str] | None:
    """(udi_pid, udi_serial_number) from a `sudi` object, or None if it is not one."""
    if not isinstance(value, dict):
        return None
    pid, sn = value.get("udi_pid"), value.get("udi_serial_number")
    if isinstance(pid, str) and isinstance(sn, str) and PID_RE.match(pid) and SN_RE.match(sn):
        return pid, sn
    return None


def _report_udi(payload: dict[str, Any]) -> tuple[str, str] | None:
    # Both layouts (v2.0 and the older ISR one) keep the sudi under asset_identification.instance.
    ident = payload.get("asset_identification")
    if isinstance(ident, dict):
        instance = ident.get("instance")
        if isinstance(instance, dict):
            return _sudi(instance.get("sudi"))
    return None


def _report_id(payload: dict[str, Any]) -> str | None:
    # v2.0 keeps report_id in asset_identification, the older layout in meta.
    for section in ("asset_identification", "meta"):
        block = payload.get(section)
        if isinstance(block, dict):
            value = block.get("report_id")
            if isinstance(value, int | str) and not isinstance(value, bool):
                return str(value)
    return None


def _load_json(data: str, *, source: str, line: int, what: str) -> dict[str, Any]:
    try:
        value = fastjson.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or nested too deep
        raise InputError(f"{where(source, line)}: {what} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise InputError(f"{where(source, line)}: {what} is not a JSON object")
    return value


def _system_info(text: str, *, source: str) -> dict[str, Any] | None:
    """The decoded JSON of `<smartLicenseSystemInfo><data>`, or None if the file has none."""
    start = text.find("<smartLicenseSystemInfo")
    if start < 0:
        return None
    open_data = _DATA_OPEN_RE.search(text, start)
    close_data = text.find("</data>", open_data.end()) if open_data is not None else -1
    if open_data is None or close_data < 0:
        raise InputError(
            f"{where(source, _line_at(text, start))}: <smartLicenseSystemInfo> has no complete "
            "<data> element (truncated file?)"
        )
    data = _element_text(text, open_data.end(), close_data, source=source, what="<data>")
    return _load_json(
        data, source=source, line=_line_at(text, start), what="<smartLicenseSystemInfo>"
    )


def _report(
    text: str, start: int, end: int, *, source: str, fallback: tuple[str, str] | None
) -> RumReport:
    content = _element_text(text, start, end, source=source, what="<RUMReport>")
    try:
        outer = fastjson.loads(content)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        line = _line_at(text, start)
        raise InputError(f"{where(source, line)}: <RUMReport> is not valid JSON ({e})") from e
    payload = outer.get("payload") if isinstance(outer, dict) else None
    signature = outer.get("signature") if isinstance(outer, dict) else None
    if not isinstance(payload, str) or not isinstance(signature, dict):
        raise InputError(
            f'{where(source, _line_at(text, start))}: <RUMReport> lacks a "payload" string '
            'or a "signature" object'
        )
    if not payload.isascii():
        try:
            # A lone surrogate escape (\ud800) decodes but can never be sent; refuse it here.
            payload.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(
                f"{where(source, _line_at(text, start))}: the payload holds an invalid character"
            ) from e
    stripped = payload.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise InputError(
            f"{where(source, _line_at(text, start))}: the report payload is not a JSON object"
        )
    # The signing device's sudi sits beside the payload in both layouts; reading it there
    # spares a second JSON parse per report, which is most of the cost of a 10,000-file pack.
    udi = _sudi(signature.get("sudi"))
    report_id: str | None = None
    found = _REPORT_ID_RE.search(payload)
    if found is not None:
        report_id = found.group(1)
    if udi is None:
        inner = _load_json(
            payload, source=source, line=_line_at(text, start), what="the report payload"
        )
        udi = _report_udi(inner) or fallback
        report_id = _report_id(inner)
    if udi is None:
        raise InputError(
            f"{where(source, _line_at(text, start))}: <RUMReport> names no device (no sudi)"
        )
    return RumReport(payload, signature, udi, report_id)


def parse_rum_bytes(data: bytes, *, path: Path | str) -> RumFile:
    """Parse the bytes of a RUM report file.

    Args:
        data: the file's content, exactly as saved from the device.
        path: where it came from; kept in the result and used in error messages.

    Raises:
        InputError: the data is not text, neither a `<smartLicense>` document nor unwrapped
            `<RUMReport>` elements, holds no `<RUMReport>`, or a report is truncated or malformed.

    Returns:
        The reports, the device's UDI (from the system info, else the first report) and its
        hostname (from the system info, if any).
    """
    source = str(path)
    text = decode_capture(data, source=source)
    root = _ROOT_RE.match(text)
    if root is None:
        raise InputError(
            f"{where(source, 1)}: not a RUM report (no <smartLicense> or <RUMReport> element)",
            hint="Save usage on the device with `license smart save usage all file flash:rum.xml`.",
        )
    wrapped = root.group(1) == "smartLicense"
    if wrapped:
        if (
            not text[-64:].rstrip().endswith("</smartLicense>")
            and _CLOSE_ROOT_RE.search(text) is None
        ):
            raise InputError(
                f"{where(source, _line_at(text, len(text.rstrip())))}: no closing </smartLicense> "
                "(truncated file?)"
            )
    elif not text[-64:].rstrip().endswith("</RUMReport>") and (
        _CLOSE_UNWRAPPED_RE.search(text) is None
    ):
        raise InputError(
            f"{where(source, _line_at(text, len(text.rstrip())))}: the file does not end with "
            "a closed </RUMReport> (truncated file?)"
        )

    file_udi: tuple[str, str] | None = None
    hostname: str | None = None
    info = _system_info(text, source=source)
    if info is not None:
        file_udi = _sudi(info.get("sudi"))
        host = info.get("hostname")
        hostname = host if isinstance(host, str) and host else None

    reports: list[RumReport] = []
    pos = 0
    while True:
        i = text.find(_OPEN, pos)
        if i < 0:
            break
        gt = text.find(">", i)
        if gt < 0 or (text[i + len(_OPEN)] not in "> \t\r\n"):
            raise InputError(f"{where(source, _line_at(text, i))}: malformed <RUMReport> tag")
        close = text.find(_CLOSE, gt)
        if close < 0:
            raise InputError(
                f"{where(source, _line_at(text, i))}: <RUMReport> is never closed (truncated file?)"
            )
        nested = text.find(_OPEN, gt, close)
        if nested >= 0:
            raise InputError(
                f"{where(source, _line_at(text, i))}: <RUMReport> is never closed (truncated file?)"
            )
        reports.append(_report(text, gt + 1, close, source=source, fallback=file_udi))
        pos = close + len(_CLOSE)

    if not reports:
        holder = "<smartLicense>" if wrapped else "the file"
        raise InputError(
            f"{where(source, 1)}: not a RUM report ({holder} holds no <RUMReport>)",
            hint="An ACK or authorization file cannot be reported; use the device's rum.xml.",
        )
    udi = file_udi or reports[0].udi
    return RumFile(path, reports, udi, hostname)


def parse_rum_file(path: Path) -> RumFile:
    """Read and parse a RUM report file.

    Args:
        path: the file as saved from the device.

    Raises:
        InputError: the file is missing or unreadable, or as `parse_rum_bytes`.

    Returns:
        As `parse_rum_bytes`.
    """
    return parse_rum_bytes(read_bytes(path), path=path)
