"""Transfer-station mode: handle every bundle that lands in an inbox exactly once, then file it.

A bundle (`*.airgap`, or the first part `*.airgap.001` of a split one) is taken once it has not
changed over one polling interval, however it got there (renamed into place, or copied in).
The station handles it (outside: `process_request`, the response written to the outbox;
inside: `import_response`), then it is moved to `INBOX/done/`, or to `INBOX/refused/` beside
`NAME.reason.txt` (error code and message) when it was refused.

What was handled is remembered by the SHA-256 of the bundle's bytes in
`INBOX/.airgap-watch.json`, step by step (processing, outcome, audit entry, move plan, moved),
so `kill -9` at any moment and a restart neither lose a bundle nor handle one twice: a bundle
whose processing was cut short is processed again (the journal and state.db make that a
resume), and an outcome already reached is only audited and filed. The same bytes dropped
again later are not processed but filed under `refused/` as `E_DUPLICATE`.

Left out: signals (the caller sets the stop event; `stop_on_signals` does it for SIGTERM and
SIGINT), printing (events go to a callback) and any scheduling beyond a fixed interval.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from airgap.bundle import tarstream
from airgap.bundle.manifest import MANIFEST_MAX, MANIFEST_NAME
from airgap.bundle.parts import bundle_parts, open_parts, part_group, part_path, split_name
from airgap.bundle.reader import GZIP_MAGIC
from airgap.errors import (
    DUPLICATE_BUNDLE,
    AirgapError,
    ConfigError,
    InternalError,
    VerificationError,
)
from airgap.fsutil import atomic_write_bytes
from airgap.home import Home
from airgap.units import format_timestamp, utc_now

if TYPE_CHECKING:
    from airgap.outside.process import ClientFactory, ProcessOptions

_log = logging.getLogger(__name__)

LEDGER_NAME = ".airgap-watch.json"
LOCK_NAME = ".airgap-watch.lock"
DONE = "done"
REFUSED = "refused"
DUPLICATE = DUPLICATE_BUNDLE
RETRY_AFTER = 30.0  # seconds before a bundle that could not be handled (not refused) is retried
_SUFFIXES = (".airgap", ".airgap.001")


@dataclass(frozen=True)
class Handled:
    """What a station made of one bundle: done (processed or imported) or refused."""

    outcome: str  # DONE | REFUSED
    code: str | None = None
    message: str | None = None
    hint: str | None = None
    bundle_id: str | None = None
    manifest_sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def refused(cls, error: VerificationError) -> Handled:
        return cls(REFUSED, error.code, error.message, error.hint)


@dataclass(frozen=True)
class WatchEvent:
    """One handling, for the operator: which file, what became of it, and where it went."""

    file: str
    outcome: str  # done | refused | deferred (could not be handled now; retried later)
    code: str | None = None
    message: str | None = None
    moved_to: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "outcome": self.outcome,
            "code": self.code,
            "message": self.message,
            "moved_to": self.moved_to,
            "details": self.details,
        }


class Station(Protocol):
    """What a side does with a bundle from its inbox."""

    name: str
    home: Home

    def output_for(self, bundle: Path, taken: set[str]) -> str | None:
        """The output file name to record before handling `bundle` (None: no output file)."""

    def handle(self, bundle: Path, output: str | None) -> Handled:
        """Handle one bundle; a refusal is returned, any other error raised.

        Raises:
            AirgapError: the bundle could not be handled now (config, network, busy).
        """


class OutsideStation:
    """Processes requests; responses go to the outbox, named after the request file."""

    name = "outside"

    def __init__(
        self,
        home: Home,
        outbox: Path,
        options: ProcessOptions,
        client_factory: ClientFactory | None = None,
    ) -> None:
        """Check the home and the outbox, and unlock the signing key before any bundle.

        Args:
            home: an outside home.
            outbox: where responses are written.
            options: `ProcessOptions` for every request (its `output` is ignored).
            client_factory: builds vendor clients (default: the real ones).

        Raises:
            ConfigError: not an outside home, or the signing key cannot be loaded.
            AuthError: the signing key's passphrase is wrong.
        """
        from airgap.review import require_home_role

        require_home_role(home, "outside")
        home.signer()
        self.home = home
        self.outbox = outbox
        self.options = options
        self.client_factory = client_factory
        outbox.mkdir(parents=True, exist_ok=True)

    def output_for(self, bundle: Path, taken: set[str]) -> str | None:
        """`req-17.airgap` → `req-17.response.airgap` (`-2`, `-3`… if taken or present)."""
        stem = bundle_stem(bundle)
        n = 1
        while True:
            name = f"{stem}.response.airgap" if n == 1 else f"{stem}.response-{n}.airgap"
            target = self.outbox / name
            if name not in taken and not target.exists() and not part_path(target, 1).exists():
                return name
            n += 1

    def handle(self, bundle: Path, output: str | None) -> Handled:
        """Process the request; the response goes to `OUTBOX/output` (replaced if there).

        Raises:
            ConfigError / AuthError / NetworkError: a vendor cannot be used now.
            Busy: another process is working on this request.
        """
        from airgap.outside.process import default_client, process_request

        assert output is not None
        options = replace(self.options, output=self.outbox / output, dry_run=False)
        try:
            result = process_request(
                self.home, bundle, options, client_factory=self.client_factory or default_client
            )
        except VerificationError as exc:
            return Handled.refused(exc)
        parts = [str(p) for p in result.response_parts]
        return Handled(
            DONE,
            bundle_id=result.request_id,
            manifest_sha256=result.request_sha256,
            details={
                "response": str(result.response_path),
                **({"response_parts": parts} if parts else {}),
                "response_id": result.response_id,
                "counts": result.counts,
            },
        )


class InsideStation:
    """Imports responses; per-device files go under the output folder."""

    name = "inside"

    def __init__(self, home: Home, out: Path) -> None:
        """Check the home.

        Raises:
            ConfigError: not an inside home.
        """
        from airgap.review import require_home_role

        require_home_role(home, "inside")
        self.home = home
        self.out = out

    def output_for(self, bundle: Path, taken: set[str]) -> str | None:
        return None

    def handle(self, bundle: Path, output: str | None) -> Handled:
        """Import the response into the output folder.

        Raises:
            ConfigError: state.db cannot be used, or an output path holds a different file.
        """
        from airgap.inside.importer import import_response

        try:
            result = import_response(self.home, bundle, out=self.out)
        except VerificationError as exc:
            return Handled.refused(exc)
        return Handled(
            DONE,
            bundle_id=result.response_id,
            manifest_sha256=result.response_sha256,
            details={
                "request_id": result.request_id,
                "out": str(result.out_dir),
                "counts": result.counts,
                "already_imported": result.already_imported,
            },
        )


def bundle_stem(bundle: Path) -> str:
    """`req-17.airgap` and `req-17.airgap.001` → `req-17`."""
    parsed = split_name(bundle)
    name = parsed[0].name if parsed is not None else bundle.name
    return name.removesuffix(".airgap") or name


class _Ledger:
    """`.airgap-watch.json`: every bundle handled, by content hash, step by step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                document = json.loads(path.read_text("utf-8"))
                self.entries = dict(document["handled"])
            except (OSError, ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"{path} is damaged; refusing to guess what was handled already",
                    hint="Move it aside only if you are sure the inbox holds nothing handled.",
                ) from None

    def save(self) -> None:
        document = {"format": "airgap-watch/1", "handled": self.entries}
        data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        atomic_write_bytes(self.path, data + b"\n")

    def outputs(self) -> set[str]:
        return {str(e["output"]) for e in self.entries.values() if e.get("output")}


