"""State records and constants of the BIG-IQ emulator, and the few value rules they share.

Pools, offerings, assignments, member-management tasks and tokens are plain dataclasses that
tests may read and edit (under the emulator's lock). Beside them: the demo registration keys, the
offering statuses as BIG-IQ spells them, the EULA text, pool defaults, the URL paths, `ApiError`
(an answer in BIG-IQ's error shape), `normalize_mac` and `iso_time`.

Leaves out every decision: which request changes which record, and when, is `app`'s job; token
rules are in `tokens`. No HTTP, no clock, no locking here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, TypeAlias

__all__ = [
    "ACTIVATION_FAILED",
    "ASSIGNMENTS",
    "AUTOMATIC",
    "DEFAULT_UTILITY_POOLS",
    "DEMO_REGKEY_POOL",
    "EULA_ACCEPTED",
    "EULA_TEXT",
    "HOST",
    "HYPERVISORS",
    "LICENSE_TEXT_PROVIDED",
    "MANUAL",
    "NEED_EULA",
    "NEED_LICENSE_TEXT",
    "POOL_BASE",
    "READY",
    "REGKEY_EULA",
    "REGKEY_EULA_2",
    "REGKEY_FAIL_ONCE",
    "REGKEY_PLAIN",
    "REGKEY_READY",
    "TASKS",
    "TASK_RETENTION",
    "TOKENS",
    "UNITS_OF_MEASURE",
    "USER_LINK",
    "ApiError",
    "Assignment",
    "MemberTask",
    "Offering",
    "PendingChange",
    "Pool",
    "RegKeyPool",
    "RegKeySpec",
    "Token",
    "UtilityPool",
    "iso_time",
    "normalize_mac",
]

HYPERVISORS: Final = frozenset(
    {"aws", "azure", "gce", "vmware", "hyperv", "kvm", "xen", "alibaba"}
)  # alibaba: Declarative Onboarding allows it, so BIG-IQ must too
UNITS_OF_MEASURE: Final = frozenset({"yearly", "monthly", "daily", "hourly"})
DEFAULT_UTILITY_POOLS: Final[Mapping[str, int]] = {"demo-utility": 1000}
DEMO_REGKEY_POOL: Final = "demo-regkey"

# The emulated F5 activation server knows these registration keys (all invented).
REGKEY_PLAIN: Final = "D7391-48205-61738-29406-5813720"  # activates straight to READY
REGKEY_EULA: Final = "E2846-19375-08264-73915-4602817"  # needs the EULA accepted
REGKEY_EULA_2: Final = "E5938-27461-93058-16472-8305916"  # needs the EULA accepted
REGKEY_FAIL_ONCE: Final = "F4172-60938-25817-94063-1729485"  # ACTIVATION_FAILED, then works
# Already activated in demo-regkey, so a fresh emulator can assign from the RegKey pool.
REGKEY_READY: Final = ("R1058-37294-80615-42739-6051832", "R6627-04183-59270-31846-9270413")

EULA_TEXT: Final = (
    "END USER LICENSE AGREEMENT\r\nDOC-0355-EMU\r\n\r\n"
    "IMPORTANT - READ BEFORE INSTALLING OR OPERATING PRODUCT\r\n\r\n"
    "This is the airgap BIG-IQ emulator's stand-in for F5's EULA. Echo it back unchanged in\r\n"
    "a PATCH with status ACTIVATING_AUTOMATIC_EULA_ACCEPTED to accept it.\r\n"
)

TASK_RETENTION: Final = 7 * 24 * 3600.0  # seconds; BIG-IQ keeps member-management tasks a week

# Offering statuses, as BIG-IQ spells them.
AUTOMATIC: Final = "ACTIVATING_AUTOMATIC"
MANUAL: Final = "ACTIVATING_MANUAL"
NEED_EULA: Final = "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT"
EULA_ACCEPTED: Final = "ACTIVATING_AUTOMATIC_EULA_ACCEPTED"
NEED_LICENSE_TEXT: Final = "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
LICENSE_TEXT_PROVIDED: Final = "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED"
READY: Final = "READY"
ACTIVATION_FAILED: Final = "ACTIVATION_FAILED"

# Where the emulator says it lives in selfLinks, and the API paths more than one module names.
HOST: Final = "https://localhost"
POOL_BASE: Final = "/mgmt/cm/device/licensing/pool"
TASKS: Final = "/mgmt/cm/device/tasks/licensing/pool/member-management"
ASSIGNMENTS: Final = "/mgmt/cm/device/licensing/assignments"
TOKENS: Final = "/mgmt/shared/authz/tokens"
USER_LINK: Final = HOST + "/mgmt/shared/authz/users/admin"

_MAC_SEPARATORS: Final = re.compile(r"[:\-.\s]")
_HEX12: Final = re.compile(r"^[0-9A-Fa-f]{12}$")


# --- value rules ----------------------------------------------------------------------------


def normalize_mac(raw: str) -> str | None:
    """Return `raw` as `AA:BB:CC:DD:EE:FF`, whatever its case and separators, or None.

    Args:
        raw: a MAC address such as `00:50:56:9a:3c:e1`, `00-50-56-9A-3C-E1` or `0050.569a.3ce1`.

    Returns:
        The upper-case, colon-separated form, or None if `raw` is not twelve hex digits.
    """
    digits = _MAC_SEPARATORS.sub("", raw)
    if not _HEX12.match(digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).upper()


def iso_time(micros: int) -> str:
    """Write a time as BIG-IQ does in `startTime`, `startDateTime` and the like, but in UTC.

    Args:
        micros: microseconds since the Unix epoch.

    Returns:
        E.g. `2024-10-14T16:22:47.518+0000` (BIG-IQ writes its local offset, e.g. `-0700`).
    """
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


class ApiError(Exception):
    """An API error the emulator answers in BIG-IQ's error shape; never leaves `handle()`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- state ------------------------------------------------------------------------------------


