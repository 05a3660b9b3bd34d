"""Local emulator of F5 BIG-IQ License Manager: tokens, utility and RegKey pools, license tasks.

`BigIqEmulator` is an `App` for `airgap.emulators.server.EmulatorServer`, which owns HTTP, TLS,
latency, fault injection and `GET /_emulator/stats`. It serves the paths, status codes and bodies
of DESIGN.md §10 "F5 BIG-IQ License Manager": login, token exchange and logout with real token
lifetimes; utility pools with a capacity; a RegKey pool whose offerings go through automatic
(EULA) and manual (dossier) activation; UNREACHABLE assign/revoke tasks that return BIG-IP license
text; the assignment list. Every outcome is decided when the request arrives, under one lock, so
concurrent assigns cannot overbook a pool; a task only reveals it once `task_delay` has passed.

State is plain attributes that tests may edit under `emu.lock`:
`emu.pools["demo-utility"].capacity = 0`, `emu.regkeys[key] = RegKeySpec(eula=True)`,
`emu.tokens.clear()`. `stats()` counts calls per route and state changes per MAC.

Not modelled: MANAGED/UNMANAGED assignments (only UNREACHABLE), purchased pools, creating or
deleting pools over the API, SKU matching inside utility pools (any skuKeyword is accepted),
partitions and roles. Never imports `airgap.outside`: the clients are tested against this, not
against themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Final, Literal, NoReturn, TypeAlias
from urllib.parse import unquote

from airgap.emulators.server import BadRequest, Request, Response
from airgap.errors import ConfigError

__all__ = [
    "DEFAULT_UTILITY_POOLS",
    "DEMO_REGKEY_POOL",
    "EULA_TEXT",
    "HYPERVISORS",
    "REGKEY_EULA",
    "REGKEY_EULA_2",
    "REGKEY_FAIL_ONCE",
    "REGKEY_PLAIN",
    "REGKEY_READY",
    "UNITS_OF_MEASURE",
    "Assignment",
    "BigIqEmulator",
    "MemberTask",
    "Offering",
    "Pool",
    "RegKeyPool",
    "RegKeySpec",
    "Token",
    "UtilityPool",
    "license_text",
    "normalize_mac",
    "parse_pool_specs",
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

_HOST: Final = "https://localhost"
_POOL_BASE: Final = "/mgmt/cm/device/licensing/pool"
_TASKS: Final = "/mgmt/cm/device/tasks/licensing/pool/member-management"
_ASSIGNMENTS: Final = "/mgmt/cm/device/licensing/assignments"
_TOKENS: Final = "/mgmt/shared/authz/tokens"
_USER_LINK: Final = _HOST + "/mgmt/shared/authz/users/admin"
_NAMESPACE: Final = uuid.UUID("6b1f0c52-8d3e-4f7a-9c41-2e5d7a90b3c8")

_REGKEY_RE: Final = re.compile(r"^[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{7}$")
_ADDON_RE: Final = re.compile(r"^[A-Z0-9]{7}-[A-Z0-9]{7}$")
_LICENSE_REGKEY_RE: Final = re.compile(r"^Registration Key\s*:\s*(\S+)\s*$", re.MULTILINE)
_MAC_SEPARATORS: Final = re.compile(r"[:\-.\s]")
_HEX12: Final = re.compile(r"^[0-9A-Fa-f]{12}$")

# Offering statuses, as BIG-IQ spells them.
AUTOMATIC: Final = "ACTIVATING_AUTOMATIC"
MANUAL: Final = "ACTIVATING_MANUAL"
NEED_EULA: Final = "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT"
EULA_ACCEPTED: Final = "ACTIVATING_AUTOMATIC_EULA_ACCEPTED"
NEED_LICENSE_TEXT: Final = "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
LICENSE_TEXT_PROVIDED: Final = "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED"
READY: Final = "READY"
ACTIVATION_FAILED: Final = "ACTIVATION_FAILED"

_UTILITY_MODULE_TAIL: Final = (
    "Rate Shaping|Anti-Virus Checks|Base Endpoint Security Checks|Firewall Checks|Network Access|"
    "Secure Virtual Keyboard|APM, Web Application|Machine Certificate Checks|Protected Workspace|"
    "Remote Desktop|App Tunnel"
)


# --- public helpers -------------------------------------------------------------------------


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


def parse_pool_specs(specs: Iterable[str]) -> dict[str, int]:
    """Parse repeated `--pool NAME:CAPACITY` options into the `pools` constructor argument.

    Args:
        specs: strings such as `VE-UTILITY-POOL-1G:500`; the last colon splits name and capacity.

    Raises:
        ConfigError: a spec is malformed, a capacity is not a whole number >= 0, or a name repeats.

    Returns:
        Pool name to capacity, in the order given.
    """
    pools: dict[str, int] = {}
    for spec in specs:
        name, sep, capacity_text = spec.rpartition(":")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"--pool {spec!r}: expected NAME:CAPACITY",
                hint="For example --pool VE-UTILITY-POOL-1G:500.",
            )
        try:
            capacity = int(capacity_text)
        except ValueError:
            raise ConfigError(f"--pool {spec!r}: capacity must be a whole number") from None
        if capacity < 0:
            raise ConfigError(f"--pool {spec!r}: capacity must not be negative")
        if name in pools:
            raise ConfigError(f"--pool {spec!r}: pool {name!r} is given twice")
        pools[name] = capacity
    return pools


def license_text(
    reg_key: str,
    *,
    dossier: str,
    licensed_version: str = "8.3.0",
    active_module: str | None = None,
    mac: str | None = None,
    pool_information: str | None = None,
    license_manager_key: str | None = None,
    licensed: date | None = None,
    start: date | None = None,
    end: date | None = None,
) -> str:
    """Build a BIG-IP license file shaped like samples/f5/bigip.license (signatures are fake).

    The emulator returns these from finished assign tasks and READY offerings; tests use it to
    make the license text a manual activation expects (`Registration Key` must match).

    Args:
        reg_key: the `Registration Key` line.
        dossier: hex dossier; its first 128 characters go on the `Dossier` line.
        licensed_version: the `Licensed version` line.
        active_module: the first `active module` value; a VE-1G LTM module by default.
        mac: for a pool assignment, the device's MAC, named in a comment of the manager block.
        pool_information: the `pool_license_information` value of a pool assignment.
        license_manager_key: the `license_manager_key` value of a pool assignment.
        licensed: the licensed and service check date (today by default).
        start: `License start`, written only with `end`.
        end: `License end`, written only with `start`.

    Returns:
        The license text, newline-terminated.
    """
    seed = hashlib.sha512(f"{reg_key}|{dossier}|{mac}".encode()).hexdigest()
    authorization = "".join(hashlib.sha512(f"{seed}|{i}".encode()).hexdigest() for i in range(4))[
        :512
    ]
    add_on = _fake_addon_key(reg_key)
    module = active_module or f"Local Traffic Manager, VE-1G|{add_on}|{_UTILITY_MODULE_TAIL}"
    module_name = module.split("|", 1)[0]
    module_key = module.split("|")[1] if "|" in module else add_on
    day = licensed or datetime.now(UTC).date()

    def kv(key: str, value: str) -> str:
        # Values start at column 36, as in /config/bigip.license.
        return f"{key + ' :':<35}{value}"

    lines = [
        "#",
        kv("Auth vers", "5b"),
        "#",
        "#",
        "#       BIG-IP System License Key File",
        "#       DO NOT EDIT THIS FILE!!",
        "#",
        '#       Install this file as "/config/bigip.license".',
        "#",
        "#       Contact information in file /CONTACTS",
        "#",
        "#",
        "#       Warning: Changing the system time while this system is running",
        "#                with a time-limited license may make the system unusable.",
        "#",
        kv("Usage", "Production"),
        "#",
        "#",
        "#  Only the specific use referenced above is allowed. Any other uses are prohibited.",
        "#",
        kv("Vendor", "F5, Inc."),
        "#",
        "#       Module List ",
        "#",
        kv("active module", module),
        kv("optional module", "Advanced Protocols, VE"),
        kv("optional module", "DNS and GTM (1K QPS), VE"),
        kv("optional module", "IP Intelligence, 1Yr, VE-1G"),
        kv("optional module", "Routing Bundle, VE"),
        kv("optional module", "SSL Orchestrator, VE-1G"),
        "#",
        "#       Accumulated Tokens for Module",
        f"#       {module_name}  perf_VE_throughput_Mbps 1000  key {module_key}",
        "#",
        kv("perf_VE_throughput_Mbps", "1000"),
        "#",
        f"#       License Tokens for Module {module_name} key {module_key}",
        "#",
        kv("perf_VE_cores", "8"),
        kv("perf_SSL_total_TPS", "UNLIMITED"),
        kv("mod_ltm", "enabled"),
        kv("ltm_lb", "enabled"),
        kv("ltm_persist", "enabled"),
        kv("ltm_monitor_tcp", "enabled"),
        kv("nw_routing_bgp", "disabled"),
        "#",
        "#       Version and Platform Restrictions",
        "#",
        *(kv("Exclusive_version", f"{v}.*.*") for v in (5, 6, 7, 8, 12, 13, 14, 15, 16, 17)),
        *(kv("Exclusive_Platform", p) for p in ("Z100", "Z100A", "Z100H", "Z100K", "Z100x")),
        "#",
        "#       Licensing Information ",
        "#",
        kv("Licensed date", day.strftime("%Y%m%d")),
    ]
    if start is not None and end is not None:
        lines += [kv("License start", start.strftime("%Y%m%d"))]
        lines += [kv("License end", end.strftime("%Y%m%d"))]
    lines += [
        kv("Service check date", day.strftime("%Y%m%d")),
        "#",
        "#       Platform Information ",
        "#",
        kv("Registration Key", reg_key),
        kv("Licensed version", licensed_version),
        kv("Platform ID", "Z100"),
    ]
    if mac is not None or pool_information is not None or license_manager_key is not None:
        lines += ["#", "#       License Manager Information", "#"]
        if mac is not None:
            lines += [f"#       Assigned to the device with MAC address {mac}", "#"]
        if license_manager_key is not None:
            lines += [kv("license_manager_key", license_manager_key)]
        if pool_information is not None:
            lines += [kv("pool_license_information", pool_information)]
    lines += [
        "#",
        "#       Outbound License Dossier Validation",
        "#",
        kv("Dossier", dossier[:128]),
        "#",
        "#       Outbound License Authorization Signature",
        "#",
        kv("Authorization", authorization),
        "#",
        "#-----------------------------------------",
        f"# Copyright 1996-{day.year}, F5, Inc.",
        "# All rights reserved. ",
        "#-----------------------------------------",
    ]
    return "\n".join(lines) + "\n"


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
class _Pending:
    """A status change decided now and shown once `due` (clock seconds) has passed."""

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
    pending: _Pending | None = None
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


class _HttpError(Exception):
    """An API error the emulator answers in BIG-IQ's error shape; never leaves `handle()`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the emulator ---------------------------------------------------------------------------


