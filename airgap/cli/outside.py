"""`airgap outside`: process request bundles at the vendors or through the CSSM portal; show the
journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from airgap.cli import watch
from airgap.cli._output import AppState, mapped_errors, out, progress_bar, state

app = typer.Typer(
    help="The connected side: call Cisco and BIG-IQ for a request, or go through the CSSM portal.",
    no_args_is_help=True,
)

# `--split` of both commands that write a response.
ResponseSplit = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="Write the response as parts OUTPUT.001, .002, … of this size, e.g. 650MiB.",
        show_default=False,
    ),
]


@app.command("process")
def process_cmd(
    ctx: typer.Context,
    request: Annotated[Path, typer.Argument(help="The request bundle from the inside.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Response file (default: `resp-<id>-<n>.airgap`)."),
    ] = None,
    max_wait: Annotated[
        str | None,
        typer.Option(
            "--max-wait",
            help="Stop polling after this long, e.g. 30m or 2h (default: limits.max_wait).",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Vendor calls in flight at once.", min=1)
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Calls per second per vendor (0: no limit).", min=0),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Verify and show the plan; call no vendor.")
    ] = False,
    license_dir: Annotated[
        Path | None,
        typer.Option(
            "--license-dir",
            help="Folder of F5 license text (REGKEY.license) for manual RegKey activations.",
        ),
    ] = None,
    resubmit: Annotated[
        list[str] | None,
        typer.Option(
            "--resubmit",
            help="Resubmit an item left needing attention (you checked it had no effect).",
        ),
    ] = None,
    split: ResponseSplit = None,
) -> None:
    """Verify a request, call the vendors for every item, and write the signed response.

    Re-running on the same request resumes from the journal: nothing is sent twice, items
    still pending are finished, and a finished request is answered again without vendor calls.
    Exit 4 when some items failed or are still pending.

    Example: `airgap outside process req-17.airgap -o resp-17.airgap --concurrency 16`
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.bundle.parts import parse_split
        from airgap.outside.process import ProcessOptions, process_request

        part_size = parse_split(split) if split else None
        home = st.open_home()
        options = ProcessOptions.from_config(
            home.config,
            output=output,
            max_wait=max_wait,
            concurrency=concurrency,
            rate=rate,
            dry_run=dry_run,
            resubmit=frozenset(resubmit or ()),
            license_dir=license_dir,
            split=part_size,
        )
        with progress_bar(st, "items") as progress:
            result = process_request(home, request, options, progress=progress)
    document: dict[str, Any] = {
        "request_id": result.request_id,
        "request_sha256": result.request_sha256,
        "response": str(result.response_path) if result.response_path else None,
        "response_id": result.response_id,
        "response_sha256": result.response_sha256,
        "response_parts": [str(p) for p in result.response_parts],
        "counts": result.counts,
        "vendor_calls": result.vendor_calls,
        "items": result.items,
    }
    if dry_run:
        document["plan"] = result.plan
    st.emit(document, lambda: _print_result(result, dry_run))
    if not dry_run and not result.complete:
        raise typer.Exit(code=4)


def _print_result(result: Any, dry_run: bool, *, portal: bool = False) -> None:
    if dry_run:
        table = Table("action", "items", title=f"request {result.request_id} (dry run)")
        for action, count in result.plan.items():
            table.add_row(action, str(count))
        out.print(table)
        out.print("Verified. No vendor was called.")
        return
    table = Table("status", "items", title=f"request {result.request_id}")
    for status, count in result.counts.items():
        table.add_row(status, str(count))
    out.print(table)
    for item in result.items:
        if item["status"] != "ok" and item["error"]:
            out.print(
                f"  {escape(item['id'])} {item['action']} {item['status']}: "
                f"{escape(item['error']['message'])}"
            )
    if not result.vendor_calls and not portal:
        out.print("No vendor call was needed (everything was already final).")
    written = str(result.response_path)
    if result.response_parts:
        written = f"{result.response_parts[0]} … .{len(result.response_parts):03d} (parts)"
    out.print(f"Wrote {escape(written)} (manifest sha256 {result.response_sha256})")


