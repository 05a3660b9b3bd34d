"""Client of Cisco's Smart Software Licensing API (swapi) for the six `cisco.*` actions.

Implements `airgap.outside.vendor.VendorClient`: an OAuth client-credentials token kept fresh
for every thread (`CiscoSession`, a `TokenSession`), smart and virtual account resolution, SLUP
reservations and returns through `v2/devices/authrequest` + `v2/accounts/poll`, RUM usage
reports, SLR reservations, usage by tag and the device list, and reconciliation by poll id or
device look-up after a crash or an uncertain submit.

It leaves out the journal, the thread pool, deadlines and the response bundle (the processor,
`airgap.outside.process`), transport retries (`airgap.outside.http`) and the token rules
(`airgap.outside.session`). Secrets (client id and secret, tokens) never reach a message, a log
line, a result or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import quote

import requests

from airgap.config import Config
from airgap.errors import AirgapError, AuthError, ConfigError, InputError, VendorError
from airgap.formats.rum import parse_rum_file
from airgap.model import action, actions_of
from airgap.outside.http import (
    HttpClient,
    HttpResponse,
    JsonBody,
    RateLimiter,
    RetryPolicy,
    TlsSettings,
    Unauthorized,
    UncertainOutcome,
    VendorRejected,
    vendor_message,
)
from airgap.outside.session import Token, TokenSession
from airgap.outside.vendor import NOT_SUBMITTED, ClientOptions, Outcome, Reconciled, WorkItem

__all__ = ["CiscoClient", "CiscoSession", "CiscoSettings"]

_log = logging.getLogger(__name__)

_ACTIONS: Final = actions_of("cisco")
_MUTATING: Final = frozenset(name for name in _ACTIONS if action(name).mutating)
# The poll `action` each polled action's request answers with.
_POLL_ACTION: Final = {
    "cisco.reserve": "authorizations",
    "cisco.return": "authorizations",
    "cisco.report_usage": "acknowledgements",
}
# Statuses by which Cisco refuses the item itself (malformed request, unknown poll id, ...): the
# service did not act, and the answer is the item's failure, not the whole run's.
_REFUSED_STATUSES: Final = (400, 404, 409, 422)
_PAGE_SIZE: Final = 1000  # devices per page of the device list (the service's maximum)
_MAX_PAGES: Final = 10_000  # guard against a service that never says it is done
_TOKEN_MARGIN_MAX: Final = 60.0  # seconds before expiry a token is replaced
_TOKEN_MARGIN_SHARE: Final = 0.1  # ... or this share of its lifetime, whichever is smaller
_DEFAULT_EXPIRES_IN: Final = 3599.0  # seconds, when the token answer gives no lifetime
_NONCE_ALPHABET: Final = string.ascii_letters + string.digits
_NONCE_LENGTH: Final = 16
_SLR_PRECEDENCE: Final = "LONGEST_TERM_FIRST"
_CREDENTIALS_HINT: Final = (
    "Export AIRGAP_CISCO_CLIENT_ID and AIRGAP_CISCO_CLIENT_SECRET with the credentials of an API "
    "client that has access to the smart account."
)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CiscoSettings:
    """Where and as whom the client talks to Cisco. Built once, by `from_config` or by hand.

    The client id and secret are left out of the repr, and out of every message the client makes.
    """

    token_url: str
    api_base: str
    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    smart_account: str | None = None  # domain (or id/name); None: the only account visible
    virtual_account: str = "Default"  # default for items that name none
    verify_tls: bool | str = True  # True, False, or a CA bundle (PEM) path

    @classmethod
    def from_config(cls, config: Config) -> CiscoSettings:
        """Read the `cisco.*` settings and the credentials from a loaded config.

        Args:
            config: the home's config, with environment overrides and secrets.

        Raises:
            ConfigError: (E_CONFIG) a URL is unset, or AIRGAP_CISCO_CLIENT_ID or
                AIRGAP_CISCO_CLIENT_SECRET is not set.

        Returns:
            The settings.
        """
        missing = [
            name
            for key, name in (
                ("cisco.client_id", "AIRGAP_CISCO_CLIENT_ID"),
                ("cisco.client_secret", "AIRGAP_CISCO_CLIENT_SECRET"),
            )
            if not config.secret(key)
        ]
        if missing:
            raise ConfigError(
                f"Cisco API credentials are not set (missing {' and '.join(missing)})",
                hint=_CREDENTIALS_HINT,
            )
        token_url = config.get("cisco.token_url")
        api_base = config.get("cisco.api_base")
        if not token_url or not api_base:
            raise ConfigError(
                "cisco.token_url and cisco.api_base must both be set",
                hint="Set them with `airgap config set` or AIRGAP_CISCO_TOKEN_URL / "
                "AIRGAP_CISCO_API_BASE.",
            )
        smart_account = config.get("cisco.smart_account")
        return cls(
            token_url=str(token_url),
            api_base=str(api_base),
            client_id=str(config.secret("cisco.client_id")),
            client_secret=str(config.secret("cisco.client_secret")),
            smart_account=str(smart_account) if smart_account else None,
            virtual_account=str(config.get("cisco.virtual_account") or "Default"),
            verify_tls=TlsSettings.from_config(config, "cisco").verify,
        )


# --- internal records --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    """The smart account in use, as `v2/accounts/search` described it."""

    domain: str
    account_id: str
    virtual_accounts: Mapping[str, str]  # name -> virtual_account_id (as text)


class _Refused(VendorError):
    """Cisco refused one call as a whole with a 4xx answer (it did not act on it)."""

    def __init__(self, status: int, cisco_code: str, message: str) -> None:
        super().__init__(f"Cisco refused the request: HTTP {status}: {message}")
        self.status = status
        self.cisco_code = cisco_code
        self.vendor_text = message  # Cisco's message, verbatim (redacted)


class CiscoSession(TokenSession):
    """Cisco's OAuth client-credentials token on every call (`Authorization: Bearer …`).

    A token comes from one POST of the client id and secret to `token_url`; Cisco's tokens
    live about an hour (`expires_in`), and one is replaced a tenth of its lifetime (at most a
    minute) before it expires. A 403 means the API client may not use the account.
    """

    name: ClassVar[str] = "cisco"
    margin_max: ClassVar[float] = _TOKEN_MARGIN_MAX
    margin_share: ClassVar[float] = _TOKEN_MARGIN_SHARE

    def __init__(
        self,
        settings: CiscoSettings,
        http: HttpClient,
        *,
        owned: requests.Session | None = None,
    ) -> None:
        """Create the session; no token is fetched before the first call.

        Args:
            settings: the token URL and the credentials.
            http: the HTTP client of the API.
            owned: a `requests.Session` the HTTP client shares, closed by `finish()`.
        """
        super().__init__(http, secrets=(settings.client_id, settings.client_secret))
        self.settings = settings
        self._owned = owned

    def _obtain(self, current: Token | None, generation: int) -> Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        try:
            response = self.http.request(
                "POST",
                self.settings.token_url,
                data=form,
                headers={"Accept": "application/json"},
                mutating=False,  # a token request changes nothing worth protecting
                expected=(200,),
            )
        except Unauthorized as exc:
            raise AuthError(
                f"Cisco refused the API client credentials: {exc.vendor_message}",
                hint=_CREDENTIALS_HINT,
            ) from exc
        except VendorRejected as exc:
            raise AuthError(
                f"Cisco's token endpoint refused the request: HTTP {exc.status}: "
                f"{exc.vendor_message}",
                hint="Check cisco.token_url and the API client's credentials.",
            ) from exc
        answer = _obj(response.json())
        value = answer.get("access_token")
        if not isinstance(value, str) or not value:
            raise AuthError("Cisco's token endpoint answered without an access_token")
        lifetime = _seconds(answer.get("expires_in")) or _DEFAULT_EXPIRES_IN
        return self._issued(value, lifetime=lifetime, answer=response, generation=generation)

    def _headers(self, token: Token) -> dict[str, str]:
        return {"Authorization": f"Bearer {token.value}"}

    def _forbidden(self, exc: VendorRejected, method: str, path: str) -> AirgapError:
        return ConfigError(
            f"Cisco refused access: {exc.vendor_message or exc.message}",
            hint="Check cisco.smart_account / cisco.virtual_account and that the API client "
            "may use that account.",
        )

    def _release(self) -> None:
        if self._owned is not None:
            self._owned.close()


# --- the client --------------------------------------------------------------------------------


class CiscoClient:
    """The Cisco Smart Software Licensing API as the processor uses it (see `VendorClient`).

    Thread-safe: one instance serves every worker thread. The token is shared and replaced
    under a lock, so N threads meeting an expired token fetch one new token between them; the
    account is resolved once, in `start()`.
    """

    vendor: ClassVar[str] = "cisco"
    actions: ClassVar[frozenset[str]] = _ACTIONS

    def __init__(
        self,
        settings: CiscoSettings,
        *,
        retry: RetryPolicy,
        limiter: RateLimiter | None,
        timeout: float = 30.0,
        session_factory: Callable[[], requests.Session] | None = None,
    ) -> None:
        """Create a client; nothing is sent until `start()` (or the first call).

        Args:
            settings: URLs, credentials, account names and TLS verification.
            retry: the retry policy for every HTTP call.
            limiter: Cisco's rate limiter (shared by every client of the vendor), or None.
            timeout: seconds for the connect and for each read.
            session_factory: makes one `requests.Session` shared by all threads (tests, special
                adapters); default: a session per thread made by `HttpClient`. The client
                closes it in `finish()`.

        Raises:
            ConfigError: (E_CONFIG) a URL is not http(s), or the CA bundle does not exist.
        """
        if not re.match(r"(?i)^https?://[^/\s]+", settings.token_url):
            raise ConfigError(
                "cisco.token_url is not an http:// or https:// URL",
                hint="Fix it with `airgap config set cisco.token_url URL`.",
            )
        self.settings = settings
        shared = session_factory() if session_factory is not None else None
        http = HttpClient(
            settings.api_base,
            retry=retry,
            limiter=limiter,
            timeout=timeout,
            tls=TlsSettings(settings.verify_tls),
            session=shared,
        )
        self._session = CiscoSession(settings, http, owned=shared)
        self._http = http
        self._start_lock = threading.Lock()
        self._account: _Account | None = None
        self._default_va: tuple[str, str] | None = None

    @classmethod
    def from_config(cls, config: Config, options: ClientOptions) -> CiscoClient:
        """Build the client of a run from the home's config and the run's options.

        Args:
            config: the outside home's merged configuration, with the environment secrets.
            options: the retry policy and rate limiter of the run.

        Raises:
            ConfigError: (E_CONFIG) a URL or a credential is missing, or the CA bundle does not
                exist.

        Returns:
            The client; nothing is sent yet.
        """
        return cls(CiscoSettings.from_config(config), retry=options.retry, limiter=options.limiter)

    def __repr__(self) -> str:
        return (
            f"CiscoClient(api_base={self.settings.api_base!r}, "
            f"smart_account={self.settings.smart_account!r})"
        )

    # --- VendorClient ---------------------------------------------------------------------

    def start(self) -> None:
        """Fetch a token and resolve the smart and default virtual accounts (once).

        Raises:
            AuthError: (E_AUTH) Cisco refused the API client credentials.
            NetworkError: (E_NETWORK) Cisco could not be reached.
            ConfigError: (E_CONFIG) the smart or virtual account is unknown or ambiguous, or a
                URL is wrong.
            VendorError: (E_VENDOR) Cisco answered the account search with an error.
        """
        with self._start_lock:
            if self._account is not None:
                return
            try:
                response = self._call("GET", "v2/accounts/search", mutating=False)
            except _Refused as exc:
                raise ConfigError(
                    f"Cisco account search failed: HTTP {exc.status}: {exc.vendor_text}",
                    hint="Check cisco.api_base (it should end in "
                    "/services/api/smart-accounts-and-licensing/).",
                ) from exc
            account = self._choose_account(_obj(response.json()).get("accounts"))
            default = _find_name(account.virtual_accounts, self.settings.virtual_account)
            if default is None:
                raise ConfigError(
                    f"virtual account {self.settings.virtual_account!r} is not in smart account "
                    f"{account.domain}; available: {_names(account.virtual_accounts)}",
                    hint="Set cisco.virtual_account to one of them.",
                )
            self._default_va = default
            self._account = account
            _log.debug(
                "cisco: smart account %s, default virtual account %s", account.domain, default
            )

    def finish(self) -> None:
        """Close the HTTP sessions; never raises."""
        self._session.finish()

    def submit(self, item: WorkItem) -> Outcome:
        """Make the action's one Cisco call.

        Args:
            item: a verified request item of one of `actions`.

        Raises:
            UncertainOutcome: (E_NETWORK) a mutating call may have reached Cisco; reconcile.
            NetworkError: (E_NETWORK) Cisco certainly did not act; a later run retries.
            AuthError: (E_AUTH) the credentials or a fresh token were refused.
            ConfigError: (E_CONFIG) the account is refused (403) or the action is unknown.
            VendorError: (E_VENDOR) Cisco answered in a way the client cannot read.

        Returns:
            `pending` with the poll id for polled actions, a final outcome otherwise. Cisco's
            refusal of the item is `failed` with its code and message verbatim.
        """
        self._ensure_started()
        handlers: dict[str, Callable[[WorkItem], Outcome]] = {
            "cisco.reserve": self._submit_reserve,
            "cisco.return": self._submit_return,
            "cisco.report_usage": self._submit_report,
            "cisco.slr_reserve": self._submit_slr,
            "cisco.usage_summary": self._submit_summary,
            "cisco.devices": self._submit_devices,
        }
        handler = handlers.get(item.action)
        if handler is None:
            raise ConfigError(f"the Cisco client does not serve action {item.action!r}")
        try:
            return handler(item)
        except _Refused as exc:
            return Outcome.failed(exc.cisco_code, exc.vendor_text)

    def poll(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Outcome:
        """Ask Cisco once how a submitted request stands (never changes state).

        Args:
            item: the item submitted.
            vendor_ref: `{"poll_id", "action"}` from the pending outcome.

        Raises:
            NetworkError: (E_NETWORK) Cisco could not be asked this time.
            AuthError: (E_AUTH) the credentials or a fresh token were refused.
            ConfigError: (E_CONFIG) the account is refused (403).

        Returns:
            `pending` again, the final outcome, or `needs_attention` when Cisco no longer
            knows the poll id and a device look-up cannot tell what happened.
        """
        self._ensure_started()
        poll_id = str(vendor_ref.get("poll_id", ""))
        if not poll_id.isdigit():
            return Outcome.needs_attention(
                f"no Cisco poll id to ask about (vendor ref {dict(vendor_ref)!r})",
                vendor_ref=vendor_ref,
            )
        action = str(vendor_ref.get("action") or _POLL_ACTION.get(item.action, "authorizations"))
        ref = {"poll_id": poll_id, "action": action}
        va = self._item_va(item)
        headers = self._device_headers(item, va) if va is not None else None
        try:
            response = self._call(
                "POST",
                "v2/accounts/poll",
                envelope={"poll_id": int(poll_id), "action": action},
                headers=headers,
                mutating=False,
            )
        except _Refused as exc:
            if exc.status != 404:
                return Outcome.needs_attention(
                    f"Cisco refused to answer poll {poll_id}: {exc.vendor_text}", vendor_ref=ref
                )
            # The poll id expired or was never kept: the device list may still tell.
            found = self._look_up(item)
            if isinstance(found, Outcome):
                return found
            return Outcome.needs_attention(
                f"Cisco no longer knows poll id {poll_id} ({exc.vendor_text}) and its records do "
                f"not show the result; check Cisco Smart Software Manager, then re-run with "
                f"--resubmit {item.id} if the request had no effect",
                vendor_ref=ref,
            )
        return self._poll_outcome(item, _obj(response.json()), ref)

    def reconcile(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Reconciled:
        """Find out from Cisco what became of a call whose answer was lost (never mutates).

        Per action: a known poll id is polled. Otherwise `cisco.reserve` and `cisco.return` look
        the device up in the account's device list, `cisco.slr_reserve` looks for an SLR
        reservation there, and `cisco.report_usage` is `NOT_SUBMITTED` (a resend is harmless:
        Cisco refuses a duplicate report). Queries are always `NOT_SUBMITTED`.

        Args:
            item: the item whose submit may have reached Cisco.
            vendor_ref: what the journal holds for it (may be empty).

        Raises:
            NetworkError: (E_NETWORK) Cisco could not be asked this time.
            AuthError: (E_AUTH) the credentials or a fresh token were refused.
            ConfigError: (E_CONFIG) the account is refused (403).

        Returns:
            A final or pending outcome, `NOT_SUBMITTED`, or `needs_attention`.
        """
        self._ensure_started()
        if item.action not in _MUTATING:
            return NOT_SUBMITTED
        if str(vendor_ref.get("poll_id", "")).isdigit():
            return self.poll(item, vendor_ref)
        if item.action == "cisco.report_usage":
            # Cisco answers a second copy of an accepted report with DUPLICATE_REPORT and
            # changes nothing, so resending is safe. Corner case: if the first send was
            # accepted but its answer lost, the resend comes back FAILED (duplicate) and the
            # item is reported failed with Cisco's message, although the usage was recorded;
            # the client cannot tell the two apart without remembering across processes, and
            # Cisco's message says exactly what happened.
            return NOT_SUBMITTED
        return self._look_up(item)

    # --- actions ---------------------------------------------------------------------------

    def _submit_reserve(self, item: WorkItem) -> Outcome:
        udi, va = item.udi, self._item_va(item)
        if udi is None:
            return Outcome.failed(InputError.code, "cisco.reserve needs the device's UDI")
        if va is None:
            return self._unknown_va(item)
        try:
            keys = [
                {"entitlement": tag, "count": str(count)}
                for tag, count in _entitlements(item.params).items()
            ]
        except InputError as exc:
            return Outcome.failed(exc.code, exc.message)
        license_request: dict[str, Any] = {"sudi": _sudi(udi), "keys": keys}
        hostname = _hostname(item)
        if hostname:
            license_request["hostname"] = hostname
        response = self._call(
            "POST",
            "v2/devices/authrequest",
            envelope={"licenses": [license_request]},
            headers=self._device_headers(item, va),
            mutating=True,
        )
        return self._accepted(item, response)

    def _submit_return(self, item: WorkItem) -> Outcome:
        udi, va = item.udi, self._item_va(item)
        if udi is None:
            return Outcome.failed(InputError.code, "cisco.return needs the device's UDI")
        if va is None:
            return self._unknown_va(item)
        code = item.params.get("return_code")
        if not isinstance(code, str) or not code.strip():
            return Outcome.failed(InputError.code, "cisco.return needs a return_code")
        license_request: dict[str, Any] = {"sudi": _sudi(udi), "keys": [], "remove_code": code}
        hostname = _hostname(item)
        if hostname:
            license_request["hostname"] = hostname
        response = self._call(
            "POST",
            "v2/devices/authrequest",
            envelope={"licenses": [license_request]},
            headers=self._device_headers(item, va),
            mutating=True,
        )
        return self._accepted(item, response)

    def _submit_report(self, item: WorkItem) -> Outcome:
        va = self._item_va(item)
        if va is None:
            return self._unknown_va(item)
        if not item.files:
            return Outcome.failed(InputError.code, "cisco.report_usage carries no RUM report file")
        # One `reports[]` entry per device: Cisco checks that each usage entry describes the
        # entry's sudi. Payload strings go out exactly as the device wrote them.
        usage: dict[tuple[str, str], list[dict[str, Any]]] = {}
        hostnames: dict[tuple[str, str], str] = {}
        try:
            for member in sorted(item.files):
                rum = parse_rum_file(Path(item.files[member]))
                for report in rum.reports:
                    usage.setdefault(report.udi, []).append(
                        {"payload": report.payload, "signature": report.signature}
                    )
                    if rum.hostname and report.udi == rum.udi:
                        hostnames.setdefault(report.udi, rum.hostname)
        except InputError as exc:
            return Outcome.failed(exc.code, exc.message)
        reports: list[dict[str, Any]] = []
        for udi, entries in usage.items():
            entry: dict[str, Any] = {"sudi": _sudi(udi), "usage": entries}
            if udi in hostnames:
                entry["hostname"] = hostnames[udi]
            reports.append(entry)
        requester = item.udi or next(iter(usage))
        response = self._call(
            "POST",
            "v2/devices/reportusage",
            envelope={"reports": reports},
            headers=self._device_headers(item, va, udi=requester),
            mutating=True,
        )
        return self._accepted(item, response)

    def _submit_slr(self, item: WorkItem) -> Outcome:
        account, va = self._require_account(), self._item_va(item)
        if va is None:
            return self._unknown_va(item)
        code = item.params.get("request_code")
        if not isinstance(code, str) or not code.strip():
            return Outcome.failed(InputError.code, "cisco.slr_reserve needs a request_code")
        kind = str(item.params.get("reservation_type") or "SPECIFIC").upper()
        try:
            counts = _entitlements(item.params, required=kind == "SPECIFIC")
        except InputError as exc:
            return Outcome.failed(exc.code, exc.message)
        body = {
            "reservationRequests": [
                {
                    "reservationCode": code.strip(),
                    "reservationType": kind,
                    "licenses": [
                        {"entitlementTag": tag, "quantity": count, "precedence": _SLR_PRECEDENCE}
                        for tag, count in counts.items()
                    ],
                }
            ]
        }
        path = (
            f"v2/accounts/{quote(account.domain, safe='')}/virtual-accounts/"
            f"{quote(va[0], safe='')}/reserve-licenses"
        )
        response = self._call("POST", path, body=body, mutating=True)
        answer = _mutating_answer(response)
        codes = [_obj(entry) for entry in _list(answer.get("authorizationCodes"))]
        mine = next((c for c in codes if c.get("reservationCode") == code.strip()), None)
        if mine is None:
            mine = codes[0] if codes else {}
        status = str(mine.get("status") or answer.get("status") or "")
        text = mine.get("authorizationCode")
        message = str(mine.get("statusMessage") or answer.get("message") or "")
        result = {
            "status": status,
            "status_message": message,
            "reservation_type": str(mine.get("reservationType") or kind),
            "udi": mine.get("udi"),
            "virtual_account": va[0],
        }
        if status == "SUCCESS" and isinstance(text, str) and text:
            return Outcome.ok(result, files={"slr-auth.txt": text.encode("utf-8")})
        return Outcome.failed(
            str(mine.get("errorCode") or VendorError.code),
            message or f"Cisco answered the SLR reservation with status {status or 'none'}",
            result=result,
        )

    def _submit_summary(self, item: WorkItem) -> Outcome:
        account = self._require_account()
        tags = [str(tag) for tag in _list(item.params.get("tags"))]
        response = self._call(
            "POST",
            "v3/licenses/summary",
            envelope={"tags": tags},
            mutating=False,
        )
        data = _obj(_obj(response.json()).get("data"))
        licenses = _list(data.get("licenses"))
        document = {"smart_account": account.domain, "tags": tags, "licenses": licenses}
        return Outcome.ok(
            {"smart_account": account.domain, "licenses": len(licenses)},
            files={"result.json": _pretty(document)},
        )

    def _submit_devices(self, item: WorkItem) -> Outcome:
        account = self._require_account()
        wanted = [str(name) for name in _list(item.params.get("virtual_accounts"))]
        names: list[str] = []
        for name in wanted:
            found = _find_name(account.virtual_accounts, name)
            if found is None:
                return Outcome.failed(
                    ConfigError.code,
                    f"virtual account {name!r} is not in smart account {account.domain}; "
                    f"available: {_names(account.virtual_accounts)}",
                )
            names.append(found[0])
        devices = list(self._devices(names or list(account.virtual_accounts)))
        document = {
            "smart_account": account.domain,
            "virtual_accounts": names or sorted(account.virtual_accounts),
            "total": len(devices),
            "devices": devices,
        }
        return Outcome.ok(
            {"smart_account": account.domain, "devices": len(devices)},
            files={"result.json": _pretty(document)},
        )

    # --- answers ---------------------------------------------------------------------------

    def _accepted(self, item: WorkItem, response: HttpResponse) -> Outcome:
        """Read the answer to an accepted authrequest/reportusage: pending with its poll id."""
        answer = _mutating_answer(response)
        raw_id = answer.get("poll_id")
        # json keeps integers exact (Cisco's ids exceed 2**53); a float would have lost digits.
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            poll_id = str(raw_id)
        elif isinstance(raw_id, str) and raw_id.isdigit():
            poll_id = raw_id
        else:
            poll_id = ""
        action = str(answer.get("action") or _POLL_ACTION[item.action])
        ref = {"poll_id": poll_id, "action": action} if poll_id else {}
        status = answer.get("status")
        if status == "COMPLETE":
            return self._poll_outcome(item, answer, ref)
        if status == "OK_POLL" and poll_id:
            return Outcome.pending(ref, retry_after=_seconds(answer.get("poll_interval")))
        raise UncertainOutcome(
            f"Cisco accepted the {item.action} request (HTTP {response.status}) without a poll "
            f"id to follow (status {status!r}); it may have acted on it",
            hint="Reconcile with a device look-up before sending it again.",
            status=response.status,
        )

    def _poll_outcome(
        self, item: WorkItem, answer: Mapping[str, Any], ref: Mapping[str, str]
    ) -> Outcome:
        status = answer.get("status")
        if status == "OK_POLL":
            return Outcome.pending(ref, retry_after=_seconds(answer.get("poll_interval")))
        if status != "COMPLETE":
            return Outcome.needs_attention(
                f"Cisco answered poll {ref.get('poll_id')} with status {status!r}",
                vendor_ref=ref,
            )
        data = _obj(answer.get("data"))
        action = ref.get("action") or _POLL_ACTION.get(item.action, "authorizations")
        entries = [_obj(entry) for entry in _list(data.get(action))]
        if not entries:
            return Outcome.needs_attention(
                f"Cisco completed poll {ref.get('poll_id')} without any {action}",
                vendor_ref=ref,
            )
        if item.action == "cisco.report_usage":
            return _ack_outcome(item, entries, ref)
        entry = _for_udi(entries, item.udi)
        if item.action == "cisco.return":
            return _return_outcome(item, entry, ref)
        return _authorization_outcome(entry, ref)

    # --- reconciliation by device look-up ---------------------------------------------------

    def _look_up(self, item: WorkItem) -> Reconciled:
        """What the account's device list says about the item's device (read-only)."""
        udi = item.udi
        if udi is None or self._item_va(item) is None:
            return NOT_SUBMITTED  # submit refuses such an item before calling Cisco
        if item.action == "cisco.report_usage":
            return NOT_SUBMITTED
        try:
            device = self._find_device(udi)
        except _Refused as exc:
            return Outcome.needs_attention(
                f"could not look device PID:{udi[0]},SN:{udi[1]} up at Cisco: {exc.vendor_text}"
            )
        reserved = device is not None and _is_reserved(device)
        slr = device is not None and _is_slr(device)
        if item.action == "cisco.reserve":
            if device is None or not reserved or slr:
                return NOT_SUBMITTED
            try:
                wanted = _entitlements(item.params)
            except InputError:
                return NOT_SUBMITTED
            if _reserved_counts(device) != wanted:
                # An older reservation: Cisco replaces it when the request is sent again.
                return NOT_SUBMITTED
            code = device.get("authorizationCode")
            decoded = _b64(code) if isinstance(code, str) and code else None
            if decoded is None:
                return Outcome.needs_attention(
                    f"PID:{udi[0]},SN:{udi[1]} is reserved at Cisco but the authorization code "
                    "was lost (the answer to the reservation never arrived) and Cisco's device "
                    f"list does not provide it; re-run with --resubmit {item.id} to fetch a "
                    "replacement code"
                )
            result = {
                "auth_status": "AUTHORIZED",
                "correlation_id": None,
                "product_instance_identifier": device.get("productInstanceIdentifier"),
                "status_message": "reservation found; authorization code confirmed by device "
                "look-up",
            }
            return Outcome.ok(result, files={"lic.txt": decoded})
        if item.action == "cisco.return":
            if device is None:
                return Outcome.needs_attention(
                    f"Cisco's device list does not show PID:{udi[0]},SN:{udi[1]}, so whether "
                    "the return went through cannot be told; check Cisco Smart Software "
                    f"Manager, then re-run with --resubmit {item.id} if it still holds licenses"
                )
            if reserved:
                return NOT_SUBMITTED
            message = "no reservation held at Cisco: returned (confirmed by device look-up)"
            document = {
                "udi": {"pid": udi[0], "sn": udi[1]},
                "hostname": _hostname(item),
                "status": "RETURNED",
                "status_message": message,
                "returned_entitlements": None,  # not known from a look-up
                "correlation_id": None,
            }
            return Outcome.ok(
                {"auth_status": "RETURNED", "status_message": message},
                files={"return.json": _pretty(document)},
            )
        # cisco.slr_reserve
        if device is not None and reserved and slr:
            return Outcome.needs_attention(
                f"an SLR reservation for PID:{udi[0]},SN:{udi[1]} exists at Cisco but its "
                "authorization code was lost (the answer never arrived) and cannot be fetched "
                "through the API; download it in Cisco Smart Software Manager, or re-run with "
                f"--resubmit {item.id}"
            )
        return NOT_SUBMITTED

    def _find_device(self, udi: tuple[str, str]) -> dict[str, Any] | None:
        # Every virtual account is searched: a device moved between them must still be found,
        # or a reconcile would call it untouched and reserve it twice.
        account = self._require_account()
        for device in self._devices(list(account.virtual_accounts)):
            if _device_udi(device) == udi:
                return device
        return None

    def _devices(self, names: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every device of the named virtual accounts, page by page (read-only)."""
        account = self._require_account()
        path = f"v1/accounts/{quote(account.domain, safe='')}/devices"
        offset = 0
        for _page in range(_MAX_PAGES):
            query = {"virtualAccounts": list(names), "limit": _PAGE_SIZE, "offset": offset}
            response = self._call("POST", path, body=query, mutating=False)
            answer = _obj(response.json())
            page = [_obj(device) for device in _list(answer.get("devices"))]
            yield from page
            offset += len(page)
            total = answer.get("totalRecords")
            if not page or (isinstance(total, int) and offset >= total):
                return
        raise VendorError(f"Cisco's device list did not end after {_MAX_PAGES} pages")

    # --- plumbing --------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._account is None:
            self.start()

    def _require_account(self) -> _Account:
        if self._account is None:
            self.start()
        assert self._account is not None  # start() sets it or raises
        return self._account

    def _item_va(self, item: WorkItem) -> tuple[str, str] | None:
        """(name, id) of the item's virtual account, or None when the account has no such one."""
        account = self._require_account()
        wanted = item.params.get("virtual_account")
        if not wanted:
            return self._default_va
        return _find_name(account.virtual_accounts, str(wanted))

    def _unknown_va(self, item: WorkItem) -> Outcome:
        account = self._require_account()
        return Outcome.failed(
            ConfigError.code,
            f"virtual account {item.params.get('virtual_account')!r} is not in smart account "
            f"{account.domain}; available: {_names(account.virtual_accounts)}",
        )

    def _device_headers(
        self, item: WorkItem, va: tuple[str, str], *, udi: tuple[str, str] | None = None
    ) -> dict[str, str]:
        account = self._require_account()
        pid, sn = udi or item.udi or ("", "")
        return {
            "X-CSW-SMART-ACCOUNT-ID": account.account_id,
            "X-CSW-VIRTUAL-ACCOUNT-ID": va[1],
            "X-CSW-REQUESTING-SYSTEM": json.dumps(
                {"udi_pid": pid, "udi_serial_number": sn}, separators=(",", ":")
            ),
        }

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: JsonBody = None,
        envelope: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        mutating: bool,
    ) -> HttpResponse:
        """One API call with the bearer token (see `TokenSession.call` for 401 and 403).

        `body` is sent as it is; `envelope` fields go inside `{"data": {timestamp, nonce, ...}}`,
        built anew for each send after a 401, so the resend carries a fresh nonce. Cisco's
        refusal of the call itself (`_REFUSED_STATUSES`) raises `_Refused`.
        """
        response = self._session.call(
            method,
            path,
            json=body,
            body=(lambda: _envelope(**envelope)) if envelope is not None else None,
            headers={"Accept": "application/json", **(headers or {})},
            mutating=mutating,
            expected=(200, 201, 202, *_REFUSED_STATUSES),
        )
        if response.status in _REFUSED_STATUSES:
            raise self._refusal(response)
        return response

    def _refusal(self, response: HttpResponse) -> _Refused:
        try:
            parsed = json.loads(response.raw) if response.raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        code = None
        if isinstance(parsed, dict):
            for key in ("code", "error_code", "errorCode", "error"):
                if isinstance(parsed.get(key), str) and parsed[key]:
                    code = parsed[key]
                    break
        message = self._http.redactor(vendor_message(response))
        return _Refused(response.status, str(code or f"HTTP_{response.status}"), message)

    def _choose_account(self, raw: Any) -> _Account:
        accounts: list[_Account] = []
        names: dict[str, str] = {}  # domain -> display name, for messages
        for entry in _list(raw):
            obj = _obj(entry)
            domain = obj.get("domain")
            if not isinstance(domain, str) or not domain:
                continue
            vas = {
                str(va["name"]): str(va.get("virtual_account_id", va["name"]))
                for va in (_obj(v) for v in _list(obj.get("virtual_accounts")))
                if isinstance(va.get("name"), str)
            }
            accounts.append(_Account(domain, str(obj.get("account_id") or domain), vas))
            names[domain] = str(obj.get("account_name") or domain)
        available = ", ".join(a.domain for a in accounts) or "none"
        wanted = self.settings.smart_account
        hint = "Set cisco.smart_account to the account's domain (`airgap config set`)."
        if wanted:
            folded = wanted.casefold()
            for account in accounts:
                if folded in (
                    account.domain.casefold(),
                    account.account_id.casefold(),
                    names[account.domain].casefold(),
                ):
                    return account
            raise ConfigError(
                f"smart account {wanted!r} is not visible with these API credentials; "
                f"available: {available}",
                hint=hint,
            )
        if len(accounts) == 1:
            return accounts[0]
        if not accounts:
            raise ConfigError(
                "these API credentials see no smart account",
                hint="Give the API client access to the smart account in Cisco's API console.",
            )
        raise ConfigError(
            f"these API credentials see several smart accounts ({available}); choose one",
            hint=hint,
        )


