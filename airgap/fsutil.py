"""Small file-system helpers: atomic writes and private (0600) files."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(
    path: Path, *, mode: int = 0o644, fsync: bool = True, make_parents: bool = True
) -> Iterator[BinaryIO]:
    """Write `path` through a temporary file in the same folder, renamed into place on success.

    Readers never see a half-written file, and a failure leaves nothing behind. With
    `fsync=False` the data is not forced to disk before the rename: for a caller that writes
    many files and then makes them all durable at once (`sync_filesystem`).
    With `make_parents=False` the folder must exist already.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = True, make_parents: bool = True
) -> None:
    """Replace `path` with `data` atomically (temp file + rename); options as `atomic_output`."""
    with atomic_output(path, mode=mode, fsync=fsync, make_parents=make_parents) as handle:
        handle.write(data)


def sync_filesystem(path: Path) -> None:
    """Make everything written to the file system holding `path` durable, in one call.

    One `syncfs(2)` for thousands of files written without their own fsync costs about what
    one fsync does; each fsync of its own forces a journal commit. Where `syncfs` is missing
    (not Linux), `sync(2)` flushes every file system instead.

    Raises:
        OSError: `path` cannot be opened, or the file system reports a write error.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs = _syncfs()
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(path))
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable only by its owner (mode 0600), atomically."""
    atomic_write_bytes(path, data, mode=0o600)
