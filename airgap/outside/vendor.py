"""The boundary between the batch processor and one vendor's API client.

The processor owns the journal, the thread pool, scheduling, deadlines and the response
bundle; a vendor client owns only the vendor's protocol. Each client implements
`VendorClient` for the actions it serves and builds itself with `from_config`; the processor
picks the client by action prefix through `airgap.outside.registry`, so adding a vendor is
adding a class and one registry line, not an if-chain.

At-most-once contract:
- `submit` makes the one non-idempotent call of an action. The processor has durably committed
  the item as SUBMITTING before calling it.
- `submit` raises `airgap.outside.http.UncertainOutcome` when the vendor may have acted without
  the client learning the result; the processor then calls `reconcile` and never blindly resends.
- `submit` raises any other `NetworkError` (e.g. `VendorUnavailable`) only when the vendor
  certainly did not act (nothing reached it, or it refused with 429 every time): the item is
  released to NEW and a later run retries it.
- A vendor's refusal of the item itself (unknown pool, duplicate report, …) is not an exception:
  it is `Outcome.failed(...)` carrying the vendor's message verbatim.
- `poll` and `reconcile` never change vendor state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

from airgap.errors import ItemCode

if TYPE_CHECKING:
    from airgap.config import Config
    from airgap.outside.http import RateLimiter, RetryPolicy

Status = Literal["ok", "failed", "pending", "needs_attention"]


@dataclass(frozen=True)
class WorkItem:
    """A verified request item as the processor hands it to a client."""

    id: str
    action: str
    device: Mapping[str, Any] | None
    params: Mapping[str, Any]
    files: Mapping[str, Path] = field(default_factory=dict)  # member path -> verified temp copy

    @property
    def udi(self) -> tuple[str, str] | None:
        """(pid, sn) of a Cisco device item."""
        udi = (self.device or {}).get("udi")
        return (str(udi["pid"]), str(udi["sn"])) if udi else None

    @property
    def mac(self) -> str | None:
        """`AA:BB:CC:DD:EE:FF` of a BIG-IP item."""
        mac = (self.device or {}).get("mac")
        return str(mac) if mac else None


@dataclass(frozen=True)
class Outcome:
    """What became of an item after one submit, poll or reconcile.

    `files` maps a plain file name (`lic.txt`, `ack.xml`, `bigip.license`, `result.json`) to its
    bytes; the processor stores it in the response as `files/<item id>/<name>`. `vendor_ref`
    holds strings only (Cisco poll ids exceed 2**53). `error` is `{"code", "message"}` with the
    vendor's message verbatim and never a secret.
    """

    status: Status
    result: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    error: Mapping[str, str] | None = None
    vendor_ref: Mapping[str, str] = field(default_factory=dict)
    retry_after: float | None = None  # seconds until polling again is worthwhile (pending)

    @classmethod
    def ok(
        cls,
        result: Mapping[str, Any] | None = None,
        *,
        files: Mapping[str, bytes] | None = None,
        vendor_ref: Mapping[str, str] | None = None,
    ) -> Outcome:
        return cls("ok", result or {}, files or {}, None, vendor_ref or {})

    @classmethod
    def failed(
        cls,
        code: str,
        message: str,
        *,
        result: Mapping[str, Any] | None = None,
        vendor_ref: Mapping[str, str] | None = None,
    ) -> Outcome:
        return cls("failed", result or {}, {}, {"code": code, "message": message}, vendor_ref or {})

    @classmethod
    def pending(cls, vendor_ref: Mapping[str, str], *, retry_after: float | None = None) -> Outcome:
        return cls("pending", {}, {}, None, vendor_ref, retry_after)

    @classmethod
    def needs_attention(
        cls, message: str, *, vendor_ref: Mapping[str, str] | None = None
    ) -> Outcome:
        return cls(
            "needs_attention",
            {},
            {},
            {"code": ItemCode.NEEDS_ATTENTION, "message": message},
            vendor_ref or {},
        )


class _NotSubmitted:
    """Reconciliation's answer when the vendor shows no trace of the call: safe to submit."""

    _instance: ClassVar[_NotSubmitted | None] = None

    def __new__(cls) -> _NotSubmitted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_SUBMITTED"


NOT_SUBMITTED: Final = _NotSubmitted()
Reconciled = Outcome | _NotSubmitted


@dataclass(frozen=True)
class ClientOptions:
    """What a run hands every vendor client it builds, besides the home's config."""

    retry: RetryPolicy
    limiter: RateLimiter | None = None  # shared by every client of one vendor
    license_dir: Path | None = None  # F5 license text for manual RegKey activations (BIG-IQ)


class VendorClient(Protocol):
    """One vendor's API, as the processor uses it. Implementations must be thread-safe."""

    vendor: ClassVar[str]  # "cisco" | "bigiq": the action prefix this client serves
    actions: ClassVar[frozenset[str]]

    def start(self) -> None:
        """Log in / fetch a token before the first call.

        Raises:
            AuthError, NetworkError, ConfigError: the vendor cannot be used at all.
        """
        ...

    def finish(self) -> None:
        """Log out and release connections; never raises."""
        ...

    def submit(self, item: WorkItem) -> Outcome:
        """Make the action's vendor call; `pending` with a vendor_ref when it must be polled.

        Raises:
            UncertainOutcome: the vendor may have acted; the processor will reconcile.
            NetworkError: the vendor certainly did not act; a later run retries.
        """
        ...

    def poll(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Outcome:
        """Ask once how a submitted item stands (never changes vendor state).

        Raises:
            NetworkError: the vendor could not be asked this time; the processor asks again.
        """
        ...

    def reconcile(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Reconciled:
        """After a crash or an uncertain submit, find out from the vendor what happened.

        Returns an Outcome (pending with a ref to poll, or final), `NOT_SUBMITTED` when the
        vendor certainly has no trace of the call, or `Outcome.needs_attention(...)` when it
        cannot be decided (the processor will then never resubmit on its own).

        Raises:
            NetworkError: the vendor could not be asked this time; the processor asks again.
        """
        ...


class VendorClientClass(Protocol):
    """A client class as the registry knows it: it names its vendor and builds itself."""

    vendor: str

    def from_config(self, config: Config, options: ClientOptions) -> VendorClient:
        """Build a client from the home's config (URLs, secrets, TLS) and the run's options.

        Raises:
            ConfigError: a setting or secret is missing or unusable.
        """
        ...
