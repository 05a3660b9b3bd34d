"""An emulated fleet of Cisco IOS XE devices: the SLP REST API over HTTPS and a CLI over SSH.

Every device serves both ways at once, each on its own port on 127.0.0.1:

- HTTPS: the Smart Licensing Using Policy REST API (`/smartlic-service/...`, HTTP basic auth),
  served by one `EmulatorServer` with one listener per device, so the `requests` stack and TLS
  verification are exercised exactly as Cisco's own sample code calls the API;
- SSH: an asyncssh server per device (all on one event-loop thread) with password and
  public-key login, a `hostname#` prompt, the licensing command subset, and SCP to and from an
  in-memory `bootflash:`.

Devices keep state that tests may read and edit (`fleet.devices[i]`, under `device.lock`):
members (an HA stack lists several UDIs), signed RUM reports (open, closed, acknowledged),
installed authorizations, the last ACK, files on bootflash and per-device counters. Reports are
signed with `airgap.emulators.device.sign_payload`, so the Cisco API emulator accepts them; an
ACK or authorization code the Cisco emulator wrote marks reports acknowledged or installs the
code, and one written for another device is refused.

Faults are drawn per connection and per command (SSH) or per request (HTTPS): `auth` refuses
the credentials, `refused` resets the connection before anything is served, `timeout` accepts
and never answers, `disconnect` drops the line after the device has acted. A one-shot fault for
one device is armed with `POST /_emulator/faults {"hostname": H, "kind": K}` (optionally
`"match": "import"`, a substring of the command or path it must hit).

What is grounded in a vendor source and what is assumed is listed in docs/devices.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from airgap.emulators import device as rum
from airgap.emulators.server import CONTROL_PREFIX, EmulatorServer, Request, Response
from airgap.errors import ConfigError

_logger = logging.getLogger(__name__)

USERNAME = "admin"
CREDENTIAL_NAME = "lab"  # what the inventory the emulator writes names as the credential
DEFAULT_HOST_KEY_SEED = "airgap-emulator"
FAULT_KINDS = ("auth", "refused", "timeout", "disconnect")
STACK_EVERY = 10  # every 10th device is an HA stack
# (PID, members' PID) of a standalone device, by device number; C9300 stacks use the first.
PIDS = ("C9300-24T", "C9300-48P", "ISR4331/K9", "C9300-48U", "C9500-24Y4C")
STACK_PIDS = ("C9300-48P", "C9300-48P", "C9300-24T")
ROLES = ("Active", "Standby", "Member")
_HOST_KEY_DOMAIN = b"airgap-emulator/iosxe-host-key/v1"
_CONFIRMATION_KEY = b"airgap-emulator/iosxe-confirmation/v1"
_REPORT_DAYS = 30  # days of usage in each closed report
_SAMPLE_SECONDS = 900
_NEVER = 3600.0  # seconds a `timeout` fault holds a request or connection at most
_BOOTFLASH_BYTES = 1_621_966_848  # what `dir bootflash:` says the file system holds
_INVALID_INPUT = "% Invalid input detected at '^' marker."
_SHOW_TIME = "%b %d %H:%M:%S %Y UTC"  # how IOS XE prints times in `show license` output


# --- device state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One unit of a device (a stack has several); `role` is Active, Standby or Member."""

    role: str
    pid: str
    sn: str

    @property
    def udi(self) -> str:
        """`PID:…,SN:…`, as `show license udi` prints it."""
        return f"PID:{self.pid},SN:{self.sn}"


@dataclass
class Report:
    """One RUM report. `envelope` (the signed JSON object, compact) exists once it is closed."""

    report_id: int
    entitlement: str
    start: int  # epoch seconds
    state: str = "open"  # open | closed | acked
    end: int | None = None
    envelope: str | None = None


@dataclass
class Authorization:
    """An authorization code (SLAC) installed for one UDI."""

    pid: str
    sn: str
    confirmation_code: str  # 8 hex digits, as `show license authorization` prints it
    installed_at: datetime
    entitlements: list[dict[str, str]]  # tag, count, displayName, tagDescription, licenseType
    text: str  # the imported file


