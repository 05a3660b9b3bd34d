"""Load the inputs of a pack: plan files and folders of device captures, on every CPU.

`--udi DIR`, `--rum DIR` and `--returns DIR` turn every capture found under a folder into plan
items (`items_from_udi_dir` and friends). `stream_sources` gives all the inputs of one pack, item
by item: the files of every folder are listed first, cut into contiguous chunks and parsed by
forked worker processes (parsing 100,000 captures is CPU-bound Python), and the chunks are put
back in input order as they come in, a bounded number at a time, so memory does not grow with
the number of files. Items come out in the order a one-process load gives them, and the first
error in input order is the one raised, whichever worker met it. `load_sources` collects the
same items into lists.

Attachments (usage reports) are hashed where they are parsed. `stream_sources` gives them as
`Stored` (path, SHA-256, size), for the bundle writer to read again when it copies them;
`load_sources` keeps the bytes of small ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgap.errors import AirgapError, InputError, PlanError
from airgap.formats.rum import parse_rum_bytes
from airgap.inside.parsers._text import decode_capture, read_bytes
from airgap.inside.parsers.codes import capture_kind, parse_return_capture
from airgap.inside.parsers.udi import parse_plain_udi_capture, parse_udi_capture
from airgap.inside.plan import PlanItem, load_plan, reserve_entitlements
from airgap.spool import RecordSpool

__all__ = [
    "INLINE_MAX",
    "Loaded",
    "Source",
    "Stored",
    "items_from_returns_dir",
    "items_from_rum_dir",
    "items_from_udi_dir",
    "load_sources",
    "stream_sources",
]

_logger = logging.getLogger(__name__)

INLINE_MAX = 1024 * 1024  # bytes; larger attachments are streamed from disk by the writer
PARALLEL_MIN_FILES = 256  # fewer files than this parse faster than worker processes start
_CHUNKS_PER_WORKER = 4  # small enough chunks that no worker idles while another finishes
_CHUNK_MAX = 1024  # files; bounds what a parsed chunk holds on its way back
_IN_FLIGHT_PER_WORKER = 4  # chunks handed out ahead of the one being put back together
_SUFFIX = {"udi": ".txt", "rum": ".xml", "returns": ".txt"}
_NOTHING_FOUND = {
    "udi": "no `show license udi` captures (*.txt) found",
    "rum": "no RUM report files (*.xml) found",
    "returns": "no return-code captures (*.txt) found",
}

Blob = bytes | Path  # an attachment's content, or its path when it is too large to hold


@dataclass(frozen=True, slots=True)
class Stored:
    """An attachment left on disk: its path, and its SHA-256 (hex) and size as parsed."""

    path: str
    sha256: str
    size: int


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
# hostname, pid, sn, sha256, size, and the bytes when asked to keep them and small enough
_RumRecord = tuple[str | None, str, str, str, int, bytes | None]
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


def _rum_records(path: str, data: bytes, keep: bool = False) -> list[_RumRecord]:
    rum = parse_rum_bytes(data, path=path)
    pid, sn = rum.udi
    kept = data if keep and len(data) <= INLINE_MAX else None
    return [(rum.hostname, pid, sn, hashlib.sha256(data).hexdigest(), len(data), kept)]


def _kept_rum_records(path: str, data: bytes) -> list[_RumRecord]:
    return _rum_records(path, data, keep=True)


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
_KEEPING_PARSERS = {**_PARSERS, "rum": _kept_rum_records}


def _device(hostname: str | None, pid: str, sn: str) -> dict[str, Any]:
    return {"hostname": hostname, "udi": {"pid": pid, "sn": sn}}


def _items(
    kind: str, path: str, records: list[Any], wanted: list[dict[str, Any]], keep: bool
) -> tuple[list[PlanItem], list[list[Any]]]:
    """The plan items of one parsed capture file, and per item its attachments: the bytes or
    path (`Blob`) when the parser kept the bytes, else `Stored`."""
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
        ((host, pid, sn, digest, size, data),) = records
        item = PlanItem("cisco.report_usage", _device(host, pid, sn), {}, (path,), path, (digest,))
        if keep:
            return [item], [[data if data is not None else Path(path)]]
        return [item], [[Stored(path, digest, size)]]
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
        records = _KEEPING_PARSERS[kind](path, read_bytes(path))
        more, contents = _items(kind, path, records, wanted, True)
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


def _stored(path: Path | str, expected: str | None) -> Stored:
    """A plan's attachment hashed (again) now, for the writer to copy later.

    Raises:
        InputError: the file cannot be read, or changed since it was parsed.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    if expected is not None and digest.hexdigest() != expected:
        raise InputError(f"{path} changed while it was being packed; pack again")
    return Stored(os.fspath(path), digest.hexdigest(), size)


