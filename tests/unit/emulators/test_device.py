"""The emulated device's files: UDI capture, signed RUM report and return-code capture."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airgap.emulators.device import (
    product_instance_identifier,
    return_code_for,
    sign_payload,
    verify_payload,
    write_device,
)
from airgap.errors import InputError

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
RETURN_CODE_SHAPE = re.compile(r"C[A-Za-z0-9]{5}(-[A-Za-z0-9]{6}){7}-[A-Za-z0-9]{3}")


def rum_reports(text: str) -> list[dict[str, object]]:
    return [
        json.loads(raw) for raw in re.findall(r"<RUMReport><!\[CDATA\[(.*?)\]\]></RUMReport>", text)
    ]


def test_writes_udi_and_rum_files_with_default_hostname(tmp_path: Path) -> None:
    files = write_device(pid="C9300-24T", sn="FOC2437L1ZK", hostname=None, out=tmp_path, now=NOW)
    assert files.hostname == "dev-foc2437l1zk"
    assert files.udi == tmp_path / "dev-foc2437l1zk.udi.txt"
    assert files.rum == tmp_path / "dev-foc2437l1zk.rum.xml"
    assert files.return_code is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dev-foc2437l1zk.rum.xml",
        "dev-foc2437l1zk.udi.txt",
    ]


def test_udi_capture_matches_the_sample_layout(tmp_path: Path) -> None:
    files = write_device(pid="C9300-24T", sn="FOC2437L1ZK", hostname="sw-core-01", out=tmp_path)
    # Byte for byte samples/cisco/show-license-udi/with-prompt.txt.
    assert files.udi.read_bytes() == (
        b"\nsw-core-01#terminal length 0\nsw-core-01#show license udi\n"
        b"UDI: PID:C9300-24T,SN:FOC2437L1ZK\n\n\nsw-core-01#"
    )


def test_rum_report_is_signed_and_names_the_device(tmp_path: Path) -> None:
    files = write_device(pid="ISR4331/K9", sn="FDO2213A0KX", hostname="rtr", out=tmp_path, now=NOW)
    text = files.rum.read_text()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<smartLicense>\n')
    assert text.endswith("</smartLicense>\n")
    info = json.loads(re.search(r"<data><!\[CDATA\[(.*?)\]\]></data>", text).group(1))  # type: ignore[union-attr]
    assert info["hostname"] == "rtr"
    assert info["sudi"] == {"udi_pid": "ISR4331/K9", "udi_serial_number": "FDO2213A0KX"}
    assert info["timestamp"] == int(NOW.timestamp() * 1000)
    reports = rum_reports(text)
    assert reports
    for report in reports:
        payload = report["payload"]
        assert isinstance(payload, str)
        signature = report["signature"]
        assert isinstance(signature, dict)
        assert report["header"] == {"type": "rum"}
        assert verify_payload(payload, signature["value"])
        body = json.loads(payload)
        instance = body["asset_identification"]["instance"]
        assert instance["sudi"] == info["sudi"]
        assert instance["product_instance_identifier"] == product_instance_identifier(
            "ISR4331/K9", "FDO2213A0KX"
        )
        measurement = body["measurements"][0]
        assert measurement["sample_interval"] == measurement["end_time"] - measurement["start_time"]


def test_c9300_gets_one_report_per_entitlement(tmp_path: Path) -> None:
    files = write_device(pid="C9300-24T", sn="FOC1", hostname=None, out=tmp_path, now=NOW)
    reports = rum_reports(files.rum.read_text())
    tags = [json.loads(str(r["payload"]))["meta"]["entitlement_tag"] for r in reports]
    assert len(tags) == 2
    assert len(set(tags)) == 2


def test_output_is_deterministic_for_the_same_inputs(tmp_path: Path) -> None:
    a = write_device(pid="C9300-24T", sn="FOC1", hostname="h", out=tmp_path / "a", now=NOW)
    b = write_device(pid="C9300-24T", sn="FOC1", hostname="h", out=tmp_path / "b", now=NOW)
    assert a.rum.read_bytes() == b.rum.read_bytes()
    later = write_device(
        pid="C9300-24T",
        sn="FOC1",
        hostname="h",
        out=tmp_path / "c",
        now=NOW.replace(day=24),
    )
    assert later.rum.read_bytes() != a.rum.read_bytes()


def test_return_code_capture_uses_return_code_for(tmp_path: Path) -> None:
    files = write_device(
        pid="C9300-24T", sn="FOC2437L1ZK", hostname="sw-core-01", out=tmp_path, return_code=True
    )
    assert files.return_code == tmp_path / "sw-core-01.return.txt"
    text = files.return_code.read_text()
    code = return_code_for("C9300-24T", "FOC2437L1ZK")
    assert f"UDI: PID:C9300-24T,SN:FOC2437L1ZK\n    Return code: {code}\n" in text
    assert text.startswith("sw-core-01#license smart authorization return local offline\n")
    assert text.endswith("\nsw-core-01#")


def test_return_code_has_the_real_shape_and_is_stable() -> None:
    code = return_code_for("C9300-24T", "FOC2437L1ZK")
    assert RETURN_CODE_SHAPE.fullmatch(code)
    assert code == return_code_for("C9300-24T", "FOC2437L1ZK")
    assert code != return_code_for("C9300-24T", "FOC2437L1ZL")
    # The code in samples/cisco/return-code.txt has this shape too.
    assert RETURN_CODE_SHAPE.fullmatch(
        "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"
    )


def test_any_changed_byte_breaks_the_signature() -> None:
    payload = '{"a":1,"b":"x"}'
    value = sign_payload(payload)
    assert verify_payload(payload, value)
    for index in range(len(payload)):
        changed = payload[:index] + chr(ord(payload[index]) ^ 1) + payload[index + 1 :]
        assert not verify_payload(changed, value)
    assert not verify_payload(payload + " ", value)
    flipped = ("B" if value[0] == "A" else "A") + value[1:]
    assert not verify_payload(payload, flipped)
    assert not verify_payload(payload, "not base64 at all é")


@pytest.mark.parametrize(
    ("pid", "sn", "hostname"),
    [
        ("c9300-24t", "FOC1", None),
        ("C9300 24T", "FOC1", None),
        ("", "FOC1", None),
        ("C9300-24T", "foc1", None),
        ("C9300-24T", "FOC-1", None),
        ("C9300-24T", "", None),
        ("C9300-24T", "FOC1", "../evil"),
        ("C9300-24T", "FOC1", "a/b"),
        ("C9300-24T", "FOC1", ""),
    ],
)
def test_invalid_inputs_are_refused(
    tmp_path: Path, pid: str, sn: str, hostname: str | None
) -> None:
    with pytest.raises(InputError) as info:
        write_device(pid=pid, sn=sn, hostname=hostname, out=tmp_path / "out")
    assert info.value.code == "E_INPUT"
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_an_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError):
        write_device(pid="C9300-24T", sn="FOC1", hostname=None, out=blocker / "sub")
