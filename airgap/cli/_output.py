"""Shared CLI plumbing: global state, printing, prompts and the mapping of errors to exits."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from airgap.errors import AirgapError, InternalError, Interrupted

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_logger = logging.getLogger("airgap")


@dataclass
class AppState:
    """Global options, resolved once in the root callback."""

    home: Path
    json: bool = False
    quiet: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def passphrase(self) -> str | None:
        """AIRGAP_PASSPHRASE, or a prompt when a person is at the terminal."""
        value = self.env.get("AIRGAP_PASSPHRASE")
        if value:
            return value
        if sys.stdin.isatty() and not self.json:
            return getpass.getpass("Passphrase for this airgap home: ") or None
        return None

    def device_prompt(self) -> Callable[[str, bool], str] | None:
        """A prompt for device credentials the environment lacks, only for a person at a
        terminal (never under --json); None otherwise, so a missing one is an error."""
        if self.json or not sys.stdin.isatty():
            return None

        def ask(question: str, secret: bool) -> str:
            return getpass.getpass(question) if secret else input(question)

        return ask

    def open_home(self) -> Any:
        """Open the home the global options point at."""
        from airgap.home import Home

        return Home.open(self.home, self.env, passphrase=self.passphrase)

    def say(self, text: str) -> None:
        """Human output on stdout, silent under --quiet or --json."""
        if not self.quiet and not self.json:
            out.print(text)

    def note(self, text: str) -> None:
        """Secondary human output on stderr, silent under --quiet or --json."""
        if not self.quiet and not self.json:
            err.print(text)

    def emit(self, document: Mapping[str, Any], human: Callable[[], None] | None = None) -> None:
        """Print the result: one JSON document under --json, else the human rendering."""
        if self.json:
            print(json.dumps({"ok": True, **document}, indent=2, sort_keys=True, default=str))
        elif human is not None and not self.quiet:
            human()


def state(ctx: typer.Context) -> AppState:
    """The AppState of the root callback."""
    obj = ctx.find_root().obj
    assert isinstance(obj, AppState)
    return obj


def fail(
    app: AppState, code: str, message: str, exit_code: int, hint: str | None = None
) -> NoReturn:
    """Print one failure the way every command does and exit."""
    if app.json:
        print(json.dumps({"ok": False, "error": {"code": code, "message": message}}))
    else:
        err.print(f"[bold red]error[/] {code}: {escape(message)}")
        if hint:
            err.print(f"[dim]hint:[/] {escape(hint)}")
    raise typer.Exit(code=exit_code)


@contextmanager
def mapped_errors(app: AppState) -> Iterator[None]:
    """Turn core errors into one line (plus a hint) and their exit code; never a traceback."""
    try:
        yield
    except AirgapError as exc:
        fail(app, exc.code, exc.message, exc.exit_code, exc.hint)
    except KeyboardInterrupt:
        fail(app, Interrupted.code, "interrupted", Interrupted.exit_code)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug runs
        if app.env.get("AIRGAP_DEBUG"):
            raise
        _logger.debug("internal error", exc_info=True)
        fail(
            app,
            InternalError.code,
            f"internal error: {type(exc).__name__}: {exc}",
            1,
            hint="This is a bug in airgap. Re-run with AIRGAP_DEBUG=1 for the traceback.",
        )


@contextmanager
def progress_bar(app: AppState, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A (done, total) callback drawing a progress bar, only for a person at a terminal."""
    if app.json or app.quiet or not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[progress.description]{what}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_rows_table(
    title: str,
    headers: tuple[str, ...],
    rows: list[tuple[str, ...]],
    styles: list[tuple[str, ...]] | None = None,
) -> None:
    """Print a table of plain-text cells (no markup) the way `rich.table.Table` draws one.

    `rich` lays out and renders every cell as a renderable: for a run over a thousand devices
    that took longer than a fifth of the devices' own work. Here the cells are measured once
    and each line is drawn as text, in one `Text`. A table wider than the console goes to
    `rich` after all, which wraps cells to fit.

    Args:
        title: shown centred above the table.
        headers: the column names.
        rows: one tuple of cell texts per row (a cell may hold several lines).
        styles: per row, one style per cell ("" for none).
    """
    from rich.cells import cell_len
    from rich.text import Text

    split = [[cell.split("\n") for cell in row] for row in rows]
    widths = [cell_len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(cell_len(line) for line in lines))
    total = sum(widths) + 3 * len(widths) + 1
    if total > out.width:
        from rich.table import Table

        table = Table(*headers, title=title)
        for n, cells in enumerate(rows):
            cell_styles = styles[n] if styles else ("",) * len(cells)
            table.add_row(*(Text(c, style=s) for c, s in zip(cells, cell_styles, strict=True)))
        out.print(table)
        return

    def rule(left: str, fill: str, cross: str, right: str) -> str:
        return left + cross.join(fill * (w + 2) for w in widths) + right + "\n"

    text = Text()
    text.append(title.center(total).rstrip() + "\n", style="italic")
    text.append(rule("┏", "━", "┳", "┓"))
    text.append(
        "┃" + "┃".join(f" {h.ljust(w)} " for h, w in zip(headers, widths, strict=True)) + "┃\n",
        style="bold",
    )
    text.append(rule("┡", "━", "╇", "┩"))
    for n, row in enumerate(split):
        cell_styles = styles[n] if styles else ("",) * len(row)
        for k in range(max(len(lines) for lines in row)):
            text.append("│")
            for lines, width, style in zip(row, widths, cell_styles, strict=True):
                line = lines[k] if k < len(lines) else ""
                text.append(" ")
                text.append(line, style=style or None)
                text.append(" " * (width - cell_len(line) + 1) + "│")
            text.append("\n")
    text.append(rule("└", "─", "┴", "┘").rstrip("\n"))
    out.print(text)
