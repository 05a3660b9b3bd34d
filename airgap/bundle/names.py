"""Member-name rules of `airgap-bundle/1` (docs/format.md), shared by the writer and the reader."""

from __future__ import annotations

import re

from airgap.errors import UnsafeMember

_ALLOWED = re.compile(r"[A-Za-z0-9._/-]+")  # with fullmatch: `$` would let a final \n by
MAX_LENGTH = 200
MAX_DEPTH = 6
SIGNATURE_NAME = re.compile(r"^signatures/([0-9a-f]{16})\.sig$")
# Names every rule below accepts (parts not starting with a dot, at most MAX_DEPTH of them):
# checked in one match, as a bundle may name ten thousand members.
_PART = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_PLAINLY_SAFE = re.compile(rf"(?:{_PART}/){{0,{MAX_DEPTH - 1}}}{_PART}")


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
