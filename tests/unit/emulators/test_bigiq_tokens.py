"""BIG-IQ emulator tokens: login rules, expiry at the lifetime, refresh exchange and logout."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airgap.emulators.bigiq.records import ApiError
from airgap.emulators.bigiq.tokens import TokenAuthority, render_token

WALL0 = 1_700_000_000.0  # seconds; the wall time the fake clock's zero stands for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, *, password: str | None = "s3cret") -> TokenAuthority:
    return TokenAuthority(
        access_ttl=300,
        refresh_ttl=36000,
        password=password,
        clock=clock,
        micros=lambda now: int((WALL0 + now) * 1_000_000),
    )


def refused(call: Callable[..., object], *args: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value


def test_access_token_works_until_its_lifetime_then_is_expired() -> None:
    clock = FakeClock()
    auth = make(clock)
    access, refresh = auth.issue("admin", "tmos")
    assert (access.kind, refresh.kind) == ("access", "refresh")
    assert (access.expires, refresh.expires) == (300, 36000)

    clock.now = 299.999
    assert auth.authenticate(access.token, "/x") is access
    clock.now = 300.0  # expiry is inclusive
    error = refused(auth.authenticate, access.token, "/x")
    assert (error.status, error.message) == (401, "invalid registered claims")
    assert auth.stats["expired"] == 1
    assert access.token in auth.tokens  # expired tokens are refused, not forgotten


def test_refresh_token_is_redeemable_until_its_own_lifetime() -> None:
    clock = FakeClock()
    auth = make(clock)
    _, refresh = auth.issue("admin", "tmos")

    clock.now = 35999.0
    assert auth.redeem(refresh.token) is refresh
    assert auth.redeem(refresh.token) is refresh  # not used up: it lives until it expires
    clock.now = 36000.0
    error = refused(auth.redeem, refresh.token)
    assert (error.status, error.message) == (401, "invalid registered claims")
    assert (auth.stats["refreshes"], auth.stats["refresh_failures"]) == (2, 1)


def test_a_token_of_the_wrong_kind_or_unknown_is_refused() -> None:
    clock = FakeClock()
    auth = make(clock)
    access, refresh = auth.issue("admin", "tmos")

    assert refused(auth.authenticate, refresh.token, "/x").message == (
        "X-F5-Auth-Token does not exist."
    )
    assert refused(auth.authenticate, "unknown", "/x").status == 401
    assert refused(auth.redeem, access.token).message == "Refresh token does not exist."
    assert refused(auth.redeem, None).status == 401
    assert refused(auth.redeem, {"token": refresh.token}).status == 401
    assert (auth.stats["unauthorized"], auth.stats["refresh_failures"]) == (2, 3)


def test_a_call_without_token_names_the_uri() -> None:
    auth = make(FakeClock())
    error = refused(auth.authenticate, "", "/mgmt/cm/device/licensing/assignments")
    assert error.status == 401
    assert error.message.endswith("Uri:/mgmt/cm/device/licensing/assignments")
    assert auth.stats["unauthorized"] == 1


def test_logout_deletes_one_token_and_a_second_logout_is_404() -> None:
    auth = make(FakeClock())
    access, refresh = auth.issue("admin", "tmos")

    assert auth.logout(access.token) is access
    assert list(auth.tokens) == [refresh.token]
    assert refused(auth.authenticate, access.token, "/x").status == 401
    error = refused(auth.logout, access.token)
    assert (error.status, error.message) == (
        404,
        f"Object not found - /mgmt/shared/authz/tokens/{access.token}",
    )
    assert auth.stats["logouts"] == 1


def test_find_returns_expired_tokens_too() -> None:
    clock = FakeClock()
    auth = make(clock)
    access, _ = auth.issue("admin", "tmos")
    clock.now = 1e6
    assert auth.find(access.token) is access
    assert refused(auth.find, "nope").status == 404


@pytest.mark.parametrize(
    ("username", "password", "provider"),
    [
        ("admin", "wrong", "tmos"),
        ("admin", "", "tmos"),
        ("admin", None, "tmos"),
        ("", "s3cret", "tmos"),
        (None, "s3cret", "tmos"),
        ("admin", "s3cret", ""),
        ("admin", "s3cret", 7),
    ],
)
def test_login_refuses_a_wrong_password_or_a_missing_user_or_provider(
    username: object, password: object, provider: object
) -> None:
    auth = make(FakeClock())
    error = refused(auth.login, username, password, provider)
    assert (error.status, error.message) == (401, "Authentication failed.")
    assert (auth.stats["login_failures"], auth.stats["logins"]) == (1, 0)


def test_login_takes_any_user_and_any_named_provider() -> None:
    auth = make(FakeClock())
    auth.login("root", "s3cret", "tmos")
    auth.login("netops", "s3cret", "corp-radius")
    assert (auth.stats["logins"], auth.stats["login_failures"]) == (2, 0)


def test_login_without_configured_password_takes_any_non_empty_one() -> None:
    auth = make(FakeClock(), password=None)
    auth.login("admin", "anything", "local")
    auth.login("admin", "else", "tmos")
    assert refused(auth.login, "admin", "", "local").status == 401
    assert (auth.stats["logins"], auth.stats["login_failures"]) == (2, 1)


def test_tokens_are_distinct_jwts_and_render_their_lifetime() -> None:
    auth = make(FakeClock())
    first, second = auth.issue("admin", "tmos"), auth.issue("admin", "tmos")
    raw = {token.token for token in (*first, *second)}
    assert len(raw) == 4 and all(text.count(".") == 2 for text in raw)

    body = render_token(first[0])
    assert body["timeout"] == 300
    assert body["startTime"] == "2023-11-14T22:13:20.000+0000"
    assert body["expirationMicros"] == int((WALL0 + 300) * 1_000_000)
    assert body["selfLink"] == f"https://localhost/mgmt/shared/authz/tokens/{first[0].token}"
