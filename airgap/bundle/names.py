"""Member-name rules of `airgap-bundle/1` (docs/format.md), shared by the writer and the reader."""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence

from airgap.errors import UnsafeMember

_ALLOWED = re.compile(r"[A-Za-z0-9._/-]+")  # with fullmatch: `$` would let a final \n by
MAX_LENGTH = 200
MAX_DEPTH = 6
SIGNATURE_NAME = re.compile(r"^signatures/([0-9a-f]{16})\.sig$")
# Names every rule below accepts (parts not starting with a dot, at most MAX_DEPTH of them):
# checked in one match, as a bundle may name ten thousand members.
_PART = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_PLAINLY_SAFE = re.compile(rf"(?:{_PART}/){{0,{MAX_DEPTH - 1}}}{_PART}")
# The same, for names as lines of ASCII bytes: one match walks a run of them.
_PLAINLY_SAFE_LINES = re.compile(
    rb"(?:(?=[^\n]{1,%d}\n)(?:%s/){0,%d}%s\n)*+"
    % (MAX_LENGTH, _PART.encode(), MAX_DEPTH - 1, _PART.encode())
)


_ALLOWED_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-"
# In names framed by newlines, what `_PART` rules out: a part that is empty or starts with a
# dot (so also `.` and `..`), an absolute path, a trailing slash, an empty name.
_NOT_PLAIN = (b"\n.", b"/.", b"//", b"\n/", b"/\n", b"\n\n")
_SLASHES = operator.methodcaller("count", b"/")


def plainly_safe_run(names: Sequence[bytes]) -> int:
    """How many of `names` (ASCII bytes), from the first, `check_member_name` accepts at a
    glance: it would let them all pass (a few whole-run tests, else one regular-expression
    match for the lot).
    """
    if not names:
        return 0
    framed = b"\n" + b"\n".join(names) + b"\n"
    if (
        framed.count(b"\n") == len(names) + 1
        and not framed.translate(None, _ALLOWED_BYTES + b"\n")
        and not any(bad in framed for bad in _NOT_PLAIN)
        and max(map(len, names)) <= MAX_LENGTH
        and max(map(_SLASHES, names)) < MAX_DEPTH
    ):
        return len(names)
    lines = framed[1:]
    if lines.count(b"\n") != len(names):  # a name holds a newline: look at each alone
        for count, name in enumerate(names):
            if b"\n" in name or not _PLAINLY_SAFE_LINES.fullmatch(name + b"\n"):
                return count
        return len(names)
    return lines.count(b"\n", 0, _PLAINLY_SAFE_LINES.match(lines).end())  # type: ignore[union-attr]


def check_member_name(name: str) -> None:
    """Refuse a member path that is not relative, normalized and made of safe characters.

    Raises:
        UnsafeMember: naming the rule the path breaks.
    """
    if len(name) <= MAX_LENGTH and _PLAINLY_SAFE.fullmatch(name):
        return
    shown = name[:80].encode("unicode_escape").decode("ascii")
    if not name:
        raise UnsafeMember("a member has an empty name")
    if name.startswith("/"):
        raise UnsafeMember(f"member {shown!r} has an absolute path")
    if len(name) > MAX_LENGTH:
        raise UnsafeMember(f"member {shown!r}… is longer than {MAX_LENGTH} characters")
    if not _ALLOWED.fullmatch(name):
        raise UnsafeMember(f"member {shown!r} has characters outside [A-Za-z0-9._/-]")
    parts = name.split("/")
    if ".." in parts:
        raise UnsafeMember(f"member {shown!r} climbs out with '..'")
    if any(part in ("", ".") for part in parts):
        raise UnsafeMember(f"member {shown!r} is not a normalized path")
    if len(parts) > MAX_DEPTH:
        raise UnsafeMember(f"member {shown!r} is nested deeper than {MAX_DEPTH} levels")
