"""Command-line interface (internal and unstable): parses options, calls the core, prints."""

from __future__ import annotations

import gc


def main() -> None:
    """Entry point of the `airgap` console script."""
    from airgap.cli.app import run

    try:
        run()
    finally:
        # The process is about to end and frees everything anyway: frozen objects are left out
        # of the interpreter's last full collection, which halves the ~50 ms teardown after a
        # large pack.
        gc.freeze()
