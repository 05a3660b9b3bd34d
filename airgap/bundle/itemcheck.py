"""`items.json` checked against its manifest a range of items at a time, in forked workers.

The checks are those of a bundle's reading rules for `items.json`: every item valid against
the item schema of the manifest's kind, the count per action (the manifest's summary), ids
unique, and every file an item names a listed member. Each range of items gives a `Tally`;
`combine` adds the tallies up in order and raises what one pass over the whole document
would raise, in the same order. Anything this cannot decide (an item the schema refuses, a
piece that does not parse, ids to compare in full) raises `itemstream.Unusual`, and the
reader reads the whole document the general way, which decides and words every refusal.

A large `items.json` (46 MB at 100,000 devices) is checked by worker processes forked as
soon as its bytes have been hashed equal to the signed manifest's entry, while the reader
goes on hashing the other members; their refusals are raised only after every member has
been verified, as if the items had been read last. A worker that fails in any way has its
range checked again in this process. Workers are forked only from a single-threaded process,
and only where `os.fork` exists; otherwise every range is checked here.

This module reads the items file by offset (`os.pread`), and writes only the rendering it is
asked for, to files it is given.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import operator
import os
import signal
import tempfile
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, filterfalse, pairwise
from pathlib import Path
from typing import Any, BinaryIO

from airgap import schema
from airgap.bundle import itemstream
from airgap.bundle.manifest import Manifest, MemberEntry, MemberList, skip_entries
from airgap.errors import MissingMember, SchemaError

PARALLEL_MIN = 4 << 20  # bytes of items.json below which forking workers does not pay
MAX_WORKERS = 4

Render = Callable[[list[Any]], bytes]  # a batch of items -> their text, see `Tally.rendered`

_ACTION = operator.itemgetter("action")
_ID = operator.itemgetter("id")
_FILES = operator.itemgetter("files")


@dataclass
class Tally:
    """What a range of items adds up to.

    `rendered`: when a render function was given, the bytes it wrote for this range (its
    batches' texts joined by commas).
    """

    count: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    first: tuple[int, str] | None = None  # (length, text) of the first id, the order ids keep
    last: tuple[int, str] | None = None
    ordered: bool = True  # ids strictly increasing within the range
    id_hashes: bytes = b""  # array("q") of the ids' hashes, for when they are not ordered
    absent: tuple[str, str] | None = None  # the first (item id, file) not listed
    rendered: int = 0

    def to_bytes(self) -> bytes:
        return marshal.dumps(
            (
                self.count,
                self.actions,
                self.first,
                self.last,
                self.ordered,
                self.id_hashes,
                self.absent,
                self.rendered,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Tally:
        count, actions, first, last, ordered, id_hashes, absent, rendered = marshal.loads(data)
        return cls(count, actions, first, last, ordered, id_hashes, absent, rendered)


class _Listed:
    """Are the files items name listed members? Asked in the listed order (as airgap writes
    both) it is one comparison per batch at a cursor in the signed bytes; otherwise a set of
    the listed paths is built once."""

    def __init__(self, members: Sequence[MemberEntry]) -> None:
        self.members = members
        self.fast = members if isinstance(members, MemberList) else None
        self.offset = -1  # the cursor, once the first file was found
        self.all: set[str] | None = None

    def first_absent(self, files: list[str]) -> str | None:
        """The first of `files` that is not a listed member, if any."""
        if not files:
            return None
        fast = self.fast
        if fast is not None and self.all is None and all(map(str.isascii, files)):
            paths = list(map(str.encode, files))
            if self.offset < 0:
                self.offset = fast.find_entry(paths[0])
            if self.offset >= 0:
                window = sum(map(len, paths)) + len(paths) * 128  # bytes of the entries, at most
                listed, _, sizes = fast.raw_entries(self.offset, window)
                if listed[: len(paths)] == paths:
                    self.offset = skip_entries(self.offset, paths, sizes[: len(paths)])
                    return None
        if self.all is None:
            self.all = {m.path for m in self.members}
        return next(filterfalse(self.all.__contains__, files), None)


def tally(
    read_at: itemstream.ReadAt,
    span: range,
    *,
    manifest: Manifest,
    max_piece: int,
    render: Render | None = None,
    out: Callable[[bytes], object] | None = None,
) -> Tally:
    """Check the items in bytes `span` of the items file and add them up.

    Args:
        read_at: reads the items file by offset.
        span: a range of `itemstream.split`.
        manifest: the verified manifest (its kind, summary and member list).
        max_piece: the largest piece to hold, in bytes.
        render: if given, applied to every batch once it is checked; what it returns is
            passed to `out`, with a comma between batches.
        out: where the rendering goes.

    Raises:
        itemstream.Unusual: an item the schema refuses, a piece that does not parse, or
            anything else the general reading must decide.
    """
    valid = schema.elements_checker(f"{manifest.kind}-items")
    result = Tally()
    counts: Counter[str] = Counter()
    hashes = array("q")
    listed = _Listed(manifest.members)
    written = 0
    for batch in itemstream.range_batches(read_at, span.start, span.stop, max_piece=max_piece):
        if not batch:
            continue
        try:
            actions = list(map(_ACTION, batch))
        except (TypeError, KeyError):  # not an object with an action: the schema refuses it
            raise itemstream.Unusual("an item the schema refuses") from None
        if valid(batch, actions) is not True:
            raise itemstream.Unusual("an item the schema refuses")
        result.count += len(batch)
        counts.update(actions)  # strings of the schema's enumeration
        ids = list(map(_ID, batch))
        if set(map(type, ids)) != {str}:
            raise itemstream.Unusual("an id that is not text")
        hashes.extend(map(hash, ids))
        first, last = (len(ids[0]), ids[0]), (len(ids[-1]), ids[-1])
        if result.ordered:
            result.ordered = (result.last is None or result.last < first) and _increasing(ids)
        result.first = result.first or first
        result.last = last
        if result.absent is None:
            missing = listed.first_absent(list(chain.from_iterable(map(_FILES, batch))))
            if missing is not None:
                item = next(i for i in batch if missing in i["files"])
                result.absent = (item["id"], missing)
        if render is not None and out is not None:
            text = render(batch)
            out(b"," + text if written else text)
            written += len(text) + (1 if written else 0)
    result.actions = dict(counts)
    result.id_hashes = hashes.tobytes()
    result.rendered = written
    return result


def _increasing(ids: list[str]) -> bool:
    """Whether `ids` increase strictly by (length, text), the order in which they are unique."""
    if len(set(map(len, ids))) == 1:  # one length, as airgap's numbering gives: text alone
        return all(map(operator.lt, ids, ids[1:]))
    keys = list(zip(map(len, ids), ids, strict=True))
    return all(map(operator.lt, keys, keys[1:]))


def combine(tallies: Sequence[Tally], manifest: Manifest) -> int:
    """Add up the tallies of consecutive ranges; the item count.

    Raises:
        SchemaError: the items do not match the manifest's summary.
        MissingMember: an item names a file that is not a listed member.
        itemstream.Unusual: the ids are not in increasing order and must be compared in full.
    """
    count = sum(t.count for t in tallies)
    counts: Counter[str] = Counter()
    for t in tallies:
        counts.update(t.actions)
    if {"items": count, "by_action": dict(sorted(counts.items()))} != dict(manifest.summary):
        raise SchemaError("items.json does not match the manifest's summary")
    filled = [t for t in tallies if t.count]
    ordered = all(t.ordered for t in filled) and all(
        a.last < b.first  # type: ignore[operator]
        for a, b in pairwise(filled)
    )
    if not ordered:
        hashes = array("q")
        for t in filled:
            hashes.frombytes(t.id_hashes)
        if len(set(hashes)) != count:
            raise itemstream.Unusual("ids to compare in full")
    absent = next((t.absent for t in tallies if t.absent is not None), None)
    if absent is not None:
        raise MissingMember(f"item {absent[0]} refers to {absent[1]}, not in the bundle")
    return count


def worker_count(size: int) -> int:
    """How many worker processes to check an items file of `size` bytes with; 0: here."""
    if size < PARALLEL_MIN:
        return 0
    return min(cpu_count(), MAX_WORKERS) if can_fork() else 0


def kill_worker(pid: int, pipe: int) -> None:
    """Kill and reap a forked worker (pid 0: none) and close its pipe (-1: none)."""
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(pid, 0)
    if pipe >= 0:
        os.close(pipe)


def can_fork() -> bool:
    """Whether forking a worker is safe (single-threaded, `os.fork` exists) and can pay
    (more than one CPU)."""
    return hasattr(os, "fork") and threading.active_count() == 1 and cpu_count() > 1


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to the descriptor `fd`."""
    _write_all(fd, data)


def read_all(fd: int) -> bytes:
    """Everything until the end from descriptor `fd` (a worker's pipe), which is closed."""
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


@dataclass
class _Job:
    span: range
    out: BinaryIO | None
    pid: int = 0
    pipe: int = -1


class ItemsCheck:
    """The tallies of an items file's ranges: started (forked) early, collected later.

    Use as a context manager: leaving it stops and reaps workers still running (after an
    error elsewhere). The rendering files stay open until `close_rendering()`.
    """

    def __init__(
        self,
        handle: BinaryIO,
        size: int,
        *,
        manifest: Manifest,
        max_piece: int,
        render: Render | None,
        tmp: Path,
        workers: int,
    ) -> None:
        self.fd = handle.fileno()
        self.manifest = manifest
        self.max_piece = max_piece
        self.render = render
        self.tmp = tmp
        self.workers = workers
        self.jobs: list[_Job] = []
        handle.flush()
        start, stop = itemstream.bounds(self.read_at, size)  # Unusual: read it the general way
        parts = max(1, workers)
        spans = itemstream.split(self.read_at, start, stop, parts, max_piece=max_piece)
        for span in spans:
            out = None
            if render is not None:
                out = tempfile.TemporaryFile(dir=tmp)  # noqa: SIM115 (closed by close_rendering)
            self.jobs.append(_Job(span, out))
        if workers:
            for job in self.jobs:
                job.pid, job.pipe = self._fork(job)

    def read_at(self, offset: int, count: int) -> bytes:
        return os.pread(self.fd, count, offset)

    def _run(self, job: _Job) -> Tally:
        out = job.out
        write = None if out is None else functools.partial(_write_all, out.fileno())
        return tally(
            self.read_at,
            job.span,
            manifest=self.manifest,
            max_piece=self.max_piece,
            render=self.render,
            out=write,
        )

    def _fork(self, job: _Job) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: its answer goes down the pipe, and it never returns
            status = 1
            try:
                os.close(read_end)
                try:
                    answer = b"t" + self._run(job).to_bytes()
                except itemstream.Unusual:
                    answer = b"u"
                _write_all(write_end, answer)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        return pid, read_end

    def _collect(self, job: _Job) -> Tally | None:
        """The worker's tally; None when it found the items unusual.

        Raises:
            LookupError: it failed; its range must be checked again.
        """
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := os.read(job.pipe, 1 << 16):
                chunks.append(chunk)
        os.close(job.pipe)
        job.pipe = -1
        _, status = os.waitpid(job.pid, 0)
        job.pid = 0
        answer = b"".join(chunks)
        if status != 0 or not answer:
            raise LookupError("the worker failed")
        if answer == b"u":
            return None
        try:
            return Tally.from_bytes(answer[1:])
        except (ValueError, EOFError, TypeError) as exc:
            raise LookupError("the worker's answer is unreadable") from exc

    def tallies(self) -> list[Tally]:
        """Every range's tally, in order (waiting for the workers).

        Raises:
            itemstream.Unusual: as `tally`.
        """
        results: list[Tally | None] = []
        for job in self.jobs:
            if job.pid:
                try:
                    results.append(self._collect(job))
                    continue
                except LookupError:
                    if job.out is not None:
                        job.out.seek(0)
                        job.out.truncate()
            try:
                results.append(self._run(job))
            except itemstream.Unusual:
                results.append(None)
        if any(r is None for r in results):
            raise itemstream.Unusual("a range the general reading must decide")
        return [r for r in results if r is not None]

    def rendering(self) -> list[BinaryIO]:
        """The files the render function's output went to, one per range, in order."""
        return [job.out for job in self.jobs if job.out is not None]

    def stop(self) -> None:
        """Stop and reap workers still running."""
        for job in self.jobs:
            kill_worker(job.pid, job.pipe)
            job.pid, job.pipe = 0, -1

    def close_rendering(self) -> None:
        for job in self.jobs:
            if job.out is not None:
                job.out.close()

    def __enter__(self) -> ItemsCheck:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def rendered_chunks(files: Sequence[BinaryIO], chunk: int = 1 << 20) -> Iterator[bytes]:
    """The rendering of every range, in order, joined by commas: a chunk at a time."""
    first = True
    for handle in files:
        handle.seek(0)
        data = handle.read(chunk)
        if not data:
            continue
        if not first:
            yield b","
        first = False
        while data:
            yield data
            data = handle.read(chunk)
