"""The BIG-IQ session: login, token exchange and logout on top of `TokenSession`.

One login (`X-F5-Auth-Token`) serves every thread. Access tokens live five minutes; the token
is exchanged for a new one through `/mgmt/shared/authn/exchange` with the refresh token (ten
hours) a quarter of its lifetime (at most 30 s) before it expires and after a 401; a refused
refresh token leads to a fresh login. A rotated refresh token is deleted once replaced, and
`finish()` deletes both tokens (logout). The password and every token are registered with the
HTTP client's redactor and never reach a message or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airgap.errors import AirgapError, AuthError, VendorError
from airgap.outside.bigiq._common import _object
from airgap.outside.http import HttpClient, HttpResponse, Unauthorized, VendorRejected
from airgap.outside.session import Token, TokenSession

if TYPE_CHECKING:
    from airgap.outside.bigiq.settings import BigIqSettings

_log = logging.getLogger(__name__)

_LOGIN: Final = "/mgmt/shared/authn/login"
_EXCHANGE: Final = "/mgmt/shared/authn/exchange"
_TOKENS: Final = "/mgmt/shared/authz/tokens"
_DEFAULT_TOKEN_TTL: Final = 300.0  # seconds; BIG-IQ's access-token lifetime
_RENEW_MARGIN_MAX: Final = 30.0  # seconds before expiry at most that a token is renewed


class BigIqSession(TokenSession):
    """Calls to BIG-IQ as one logged-in user (see the module docstring). Thread-safe."""

    name: ClassVar[str] = "BIG-IQ"
    margin_max: ClassVar[float] = _RENEW_MARGIN_MAX
    margin_share: ClassVar[float] = 0.25

    def __init__(
        self,
        settings: BigIqSettings,
        http: HttpClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create the session; nothing is sent before the first call.

        Args:
            settings: the user, password and login provider.
            http: the HTTP client for BIG-IQ's URL.
            clock: monotonic seconds, for token expiry (tests pass a fake one).
        """
        super().__init__(http, secrets=(settings.password,), clock=clock)
        self.settings = settings

    # --- TokenSession -------------------------------------------------------------------------

    def _obtain(self, current: Token | None, generation: int) -> Token:
        if current is not None and current.refresh:
            try:
                return self._exchange(current, generation)
            except (Unauthorized, VendorRejected) as exc:
                _log.info("BIG-IQ refused the refresh token (%s); logging in again", exc.code)
        return self._login(generation)

    def _headers(self, token: Token) -> dict[str, str]:
        return {"X-F5-Auth-Token": token.value}

    def _forbidden(self, exc: VendorRejected, method: str, path: str) -> AirgapError:
        # The user lacks a role: no item can succeed, so stop the run (AuthError).
        return AuthError(
            f"BIG-IQ refused {method} {path} (HTTP 403): {exc.vendor_message}",
            hint="The BIG-IQ user needs a License Manager role (e.g. Administrator).",
        )

    def _retired(self, old: Token, new: Token) -> None:
        if old.refresh and new.refresh != old.refresh:
            # A rotated refresh token is used by nobody else, so drop it now rather than leave
            # a 10-hour credential behind.
            self._delete_token(old.refresh, new.value)

    def _logout(self, token: Token) -> None:
        # The refresh token first, while the access token still authorizes the call.
        if token.refresh:
            self._delete_token(token.refresh, token.value)
        self._delete_token(token.value, token.value)
        _log.debug("BIG-IQ logout (session %d)", token.generation)

    # --- reading ------------------------------------------------------------------------------

    def get(self, path: str) -> dict[str, Any]:
        """GET a resource as a JSON object.

        Args:
            path: the path, with its query.

        Returns:
            The object.

        Raises:
            VendorRejected: (E_VENDOR) an error status (404 included).
            VendorError: (E_VENDOR) the body is not a JSON object.
            NetworkError, AuthError: as `TokenSession.call`.
        """
        return _object(self.call("GET", path, mutating=False, expected=(200,)), what=path)

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        """`get`, or None when BIG-IQ answers 404.

        Args:
            path: the path, with its query.

        Returns:
            The object, or None.

        Raises:
            VendorRejected, VendorError, NetworkError, AuthError: as `get`, but not for a 404.
        """
        try:
            return self.get(path)
        except VendorRejected as exc:
            if exc.status == 404:
                return None
            raise

    # --- tokens -------------------------------------------------------------------------------

    def _login(self, generation: int) -> Token:
        settings = self.settings
        body = {
            "username": settings.username,
            "password": settings.password,
            "loginProviderName": settings.login_provider,
        }
        try:
            # Not mutating: a resent login only issues another token.
            response = self.http.request("POST", _LOGIN, json=body, mutating=False, expected=(200,))
        except Unauthorized as exc:
            raise AuthError(
                f"BIG-IQ refused the login of user {settings.username!r} "
                f"(provider {settings.login_provider!r}): {exc.vendor_message}",
                hint="Check AIRGAP_BIGIQ_USERNAME, AIRGAP_BIGIQ_PASSWORD and bigiq.login_provider.",
            ) from exc
        token = self._read_token(response, generation, None)
        _log.debug("BIG-IQ login as %s (session %d)", settings.username, generation)
        return token

    def _exchange(self, current: Token, generation: int) -> Token:
        response = self.http.request(
            "POST",
            _EXCHANGE,
            json={"refreshToken": {"token": current.refresh}},
            mutating=False,
            expected=(200,),
        )
        token = self._read_token(response, generation, current.refresh)
        _log.debug("BIG-IQ token refreshed (session %d)", generation)
        return token

    def _read_token(self, response: HttpResponse, generation: int, old: str | None) -> Token:
        body = _object(response, what="login answer")
        token = body.get("token")
        access = token.get("token") if isinstance(token, Mapping) else None
        if not isinstance(access, str) or not access:
            raise VendorError("BIG-IQ's login answer has no token.token")
        assert isinstance(token, Mapping)  # access was read from it
        refresh_node = body.get("refreshToken")
        refresh = refresh_node.get("token") if isinstance(refresh_node, Mapping) else refresh_node
        if not isinstance(refresh, str) or not refresh:
            refresh = old
        return self._issued(
            access,
            lifetime=_token_ttl(token),
            answer=response,
            generation=generation,
            refresh=refresh,
        )

    def _delete_token(self, token: str, auth: str) -> None:
        try:
            self.http.request(
                "DELETE",
                f"{_TOKENS}/{token}",
                headers={"X-F5-Auth-Token": auth},
                mutating=False,
                expected=(200, 204),
            )
        except AirgapError as exc:
            # Best effort: the token lapses on its own; the message is already redacted.
            _log.debug("BIG-IQ token deletion failed: %s", exc.code)


def _token_ttl(token: Mapping[str, Any]) -> float:
    timeout = token.get("timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    expiration, start = token.get("expirationMicros"), token.get("lastUpdateMicros")
    if isinstance(expiration, int) and isinstance(start, int) and expiration > start:
        return (expiration - start) / 1_000_000
    return _DEFAULT_TOKEN_TTL