@dataclass
class EmulatedDevice:
    """One emulated IOS XE device. Edit under `lock`; counts are in `counts`."""

    index: int
    hostname: str
    members: list[Member]
    reports: list[Report] = field(default_factory=list)
    authorizations: dict[str, Authorization] = field(default_factory=dict)  # key: member UDI
    last_ack_received: datetime | None = None
    policy_name: str | None = None
    bootflash: dict[str, bytes] = field(default_factory=dict)
    # What was imported and when: ("ack" | "authorization" | "policy", time), oldest first.
    imports: list[tuple[str, datetime]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    rest_port: int = 0
    ssh_port: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def active(self) -> Member:
        """The active unit (the device's own UDI)."""
        return self.members[0]

    def report(self, report_id: int) -> Report | None:
        """The report with this id, if the device has it."""
        for item in self.reports:
            if item.report_id == report_id:
                return item
        return None


def _serial(index: int, member: int) -> str:
    return f"FOC{index:06d}X{member}"


def make_device(index: int, *, now: datetime) -> EmulatedDevice:
    """Build device number `index` (1-based) with its initial state.

    Every device has, per entitlement it reports: one acknowledged report, one closed report
    still waiting for an ACK, and one open report. Every 10th device is a stack of 2 or 3
    members; every 4th holds an authorization code for its active unit.

    Args:
        index: device number, 1 for `iosxe-0001`.
        now: the clock's current time; reports end before it.

    Returns:
        The device.
    """
    hostname = f"iosxe-{index:04d}"
    if index % STACK_EVERY == 0:
        size = 2 + (index // STACK_EVERY) % 2
        members = [Member(ROLES[m], STACK_PIDS[m], _serial(index, m)) for m in range(size)]
    else:
        members = [Member("Active", PIDS[(index - 1) % len(PIDS)], _serial(index, 0))]
    dev = EmulatedDevice(index=index, hostname=hostname, members=members)
    current = int(now.timestamp()) // 60 * 60
    for k, tag in enumerate(rum.entitlement_tags_for(dev.active.pid)):
        acked_start = current - 3 * _REPORT_DAYS * 86400 + k
        closed_start = current - 2 * _REPORT_DAYS * 86400 + k
        open_start = current - _REPORT_DAYS * 86400 + k
        acked = Report(acked_start, tag, acked_start)
        _close(dev, acked, closed_start - 1)
        acked.state = "acked"
        closed = Report(closed_start, tag, closed_start)
        _close(dev, closed, open_start - 1)
        dev.reports += [acked, closed, Report(open_start, tag, open_start)]
    dev.last_ack_received = now - timedelta(days=_REPORT_DAYS + 1)
    if index % 4 == 0:
        code = _confirmation_code(f"initial|{dev.active.udi}")
        dev.authorizations[dev.active.udi] = Authorization(
            dev.active.pid,
            dev.active.sn,
            code,
            now - timedelta(days=60),
            [_HSEC_ENTITLEMENT],
            "",
        )
    return dev


_HSEC_ENTITLEMENT = {
    "tag": "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4",
    "count": "1",
    "displayName": "Catalyst 9K HSEC Export Lic",
    "tagDescription": "U.S. Export Restriction Compliance license for Catalyst 9000 switches",
    "licenseType": "PERPETUAL",
}


def _confirmation_code(material: str) -> str:
    return hmac.new(_CONFIRMATION_KEY, material.encode(), hashlib.sha256).hexdigest()[:8]


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _close(dev: EmulatedDevice, report: Report, end: int) -> None:
    """Close a report: fix its end time and sign its payload (layout v2.0, like the samples)."""
    active = dev.active
    sudi = {"udi_pid": active.pid, "udi_serial_number": active.sn}
    tag = rum.software_tag_for(active.pid)
    piid = rum.product_instance_identifier(active.pid, active.sn)
    asset_signature = base64.b64encode(
        hashlib.sha256(f"{active.udi}|{report.report_id}".encode()).digest()
    ).decode()
    interval = max(0, end - report.start)
    payload = _compact(
        {
            "version": "2.0",
            "asset_identification": {
                "report_id": report.report_id,
                "asset": {"name": tag},
                "instance": {"sudi": sudi, "product_instance_identifier": piid},
            },
            "signature": {"signing_type": "builtin", "key": tag, "value": asset_signature},
            "meta": {
                "entitlement_tag": report.entitlement,
                "utility_enabled": False,
                "software_version": rum.SOFTWARE_VERSION,
                "ha_udi": [
                    {
                        "role": m.role,
                        "sudi": {"udi_pid": m.pid, "udi_serial_number": m.sn},
                    }
                    for m in dev.members
                ],
            },
            "measurements": [
                {
                    "log_time": end - 12,
                    "metric_name": "ENTITLEMENT",
                    "start_time": report.start,
                    "end_time": end,
                    "sample_interval": interval,
                    "num_samples": interval // _SAMPLE_SECONDS,
                    "meta": {"termination_reason": "CurrentUsageRequested"},
                    "value": {"type": "COUNT", "value": "1"},
                }
            ],
        }
    )
    envelope = {
        "payload": payload,
        "header": {"type": "rum"},
        "signature": {
            "sudi": sudi,
            "signing_type": "builtin",
            "key": tag,
            "value": rum.sign_payload(payload),
        },
    }
    report.end = end
    report.envelope = _compact(envelope)
    report.state = "closed"


class DeviceError(Exception):
    """A command or call the device refuses; the message is its `% …` text."""


class Fleet:
    """The behaviour shared by both front ends: what a device does for each operation."""

    def __init__(
        self,
        devices: list[EmulatedDevice],
        *,
        password: str | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.devices = devices
        self.by_hostname = {d.hostname: d for d in devices}
        self.password = password
        self.clock = clock

    def check_login(self, username: str, password: str | None, *, key: bool = False) -> bool:
        """User `admin` with any non-empty password (or the one required), or any key."""
        if username != USERNAME:
            return False
        if key:
            return True
        if not password:
            return False
        if self.password is None:
            return True
        return hmac.compare_digest(password.encode(), self.password.encode())

    def close_reports(self, dev: EmulatedDevice) -> list[Report]:
        """Close every open report and open the next ones; returns the reports closed."""
        now = int(self.clock().timestamp())
        with dev.lock:
            closed = [r for r in dev.reports if r.state == "open"]
            next_id = max(r.report_id for r in dev.reports) + 1
            for report in closed:
                _close(dev, report, max(now, report.start + 1))
                fresh = max(next_id, now + 1)
                dev.reports.append(Report(fresh, report.entitlement, fresh))
                next_id = fresh + 1
        return closed

    def unreported(self, dev: EmulatedDevice) -> list[Report]:
        """Closed reports no ACK has named yet, oldest first."""
        with dev.lock:
            return [r for r in dev.reports if r.state == "closed"]

    def usage_file(self, dev: EmulatedDevice, reports: list[Report]) -> bytes:
        """A usage file as `license smart save usage` writes it (like samples/cisco/rum/)."""
        active = dev.active
        sudi = {"udi_pid": active.pid, "udi_serial_number": active.sn}
        tag = rum.software_tag_for(active.pid)
        now_ms = int(self.clock().timestamp() * 1000)
        info = {
            "sudi": sudi,
            "product_instance_identifier": rum.product_instance_identifier(active.pid, active.sn),
            "hostname": dev.hostname,
            "software_tag_identifier": tag,
            "timestamp": now_ms,
            "nonce": str(
                10**18
                + int(hashlib.sha256(f"{dev.hostname}{now_ms}".encode()).hexdigest()[:15], 16)
            ),
            "device_list": [
                {
                    "sudi": {"udi_pid": m.pid, "udi_serial_number": m.sn},
                    "hostname": dev.hostname,
                    "software_tag_identifier": tag,
                }
                for m in dev.members
            ],
        }
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<smartLicense>",
            "<smartLicenseSystemInfo><data><![CDATA["
            + _compact(info)
            + "]]></data></smartLicenseSystemInfo>",
        ]
        lines += [f"<RUMReport><![CDATA[{r.envelope}]]></RUMReport>" for r in reports]
        lines.append("</smartLicense>")
        return ("\n".join(lines) + "\n").encode("utf-8")

    def import_text(self, dev: EmulatedDevice, text: str) -> str:
        """Install an ACK, a policy or an authorization code; returns the device's answer.

        Raises:
            DeviceError: the file is for another device, or is not a licensing file.
        """
        udis = {m.udi for m in dev.members}
        now = self.clock()
        ack = _ACK_DATA_RE.search(text)
        auth = _AUTH_RE.search(text)
        policy = _POLICY_NAME_RE.search(text)
        if ack is None and auth is None and policy is None:
            raise DeviceError("% Error: Import Data Failed: not a valid license file")
        with dev.lock:
            dev.counts["import"] += 1
            lines = ["Import Data Successful"]
            if ack is not None:
                try:
                    entries = json.loads(ack.group(1))
                except ValueError:
                    raise DeviceError(
                        "% Error: Import Data Failed: the ACK data is corrupt"
                    ) from None
                mine = [e for e in entries if isinstance(e, dict) and _sudi_udi(e) in udis]
                if not mine:
                    named = next((_sudi_udi(e) for e in entries if isinstance(e, dict)), None)
                    raise DeviceError(
                        f"% Error: Import Data Failed: UDI mismatch, the ACK is for {named}"
                    )
                for entry in mine:
                    for item in entry.get("report_acks", []):
                        if not isinstance(item, dict) or item.get("status") != "ACK":
                            continue
                        report = dev.report(int(item.get("report_id", -1)))
                        if report is not None and report.state == "closed":
                            report.state = "acked"
                dev.last_ack_received = now
                dev.imports.append(("ack", now))
            if auth is not None:
                fields = _UDI_FIELD_RE.fullmatch(auth.group(1).strip())
                udi = f"PID:{fields.group(1)},SN:{fields.group(2)}" if fields else None
                if udi is None or udi not in udis:
                    raise DeviceError(
                        "% Error: Import Data Failed: UDI mismatch, the authorization code is "
                        f"for {udi or auth.group(1)}"
                    )
                assert fields is not None
                code = _confirmation_code(text)
                dev.authorizations[udi] = Authorization(
                    fields.group(1), fields.group(2), code, now, _entitlements(text), text
                )
                dev.counts["install"] += 1
                dev.imports.append(("authorization", now))
                lines += [f"Last Confirmation code UDI: {udi}", f"    Confirmation code: {code}"]
            if policy is not None:
                dev.policy_name = _unescape(policy.group(1))
                dev.imports.append(("policy", now))
        return "\n".join(lines) + "\n"

    def return_authorization(self, dev: EmulatedDevice) -> str:
        """Remove the active unit's authorization code; the text `return … offline` prints.

        Raises:
            DeviceError: no authorization code is installed for the active unit.
        """
        active = dev.active
        with dev.lock:
            if dev.authorizations.pop(active.udi, None) is None:
                raise DeviceError(f"% Error: No authorization code is installed for {active.udi}")
            dev.counts["return"] += 1
        return (
            "Enter this return code in Cisco Smart Software Manager portal:\n"
            f"UDI: {active.udi}\n"
            f"    Return code: {rum.return_code_for(active.pid, active.sn)}\n\n"
        )

    # --- what the show commands print --------------------------------------------------------

    def show_udi(self, dev: EmulatedDevice) -> str:
        """`show license udi`, laid out like samples/cisco/show-license-udi/."""
        text = f"UDI: {dev.active.udi}\n\n"
        if len(dev.members) > 1:
            text += "HA UDI List:\n" + "".join(f"    {m.role}:{m.udi}\n" for m in dev.members)
            text += "\n"
        return text + "\n"

    def show_status(self, dev: EmulatedDevice) -> str:
        """`show license status` in the Smart Licensing Using Policy layout."""
        with dev.lock:
            last_ack = _show_time(dev.last_ack_received)
            policy = dev.policy_name
        return (
            "\nUtility:\n  Status: DISABLED\n\n"
            "Smart Licensing Using Policy:\n  Status: ENABLED\n\n"
            "Account Information:\n  Smart Account: <none>\n  Virtual Account: <none>\n\n"
            "Data Privacy:\n  Sending Hostname: yes\n"
            "    Callhome hostname privacy: DISABLED\n"
            "    Smart Licensing hostname privacy: DISABLED\n"
            "  Version privacy: DISABLED\n\n"
            "Transport:\n  Type: Transport Off\n\n"
            "Miscellaneous:\n  Custom Id: <empty>\n\n"
            "Policy:\n"
            f"  Policy in use: {'Installed' if policy else 'Merged from multiple sources.'}\n"
            + (f"  Policy name: {policy}\n" if policy else "")
            + "  Reporting ACK required: yes (CISCO default)\n\n"
            "Usage Reporting:\n"
            f"  Last ACK received: {last_ack}\n"
            "  Next ACK deadline: <none>\n"
            "  Reporting push interval: 0 (no reporting)\n"
            "  Next ACK push check: <none>\n"
            "  Next report push: <none>\n"
            "  Last report push: <none>\n"
            "  Last report file write: <none>\n\n"
            "Trust Code Installed: <none>\n\n"
        )

    def show_authorization(self, dev: EmulatedDevice) -> str:
        """`show license authorization`: status per UDI, then the authorized entitlements."""
        with dev.lock:
            auths = dict(dev.authorizations)
        lines = ["Overall status:"]
        for m in dev.members:
            lines.append(f"  {m.role}: {m.udi}")
            auth = auths.get(m.udi)
            if auth is None:
                lines.append("      Status: NOT INSTALLED")
            else:
                lines.append(
                    "      Status: SMART AUTHORIZATION INSTALLED on "
                    + _show_time(auth.installed_at)
                )
                lines.append(f"      Last Confirmation code: {auth.confirmation_code}")
        lines.append("")
        if auths:
            lines.append("Authorizations:")
            for m in dev.members:
                auth = auths.get(m.udi)
                if auth is None:
                    continue
                for ent in auth.entitlements:
                    name = ent.get("displayName") or ent.get("tag", "")
                    lines += [
                        f"  {name} ({name}):",
                        f"    Description: {ent.get('tagDescription', '')}",
                        f"    Total available count: {ent.get('count', '1')}",
                        "    Enforcement type: EXPORT RESTRICTED",
                        "    Term information:",
                        f"      {m.role}: {m.udi}",
                        "        Authorization type: SMART AUTHORIZATION INSTALLED",
                        f"        License type: {ent.get('licenseType', 'PERPETUAL')}",
                        f"          Term Count: {ent.get('count', '1')}",
                    ]
            lines.append("")
        lines += ["Purchased Licenses:", "  No Purchase Information Available", "", ""]
        return "\n".join(lines)

    def show_rum(self, dev: EmulatedDevice) -> str:
        """`show license rum id all`: one row per report (genieparser's golden output layout)."""
        states = {"open": "OPEN", "closed": "CLOSED", "acked": "ACK"}
        lines = [
            "Smart Licensing Usage Report:",
            "====================================",
            "Report Id,          State,    Flag, Feature Name",
        ]
        with dev.lock:
            for r in dev.reports:
                feature = r.entitlement.split(".cisco.", 1)[-1].split(",", 1)[0]
                lines.append(f"{r.report_id:<20}{states[r.state]:<10}N     {feature}")
        return "\n".join(lines) + "\n\n"

    def toc(self, dev: EmulatedDevice) -> dict[str, Any]:
        """`GET /smartlic-service/list`: `usage_list` plus the device's licensing state.

        Only the `usage_list` key is shown by a vendor source; its entries' fields and the
        other keys are assumed (docs/devices.md) and a client must treat them as optional.
        """
        with dev.lock:
            return {
                "usage_list": [
                    {
                        "report_id": r.report_id,
                        "state": r.state.upper(),
                        "entitlement_tag": r.entitlement,
                        "start_time": r.start,
                        "end_time": r.end,
                    }
                    for r in dev.reports
                ],
                "udi": {"pid": dev.active.pid, "sn": dev.active.sn},
                "ha_udi": [{"role": m.role, "pid": m.pid, "sn": m.sn} for m in dev.members],
                "last_ack_received": _iso(dev.last_ack_received),
                "authorizations": [
                    {
                        "pid": a.pid,
                        "sn": a.sn,
                        "status": "SMART AUTHORIZATION INSTALLED",
                        "confirmation_code": a.confirmation_code,
                        "installed": _iso(a.installed_at),
                    }
                    for a in dev.authorizations.values()
                ],
            }

    def stats(self) -> dict[str, Any]:
        """Per-device counts, keyed by hostname."""
        devices: dict[str, dict[str, int]] = {}
        for dev in self.devices:
            with dev.lock:
                devices[dev.hostname] = {
                    key: dev.counts.get(key, 0)
                    for key in (
                        "import",
                        "install",
                        "close_reports",
                        "all_reports",
                        "list",
                        "save_usage",
                        "return",
                        "logins",
                        "commands",
                        "scp_in",
                        "scp_out",
                    )
                }
        return {"devices": devices}


_ACK_DATA_RE = re.compile(r"<smartLicenseRumAck>.*?<data>\s*<!\[CDATA\[(.*?)\]\]>\s*</data>", re.S)
_AUTH_RE = re.compile(r"<smartLicenseAuthorization>.*?<udi>(.*?)</udi>", re.S)
_POLICY_NAME_RE = re.compile(r"<smartLicensePolicy>.*?<name>(.*?)</name>", re.S)
_UDI_FIELD_RE = re.compile(r"P:([^,<>]+),S:([^,<>]+)")
_ENTITLEMENT_RE = re.compile(r"<entitlement>(.*?)</entitlement>", re.S)
_FIELD_RE = re.compile(r"<(tag|count|displayName|tagDescription|licenseType)>(.*?)</\1>", re.S)


def _unescape(text: str) -> str:
    return (
        text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    )


def _entitlements(text: str) -> list[dict[str, str]]:
    return [
        {name: _unescape(value) for name, value in _FIELD_RE.findall(block)}
        for block in _ENTITLEMENT_RE.findall(text)
    ]


def _sudi_udi(entry: dict[str, Any]) -> str | None:
    sudi = entry.get("sudi")
    if not isinstance(sudi, dict):
        return None
    return f"PID:{sudi.get('udi_pid')},SN:{sudi.get('udi_serial_number')}"


def _show_time(when: datetime | None) -> str:
    return "<none>" if when is None else when.astimezone(UTC).strftime(_SHOW_TIME)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- faults --------------------------------------------------------------------------------------


@dataclass
class DeviceFaults:
    """Random and one-shot device faults. Thread-safe.

    Rates are probabilities; one draw is made at each point where faults apply: a new SSH
    connection (`refused`, `auth`, `timeout`), an SSH command (`disconnect`, and `timeout` when
    armed with a match) or an HTTPS request (all four).
    """

    auth: float = 0.0
    refused: float = 0.0
    timeout: float = 0.0
    disconnect: float = 0.0
    seed: int | None = None
    injected: Counter[str] = field(init=False)
    _pending: list[tuple[str, str, str | None]] = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rates = self.rates()
        for kind, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(
                    f"fault rate {kind}={rate} is not between 0 and 1",
                    hint="Rates are probabilities, e.g. --faults auth=0.1,disconnect=0.05.",
                )
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ConfigError("fault rates add up to more than 1")
        self.injected = Counter()
        self._pending = []
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    def rates(self) -> dict[str, float]:
        """The rate of each kind."""
        return {
            "auth": self.auth,
            "refused": self.refused,
            "timeout": self.timeout,
            "disconnect": self.disconnect,
        }

    @classmethod
    def parse(cls, spec: str | None) -> DeviceFaults:
        """Parse `auth=R,refused=R,timeout=R,disconnect=R,seed=N` (any subset; empty: none).

        Raises:
            ConfigError: an unknown or repeated kind, a value that is not a number, or rates
                outside [0, 1] or adding up to more than 1.
        """
        hint = "Use e.g. --faults auth=0.05,refused=0.05,timeout=0.02,disconnect=0.05,seed=1"
        values: dict[str, Any] = {}
        for raw in (spec or "").split(","):
            part = raw.strip()
            if not part:
                continue
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or key not in (*FAULT_KINDS, "seed"):
                raise ConfigError(f"bad fault {part!r} in {spec!r}", hint=hint)
            if key in values:
                raise ConfigError(f"fault {key!r} given twice in {spec!r}", hint=hint)
            try:
                values[key] = int(value) if key == "seed" else float(value)
            except ValueError:
                raise ConfigError(
                    f"fault {key!r} has a value that is not a number", hint=hint
                ) from None
        return cls(**values)

    def arm(self, hostname: str, kind: str, match: str | None = None) -> None:
        """Arm a one-shot fault for one device.

        Args:
            hostname: the device.
            kind: auth, refused, timeout or disconnect.
            match: a substring the command (SSH) or path (HTTPS) must contain; without it the
                fault hits the next connection (SSH auth/refused/timeout), command
                (disconnect) or request.

        Raises:
            ConfigError: an unknown kind.
        """
        if kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault kind {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._pending.append((hostname, kind, match))

    def draw(self, hostname: str, kinds: tuple[str, ...], subject: str | None) -> str | None:
        """Decide the fault at one point; `subject` is the command or path (None: connection)."""
        with self._lock:
            for index, (host, kind, match) in enumerate(self._pending):
                if host != hostname or kind not in kinds:
                    continue
                if match is not None and (subject is None or match not in subject):
                    continue
                del self._pending[index]
                self.injected[kind] += 1
                return kind
            value = self._rng.random()
            for kind in kinds:
                rate = self.rates()[kind]
                if value < rate:
                    self.injected[kind] += 1
                    return kind
                value -= rate
            return None

    def snapshot(self) -> dict[str, int]:
        """Faults injected so far, by kind."""
        with self._lock:
            return {kind: self.injected.get(kind, 0) for kind in FAULT_KINDS}


# --- HTTPS: the SLP REST API ---------------------------------------------------------------------


_API_PATHS = frozenset(
    f"/smartlic-service/{name}" for name in ("list", "all-reports", "close-reports", "import")
)


class SlpRestApp:
    """The `EmulatorServer` app: one listener per device, the SLP REST API on each."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def handle(self, request: Request) -> Response:
        """Answer one API request for the device of the listener it came in on."""
        dev = self.fleet.devices[request.listener]
        username, password = _basic(request.headers.get("authorization", ""))
        if username is None or not self.fleet.check_login(username, password):
            return Response(
                401,
                b'{"error":"Unauthorized"}',
                {
                    "Content-Type": "application/json",
                    "WWW-Authenticate": 'Basic realm="level_15 access"',
                },
            )
        _count(dev, "logins")
        path = request.path.rstrip("/")
        route = (request.method, path)
        if route == ("GET", "/smartlic-service/list"):
            _count(dev, "list")
            return Response.json(200, self.fleet.toc(dev))
        if route == ("GET", "/smartlic-service/all-reports"):
            _count(dev, "all_reports")
            reports = self.fleet.unreported(dev)
            if not reports:
                return Response.json(200, {})
            return Response.json(200, {"usage": [json.loads(r.envelope or "{}") for r in reports]})
        if route == ("POST", "/smartlic-service/close-reports"):
            _count(dev, "close_reports")
            closed = self.fleet.close_reports(dev)
            return Response.json(200, {"closed": [r.report_id for r in closed]})
        if route == ("POST", "/smartlic-service/import"):
            try:
                text = request.body.decode("utf-8")
            except UnicodeDecodeError:
                return Response.json(400, {"error": "% Error: the body is not UTF-8 text"})
            try:
                answer = self.fleet.import_text(dev, text)
            except DeviceError as exc:
                return Response.json(400, {"error": str(exc)})
            return Response.json(200, {"message": answer})
        if path in _API_PATHS:
            return Response.json(405, {"error": f"method {request.method} not allowed"})
        return Response.json(404, {"error": f"Unknown path '{request.path}'"})

    def stats(self) -> dict[str, Any]:
        """Per-device counts and the device faults injected."""
        return self.fleet.stats()


def _count(dev: EmulatedDevice, key: str) -> None:
    with dev.lock:
        dev.counts[key] += 1


def _basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


class _FleetServer(EmulatorServer):
    """`EmulatorServer` plus device faults and their one-shot control."""

    def __init__(self, app: SlpRestApp, faults: DeviceFaults, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.device_faults = faults
        self.fleet = app.fleet
        self._released = threading.Event()

    def respond(self, request: Request) -> Response | None:
        """Apply a device fault, if one is drawn, around the app's answer."""
        if request.path.startswith(CONTROL_PREFIX):
            if request.path.rstrip("/") == "/_emulator/faults" and request.method == "POST":
                armed = self._arm(request)
                if armed is not None:
                    return armed
            response = super().respond(request)
            if response is not None and request.path.rstrip("/") == "/_emulator/stats":
                body = json.loads(response.body)
                body["device_faults"] = self.device_faults.snapshot()
                return Response.json(response.status, body)
            return response
        dev = self.fleet.devices[request.listener]
        kind = self.device_faults.draw(dev.hostname, FAULT_KINDS, request.path)
        if kind == "refused":
            return None
        if kind == "auth":
            return Response(401, b'{"error":"Unauthorized"}', {"Content-Type": "application/json"})
        if kind == "timeout":
            self._released.wait(_NEVER)
            return None
        response = super().respond(request)
        return None if kind == "disconnect" else response

    def _arm(self, request: Request) -> Response | None:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return None
        if not isinstance(body, dict) or "hostname" not in body:
            return None  # the server's own {"path_contains", "status"} form
        hostname, kind, match = body.get("hostname"), body.get("kind"), body.get("match")
        if hostname not in self.fleet.by_hostname:
            return Response.json(404, {"error": f"no device {hostname!r}"})
        try:
            self.device_faults.arm(str(hostname), str(kind), None if match is None else str(match))
        except ConfigError as exc:
            return Response.json(400, {"error": exc.message})
        return Response.json(200, {"armed": True})

    def stop(self) -> None:
        """Release requests held by `timeout` faults, then stop."""
        self._released.set()
        super().stop()


# --- SSH: the CLI ----------------------------------------------------------------------------


def host_key(seed: str, hostname: str) -> asyncssh.SSHKey:
    """The Ed25519 host key of one device, derived from the seed (same seed, same key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    material = hmac.new(_HOST_KEY_DOMAIN, f"{seed}|{hostname}".encode(), hashlib.sha256).digest()
    private = ed25519.Ed25519PrivateKey.from_private_bytes(material)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return asyncssh.import_private_key(pem)


# IOS commands as (word, least letters) tuples; the last element says what to do.
_COMMANDS: list[tuple[tuple[tuple[str, int], ...], str]] = [
    ((("terminal", 3), ("length", 3)), "terminal_length"),
    ((("show", 2), ("license", 3), ("udi", 1)), "show_udi"),
    ((("show", 2), ("license", 3), ("status", 3)), "show_status"),
    ((("show", 2), ("license", 3), ("authorization", 2)), "show_authorization"),
    ((("show", 2), ("license", 3), ("rum", 2), ("id", 2), ("all", 2)), "show_rum"),
    ((("license", 3), ("smart", 2), ("save", 2), ("usage", 2)), "save_usage"),
    ((("license", 3), ("smart", 2), ("import", 2)), "import"),
    (
        (
            ("license", 3),
            ("smart", 2),
            ("authorization", 2),
            ("return", 3),
            ("local", 2),
            ("offline", 3),
        ),
        "return",
    ),
    ((("more", 2),), "more"),
    ((("dir", 3),), "dir"),
    ((("exit", 3),), "exit"),
    ((("logout", 4),), "exit"),
]


def _match_command(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The action and the remaining arguments of a command line, or None if unknown."""
    for words, action in _COMMANDS:
        if len(tokens) < len(words):
            continue
        if all(
            len(tok) >= least and word.startswith(tok.lower())
            for tok, (word, least) in zip(tokens, words, strict=False)
        ):
            return action, tokens[len(words) :]
    return None


def _flash_name(path: str) -> str | None:
    """The file name a `bootflash:` / `flash:` / `/` path names, or None for the folder."""
    name = path
    for prefix in ("bootflash:", "flash:"):
        if name.lower().startswith(prefix):
            name = name[len(prefix) :]
            break
    name = name.lstrip("/")
    if name in ("", "."):
        return None
    return name


class _Hold(Exception):
    """A `timeout` fault: do not answer."""


class _Drop(Exception):
    """A `disconnect` fault: drop the connection after acting."""


class SshFrontEnd:
    """The SSH servers of the fleet, one per device, on one event-loop thread."""

    def __init__(
        self,
        fleet: Fleet,
        faults: DeviceFaults,
        *,
        latency_ms: float,
        host_key_seed: str,
        host: str = "127.0.0.1",
    ) -> None:
        self.fleet = fleet
        self.faults = faults
        self.latency = latency_ms / 1000.0
        self.seed = host_key_seed
        self.host = host
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="iosxe-ssh", daemon=True)
        self._servers: list[asyncssh.SSHAcceptor] = []
        self._released: asyncio.Event | None = None
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(120)
        except BaseException:
            self.stop()
            raise

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _listen(self) -> None:
        self._released = asyncio.Event()
        for dev in self.fleet.devices:
            key = host_key(self.seed, dev.hostname)
            acceptor = await asyncssh.listen(
                self.host,
                0,
                server_host_keys=[key],
                server_factory=lambda d=dev: _SshServer(self, d),
                process_factory=lambda proc, d=dev: self._session(proc, d),
                sftp_factory=lambda chan, d=dev: _Bootflash(chan, self, d),
                allow_scp=True,
                line_editor=False,
                encoding="utf-8",
                backlog=1024,
                reuse_address=True,
            )
            dev.ssh_port = acceptor.get_port()
            self._servers.append(acceptor)

    def stop(self) -> None:
        """Close every listener and connection and end the loop thread."""
        if not self.loop.is_running():
            return

        async def _shutdown() -> None:
            if self._released is not None:
                self._released.set()
            for server in self._servers:
                server.close()
            for server in self._servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 5)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()

    async def hold(self) -> None:
        """Wait as a `timeout` fault does: until the emulator stops (or an hour)."""
        assert self._released is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), _NEVER)

    async def _session(self, process: asyncssh.SSHServerProcess[str], dev: EmulatedDevice) -> None:
        try:
            if process.command is not None:
                text = await self._command(dev, process.command.strip(), process)
                process.stdout.write((text or "").replace("\n", "\r\n"))
                process.exit(0)
                return
            await self._shell(process, dev)
        except _Drop:
            process.channel.get_connection().abort()
        except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
            process.exit(0)
        except (ConnectionError, asyncssh.DisconnectError, BrokenPipeError):
            pass

    async def _shell(self, process: asyncssh.SSHServerProcess[str], dev: EmulatedDevice) -> None:
        prompt = f"{dev.hostname}#"
        process.stdout.write(f"\r\n{prompt}")
        line = ""
        previous = ""
        # The echo of what arrived in one read goes back in one write, as a device echoes a
        # line pasted at once; a write per character made an SSH packet (and asyncssh's
        # MSG_IGNORE before it) per character, most of a client's work for a short session.
        echo: list[str] = []

        def flush() -> None:
            if echo:
                process.stdout.write("".join(echo))
                echo.clear()

        while True:
            data = await process.stdin.read(4096)
            if not data:
                break
            for ch in data:
                if ch == "\n" and previous == "\r":
                    previous = ch
                    continue
                previous = ch
                if ch in "\r\n":
                    echo.append("\r\n")
                    command = line.strip()
                    line = ""
                    if not command:
                        echo.append(prompt)
                        continue
                    flush()
                    text = await self._command(dev, command, process)
                    if text is None:
                        flush()
                        process.exit(0)
                        return
                    echo.append(text.replace("\n", "\r\n") + prompt)
                elif ch in "\x08\x7f":
                    if line:
                        line = line[:-1]
                        echo.append("\x08 \x08")
                elif ch == "\x03":
                    line = ""
                    echo.append("\r\n" + prompt)
                elif ch >= " ":
                    line += ch
                    echo.append(ch)
            flush()

    async def _command(
        self, dev: EmulatedDevice, command: str, process: asyncssh.SSHServerProcess[str]
    ) -> Any:
        """Run one command line; its output (str), or None for exit."""
        if self.latency:
            await asyncio.sleep(self.latency)
        kind = self.faults.draw(dev.hostname, ("timeout", "disconnect"), command)
        if kind == "timeout":
            await self.hold()
            raise _Drop
        with dev.lock:
            dev.counts["commands"] += 1
        output = self.run(dev, command)
        if kind == "disconnect":
            raise _Drop
        return output

    def run(self, dev: EmulatedDevice, command: str) -> str | None:
        """What the device prints for one command line (None: the session ends)."""
        tokens = command.split()
        matched = _match_command(tokens)
        if matched is None:
            return _invalid(dev, command)
        action, args = matched
        fleet = self.fleet
        try:
            if action == "terminal_length":
                return "" if len(args) == 1 and args[0].isdigit() else _invalid(dev, command)
            if action in ("show_udi", "show_status", "show_authorization") and args:
                return _invalid(dev, command)
            if action == "show_udi":
                return fleet.show_udi(dev)
            if action == "show_status":
                return fleet.show_status(dev)
            if action == "show_authorization":
                return fleet.show_authorization(dev)
            if action == "show_rum":
                return fleet.show_rum(dev)
            if action == "save_usage":
                return self._save_usage(dev, command, args)
            if action == "import":
                if len(args) != 1:
                    return _invalid(dev, command)
                return self._import(dev, args[0])
            if action == "return":
                return fleet.return_authorization(dev)
            if action == "more":
                if len(args) != 1:
                    return _invalid(dev, command)
                return self._more(dev, args[0])
            if action == "dir":
                return self._dir(dev)
            if action == "exit":
                return None
        except DeviceError as exc:
            return f"{exc}\n\n"
        return _invalid(dev, command)

    def _save_usage(self, dev: EmulatedDevice, command: str, args: list[str]) -> str:
        # license smart save usage {all | unreported | days N} file <path>
        words = [a.lower() for a in args]
        if len(words) < 3 or words[-2] != "file" or words[0] not in ("all", "unreported", "days"):
            return _invalid(dev, command)
        name = _flash_name(args[-1])
        if name is None:
            return f"% Error: invalid file name {args[-1]}\n\n"
        with dev.lock:
            dev.counts["save_usage"] += 1
            self.fleet.close_reports(dev)
            if words[0] == "unreported":
                reports = self.fleet.unreported(dev)
            else:
                reports = [r for r in dev.reports if r.state != "open"]
            dev.bootflash[name] = self.fleet.usage_file(dev, reports)
        return ""

    def _import(self, dev: EmulatedDevice, path: str) -> str:
        name = _flash_name(path)
        with dev.lock:
            data = dev.bootflash.get(name) if name is not None else None
        if data is None:
            raise DeviceError(f"% Error: {path} does not exist")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DeviceError("% Error: Import Data Failed: not a valid license file") from None
        return self.fleet.import_text(dev, text)

    def _more(self, dev: EmulatedDevice, path: str) -> str:
        name = _flash_name(path)
        with dev.lock:
            data = dev.bootflash.get(name) if name is not None else None
        if data is None:
            return f"%Error opening {path} (No such file or directory)\n"
        text = data.decode("utf-8", errors="replace")
        return text if text.endswith("\n") else text + "\n"

    def _dir(self, dev: EmulatedDevice) -> str:
        with dev.lock:
            files = sorted(dev.bootflash.items())
        stamp = self.fleet.clock().astimezone(UTC).strftime("%b %d %Y %H:%M:%S +00:00")
        used = sum(len(data) for _, data in files)
        lines = ["Directory of bootflash:/", ""]
        for number, (name, data) in enumerate(files, start=1):
            lines.append(f"{number:>7}  -rw-{len(data):>17}  {stamp}  {name}")
        lines += ["", f"{_BOOTFLASH_BYTES} bytes total ({_BOOTFLASH_BYTES - used} bytes free)", ""]
        return "\n".join(lines)