@app.command("portal-export")
def portal_export_cmd(
    ctx: typer.Context,
    request: Annotated[Path, typer.Argument(help="The request bundle from the inside.")],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="Folder for the usage upload, the worksheet and the export record.",
        ),
    ],
) -> None:
    """Verify a request and write its Cisco items as files for the CSSM web portal.

    For a site without Smart Licensing API credentials. Writes UD_SA_<stamp>.tar.gz (the usage
    reports, byte for byte, to upload in the portal), worksheet.html (print it) and
    worksheet.csv (what to do per device, and the exact name to save each authorization code
    under), and portal-export.json. The items are recorded as exported: `outside process`
    never sends them to the API. Running it again exports nothing new and writes the same
    files, saying when they were exported. BIG-IQ items and queries are left for `outside
    process`.

    Example: `airgap outside portal-export req-17.airgap -o portal-17/`
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.outside.portal import portal_export

        result = portal_export(st.open_home(), request, output)
    document: dict[str, Any] = {
        "request_id": result.request_id,
        "request_sha256": result.request_sha256,
        "folder": str(result.out_dir),
        "exports": result.exports,
        "new_items": result.new_items,
        "repeated": result.repeated,
        "items": result.items,
        "left_for_process": result.left,
        "files": [str(path) for path in result.files],
    }

    def human() -> None:
        if not result.items:
            out.print(f"Request {result.request_id}: no item for the CSSM portal.")
        for export in result.exports:
            upload = f", usage upload {export['usage_file']}" if export["usage_file"] else ""
            out.print(
                f"Export {export['export_id']} of request {result.request_id[:8]}: "
                f"{export['items']} items, exported at {export['exported_at']}{escape(upload)}"
            )
        if result.repeated:
            out.print("Nothing new to export: the same files were written again.")
        for path in result.files:
            out.print(f"  wrote {escape(str(path))}")
        for item in result.left:
            out.print(
                f"  left for `outside process`: {escape(item['id'])} {item['action']} "
                f"({escape(item['why'])})"
            )
        if result.items:
            out.print(
                f"Do the tasks in {escape(str(result.out_dir / 'worksheet.html'))}, save what the "
                f"portal gives in {escape(str(result.out_dir))}, then run: airgap outside "
                f"portal-import {escape(str(request))} --from {escape(str(result.out_dir))} "
                f"-o RESPONSE"
            )

    st.emit(document, human)


@app.command("portal-import")
def portal_import_cmd(
    ctx: typer.Context,
    request: Annotated[Path, typer.Argument(help="The request bundle that was exported.")],
    from_dir: Annotated[
        Path,
        typer.Option(
            "--from",
            help="Folder holding the ACK downloads, codes/ and worksheet.csv (the export folder).",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Response file (default: `resp-<id>-<n>.airgap`)."),
    ] = None,
    split: ResponseSplit = None,
) -> None:
    """Read what the CSSM portal gave back and write the signed response.

    Reads the ACK downloads (*.tar.gz), the authorization codes saved under codes/ with the
    worksheet's names, and worksheet.csv (a return is done when its done cell says yes).
    Every file must fit an exported item of this request, or nothing is written (E_PORTAL).
    Items without their files stay pending: exit 4, and a later portal-import fills them in.

    Example: `airgap outside portal-import req-17.airgap --from portal-17/ -o resp-17.airgap`
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.bundle.parts import parse_split
        from airgap.outside.portal import portal_import

        part_size = parse_split(split) if split else None
        result = portal_import(st.open_home(), request, from_dir, output=output, split=part_size)
    document: dict[str, Any] = {
        "request_id": result.request_id,
        "request_sha256": result.request_sha256,
        "response": str(result.response_path),
        "response_id": result.response_id,
        "response_sha256": result.response_sha256,
        "response_parts": [str(p) for p in result.response_parts],
        "counts": result.counts,
        "matched": result.matched,
        "items": result.items,
    }

    def human() -> None:
        out.print(f"Matched {len(result.matched)} portal files to their items.")
        _print_result(result, False, portal=True)

    st.emit(document, human)
    if not result.complete:
        raise typer.Exit(code=4)


@app.command("status")
def status_cmd(ctx: typer.Context) -> None:
    """Requests seen, items per state, and items that need an operator's decision."""
    st: AppState = state(ctx)
    with mapped_errors(st):
        from airgap.outside.process import outside_status

        summary = outside_status(st.open_home())

    def human() -> None:
        states = ["NEW", "SUBMITTING", "SUBMITTED", "DONE", "FAILED", "NEEDS_ATTENTION"]
        table = Table("request", "seq", "received", *[s.lower() for s in states], "responses")
        for entry in summary["requests"]:
            counts = entry["items"]
            table.add_row(
                entry["bundle_id"][:8],
                str(entry["sequence"]),
                entry["received_at"],
                *[str(counts.get(s, 0)) for s in states],
                str(entry["responses"]),
            )
        out.print(table)
        for item in summary["attention"]:
            out.print(
                f"[yellow]needs attention[/] {item['bundle_id'][:8]}/{escape(item['item_id'])} "
                f"{item['action']}: {escape(str((item.get('error') or {}).get('message', '')))}"
            )
        if not summary["requests"]:
            out.print("No requests processed yet.")

    st.emit(summary, human)


app.command("watch")(watch.outside_watch_cmd)
