"""Return-code and SLR request-code captures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from airgap.errors import InputError
from airgap.inside.parsers.codes import (
    ReturnCode,
    SlrRequest,
    capture_kind,
    parse_return_capture,
    parse_return_file,
    parse_slr_request,
    parse_slr_request_file,
)

Sample = Callable[[str], Path]
Writer = Callable[..., Path]

CODE = "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"
SLR = "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C"


def test_return_sample(sample: Sample) -> None:
    assert parse_return_file(sample("cisco/return-code.txt")) == ReturnCode(
        "C9300-24T", "FOC2437L1ZK", CODE, "sw-core-01", 4
    )


@pytest.mark.parametrize(
    "text",
    [
        f"Enter this return code in Cisco Smart Software Manager portal:\r\n"
        f"UDI: PID:C9300-24T,SN:FOC2437L1ZK\r\n\tReturn code: {CODE}  \r\n",
        f"UDI: PID:C9300-24T,SN:FOC2437L1ZK\nReturn code:\n\n   {CODE}\n",
        f"UDI: PID:C9300-24T, SN:FOC2437L1ZK\nreturn code : {CODE}\n",
        f"UDI: PID:C9300-24T,SN:FOC2437L1ZK\n{CODE}\n",
    ],
)
def test_return_layout_variants(text: str) -> None:
    code = parse_return_capture(text)
    assert (code.pid, code.sn, code.code, code.hostname) == ("C9300-24T", "FOC2437L1ZK", CODE, None)


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("UDI: PID:C9300-24T,SN:FOC1\nReturn code: Cm01IB-cCt9Y6\n", 2, "is not a return code"),
        (f"Return code: {CODE}\n", 1, "has no 'UDI: PID:…,SN:…' line"),
        ("UDI: PID:C9300-24T,SN:FOC1\n", 1, "no 'Return code: …' found"),
        (
            f"UDI: PID:A,SN:B\nReturn code: {CODE}\nReturn code: {CODE[:-3]}abc\n",
            3,
            "a second return code",
        ),
        (f"UDI: PID:A,SN:B\nUDI: PID:A,SN:C\nReturn code: {CODE}\n", 2, "a second UDI"),
        ("UDI: PID:A,SN:B\nReturn code:\nsw1#", 2, "without a code"),
    ],
)
def test_bad_return_captures(text: str, line: int, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_return_capture(text, source="ret.txt")
    assert info.value.code == "E_INPUT"
    assert info.value.message.startswith(f"ret.txt:{line}: ")
    assert phrase in info.value.message


def test_slr_sample(sample: Sample) -> None:
    assert parse_slr_request_file(sample("cisco/slr-request-code.txt")) == SlrRequest(
        SLR, "C9300-24T", "FOC2437L1ZK", 3
    )


def test_slr_17x_variant_with_udi_and_request_code_lines() -> None:
    text = (
        "sw1#license smart reservation request local\r\n"
        "Enter this request code in the Cisco Smart Software Manager portal:\r\n"
        "UDI: PID:C9300-24T,SN:FOC2437L1ZK\r\n"
        f"Request code: {SLR}\r\n"
        "sw1#"
    )
    assert parse_slr_request(text) == SlrRequest(SLR, "C9300-24T", "FOC2437L1ZK", 4)


def test_slr_code_in_an_unknown_layout_is_kept_opaque() -> None:
    text = "UDI: PID:N9K-C93180YC-EX,SN:FDO1234\nRequest code: DB-ZXYZ12345abcdef\n"
    assert parse_slr_request(text) == SlrRequest(
        "DB-ZXYZ12345abcdef", "N9K-C93180YC-EX", "FDO1234", 2
    )
    assert parse_slr_request("QRST-1234567890\n") == SlrRequest("QRST-1234567890", None, None, 1)


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("sw1#show version\n", 1, "no SLR request code"),
        ("UDI: PID:C9300-24T,SN:OTHER1\n" + SLR + "\n", 2, "names C9300-24T:FOC2437L1ZK"),
        ("Request code: bad code!\n", 1, "is not a request code"),
        ("Enter this request code in the portal:\n\nsw1#", 1, "no request code after"),
    ],
)
def test_bad_slr_captures(text: str, line: int, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_slr_request(text, source="slr.txt")
    assert info.value.message.startswith(f"slr.txt:{line}: ")
    assert phrase in info.value.message


def test_capture_kind_tells_the_captures_apart(sample: Sample) -> None:
    def kind(name: str) -> str:
        return capture_kind(sample(name).read_text())

    assert kind("cisco/return-code.txt") == "return"
    assert kind("cisco/slr-request-code.txt") == "slr_request"
    assert kind("cisco/show-license-udi/ha.txt") == "other"
    assert kind("f5/dossier.txt") == "other"


def test_binary_return_file_is_refused(write: Writer) -> None:
    path = write("r.txt", b"\x00\x01")
    with pytest.raises(InputError, match=r":1: binary data"):
        parse_return_file(path)
