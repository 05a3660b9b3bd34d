"""Parse F5 inputs: BIG-IP MAC addresses, dossiers and registration-key files.

Only shapes are checked; whether a key or dossier is genuine is for F5 and BIG-IQ to decide.
"""

from __future__ import annotations

import re
from pathlib import Path

from airgap.errors import InputError
from airgap.inside.parsers._text import read_capture, where
from airgap.model.devices import normalize_mac

__all__ = [
    "check_addon_key",
    "check_regkey",
    "normalize_mac",
    "parse_dossier",
    "parse_dossier_file",
    "parse_regkey_file",
]

_HEX = "0-9A-Fa-f"
_REGKEY_RE = re.compile(r"[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{7}")
_ADDON_KEY_RE = re.compile(r"[A-Z0-9]{7}-[A-Z0-9]{7}")
_NOT_HEX_RE = re.compile(rf"[^{_HEX}\s]")


def parse_dossier(text: str, *, source: str = "<dossier>") -> str:
    """Read a BIG-IP dossier (the output of `get_dossier`) as one hex string.

    Args:
        text: the dossier; line breaks and other whitespace (from copy and paste) are removed.
        source: the name used in error messages.

    Raises:
        InputError: the text is empty or holds anything but hex digits and whitespace.

    Returns:
        The hex digits, in their original case, without whitespace.
    """
    bad = _NOT_HEX_RE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise InputError(
            f"{where(source, line)}: a dossier is hex digits only; "
            f"found {bad.group()!r} at column {column}",
            hint="Run `get_dossier` on the BIG-IP and copy its whole output.",
        )
    dossier = "".join(text.split())
    if not dossier:
        raise InputError(f"{where(source, 1)}: the dossier is empty")
    return dossier


def parse_dossier_file(path: Path) -> str:
    """Read and parse a dossier file.

    Raises:
        InputError: the file is missing, unreadable, empty, binary or not a hex dossier.
    """
    return parse_dossier(read_capture(path), source=str(path))


def check_regkey(key: str) -> str:
    """Check the shape of a base registration key (5-5-5-5-7); returns it upper-cased.

    Raises:
        InputError: the key does not have that shape.
    """
    value = key.strip().upper()
    if not _REGKEY_RE.fullmatch(value):
        raise InputError(
            f"{key!r} is not a registration key (expected XXXXX-XXXXX-XXXXX-XXXXX-XXXXXXX)"
        )
    return value


def check_addon_key(key: str) -> str:
    """Check the shape of an add-on key (7-7); returns it upper-cased.

    Raises:
        InputError: the key does not have that shape.
    """
    value = key.strip().upper()
    if not _ADDON_KEY_RE.fullmatch(value):
        raise InputError(f"{key!r} is not an add-on key (expected XXXXXXX-XXXXXXX)")
    return value


def parse_regkey_file(text: str, *, source: str = "<regkey>") -> tuple[str, tuple[str, ...]]:
    """Parse a registration-key file: the base key first, then any add-on keys.

    Keys may sit one per line or be separated by commas or spaces; blank lines and `#` comments
    are skipped.

    Args:
        text: the file's content.
        source: the name used in error messages.

    Raises:
        InputError: no base key, a malformed key, or an add-on key listed twice.

    Returns:
        (base key, add-on keys), upper-cased, add-ons in file order.
    """
    base: str | None = None
    add_ons: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        for token in re.split(r"[,\s]+", line):
            if not token:
                continue
            try:
                if base is None:
                    base = check_regkey(token)
                else:
                    key = check_addon_key(token)
                    if key in add_ons:
                        raise InputError(f"add-on key {key} is listed twice")
                    add_ons.append(key)
            except InputError as e:
                raise InputError(f"{where(source, number)}: {e.message}", hint=e.hint) from e
    if base is None:
        raise InputError(f"{where(source, 1)}: no registration key found")
    return base, tuple(add_ons)
