"""CSSM portal files: the usage upload airgap writes, and the ACK download it reads."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airgap.errors import PortalFileError
from airgap.formats.cssm import (
    DeviceUsage,
    read_ack_download,
    stamp_for,
    usage_document,
    write_usage_upload,
)
from airgap.formats.smartlicense import ack_udis, authorization_udi


def _untar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _tar_gz(members: list[tuple[str, bytes]], *, extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return gzip.compress(raw.getvalue())


def ack(pid: str, sn: str, report_ids: list[int]) -> bytes:
    data = [
        {
            "sudi": {"udi_pid": pid, "udi_serial_number": sn},
            "ack_status": "SUCCESS",
            "report_acks": [{"report_id": r, "status": "ACK"} for r in report_ids],
        }
    ]
    return (
        "<smartLicense><smartLicenseRumAck><data><![CDATA["
        + json.dumps(data, separators=(",", ":"))
        + "]]></data><signature>sig</signature></smartLicenseRumAck></smartLicense>"
    ).encode()


def download(
    path: Path, files: list[tuple[str, bytes]], inner_name: str = "ACK_UD_VA_1.tar.gz"
) -> Path:
    path.write_bytes(_tar_gz([(inner_name, _tar_gz(files))]))
    return path


RUM = (
    b'<?xml version="1.0"?>\n<smartLicense>\n'
    b'<RUMReport><![CDATA[{"payload":"{}"}]]></RUMReport>\n</smartLicense>\n'
)


def test_usage_upload_has_the_manifest_and_one_file_per_device(tmp_path: Path) -> None:
    stamp = stamp_for(datetime(2026, 12, 3, 3, 29, 36, tzinfo=UTC))
    assert stamp == "20261203T032936Z"
    devices = [DeviceUsage("1", RUM), DeviceUsage("2", usage_document(b"<RUMReport>x</RUMReport>"))]
    path = write_usage_upload(
        tmp_path, devices, stamp=stamp, mtime=0, smart_account="demo.example.com"
    )
    assert path.name == f"UD_SA_{stamp}.tar.gz"
    outer = _untar(path.read_bytes())
    assert sorted(outer) == ["UD_VA_20261203T032936Z.tar.gz", "manifest.mf"]
    manifest = outer["manifest.mf"].decode()
    assert manifest.startswith("Manifest-Version: 1.0\nCreated-By: airgap\n")
    assert "Smart-Account: demo.example.com\n" in manifest
    assert f"\n\nName: /UD_VA_{stamp}.tar.gz\n" in manifest
    inner = _untar(outer[f"UD_VA_{stamp}.tar.gz"])
    assert inner == {
        f"dev_1_{stamp}.txt": RUM,  # byte for byte: the signatures cover the payloads
        f"dev_2_{stamp}.txt": b"<smartLicense><RUMReport>x</RUMReport></smartLicense>",
    }
    again = write_usage_upload(
        tmp_path / "..", devices, stamp=stamp, mtime=0, smart_account="demo.example.com"
    )
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("bad", ["", "a_b", "x" * 33, "../1"])
def test_usage_upload_refuses_unusable_device_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PortalFileError):
        write_usage_upload(tmp_path, [DeviceUsage(bad, RUM)], stamp="s", mtime=0)


def test_usage_upload_refuses_a_repeated_device_id(tmp_path: Path) -> None:
    with pytest.raises(PortalFileError, match="repeated"):
        write_usage_upload(
            tmp_path, [DeviceUsage("1", RUM), DeviceUsage("1", RUM)], stamp="s", mtime=0
        )


def test_ack_download_is_read_per_device(tmp_path: Path) -> None:
    one, two = ack("C9300-24T", "FOC1", [7]), ack("C9300-48P", "FOC2", [8, 9])
    path = download(
        tmp_path / "ack.tar.gz",
        [("ACK_dev_1_x.txt", one), ("ACK_dev_2_x.txt", two), ("README", b"hi")],
    )
    acks = read_ack_download(path)
    assert [(a.device_id, a.name, a.data) for a in acks] == [
        ("1", "ACK_dev_1_x.txt", one),
        ("2", "ACK_dev_2_x.txt", two),
    ]
    assert ack_udis(two) == [("C9300-48P", "FOC2")]


def test_the_same_ack_twice_is_read_once_two_different_are_refused(tmp_path: Path) -> None:
    one = ack("C9300-24T", "FOC1", [7])
    path = download(tmp_path / "same.tar.gz", [("ACK_dev_1_a.txt", one), ("ACK_dev_1_b.txt", one)])
    assert len(read_ack_download(path)) == 1
    other = ack("C9300-24T", "FOC1", [8])
    path = download(tmp_path / "two.tar.gz", [("ACK_dev_1_a.txt", one), ("ACK_dev_1_b.txt", other)])
    with pytest.raises(PortalFileError, match="two different ACKs for device file 1"):
        read_ack_download(path)


def test_a_device_file_reporting_two_devices_may_get_one_ack_for_each(tmp_path: Path) -> None:
    # An HA pair saves both units' reports in one file: one ACK per unit comes back.
    active, standby = ack("C9500-32C", "FOC1", [7]), ack("C9500-32C", "FOC2", [8])
    path = download(
        tmp_path / "pair.tar.gz", [("ACK_dev_1_x.txt", active), ("ACK_dev_1_1_x.txt", standby)]
    )
    assert [(a.device_id, a.data) for a in read_ack_download(path)] == [
        ("1", active),
        ("1", standby),
    ]


def test_a_member_named_like_an_ack_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = download(tmp_path / "x.tar.gz", [("ACK_dev_1_x.txt", b"<smartLicenseAuthorization/>")])
    with pytest.raises(PortalFileError, match="not an ACK"):
        read_ack_download(path)


def test_hostile_or_wrong_downloads_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("ACK_dev_1_x.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases = {
        "not-gzip": b"plain text",
        "no-inner": _tar_gz([("manifest.mf", b"x")]),
        "symlink": _tar_gz([("ACK_UD_VA_1.tar.gz", _tar_gz([], extra=[link]))]),
        "dotdot": _tar_gz(
            [("ACK_UD_VA_1.tar.gz", _tar_gz([("../ACK_dev_1_x.txt", ack("P", "S", [1]))]))]
        ),
        "truncated": _tar_gz(
            [("ACK_UD_VA_1.tar.gz", _tar_gz([("ACK_dev_1_x.txt", ack("P", "S", [1]))]))]
        )[:-40],
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.tar.gz"
        path.write_bytes(data)
        with pytest.raises(PortalFileError):
            read_ack_download(path)


def test_a_gzip_bomb_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import airgap.formats.cssm as cssm

    monkeypatch.setattr(cssm, "DOWNLOAD_LIMIT", 1 << 20)
    bomb = _tar_gz([("ACK_UD_VA_1.tar.gz", _tar_gz([("ACK_dev_1_x.txt", b"\0" * (4 << 20))]))])
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(bomb)
    with pytest.raises(PortalFileError, match=r"limit|bytes"):
        read_ack_download(path)


def test_an_authorization_code_names_its_device() -> None:
    code = (
        b"<smartLicense><smartLicenseAuthorization><udi>P:C9300-24T,S:FOC123</udi>"
        b"</smartLicenseAuthorization></smartLicense>"
    )
    assert authorization_udi(code) == ("C9300-24T", "FOC123")
    assert authorization_udi(ack("P", "S", [1])) is None
