"""Load the inputs of a pack: plan files and folders of device captures, on every CPU.

`--udi DIR`, `--rum DIR` and `--returns DIR` turn every capture found under a folder into plan
items (`items_from_udi_dir` and friends). `load_sources` loads all the inputs of one pack: the
files of every folder are listed first, cut into contiguous chunks and parsed by forked worker
processes (parsing 20,000 captures is CPU-bound Python), then put back together in input order.
Items come out numbered exactly as a one-process load numbers them, and the first error in
input order is the one raised, whichever worker met it.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.errors import AirgapError, InputError, PlanError
from airgap.formats.rum import parse_rum_bytes
from airgap.inside.parsers._text import decode_capture, read_bytes
from airgap.inside.parsers.codes import capture_kind, parse_return_capture
from airgap.inside.parsers.udi import parse_plain_udi_capture, parse_udi_capture
from airgap.inside.plan import PlanItem, load_plan, reserve_entitlements

__all__ = [
    "INLINE_MAX",
    "Loaded",
    "Source",
    "items_from_returns_dir",
    "items_from_rum_dir",
    "items_from_udi_dir",
    "load_sources",
]

_logger = logging.getLogger(__name__)

INLINE_MAX = 1024 * 1024  # bytes; larger attachments are streamed from disk by the writer
PARALLEL_MIN_FILES = 256  # fewer files than this parse faster than worker processes start
_CHUNKS_PER_WORKER = 4  # small enough chunks that no worker idles while another finishes
_SUFFIX = {"udi": ".txt", "rum": ".xml", "returns": ".txt"}
_NOTHING_FOUND = {
    "udi": "no `show license udi` captures (*.txt) found",
    "rum": "no RUM report files (*.xml) found",
    "returns": "no return-code captures (*.txt) found",
}

Blob = bytes | Path  # an attachment's content, or its path when it is too large to hold


@dataclass(frozen=True)
class Source:
    """One input of a pack: a plan file, or a folder of captures of one kind."""

    kind: str  # plan | udi | rum | returns
    path: Path

    def describe(self) -> str:
        """How the input was given on the command line."""
        return str(self.path) if self.kind == "plan" else f"--{self.kind} {self.path}"


@dataclass(frozen=True)
class Loaded:
    """Every item of a pack in input order, and per item the content of each attachment."""

    items: list[PlanItem]
    blobs: list[list[Blob]]


# --- one capture file ----------------------------------------------------------------------------
# Parsers of one file give compact records (tuples of text) rather than PlanItems: these cross
# from worker processes, where pickling plain tuples costs a fraction of pickling dataclasses.

_UdiRecord = tuple[str | None, str, str, int]  # hostname, pid, sn, line
_RumRecord = tuple[str | None, str, str, str, bytes | None]  # hostname, pid, sn, sha256, bytes
_ReturnRecord = tuple[str | None, str, str, str, int]  # hostname, pid, sn, return code, line


def _udi_records(path: str, data: bytes) -> list[_UdiRecord]:
    text = decode_capture(data, source=path)
    records = parse_plain_udi_capture(text)
    if records is None:
        # Return-code and SLR captures share folders with UDI captures (`airgap emulate device`
        # writes them side by side); they also print a `UDI:` line and must not become reserves.
        if capture_kind(text) != "other":
            _logger.info("%s: not a `show license udi` capture; passed over", path)
            return []
        records = parse_udi_capture(text, source=path)
    return [(r.hostname, r.pid, r.sn, r.line) for r in records]


def _rum_records(path: str, data: bytes) -> list[_RumRecord]:
    rum = parse_rum_bytes(data, path=path)
    pid, sn = rum.udi
    kept = data if len(data) <= INLINE_MAX else None
    return [(rum.hostname, pid, sn, hashlib.sha256(data).hexdigest(), kept)]


def _return_records(path: str, data: bytes) -> list[_ReturnRecord]:
    text = decode_capture(data, source=path)
    kind = capture_kind(text)
    if kind == "other":
        try:
            parse_udi_capture(text, source=path)
        except InputError:
            raise InputError(
                f"{path}:1: not a return-code capture (no 'Return code:' line)",
                hint="Capture `license smart authorization return local offline`.",
            ) from None
        _logger.info("%s: a `show license udi` capture; passed over", path)
        return []
    if kind == "slr_request":
        _logger.info("%s: an SLR request capture; passed over", path)
        return []
    code = parse_return_capture(text, source=path)
    return [(code.hostname, code.pid, code.sn, code.code, code.line)]


_PARSERS: dict[str, Callable[[str, bytes], list[Any]]] = {
    "udi": _udi_records,
    "rum": _rum_records,
    "returns": _return_records,
}


def _device(hostname: str | None, pid: str, sn: str) -> dict[str, Any]:
    return {"hostname": hostname, "udi": {"pid": pid, "sn": sn}}


def _items(
    kind: str, path: str, records: list[Any], wanted: list[dict[str, Any]]
) -> tuple[list[PlanItem], list[list[Blob]]]:
    """The plan items (and attachment contents) of one parsed capture file."""
    if kind == "udi":
        return [
            PlanItem(
                "cisco.reserve",
                _device(host, pid, sn),
                {"entitlements": [dict(e) for e in wanted]},
                (),
                f"{path}:{line}",
            )
            for host, pid, sn, line in records
        ], [[] for _ in records]
    if kind == "rum":
        ((host, pid, sn, digest, data),) = records
        item = PlanItem("cisco.report_usage", _device(host, pid, sn), {}, (path,), path, (digest,))
        return [item], [[data if data is not None else Path(path)]]
    return [
        PlanItem(
            "cisco.return", _device(host, pid, sn), {"return_code": code}, (), f"{path}:{line}"
        )
        for host, pid, sn, code, line in records
    ], [[] for _ in records]


# --- folders -------------------------------------------------------------------------------------


def _files(directory: Path, suffix: str) -> list[str]:
    """Regular files under `directory` ending in `suffix` (any case), sorted; dotfiles skipped.

    Symbolic links to files count; links to folders are not followed (no loops), and FIFOs or
    sockets with a capture's name are passed over rather than read (a read would hang).

    Raises:
        InputError: the folder, or a folder below it, is missing or cannot be read.
    """
    if not directory.exists():
        raise InputError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory")
    found: list[str] = []
    folders = [os.fspath(directory)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    if entry.is_dir():
                        if not entry.is_symlink():
                            folders.append(entry.path)
                    elif name.lower().endswith(suffix) and entry.is_file():
                        found.append(entry.path)
        except OSError as exc:
            raise InputError(f"{folder}: cannot read the folder ({exc.strerror})") from exc
    found.sort()
    return found


def _folder_items(
    kind: str, directory: Path, wanted: list[dict[str, Any]]
) -> tuple[list[PlanItem], list[list[Blob]]]:
    items: list[PlanItem] = []
    blobs: list[list[Blob]] = []
    for path in _files(directory, _SUFFIX[kind]):
        more, contents = _items(kind, path, _PARSERS[kind](path, read_bytes(path)), wanted)
        items += more
        blobs += contents
    if not items:
        raise InputError(f"{directory}: {_NOTHING_FOUND[kind]}")
    return items, blobs


def items_from_udi_dir(directory: Path, entitlements: list[tuple[str, int]]) -> list[PlanItem]:
    """One `cisco.reserve` per UDI in the `show license udi` captures (`*.txt`) under a folder.

    Return-code and SLR request captures in the same folder (as `airgap emulate device` writes
    them) are passed over; any other file that does not parse is an error.

    Args:
        directory: the folder, searched recursively.
        entitlements: (tag, count) pairs to reserve for every device, at least one.

    Raises:
        PlanError: no entitlements, or a malformed one.
        InputError: the folder is missing, holds no capture, or a capture does not parse.

    Returns:
        The items, by file name then line.
    """
    return _folder_items("udi", directory, reserve_entitlements(entitlements))[0]


def items_from_rum_dir(directory: Path) -> list[PlanItem]:
    """One `cisco.report_usage` per RUM report file (`*.xml`) under a folder.

    Raises:
        InputError: the folder is missing, holds no `*.xml`, or a file is not a RUM report.

    Returns:
        The items, by file name; each attaches its file, with its SHA-256.
    """
    return _folder_items("rum", directory, [])[0]


def items_from_returns_dir(directory: Path) -> list[PlanItem]:
    """One `cisco.return` per return-code capture (`*.txt`) under a folder.

    `show license udi` and SLR request captures in the same folder are passed over; any other
    file that does not parse is an error.

    Raises:
        InputError: the folder is missing, holds no return capture, or a file does not parse.

    Returns:
        The items, by file name.
    """
    return _folder_items("returns", directory, [])[0]


# --- plans ---------------------------------------------------------------------------------------


def _attachment(path: Path | str, expected: str | None) -> Blob:
    """The bytes to pack for a plan's attachment (read once), or its path when it is large.

    Raises:
        InputError: the file cannot be read, or changed since it was parsed.
    """
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    if size > INLINE_MAX:
        return Path(path)  # streamed by the writer; its hash is compared after the build
    data = read_bytes(path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise InputError(f"{path} changed while it was being packed; pack again")
    return data


def _plan(path: Path) -> Loaded:
    items = load_plan(path)
    blobs: list[list[Blob]] = []
    for item in items:
        digests: Sequence[str | None] = item.attachment_sha256 or [None] * len(item.attachments)
        blobs.append([_attachment(p, d) for p, d in zip(item.attachments, digests, strict=True)])
    return Loaded(items, blobs)


# --- loading a whole pack ------------------------------------------------------------------------

_Job = tuple[int, str, str]  # (source index, kind, file path)
_Failure = tuple[type[AirgapError], str, str | None, list[str] | None]
# Per job in order: its records; then the index of the job that failed and why, if one did.
_ChunkResult = tuple[list[list[Any]], tuple[int, _Failure] | None]


def _failure(exc: AirgapError) -> _Failure:
    # Exceptions lose their extras (hint, problems) in pickle; these plain values do not.
    return type(exc), exc.message, exc.hint, getattr(exc, "problems", None)


def _error(failure: _Failure) -> AirgapError:
    cls, message, hint, problems = failure
    error = cls.__new__(cls)
    AirgapError.__init__(error, message, hint=hint)
    if isinstance(error, PlanError):
        error.problems = problems or []
    return error


def _parse_chunk(jobs: list[_Job]) -> _ChunkResult:
    """Read and parse the files of one chunk; stops at the first that fails."""
    done: list[list[Any]] = []
    for index, (_, kind, path) in enumerate(jobs):
        try:
            done.append(_PARSERS[kind](path, read_bytes(path)))
        except AirgapError as exc:
            return done, (index, _failure(exc))
    return done, None


def _workers(files: int) -> int:
    """How many worker processes to parse `files` files with; 0 means in this process."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if cpus < 2 or files < PARALLEL_MIN_FILES:
        return 0
    # fork: the parsers are imported already, so a worker is ready at once.
    return cpus if "fork" in multiprocessing.get_all_start_methods() else 0


