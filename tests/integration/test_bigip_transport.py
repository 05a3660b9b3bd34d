"""The BIG-IP iControl REST transport against the emulated fleet, over real HTTPS sockets.

Identity, dossiers (checked against the BIG-IQ emulator's manual activation), license installs
across mcpd's restart window, token renewal over a long run, dropped connections and what they
leave uncertain, and a hundred devices each licensed exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from airgap.devices.base import Endpoint, Login
from airgap.devices.bigip import (
    BigIpPolicy,
    BigIpTransport,
    Registration,
    license_registration_key,
    normalize_base_mac,
)
from airgap.emulators.bigip import BigIpFleetServer, start_bigip_fleet
from airgap.emulators.bigiq import DEMO_REGKEY_POOL, REGKEY_PLAIN, BigIqEmulator, license_text
from airgap.emulators.server import EmulatorServer, Request, Response
from airgap.errors import (
    ConfigError,
    DeviceAuthError,
    DeviceError,
    DeviceUnreachable,
    InputError,
)

ADD_ON = "T582617-4093851"
FAST = BigIpPolicy(backoff_factor=0.02, backoff_max=0.1, settle=0.3, ready_wait=10, install_wait=10)
PASSWORD = "emulator-password-value"


def regkey(i: int) -> str:
    return f"Z{i:04d}-10000-20000-30000-{i:07d}"


def a_license(key: str, dossier: str = "ab" * 231) -> str:
    return license_text(key, dossier=dossier, licensed_version="17.1.1")


FleetFactory = Callable[..., BigIpFleetServer]


@pytest.fixture
def fleet() -> Iterator[FleetFactory]:
    started: list[BigIpFleetServer] = []

    def make(devices: int = 1, **options: Any) -> BigIpFleetServer:
        options.setdefault("restart_seconds", 0.3)
        server = start_bigip_fleet(devices, **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def endpoint(server: BigIpFleetServer, index: int = 0) -> Endpoint:
    row = server.inventory_rows[index]
    return Endpoint(
        host=row["host"], port=int(row["port"]), hostname=row["hostname"], verify=row["ca_bundle"]
    )


def transport(
    server: BigIpFleetServer, index: int = 0, *, policy: BigIpPolicy = FAST, **kwargs: Any
) -> BigIpTransport:
    return BigIpTransport(
        endpoint(server, index), Login("admin", PASSWORD), policy=policy, **kwargs
    )


def counts(server: BigIpFleetServer, index: int = 0) -> dict[str, int]:
    hostname = server.devices[index].hostname
    result: dict[str, int] = server.stats()["devices"][hostname]
    return result


# --- identity and dossier -----------------------------------------------------------------------


def test_device_info_reads_identity_with_the_base_mac_normalized(fleet: FleetFactory) -> None:
    server = fleet(2)
    with transport(server, 1) as bigip:
        info = bigip.device_info()
    assert info.hostname == "bigip-0002"
    assert info.base_mac == server.devices[1].base_mac.upper()
    assert (info.version, info.platform) == ("17.1.1.3", "Z100")
    assert info.machine_id == server.devices[1].machine_id
    with server.fleet.lock:
        server.devices[0].base_mac = "00:01:2:a:B:d0"  # as F5's telemetry tests feed it
    with transport(server, 0) as bigip:
        assert bigip.device_info().base_mac == "00:01:02:0A:0B:D0"
    assert counts(server, 0)["logout"] == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fa:16:3e:e2:38:1c", "FA:16:3E:E2:38:1C"),
        ("00-50-56-9A-3C-E1", "00:50:56:9A:3C:E1"),
        ("0050.569a.3ce1", "00:50:56:9A:3C:E1"),
        ("00:01:2:a:B:d0", "00:01:02:0A:0B:D0"),
        ("00:01:02:0A:0B", None),
        ("zz:01:02:0a:0b:0c", None),
    ],
)
def test_normalize_base_mac(raw: str, expected: str | None) -> None:
    assert normalize_base_mac(raw) == expected


def test_the_dossier_is_the_one_big_iq_manual_activation_expects(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    bigip = fleet()
    bigiq = BigIqEmulator()
    with EmulatorServer(bigiq) as server, transport(bigip) as device:
        dossier = device.dossier(REGKEY_PLAIN)
        session = requests.Session()
        session.trust_env = False
        login = session.post(
            server.url + "/mgmt/shared/authn/login",
            json={"username": "admin", "password": "pw", "loginProviderName": "tmos"},
            timeout=10,
        ).json()
        session.headers["X-F5-Auth-Token"] = login["token"]["token"]
        pools = session.get(
            server.url + "/mgmt/cm/device/licensing/pool/regkey/licenses",
            params={"$filter": f"(name eq '{DEMO_REGKEY_POOL}')"},
            timeout=10,
        ).json()
        offerings = (
            f"{server.url}/mgmt/cm/device/licensing/pool/regkey/licenses/"
            f"{pools['items'][0]['id']}/offerings"
        )
        created = session.post(
            offerings, json={"regKey": REGKEY_PLAIN, "status": "ACTIVATING_MANUAL"}, timeout=10
        ).json()
        link = server.url + created["selfLink"].removeprefix("https://localhost")
        waiting = session.get(link, timeout=10).json()
        assert waiting["status"] == "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
        assert waiting["dossier"] == dossier

        # activate.f5.com's answer for that dossier is accepted by BIG-IQ and by the device.
        text = license_text(REGKEY_PLAIN, dossier=dossier, licensed_version="17.1.1")
        step = {"status": "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED", "licenseText": text}
        assert session.patch(link, json=step, timeout=10).json()["status"] == "READY"
        registration = device.install_license(text)
    assert registration.registration_key == REGKEY_PLAIN
    assert counts(bigip)["install"] == 1


def test_dossier_with_add_on_keys_matches_big_iq_for_the_same_keys(fleet: FleetFactory) -> None:
    bigip = fleet()
    bigiq = BigIqEmulator()
    with EmulatorServer(bigiq) as server, transport(bigip) as device:
        with_add_on = device.dossier(REGKEY_PLAIN, [ADD_ON])
        assert with_add_on != device.dossier(REGKEY_PLAIN)
        session = requests.Session()
        session.trust_env = False
        token = session.post(
            server.url + "/mgmt/shared/authn/login",
            json={"username": "admin", "password": "pw"},
            timeout=10,
        ).json()["token"]["token"]
        session.headers["X-F5-Auth-Token"] = token
        pool = bigiq.pools[DEMO_REGKEY_POOL]
        created = session.post(
            f"{server.url}/mgmt/cm/device/licensing/pool/regkey/licenses/{pool.id}/offerings",
            json={"regKey": REGKEY_PLAIN, "status": "ACTIVATING_MANUAL", "addOnKeys": [ADD_ON]},
            timeout=10,
        ).json()
        link = server.url + created["selfLink"].removeprefix("https://localhost")
        assert session.get(link, timeout=10).json()["dossier"] == with_add_on


@pytest.mark.parametrize(("key", "add_ons"), [("nope", []), (REGKEY_PLAIN, ["BAD"])])
def test_a_malformed_key_is_refused_before_anything_is_sent(
    fleet: FleetFactory, key: str, add_ons: list[str]
) -> None:
    server = fleet()
    with transport(server) as bigip, pytest.raises(InputError):
        bigip.dossier(key, add_ons)
    assert (counts(server)["login"], counts(server)["dossier"]) == (0, 0)


# --- installing -----------------------------------------------------------------------------


def test_install_waits_out_the_restart_window_and_returns_the_registration(
    fleet: FleetFactory,
) -> None:
    server = fleet(2, restart_seconds=0.5)
    with transport(server) as bigip:
        assert bigip.registration() == Registration(registration_key=None)
        registration = bigip.install_license(a_license(regkey(1)))
        assert registration.registration_key == regkey(1)
        assert registration.licensed and registration.licensed_version == "17.1.1"
        assert bigip.registration().registration_key == regkey(1)
    mine = counts(server)
    assert (mine["write"], mine["reloadlic"], mine["install"]) == (1, 1, 1)
    assert mine["unavailable"] >= 1  # it met the 503 window and waited
    assert counts(server, 1)["install"] == 0


def test_install_refuses_text_the_here_document_would_change(fleet: FleetFactory) -> None:
    server = fleet()
    text = a_license(regkey(2))
    with transport(server) as bigip:
        for bad in (text + "Note : $HOME\n", text.replace("Production", "it's"), "# nothing\n"):
            with pytest.raises(InputError):
                bigip.install_license(bad)
    assert counts(server)["write"] == 0
    assert license_registration_key(text) == regkey(2)


def test_a_dropped_write_is_uncertain_and_the_registration_tells(fleet: FleetFactory) -> None:
    server = fleet()
    text = a_license(regkey(3))
    server.fail_next(0, "reset", path_contains="/util/bash", body_contains="bigip.license")
    with transport(server) as bigip:
        with pytest.raises(DeviceUnreachable) as caught:
            bigip.install_license(text)
        assert caught.value.uncertain is True
        assert caught.value.code == "E_UNREACHABLE"
        # The file was written but never loaded: the box still runs without a license.
        assert bigip.registration().registration_key is None
        assert bigip.install_license(text).registration_key == regkey(3)
    mine = counts(server)
    assert (mine["write"], mine["reloadlic"], mine["install"]) == (2, 1, 1)


def test_a_dropped_reloadlic_is_uncertain_and_the_registration_shows_the_key(
    fleet: FleetFactory,
) -> None:
    server = fleet(restart_seconds=0.4)
    server.fail_next(0, "reset", path_contains="/util/bash", body_contains="reloadlic")
    with transport(server) as bigip:
        with pytest.raises(DeviceUnreachable) as caught:
            bigip.install_license(a_license(regkey(4)))
        assert caught.value.uncertain is True
        assert bigip.registration().registration_key == regkey(4)  # waits out the 503s
    assert counts(server)["install"] == 1


def test_a_dropped_read_is_asked_again(fleet: FleetFactory) -> None:
    server = fleet()
    server.fail_next(0, "reset", path_contains="device-info")
    with transport(server) as bigip:
        assert bigip.device_info().hostname == "bigip-0001"
    assert counts(server)["device_info"] == 2
    assert server.stats()["faults"]["reset"] == 1


def test_a_box_that_stays_unavailable_is_unreachable_not_uncertain(fleet: FleetFactory) -> None:
    server = fleet(restart_seconds=30)
    server.fail_next(0, "restart")
    policy = BigIpPolicy(backoff_factor=0.02, backoff_max=0.05, ready_wait=0.3)
    with transport(server, policy=policy) as bigip, pytest.raises(DeviceUnreachable) as caught:
        bigip.registration()
    assert caught.value.uncertain is False
    assert "still unavailable" in caught.value.message


# --- authentication -----------------------------------------------------------------------------


def test_an_expired_token_is_renewed_once_and_the_call_resent(fleet: FleetFactory) -> None:
    now = [100.0]
    server = fleet(token_ttl=60, clock=lambda: now[0])
    with transport(server) as bigip:
        assert bigip.registration().registration_key is None
        now[0] += 61  # the box's clock: the token expired there, not in the client's view
        assert bigip.registration().registration_key is None
    mine = counts(server)
    assert (mine["login"], mine["unauthorized"], mine["registration"]) == (2, 1, 2)


def test_a_long_run_with_short_tokens_keeps_working(fleet: FleetFactory) -> None:
    server = fleet(token_ttl=1, latency_ms=6)
    with transport(server) as bigip:
        for _ in range(250):
            assert bigip.registration().registration_key is None
    mine = counts(server)
    assert mine["registration"] == 250
    # 250 calls of at least 6 ms each outlive the first 1-second token.
    assert mine["login"] >= 2


def test_a_refused_login_is_a_device_auth_error_without_the_password(fleet: FleetFactory) -> None:
    server = fleet(password="the-right-one")
    with transport(server) as bigip, pytest.raises(DeviceAuthError) as caught:
        bigip.device_info()
    assert caught.value.code == "E_DEVICE_AUTH"
    assert "Authentication failed." in caught.value.message
    assert PASSWORD not in caught.value.message
    assert counts(server)["device_info"] == 0


def test_a_login_refused_once_fails_the_call_and_the_next_call_logs_in(
    fleet: FleetFactory,
) -> None:
    server = fleet()
    server.fail_next(0, "auth")
    with transport(server) as bigip:
        with pytest.raises(DeviceAuthError):
            bigip.registration()
        assert bigip.registration().registration_key is None


def test_close_deletes_the_token(fleet: FleetFactory) -> None:
    server = fleet()
    bigip = transport(server)
    bigip.registration()
    token = next(iter(server.devices[0].tokens))
    bigip.close()
    assert token not in server.devices[0].tokens
    assert counts(server)["logout"] == 1


# --- network and TLS ------------------------------------------------------------------------------


def test_nothing_listening_is_unreachable_and_certain(fleet: FleetFactory, tmp_path: Path) -> None:
    server = fleet(cert_out=tmp_path / "cert.pem")
    where = endpoint(server)
    server.stop()
    bigip = BigIpTransport(where, Login("admin", PASSWORD), policy=FAST)
    with pytest.raises(DeviceUnreachable) as caught:
        bigip.install_license(a_license(regkey(5)))
    assert caught.value.uncertain is False


def test_an_untrusted_certificate_is_refused(fleet: FleetFactory, tmp_path: Path) -> None:
    server = fleet()
    row = endpoint(server)
    system_trust = Endpoint(host=row.host, port=row.port, hostname=row.hostname, verify=True)
    with pytest.raises(DeviceUnreachable) as caught:
        BigIpTransport(system_trust, Login("admin", PASSWORD), policy=FAST).device_info()
    assert "TLS" in caught.value.message
    missing = Endpoint(host=row.host, port=row.port, hostname="x", verify=str(tmp_path / "no.pem"))
    with pytest.raises(ConfigError):
        BigIpTransport(missing, Login("admin", PASSWORD))
    with pytest.raises(ConfigError):
        BigIpTransport(row, Login("admin", None))


class CannedBox:
    """A stand-in BIG-IP that answers device-info with canned (status, body) pairs in turn."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.lock = threading.Lock()
        self.calls = 0

    def handle(self, request: Request) -> Response:
        if request.path.endswith("/authn/login"):
            return Response.json(200, {"token": {"token": "T" * 26, "timeout": 1200}})
        with self.lock:
            status, body = self.answers[min(self.calls, len(self.answers) - 1)]
            self.calls += 1
        return Response.json(status, body)

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls}


