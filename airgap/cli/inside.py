"""`airgap inside`: pack requests, import responses and show what is outstanding."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from airgap.cli import watch
from airgap.cli._output import (
    AppState,
    err,
    mapped_errors,
    out,
    print_rows_table,
    progress_bar,
    state,
)

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
        typer.Argument(
            help='CSV or JSON plan files (columns: README, "The round trip").',
            show_default=False,
        ),
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
    collect_inventory: Annotated[
        Path | None,
        typer.Option(
            "--collect",
            help="First collect UDIs and usage from the devices of this inventory, then pack "
            "them (reserves need --entitlement).",
            show_default=False,
        ),
    ] = None,
    collect_out: Annotated[
        Path | None,
        typer.Option(
            "--collect-out",
            help="Where --collect writes the captures (default: OUTPUT.collected/).",
            show_default=False,
        ),
    ] = None,
    accept_new_host_keys: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-keys", help="With --collect: pin SSH host keys met the first time."
        ),
    ] = False,
    pool: Annotated[
        str | None,
        typer.Option("--pool", help="With --collect: the BIG-IQ pool for the BIG-IPs' rows."),
    ] = None,
    hypervisor: Annotated[
        str | None,
        typer.Option("--hypervisor", help="With --collect: hypervisor for bigiq.assign rows."),
    ] = None,
    unit_of_measure: Annotated[
        str | None,
        typer.Option(
            "--unit-of-measure",
            help="With --collect: yearly, monthly, daily or hourly, for utility pools.",
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

    `airgap inside pack --collect devices.csv --entitlement TAG:1 --pool POOL
    --hypervisor vmware --unit-of-measure yearly -o req.airgap`

    With --collect, BIG-IPs of the inventory become plan rows (COLLECT-OUT/bigip-plan.csv,
    packed with the rest): a RegKey activation where the row names a `regkey`, else an
    assignment from --pool. To review them first, run `inside collect --plan-out` instead.
    """
    app_state = state(ctx)
    collected: Any = None
    with mapped_errors(app_state), _plan_problems(app_state):
        from airgap.bundle.parts import parse_split
        from airgap.inside.pack import pack
        from airgap.units import parse_duration

        part_size = parse_split(split) if split else None
        home = _open_inside(app_state)
        lifetime = parse_duration(expires, what="--expires") if expires else None
        if collect_inventory is not None:
            from airgap.inside.collect import CollectOptions, collect

            folder = collect_out or output.with_name(output.name + ".collected")
            with progress_bar(app_state, "collecting") as progress:
                collected = collect(
                    home,
                    collect_inventory,
                    CollectOptions(
                        out=folder,
                        udi=bool(entitlement),
                        accept_new_host_keys=accept_new_host_keys,
                        plan_out=folder / "bigip-plan.csv",
                        pool=pool,
                        hypervisor=hypervisor,
                        unit_of_measure=unit_of_measure,
                    ),
                    env=app_state.env,
                    prompt=app_state.device_prompt(),
                    progress=progress,
                )
            if entitlement and (folder / "udi").is_dir():
                udi = folder / "udi"
            if (folder / "rum").is_dir():
                rum = folder / "rum"
            if collected.plan is not None and collected.plan_rows:
                plans = [*(plans or []), collected.plan]
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

    document = result.to_json()
    if collected is not None:
        document["collect"] = collected.to_json()
        if not app_state.json and not app_state.quiet:
            rows = [dict(row, summary=_collected(row)) for row in document["collect"]["devices"]]
            _outcome_table("collect", rows, "collected")
    app_state.emit(document, human)
    if collected is not None and not collected.complete:
        raise typer.Exit(code=4)


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


# --- devices inside the gap ----------------------------------------------------------------------

_DEVICE_STYLE = {
    "ok": "green",
    "unreachable": "yellow",
    "auth_failed": "bold red",
    "device_error": "bold red",
    "refused": "bold red",
    "failed": "bold red",
}


