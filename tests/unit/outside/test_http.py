"""Unit tests of airgap.outside.http: the pure retry maths, Retry-After, the limiter, redaction
and the at-most-once classification of transport failures (with a stub session, no sockets)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import urllib3.exceptions

from airgap.errors import AirgapError, AuthError, ConfigError, NetworkError, VendorError
from airgap.outside.http import (
    Failure,
    GiveUp,
    HttpClient,
    HttpFailure,
    HttpResponse,
    RateLimiter,
    Redactor,
    Resend,
    RetryPolicy,
    TlsSettings,
    Unauthorized,
    UncertainOutcome,
    UnparseableResponse,
    VendorRejected,
    VendorUnavailable,
    parse_retry_after,
    redact,
    vendor_message,
)

# --- RetryPolicy ------------------------------------------------------------------------------


def test_default_policy_retries_the_transient_statuses() -> None:
    policy = RetryPolicy()
    assert {429, 500, 502, 503, 504} <= policy.retry_statuses
    assert policy.idempotent_methods == frozenset({"GET", "HEAD"})


def test_delay_doubles_from_the_backoff_factor() -> None:
    policy = RetryPolicy(backoff_factor=0.5, backoff_max=60, jitter=0.25)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_delay_is_capped_by_backoff_max_then_jittered() -> None:
    policy = RetryPolicy(backoff_factor=1, backoff_max=10, jitter=0.4)
    assert policy.delay(10) == 10
    assert policy.delay(10, draw=0.5) == pytest.approx(10.2)
    assert policy.delay(1, draw=0.5) == pytest.approx(1.2)
    assert policy.delay(100_000) == 10  # no float overflow for absurd counts


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    policy = RetryPolicy(retry_after_max=30)
    assert policy.delay(1, retry_after=7) == 7
    assert policy.delay(4, retry_after=7, draw=0.9) == 7  # no jitter on the server's word
    assert policy.delay(1, retry_after=3600) == 30
    assert policy.delay(1, retry_after=-5) == 0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(backoff_factor=-1)


def test_policy_is_an_immutable_reusable_value() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.attempts = 9  # type: ignore[misc]
    assert hash(policy) == hash(RetryPolicy())


@pytest.mark.parametrize(
    ("method", "seen", "checked", "allowed"),
    [
        ("POST", False, False, True),  # never reached the server
        ("POST", True, False, False),  # may have been processed: never resend a mutation
        ("POST", True, True, True),  # the caller says repeating is harmless (a poll)
        ("GET", True, False, True),  # idempotent by HTTP
        ("get", True, False, True),
    ],
)
def test_may_resend_is_the_at_most_once_rule(
    method: str, seen: bool, checked: bool, allowed: bool
) -> None:
    assert (
        RetryPolicy().may_resend(method, server_may_have_seen=seen, effect_checked=checked)
        is allowed
    )


# --- RetryPolicy.decide: the whole decision table, without sockets -----------------------------

POLICY = RetryPolicy(attempts=3, backoff_factor=0.5, backoff_max=60, jitter=0.25)
NOT_SEEN = ("connect_refused", "dns", "connect_timeout")  # the request never left
SEEN = ("read_timeout", "reset", "broken_response")  # the server may have begun processing


def decide(failure: Failure, method: str = "POST", *, mutating: bool, attempt: int = 1) -> Any:
    return POLICY.decide(failure, method=method, mutating=mutating, attempt=attempt)


@pytest.mark.parametrize(
    ("failure", "method", "mutating", "attempt", "expected"),
    [
        # 429: refused unprocessed, so even a mutation is resent; Retry-After wins, capped
        (Failure.answer(429), "POST", True, 1, Resend(0.5)),
        (Failure.answer(429, retry_after=7), "POST", True, 2, Resend(7.0)),
        (Failure.answer(429, retry_after=9999), "POST", True, 1, Resend(300.0)),
        (Failure.answer(429), "POST", True, 3, GiveUp("unavailable")),
        # 5xx: the server may have acted; only what is harmless to repeat is resent
        (Failure.answer(500), "POST", True, 1, GiveUp("uncertain")),
        (Failure.answer(503, retry_after=1), "POST", True, 1, GiveUp("uncertain")),
        (Failure.answer(502), "POST", False, 1, Resend(0.5)),
        (Failure.answer(503, retry_after=4), "GET", False, 2, Resend(4.0)),
        (Failure.answer(500, retry_after=4), "GET", False, 2, Resend(1.0)),  # no Retry-After
        (Failure.answer(504), "GET", False, 3, GiveUp("unavailable")),
        (Failure.answer(504), "GET", True, 1, Resend(0.5)),  # GET is idempotent by HTTP
        # 401 ends the call at once; a token session decides whether to renew
        (Failure.answer(401), "POST", True, 1, GiveUp("unauthorized")),
        (Failure.answer(401), "GET", False, 3, GiveUp("unauthorized")),
        # other statuses
        (Failure.answer(400), "POST", True, 1, GiveUp("rejected")),
        (Failure.answer(403), "GET", False, 1, GiveUp("rejected")),
        (Failure.answer(404), "POST", False, 1, GiveUp("rejected")),
        (Failure.answer(413, retry_after=5), "POST", False, 1, GiveUp("rejected")),
        (Failure.answer(204), "POST", True, 1, GiveUp("uncertain")),
        (Failure.answer(302), "POST", True, 1, GiveUp("uncertain")),
        (Failure.answer(204), "GET", False, 1, GiveUp("rejected")),
        # no answer
        (Failure.transport("connect_refused", may_have_seen=False), "POST", True, 1, Resend(0.5)),
        (Failure.transport("dns", may_have_seen=False), "POST", True, 2, Resend(1.0)),
        (
            Failure.transport("connect_timeout", may_have_seen=False),
            "POST",
            True,
            3,
            GiveUp("unavailable"),
        ),
        (
            Failure.transport("read_timeout", may_have_seen=True),
            "POST",
            True,
            1,
            GiveUp("uncertain"),
        ),
        (Failure.transport("reset", may_have_seen=True), "POST", False, 1, Resend(0.5)),
        (Failure.transport("reset", may_have_seen=True), "GET", False, 3, GiveUp("unavailable")),
        (
            Failure.transport("tls", may_have_seen=False, permanent=True),
            "POST",
            True,
            1,
            GiveUp("unavailable"),
        ),
        (
            Failure.transport("redirect_loop", may_have_seen=True, permanent=True),
            "GET",
            False,
            1,
            GiveUp("unavailable"),
        ),
    ],
)
def test_decide_follows_the_table(
    failure: Failure, method: str, mutating: bool, attempt: int, expected: Any
) -> None:
    assert decide(failure, method, mutating=mutating, attempt=attempt) == expected


def _expected_verdict(failure: Failure, method: str, mutating: bool, last: bool) -> str:
    """The rule written as its cases, independent of RetryPolicy's code."""
    status = failure.status
    if status == 401:
        return "unauthorized"
    transient = status is None or status in (429, 500, 502, 503, 504)
    if not transient:
        return "uncertain" if mutating and status is not None and status < 400 else "rejected"
    harmless = not mutating or method == "GET"
    if failure.may_have_seen and not harmless:
        return "uncertain"
    return "unavailable" if last or failure.permanent else "resend"


