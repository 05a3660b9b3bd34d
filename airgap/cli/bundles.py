"""Commands that look at a bundle: verify, inspect, approve."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from airgap.cli._output import mapped_errors, out, state

BundleArg = Annotated[Path, typer.Argument(help="The .airgap bundle file.", show_default=False)]
_STATUS_STYLE = {"valid": "green", "untrusted": "yellow", "invalid": "bold red"}


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("approve")(approve_cmd)


def verify_cmd(ctx: typer.Context, bundle: BundleArg) -> None:
    """Verify a bundle against this home's trust store and say what was checked.

    Exit 0 when it verifies, 3 when it is refused (the code says why).
    """
    app = state(ctx)
    with mapped_errors(app):
        from airgap.config import HomePaths
        from airgap.review import verify, verify_without_home

        if HomePaths(app.home).exists():
            opened = verify(app.open_home(), bundle)
        else:
            opened = verify_without_home(bundle, app.home)
    manifest = opened.manifest

    def human() -> None:
        out.print(
            f"[green]OK[/] {escape(bundle.name)}: {manifest.kind} {manifest.bundle_id} "
            f"from {escape(manifest.producer['name'])}, {opened.item_count} items"
        )
        for check in opened.checks:
            out.print(f"  [green]✓[/] {escape(check)}")
        out.print(f"  manifest sha256 {opened.manifest_sha256}")

    app.emit(
        {
            "bundle_id": manifest.bundle_id,
            "kind": manifest.kind,
            "manifest_sha256": opened.manifest_sha256,
            "producer": dict(manifest.producer),
            "items": opened.item_count,
            "encrypted": opened.encrypted,
            "compressed": opened.compressed,
            "signatures": [c.to_json() for c in opened.signatures],
            "checks": opened.checks,
        },
        human,
    )


def inspect_cmd(
    ctx: typer.Context,
    bundle: BundleArg,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a printable, self-contained handoff sheet here."),
    ] = None,
) -> None:
    """List a bundle's manifest, signatures and items without needing trust.

    Each signature is marked valid, untrusted (key not in this home's trust store) or invalid.
    Works without a home too (every signature is then untrusted).

    Example: `airgap inspect req.airgap --html handoff.html` (print it and sign it off).
    """
    app = state(ctx)
    with mapped_errors(app):
        from airgap.config import HomePaths
        from airgap.review import inspect

        home = app.open_home() if HomePaths(app.home).exists() else None
        report = inspect(home, bundle, for_json=app.json)
        opened = report.opened
        # Rows are written as they are read: a bundle of 200,000 items is never one document.
        head = {**report.head_json(), "manifest": opened.manifest._head_json()}
        if html is not None:
            from airgap.fsutil import atomic_output
            from airgap.handoff import write_sheet

            with atomic_output(html) as handle:
                write_sheet(
                    lambda text: handle.write(text.encode("utf-8")),
                    bundle,
                    head,
                    opened.iter_items(),
                    item_count=opened.item_count,
                    by_action=opened.manifest.summary["by_action"],
                )
    extra = {"html": str(html)} if html is not None else {}
    if app.json:
        report.write_json(sys.stdout.write, write_ascii=_write_stdout_bytes, **extra)
    elif not app.quiet:
        _print_inspection(bundle, head, opened.iter_items(), opened.item_count)
        if html is not None:
            out.print(f"Wrote the handoff sheet {escape(str(html))}")


def _write_stdout_bytes(data: bytes) -> None:
    sys.stdout.flush()  # what was written as text goes first
    sys.stdout.buffer.write(data)


def _print_inspection(
    bundle: Path, doc: dict[str, Any], items: Iterator[dict[str, Any]], count: int
) -> None:
    manifest = doc["manifest"]
    producer = manifest["producer"]
    out.print(f"[bold]{escape(bundle.name)}[/]  {manifest['kind']} {manifest['bundle_id']}")
    out.print(
        f"  producer  {escape(producer['name'])} ({producer['role']}) {producer['fingerprint']}\n"
        f"  sequence  {manifest['sequence']}\n"
        f"  created   {manifest['created']}   expires {manifest['expires']}\n"
        f"  manifest  sha256 {doc['manifest_sha256']}"
    )
    if manifest["in_reply_to"]:
        reply = manifest["in_reply_to"]
        out.print(f"  replies to {reply['bundle_id']} (manifest {reply['manifest_sha256']})")
    for sig in doc["signatures"]:
        style = _STATUS_STYLE.get(sig["status"], "")
        who = f" {escape(sig['name'])} ({sig['role']})" if sig["name"] else ""
        out.print(f"  signature [{style}]{sig['status']}[/]{who} {sig['fingerprint']}")
    for problem in doc["problems"]:
        out.print(f"  [yellow]![/] {problem['code']}: {escape(problem['message'])}")
    table = Table("id", "action", "device", "status", "files")
    for item in itertools.islice(items, 200):
        device = item.get("device") or {}
        label = device.get("hostname") or ""
        if "udi" in device:
            label = f"{label} {device['udi']['pid']}:{device['udi']['sn']}".strip()
        label = device.get("mac", label)
        table.add_row(
            escape(item["id"]),
            item["action"],
            escape(label),
            item.get("status", ""),
            str(len(item.get("files", []))),
        )
    out.print(table)
    if count > 200:
        out.print(f"  … and {count - 200} more items (use --json for all)")


def approve_cmd(
    ctx: typer.Context,
    bundle: BundleArg,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write the co-signed bundle here (default: in place)."),
    ] = None,
) -> None:
    """Add this home's signature to a bundle (two-person rule) without changing manifest.json.

    The bundle must verify with this home's trust store, and this home must have the role
    that produces that kind of bundle.
    """
    app = state(ctx)
    with mapped_errors(app):
        from airgap.review import approve

        result = approve(app.open_home(), bundle, output)
    app.emit(
        {
            "file": str(result.path),
            "bundle_id": result.bundle_id,
            "manifest_sha256": result.manifest_sha256,
            "signatures": result.signatures,
            "already_approved": result.already,
        },
        lambda: out.print(
            ("Already approved by this home: " if result.already else "Approved: ")
            + f"{escape(str(result.path))} now carries {result.signatures} signature(s)"
        ),
    )
