"""Local emulator of a fleet of F5 BIG-IP devices over iControl REST: identity, dossiers, licenses.

`BigIpFleet` is an `App` for `airgap.emulators.server.EmulatorServer` served with one listening
port per device (`listeners=N`, `Request.listener` says which device a request is for); the server
owns HTTP, TLS, latency, the `--faults` kinds (429, 500, reset, slow) and `/_emulator/stats`.
Each device answers the calls F5's own clients make to license a box (the Ansible module
`bigip_device_license`, f5-cloud-libs and f5-sdk; docs/bigip.md lists every call, its source and
how it is answered):

- `POST /mgmt/shared/authn/login` and `X-F5-Auth-Token`, tokens that expire (`token_ttl`), token
  PATCH (timeout) and DELETE (logout); HTTP Basic `admin:<password>` on any call as well.
- `GET /mgmt/shared/identified-devices/config/device-info` (base MAC, hostname, version, ...).
- `POST /mgmt/tm/util/get-dossier` (`-b "<regkey>"`, add-ons with `-a`).
- `GET|PUT /mgmt/tm/shared/licensing/registration` (PUT `{"licenseText"}` installs).
- `POST /mgmt/tm/util/bash`, which runs NOTHING: it recognises a handful of licensing commands
  (write `/config/bigip.license`, `/usr/bin/reloadlic`, `tmsh show sys mcp-state`, read the license
  file) and emulates them; any other command is refused with 400 and counted as `refused_bash`.
- `GET /mgmt/tm/sys/mcp-state`, `GET /mgmt/tm/sys` and the `/available` probes f5-cloud-libs uses.

A license takes effect at `reloadlic` (or the PUT): mcpd restarts, every call to that device is
answered 503 for `restart_seconds`, then `mcp-state` reports `running` and the registration
shows the new key. Device faults on top of the server's: `auth` (a login or Basic credential is
refused) and `restart` (a spontaneous restart window), as rates in `--faults` or armed one-shot
for one device (`BigIpFleet.arm`, `POST /_emulator/device-faults`).

State is plain attributes tests may edit under `fleet.lock`: `fleet.devices[0].base_mac = ...`,
`fleet.devices[3].install(text)`. Not modelled: license signatures and dossier checks (any
license text with a well-formed `Registration Key` line loads), other tmsh or bash commands,
partitions, roles and users other than `admin`. Never imports `airgap.inside`, `airgap.outside` or
`airgap.devices`: the transport is tested against this, not against itself.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hmac
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote

from airgap.emulators import bigiq as _bigiq
from airgap.emulators.server import EmulatorServer, Faults, Request, Response
from airgap.errors import ConfigError

__all__ = [
    "CREDENTIAL_NAME",
    "DEFAULT_PLATFORM",
    "DEFAULT_RESTART_SECONDS",
    "DEFAULT_TOKEN_TTL",
    "DEFAULT_VERSION",
    "DEVICE_FAULTS",
    "INVENTORY_HEADER",
    "LICENSE_PATH",
    "STAT_KEYS",
    "USERNAME",
    "BigIpDevice",
    "BigIpFleet",
    "BigIpFleetServer",
    "build_bigip_fleet",
    "parse_fleet_faults",
    "start_bigip_fleet",
]

DEFAULT_VERSION: Final = "17.1.1.3"
DEFAULT_BUILD: Final = "0.0.5"
DEFAULT_PLATFORM: Final = "Z100"  # what every BIG-IP VE reports
DEFAULT_TOKEN_TTL: Final = 1200.0  # seconds; BIG-IP's default token timeout
DEFAULT_RESTART_SECONDS: Final = 2.0  # seconds mcpd is down after reloadlic
MAX_TOKEN_TIMEOUT: Final = 36000  # seconds; the longest timeout a token PATCH may set
LICENSE_PATH: Final = "/config/bigip.license"
DEVICE_FAULTS: Final = ("auth", "restart")
USERNAME: Final = "admin"  # the one user the devices know
CREDENTIAL_NAME: Final = "lab"  # what the inventory the emulator writes names as the credential
# The IOS XE emulator's inventory columns, in its order, so the two inventories concatenate
# (header once) into one that `inside collect` and `inside apply` take.
INVENTORY_HEADER: Final = (
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
# Every per-device counter in `/_emulator/stats`, always present (0 when nothing happened).
STAT_KEYS: Final = (
    "login",
    "login_failed",
    "logout",
    "unauthorized",
    "device_info",
    "dossier",
    "registration",
    "write",
    "reloadlic",
    "install",
    "mcp_state",
    "refused_bash",
    "unavailable",
    "restarts",
)

_HOST: Final = "https://localhost"
_REFERER: Final = "127.0.0.1"
_NAMESPACE: Final = uuid.UUID("2c4f7a1e-93b6-4d0a-8e55-0f6b1d7c3a92")
_REGKEY_RE: Final = re.compile(r"^[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{7}$")
_ADDON_RE: Final = re.compile(r"^[A-Z0-9]{7}-[A-Z0-9]{7}$")
_LICENSE_LINE_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9_ ]*?)\s+:\s*(.*?)\s*$")
_FEATURE_RE: Final = re.compile(r"^[a-z][a-z0-9]*_[A-Za-z0-9_]+$")
_AVAILABLE: Final = frozenset(
    {
        "/mgmt/shared/echo-js/available",
        "/mgmt/shared/identified-devices/config/device-info/available",
        "/mgmt/tm/sys/available",
        "/mgmt/tm/cm/available",
    }
)
_LICENSE_FILE_RE: Final = r"/config/bigip\.license"
_RELOADLIC_RE: Final = re.compile(r"^(?:/usr/bin/)?reloadlic$")
_MCP_STATE_RE: Final = re.compile(
    r"^tmsh\s+show\s+(?:/?sys)\s+mcp-state(?P<fmt>\s+field-fmt)?(?P<grep>\s*\|\s*grep\s+running)?$"
)
_CAT_RE: Final = re.compile(rf"^cat\s+{_LICENSE_FILE_RE}$")
_GREP_RE: Final = re.compile(rf"^e?grep\s+(?P<word>[A-Za-z0-9_.:-]+)\s+{_LICENSE_FILE_RE}$")
_HEREDOC_RE: Final = re.compile(
    rf"^cat\s*(?:>\s*{_LICENSE_FILE_RE}\s*<<\s*(?P<d1>'\w+'|\"\w+\"|\w+)"
    rf"|<<\s*(?P<d2>'\w+'|\"\w+\"|\w+)\s*>\s*{_LICENSE_FILE_RE})\s*$"
)
_ECHO_RE: Final = re.compile(rf"^echo\s+'(?P<text>[^']*)'\s*>\s*{_LICENSE_FILE_RE}$")
_BASE64_RE: Final = re.compile(
    rf"^echo\s+(?P<q>'?)(?P<data>[A-Za-z0-9+/=\s]+)(?P=q)\s*\|\s*base64\s+(?:-d|--decode)"
    rf"\s*>\s*{_LICENSE_FILE_RE}$"
)
_MCP_FIELD_FMT: Final = (
    "sys mcp-state {\n"
    "    end-platform-id-received true\n"
    "    last-load full-config-load-succeed\n"
    "    phase running\n"
    "}\n"
)
_MCP_TABLE: Final = (
    "\n"
    "-------------------------------------------------\n"
    "Sys::mcpd State: running\n"
    "-------------------------------------------------\n"
    "Running Phase                     running\n"
    "Last Configuration Load Status    full-config-load-succeed\n"
    "End Platform ID Received          true\n"
    "\n"
)


def _dossier(reg_key: str, add_on_keys: Sequence[str]) -> str:
    """The dossier an emulated BIG-IP reports: the one the BIG-IQ emulator expects for these keys.

    Real dossiers also encode the hardware; here the keys alone decide it, so a dossier read from
    any emulated BIG-IP is the one BIG-IQ's manual activation and `license_text` work with.
    """
    # The BIG-IQ emulator's builder is public as `dossier_for` once that module becomes a
    # package; `_dossier` is its name before. Same function, same arguments.
    name = "dossier_for" if hasattr(_bigiq, "dossier_for") else "_dossier"
    builder: Callable[[str, list[str]], str] = getattr(_bigiq, name)
    return builder(reg_key, list(add_on_keys))


# --- state ------------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    username: str
    start: float  # clock seconds
    timeout: float  # seconds
    start_micros: int

    def expires(self) -> float:
        return self.start + self.timeout


@dataclass
class BigIpDevice:
    """One emulated BIG-IP. Edit under the fleet's lock."""

    index: int  # which listener (port) serves it
    hostname: str
    base_mac: str  # as device-info reports it (lower case, colons)
    machine_id: str
    version: str = DEFAULT_VERSION
    build: str = DEFAULT_BUILD
    platform: str = DEFAULT_PLATFORM
    license_file: str | None = None  # the content of /config/bigip.license
    loaded_license: str | None = None  # what mcpd loaded at the last reloadlic: the registration
    written_since_load: bool = False  # the file changed since the last reloadlic
    restart_until: float = 0.0  # clock seconds when the current mcpd restart window ends
    tokens: dict[str, _Token] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    armed: list[str] = field(default_factory=list)  # one-shot device faults, in arming order

    @property
    def registration_key(self) -> str | None:
        """The registration key of the loaded license, or None when unlicensed."""
        return _license_regkey(self.loaded_license) if self.loaded_license else None

    def install(self, text: str) -> None:
        """Put a license on the box as if it had been installed and loaded long ago (no counts)."""
        self.license_file = text
        self.loaded_license = text if _license_regkey(text) else None
        self.written_since_load = False


