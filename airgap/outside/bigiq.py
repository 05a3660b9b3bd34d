"""F5 BIG-IQ License Manager client: UNREACHABLE assign/revoke, RegKey activation, assignments.

`BigIqClient` implements `airgap.outside.vendor.VendorClient` for the four `bigiq.*` actions of
DESIGN §6, following the vendor facts of DESIGN §10 "F5 BIG-IQ License Manager":

- `bigiq.assign` / `bigiq.revoke`: one POST to member-management (`assignmentType` UNREACHABLE),
  then GET the task until FINISHED (`bigip.license` / `revoke.json`) or FAILED (BIG-IQ's
  `errorMessage` verbatim).
- `bigiq.regkey_activate`: add the registration key to a RegKey pool (one POST), then walk the
  offering through its states: accept the EULA only when the item says `accept_eula`, retry an
  `ACTIVATION_FAILED` once, and end with `license.txt` (plus `eula.txt` when a EULA was shown).
- `bigiq.assignments`: the assignment list as `result.json`.

Sessions: one login (`X-F5-Auth-Token`), refreshed through `/mgmt/shared/authn/exchange` shortly
before the token expires and after any 401 (the call is then resent once: a 401 proves BIG-IQ did
not act). The refresh runs under a lock, so N threads that all see an old token refresh it once;
a refused refresh token leads to a fresh login. Tokens and the password are registered with the
HTTP client's redactor and never reach a message or a log line.

Manual RegKey activation. BIG-IQ's manual flow stops at `ACTIVATING_MANUAL_NEED_LICENSE_TEXT`
and waits for license text that F5's activation server (activate.f5.com) issues for a dossier.
The request item carries the dossier of the device the key is for (`get_dossier` on the inside,
DESIGN §6); obtaining license text for it is a call to F5, which DESIGN §10 does not specify and
the emulator does not serve. So that step is an injected `LicenseSource` (the outside site's
connection to F5; tests pass one built on `airgap.emulators.bigiq.license_text`). The client
hands it the item's dossier, PATCHes the text it returns into BIG-IQ
(`ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED`) and returns that text as `license.txt`. Without a
source a manual item fails before anything is sent to BIG-IQ (`MANUAL_ACTIVATION_UNAVAILABLE`).

Not covered: MANAGED/UNMANAGED assignments, purchased pools, pool administration, partitions.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol
from urllib.parse import quote, urlsplit

from airgap.config import Config, env_name
from airgap.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    InputError,
    ItemCode,
    NetworkError,
    VendorError,
)
from airgap.outside.http import (
    HttpClient,
    HttpResponse,
    RateLimiter,
    RetryPolicy,
    TlsSettings,
    Unauthorized,
    UncertainOutcome,
    VendorRejected,
)
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem

__all__ = [
    "ACTIONS",
    "MIN_VERSION",
    "BigIqClient",
    "BigIqSettings",
    "LicenseSource",
]

_log = logging.getLogger(__name__)

ASSIGN: Final = "bigiq.assign"
REVOKE: Final = "bigiq.revoke"
REGKEY_ACTIVATE: Final = "bigiq.regkey_activate"
ASSIGNMENTS: Final = "bigiq.assignments"
ACTIONS: Final = frozenset({ASSIGN, REVOKE, REGKEY_ACTIVATE, ASSIGNMENTS})
_MUTATING: Final = frozenset({ASSIGN, REVOKE, REGKEY_ACTIVATE})
MIN_VERSION: Final = (5, 4)  # UNREACHABLE assignments need BIG-IQ 5.4 or later (DESIGN §10)

_LOGIN: Final = "/mgmt/shared/authn/login"
_EXCHANGE: Final = "/mgmt/shared/authn/exchange"
_TOKENS: Final = "/mgmt/shared/authz/tokens"
_VERSION: Final = "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices"
_TASKS: Final = "/mgmt/cm/device/tasks/licensing/pool/member-management"
_ASSIGNMENTS: Final = "/mgmt/cm/device/licensing/assignments"
_REGKEY_POOLS: Final = "/mgmt/cm/device/licensing/pool/regkey/licenses"

# Offering statuses, as BIG-IQ spells them.
_AUTOMATIC: Final = "ACTIVATING_AUTOMATIC"
_MANUAL: Final = "ACTIVATING_MANUAL"
_NEED_EULA: Final = "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT"
_EULA_ACCEPTED: Final = "ACTIVATING_AUTOMATIC_EULA_ACCEPTED"
_NEED_LICENSE_TEXT: Final = "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
_LICENSE_TEXT_PROVIDED: Final = "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED"
_READY: Final = "READY"
_ACTIVATION_FAILED: Final = "ACTIVATION_FAILED"

_DEFAULT_TOKEN_TTL: Final = 300.0  # seconds; BIG-IQ's access-token lifetime
_RENEW_MARGIN_MAX: Final = 30.0  # seconds before expiry at most that a token is renewed
_LIST_PAGE: Final = 500  # items per page when reading the assignment list
_OPTIONAL_ASSIGN_FIELDS: Final = (
    ("sku_keyword1", "skuKeyword1"),
    ("sku_keyword2", "skuKeyword2"),
    ("unit_of_measure", "unitOfMeasure"),
    ("tenant", "tenant"),
    ("chargeback_tag", "chargebackTag"),
)
_MAC_SEPARATORS: Final = re.compile(r"[:\-.\s]")
_HEX12: Final = re.compile(r"^[0-9A-Fa-f]{12}$")
_QUERY_SAFE: Final = "'()$:,"  # left readable in OData query values


class LicenseDirectory:
    """License text the operator saved from activate.f5.com: `DIR/<REGKEY>.license`.

    The connected side's way to serve manual activations without an F5 API: the first run
    fails the item with the dossier to paste at activate.f5.com and the file name to save the
    answer under; a later request for the same key picks it up.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, reg_key: str, dossier: str, add_on_keys: Sequence[str]) -> str:
        """The saved license text for `reg_key`.

        Raises:
            InputError: no such file yet (the message says what to fetch and where to put it).
        """
        path = self.directory / f"{reg_key}.license"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise InputError(
                f"no license text for {reg_key} in {self.directory}: paste the item's dossier "
                f"({dossier[:16]}…) at activate.f5.com"
                + (f" with add-on keys {', '.join(add_on_keys)}" if add_on_keys else "")
                + f", save the answer as {path.name} there, and send the request again"
            ) from None
        if "Registration Key" not in text:
            raise InputError(f"{path} is not a BIG-IP license file")
        return text


