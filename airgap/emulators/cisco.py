"""Emulator of Cisco's Smart Software Licensing API (swapi) and its OAuth token endpoints.

Follows Cisco's published API (sources in docs/emulators.md): client-credentials tokens with a
lifetime, one smart account with virtual accounts `Default` and `Lab`, SLUP offline
authorizations and returns through `v2/devices/authrequest` + `v2/accounts/poll`, RUM usage
reports checked against the signature `emulators.device` makes, usage by tag, the device list
and SLR reservations. It shares `device.py` (signature check, return codes), never the clients
in `airgap.outside`.

Error bodies, compact JSON like everything else:
- token endpoints: OAuth style `{"error":"invalid_client","error_description":"..."}`;
- API calls refused as a whole: `{"status":"ERROR","code":"<CODE>","message":"..."}` with 400
  (malformed), 401 (token), 403 (account), 404 (path, poll id) or 405;
- per-device outcomes are not HTTP errors: a refused reservation, a bad return code or a
  duplicate report comes back in the completed poll as `"status":"FAILED"` with `error_code`
  and `status_message`.

Vendor state changes when the request is accepted, not when the poll completes, so a request
whose answer was lost still shows in `stats()["mutations"]`.

The device list (`v1/accounts/{domain}/devices`) gives each device holding a SLUP reservation an
`"authorizationCode"`: the base64 `smart_license` of that reservation, exactly as its poll
answered it. This models CSSM's download of a product instance's current authorization code, so
a client that lost a reservation's answer (a reset after the request was accepted) can recover
the code by a read-only look-up. Real accounts may not return it in the device list; a client
must then fall back to asking the operator (needs attention) rather than reserving again.

`build_cisco_server` tells clients to poll again after `max(1, ceil(poll_delay))` seconds unless
given an explicit `poll_interval`, so clients that honour the interval do not wait the real
service's 300 s on a fast emulator; `CiscoEmulator` itself keeps the service's 300 by default.

State is in plain attributes (`reservations`, `reports`, `polls`, `licenses`, ...) that tests may
read and edit while holding `lock`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from airgap.emulators import device, portal
from airgap.emulators.server import (
    BadRequest,
    EmulatorServer,
    Faults,
    Request,
    Response,
    basic_credentials,
)
from airgap.errors import ConfigError

TOKEN_PATHS = ("/oauth2/default/v1/token", "/as/token.oauth2")
# Cisco's own samples call the API under all three; the doubled one must be tried first.
API_PREFIXES = (
    "/services/api/services/api/smart-accounts-and-licensing/",
    "//services/api/smart-accounts-and-licensing/",
    "/services/api/smart-accounts-and-licensing/",
)
SMART_ACCOUNT_DOMAIN = "demo.example.com"
SMART_ACCOUNT_ID = 4210057
SMART_ACCOUNT_NAME = "Demo Example"
VIRTUAL_ACCOUNTS = {"Default": 905210, "Lab": 905213}
POLL_INTERVAL = 300  # seconds, what the service tells clients to wait between polls
DEFAULT_QUANTITY = 10_000  # licenses purchased of any tag not listed in `licenses`
MAX_PAGE = 1000  # devices per page

# Display name, description and purchased quantity of the tags the samples use.
CATALOGUE: dict[str, tuple[str, str, int]] = {
    "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4": (
        "Catalyst 9K HSEC Export Lic",
        "U.S. Export Restriction Compliance license for Catalyst 9000 switches",
        1000,
    ),
    device.NETWORK_ADVANTAGE_TAG: (
        "Network Advantage",
        "C9300 Network Advantage, Term License",
        1000,
    ),
    device.DNA_ADVANTAGE_TAG: (
        "C9300 DNA Advantage",
        "C9300 DNA Advantage, Term License",
        1000,
    ),
    device.ISR_APPX_TAG: (
        "ISR 4331 Application Experience",
        "Application Experience license for ISR 4331",
        100,
    ),
}

_SIGNATURE_KEY = b"airgap-emulator/cssm-signature/v1"
_SLR_CODE = re.compile(
    r"C[A-Z]-Z(?P<pid>[A-Z0-9/._-]+):(?P<sn>[A-Z0-9]+)-(?P<token>[A-Za-z0-9]{9})-[0-9A-Fa-f]{2}"
)
_POLICY_XML = (
    "<smartLicensePolicy><policyCode><name>Demo Example Default Policy</name><version>1</version>"
    "<flag></flag><datestamp>2024-06-03T09:15:42</datestamp><ackRequired>yes</ackRequired>"
    "<subscription><firstTimeReport>90</firstTimeReport><onGoingReporting>180</onGoingReporting>"
    "<reportOnMACD>90</reportOnMACD></subscription><perpetual><firstTimeReport>90</firstTimeReport>"
    "<onGoingReporting>365</onGoingReporting><reportOnMACD>90</reportOnMACD></perpetual>"
    "<enforced><onGoingReporting>0</onGoingReporting><reportOnMACD>90</reportOnMACD></enforced>"
    "<export><onGoingReporting>0</onGoingReporting><reportOnMACD>90</reportOnMACD></export>"
    "<generic><firstTimeReport>90</firstTimeReport><onGoingReporting>365</onGoingReporting>"
    "<reportOnMACD>90</reportOnMACD></generic></policyCode><signature>{signature}</signature>"
    "</smartLicensePolicy>"
)


class _ApiError(Exception):
    """Refuse the whole API call with a vendor-style error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Unauthorized(_ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, "UNAUTHORIZED", message)


@dataclass
class Reservation:
    """An offline (SLUP) authorization or SLR reservation a device holds."""

    pid: str
    sn: str
    hostname: str | None
    virtual_account: str
    entitlements: dict[str, int]  # tag -> count
    kind: str = "SLUP"  # "SLUP" or "SLR"
    reservation_code: str | None = None  # SLR request code
    smart_license: str | None = None  # SLUP: base64 authorization code, as the poll answered it


class Reservations(dict[str, Reservation]):
    """The account's reservations by "PID:SN", with the count of each tag they hold kept as they
    change, so the shortage check of a reservation is a look-up rather than a walk over every
    reservation (quadratic over a batch of 100,000 devices). Set and delete reservations whole;
    their `entitlements` are not changed in place.
    """

    def __init__(self) -> None:
        super().__init__()
        self.totals: Counter[str] = Counter()

    def __setitem__(self, udi: str, reservation: Reservation) -> None:
        old = self.get(udi)
        if old is not None:
            self.totals.subtract(old.entitlements)
        super().__setitem__(udi, reservation)
        self.totals.update(reservation.entitlements)

    def __delitem__(self, udi: str) -> None:
        self.totals.subtract(self[udi].entitlements)
        super().__delitem__(udi)

    def pop(self, udi: str, *default: Any) -> Any:
        """Remove and return a reservation (keeping the totals)."""
        if udi in self:
            self.totals.subtract(self[udi].entitlements)
        return super().pop(udi, *default)

    def clear(self) -> None:
        """Remove every reservation."""
        super().clear()
        self.totals.clear()