def _every_failure() -> list[Failure]:
    answers = [Failure.answer(status, retry_after=2.0) for status in range(100, 600)]
    transports = [Failure.transport(kind, may_have_seen=False) for kind in NOT_SEEN]
    transports += [Failure.transport(kind, may_have_seen=True) for kind in SEEN]
    transports += [Failure.transport("tls", may_have_seen=False, permanent=True)]
    return answers + transports


def test_decide_over_every_status_and_transport_failure() -> None:
    checked = 0
    for failure in _every_failure():
        for method in ("GET", "POST", "PATCH"):
            for mutating in (False, True):
                for attempt in (1, 2, 3):
                    got = decide(failure, method, mutating=mutating, attempt=attempt)
                    want = _expected_verdict(failure, method, mutating, last=attempt == 3)
                    verdict = "resend" if isinstance(got, Resend) else got.verdict
                    assert verdict == want, (failure, method, mutating, attempt)
                    checked += 1
    assert checked == len(_every_failure()) * 18


def test_decide_never_resends_a_mutation_the_server_may_have_seen() -> None:
    for failure in _every_failure():
        for attempt in (1, 2):
            got = decide(failure, "POST", mutating=True, attempt=attempt)
            if failure.may_have_seen:
                assert not isinstance(got, Resend), failure
            else:
                assert isinstance(got, Resend) or failure.permanent, failure


def test_decide_waits_retry_after_only_where_it_is_honoured() -> None:
    for status in (429, 503):
        assert decide(Failure.answer(status, retry_after=3), "GET", mutating=False) == Resend(3.0)
    for status in (500, 502, 504):
        assert decide(Failure.answer(status, retry_after=3), "GET", mutating=False) == Resend(0.5)


