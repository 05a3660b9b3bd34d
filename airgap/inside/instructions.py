"""Render what `inside import` leaves for the operator: INSTRUCTIONS.md and summary.json.

Pure functions from item views to text: the exact device commands per device (each action's
`DeviceGuide` in the catalogue, `airgap.model`), and for every item that is not done, the reason
as the outside reported it, verbatim. Writing the files is the importer's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airgap.fastjson import dumps_indented
from airgap.model import ACTIONS

STATUS_WORDS: dict[str, str] = {
    "ok": "done",
    "failed": "FAILED",
    "pending": "still pending at the vendor",
    "needs_attention": "NEEDS ATTENTION",
    "outstanding": "no answer yet",
}


def is_query(action: str) -> bool:
    """Whether an action is an account-wide question (its answer goes to `queries/`)."""
    entry = ACTIONS.get(action)
    return entry is not None and entry.query


@dataclass(frozen=True)
class ItemView:
    """One request item as the instructions show it.

    `folder` is the item's output folder relative to the request's output folder
    (`cisco/sw-1`), or None for queries. `files` are the files written for it, as shown
    (relative to the request's output folder when they are inside it, else absolute).
    """

    item_id: str
    action: str
    device: Mapping[str, Any] | None
    params: Mapping[str, Any]
    folder: str | None
    status: str
    error: Mapping[str, Any] | None = None
    result: Mapping[str, Any] = field(default_factory=dict)
    files: Sequence[str] = ()
    response_id: str | None = None
    applied: Sequence[str] = ()  # "file: put on HOST at TIME" for files `inside apply` confirmed


@dataclass(frozen=True)
class RequestView:
    """The request the instructions are about, and the responses imported for it."""

    bundle_id: str
    manifest_sha256: str
    sequence: int
    created: str
    responses: Sequence[tuple[str, str]]  # (response bundle id, imported at)


def device_label(item: ItemView) -> str:
    """`sw-1 (C9300-24T FOC123)`, `52:54:00:AA:BB:CC`, or the regkey / query it is about."""
    device = item.device or {}
    udi = device.get("udi")
    if isinstance(udi, Mapping):
        ident = f"{udi.get('pid')} {udi.get('sn')}"
        host = device.get("hostname")
        return f"{host} ({ident})" if host else ident
    if device.get("mac"):
        return str(device["mac"])
    entry = ACTIONS.get(item.action)
    if entry is not None and entry.label:
        return entry.label.format_map(_Words(item.params))
    return item.action


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _quote(text: str) -> list[str]:
    """Markdown block-quote lines holding `text` unchanged."""
    return [f"> {line}" if line else ">" for line in text.splitlines() or [""]]


def _reason(item: ItemView) -> list[str]:
    error = item.error or {}
    message = str(error.get("message") or "")
    code = error.get("code")
    lines = [f"- `{item.item_id}` {item.action}: **{STATUS_WORDS.get(item.status, item.status)}**"]
    if code:
        lines[0] += f" (`{code}`)"
    if message:
        lines += ["", *_quote(message), ""]
    elif item.status == "outstanding":
        lines.append("  The responses imported so far do not answer this item.")
    elif item.status == "pending":
        lines.append("  The vendor has not finished; re-run `airgap outside process` later.")
    if item.status == "pending":
        lines.append(
            "  Next: on the outside, run `airgap outside process` on the same request again "
            "and import the new response here."
        )
    elif item.status == "needs_attention":
        lines.append(
            "  Next: an outside operator must check this item at the vendor (see the reason) "
            "before it is resubmitted."
        )
    elif item.status == "failed":
        lines.append("  Next: fix the cause above and pack a new request for this item.")
    return lines


class _Words(dict[str, Any]):
    """Values for a guide's `{placeholders}`: the item's params and the file; absent is empty."""

    def __init__(self, params: Mapping[str, Any], **extra: Any) -> None:
        super().__init__({str(k): v for k, v in params.items()}, **extra)

    def __missing__(self, key: str) -> str:
        return ""


def _commands(item: ItemView) -> list[str]:
    """The steps for one finished item on its device, as its action's guide words them."""
    entry = ACTIONS.get(item.action)
    if entry is None:
        return ["Done; nothing to do on a device."]
    guide, files = entry.guide, list(item.files)
    path = entry.device_file(files)
    first = path or (files[0] if files else None)
    words = _Words(item.params)
    words |= {
        "path": first or "",
        "name": _base(first) if first else "",
        "shown": f" (`{first}`)" if first else "",
        "shown_or_summary": f"`{first}`" if first else "summary.json",
    }
    if path is not None:
        lines = [guide.intro.format_map(words), "", "```"]
        lines += [command.format_map(words) for command in guide.commands]
        lines.append("```")
    else:
        lines = [guide.note.format_map(words)]
    for name, why in guide.kept.items():
        kept = entry.file_named(files, name)
        if kept is not None:
            lines += ["", why.format_map(_Words(words, path=kept, name=_base(kept)))]
    return lines


_VENDOR_TITLES = {"cisco": "Cisco devices", "bigiq": "BIG-IP and BIG-IQ"}


def render_instructions(request: RequestView, items: Sequence[ItemView]) -> str:
    """INSTRUCTIONS.md for one request's output folder.

    Args:
        request: the request and the responses imported for it.
        items: every item of the request, in request order.

    Returns:
        Markdown text: a summary, what is not done and why (reasons verbatim), then per device
        the exact commands.
    """
    counts = count_statuses(items)
    lines = [
        f"# Licences for request {request.bundle_id[:8]}",
        "",
        f"Request `{request.bundle_id}` (sequence {request.sequence}, packed {request.created},"
        f" manifest sha256 `{request.manifest_sha256}`).",
        "",
        "Responses imported: "
        + ", ".join(f"`{rid}` ({when})" for rid, when in request.responses)
        + ".",
        "",
        "Items: "
        + ", ".join(f"{counts[s]} {STATUS_WORDS[s]}" for s in STATUS_WORDS if counts.get(s))
        + ".",
        "",
        "Paths below are relative to this folder. Copy a device's files to a USB stick "
        "(`usbflash0:` on Cisco devices) and run the commands shown on that device.",
        "",
    ]
    open_items = [item for item in items if item.status != "ok"]
    if open_items:
        lines += ["## Not done", ""]
        for item in open_items:
            lines.append(f"### {device_label(item)}")
            lines.append("")
            lines += _reason(item)
            lines.append("")
    for vendor in dict.fromkeys(entry.vendor for entry in ACTIONS.values()):
        title = _VENDOR_TITLES.get(vendor, vendor)
        groups: dict[str, list[ItemView]] = {}
        for item in items:
            if item.folder and item.folder.startswith(f"{vendor}/"):
                groups.setdefault(item.folder, []).append(item)
        if not groups:
            continue
        lines += [f"## {title}", ""]
        for folder, members in groups.items():
            lines += [f"### {device_label(members[0])}: `{folder}/`", ""]
            for item in members:
                state = STATUS_WORDS.get(item.status, item.status)
                lines.append(f"**`{item.item_id}` {item.action}: {state}**")
                lines.append("")
                # The first line of a reason repeats the bold line above; the rest is the why.
                if item.status == "ok" and item.applied:
                    lines += [
                        f"Applied by `airgap inside apply`: {entry}." for entry in item.applied
                    ]
                    lines.append("")
                lines += _commands(item) if item.status == "ok" else _reason(item)[1:]
                lines.append("")
    queries = [item for item in items if is_query(item.action)]
    if queries:
        lines += ["## Queries", ""]
        for item in queries:
            state = STATUS_WORDS.get(item.status, item.status)
            where = f": `{item.files[0]}`" if item.status == "ok" and item.files else ""
            lines.append(f"- `{item.item_id}` {item.action}: {state}{where}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def count_statuses(items: Sequence[ItemView]) -> dict[str, int]:
    """How many items are in each status (every status, zeros included)."""
    counts = dict.fromkeys(STATUS_WORDS, 0)
    for item in items:
        counts[item.status] = counts.get(item.status, 0) + 1
    return counts


def summary_document(request: RequestView, items: Sequence[ItemView]) -> dict[str, Any]:
    """summary.json: the request, the responses, counts per status and every item's state."""
    return {
        "request": {
            "bundle_id": request.bundle_id,
            "manifest_sha256": request.manifest_sha256,
            "sequence": request.sequence,
            "created": request.created,
        },
        "responses": [{"bundle_id": rid, "imported_at": when} for rid, when in request.responses],
        "counts": count_statuses(items),
        "complete": all(item.status in ("ok", "failed") for item in items),
        "items": [
            {
                "id": item.item_id,
                "action": item.action,
                "device": dict(item.device) if item.device else None,
                "status": item.status,
                "error": dict(item.error) if item.error else None,
                "files": list(item.files),
                "response_id": item.response_id,
                "applied": list(item.applied),
            }
            for item in items
        ],
    }


def summary_bytes(request: RequestView, items: Sequence[ItemView]) -> bytes:
    """summary.json's bytes: indented, sorted keys, UTF-8, one trailing newline."""
    return dumps_indented(summary_document(request, items)) + b"\n"