class BigIqEmulator:
    """F5 BIG-IQ License Manager as an `App` for `EmulatorServer`.

    CLI mapping for `airgap emulate bigiq`: `--token-ttl S` -> `token_ttl`, `--password P` ->
    `password`, `--task-delay S` -> `task_delay`, `--pool NAME:CAPACITY`... ->
    `pools=parse_pool_specs(...)`; `--port`, `--latency`, `--faults`, `--tls`, `--cert-out` belong
    to `EmulatorServer`.
    """

    def __init__(
        self,
        *,
        token_ttl: float = 300.0,
        refresh_ttl: float = 36000.0,
        password: str | None = None,
        task_delay: float = 0.0,
        pools: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        version: str = "8.3.0",
    ) -> None:
        """Build an emulator with a fresh state.

        Args:
            token_ttl: seconds an access token lives (BIG-IQ: 300).
            refresh_ttl: seconds a refresh token lives (BIG-IQ: 36000).
            password: the password user `admin` must give; None accepts any non-empty one.
            task_delay: seconds tasks and activations stay in progress before showing the outcome.
            pools: utility pools, name to capacity; None gives `{"demo-utility": 1000}`. The
                RegKey pool `demo-regkey` is always there.
            clock: monotonic seconds, for token expiry and delays; tests pass a fake one.
            version: the BIG-IQ version the version endpoint reports.

        Raises:
            ConfigError: a lifetime is not positive, the delay or a capacity is negative, the
                password is empty, or a pool name is empty or `demo-regkey`.
        """
        if token_ttl <= 0 or refresh_ttl <= 0:
            raise ConfigError("token lifetimes must be positive")
        if task_delay < 0:
            raise ConfigError("task delay must not be negative")
        if password == "":
            raise ConfigError("the emulator password must not be empty")
        utility = dict(DEFAULT_UTILITY_POOLS if pools is None else pools)
        for name, capacity in utility.items():
            if not name or name == DEMO_REGKEY_POOL:
                raise ConfigError(f"utility pool name {name!r} is not allowed")
            if capacity < 0:
                raise ConfigError(f"pool {name!r}: capacity must not be negative")

        self.token_ttl = token_ttl
        self.refresh_ttl = refresh_ttl
        self.password = password
        self.task_delay = task_delay
        self.clock = clock
        self.version = version
        self.lock = threading.RLock()  # one lock for all state; tests may hold it to edit state
        self.machine_id = str(uuid.uuid5(_NAMESPACE, "bigiq-emulator"))

        self._clock0 = clock()
        self._wall0 = time.time()
        self._secret = secrets.token_bytes(32)
        self._rest_operation = 0
        self.generation = 1  # bumped on every state change; collections report it

        now_micros = self._micros(self._clock0)
        self.tokens: dict[str, Token] = {}
        self.tasks: dict[str, MemberTask] = {}  # creation order
        self.pools: dict[str, Pool] = {}
        for name, capacity in utility.items():
            self.pools[name] = UtilityPool(
                name=name,
                capacity=capacity,
                reg_key=_fake_regkey(f"utility:{name}"),
                offering_id=str(uuid.uuid5(_NAMESPACE, f"offering:{name}")),
                created_micros=now_micros,
            )
        # What the emulated activate.f5.com knows; tests may add keys.
        self.regkeys: dict[str, RegKeySpec] = {
            REGKEY_PLAIN: RegKeySpec(),
            REGKEY_EULA: RegKeySpec(eula=True),
            REGKEY_EULA_2: RegKeySpec(eula=True),
            REGKEY_FAIL_ONCE: RegKeySpec(fail_times=1),
            **{key: RegKeySpec() for key in REGKEY_READY},
        }
        regkey_pool = RegKeyPool(
            name=DEMO_REGKEY_POOL,
            id=str(uuid.uuid5(_NAMESPACE, f"pool:{DEMO_REGKEY_POOL}")),
            created_micros=now_micros,
        )
        for key in REGKEY_READY:
            dossier = _dossier(key, [])
            regkey_pool.offerings[key] = Offering(
                reg_key=key,
                pool_id=regkey_pool.id,
                status=READY,
                message="Activated",
                dossier=dossier,
                description="Preloaded by the emulator",
                license_text=license_text(key, dossier=dossier, licensed_version=version),
                last_update_micros=now_micros,
            )
        self.pools[DEMO_REGKEY_POOL] = regkey_pool

        self.calls: Counter[str] = Counter()
        self.mutations: dict[str, Counter[str]] = {}
        self.token_stats: Counter[str] = Counter()
        self.offering_stats: dict[str, Counter[str]] = {}

    # --- App interface ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one API request as BIG-IQ would.

        Args:
            request: the parsed HTTP request from `EmulatorServer`.

        Returns:
            A JSON response; errors use BIG-IQ's `{"code","message","errorStack","kind"}` shape.
        """
        path = re.sub(r"/{2,}", "/", unquote(request.path))
        if len(path) > 1:
            path = path.rstrip("/")  # real clients POST to collections with a trailing slash
        with self.lock:
            try:
                return self._dispatch(request, path)
            except _HttpError as exc:
                return self._error(exc.status, exc.message)
            except BadRequest as exc:
                return self._error(400, f"Invalid request body: {exc}")

    def stats(self) -> dict[str, Any]:
        """Counters for `GET /_emulator/stats`.

        Returns:
            `calls` per route or action (`login`, `assign`, `task.get`...); `mutations` per MAC
            (`assign`/`revoke` that changed state); `tokens` (`logins`, `login_failures`,
            `refreshes`, `refresh_failures`, `expired`, `unauthorized`, `logouts`); `offerings`
            per regKey; `pools` with capacity, assigned and available counts; `tasks`.
        """
        with self.lock:
            pools: dict[str, dict[str, Any]] = {}
            for name, pool in self.pools.items():
                pools[name] = {
                    "type": pool.license_type,
                    "capacity": pool.capacity,
                    "assigned": len(pool.members),
                    "available": pool.available(),
                }
            return {
                "calls": dict(self.calls),
                "mutations": {mac: dict(c) for mac, c in self.mutations.items()},
                "tokens": {
                    key: self.token_stats[key]
                    for key in (
                        "logins",
                        "login_failures",
                        "refreshes",
                        "refresh_failures",
                        "expired",
                        "unauthorized",
                        "logouts",
                    )
                },
                "offerings": {key: dict(c) for key, c in self.offering_stats.items()},
                "pools": pools,
                "tasks": len(self.tasks),
            }

    # --- routing ----------------------------------------------------------------------------

    def _dispatch(self, request: Request, path: str) -> Response:
        allowed: list[str] = []
        for route in _ROUTES:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            params = match.groupdict()
            self.calls[route.name] += 1
            user = self._authenticate(request) if route.auth else None
            return route.handler(self, request, params, user)
        if allowed:
            self.calls["method-not-allowed"] += 1
            raise _HttpError(405, f"Method {request.method} not allowed on {path}")
        self.calls["unknown"] += 1
        raise _HttpError(404, f"Public URI path not registered: {path}")

    def _authenticate(self, request: Request) -> Token:
        raw = request.headers.get("x-f5-auth-token", "").strip()
        if not raw:
            self.token_stats["unauthorized"] += 1
            raise _HttpError(
                401,
                "Authorization failed: no user authentication header or token detected. "
                f"Uri:{request.path}",
            )
        token = self.tokens.get(raw)
        if token is None or token.kind != "access":
            self.token_stats["unauthorized"] += 1
            raise _HttpError(401, "X-F5-Auth-Token does not exist.")
        if self.clock() >= token.expires:
            self.token_stats["expired"] += 1
            raise _HttpError(401, "invalid registered claims")
        return token

    # --- time, links, errors ------------------------------------------------------------------

    def _micros(self, now: float) -> int:
        # Wall time that follows `clock`, so a fake clock moves dates and expiry together.
        return int((self._wall0 + (now - self._clock0)) * 1_000_000)

    def _changed(self) -> None:
        self.generation += 1

    def _error(self, status: int, message: str) -> Response:
        self._rest_operation += 1
        return Response.json(
            status,
            {
                "code": status,
                "message": message,
                "restOperationId": self._rest_operation,
                "errorStack": [],
                "kind": ":resterrorresponse",
            },
        )

    def _collection(
        self,
        path: str,
        kind: str,
        items: list[dict[str, Any]],
        query: Mapping[str, list[str]],
    ) -> Response:
        selected, total = _apply_query(items, query)
        body: dict[str, Any] = {
            "items": selected,
            "generation": self.generation,
            "kind": kind,
            "lastUpdateMicros": self._micros(self.clock()),
            "selfLink": _HOST + path,
        }
        if any(k in query for k in ("$filter", "$top", "$skip")):
            body["totalItems"] = total
        return Response.json(200, body)

    # --- authentication -----------------------------------------------------------------------

    def _login(self, request: Request, _params: dict[str, str], _user: Token | None) -> Response:
        body = request.json() if request.body.strip() else {}
        if not isinstance(body, dict):
            raise _HttpError(400, "The login request must be a JSON object")
        username, password = body.get("username"), body.get("password")
        if username is None and password is None:
            # Some clients send only a Basic Authorization header.
            username, password = _basic_credentials(request.headers.get("authorization", ""))
        provider = body.get("loginProviderName") or "local"
        ok = (
            username == "admin"
            and isinstance(password, str)
            and password != ""
            and (self.password is None or hmac.compare_digest(password, self.password))
            and provider in ("local", "tmos")
        )
        if not ok:
            self.token_stats["login_failures"] += 1
            raise _HttpError(401, "Authentication failed.")
        self.token_stats["logins"] += 1
        access, refresh = self._issue("admin", str(provider))
        return Response.json(
            200,
            {
                "username": "admin",
                "loginReference": {
                    "link": f"{_HOST}/mgmt/cm/system/authn/providers/{provider}/login"
                },
                "loginProviderName": provider,
                "token": self._render_token(access),
                "refreshToken": self._render_token(refresh),
                "generation": 0,
                "lastUpdateMicros": 0,
            },
        )

    def _exchange(self, request: Request, _params: dict[str, str], _user: Token | None) -> Response:
        # No X-F5-Auth-Token check: clients call this precisely when theirs has expired.
        body = request.json()
        ref = body.get("refreshToken") if isinstance(body, dict) else None
        raw = ref.get("token") if isinstance(ref, dict) else ref
        token = self.tokens.get(raw) if isinstance(raw, str) else None
        if token is None or token.kind != "refresh":
            self.token_stats["refresh_failures"] += 1
            raise _HttpError(401, "Refresh token does not exist.")
        if self.clock() >= token.expires:
            self.token_stats["refresh_failures"] += 1
            raise _HttpError(401, "invalid registered claims")
        self.token_stats["refreshes"] += 1
        access, refresh = self._issue(token.username, token.provider)
        return Response.json(
            200,
            {
                "username": token.username,
                "loginProviderName": token.provider,
                "token": self._render_token(access),
                "refreshToken": self._render_token(refresh),
                "generation": 0,
                "lastUpdateMicros": 0,
            },
        )

    def _token_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        token = self.tokens.get(params["token"])
        if token is None:
            raise _HttpError(404, f"Object not found - {_TOKENS}/{params['token']}")
        return Response.json(200, self._render_token(token))

    def _logout(self, _request: Request, params: dict[str, str], _user: Token | None) -> Response:
        token = self.tokens.pop(params["token"], None)
        if token is None:
            raise _HttpError(404, f"Object not found - {_TOKENS}/{params['token']}")
        self.token_stats["logouts"] += 1
        return Response.json(200, self._render_token(token))

    def _issue(self, username: str, provider: str) -> tuple[Token, Token]:
        now = self.clock()
        pair: list[Token] = []
        kinds: tuple[Literal["access", "refresh"], ...] = ("access", "refresh")
        for kind in kinds:
            ttl = self.token_ttl if kind == "access" else self.refresh_ttl
            start = self._micros(now)
            raw = self._jwt(username, provider, kind, start, ttl)
            token = Token(
                token=raw,
                kind=kind,
                username=username,
                provider=provider,
                ttl=ttl,
                expires=now + ttl,
                start_micros=start,
                expiration_micros=start + int(ttl * 1_000_000),
            )
            self.tokens[raw] = token
            pair.append(token)
        return pair[0], pair[1]

    def _jwt(self, username: str, provider: str, kind: str, start_micros: int, ttl: float) -> str:
        # BIG-IQ tokens are JWTs (hence "invalid registered claims"); clients must not parse them.
        claims = {
            "iss": "BIG-IQ",
            "jti": secrets.token_urlsafe(16),
            "sub": username,
            "iat": start_micros // 1_000_000,
            "exp": (start_micros + int(ttl * 1_000_000)) // 1_000_000,
            "userName": username,
            "authProviderName": provider,
            "tokenType": kind.upper(),
        }
        head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self._secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        return f"{head}.{payload}.{_b64url(sig)}"

    def _render_token(self, token: Token) -> dict[str, Any]:
        return {
            "token": token.token,
            "name": token.token,
            "userName": token.username,
            "authProviderName": token.provider,
            "user": {"link": _USER_LINK},
            "groupReferences": [],
            "timeout": int(token.ttl) if float(token.ttl).is_integer() else token.ttl,
            "startTime": _iso(token.start_micros),
            "address": "127.0.0.1",
            "partition": "[All]",
            "generation": 1,
            "lastUpdateMicros": token.start_micros,
            "expirationMicros": token.expiration_micros,
            "kind": "shared:authz:tokens:authtokenitemstate",
            "selfLink": f"{_HOST}{_TOKENS}/{token.token}",
        }

    # --- version ------------------------------------------------------------------------------

    def _devices(self, request: Request, _params: dict[str, str], _user: Token | None) -> Response:
        path = "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices"
        item = {
            "uuid": self.machine_id,
            "machineId": self.machine_id,
            "deviceUri": "https://127.0.0.1:443",
            "hostname": "bigiq-emulator.localdomain",
            "address": "127.0.0.1",
            "product": "BIG-IQ",
            "version": self.version,
            "build": "0.0.1",
            "edition": "Final",
            "isVirtual": True,
            "generation": 1,
            "lastUpdateMicros": self._micros(self._clock0),
            "kind": "shared:resolver:device-groups:restdeviceresolverdevicestate",
            "selfLink": f"{_HOST}{path}/{self.machine_id}",
        }
        return self._collection(
            path,
            "shared:resolver:device-groups:devicegroupdevicecollectionstate",
            [item],
            request.query,
        )

    def _device_info(
        self, _request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(
            200,
            {
                "machineId": self.machine_id,
                "hostname": "bigiq-emulator.localdomain",
                "product": "BIG-IQ",
                "version": self.version,
                "build": "0.0.1",
                "edition": "Final",
                "isVirtual": True,
                "generation": 0,
                "lastUpdateMicros": 0,
                "kind": "shared:resolver:device-groups:deviceinfostate",
                "selfLink": f"{_HOST}/mgmt/shared/identified-devices/config/device-info",
            },
        )

    # --- pools ----------------------------------------------------------------------------------

    def _utility_pool(self, reg_key: str) -> UtilityPool:
        for pool in self.pools.values():
            if isinstance(pool, UtilityPool) and pool.reg_key == reg_key:
                return pool
        raise _HttpError(404, f"Object not found - {_POOL_BASE}/utility/licenses/{reg_key}")

    def _regkey_pool(self, pool_id: str) -> RegKeyPool:
        for pool in self.pools.values():
            if isinstance(pool, RegKeyPool) and pool.id == pool_id:
                return pool
        raise _HttpError(404, f"Object not found - {_POOL_BASE}/regkey/licenses/{pool_id}")

    def _render_utility_pool(self, pool: UtilityPool) -> dict[str, Any]:
        return {
            "regKey": pool.reg_key,
            "name": pool.name,
            "sortName": "Utility Pool",
            "status": READY,
            "message": "Activated",
            "generation": 1 + len(pool.members),
            "lastUpdateMicros": pool.created_micros,
            "kind": "cm:device:licensing:pool:utility:licenses:regkeypoollicensestate",
            "selfLink": f"{_HOST}{_POOL_BASE}/utility/licenses/{pool.reg_key}",
        }

    def _render_regkey_pool(self, pool: RegKeyPool) -> dict[str, Any]:
        return {
            "id": pool.id,
            "name": pool.name,
            "sortName": "Registration Key Pool",
            "generation": 1 + len(pool.offerings),
            "lastUpdateMicros": pool.created_micros,
            "kind": "cm:device:licensing:pool:regkey:licenses:regkeypoollicensestate",
            "selfLink": f"{_HOST}{_POOL_BASE}/regkey/licenses/{pool.id}",
        }

    def _utility_pools(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        items = [
            self._render_utility_pool(p) for p in self.pools.values() if isinstance(p, UtilityPool)
        ]
        return self._collection(
            f"{_POOL_BASE}/utility/licenses",
            "cm:device:licensing:pool:utility:licenses:regkeypoollicensecollectionstate",
            items,
            request.query,
        )

    def _utility_pool_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(200, self._render_utility_pool(self._utility_pool(params["key"])))

    def _utility_offerings(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._utility_pool(params["key"])
        base = f"{_POOL_BASE}/utility/licenses/{pool.reg_key}/offerings"
        item = {
            "id": pool.offering_id,
            "name": pool.offering_name,
            "status": "VALID",
            "licenseCount": pool.capacity,
            "generation": 1,
            "lastUpdateMicros": pool.created_micros,
            "kind": "cm:device:licensing:pool:utility:licenses:offerings:utilityofferingstate",
            "selfLink": f"{_HOST}{base}/{pool.offering_id}",
        }
        return self._collection(
            base,
            "cm:device:licensing:pool:utility:licenses:offerings:utilityofferingcollectionstate",
            [item],
            request.query,
        )

    def _utility_members(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._utility_pool(params["key"])
        if params["offering"] != pool.offering_id:
            raise _HttpError(404, f"Object not found - {request.path}")
        base = f"{_POOL_BASE}/utility/licenses/{pool.reg_key}/offerings/{pool.offering_id}/members"
        members = [self._render_member(pool, a) for a in pool.members.values()]
        if "member" in params:
            for member in members:
                if member["id"] == params["member"]:
                    return Response.json(200, member)
            raise _HttpError(404, f"Object not found - {base}/{params['member']}")
        return self._collection(
            base,
            "cm:device:licensing:pool:utility:licenses:offerings:members:"
            "utilitylicensemembercollectionstate",
            members,
            request.query,
        )

    def _regkey_pools(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        items = [
            self._render_regkey_pool(p) for p in self.pools.values() if isinstance(p, RegKeyPool)
        ]
        return self._collection(
            f"{_POOL_BASE}/regkey/licenses",
            "cm:device:licensing:pool:regkey:licenses:regkeypoollicensecollectionstate",
            items,
            request.query,
        )

    def _regkey_pool_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(200, self._render_regkey_pool(self._regkey_pool(params["pool"])))

    # --- RegKey offerings -----------------------------------------------------------------------

    def _offering(self, pool: RegKeyPool, reg_key: str) -> Offering:
        offering = pool.offerings.get(reg_key.upper())
        if offering is None:
            raise _HttpError(
                404,
                f"Object not found - {_POOL_BASE}/regkey/licenses/{pool.id}/offerings/{reg_key}",
            )
        self._advance(offering)
        return offering

    def _advance(self, offering: Offering) -> None:
        # Apply a status change whose time has come; its outcome was fixed when it was asked for.
        pending = offering.pending
        if pending is None or self.clock() < pending.due:
            return
        offering.pending = None
        offering.status = pending.status
        offering.message = pending.message
        offering.eula_text = pending.eula_text
        if pending.license_text is not None:
            offering.license_text = pending.license_text
        offering.generation += 1
        offering.last_update_micros = self._micros(pending.due)

    def _offering_stat(self, reg_key: str, what: str) -> None:
        self.offering_stats.setdefault(reg_key, Counter())[what] += 1
        self._changed()

    def _start_activation(self, offering: Offering, mode: str) -> None:
        now = self.clock()
        due = now + self.task_delay
        offering.eula_text = None
        offering.license_text = None
        offering.generation += 1
        offering.last_update_micros = self._micros(now)
        if mode == MANUAL:
            offering.status, offering.message = MANUAL, "Manual activation in progress"
            offering.pending = _Pending(
                due, NEED_LICENSE_TEXT, "Provide the license text from activate.f5.com"
            )
            return
        offering.status, offering.message = AUTOMATIC, "Automatic activation in progress"
        spec = self.regkeys.get(offering.reg_key)
        if spec is None:
            offering.pending = _Pending(
                due,
                ACTIVATION_FAILED,
                f"Registration key {offering.reg_key} is not valid: "
                "the F5 license server does not recognize it",
            )
        elif spec.fail_times > 0:
            spec.fail_times -= 1  # decided now, so a retry is what makes it work
            offering.pending = _Pending(
                due,
                ACTIVATION_FAILED,
                "Automatic activation failed: the F5 license server did not answer in time; "
                "retry the activation",
            )
        elif spec.eula:
            offering.pending = _Pending(due, NEED_EULA, "Accept EULA to continue", EULA_TEXT)
        else:
            offering.pending = _Pending(
                due, READY, "Activated", license_text=self._offering_license(offering)
            )

    def _offering_license(self, offering: Offering) -> str:
        return license_text(
            offering.reg_key, dossier=offering.dossier, licensed_version=self.version
        )

    def _render_offering(self, offering: Offering) -> dict[str, Any]:
        link = (
            f"{_HOST}{_POOL_BASE}/regkey/licenses/{offering.pool_id}/offerings/{offering.reg_key}"
        )
        body: dict[str, Any] = {
            "regKey": offering.reg_key,
            "name": f"License for {offering.reg_key}",
            "sortName": "Registration Key Pool Item",
            "description": offering.description,
            "addOnKeys": list(offering.add_on_keys),
            "status": offering.status,
            "message": offering.message,
            "dossier": offering.dossier,
        }
        if offering.eula_text is not None:
            body["eulaText"] = offering.eula_text
        if offering.license_text is not None and offering.status == READY:
            body["licenseText"] = offering.license_text
            body["licenseState"] = {
                "vendor": "F5, Inc.",
                "registrationKey": offering.reg_key,
                "licensedVersion": self.version,
                "licensedDateTime": _iso(offering.last_update_micros),
            }
        body.update(
            {
                "generation": offering.generation,
                "lastUpdateMicros": offering.last_update_micros,
                "kind": "cm:device:licensing:pool:regkey:licenses:item:offerings:"
                "regkeypoollicenseofferingstate",
                "selfLink": link,
            }
        )
        return body

    def _offerings_list(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        for offering in pool.offerings.values():
            self._advance(offering)
        return self._collection(
            f"{_POOL_BASE}/regkey/licenses/{pool.id}/offerings",
            "cm:device:licensing:pool:regkey:licenses:item:offerings:"
            "regkeypoollicenseofferingcollectionstate",
            [self._render_offering(o) for o in pool.offerings.values()],
            request.query,
        )

    def _offering_create(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        body = _json_object(request)
        raw_key = body.get("regKey")
        reg_key = raw_key.strip().upper() if isinstance(raw_key, str) else ""
        if not _REGKEY_RE.match(reg_key):
            raise _HttpError(400, f"Invalid registration key '{raw_key}'")
        status = body.get("status", AUTOMATIC)
        if status not in (AUTOMATIC, MANUAL):
            raise _HttpError(
                400, f"Invalid status '{status}'; use {AUTOMATIC} or {MANUAL} to add a key"
            )
        add_on_keys = _add_on_keys(body)
        for other in self.pools.values():
            if isinstance(other, RegKeyPool) and reg_key in other.offerings:
                raise _HttpError(
                    400, f"Registration key {reg_key} already exists in pool '{other.name}'"
                )
        description = body.get("description")
        offering = Offering(
            reg_key=reg_key,
            pool_id=pool.id,
            status=str(status),
            message="",
            dossier=_dossier(reg_key, add_on_keys),
            description=description if isinstance(description, str) else "",
            add_on_keys=add_on_keys,
            generation=0,
        )
        self._start_activation(offering, str(status))
        pool.offerings[reg_key] = offering
        self._offering_stat(reg_key, "create")
        return Response.json(200, self._render_offering(offering))

    def _offering_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        return Response.json(200, self._render_offering(self._offering(pool, params["key"])))

    def _offering_patch(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        offering = self._offering(pool, params["key"])
        body = _json_object(request)
        status = body.get("status")
        if offering.pending is not None and status is not None:
            raise _HttpError(
                400,
                f"Registration key {offering.reg_key} is {offering.status}; "
                "wait for the activation step to finish",
            )
        if isinstance(body.get("description"), str):
            offering.description = body["description"]
            offering.generation += 1
        if status is None:
            self._offering_stat(offering.reg_key, "patch")
            return Response.json(200, self._render_offering(offering))
        if status == EULA_ACCEPTED and offering.status == NEED_EULA:
            if body.get("eulaText") != offering.eula_text:
                raise _HttpError(400, "eulaText must be the EULA text presented, unchanged")
            offering.status, offering.message = EULA_ACCEPTED, "Finishing activation"
            offering.eula_text = None
            offering.pending = _Pending(
                self.clock() + self.task_delay,
                READY,
                "Activated",
                license_text=self._offering_license(offering),
            )
            offering.generation += 1
            self._offering_stat(offering.reg_key, "eula_accept")
        elif status == LICENSE_TEXT_PROVIDED and offering.status == NEED_LICENSE_TEXT:
            text = body.get("licenseText")
            if not isinstance(text, str) or not text.strip():
                raise _HttpError(400, "licenseText is required")
            # BIG-IQ answers this one synchronously: READY or ACTIVATION_FAILED.
            keys = _LICENSE_REGKEY_RE.findall(text)
            if keys == [offering.reg_key]:
                offering.status, offering.message = READY, "Activated"
                offering.license_text = text
            else:
                offering.status = ACTIVATION_FAILED
                offering.message = (
                    f"The license text is not for registration key {offering.reg_key}"
                )
            offering.generation += 1
            self._offering_stat(offering.reg_key, "license_text")
        elif status in (AUTOMATIC, MANUAL) and offering.status in (ACTIVATION_FAILED, READY):
            if offering.assigned_to:
                raise _HttpError(
                    400,
                    f"Registration key {offering.reg_key} is assigned to "
                    f"{offering.assigned_to}; revoke it before reactivating",
                )
            if "addOnKeys" in body:
                offering.add_on_keys = _add_on_keys(body)
                offering.dossier = _dossier(offering.reg_key, offering.add_on_keys)
            self._start_activation(offering, str(status))
            self._offering_stat(offering.reg_key, "activate")
        else:
            raise _HttpError(
                400,
                f"Cannot change the status of {offering.reg_key} from {offering.status} "
                f"to {status}",
            )
        offering.last_update_micros = self._micros(self.clock())
        return Response.json(200, self._render_offering(offering))

    def _offering_delete(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        offering = self._offering(pool, params["key"])
        if offering.assigned_to:
            raise _HttpError(
                400,
                f"Registration key {offering.reg_key} is assigned to the device with MAC "
                f"address {offering.assigned_to}; revoke the license before deleting the key",
            )
        del pool.offerings[offering.reg_key]
        self._offering_stat(offering.reg_key, "delete")
        return Response.json(200, self._render_offering(offering))

    def _offering_members(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        offering = self._offering(pool, params["key"])
        base = f"{_POOL_BASE}/regkey/licenses/{pool.id}/offerings/{offering.reg_key}/members"
        members = [
            self._render_member(pool, a)
            for a in pool.members.values()
            if a.reg_key == offering.reg_key
        ]
        if "member" in params:
            for member in members:
                if member["id"] == params["member"]:
                    return Response.json(200, member)
            raise _HttpError(404, f"Object not found - {base}/{params['member']}")
        return self._collection(
            base,
            "cm:device:licensing:pool:regkey:licenses:item:offerings:regkey:members:"
            "regkeypoollicensemembercollectionstate",
            members,
            request.query,
        )

    # --- member management ------------------------------------------------------------------

    def _member_link(self, pool: Pool, assignment: Assignment) -> str:
        if isinstance(pool, UtilityPool):
            return (
                f"{_HOST}{_POOL_BASE}/utility/licenses/{pool.reg_key}/offerings/"
                f"{pool.offering_id}/members/{assignment.id}"
            )
        return (
            f"{_HOST}{_POOL_BASE}/regkey/licenses/{pool.id}/offerings/{assignment.reg_key}"
            f"/members/{assignment.id}"
        )

    def _member_status(self, assignment: Assignment) -> str:
        return "LICENSED" if self.clock() >= assignment.ready_at else "INSTALLING"

    def _render_member(self, pool: Pool, assignment: Assignment) -> dict[str, Any]:
        status = self._member_status(assignment)
        kind = (
            "cm:device:licensing:pool:utility:licenses:offerings:members:utilitylicensememberstate"
            if isinstance(pool, UtilityPool)
            else "cm:device:licensing:pool:regkey:licenses:item:offerings:regkey:members:"
            "regkeypoollicensememberstate"
        )
        return {
            "id": assignment.id,
            "deviceAddress": assignment.address or "",
            "macAddress": assignment.mac,
            "assignmentType": "UNREACHABLE",
            "status": status,
            "message": "Device licensed" if status == "LICENSED" else "Assigning license",
            "generation": 1 if status == "INSTALLING" else 2,
            "lastUpdateMicros": assignment.created_micros,
            "kind": kind,
            "selfLink": self._member_link(pool, assignment),
        }

    def _member_management(
        self, request: Request, _params: dict[str, str], user: Token | None
    ) -> Response:
        body = _json_object(request)
        command = body.get("command")
        if command not in ("assign", "revoke"):
            raise _HttpError(400, f"Invalid command '{command}'; expected assign or revoke")
        self.calls[str(command)] += 1  # besides "member-management", which counts every POST
        assignment_type = body.get("assignmentType")
        if assignment_type != "UNREACHABLE":
            raise _HttpError(
                400,
                f"assignmentType '{assignment_type}' is not supported by this emulator; "
                "use UNREACHABLE",
            )
        now = self.clock()
        raw_mac = body.get("macAddress")
        mac = normalize_mac(raw_mac) if isinstance(raw_mac, str) else None
        pool_name = body.get("licensePoolName")
        task = MemberTask(
            id=str(uuid.uuid4()),
            command=str(command),
            body=dict(body),
            mac=mac or (raw_mac if isinstance(raw_mac, str) else ""),
            pool=pool_name if isinstance(pool_name, str) else "",
            username=user.username if user else "admin",
            created=now,
            created_micros=self._micros(now),
        )
        if command == "assign":
            self._decide_assign(task, body, mac, raw_mac)
        else:
            self._decide_revoke(task, mac, raw_mac)
        self._prune_tasks(now)
        self.tasks[task.id] = task
        self._changed()
        # The submit answer always shows STARTED, as on BIG-IQ; the outcome comes from a GET.
        return Response.json(202, self._render_task(task, just_created=True))

    def _decide_assign(
        self, task: MemberTask, body: dict[str, Any], mac: str | None, raw_mac: Any
    ) -> None:
        pool = self.pools.get(task.pool)
        hypervisor = body.get("hypervisor")
        unit = body.get("unitOfMeasure")
        if pool is None:
            task.error_message = f"License pool '{task.pool}' not found"
            return
        if hypervisor is None:
            task.error_message = "A hypervisor is required to license an unreachable device"
            return
        if hypervisor not in HYPERVISORS:
            task.error_message = (
                f"Invalid hypervisor '{hypervisor}'. Valid values are: "
                "aws, azure, gce, vmware, hyperv, kvm, xen, alibaba"
            )
            return
        if isinstance(pool, UtilityPool) and unit is None:
            task.error_message = "A unitOfMeasure is required to assign a utility license"
            return
        if unit is not None and unit not in UNITS_OF_MEASURE:
            task.error_message = (
                f"Invalid unitOfMeasure '{unit}'. Valid values are: yearly, monthly, daily, hourly"
            )
            return
        if mac is None:
            task.error_message = f"Invalid MAC address '{raw_mac}'"
            return
        for other in self.pools.values():
            if mac in other.members:
                task.error_message = (
                    f"The device with MAC address {mac} is already licensed "
                    f"from pool '{other.name}'"
                )
                return
        if isinstance(pool, UtilityPool):
            if pool.available() <= 0:
                task.error_message = f"There are no available licenses in pool '{pool.name}'"
                return
            reg_key = pool.reg_key
            offering: Offering | None = None
        else:
            offering = pool.free_offering()
            if offering is None:
                task.error_message = f"There are no available licenses in pool '{pool.name}'"
                return
            reg_key = offering.reg_key

        # Decided: consume the license now so concurrent assigns cannot overbook the pool.
        text = self._assignment_license(task, pool, reg_key, mac, body)
        assignment = Assignment(
            id=str(uuid.uuid4()),
            mac=mac,
            pool=pool.name,
            reg_key=reg_key,
            hypervisor=str(hypervisor),
            license_text=text,
            task_id=task.id,
            ready_at=task.created + self.task_delay,
            created_micros=task.created_micros,
            unit_of_measure=_opt_str(unit),
            sku_keyword1=_opt_str(body.get("skuKeyword1")),
            sku_keyword2=_opt_str(body.get("skuKeyword2")),
            tenant=_opt_str(body.get("tenant")),
            chargeback_tag=_opt_str(body.get("chargebackTag")),
            address=_opt_str(body.get("address")),
        )
        pool.members[mac] = assignment
        if offering is not None:
            offering.assigned_to = mac
        task.license_text = text
        task.assignment_link = self._member_link(pool, assignment)
        self.mutations.setdefault(mac, Counter({"assign": 0, "revoke": 0}))["assign"] += 1

    def _decide_revoke(self, task: MemberTask, mac: str | None, raw_mac: Any) -> None:
        pool = self.pools.get(task.pool)
        if pool is None:
            task.error_message = f"License pool '{task.pool}' not found"
            return
        if mac is None:
            task.error_message = f"Invalid MAC address '{raw_mac}'"
            return
        assignment = pool.members.pop(mac, None)
        if assignment is None:
            task.error_message = (
                f"The device with MAC address {mac} has no license assigned from pool '{pool.name}'"
            )
            return
        if isinstance(pool, RegKeyPool):
            offering = pool.offerings.get(assignment.reg_key)
            if offering is not None:
                offering.assigned_to = None
        self.mutations.setdefault(mac, Counter({"assign": 0, "revoke": 0}))["revoke"] += 1

    def _assignment_license(
        self, task: MemberTask, pool: Pool, reg_key: str, mac: str, body: dict[str, Any]
    ) -> str:
        day = datetime.fromtimestamp(task.created_micros / 1_000_000, UTC).date()
        seed = hashlib.sha512(f"{task.id}|{mac}|{reg_key}".encode()).digest()
        dossier = hashlib.sha512(seed + b"dossier").hexdigest()
        if isinstance(pool, UtilityPool):
            sku1 = _opt_str(body.get("skuKeyword1")) or "BT"
            sku2 = _opt_str(body.get("skuKeyword2")) or "1G"
            module = (
                f"F5-BIG-MSP-{sku1}-{sku2}-LIC|{_fake_addon_key(reg_key + mac)}|"
                f"{_UTILITY_MODULE_TAIL}"
            )
            term = {"yearly": 365, "monthly": 31, "daily": 1, "hourly": 1}
            days = term.get(str(body.get("unitOfMeasure")), 365)
            pool_info = base64.b64encode(
                hashlib.sha512(seed + b"pool").digest() * 3 + seed[:24]
            ).decode()
            return license_text(
                reg_key,
                dossier=dossier,
                licensed_version=self.version,
                active_module=module,
                mac=mac,
                pool_information=pool_info,
                license_manager_key=hashlib.sha512(self.machine_id.encode()).hexdigest(),
                licensed=day,
                start=day - timedelta(days=1),
                end=day + timedelta(days=days),
            )
        return license_text(
            reg_key,
            dossier=dossier,
            licensed_version=self.version,
            mac=mac,
            license_manager_key=hashlib.sha512(self.machine_id.encode()).hexdigest(),
            licensed=day,
        )

    def _prune_tasks(self, now: float) -> None:
        for task_id in [t.id for t in self.tasks.values() if now - t.created > TASK_RETENTION]:
            del self.tasks[task_id]

    def _render_task(self, task: MemberTask, *, just_created: bool = False) -> dict[str, Any]:
        done = not just_created and self.clock() >= task.created + self.task_delay
        if not done:
            status = "STARTED"
        else:
            status = "FAILED" if task.error_message is not None else "FINISHED"
        if task.command == "revoke":
            step = "REVOKE_LICENSE"
        elif status == "FINISHED":
            step = "LICENSE_ASSIGNMENT"
        else:
            step = "GET_LICENSE"
        body: dict[str, Any] = {
            "id": task.id,
            "command": task.command,
            "assignmentType": "UNREACHABLE",
            "licensePoolName": task.pool,
            "macAddress": task.mac,
        }
        for key in ("address", "hypervisor", "skuKeyword1", "skuKeyword2", "unitOfMeasure"):
            if isinstance(task.body.get(key), str):
                body[key] = task.body[key]
        for key in ("tenant", "chargebackTag"):
            if isinstance(task.body.get(key), str):
                body[key] = task.body[key]
        body.update(
            {
                "status": status,
                "currentStep": step,
                "startDateTime": _iso(task.created_micros),
                "username": task.username,
                "userReference": {"link": _USER_LINK},
                "identityReferences": [{"link": _USER_LINK}],
                "ownerMachineId": self.machine_id,
            }
        )
        last_update = task.created_micros
        if done:
            last_update = task.created_micros + int(self.task_delay * 1_000_000)
            body["endDateTime"] = _iso(last_update)
            if task.error_message is not None:
                body["errorMessage"] = task.error_message
            elif task.command == "assign":
                body["licenseAssignmentReference"] = {"link": task.assignment_link}
                body["licenseText"] = task.license_text
        body.update(
            {
                "generation": 1 if not done else 3,
                "lastUpdateMicros": last_update,
                "kind": "cm:device:tasks:licensing:pool:member-management:"
                "devicelicensingassignmenttaskstate",
                "selfLink": f"{_HOST}{_TASKS}/{task.id}",
            }
        )
        return body

    def _tasks_list(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        self._prune_tasks(self.clock())
        return self._collection(
            _TASKS,
            "cm:device:tasks:licensing:pool:member-management:"
            "devicelicensingassignmenttaskcollectionstate",
            [self._render_task(t) for t in self.tasks.values()],
            request.query,
        )

    def _task_get(self, _request: Request, params: dict[str, str], _user: Token | None) -> Response:
        task = self.tasks.get(params["id"])
        if task is None:
            raise _HttpError(404, f"Object not found - {_TASKS}/{params['id']}")
        return Response.json(200, self._render_task(task))

    # --- assignments ----------------------------------------------------------------------------

    def _render_assignment(self, pool: Pool, assignment: Assignment) -> dict[str, Any]:
        status = self._member_status(assignment)
        pool_ref: dict[str, Any] = {"name": pool.name, "licenseType": pool.license_type}
        if isinstance(pool, RegKeyPool):
            pool_ref["id"] = pool.id
        else:
            pool_ref["regKey"] = pool.reg_key
        body: dict[str, Any] = {
            "id": assignment.id,
            "assignmentType": "UNREACHABLE",
            "deviceAddress": assignment.address or "",
            "macAddress": assignment.mac,
            "hypervisor": assignment.hypervisor,
            "status": status,
            "message": "Device licensed" if status == "LICENSED" else "Assigning license",
            "licenseType": pool.license_type,
            "pool": pool_ref,
            "registrationKey": assignment.reg_key,
            "licenseReference": {"link": self._member_link(pool, assignment)},
            "auditRecordReference": {
                "link": f"{_HOST}/mgmt/cm/device/licensing/audit/{assignment.id}"
            },
        }
        optional = {
            "unitOfMeasure": assignment.unit_of_measure,
            "skuKeyword1": assignment.sku_keyword1,
            "skuKeyword2": assignment.sku_keyword2,
            "tenant": assignment.tenant,
            "chargebackTag": assignment.chargeback_tag,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(
            {
                "generation": 1 if status == "INSTALLING" else 2,
                "lastUpdateMicros": assignment.created_micros,
                "kind": "cm:device:licensing:assignments:licenseassignmentstate",
                "selfLink": f"{_HOST}{_ASSIGNMENTS}/{assignment.id}",
            }
        )
        return body

    def _all_assignments(self) -> list[dict[str, Any]]:
        rows = [(a, p) for p in self.pools.values() for a in p.members.values()]
        rows.sort(key=lambda row: (row[0].created_micros, row[0].id))
        return [self._render_assignment(p, a) for a, p in rows]

    def _assignments_list(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        return self._collection(
            _ASSIGNMENTS,
            "cm:device:licensing:assignments:licenseassignmentcollectionstate",
            self._all_assignments(),
            request.query,
        )

    def _assignment_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        for item in self._all_assignments():
            if item["id"] == params["id"]:
                return Response.json(200, item)
        raise _HttpError(404, f"Object not found - {_ASSIGNMENTS}/{params['id']}")


# --- routes ---------------------------------------------------------------------------------

_Handler: TypeAlias = Callable[[BigIqEmulator, Request, dict[str, str], Token | None], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # the key in stats()["calls"]
    handler: _Handler
    auth: bool = True


def _route(method: str, path: str, name: str, handler: _Handler, *, auth: bool = True) -> _Route:
    # `{name}` in `path` captures one path segment.
    parts = re.split(r"\{(\w+)\}", path)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return _Route(method, re.compile(regex), name, handler, auth)


_E = BigIqEmulator
_REGKEY_OFFERINGS = f"{_POOL_BASE}/regkey/licenses/{{pool}}/offerings"
_UTILITY_MEMBERS = f"{_POOL_BASE}/utility/licenses/{{key}}/offerings/{{offering}}/members"
_ROUTES: Final[tuple[_Route, ...]] = (
    _route("POST", "/mgmt/shared/authn/login", "login", _E._login, auth=False),
    _route("POST", "/mgmt/shared/authn/exchange", "exchange", _E._exchange, auth=False),
    _route("GET", f"{_TOKENS}/{{token}}", "token.get", _E._token_get),
    _route("DELETE", f"{_TOKENS}/{{token}}", "logout", _E._logout),
    _route(
        "GET",
        "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices",
        "version",
        _E._devices,
    ),
    _route(
        "GET", "/mgmt/shared/identified-devices/config/device-info", "device-info", _E._device_info
    ),
    _route("GET", f"{_POOL_BASE}/utility/licenses", "utility.pools", _E._utility_pools),
    _route("GET", f"{_POOL_BASE}/utility/licenses/{{key}}", "utility.pool", _E._utility_pool_get),
    _route(
        "GET",
        f"{_POOL_BASE}/utility/licenses/{{key}}/offerings",
        "utility.offerings",
        _E._utility_offerings,
    ),
    _route("GET", _UTILITY_MEMBERS, "utility.members", _E._utility_members),
    _route("GET", f"{_UTILITY_MEMBERS}/{{member}}", "utility.member", _E._utility_members),
    _route("GET", f"{_POOL_BASE}/regkey/licenses", "regkey.pools", _E._regkey_pools),
    _route("GET", f"{_POOL_BASE}/regkey/licenses/{{pool}}", "regkey.pool", _E._regkey_pool_get),
    _route("GET", _REGKEY_OFFERINGS, "offerings.list", _E._offerings_list),
    _route("POST", _REGKEY_OFFERINGS, "offering.create", _E._offering_create),
    _route("GET", f"{_REGKEY_OFFERINGS}/{{key}}", "offering.get", _E._offering_get),
    _route("PATCH", f"{_REGKEY_OFFERINGS}/{{key}}", "offering.patch", _E._offering_patch),
    _route("DELETE", f"{_REGKEY_OFFERINGS}/{{key}}", "offering.delete", _E._offering_delete),
    _route("GET", f"{_REGKEY_OFFERINGS}/{{key}}/members", "offering.members", _E._offering_members),
    _route(
        "GET",
        f"{_REGKEY_OFFERINGS}/{{key}}/members/{{member}}",
        "offering.member",
        _E._offering_members,
    ),
    _route("GET", _TASKS, "tasks.list", _E._tasks_list),
    _route("POST", _TASKS, "member-management", _E._member_management),
    _route("GET", f"{_TASKS}/{{id}}", "task.get", _E._task_get),
    _route("GET", _ASSIGNMENTS, "assignments.list", _E._assignments_list),
    _route("GET", f"{_ASSIGNMENTS}/{{id}}", "assignment.get", _E._assignment_get),
)


# --- query options ($filter, $top, $skip, $select, $orderby) --------------------------------

_Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
_MISSING: Final = object()
_FILTER_TOKEN: Final = re.compile(
    r"\s*(?:(?P<lparen>\()|(?P<rparen>\))|(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>-?\d+(?:\.\d+)?)(?![\w.])|(?P<word>[A-Za-z_$][\w$/.]*))"
)
_OPERATORS: Final = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


def _apply_query(
    items: list[dict[str, Any]], query: Mapping[str, list[str]]
) -> tuple[list[dict[str, Any]], int]:
    """Apply OData options to a rendered collection; return the page and the filtered count."""
    text = _first(query, "$filter")
    if text is not None and text.strip():
        predicate = _parse_filter(text)
        items = [item for item in items if predicate(item)]
    total = len(items)
    order = _first(query, "$orderby")
    if order and order.strip():
        field_name, _, direction = order.strip().partition(" ")
        items = sorted(
            items,
            key=lambda i: str(_lookup(i, field_name)),
            reverse=direction.strip().lower() == "desc",
        )
    skip = _int_option(query, "$skip")
    top = _int_option(query, "$top")
    if skip:
        items = items[skip:]
    if top is not None:
        items = items[:top]
    select = _first(query, "$select")
    if select and select.strip():
        fields = [f.strip() for f in select.split(",") if f.strip()]
        items = [{k: item[k] for k in fields if k in item} for item in items]
    return items, total


def _first(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _int_option(query: Mapping[str, list[str]], key: str) -> int | None:
    text = _first(query, key)
    if text is None or text.strip() == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _HttpError(400, f"Invalid {key} value '{text}'") from None
    if value < 0:
        raise _HttpError(400, f"Invalid {key} value '{text}'")
    return value


def _lookup(item: Mapping[str, Any], path: str) -> Any:
    current: Any = item
    for part in path.split("/"):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


def _parse_filter(text: str) -> _Predicate:
    """Compile a `$filter` such as `(name eq 'x')` or `macAddress eq '..' and status eq '..'`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _FILTER_TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise _HttpError(400, f"Invalid $filter expression: {text}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    parser = _FilterParser(tokens, text)
    predicate = parser.expression()
    if parser.pos != len(tokens):
        parser.fail()
    return predicate


class _FilterParser:
    """Recursive descent over `or` / `and` / `not` / parentheses / `field op value`."""

    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.pos = tokens, text, 0

    def fail(self) -> NoReturn:
        raise _HttpError(400, f"Invalid $filter expression: {self.text}")

    def peek_word(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word":
            return self.tokens[self.pos][1].lower()
        return None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            self.fail()
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expression(self) -> _Predicate:
        parts = [self.conjunction()]
        while self.peek_word() == "or":
            self.pos += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda i: any(p(i) for p in parts))

    def conjunction(self) -> _Predicate:
        parts = [self.unary()]
        while self.peek_word() == "and":
            self.pos += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda i: all(p(i) for p in parts))

    def unary(self) -> _Predicate:
        if self.peek_word() == "not":
            self.pos += 1
            inner = self.unary()
            return lambda i: not inner(i)
        kind, value = self.take()
        if kind == "lparen":
            inner = self.expression()
            if self.take()[0] != "rparen":
                self.fail()
            return inner
        if kind != "word":
            self.fail()
        field_name = value
        op_kind, op = self.take()
        if op_kind != "word" or op.lower() not in _OPERATORS:
            self.fail()
        literal = self.literal()
        return _comparison(field_name, op.lower(), literal)

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "word" and value.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value.lower()]
        self.fail()