# --- outcome builders (pure) -------------------------------------------------------------------


def _authorization_outcome(entry: Mapping[str, Any], ref: Mapping[str, str]) -> Outcome:
    result = {
        "auth_status": entry.get("auth_status"),
        "correlation_id": entry.get("correlation_id"),
        "product_instance_identifier": entry.get("product_instance_identifier"),
        "status_message": entry.get("status_message"),
    }
    if entry.get("status") == "SUCCESS":
        decoded = _b64(entry.get("smart_license"))
        if decoded is None:
            return Outcome.needs_attention(
                "Cisco reserved the licenses but sent an unreadable authorization code; "
                "download it in Cisco Smart Software Manager",
                vendor_ref=ref,
            )
        return Outcome.ok(result, files={"lic.txt": decoded}, vendor_ref=ref)
    return Outcome.failed(
        str(entry.get("error_code") or VendorError.code),
        str(entry.get("status_message") or f"Cisco answered status {entry.get('status')!r}"),
        result=result,
        vendor_ref=ref,
    )


def _return_outcome(item: WorkItem, entry: Mapping[str, Any], ref: Mapping[str, str]) -> Outcome:
    udi = item.udi or ("", "")
    result = {
        "auth_status": entry.get("auth_status"),
        "correlation_id": entry.get("correlation_id"),
        "status_message": entry.get("status_message"),
    }
    if entry.get("status") != "SUCCESS":
        return Outcome.failed(
            str(entry.get("error_code") or VendorError.code),
            str(entry.get("status_message") or f"Cisco answered status {entry.get('status')!r}"),
            result=result,
            vendor_ref=ref,
        )
    document = {
        "udi": {"pid": udi[0], "sn": udi[1]},
        "hostname": _hostname(item),
        "status": entry.get("auth_status") or "RETURNED",
        "status_message": entry.get("status_message"),
        "returned_entitlements": entry.get("returned_entitlements"),
        "correlation_id": entry.get("correlation_id"),
        "product_instance_identifier": entry.get("product_instance_identifier"),
    }
    return Outcome.ok(result, files={"return.json": _pretty(document)}, vendor_ref=ref)


