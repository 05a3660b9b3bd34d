"""HTTP for the vendor clients: a retry policy as data, a rate limiter and an at-most-once client.

The client knows HTTP, not vendors: tokens live in `session`, request bodies and polling in the
vendor clients. Its one job beyond transport is to keep two failures apart: "the server
certainly did not act" (resend is safe) and "the server may have begun processing" (a mutating
call is never resent; the caller gets `UncertainOutcome` and reconciles with a vendor query).
`RetryPolicy.decide` makes that call for each failed attempt, without sockets or sleeps.

`TlsSettings` is the one place that decides how certificates are checked, and how the
environment (`REQUESTS_CA_BUNDLE`, proxies) is taken into account.

Nothing above this module sees a `requests` or `urllib3` exception: every one is wrapped into an
`airgap.errors` subclass and chained. Error messages and debug logs go through a `Redactor`, so
tokens, client secrets and passwords never reach them.
"""

from __future__ import annotations

import email.utils
import functools
import json as _json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias
from urllib.parse import urlencode, urlsplit

import requests
import requests.utils
import urllib3
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from airgap.errors import AirgapError, AuthError, ConfigError, NetworkError, VendorError

if TYPE_CHECKING:
    from airgap.config import Config

_log = logging.getLogger(__name__)

JsonBody: TypeAlias = Any
"""Anything `json.dumps` accepts; sent as the request body with `Content-Type: application/json`."""

# Statuses whose Retry-After we honour, as urllib3 does (Retry.RETRY_AFTER_STATUS_CODES).
_RETRY_AFTER_STATUSES: Final = frozenset({413, 429, 503})
# Statuses that say "refused before acting": resending them is safe even for mutating calls.
_NOT_PROCESSED_STATUSES: Final = frozenset({429})
_VENDOR_MESSAGE_KEYS: Final = ("message", "error_description", "errorMessage", "status_message")
_VENDOR_MESSAGE_MAX: Final = 200  # characters of a non-JSON error body kept in a message


# --- retry policy (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One failed attempt, as the retry decision sees it: an unwanted status or no answer.

    Build it with `Failure.answer(...)` (the server answered with a status the caller did not
    expect) or `Failure.transport(...)` (no complete answer came).
    """

    status: int | None  # the HTTP status, or None when no answer came
    kind: str | None = None  # transport failure ("connect_refused", "read_timeout", ...) or None
    may_have_seen: bool = True  # the request may have reached the server's handler
    permanent: bool = False  # retrying cannot help (TLS verification, a redirect loop)
    retry_after: float | None = None  # seconds the server asked for (Retry-After), if any

    @classmethod
    def answer(cls, status: int, *, retry_after: float | None = None) -> Failure:
        """An answer with `status`; only a 429 proves the server did not begin processing.

        Args:
            status: the HTTP status.
            retry_after: the server's Retry-After in seconds, if it sent one.

        Returns:
            The failure.
        """
        return cls(status, None, status not in _NOT_PROCESSED_STATUSES, False, retry_after)

    @classmethod
    def transport(cls, kind: str, *, may_have_seen: bool, permanent: bool = False) -> Failure:
        """No complete answer: the connection failed, timed out or broke.

        Args:
            kind: a short name kept in the history ("dns", "reset", ...).
            may_have_seen: False only when the request certainly never reached the server
                (refused, DNS, connect timeout, TLS handshake).
            permanent: retrying cannot help.

        Returns:
            The failure.
        """
        return cls(None, kind, may_have_seen, permanent, None)


Verdict = Literal["uncertain", "unavailable", "unauthorized", "rejected"]
"""How a call that will not be sent again ended:

- `uncertain`: a mutating call the server may have acted on (reconcile before sending again);
- `unavailable`: the server certainly did not act (nothing reached it, or it refused unprocessed)
  and attempts ran out, or retrying cannot help;
