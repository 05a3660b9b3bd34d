"""A vendor API session: one token for every thread, renewed once for all, and its calls.

`TokenSession` owns what every token-based vendor client needs: the current token, shared by
the threads of a pool and replaced under a lock (N threads meeting a due token obtain one new
token between them), the calls that carry it, the resend after a 401, the vendor's meaning of a
403, redaction of every token and secret, `finish()` and a `repr` without secrets.

A subclass says only how to obtain a token (`_obtain`), which headers carry it (`_headers`),
what a 403 means (`_forbidden`) and, where the vendor has them, what to do with a replaced token
(`_retired`) and how to log out (`_logout`). Items, bodies and polling stay in the clients.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final

from airgap.errors import AirgapError
from airgap.outside.http import HttpClient, HttpResponse, JsonBody, Unauthorized, VendorRejected

__all__ = ["Token", "TokenSession", "resend_after_401"]

_log = logging.getLogger(__name__)

MAX_RENEWALS: Final = 3  # resends after a 401 in one call, each with a newer token


@dataclass(frozen=True)
class Token:
    """A token as the vendor issued it; replaced whole, so readers need no lock."""

    value: str = field(repr=False)
    renew_at: float  # session clock seconds; the token is replaced before use once this passed
    generation: int  # 1 for the first token of the session, +1 for each later one
    refresh: str | None = field(default=None, repr=False)  # BIG-IQ's refresh token, if any


def resend_after_401(*, fresh: bool, renewals: int, limit: int = MAX_RENEWALS) -> bool:
    """Whether a call answered 401 is sent again with a newer token (see `TokenSession`).

    Args:
        fresh: the token that drew the 401 was obtained while that very attempt asked for it.
        renewals: how often this call was already sent again after a 401.
        limit: the most resends after a 401 one call may make.

    Returns:
        True to renew (unless another thread has) and send again; False when the 401 is final.
    """
    return not fresh and renewals < limit


class _Carried:
    """Gives one call's attempts their token headers and remembers what the last one carried."""

    def __init__(self, session: TokenSession, stale: int | None) -> None:
        self.session = session
        self.stale = stale  # the generation a 401 refused, to be replaced before use
        self.generation = 0
        self.fresh = False

    def __call__(self) -> Mapping[str, str]:
        before = self.session.generation
        token = self.session.token(stale=self.stale)
        self.generation, self.fresh = token.generation, token.generation > before
        return self.session._headers(token)