def _digest(group: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in group:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def peek_sequence(bundle: Path) -> int | None:
    """The `sequence` of a bundle's manifest, unverified, when it can be read cheaply.

    Used only to take bundles that arrived together in their producer's order (the outside
    refuses a request whose sequence is below one already seen as `E_REPLAY`). An encrypted
    bundle, or anything unreadable, gives None.
    """
    try:
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open_parts(bundle_parts(bundle)))
            stream: BinaryIO = raw
            if raw.read(2) == GZIP_MAGIC:
                raw.seek(0)
                stream = cast(BinaryIO, stack.enter_context(gzip.GzipFile(fileobj=raw)))
            else:
                raw.seek(0)
            tar = tarstream.TarReader(tarstream.CountingReader(stream, 2 * MANIFEST_MAX))
            first = next(iter(tar), None)
            if first is None or first.name != MANIFEST_NAME or first.size > MANIFEST_MAX:
                return None
            sequence = json.loads(tar.read_all(first.size)).get("sequence")
    except (AirgapError, OSError, EOFError, ValueError, AttributeError, zlib.error):
        return None
    return sequence if isinstance(sequence, int) else None


def in_order(bundles: Sequence[Path]) -> list[Path]:
    """Bundles in the order to handle them: by sequence where known, then age, then name."""

    def key(bundle: Path) -> tuple[bool, int, int, str]:
        sequence = peek_sequence(bundle)
        try:
            mtime = bundle.stat().st_mtime_ns
        except OSError:
            mtime = 0
        return sequence is None, sequence or 0, mtime, bundle.name

    return sorted(bundles, key=key)


Signature = tuple[tuple[str, int, int], ...]