def test_decide_adds_jitter_to_backoff_but_not_to_retry_after() -> None:
    refused = Failure.transport("connect_refused", may_have_seen=False)
    assert POLICY.decide(refused, method="POST", mutating=True, attempt=2, draw=0.5) == Resend(
        1.125
    )
    busy = Failure.answer(429, retry_after=2)
    assert POLICY.decide(busy, method="POST", mutating=True, attempt=1, draw=0.9) == Resend(2.0)


def test_a_429_is_refused_unprocessed_and_a_5xx_may_have_been_seen() -> None:
    assert Failure.answer(429).may_have_seen is False
    assert all(Failure.answer(status).may_have_seen for status in (500, 502, 503, 504, 400))


# --- Retry-After -------------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 30.0),
        ("Monday, 23-Nov-26 12:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Mon, 23 Nov 2026 11:00:00 GMT", 0.0),  # in the past: go now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


# --- RateLimiter -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_limiter_spaces_calls_by_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(3)]
    assert waits == [0.0, 0.5, 1.0]
    assert clock.slept == [0.5, 1.0]


def test_limiter_refills_over_time_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=3, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    clock.now = 100.0  # a long pause refills only up to the burst
    assert [limiter.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_limiter_with_zero_rate_is_unlimited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(100)] == [0.0] * 100
    assert clock.slept == []


def test_limiter_hands_each_thread_its_own_slot() -> None:
    clock = FakeClock()  # frozen: every wait comes from the queue of reservations
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            wait = limiter.acquire()
            with lock:
                waits.append(round(wait, 6))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == [round(n / 10, 6) for n in range(40)]


# --- redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def"),
        ("header was Basic YWRtaW46c2VjcmV0", "YWRtaW46c2VjcmV0"),
        ('{"access_token":"tok-123456","token_type":"Bearer"}', "tok-123456"),
        ("{'X-F5-Auth-Token': 'F5TOKEN9'}", "F5TOKEN9"),
        ('{"refreshToken": {"token": "RT-abcdef"}}', "RT-abcdef"),
        ('{"username":"admin","password":"hunter22"}', "hunter22"),
        ("grant_type=client_credentials&client_id=me&client_secret=S3CRET", "S3CRET"),
        ("https://h/x?api_key=KEY123&x=1", "KEY123"),
        ("X-F5-Auth-Token: F5TOKEN9", "F5TOKEN9"),
    ],
)
def test_redact_scrubs_recognisable_credentials(text: str, leak: str) -> None:
    scrubbed = redact(text)
    assert leak not in scrubbed
    assert "***" in scrubbed


def test_redactor_scrubs_registered_values_anywhere() -> None:
    redactor = Redactor(["plain-secret-value"])
    redactor.add("second-one", "", "abc")  # empty and tiny values are ignored
    text = redactor("echo: plain-secret-value / second-one / abc")
    assert text == "echo: *** / *** / abc"


def test_redactor_child_does_not_change_its_parent() -> None:
    parent = Redactor(["parent-secret"])
    child = parent.child("child-secret")
    assert child("parent-secret child-secret") == "*** ***"
    assert parent("child-secret") == "child-secret"


def test_redact_leaves_ordinary_vendor_messages_alone() -> None:
    message = "License pool 'demo-utility' not found"
    assert redact(message) == message
    assert redact('{"status":"FAILED","status_message":"Duplicate report"}') == (
        '{"status":"FAILED","status_message":"Duplicate report"}'
    )


# --- responses ---------------------------------------------------------------------------------


def response(status: int, body: bytes | str, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body.encode() if isinstance(body, str) else body
    return HttpResponse(status, headers or {}, raw.decode("utf-8", "replace"), raw)


def test_json_keeps_big_integers_exact() -> None:
    parsed = response(202, b'{"status":"OK_POLL","poll_id":773126444402795033}').json()
    assert parsed["poll_id"] == 773126444402795033


def test_json_of_garbage_names_the_status() -> None:
    with pytest.raises(UnparseableResponse) as info:
        response(502, "<html>Bad Gateway</html>").json()
    assert info.value.code == "E_VENDOR"
    assert isinstance(info.value, VendorError)
    assert "unparseable response (HTTP 502)" in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"code":404,"message":"License pool \'x\' not found"}', "License pool 'x' not found"),
        ('{"error":"invalid_client","error_description":"Bad creds"}', "Bad creds"),
        ('{"status":"FAILED","errorMessage":"MAC already licensed"}', "MAC already licensed"),
        ('{"data":{"status":"FAILED","status_message":"Duplicate report"}}', "Duplicate report"),
        ('{"error":{"message":"nested"}}', "nested"),
        ("plain text failure", "plain text failure"),
        ("x" * 500, "x" * 200),
        ("", "(empty body)"),
        ('{"no":"message here"}', '{"no":"message here"}'),
    ],
)
def test_vendor_message_is_pulled_verbatim(body: str, message: str) -> None:
    assert vendor_message(response(400, body)) == message