class TokenSession(ABC):
    """Calls to one vendor API with a shared, self-renewing token. Thread-safe.

    Renewal. A token is replaced before use once `renew_at` has passed: its lifetime less a
    margin (`margin_share` of the lifetime, at most `margin_max` seconds), counted from when
    the answered token request was sent. Replacement runs under a lock and is skipped when
    another thread replaced the token meanwhile, so N threads meeting a due token obtain one
    new token between them. Every token, refresh token and credential is registered with the
    HTTP client's redactor before it can reach a message or a log line.

    The 401 rule. A vendor checks the token before it acts, so a 401 proves it did not act and
    even a mutating call may be sent again. The call is sent again, with the refused generation
    replaced first (by whichever thread gets there first), unless the 401 cannot be explained
    by an expired or forgotten token:

    * the token that drew it was obtained while that very attempt asked for it (its generation
      is newer than the latest one when the attempt asked): the vendor refuses a token it has
      just issued, and renewing again cannot help; or
    * the call was already sent again `max_renewals` times after a 401, each time with a newer
      generation than the one refused.

    "Resend once" is not enough: the resend may wait out 429s (honouring Retry-After), and a
    short-lived token renewed for it can lapse before the resend goes out; the attempt then
    carries an older token than the vendor accepts, and a second 401 must not stop the run.
    Each resend after a 401 is a whole new call to `HttpClient.request`, with its own attempts.
    For the same reason nothing slow runs between obtaining a token and sending with it: a
    replaced token is handed to `_retired` only after the call that replaced it was sent.
    """

    name: ClassVar[str] = "vendor"  # for log lines
    margin_max: ClassVar[float] = 60.0  # seconds before expiry at most that a token is renewed
    margin_share: ClassVar[float] = 0.1  # ... or this share of its lifetime, if smaller
    max_renewals: ClassVar[int] = MAX_RENEWALS

    def __init__(
        self,
        http: HttpClient,
        *,
        secrets: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a session; nothing is sent before the first call.

        Args:
            http: the HTTP client every call goes through (its redactor learns the secrets).
            secrets: credentials to scrub from every message (passwords, client secrets).
            clock: monotonic seconds, for token expiry (tests pass a fake one).
        """
        self.http = http
        http.redactor.add(*secrets)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Token | None = None
        self._generation = 0  # never reset, so a stale generation is never confused with a new one
        self._replaced: list[tuple[Token, Token]] = []  # (old, new) waiting for `_retired`

    def __repr__(self) -> str:
        shown = self.http.redactor(self.http.base_url)
        return f"{type(self).__name__}(url={shown!r}, generation={self._generation})"

    @property
    def generation(self) -> int:
        """The generation of the latest token obtained (0 before the first)."""
        return self._generation

    # --- what a vendor supplies -------------------------------------------------------------

    @abstractmethod
    def _obtain(self, current: Token | None, generation: int) -> Token:
        """Get a new token from the vendor; the caller holds the lock, so one runs at a time.

        Build the result with `_issued`, which registers the secrets and sets `renew_at`.

        Args:
            current: the token being replaced (None for the first).
            generation: the generation the new token gets.

        Raises:
            AuthError, NetworkError, ConfigError, VendorError: no token could be had.
        """

    @abstractmethod
    def _headers(self, token: Token) -> dict[str, str]:
        """The headers that carry `token` on a call."""

    @abstractmethod
    def _forbidden(self, exc: VendorRejected, method: str, path: str) -> AirgapError:
        """The error a 403 becomes for this vendor (no item can succeed, so the run stops)."""

    def _retired(self, old: Token, new: Token) -> None:
        """Called after `new` replaced `old` (e.g. to drop a rotated credential).

        It runs after the call that replaced the token was sent, never between obtaining a
        token and sending with it: a slow clean-up (waiting out 429s) must not let a
        short-lived token lapse before its first use.
        """
        return None

    def _logout(self, token: Token) -> None:
        """End the vendor session of `token` (best effort; may raise, `finish` catches it)."""
        return None

    def _release(self) -> None:
        """Release what the subclass holds besides the HTTP client (e.g. an injected session)."""
        return None

    # --- tokens --------------------------------------------------------------------------------

    def _issued(
        self,
        value: str,
        *,
        lifetime: float,
        answer: HttpResponse,
        generation: int,
        refresh: str | None = None,
    ) -> Token:
        """A token the vendor just issued in `answer`, registered with the redactor.

        Args:
            value: the token.
            lifetime: seconds it lives, as the vendor says.
            answer: the response that carried it; the vendor issued it after the answered
                attempt was sent, so its lifetime is counted from then (earlier attempts,
                e.g. refused with 429, do not shorten it).
            generation: as `_obtain` was given.
            refresh: a refresh token that came with it.

        Returns:
            The token, due for renewal a margin before it expires.
        """
        self.http.redactor.add(value, *([refresh] if refresh else []))
        sent = self._clock() - answer.elapsed
        margin = min(self.margin_max, lifetime * self.margin_share)
        return Token(value, sent + lifetime - margin, generation, refresh)

    def token(self, *, stale: int | None = None) -> Token:
        """The current token; obtained first when there is none, it is due, or it is `stale`.

        Args:
            stale: a generation the vendor refused with 401; a newer token is used instead
                (another thread's, if it already replaced it).

        Returns:
            A token to send.

        Raises:
            AuthError, NetworkError, ConfigError, VendorError: as `_obtain`.
        """
        current = self._token
        if self._usable(current, stale):
            assert current is not None
            return current
        with self._lock:
            current = self._token
            if self._usable(current, stale):
                assert current is not None
                return current  # another thread replaced it while this one waited
            self._generation += 1
            fresh = self._obtain(current, self._generation)
            self._token = fresh
            if current is not None:
                self._replaced.append((current, fresh))
        _log.debug("%s: token generation %d", self.name, fresh.generation)
        return fresh

    def _retire_replaced(self) -> None:
        with self._lock:
            replaced, self._replaced = self._replaced, []
        for old, new in replaced:
            self._retired(old, new)

    def _usable(self, token: Token | None, stale: int | None) -> bool:
        return token is not None and token.generation != stale and self._clock() < token.renew_at

    # --- calls ---------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        json: JsonBody = None,
        body: Callable[[], JsonBody] | None = None,
        headers: Mapping[str, str] | None = None,
        mutating: bool,
        expected: Collection[int] = (200, 201, 202),
    ) -> HttpResponse:
        """One authenticated call, sent again after a 401 as the class docstring says.

        Args:
            method: HTTP method.
            path: path relative to the base URL, or an absolute URL.
            json: a JSON body, the same for every send.
            body: makes the JSON body anew for each send (e.g. a fresh nonce); wins over `json`.
            headers: extra headers.
            mutating: whether the call changes vendor state (see `HttpClient.request`).
            expected: statuses that count as success.

        Returns:
            The response, whose status is in `expected`.

        Raises:
            Unauthorized: (E_AUTH) a 401 the rule above makes final.
            AirgapError: a 403, as `_forbidden` maps it.
            UncertainOutcome, VendorUnavailable, VendorRejected, ConfigError: as
                `HttpClient.request`; and what obtaining a token raises.
        """
        try:
            return self._call(method, path, json, body, headers, mutating, expected)
        finally:
            if self._replaced:
                self._retire_replaced()

    def _call(
        self,
        method: str,
        path: str,
        json: JsonBody,
        body: Callable[[], JsonBody] | None,
        headers: Mapping[str, str] | None,
        mutating: bool,
        expected: Collection[int],
    ) -> HttpResponse:
        carried = _Carried(self, None)
        renewals = 0
        while True:
            try:
                return self.http.request(
                    method,
                    path,
                    json=body() if body is not None else json,
                    headers=headers,
                    auth=carried,
                    mutating=mutating,
                    expected=expected,
                )
            except Unauthorized:
                if not resend_after_401(
                    fresh=carried.fresh, renewals=renewals, limit=self.max_renewals
                ):
                    raise
                _log.debug(
                    "%s: %s %s answered 401 to token generation %d; renewing",
                    self.name,
                    method,
                    path.split("?", 1)[0],
                    carried.generation,
                )
                carried = _Carried(self, carried.generation)
                renewals += 1
            except VendorRejected as exc:
                if exc.status == 403:
                    raise self._forbidden(exc, method, path.split("?", 1)[0]) from exc
                raise

    # --- the end -------------------------------------------------------------------------------

    def logout(self) -> None:
        """Drop the token and end its vendor session. May raise (see `finish`)."""
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            self._logout(token)

    def finish(self) -> None:
        """Log out and close connections; never raises."""
        for step in (self._retire_replaced, self.logout, self._release, self.http.close):
            try:
                step()
            except Exception as exc:  # finish() must never raise (VendorClient contract)
                _log.debug("%s: finishing failed: %s", self.name, self.http.redactor(str(exc)))
