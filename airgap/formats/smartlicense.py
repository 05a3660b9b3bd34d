"""Smart Licensing files a device imports: RUM acknowledgements and authorization codes.

Read to check that a file is what it claims and which device it is for (the portal import,
`inside apply`); never to change it. Shared by both sides of the gap.
"""

from __future__ import annotations

import re
from typing import Any, Final

from airgap import fastjson
from airgap.errors import InputError

__all__ = ["ack_report_ids", "ack_udis", "authorization_udi", "is_ack"]

_AUTH_UDI: Final = re.compile(r"<udi>\s*P:([^,<\s]+),\s*S:([^<\s]+)\s*</udi>")
_ACK_DATA: Final = re.compile(
    r"<smartLicenseRumAck>\s*<data>\s*(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))\s*</data>", re.S
)


def is_ack(data: bytes) -> bool:
    """Whether the text is a RUM acknowledgement (`<smartLicenseRumAck><data>…`)."""
    return _ACK_DATA.search(data.decode("utf-8", "replace")) is not None


def _ack_entries(ack: bytes) -> list[dict[str, Any]]:
    match = _ACK_DATA.search(ack.decode("utf-8", "replace"))
    if match is None:
        raise InputError("not an ACK (no <smartLicenseRumAck><data>)")
    text = match.group(1) if match.group(1) is not None else match.group(2)
    try:
        value = fastjson.loads(text)
    except ValueError as exc:
        raise InputError(f"the ACK's data is not JSON ({exc})") from exc
    entries = value if isinstance(value, list) else [value]
    return [entry for entry in entries if isinstance(entry, dict)]


def ack_udis(ack: bytes) -> list[tuple[str, str]]:
    """The devices (PID, SN) an ACK acknowledges, from its `<data>` JSON's `sudi` entries.

    Raises:
        InputError: the text is not an ACK, or its data is not JSON.
    """
    found: list[tuple[str, str]] = []
    for entry in _ack_entries(ack):
        sudi = entry.get("sudi")
        if isinstance(sudi, dict):
            pid, sn = sudi.get("udi_pid"), sudi.get("udi_serial_number")
            if isinstance(pid, str) and isinstance(sn, str):
                found.append((pid, sn))
    return found


def ack_report_ids(ack: bytes) -> frozenset[int]:
    """The report ids an ACK acknowledges (`report_acks[].report_id`).

    Raises:
        InputError: the text is not an ACK, or its data is not JSON.
    """
    ids: set[int] = set()
    for entry in _ack_entries(ack):
        for report in entry.get("report_acks") or []:
            value = report.get("report_id") if isinstance(report, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                ids.add(value)
            elif isinstance(value, str) and value.isdigit():
                ids.add(int(value))
    return frozenset(ids)


def authorization_udi(code: bytes) -> tuple[str, str] | None:
    """The device (PID, SN) an authorization code is for (`<udi>P:PID,S:SN</udi>`), or None
    when the text names none (then it is not an authorization code)."""
    match = _AUTH_UDI.search(code.decode("utf-8", "replace"))
    return (match.group(1), match.group(2)) if match else None
