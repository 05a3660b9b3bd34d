"""The portal worksheet: what an operator does by hand in Cisco Smart Software Manager.

For a site without Smart Licensing API credentials, `airgap outside portal-export` turns the
Cisco items of a request into files for the CSSM portal and this worksheet: one row per task
(upload the usage file; generate an authorization code for a device and save it under an exact
file name; enter a return code), as CSV (which `portal-import` reads back: a return gives no
file, so the operator writes `yes` in its `done` cell) and as a printable HTML page. Pure
functions: nothing here reads bundles or the journal.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Final

from airgap import __version__
from airgap.model import RequestItem

__all__ = [
    "COLUMNS",
    "PORTAL_ACTIONS",
    "PortalTask",
    "WorksheetRow",
    "code_file_name",
    "is_done",
    "read_csv",
    "render_csv",
    "render_html",
    "tasks_for",
]

PORTAL_ACTIONS: Final = frozenset(
    {"cisco.reserve", "cisco.report_usage", "cisco.return", "cisco.slr_reserve"}
)
"""The Cisco actions the portal can do by hand; queries need the API."""

COLUMNS: Final = (
    "step",
    "item",
    "action",
    "task",
    "smart_account",
    "virtual_account",
    "hostname",
    "pid",
    "sn",
    "entitlements",
    "code",
    "device_file",
    "save_as",
    "done",
)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
_DONE: Final = frozenset({"yes", "y", "x", "done", "ok", "true", "1", "\u2713", "\u2714"})


@dataclass(frozen=True)
class PortalTask:
    """One row of the worksheet."""

    step: int
    item: str
    action: str
    task: str  # what to do, in a sentence
    smart_account: str
    virtual_account: str
    hostname: str
    pid: str
    sn: str
    entitlements: str  # "TAG x N; TAG x N"
    code: str  # the return code or SLR request code to enter
    device_file: str  # the usage upload's dev_<id> file that carries this device's report
    save_as: str  # where to save what the portal gives back (relative to the import folder)


def code_file_name(item: RequestItem) -> str:
    """`codes/<item>-<PID>-<SN>.txt`: where the operator saves a device's authorization code."""
    pid, sn = item.udi or ("device", "")
    suffix = "-slr" if item.action == "cisco.slr_reserve" else ""
    name = _UNSAFE.sub("_", f"{item.id}-{pid}-{sn}{suffix}")
    return f"codes/{name}.txt"


def _entitlements(params: Mapping[str, Any]) -> str:
    return "; ".join(f"{e['tag']} x {e['count']}" for e in params.get("entitlements") or [])


def tasks_for(
    items: Sequence[RequestItem],
    *,
    smart_account: str,
    default_virtual_account: str,
    usage_file: str | None,
    device_files: Mapping[str, str],
    usage_files: Mapping[str, str] | None = None,
) -> list[PortalTask]:
    """The worksheet's rows for a request's portal items, in request order.

    Args:
        items: the request items the portal serves (`PORTAL_ACTIONS`).
        smart_account: the smart account the operator works in.
        default_virtual_account: for items that name none.
        usage_file: the usage upload's file name, if the request reports usage.
        device_files: item id → the usage upload's device file carrying its report.
        usage_files: item id → the usage upload carrying its report, where it is not
            `usage_file` (a request exported in more than one go).

    Returns:
        One task per item.
    """
    tasks: list[PortalTask] = []
    for step, item in enumerate(items, start=1):
        pid, sn = item.udi or ("", "")
        va = str(item.params.get("virtual_account") or default_virtual_account)
        code, save_as = "", ""
        if item.action == "cisco.report_usage":
            upload = (usage_files or {}).get(item.id, usage_file)
            task = (
                f"Upload {upload} (Reports > Usage Data Files > Upload Usage Data), then "
                "download the ACK file it gives and save it in the import folder"
            )
            save_as = "ACK_*.tar.gz"
        elif item.action == "cisco.reserve":
            task = (
                "Generate an authorization code for this product instance with the "
                "entitlements listed, and download it"
            )
            save_as = code_file_name(item)
        elif item.action == "cisco.return":
            task = (
                "Remove the product instance's reservation: enter the return code, then write "
                "yes in this row's done cell of worksheet.csv"
            )
            code = str(item.params.get("return_code", ""))
        else:  # cisco.slr_reserve
            task = (
                f"Reserve licenses ({item.params.get('reservation_type', 'SPECIFIC')}) with the "
                "device's request code, and download the authorization code"
            )
            code = str(item.params.get("request_code", ""))
            save_as = code_file_name(item)
        tasks.append(
            PortalTask(
                step=step,
                item=item.id,
                action=item.action,
                task=task,
                smart_account=smart_account,
                virtual_account=va,
                hostname=item.hostname or "",
                pid=pid,
                sn=sn,
                entitlements=_entitlements(item.params),
                code=code,
                device_file=device_files.get(item.id, ""),
                save_as=save_as,
            )
        )
    return tasks


