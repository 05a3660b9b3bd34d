"""Both IOS XE transports against the emulated fleet: what they read parses with the repo's
parsers, imports show in status, and every failure maps to the right device error."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import pytest

from airgap.devices.base import Endpoint, Login
from airgap.devices.connect import open_iosxe
from airgap.devices.hostkeys import KnownHosts
from airgap.devices.iosxe import IosXeTransport, render_capture
from airgap.emulators import cisco
from airgap.emulators.device import verify_payload
from airgap.emulators.iosxe import EmulatedDevice, IosXeFleet, start_fleet
from airgap.errors import (
    DeviceAuthError,
    DeviceError,
    DeviceUnreachable,
    HostKeyMismatch,
    HostKeyUnknown,
)
from airgap.formats.rum import parse_rum_bytes
from airgap.inside.parsers.codes import parse_return_capture
from airgap.inside.parsers.udi import parse_udi_capture

TRANSPORTS = ("slp-rest", "ssh")
HSEC = "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4"


@pytest.fixture
def fleet() -> Iterator[IosXeFleet]:
    with start_fleet(devices=10) as running:
        yield running


@pytest.fixture
def known_hosts(tmp_path: Path) -> KnownHosts:
    return KnownHosts(tmp_path / "known_hosts")


def connect(
    fleet: IosXeFleet,
    dev: EmulatedDevice,
    transport: str,
    known_hosts: KnownHosts,
    *,
    timeout: float = 10.0,
    login: Login | None = None,
    accept_new: bool = True,
) -> IosXeTransport:
    port = dev.rest_port if transport == "slp-rest" else dev.ssh_port
    endpoint = Endpoint("127.0.0.1", port, dev.hostname, str(fleet.cert_path), timeout)
    return open_iosxe(
        endpoint,
        login or Login("admin", "pw"),
        transport,
        known_hosts=known_hosts,
        accept_new_host_keys=accept_new,
    )


def ack_for(usage: bytes) -> bytes:
    rum = parse_rum_bytes(usage, path="usage.xml")
    entry = {
        "sudi": {"udi_pid": rum.udi[0], "udi_serial_number": rum.udi[1]},
        "usage": [{"payload": r.payload, "signature": r.signature} for r in rum.reports],
    }
    emu = cisco.CiscoEmulator(seed=1)
    result = emu._accept_report(cisco._parse_report(entry, 0), "Default", set())
    assert result["status"] == "SUCCESS", result
    return base64.b64decode(result["smart_license"])


def authorization_for(dev: EmulatedDevice) -> bytes:
    emu = cisco.CiscoEmulator(seed=1)
    text = emu._authorization_xml(dev.active.pid, dev.active.sn, "Default", {HSEC: 1}, "p")
    return text.encode()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_read_udi_parses_to_every_unit_of_a_stack(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    for dev in (fleet.devices[0], fleet.devices[9]):
        device = connect(fleet, dev, transport, known_hosts)
        try:
            text = device.read_udi()
        finally:
            device.close()
        records = parse_udi_capture(render_capture(dev.hostname, "show license udi", text))
        assert [(r.hostname, r.pid, r.sn) for r in records] == [
            (dev.hostname, m.pid, m.sn) for m in dev.members
        ]
    assert len(fleet.devices[9].members) > 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_read_usage_is_a_usage_file_whose_reports_verify(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    dev = fleet.devices[1]
    device = connect(fleet, dev, transport, known_hosts)
    try:
        usage = device.read_usage()
    finally:
        device.close()
    rum = parse_rum_bytes(usage, path="usage.xml")
    assert rum.udi == (dev.active.pid, dev.active.sn)
    assert len(rum.reports) == 2 * len(
        [r for r in dev.reports if r.state == "open"]
    )  # per entitlement: the report waiting for an ACK and the one just closed
    assert all(verify_payload(r.payload, r.signature["value"]) for r in rum.reports)
    signed = {json.loads(r.envelope)["payload"] for r in dev.reports if r.envelope}
    assert {r.payload for r in rum.reports} <= signed  # byte for byte what the device signed


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_imported_ack_and_code_show_in_status(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    dev = fleet.devices[2]
    device = connect(fleet, dev, transport, known_hosts)
    try:
        before = device.status()
        usage = device.read_usage()
        answer = device.import_file("ack.xml", ack_for(usage))
        assert "Import Data Successful" in answer
        answer = device.import_file("lic.txt", authorization_for(dev))
        assert "Import Data Successful" in answer
        after = device.status()
    finally:
        device.close()
    assert after.udis[0] == (dev.active.pid, dev.active.sn)
    assert after.last_ack_received is not None
    assert after.last_ack_received != before.last_ack_received
    installed = after.authorization_for(dev.active.pid, dev.active.sn)
    assert installed is not None and installed.is_installed
    assert installed.confirmation_code == dev.authorizations[dev.active.udi].confirmation_code
    rum = parse_rum_bytes(usage, path="usage.xml")
    assert after.acknowledged_report_ids is not None
    assert before.acknowledged_report_ids is not None
    reported = {int(r.report_id or 0) for r in rum.reports}
    assert not reported & before.acknowledged_report_ids
    assert reported <= after.acknowledged_report_ids
    counts = fleet.stats()["devices"][dev.hostname]
    assert (counts["import"], counts["install"]) == (2, 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_import_for_another_device_is_a_device_error(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    device = connect(fleet, fleet.devices[4], transport, known_hosts)
    try:
        with pytest.raises(DeviceError) as caught:
            device.import_file("lic.txt", authorization_for(fleet.devices[5]))
    finally:
        device.close()
    assert "% Error: Import Data Failed: UDI mismatch" in caught.value.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_lost_answer_to_an_import_is_uncertain_and_status_tells(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    dev = fleet.devices[6]
    fleet.arm(dev.hostname, "disconnect", match="import")
    device = connect(fleet, dev, transport, known_hosts)
    try:
        with pytest.raises(DeviceUnreachable) as caught:
            device.import_file("lic.txt", authorization_for(dev))
        assert caught.value.uncertain
        assert caught.value.reason == "dropped"
        status = device.status()
    finally:
        device.close()
    installed = status.authorization_for(dev.active.pid, dev.active.sn)
    assert installed is not None and installed.is_installed


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_device_that_never_answers_times_out_within_the_endpoint_timeout(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    dev = fleet.devices[7]
    fleet.arm(dev.hostname, "timeout")
    device = connect(fleet, dev, transport, known_hosts, timeout=0.5)
    try:
        with pytest.raises(DeviceUnreachable) as caught:
            device.read_udi()
    finally:
        device.close()
    assert caught.value.reason == "timeout"
    assert not caught.value.uncertain


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_credentials_are_a_device_auth_error(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    dev = fleet.devices[8]
    fleet.arm(dev.hostname, "auth")
    device = connect(fleet, dev, transport, known_hosts)
    try:
        with pytest.raises(DeviceAuthError):
            device.read_udi()
    finally:
        device.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_closed_port_is_refused_and_nothing_acted(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = Endpoint("127.0.0.1", port, "gone", str(fleet.cert_path), 2.0)
    device = open_iosxe(
        endpoint,
        Login("admin", "pw"),
        transport,
        known_hosts=known_hosts,
        accept_new_host_keys=True,
    )
    with pytest.raises(DeviceUnreachable) as caught:
        device.import_file("ack.xml", b"<smartLicense/>")
    assert caught.value.reason == "refused"
    assert not caught.value.uncertain


def test_ssh_refuses_an_unknown_key_unless_accepted_and_then_pins_it(
    fleet: IosXeFleet, known_hosts: KnownHosts
) -> None:
    dev = fleet.devices[0]
    device = connect(fleet, dev, "ssh", known_hosts, accept_new=False)
    with pytest.raises(HostKeyUnknown):
        device.read_udi()
    assert fleet.stats()["devices"][dev.hostname]["logins"] == 0
    assert not known_hosts.path.exists()
    device = connect(fleet, dev, "ssh", known_hosts, accept_new=True)
    device.read_udi()
    device.close()
    assert len(known_hosts.pinned("127.0.0.1", dev.ssh_port)) == 1
    device = connect(fleet, dev, "ssh", known_hosts, accept_new=False)
    assert "UDI:" in device.read_udi()
    device.close()


def test_ssh_refuses_a_changed_key_before_sending_credentials(
    fleet: IosXeFleet, known_hosts: KnownHosts
) -> None:
    dev = fleet.devices[1]
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known_hosts.path.write_text(f"[127.0.0.1]:{dev.ssh_port} {impostor}")
    device = connect(fleet, dev, "ssh", known_hosts, accept_new=True)
    with pytest.raises(HostKeyMismatch) as caught:
        device.read_udi()
    assert f"[127.0.0.1]:{dev.ssh_port}" in caught.value.message
    assert caught.value.message.count("SHA256:") == 2
    assert fleet.stats()["devices"][dev.hostname]["logins"] == 0


def test_ssh_logs_in_with_a_key_file(
    fleet: IosXeFleet, known_hosts: KnownHosts, tmp_path: Path
) -> None:
    key_path = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(key_path)
    device = connect(
        fleet, fleet.devices[2], "ssh", known_hosts, login=Login("admin", key_file=key_path)
    )
    try:
        assert device.read_udi().startswith("UDI: ")
    finally:
        device.close()


def test_ssh_return_code_parses_and_rest_cannot_return(
    fleet: IosXeFleet, known_hosts: KnownHosts
) -> None:
    dev = fleet.devices[3]  # holds an authorization code
    rest = connect(fleet, dev, "slp-rest", known_hosts)
    with pytest.raises(DeviceError):
        rest.return_authorization()
    rest.close()
    device = connect(fleet, dev, "ssh", known_hosts)
    try:
        code = parse_return_capture(device.return_authorization())
        assert (code.pid, code.sn, code.hostname) == (dev.active.pid, dev.active.sn, dev.hostname)
        with pytest.raises(DeviceError) as caught:
            device.return_authorization()
    finally:
        device.close()
    assert caught.value.message.endswith(
        f"% Error: No authorization code is installed for {dev.active.udi}"
    )


def test_rest_verifies_tls_and_refuses_an_unknown_certificate(
    fleet: IosXeFleet, known_hosts: KnownHosts
) -> None:
    dev = fleet.devices[0]
    endpoint = Endpoint("127.0.0.1", dev.rest_port, dev.hostname, True, 5.0)
    device = open_iosxe(endpoint, Login("admin", "pw"), "slp-rest")
    with pytest.raises(DeviceUnreachable) as caught:
        device.read_udi()
    assert caught.value.reason == "tls"


def test_many_threads_drive_their_own_ssh_devices_at_once(
    fleet: IosXeFleet, known_hosts: KnownHosts
) -> None:
    def one(dev: EmulatedDevice) -> str:
        device = connect(fleet, dev, "ssh", known_hosts)
        try:
            return device.read_udi()
        finally:
            device.close()

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(one, fleet.devices))
    assert [o.splitlines()[0] for o in outputs] == [f"UDI: {d.active.udi}" for d in fleet.devices]
    assert len(known_hosts.path.read_text().splitlines()) == len(fleet.devices)


def test_ssh_status_after_udis_in_one_session_does_not_ask_the_udi_again(
    fleet: IosXeFleet, known_hosts: KnownHosts
) -> None:
    dev = fleet.devices[4]

    def commands() -> int:
        return int(fleet.stats()["devices"][dev.hostname]["commands"])

    device = connect(fleet, dev, "ssh", known_hosts)
    try:
        assert device.udis()[0] == (dev.active.pid, dev.active.sn)
        assert commands() == 2  # terminal length 0, show license udi
        status = device.status()
        assert status.udis[0] == (dev.active.pid, dev.active.sn)
        assert commands() == 5  # status, authorization, rum id all
    finally:
        device.close()
    fresh = connect(fleet, dev, "ssh", known_hosts)
    try:
        assert fresh.status().udis[0] == (dev.active.pid, dev.active.sn)
        assert commands() == 10  # a new session reads the UDIs anew
    finally:
        fresh.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_usage_and_udi_read_together_match_what_each_reads_alone(
    fleet: IosXeFleet, known_hosts: KnownHosts, transport: str
) -> None:
    dev = fleet.devices[9]  # a stack: every unit's UDI
    device = connect(fleet, dev, transport, known_hosts)
    try:
        usage, text = device.read_usage_and_udi()
    finally:
        device.close()
    rum = parse_rum_bytes(usage, path="usage.xml")
    assert rum.udi == (dev.active.pid, dev.active.sn)
    assert all(verify_payload(r.payload, r.signature["value"]) for r in rum.reports)
    records = parse_udi_capture(render_capture(dev.hostname, "show license udi", text))
    assert [(r.pid, r.sn) for r in records] == [(m.pid, m.sn) for m in dev.members]
    if transport == "ssh":
        # terminal length 0, license smart save usage, show license udi; the copy is SCP
        assert fleet.stats()["devices"][dev.hostname]["commands"] == 3