class LicenseSource(Protocol):
    """Where a manual RegKey activation gets its license text: F5's activation server.

    Implementations may raise `NetworkError` when F5 cannot be reached this time (the item is
    polled again later) or another `AirgapError` when F5 refuses (the item fails with its code).
    """

    def __call__(self, reg_key: str, dossier: str, add_on_keys: Sequence[str]) -> str:
        """Return the BIG-IP license text F5 issues for a dossier.

        Args:
            reg_key: the base registration key.
            dossier: the hex dossier of the device the key is activated for.
            add_on_keys: add-on keys activated with it.

        Returns:
            The license text (what goes into /config/bigip.license).
        """
        ...


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigIqSettings:
    """Where BIG-IQ is and how to log in. The password never shows in `repr`."""

    url: str  # e.g. https://bigiq.example.net
    username: str
    password: str = field(repr=False)
    login_provider: str = "tmos"
    verify_tls: bool | str = True  # True, False, or the path of a CA bundle (PEM)

    @classmethod
    def from_config(cls, config: Config) -> BigIqSettings:
        """Build settings from config.toml / `AIRGAP_BIGIQ_*` and the environment secrets.

        Args:
            config: the outside home's merged configuration.

        Raises:
            ConfigError: (E_CONFIG) `bigiq.url`, the username or the password is missing; the
                message names every missing `AIRGAP_BIGIQ_*` variable at once.

        Returns:
            The settings.
        """
        url = config.get("bigiq.url")
        username = config.secret("bigiq.username")
        password = config.secret("bigiq.password")
        missing = [
            env_name(key)
            for key, value in (
                ("bigiq.url", url),
                ("bigiq.username", username),
                ("bigiq.password", password),
            )
            if not value
        ]
        if missing or not url or not username or not password:
            raise ConfigError(
                f"BIG-IQ is not configured: set {', '.join(missing)}",
                hint="Set the URL with `airgap config set bigiq.url https://bigiq.example.net` "
                "(or AIRGAP_BIGIQ_URL); the username and password come only from the "
                "environment, as AIRGAP_BIGIQ_USERNAME and AIRGAP_BIGIQ_PASSWORD.",
            )
        verify: bool | str = True
        ca_bundle = config.get("bigiq.ca_bundle")
        if config.get("bigiq.verify_tls") is False:
            verify = False
        elif ca_bundle:
            verify = str(Path(str(ca_bundle)).expanduser())
        provider = config.get("bigiq.login_provider") or "tmos"
        return cls(
            url=str(url),
            username=username,
            password=password,
            login_provider=str(provider),
            verify_tls=verify,
        )


# --- HTTP --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tokens:
    """One login's tokens; replaced whole on every refresh, so readers need no lock."""

    access: str = field(repr=False)
    refresh: str | None = field(repr=False)
    renew_at: float  # client clock seconds: renew once this has passed
    generation: int  # 1 for the first login, +1 per refresh or login


class _BadItem(Exception):
    """An item lacks a parameter the action needs (the request schema should prevent it)."""


# --- the client --------------------------------------------------------------------------------