def _plan(path: Path, keep: bool) -> Loaded:
    items = load_plan(path)
    blobs: list[list[Any]] = []
    attach = _attachment if keep else _stored
    for item in items:
        digests: Sequence[str | None] = item.attachment_sha256 or [None] * len(item.attachments)
        blobs.append([attach(p, d) for p, d in zip(item.attachments, digests, strict=True)])
    return Loaded(items, blobs)


# --- loading a whole pack ------------------------------------------------------------------------

_Chunk = tuple[str, list[str], bool]  # kind, file paths, keep the bytes of small reports
_Failure = tuple[type[AirgapError], str, str | None, list[str] | None]
# Per file in order: its records; then the index of the file that failed and why, if one did.
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


def _parse_chunk(chunk: _Chunk) -> _ChunkResult:
    """Read and parse the files of one chunk; stops at the first that fails."""
    kind, paths, keep = chunk
    parse = (_KEEPING_PARSERS if keep else _PARSERS)[kind]
    done: list[list[Any]] = []
    for index, path in enumerate(paths):
        try:
            done.append(parse(path, read_bytes(path)))
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
    return cpus if "fork" in multiprocessing.get_all_start_methods() else 0


def _chunk_size(files: int, workers: int) -> int:
    return max(1, min(_CHUNK_MAX, -(-files // max(1, workers * _CHUNKS_PER_WORKER))))


class _ParsedInOrder:
    """Each chunk's result in chunk order: parsed here when asked for, or by `workers` forked
    processes that start at once (plans load meanwhile) with a bounded number of chunks handed
    out ahead, so finished results never pile up. `close()` stops the workers."""

    def __init__(self, chunks: Iterator[_Chunk], workers: int) -> None:
        self._chunks = chunks
        self._window = workers * _IN_FLIGHT_PER_WORKER
        self._ahead: deque[Future[_ChunkResult]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        if workers:
            # fork: the parsers are imported already, so a worker is ready at once.
            context = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
            self._hand_out(self._pool)

    def _hand_out(self, pool: ProcessPoolExecutor) -> None:
        while len(self._ahead) < self._window and (chunk := next(self._chunks, None)):
            self._ahead.append(pool.submit(_parse_chunk, chunk))

    def __next__(self) -> _ChunkResult:
        if self._pool is None:
            return _parse_chunk(next(self._chunks))
        if not self._ahead:
            raise StopIteration
        oldest = self._ahead.popleft()
        self._hand_out(self._pool)
        return oldest.result()

    def close(self) -> None:
        if self._pool is not None:
            # After an error, or when the caller stops early, chunks not started are of no use.
            self._pool.shutdown(wait=True, cancel_futures=True)


def stream_sources(
    sources: Sequence[Source], entitlements: list[tuple[str, int]], *, keep: bool = False
) -> Generator[tuple[PlanItem, list[Any]], None, None]:
    """Every item of a pack's inputs, in order, with its attachments, one at a time.

    Close the iterator (`contextlib.closing`) when stopping early: that stops the workers.

    Args:
        sources: plans and folders, in the order their items are numbered.
        entitlements: (tag, count) pairs for the devices of a `udi` folder.
        keep: give attachments as `load_sources` does (`Blob`: the bytes of small files, the
            path of large ones) rather than as `Stored`.

    Raises:
        PlanError: a bad plan, or a `udi` folder without entitlements.
        InputError: a folder is missing or holds nothing of its kind, or a file cannot be read
            or parsed. When several inputs are bad, the first in input order is raised, after
            the items of the inputs before it.

    Yields:
        (item, attachments): per attachment of `item.attachments`, a `Stored` (or a `Blob`
        with `keep`).
    """
    wanted = reserve_entitlements(entitlements) if any(s.kind == "udi" for s in sources) else []
    with RecordSpool(batch=_LISTING_BATCH) as listing:
        counts, unlisted = _list_folders(sources, listing)
        workers = _workers(sum(counts.values()))
        size = _chunk_size(sum(counts.values()), workers)
        handed_out: deque[list[str]] = deque()  # the paths of chunks given out, in order

        def jobs() -> Iterator[_Chunk]:
            for index, paths in _chunks(listing, size):
                handed_out.append(paths)
                yield sources[index].kind, paths, keep

        with contextlib.closing(_ParsedInOrder(jobs(), workers)) as parsed:
            for index, source in enumerate(sources):
                if unlisted is not None and unlisted[0] == index:
                    raise unlisted[1]
                if source.kind == "plan":
                    plan = _plan(source.path, keep)
                    yield from zip(plan.items, plan.blobs, strict=True)
                    continue
                found = 0
                for _ in range(-(-counts[index] // size)):  # this folder's chunks
                    done, failed = next(parsed)
                    paths = handed_out.popleft()
                    for path, records in zip(paths, done, strict=False):
                        items, blobs = _items(source.kind, path, records, wanted, keep)
                        found += len(items)
                        yield from zip(items, blobs, strict=True)
                    if failed is not None:
                        raise _error(failed[1])
                if not found:
                    raise InputError(f"{source.path}: {_NOTHING_FOUND[source.kind]}")


_SLICE = 256  # paths per listing record
_LISTING_BATCH = 16  # listing records held before they are written: 4,096 paths


def _list_folders(
    sources: Sequence[Source], listing: RecordSpool
) -> tuple[dict[int, int], tuple[int, AirgapError] | None]:
    """List every folder into `listing` as (source index, paths…) records, in input order: a
    folder's sorted list exists whole only while it is being listed. Stops at a folder that
    cannot be listed (nothing after it can matter: its error is reported first).

    Returns:
        Files per listed folder (by source index); that folder's index and error, if any.
    """
    counts: dict[int, int] = {}
    for index, source in enumerate(sources):
        if source.kind == "plan":
            continue
        try:
            paths = _files(source.path, _SUFFIX[source.kind])
        except AirgapError as exc:
            return counts, (index, exc)
        counts[index] = len(paths)
        for start in range(0, len(paths), _SLICE):
            listing.append((index, *paths[start : start + _SLICE]))
        del paths  # before the next folder is listed
    return counts, None


def _chunks(listing: RecordSpool, size: int) -> Iterator[tuple[int, list[str]]]:
    """The listed paths cut into chunks of `size` (a folder's last one smaller), in order;
    a chunk never spans two folders, so a folder of n files has ceil(n / size) chunks."""
    index = -1
    paths: list[str] = []
    for record in listing:
        if record[0] != index:
            if paths:
                yield index, paths
            index, paths = record[0], []
        paths.extend(record[1:])
        while len(paths) >= size:
            yield index, paths[:size]
            paths = paths[size:]
    if paths:
        yield index, paths


def load_sources(sources: Sequence[Source], entitlements: list[tuple[str, int]]) -> Loaded:
    """Load every input of a pack, in order (`stream_sources` into lists).

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
    loaded = Loaded([], [])
    with contextlib.closing(stream_sources(sources, entitlements, keep=True)) as stream:
        for item, blobs in stream:
            loaded.items.append(item)
            loaded.blobs.append(blobs)
    return loaded
