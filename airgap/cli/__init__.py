"""Command-line interface (internal and unstable): parses options, calls the core, prints."""

from __future__ import annotations


def main() -> None:
    """Entry point of the `airgap` console script."""
    from airgap.cli.app import run

    run()