class BigIqClient:
    """BIG-IQ License Manager as a `VendorClient`. Thread-safe: share one across the pool.

    Vendor references (`Outcome.vendor_ref`, strings only): `{"task": <member-management task
    id>}` for assign and revoke; `{"pool_id": …, "regkey": …}` for RegKey activation.
    """

    vendor: ClassVar[str] = "bigiq"
    actions: ClassVar[frozenset[str]] = ACTIONS

    def __init__(
        self,
        settings: BigIqSettings,
        *,
        retry: RetryPolicy,
        limiter: RateLimiter | None,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 1.0,
        license_source: LicenseSource | None = None,
    ) -> None:
        """Create a client; nothing is sent before `start()`.

        Args:
            settings: URL, credentials and TLS settings.
            retry: the retry policy for every call.
            limiter: the BIG-IQ rate limiter shared by all its clients, or None.
            timeout: seconds for the connect and for each read.
            clock: monotonic seconds, for token expiry (tests pass a fake one).
            poll_interval: seconds suggested between polls of a running task or activation.
            license_source: F5's activation server for manual RegKey activation (see the
                module docstring); None refuses manual items before anything is sent.

        Raises:
            ConfigError: (E_CONFIG) the URL is not http(s) or the CA bundle does not exist.
        """
        self.settings = settings
        self.poll_interval = poll_interval
        self.version: str | None = None
        """BIG-IQ's version as reported by `start()`, e.g. `8.3.0`."""
        self._clock = clock
        self._license_source = license_source
        self._http = HttpClient(
            settings.url,
            retry=retry,
            limiter=limiter,
            timeout=timeout,
            tls=TlsSettings(settings.verify_tls),
        )
        self._http.redactor.add(settings.password)
        self._tokens: _Tokens | None = None
        self._token_lock = threading.Lock()
        self._state_lock = threading.Lock()
        # Activation steps this client took, by (pool id, regkey). In memory only: after a
        # restart an offering may get one more retry, and the EULA text of a key accepted
        # before the restart is no longer at hand (BIG-IQ stops showing it once accepted).
        self._eula_accepted: dict[tuple[str, str], str] = {}
        self._retried: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return (
            f"BigIqClient(url={self.settings.url!r}, username={self.settings.username!r}, "
            f"version={self.version!r})"
        )

    # --- VendorClient -----------------------------------------------------------------------

    def mutating(self, action: str) -> bool:
        """Whether `submit` for this action changes BIG-IQ's state.

        Args:
            action: a `bigiq.*` action.

        Returns:
            True for assign, revoke and RegKey activation; False for the assignment query.
        """
        return action in _MUTATING

    def start(self) -> None:
        """Log in and check that BIG-IQ is recent enough for UNREACHABLE assignments.

        Raises:
            AuthError: (E_AUTH) the login was refused.
            NetworkError: (E_NETWORK) BIG-IQ could not be reached.
            ConfigError: (E_CONFIG) BIG-IQ is older than 5.4, or its version is unreadable.
            VendorError: (E_VENDOR) BIG-IQ answered the login or version query oddly.
        """
        if self.version is not None:
            return
        self._renew(0)
        try:
            self.version = self._check_version()
        except BaseException:
            self._logout()
            raise
        _log.info("BIG-IQ %s: logged in, version %s", self.settings.url, self.version)

    def finish(self) -> None:
        """Log out (delete the tokens on BIG-IQ) and close connections; never raises."""
        try:
            self._logout()
        except Exception as exc:  # never raises, by contract
            _log.debug("BIG-IQ logout failed: %s", self._http.redactor(str(exc)))
        finally:
            self._http.close()

    def submit(self, item: WorkItem) -> Outcome:
        """Make the action's one BIG-IQ call (a query for `bigiq.assignments`).

        Args:
            item: a verified `bigiq.*` request item.

        Returns:
            `pending` with a vendor ref for tasks and activations; `ok` for the query; `failed`
            with BIG-IQ's message verbatim when it refuses the item.

        Raises:
            UncertainOutcome: (E_NETWORK) BIG-IQ may have acted; reconcile before resending.
            NetworkError: (E_NETWORK) BIG-IQ certainly did not act.
            AuthError: (E_AUTH) the credentials or the user's roles were refused.
            VendorError: (E_VENDOR) BIG-IQ answered a query before the mutating call oddly.
        """
        try:
            if item.action in (ASSIGN, REVOKE):
                return self._submit_member(item)
            if item.action == REGKEY_ACTIVATE:
                return self._submit_regkey(item)
            if item.action == ASSIGNMENTS:
                return self._assignments(item)
        except _BadItem as exc:
            return Outcome.failed(InputError.code, str(exc))
        return _unknown_action(item)

    def poll(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Outcome:
        """Ask once how a submitted item stands.

        Assign and revoke only read the task. A RegKey activation may take the next step BIG-IQ
        waits for: accept the EULA (only with `accept_eula`), provide manual license text, or
        retry a failed activation once. Each of those PATCHes is accepted by BIG-IQ only from
        the state before it, so a repeated poll cannot apply one twice, and no poll licenses a
        device.

        Args:
            item: the request item.
            vendor_ref: what `submit` or `reconcile` returned.

        Returns:
            The item's outcome now.

        Raises:
            NetworkError: (E_NETWORK) BIG-IQ could not be asked this time.
            AuthError: (E_AUTH) the credentials or the user's roles were refused.
        """
        try:
            if item.action in (ASSIGN, REVOKE):
                task_id = vendor_ref.get("task")
                if not task_id:
                    return Outcome.needs_attention(
                        "no BIG-IQ task id was recorded for this item", vendor_ref=vendor_ref
                    )
                return self._poll_task(item, task_id)
            if item.action == REGKEY_ACTIVATE:
                return self._poll_offering(item, vendor_ref)
            if item.action == ASSIGNMENTS:
                return self._assignments(item)
        except _BadItem as exc:
            return Outcome.failed(InputError.code, str(exc), vendor_ref=vendor_ref)
        except VendorError as exc:
            return self._unexpected(exc, vendor_ref)
        return _unknown_action(item)

    def reconcile(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Reconciled:
        """Find out from BIG-IQ what became of a submit whose answer was lost. Read-only.

        Assign/revoke without a task id: the member-management tasks for the MAC and the
        assignment list decide. A task still running → `pending` on it; the MAC assigned from
        the pool by a finished assign task of the same parameters → that task's `ok`; a
        finished revoke and the MAC no longer in the pool → `ok`; no effect on BIG-IQ (no
        task, only failed ones, or a state the call cannot have made) → `NOT_SUBMITTED`, as a
        resubmission can then do at most what the item asks (or be refused verbatim); anything
        else (several running tasks, an assignment no task explains, a truncated list) →
        `needs_attention`. RegKey: an offering this item created (its description names the
        item) → `pending` so the poll continues it; otherwise `NOT_SUBMITTED`.

        Args:
            item: the request item.
            vendor_ref: the ref recorded so far (may be empty).

        Returns:
            An `Outcome`, or `NOT_SUBMITTED`.

        Raises:
            NetworkError: (E_NETWORK) BIG-IQ could not be asked this time.
            AuthError: (E_AUTH) the credentials or the user's roles were refused.
        """
        try:
            if item.action in (ASSIGN, REVOKE):
                if vendor_ref.get("task"):
                    return self._poll_task(item, vendor_ref["task"])
                return self._reconcile_member(item)
            if item.action == REGKEY_ACTIVATE:
                if vendor_ref.get("pool_id") and vendor_ref.get("regkey"):
                    return Outcome.pending(dict(vendor_ref), retry_after=0.0)
                return self._reconcile_offering(item)
            if item.action == ASSIGNMENTS:
                return NOT_SUBMITTED  # a query: asking again changes nothing
        except _BadItem as exc:
            return Outcome.failed(InputError.code, str(exc), vendor_ref=vendor_ref)
        except VendorError as exc:
            return self._unexpected(exc, vendor_ref)
        return _unknown_action(item)

    # --- sessions -----------------------------------------------------------------------------

    def _current(self) -> _Tokens:
        tokens = self._tokens
        if tokens is None:
            return self._renew(0)
        if self._clock() >= tokens.renew_at:
            return self._renew(tokens.generation)
        return tokens

    def _renew(self, seen_generation: int) -> _Tokens:
        """Refresh (or log in) unless another thread already replaced generation `seen`."""
        with self._token_lock:
            current = self._tokens
            if current is not None and current.generation != seen_generation:
                return current
            generation = (current.generation if current is not None else 0) + 1
            fresh: _Tokens | None = None
            if current is not None and current.refresh:
                try:
                    fresh = self._exchange(current, generation)
                except (Unauthorized, VendorRejected) as exc:
                    _log.info("BIG-IQ refused the refresh token (%s); logging in again", exc.code)
            if fresh is None:
                fresh = self._login(generation)
            self._tokens = fresh
            return fresh

    def _login(self, generation: int) -> _Tokens:
        settings = self.settings
        body = {
            "username": settings.username,
            "password": settings.password,
            "loginProviderName": settings.login_provider,
        }
        started = self._clock()
        try:
            # Not mutating: a resent login only issues another token.
            response = self._http.request(
                "POST", _LOGIN, json=body, mutating=False, expected=(200,)
            )
        except Unauthorized as exc:
            raise AuthError(
                f"BIG-IQ refused the login of user {settings.username!r} "
                f"(provider {settings.login_provider!r}): {exc.vendor_message}",
                hint="Check AIRGAP_BIGIQ_USERNAME, AIRGAP_BIGIQ_PASSWORD and bigiq.login_provider.",
            ) from exc
        tokens = self._read_tokens(response, started, generation, None)
        _log.debug("BIG-IQ login as %s (session %d)", settings.username, generation)
        return tokens

    def _exchange(self, current: _Tokens, generation: int) -> _Tokens:
        started = self._clock()
        response = self._http.request(
            "POST",
            _EXCHANGE,
            json={"refreshToken": {"token": current.refresh}},
            mutating=False,
            expected=(200,),
        )
        tokens = self._read_tokens(response, started, generation, current.refresh)
        _log.debug("BIG-IQ token refreshed (session %d)", generation)
        if current.refresh and tokens.refresh != current.refresh:
            # A rotated refresh token is used by nobody else (renewal holds the lock), so drop
            # the old one now rather than leave a 10-hour credential behind.
            self._delete_token(current.refresh, tokens.access)
        return tokens

    def _read_tokens(
        self, response: HttpResponse, started: float, generation: int, old_refresh: str | None
    ) -> _Tokens:
        body = _object(response, what="login answer")
        token = body.get("token")
        access = token.get("token") if isinstance(token, Mapping) else None
        if not isinstance(access, str) or not access:
            raise VendorError("BIG-IQ's login answer has no token.token")
        assert isinstance(token, Mapping)  # access was read from it
        refresh_node = body.get("refreshToken")
        refresh = refresh_node.get("token") if isinstance(refresh_node, Mapping) else refresh_node
        if not isinstance(refresh, str) or not refresh:
            refresh = old_refresh
        # Register before anything can log or raise with them.
        self._http.redactor.add(access, *([refresh] if refresh else []))
        ttl = _token_ttl(token)
        # Renew ahead of expiry by a quarter of the lifetime (at most 30 s), counted from when
        # the request left, so a call never sets off with a token about to lapse in transit.
        margin = min(_RENEW_MARGIN_MAX, ttl / 4)
        return _Tokens(access, refresh, started + ttl - margin, generation)

    def _logout(self) -> None:
        with self._token_lock:
            tokens, self._tokens = self._tokens, None
        if tokens is None:
            return
        # The refresh token first, while the access token still authorizes the call.
        if tokens.refresh:
            self._delete_token(tokens.refresh, tokens.access)
        self._delete_token(tokens.access, tokens.access)
        _log.debug("BIG-IQ logout (session %d)", tokens.generation)

    def _delete_token(self, token: str, auth: str) -> None:
        try:
            self._http.request(
                "DELETE",
                f"{_TOKENS}/{token}",
                headers={"X-F5-Auth-Token": auth},
                mutating=False,
                expected=(200, 204),
            )
        except AirgapError as exc:
            # Best effort: the token lapses on its own; the message is already redacted.
            _log.debug("BIG-IQ token deletion failed: %s", exc.code)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        mutating: bool,
        expected: tuple[int, ...] = (200, 201, 202),
    ) -> HttpResponse:
        """One authenticated call; on a 401 renew the token and send it once more.

        BIG-IQ checks the token before it does anything, so resending after a 401 is safe even
        for a mutating call (http.py `Unauthorized`).
        """
        used: list[int] = []  # token generation of each HTTP attempt, the last one counts

        def token() -> dict[str, str]:
            tokens = self._current()
            used.append(tokens.generation)
            return {"X-F5-Auth-Token": tokens.access}

        try:
            try:
                return self._http.request(
                    method, path, json=body, auth=token, mutating=mutating, expected=expected
                )
            except Unauthorized:
                _log.debug("BIG-IQ %s %s: HTTP 401, renewing the token", method, _bare(path))
            self._renew(used[-1])
            return self._http.request(
                method, path, json=body, auth=token, mutating=mutating, expected=expected
            )
        except VendorRejected as exc:
            if exc.status == 403:
                # The user lacks a role: no item can succeed, so stop the run (AuthError).
                raise AuthError(
                    f"BIG-IQ refused {method} {_bare(path)} (HTTP 403): {exc.vendor_message}",
                    hint="The BIG-IQ user needs a License Manager role (e.g. Administrator).",
                ) from exc
            raise

    def _get(self, path: str) -> dict[str, Any]:
        return _object(self._call("GET", path, mutating=False, expected=(200,)), what=path)

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self._get(path)
        except VendorRejected as exc:
            if exc.status == 404:
                return None
            raise

    def _check_version(self) -> str:
        body = self._get(_with_query(_VERSION, {"$select": "version"}))
        items = body.get("items")
        first = items[0] if isinstance(items, list) and items else None
        version = first.get("version") if isinstance(first, Mapping) else None
        parsed = _version_tuple(version)
        if parsed is None:
            raise ConfigError(
                f"BIG-IQ at {self.settings.url} reported no readable version ({version!r})",
                hint="Check that bigiq.url points at a BIG-IQ License Manager.",
            )
        if parsed < MIN_VERSION:
            raise ConfigError(
                f"BIG-IQ at {self.settings.url} runs {version}; UNREACHABLE license assignment "
                f"needs {'.'.join(map(str, MIN_VERSION))} or later",
                hint="Upgrade BIG-IQ, or point bigiq.url at a newer one.",
            )
        return str(version)

    # --- assign / revoke ----------------------------------------------------------------------

    def _submit_member(self, item: WorkItem) -> Outcome:
        command = "assign" if item.action == ASSIGN else "revoke"
        mac = _item_mac(item)
        pool = _param(item, "pool")
        body: dict[str, Any] = {
            "command": command,
            "licensePoolName": pool,
            "assignmentType": "UNREACHABLE",
            "macAddress": mac,
        }
        if command == "assign":
            body["hypervisor"] = _param(item, "hypervisor")
            for name, key in _OPTIONAL_ASSIGN_FIELDS:
                value = item.params.get(name)
                if value is not None and value != "":
                    body[key] = str(value)
        try:
            response = self._call("POST", _TASKS, body=body, mutating=True)
        except VendorRejected as exc:
            return _refusal(exc)
        task = _submitted_object(response, f"POST {_TASKS}")
        task_id = _task_id(task)
        if not task_id:
            raise UncertainOutcome(
                f"POST {_TASKS}: BIG-IQ accepted the {command} of {mac} but named no task",
                hint="Reconcile with a vendor query before sending it again.",
                method="POST",
                url=_TASKS,
                status=response.status,
            )
        return self._task_outcome(item, task, task_id)

    def _poll_task(self, item: WorkItem, task_id: str) -> Outcome:
        task = self._get_or_none(f"{_TASKS}/{quote(task_id, safe='')}")
        if task is None:
            return Outcome.needs_attention(
                f"BIG-IQ task {task_id} no longer exists (tasks are kept one week)",
                vendor_ref={"task": task_id},
            )
        return self._task_outcome(item, task, task_id)

    def _task_outcome(self, item: WorkItem, task: Mapping[str, Any], task_id: str) -> Outcome:
        ref = {"task": task_id}
        command = "assign" if item.action == ASSIGN else "revoke"
        mac = _item_mac(item)
        task_mac = _normalize_mac(str(task.get("macAddress", "")))
        if task.get("command", command) != command or (task_mac and task_mac != mac):
            return Outcome.needs_attention(
                f"BIG-IQ task {task_id} is a {task.get('command')} of {task.get('macAddress')}, "
                f"not the {command} of {mac} this item asks for",
                vendor_ref=ref,
            )
        status = task.get("status")
        summary = _task_summary(task, task_id, mac)
        if status == "FINISHED":
            if command == "revoke":
                confirmation = {"vendor": "F5 BIG-IQ", **summary}
                return Outcome.ok(
                    summary, files={"revoke.json": _pretty(confirmation)}, vendor_ref=ref
                )
            text = task.get("licenseText")
            if not isinstance(text, str) or not text.strip():
                return Outcome.needs_attention(
                    f"BIG-IQ task {task_id} finished the assignment of {mac} without license text",
                    vendor_ref=ref,
                )
            return Outcome.ok(
                summary, files={"bigip.license": text.encode("utf-8")}, vendor_ref=ref
            )
        if status == "FAILED":
            message = task.get("errorMessage")
            if not isinstance(message, str) or not message:
                message = f"BIG-IQ task {task_id} failed without an error message"
            return Outcome.failed(VendorError.code, message, result=summary, vendor_ref=ref)
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _reconcile_member(self, item: WorkItem) -> Reconciled:
        command = "assign" if item.action == ASSIGN else "revoke"
        mac = _item_mac(item)
        pool = _param(item, "pool")
        mac_filter = f"macAddress eq {_literal(mac)} or macAddress eq {_literal(mac.lower())}"
        tasks, tasks_complete = self._list(_TASKS, mac_filter)
        assignments, assignments_complete = self._list(_ASSIGNMENTS, mac_filter)
        if not (tasks_complete and assignments_complete):
            return Outcome.needs_attention(
                f"BIG-IQ lists more {command} records for {mac} than one page holds; check "
                "the member-management tasks by hand"
            )
        mine = [
            t
            for t in tasks
            if t.get("command") == command
            and t.get("licensePoolName") == pool
            and _normalize_mac(str(t.get("macAddress", ""))) == mac
            and (command == "revoke" or _same_assign_params(t, item))
        ]
        running = [t for t in mine if t.get("status") not in ("FINISHED", "FAILED")]
        if len(running) > 1:
            ids = ", ".join(str(_task_id(t)) for t in running)
            return Outcome.needs_attention(
                f"BIG-IQ runs several {command} tasks for {mac} in pool {pool!r} ({ids}); "
                "which one this item made cannot be told"
            )
        if running:
            task_id = _task_id(running[0])
            if task_id:
                return Outcome.pending({"task": task_id}, retry_after=self.poll_interval)
        held = [
            a
            for a in assignments
            if _assignment_pool(a) == pool and _normalize_mac(str(a.get("macAddress", ""))) == mac
        ]
        finished = [t for t in mine if t.get("status") == "FINISHED"]
        if command == "assign":
            if not held:
                # Nothing assigned: failed tasks had no effect, and a finished one was undone
                # since; a resubmission cannot license the device twice.
                return NOT_SUBMITTED
            linked = [t for t in finished if _explains(t, held[0])]
            if linked:
                task = max(linked, key=_task_time)
                return self._task_outcome(item, task, str(_task_id(task)))
            if finished:
                return Outcome.needs_attention(
                    f"{mac} is assigned from pool {pool!r}, but no finished assign task can be "
                    "tied to that assignment"
                )
            # Assigned, but not by a task of this item's shape: our call made no assignment
            # (BIG-IQ refuses a second one), and a resubmission is refused verbatim.
            return NOT_SUBMITTED
        if held:
            return NOT_SUBMITTED  # still assigned: the revoke has had no effect
        if finished:
            task = max(finished, key=_task_time)
            return self._task_outcome(item, task, str(_task_id(task)))
        return NOT_SUBMITTED

    def _list(self, path: str, odata_filter: str) -> tuple[list[dict[str, Any]], bool]:
        body = self._get(_with_query(path, {"$filter": odata_filter}))
        items = [i for i in body.get("items", []) if isinstance(i, dict)]
        total = body.get("totalItems")
        complete = "nextLink" not in body and not (isinstance(total, int) and total > len(items))
        return items, complete

    # --- RegKey activation --------------------------------------------------------------------

    def _submit_regkey(self, item: WorkItem) -> Outcome:
        pool = _param(item, "pool")
        reg_key = _param(item, "regkey").strip().upper()
        mode = _mode(item)
        add_on_keys = _add_on_keys(item)
        if mode == "manual":
            _param(item, "dossier")
            if self._license_source is None:
                return Outcome.failed(
                    ItemCode.MANUAL_ACTIVATION_UNAVAILABLE,
                    f"manual activation of {reg_key} needs license text from F5's activation "
                    "server for the item's dossier, and this outside site has no connection to "
                    "it configured; get the license at activate.f5.com with the dossier, or "
                    "use mode automatic",
                )
        pool_id = self._regkey_pool_id(pool)
        if pool_id is None:
            return Outcome.failed(
                ItemCode.POOL_NOT_FOUND, f"RegKey pool {pool!r} not found on BIG-IQ"
            )
        ref = {"pool_id": pool_id, "regkey": reg_key}
        existing = self._get_or_none(_offering_path(pool_id, reg_key))
        if existing is not None and _adoptable(existing, mode):
            # Left waiting by an earlier request (EULA declined, activation failed, license
            # text never provided): continue it rather than have BIG-IQ refuse a second add.
            _log.info("BIG-IQ: continuing the activation of %s in pool %s", reg_key, pool)
            return Outcome.pending(ref, retry_after=0.0)
        body = {
            "regKey": reg_key,
            "status": _MANUAL if mode == "manual" else _AUTOMATIC,
            "addOnKeys": add_on_keys,
            "description": _description(item),
        }
        path = _offering_path(pool_id)
        try:
            response = self._call("POST", path, body=body, mutating=True)
        except VendorRejected as exc:
            return _refusal(exc)
        _submitted_object(response, f"POST {path}")
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _regkey_pool_id(self, pool: str) -> str | None:
        query = {"$filter": f"(name eq {_literal(pool)})", "$top": "1"}
        body = self._get(_with_query(_REGKEY_POOLS, query))
        for entry in body.get("items", []):
            if isinstance(entry, Mapping) and entry.get("name") == pool and entry.get("id"):
                return str(entry["id"])
        return None

    def _poll_offering(self, item: WorkItem, ref: Mapping[str, str]) -> Outcome:
        pool_id, reg_key = ref.get("pool_id"), ref.get("regkey")
        if not pool_id or not reg_key:
            return Outcome.needs_attention(
                "no BIG-IQ RegKey pool and key were recorded for this item", vendor_ref=ref
            )
        offering = self._get_or_none(_offering_path(pool_id, reg_key))
        if offering is None:
            return Outcome.needs_attention(
                f"registration key {reg_key} is no longer in the RegKey pool on BIG-IQ",
                vendor_ref=ref,
            )
        return self._advance(item, dict(ref), offering)

    def _advance(self, item: WorkItem, ref: dict[str, str], offering: Mapping[str, Any]) -> Outcome:
        """Turn an offering's state into an outcome, taking the step BIG-IQ waits for."""
        key = (ref["pool_id"], ref["regkey"])
        status = offering.get("status")
        message = str(offering.get("message") or "")
        mode = _mode(item)
        if status == _READY:
            return self._ready(item, ref, offering)
        if status == _NEED_EULA:
            eula = offering.get("eulaText")
            if item.params.get("accept_eula") is not True:
                return Outcome.failed(
                    ItemCode.EULA_NOT_ACCEPTED,
                    f"BIG-IQ needs F5's EULA accepted before it activates {ref['regkey']}; "
                    "the request did not accept it. Read the EULA text attached to this "
                    "result and set accept_eula to activate the key",
                    result={**self._offering_result(item, ref, offering), "eula_text": eula},
                    vendor_ref=ref,
                )
            if not isinstance(eula, str) or not eula:
                return Outcome.needs_attention(
                    f"BIG-IQ asks to accept a EULA for {ref['regkey']} but shows no EULA text",
                    vendor_ref=ref,
                )
            with self._state_lock:
                # Kept before the PATCH: once accepted, BIG-IQ stops showing the text.
                self._eula_accepted[key] = eula
            patched = self._patch_offering(ref, {"status": _EULA_ACCEPTED, "eulaText": eula})
            if isinstance(patched, Outcome):
                return patched
            _log.info("BIG-IQ: accepted the EULA for %s as the request asked", ref["regkey"])
            return self._step_result(item, ref, patched)
        if status == _NEED_LICENSE_TEXT:
            dossier = item.params.get("dossier")
            source = self._license_source
            if mode != "manual" or not isinstance(dossier, str) or not dossier or source is None:
                return Outcome.needs_attention(
                    f"BIG-IQ waits for manual license text for {ref['regkey']}, which this "
                    "item cannot provide",
                    vendor_ref=ref,
                )
            try:
                text = source(ref["regkey"], dossier, _add_on_keys(item))
            except NetworkError:
                raise
            except AirgapError as exc:
                return Outcome.failed(exc.code, exc.message, vendor_ref=ref)
            patched = self._patch_offering(
                ref, {"status": _LICENSE_TEXT_PROVIDED, "licenseText": text}
            )
            if isinstance(patched, Outcome):
                return patched
            return self._step_result(item, ref, patched)
        if status == _ACTIVATION_FAILED:
            with self._state_lock:
                retry = key not in self._retried
                self._retried.add(key)
            if not retry:
                return Outcome.failed(
                    ItemCode.ACTIVATION_FAILED,
                    message or f"BIG-IQ could not activate {ref['regkey']}",
                    result=self._offering_result(item, ref, offering),
                    vendor_ref=ref,
                )
            _log.info("BIG-IQ: activation of %s failed; retrying once", ref["regkey"])
            restart = {"status": _MANUAL if mode == "manual" else _AUTOMATIC}
            patched = self._patch_offering(ref, restart)
            if isinstance(patched, Outcome):
                return patched
            return self._step_result(item, ref, patched)
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _step_result(
        self, item: WorkItem, ref: dict[str, str], offering: Mapping[str, Any]
    ) -> Outcome:
        # The answer to a step is final only when it says so (a manual license text is judged
        # at once); anything else is looked at again on the next poll, never acted on here.
        if offering.get("status") in (_READY, _ACTIVATION_FAILED):
            if offering.get("status") == _ACTIVATION_FAILED:
                with self._state_lock:
                    self._retried.add((ref["pool_id"], ref["regkey"]))
            return self._advance(item, ref, offering)
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _patch_offering(
        self, ref: Mapping[str, str], body: Mapping[str, Any]
    ) -> dict[str, Any] | Outcome:
        path = _offering_path(ref["pool_id"], ref["regkey"])
        try:
            response = self._call("PATCH", path, body=dict(body), mutating=True)
        except UncertainOutcome:
            # Re-read on the next poll: BIG-IQ takes each step only from the state before it.
            return Outcome.pending(dict(ref), retry_after=self.poll_interval)
        except VendorRejected as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return Outcome.failed(
                    VendorError.code, exc.vendor_message or exc.message, vendor_ref=dict(ref)
                )
            raise
        try:
            return _object(response, what=path)
        except VendorError:
            return Outcome.pending(dict(ref), retry_after=self.poll_interval)

    def _ready(self, item: WorkItem, ref: dict[str, str], offering: Mapping[str, Any]) -> Outcome:
        with self._state_lock:
            accepted = self._eula_accepted.get((ref["pool_id"], ref["regkey"]))
        shown = offering.get("eulaText")
        eula = accepted if accepted is not None else (shown if isinstance(shown, str) else None)
        result = self._offering_result(item, ref, offering)
        result["eula_accepted"] = accepted is not None
        if eula:
            result["eula_text"] = eula
        files: dict[str, bytes] = {}
        text = offering.get("licenseText")
        if isinstance(text, str) and text.strip():
            files["license.txt"] = text.encode("utf-8")
        else:
            result["license_text"] = "BIG-IQ did not return the license text"
        if eula:
            files["eula.txt"] = eula.encode("utf-8")
        return Outcome.ok(result, files=files, vendor_ref=ref)

    def _offering_result(
        self, item: WorkItem, ref: Mapping[str, str], offering: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "pool": item.params.get("pool"),
            "pool_id": ref["pool_id"],
            "regkey": ref["regkey"],
            "mode": item.params.get("mode"),
            "status": offering.get("status"),
            "message": offering.get("message"),
            "add_on_keys": list(offering.get("addOnKeys") or []),
        }
        dossier = offering.get("dossier")
        if isinstance(dossier, str) and dossier and dossier != item.params.get("dossier"):
            result["bigiq_dossier"] = dossier  # BIG-IQ's own, when it differs from the item's
        return result

    def _reconcile_offering(self, item: WorkItem) -> Reconciled:
        pool = _param(item, "pool")
        reg_key = _param(item, "regkey").strip().upper()
        pool_id = self._regkey_pool_id(pool)
        if pool_id is None:
            return NOT_SUBMITTED  # submit posts nothing without the pool
        offering = self._get_or_none(_offering_path(pool_id, reg_key))
        if offering is None or offering.get("description") != _description(item):
            # Absent, or added by someone else (BIG-IQ refuses a second add of a key, so our
            # POST cannot have made it): a resubmission continues it or is refused verbatim.
            return NOT_SUBMITTED
        return Outcome.pending({"pool_id": pool_id, "regkey": reg_key}, retry_after=0.0)

    # --- assignments query --------------------------------------------------------------------

    def _assignments(self, item: WorkItem) -> Outcome:
        pool = item.params.get("pool")
        rows: list[dict[str, Any]] = []
        skip = 0
        while True:
            body = self._get(
                _with_query(_ASSIGNMENTS, {"$top": str(_LIST_PAGE), "$skip": str(skip)})
            )
            page = [i for i in body.get("items", []) if isinstance(i, dict)]
            rows.extend(page)
            skip += len(page)
            total = body.get("totalItems")
            if len(page) < _LIST_PAGE or (isinstance(total, int) and skip >= total):
                break
        if pool:
            rows = [row for row in rows if _assignment_pool(row) == pool]
        result = {"pool": pool or None, "count": len(rows)}
        document = {**result, "assignments": rows}
        return Outcome.ok(result, files={"result.json": _pretty(document)})

    # --- errors -------------------------------------------------------------------------------

    def _unexpected(self, exc: VendorError, ref: Mapping[str, str]) -> Outcome:
        return Outcome.needs_attention(
            f"BIG-IQ answered unexpectedly: {exc.message}", vendor_ref=ref
        )


# --- helpers -----------------------------------------------------------------------------------


def _unknown_action(item: WorkItem) -> Outcome:
    return Outcome.failed(InputError.code, f"the BIG-IQ client does not serve {item.action!r}")


def _param(item: WorkItem, name: str) -> str:
    value = item.params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _BadItem(f"{item.action} item {item.id} has no {name}")
    return value


def _mode(item: WorkItem) -> str:
    mode = str(item.params.get("mode") or "automatic").lower()
    if mode not in ("automatic", "manual"):
        raise _BadItem(f"{item.action} item {item.id}: mode {mode!r} is not automatic or manual")
    return mode


def _add_on_keys(item: WorkItem) -> list[str]:
    raw = item.params.get("add_on_keys") or []
    if isinstance(raw, str):
        raw = [raw]
    return [str(key).strip().upper() for key in raw if str(key).strip()]


def _item_mac(item: WorkItem) -> str:
    raw = item.mac
    if not raw:
        raise _BadItem(f"{item.action} item {item.id} names no MAC address")
    return _normalize_mac(raw) or raw


def _normalize_mac(raw: str) -> str | None:
    """`AA:BB:CC:DD:EE:FF` from any case and separators, or None."""
    digits = _MAC_SEPARATORS.sub("", raw)
    if not _HEX12.match(digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).upper()


def _description(item: WorkItem) -> str:
    # Marks the offering as this item's, so reconciliation can tell it from someone else's.
    return f"airgap request item {item.id}"


def _adoptable(offering: Mapping[str, Any], mode: str) -> bool:
    status = offering.get("status")
    return status in (_NEED_EULA, _ACTIVATION_FAILED) or (
        status == _NEED_LICENSE_TEXT and mode == "manual"
    )


def _offering_path(pool_id: str, reg_key: str | None = None) -> str:
    path = f"{_REGKEY_POOLS}/{quote(pool_id, safe='')}/offerings"
    return f"{path}/{quote(reg_key, safe='')}" if reg_key else path


def _literal(value: str) -> str:
    """An OData string literal: quotes doubled inside."""
    return "'" + value.replace("'", "''") + "'"


def _with_query(path: str, params: Mapping[str, str]) -> str:
    # Percent-encode spaces and everything unusual ourselves; `$`, quotes and parentheses stay
    # readable (OData), and `+` is encoded so it is not read back as a space.
    parts = [f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}" for k, v in params.items()]
    return f"{path}?{'&'.join(parts)}"


def _object(response: HttpResponse, *, what: str) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise VendorError(f"{what}: BIG-IQ answered HTTP {response.status} with a non-object body")
    return body


def _submitted_object(response: HttpResponse, what: str) -> dict[str, Any]:
    """The body of a mutating call's 2xx answer; unreadable means BIG-IQ acted unobserved."""
    try:
        return _object(response, what=what)
    except VendorError as exc:
        raise UncertainOutcome(
            f"{what}: HTTP {response.status} with a body that is not a JSON object; BIG-IQ may "
            "have acted on the request",
            hint="Reconcile with a vendor query before sending it again.",
            status=response.status,
        ) from exc


def _refusal(exc: VendorRejected) -> Outcome:
    """An item-level refusal (4xx) as a failed outcome carrying BIG-IQ's message verbatim."""
    if exc.status is not None and 400 <= exc.status < 500:
        return Outcome.failed(VendorError.code, exc.vendor_message or exc.message)
    raise exc


def _bare(path: str) -> str:
    return path.split("?", 1)[0]


def _task_id(task: Mapping[str, Any]) -> str | None:
    value = task.get("id")
    if isinstance(value, str) and value:
        return value
    link = task.get("selfLink")
    if isinstance(link, str) and link.rstrip("/"):
        return link.rstrip("/").rsplit("/", 1)[-1] or None
    return None


def _task_time(task: Mapping[str, Any]) -> int:
    value = task.get("lastUpdateMicros")
    return value if isinstance(value, int) else 0


def _task_summary(task: Mapping[str, Any], task_id: str, mac: str) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "command": task.get("command"),
        "mac": mac,
        "pool": task.get("licensePoolName"),
        "task": task_id,
        "status": task.get("status"),
    }
    for key, name in (
        ("hypervisor", "hypervisor"),
        ("currentStep", "step"),
        ("startDateTime", "started"),
        ("endDateTime", "ended"),
    ):
        if task.get(key) is not None:
            summary[name] = task[key]
    reference = task.get("licenseAssignmentReference")
    if isinstance(reference, Mapping) and isinstance(reference.get("link"), str):
        summary["assignment"] = urlsplit(reference["link"]).path
    return summary