class Watcher:
    """Polls one inbox for one station. Use `run()`; see the module docstring."""

    def __init__(
        self,
        station: Station,
        inbox: Path,
        *,
        interval: float = 5.0,
        stop: threading.Event | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare to watch `inbox`.

        Raises:
            ConfigError: the interval is not positive, or the inbox is not a folder.
        """
        if interval <= 0:
            raise ConfigError(f"the interval must be positive, not {interval}s")
        if not inbox.is_dir():
            raise ConfigError(f"{inbox} is not a folder", hint="Create the inbox folder first.")
        self.station = station
        self.inbox = inbox
        self.interval = interval
        self.stop = stop or threading.Event()
        self.on_event = on_event or (lambda _: None)
        self.clock = clock
        self.events: list[WatchEvent] = []
        self._seen: dict[str, tuple[Signature, float]] = {}
        self._retry_at: dict[str, float] = {}
        self._ledger = _Ledger(inbox / LEDGER_NAME)

    def run(self, *, until_idle: bool = False) -> list[WatchEvent]:
        """Watch until the stop event is set (or, with `until_idle`, nothing is left to do).

        A bundle being handled when the stop event is set is finished first.

        Raises:
            ConfigError: another watcher holds this inbox, or the ledger is damaged.
        """
        with self._locked():
            self._recover()
            while not self.stop.is_set():
                scanned = self._scan()
                pending = any(not ready for _, ready in scanned)
                for bundle in in_order([bundle for bundle, ready in scanned if ready]):
                    if self.stop.is_set():
                        break
                    self._take(bundle)
                if until_idle and not pending:
                    break
                self.stop.wait(self.interval)
        return self.events

    # --- finding bundles

    def _candidates(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.inbox))
        except OSError as exc:
            raise ConfigError(f"cannot read the inbox {self.inbox}: {exc.strerror}") from None
        return [
            self.inbox / name
            for name in names
            if not name.startswith(".")
            and name.endswith(_SUFFIXES)
            and (self.inbox / name).is_file()
        ]

    def _signature(self, bundle: Path) -> Signature | None:
        try:
            return tuple(
                (p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in part_group(bundle)
            )
        except OSError:
            return None  # moved away or renamed meanwhile

    def _scan(self) -> list[tuple[Path, bool]]:
        """Every candidate and whether it is ready: unchanged for at least one interval."""
        now = self.clock()
        found: list[tuple[Path, bool]] = []
        names = set()
        for bundle in self._candidates():
            names.add(bundle.name)
            signature = self._signature(bundle)
            if signature is None:
                continue
            if now < self._retry_at.get(bundle.name, 0.0):
                continue
            seen = self._seen.get(bundle.name)
            if seen is None or seen[0] != signature:
                self._seen[bundle.name] = (signature, now)
                found.append((bundle, False))
            else:
                found.append((bundle, now - seen[1] >= self.interval * 0.9))
        for gone in set(self._seen) - names:
            del self._seen[gone]
        return found

    # --- handling one bundle

    def _take(self, bundle: Path) -> None:
        group = part_group(bundle)
        try:
            digest = _digest(group)
        except OSError:
            return  # vanished meanwhile; seen again if it comes back
        ledger = self._ledger
        entry = ledger.entries.get(digest)
        if entry is not None and entry.get("moved"):
            self._duplicate(bundle, group, digest, entry)
            return
        if entry is None:
            entry = {
                "file": bundle.name,
                "status": "processing",
                "output": self.station.output_for(bundle, ledger.outputs()),
                "first_seen": format_timestamp(utc_now()),
            }
            ledger.entries[digest] = entry
            ledger.save()
        if entry["status"] == "processing":
            try:
                handled = self.station.handle(bundle, entry.get("output"))
            except AirgapError as exc:
                self._defer(bundle, exc.code, exc.message)
                return
            except Exception as exc:  # a bug must not stop the station: log it, retry later
                _log.exception("handling %s failed", bundle.name)
                self._defer(bundle, InternalError.code, f"{type(exc).__name__}: {exc}")
                return
            entry.update(
                status=handled.outcome,
                code=handled.code,
                message=handled.message,
                hint=handled.hint,
                bundle_id=handled.bundle_id,
                manifest_sha256=handled.manifest_sha256,
                details=handled.details,
                handled_at=format_timestamp(utc_now()),
            )
            ledger.save()
        self._retry_at.pop(bundle.name, None)
        self._finish(digest, entry, group)

    def _defer(self, bundle: Path, code: str, message: str) -> None:
        self._retry_at[bundle.name] = self.clock() + max(self.interval, RETRY_AFTER)
        self._emit(WatchEvent(bundle.name, "deferred", code, message))

    def _finish(self, digest: str, entry: dict[str, Any], group: Sequence[Path]) -> None:
        """Plan the move, audit, move; each step recorded, so a restart completes the rest.

        `group` (the bundle's files) is used only to plan the move if that is not done yet.
        """
        ledger = self._ledger
        if "moves" not in entry:
            entry["moves"] = self._plan_moves(group, str(entry["status"]))
            ledger.save()
        if not entry.get("audited"):
            self._audit(digest, entry)
            entry["audited"] = True
            ledger.save()
        if not entry.get("moved"):
            self._move(entry)
            entry["moved"] = True
            ledger.save()
            self._emit(
                WatchEvent(
                    str(entry["file"]),
                    str(entry["status"]),
                    entry.get("code"),
                    entry.get("message"),
                    entry["moves"][0][1],
                    dict(entry.get("details") or {}),
                )
            )

    def _plan_moves(self, group: Sequence[Path], status: str) -> list[list[str]]:
        """(source, target) names relative to the inbox; a taken name gets an `N-` prefix."""
        folder = self.inbox / status
        prefix, n = "", 1
        while any((folder / f"{prefix}{p.name}").exists() for p in group) or (
            status == REFUSED and (folder / f"{prefix}{group[0].name}.reason.txt").exists()
        ):
            n += 1
            prefix = f"{n}-"
        return [[p.name, f"{status}/{prefix}{p.name}"] for p in group]

    def _move(self, entry: dict[str, Any]) -> None:
        moves: list[list[str]] = entry["moves"]
        folder = (self.inbox / moves[0][1]).parent
        folder.mkdir(exist_ok=True)
        if entry["status"] == REFUSED:
            atomic_write_bytes(
                self.inbox / f"{moves[0][1]}.reason.txt", _reason(entry).encode("utf-8")
            )
        # The first file (the one the station looks for) goes first; the rest follow.
        for source, target in moves:
            if (self.inbox / source).exists() and not (self.inbox / target).exists():
                os.rename(self.inbox / source, self.inbox / target)

    def _duplicate(
        self, bundle: Path, group: Sequence[Path], digest: str, first: dict[str, Any]
    ) -> None:
        where = first["moves"][0][1] if first.get("moves") else first["file"]
        entry: dict[str, Any] = {
            "file": bundle.name,
            "status": REFUSED,
            "code": DUPLICATE,
            "message": f"the same bytes were handled already ({first['status']}, filed as "
            f"{where} on {first.get('handled_at', '?')}); not handled again",
            "hint": "Nothing to do. To process a request again, run the command by hand.",
            "details": {"first": where},
        }
        entry["moves"] = self._plan_moves(group, REFUSED)
        self._audit(digest, entry)
        self._move(entry)
        self._emit(
            WatchEvent(
                bundle.name,
                REFUSED,
                DUPLICATE,
                entry["message"],
                entry["moves"][0][1],
                entry["details"],
            )
        )

    def _audit(self, digest: str, entry: dict[str, Any]) -> None:
        refused = entry["status"] == REFUSED
        details: dict[str, Any] = {
            "station": self.station.name,
            "file": entry["file"],
            "sha256": digest,
            "moved_to": entry["moves"][0][1],
            **(dict(entry.get("details") or {})),
        }
        if refused:
            details.update(code=entry.get("code"), reason=entry.get("message"))
        self.station.home.audit().append(
            "watch_refused" if refused else "watch_done",
            outcome="refused" if refused else "ok",
            bundle_id=entry.get("bundle_id"),
            manifest_sha256=entry.get("manifest_sha256"),
            details=details,
        )

    def _recover(self) -> None:
        """Finish what a killed run left between an outcome and its filing."""
        for digest, entry in self._ledger.entries.items():
            if entry.get("status") not in (DONE, REFUSED) or entry.get("moved"):
                continue
            group = part_group(self.inbox / str(entry["file"]))
            if "moves" not in entry and not all(p.exists() for p in group):
                continue  # the file went away before it was filed: nothing to file
            self._finish(digest, entry, group)

    def _emit(self, event: WatchEvent) -> None:
        self.events.append(event)
        self.on_event(event)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.inbox / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"another airgap watch is already running on {self.inbox}",
                    hint="Stop it first; one station per inbox.",
                ) from None
            yield
        finally:
            os.close(fd)


def _reason(entry: dict[str, Any]) -> str:
    lines = [f"{entry.get('code')}: {entry.get('message')}"]
    if entry.get("hint"):
        lines.append(f"hint: {entry['hint']}")
    lines.append(f"file: {entry['file']}")
    lines.append(f"refused: {entry.get('handled_at') or format_timestamp(utc_now())}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """On SIGTERM or SIGINT, set `stop` (the bundle at hand is finished); a second one acts
    as if this were not installed (SIGINT then interrupts, SIGTERM ends the process)."""
    wanted = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, Any] = {
        signum: signal.getsignal(signum) or signal.SIG_DFL for signum in wanted
    }

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            stop.set()
            return
        signal.signal(signum, previous[signum])
        signal.raise_signal(signum)

    for wanted_signal in wanted:
        signal.signal(wanted_signal, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)
