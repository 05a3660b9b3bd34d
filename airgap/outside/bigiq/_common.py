"""What the BIG-IQ modules share: action names, API paths and small pure helpers.

Internal to `airgap.outside.bigiq`; nothing here sends a request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from airgap.errors import InputError, VendorError
from airgap.model import normalize_mac
from airgap.outside.http import HttpResponse, UncertainOutcome, VendorRejected
from airgap.outside.vendor import Outcome, WorkItem

ASSIGN: Final = "bigiq.assign"
REVOKE: Final = "bigiq.revoke"
REGKEY_ACTIVATE: Final = "bigiq.regkey_activate"
ASSIGNMENTS: Final = "bigiq.assignments"

_TASKS: Final = "/mgmt/cm/device/tasks/licensing/pool/member-management"
_ASSIGNMENTS: Final = "/mgmt/cm/device/licensing/assignments"
_REGKEY_POOLS: Final = "/mgmt/cm/device/licensing/pool/regkey/licenses"

_LIST_PAGE: Final = 500  # items per page when reading the assignment list
_QUERY_SAFE: Final = "'()$:,"  # left readable in OData query values


class _BadItem(Exception):
    """An item lacks a parameter the action needs (the request schema should prevent it)."""


def _unknown_action(item: WorkItem) -> Outcome:
    return Outcome.failed(InputError.code, f"the BIG-IQ client does not serve {item.action!r}")


def _param(item: WorkItem, name: str) -> str:
    value = item.params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _BadItem(f"{item.action} item {item.id} has no {name}")
    return value


def _mode(item: WorkItem) -> str:
    mode = str(item.params.get("mode") or "automatic").lower()
    if mode not in ("automatic", "manual"):
        raise _BadItem(f"{item.action} item {item.id}: mode {mode!r} is not automatic or manual")
    return mode


def _add_on_keys(item: WorkItem) -> list[str]:
    raw = item.params.get("add_on_keys") or []
    if isinstance(raw, str):
        raw = [raw]
    return [str(key).strip().upper() for key in raw if str(key).strip()]


def _item_mac(item: WorkItem) -> str:
    raw = item.mac
    if not raw:
        raise _BadItem(f"{item.action} item {item.id} names no MAC address")
    return _normalize_mac(raw) or raw


def _normalize_mac(raw: str) -> str | None:
    """`AA:BB:CC:DD:EE:FF` from what BIG-IQ echoes back, or None when it is not a MAC."""
    try:
        return normalize_mac(raw)
    except InputError:
        return None


def _literal(value: str) -> str:
    """An OData string literal: quotes doubled inside."""
    return "'" + value.replace("'", "''") + "'"


def _with_query(path: str, params: Mapping[str, str]) -> str:
    # Percent-encode spaces and everything unusual ourselves; `$`, quotes and parentheses stay
    # readable (OData), and `+` is encoded so it is not read back as a space.
    parts = [f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}" for k, v in params.items()]
    return f"{path}?{'&'.join(parts)}"


def _object(response: HttpResponse, *, what: str) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise VendorError(f"{what}: BIG-IQ answered HTTP {response.status} with a non-object body")
    return body


def _submitted_object(response: HttpResponse, what: str) -> dict[str, Any]:
    """The body of a mutating call's 2xx answer; unreadable means BIG-IQ acted unobserved."""
    try:
        return _object(response, what=what)
    except VendorError as exc:
        raise UncertainOutcome(
            f"{what}: HTTP {response.status} with a body that is not a JSON object; BIG-IQ may "
            "have acted on the request",
            hint="Reconcile with a vendor query before sending it again.",
            status=response.status,
        ) from exc


def _refusal(exc: VendorRejected) -> Outcome:
    """An item-level refusal (4xx) as a failed outcome carrying BIG-IQ's message verbatim."""
    if exc.status is not None and 400 <= exc.status < 500:
        return Outcome.failed(VendorError.code, exc.vendor_message or exc.message)
    raise exc


def _bare(path: str) -> str:
    return path.split("?", 1)[0]


def _assignment_pool(row: Mapping[str, Any]) -> str | None:
    pool = row.get("pool")
    if isinstance(pool, Mapping) and isinstance(pool.get("name"), str):
        return str(pool["name"])
    name = row.get("licensePoolName")
    return name if isinstance(name, str) else None


def _pretty(document: Any) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