def _same_assign_params(task: Mapping[str, Any], item: WorkItem) -> bool:
    """Whether an assign task carries this item's parameters (fields it does not echo match)."""
    wanted = {"hypervisor": item.params.get("hypervisor")}
    wanted.update({key: item.params.get(name) for name, key in _OPTIONAL_ASSIGN_FIELDS})
    for key, value in wanted.items():
        if key in task and task[key] != (value if value not in ("", None) else None):
            return False
    return True


def _assignment_pool(row: Mapping[str, Any]) -> str | None:
    pool = row.get("pool")
    if isinstance(pool, Mapping) and isinstance(pool.get("name"), str):
        return str(pool["name"])
    name = row.get("licensePoolName")
    return name if isinstance(name, str) else None


def _explains(task: Mapping[str, Any], assignment: Mapping[str, Any]) -> bool:
    """Whether a finished assign task made this assignment (the member they name agrees)."""
    reference = task.get("licenseAssignmentReference")
    link = reference.get("link") if isinstance(reference, Mapping) else None
    if not isinstance(link, str):
        return False
    task_path = urlsplit(link).path.rstrip("/")
    if task_path.rsplit("/", 1)[-1] == assignment.get("id"):
        return True
    license_ref = assignment.get("licenseReference")
    other = license_ref.get("link") if isinstance(license_ref, Mapping) else None
    return isinstance(other, str) and urlsplit(other).path.rstrip("/") == task_path


def _token_ttl(token: Mapping[str, Any]) -> float:
    timeout = token.get("timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    expiration, start = token.get("expirationMicros"), token.get("lastUpdateMicros")
    if isinstance(expiration, int) and isinstance(start, int) and expiration > start:
        return (expiration - start) / 1_000_000
    return _DEFAULT_TOKEN_TTL


def _version_tuple(version: object) -> tuple[int, ...] | None:
    if not isinstance(version, str):
        return None
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _pretty(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
