"""Cisco IOS XE devices: one interface over two transports, and what their answers mean.

`airgap.devices.connect.open_iosxe(endpoint, login, transport)` gives an `IosXeTransport`:

- `slp-rest` (`airgap.devices.iosxe_rest`): the Smart Licensing Using Policy REST API that IOS
  XE 17.3.2 and later serve on their HTTPS server, called as Cisco's own sample code calls it;
- `ssh` (`airgap.devices.iosxe_ssh`): the CLI over SSH, files moved by SCP, host keys checked
  against `<home>/known_hosts` before any credential is sent.

Both offer the same operations: `read_udi`, `read_usage`, `import_file`, `status`,
`return_authorization` and `close`. Failures are `airgap.errors` device errors:
`DeviceUnreachable` (with `reason` and `uncertain`: a change whose answer was lost may have
taken effect, so the caller must read `status()` before deciding), `DeviceAuthError`,
`DeviceError` (the device's `% …` text verbatim) and, over SSH, `HostKeyMismatch` /
`HostKeyUnknown`. The transports know nothing of bundles, state.db or the audit log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from airgap.errors import ConfigError

__all__ = [
    "IosXeTransport",
    "LicenseStatus",
    "UdiAuthorization",
    "parse_authorization_output",
    "parse_rum_ids_output",
    "parse_status_output",
    "parse_udi_output",
    "render_capture",
    "safe_file_name",
]


@dataclass(frozen=True)
class UdiAuthorization:
    """What a device says about the authorization code (SLAC) of one of its UDIs."""

    pid: str
    sn: str
    status: str  # e.g. "SMART AUTHORIZATION INSTALLED" or "NOT INSTALLED", as printed
    installed: str | None = None  # when, as the device printed it
    confirmation_code: str | None = None  # "Last Confirmation code", if any

    @property
    def is_installed(self) -> bool:
        """Whether an authorization code is installed for this UDI."""
        return "INSTALLED" in self.status.upper() and "NOT INSTALLED" not in self.status.upper()


@dataclass(frozen=True)
class LicenseStatus:
    """A device's licensing state, as far as the transport can read it.

    `udis` lists the device's (pid, sn), active unit first. `last_ack_received` is the time the
    device printed for its last ACK (None: never, or not shown). `acknowledged_report_ids` is
    None when the transport cannot tell. `authorizations` has one entry per UDI the device
    reported on.
    """

    udis: tuple[tuple[str, str], ...]
    last_ack_received: str | None
    acknowledged_report_ids: frozenset[int] | None
    authorizations: tuple[UdiAuthorization, ...]

    def authorization_for(self, pid: str, sn: str) -> UdiAuthorization | None:
        """The authorization entry of one UDI, if the device reported it."""
        return next((a for a in self.authorizations if (a.pid, a.sn) == (pid, sn)), None)


class IosXeTransport(Protocol):
    """What collect and apply need from an IOS XE device, whatever the transport."""

    def read_udi(self) -> str:
        """The `show license udi` output (over REST: the same layout, built from the reports)."""
        ...

    def read_usage(self, close: bool = True) -> bytes:
        """A usage file `inside pack --rum` reads (closing open reports first if `close`)."""
        ...

    def read_usage_and_udi(self) -> tuple[bytes, str]:
        """`read_usage()` and then `read_udi()`, as one operation the transport may overlap."""
        ...

    def udis(self) -> tuple[tuple[str, str], ...]:
        """The device's UDIs, active unit first: the cheapest identity check."""
        ...

    def import_file(self, name: str, data: bytes) -> str:
        """Install an ACK, policy or authorization code; the device's answer text."""
        ...

    def status(self) -> LicenseStatus:
        """The device's licensing state (last ACK, authorizations per UDI)."""
        ...

    def return_authorization(self) -> str:
        """Return the authorization code (destructive); the return-code capture text."""
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...


def render_capture(hostname: str, command: str, output: str) -> str:
    """A terminal capture of one command, like samples/cisco/show-license-udi/with-prompt.txt.

    The capture parsers read a device's hostname from its prompt, so collect writes this rather
    than the bare output.
    """
    return f"\n{hostname}#terminal length 0\n{hostname}#{command}\n{output}{hostname}#"