def _confirm_returns(app_state: AppState, hosts: list[str], yes: bool) -> None:
    """Returns remove devices' licences: ask, unless --yes."""
    if not hosts or yes:
        return
    from airgap.errors import ConfigError

    if app_state.json or not sys.stdin.isatty():
        raise ConfigError(
            f"--return would remove the authorization of {len(hosts)} device(s); confirm with "
            "--yes",
            hint="Returning is destructive: the devices lose their reserved licences.",
        )
    err.print(
        f"[bold]Returning the authorization of {len(hosts)} device(s):[/] "
        f"{escape(', '.join(hosts))}\nThe devices lose their reserved licences until Cisco "
        "confirms the return and a new reservation is imported."
    )
    typer.confirm("Return them?", abort=True)


def _outcome_table(title: str, rows: list[dict[str, Any]], what: str) -> None:
    print_rows_table(
        title,
        ("device", "status", what, "error"),
        [
            (
                row["hostname"],
                row["status"],
                str(row.get("summary", "")),
                f"{row['code']}: {row['message']}" if row.get("code") else "",
            )
            for row in rows
        ],
        [("", _DEVICE_STYLE.get(row["status"], ""), "", "") for row in rows],
    )


def _devices_option() -> Any:
    return typer.Option(
        "--only",
        help="Work on this device only (hostname or address; repeat for several).",
        show_default=False,
    )


