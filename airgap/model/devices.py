"""How a request item names its device: the device key and the canonical MAC address.

Both sides of the gap (and the importer's checks) use these, so a device is the same string
everywhere: `PID:SN` for a Cisco UDI, `AA:BB:CC:DD:EE:FF` for a BIG-IP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airgap.errors import InputError

__all__ = ["device_key", "normalize_mac", "udi_key"]

_HEX = "0-9A-Fa-f"
# aa:bb:cc:dd:ee:ff or aa-bb-…, one separator throughout; groups of 1 or 2 digits because some
# tools drop leading zeros (0:50:56:9a:3c:e1).
_MAC_SEPARATED_RE = re.compile(rf"[{_HEX}]{{1,2}}([:-])(?:[{_HEX}]{{1,2}}\1){{4}}[{_HEX}]{{1,2}}")
_MAC_DOTTED_RE = re.compile(rf"[{_HEX}]{{4}}\.[{_HEX}]{{4}}\.[{_HEX}]{{4}}")
_MAC_BARE_RE = re.compile(rf"[{_HEX}]{{12}}")


def normalize_mac(s: str) -> str:
    """Normalize a MAC address written in any usual notation to `AA:BB:CC:DD:EE:FF`.

    Accepts `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF`, `aabb.ccdd.eeff` and `aabbccddeeff`, in any
    case. Only the shape is checked: multicast or locally administered addresses pass.

    Args:
        s: the address as written.

    Raises:
        InputError: `s` is not a MAC address in one of those notations.

    Returns:
        The canonical form.
    """
    text = s.strip()
    if _MAC_SEPARATED_RE.fullmatch(text):
        digits = "".join(part.zfill(2) for part in re.split(r"[:-]", text))
    elif _MAC_DOTTED_RE.fullmatch(text):
        digits = text.replace(".", "")
    elif _MAC_BARE_RE.fullmatch(text):
        digits = text
    else:
        raise InputError(
            f"{s!r} is not a MAC address",
            hint="Write it as AA:BB:CC:DD:EE:FF, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or a bare "
            "aabbccddeeff.",
        )
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def udi_key(pid: str, sn: str) -> str:
    """`PID:SN`, the key of a Cisco device."""
    return f"{pid}:{sn}"


def device_key(item: Mapping[str, Any]) -> str | None:
    """What identifies an item's device: `PID:SN` for Cisco, the MAC for BIG-IP, else None.

    Tolerant: an item without a readable device (a query, or a malformed item that the schema
    check will refuse anyway) has no key, rather than an exception here.

    Args:
        item: a request item (or anything with its `device` shape).

    Returns:
        The key, or None.
    """
    device = item.get("device")
    # `dict` first: the ABC check costs more than the rest, once per item of a large request.
    if not isinstance(device, dict | Mapping):
        return None
    udi = device.get("udi")
    if isinstance(udi, dict | Mapping):
        return udi_key(str(udi.get("pid")), str(udi.get("sn")))
    mac = device.get("mac")
    return str(mac) if mac else None