def _ack_outcome(
    item: WorkItem, entries: Sequence[Mapping[str, Any]], ref: Mapping[str, str]
) -> Outcome:
    summary = [
        {
            "udi": _udi_text(_entry_udi(entry)),
            "status": entry.get("status"),
            "status_message": entry.get("status_message"),
        }
        for entry in entries
    ]
    decoded: list[tuple[Mapping[str, Any], bytes]] = []
    for entry in entries:
        ack = _b64(entry.get("smart_license")) if entry.get("status") != "FAILED" else None
        if ack is None:
            return Outcome.failed(
                str(entry.get("error_code") or VendorError.code),
                str(entry.get("status_message") or "Cisco did not acknowledge the usage report"),
                result={"acknowledgements": summary},
                vendor_ref=ref,
            )
        decoded.append((entry, ack))
    primary = next((d for d in decoded if _entry_udi(d[0]) == item.udi), decoded[0])
    result: dict[str, Any] = {"acknowledgements": summary}
    others = {
        _udi_text(_entry_udi(entry)): ack.decode("utf-8", "replace")
        for entry, ack in decoded
        if entry is not primary[0]
    }
    if others:
        # A report file covering several devices gets one ACK per device; the device imports
        # ack.xml, and the others travel here rather than being dropped.
        result["other_acks"] = others
    return Outcome.ok(result, files={"ack.xml": primary[1]}, vendor_ref=ref)