def _comparison(field_name: str, op: str, literal: Any) -> _Predicate:
    is_mac = field_name.rsplit("/", 1)[-1].lower() == "macaddress"
    if is_mac and isinstance(literal, str):
        literal = normalize_mac(literal) or literal.upper()

    def predicate(item: Mapping[str, Any]) -> bool:
        value = _lookup(item, field_name)
        if value is _MISSING:
            return op == "ne"
        if is_mac and isinstance(value, str):
            value = normalize_mac(value) or value.upper()
        if op == "eq":
            return bool(value == literal)
        if op == "ne":
            return bool(value != literal)
        comparable = (isinstance(value, str) and isinstance(literal, str)) or (
            isinstance(value, int | float)
            and isinstance(literal, int | float)
            and not isinstance(value, bool)
        )
        if not comparable:
            return False
        if op == "gt":
            return bool(value > literal)
        if op == "ge":
            return bool(value >= literal)
        if op == "lt":
            return bool(value < literal)
        return bool(value <= literal)

    return predicate


# --- small helpers --------------------------------------------------------------------------


def _json_object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise _HttpError(400, "The request body must be a JSON object")
    return body


def _add_on_keys(body: Mapping[str, Any]) -> list[str]:
    raw = body.get("addOnKeys", [])
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise _HttpError(400, "addOnKeys must be a list of add-on registration keys")
    keys = [k.strip().upper() for k in raw]
    for key in keys:
        if not _ADDON_RE.match(key):
            raise _HttpError(400, f"Invalid add-on key '{key}'")
    return keys


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        username, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return username, password


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _iso(micros: int) -> str:
    # BIG-IQ writes e.g. 2024-10-14T09:22:47.518-0700; the emulator uses UTC.
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _digits(seed: str) -> str:
    return str(int(hashlib.sha256(seed.encode()).hexdigest(), 16)).zfill(40)


def _fake_regkey(seed: str) -> str:
    d = _digits(seed)
    letter = chr(ord("A") + int(d[-2:]) % 26)
    return f"{letter}{d[0:4]}-{d[4:9]}-{d[9:14]}-{d[14:19]}-{d[19:26]}"


def _fake_addon_key(seed: str) -> str:
    d = _digits("addon:" + seed)
    letter = chr(ord("A") + int(d[-2:]) % 26)
    return f"{letter}{d[0:6]}-{d[6:13]}"


def _dossier(reg_key: str, add_on_keys: list[str]) -> str:
    # Shaped like samples/f5/dossier.txt: one lowercase hex string, no separators.
    seed = f"{reg_key}|{','.join(add_on_keys)}"
    blob = "".join(hashlib.sha512(f"{seed}|{i}".encode()).hexdigest() for i in range(4))
    return blob[:462]
