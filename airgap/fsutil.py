"""Small file-system helpers: atomic writes and private (0600) files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write `path` through a temporary file in the same folder, renamed into place on success.

    Readers never see a half-written file, and a failure leaves nothing behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically (temp file + rename)."""
    with atomic_output(path, mode=mode) as handle:
        handle.write(data)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable only by its owner (mode 0600), atomically."""
    atomic_write_bytes(path, data, mode=0o600)