- `unauthorized`: HTTP 401, the token or credentials were refused (the server did not act);
- `rejected`: any other error status, which retrying will not change.
"""


@dataclass(frozen=True)
class Resend:
    """The decision to send the call again after `delay` seconds."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """The decision to stop, and how the call ended."""

    verdict: Verdict


Decision: TypeAlias = Resend | GiveUp


@dataclass(frozen=True)
class RetryPolicy:
    """How one vendor call is retried. A value: built from Config, passed to the client.

    The policy only computes; `HttpClient` sleeps. `decide` is the whole rule for one failed
    attempt, the way urllib3's `Retry.increment` decides whether and when to try again.
    """

    attempts: int = 5  # tries in all, the first included
    backoff_factor: float = 0.5  # seconds; delay = factor * 2 ** (failures - 1)
    backoff_max: float = 60.0  # seconds
    jitter: float = 0.25  # seconds, times a uniform draw in [0, 1)
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    retry_after_max: float = 300.0  # seconds; cap on a server's Retry-After
    idempotent_methods: frozenset[str] = frozenset({"GET", "HEAD"})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be at least 1, not {self.attempts}")
        if min(self.backoff_factor, self.backoff_max, self.jitter, self.retry_after_max) < 0:
            raise ConfigError("retry delays must not be negative")

    def delay(self, failures: int, *, retry_after: float | None = None, draw: float = 0.0) -> float:
        """Seconds to wait after `failures` consecutive failures. Pure: never sleeps.

        Args:
            failures: consecutive failures so far, at least 1.
            retry_after: the server's Retry-After in seconds, if it sent one; it replaces the
                backoff, capped at `retry_after_max`.
            draw: a uniform random number in [0, 1) for jitter (0 in tests).

        Returns:
            The delay in seconds, never negative.
        """
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_max))
        backoff = self.backoff_factor * 2.0 ** min(max(0, failures - 1), 64)  # no float overflow
        return min(self.backoff_max, backoff) + draw * self.jitter

    def may_resend(self, method: str, *, server_may_have_seen: bool, effect_checked: bool) -> bool:
        """At-most-once: resend what the server may have seen only if repeating it is harmless.

        Args:
            method: the HTTP method.
            server_may_have_seen: whether the failed attempt may have reached the server's handler
                (a 5xx, a read timeout or a reset after sending), as opposed to "certainly never
                arrived or was refused unprocessed" (connection refused, DNS, connect timeout, 429).
            effect_checked: whether repeating the call is known to be harmless; `decide`
                passes `not mutating` (a query, or a poll, has no effect to repeat).

        Returns:
            True when sending again cannot do something twice.
        """
        return (
            not server_may_have_seen or method.upper() in self.idempotent_methods or effect_checked
        )

    def decide(
        self, failure: Failure, *, method: str, mutating: bool, attempt: int, draw: float = 0.0
    ) -> Decision:
        """What to do after one failed attempt. Pure: never sleeps, never raises.

        The rules, in order:

        1. 401 gives up as `unauthorized` (a token session may renew and call again).
        2. No answer, or a status in `retry_statuses`: when the server may have seen the
           request and resending it is not harmless (`may_resend`), give up as `uncertain`;
           else when retrying cannot help or this was the last attempt, give up as
           `unavailable`; else resend after `delay(attempt)`, or after the server's
           Retry-After on 413/429/503.
        3. Any other status: a mutating call answered with a non-error status it did not expect
           may have been acted on (`uncertain`); everything else is `rejected`.

        Args:
            failure: the failed attempt.
            method: the HTTP method.
            mutating: whether the call changes vendor state.
            attempt: the number of this attempt, 1 for the first.
            draw: a uniform random number in [0, 1) for jitter (0 in tests).

        Returns:
            `Resend(delay)` or `GiveUp(verdict)`.
        """
        status = failure.status
        if status == 401:
            return GiveUp("unauthorized")
        if status is None or status in self.retry_statuses:
            if failure.may_have_seen and not self.may_resend(
                method, server_may_have_seen=True, effect_checked=not mutating
            ):
                return GiveUp("uncertain")
            if failure.permanent or attempt >= self.attempts:
                return GiveUp("unavailable")
            honoured = failure.retry_after if status in _RETRY_AFTER_STATUSES else None
            return Resend(self.delay(attempt, retry_after=honoured, draw=draw))
        if mutating and status < 400:
            return GiveUp("uncertain")
        return GiveUp("rejected")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a Retry-After header as seconds from `now`.

    Args:
        value: the header value: delay-seconds (`"120"`) or an HTTP-date
            (`"Wed, 21 Oct 2015 07:28:00 GMT"`); None when the header is absent.
        now: the reference time for an HTTP-date (default: the current UTC time). Pass it for a
            pure call.

    Returns:
        Seconds to wait (0 for a date in the past), or None when the value is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; obsolete forms may come without a zone
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=UTC)
    return max(0.0, (when - reference).total_seconds())


# --- rate limiting -----------------------------------------------------------------------------


class RateLimiter:
    """A thread-safe token bucket: on average `rate` calls per second, bursts up to `burst`.

    `acquire()` reserves a token under a lock and sleeps outside it, so waiting threads queue in
    arrival order and never hold the lock while asleep. A rate of 0 or less means unlimited.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Create a full bucket.

        Args:
            rate: tokens added per second; <= 0 disables limiting.
            burst: bucket size, the most calls allowed back to back (at least 1).
            clock: monotonic seconds (injectable for tests).
            sleep: how to wait (injectable for tests).
        """
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    def acquire(self) -> float:
        """Take one token, blocking until it is available.

        Returns:
            Seconds this call waited (0 when a token was ready).
        """
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            # A negative balance is a queue of reservations: each caller waits for its own debt.
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait


# --- redaction ---------------------------------------------------------------------------------

_SECRET_WORDS: Final = (
    r"(?:pass(?:word|wd|phrase)?|secret|token|authorization|api[-_]?key|cookie|credential)"
)
_SECRET_NAME: Final = re.compile(_SECRET_WORDS, re.IGNORECASE)
_REDACT_PATTERNS: Final = (
    # Authorization schemes anywhere: "Bearer eyJ...", "Basic YWRtaW46..."
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    # "key": "value" and 'key': 'value' (JSON, Python reprs) where the key names a secret
    (
        re.compile(
            r"(?i)((?P<q>[\"'])[^\"'\n]*?" + _SECRET_WORDS + r"[^\"'\n]*?(?P=q)\s*:\s*)"
            r"(?P<v>[\"'])(?:(?!(?P=v))[^\\]|\\.)*(?P=v)"
        ),
        r"\1\g<v>***\g<v>",
    ),
    # key=value in forms and query strings
    (re.compile(r"(?i)\b([\w.-]*" + _SECRET_WORDS + r"[\w.-]*=)[^&\s\"']+"), r"\1***"),
    # header lines "X-F5-Auth-Token: abc"
    (re.compile(r"(?im)^([\w-]*" + _SECRET_WORDS + r"[\w-]*\s*:\s*)\S.*$"), r"\1***"),
)
_MIN_SECRET_LEN: Final = 4  # shorter known values would shred ordinary words if scrubbed


class Redactor:
    """Scrubs secrets from text bound for an error message or a log line. Thread-safe.

    It removes every registered secret value (tokens, client secrets, passwords) and, by pattern,
    anything that looks like a credential: `Bearer …`/`Basic …`, JSON or form fields and header
    lines whose name mentions a password, secret, token, authorization, API key or cookie.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Create a redactor.

        Args:
            secrets: values to scrub from the start (more can be added with `add`).
        """
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Register more secret values (e.g. a token just obtained). Empty or tiny ones are ignored.

        Args:
            secrets: the values.
        """
        keep = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN}
        if keep:
            with self._lock:
                self._secrets = self._secrets | keep

    def child(self, *secrets: str) -> Redactor:
        """A new redactor with this one's secrets plus `secrets` (for one call's own values).

        Args:
            secrets: extra values.

        Returns:
            The new redactor; this one is unchanged.
        """
        with self._lock:
            known = self._secrets
        return Redactor((*known, *secrets))

    def __call__(self, text: str) -> str:
        """Return `text` with every known or recognisable secret replaced by `***`.

        Args:
            text: any text.

        Returns:
            The scrubbed text.
        """
        with self._lock:
            known = sorted(self._secrets, key=len, reverse=True)  # longest first: no leftovers
        for secret in known:
            text = text.replace(secret, "***")
        for pattern, replacement in _REDACT_PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Scrub secrets from `text` (see `Redactor`).

    Args:
        text: any text.
        secrets: known secret values to remove as well.

    Returns:
        The scrubbed text.
    """
    return Redactor(secrets)(text)


@functools.lru_cache(maxsize=4096)
def _names_a_secret(name: str) -> bool:
    """Whether a header or field name marks its value as a secret (cached: every call of a batch
    sends the same few names)."""
    return _SECRET_NAME.search(name) is not None


def _secret_values(headers: Mapping[str, str] | None, *bodies: object) -> list[str]:
    """Values in headers and bodies whose names mark them as secrets, so a call can scrub them."""
    found: list[str] = []
    for name, value in (headers or {}).items():
        if _names_a_secret(name) and isinstance(value, str):
            found.append(value)
            # "Bearer abc" also leaks as "abc" (e.g. echoed by a vendor): scrub the bare value.
            found.extend(value.split()[1:])

    def walk(node: object, depth: int) -> None:
        if depth > 8:
            return
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(key, str) and _names_a_secret(key) and isinstance(value, str):
                    found.append(value)
                walk(value, depth + 1)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value, depth + 1)

    for body in bodies:
        walk(body, 0)
    return found


# --- responses and errors ----------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One try of a call, kept as history on the error raised when the call fails."""

    number: int  # 1 for the first try
    status: int | None  # the HTTP status, or None when no answer came
    error: str | None  # transport failure kind ("connect_refused", "read_timeout", ...) or None
    delay: float  # seconds waited after this attempt before the next one (0 for the last)


