"""The steps every outside command that answers a request shares.

`outside process` (the vendors' APIs) and `outside portal-export` / `portal-import` (the CSSM
portal, by hand) handle a request the same way: open and verify it with this home's trust
(a refusal is audited), admit it to the journal under the replay rules, hold its claim while
working, and write the signed response from what the journal holds. They differ only in how
items get done. This module holds those shared steps and the marks the portal path leaves in
the journal, so each command reads the other's work; it calls no vendor and reads no portal
file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from airgap.bundle import OpenedBundle, PayloadFile, build_bundle, open_bundle
from airgap.errors import ItemCode, VendorError
from airgap.home import Home
from airgap.model import device_key
from airgap.outside.journal import Admission, ItemState, Journal, JournalItem
from airgap.review import audited_refusal, identity_for, require_home_role
from airgap.units import format_timestamp, utc_now

__all__ = [
    "PORTAL_VIA",
    "ProcessResult",
    "admit",
    "claim_owner",
    "opened_request",
    "portal_note",
    "portal_ref",
    "response_items",
    "write_response",
]

PORTAL_VIA: Final = "cssm-portal"
"""`vendor_ref["via"]` of an item handed to the CSSM portal by `outside portal-export`."""


@dataclass
class ProcessResult:
    """What a run did: the response written (unless dry-run) and every item's status."""

    request_id: str
    request_sha256: str
    items: list[dict[str, Any]]
    counts: dict[str, int]
    response_path: Path | None = None
    response_id: str | None = None
    response_sha256: str | None = None
    vendor_calls: bool = False
    resumed: bool = False
    plan: dict[str, int] = field(default_factory=dict)
    response_parts: list[Path] = field(default_factory=list)  # with a split response

    @property
    def complete(self) -> bool:
        """True when every item ended ok."""
        return all(item["status"] == "ok" for item in self.items)


# --- the portal's marks in the journal ---------------------------------------------------------


def portal_ref(entry: JournalItem) -> Mapping[str, Any] | None:
    """The portal export's reference of an item, or None if the item was not exported."""
    ref = entry.vendor_ref
    if isinstance(ref, Mapping) and ref.get("via") == PORTAL_VIA:
        return ref
    return None


def portal_note(ref: Mapping[str, Any]) -> dict[str, str]:
    """The pending note of an item exported for the portal and not yet imported."""
    return {
        "code": ItemCode.PENDING,
        "message": f"exported for the CSSM portal at {ref.get('exported_at')} (export "
        f"{ref.get('export')}); finish it in the portal, then run `airgap outside portal-import`; "
        "`outside process` never sends it to the API",
    }


# --- opening, admitting, claiming --------------------------------------------------------------


@contextmanager
def opened_request(home: Home, request: Path, *, action: str) -> Iterator[OpenedBundle]:
    """Open and verify a request bundle as every outside command does; a refusal is audited.

    The bundle's attached files stay readable (`opened.file_path`) inside the block.

    Args:
        home: an outside home.
        request: the request bundle (or the first of its parts, `NAME.001`).
        action: the command, as the audit log's refusal names it (`process`, `portal-export`).

    Yields:
        The verified bundle.

    Raises:
        ConfigError: this is not an outside home.
        VerificationError: the bundle was refused (exit 3).
    """
    require_home_role(home, "outside")
    with audited_refusal(home, action, request):
        identity = identity_for(home, request)
        policy = home.policy(expected_kind="request")
        with open_bundle(
            request, policy, identity=identity, limits=home.limits(), keep_files=True
        ) as opened:
            yield opened


def admit(
    home: Home, journal: Journal, opened: OpenedBundle, request: Path, *, action: str
) -> Admission:
    """Admit a verified request to the journal under the replay rules (a replay is audited).

    Args:
        home: the outside home.
        journal: its journal.
        opened: the verified request.
        request: its path (for the audit log).
        action: the command, as the audit log names it.

    Returns:
        A new request, or the journaled one to resume.

    Raises:
        Replay: (E_REPLAY) the id was seen with another manifest, or the sequence is old.
        Busy / StateDbError: the journal cannot be written.
    """
    manifest = opened.manifest
    with audited_refusal(home, action, request):
        return journal.admit_request(
            manifest.bundle_id,
            manifest.producer_fingerprint,
            manifest.sequence,
            opened.manifest_sha256,
            [(str(i["id"]), str(i["action"]), device_key(i)) for i in opened.items],
            expires=format_timestamp(manifest.expires),
        )


def request_facts(opened: OpenedBundle, request: Path) -> dict[str, Any]:
    """What an audit entry of the outside says about the request it worked on."""
    manifest = opened.manifest
    return {
        "bundle_id": manifest.bundle_id,
        "manifest_sha256": opened.manifest_sha256,
        "file": request.name,
        "producer": dict(manifest.producer),
        "producer_audit_head": manifest.audit_head,
    }


def claim_owner(command: str) -> str:
    """Who holds a request's claim, as a refused second claimant is told it."""
    return f"{command} {os.getpid()}@{socket.gethostname()}"


