"""The emulators' shared HTTP plumbing: faults, latency, control paths, TLS and clean shutdown."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from airgap.emulators.server import (
    BadRequest,
    EmulatorServer,
    Faults,
    Request,
    Response,
    basic_credentials,
)
from airgap.errors import ConfigError


class EchoApp:
    """Answers every request with what it saw; counts calls so tests see if the app ran."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("app bug")
        if request.path == "/bad":
            raise BadRequest("no good")
        if request.path == "/json":
            return Response.json(200, {"got": request.json()})
        return Response.json(
            200,
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "body": request.body.decode("utf-8", "replace"),
            },
            headers={"X-Echo": "1"},
        )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"calls": {"echo": len(self.seen)}, "mutations": {}}


ServerFactory = Callable[..., tuple[EmulatorServer, EchoApp]]


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    started: list[EmulatorServer] = []

    def make(**kwargs: Any) -> tuple[EmulatorServer, EchoApp]:
        app = EchoApp()
        server = EmulatorServer(app, **kwargs).start()
        started.append(server)
        return server, app

    yield make
    for server in started:
        server.stop()


# --- Faults -----------------------------------------------------------------------------------


def test_faults_parse_reads_every_kind() -> None:
    faults = Faults.parse("429=0.1, 500=0.05,reset=0.02,slow=0.1,slow_seconds=0.5,seed=7")
    assert (faults.rate_429, faults.rate_500, faults.rate_reset, faults.rate_slow) == (
        0.1,
        0.05,
        0.02,
        0.1,
    )
    assert faults.slow_seconds == 0.5
    assert faults.seed == 7
    assert faults.injected == {"429": 0, "500": 0, "reset": 0, "slow": 0}


def test_faults_parse_empty_spec_means_no_faults() -> None:
    faults = Faults.parse("")
    assert all(faults.draw("/x") is None for _ in range(100))


@pytest.mark.parametrize(
    "spec",
    ["404=0.1", "429", "429=lots", "429=1.5", "500=-0.1", "429=0.6,500=0.6", "429=0.1,429=0.2"],
)
def test_faults_parse_refuses_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        Faults.parse(spec)
    assert info.value.code == "E_CONFIG"


def test_faults_draw_is_repeatable_with_a_seed_and_counts() -> None:
    first = Faults.parse("429=0.3,500=0.2,reset=0.1,slow=0.1,seed=42")
    second = Faults.parse("429=0.3,500=0.2,reset=0.1,slow=0.1,seed=42")
    draws = [first.draw("/p") for _ in range(200)]
    assert draws == [second.draw("/p") for _ in range(200)]
    assert set(draws) == {429, 500, "reset", "slow", None}
    assert first.injected["429"] == draws.count(429)
    assert first.injected["reset"] == draws.count("reset")


def test_fail_next_fires_once_on_a_matching_path() -> None:
    faults = Faults()
    faults.fail_next("authrequest", 503)
    assert faults.draw("/v2/accounts/poll") is None
    assert faults.draw("/v2/devices/authrequest") == 503
    assert faults.draw("/v2/devices/authrequest") is None
    assert faults.injected["503"] == 1


def test_fail_next_aimed_at_one_listener_and_body_spares_the_others() -> None:
    faults = Faults()
    faults.fail_next("/util/bash", "reset", listener=2, body_contains="reloadlic")
    path, body = "/mgmt/tm/util/bash", b'{"utilCmdArgs":"-c reloadlic"}'
    assert faults.draw(path) is None  # draw() leaves targeted faults alone
    assert faults.take_targeted(path, 1, body) is None
    assert faults.take_targeted(path, 2, b'{"utilCmdArgs":"-c cat"}') is None
    assert faults.take_targeted(path, 2, body) == "reset"
    assert faults.take_targeted(path, 2, body) is None
    assert faults.injected["reset"] == 1


@pytest.mark.parametrize("listener", [-1, 1.5, "2", True])
def test_fail_next_refuses_a_listener_that_is_not_an_index(listener: Any) -> None:
    with pytest.raises(ConfigError):
        Faults().fail_next("x", 503, listener=listener)