class HttpFailure(AirgapError):
    """Details shared by the errors `HttpClient` raises; catch it to read `status` and `history`.

    Never raised itself: each concrete error also derives from the `airgap.errors` family that
    gives its code (`NetworkError`, `VendorError` or `AuthError`).
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        method: str = "",
        url: str = "",
        status: int | None = None,
        vendor_message: str | None = None,
        history: Iterable[Attempt] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.url = url  # redacted
        self.status = status
        self.vendor_message = vendor_message  # verbatim, redacted
        self.history: tuple[Attempt, ...] = tuple(history)


class UncertainOutcome(HttpFailure, NetworkError):
    """A mutating call failed after the request may have reached the server (5xx, read timeout,
    reset, or an unexpected non-error status). The server may have acted: reconcile with a vendor
    query before sending it again, and never resend blindly."""


class VendorUnavailable(HttpFailure, NetworkError):
    """The vendor could not be reached, or kept answering with transient errors, until attempts ran
    out. For a mutating call only failures that prove the server did not act (connection refused,
    DNS, connect timeout, 429) are retried, so this error means nothing was done."""


class VendorRejected(HttpFailure, VendorError):
    """The vendor answered with an error status that retrying will not change (most 4xx).
    `vendor_message` holds its message verbatim (redacted)."""


class Unauthorized(HttpFailure, AuthError):
    """HTTP 401: the token or credentials were refused. The server did not act, so a client may
    renew its token and send the call again, even a mutating one; when a 401 is final is
    `airgap.outside.session.TokenSession`'s rule."""


