"""`airgap outside`: process request bundles at the vendors; show the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from airgap.cli import watch
from airgap.cli._output import AppState, mapped_errors, out, progress_bar, state

app = typer.Typer(
    help="The connected side: call Cisco and BIG-IQ for a request.", no_args_is_help=True
)


@app.command("process")
def process_cmd(
    ctx: typer.Context,
    request: Annotated[Path, typer.Argument(help="The request bundle from the inside.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Response file (default: resp-<id>-<n>.airgap)."),
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
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Write the response as parts OUTPUT.001, .002, … of this size, e.g. 650MiB.",
            show_default=False,
        ),
    ] = None,
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


def _print_result(result: Any, dry_run: bool) -> None:
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
    if not result.vendor_calls:
        out.print("No vendor call was needed (everything was already final).")
    written = str(result.response_path)
    if result.response_parts:
        written = f"{result.response_parts[0]} … .{len(result.response_parts):03d} (parts)"
    out.print(f"Wrote {escape(written)} (manifest sha256 {result.response_sha256})")


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
