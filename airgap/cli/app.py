"""The root `airgap` command: global options and the command groups."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from airgap import __version__
from airgap.cli import audit as audit_cli
from airgap.cli import bundles, demo, emulate, inside, kit, outside, site
from airgap.cli._output import AppState

app = typer.Typer(
    name="airgap",
    help=(
        "Carry Cisco and F5 licensing across an air gap as signed, schema-checked bundles.\n\n"
        "Start with `airgap demo` to see the whole round trip on local emulators."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"airgap {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="AIRGAP_HOME",
            help="The airgap home (keys, config, state, audit log). Default: ~/.airgap.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one machine-readable JSON document on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Global options may stand before or after the command."""
    ctx.obj = AppState(
        home=(home or Path.home() / ".airgap").expanduser(),
        json=json_out,
        quiet=quiet,
        env=dict(os.environ),
    )


site.register(app)
bundles.register(app)
app.add_typer(audit_cli.app, name="audit")
app.add_typer(inside.app, name="inside")
app.add_typer(outside.app, name="outside")
app.add_typer(emulate.app, name="emulate")
app.add_typer(kit.app, name="kit")
app.command("demo")(demo.demo_cmd)


_FLAGS = {"--json", "--quiet", "-q", "--version"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options found after the command to the front, where click expects them."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest += argv[index:]
            break
        if arg in _FLAGS:
            front.append(arg)
        elif arg == "--home" and index + 1 < len(argv):
            front += [arg, argv[index + 1]]
            index += 1
        elif arg.startswith("--home="):
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


def run() -> None:
    """Entry point: hoist global options, then dispatch."""
    app(args=hoist_global_options(sys.argv[1:]), prog_name="airgap")