@pytest.mark.parametrize("status", [200, 302, "slow", "boom", True])
def test_fail_next_refuses_what_is_not_a_fault(status: Any) -> None:
    with pytest.raises(ConfigError):
        Faults().fail_next("x", status)


# --- requests and responses -------------------------------------------------------------------


def test_request_parts_reach_the_app(make_server: ServerFactory) -> None:
    server, _app = make_server()
    resp = requests.post(
        f"{server.url}/a/b?x=1&x=2&empty=",
        data=b"hello",
        headers={"X-Custom": "Yes"},
        timeout=5,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Echo"] == "1"
    body = resp.json()
    assert body["method"] == "POST"
    assert body["path"] == "/a/b"
    assert body["query"] == {"x": ["1", "2"], "empty": [""]}
    assert body["headers"]["x-custom"] == "Yes"
    assert body["body"] == "hello"
    assert ": " not in resp.text  # compact JSON


def test_double_slash_path_is_kept_raw(make_server: ServerFactory) -> None:
    server, _app = make_server()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "//services/api/x?q=1")
        resp = conn.getresponse()
        assert resp.status == 200
        assert b'"path":"//services/api/x"' in resp.read()
    finally:
        conn.close()


def test_chunked_body_is_read(make_server: ServerFactory) -> None:
    server, _app = make_server()
    resp = requests.post(f"{server.url}/json", data=iter([b'{"a":', b"1}"]), timeout=5)
    assert resp.json() == {"got": {"a": 1}}


def test_bad_request_and_app_crash_become_json_errors(make_server: ServerFactory) -> None:
    server, _app = make_server()
    with requests.Session() as session:
        assert session.post(f"{server.url}/bad", timeout=5).json() == {"error": "no good"}
        resp = session.post(f"{server.url}/json", data=b"{not json", timeout=5)
        assert resp.status_code == 400
        assert "not valid JSON" in resp.json()["error"]
        resp = session.get(f"{server.url}/boom", timeout=5)
        assert resp.status_code == 500
        assert "RuntimeError: app bug" in resp.json()["detail"]
        assert session.get(f"{server.url}/still-alive", timeout=5).status_code == 200


def test_unknown_method_and_bad_length_get_json_errors(make_server: ServerFactory) -> None:
    server, _app = make_server()
    resp = requests.request("BREW", f"{server.url}/pot", timeout=5)
    assert resp.status_code == 501
    assert "error" in resp.json()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"Content-Length" in answer


# --- faults over HTTP -------------------------------------------------------------------------


def test_injected_429_has_retry_after_and_skips_the_app(make_server: ServerFactory) -> None:
    server, app = make_server()
    server.faults.fail_next("reserve", 429)
    resp = requests.post(f"{server.url}/reserve", timeout=5)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["status"] == 429
    assert app.seen == []
    assert requests.post(f"{server.url}/reserve", timeout=5).status_code == 200


def test_injected_500_skips_the_app(make_server: ServerFactory) -> None:
    server, app = make_server(faults=Faults.parse("500=1"))
    assert requests.get(f"{server.url}/x", timeout=5).status_code == 500
    assert app.seen == []
    stats = requests.get(f"{server.url}/_emulator/stats", timeout=5).json()
    assert stats["faults"]["500"] == 1


def test_reset_runs_the_app_then_drops_the_connection(make_server: ServerFactory) -> None:
    server, app = make_server()
    server.faults.fail_next("reserve", "reset")
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{server.url}/reserve", data=b"x", timeout=5)
    assert [r.path for r in app.seen] == ["/reserve"]
    stats = requests.get(f"{server.url}/_emulator/stats", timeout=5).json()
    assert stats["faults"]["reset"] == 1
    assert stats["calls"] == {"echo": 1}


