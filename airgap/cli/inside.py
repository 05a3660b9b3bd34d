"""`airgap inside`: pack requests, import responses and show what is outstanding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from airgap.cli import watch
from airgap.cli._output import AppState, err, mapped_errors, out, progress_bar, state

app = typer.Typer(
    help="The secure-network side: pack requests, import responses, show their state.",
    no_args_is_help=True,
)

_STATUS_STYLE = {
    "ok": "green",
    "failed": "bold red",
    "pending": "yellow",
    "needs_attention": "bold yellow",
    "outstanding": "dim",
}


@contextmanager
def _plan_problems(app_state: AppState) -> Iterator[None]:
    """Show every problem of a bad plan (each with its line), not only the first one."""
    from airgap.errors import PlanError

    try:
        yield
    except PlanError as exc:
        if app_state.json:
            import json

            document = {
                "ok": False,
                "error": {"code": exc.code, "message": exc.message, "problems": exc.problems},
            }
            print(json.dumps(document))
            raise typer.Exit(code=exc.exit_code) from None
        if len(exc.problems) > 1:
            for problem in exc.problems:
                err.print(f"  {escape(problem)}")
        raise


def _open_inside(app_state: AppState) -> Any:
    from airgap.review import require_home_role

    home = app_state.open_home()
    require_home_role(home, "inside")
    return home


@app.command("pack")
def pack_cmd(
    ctx: typer.Context,
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="The request bundle to write; must not exist yet.",
            show_default=False,
        ),
    ],
    plans: Annotated[
        list[Path] | None,
        typer.Argument(help="CSV or JSON plan files (DESIGN §6 columns).", show_default=False),
    ] = None,
    udi: Annotated[
        Path | None,
        typer.Option(
            "--udi",
            help="A folder of `show license udi` captures: one cisco.reserve per UDI.",
            show_default=False,
        ),
    ] = None,
    entitlement: Annotated[
        list[str] | None,
        typer.Option(
            "--entitlement",
            help="TAG[:N] to reserve for every device of --udi (repeat for several).",
            show_default=False,
        ),
    ] = None,
    rum: Annotated[
        Path | None,
        typer.Option(
            "--rum",
            help="A folder of RUM usage reports: one cisco.report_usage per file.",
            show_default=False,
        ),
    ] = None,
    returns: Annotated[
        Path | None,
        typer.Option(
            "--returns",
            help="A folder of return-code captures: one cisco.return per capture.",
            show_default=False,
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="How long the request is valid, e.g. 7d or 36h (default: bundle.expiry).",
            show_default=False,
        ),
    ] = None,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="Encrypt the bundle to the trusted outside sites.")
    ] = False,
    compress: Annotated[bool, typer.Option("--compress", help="gzip the bundle.")] = False,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Write parts OUTPUT.001, .002, … of this size for the media, e.g. 4GiB or "
            "650MiB (at least 1MiB).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build and sign a request bundle and record it as outstanding.

    Items are numbered i00001… in the order given: plans first, then --udi, --rum, --returns.
    The same request twice (same action and device, or the same RUM file) is refused with both
    places named. Nothing is written when anything is wrong.

    Examples:

    `airgap inside pack plan.csv -o req.airgap`

    `airgap inside pack --udi captures/ --entitlement regid.2017-03.com.cisco.advantagek9:1
    --rum rum/ --returns returns/ -o req.airgap --encrypt --compress`
    """
    app_state = state(ctx)
    with mapped_errors(app_state), _plan_problems(app_state):
        from airgap.bundle.parts import parse_split
        from airgap.inside.pack import pack
        from airgap.units import parse_duration

        part_size = parse_split(split) if split else None
        home = _open_inside(app_state)
        lifetime = parse_duration(expires, what="--expires") if expires else None
        with progress_bar(app_state, "packing") as progress:
            result = pack(
                home,
                plans=list(plans or []),
                udi_dir=udi,
                entitlements=list(entitlement or []),
                rum_dir=rum,
                returns_dir=returns,
                output=output,
                expires=lifetime,
                encrypt=encrypt,
                compress=compress,
                progress=progress,
                split=part_size,
            )

    def human() -> None:
        table = Table("action", "items", title="packed")
        for action, count in result.by_action.items():
            table.add_row(action, str(count))
        table.add_section()
        for vendor, count in result.by_vendor.items():
            table.add_row(f"[bold]{vendor}[/] (all)", str(count))
        table.add_row("[bold]total[/]", str(result.items))
        out.print(table)
        from airgap.units import format_size, format_timestamp

        extras = [
            w for w, on in (("encrypted", result.encrypted), ("gzip", result.compressed)) if on
        ]
        if result.parts:
            extras.append(f"{len(result.parts)} parts {result.parts[0].name}…")
        out.print(
            f"Wrote {escape(str(result.path))} ({format_size(result.size)}"
            f"{', ' + ', '.join(extras) if extras else ''})\n"
            f"  request {result.bundle_id}, sequence {result.sequence}, "
            f"expires {format_timestamp(result.expires)}\n"
            f"  manifest sha256 {result.manifest_sha256}\n"
            "Next: carry it to the outside and run `airgap outside process "
            f"{escape((result.parts or [result.path])[0].name)}`."
        )

    app_state.emit(result.to_json(), human)


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    response: Annotated[
        Path, typer.Argument(help="The response bundle from the outside.", show_default=False)
    ],
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Where to write the per-device files and INSTRUCTIONS.md."),
    ] = Path("airgap-out"),
) -> None:
    """Verify a response, match it to its request and write the per-device files.

    Outputs go to OUT/<request id prefix>/: cisco/<device>/lic.txt, ack-<n>.xml, return.json,
    slr-auth.txt; bigiq/<MAC>/bigip.license, revoke.json; queries/<item>.json; INSTRUCTIONS.md
    with the exact device commands and the reason for anything not done; summary.json.
    Importing the same response again changes nothing. An existing different file is never
    overwritten. Exit 3 when the response is refused, 4 when some items failed or are still
    pending.

    Example: `airgap inside import resp-17.airgap --out /media/usb/licences`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.inside.importer import import_response

        home = _open_inside(app_state)
        result = import_response(home, response, out=out_dir)

    def human() -> None:
        if result.already_imported:
            out.print(
                f"Already imported: response {result.response_id} (request "
                f"{result.request_id}); nothing changed. Outputs are in "
                f"{escape(str(result.out_dir))}."
            )
        table = Table("status", "items", title=f"request {result.request_id[:8]}")
        for status, count in result.counts.items():
            if count:
                style = _STATUS_STYLE.get(status, "")
                table.add_row(f"[{style}]{status}[/]", str(count))
        out.print(table)
        for item in result.items:
            if item["status"] != "ok" and item["error"]:
                out.print(
                    f"  {escape(item['id'])} {item['action']} {escape(str(item['device'] or ''))}"
                    f" {item['status']}: {escape(str(item['error'].get('message', '')))}"
                )
        if result.stale:
            out.print(
                f"  {len(result.stale)} item(s) were already final; this (older) response's "
                "non-final status for them was ignored."
            )
        if not result.already_imported:
            out.print(
                f"Wrote {len(result.written)} file(s) to {escape(str(result.out_dir))} "
                f"({len(result.unchanged)} already there); read INSTRUCTIONS.md there."
            )

    app_state.emit(result.to_json(), human)
    if result.partial and not result.already_imported:
        raise typer.Exit(code=4)


@app.command("status")
def status_cmd(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include requests whose items are all final.")
    ] = False,
) -> None:
    """Outstanding requests and the state of their items.

    Example: `airgap inside status --json`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.inside.importer import inside_status

        summary = inside_status(_open_inside(app_state), include_complete=show_all)

    def human() -> None:
        statuses = ["outstanding", "ok", "failed", "pending", "needs_attention"]
        headers = ["open", "ok", "failed", "pending", "attention"]
        table = Table("request", "seq", "created", "expires", *headers, "responses")
        for entry in summary["requests"]:
            counts = entry["counts"]
            expired = " [red](expired)[/]" if entry["expired"] else ""
            table.add_row(
                entry["bundle_id"][:8],
                str(entry["sequence"]),
                entry["created"][:16].replace("T", " "),
                entry["expires"][:16].replace("T", " ") + expired,
                *[str(counts.get(s, 0)) for s in statuses],
                str(len(entry["responses"])),
            )
        out.print(table)
        for entry in summary["requests"]:
            for item in entry["items"]:
                if item["status"] in ("failed", "pending", "needs_attention") and item["error"]:
                    style = _STATUS_STYLE.get(item["status"], "")
                    out.print(
                        f"  [{style}]{item['status']}[/] {entry['bundle_id'][:8]}/"
                        f"{escape(item['id'])} {item['action']} "
                        f"{escape(str(item['device'] or ''))}: "
                        f"{escape(str(item['error'].get('message', '')))}"
                    )
        if not summary["requests"]:
            out.print("No outstanding requests." if not show_all else "No requests packed yet.")

    app_state.emit(summary, human)


app.command("watch")(watch.inside_watch_cmd)
