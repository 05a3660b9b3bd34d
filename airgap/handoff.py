"""The printable handoff sheet of a bundle (`airgap inspect --html`): one self-contained page.

It carries what two people need to sign off a transfer: the bundle's identity (file hash and
manifest hash), who signed it and whether those signatures are trusted here, its validity
window, the per-device table, and blank signature lines for the people handing over and
receiving. No script, no external asset: it prints and archives as it is.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

from airgap import __version__

_CSS = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#111}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #999;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#eee}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.ok,.valid{color:#060}.failed,.invalid{color:#a00;font-weight:bold}
.pending,.untrusted,.needs_attention{color:#a60}
.sign td{height:42px}.meta th{width:22%}
@media print{body{margin:10mm}h2{page-break-after:avoid}tr{page-break-inside:avoid}}
"""


def _device_label(device: Mapping[str, Any] | None) -> str:
    device = device or {}
    if "mac" in device:
        return str(device["mac"])
    if "udi" in device:
        udi = device["udi"]
        host = device.get("hostname") or ""
        return f"{host} {udi['pid']}:{udi['sn']}".strip()
    return "—"


def _row(cells: list[str], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_sheet(bundle: Path, inspection: Mapping[str, Any]) -> str:
    """Render the handoff sheet of `bundle` from `Inspection.to_json()`.

    Args:
        bundle: the bundle file (its size and SHA-256 go on the sheet).
        inspection: the document `airgap inspect --json` prints.

    Returns:
        The whole HTML page.
    """
    items = inspection["items"]
    parts: list[str] = []
    write_sheet(
        parts.append,
        bundle,
        inspection,
        items,
        item_count=len(items),
        by_action=Counter(str(item["action"]) for item in items),
    )
    return "".join(parts)


def write_sheet(
    write: Callable[[str], object],
    bundle: Path,
    inspection: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]],
    *,
    item_count: int,
    by_action: Mapping[str, int],
) -> None:
    """Write the handoff sheet of `bundle` a row at a time (`render_sheet` in pieces).

    Args:
        write: called with each piece of the page, in order.
        bundle: the bundle file (its size and SHA-256 go on the sheet).
        inspection: `Inspection.to_json()`; its "items" are not read (see `items`).
        items: the items, read once, in order.
        item_count: how many `items` yields (the heading comes before the rows).
        by_action: items per action (the manifest's verified summary).
    """
    digest = hashlib.sha256()
    with bundle.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    manifest = inspection["manifest"]
    producer = manifest["producer"]
    reply = manifest.get("in_reply_to")
    meta = [
        ("File", f"<code>{escape(bundle.name)}</code> ({bundle.stat().st_size:,} bytes)"),
        ("File SHA-256", f"<code>{digest.hexdigest()}</code>"),
        ("Bundle", f"{escape(manifest['kind'])} <code>{escape(manifest['bundle_id'])}</code>"),
        ("Manifest SHA-256", f"<code>{escape(inspection['manifest_sha256'])}</code>"),
        (
            "Producer",
            f"{escape(producer['name'])} ({escape(producer['role'])}) "
            f"<code>{escape(producer['fingerprint'])}</code>",
        ),
        ("Sequence", str(manifest["sequence"])),
        ("Created / expires", f"{escape(manifest['created'])} / {escape(manifest['expires'])}"),
        ("Items", ", ".join(f"{n} {escape(a)}" for a, n in sorted(by_action.items())) or "none"),
    ]
    if reply:
        meta.append(
            (
                "In reply to",
                f"<code>{escape(reply['bundle_id'])}</code> "
                f"(manifest <code>{escape(reply['manifest_sha256'])}</code>)",
            )
        )
    signature_rows = [
        _row(
            [
                f'<span class="{escape(sig["status"])}">{escape(sig["status"])}</span>',
                escape(sig.get("name") or "unknown key"),
                escape(sig.get("role") or ""),
                f"<code>{escape(sig['fingerprint'])}</code>",
            ]
        )
        for sig in inspection["signatures"]
    ]
    problem_rows = [
        _row([f"<code>{escape(p['code'])}</code>", escape(p["message"])])
        for p in inspection.get("problems", [])
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>airgap handoff: {escape(manifest['kind'])} "
        f"{escape(manifest['bundle_id'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>airgap handoff sheet: {escape(manifest['kind'])}</h1>",
        f"<p>Generated by airgap {escape(__version__)}. Compare the SHA-256 values below with "
        "the ones the receiving side computes before signing.</p>",
        '<h2>Bundle</h2><table class="meta">',
        *[f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in meta],
        "</table>",
        "<h2>Signatures</h2><table><tr><th>status</th><th>signer</th><th>role</th>"
        "<th>fingerprint</th></tr>",
        *signature_rows,
        "</table>",
    ]
    if problem_rows:
        parts += [
            "<h2>Findings (not trusted or not valid here)</h2><table>",
            "<tr><th>code</th><th>message</th></tr>",
            *problem_rows,
            "</table>",
        ]
    parts += [
        f"<h2>Devices and items ({item_count})</h2>",
        '<table id="items"><tr><th>item</th><th>action</th><th>device</th><th>status</th>'
        "<th>reason</th><th>files</th></tr>",
    ]
    write("\n".join(parts))
    rows: list[str] = []
    for item in items:
        status = str(item.get("status", "requested"))
        error = item.get("error") or {}
        rows.append(
            _row(
                [
                    f"<code>{escape(str(item['id']))}</code>",
                    escape(str(item["action"])),
                    escape(_device_label(item.get("device"))),
                    f'<span class="{escape(status)}">{escape(status)}</span>',
                    escape(str(error.get("message", ""))),
                    str(len(item.get("files", []))),
                ],
                cls="device-row",
            )
        )
        if len(rows) == 1000:
            write("\n" + "\n".join(rows))
            rows.clear()
    if rows:
        write("\n" + "\n".join(rows))
    tail = [
        "</table>",
        '<h2>Sign-off</h2><table class="sign"><tr><th></th><th>name</th><th>organisation</th>'
        "<th>date and time</th><th>signature</th></tr>",
        "<tr><th>Handed over by</th><td></td><td></td><td></td><td></td></tr>",
        "<tr><th>Received by</th><td></td><td></td><td></td><td></td></tr>",
        "<tr><th>Witness</th><td></td><td></td><td></td><td></td></tr>",
        "</table></body></html>",
    ]
    write("\n" + "\n".join(tail) + "\n")