def _invalid(dev: EmulatedDevice, command: str) -> str:
    # The caret sits under the first character IOS could not parse; here, the first word it
    # did not know, counted from the start of the prompt line.
    tokens = command.split()
    offset = 0
    for depth in range(len(tokens), 0, -1):
        if _prefix_known(tokens[:depth]):
            offset = command.find(tokens[depth], 0) if depth < len(tokens) else len(command)
            break
    column = len(dev.hostname) + 1 + max(0, offset)
    return " " * column + "^\n" + _INVALID_INPUT + "\n\n"


def _prefix_known(tokens: list[str]) -> bool:
    for words, _action in _COMMANDS:
        if len(tokens) > len(words):
            continue
        if all(
            len(tok) >= least and word.startswith(tok.lower())
            for tok, (word, least) in zip(tokens, words, strict=False)
        ):
            return True
    return False


class _SshServer(asyncssh.SSHServer):
    """Login and connection-level faults for one device."""

    def __init__(self, front: SshFrontEnd, dev: EmulatedDevice) -> None:
        self.front = front
        self.dev = dev
        self.fault: str | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.fault = self.front.faults.draw(self.dev.hostname, ("refused", "auth", "timeout"), None)
        if self.fault == "refused":
            conn.abort()
        elif self.fault == "timeout":
            # Accepted, then never answered: the key exchange stalls until the client gives up.
            transport = getattr(conn, "_transport", None)
            if transport is not None:
                transport.pause_reading()

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        ok = self.fault != "auth" and self.front.fleet.check_login(username, password)
        if ok:
            with self.dev.lock:
                self.dev.counts["logins"] += 1
        return ok

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        ok = self.fault != "auth" and self.front.fleet.check_login(username, None, key=True)
        if ok:
            with self.dev.lock:
                self.dev.counts["logins"] += 1
        return ok


