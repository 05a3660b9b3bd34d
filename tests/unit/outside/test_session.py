"""TokenSession without sockets: a fake vendor behind a stub `requests.Session` and a fake clock.

The vendor issues tokens at `/token` and answers `/api/...` by script; the clock moves only when
the HTTP client sleeps (backoff, Retry-After), so token expiry is deterministic.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from airgap.errors import AirgapError, AuthError, ConfigError
from airgap.outside.http import (
    HttpClient,
    RetryPolicy,
    Unauthorized,
    UncertainOutcome,
    VendorRejected,
)
from airgap.outside.session import MAX_RENEWALS, Token, TokenSession, resend_after_401

SECRET = "demo-client-secret-value"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body if body is not None else {}).encode()
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    response.url = "https://vendor.example/x"
    response.encoding = "utf-8"
    return response


@dataclass
class Sent:
    path: str
    token: str | None
    body: Any


@dataclass
class FakeVendor(requests.Session):
    """Issues tokens `tok-1`, `tok-2`, … at /token; answers API calls from `script` in order
    (200 once it is empty). Thread-safe; records every request."""

    ttl: float = 100.0
    script: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        super().__init__()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        path = str(url).split("vendor.example", 1)[1]
        token = (kwargs.get("headers") or {}).get("X-Token")
        with self.lock:
            self.sent.append(Sent(path, token, kwargs.get("json")))
            if path == "/token":
                value = f"tok-{next(self.numbers)}-{SECRET[:4]}"
                self.issued.append(value)
                return answer(200, {"token": value, "ttl": self.ttl})
            step = self.script.pop(0) if self.script else 200
        status, headers = step if isinstance(step, tuple) else (step, {})
        echo = {"message": f"refused {token} for {SECRET}"} if status >= 400 else {"ok": True}
        return answer(status, echo, headers)

    def api_tokens(self) -> list[str | None]:
        return [sent.token for sent in self.sent if sent.path != "/token"]


class DemoSession(TokenSession):
    """A minimal vendor: a token from POST /token, carried in `X-Token`."""

    name = "demo"
    margin_max = 10.0
    margin_share = 0.1

    def __init__(self, http: HttpClient, clock: FakeClock) -> None:
        super().__init__(http, secrets=(SECRET,), clock=clock)
        self.logouts: list[str] = []
        self.retired: list[tuple[int, int]] = []
        self.logout_error: Exception | None = None

    def _obtain(self, current: Token | None, generation: int) -> Token:
        response = self.http.request(
            "POST", "/token", json={"secret": SECRET}, mutating=False, expected=(200,)
        )
        body = response.json()
        return self._issued(
            body["token"], lifetime=body["ttl"], answer=response, generation=generation
        )

    def _headers(self, token: Token) -> dict[str, str]:
        return {"X-Token": token.value}

    def _forbidden(self, exc: VendorRejected, method: str, path: str) -> AirgapError:
        return ConfigError(f"demo refused {method} {path}: {exc.vendor_message}")

    def _retired(self, old: Token, new: Token) -> None:
        self.retired.append((old.generation, new.generation))

    def _logout(self, token: Token) -> None:
        if self.logout_error is not None:
            raise self.logout_error
        self.logouts.append(token.value)


def make(vendor: FakeVendor, *, attempts: int = 5) -> tuple[DemoSession, FakeClock]:
    clock = FakeClock()
    http = HttpClient(
        "https://vendor.example/",
        retry=RetryPolicy(attempts=attempts, backoff_factor=0.5, jitter=0.0),
        limiter=None,
        session=vendor,
        sleep=clock.sleep,
        rng=lambda: 0.0,
    )
    return DemoSession(http, clock), clock


# --- the 401 rule, as a table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fresh", "renewals", "resend"),
    [
        (False, 0, True),  # an older token: it may have expired or been forgotten
        (False, MAX_RENEWALS - 1, True),
        (False, MAX_RENEWALS, False),  # bounded: every renewal so far was refused too
        (True, 0, False),  # a token obtained for this very attempt was refused
        (True, 1, False),
    ],
)
def test_resend_after_401_table(fresh: bool, renewals: int, resend: bool) -> None:
    assert resend_after_401(fresh=fresh, renewals=renewals) is resend


# --- renewal -----------------------------------------------------------------------------------


def test_token_is_renewed_a_margin_before_it_expires() -> None:
    vendor = FakeVendor(ttl=50)
    session, clock = make(vendor)
    first = session.token()
    assert first.renew_at == pytest.approx(clock.now + 45)  # 10 % of 50 s
    clock.now += 44.9
    assert session.token() is first
    clock.now += 0.2
    second = session.token()
    assert second.generation == 2 and second.value != first.value


def test_a_replaced_token_is_retired_after_the_call_that_replaced_it_was_sent() -> None:
    # Retiring (e.g. deleting a rotated refresh token) can wait out 429s; done before the send,
    # it let a short-lived token lapse before its first use.
    vendor = FakeVendor(ttl=50)
    session, clock = make(vendor)
    session.token()
    clock.now += 60
    seen_at_retire: list[int] = []
    session._retired = lambda old, new: seen_at_retire.append(len(vendor.api_tokens()))  # type: ignore[method-assign]

    session.call("GET", "/api/things", mutating=False)

    assert seen_at_retire == [1]  # after the call's own request went out
    assert vendor.api_tokens() == [vendor.issued[1]]


def test_lifetime_counts_from_the_answered_attempt_not_the_429s_before_it() -> None:
    # The vendor issues the token when the resend after Retry-After reaches it; counting from
    # before the 429s would make the token due (or already lapsed) the moment it arrives.
    vendor = FakeVendor(ttl=10)
    session, clock = make(vendor)
    original = vendor.request

    def busy_once(method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if str(url).endswith("/token") and len(vendor.sent) == 0:
            vendor.sent.append(Sent("/token", None, None))
            return answer(429, {}, {"Retry-After": "8"})
        return original(method, url, *args, **kwargs)

    vendor.request = busy_once  # type: ignore[method-assign]
    token = session.token()
    assert clock.now == 1008.0
    assert token.renew_at == pytest.approx(1008.0 + 9.0)


def test_many_threads_meeting_a_due_token_obtain_one_between_them() -> None:
    vendor = FakeVendor(ttl=30)
    session, clock = make(vendor)
    session.token()
    clock.now += 60  # due for every thread at once
    barrier = threading.Barrier(8)

    def call(_: int) -> int:
        barrier.wait()
        return session.call("GET", "/api/things", mutating=False).status

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(8))) == [200] * 8
    assert len(vendor.issued) == 2
    assert set(vendor.api_tokens()) == {vendor.issued[1]}


# --- 401 ---------------------------------------------------------------------------------------


def test_401_on_an_older_token_renews_and_resends_even_a_mutation() -> None:
    vendor = FakeVendor(script=[401])
    session, _ = make(vendor)
    session.token()

    response = session.call("POST", "/api/reserve", json={"n": 1}, mutating=True)

    assert response.status == 200
    assert vendor.api_tokens() == [vendor.issued[0], vendor.issued[1]]


def test_renewed_token_refused_after_429_backoff_is_renewed_again() -> None:
    # Regression: with a 1.5 s token and 429 backoffs, the one resend after a 401 could itself
    # be answered 401 (the renewed token lapsed while the resend waited out Retry-After), and
    # the whole run stopped with E_AUTH "invalid registered claims".
    vendor = FakeVendor(ttl=100, script=[401, (429, {"Retry-After": "1"}), 401])
    session, clock = make(vendor)
    session.token()

    response = session.call("POST", "/api/assign", json={}, mutating=True)

    assert response.status == 200
    tok1, tok2, tok3 = vendor.issued
    # 401 on the older token; the renewed one meets a 429, then (after the wait, no longer
    # fresh) a 401; it is renewed once more and the call goes through.
    assert vendor.api_tokens() == [tok1, tok2, tok2, tok3]
    assert clock.now == 1001.0


def test_a_token_obtained_for_the_very_attempt_and_refused_is_final() -> None:
    vendor = FakeVendor(script=[401, 401, 401])
    session, _ = make(vendor)
    session.token()

    with pytest.raises(Unauthorized) as caught:
        session.call("GET", "/api/things", mutating=False)

    assert caught.value.code == "E_AUTH"
    assert len(vendor.issued) == 2  # the first token and one renewal: no more
    assert vendor.script == [401]


def test_the_first_token_refused_is_final_without_a_renewal() -> None:
    vendor = FakeVendor(script=[401])
    session, _ = make(vendor)

    with pytest.raises(AuthError):
        session.call("GET", "/api/things", mutating=False)

    assert len(vendor.issued) == 1


def test_renewals_after_401_are_bounded_each_with_a_newer_generation() -> None:
    # Each resend meets a 429 first, so the token that then draws the 401 is never fresh.
    rounds = [(429, {"Retry-After": "0"}), 401]
    vendor = FakeVendor(script=[401, *rounds * (MAX_RENEWALS + 1)])
    session, _ = make(vendor)
    session.token()

    with pytest.raises(Unauthorized):
        session.call("GET", "/api/things", mutating=False)

    assert len(vendor.issued) == 1 + MAX_RENEWALS
    first, *renewed = vendor.issued
    # Every refused token is of a newer generation than the one refused before it.
    assert vendor.api_tokens() == [first, *[t for token in renewed for t in (token, token)]]


def test_the_body_factory_makes_a_new_body_for_each_send_after_a_401() -> None:
    vendor = FakeVendor(script=[401])
    session, _ = make(vendor)
    session.token()
    counter = itertools.count(1)

    session.call("POST", "/api/poll", body=lambda: {"nonce": next(counter)}, mutating=False)

    assert [s.body for s in vendor.sent if s.path == "/api/poll"] == [{"nonce": 1}, {"nonce": 2}]


def test_a_mutation_the_vendor_may_have_seen_is_not_resent_by_the_session() -> None:
    vendor = FakeVendor(script=[500])
    session, _ = make(vendor)

    with pytest.raises(UncertainOutcome):
        session.call("POST", "/api/reserve", mutating=True)

    assert len(vendor.api_tokens()) == 1


# --- 403, secrets, repr, finish ------------------------------------------------------------------


def test_403_becomes_the_vendors_error() -> None:
    vendor = FakeVendor(script=[403])
    session, _ = make(vendor)

    with pytest.raises(ConfigError) as caught:
        session.call("GET", "/api/things?x=1", mutating=False)

    assert caught.value.message.startswith("demo refused GET /api/things:")
    assert isinstance(caught.value.__cause__, VendorRejected)


def test_tokens_and_secrets_never_reach_errors_logs_or_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    vendor = FakeVendor(script=[401, 401, 400])
    session, _ = make(vendor)
    session.token()
    errors: list[AirgapError] = []
    for _ in range(2):
        try:
            session.call("GET", "/api/things", mutating=False)
        except AirgapError as exc:
            errors.append(exc)

    assert [type(e) for e in errors] == [Unauthorized, VendorRejected]
    text = "\n".join(
        [repr(session), *(f"{e} {e!r} {e.hint}" for e in errors)]
        + [r.getMessage() for r in caplog.records]
    )
    assert "refused *** for ***" in text
    for secret in (SECRET, *vendor.issued):
        assert secret not in text


def test_finish_logs_out_once_and_never_raises() -> None:
    vendor = FakeVendor()
    session, _ = make(vendor)
    token = session.token()

    session.finish()
    session.finish()
    assert session.logouts == [token.value]

    failing, _ = make(FakeVendor())
    failing.token()
    failing.logout_error = RuntimeError(f"logout of {SECRET} failed")
    failing.finish()  # quiet
