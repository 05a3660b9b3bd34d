"""`show license udi` captures: the shared samples, terminal-log variants and garbage."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path

import pytest

from airgap.errors import InputError
from airgap.inside.parsers.udi import UdiRecord, parse_udi_capture, parse_udi_file

Sample = Callable[[str], Path]
Writer = Callable[..., Path]

HA_RECORDS = [
    ("C9300-48P", "FOC2501Y0QM", "Active"),
    ("C9300-48P", "FOC2501Y0R2", "Standby"),
    ("C9300-48P", "FOC2504X7TT", "Member"),
]


def _udis(records: list[UdiRecord]) -> list[tuple[str | None, str, str, str | None]]:
    return [(r.hostname, r.pid, r.sn, r.role) for r in records]


# --- the shared samples --------------------------------------------------------------------------


def test_single_sample(sample: Sample) -> None:
    assert parse_udi_file(sample("cisco/show-license-udi/single.txt")) == [
        UdiRecord(None, "C9300-24T", "FOC2437L1ZK", None, 1)
    ]


def test_ha_sample_gives_one_record_per_unit_and_drops_the_leading_udi(sample: Sample) -> None:
    records = parse_udi_file(sample("cisco/show-license-udi/ha.txt"))
    assert _udis(records) == [(None, pid, sn, role) for pid, sn, role in HA_RECORDS]
    assert [r.line for r in records] == [4, 5, 6]


def test_table_sample_marks_the_starred_unit_active(sample: Sample) -> None:
    records = parse_udi_file(sample("cisco/show-license-udi/table.txt"))
    assert records == [
        UdiRecord(None, "C9300-48U", "FCW2231G0KD", "Active", 3),
        UdiRecord(None, "C9300-48U", "FCW2231G0KF", "Member", 4),
        UdiRecord(None, "C9300-24U", "FCW2245L1PQ", "Member", 5),
    ]


def test_prompt_sample_takes_the_hostname_from_the_prompt(sample: Sample) -> None:
    assert parse_udi_file(sample("cisco/show-license-udi/with-prompt.txt")) == [
        UdiRecord("sw-core-01", "C9300-24T", "FOC2437L1ZK", None, 4)
    ]


# --- terminal-log variants -----------------------------------------------------------------------


def test_crlf_capture_keeps_line_numbers(sample: Sample) -> None:
    text = sample("cisco/show-license-udi/with-prompt.txt").read_text().replace("\n", "\r\n")
    assert parse_udi_capture(text) == [UdiRecord("sw-core-01", "C9300-24T", "FOC2437L1ZK", None, 4)]


def test_user_exec_prompt_names_the_host() -> None:
    text = "rtr-wan-01>show lic udi\nUDI: PID:ISR4331/K9,SN:FDO2213A0KX\n\nrtr-wan-01>"
    assert _udis(parse_udi_capture(text)) == [("rtr-wan-01", "ISR4331/K9", "FDO2213A0KX", None)]


def test_ha_capture_with_prompt_gives_every_unit_the_hostname(sample: Sample) -> None:
    body = sample("cisco/show-license-udi/ha.txt").read_text()
    text = f"stack-01#show license udi\n{body}stack-01#"
    assert _udis(parse_udi_capture(text)) == [
        ("stack-01", pid, sn, role) for pid, sn, role in HA_RECORDS
    ]


def test_ha_list_without_the_leading_udi_line() -> None:
    text = (
        "HA UDI List:\n"
        "    Active:PID:C9300-48P,SN:FOC2501Y0QM\n"
        "    Standby:PID:C9300-48P,SN:FOC2501Y0R2\n"
    )
    assert _udis(parse_udi_capture(text)) == [
        (None, pid, sn, role) for pid, sn, role in HA_RECORDS[:2]
    ]


def test_more_pagination_with_backspaces_and_tabs_and_trailing_spaces() -> None:
    more = " --More-- " + "\b" * 10 + " " * 10 + "\b" * 10
    text = (
        "sw-core-01#terminal length 0   \n"
        "sw-core-01#show license udi\t\n"
        "UDI: PID:C9300-48P,SN:FOC2501Y0QM  \n"
        "\n"
        "HA UDI List:\t\n"
        "\tActive:PID:C9300-48P,SN:FOC2501Y0QM\n"
        f"{more}\tStandby:PID:C9300-48P,SN:FOC2501Y0R2   \n"
        " --More-- Member:PID:C9300-48P,SN:FOC2504X7TT\n"
        "sw-core-01#"
    )
    records = parse_udi_capture(text)
    assert _udis(records) == [("sw-core-01", pid, sn, role) for pid, sn, role in HA_RECORDS]
    assert [r.line for r in records] == [6, 7, 8]


def test_terminal_length_echo_and_banners_are_ignored() -> None:
    text = (
        "=~=~= PuTTY log 2024.10.11 =~=~=\nterminal length 0\nUDI: PID:C9300-24T,SN:FOC2437L1ZK\n"
    )
    assert _udis(parse_udi_capture(text)) == [(None, "C9300-24T", "FOC2437L1ZK", None)]


def test_table_without_star_has_no_roles() -> None:
    text = (
        "SlotID   PID                    SN                      UDI\n"
        "-----------------------------------------------------------\n"
        " 1       C9300-48U             FCW2231G0KD     C9300-48U:FCW2231G0KD\n"
        " 2       C9300-48U             FCW2231G0KF     C9300-48U:FCW2231G0KF\n"
    )
    assert [r.role for r in parse_udi_capture(text)] == [None, None]


def test_ios15_device_table_with_prompt() -> None:
    text = (
        "rtr1#show license udi\n"
        "Device#   PID                   SN              UDI\n"
        "-----------------------------------------------------------------\n"
        "*0        C3900-SPE150/K9       FOC16050QP6     C3900-SPE150/K9:FOC16050QP6\n"
        "\n"
        "rtr1#\n"
    )
    assert parse_udi_capture(text) == [
        UdiRecord("rtr1", "C3900-SPE150/K9", "FOC16050QP6", "Active", 4)
    ]


def test_output_of_other_commands_in_the_log_is_skipped() -> None:
    text = (
        "sw1#show license status\n"
        "UDI: PID:NOT-THIS,SN:NOTTHIS\n"
        "sw1#show license udi\n"
        "UDI: PID:C9300-24T,SN:FOC2437L1ZK\n"
        "sw1#"
    )
    assert _udis(parse_udi_capture(text)) == [("sw1", "C9300-24T", "FOC2437L1ZK", None)]


def test_several_devices_in_one_log_keep_their_own_hostnames() -> None:
    text = (
        "a1#show license udi\nUDI: PID:C9300-24T,SN:FOC0000001\na1#exit\n"
        "b2#sh lic udi\nUDI: PID:C9300-24T,SN:FOC0000002\nb2#"
    )
    assert [(r.hostname, r.sn) for r in parse_udi_capture(text)] == [
        ("a1", "FOC0000001"),
        ("b2", "FOC0000002"),
    ]


def test_same_udi_twice_in_one_capture_is_reported_once() -> None:
    text = "UDI: PID:C9300-24T,SN:FOC2437L1ZK\nUDI: PID:C9300-24T,SN:FOC2437L1ZK\n"
    assert len(parse_udi_capture(text)) == 1


def test_utf16_capture_with_bom_is_read(write: Writer) -> None:
    text = "sw9#show license udi\r\nUDI: PID:C9300-24T,SN:FOC2437L1ZK\r\n"
    path = write("putty.txt", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert _udis(parse_udi_file(path)) == [("sw9", "C9300-24T", "FOC2437L1ZK", None)]


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "phrase"),
    [
        ("sw1#show license udi\nUDI: PID:C9300-24T\n", 2, "expected 'UDI: PID:…,SN:…'"),
        ("HA UDI List:\n  Active:PID:C9300,SERIAL:X\n", 2, "expected 'PID:…,SN:…'"),
        ("\n\nPID:C9300-24T SN:FOC1\n", 3, "expected 'PID:…,SN:…'"),
        ("SlotID PID SN UDI\n*1 C9300-48U FCW2231G0KD C9300-48U:OTHER\n", 2, "does not match"),
        ("SlotID PID SN UDI\n----\nnonsense\n", 3, "table row"),
        ("UDI: PID:C9300 24T,SN:X\n", 1, "expected"),
        ("nothing to see here\n", 1, "no 'UDI: PID:…,SN:…' line"),
    ],
)
def test_malformed_captures_name_file_and_line(text: str, line: int, phrase: str) -> None:
    with pytest.raises(InputError) as info:
        parse_udi_capture(text, source="show-udi.txt")
    assert info.value.code == "E_INPUT"
    assert info.value.message.startswith(f"show-udi.txt:{line}: ")
    assert phrase in info.value.message


def test_return_code_capture_is_not_a_udi_capture(sample: Sample) -> None:
    # The return capture has a `UDI:` line too; reading it as a device list would be wrong.
    with pytest.raises(InputError, match=r"return-code\.txt:1: .*not `show license udi`"):
        parse_udi_file(sample("cisco/return-code.txt"))


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", ":1: the file is empty"),
        (b"  \r\n\n", ":1: the file is empty"),
        (b"UDI: PID:C9300-24T,SN:FOC1\n\x00\x01\x02", ":2: binary data"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", ":3: binary data"),
        (b"UDI: PID:C9300-24T,SN:FOC\xe91\n", ":1: not UTF-8"),
        (b'{"udi": {"pid": "C9300-24T", "sn": "FOC1"}}\n', ":1: no 'UDI"),
        (b"<smartLicense></smartLicense>", ":1: no 'UDI"),
    ],
)
def test_garbage_files_are_refused(write: Writer, content: bytes, phrase: str) -> None:
    path = write("capture.txt", content)
    with pytest.raises(InputError) as info:
        parse_udi_file(path)
    assert info.value.code == "E_INPUT"
    assert info.value.message.startswith(f"{path}:")
    assert phrase in info.value.message


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        parse_udi_file(tmp_path / "absent.txt")
    with pytest.raises(InputError, match="is a directory"):
        parse_udi_file(tmp_path)


def test_return_capture_without_prompt_is_refused_at_its_first_line(sample: Sample) -> None:
    text = sample("cisco/return-code.txt").read_text().split("\n", 1)[1]
    with pytest.raises(InputError, match=r"ret\.txt:1: .*return-code or SLR request capture"):
        parse_udi_capture(text, source="ret.txt")


@pytest.mark.parametrize(
    "name", ["cisco/auth-code-lic.txt", "cisco/rum/rum-report-c9300.xml", "f5/dossier.txt"]
)
def test_other_samples_hold_no_udi(sample: Sample, name: str) -> None:
    with pytest.raises(InputError, match="no 'UDI: PID:…,SN:…' line"):
        parse_udi_file(sample(name))
