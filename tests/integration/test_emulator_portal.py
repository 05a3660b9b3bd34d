"""The Cisco emulator's portal paths: the real usage upload in, the real ACK download out, and
authorization codes and returns, sharing state with the API paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airgap.emulators.cisco import CiscoEmulator, build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, return_code_for, write_device
from airgap.emulators.server import EmulatorServer
from airgap.formats.cssm import (
    DeviceUsage,
    read_ack_download,
    write_usage_upload,
)
from airgap.formats.smartlicense import ack_udis, authorization_udi


@pytest.fixture
def cisco() -> Iterator[EmulatorServer]:
    server = build_cisco_server(poll_delay=0).start()
    yield server
    server.stop()


def _upload(tmp_path: Path, count: int) -> tuple[Path, list[tuple[str, str]]]:
    devices, udis = [], []
    for n in range(1, count + 1):
        pid, sn = "C9300-24T", f"FOC{n:08d}"
        files = write_device(pid=pid, sn=sn, hostname=f"sw-{n}", out=tmp_path / "dev")
        devices.append(DeviceUsage(str(n), files.rum.read_bytes()))
        udis.append((pid, sn))
    folder = tmp_path / "upload"
    folder.mkdir(exist_ok=True)
    path = write_usage_upload(folder, devices, stamp="20261203T000000Z", mtime=0)
    return path, udis


def test_usage_upload_gives_an_ack_per_device_file(cisco: EmulatorServer, tmp_path: Path) -> None:
    upload, udis = _upload(tmp_path, 5)
    answer = requests.post(f"{cisco.url}/portal/usage-upload", data=upload.read_bytes(), timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/gzip"
    assert "X-Portal-Refused" not in answer.headers
    (tmp_path / "ack.tar.gz").write_bytes(answer.content)
    acks = read_ack_download(tmp_path / "ack.tar.gz")
    assert [a.device_id for a in acks] == ["1", "2", "3", "4", "5"]
    assert [ack_udis(a.data) for a in acks] == [[u] for u in udis]
    mutations = requests.get(f"{cisco.url}/_emulator/stats", timeout=5).json()["mutations"]
    assert {udi: counts["report"] for udi, counts in mutations.items()} == {
        f"{pid}:{sn}": 1 for pid, sn in udis
    }


def test_the_same_usage_uploaded_again_is_refused_as_duplicate(
    cisco: EmulatorServer, tmp_path: Path
) -> None:
    upload, _ = _upload(tmp_path, 2)
    requests.post(f"{cisco.url}/portal/usage-upload", data=upload.read_bytes(), timeout=10)
    again = requests.post(f"{cisco.url}/portal/usage-upload", data=upload.read_bytes(), timeout=10)
    assert again.status_code == 200
    assert "Duplicate report" in again.headers["X-Portal-Refused"]
    (tmp_path / "again.tar.gz").write_bytes(again.content)
    assert read_ack_download(tmp_path / "again.tar.gz") == []


def test_a_changed_payload_byte_fails_the_signature(cisco: EmulatorServer, tmp_path: Path) -> None:
    files = write_device(pid="C9300-24T", sn="FOC00000001", hostname="sw-1", out=tmp_path)
    tampered = files.rum.read_bytes().replace(b'\\"value\\":\\"1\\"', b'\\"value\\":\\"2\\"', 1)
    assert tampered != files.rum.read_bytes()
    upload = write_usage_upload(tmp_path, [DeviceUsage("1", tampered)], stamp="s", mtime=0)
    answer = requests.post(f"{cisco.url}/portal/usage-upload", data=upload.read_bytes(), timeout=10)
    assert "Signature validation failed" in answer.headers["X-Portal-Refused"]


def test_an_authorization_code_from_the_portal_names_its_device(cisco: EmulatorServer) -> None:
    body = {
        "udi_pid": "C9300-24T",
        "udi_serial_number": "FOC00000007",
        "entitlements": [{"tag": NETWORK_ADVANTAGE_TAG, "count": 1}],
    }
    answer = requests.post(f"{cisco.url}/portal/authorization", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert authorization_udi(answer.content) == ("C9300-24T", "FOC00000007")
    app = cisco.app
    assert isinstance(app, CiscoEmulator)
    assert "C9300-24T:FOC00000007" in app.reservations
    # The same reservation can be returned there with the device's return code.
    returned = requests.post(
        f"{cisco.url}/portal/return",
        json={
            "udi_pid": "C9300-24T",
            "udi_serial_number": "FOC00000007",
            "return_code": return_code_for("C9300-24T", "FOC00000007"),
        },
        timeout=10,
    )
    assert returned.status_code == 200 and returned.json()["status"] == "SUCCESS"
    assert "C9300-24T:FOC00000007" not in app.reservations


def test_bad_portal_requests_get_400(cisco: EmulatorServer) -> None:
    assert (
        requests.post(f"{cisco.url}/portal/usage-upload", data=b"junk", timeout=5).status_code
        == 400
    )
    assert requests.post(f"{cisco.url}/portal/authorization", json={}, timeout=5).status_code == 400
    assert requests.get(f"{cisco.url}/portal/authorization", timeout=5).status_code == 405
    assert requests.post(f"{cisco.url}/portal/nothing", timeout=5).status_code == 404