class _File:
    """An open bootflash file: bytes collected in memory, stored on close."""

    def __init__(self, name: str, data: bytes, writing: bool) -> None:
        self.name = name
        self.buffer = bytearray(b"" if writing else data)
        self.writing = writing


class _Bootflash(asyncssh.SFTPServer):
    """The in-memory `bootflash:` SCP reads and writes (SCP only needs these calls)."""

    def __init__(
        self, chan: asyncssh.SSHServerChannel[bytes], front: SshFrontEnd, dev: EmulatedDevice
    ) -> None:
        super().__init__(chan)
        self.front = front
        self.dev = dev

    def _name(self, path: bytes) -> str | None:
        return _flash_name(path.decode("utf-8", errors="replace"))

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        name = self._name(path)
        if name is None:
            return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY, permissions=0o40755)
        with self.dev.lock:
            data = self.dev.bootflash.get(name)
        if data is None:
            raise asyncssh.SFTPNoSuchFile(f"{name}: no such file")
        return asyncssh.SFTPAttrs(
            type=asyncssh.FILEXFER_TYPE_REGULAR, size=len(data), permissions=0o100644
        )

    lstat = stat

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        return None

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> _File:
        name = self._name(path)
        if name is None:
            raise asyncssh.SFTPFailure("is a directory")
        writing = bool(pflags & asyncssh.FXF_WRITE)
        with self.dev.lock:
            data = self.dev.bootflash.get(name)
        if not writing and data is None:
            raise asyncssh.SFTPNoSuchFile(f"{name}: no such file")
        return _File(name, data or b"", writing)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _File)
        return bytes(file_obj.buffer[offset : offset + size])

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, _File)
        end = offset + len(data)
        if len(file_obj.buffer) < end:
            file_obj.buffer.extend(b"\0" * (end - len(file_obj.buffer)))
        file_obj.buffer[offset:end] = data
        return len(data)

    def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _File)
        with self.dev.lock:
            if file_obj.writing:
                self.dev.bootflash[file_obj.name] = bytes(file_obj.buffer)
                self.dev.counts["scp_in"] += 1
            else:
                self.dev.counts["scp_out"] += 1


