"""`airgap demo`: the whole round trip on local emulators, with a summary a person can read."""

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
        int, typer.Option("--devices", help="How many Cisco devices to emulate.", min=1)
    ] = 6,
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Run in this (new or empty) folder and keep everything."),
    ] = None,
) -> None:
    """Run the whole round trip against local Cisco and BIG-IQ emulators.

    Creates an inside and an outside home, emulates devices, packs a signed and encrypted
    request (reservations, usage reports, a return, BIG-IQ assignments and one deliberately
    bad item), processes it, imports the response, verifies both audit logs, and prints what
    crossed the gap. Nothing leaves 127.0.0.1.

    Example: `airgap demo --devices 20 --keep ./demo`
    """
    st = state(ctx)
    workdir = keep or Path(tempfile.mkdtemp(prefix="airgap-demo-"))
    started = time.monotonic()
    try:
        with mapped_errors(st):
            from airgap.demo import report_json, run_demo, summary_lines

            report = run_demo(workdir, devices=devices, say=st.note)
        elapsed = time.monotonic() - started
        lines = summary_lines(report, kept=keep is not None)
        document = {**report_json(report), "seconds": round(elapsed, 1), "kept": keep is not None}

        def human() -> None:
            out.print(f"[bold green]Round trip complete[/] in {elapsed:.1f} s")
            for line in lines:
                bold = not line.startswith(" ")
                out.print(f"[bold]{escape(line)}[/]" if bold else escape(line))

        st.emit(document, human)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