# --- the response ------------------------------------------------------------------------------


def response_items(
    journal_items: Sequence[JournalItem],
    request_items: Sequence[Mapping[str, Any]],
    transient: Mapping[str, Mapping[str, str]],
) -> tuple[list[dict[str, Any]], list[PayloadFile]]:
    """Turn the journal's state into response items and their attached files (deterministic)."""
    by_id = {entry.item_id: entry for entry in journal_items}
    items: list[dict[str, Any]] = []
    files: list[PayloadFile] = []
    for request_item in request_items:
        item_id = str(request_item["id"])
        entry = by_id[item_id]
        refs = {k: str(v) for k, v in (entry.vendor_ref or {}).items()}
        result: dict[str, Any] = {}
        error: dict[str, Any] | None = None
        names: list[str] = []
        if entry.state == ItemState.DONE:
            status = "ok"
            result = dict(entry.result or {})
            refs.update(entry.outcome_refs or {})
            for name, data in sorted(entry.files.items()):
                member = f"files/{item_id}/{name}"
                files.append(PayloadFile(member, data))
                names.append(member)
        elif entry.state == ItemState.FAILED:
            status = "failed"
            stored_error = entry.error or {}
            result = dict(entry.result or {})
            error = {
                "code": str(stored_error.get("code", VendorError.code)),
                "message": str(stored_error.get("message", "")),
            }
        elif entry.state == ItemState.NEEDS_ATTENTION:
            status = "needs_attention"
            stored_error = dict(entry.error or {})
            error = {
                "code": ItemCode.NEEDS_ATTENTION,
                "message": str(stored_error.get("message", "needs an operator's decision")),
            }
        else:
            status = "pending"
            why = transient.get(item_id)
            if why is not None:
                error = {"code": str(why["code"]), "message": str(why["message"])}
        items.append(
            {
                "id": item_id,
                "request_item": item_id,
                "action": str(request_item["action"]),
                "status": status,
                "result": result,
                "error": error,
                "files": names,
                "vendor_refs": refs,
            }
        )
    return items, files


def write_response(
    home: Home,
    journal: Journal,
    opened: OpenedBundle,
    entries: Sequence[JournalItem],
    transient: Mapping[str, Mapping[str, str]],
    *,
    signer: Any,
    request: Path,
    output: Path | None,
    split: int | None,
    event: str,
    vendor_calls: bool,
) -> ProcessResult:
    """Sign and write the response for the journal's state of a request; record and audit it.

    Args:
        home: the outside home.
        journal: its journal.
        opened: the verified request.
        entries: every item of the request as journaled now.
        transient: item id → why a pending item is still pending (`{"code", "message"}`).
        signer: this home's signer.
        request: the request's path (for the audit log).
        output: the response file (default `resp-<id>-<n>.airgap`).
        split: bytes per part, to write the response as parts; None for one file.
        event: the audit log's event (`process`, `portal_import`).
        vendor_calls: whether the run called a vendor (recorded in the audit log).

    Returns:
        What was written, with every item's status.

    Raises:
        AirgapError: the bundle cannot be written, or the journal or audit log cannot be.
    """
    manifest = opened.manifest
    items, files = response_items(entries, opened.items, transient)
    now = utc_now()
    sequence = journal.next_response_sequence()
    output = output or Path(f"resp-{manifest.bundle_id[:8]}-{sequence}.airgap")
    audit = home.audit()
    written = build_bundle(
        output,
        kind="response",
        items=items,
        files=files,
        signers=[signer],
        sequence=sequence,
        created=now,
        expires=now + home.config.expiry,
        audit_head=audit.head(),
        in_reply_to={"bundle_id": manifest.bundle_id, "manifest_sha256": opened.manifest_sha256},
        compress=opened.compressed,
        encrypt_to=home.recipients() if opened.encrypted else (),
        split=split,
    )
    items_digest = hashlib.sha256(
        json.dumps(items, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    journal.record_response(
        written.manifest.bundle_id,
        manifest.bundle_id,
        written.manifest_sha256,
        items_digest,
        path=str(output),
        created=format_timestamp(now),
    )
    counts = dict(sorted(Counter(item["status"] for item in items).items()))
    audit.append(
        event,
        outcome="ok" if set(counts) == {"ok"} else "partial",
        bundle_id=written.manifest.bundle_id,
        manifest_sha256=written.manifest_sha256,
        details={
            "request": request_facts(opened, request),
            "response_file": output.name,
            "counts": counts,
            "items": {item["id"]: item["status"] for item in items},
            "vendor_calls": vendor_calls,
        },
    )
    return ProcessResult(
        request_id=manifest.bundle_id,
        request_sha256=opened.manifest_sha256,
        items=items,
        counts=counts,
        response_path=output,
        response_id=written.manifest.bundle_id,
        response_sha256=written.manifest_sha256,
        vendor_calls=vendor_calls,
        response_parts=list(written.parts),
    )