# --- helpers -----------------------------------------------------------------------------------


def _envelope(**fields: Any) -> dict[str, Any]:
    """`{"data": {"timestamp", "nonce", ...}}` with a fresh random nonce.

    Cisco's published examples send a fixed nonce and the service accepts that; a fresh one per
    send keeps a strict service from refusing a resend as a replay.
    """
    return {"data": {"timestamp": int(time.time() * 1000), "nonce": _nonce(), **fields}}


def _nonce() -> str:
    """`_NONCE_LENGTH` characters drawn uniformly from `_NONCE_ALPHABET` by the OS's CSPRNG.

    One read of random bytes, not one per character (`secrets.choice` reads the OS for every
    draw); a byte is kept only below the largest multiple of the alphabet's size, so each
    character stays uniform.
    """
    size = len(_NONCE_ALPHABET)
    below = 256 - 256 % size
    chosen: list[str] = []
    while len(chosen) < _NONCE_LENGTH:
        chosen += [
            _NONCE_ALPHABET[b % size] for b in secrets.token_bytes(2 * _NONCE_LENGTH) if b < below
        ]
    return "".join(chosen[:_NONCE_LENGTH])


def _mutating_answer(response: HttpResponse) -> dict[str, Any]:
    """The JSON answer to a mutating call; unreadable means Cisco may have acted unseen."""
    try:
        answer = response.json()
    except VendorError as exc:
        raise UncertainOutcome(
            f"Cisco accepted the request (HTTP {response.status}) but its answer is unreadable; "
            "it may have acted on it",
            hint="Reconcile with a device look-up before sending it again.",
            status=response.status,
        ) from exc
    if not isinstance(answer, dict):
        raise UncertainOutcome(
            f"Cisco accepted the request (HTTP {response.status}) but its answer is not an "
            "object; it may have acted on it",
            hint="Reconcile with a device look-up before sending it again.",
            status=response.status,
        )
    return answer