_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_name(name: str) -> str:
    """A bootflash file name made of letters, digits, `.`, `_` and `-` only.

    Raises:
        ConfigError: nothing usable is left of the name.
    """
    cleaned = _SAFE_NAME_RE.sub("_", name.rsplit("/", 1)[-1]).lstrip(".")[:64]
    if not cleaned:
        raise ConfigError(f"{name!r} cannot be a file name on the device")
    return cleaned


_UDI_RE = re.compile(r"^\s*UDI\s*:\s*PID\s*:\s*([^,\s]+)\s*,\s*SN\s*:\s*([^,\s]+)", re.M)
_ROLE_UDI_RE = re.compile(
    r"^\s*(Active|Standby|Member)\s*:\s*PID\s*:\s*([^,\s]+)\s*,\s*SN\s*:\s*([^,\s]+)", re.M
)
_LAST_ACK_RE = re.compile(r"^\s*Last ACK received\s*:\s*(.+?)\s*$", re.M)
_STATUS_RE = re.compile(r"^\s*Status\s*:\s*(.+?)\s*$")
_INSTALLED_ON_RE = re.compile(r"^(.*?INSTALLED)\s+on\s+(.+)$")
_CONFIRMATION_RE = re.compile(r"^\s*Last Confirmation code\s*:\s*(\S+)\s*$")


def parse_udi_output(text: str) -> tuple[tuple[str, str], ...]:
    """The (pid, sn) pairs `show license udi` lists, the device's own (active) first."""
    found: list[tuple[str, str]] = []
    for pid, sn in _UDI_RE.findall(text):
        if (pid, sn) not in found:
            found.append((pid, sn))
    for _role, pid, sn in _ROLE_UDI_RE.findall(text):
        if (pid, sn) not in found:
            found.append((pid, sn))
    return tuple(found)


def parse_status_output(text: str) -> str | None:
    """The `Last ACK received` time of `show license status` (None: `<none>` or absent)."""
    m = _LAST_ACK_RE.search(text)
    if m is None or m.group(1).strip() in ("<none>", "None", ""):
        return None
    return m.group(1).strip()


_RUM_ROW_RE = re.compile(r"^\s*([0-9]+)\s+([A-Z_]+)\s+\S+\s+\S.*$", re.M)


def parse_rum_ids_output(text: str) -> frozenset[int] | None:
    """The report ids `show license rum id all` marks `ACK` (None: no report table found)."""
    rows = _RUM_ROW_RE.findall(text)
    if not rows and "Report Id" not in text:
        return None
    return frozenset(int(report_id) for report_id, state in rows if state == "ACK")


def parse_authorization_output(text: str) -> tuple[UdiAuthorization, ...]:
    """The `Overall status:` block of `show license authorization`, one entry per UDI."""
    entries: list[UdiAuthorization] = []
    current: dict[str, str | None] | None = None
    in_overall = False

    def flush() -> None:
        if current is not None:
            entries.append(
                UdiAuthorization(
                    str(current["pid"]),
                    str(current["sn"]),
                    current.get("status") or "UNKNOWN",
                    current.get("installed"),
                    current.get("code"),
                )
            )

    for raw in text.splitlines():
        line = raw.rstrip()
        if line.strip().lower().startswith("overall status"):
            in_overall = True
            continue
        if not in_overall:
            continue
        if line and not line[0].isspace():
            break  # the next section (Authorizations:, Purchased Licenses:)
        role = _ROLE_UDI_RE.match(line)
        if role is not None:
            flush()
            current = {"pid": role.group(2), "sn": role.group(3)}
            continue
        if current is None:
            continue
        status = _STATUS_RE.match(line)
        if status is not None:
            value = status.group(1)
            on = _INSTALLED_ON_RE.match(value)
            current["status"] = on.group(1) if on else value
            current["installed"] = on.group(2) if on else None
            continue
        code = _CONFIRMATION_RE.match(line)
        if code is not None and code.group(1) not in ("<none>",):
            current["code"] = code.group(1)
    flush()
    return tuple(entries)
