"""Pure parts of the Cisco client: answers to outcomes, name and UDI matching, envelopes."""

from __future__ import annotations

import base64
import json
import re

from airgap.outside import cisco
from airgap.outside.vendor import WorkItem

PID, SN = "C9300-24T", "FOC2437L1ZK"


def _item(action: str = "cisco.report_usage") -> WorkItem:
    return WorkItem("i1", action, {"hostname": "sw1", "udi": {"pid": PID, "sn": SN}}, {})


def _ack(sn: str, text: str) -> dict[str, object]:
    return {
        "sudi": {"udi_pid": PID, "udi_serial_number": sn},
        "status": "SUCCESS",
        "smart_license": base64.b64encode(text.encode()).decode(),
    }


def test_envelope_has_a_fresh_16_character_nonce_and_milliseconds() -> None:
    first, second = cisco._envelope(poll_id=1), cisco._envelope(poll_id=1)
    assert re.fullmatch(r"[A-Za-z0-9]{16}", first["data"]["nonce"])
    assert first["data"]["nonce"] != second["data"]["nonce"]
    assert first["data"]["timestamp"] > 1_600_000_000_000
    assert first["data"]["poll_id"] == 1


def test_ack_of_the_items_device_becomes_ack_xml_and_others_are_kept() -> None:
    ref = {"poll_id": "1", "action": "acknowledgements"}
    outcome = cisco._ack_outcome(_item(), [_ack("OTHER1", "<other/>"), _ack(SN, "<mine/>")], ref)
    assert outcome.status == "ok"
    assert outcome.files == {"ack.xml": b"<mine/>"}
    assert outcome.result["other_acks"] == {f"{PID}:OTHER1": "<other/>"}


def test_one_failed_ack_fails_the_item_with_ciscos_message() -> None:
    failed = {
        "sudi": {"udi_pid": PID, "udi_serial_number": SN},
        "status": "FAILED",
        "smart_license": "",
        "error_code": "DUPLICATE_REPORT",
        "status_message": "Duplicate report",
    }
    outcome = cisco._ack_outcome(_item(), [failed], {})
    assert outcome.error == {"code": "DUPLICATE_REPORT", "message": "Duplicate report"}


def test_authorization_without_a_readable_code_needs_attention() -> None:
    outcome = cisco._authorization_outcome({"status": "SUCCESS", "smart_license": "%%%"}, {})
    assert outcome.status == "needs_attention"


def test_return_outcome_writes_the_confirmation() -> None:
    entry = {
        "status": "SUCCESS",
        "auth_status": "RETURNED",
        "status_message": "returned",
        "returned_entitlements": [{"entitlement": "t", "count": 1}],
        "correlation_id": "abc",
    }
    outcome = cisco._return_outcome(_item("cisco.return"), entry, {})
    document = json.loads(outcome.files["return.json"])
    assert document["udi"] == {"pid": PID, "sn": SN}
    assert document["hostname"] == "sw1"
    assert document["returned_entitlements"] == [{"entitlement": "t", "count": 1}]


def test_virtual_accounts_match_by_name_id_or_case() -> None:
    names = {"Default": "905210", "Lab": "905213"}
    assert cisco._find_name(names, "Lab") == ("Lab", "905213")
    assert cisco._find_name(names, "905210") == ("Default", "905210")
    assert cisco._find_name(names, "lab") == ("Lab", "905213")
    assert cisco._find_name(names, "Nope") is None


def test_device_entries_name_their_udi_in_any_of_the_usual_fields() -> None:
    assert cisco._device_udi({"productId": PID, "serialNumber": SN}) == (PID, SN)
    assert cisco._device_udi({"sudi": {"udi_pid": PID, "udi_serial_number": SN}}) == (PID, SN)
    assert cisco._device_udi({"udi": f"{PID}:{SN}"}) == (PID, SN)
    assert cisco._device_udi({"udi": f"PID:{PID},SN:{SN}"}) == (PID, SN)
    assert cisco._device_udi({}) is None


def test_entitlement_counts_are_summed_per_tag() -> None:
    params = {"entitlements": [{"tag": "a", "count": "2"}, {"tag": "a", "count": 1}]}
    assert cisco._entitlements(params) == {"a": 3}