def _entitlements(params: Mapping[str, Any], *, required: bool = True) -> dict[str, int]:
    """`{tag: count}` from an item's `entitlements: [{tag, count}]`, counts summed per tag."""
    counts: dict[str, int] = {}
    for raw in _list(params.get("entitlements")):
        entry = _obj(raw)
        tag, count = entry.get("tag"), entry.get("count")
        try:
            number = int(str(count))
        except ValueError:
            number = 0
        if not isinstance(tag, str) or not tag or number < 1:
            raise InputError(f"bad entitlement {raw!r}: need a tag and a count of at least 1")
        counts[tag] = counts.get(tag, 0) + number
    if required and not counts:
        raise InputError("the item names no entitlements")
    return counts


def _sudi(udi: tuple[str, str]) -> dict[str, str]:
    return {"udi_pid": udi[0], "udi_serial_number": udi[1]}


def _hostname(item: WorkItem) -> str | None:
    hostname = (item.device or {}).get("hostname")
    return str(hostname) if hostname else None


def _entry_udi(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    sudi = entry.get("sudi")
    if isinstance(sudi, Mapping):
        pid, sn = sudi.get("udi_pid"), sudi.get("udi_serial_number")
        if isinstance(pid, str) and isinstance(sn, str):
            return pid, sn
    return None


def _device_udi(device: Mapping[str, Any]) -> tuple[str, str] | None:
    pid, sn = device.get("productId"), device.get("serialNumber")
    if isinstance(pid, str) and isinstance(sn, str):
        return pid, sn
    found = _entry_udi(device)
    if found is not None:
        return found
    udi = device.get("udi")
    if isinstance(udi, str):
        match = re.fullmatch(r"(?:PID:)?([^:,]+)[:,](?:SN:)?(.+)", udi)
        if match:
            return match.group(1), match.group(2)
    return None


def _udi_text(udi: tuple[str, str] | None) -> str | None:
    return f"{udi[0]}:{udi[1]}" if udi else None


def _for_udi(entries: Sequence[dict[str, Any]], udi: tuple[str, str] | None) -> dict[str, Any]:
    return next((entry for entry in entries if _entry_udi(entry) == udi), entries[0])


def _is_reserved(device: Mapping[str, Any]) -> bool:
    status = str(device.get("reservationStatus") or "").upper()
    if status:
        return status not in ("NONE", "NOT_RESERVED", "RETURNED", "")
    return bool(_list(device.get("licenses")))


def _is_slr(device: Mapping[str, Any]) -> bool:
    kind = str(device.get("reservationType") or "").upper()
    return kind in ("SLR", "SPECIFIC", "UNIVERSAL", "PLR")


def _reserved_counts(device: Mapping[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in _list(device.get("licenses")):
        entry = _obj(raw)
        tag = entry.get("entitlementTag") or entry.get("tag")
        quantity = entry.get("quantity", entry.get("count", 0))
        try:
            number = int(str(quantity))
        except ValueError:
            continue
        if isinstance(tag, str):
            counts[tag] = counts.get(tag, 0) + number
    return counts


def _find_name(names: Mapping[str, str], wanted: str) -> tuple[str, str] | None:
    """(name, id) of a virtual account by name or id; exact first, then case-insensitive."""
    for name, number in names.items():
        if wanted in (name, number):
            return name, number
    folded = [
        (name, number) for name, number in names.items() if name.casefold() == wanted.casefold()
    ]
    return folded[0] if len(folded) == 1 else None


def _names(names: Mapping[str, str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pretty(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
