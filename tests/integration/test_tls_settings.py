"""TlsSettings against the Cisco emulator over HTTPS: which CA bundle wins, and proxies.

requests lets a per-request `verify` of False or a CA path win over `REQUESTS_CA_BUNDLE`
(`Session.merge_environment_settings` only replaces True/None; psf/requests#3829), so the
client passes `verify` with every request and keeps `trust_env`: a configured CA bundle is used
whatever the environment says, `verify=True` honours the operator's `REQUESTS_CA_BUNDLE`, and
proxies from the environment keep working.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import pytest

from airgap.emulators.cisco import build_cisco_server
from airgap.emulators.server import EmulatorServer
from airgap.outside.http import HttpClient, RetryPolicy, TlsSettings, VendorUnavailable

ENV_NAMES = (
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@dataclass
class Tls:
    server: EmulatorServer
    cert: Path


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tls]:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    cert = tmp_path / "emulator.pem"
    server = build_cisco_server(tls=True, cert_out=cert).start()
    try:
        yield Tls(server, cert)
    finally:
        server.stop()


def stats(tls: Tls, settings: TlsSettings) -> int:
    """GET the emulator's stats with `settings`; the status."""
    with HttpClient(
        tls.server.url, retry=RetryPolicy(attempts=1), limiter=None, timeout=10, tls=settings
    ) as client:
        return client.request("GET", "/_emulator/stats", mutating=False).status


def test_a_configured_ca_bundle_wins_over_a_wrong_requests_ca_bundle(
    tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # certifi's bundle is real but does not hold the emulator's self-signed certificate.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())

    assert stats(tls, TlsSettings(str(tls.cert))) == 200
    with pytest.raises(VendorUnavailable) as caught:  # the wrong bundle is really in effect
        stats(tls, TlsSettings(True))
    assert caught.value.history[-1].error == "tls"


def test_verify_true_honours_requests_ca_bundle(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VendorUnavailable):  # the default trust store does not know the emulator
        stats(tls, TlsSettings(True))

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.cert))
    assert stats(tls, TlsSettings(True)) == 200


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_ignores_the_environment_bundle(
    tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    assert stats(tls, TlsSettings(False)) == 200


@dataclass
class ConnectProxy:
    """A minimal HTTPS proxy on 127.0.0.1: answers CONNECT and pipes bytes both ways."""

    listener: socket.socket
    targets: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(target)
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                ends = [client, upstream]
                while not self.stop.is_set():
                    ready, _, _ = select.select(ends, [], [], 0.2)
                    for end in ready:
                        data = end.recv(65536)
                        if not data:
                            return
                        (upstream if end is client else client).sendall(data)


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    listener = socket.create_server(("127.0.0.1", 0))
    running = ConnectProxy(listener)
    thread = threading.Thread(target=running.serve, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        thread.join(timeout=5)
        listener.close()


def test_environment_proxies_keep_working_with_a_ca_bundle(
    tls: Tls, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())

    assert stats(tls, TlsSettings(str(tls.cert))) == 200
    port = tls.server.url.rsplit(":", 1)[1].rstrip("/")
    assert proxy.targets == [f"127.0.0.1:{port}"]