class _Refused(Exception):
    """A util/bash command the emulator will not run; its message goes back verbatim."""


class _HttpError(Exception):
    """An error answer; `body` is the F5 envelope to send."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = headers or {}


# --- the app ----------------------------------------------------------------------------------


class BigIpFleet:
    """N emulated BIG-IPs as one `App`; device i answers on the server's listener i.

    CLI mapping for `airgap emulate bigip`: `--devices N` -> `devices`, `--password P` ->
    `password`, `--token-ttl S` -> `token_ttl`, `--restart-seconds S` -> `restart_seconds`,
    `--faults` -> `parse_fleet_faults` (device kinds here, the rest to the server).
    """

    def __init__(
        self,
        devices: int = 1,
        *,
        password: str | None = None,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        restart_seconds: float = DEFAULT_RESTART_SECONDS,
        auth_fail_rate: float = 0.0,
        restart_rate: float = 0.0,
        seed: int | None = None,
        version: str = DEFAULT_VERSION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build a fleet of unlicensed devices.

        Args:
            devices: how many BIG-IPs (each gets its own listener).
            password: the password user `admin` must give; None accepts any non-empty one.
            token_ttl: seconds a login token lives (BIG-IP: 1200).
            restart_seconds: seconds every call to a device answers 503 after its reloadlic.
            auth_fail_rate: probability that a login (or Basic credential) is refused.
            restart_rate: probability that a call finds the device restarting (503 window).
            seed: seed for the device fault draws.
            version: the TMOS version every device reports.
            clock: monotonic seconds, for token expiry and restart windows.

        Raises:
            ConfigError: fewer than one device, an empty password, a lifetime that is not
                positive, a negative restart window, or a rate outside [0, 1].
        """
        if devices < 1:
            raise ConfigError(f"a BIG-IP fleet needs at least one device, not {devices}")
        if password == "":
            raise ConfigError("the emulator password must not be empty")
        if token_ttl <= 0:
            raise ConfigError("the token lifetime must be positive")
        if restart_seconds < 0:
            raise ConfigError("the restart window must not be negative")
        for name, rate in (("auth", auth_fail_rate), ("restart", restart_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"fault rate {name}={rate} is not between 0 and 1")
        self.password = password
        self.token_ttl = float(token_ttl)
        self.restart_seconds = float(restart_seconds)
        self.auth_fail_rate = auth_fail_rate
        self.restart_rate = restart_rate
        self.clock = clock
        self.lock = threading.RLock()  # one lock for all devices; tests may hold it to edit state
        self._rng = random.Random(seed)
        self._clock0 = clock()
        self._wall0 = time.time()
        self._rest_operation = 0
        width = max(4, len(str(devices)))
        self.devices: list[BigIpDevice] = []
        for index in range(devices):
            hostname = f"bigip-{index + 1:0{width}d}"
            self.devices.append(
                BigIpDevice(
                    index=index,
                    hostname=hostname,
                    base_mac=_mac(index),
                    machine_id=str(uuid.uuid5(_NAMESPACE, hostname)),
                    version=version,
                )
            )
        self._by_name = {device.hostname: device for device in self.devices}

    # --- App interface ------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one iControl REST request for the device behind `request.listener`.

        Args:
            request: the parsed HTTP request from `EmulatorServer`.

        Returns:
            A JSON response; errors carry F5's envelopes (see `_tm_error`, `_rest_error`).
        """
        path = re.sub(r"/{2,}", "/", unquote(request.path))
        if len(path) > 1:
            path = path.rstrip("/")
        with self.lock:
            if not 0 <= request.listener < len(self.devices):
                return Response.json(500, {"error": f"no device on listener {request.listener}"})
            device = self.devices[request.listener]
            try:
                return self._dispatch(device, request, path)
            except _HttpError as exc:
                return Response.json(exc.status, exc.body, headers=exc.headers)

    def stats(self) -> dict[str, Any]:
        """Counters for `GET /_emulator/stats`.

        Returns:
            `{"devices": {hostname: {counter: n}}, "licensed": n}`; the counters are
            `STAT_KEYS`. A license written and then loaded by reloadlic (or a registration PUT)
            counts once as `install`.
        """
        with self.lock:
            return {
                "devices": {
                    d.hostname: {key: d.counts[key] for key in STAT_KEYS} for d in self.devices
                },
                "licensed": sum(1 for d in self.devices if d.registration_key),
            }

    def control(self, route: str, request: Request) -> Response | None:
        """The fleet's own control paths under `/_emulator/`.

        - `POST device-faults` `{"device": "<hostname>" | index, "kind": "auth" | "restart"}`
          arms a one-shot device fault (see `arm`).
        - `GET devices`: each device's hostname, base MAC, registration key and restart state.

        Args:
            route: the path after `/_emulator/`.
            request: the request.

        Returns:
            The answer, or None for a route this app does not serve.
        """
        if route == "device-faults" and request.method == "POST":
            body = request.json()
            if not isinstance(body, dict):
                return Response.json(400, {"error": "expected a JSON object"})
            try:
                self.arm(body.get("device", ""), str(body.get("kind", "")))
            except ConfigError as exc:
                return Response.json(400, {"error": exc.message})
            return Response.json(200, {"armed": True})
        if route == "devices" and request.method == "GET":
            with self.lock:
                now = self.clock()
                return Response.json(
                    200,
                    {
                        "devices": [
                            {
                                "hostname": d.hostname,
                                "baseMac": d.base_mac,
                                "registrationKey": d.registration_key,
                                "restarting": now < d.restart_until,
                            }
                            for d in self.devices
                        ]
                    },
                )
        return None

    # --- test helpers -------------------------------------------------------------------------

    def device(self, key: int | str) -> BigIpDevice:
        """A device by index (0-based) or hostname.

        Raises:
            ConfigError: no such device.
        """
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(self.devices):
            return self.devices[key]
        if isinstance(key, str) and key in self._by_name:
            return self._by_name[key]
        raise ConfigError(f"no emulated BIG-IP {key!r}")

    def arm(self, device: int | str, kind: str) -> None:
        """Arm a one-shot fault on one device.

        `auth`: its next login (or Basic credential) is refused with 401. `restart`: its next
        call finds mcpd restarting (503 for `restart_seconds`).

        Raises:
            ConfigError: no such device or kind.
        """
        if kind not in DEVICE_FAULTS:
            raise ConfigError(f"device fault kind must be one of {', '.join(DEVICE_FAULTS)}")
        with self.lock:
            self.device(device).armed.append(kind)

    # --- routing ------------------------------------------------------------------------------

    def _dispatch(self, device: BigIpDevice, request: Request, path: str) -> Response:
        now = self.clock()
        if now >= device.restart_until and self._take_fault(device, "restart", self.restart_rate):
            device.restart_until = now + self.restart_seconds
            device.counts["restarts"] += 1
        if now < device.restart_until:
            device.counts["unavailable"] += 1
            # Seen while mcpd restarts; a restarting restjavad answers 503 as well.
            raise self._tm_error(503, "The connection to mcpd has been lost, try again.", 32768001)
        method = request.method
        if path == "/mgmt/shared/authn/login":
            if method != "POST":
                raise self._rest_error(405, f"Method {method} is not allowed on {path}")
            return self._login(device, request)
        self._authenticate(device, request, path)
        if path.startswith("/mgmt/shared/authz/tokens/"):
            return self._token(device, request, path.rsplit("/", 1)[1])
        handler = _ROUTES.get((method, path))
        if handler is not None:
            return handler(self, device, request)
        if method == "GET" and path in _AVAILABLE:
            return Response.json(200, {})
        if any(key[1] == path for key in _ROUTES):
            raise self._rest_error(405, f"Method {method} is not allowed on {path}")
        raise self._rest_error(404, f"Public URI path not registered: {path.removeprefix('/mgmt')}")

    # --- errors -------------------------------------------------------------------------------

    def _rest_error(self, status: int, message: str, **extra: Any) -> _HttpError:
        """restjavad's error envelope (login, tokens, `/mgmt/shared/...`)."""
        self._rest_operation += 1
        body = {
            "code": status,
            "message": message,
            **extra,
            "referer": _REFERER,
            "restOperationId": self._rest_operation,
            "errorStack": [],
            "kind": ":resterrorresponse",
        }
        return _HttpError(status, body)

    @staticmethod
    def _tm_error(status: int, message: str, api_error: int = 3) -> _HttpError:
        """The `/mgmt/tm/...` error envelope."""
        return _HttpError(
            status, {"code": status, "message": message, "errorStack": [], "apiError": api_error}
        )

    # --- authentication -----------------------------------------------------------------------

    def _take_fault(self, device: BigIpDevice, kind: str, rate: float) -> bool:
        if kind in device.armed:
            device.armed.remove(kind)
            return True
        return rate > 0 and self._rng.random() < rate

    def _credentials_ok(self, device: BigIpDevice, username: Any, password: Any) -> bool:
        ok = (
            username == "admin"
            and isinstance(password, str)
            and password != ""
            and (self.password is None or hmac.compare_digest(password, self.password))
        )
        # A refused login is refused whatever the credentials; the draw happens either way so a
        # seeded run does not depend on which credentials were sent.
        refused = self._take_fault(device, "auth", self.auth_fail_rate)
        return ok and not refused

    def _login(self, device: BigIpDevice, request: Request) -> Response:
        body = _json_body(request, allow_empty=True, tm=False, fleet=self)
        if not isinstance(body, dict):
            raise self._rest_error(400, "Found invalid JSON body in the request.")
        username, password = body.get("username"), body.get("password")
        if username is None and password is None:
            # Some clients send only a Basic Authorization header.
            username, password = _basic_credentials(request.headers.get("authorization", ""))
        provider = body.get("loginProviderName") or "tmos"
        if not self._credentials_ok(device, username, password) or provider != "tmos":
            device.counts["login_failed"] += 1
            original = {"username": username, "loginProviderName": provider}
            raise self._rest_error(
                401,
                "Authentication failed.",
                originalRequestBody=_compact({**original, "generation": 0, "lastUpdateMicros": 0}),
            )
        device.counts["login"] += 1
        now = self.clock()
        value = base64.b32encode(secrets.token_bytes(20)).decode()[:26]
        token = _Token(value, "admin", now, self.token_ttl, self._micros(now))
        device.tokens[value] = token
        return Response.json(
            200,
            {
                "username": "admin",
                "loginReference": {"link": f"{_HOST}/mgmt/cm/system/authn/providers/tmos/login"},
                "loginProviderName": "tmos",
                "token": self._render_token(token),
                "generation": 0,
                "lastUpdateMicros": 0,
            },
        )

    def _authenticate(self, device: BigIpDevice, request: Request, path: str) -> None:
        raw = request.headers.get("x-f5-auth-token", "").strip()
        if raw:
            token = device.tokens.get(raw)
            if token is None:
                device.counts["unauthorized"] += 1
                raise self._rest_error(401, "X-F5-Auth-Token does not exist.")
            if self.clock() >= token.expires():
                device.counts["unauthorized"] += 1
                raise self._rest_error(401, "X-F5-Auth-Token has expired.")
            return
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            username, password = _basic_credentials(header)
            if self._credentials_ok(device, username, password):
                return
            device.counts["login_failed"] += 1
            error = self._rest_error(401, "Authentication failed.")
            error.headers["WWW-Authenticate"] = 'Basic realm="Enterprise Manager"'
            raise error
        device.counts["unauthorized"] += 1
        raise self._rest_error(
            401,
            "Authorization failed: no user authentication header or token detected. "
            f"Uri:http://localhost:8100{path} Referrer:{_REFERER} Sender:{_REFERER}",
        )

    def _render_token(self, token: _Token) -> dict[str, Any]:
        timeout: int | float = int(token.timeout) if token.timeout.is_integer() else token.timeout
        return {
            "token": token.value,
            "name": token.value,
            "userName": token.username,
            "authProviderName": "tmos",
            "user": {"link": f"{_HOST}/mgmt/shared/authz/users/{token.username}"},
            "groupReferences": [],
            "timeout": timeout,
            "startTime": _iso_millis(token.start_micros),
            "address": _REFERER,
            "partition": "[All]",
            "generation": 1,
            "lastUpdateMicros": token.start_micros,
            "expirationMicros": token.start_micros + int(token.timeout * 1_000_000),
            "kind": "shared:authz:tokens:authtokenitemstate",
            "selfLink": f"{_HOST}/mgmt/shared/authz/tokens/{token.value}",
        }

    def _token(self, device: BigIpDevice, request: Request, value: str) -> Response:
        token = device.tokens.get(value)
        if token is None:
            raise self._rest_error(404, f"Object not found - /mgmt/shared/authz/tokens/{value}")
        if request.method == "GET":
            return Response.json(200, self._render_token(token))
        if request.method == "DELETE":
            del device.tokens[value]
            device.counts["logout"] += 1
            return Response.json(200, self._render_token(token))
        if request.method == "PATCH":
            body = _json_body(request, tm=False, fleet=self)
            timeout = body.get("timeout") if isinstance(body, dict) else None
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise self._rest_error(400, "timeout must be a positive number of seconds")
            if timeout > MAX_TOKEN_TIMEOUT:
                raise self._rest_error(
                    400, f"timeout must be less than or equal to {MAX_TOKEN_TIMEOUT}"
                )
            token.timeout = float(timeout)
            return Response.json(200, self._render_token(token))
        raise self._rest_error(405, f"Method {request.method} is not allowed on tokens")

    # --- identity and state -------------------------------------------------------------------

    def _micros(self, now: float) -> int:
        return int((self._wall0 + (now - self._clock0)) * 1_000_000)

    def _device_info(self, device: BigIpDevice, _request: Request) -> Response:
        device.counts["device_info"] += 1
        body: dict[str, Any] = {
            "baseMac": device.base_mac,
            "hostMac": device.base_mac,
            "halUuid": device.machine_id,
            "chassisSerialNumber": device.machine_id,
            "slots": [
                {
                    "volume": "HD1.1",
                    "product": "BIG-IP",
                    "version": device.version,
                    "build": device.build,
                    "isActive": True,
                }
            ],
            "interfaces": ["1.1", "mgmt"],
            "isIControlRestSupported": True,
            "icrdPort": 8100,
            "time": self._micros(self.clock()) // 1000,
            "physicalMemory": 16384,
            "platform": device.platform,
            "cpu": "Intel(R) Xeon(R) CPU (emulated)",
            "machineId": device.machine_id,
            "address": "127.0.0.1",
            "hostname": device.hostname,
            "version": device.version,
            "product": "BIG-IP",
            "platformMarketingName": "BIG-IP Virtual Edition",
            "edition": "Point Release 3",
            "build": device.build,
            "restFrameworkVersion": f"{device.version}-{device.build}",
            "managementAddress": "127.0.0.1",
            "mcpDeviceName": f"/Common/{device.hostname}",
            "isClustered": False,
            "isVirtual": True,
            "hypervisorType": "0",
            "generation": 0,
            "lastUpdateMicros": 0,
            "kind": "shared:resolver:device-groups:deviceinfostate",
            "selfLink": f"{_HOST}/mgmt/shared/identified-devices/config/device-info",
        }
        if device.loaded_license:
            fields = _license_fields(device.loaded_license)
            summary: dict[str, Any] = {"registrationKey": fields.get("registrationKey")}
            if "licenseEndDateTime" in fields:
                summary["licenseEndDateTime"] = fields["licenseEndDateTime"]
            summary["activeModules"] = fields.get("activeModules", [])
            summary["generation"] = 0
            summary["lastUpdateMicros"] = 0
            body["license"] = summary
        return Response.json(200, body)

    def _tm_sys(self, device: BigIpDevice, _request: Request) -> Response:
        # What F5's Ansible client GETs to check Basic credentials when token login fails.
        ver = f"?ver={device.version}"
        items = [
            {"reference": {"link": f"{_HOST}/mgmt/tm/sys/{name}{ver}"}}
            for name in ("global-settings", "license", "mcp-state", "provision", "version")
        ]
        return Response.json(
            200,
            {
                "kind": "tm:sys:syscollectionstate",
                "selfLink": f"{_HOST}/mgmt/tm/sys{ver}",
                "items": items,
            },
        )

    def _mcp_state(self, device: BigIpDevice, _request: Request) -> Response:
        device.counts["mcp_state"] += 1
        entry = f"{_HOST}/mgmt/tm/sys/mcp-state/0"
        return Response.json(
            200,
            {
                "kind": "tm:sys:mcp-state:mcp-statestats",
                "selfLink": f"{_HOST}/mgmt/tm/sys/mcp-state?ver={device.version}",
                "entries": {
                    entry: {
                        "nestedStats": {
                            "entries": {
                                "endPlatformIdReceived": {"description": "true"},
                                "lastLoad": {"description": "full-config-load-succeed"},
                                "phase": {"description": "running"},
                            }
                        }
                    }
                },
            },
        )

    def _registration_body(self, device: BigIpDevice) -> dict[str, Any]:
        tail = {
            "generation": 0,
            "lastUpdateMicros": 0,
            "kind": "tm:shared:licensing:registration:licensestate",
            "selfLink": f"{_HOST}/mgmt/tm/shared/licensing/registration",
        }
        if not device.loaded_license:
            # An unlicensed box has no registrationKey: f5-cloud-libs and bigip_device_license
            # both read a missing key as "not licensed".
            return tail
        fields = _license_fields(device.loaded_license, today=self._today())
        return {**fields, "machineId": device.machine_id, **tail}

    def _today(self) -> date:
        return datetime.fromtimestamp(self._micros(self.clock()) / 1_000_000, UTC).date()

    def _registration(self, device: BigIpDevice, _request: Request) -> Response:
        device.counts["registration"] += 1
        return Response.json(200, self._registration_body(device))

    def _registration_put(self, device: BigIpDevice, request: Request) -> Response:
        body = _json_body(request, fleet=self)
        text = body.get("licenseText") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise self._tm_error(400, "licenseText is required to install a license")
        if _license_regkey(text) is None:
            raise self._tm_error(
                400, "The license text is not valid: it has no Registration Key line"
            )
        device.license_file = text
        device.written_since_load = True
        answer = self._reload(device)
        return Response.json(200, answer)

    def _reload(self, device: BigIpDevice) -> dict[str, Any]:
        """Load /config/bigip.license as reloadlic does; mcpd restarts. Returns the registration."""
        if device.written_since_load:
            device.counts["install"] += 1
        text = device.license_file
        device.loaded_license = text if text and _license_regkey(text) else None
        device.written_since_load = False
        answer = self._registration_body(device)
        if self.restart_seconds > 0:
            device.restart_until = self.clock() + self.restart_seconds
            device.counts["restarts"] += 1
        return answer

    # --- util commands ------------------------------------------------------------------------

    def _get_dossier(self, device: BigIpDevice, request: Request) -> Response:
        args = _run_args(request, self)
        try:
            reg_key, add_ons = _dossier_args(args)
        except _Refused as exc:
            raise self._tm_error(400, str(exc)) from None
        device.counts["dossier"] += 1
        return Response.json(
            200,
            {
                "kind": "tm:util:get-dossier:runstate",
                "command": "run",
                "utilCmdArgs": args,
                "commandResult": _dossier(reg_key, add_ons),
            },
        )

    def _bash(self, device: BigIpDevice, request: Request) -> Response:
        args = _run_args(request, self)
        try:
            script = _bash_script(args)
            output = self._run_script(device, script)
        except _Refused as exc:
            device.counts["refused_bash"] += 1
            raise self._tm_error(
                400,
                f"{exc} (the airgap BIG-IP emulator runs no shell; util/bash accepts only "
                f"writing {LICENSE_PATH}, /usr/bin/reloadlic, tmsh show sys mcp-state and "
                f"reading {LICENSE_PATH})",
            ) from None
        body: dict[str, Any] = {"kind": "tm:util:bash:runstate", "command": "run"}
        body["utilCmdArgs"] = args
        if output:
            # util/bash leaves commandResult out when the command printed nothing.
            body["commandResult"] = output
        return Response.json(200, body)

    def _run_script(self, device: BigIpDevice, script: str) -> str:
        """Emulate one recognised licensing command; raise `_Refused` for anything else."""
        whole = script.strip()
        echo = _ECHO_RE.match(whole)
        if echo:
            self._write(device, echo.group("text") + "\n")
            return ""
        b64 = _BASE64_RE.match(whole)
        if b64:
            self._write(device, _decode_base64(b64.group("data")))
            return ""
        first, _, rest = script.partition("\n")
        command = first.strip()
        if not rest.strip():
            if _RELOADLIC_RE.match(command):
                device.counts["reloadlic"] += 1
                self._reload(device)
                return ""
            mcp = _MCP_STATE_RE.match(command)
            if mcp:
                device.counts["mcp_state"] += 1
                text = _MCP_FIELD_FMT if mcp.group("fmt") else _MCP_TABLE
                if mcp.group("grep"):
                    text = "".join(line for line in text.splitlines(True) if "running" in line)
                return text
            if _CAT_RE.match(command):
                if device.license_file is None:
                    return f"cat: {LICENSE_PATH}: No such file or directory\n"
                return device.license_file
            grep = _GREP_RE.match(command)
            if grep:
                content = device.license_file or ""
                word = grep.group("word")
                return "".join(line for line in content.splitlines(True) if word in line)
        heredoc = _HEREDOC_RE.match(command)
        if heredoc:
            delimiter = heredoc.group("d1") or heredoc.group("d2") or ""
            self._write(device, _heredoc_body(delimiter, rest))
            return ""
        raise _Refused(f"refused: {_preview(script)}")

    @staticmethod
    def _write(device: BigIpDevice, content: str) -> None:
        device.license_file = content
        device.written_since_load = True
        device.counts["write"] += 1


_Handler = Callable[[BigIpFleet, BigIpDevice, Request], Response]
_ROUTES: Final[dict[tuple[str, str], _Handler]] = {
    ("GET", "/mgmt/shared/identified-devices/config/device-info"): BigIpFleet._device_info,
    ("GET", "/mgmt/tm/shared/licensing/registration"): BigIpFleet._registration,
    ("PUT", "/mgmt/tm/shared/licensing/registration"): BigIpFleet._registration_put,
    ("POST", "/mgmt/tm/util/get-dossier"): BigIpFleet._get_dossier,
    ("POST", "/mgmt/tm/util/bash"): BigIpFleet._bash,
    ("GET", "/mgmt/tm/sys/mcp-state"): BigIpFleet._mcp_state,
    ("GET", "/mgmt/tm/sys"): BigIpFleet._tm_sys,
}


# --- request parsing ---------------------------------------------------------------------------


def _json_body(
    request: Request, *, fleet: BigIpFleet, allow_empty: bool = False, tm: bool = True
) -> Any:
    if allow_empty and not request.body.strip():
        return {}
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        message = "Found invalid JSON body in the request."
        raise (fleet._tm_error(400, message) if tm else fleet._rest_error(400, message)) from None


def _run_args(request: Request, fleet: BigIpFleet) -> str:
    body = _json_body(request, fleet=fleet)
    if not isinstance(body, dict):
        raise fleet._tm_error(400, "Found invalid JSON body in the request.")
    if body.get("command") != "run":
        raise fleet._tm_error(400, f"'command' must be 'run', not {body.get('command')!r}")
    args = body.get("utilCmdArgs", "")
    if not isinstance(args, str):
        raise fleet._tm_error(400, "'utilCmdArgs' must be a string")
    return args


def _dossier_args(args: str) -> tuple[str, list[str]]:
    """The registration key and add-on keys of a get_dossier command line.

    Accepts `-b KEY`, `-b "KEY"`, and add-ons before or after it as `-a K1,K2` or, as
    bigip_device_license sends several, `-a K1 K2`.
    """
    words = _split_words(args)
    reg_key: str | None = None
    add_ons: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-b" and i + 1 < len(words):
            reg_key = words[i + 1].strip().upper()
            i += 2
        elif word == "-a":
            i += 1
            while i < len(words) and not words[i].startswith("-"):
                add_ons += [k.strip().upper() for k in words[i].split(",") if k.strip()]
                i += 1
        else:
            raise _Refused(f"get_dossier: unexpected argument {word!r}")
    if reg_key is None:
        raise _Refused("get_dossier: a base registration key is required (-b)")
    if not _REGKEY_RE.match(reg_key):
        raise _Refused(f"get_dossier: invalid registration key {reg_key!r}")
    for key in add_ons:
        if not _ADDON_RE.match(key):
            raise _Refused(f"get_dossier: invalid add-on key {key!r}")
    return reg_key, add_ons


def _split_words(text: str) -> list[str]:
    """Split a command line into words with bash's quoting rules; no expansion ever happens."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise _Refused("unterminated single quote")
            current.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while True:
                if i >= len(text):
                    raise _Refused("unterminated double quote")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\\n':
                    if text[i + 1] != "\n":
                        current.append(text[i + 1])
                    i += 2
                    continue
                if ch in "$`":
                    raise _Refused("the emulator does not expand $ or ` (escape them)")
                current.append(ch)
                i += 1
        elif ch == "\\":
            if i + 1 < len(text):
                current.append(text[i + 1])
            i += 2
        elif ch in "$`;&|<>()":
            raise _Refused(f"unquoted {ch!r} in the arguments")
        else:
            current.append(ch)
            i += 1
    if in_word:
        words.append("".join(current))
    return words


def _bash_script(args: str) -> str:
    """The script of a util/bash `-c "<script>"` argument string, quoting removed."""
    words = _split_words(args)
    if len(words) != 2 or words[0] != "-c":
        raise _Refused(f"refused: {_preview(args)}")
    return words[1]


def _heredoc_body(delimiter: str, rest: str) -> str:
    """The text a here-document feeds to `cat`, as bash would (no expansion ever happens)."""
    quoted = delimiter[:1] in ("'", '"')
    word = delimiter.strip("'\"")
    lines = rest.split("\n")
    try:
        end = next(i for i, line in enumerate(lines) if line.rstrip(" \t") == word)
    except StopIteration:
        raise _Refused(f"here-document without its closing {word!r} line") from None
    if any(line.strip() for line in lines[end + 1 :]):
        raise _Refused("commands after the here-document")
    body = "".join(line + "\n" for line in lines[:end])
    return body if quoted else _expand_heredoc(body)


def _expand_heredoc(body: str) -> str:
    # An unquoted here-document keeps every character except that a backslash escapes `$`, a
    # backtick, a backslash or a newline; `$` and backticks expand, which the emulator refuses.
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "$`\\\n":
            if body[i + 1] != "\n":
                out.append(body[i + 1])
            i += 2
            continue
        if ch in "$`":
            raise _Refused("the here-document would expand $ or ` (the emulator expands nothing)")
        out.append(ch)
        i += 1
    return "".join(out)


def _decode_base64(data: str) -> str:
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _Refused("base64 -d: invalid input") from None


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        username, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return username, password


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 80 else flat[:77] + "..."


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- license text -----------------------------------------------------------------------------


def _license_regkey(text: str | None) -> str | None:
    if not text:
        return None
    for line in text.splitlines():
        match = _LICENSE_LINE_RE.match(line)
        if match and match.group(1) == "Registration Key":
            key = match.group(2).strip()
            return key if _REGKEY_RE.match(key) else None
    return None


def _license_fields(text: str, *, today: date | None = None) -> dict[str, Any]:
    """The registration fields BIG-IP derives from a license file (what GET registration shows)."""
    fields: dict[str, Any] = {}
    active: list[str] = []
    optional: list[str] = []
    platforms: list[str] = []
    features: list[dict[str, str]] = []
    end: date | None = None
    simple = {
        "Registration Key": "registrationKey",
        "Licensed version": "licensedVersion",
        "Platform ID": "platformId",
        "Auth vers": "authVers",
        "Usage": "usage",
        "Vendor": "vendor",
        "Dossier": "dossier",
        "Authorization": "authorization",
    }
    dates = {
        "Licensed date": "licensedDateTime",
        "Service check date": "serviceCheckDateTime",
        "License start": "licenseStartDateTime",
        "License end": "licenseEndDateTime",
    }
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _LICENSE_LINE_RE.match(line)
        if not match:
            continue
        name, value = match.group(1), match.group(2)
        if name in simple:
            fields[simple[name]] = value
        elif name in dates:
            day = _yyyymmdd(value)
            if day is not None:
                fields[dates[name]] = f"{day.isoformat()}T00:00:00+00:00"
                if name == "License end":
                    end = day
        elif name == "active module":
            active.append(value)
        elif name == "optional module":
            optional.append(value)
        elif name == "Exclusive_Platform":
            platforms.append(value)
        elif _FEATURE_RE.match(name):
            features.append({"featureName": name, "featureValue": value})
    fields["exclusivePlatform"] = platforms
    fields["activeModules"] = active
    fields["optionalModules"] = optional
    fields["featureFlags"] = features
    if end is not None:
        fields["expiresInDays"] = float((end - (today or datetime.now(UTC).date())).days)
    return fields


def _yyyymmdd(value: str) -> date | None:
    try:
        return datetime.strptime(value.strip(), "%Y%m%d").date()
    except ValueError:
        return None


def _iso_millis(micros: int) -> str:
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _mac(index: int) -> str:
    # VMware's OUI, as on the VE of samples/f5; the low three bytes count up from 9a:00:00.
    low = 0x9A0000 + index
    return "00:50:56:" + ":".join(f"{(low >> shift) & 0xFF:02x}" for shift in (16, 8, 0))


# --- serving a fleet ---------------------------------------------------------------------------


def parse_fleet_faults(spec: str | None) -> tuple[Faults, float, float]:
    """Split a `--faults` spec into the server's faults and the device kinds.

    `auth=R` (a login refused) and `restart=R` (a spontaneous 503 window) are the fleet's; the
    rest (`429`, `500`, `reset`, `slow`, `slow_seconds`, `seed`) go to `Faults.parse`.

    Args:
        spec: e.g. `429=0.05,reset=0.01,auth=0.02,restart=0.01`; None or empty for none.

    Raises:
        ConfigError: a malformed or repeated part, or a rate outside [0, 1].

    Returns:
        (server faults, auth rate, restart rate).
    """
    rates = {"auth": 0.0, "restart": 0.0}
    seen: set[str] = set()
    rest: list[str] = []
    for raw in (spec or "").split(","):
        part = raw.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if key not in rates:
            rest.append(part)
            continue
        if not sep or key in seen:
            raise ConfigError(
                f"bad fault {part!r} in {spec!r}",
                hint="Use e.g. --faults 429=0.05,auth=0.02,restart=0.01",
            )
        seen.add(key)
        try:
            rate = float(value)
        except ValueError:
            raise ConfigError(
                f"fault {key!r} has a value that is not a number: {value!r}"
            ) from None
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"fault rate {key}={rate} is not between 0 and 1")
        rates[key] = rate
    return Faults.parse(",".join(rest)), rates["auth"], rates["restart"]


class BigIpFleetServer:
    """A `BigIpFleet` served on one HTTPS port per device; a context manager for tests.

    `devices` is the fleet's editable state, `inventory_rows` the inventory that points at it,
    `stats()` what `/_emulator/stats` answers.
    """

    def __init__(self, fleet: BigIpFleet, server: EmulatorServer) -> None:
        self.fleet = fleet
        self.server = server

    @property
    def devices(self) -> list[BigIpDevice]:
        """The devices, in listener order (edit under `fleet.lock`)."""
        return self.fleet.devices

    @property
    def urls(self) -> list[str]:
        """Each device's base URL, in device order."""
        return self.server.urls

    @property
    def stats_url(self) -> str:
        """Where `/_emulator/stats` answers (every device's address does)."""
        return f"{self.server.url}/_emulator/stats"

    @property
    def cert_path(self) -> Path:
        """The PEM the devices' certificate verifies against."""
        assert self.server.cert_path is not None  # always TLS
        return self.server.cert_path

    @property
    def inventory_rows(self) -> list[dict[str, str]]:
        """One inventory row per device (`INVENTORY_HEADER` columns, all strings)."""
        ca = str(self.cert_path.resolve())
        return [
            {
                "host": "127.0.0.1",
                "port": str(port),
                "platform": "bigip",
                "transport": "icontrol",
                "credential": CREDENTIAL_NAME,
                "hostname": device.hostname,
                "tags": "emulator",
                "verify": "",
                "ca_bundle": ca,
            }
            for device, port in zip(self.fleet.devices, self.server.ports, strict=True)
        ]

    def write_inventory(self, path: Path) -> None:
        """Write `inventory_rows` as CSV with a header.

        Raises:
            ConfigError: the file cannot be written.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(
                    handle, fieldnames=list(INVENTORY_HEADER), lineterminator="\n"
                )
                writer.writeheader()
                writer.writerows(self.inventory_rows)
        except OSError as exc:
            raise ConfigError(f"cannot write the inventory to {path}: {exc}") from exc

    def stats(self) -> dict[str, Any]:
        """What `GET /_emulator/stats` answers: the fleet's counters plus injected faults."""
        stats = self.fleet.stats()
        stats["faults"] = self.server.faults.snapshot()
        return stats

    def fail_next(
        self,
        device: int | str,
        kind: int | str,
        *,
        path_contains: str = "/mgmt/",
        body_contains: str | None = None,
    ) -> None:
        """Arm a one-shot fault on one device.

        Args:
            device: index or hostname.
            kind: "auth" or "restart" (device faults), or an HTTP status 400-599 or "reset"
                (server faults: answered without the device, or the device acts and the line
                drops).
            path_contains: for server faults, a substring of the path that fires it.
            body_contains: for server faults, a substring of the body that fires it (e.g.
                "reloadlic" to drop the answer of that one util/bash command).

        Raises:
            ConfigError: no such device or kind.
        """
        if kind in DEVICE_FAULTS:
            self.fleet.arm(device, str(kind))
            return
        index = self.fleet.device(device).index
        self.server.faults.fail_next(
            path_contains, kind, listener=index, body_contains=body_contains
        )

    def start(self) -> BigIpFleetServer:
        """Serve in a background thread; returns self."""
        self.server.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C."""
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop serving and free every port."""
        self.server.stop()

    def __enter__(self) -> BigIpFleetServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def build_bigip_fleet(
    devices: int = 1,
    *,
    latency_ms: float = 0,
    faults: str | None = None,
    password: str | None = None,
    token_ttl: float = DEFAULT_TOKEN_TTL,
    restart_seconds: float = DEFAULT_RESTART_SECONDS,
    cert_out: Path | None = None,
    port: int = 0,
    licensed: Mapping[int, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BigIpFleetServer:
    """Bind (not start) a fleet of emulated BIG-IPs over HTTPS, one port per device.

    Args:
        devices: how many BIG-IPs.
        latency_ms: milliseconds added to each call.
        faults: a `--faults` spec; see `parse_fleet_faults`.
        password: require this password for `admin` (default: any non-empty one).
        token_ttl: seconds a login token lives.
        restart_seconds: seconds a device answers 503 after reloadlic.
        cert_out: write the self-signed certificate (PEM) here; default a temporary file that
            lives as long as the server.
        port: TCP port of the first device; 0 picks a free one (the others always do).
        licensed: device index to license text already installed at start.
        clock: monotonic seconds (tokens, restart windows).

    Raises:
        ConfigError: a bad argument or faults spec, or a port cannot be bound.

    Returns:
        The bound fleet server.
    """
    server_faults, auth_rate, restart_rate = parse_fleet_faults(faults)
    fleet = BigIpFleet(
        devices,
        password=password,
        token_ttl=token_ttl,
        restart_seconds=restart_seconds,
        auth_fail_rate=auth_rate,
        restart_rate=restart_rate,
        seed=server_faults.seed,
        clock=clock,
    )
    for index, text in (licensed or {}).items():
        fleet.device(index).install(text)
    server = EmulatorServer(
        fleet,
        port=port,
        latency_ms=latency_ms,
        faults=server_faults,
        tls=True,
        cert_out=cert_out,
        listeners=devices,
    )
    return BigIpFleetServer(fleet, server)


def start_bigip_fleet(devices: int = 1, **options: Any) -> BigIpFleetServer:
    """`build_bigip_fleet(devices, **options)`, started in a background thread.

    Use as a context manager: `with start_bigip_fleet(3, token_ttl=2) as fleet: ...`.

    Raises:
        ConfigError: as `build_bigip_fleet`.
    """
    return build_bigip_fleet(devices, **options).start()
