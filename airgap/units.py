"""Parsing and formatting of the units operators type: durations, sizes and UTC timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from airgap.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "KI": 1024,
    "M": 1000**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "MI": 1024**2,
    "G": 1000**3,
    "GB": 1000**3,
    "GIB": 1024**3,
    "GI": 1024**3,
    "T": 1000**4,
    "TB": 1000**4,
    "TIB": 1024**4,
    "TI": 1024**4,
}
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """Parse `90`, `30s`, `15m`, `2h`, `7d` or `1w` into a timedelta.

    Raises:
        ConfigError: the text is not a duration.
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{what} {text!r} is not a duration", hint="Write it like 90s, 15m, 2h or 7d."
        )
    unit = (match.group(2) or "s").lower()
    return timedelta(seconds=float(match.group(1)) * _DURATION_SECONDS[unit])


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse `4GiB`, `650MiB`, `100MB` or a plain byte count into bytes.

    Raises:
        ConfigError: the text is not a size.
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{what} {text!r} is not a size", hint="Write it like 650MiB or 4GiB.")
    unit = (match.group(2) or "").upper()
    return int(float(match.group(1)) * _SIZE_FACTORS[unit])


def format_size(n: int) -> str:
    """Format a byte count for people, in binary units."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def utc_now() -> datetime:
    """The current time in UTC, truncated to whole seconds as bundles record it."""
    return datetime.now(UTC).replace(microsecond=0)


def format_timestamp(moment: datetime) -> str:
    """Format a UTC datetime as `YYYY-MM-DDTHH:MM:SSZ`."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Parse `YYYY-MM-DDTHH:MM:SSZ` into an aware UTC datetime.

    Raises:
        ValueError: the text is not in that form.
    """
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
