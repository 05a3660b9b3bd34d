"""`airgap kit`: build the offline install kit for a machine with no package index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from airgap.cli._output import mapped_errors, out, state

app = typer.Typer(
    help="Offline install kits: airgap and every dependency wheel in one signed tar.",
    no_args_is_help=True,
)


@app.command("build")
def build_cmd(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("-o", "--output", help="The kit tar to write.")] = Path(
        "airgap-kit.tar"
    ),
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="pip platform tag of the target, e.g. manylinux2014_x86_64 (repeatable). "
            "Default: this machine's.",
            show_default=False,
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            help="The target's Python version, e.g. 3.11. Default: this interpreter's.",
            show_default=False,
        ),
    ] = None,
    expires: Annotated[
        str, typer.Option("--expires", help="How long `airgap verify` accepts the kit.")
    ] = "365d",
) -> None:
    """Build airgap's wheel, download every dependency wheel, and write one signed tar.

    The tar holds install.sh and README.txt at the top, SHA256SUMS, wheels/, and the signed
    manifest (a bundle of kind `kit`, signed by this home). Inside the gap: unpack it and run
    `sh install.sh`, which checks every file before `pip install --no-index` runs. Needs pip's
    package index here (or PIP_INDEX_URL pointing at a mirror).

    Example: `airgap kit build -o airgap-kit.tar --platform manylinux2014_x86_64 --python 3.11`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.kit import build_kit
        from airgap.units import parse_duration

        lifetime = parse_duration(expires, what="--expires")
        result = build_kit(
            app_state.open_home(),
            output,
            platforms=list(platform or []),
            python=python,
            lifetime=lifetime,
            say=app_state.note,
        )

    def human() -> None:
        from airgap.units import format_size

        out.print(
            f"Wrote {escape(str(result.path))} ({format_size(result.size)}): airgap "
            f"{result.airgap_version} and {len(result.wheels) - 1} dependency wheels for "
            f"{escape(result.platform)}, Python {result.python}\n"
            f"  kit {result.bundle_id}, manifest sha256 {result.manifest_sha256}\n"
            "Inside the gap: mkdir kit && tar -xf "
            f"{escape(result.path.name)} -C kit && sh kit/install.sh"
        )

    app_state.emit(result.to_json(), human)
