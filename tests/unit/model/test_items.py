"""Typed items turn back into exactly the JSON they were made from."""

from __future__ import annotations

from airgap.model import RequestItem, ResponseItem


def test_request_item_round_trip_and_device_accessors() -> None:
    raw = {
        "id": "i00001",
        "action": "cisco.reserve",
        "device": {"hostname": "sw-1", "udi": {"pid": "C9300-24T", "sn": "FOC1"}},
        "params": {"entitlements": [{"tag": "t", "count": 1}]},
        "files": [],
    }
    item = RequestItem.from_json(raw)
    assert item.to_json() == raw
    assert (item.udi, item.mac, item.hostname, item.device_key) == (
        ("C9300-24T", "FOC1"),
        None,
        "sw-1",
        "C9300-24T:FOC1",
    )
    assert item.entry.vendor == "cisco" and item.entry.mutating
    mac = RequestItem.from_json(
        {"id": "b", "action": "bigiq.revoke", "device": {"mac": "AA:BB:CC:DD:EE:FF"}, "params": {}}
    )
    assert (mac.udi, mac.mac, mac.device_key, mac.files) == (
        None,
        "AA:BB:CC:DD:EE:FF",
        "AA:BB:CC:DD:EE:FF",
        (),
    )


def test_response_item_round_trip() -> None:
    raw = {
        "id": "i00001",
        "request_item": "i00001",
        "action": "cisco.reserve",
        "status": "failed",
        "result": {},
        "error": {"code": "E_VENDOR", "message": "no"},
        "files": [],
        "vendor_refs": {"poll_id": "773126444402795033"},
    }
    assert ResponseItem.from_json(raw).to_json() == raw
