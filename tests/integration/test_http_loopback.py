"""HttpClient against a real ThreadingHTTPServer on 127.0.0.1: requests and urllib3 run unchanged,
and the server counts what it received, which is how at-most-once is proven."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import pytest

from airgap.errors import AuthError, NetworkError, VendorError
from airgap.outside.http import (
    HttpClient,
    RateLimiter,
    RetryPolicy,
    Unauthorized,
    UncertainOutcome,
    UnparseableResponse,
    VendorRejected,
    VendorUnavailable,
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `drop`: read the request, then close without answering.
    `stall`: seconds to wait before answering (to trigger the client's read timeout)."""

    status: int = 200
    body: str = "{}"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    stall: float = 0.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Loopback:
    """A scripted HTTP server: replies are served in order, then `default` forever."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real vendors do

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with loopback.lock:
                    loopback.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                    reply = loopback.script.popleft() if loopback.script else loopback.default
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.stall:
                    time.sleep(reply.stall)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    self.close_connection = True  # the client gave up (read timeout)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def play(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Loopback]:
    loopback = Loopback()
    yield loopback
    loopback.close()


@dataclass
class Harness:
    client: HttpClient
    slept: list[float]


class MakeClient(Protocol):
    def __call__(
        self,
        *,
        attempts: int = ...,
        url: str | None = ...,
        timeout: float = ...,
        retry_after_max: float = ...,
    ) -> Harness: ...


@pytest.fixture
def make(server: Loopback) -> Iterator[MakeClient]:
    made: list[HttpClient] = []

    def factory(
        *,
        attempts: int = 4,
        url: str | None = None,
        timeout: float = 5.0,
        retry_after_max: float = 300.0,
    ) -> Harness:
        slept: list[float] = []
        policy = RetryPolicy(
            attempts=attempts, backoff_factor=0.5, jitter=0.25, retry_after_max=retry_after_max
        )
        client = HttpClient(
            url or server.url,
            retry=policy,
            limiter=None,
            timeout=timeout,
            sleep=slept.append,  # no real waiting: the delays are checked as numbers
            rng=lambda: 0.0,
        )
        made.append(client)
        return Harness(client, slept)

    yield factory
    for client in made:
        client.close()


def test_429_waits_retry_after_then_resends_even_a_mutation(
    server: Loopback, make: MakeClient
) -> None:
    server.play(Reply(429, '{"message":"slow down"}', {"Retry-After": "7"}), Reply(202, '{"a":1}'))
    h = make()
    got = h.client.request("POST", "v2/devices/authrequest", json={"data": {}}, mutating=True)
    assert got.status == 202 and got.json() == {"a": 1}
    assert h.slept == [7.0]
    assert len(server.received) == 2


def test_retry_after_is_capped(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(429, headers={"Retry-After": "86400"}), Reply(200))
    h = make(retry_after_max=30.0)
    h.client.request("GET", "x", mutating=False)
    assert h.slept == [30.0]


def test_429_without_retry_after_uses_backoff(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(429), Reply(429), Reply(200))
    h = make()
    h.client.request("GET", "x", mutating=False)
    assert h.slept == [0.5, 1.0]


def test_503_is_retried_for_get(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(503), Reply(502), Reply(504), Reply(200, '{"ok":true}'))
    h = make()
    assert h.client.request("GET", "v2/accounts/search", mutating=False).json() == {"ok": True}
    assert h.slept == [0.5, 1.0, 2.0]
    assert len(server.received) == 4


def test_5xx_is_retried_for_a_non_mutating_post(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(500), Reply(200))
    h = make()
    assert h.client.request("POST", "v2/accounts/poll", json={}, mutating=False).status == 200
    assert len(server.received) == 2


def test_500_on_a_mutating_post_is_uncertain_and_sent_once(
    server: Loopback, make: MakeClient
) -> None:
    server.play(Reply(500, '{"message":"internal"}'), Reply(202))
    h = make()
    with pytest.raises(UncertainOutcome) as info:
        h.client.request("POST", "v2/devices/authrequest", json={}, mutating=True)
    assert len(server.received) == 1
    err = info.value
    assert err.code == "E_NETWORK" and err.status == 500
    assert err.vendor_message == "internal"
    assert [(a.status, a.error) for a in err.history] == [(500, None)]
    assert h.slept == []


def test_dropped_connection_on_a_mutating_post_is_uncertain_and_sent_once(
    server: Loopback,
    make: MakeClient,
) -> None:
    server.play(Reply(drop=True), Reply(202))
    h = make()
    with pytest.raises(UncertainOutcome) as info:
        h.client.request(
            "POST", "mgmt/cm/device/tasks/x", json={"command": "assign"}, mutating=True
        )
    assert len(server.received) == 1
    assert server.received[0].body == b'{"command": "assign"}'
    assert info.value.history[0].error == "reset"
    assert info.value.__cause__ is not None  # chained, but not a requests exception itself


def test_dropped_connection_on_a_get_is_resent(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(drop=True), Reply(200))
    h = make()
    assert h.client.request("GET", "x", mutating=False).status == 200
    assert len(server.received) == 2


def test_read_timeout_on_a_mutating_post_is_uncertain_and_sent_once(
    server: Loopback,
    make: MakeClient,
) -> None:
    server.play(Reply(202, stall=0.6), Reply(202))
    h = make(timeout=0.2)
    with pytest.raises(UncertainOutcome) as info:
        h.client.request("POST", "x", json={}, mutating=True)
    assert info.value.history[0].error == "read_timeout"
    time.sleep(0.5)  # let the stalled handler finish before counting
    assert len(server.received) == 1


def test_connection_refused_is_resent_then_gives_up(make: MakeClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    h = make(attempts=3, url=f"http://127.0.0.1:{port}/")
    with pytest.raises(VendorUnavailable) as info:
        h.client.request("POST", "v2/devices/authrequest", json={}, mutating=True)
    err = info.value
    assert isinstance(err, NetworkError)
    assert [a.error for a in err.history] == ["connect_refused"] * 3
    assert h.slept == [0.5, 1.0]


def test_5xx_until_attempts_run_out_on_get(server: Loopback, make: MakeClient) -> None:
    server.default = Reply(503, '{"message":"maintenance"}')
    h = make(attempts=3)
    with pytest.raises(VendorUnavailable) as info:
        h.client.request("GET", "x", mutating=False)
    assert info.value.status == 503
    assert "maintenance" in info.value.message
    assert len(server.received) == 3


def test_404_carries_the_vendor_message_verbatim(server: Loopback, make: MakeClient) -> None:
    body = '{"code":404,"message":"License pool \'nope\' not found","errorStack":[]}'
    server.play(Reply(404, body))
    h = make()
    with pytest.raises(VendorRejected) as info:
        h.client.request("GET", "mgmt/cm/device/licensing/pool", mutating=False)
    err = info.value
    assert isinstance(err, VendorError) and err.code == "E_VENDOR"
    assert err.status == 404
    assert err.vendor_message == "License pool 'nope' not found"
    assert "HTTP 404" in err.message
    assert len(server.received) == 1  # a 4xx is never retried


def test_401_is_unauthorized(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(401, '{"code":401,"message":"invalid registered claims"}'))
    h = make()
    with pytest.raises(Unauthorized) as info:
        h.client.request("POST", "x", json={}, mutating=True)
    assert isinstance(info.value, AuthError) and info.value.code == "E_AUTH"
    assert info.value.vendor_message == "invalid registered claims"
    assert len(server.received) == 1


def test_bad_json_body_names_the_status(server: Loopback, make: MakeClient) -> None:
    server.play(Reply(200, "<html>login page</html>"))
    h = make()
    got = h.client.request("GET", "x", mutating=False)
    with pytest.raises(UnparseableResponse) as info:
        got.json()
    assert isinstance(info.value, VendorError)
    assert "unparseable response (HTTP 200)" in str(info.value)


def test_big_integers_are_read_exactly(server: Loopback, make: MakeClient) -> None:
    body = '{"status":"OK_POLL","poll_id":773126444402795033,"poll_interval":300}'
    server.play(Reply(202, body))
    h = make()
    got = h.client.request("POST", "v2/devices/authrequest", json={}, mutating=True)
    assert got.json()["poll_id"] == 773126444402795033
    assert got.text == body and got.raw == body.encode()
    assert got.headers["content-type"] == "application/json"


def test_secrets_never_reach_errors_or_logs(
    server: Loopback,
    make: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "tok-7f3a9c1e5b2d4a6f8e0c"
    password = "pa55-w0rd-XYZ"
    # A careless vendor echoing the credentials back in its error message.
    server.play(Reply(400, json.dumps({"message": f"bad login {password} with token {token}"})))
    h = make()
    caplog.set_level(logging.DEBUG, logger="airgap")
    with pytest.raises(VendorRejected) as info:
        h.client.request(
            "POST",
            f"mgmt/shared/authn/login?token={token}",
            json={"username": "admin", "password": password},
            headers={"X-F5-Auth-Token": token, "Authorization": f"Bearer {token}"},
            mutating=False,
        )
    err = info.value
    assert server.received[0].headers["X-F5-Auth-Token"] == token  # it was really sent
    for text in (str(err), err.message, err.url, str(err.vendor_message), caplog.text):
        assert token not in text
        assert password not in text


def test_the_limiter_is_taken_before_each_attempt(server: Loopback) -> None:
    server.play(Reply(503), Reply(200))
    now = [0.0]
    waits: list[float] = []
    limiter = RateLimiter(1, clock=lambda: now[0], sleep=waits.append)
    with HttpClient(
        server.url,
        retry=RetryPolicy(backoff_factor=0),
        limiter=limiter,
        sleep=lambda s: None,
        rng=lambda: 0.0,
    ) as client:
        client.request("GET", "x", mutating=False)
    assert waits == [1.0]  # the second attempt waited for its token


def test_a_thread_pool_shares_one_client(server: Loopback, make: MakeClient) -> None:
    h = make()

    def call(n: int) -> int:
        return h.client.request("GET", f"item/{n}", mutating=False).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(call, range(80)))
    assert statuses == [200] * 80
    assert sorted(r.path for r in server.received) == sorted(f"/api/item/{n}" for n in range(80))
    # One set of connection pools per worker thread (no proxy: urllib3 straight, no session).
    assert 1 <= len(h.client._own_pools) <= 8
    assert h.client._own_sessions == []