# --- HttpClient with a stub session ------------------------------------------------------------

Step = requests.Response | BaseException


def fake(status: int, body: str = "{}", headers: dict[str, str] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body.encode()
    resp.headers.update(headers or {"Content-Type": "application/json"})
    resp.url = "https://vendor.example/x"
    resp.encoding = "utf-8"
    return resp


class StubSession(requests.Session):
    """A session that plays a script of responses and exceptions and records every call."""

    def __init__(self, *steps: Step) -> None:
        super().__init__()
        self.steps = list(steps)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.calls.append({"method": method, "url": url, **kwargs})
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def make_client(
    session: requests.Session, *, attempts: int = 3, limiter: RateLimiter | None = None
) -> tuple[HttpClient, list[float]]:
    slept: list[float] = []
    client = HttpClient(
        "https://vendor.example/api/",
        retry=RetryPolicy(attempts=attempts, backoff_factor=0.5, jitter=0.25),
        limiter=limiter,
        session=session,
        sleep=slept.append,
        rng=lambda: 0.0,
    )
    return client, slept


def refused() -> requests.exceptions.ConnectionError:
    reason = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/x", reason))  # type: ignore[arg-type]


def dns_failure() -> requests.exceptions.ConnectionError:
    reason = urllib3.exceptions.NameResolutionError(
        "vendor.example",
        None,  # type: ignore[arg-type]
        socket.gaierror(-2, "Name or service not known"),
    )
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/x", reason))  # type: ignore[arg-type]


def aborted() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    )


@pytest.mark.parametrize(
    "before_send",
    [
        lambda: requests.exceptions.ConnectTimeout("connect timed out"),
        refused,
        dns_failure,
    ],
    ids=["connect-timeout", "refused", "dns"],
)
def test_mutating_call_is_resent_when_the_request_never_left(
    before_send: Callable[[], BaseException],
) -> None:
    session = StubSession(before_send(), fake(202, '{"poll_id":1}'))
    client, slept = make_client(session)
    got = client.request("POST", "v2/devices/authrequest", json={"a": 1}, mutating=True)
    assert got.status == 202
    assert len(session.calls) == 2
    assert slept == [0.5]


@pytest.mark.parametrize(
    "after_send",
    [
        lambda: requests.exceptions.ReadTimeout("read timed out"),
        aborted,
        lambda: requests.exceptions.ChunkedEncodingError("broken"),
    ],
    ids=["read-timeout", "reset", "chunked"],
)
def test_mutating_call_is_not_resent_once_the_server_may_have_seen_it(
    after_send: Callable[[], BaseException],
) -> None:
    session = StubSession(after_send(), fake(202))
    client, slept = make_client(session)
    with pytest.raises(UncertainOutcome) as info:
        client.request("POST", "v2/devices/authrequest", json={}, mutating=True)
    assert len(session.calls) == 1
    assert slept == []
    err = info.value
    assert err.code == "E_NETWORK"
    assert isinstance(err.__cause__, requests.RequestException)
    assert not isinstance(err, requests.RequestException)
    assert len(err.history) == 1 and err.history[0].status is None


def test_non_mutating_call_is_resent_after_a_read_timeout() -> None:
    session = StubSession(requests.exceptions.ReadTimeout("slow"), aborted(), fake(200))
    client, slept = make_client(session)
    assert client.request("POST", "v2/accounts/poll", json={}, mutating=False).status == 200
    assert slept == [0.5, 1.0]


def test_exhausted_attempts_raise_one_network_error_with_history() -> None:
    session = StubSession(refused(), refused(), refused())
    client, _slept = make_client(session, attempts=3)
    with pytest.raises(VendorUnavailable) as info:
        client.request("POST", "x", json={}, mutating=True)
    err = info.value
    assert isinstance(err, NetworkError) and err.code == "E_NETWORK"
    assert [(a.number, a.error, a.delay) for a in err.history] == [
        (1, "connect_refused", 0.5),
        (2, "connect_refused", 1.0),
        (3, "connect_refused", 0.0),
    ]
    assert isinstance(err.__cause__, requests.exceptions.ConnectionError)
    assert "after 3 attempts" in err.message


