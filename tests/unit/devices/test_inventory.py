"""Inventories: every kind of bad row reported with its line number, in CSV and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airgap.devices.inventory import DeviceEntry, load_inventory, parse_inventory
from airgap.errors import InventoryError

HEADER = "host,port,platform,transport,credential,hostname,tags\n"


def problems_of(text: str, *, kind: str = "csv") -> list[str]:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(text, source="inv", base=Path("/base"), kind=kind)
    assert caught.value.code == "E_INVENTORY"
    return caught.value.problems


def test_a_good_csv_inventory_gets_defaults_for_port_and_transport(tmp_path: Path) -> None:
    path = tmp_path / "inv.csv"
    path.write_text(
        "host,port,platform,transport,credential,hostname,tags,verify,ca_bundle,regkey,add_on_keys\n"
        "10.0.0.1,,ios-xe,,lab,sw-1,core;dc1,,ca.pem,,\n"
        "10.0.0.2,,ios-xe,ssh,lab,sw-2,,,,,\n"
        "# a comment row\n"
        "10.0.0.3,8443,bigip,,f5,lb-1,,false,,AAAAA-BBBBB-CCCCC-DDDDD-EEEEEEE,FFFFFFF-GGGGGGG\n"
    )
    inventory = load_inventory(path)
    assert list(inventory) == [
        DeviceEntry(
            "10.0.0.1",
            443,
            "ios-xe",
            "slp-rest",
            "lab",
            "sw-1",
            ("core", "dc1"),
            str(tmp_path / "ca.pem"),
            line=2,
        ),
        DeviceEntry("10.0.0.2", 22, "ios-xe", "ssh", "lab", "sw-2", line=3),
        DeviceEntry(
            "10.0.0.3",
            8443,
            "bigip",
            "icontrol",
            "f5",
            "lb-1",
            (),
            False,
            "AAAAA-BBBBB-CCCCC-DDDDD-EEEEEEE",
            ("FFFFFFF-GGGGGGG",),
            line=5,
        ),
    ]
    endpoint = inventory.devices[0].endpoint(timeout=7)
    assert (endpoint.host, endpoint.port, endpoint.verify, endpoint.timeout) == (
        "10.0.0.1",
        443,
        str(tmp_path / "ca.pem"),
        7,
    )
    assert inventory.by_hostname("SW-2") == inventory.devices[1]


def test_every_bad_csv_row_is_reported_with_its_line() -> None:
    text = HEADER + (
        "10.0.0.1,70000,ios-xe,,lab,sw-1,\n"  # 2: port out of range
        "10.0.0.2,22,junos,,lab,sw-2,\n"  # 3: unknown platform
        "10.0.0.3,,ios-xe,telnet,lab,sw-3,\n"  # 4: transport not for ios-xe
        "10.0.0.4,,bigip,ssh,lab,lb-4,\n"  # 5: transport not for bigip
        ",,ios-xe,,lab,sw-5,\n"  # 6: empty host
        "10.0.0.6,,ios-xe,,,sw-6,\n"  # 7: empty credential
        "10.0.0.7,,ios-xe,,lab lab,sw-7,\n"  # 8: bad credential name
        "10.0.0.8,,ios-xe,,lab,bad host,\n"  # 9: bad hostname
        "10.0.0.9,,ios-xe,,lab,sw-9,bad tag\n"  # 10: bad tag
        "10.0.0.10,,ios-xe,,lab,sw-10,,extra\n"  # 11: too many cells
        "10.0.0.11,abc,ios-xe,,lab,sw-11,\n"  # 12: port not a number
    )
    problems = problems_of(text)
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == list(range(2, 13))
    assert "port '70000'" in problems[0]
    assert "platform 'junos'" in problems[1]
    assert "transport 'telnet'" in problems[2]
    assert "transport 'ssh'" in problems[3]
    assert "host is empty" in problems[4]
    assert "credential is empty" in problems[5]


def test_verify_ca_bundle_and_bigip_keys_are_checked() -> None:
    header = "host,platform,transport,credential,hostname,verify,ca_bundle,regkey\n"
    text = header + (
        "10.0.0.1,ios-xe,,lab,sw-1,maybe,,\n"  # 2: verify not a boolean
        "10.0.0.2,ios-xe,,lab,sw-2,false,ca.pem,\n"  # 3: verify=false and a bundle
        "10.0.0.3,ios-xe,ssh,lab,sw-3,,ca.pem,\n"  # 4: a bundle on ssh
        "10.0.0.4,ios-xe,,lab,sw-4,,,AAAAA-BBBBB\n"  # 5: a regkey on ios-xe
        "10.0.0.5,bigip,,lab,lb-5,,,not-a-key\n"  # 6: a malformed regkey
    )
    problems = problems_of(text)
    assert [int(p.split(":")[1]) for p in problems] == [2, 3, 4, 5, 6]


def test_duplicate_addresses_and_hostnames_are_refused() -> None:
    text = HEADER + (
        "10.0.0.1,,ios-xe,,lab,sw-1,\n"
        "10.0.0.1,443,ios-xe,,lab,sw-2,\n"  # same host:port as line 2 (443 is the default)
        "10.0.0.3,,ios-xe,,lab,SW-1,\n"  # same hostname as line 2
        "10.0.0.1,22,ios-xe,ssh,lab,sw-4,\n"  # another port of the same host is fine
    )
    problems = problems_of(text)
    assert problems == [
        "inv:3: 10.0.0.1:443 is already listed on line 2",
        "inv:4: hostname SW-1 is already listed on line 2",
    ]


def test_header_problems_are_reported() -> None:
    assert problems_of("host,port,platform,colour,credential,hostname\n") == [
        "inv:1: unknown column 'colour'"
    ]
    assert problems_of("host,platform,credential\n1.2.3.4,ios-xe,lab\n") == [
        "inv:1: the header has no 'hostname' column"
    ]
    assert problems_of("") == [
        "inv:1: no header row (expected host,port,platform,transport,credential,hostname,tags)"
    ]
    assert problems_of(HEADER) == ["inv: the inventory lists no devices"]


def test_a_good_json_inventory_reads_like_the_csv() -> None:
    text = json.dumps(
        {
            "devices": [
                {
                    "host": "10.0.0.1",
                    "platform": "ios-xe",
                    "credential": "lab",
                    "hostname": "sw-1",
                    "tags": ["core", "dc1"],
                    "port": 443,
                    "verify": True,
                },
                {
                    "host": "10.0.0.2",
                    "platform": "bigip",
                    "credential": "f5",
                    "hostname": "lb-1",
                    "add_on_keys": ["FFFFFFF-GGGGGGG"],
                },
            ]
        },
        indent=2,
    )
    inventory = parse_inventory(text, source="inv.json", base=Path("/b"), kind="json")
    assert [d.hostname for d in inventory] == ["sw-1", "lb-1"]
    assert inventory.devices[0].tags == ("core", "dc1")
    assert inventory.devices[1].transport == "icontrol"
    assert inventory.devices[1].add_on_keys == ("FFFFFFF-GGGGGGG",)


def test_every_bad_json_device_is_reported_with_its_line() -> None:
    text = (
        '{"devices": [\n'
        '  {"host": "10.0.0.1", "platform": "ios-xe", "credential": "lab", "hostname": "a"},\n'
        '  {"host": "10.0.0.2", "platform": "nx-os", "credential": "lab", "hostname": "b"},\n'
        '  "not an object",\n'
        '  {"host": "10.0.0.4", "platform": "ios-xe", "credential": "lab", "hostname": "d",\n'
        '   "colour": "red"},\n'
        '  {"host": 5, "platform": "ios-xe", "credential": "lab", "hostname": "a"}\n'
        "]}\n"
    )
    problems = problems_of(text, kind="json")
    assert problems == [
        "inv:3: platform 'nx-os' is not one of ios-xe, bigip",
        "inv:4: devices[2] is not an object",
        "inv:5: devices[3]: unknown key 'colour'",
        "inv:7: hostname a is already listed on line 2",
    ]
    assert problems_of("{not json", kind="json")[0].startswith("inv:1: not valid JSON")
    assert problems_of('{"hosts": []}', kind="json") == ['inv:1: expected {"devices": [...]}']


def test_unreadable_and_non_utf8_files_are_inventory_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError):
        load_inventory(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"host\xff\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(bad)
    assert "not UTF-8" in caught.value.message


def test_the_schema_accepts_a_json_inventory_and_refuses_unknown_keys() -> None:
    import jsonschema

    from airgap.schema import load_schema

    schema = load_schema("inventory")
    good = {
        "devices": [
            {
                "host": "h",
                "platform": "ios-xe",
                "credential": "c",
                "hostname": "x",
                "transport": "ssh",
                "port": 22,
                "tags": ["a"],
            }
        ]
    }
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"devices": [{**good["devices"][0], "colour": "red"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"devices": [{**good["devices"][0], "platform": "junos"}]}, schema)