def _chunks(jobs: list[_Job], count: int) -> list[list[_Job]]:
    size = max(1, -(-len(jobs) // count))
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def load_sources(sources: Sequence[Source], entitlements: list[tuple[str, int]]) -> Loaded:
    """Load every input of a pack, in order.

    Args:
        sources: plans and folders, in the order their items are numbered.
        entitlements: (tag, count) pairs for the devices of a `udi` folder.

    Raises:
        PlanError: a bad plan, or a `udi` folder without entitlements.
        InputError: a folder is missing or holds nothing of its kind, or a file cannot be read
            or parsed. When several inputs are bad, the first in input order is reported.

    Returns:
        All items and their attachments' contents, plans first as given.
    """
    wanted = reserve_entitlements(entitlements) if any(s.kind == "udi" for s in sources) else []
    jobs: list[_Job] = []
    listing_error: tuple[int, AirgapError] | None = None
    for index, source in enumerate(sources):
        if source.kind == "plan":
            continue
        try:
            paths = _files(source.path, _SUFFIX[source.kind])
        except AirgapError as exc:
            listing_error = (index, exc)
            break  # nothing after a missing folder can matter: its error is reported first
        jobs += [(index, source.kind, path) for path in paths]

    workers = _workers(len(jobs))
    plans: dict[int, Loaded | AirgapError] = {}
    if not workers:
        _load_plans(sources, plans)
        return _assemble(sources, jobs, [_parse_chunk(jobs)], plans, listing_error, wanted)
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        parsed = pool.map(_parse_chunk, _chunks(jobs, workers * _CHUNKS_PER_WORKER))
        _load_plans(sources, plans)  # while the workers parse the folders
        # Chunks are put together as they arrive, while later ones are still being parsed.
        return _assemble(sources, jobs, parsed, plans, listing_error, wanted)
    finally:
        # After an error, the chunks not started yet are of no use.
        pool.shutdown(wait=True, cancel_futures=True)


def _load_plans(sources: Sequence[Source], plans: dict[int, Loaded | AirgapError]) -> None:
    for index, source in enumerate(sources):
        if source.kind == "plan":
            try:
                plans[index] = _plan(source.path)
            except AirgapError as exc:
                plans[index] = exc


def _assemble(
    sources: Sequence[Source],
    jobs: list[_Job],
    results: Iterable[_ChunkResult],
    plans: dict[int, Loaded | AirgapError],
    listing_error: tuple[int, AirgapError] | None,
    wanted: list[dict[str, Any]],
) -> Loaded:
    """Put the parsed chunks back in input order and raise the first error in that order."""
    per_source: list[Loaded] = [Loaded([], []) for _ in sources]
    failure: tuple[int, AirgapError] | None = None
    position = 0
    for done, failed in results:
        for records in done:
            index, kind, path = jobs[position]
            items, blobs = _items(kind, path, records, wanted)
            per_source[index].items.extend(items)
            per_source[index].blobs.extend(blobs)
            position += 1
        if failed is not None:
            failure = (jobs[position][0], _error(failed[1]))
            break  # chunks run in input order: later ones cannot hold an earlier error
    errors = [e for e in (listing_error, failure) if e is not None]
    loaded = Loaded([], [])
    for index, source in enumerate(sources):
        plan = plans.get(index)
        if isinstance(plan, AirgapError):
            raise plan
        for at, error in errors:
            if at == index:
                raise error
        part = plan if plan is not None else per_source[index]
        if source.kind != "plan" and not part.items:
            raise InputError(f"{source.path}: {_NOTHING_FOUND[source.kind]}")
        loaded.items.extend(part.items)
        loaded.blobs.extend(part.blobs)
    return loaded
