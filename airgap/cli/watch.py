"""`airgap outside watch` / `airgap inside watch`: transfer-station mode on an inbox folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from airgap.cli._output import AppState, mapped_errors, out, state

InboxArg = Annotated[
    Path, typer.Argument(help="The folder bundles are dropped into.", show_default=False)
]
IntervalOpt = Annotated[
    str, typer.Option("--interval", help="How often to look; a bundle must be still this long.")
]
OnceOpt = Annotated[bool, typer.Option("--once", help="Handle what is in the inbox, then exit.")]


def outside_watch_cmd(
    ctx: typer.Context,
    inbox: InboxArg,
    outbox: Annotated[
        Path,
        typer.Option("--outbox", help="Where responses are written.", show_default=False),
    ],
    interval: IntervalOpt = "5s",
    once: OnceOpt = False,
    max_wait: Annotated[
        str | None,
        typer.Option(
            "--max-wait", help="Per request, as for `outside process`.", show_default=False
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Vendor calls in flight at once.", min=1)
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Calls per second per vendor (0: no limit).", min=0),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Write responses in parts of this size, e.g. 650MiB."),
    ] = None,
) -> None:
    """Process every request bundle dropped into INBOX; write the responses to OUTBOX.

    A bundle (NAME.airgap, or the first part NAME.airgap.001) is taken once it has not changed
    for one interval. It then moves to INBOX/done/, or to INBOX/refused/ with
    NAME.reason.txt. The same bundle is never handled twice, also across restarts; a partial
    result (exit 4 of `outside process`) counts as done. SIGTERM or Ctrl-C stops after the
    bundle at hand (exit 0).

    Example: `airgap outside watch /srv/station/in --outbox /srv/station/out --interval 5s`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.bundle.parts import parse_split
        from airgap.errors import ConfigError
        from airgap.outside.process import ProcessOptions
        from airgap.units import parse_duration
        from airgap.watch import OutsideStation

        seconds = parse_duration(interval, what="--interval").total_seconds()
        if outbox.resolve() == inbox.resolve():
            raise ConfigError("the outbox must not be the inbox")
        home = app_state.open_home()
        options = ProcessOptions.from_config(
            home.config,
            max_wait=max_wait,
            concurrency=concurrency,
            rate=rate,
            split=parse_split(split) if split else None,
        )
        station = OutsideStation(home, outbox, options)
        app_state.note(
            f"Watching {escape(str(inbox))} every {seconds:g}s; responses go to "
            f"{escape(str(outbox))}. SIGTERM or Ctrl-C stops after the bundle at hand."
        )
        events = _watch(app_state, station, inbox, seconds, once)
    _summary(app_state, inbox, events)


def inside_watch_cmd(
    ctx: typer.Context,
    inbox: InboxArg,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Where to write the per-device files and INSTRUCTIONS.md."),
    ] = Path("airgap-out"),
    interval: IntervalOpt = "5s",
    once: OnceOpt = False,
) -> None:
    """Import every response bundle dropped into INBOX; write the per-device files to --out.

    A bundle (NAME.airgap, or the first part NAME.airgap.001) is taken once it has not changed
    for one interval. It then moves to INBOX/done/, or to INBOX/refused/ with
    NAME.reason.txt. The same bundle is never handled twice, also across restarts. SIGTERM
    or Ctrl-C stops after the bundle at hand (exit 0).

    Example: `airgap inside watch /media/usb --out /srv/licences --interval 10s`
    """
    app_state = state(ctx)
    with mapped_errors(app_state):
        from airgap.units import parse_duration
        from airgap.watch import InsideStation

        seconds = parse_duration(interval, what="--interval").total_seconds()
        station = InsideStation(app_state.open_home(), out_dir)
        app_state.note(
            f"Watching {escape(str(inbox))} every {seconds:g}s; outputs go to "
            f"{escape(str(out_dir))}. SIGTERM or Ctrl-C stops after the bundle at hand."
        )
        events = _watch(app_state, station, inbox, seconds, once)
    _summary(app_state, inbox, events)


def _watch(app_state: AppState, station: Any, inbox: Path, seconds: float, once: bool) -> Any:
    import threading

    from airgap.watch import Watcher, WatchEvent, stop_on_signals

    def show(event: WatchEvent) -> None:
        if event.outcome == "done":
            line = f"[green]done[/]     {escape(event.file)} → {escape(str(event.moved_to))}"
            details = event.details
            if "response" in details:
                line += f"; response {escape(str(details['response']))}"
            if "counts" in details:
                counts = ", ".join(f"{k} {v}" for k, v in details["counts"].items() if v)
                line += f" ({counts})"
        elif event.outcome == "refused":
            line = (
                f"[bold red]refused[/]  {escape(event.file)} → {escape(str(event.moved_to))}: "
                f"{event.code}: {escape(str(event.message))}"
            )
        else:
            line = (
                f"[yellow]deferred[/] {escape(event.file)}: {event.code}: "
                f"{escape(str(event.message))} (tried again later)"
            )
        app_state.say(line)

    stop = threading.Event()
    watcher = Watcher(station, inbox, interval=seconds, stop=stop, on_event=show)
    with stop_on_signals(stop):
        return watcher.run(until_idle=once)


def _summary(app_state: AppState, inbox: Path, events: Any) -> None:
    counts = dict(Counter(event.outcome for event in events))
    app_state.emit(
        {
            "inbox": str(inbox),
            "counts": counts,
            "events": [event.to_json() for event in events],
        },
        lambda: out.print(
            "Stopped: "
            + (", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing")
            + " handled."
        ),
    )
