"""`airgap demo`: the whole round trip with devices on local emulators, with a summary a person
can read."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from airgap.cli._output import mapped_errors, out, state


def demo_cmd(
    ctx: typer.Context,
    devices: Annotated[
        int,
        typer.Option(
            "--devices", help="How many IOS XE devices to emulate (two BIG-IPs are added).", min=1
        ),
    ] = 6,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Run in this (new or empty) folder and keep everything."),
    ] = None,
    portal: Annotated[
        bool,
        typer.Option(
            "--portal",
            help="Go through the CSSM portal path (portal-export, the emulator's portal, "
            "portal-import) instead of the Smart Licensing API.",
        ),
    ] = False,
) -> None:
    """Run the whole round trip with devices against local emulators.

    Creates an inside and an outside home and starts emulated IOS XE devices (REST and SSH),
    two BIG-IPs, and the Cisco and BIG-IQ emulators. Then `inside collect` (UDIs, signed usage,
    BIG-IP MACs and plan rows), `inside pack` (signed, encrypted), `outside process`, `inside
    import` and `inside apply` to every device; verifies both audit logs and prints, per device,
    what was collected, what came back and what the device itself now holds. Nothing leaves
    127.0.0.1; every emulator stops when it ends. Exit 4 if a device did not end up licensed.

    With --portal, the Cisco items go the way of a site without API credentials: the outside
    exports a usage upload and a worksheet, the emulated portal answers with an ACK file and
    authorization codes, and the outside imports them into the signed response.

    Example: `airgap demo --devices 20 --keep ./demo` or `airgap demo --portal`
    """
    st = state(ctx)
    workdir = keep or Path(tempfile.mkdtemp(prefix="airgap-demo-"))
    started = time.monotonic()
    try:
        with mapped_errors(st):
            from airgap.demo import report_json, run_demo, run_portal_demo, summary_lines

            run = run_portal_demo if portal else run_demo
            report = run(workdir, devices=devices, say=st.note)
        elapsed = time.monotonic() - started
        lines = summary_lines(report, kept=keep is not None)
        document = {**report_json(report), "seconds": round(elapsed, 1), "kept": keep is not None}
        if portal:
            from airgap.demo import PortalDemoReport, portal_report_json, portal_summary_lines

            assert isinstance(report, PortalDemoReport)
            lines = portal_summary_lines(report, kept=keep is not None)
            document["portal"] = portal_report_json(report)

        def human() -> None:
            out.print(f"[bold green]Round trip complete[/] in {elapsed:.1f} s")
            for line in lines:
                bold = not line.startswith(" ")
                out.print(f"[bold]{escape(line)}[/]" if bold else escape(line))

        st.emit(document, human)
        if not report.all_licensed:
            raise typer.Exit(code=4)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