def canned(tmp_path: Path, answers: list[tuple[int, dict[str, Any]]]) -> tuple[Any, Endpoint]:
    app = CannedBox(answers)
    server = EmulatorServer(app, tls=True, cert_out=tmp_path / "canned.pem").start()
    where = Endpoint(
        host="127.0.0.1", port=server.port, hostname="canned", verify=str(server.cert_path)
    )
    return server, where


def test_an_f5_error_is_a_device_error_with_f5s_words(tmp_path: Path) -> None:
    f5 = {
        "code": 400,
        "message": "01070734:3: Configuration error: x",
        "errorStack": [],
        "apiError": 3,
    }
    server, where = canned(tmp_path, [(400, f5)])
    try:
        with pytest.raises(DeviceError) as caught:
            BigIpTransport(where, Login("admin", PASSWORD), policy=FAST).device_info()
        assert "01070734:3: Configuration error: x" in caught.value.message
    finally:
        server.stop()


def test_mcpd_lost_answers_are_waited_out_like_503(tmp_path: Path) -> None:
    lost = {
        "code": 500,
        "message": "The connection to mcpd has been lost, try again.",
        "apiError": 32768001,
    }
    info = {
        "baseMac": "fa:16:3e:e2:38:1c",
        "hostname": "h",
        "version": "17.1.1.3",
        "platform": "Z100",
    }
    server, where = canned(tmp_path, [(500, lost), (500, lost), (200, info)])
    try:
        device = BigIpTransport(where, Login("admin", PASSWORD), policy=FAST).device_info()
        assert device.base_mac == "FA:16:3E:E2:38:1C"
    finally:
        server.stop()


def test_policy_delay_is_capped_and_honours_retry_after() -> None:
    policy = BigIpPolicy(backoff_factor=0.5, backoff_max=3.0, retry_after_max=10.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(1, retry_after=4) == 4
    assert policy.delay(1, retry_after=60) == 10.0


# --- a fleet ------------------------------------------------------------------------------------


def test_a_hundred_devices_are_each_licensed_exactly_once(fleet: FleetFactory) -> None:
    server = fleet(100, restart_seconds=0.05)

    def license_one(index: int) -> str:
        with transport(server, index) as bigip:
            info = bigip.device_info()
            key = regkey(index)
            text = license_text(key, dossier=bigip.dossier(key), mac=info.base_mac)
            registration = bigip.install_license(text)
            assert registration.registration_key == key
            return info.hostname

    with ThreadPoolExecutor(max_workers=16) as pool:
        hostnames = list(pool.map(license_one, range(100)))
    assert hostnames == [device.hostname for device in server.devices]
    stats = server.stats()
    assert stats["licensed"] == 100
    assert {c["install"] for c in stats["devices"].values()} == {1}
    assert {c["write"] for c in stats["devices"].values()} == {1}
    assert [d.registration_key for d in server.devices] == [regkey(i) for i in range(100)]