@dataclass
class Assignment:
    """One device licensed from a pool: a pool member and a row of the assignment list."""

    id: str
    mac: str  # normalized AA:BB:CC:DD:EE:FF
    pool: str
    reg_key: str  # the utility pool's key, or the RegKey-pool offering handed out
    hypervisor: str
    license_text: str
    task_id: str
    ready_at: float  # clock seconds; before this the member is INSTALLING, then LICENSED
    created_micros: int
    unit_of_measure: str | None = None
    sku_keyword1: str | None = None
    sku_keyword2: str | None = None
    tenant: str | None = None
    chargeback_tag: str | None = None
    address: str | None = None


@dataclass
class UtilityPool:
    """A utility pool: `capacity` devices at once, any SKU keywords."""

    name: str
    capacity: int
    reg_key: str
    offering_id: str
    offering_name: str = "F5-BIG-MSP-BT-1G-LIC"
    members: dict[str, Assignment] = field(default_factory=dict)  # by MAC
    created_micros: int = 0

    license_type: ClassVar[str] = "UTILITY"

    def available(self) -> int:
        """Licenses that can still be assigned."""
        return max(0, self.capacity - len(self.members))


@dataclass
class RegKeySpec:
    """How the emulated F5 activation server treats one registration key."""

    eula: bool = False  # automatic activation stops at ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT
    fail_times: int = 0  # automatic activations that end ACTIVATION_FAILED before one works


@dataclass
class PendingChange:
    """An offering status change decided now and shown once `due` (clock seconds) has passed."""

    due: float
    status: str
    message: str
    eula_text: str | None = None
    license_text: str | None = None


@dataclass
class Offering:
    """One registration key in a RegKey pool and its activation state."""

    reg_key: str
    pool_id: str
    status: str
    message: str
    dossier: str
    description: str = ""
    add_on_keys: list[str] = field(default_factory=list)
    eula_text: str | None = None
    license_text: str | None = None
    pending: PendingChange | None = None
    assigned_to: str | None = None  # MAC of the device holding this key
    generation: int = 1
    last_update_micros: int = 0


@dataclass
class RegKeyPool:
    """A RegKey pool: each READY, unassigned offering licenses one device."""

    name: str
    id: str
    offerings: dict[str, Offering] = field(default_factory=dict)  # by regKey
    members: dict[str, Assignment] = field(default_factory=dict)  # by MAC
    capacity: int | None = None  # optional extra cap on assignments; None = one per READY key
    created_micros: int = 0

    license_type: ClassVar[str] = "REGKEY"

    def free_offering(self) -> Offering | None:
        """The first READY offering not assigned to a device, if the cap allows one more."""
        if self.capacity is not None and len(self.members) >= self.capacity:
            return None
        for offering in self.offerings.values():
            if offering.status == READY and offering.pending is None and not offering.assigned_to:
                return offering
        return None

    def available(self) -> int:
        """Licenses that can still be assigned."""
        free = sum(
            1
            for o in self.offerings.values()
            if o.status == READY and o.pending is None and not o.assigned_to
        )
        if self.capacity is not None:
            free = min(free, max(0, self.capacity - len(self.members)))
        return free


Pool: TypeAlias = UtilityPool | RegKeyPool


@dataclass
class MemberTask:
    """A member-management task; its outcome is fixed at creation and shown when it finishes."""

    id: str
    command: str  # assign | revoke
    body: dict[str, Any]  # the request as sent, echoed back in the task
    mac: str  # normalized if valid, else as sent
    pool: str
    username: str
    created: float  # clock seconds
    created_micros: int
    error_message: str | None = None  # None: the task will finish; else it will fail with this
    license_text: str | None = None
    assignment_link: str | None = None


@dataclass
class Token:
    """An access or refresh token handed out by login or exchange."""

    token: str
    kind: Literal["access", "refresh"]
    username: str
    provider: str
    ttl: float  # seconds
    expires: float  # clock seconds
    start_micros: int
    expiration_micros: int