class UnparseableResponse(VendorError):
    """A response body that should be JSON is not."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"unparseable response (HTTP {status})",
            hint="The vendor did not answer with JSON; check the API URL (a proxy or a login "
            "page may be in the way).",
        )
        self.status = status


@dataclass(frozen=True)
class HttpResponse:
    """A complete response, read into memory. Values only: no connection is held."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    text: str
    raw: bytes
    url: str = ""
    elapsed: float = 0.0  # seconds from sending the answered attempt to its response headers

    def json(self) -> Any:
        """Parse the body as JSON. Integers stay exact however large (Cisco's 18-digit poll_id).

        Returns:
            The parsed value.

        Raises:
            UnparseableResponse: (E_VENDOR) the body is not JSON.
        """
        try:
            return _json.loads(self.raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnparseableResponse(self.status) from exc

    @classmethod
    def from_requests(cls, response: requests.Response) -> HttpResponse:
        """Copy a `requests` response into a value and release its connection.

        Args:
            response: a non-streamed response.

        Returns:
            The value.
        """
        raw = response.content or b""
        # Decode ourselves: requests' `.text` guesses with charset_normalizer when no charset is
        # declared, which is slow on large bodies and can guess wrong. Vendors send UTF-8.
        encoding = response.encoding or "utf-8"
        try:
            text = raw.decode(encoding, errors="replace")
        except LookupError:
            text = raw.decode("utf-8", errors="replace")
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(response.headers)
        response.close()
        return cls(
            status=response.status_code,
            headers=headers,
            text=text,
            raw=raw,
            url=response.url,
            elapsed=response.elapsed.total_seconds() if response.elapsed else 0.0,
        )

    @classmethod
    def from_urllib3(
        cls, response: urllib3.BaseHTTPResponse, url: str, elapsed: float
    ) -> HttpResponse:
        """Copy a preloaded urllib3 response into a value, decoded as `from_requests` decodes.

        Args:
            response: a response read whole (`preload_content=True`).
            url: the URL asked for (the answer's own after a redirect).
            elapsed: seconds from sending to the whole answer.

        Returns:
            The value.
        """
        raw = response.data or b""
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(response.headers)
        encoding = requests.utils.get_encoding_from_headers(headers) or "utf-8"
        try:
            text = raw.decode(encoding, errors="replace")
        except LookupError:
            text = raw.decode("utf-8", errors="replace")
        return cls(
            status=response.status,
            headers=headers,
            text=text,
            raw=raw,
            url=response.url or url,
            elapsed=elapsed,
        )


def vendor_message(response: HttpResponse) -> str:
    """The vendor's own error message from a response, verbatim.

    Looks for `message`, `error_description`, `errorMessage` or `status_message` in a JSON body
    (top level first, then nested objects such as Cisco's `data` or an `error` object), else the
    first 200 characters of the text.

    Args:
        response: an error response.

    Returns:
        The message (not redacted), or "(empty body)".
    """
    try:
        parsed = _json.loads(response.raw) if response.raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if parsed is not None:
        found = _find_message(parsed)
        if found:
            return found
    text = response.text.strip()
    return text[:_VENDOR_MESSAGE_MAX] if text else "(empty body)"


def _find_message(node: object) -> str | None:
    """Breadth-first search for the first vendor message field, shallow levels first."""
    level: list[object] = [node]
    for _depth in range(4):
        below: list[object] = []
        for item in level:
            if isinstance(item, Mapping):
                for key in _VENDOR_MESSAGE_KEYS:
                    value = item.get(key)
                    if isinstance(value, str) and value.strip():
                        return value
                below.extend(v for v in item.values() if isinstance(v, Mapping | list))
            elif isinstance(item, list):
                below.extend(v for v in item if isinstance(v, Mapping | list))
        level = below
    return None


# --- transport failure classification ----------------------------------------------------------


def _classify(exc: Exception) -> Failure:
    """Split transport failures as urllib3 does (`_is_connection_error` vs `_is_read_error`).

    Only failures in the connect phase prove the request never left: the TCP/TLS connection did
    not exist, so no byte of the request was written. Everything after is "may have been seen".
    """
    if not isinstance(exc, requests.RequestException):
        return _classify_direct(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        # The handshake fails before the request is written, but retrying will not fix a
        # certificate the client refuses.
        return Failure.transport("tls", may_have_seen=False, permanent=True)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Failure.transport("connect_timeout", may_have_seen=False)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Failure.transport("read_timeout", may_have_seen=True)
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return Failure.transport("redirect_loop", may_have_seen=True, permanent=True)
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason: object = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        # NameResolutionError < NewConnectionError < ConnectTimeoutError in urllib3 2.x.
        if isinstance(reason, urllib3.exceptions.NameResolutionError):
            return Failure.transport("dns", may_have_seen=False)
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return Failure.transport("connect_refused", may_have_seen=False)
        if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
            return Failure.transport("connect_timeout", may_have_seen=False)
        # "Connection aborted.", RemoteDisconnected, ConnectionResetError: the request (or part
        # of it) was written. A stale keep-alive connection also lands here; reporting that as
        # uncertain is safe (the caller reconciles), resending it would not be.
        return Failure.transport("reset", may_have_seen=True)
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        return Failure.transport("broken_response", may_have_seen=True)
    return Failure.transport(type(exc).__name__, may_have_seen=True)


def _classify_direct(exc: Exception) -> Failure:
    """`_classify` for what urllib3 raises itself (`HttpClient._attempt_direct`), with the same
    names and the same rule: only a failure to connect proves the request never left."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        if isinstance(exc.reason, urllib3.exceptions.ResponseError):
            return Failure.transport("redirect_loop", may_have_seen=True, permanent=True)
        if isinstance(exc.reason, Exception):
            exc = exc.reason
    if isinstance(exc, urllib3.exceptions.SSLError):
        return Failure.transport("tls", may_have_seen=False, permanent=True)
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return Failure.transport("dns", may_have_seen=False)
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return Failure.transport("connect_refused", may_have_seen=False)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return Failure.transport("connect_timeout", may_have_seen=False)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return Failure.transport("read_timeout", may_have_seen=True)
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return Failure.transport("broken_response", may_have_seen=True)
    # ProtocolError ("Connection aborted.", RemoteDisconnected, a reset, a short body) and any
    # other OSError after connecting: the request may have been written.
    return Failure.transport("reset", may_have_seen=True)


# Redirects of a call that does not mutate are followed as requests follows them (at most 30);
# every other failure is raised at once, as with `retries=False`.
_FOLLOW_REDIRECTS: Final = urllib3.Retry(
    total=None,
    connect=0,
    read=0,
    status=0,
    other=0,
    redirect=30,
    raise_on_redirect=True,
    raise_on_status=False,
    respect_retry_after_header=False,
)
_DIRECT_HEADERS: Final = {
    "User-Agent": "airgap-outside",
    "Accept-Encoding": "gzip, deflate",
    "Accept": "*/*",
    "Connection": "keep-alive",
}


def _pool_settings(verify: bool | str) -> tuple[tuple[str, str], ...]:
    """urllib3 pool settings for requests' `verify` (True: certifi's bundle, as requests)."""
    if verify is False:
        return (("cert_reqs", "CERT_NONE"),)
    where = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    key = "ca_cert_dir" if os.path.isdir(where) else "ca_certs"
    return (("cert_reqs", "CERT_REQUIRED"), (key, where))


_CONFIG_EXCEPTIONS: Final = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidHeader,
)


# --- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsSettings:
    """How a client checks a vendor's certificate. The one place that decides it.

    `verify` is what requests understands: True (the default trust store, or the bundle that
    `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE` names), False (no verification) or the path of a CA
    bundle (PEM).

    `HttpClient` passes it with every request and never sets it on a session. As requests
    lets a per-request `verify` of False or a path win over `REQUESTS_CA_BUNDLE`
    (`Session.merge_environment_settings` replaces it only when it is True or None), a
    configured CA bundle is used whatever the environment says; with `trust_env` (below) the
    client reads the environment as requests would, once per origin: proxies (`HTTPS_PROXY`,
    `NO_PROXY`) keep working, and with verification left at True an operator's
    `REQUESTS_CA_BUNDLE` is honoured.
    See: <https://github.com/psf/requests/issues/3829>
    """

    verify: bool | str = True

    trust_env: ClassVar[bool] = True
    """Sessions read proxies and, for `verify=True`, the CA bundle from the environment."""

    @classmethod
    def from_config(cls, config: Config, section: str) -> TlsSettings:
        """Read `<section>.verify_tls` and `<section>.ca_bundle` (e.g. `bigiq.ca_bundle`).

        `verify_tls = false` turns verification off and wins over a CA bundle; otherwise a CA
        bundle, when set, is the only trust anchor (`~` is expanded).

        Args:
            config: the home's merged configuration.
            section: the vendor's config section, `cisco` or `bigiq`.

        Returns:
            The settings (the bundle is checked when a client is made, not here).
        """
        if config.get(f"{section}.verify_tls") is False:
            return cls(False)
        ca_bundle = config.get(f"{section}.ca_bundle")
        if ca_bundle:
            return cls(str(Path(str(ca_bundle)).expanduser()))
        return cls(True)

    def check(self) -> None:
        """Refuse a CA bundle path that does not exist, before anything is sent.

        Raises:
            ConfigError: (E_CONFIG) the CA bundle does not exist.
        """
        if isinstance(self.verify, str) and not os.path.exists(self.verify):
            raise ConfigError(
                f"CA bundle {self.verify} does not exist",
                hint="Point the ca_bundle setting at a PEM file, or remove it.",
            )


# --- the client --------------------------------------------------------------------------------


class HttpClient:
    """A small HTTP client for vendor APIs with retries, a rate limit and at-most-once rules.

    Each attempt takes a token from the rate limiter, is sent, and if its answer is not in
    `expected` the failure goes to `RetryPolicy.decide`: resend after a delay, or give up as
    uncertain (`UncertainOutcome`), unavailable (`VendorUnavailable`), unauthorized
    (`Unauthorized`) or rejected (`VendorRejected`). The failure of the last attempt is chained
    to the error, and every attempt is kept in its `history`. Safe to share between the threads
    of a pool.

    Threading: requests does not promise that a `Session` is thread-safe (its cookie jar and
    adapter state are shared mutable objects; psf/requests#2766), so by default each thread
    gets its own session through `threading.local`, with a small connection pool of its own:
    at most one call per thread is in flight, so the pools together hold `concurrency`
    connections and keep-alive still works. An injected `session` is shared by all threads
    instead; that is the caller's choice (tests, or a session with special adapters).

    Without an injected session, an origin that no proxy and no `~/.netrc` login applies to
    is called through urllib3 directly (a pool manager per thread, as small as the sessions'
    pools): the same headers, body encoding, TLS settings, timeouts, redirect rule and failure
    classification, without the session's per-call work, which costs more CPU than the call
    itself against a fast vendor. Proxied or netrc origins go through the requests session.
    """

    def __init__(
        self,
        base_url: str,
        *,
        retry: RetryPolicy,
        limiter: RateLimiter | None,
        timeout: float = 30,
        tls: TlsSettings = TlsSettings(),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """Create a client; no connection is made yet.

        Args:
            base_url: prefix for relative paths, e.g. `https://swapi.cisco.com/services/api/...`.
            retry: the retry policy.
            limiter: the vendor's rate limiter (shared by every client of that vendor), or None.
            timeout: seconds for the connect and for each read.
            tls: how the server's certificate is checked.
            session: a session to share between threads instead of one per thread.
            sleep: how to wait between attempts (injectable for tests).
            rng: uniform [0, 1) draws for jitter (injectable for tests).

        Raises:
            ConfigError: (E_CONFIG) the base URL is not http(s) or the CA bundle does not exist.
        """
        if not re.match(r"(?i)^https?://[^/\s]+", base_url):
            raise ConfigError(
                f"API URL {redact(base_url)!r} is not an http:// or https:// URL",
                hint="Fix the URL with `airgap config set` or its AIRGAP_* environment override.",
            )
        tls.check()
        self.base_url = base_url
        self.retry = retry
        self.limiter = limiter
        self.timeout = timeout
        self.tls = tls
        self.redactor = Redactor()
        """Register tokens and credentials here (`client.redactor.add(token)`) to scrub them."""
        self._shared = session
        self._sleep = sleep
        self._rng = rng
        self._local = threading.local()
        self._lock = threading.Lock()
        self._own_sessions: list[requests.Session] = []
        self._own_pools: list[urllib3.PoolManager] = []
        self._environments: dict[tuple[str, str], Mapping[str, Any]] = {}

    # session handling

    def _session(self) -> requests.Session:
        if self._shared is not None:
            return self._shared
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # The environment is read once per origin (`_environment`) rather than by requests
            # on every call, where it costs more CPU than the rest of the call.
            session.trust_env = False
            # max_retries=0: urllib3 must not retry behind our back, or a "read error" resend
            # of a POST could slip past the at-most-once rules above.
            adapter = HTTPAdapter(pool_connections=2, pool_maxsize=2, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = "airgap-outside"
            with self._lock:
                self._own_sessions.append(session)
            self._local.session = session
        return session

    def _environment(self, url: str) -> Mapping[str, Any]:
        """What requests' `trust_env` would take from the environment for `url`, read once for
        its origin: the proxies (`HTTPS_PROXY`, `NO_PROXY`, ...), the CA bundle that replaces
        `verify=True` (`REQUESTS_CA_BUNDLE`, then `CURL_CA_BUNDLE`) and `~/.netrc` credentials.
        `TlsSettings.trust_env` false reads none of them.
        """
        parts = urlsplit(url)
        origin = (parts.scheme.lower(), parts.netloc.lower())
        found = self._environments.get(origin)
        if found is None:
            verify = self.tls.verify
            settings: dict[str, Any] = {"verify": verify, "proxies": {}, "auth": None}
            if TlsSettings.trust_env:
                if verify is True and origin[0] == "https":
                    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get(
                        "CURL_CA_BUNDLE"
                    )
                    settings["verify"] = bundle or True
                settings["proxies"] = requests.utils.get_environ_proxies(url)
                settings["auth"] = requests.utils.get_netrc_auth(url)
            # No proxy and no netrc login: the call goes straight to urllib3 (`_attempt_direct`)
            # with these pool settings; otherwise through the requests session, which knows them.
            proxy = requests.utils.select_proxy(url, settings["proxies"])
            direct = proxy is None and settings["auth"] is None
            settings["direct"] = _pool_settings(settings["verify"]) if direct else None
            found = self._environments[origin] = settings  # a race only reads it twice
        return found

    def _pools(self, settings: tuple[tuple[str, str], ...]) -> urllib3.PoolManager:
        """This thread's urllib3 pools for TLS `settings` (one call in flight per thread, as
        with the sessions: the pools of all threads hold `concurrency` connections)."""
        pools: dict[tuple[tuple[str, str], ...], urllib3.PoolManager] | None = getattr(
            self._local, "pools", None
        )
        if pools is None:
            pools = self._local.pools = {}
        manager = pools.get(settings)
        if manager is None:
            # retries=False: urllib3 must not retry behind our back (see `_session`).
            tls: dict[str, Any] = dict(settings)
            manager = urllib3.PoolManager(num_pools=4, maxsize=2, block=False, retries=False, **tls)
            pools[settings] = manager
            with self._lock:
                self._own_pools.append(manager)
        return manager

    def _attempt_direct(
        self,
        call: _Call,
        url: str,
        settings: tuple[tuple[str, str], ...],
        *,
        headers: Mapping[str, str] | None,
        json: JsonBody,
        data: Mapping[str, str] | str | bytes | None,
        allow_redirects: bool,
    ) -> tuple[HttpResponse | None, Exception | None]:
        """Send once with urllib3, as the requests session would have: the same headers, body
        encoding, TLS checks, timeouts and redirect rule (none for a mutation), without the
        session's per-call work (settings merges, hooks, cookies), which cost more CPU than the
        call itself at zero latency. Cookies are not kept between calls: no vendor API here
        sets one."""
        sent = dict(_DIRECT_HEADERS)
        body: bytes | str | None = None
        if json is not None and not data:
            try:
                body = _json.dumps(json, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise AirgapError(f"{call.method} {call.shown}: request body is not JSON") from exc
            sent["Content-Type"] = "application/json"
        elif isinstance(data, Mapping):
            body = urlencode(list(data.items()))
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif data:
            body = data
        if headers:
            sent.update(headers)
        started = time.perf_counter()
        try:
            raw = self._pools(settings).urlopen(
                call.method,
                url,
                body=body,
                headers=sent,
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
                retries=_FOLLOW_REDIRECTS if allow_redirects else False,
                redirect=allow_redirects,
                preload_content=True,
            )
        except (urllib3.exceptions.LocationValueError, urllib3.exceptions.InvalidHeader) as exc:
            raise ConfigError(
                f"{call.method} {call.shown}: {call.scrub(str(exc))}",
                hint="Check the vendor URL setting.",
            ) from exc
        except ValueError as exc:  # http.client refuses a header value with a line break
            raise ConfigError(f"{call.method} {call.shown}: {call.scrub(str(exc))}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return None, exc
        return HttpResponse.from_urllib3(raw, url, time.perf_counter() - started), None

    def close(self) -> None:
        """Close the sessions this client created (an injected session is left to its owner)."""
        with self._lock:
            sessions, self._own_sessions = self._own_sessions, []
            pools, self._own_pools = self._own_pools, []
        for session in sessions:
            session.close()
        for pool in pools:
            pool.clear()
        self._local = threading.local()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def url_for(self, path_or_url: str) -> str:
        """Resolve a path against the base URL; an absolute http(s) URL is used as it is.

        Args:
            path_or_url: `v2/devices/authrequest`, `/mgmt/...` or `https://host/...`.

        Returns:
            The absolute URL.
        """
        if re.match(r"(?i)^https?://", path_or_url):
            return path_or_url
        return self.base_url.rstrip("/") + "/" + path_or_url.lstrip("/")

    # the call

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: JsonBody = None,
        data: Mapping[str, str] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Callable[[], Mapping[str, str]] | None = None,
        mutating: bool,
        expected: Collection[int] = (200, 201, 202),
    ) -> HttpResponse:
        """Send one logical call, retrying as the policy and the at-most-once rules allow.

        Args:
            method: HTTP method.
            path_or_url: path relative to the base URL, or an absolute URL.
            json: a JSON body.
            data: a form (mapping) or raw body.
            headers: extra headers for this call; values of secret-named headers and body
                fields are scrubbed from every message.
            auth: credential headers, asked for anew before every attempt: retries after 429s
                and backoff can outlast a short-lived token, so each attempt carries the
                client's current one (clients register tokens with `redactor`).
            mutating: True when the call changes vendor state (reserve, assign, return, revoke):
                it is then never resent once the server may have seen it, and redirects are not
                followed (requests would replay a redirected POST as a GET).
            expected: statuses that count as success.

        Returns:
            The response, whose status is in `expected`.

        Raises:
            UncertainOutcome: (E_NETWORK) a mutating call may have been processed; reconcile.
            VendorUnavailable: (E_NETWORK) unreachable or transient errors until attempts ran out.
            Unauthorized: (E_AUTH) HTTP 401.
            VendorRejected: (E_VENDOR) another error status.
            ConfigError: (E_CONFIG) the URL, a header or the TLS settings are unusable.
        """
        method = method.upper()
        url = self.url_for(path_or_url)
        secrets = set(_secret_values(headers, json, data))
        call = _Call(method, url, self.redactor, secrets, [])
        send = {"json": json, "data": data, "allow_redirects": not mutating}
        number = 0
        while True:
            number += 1
            if self.limiter is not None:
                self.limiter.acquire()
            sent = {**(headers or {}), **(auth() if auth is not None else {})}
            call.secrets.update(_secret_values(sent))
            answer, cause = self._attempt(call, url, number, headers=sent or None, **send)
            if answer is not None and answer.status in expected:
                return answer
            if answer is not None:
                retry_after = parse_retry_after(answer.headers.get("Retry-After"))
                failure = Failure.answer(answer.status, retry_after=retry_after)
            else:
                assert cause is not None  # no answer means a transport failure
                failure = _classify(cause)
            decision = self.retry.decide(
                failure, method=method, mutating=mutating, attempt=number, draw=self._rng()
            )
            delay = decision.delay if isinstance(decision, Resend) else 0.0
            call.history.append(Attempt(number, failure.status, failure.kind, delay))
            if isinstance(decision, GiveUp):
                raise call.error(decision.verdict, failure, answer, cause) from cause
            self._sleep(delay)

    def _attempt(
        self, call: _Call, url: str, number: int, **kwargs: Any
    ) -> tuple[HttpResponse | None, Exception | None]:
        """Send once: the answer, or the transport failure; unusable settings raise at once."""
        started = time.monotonic()
        answer: HttpResponse | None = None
        cause: Exception | None = None
        environment: Mapping[str, Any] = {"verify": self.tls.verify}
        if self._shared is None:
            environment = self._environment(url)
            if environment is not None and environment["direct"] is not None:
                answer, cause = self._attempt_direct(call, url, environment["direct"], **kwargs)
                outcome = f"HTTP {answer.status}" if answer else type(cause).__name__
                if _log.isEnabledFor(logging.DEBUG):
                    elapsed = time.monotonic() - started
                    _log.debug(
                        "%s %s attempt %d: %s (%.3fs)",
                        *(call.method, call.shown, number, outcome, elapsed),
                    )
                return answer, cause
        try:
            session = self._session()
            raw = session.request(
                call.method,
                url,
                timeout=(self.timeout, self.timeout),
                verify=environment["verify"],
                proxies=environment.get("proxies"),
                auth=environment.get("auth"),
                **kwargs,
            )
        except _CONFIG_EXCEPTIONS as exc:
            raise ConfigError(
                f"{call.method} {call.shown}: {call.scrub(str(exc))}",
                hint="Check the vendor URL setting.",
            ) from exc
        except requests.exceptions.InvalidJSONError as exc:
            raise AirgapError(f"{call.method} {call.shown}: request body is not JSON") from exc
        except requests.RequestException as exc:
            outcome, cause = type(exc).__name__, exc
        except OSError as exc:
            # requests raises a bare OSError before connecting when the CA bundle or a
            # client certificate cannot be loaded (HTTPAdapter.cert_verify).
            raise ConfigError(
                f"{call.method} {call.shown}: TLS settings unusable: {call.scrub(str(exc))}",
                hint="Check the verify_tls / ca_bundle settings.",
            ) from exc
        else:
            answer, cause = HttpResponse.from_requests(raw), None
            outcome = f"HTTP {answer.status}"
        if _log.isEnabledFor(logging.DEBUG):
            elapsed = time.monotonic() - started
            _log.debug(
                "%s %s attempt %d: %s (%.3fs)", call.method, call.shown, number, outcome, elapsed
            )
        return answer, cause


@dataclass
class _Call:
    """One logical call as its error messages name it, with its attempts so far."""

    method: str
    url: str  # as sent; only ever shown redacted (`shown`)
    redactor: Redactor  # the client's, which learns tokens obtained during the call
    secrets: set[str]  # this call's own: secret-named headers and body fields
    history: list[Attempt]

    @functools.cached_property
    def shown(self) -> str:
        """The URL, redacted: made only for a message or a log line, not for every call."""
        return self.scrub(self.url)

    def scrub(self, text: str) -> str:
        """`text` without any secret known now (a token renewed mid-call included)."""
        return self.redactor.child(*self.secrets)(text)

    def error(
        self,
        verdict: Verdict,
        failure: Failure,
        answer: HttpResponse | None,
        cause: BaseException | None,
    ) -> HttpFailure:
        """The one error a call ends with: which class, message and hint follow from `verdict`.

        Args:
            verdict: how the retry policy ended the call.
            failure: the last attempt's failure.
            answer: the last attempt's response, None when no answer came.
            cause: the transport exception of the last attempt (the caller chains it).

        Returns:
            The error, carrying status, vendor message and history.
        """
        where = f"{self.method} {self.shown}"
        details: dict[str, Any] = {"method": self.method, "url": self.shown}
        if answer is not None:
            message = self.scrub(vendor_message(answer))
            details.update(status=answer.status, vendor_message=message)
            what = f"HTTP {answer.status}: {message}"
        else:
            what = f"{failure.kind}: {self.scrub(str(cause))}"
        details["history"] = tuple(self.history)
        if verdict == "uncertain":
            if answer is None:
                what = f"no complete answer after the request was sent ({what})"
            elif answer.status < 400:
                what = f"unexpected {what}"
            return UncertainOutcome(
                f"{where}: {what}; the vendor may have acted on the request",
                hint="Reconcile with a vendor query before sending it again.",
                **details,
            )
        if verdict == "unavailable":
            count = len(self.history)
            hint = "The vendor is busy or failing; try again later."
            return VendorUnavailable(
                f"{where}: {what} (after {count} attempt{'s' if count > 1 else ''})",
                hint=_transport_hint(failure.kind) if failure.kind is not None else hint,
                **details,
            )
        if verdict == "unauthorized":
            return Unauthorized(
                f"{where}: {what}",
                hint="The vendor refused the credentials or token; check the AIRGAP_* "
                "credential environment variables.",
                **details,
            )
        return VendorRejected(f"{where}: {what}", **details)


def _transport_hint(kind: str) -> str:
    if kind == "tls":
        return "TLS verification failed; check verify_tls / ca_bundle and the server certificate."
    if kind == "dns":
        return "The host name did not resolve; check the URL and DNS."
    return "Check the network connection and the vendor URL, then try again."