def test_tls_failure_is_not_retried() -> None:
    session = StubSession(requests.exceptions.SSLError("certificate verify failed"))
    client, _ = make_client(session)
    with pytest.raises(VendorUnavailable) as info:
        client.request("GET", "x", mutating=False)
    assert len(session.calls) == 1
    assert "verify_tls" in (info.value.hint or "")


def test_bad_url_is_a_config_error() -> None:
    session = StubSession(requests.exceptions.InvalidURL("bad"))
    client, _ = make_client(session)
    with pytest.raises(ConfigError):
        client.request("GET", "x", mutating=False)


def test_unloadable_ca_bundle_is_a_config_error() -> None:
    session = StubSession(OSError("Could not find a suitable TLS CA certificate bundle"))
    client, _ = make_client(session)
    with pytest.raises(ConfigError):
        client.request("POST", "x", mutating=True)


def test_constructor_checks_the_base_url_and_ca_bundle(tmp_path: Any) -> None:
    with pytest.raises(ConfigError):
        HttpClient("ftp://x", retry=RetryPolicy(), limiter=None)
    with pytest.raises(ConfigError):
        HttpClient(
            "https://x",
            retry=RetryPolicy(),
            limiter=None,
            tls=TlsSettings(str(tmp_path / "no.pem")),
        )


def test_url_for_joins_paths_and_keeps_absolute_urls() -> None:
    client, _ = make_client(StubSession())
    assert client.url_for("v2/x") == "https://vendor.example/api/v2/x"
    assert client.url_for("/mgmt/y") == "https://vendor.example/api/mgmt/y"
    assert client.url_for("https://other/z") == "https://other/z"


def test_unexpected_success_status_on_a_mutation_is_uncertain() -> None:
    client, _ = make_client(StubSession(fake(204, "")))
    with pytest.raises(UncertainOutcome):
        client.request("POST", "x", mutating=True)
    client, _ = make_client(StubSession(fake(204, "")))
    with pytest.raises(VendorRejected) as info:
        client.request("GET", "x", mutating=False)
    assert info.value.status == 204


def test_mutating_calls_do_not_follow_redirects() -> None:
    session = StubSession(fake(200), fake(200))
    client, _ = make_client(session)
    client.request("POST", "x", mutating=True)
    client.request("GET", "x", mutating=False)
    assert [c["allow_redirects"] for c in session.calls] == [False, True]


def test_every_attempt_takes_a_limiter_token() -> None:
    taken: list[int] = []

    class CountingLimiter(RateLimiter):
        def acquire(self) -> float:
            taken.append(1)
            return 0.0

    session = StubSession(fake(503), fake(429), fake(200))
    client, _ = make_client(session, limiter=CountingLimiter(1))
    client.request("GET", "x", mutating=False)
    assert len(taken) == 3


def test_error_classes_keep_their_families() -> None:
    assert issubclass(UncertainOutcome, NetworkError)
    assert issubclass(VendorUnavailable, NetworkError)
    assert issubclass(VendorRejected, VendorError)
    assert issubclass(Unauthorized, AuthError)
    for cls in (UncertainOutcome, VendorUnavailable, VendorRejected, Unauthorized):
        assert issubclass(cls, HttpFailure) and issubclass(cls, AirgapError)
    assert UncertainOutcome("x").code == "E_NETWORK"
    assert VendorRejected("x").code == "E_VENDOR"
    assert Unauthorized("x").code == "E_AUTH"


def test_secrets_in_headers_bodies_and_urls_never_reach_the_error() -> None:
    token = "eyJraWQiOiJ0b2tlbi12YWx1ZSJ9.payload.sig"
    secret = "cl1ent-s3cret-VALUE"
    echo = f'{{"message":"rejected {token} and {secret} for client"}}'
    session = StubSession(fake(400, echo))
    client, _ = make_client(session)
    with pytest.raises(VendorRejected) as info:
        client.request(
            "POST",
            f"oauth/token?access_token={token}",
            data={"grant_type": "client_credentials", "client_secret": secret},
            headers={"Authorization": f"Bearer {token}"},
            mutating=False,
        )
    err = info.value
    for text in (str(err), err.message, repr(err.vendor_message), err.url, repr(err.args)):
        assert token not in text
        assert secret not in text
    assert "rejected *** and *** for client" in err.message


def test_registered_secrets_are_scrubbed_too() -> None:
    session = StubSession(fake(403, "your password is pw-registered-1"))
    client, _ = make_client(session)
    client.redactor.add("pw-registered-1")
    with pytest.raises(VendorRejected) as info:
        client.request("GET", "x", mutating=False)
    assert "pw-registered-1" not in str(info.value)
