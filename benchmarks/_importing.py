"""The response `inside import` is timed on: what `outside process` would write for a request.

`make_response` answers every item of a request bundle `ok`, signed by an outside home the
inside home trusts, with the file the Cisco client stores for the action (`lic.txt` for a
reservation, `ack.xml` for a usage report) and a result of the client's shape. Processing
100,000 devices against the emulator would take the benchmark most of an hour; the importer
cannot tell the difference.

A bundle's member list is bounded (readers accept a `manifest.json` and a `SHA256SUMS` of at
most 16 MiB each: about 115,000 members), so a response to 100,000 devices (200,000 items)
cannot carry a file for every item. Past `max_files` files the items are answered `pending`
without a file, as the outside reports an item still in progress: at 100,000 devices the
response holds 200,000 items, the first 100,000 of them with a file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

# What the Cisco client keeps for each action it answers with a file.
FILE_FOR = {"cisco.reserve": "lic.txt", "cisco.report_usage": "ack.xml"}


def _answer(item: Mapping[str, Any]) -> tuple[dict[str, Any], str, bytes]:
    """The result, file name and file bytes of an `ok` answer to one request item."""
    item_id, action = str(item["id"]), str(item["action"])
    udi = (item.get("device") or {}).get("udi") or {}
    name = FILE_FOR.get(action)
    if name is None:
        raise SystemExit(f"no canned answer for {action} (item {item_id})")
    if action == "cisco.reserve":
        result: dict[str, Any] = {
            "auth_status": "AUTHORIZED",
            "correlation_id": f"corr-{item_id}",
            "product_instance_identifier": None,
            "status_message": "Reservation completed",
        }
        # An authorization code is a few hundred bytes of XML; unique per item.
        data = (
            f"<specificPLR><authorizationCode><flag>A</flag><version>C</version><piid>{item_id}"
            f"</piid><timestamp>1764000000000</timestamp><entitlements><entitlement><tag>"
            f"{'x' * 180}</tag><count>1</count></entitlement></entitlements></authorizationCode>"
            f"<signature>{'S' * 120}</signature><udi>P:{udi.get('pid')},S:{udi.get('sn')}</udi>"
            "</specificPLR>\n"
        ).encode()
    else:
        result = {
            "acknowledgements": [
                {"udi": f"PID:{udi.get('pid')},SN:{udi.get('sn')}", "status": "COMPLETE"}
            ]
        }
        data = (
            '<?xml version="1.0" encoding="UTF-8"?><smartLicense><smartLicenseAck>'
            f"<item>{item_id}</item>{'<ack>' + 'a' * 200 + '</ack>' * 1}"
            f"<signature>{'S' * 344}</signature></smartLicenseAck></smartLicense>\n"
        ).encode()
    return result, name, data


MAX_FILES = 100_000  # files a response can carry within the member-list limits, with room


def make_response(
    outside_home: Path,
    request: Path,
    output: Path,
    *,
    sequence: int = 1,
    max_files: int = MAX_FILES,
) -> tuple[int, int]:
    """Write a response to `request` that answers its items ok (the first `max_files` of
    them; the rest pending); return its item count and how many carry a file.

    Args:
        outside_home: the outside home that signs it (the inside home must trust its card).
        request: the request bundle (packed by the inside home).
        output: where the response goes.
        sequence: the response's sequence number.
        max_files: how many items are answered ok with a file.
    """
    from airgap.bundle import PayloadFile, build_bundle, open_bundle
    from airgap.home import Home
    from airgap.units import utc_now

    home = Home.open(outside_home)
    with open_bundle(request, home.policy(expected_kind="request"), limits=home.limits()) as req:
        reply = {"bundle_id": req.manifest.bundle_id, "manifest_sha256": req.manifest_sha256}
        answers = [
            (str(item["id"]), str(item["action"]), _answer(item) if n < max_files else None)
            for n, item in enumerate(req.iter_items())
        ]

    def items() -> Iterator[dict[str, Any]]:
        for item_id, action, answer in answers:
            if answer is None:
                yield {
                    "id": item_id,
                    "request_item": item_id,
                    "action": action,
                    "status": "pending",
                    "result": {},
                    "error": None,
                    "files": [],
                    "vendor_refs": {},
                }
                continue
            result, name, _ = answer
            yield {
                "id": item_id,
                "request_item": item_id,
                "action": action,
                "status": "ok",
                "result": result,
                "error": None,
                "files": [f"files/{item_id}/{name}"],
                "vendor_refs": {},
            }

    def files() -> Iterator[PayloadFile]:
        for item_id, _, answer in answers:
            if answer is not None:
                _, name, data = answer
                yield PayloadFile(f"files/{item_id}/{name}", data)

    now = utc_now()
    build_bundle(
        output,
        kind="response",
        items=items(),
        files=files(),
        signers=[home.signer()],
        sequence=sequence,
        created=now,
        expires=now + timedelta(days=7),
        audit_head=home.audit().head(),
        in_reply_to=reply,
    )
    return len(answers), min(len(answers), max_files)