@app.command("collect")
def collect_cmd(
    ctx: typer.Context,
    inventory: Annotated[
        Path, typer.Argument(help="The device inventory (CSV or JSON).", show_default=False)
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for udi/, rum/, returns/, dossiers/.", show_default=False
        ),
    ],
    udi: Annotated[bool, typer.Option("--udi", help="Collect `show license udi`.")] = False,
    usage: Annotated[bool, typer.Option("--usage", help="Collect signed usage (RUM).")] = False,
    return_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--return",
            help="Return this device's authorization (destructive; repeat for several).",
            show_default=False,
        ),
    ] = None,
    only: Annotated[list[str] | None, _devices_option()] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Devices worked on at once.", min=1)
    ] = 16,
    plan_out: Annotated[
        Path | None,
        typer.Option(
            "--plan-out", help="Write plan rows for the BIG-IPs here.", show_default=False
        ),
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", help="BIG-IQ pool for --plan-out rows.")
    ] = None,
    hypervisor: Annotated[
        str | None, typer.Option("--hypervisor", help="Hypervisor for bigiq.assign rows.")
    ] = None,
    unit_of_measure: Annotated[
        str | None,
        typer.Option(
            "--unit-of-measure", help="yearly, monthly, daily or hourly, for utility pools."
        ),
    ] = None,
    accept_new_host_keys: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-keys",
            help="Pin the SSH host key of devices met for the first time.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be collected; contact nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before returns.")] = False,
) -> None:
    """Read what `inside pack` needs from every device of an inventory, concurrently.

    IOS XE: `show license udi` into OUT/udi/<host>.udi.txt and the signed usage reports into
    OUT/rum/<host>.rum.xml (both by default; --udi or --usage for one). BIG-IP: the base MAC,
    and the dossier of the registration key its inventory row names (OUT/dossiers/).
    Credentials come from AIRGAP_DEVICE_<NAME>_USERNAME / _PASSWORD / _KEYFILE (or a prompt)
    and are never stored. Exit 4 when some devices failed.

    Example: `airgap inside collect devices.csv --out collected/` then
    `airgap inside pack --udi collected/udi --entitlement TAG:1 --rum collected/rum -o req.airgap`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.inside.collect import CollectOptions, collect

        home = _open_inside(app_state)
        returns = sorted(return_hosts or [])
        _confirm_returns(app_state, returns, yes or dry_run)
        both = not udi and not usage
        options = CollectOptions(
            out=out_dir,
            udi=udi or both,
            usage=usage or both,
            returns=frozenset(returns),
            only=frozenset(only or ()),
            concurrency=concurrency,
            dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys,
            plan_out=plan_out,
            pool=pool,
            hypervisor=hypervisor,
            unit_of_measure=unit_of_measure,
        )
        with progress_bar(app_state, "devices") as progress:
            result = collect(
                home,
                inventory,
                options,
                env=app_state.env,
                prompt=app_state.device_prompt(),
                progress=progress,
            )
    document = result.to_json()

    def human() -> None:
        rows = [
            dict(row, summary=", ".join(row.get("planned", [])) if dry_run else _collected(row))
            for row in document["devices"]
        ]
        _outcome_table("collect (dry run)" if dry_run else "collect", rows, "collected")
        if not dry_run:
            out.print(f"Wrote {len(result.files)} file(s) under {escape(str(out_dir))}.")
            if result.plan:
                out.print(f"Plan rows for the BIG-IPs: {escape(str(result.plan))}")

    app_state.emit(document, human)
    if not result.complete:
        raise typer.Exit(code=4)


def _collected(row: dict[str, Any]) -> str:
    parts = []
    if row.get("udis"):
        parts.append(f"{len(row['udis'])} UDI(s)")
    if row.get("mac"):
        parts.append(row["mac"])
    parts += [Path(f).parent.name for f in row.get("files", []) if "/udi/" not in f]
    return ", ".join(parts)


@app.command("apply")
def apply_cmd(
    ctx: typer.Context,
    inventory: Annotated[
        Path,
        typer.Option("--inventory", help="The device inventory (CSV or JSON).", show_default=False),
    ],
    request: Annotated[
        str | None,
        typer.Argument(
            help="The request (its id or a prefix, as `inside status` shows it); default: the "
            "newest with an imported response.",
            show_default=False,
        ),
    ] = None,
    only: Annotated[list[str] | None, _devices_option()] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="Devices worked on at once.", min=1)
    ] = 16,
    force: Annotated[
        bool, typer.Option("--force", help="Push again files already applied.")
    ] = False,
    accept_new_host_keys: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-keys",
            help="Pin the SSH host key of devices met for the first time.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be pushed; contact nothing.")
    ] = False,
) -> None:
    """Put an imported response's codes, ACKs and BIG-IP licences onto their devices.

    Each file goes to the device the inventory names whose identity matches (UDI, or base MAC):
    another device is refused and never written to. Each push is recorded before it is made
    and confirmed on the device after, so a re-run skips what is applied (--force pushes again)
    and an interrupted run is confirmed on the device, never pushed blindly. Exit 4 when some
    devices failed or some files found no device.

    Example: `airgap inside apply --inventory devices.csv`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.inside.apply import ApplyOptions, apply_response

        home = _open_inside(app_state)
        options = ApplyOptions(
            only=frozenset(only or ()),
            dry_run=dry_run,
            force=force,
            concurrency=concurrency,
            accept_new_host_keys=accept_new_host_keys,
        )
        with progress_bar(app_state, "devices") as progress:
            result = apply_response(
                home,
                request,
                inventory,
                options,
                env=app_state.env,
                prompt=app_state.device_prompt(),
                progress=progress,
            )
    document = result.to_json()

    def human() -> None:
        rows = [
            dict(
                row,
                summary=", ".join(
                    f"{n} {r}" for r, n in Counter(f["result"] for f in row["files"]).items()
                ),
            )
            for row in document["devices"]
        ]
        title = f"apply {result.request_id[:8]}" + (" (dry run)" if dry_run else "")
        _outcome_table(title, rows, "files")
        for entry in document["unmatched"]:
            out.print(
                f"  [yellow]no device[/] for {escape(entry['file'])} ({escape(entry['device'])}):"
                " the inventory lists none with that identity"
            )
        for entry in document["by_hand"]:
            out.print(f"  by hand: {escape(entry)} (see INSTRUCTIONS.md)")
        counts = ", ".join(f"{n} {r}" for r, n in result.files.items())
        out.print(f"Files: {counts or 'none to apply'}.")

    app_state.emit(document, human)
    if not dry_run and not result.complete:
        raise typer.Exit(code=4)
