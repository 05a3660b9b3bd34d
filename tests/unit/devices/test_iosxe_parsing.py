"""What the SSH transport reads out of `show license …` output, in the layouts devices print."""

from __future__ import annotations

from airgap.devices.iosxe import (
    UdiAuthorization,
    parse_authorization_output,
    parse_rum_ids_output,
    parse_status_output,
    parse_udi_output,
    render_capture,
    safe_file_name,
)
from airgap.inside.parsers.udi import parse_udi_capture

STACK_UDI = (
    "UDI: PID:C9300-48P,SN:FOC1111A0AA\n\n"
    "HA UDI List:\n"
    "    Active:PID:C9300-48P,SN:FOC1111A0AA\n"
    "    Standby:PID:C9300-24T,SN:FOC2222B0BB\n\n\n"
)


def test_udi_output_lists_the_active_unit_first_and_every_member() -> None:
    assert parse_udi_output(STACK_UDI) == (
        ("C9300-48P", "FOC1111A0AA"),
        ("C9300-24T", "FOC2222B0BB"),
    )
    records = parse_udi_capture(render_capture("sw-1", "show license udi", STACK_UDI))
    assert [(r.hostname, r.sn, r.role) for r in records] == [
        ("sw-1", "FOC1111A0AA", "Active"),
        ("sw-1", "FOC2222B0BB", "Standby"),
    ]


def test_last_ack_received_is_read_from_the_usage_reporting_block() -> None:
    text = (
        "Usage Reporting:\n"
        "  Last ACK received: Mar 01 10:20:30 2026 UTC\n"
        "  Next ACK deadline: <none>\n"
    )
    assert parse_status_output(text) == "Mar 01 10:20:30 2026 UTC"
    assert parse_status_output("Usage Reporting:\n  Last ACK received: <none>\n") is None
    assert parse_status_output("Smart Licensing is ENABLED\n") is None


def test_authorization_output_gives_each_unit_its_status_and_code() -> None:
    text = (
        "Overall status:\n"
        "  Active: PID:C9300-48P,SN:FOC1111A0AA\n"
        "      Status: SMART AUTHORIZATION INSTALLED on Mar 01 10:20:30 2026 UTC\n"
        "      Last Confirmation code: 0a1b2c3d\n"
        "  Standby: PID:C9300-24T,SN:FOC2222B0BB\n"
        "    Status: NOT INSTALLED\n"
        "\n"
        "Authorizations:\n"
        "  C9K HSEC (Cat9K HSEC):\n"
        "    Term information:\n"
        "      Active: PID:C9300-48P,SN:FOC1111A0AA\n"
        "        Authorization type: SMART AUTHORIZATION INSTALLED\n"
    )
    entries = parse_authorization_output(text)
    assert entries == (
        UdiAuthorization(
            "C9300-48P",
            "FOC1111A0AA",
            "SMART AUTHORIZATION INSTALLED",
            "Mar 01 10:20:30 2026 UTC",
            "0a1b2c3d",
        ),
        UdiAuthorization("C9300-24T", "FOC2222B0BB", "NOT INSTALLED"),
    )
    assert entries[0].is_installed and not entries[1].is_installed


def test_rum_id_table_gives_the_acknowledged_ids() -> None:
    text = (
        "Smart Licensing Usage Report:\n"
        "====================================\n"
        "Report Id,          State,    Flag, Feature Name\n"
        "1700000001          CLOSED    N     network-advantage\n"
        "1700000002          ACK       N     dna-advantage\n"
    )
    assert parse_rum_ids_output(text) == frozenset({1700000002})
    assert parse_rum_ids_output("nothing here\n") is None


def test_file_names_on_the_device_are_made_safe() -> None:
    assert safe_file_name("../ack sw-1.xml") == "ack_sw-1.xml"
    assert safe_file_name("lic.txt") == "lic.txt"
