"""`airgap audit`: check the hash chain and export the log for compliance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from airgap.cli._output import mapped_errors, out, state

app = typer.Typer(help="The hash-chained audit log of this home.", no_args_is_help=True)


@app.command("verify")
def verify_cmd(ctx: typer.Context) -> None:
    """Check every line of the audit chain; name the first broken line (exit 1 if any)."""
    st = state(ctx)
    with mapped_errors(st):
        home = st.open_home()
        report = home.audit().verify()
    st.emit(
        {"entries": report.entries, "head": report.head},
        lambda: out.print(
            f"[green]OK[/] audit log: {report.entries} entries, chain intact, head {report.head}"
        ),
    )


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Export the log (who, what, when, where, outcome, bundle ids and manifest hashes).

    The chain is verified first; a broken log is not exported.
    """
    st = state(ctx)
    with mapped_errors(st):
        from airgap.audit import export_csv, export_rows
        from airgap.errors import ConfigError
        from airgap.fsutil import atomic_write_bytes

        if fmt not in ("csv", "json"):
            raise ConfigError(f"unknown export format {fmt!r}", hint="Use --format csv or json.")
        home = st.open_home()
        log = home.audit()
        log.verify()
        rows = export_rows(log)
        text = (
            export_csv(rows)
            if fmt == "csv"
            else json.dumps({"entries": rows}, indent=2, sort_keys=True) + "\n"
        )
        if output is not None:
            atomic_write_bytes(output, text.encode("utf-8"))
    if output is None and st.json and fmt == "json":
        st.emit({"entries": rows})  # the one JSON document --json promises, with "ok"
    elif output is None:
        print(text, end="")
    else:
        st.emit(
            {"file": str(output), "entries": len(rows), "format": fmt},
            lambda: out.print(f"Wrote {len(rows)} entries to {escape(str(output))}"),
        )