# --- the fleet ---------------------------------------------------------------------------------

INVENTORY_COLUMNS = (
    "host",
    "port",
    "platform",
    "transport",
    "credential",
    "hostname",
    "tags",
    "verify",
    "ca_bundle",
)


class IosXeFleet:
    """A running emulated fleet: HTTPS and SSH on 127.0.0.1, one port of each per device.

    A context manager; `stop()` frees every port. `devices` is the state tests may edit.
    """

    def __init__(
        self,
        *,
        devices: int,
        latency_ms: float = 0.0,
        faults: DeviceFaults | str | None = None,
        password: str | None = None,
        transport: str | None = None,
        host_key_seed: str = DEFAULT_HOST_KEY_SEED,
        cert_out: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Build the devices and start serving.

        Args:
            devices: how many devices (1 or more).
            latency_ms: milliseconds before each command or request is answered.
            faults: device faults, or their `--faults` spec.
            password: require this password for `admin` (default: any non-empty one).
            transport: `slp-rest` or `ssh` for every inventory row; default alternates.
            host_key_seed: the seed SSH host keys derive from.
            cert_out: where to write the HTTPS certificate (PEM).
            clock: the device clock (default: now, UTC).

        Raises:
            ConfigError: bad counts, faults, transport or latency, or a port cannot be bound.
        """
        if devices < 1:
            raise ConfigError(f"an emulated fleet needs at least one device, not {devices}")
        if transport not in (None, "slp-rest", "ssh"):
            raise ConfigError(f"unknown transport {transport!r}; use slp-rest or ssh")
        if password == "":
            raise ConfigError("the required password is empty")
        self.clock = clock or (lambda: datetime.now(UTC))
        self.device_faults = (
            faults if isinstance(faults, DeviceFaults) else DeviceFaults.parse(faults)
        )
        now = self.clock()
        self.devices = [make_device(i, now=now) for i in range(1, devices + 1)]
        self.fleet = Fleet(self.devices, password=password, clock=self.clock)
        self.transport = transport
        self.host_key_seed = host_key_seed
        self.http = _FleetServer(
            SlpRestApp(self.fleet),
            self.device_faults,
            latency_ms=latency_ms,
            tls=True,
            cert_out=cert_out,
            listeners=devices,
        )
        try:
            for dev, port in zip(self.devices, self.http.ports, strict=True):
                dev.rest_port = port
            self.ssh = SshFrontEnd(
                self.fleet, self.device_faults, latency_ms=latency_ms, host_key_seed=host_key_seed
            )
        except BaseException:
            self.http.stop()
            raise
        self.http.start()
        self._stopped = False

    @property
    def cert_path(self) -> Path:
        """The HTTPS certificate (PEM) clients verify against."""
        assert self.http.cert_path is not None
        return self.http.cert_path

    @property
    def stats_url(self) -> str:
        """`/_emulator/stats` on the first device's HTTPS address (every address serves it)."""
        return f"{self.http.url}/_emulator/stats"

    def transport_of(self, dev: EmulatedDevice) -> str:
        """The transport the inventory names for a device."""
        if self.transport is not None:
            return self.transport
        return "slp-rest" if dev.index % 2 == 1 else "ssh"

    @property
    def inventory_rows(self) -> list[dict[str, str]]:
        """One inventory row per device (columns `INVENTORY_COLUMNS`)."""
        rows = []
        for dev in self.devices:
            kind = self.transport_of(dev)
            tags = ["emulated"] + (["stack"] if len(dev.members) > 1 else [])
            rows.append(
                {
                    "host": "127.0.0.1",
                    "port": str(dev.rest_port if kind == "slp-rest" else dev.ssh_port),
                    "platform": "ios-xe",
                    "transport": kind,
                    "credential": CREDENTIAL_NAME,
                    "hostname": dev.hostname,
                    "tags": ";".join(tags),
                    "verify": "",
                    "ca_bundle": str(self.cert_path) if kind == "slp-rest" else "",
                }
            )
        return rows

    def write_inventory(self, path: Path) -> None:
        """Write the inventory CSV; the CA bundle is named relative to its folder when it can.

        Raises:
            ConfigError: the file cannot be written.
        """
        rows = self.inventory_rows
        folder = path.resolve().parent
        for row in rows:
            if row["ca_bundle"]:
                cert = Path(row["ca_bundle"]).resolve()
                with contextlib.suppress(ValueError):
                    row["ca_bundle"] = cert.relative_to(folder).as_posix()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=INVENTORY_COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            raise ConfigError(f"cannot write the inventory to {path}: {exc}") from exc

    def device(self, hostname: str) -> EmulatedDevice:
        """The device with this hostname.

        Raises:
            KeyError: no such device.
        """
        return self.fleet.by_hostname[hostname]

    def stats(self) -> dict[str, Any]:
        """What `/_emulator/stats` answers, read in-process."""
        body = self.fleet.stats()
        body["device_faults"] = self.device_faults.snapshot()
        return body

    def arm(self, hostname: str, kind: str, match: str | None = None) -> None:
        """Arm a one-shot fault for one device (see `DeviceFaults.arm`)."""
        if hostname not in self.fleet.by_hostname:
            raise ConfigError(f"no device {hostname!r}")
        self.device_faults.arm(hostname, kind, match)

    def serve_forever(self) -> None:
        """Block until KeyboardInterrupt, then stop."""
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop both front ends and free their ports."""
        if self._stopped:
            return
        self._stopped = True
        self.ssh.stop()
        self.http.stop()

    def __enter__(self) -> IosXeFleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_fleet(**kwargs: Any) -> IosXeFleet:
    """Start an emulated fleet; the keyword arguments are `IosXeFleet`'s.

    Raises:
        ConfigError: as `IosXeFleet`.

    Returns:
        The running fleet (use it as a context manager).
    """
    return IosXeFleet(**kwargs)