@dataclass
class UsageReport:
    """One accepted RUM report (a `reports[]` entry), keyed in `reports` by payload SHA-256."""

    udi: str
    virtual_account: str
    software_tag: str
    entitlement_tags: list[str]
    report_ids: list[int]


@dataclass
class Poll:
    """The outcome of an accepted request, handed out once `ready_at` has passed."""

    poll_id: int
    action: str  # "authorizations" or "acknowledgements"
    ready_at: float  # on the emulator's clock
    results: list[dict[str, Any]]


@dataclass
class DeviceRecord:
    """What the account knows about a device that has been reserved or reported."""

    pid: str
    sn: str
    hostname: str | None
    virtual_account: str
    last_contact_ms: int
    reports: int = 0


@dataclass
class _LicenseRequest:
    pid: str
    sn: str
    hostname: str | None
    keys: list[tuple[str, int]]
    remove_code: str | None

    @property
    def udi(self) -> str:
        return f"{self.pid}:{self.sn}"


@dataclass
class _ReportRequest:
    sudi: dict[str, str]
    hostname: str | None
    usage: list[tuple[str, str]]  # (payload, signature value)


@dataclass
class _SlrRequest:
    code: str
    reservation_type: str
    licenses: list[tuple[str, int]]


class CiscoEmulator:
    """The Cisco Smart Software Licensing API as an `App` for `EmulatorServer`."""

    def __init__(
        self,
        *,
        poll_delay: float = 1.0,
        token_ttl: float = 3599,
        client_secret: str | None = None,
        strict_nonce: bool = False,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: int = POLL_INTERVAL,
        seed: int | None = None,
    ) -> None:
        """Create an emulator with one smart account and no devices.

        Args:
            poll_delay: seconds after a request until its poll answers COMPLETE.
            token_ttl: seconds an access token lives.
            client_secret: if set, the only client secret accepted; otherwise any non-empty one.
            strict_nonce: refuse a body whose nonce was seen before (default: count it only);
                the nonce's length is never checked.
            clock: monotonic clock in seconds, for token expiry and poll delays.
            poll_interval: seconds the OK_POLL answers tell clients to wait.
            seed: seeds poll ids and correlation ids, for repeatable runs.
        """
        self.poll_delay = poll_delay
        self.token_ttl = token_ttl
        self.client_secret = client_secret
        self.strict_nonce = strict_nonce
        self.clock = clock
        self.poll_interval = poll_interval
        self.domain = SMART_ACCOUNT_DOMAIN
        self.account_id = SMART_ACCOUNT_ID
        self.account_name = SMART_ACCOUNT_NAME
        self.virtual_accounts: dict[str, int] = dict(VIRTUAL_ACCOUNTS)
        self.licenses: dict[str, int] = {tag: entry[2] for tag, entry in CATALOGUE.items()}
        self.default_quantity: int | None = DEFAULT_QUANTITY  # None: unlisted tags are unknown
        self.tokens: dict[str, float] = {}  # access token -> expiry on `clock`
        self.reservations: dict[str, Reservation] = Reservations()  # "PID:SN" -> reservation
        self.reports: dict[str, UsageReport] = {}  # payload SHA-256 -> accepted report
        self.devices: dict[str, DeviceRecord] = {}  # "PID:SN" -> device
        self.polls: dict[int, Poll] = {}
        self.nonces: set[str] = set()
        self.nonce_reuse = 0
        self.calls: Counter[str] = Counter()
        self.mutations: dict[str, dict[str, int]] = {}
        self.lock = threading.RLock()
        self._rng = random.Random(seed)
        self.portal = portal.Portal(self)

    # --- App --------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request (see the module docstring for the error shapes)."""
        with self.lock:
            try:
                return self._route(request)
            except _ApiError as exc:
                return _error(exc.status, exc.code, exc.message)

    def stats(self) -> dict[str, Any]:
        """`{"calls": {action: n}, "mutations": {"PID:SN": {...}}, "nonce_reuse": n}`."""
        with self.lock:
            return {
                "calls": dict(self.calls),
                "mutations": {udi: dict(counts) for udi, counts in self.mutations.items()},
                "nonce_reuse": self.nonce_reuse,
            }

    # --- the account's operations, for the portal's file paths ----------------------------------

    def accept_usage(
        self, sudi: dict[str, str], usage: list[tuple[str, str]], virtual_account: str
    ) -> dict[str, Any]:
        """Accept one device's signed reports, as `v2/devices/reportusage` does."""
        return self._accept_report(_ReportRequest(sudi, None, usage), virtual_account, set())

    def reserve_licenses(
        self,
        pid: str,
        sn: str,
        hostname: str | None,
        keys: list[tuple[str, int]],
        virtual_account: str,
    ) -> dict[str, Any]:
        """Reserve licenses for a device, as `v2/devices/authrequest` does."""
        return self._reserve(_LicenseRequest(pid, sn, hostname, keys, None), virtual_account)

    def return_licenses(
        self, pid: str, sn: str, return_code: str, virtual_account: str
    ) -> dict[str, Any]:
        """Return a device's reservation, as `authrequest` with a remove_code does."""
        return self._return(_LicenseRequest(pid, sn, None, [], return_code), virtual_account)

    # --- routing ------------------------------------------------------------------------------

    def _route(self, request: Request) -> Response:
        path = request.path
        if path.startswith(portal.PREFIX):
            return self.portal.handle(request)
        if path.rstrip("/") in TOKEN_PATHS:
            self.calls["token"] += 1
            if request.method != "POST":
                return _method_not_allowed("POST")
            return self._token(request)
        for prefix in API_PREFIXES:
            if path.startswith(prefix):
                return self._api(request, path[len(prefix) :].strip("/"))
        self.calls["unknown"] += 1
        raise _ApiError(404, "NOT_FOUND", f"Unknown path '{path}'")

    def _api(self, request: Request, rest: str) -> Response:
        routes: list[tuple[str, str, str, Callable[[Request, dict[str, str]], Response]]] = [
            ("GET", r"v2/accounts/search", "accounts_search", self._accounts_search),
            ("POST", r"v2/devices/authrequest", "authrequest", self._authrequest),
            ("POST", r"v2/devices/reportusage", "reportusage", self._report_usage),
            ("POST", r"v2/accounts/poll", "poll", self._poll),
            ("POST", r"v3/licenses/summary", "licenses_summary", self._usage_summary),
            ("POST", r"v1/accounts/(?P<domain>[^/]+)/devices", "devices", self._devices),
            (
                "POST",
                r"v2/accounts/(?P<domain>[^/]+)/virtual-accounts/(?P<va>[^/]+)/reserve-licenses",
                "reserve_licenses",
                self._slr_reserve,
            ),
        ]
        for method, pattern, action, handler in routes:
            match = re.fullmatch(pattern, rest)
            if match is None:
                continue
            self.calls[action] += 1
            if request.method != method:
                return _method_not_allowed(method)
            params = {key: unquote(value) for key, value in match.groupdict().items()}
            return handler(request, params)
        self.calls["unknown"] += 1
        raise _ApiError(404, "NOT_FOUND", f"Unknown path '{request.path}'")

    # --- tokens -------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        form = {key: values[-1] for key, values in request.query.items()}
        text = request.body.decode("utf-8", "replace")
        form.update({key: values[-1] for key, values in parse_qs(text).items()})
        basic_id, basic_secret = basic_credentials(request.headers.get("authorization", ""))
        client_id = form.get("client_id") or basic_id
        client_secret = form.get("client_secret") or basic_secret
        grant_type = form.get("grant_type")
        if not grant_type:
            return _oauth_error(400, "invalid_request", "The 'grant_type' parameter is missing.")
        if grant_type != "client_credentials":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                f"The authorization grant type '{grant_type}' is not supported.",
            )
        secret_ok = bool(client_secret) and (
            self.client_secret is None
            or hmac.compare_digest((client_secret or "").encode(), self.client_secret.encode())
        )
        if not client_id or not secret_ok:
            return _oauth_error(
                401,
                "invalid_client",
                "Client authentication failed. Either the client or the client credentials "
                "are invalid.",
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock() + self.token_ttl
        body = {
            "token_type": "Bearer",
            # A fraction of a second (used in tests) still reads as a positive lifetime.
            "expires_in": max(1, int(self.token_ttl)),
            "access_token": token,
            "scope": "swapi",
        }
        return Response.json(200, body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authorize(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Unauthorized("Missing bearer token in the Authorization header")
        expiry = self.tokens.get(token)
        if expiry is None:
            raise _Unauthorized("Invalid access token")
        if self.clock() >= expiry:
            raise _Unauthorized("Access token expired")

    # --- headers and bodies ------------------------------------------------------------------

    def _device_context(self, request: Request, *, required: bool) -> str:
        """Check the X-CSW-* headers and return the virtual account's name."""
        names = {
            "x-csw-smart-account-id": "X-CSW-SMART-ACCOUNT-ID",
            "x-csw-virtual-account-id": "X-CSW-VIRTUAL-ACCOUNT-ID",
            "x-csw-requesting-system": "X-CSW-REQUESTING-SYSTEM",
        }
        present = {key: request.headers.get(key, "").strip() for key in names}
        missing = [names[key] for key, value in present.items() if not value]
        if not required and len(missing) == len(names):
            return "Default"
        if missing:
            raise _ApiError(
                400, "MISSING_HEADER", f"Missing required header(s): {', '.join(missing)}"
            )
        account = present["x-csw-smart-account-id"]
        if account not in (str(self.account_id), self.domain):
            raise _ApiError(
                403,
                "ACCESS_DENIED",
                f"Smart account '{account}' does not exist or is not accessible with this token",
            )
        virtual_account = self._virtual_account(present["x-csw-virtual-account-id"])
        if virtual_account is None:
            raise _ApiError(
                403,
                "ACCESS_DENIED",
                f"Virtual account '{present['x-csw-virtual-account-id']}' does not exist in "
                f"smart account {self.domain}",
            )
        try:
            system = json.loads(present["x-csw-requesting-system"])
        except ValueError:
            system = None
        if not (
            isinstance(system, dict)
            and _nonempty_str(system.get("udi_pid"))
            and _nonempty_str(system.get("udi_serial_number"))
        ):
            raise _ApiError(
                400,
                "INVALID_HEADER",
                'X-CSW-REQUESTING-SYSTEM must be JSON {"udi_pid":...,"udi_serial_number":...}',
            )
        return virtual_account

    def _virtual_account(self, value: str) -> str | None:
        for name, number in self.virtual_accounts.items():
            if value in (name, str(number)):
                return name
        return None

    def _check_domain(self, domain: str) -> None:
        if domain not in (self.domain, str(self.account_id)):
            raise _ApiError(
                403,
                "ACCESS_DENIED",
                f"Smart account '{domain}' does not exist or is not accessible with this token",
            )

    def _envelope(self, request: Request) -> dict[str, Any]:
        """Validate `{"data":{"timestamp","nonce",...}}`, record the nonce, return `data`."""
        data = _object(_body(request).get("data"), "data")
        # The timestamp is not checked: published clients send it as a number
        # (Postman collection), as a string of digits (Cisco's smartaccount.py poll) and with
        # values that are not milliseconds (1234574567), and nothing says Cisco refuses any.
        nonce = data.get("nonce")
        # Any non-empty string: Cisco's own Postman collection sends the fixed 10-character
        # "random1234" and gets OK_POLL back, so neither length nor uniqueness is enforced
        # (reuse is counted, and refused only under `strict_nonce`).
        if not isinstance(nonce, str) or not nonce:
            raise _ApiError(400, "INVALID_REQUEST", "data.nonce must be a non-empty string")
        if nonce in self.nonces:
            self.nonce_reuse += 1
            if self.strict_nonce:
                raise _ApiError(400, "NONCE_REUSED", f"Nonce '{nonce}' was already used")
        else:
            self.nonces.add(nonce)
        return data

    # --- endpoints ----------------------------------------------------------------------------

    def _accounts_search(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        wanted = request.query.get("domain", [])
        accounts = []
        if not wanted or self.domain in wanted:
            accounts.append(
                {
                    "account_name": self.account_name,
                    "domain": self.domain,
                    "account_id": self.account_id,
                    "account_type": "CUSTOMER",
                    "roles": ["SMART_ACCOUNT_ADMIN"],
                    "virtual_accounts": [
                        {
                            "name": name,
                            "virtual_account_id": number,
                            "is_default": name == "Default",
                        }
                        for name, number in self.virtual_accounts.items()
                    ],
                }
            )
        return Response.json(200, {"status": "SUCCESS", "accounts": accounts})

    def _authrequest(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        virtual_account = self._device_context(request, required=True)
        data = self._envelope(request)
        entries = data.get("licenses")
        if not isinstance(entries, list) or not entries:
            raise _ApiError(400, "INVALID_REQUEST", "data.licenses must be a non-empty list")
        # Everything is validated before anything changes, so a 400 never leaves state behind.
        parsed = [_parse_license(entry, index) for index, entry in enumerate(entries)]
        results = [
            self._return(item, virtual_account)
            if item.remove_code is not None
            else self._reserve(item, virtual_account)
            for item in parsed
        ]
        return self._start_poll("authorizations", results, str(data["nonce"]))

    def _reserve(self, item: _LicenseRequest, virtual_account: str) -> dict[str, Any]:
        piid = device.product_instance_identifier(item.pid, item.sn)
        sudi = _sudi(item.pid, item.sn)
        correlation = self._correlation_id()
        counts: dict[str, int] = {}
        for tag, count in item.keys:
            counts[tag] = counts.get(tag, 0) + count
        for tag, count in counts.items():
            problem = self._shortage(tag, count, exclude=item.udi)
            if problem is not None:
                code, message = problem
                return _authorization(
                    piid, sudi, "", "NOT_AUTHORIZED", code, "FAILED", message, correlation
                )
        license_xml = self._authorization_xml(item.pid, item.sn, virtual_account, counts, piid)
        smart_license = base64.b64encode(license_xml.encode("utf-8")).decode("ascii")
        # A new authorization code replaces the one the device held.
        self.reservations[item.udi] = Reservation(
            pid=item.pid,
            sn=item.sn,
            hostname=item.hostname,
            virtual_account=virtual_account,
            entitlements=counts,
            smart_license=smart_license,
        )
        self._touch_device(item.pid, item.sn, item.hostname, virtual_account)
        self._mutate(item.udi, "reserve")
        return _authorization(
            piid,
            sudi,
            smart_license,
            "AUTHORIZED",
            None,
            "SUCCESS",
            "Authorization code generated successfully",
            correlation,
        )

    def _return(self, item: _LicenseRequest, virtual_account: str) -> dict[str, Any]:
        piid = device.product_instance_identifier(item.pid, item.sn)
        sudi = _sudi(item.pid, item.sn)
        correlation = self._correlation_id()
        expected = device.return_code_for(item.pid, item.sn)
        given = "".join((item.remove_code or "").split())
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _authorization(
                piid,
                sudi,
                "",
                "NOT_RETURNED",
                "INVALID_RETURN_CODE",
                "FAILED",
                f"The return code is not valid for UDI PID:{item.pid},SN:{item.sn}",
                correlation,
            )
        reservation = self.reservations.get(item.udi)
        if reservation is None or reservation.kind != "SLUP":
            return _authorization(
                piid,
                sudi,
                "",
                "NOT_RETURNED",
                "NO_RESERVATION",
                "FAILED",
                f"No reserved licenses found for UDI PID:{item.pid},SN:{item.sn}; "
                "nothing to return",
                correlation,
            )
        del self.reservations[item.udi]
        self._touch_device(item.pid, item.sn, item.hostname, reservation.virtual_account)
        self._mutate(item.udi, "return")
        result = _authorization(
            piid,
            sudi,
            "",
            "RETURNED",
            None,
            "SUCCESS",
            f"The reserved licenses were returned to virtual account {reservation.virtual_account}",
            correlation,
        )
        result["returned_entitlements"] = [
            {"entitlement": tag, "count": count} for tag, count in reservation.entitlements.items()
        ]
        return result

    def _report_usage(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        virtual_account = self._device_context(request, required=True)
        data = self._envelope(request)
        reports = data.get("reports")
        if not isinstance(reports, list) or not reports:
            raise _ApiError(400, "INVALID_REQUEST", "data.reports must be a non-empty list")
        parsed = [_parse_report(report, index) for index, report in enumerate(reports)]
        seen_now: set[str] = set()
        results = [self._accept_report(item, virtual_account, seen_now) for item in parsed]
        return self._start_poll("acknowledgements", results, str(data["nonce"]))

    def _accept_report(
        self, item: _ReportRequest, virtual_account: str, seen_now: set[str]
    ) -> dict[str, Any]:
        sudi, usage = item.sudi, item.usage
        pid, sn = sudi["udi_pid"], sudi["udi_serial_number"]
        udi = f"{pid}:{sn}"
        software_tag = ""
        entitlement_tags: list[str] = []
        report_ids: list[int] = []
        digests: list[str] = []
        for index, (payload, signature) in enumerate(usage):
            if not device.verify_payload(payload, signature):
                return _ack_failed(
                    sudi,
                    software_tag,
                    "INVALID_SIGNATURE",
                    f"Signature validation failed for usage[{index}] of UDI PID:{pid},SN:{sn}",
                )
            digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
            if digest in self.reports or digest in seen_now or digest in digests:
                return _ack_failed(
                    sudi,
                    software_tag,
                    "DUPLICATE_REPORT",
                    f"Duplicate report: usage[{index}] of UDI PID:{pid},SN:{sn} "
                    "was already received",
                )
            facts = _payload_facts(payload)
            if facts is None or facts[0] != sudi:
                return _ack_failed(
                    sudi,
                    software_tag,
                    "UDI_MISMATCH",
                    f"usage[{index}] does not describe UDI PID:{pid},SN:{sn}",
                )
            _, tag, entitlement, report_id = facts
            software_tag = software_tag or tag
            if entitlement:
                entitlement_tags.append(entitlement)
            if report_id is not None:
                report_ids.append(report_id)
            digests.append(digest)
        for digest in digests:
            seen_now.add(digest)
            self.reports[digest] = UsageReport(
                udi=udi,
                virtual_account=virtual_account,
                software_tag=software_tag,
                entitlement_tags=entitlement_tags,
                report_ids=report_ids,
            )
        record = self._touch_device(pid, sn, item.hostname, virtual_account)
        record.reports += 1
        self._mutate(udi, "report")
        ack = self._ack_xml(sudi, record.hostname, software_tag, report_ids, virtual_account)
        return {
            "sudi": sudi,
            "software_tag_identifier": software_tag,
            "smart_license": base64.b64encode(ack.encode("utf-8")).decode("ascii"),
            "status": "SUCCESS",
            "error_code": None,
            "status_message": "Usage report accepted",
        }

    def _poll(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        self._device_context(request, required=False)
        data = self._envelope(request)
        raw = data.get("poll_id")
        if isinstance(raw, int) and not isinstance(raw, bool):
            poll_id = raw
        elif isinstance(raw, str) and raw.isdigit():
            poll_id = int(raw)
        else:
            raise _ApiError(400, "INVALID_REQUEST", "data.poll_id must be an integer")
        poll = self.polls.get(poll_id)
        if poll is None:
            raise _ApiError(404, "POLL_ID_NOT_FOUND", f"Poll id {raw} was not found")
        action = data.get("action")
        if action is not None and action != poll.action:
            raise _ApiError(
                400,
                "INVALID_REQUEST",
                f"Poll id {poll_id} belongs to action '{poll.action}', not '{action}'",
            )
        nonce = str(data["nonce"])
        if self.clock() < poll.ready_at:
            # Cisco's smartaccount.py treats an OK_POLL whose "message" is not "" as an error.
            return Response.json(202, self._ok_poll(poll, nonce=nonce, message=""))
        # The envelope of the published COMPLETE answers (Postman collection): message_code,
        # message, timestamp, nonce, type (the action) and correlation_id around `data`.
        body = {
            "status": "COMPLETE",
            "message_code": "",
            "message": "",
            "timestamp": _now_ms(),
            "nonce": nonce,
            "type": poll.action,
            "correlation_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            "poll_id": poll.poll_id,
            "action": poll.action,
            "data": {"timestamp": _now_ms(), poll.action: poll.results},
        }
        return Response.json(200, body)

    def _usage_summary(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        selected = self._device_context(request, required=False)
        by_header = bool(request.headers.get("x-csw-virtual-account-id"))
        data = self._envelope(request)
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(_nonempty_str(tag) for tag in tags):
            raise _ApiError(400, "INVALID_REQUEST", "data.tags must be a list of strings")
        if not tags:
            known = set(self.licenses)
            for reservation in self.reservations.values():
                known.update(reservation.entitlements)
            for report in self.reports.values():
                known.update(report.entitlement_tags)
            tags = sorted(known)
        summary = []
        for tag in tags:
            reserved = sum(
                reservation.entitlements.get(tag, 0)
                for reservation in self.reservations.values()
                if not by_header or reservation.virtual_account == selected
            )
            reporting = {
                report.udi
                for report in self.reports.values()
                if tag in report.entitlement_tags
                and (not by_header or report.virtual_account == selected)
            }
            purchased = self._quantity(tag) or 0
            in_use = reserved + len(reporting)
            summary.append(
                {
                    "tag": tag,
                    "display_name": _display_name(tag),
                    "purchased": purchased,
                    "reserved": reserved,
                    "reported": len(reporting),
                    "in_use": in_use,
                    "available": purchased - in_use,
                    "status": "IN_COMPLIANCE" if in_use <= purchased else "OUT_OF_COMPLIANCE",
                }
            )
        body = {
            "status": "SUCCESS",
            "data": {"timestamp": _now_ms(), "licenses": summary},
        }
        return Response.json(200, body)

    def _devices(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        self._check_domain(params["domain"])
        body = _body(request)
        if isinstance(body.get("data"), dict):
            body = body["data"]
        names = body.get("virtualAccounts", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise _ApiError(400, "INVALID_REQUEST", "virtualAccounts must be a list of names")
        selected: set[str] = set()
        for name in names:
            resolved = self._virtual_account(name)
            if resolved is None:
                raise _ApiError(
                    400, "INVALID_VIRTUAL_ACCOUNT", f"Virtual account '{name}' does not exist"
                )
            selected.add(resolved)
        limit = _count_field(body.get("limit", 50), "limit", minimum=1)
        offset = _count_field(body.get("offset", 0), "offset", minimum=0)
        limit = min(limit, MAX_PAGE)
        matching = [
            record
            for udi, record in sorted(self.devices.items())
            if not selected or record.virtual_account in selected
        ]
        page = [self._device_entry(record) for record in matching[offset : offset + limit]]
        answer = {
            "status": "SUCCESS",
            "totalRecords": len(matching),
            "limit": limit,
            "offset": offset,
            "devices": page,
        }
        return Response.json(200, answer)

    def _slr_reserve(self, request: Request, params: dict[str, str]) -> Response:
        self._authorize(request)
        self._check_domain(params["domain"])
        virtual_account = self._virtual_account(params["va"])
        if virtual_account is None:
            raise _ApiError(404, "NOT_FOUND", f"Virtual account '{params['va']}' does not exist")
        body = _body(request)
        if isinstance(body.get("data"), dict):
            body = body["data"]
        entries = body.get("reservationRequests")
        if not isinstance(entries, list) or not entries:
            raise _ApiError(400, "INVALID_REQUEST", "reservationRequests must be a non-empty list")
        parsed = [_parse_slr(entry, index) for index, entry in enumerate(entries)]
        codes = [self._slr_one(item, virtual_account) for item in parsed]
        succeeded = sum(1 for code in codes if code["status"] == "SUCCESS")
        if succeeded == len(codes):
            status = "SUCCESS"
        elif succeeded:
            status = "PARTIAL_SUCCESS"
        else:
            status = "FAILED"
        return Response.json(200, {"status": status, "authorizationCodes": codes})

    def _slr_one(self, item: _SlrRequest, virtual_account: str) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "reservationCode": item.code,
            "reservationType": item.reservation_type,
            "udi": None,
            "authorizationCode": "",
            "status": "FAILED",
            "errorCode": None,
            "statusMessage": "",
        }
        match = _SLR_CODE.fullmatch(item.code)
        if match is None:
            answer["errorCode"] = "INVALID_RESERVATION_CODE"
            answer["statusMessage"] = f"The reservation request code '{item.code}' is invalid"
            return answer
        pid, sn = match["pid"], match["sn"]
        udi = f"{pid}:{sn}"
        answer["udi"] = _sudi(pid, sn)
        counts: dict[str, int] = {}
        for tag, quantity in item.licenses:
            counts[tag] = counts.get(tag, 0) + quantity
        for tag, quantity in counts.items():
            problem = self._shortage(tag, quantity, exclude=udi)
            if problem is not None:
                answer["errorCode"], answer["statusMessage"] = problem
                return answer
        self.reservations[udi] = Reservation(
            pid=pid,
            sn=sn,
            hostname=None,
            virtual_account=virtual_account,
            entitlements=counts,
            kind="SLR",
            reservation_code=item.code,
        )
        self._touch_device(pid, sn, None, virtual_account)
        self._mutate(udi, "reserve")
        answer["authorizationCode"] = self._slr_xml(pid, sn, item.reservation_type, counts)
        answer["status"] = "SUCCESS"
        answer["statusMessage"] = "Licenses reserved successfully"
        return answer

    # --- helpers ------------------------------------------------------------------------------

    def _start_poll(self, action: str, results: list[dict[str, Any]], nonce: str) -> Response:
        poll_id = self._rng.randrange(10**17, 10**18)
        while poll_id in self.polls:
            poll_id = self._rng.randrange(10**17, 10**18)
        poll = Poll(poll_id, action, self.clock() + self.poll_delay, results)
        self.polls[poll_id] = poll
        return Response.json(202, self._ok_poll(poll, nonce=nonce, message=None))

    def _ok_poll(self, poll: Poll, *, nonce: str, message: str | None) -> dict[str, Any]:
        """An OK_POLL answer, keys as in the Postman collection's 202 examples."""
        return {
            "status": "OK_POLL",
            "message_code": None,
            "message": message,
            "timestamp": _now_ms(),
            "nonce": nonce,
            "type": None,
            "poll_id": poll.poll_id,
            "poll_interval": self.poll_interval,
            "action": poll.action,
        }

    def _quantity(self, tag: str) -> int | None:
        return self.licenses.get(tag, self.default_quantity)

    def _shortage(self, tag: str, count: int, *, exclude: str) -> tuple[str, str] | None:
        """Why `count` more of `tag` cannot be reserved (code, message), or None if they can."""
        purchased = self._quantity(tag)
        if purchased is None:
            return "INVALID_ENTITLEMENT", f"Entitlement tag '{tag}' is not valid for this account"
        held = self.reservations.get(exclude)
        mine = held.entitlements.get(tag, 0) if held is not None else 0
        if isinstance(self.reservations, Reservations):
            reserved = self.reservations.totals[tag] - mine
        else:  # replaced by a plain dict (a test's own state)
            reserved = sum(r.entitlements.get(tag, 0) for r in self.reservations.values()) - mine
        available = purchased - reserved
        if count > available:
            return (
                "INSUFFICIENT_LICENSES",
                f"Insufficient licenses for {_display_name(tag)}: requested {count}, "
                f"available {max(0, available)}",
            )
        return None

    def _touch_device(
        self, pid: str, sn: str, hostname: str | None, virtual_account: str
    ) -> DeviceRecord:
        udi = f"{pid}:{sn}"
        record = self.devices.get(udi)
        if record is None:
            record = DeviceRecord(pid, sn, hostname, virtual_account, _now_ms())
            self.devices[udi] = record
        record.last_contact_ms = _now_ms()
        record.virtual_account = virtual_account
        if hostname:
            record.hostname = hostname
        return record

    def _device_entry(self, record: DeviceRecord) -> dict[str, Any]:
        udi = f"{record.pid}:{record.sn}"
        reservation = self.reservations.get(udi)
        entry: dict[str, Any] = {
            "udi": udi,
            "sudi": _sudi(record.pid, record.sn),
            "productId": record.pid,
            "serialNumber": record.sn,
            "hostname": record.hostname,
            "virtualAccount": record.virtual_account,
            "productInstanceIdentifier": device.product_instance_identifier(record.pid, record.sn),
            "lastContactDate": datetime.fromtimestamp(record.last_contact_ms / 1000, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "reservationStatus": "RESERVED" if reservation is not None else "NONE",
            "reservationType": reservation.kind if reservation is not None else None,
            "licenses": [
                {"entitlementTag": tag, "quantity": count}
                for tag, count in (reservation.entitlements.items() if reservation else [])
            ],
            "usageReports": record.reports,
        }
        if reservation is not None and reservation.kind == "SLUP" and reservation.smart_license:
            # CSSM's "download authorization code" of the product instance (module docstring).
            entry["authorizationCode"] = reservation.smart_license
        return entry

    def _mutate(self, udi: str, kind: str) -> None:
        counts = self.mutations.setdefault(udi, {"reserve": 0, "return": 0, "report": 0})
        counts[kind] += 1

    def _correlation_id(self) -> str:
        return f"{self._rng.getrandbits(96):024x}"

    def _customer_info(self, virtual_account: str, *, timestamp: bool) -> str:
        parts = [f"<timestamp>{_now_ms()}</timestamp>"] if timestamp else []
        parts += [
            f"<smartAccount>{escape(self.account_name)}</smartAccount>",
            f"<virtualAccount>{escape(virtual_account)}</virtualAccount>",
        ]
        if timestamp:
            parts += [
                f"<smartAccountId>{self.account_id}</smartAccountId>",
                f"<virtualAccountId>{self.virtual_accounts.get(virtual_account, 0)}"
                "</virtualAccountId>",
                f"<smartAccountDomain>{escape(self.domain)}</smartAccountDomain>",
            ]
        return "<customerInfo>" + "".join(parts) + "</customerInfo>"

    def _account_xml(self, virtual_account: str) -> str:
        """Account info and correlation id, the tail of every license and ACK."""
        info = self._customer_info(virtual_account, timestamp=True)
        return (
            "<smartLicenseAccountInfo>"
            + info
            + f"<signature>{_signature(info, 72)}</signature></smartLicenseAccountInfo>"
            + f"<correlationID>{self._correlation_id()}</correlationID>"
        )

    def _authorization_xml(
        self, pid: str, sn: str, virtual_account: str, counts: dict[str, int], piid: str
    ) -> str:
        """A decoded `smart_license`, shaped like samples/cisco/auth-code-lic.txt."""
        entitlements = "".join(
            "<entitlement>"
            f"<tag>{escape(tag)}</tag><count>{count}</count><startDate></startDate>"
            "<endDate></endDate><licenseType>PERPETUAL</licenseType>"
            f"<displayName>{escape(_display_name(tag))}</displayName>"
            f"<tagDescription>{escape(_description(tag))}</tagDescription>"
            "<tagType>PERPETUAL</tagType><status><success>true</success></status>"
            "</entitlement>"
            for tag, count in counts.items()
        )
        code = (
            "<authorizationCode>"
            + self._customer_info(virtual_account, timestamp=False)
            + f"<flag>A</flag><version>C</version><piid>{piid}</piid>"
            + f"<dateStamp>{_datestamp()}</dateStamp>"
            + f"<entitlements>{entitlements}</entitlements>"
            + "<status><success>true</success>"
            + f"<correlationID>{self._correlation_id()}</correlationID></status>"
            + "</authorizationCode>"
        )
        return (
            "<smartLicense><smartLicenseAuthorization>"
            f"<udi>P:{escape(pid)},S:{escape(sn)}</udi>"
            + code
            + f"<signature>{_signature(code, 256)}</signature></smartLicenseAuthorization>"
            + _policy_xml()
            + self._account_xml(virtual_account)
            + "</smartLicense>"
        )

    def _ack_xml(
        self,
        sudi: dict[str, str],
        hostname: str | None,
        software_tag: str,
        report_ids: list[int],
        virtual_account: str,
    ) -> str:
        """A decoded ACK, shaped like samples/cisco/rum/ack-c9300.xml."""
        ack = [
            {
                "sudi": sudi,
                "hostname": hostname or "",
                "software_tag_identifier": software_tag,
                "timestamp": _now_ms(),
                "nonce": str(self._rng.randrange(10**18, 10**19)),
                "ack_status": "SUCCESS",
                "report_acks": [{"report_id": rid, "status": "ACK"} for rid in report_ids],
            }
        ]
        data = json.dumps(ack, separators=(",", ":"))
        return (
            "<smartLicense>"
            + _policy_xml()
            + f"<smartLicenseRumAck><data><![CDATA[{data}]]></data>"
            + f"<signature>{_signature(data, 256)}</signature></smartLicenseRumAck>"
            + self._account_xml(virtual_account)
            + "</smartLicense>"
        )

    def _slr_xml(self, pid: str, sn: str, reservation_type: str, counts: dict[str, int]) -> str:
        """An SLR authorization code, as the device's `license smart reservation install` takes."""
        entitlements = "".join(
            f"<entitlement><tag>{escape(tag)}</tag><count>{count}</count>"
            "<startDate></startDate><endDate></endDate><licenseType>PERPETUAL</licenseType>"
            f"<displayName>{escape(_display_name(tag))}</displayName>"
            f"<tagDescription>{escape(_description(tag))}</tagDescription>"
            "<subscriptionID></subscriptionID></entitlement>"
            for tag, count in counts.items()
        )
        code = (
            "<authorizationCode><flag>A</flag><version>C</version>"
            f"<piid>{device.product_instance_identifier(pid, sn)}</piid>"
            f"<timestamp>{_now_ms()}</timestamp>"
            f"<entitlements>{entitlements}</entitlements></authorizationCode>"
        )
        root = "specificPLR" if reservation_type == "SPECIFIC" else "universalPLR"
        return (
            f"<{root}>{code}<signature>{_signature(code, 256)}</signature>"
            f"<udi>P:{escape(pid)},S:{escape(sn)}</udi></{root}>"
        )


def build_cisco_server(
    *,
    port: int = 0,
    latency_ms: float = 0,
    poll_delay: float = 1.0,
    faults: str | None = None,
    token_ttl: float = 3599,
    client_secret: str | None = None,
    strict_nonce: bool = False,
    tls: bool = False,
    cert_out: Path | None = None,
    host: str = "127.0.0.1",
    poll_interval: int | None = None,
    licenses: int | None = None,
) -> EmulatorServer:
    """Build (bind, not start) the Cisco emulator server for `airgap emulate cisco`.

    The CLI prints `server.url` (and `server.cert_path` under TLS), then calls
    `server.serve_forever()`.

    Args:
        port: TCP port; 0 picks a free one.
        latency_ms: milliseconds added before each vendor request.
        poll_delay: seconds until a poll answers COMPLETE.
        faults: a `--faults` spec such as `429=0.1,500=0.05,reset=0.02,slow=0.1`.
        token_ttl: seconds an access token lives.
        client_secret: require this client secret (default: any non-empty one).
        strict_nonce: refuse reused nonces instead of counting them.
        tls: serve HTTPS with a self-signed certificate.
        cert_out: where to write that certificate (PEM).
        host: address to bind.
        poll_interval: seconds the OK_POLL answers tell clients to wait; default
            `max(1, ceil(poll_delay))`, so a client honouring it polls right after the delay.
        licenses: licenses purchased of every tag (default: the catalogue's quantities, 10,000
            of a tag not in it), e.g. enough for a batch of 100,000 devices.

    Raises:
        ConfigError: a bad faults spec, negative delays, a poll interval below 1, fewer than 0
            licenses, `cert_out` without `tls`, or the port cannot be bound.

    Returns:
        The bound server.
    """
    if poll_delay < 0 or token_ttl <= 0:
        raise ConfigError("poll delay must be >= 0 and token TTL > 0 seconds")
    if poll_interval is None:
        poll_interval = max(1, math.ceil(poll_delay))
    elif poll_interval < 1:
        raise ConfigError(f"poll interval must be at least 1 second, not {poll_interval}")
    app = CiscoEmulator(
        poll_delay=poll_delay,
        token_ttl=token_ttl,
        client_secret=client_secret,
        strict_nonce=strict_nonce,
        poll_interval=poll_interval,
    )
    if licenses is not None:
        if licenses < 0:
            raise ConfigError(f"licenses must be 0 or more, not {licenses}")
        app.licenses = dict.fromkeys(app.licenses, licenses)
        app.default_quantity = licenses
    return EmulatorServer(
        app,
        host=host,
        port=port,
        latency_ms=latency_ms,
        faults=Faults.parse(faults) if faults else None,
        tls=tls,
        cert_out=cert_out,
    )


# --- module helpers ---------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return Response.json(
        status, {"status": "ERROR", "code": code, "message": message}, headers=headers
    )


def _oauth_error(status: int, error: str, description: str) -> Response:
    return Response.json(
        status,
        {"error": error, "error_description": description},
        headers={"Cache-Control": "no-store"},
    )


def _method_not_allowed(allowed: str) -> Response:
    response = _error(405, "METHOD_NOT_ALLOWED", f"Use {allowed} for this path")
    response.headers["Allow"] = allowed
    return response


def _body(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except BadRequest as exc:
        raise _ApiError(400, "INVALID_REQUEST", str(exc)) from None
    return _object(body, "request body")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _ApiError(400, "INVALID_REQUEST", f"{what} must be a JSON object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _count_field(value: Any, what: str, *, minimum: int) -> int:
    """A count given as a number or a numeric string (clients send both)."""
    if _is_int(value) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
    else:
        raise _ApiError(400, "INVALID_REQUEST", f"{what} must be an integer, not {value!r}")
    if number < minimum:
        raise _ApiError(400, "INVALID_REQUEST", f"{what} must be at least {minimum}")
    return number


def _parse_sudi(value: Any, where: str) -> dict[str, str]:
    sudi = _object(value, f"{where}.sudi")
    pid, sn = sudi.get("udi_pid"), sudi.get("udi_serial_number")
    if not (_nonempty_str(pid) and _nonempty_str(sn)):
        raise _ApiError(400, "INVALID_REQUEST", f"{where}.sudi needs udi_pid and udi_serial_number")
    return {"udi_pid": str(pid).strip(), "udi_serial_number": str(sn).strip()}


def _parse_license(entry: Any, index: int) -> _LicenseRequest:
    where = f"data.licenses[{index}]"
    item = _object(entry, where)
    sudi = _parse_sudi(item.get("sudi"), where)
    keys = item.get("keys", [])
    if not isinstance(keys, list):
        raise _ApiError(400, "INVALID_REQUEST", f"{where}.keys must be a list")
    remove_code = item.get("remove_code")
    if keys and remove_code is None:
        parsed: list[tuple[str, int]] = []
        for number, key in enumerate(keys):
            key_obj = _object(key, f"{where}.keys[{number}]")
            tag = key_obj.get("entitlement")
            if not _nonempty_str(tag):
                raise _ApiError(
                    400, "INVALID_REQUEST", f"{where}.keys[{number}].entitlement is missing"
                )
            count = _count_field(key_obj.get("count"), f"{where}.keys[{number}].count", minimum=1)
            parsed.append((str(tag), count))
        code = None
    elif not keys and _nonempty_str(remove_code):
        parsed, code = [], str(remove_code)
    else:
        raise _ApiError(
            400,
            "INVALID_REQUEST",
            f"{where} needs either keys to reserve, or keys [] and remove_code to return",
        )
    hostname = item.get("hostname")
    return _LicenseRequest(
        pid=sudi["udi_pid"],
        sn=sudi["udi_serial_number"],
        hostname=hostname if isinstance(hostname, str) and hostname else None,
        keys=parsed,
        remove_code=code,
    )


def _parse_report(entry: Any, index: int) -> _ReportRequest:
    where = f"data.reports[{index}]"
    report = _object(entry, where)
    sudi = _parse_sudi(report.get("sudi"), where)
    usage = report.get("usage")
    if not isinstance(usage, list) or not usage:
        raise _ApiError(400, "INVALID_REQUEST", f"{where}.usage must be a non-empty list")
    parsed = []
    for number, item in enumerate(usage):
        usage_obj = _object(item, f"{where}.usage[{number}]")
        payload = usage_obj.get("payload")
        signature = usage_obj.get("signature")
        if not isinstance(payload, str) or not isinstance(signature, dict):
            raise _ApiError(
                400,
                "INVALID_REQUEST",
                f"{where}.usage[{number}] needs a payload string and a signature object",
            )
        value = signature.get("value")
        if not isinstance(value, str):
            raise _ApiError(
                400, "INVALID_REQUEST", f"{where}.usage[{number}].signature.value is missing"
            )
        parsed.append((payload, value))
    hostname = report.get("hostname")
    return _ReportRequest(
        sudi=sudi,
        hostname=hostname if isinstance(hostname, str) and hostname else None,
        usage=parsed,
    )


def _parse_slr(entry: Any, index: int) -> _SlrRequest:
    where = f"reservationRequests[{index}]"
    item = _object(entry, where)
    code = item.get("reservationCode")
    if not _nonempty_str(code):
        raise _ApiError(400, "INVALID_REQUEST", f"{where}.reservationCode is missing")
    kind = item.get("reservationType", "SPECIFIC")
    if kind not in ("SPECIFIC", "UNIVERSAL"):
        raise _ApiError(
            400, "INVALID_REQUEST", f"{where}.reservationType must be SPECIFIC or UNIVERSAL"
        )
    licenses = item.get("licenses", [])
    if not isinstance(licenses, list) or (kind == "SPECIFIC" and not licenses):
        raise _ApiError(400, "INVALID_REQUEST", f"{where}.licenses must be a non-empty list")
    parsed = []
    for number, lic in enumerate(licenses):
        lic_obj = _object(lic, f"{where}.licenses[{number}]")
        tag = lic_obj.get("entitlementTag")
        if not _nonempty_str(tag):
            raise _ApiError(
                400, "INVALID_REQUEST", f"{where}.licenses[{number}].entitlementTag is missing"
            )
        quantity = _count_field(
            lic_obj.get("quantity"), f"{where}.licenses[{number}].quantity", minimum=1
        )
        parsed.append((str(tag), quantity))
    return _SlrRequest(code=str(code).strip(), reservation_type=str(kind), licenses=parsed)


def _payload_facts(payload: str) -> tuple[dict[str, str], str, str, int | None] | None:
    """(sudi, software tag, entitlement tag, report id) of a RUM payload, in either layout."""
    try:
        obj = json.loads(payload)
        ident = obj["asset_identification"]
        raw_sudi = ident["instance"]["sudi"]
        sudi = {
            "udi_pid": str(raw_sudi["udi_pid"]),
            "udi_serial_number": str(raw_sudi["udi_serial_number"]),
        }
        software_tag = str(ident.get("asset", {}).get("name", ""))
        meta = obj.get("meta", {})
        entitlement = str(meta.get("entitlement_tag", ""))
        report_id = ident.get("report_id", meta.get("report_id"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return sudi, software_tag, entitlement, report_id if _is_int(report_id) else None


def _ack_failed(sudi: dict[str, str], software_tag: str, code: str, message: str) -> dict[str, Any]:
    return {
        "sudi": sudi,
        "software_tag_identifier": software_tag,
        "smart_license": "",
        "status": "FAILED",
        "error_code": code,
        "status_message": message,
    }


def _authorization(
    piid: str,
    sudi: dict[str, str],
    smart_license: str,
    auth_status: str,
    error_code: str | None,
    status: str,
    message: str,
    correlation: str,
) -> dict[str, Any]:
    return {
        "product_instance_identifier": piid,
        "sudi": sudi,
        "smart_license": smart_license,
        "auth_status": auth_status,
        "error_code": error_code,
        "status": status,
        "status_message": message,
        "correlation_id": correlation,
    }


def _sudi(pid: str, sn: str) -> dict[str, str]:
    return {"udi_pid": pid, "udi_serial_number": sn}


def _display_name(tag: str) -> str:
    entry = CATALOGUE.get(tag)
    if entry is not None:
        return entry[0]
    match = re.search(r"com\.cisco\.([^,]+)", tag)
    return match.group(1) if match else tag


def _description(tag: str) -> str:
    entry = CATALOGUE.get(tag)
    return entry[1] if entry is not None else f"{_display_name(tag)} (emulated entitlement)"


def _signature(material: str, size: int) -> str:
    """Base64 of `size` bytes derived from the material: looks like an RSA signature."""
    out = b""
    block = material.encode("utf-8")
    while len(out) < size:
        block = hmac.new(_SIGNATURE_KEY, block, hashlib.sha256).digest()
        out += block
    return base64.b64encode(out[:size]).decode("ascii")


def _policy_xml() -> str:
    return _POLICY_XML.replace("{signature}", _signature("policy", 256))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _datestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
