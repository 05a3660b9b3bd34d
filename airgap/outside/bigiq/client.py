"""`BigIqClient`: the BIG-IQ License Manager as a `VendorClient`.

It ties the jobs together: the session (`session`), assign and revoke (`members`), RegKey
activation (`regkey`) and the assignment query (`assignments`), and checks at `start()` that
BIG-IQ is recent enough for UNREACHABLE assignments (5.4).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, Final

from airgap.config import Config
from airgap.errors import ConfigError, InputError, VendorError
from airgap.model import actions_of
from airgap.outside.bigiq._common import (
    ASSIGN,
    ASSIGNMENTS,
    REGKEY_ACTIVATE,
    REVOKE,
    _BadItem,
    _unknown_action,
    _with_query,
)
from airgap.outside.bigiq.assignments import Assignments
from airgap.outside.bigiq.members import Members
from airgap.outside.bigiq.regkey import LicenseDirectory, LicenseSource, RegKeys
from airgap.outside.bigiq.session import BigIqSession
from airgap.outside.bigiq.settings import BigIqSettings
from airgap.outside.http import HttpClient, RateLimiter, RetryPolicy, TlsSettings
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem

if TYPE_CHECKING:
    from airgap.outside.vendor import ClientOptions

_log = logging.getLogger(__name__)

ACTIONS: Final = actions_of("bigiq")
MIN_VERSION: Final = (5, 4)  # UNREACHABLE assignments need BIG-IQ 5.4 or later
_VERSION: Final = "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices"


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
            license_source: F5's activation server for manual RegKey activation (see
                `airgap.outside.bigiq.regkey`); None refuses manual items before anything is
                sent.

        Raises:
            ConfigError: (E_CONFIG) the URL is not http(s) or the CA bundle does not exist.
        """
        self.settings = settings
        self.poll_interval = poll_interval
        self.version: str | None = None
        """BIG-IQ's version as reported by `start()`, e.g. `8.3.0`."""
        http = HttpClient(
            settings.url,
            retry=retry,
            limiter=limiter,
            timeout=timeout,
            tls=TlsSettings(settings.verify_tls),
        )
        self._session = BigIqSession(settings, http, clock=clock)
        self._members = Members(self._session, poll_interval=poll_interval)
        self._regkeys = RegKeys(
            self._session, poll_interval=poll_interval, license_source=license_source
        )
        self._assignments = Assignments(self._session)

    @classmethod
    def from_config(cls, config: Config, options: ClientOptions) -> BigIqClient:
        """Build the client of a run from the home's config and the run's options.

        Args:
            config: the outside home's merged configuration, with the environment secrets.
            options: the retry policy, rate limiter and license folder of the run.

        Raises:
            ConfigError: (E_CONFIG) a setting or secret is missing, or the CA bundle does not
                exist.

        Returns:
            The client; nothing is sent yet.
        """
        source = LicenseDirectory(options.license_dir) if options.license_dir else None
        return cls(
            BigIqSettings.from_config(config),
            retry=options.retry,
            limiter=options.limiter,
            license_source=source,
        )

    def __repr__(self) -> str:
        return (
            f"BigIqClient(url={self.settings.url!r}, username={self.settings.username!r}, "
            f"version={self.version!r})"
        )

    # --- VendorClient -----------------------------------------------------------------------

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
        self._session.token()
        try:
            self.version = self._check_version()
        except BaseException:
            self._session.logout()
            raise
        _log.info("BIG-IQ %s: logged in, version %s", self.settings.url, self.version)

    def finish(self) -> None:
        """Log out (delete the tokens on BIG-IQ) and close connections; never raises."""
        self._session.finish()

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
                return self._members.submit(item)
            if item.action == REGKEY_ACTIVATE:
                return self._regkeys.submit(item)
            if item.action == ASSIGNMENTS:
                return self._assignments.query(item)
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
                return self._members.poll(item, task_id)
            if item.action == REGKEY_ACTIVATE:
                return self._regkeys.poll(item, vendor_ref)
            if item.action == ASSIGNMENTS:
                return self._assignments.query(item)
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
                    return self._members.poll(item, vendor_ref["task"])
                return self._members.reconcile(item)
            if item.action == REGKEY_ACTIVATE:
                if vendor_ref.get("pool_id") and vendor_ref.get("regkey"):
                    return Outcome.pending(dict(vendor_ref), retry_after=0.0)
                return self._regkeys.reconcile(item)
            if item.action == ASSIGNMENTS:
                return NOT_SUBMITTED  # a query: asking again changes nothing
        except _BadItem as exc:
            return Outcome.failed(InputError.code, str(exc), vendor_ref=vendor_ref)
        except VendorError as exc:
            return self._unexpected(exc, vendor_ref)
        return _unknown_action(item)

    def _check_version(self) -> str:
        body = self._session.get(_with_query(_VERSION, {"$select": "version"}))
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

    def _unexpected(self, exc: VendorError, ref: Mapping[str, str]) -> Outcome:
        return Outcome.needs_attention(
            f"BIG-IQ answered unexpectedly: {exc.message}", vendor_ref=ref
        )


def _version_tuple(version: object) -> tuple[int, ...] | None:
    if not isinstance(version, str):
        return None
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None
