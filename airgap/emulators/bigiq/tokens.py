"""BIG-IQ authentication tokens: login check, issue, expiry, refresh exchange, lookup and logout.

`TokenAuthority` holds the live tokens and the token counters of `/_emulator/stats`. Login
issues an access token (5 minutes on BIG-IQ) and a refresh token (10 hours); an expired access
token is refused with BIG-IQ's `invalid registered claims`; a refresh token buys a new pair and
stays usable itself until it expires; logout deletes one token. Tokens are JWTs, as on BIG-IQ
(hence that message), here HS256-signed with a secret made per emulator; clients must treat them
as opaque.

Leaves out HTTP (`app` reads headers and bodies and writes responses), the lock (callers hold the
emulator's), users other than `admin`, roles and remote login providers. Failures raise
`ApiError` with the status and message BIG-IQ answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from airgap.emulators.bigiq.records import HOST, TOKENS, USER_LINK, ApiError, Token, iso_time

__all__ = ["STAT_KEYS", "TokenAuthority", "render_token"]

# The counters `TokenAuthority.stats` keeps, in the order `/_emulator/stats` lists them.
STAT_KEYS = (
    "logins",
    "login_failures",
    "refreshes",
    "refresh_failures",
    "expired",
    "unauthorized",
    "logouts",
)


class TokenAuthority:
    """Issues, checks, exchanges and revokes the tokens of one emulator. Not thread-safe.

    `tokens` (raw token text to `Token`, both kinds) and `stats` (see `STAT_KEYS`) are plain
    attributes; tests may edit `tokens`, e.g. clear it to act out a BIG-IQ restart.
    """

    def __init__(
        self,
        *,
        access_ttl: float,
        refresh_ttl: float,
        password: str | None,
        clock: Callable[[], float],
        micros: Callable[[float], int],
    ) -> None:
        """Start with no tokens.

        Args:
            access_ttl: seconds an access token lives.
            refresh_ttl: seconds a refresh token lives.
            password: the password user `admin` must give; None accepts any non-empty one.
            clock: monotonic seconds; a token expires once `clock()` reaches its `expires`.
            micros: wall-clock microseconds for a `clock()` reading, for the times tokens show.
        """
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.password = password
        self.clock = clock
        self.micros = micros
        self.tokens: dict[str, Token] = {}
        self.stats: Counter[str] = Counter()
        self._secret = secrets.token_bytes(32)

    def login(self, username: object, password: object, provider: object) -> None:
        """Check the credentials of a login and count it.

        Args:
            username: as sent; any non-empty user (BIG-IQ has users besides `admin`).
            password: as sent; must be a non-empty string, and `password` if one was configured.
            provider: `loginProviderName` as sent; any non-empty name (local, tmos, or a RADIUS,
                LDAP or TACACS+ provider configured under its own name).

        Raises:
            ApiError: 401 `Authentication failed.` for anything else.
        """
        ok = (
            isinstance(username, str)
            and username != ""
            and isinstance(password, str)
            and password != ""
            and (self.password is None or hmac.compare_digest(password, self.password))
            and isinstance(provider, str)
            and provider != ""
        )
        if not ok:
            self.stats["login_failures"] += 1
            raise ApiError(401, "Authentication failed.")
        self.stats["logins"] += 1

    def issue(self, username: str, provider: str) -> tuple[Token, Token]:
        """Make and keep a new access token and refresh token.

        Args:
            username: whom the tokens are for.
            provider: the login provider named in the tokens.

        Returns:
            `(access, refresh)`.
        """
        now = self.clock()
        pair: list[Token] = []
        kinds: tuple[Literal["access", "refresh"], ...] = ("access", "refresh")
        for kind in kinds:
            ttl = self.access_ttl if kind == "access" else self.refresh_ttl
            start = self.micros(now)
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

    def authenticate(self, raw: str, uri: str) -> Token:
        """Check the `X-F5-Auth-Token` of an API call.

        Args:
            raw: the header value, stripped; empty if the header is missing.
            uri: the request path, which BIG-IQ names when no token is given.

        Raises:
            ApiError: 401 if there is no token, it is unknown or a refresh token, or it expired.

        Returns:
            The live access token.
        """
        if not raw:
            self.stats["unauthorized"] += 1
            raise ApiError(
                401,
                f"Authorization failed: no user authentication header or token detected. Uri:{uri}",
            )
        token = self.tokens.get(raw)
        if token is None or token.kind != "access":
            self.stats["unauthorized"] += 1
            raise ApiError(401, "X-F5-Auth-Token does not exist.")
        if self.clock() >= token.expires:
            self.stats["expired"] += 1
            raise ApiError(401, "invalid registered claims")
        return token

    def redeem(self, raw: object) -> Token:
        """Check the refresh token of an exchange and count the refresh.

        The caller issues the new pair. The refresh token redeemed stays valid until it expires.

        Args:
            raw: `refreshToken.token` (or `refreshToken` itself) from the exchange body.

        Raises:
            ApiError: 401 if it is not a live refresh token.

        Returns:
            The refresh token.
        """
        token = self.tokens.get(raw) if isinstance(raw, str) else None
        if token is None or token.kind != "refresh":
            self.stats["refresh_failures"] += 1
            raise ApiError(401, "Refresh token does not exist.")
        if self.clock() >= token.expires:
            self.stats["refresh_failures"] += 1
            raise ApiError(401, "invalid registered claims")
        self.stats["refreshes"] += 1
        return token

    def find(self, raw: str) -> Token:
        """Look a token up by its text, expired or not.

        Args:
            raw: the token text from the URL.

        Raises:
            ApiError: 404 if there is no such token.

        Returns:
            The token.
        """
        token = self.tokens.get(raw)
        if token is None:
            raise ApiError(404, f"Object not found - {TOKENS}/{raw}")
        return token

    def logout(self, raw: str) -> Token:
        """Delete a token (either kind) and count the logout.

        Args:
            raw: the token text from the URL.

        Raises:
            ApiError: 404 if there is no such token.

        Returns:
            The deleted token.
        """
        token = self.tokens.pop(raw, None)
        if token is None:
            raise ApiError(404, f"Object not found - {TOKENS}/{raw}")
        self.stats["logouts"] += 1
        return token

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


def render_token(token: Token) -> dict[str, Any]:
    """Render a token as BIG-IQ's `shared:authz:tokens:authtokenitemstate`.

    Args:
        token: the token.

    Returns:
        The JSON object login, exchange, token lookup and logout answer with.
    """
    return {
        "token": token.token,
        "name": token.token,
        "userName": token.username,
        "authProviderName": token.provider,
        "user": {"link": USER_LINK},
        "groupReferences": [],
        "timeout": int(token.ttl) if float(token.ttl).is_integer() else token.ttl,
        "startTime": iso_time(token.start_micros),
        "address": "127.0.0.1",
        "partition": "[All]",
        "generation": 1,
        "lastUpdateMicros": token.start_micros,
        "expirationMicros": token.expiration_micros,
        "kind": "shared:authz:tokens:authtokenitemstate",
        "selfLink": f"{HOST}{TOKENS}/{token.token}",
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