def render_csv(tasks: Sequence[PortalTask]) -> str:
    """The worksheet as CSV with a header; `done` is left for the operator (yes / no)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for t in tasks:
        writer.writerow(
            [
                t.step,
                t.item,
                t.action,
                t.task,
                t.smart_account,
                t.virtual_account,
                t.hostname,
                t.pid,
                t.sn,
                t.entitlements,
                t.code,
                t.device_file,
                t.save_as,
                "",
            ]
        )
    return out.getvalue()


@dataclass(frozen=True)
class WorksheetRow:
    """One row of a worksheet.csv as the operator left it."""

    line: int  # in the file, the header being line 1
    cells: Mapping[str, str]  # column -> cell, stripped

    @property
    def done(self) -> bool:
        """Whether the operator marked the row done (`yes`, `x`, `done`, a tick, …)."""
        return is_done(self.cells.get("done", ""))


def is_done(cell: str) -> bool:
    """Whether a `done` cell says the task was done."""
    return cell.strip().lower() in _DONE


def read_csv(text: str) -> list[WorksheetRow]:
    """Read a worksheet.csv back (after the operator filled in its `done` column).

    Raises:
        ValueError: the header is not the worksheet's (a column missing), or the CSV is
            malformed; the message names the line.

    Returns:
        Its rows, in file order.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), strict=True)
    try:
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in COLUMNS if name not in header]
        if missing:
            raise ValueError(f"line 1: not a worksheet header (missing {', '.join(missing)})")
        rows = []
        for cells in reader:
            extra = cells.get(None)
            if extra:
                raise ValueError(f"line {reader.line_num}: more cells than columns")
            rows.append(
                WorksheetRow(
                    reader.line_num,
                    {str(k).strip(): (v or "").strip() for k, v in cells.items() if k is not None},
                )
            )
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: {exc}") from exc
    return rows


_CSS = """
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#111}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #999;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#eee}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;overflow-wrap:break-word}
code.id{white-space:nowrap}
td.done{width:48px}
@page{size:landscape}@media print{body{margin:10mm}tr{page-break-inside:avoid}}
"""


def _wrappable(text: str) -> str:
    """Escaped, with line-break opportunities after `/`, `_` and `,`: a file name or an
    entitlement tag then wraps at its parts (and hyphens) instead of mid-word or not at all."""
    return escape(text).replace("/", "/<wbr>").replace("_", "_<wbr>").replace(",", ",<wbr>")


def render_html(
    tasks: Sequence[PortalTask],
    *,
    request_id: str,
    request_sha256: str,
    usage_file: str | None,
    import_command: str,
    left: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The worksheet as one printable HTML page (no script, no external asset).

    Args:
        tasks: the rows.
        request_id: the request's bundle id.
        request_sha256: its manifest SHA-256.
        usage_file: the usage upload's name (several: separated by ", "), if any.
        import_command: the `portal-import` command to run once the tasks are done.
        left: (item, action, why) of the request's items that are not the portal's to do.

    Returns:
        The page.
    """
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{cell}</td>"
            for cell in (
                str(t.step),
                f'<code class="id">{escape(t.item)}</code>',
                escape(t.task),
                f"{escape(t.smart_account)} / {escape(t.virtual_account)}",
                escape(t.hostname),
                f'<code class="id">{escape(t.pid)}</code>',
                f'<code class="id">{escape(t.sn)}</code>',
                _wrappable(t.entitlements),
                f"<code>{_wrappable(t.code)}</code>",
                f"<code>{_wrappable(t.device_file)}</code>",
                f"<code>{_wrappable(t.save_as)}</code>",
            )
        )
        + '<td class="done"></td></tr>'
        for t in tasks
    )
    upload = (
        f"<p>Usage file to upload: <code>{escape(usage_file)}</code>.</p>" if usage_file else ""
    )
    others = ""
    if left:
        others = (
            "<h2>Not for the portal</h2><p>These items need the APIs: "
            "<code>airgap outside process</code> does them.</p><table><tr><th>item</th>"
            "<th>action</th><th>why</th></tr>"
            + "".join(
                f"<tr><td><code>{escape(item)}</code></td><td><code>{escape(name)}</code></td>"
                f"<td>{escape(why)}</td></tr>"
                for item, name, why in left
            )
            + "</table>"
        )
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                f"<title>airgap portal worksheet: request {escape(request_id)}</title>",
                f"<style>{_CSS}</style></head><body>",
                "<h1>CSSM portal worksheet</h1>",
                f"<p>Request <code>{escape(request_id)}</code> (manifest SHA-256 "
                f"<code>{escape(request_sha256)}</code>), by airgap {escape(__version__)}. Do each "
                "task in Cisco Smart Software Manager, save every file the portal gives under the "
                "name shown (in the folder of this worksheet), tick the row, then run:</p>",
                f"<p><code>{escape(import_command)}</code></p>",
                upload,
                "<p>A return gives no file: write <code>yes</code> in its <code>done</code> cell "
                "of <code>worksheet.csv</code> once the portal has accepted the code.</p>",
                "<table><tr><th>#</th><th>item</th><th>task</th>"
                "<th>account / virtual account</th><th>hostname</th><th>PID</th><th>SN</th>"
                "<th>entitlements</th><th>code to enter</th><th>device file</th><th>save as</th>"
                "<th>done</th></tr>",
                rows,
                "</table>",
                others,
                "</body></html>",
            ]
        )
        + "\n"
    )