def test_slow_fault_delays_then_answers(make_server: ServerFactory) -> None:
    server, app = make_server(faults=Faults(rate_slow=1.0, slow_seconds=0.2))
    started = time.monotonic()
    assert requests.get(f"{server.url}/x", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.2
    assert len(app.seen) == 1


def test_control_paths_bypass_faults_and_latency(make_server: ServerFactory) -> None:
    server, _app = make_server(latency_ms=300, faults=Faults.parse("500=1"))
    started = time.monotonic()
    stats = requests.get(f"{server.url}/_emulator/stats", timeout=5).json()
    assert time.monotonic() - started < 0.25
    assert stats == {
        "calls": {"echo": 0},
        "mutations": {},
        "faults": {"429": 0, "500": 0, "reset": 0, "slow": 0},
    }
    assert requests.get(f"{server.url}/_emulator/nope", timeout=5).status_code == 404


def test_faults_can_be_armed_over_http(make_server: ServerFactory) -> None:
    server, _app = make_server()
    armed = requests.post(
        f"{server.url}/_emulator/faults", json={"path_contains": "x", "status": 503}, timeout=5
    )
    assert armed.json() == {"armed": True}
    assert requests.get(f"{server.url}/x", timeout=5).status_code == 503
    bad = requests.post(f"{server.url}/_emulator/faults", json={"status": 200}, timeout=5)
    assert bad.status_code == 400


def test_faults_armed_over_http_for_one_listener_hit_only_that_host(
    make_server: ServerFactory,
) -> None:
    server, app = make_server(listeners=3)
    armed = requests.post(
        f"{server.url}/_emulator/faults",
        json={"path_contains": "/x", "status": 503, "listener": 1, "body_contains": "go"},
        timeout=5,
    )
    assert armed.json() == {"armed": True}
    assert requests.post(f"{server.urls[0]}/x", data=b"go", timeout=5).status_code == 200
    assert requests.post(f"{server.urls[1]}/x", data=b"stay", timeout=5).status_code == 200
    assert requests.post(f"{server.urls[1]}/x", data=b"go", timeout=5).status_code == 503
    assert requests.post(f"{server.urls[1]}/x", data=b"go", timeout=5).status_code == 200
    assert [(r.listener, r.body) for r in app.seen] == [(0, b"go"), (1, b"stay"), (1, b"go")]


class ControlledApp(EchoApp):
    """An app with control paths of its own under /_emulator/."""

    def control(self, route: str, request: Request) -> Response | None:
        if route == "ping" and request.method == "POST":
            return Response.json(200, {"pong": request.json()})
        if route == "bad":
            raise BadRequest("bad control")
        return None


def test_unknown_control_routes_go_to_the_app_control_method() -> None:
    with EmulatorServer(ControlledApp(), faults=Faults.parse("500=1")) as server:
        pong = requests.post(f"{server.url}/_emulator/ping", json={"a": 1}, timeout=5)
        assert (pong.status_code, pong.json()) == (200, {"pong": {"a": 1}})
        assert requests.get(f"{server.url}/_emulator/bad", timeout=5).status_code == 400
        assert requests.get(f"{server.url}/_emulator/other", timeout=5).status_code == 404
        assert server.faults.snapshot()["500"] == 0


def test_latency_does_not_serialize_concurrent_requests(make_server: ServerFactory) -> None:
    server, _app = make_server(latency_ms=200)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(
            pool.map(lambda i: requests.get(f"{server.url}/{i}", timeout=5).status_code, range(8))
        )
    elapsed = time.monotonic() - started
    assert codes == [200] * 8
    assert 0.2 <= elapsed < 1.0


# --- lifecycle and TLS ------------------------------------------------------------------------


def test_stop_closes_keep_alive_connections_and_threads() -> None:
    before = set(threading.enumerate())
    server = EmulatorServer(EchoApp()).start()
    session = requests.Session()
    for _ in range(3):
        assert session.get(f"{server.url}/x", timeout=5).status_code == 200
    server.stop()
    session.close()
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/x", timeout=1)


def test_serve_forever_returns_after_stop_from_another_thread() -> None:
    server = EmulatorServer(EchoApp())
    runner = threading.Thread(target=server.serve_forever)
    runner.start()
    assert requests.get(f"{server.url}/x", timeout=5).status_code == 200
    server.stop()
    runner.join(timeout=5)
    assert not runner.is_alive()


def test_context_manager_and_port_in_use() -> None:
    with EmulatorServer(EchoApp()) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with pytest.raises(ConfigError):
            EmulatorServer(EchoApp(), port=server.port)


def test_tls_certificate_written_and_verified(tmp_path: Path, make_server: ServerFactory) -> None:
    cert = tmp_path / "certs" / "emulator.pem"
    server, _app = make_server(tls=True, cert_out=cert)
    assert server.url.startswith("https://127.0.0.1:")
    assert server.cert_path == cert
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert requests.get(f"{server.url}/x", verify=str(cert), timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/x", timeout=5)


def test_tls_reset_drops_the_connection(make_server: ServerFactory) -> None:
    server, app = make_server(tls=True)
    assert server.cert_path is not None
    server.faults.fail_next("x", "reset")
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{server.url}/x", verify=str(server.cert_path), timeout=5)
    assert len(app.seen) == 1


def test_cert_out_without_tls_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        EmulatorServer(EchoApp(), cert_out=tmp_path / "c.pem")


# --- many listeners (one per emulated host) ---------------------------------------------------


def test_each_listener_tells_the_app_which_one_it_is(make_server: ServerFactory) -> None:
    server, app = make_server(listeners=40)
    assert len(set(server.ports)) == 40 and server.url == server.urls[0]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda url: requests.get(f"{url}/x", timeout=5), server.urls))
    assert [r.status_code for r in statuses] == [200] * 40
    assert sorted(request.listener for request in app.seen) == list(range(40))
    by_port = {request.headers["host"].rsplit(":", 1)[1]: request.listener for request in app.seen}
    assert by_port == {str(port): index for index, port in enumerate(server.ports)}


