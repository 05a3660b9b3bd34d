"""The emulated IOS XE fleet on real sockets: the SLP REST API as Cisco's sample calls it, the
CLI over SSH, SCP, imports of what the Cisco emulator writes, faults and stats."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import pytest
import requests
from integration.iosxe_helpers import (
    SampleDevice,
    _connect,
    scp_down,
    scp_up,
    server_key,
    shell,
)

from airgap.emulators import cisco
from airgap.emulators.device import return_code_for, verify_payload
from airgap.emulators.iosxe import IosXeFleet, host_key, start_fleet
from airgap.formats.rum import parse_rum_bytes
from airgap.inside.parsers.codes import parse_return_capture
from airgap.inside.parsers.udi import parse_udi_capture

HSEC = "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4"


@pytest.fixture
def fleet() -> Iterator[IosXeFleet]:
    with start_fleet(devices=12) as running:
        yield running


def sample(fleet: IosXeFleet, index: int, password: str = "pw") -> SampleDevice:
    dev = fleet.devices[index - 1]
    return SampleDevice(f"127.0.0.1:{dev.rest_port}", "admin", password, str(fleet.cert_path))


def report_to_cisco(emu: cisco.CiscoEmulator, reports: list[dict[str, object]]) -> str:
    """Hand the reports to the Cisco emulator as `report_usage` would; the decoded ACK."""
    first = reports[0]
    signature = first["signature"]
    assert isinstance(signature, dict)
    entry = {"sudi": signature["sudi"], "usage": reports}
    result = emu._accept_report(cisco._parse_report(entry, 0), "Default", set())
    assert result["status"] == "SUCCESS", result
    return base64.b64decode(result["smart_license"]).decode()


def authorization_for(pid: str, sn: str) -> str:
    emu = cisco.CiscoEmulator(seed=1)
    return emu._authorization_xml(pid, sn, "Default", {HSEC: 1}, "piid-1")


def test_rest_api_answers_calls_made_as_ciscos_sample_makes_them(fleet: IosXeFleet) -> None:
    device = sample(fleet, 1)
    toc = device.get_list()
    assert toc.status_code == 200
    assert isinstance(toc.json()["usage_list"], list)
    assert device.close_reports().status_code == 200
    reports = device.get_all_reports().json()["usage"]
    assert len(reports) == 4  # per entitlement: the one waiting for an ACK and the one just closed
    for report in reports:
        assert set(report) == {"payload", "header", "signature"}
        assert verify_payload(report["payload"], report["signature"]["value"])
    stats = fleet.stats()["devices"]["iosxe-0001"]
    assert (stats["list"], stats["close_reports"], stats["all_reports"]) == (1, 1, 1)


def test_rest_api_refuses_missing_or_wrong_credentials() -> None:
    with start_fleet(devices=1, password="s3cret") as strict:
        assert sample(strict, 1, password="wrong").get_list().status_code == 401
        assert sample(strict, 1, password="").get_list().status_code == 401
        assert sample(strict, 1, password="s3cret").get_list().status_code == 200
        dev = strict.devices[0]
        anonymous = requests.get(
            f"https://127.0.0.1:{dev.rest_port}/smartlic-service/list",
            verify=str(strict.cert_path),
            timeout=5,
        )
        assert anonymous.status_code == 401


def test_ack_from_the_cisco_emulator_marks_the_reports_acknowledged(fleet: IosXeFleet) -> None:
    device = sample(fleet, 2)
    device.close_reports()
    reports = device.get_all_reports().json()["usage"]
    ack = report_to_cisco(cisco.CiscoEmulator(seed=1), reports)
    answer = device.import_str(ack)
    assert answer.status_code == 200, answer.text
    assert "Import Data Successful" in answer.json()["message"]
    assert device.get_all_reports().json() == {}
    states = {e["report_id"]: e["state"] for e in device.get_list().json()["usage_list"]}
    acked = {int(r["payload"].split('"report_id":')[1].split(",")[0]) for r in reports}
    assert all(states[rid] == "ACKED" for rid in acked)
    assert fleet.stats()["devices"]["iosxe-0002"]["import"] == 1
    assert [kind for kind, _when in fleet.devices[1].imports] == ["ack", "policy"]


def test_an_ack_or_code_for_another_device_is_refused_with_the_device_error(
    fleet: IosXeFleet,
) -> None:
    other = sample(fleet, 3)
    other.close_reports()
    ack = report_to_cisco(cisco.CiscoEmulator(seed=1), other.get_all_reports().json()["usage"])
    refused = sample(fleet, 5).import_str(ack)
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("% Error:")
    assert "UDI mismatch" in refused.json()["error"]

    dev3 = fleet.devices[2].active
    port = fleet.devices[4].ssh_port
    path = fleet.cert_path.parent / "lic.txt"
    path.write_text(authorization_for(dev3.pid, dev3.sn))
    scp_up(port, path, "bootflash:lic.txt")
    transcript = shell(port, "license smart import bootflash:lic.txt")
    assert "% Error: Import Data Failed: UDI mismatch" in transcript
    assert fleet.devices[4].authorizations == {}
    assert fleet.stats()["devices"]["iosxe-0005"]["install"] == 0


def test_authorization_code_copied_by_scp_and_imported_shows_as_installed(
    fleet: IosXeFleet, tmp_path: Path
) -> None:
    dev = fleet.devices[0]
    path = tmp_path / "lic.txt"
    path.write_text(authorization_for(dev.active.pid, dev.active.sn))
    scp_up(dev.ssh_port, path, "bootflash:lic.txt")
    transcript = shell(
        dev.ssh_port,
        "dir bootflash:",
        "license smart import bootflash:lic.txt",
        "show license authorization",
    )
    code = dev.authorizations[dev.active.udi].confirmation_code
    assert "lic.txt" in transcript
    assert "Import Data Successful" in transcript
    assert f"Last Confirmation code UDI: {dev.active.udi}\n    Confirmation code: {code}" in (
        transcript
    )
    assert "Status: SMART AUTHORIZATION INSTALLED on" in transcript
    assert f"Last Confirmation code: {code}" in transcript
    counts = fleet.stats()["devices"]["iosxe-0001"]
    assert (counts["import"], counts["install"], counts["scp_in"]) == (1, 1, 1)


def test_shell_prompts_takes_abbreviations_and_refuses_unknown_input(fleet: IosXeFleet) -> None:
    dev = fleet.devices[0]
    transcript = shell(dev.ssh_port, "terminal length 0", "sh lic udi", "show bogus thing")
    assert transcript.startswith("\niosxe-0001#terminal length 0\niosxe-0001#sh lic udi\n")
    assert f"UDI: {dev.active.udi}\n" in transcript
    assert "iosxe-0001#show bogus thing\n" in transcript
    assert "\n% Invalid input detected at '^' marker.\n" in transcript
    assert transcript.endswith("iosxe-0001#")
    records = parse_udi_capture(transcript.split("iosxe-0001#show bogus")[0] + "iosxe-0001#")
    assert [(r.hostname, r.pid, r.sn) for r in records] == [
        ("iosxe-0001", dev.active.pid, dev.active.sn)
    ]


def test_a_stack_lists_every_member_in_show_license_udi_and_in_its_reports(
    fleet: IosXeFleet,
) -> None:
    dev = fleet.devices[9]  # iosxe-0010, every 10th device is a stack
    assert len(dev.members) >= 2
    transcript = shell(dev.ssh_port, "show license udi")
    records = parse_udi_capture(transcript)
    assert [(r.pid, r.sn, r.role) for r in records] == [(m.pid, m.sn, m.role) for m in dev.members]
    device = sample(fleet, 10)
    device.close_reports()
    payload = device.get_all_reports().json()["usage"][0]["payload"]
    for member in dev.members:
        assert member.sn in payload


def test_saved_usage_is_a_file_the_rum_parser_reads_and_the_cisco_emulator_accepts(
    fleet: IosXeFleet, tmp_path: Path
) -> None:
    dev = fleet.devices[3]
    transcript = shell(
        dev.ssh_port,
        "license smart save usage unreported file bootflash:usage.xml",
        "more bootflash:usage.xml",
    )
    assert "<smartLicense>" in transcript
    scp_down(dev.ssh_port, "bootflash:usage.xml", tmp_path / "usage.xml")
    data = (tmp_path / "usage.xml").read_bytes()
    assert data == dev.bootflash["usage.xml"]
    rum = parse_rum_bytes(data, path="usage.xml")
    assert rum.udi == (dev.active.pid, dev.active.sn)
    assert rum.hostname == dev.hostname
    assert len(rum.reports) == 4
    assert all(verify_payload(r.payload, r.signature["value"]) for r in rum.reports)
    usage = [{"payload": r.payload, "signature": r.signature} for r in rum.reports]
    ack = report_to_cisco(cisco.CiscoEmulator(seed=2), usage)
    assert "<smartLicenseRumAck>" in ack
    assert fleet.stats()["devices"]["iosxe-0004"]["save_usage"] == 1


def test_return_prints_a_code_the_return_parser_reads_and_removes_the_authorization(
    fleet: IosXeFleet,
) -> None:
    dev = fleet.devices[3]  # every 4th device holds an authorization code
    assert dev.active.udi in dev.authorizations
    command = "license smart authorization return local offline"
    transcript = shell(dev.ssh_port, command, command)
    first = transcript.split(f"{dev.hostname}#{command}")[1]
    code = parse_return_capture(f"{dev.hostname}#{command}{first}{dev.hostname}#")
    assert (code.pid, code.sn) == (dev.active.pid, dev.active.sn)
    assert code.code == return_code_for(dev.active.pid, dev.active.sn)
    assert "% Error: No authorization code is installed" in transcript
    assert dev.authorizations == {}
    assert fleet.stats()["devices"]["iosxe-0004"]["return"] == 1


def test_rest_faults_refuse_credentials_reset_hold_and_drop_after_acting(
    fleet: IosXeFleet,
) -> None:
    device = sample(fleet, 6)
    fleet.arm("iosxe-0006", "auth")
    assert device.get_list().status_code == 401
    assert device.get_list().status_code == 200

    fleet.arm("iosxe-0006", "refused")
    with pytest.raises(requests.ConnectionError):
        device.get_list()
    assert fleet.stats()["devices"]["iosxe-0006"]["list"] == 1  # the refused call never ran

    fleet.arm("iosxe-0006", "timeout")
    with pytest.raises(requests.ReadTimeout):
        requests.get(
            f"https://{device.ip}/smartlic-service/list",
            auth=("admin", "pw"),
            verify=device.verify,
            timeout=0.5,
        )

    device.close_reports()
    ack = report_to_cisco(cisco.CiscoEmulator(seed=3), device.get_all_reports().json()["usage"])
    fleet.arm("iosxe-0006", "disconnect", match="import")
    with pytest.raises(requests.ConnectionError):
        device.import_str(ack)
    assert fleet.stats()["devices"]["iosxe-0006"]["import"] == 1  # it acted, the answer was lost
    assert device.get_all_reports().json() == {}
    assert fleet.stats()["device_faults"] == {
        "auth": 1,
        "refused": 1,
        "timeout": 1,
        "disconnect": 1,
    }


def test_ssh_faults_refuse_reset_hold_and_drop_after_acting(
    fleet: IosXeFleet, tmp_path: Path
) -> None:
    dev = fleet.devices[6]
    fleet.arm(dev.hostname, "auth")
    with pytest.raises(asyncssh.PermissionDenied):
        shell(dev.ssh_port, "show license udi")
    fleet.arm(dev.hostname, "refused")
    with pytest.raises((OSError, asyncssh.Error)):
        shell(dev.ssh_port, "show license udi")
    fleet.arm(dev.hostname, "timeout")

    async def stalled() -> None:
        await asyncio.wait_for(_connect(dev.ssh_port), 0.5)

    with pytest.raises(TimeoutError):
        asyncio.run(stalled())
    assert "UDI:" in shell(dev.ssh_port, "show license udi")

    path = tmp_path / "lic.txt"
    path.write_text(authorization_for(dev.active.pid, dev.active.sn))
    scp_up(dev.ssh_port, path, "bootflash:lic.txt")
    fleet.arm(dev.hostname, "disconnect", match="import")
    with pytest.raises((OSError, asyncssh.Error, TimeoutError)):
        shell(dev.ssh_port, "license smart import bootflash:lic.txt")
    assert dev.active.udi in dev.authorizations  # it acted before the line dropped
    assert fleet.stats()["devices"][dev.hostname]["install"] == 1


def test_random_fault_rates_apply_to_every_login() -> None:
    with start_fleet(devices=1, faults="auth=1,seed=7") as faulty:
        for _ in range(2):
            with pytest.raises(asyncssh.PermissionDenied):
                shell(faulty.devices[0].ssh_port, "show license udi")
        assert faulty.stats()["device_faults"]["auth"] == 2


def test_stats_and_fault_control_answer_on_every_address(fleet: IosXeFleet) -> None:
    dev = fleet.devices[7]
    session = requests.Session()
    session.trust_env = False  # a REQUESTS_CA_BUNDLE in the environment would win over verify
    session.verify = str(fleet.cert_path)
    stats = session.get(f"https://127.0.0.1:{dev.rest_port}/_emulator/stats", timeout=5).json()
    assert sorted(stats["devices"]) == [f"iosxe-{i:04d}" for i in range(1, 13)]
    assert set(stats["devices"]["iosxe-0001"]) >= {
        "import",
        "install",
        "close_reports",
        "all_reports",
        "save_usage",
        "return",
        "logins",
    }
    armed = session.post(
        f"https://127.0.0.1:{dev.rest_port}/_emulator/faults",
        json={"hostname": "iosxe-0009", "kind": "auth"},
        timeout=5,
    )
    assert armed.json() == {"armed": True}
    assert sample(fleet, 9).get_list().status_code == 401
    unknown = session.post(
        f"https://127.0.0.1:{dev.rest_port}/_emulator/faults",
        json={"hostname": "nope", "kind": "auth"},
        timeout=5,
    )
    assert unknown.status_code == 404


def test_host_keys_survive_a_restart_with_the_same_seed_and_change_with_another() -> None:
    with start_fleet(devices=2, host_key_seed="alpha") as first:
        offered = server_key(first.devices[1].ssh_port)
    with start_fleet(devices=2, host_key_seed="alpha") as again:
        assert server_key(again.devices[1].ssh_port) == offered
    with start_fleet(devices=2, host_key_seed="beta") as other:
        assert server_key(other.devices[1].ssh_port) != offered
    assert host_key("alpha", "iosxe-0001") != host_key("alpha", "iosxe-0002")


def test_two_hundred_devices_start_and_each_answers_once() -> None:
    with start_fleet(devices=200) as big:
        assert len({d.rest_port for d in big.devices} | {d.ssh_port for d in big.devices}) == 400
        session = requests.Session()
        session.trust_env = False
        session.auth = ("admin", "pw")
        session.verify = str(big.cert_path)
        odd = [d for d in big.devices if d.index % 2]
        even = [d for d in big.devices if not d.index % 2]

        def rest(port: int) -> int:
            return session.get(
                f"https://127.0.0.1:{port}/smartlic-service/list", timeout=30
            ).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(rest, [d.rest_port for d in odd]))
        assert codes == [200] * len(odd)

        async def all_ssh() -> list[str]:
            gate = asyncio.Semaphore(25)

            async def one(port: int) -> str:
                async with gate, await _connect(port) as conn:
                    result = await conn.run("show license udi", check=True)
                    return str(result.stdout)

            return await asyncio.gather(*(one(d.ssh_port) for d in even))

        outputs = asyncio.run(all_ssh())
        assert all(o.startswith(f"UDI: {d.active.udi}") for o, d in zip(outputs, even, strict=True))
        counts = big.stats()["devices"]
        assert all(counts[d.hostname]["list"] == 1 for d in odd)
        assert all(counts[d.hostname]["commands"] == 1 for d in even)


def test_cli_emulate_ios_xe_writes_the_inventory_and_serves_stats(tmp_path: Path) -> None:
    exe = shutil.which("airgap")
    command = [exe] if exe else [sys.executable, "-m", "airgap"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    inventory = tmp_path / "fleet.csv"
    proc = subprocess.Popen(
        [*command, "emulate", "ios-xe", "--devices", "3", "--inventory-out", str(inventory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.endswith("/_emulator/stats"), url
        lines = inventory.read_text().splitlines()
        assert lines[0] == "host,port,platform,transport,credential,hostname,tags,verify,ca_bundle"
        assert [line.split(",")[3] for line in lines[1:]] == ["slp-rest", "ssh", "slp-rest"]
        assert lines[1].endswith(",fleet-ca.pem")
        stats = requests.get(url, verify=str(tmp_path / "fleet-ca.pem"), timeout=10).json()
        assert sorted(stats["devices"]) == ["iosxe-0001", "iosxe-0002", "iosxe-0003"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