def test_stats_answer_on_every_listener_for_the_whole_app(make_server: ServerFactory) -> None:
    server, _app = make_server(listeners=3)
    for url in server.urls:
        requests.get(f"{url}/x", timeout=5)
    for url in server.urls:
        assert requests.get(f"{url}/_emulator/stats", timeout=5).json()["calls"] == {"echo": 3}


def test_tls_listeners_share_one_certificate(tmp_path: Path, make_server: ServerFactory) -> None:
    cert = tmp_path / "fleet.pem"
    server, _app = make_server(listeners=5, tls=True, cert_out=cert)
    for url in server.urls:
        assert requests.get(f"{url}/x", verify=str(cert), timeout=5).status_code == 200


def test_stop_frees_every_listener_port() -> None:
    server = EmulatorServer(EchoApp(), listeners=4).start()
    ports = list(server.ports)
    assert requests.get(f"{server.urls[3]}/x", timeout=5).status_code == 200
    server.stop()
    for port in ports:
        with socket.socket() as probe:
            # SO_REUSEADDR lets a port in TIME_WAIT be bound again, but never one still listening.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))


def test_zero_listeners_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        EmulatorServer(EchoApp(), listeners=0)


# --- Basic credentials ------------------------------------------------------------------------


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_basic_credentials_split_at_the_first_colon() -> None:
    assert basic_credentials(_basic("admin:pa:ss")) == ("admin", "pa:ss")
    assert basic_credentials("basic " + _basic(":")[6:]) == ("", "")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        _basic("no-colon"),
        "Basic !!!",
        "Basic YWRtaW4",  # bad padding
        "Basic " + base64.b64encode(b"\xff:x").decode(),  # not UTF-8
        "Basic é",
    ],
)
def test_basic_credentials_of_a_header_that_is_not_good_basic_are_none(header: str) -> None:
    # "Basic é": http.server decodes headers as Latin-1, so non-ASCII text does arrive.
    assert basic_credentials(header) == (None, None)


def test_basic_credentials_skip_characters_outside_base64_only_when_asked() -> None:
    header = "Basic YWRta W46czNj!cmV0"  # admin:s3cret with a space and a '!' inserted
    assert basic_credentials(header) == (None, None)
    assert basic_credentials(header, validate=False) == ("admin", "s3cret")
