"""Member-name rules: the one-match fast check never accepts what the full rules refuse."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from airgap.bundle import names
from airgap.bundle.names import check_member_name
from airgap.errors import UnsafeMember

_parts = st.sampled_from(["files", "i00001", ".", "..", "", ".hidden", "a.b", "-x", "é", "a b"])


def _full_rules_accept(name: str) -> bool:
    parts = name.split("/")
    return (
        bool(name)
        and not name.startswith("/")
        and len(name) <= names.MAX_LENGTH
        and names._ALLOWED.fullmatch(name) is not None
        and ".." not in parts
        and all(part not in ("", ".") for part in parts)
        and len(parts) <= names.MAX_DEPTH
    )


@settings(max_examples=500, deadline=None)
@given(st.lists(_parts, min_size=1, max_size=8).map("/".join) | st.text(max_size=30))
@example("files/" + "a" * 195)
@example("a/b/c/d/e/f/g")
def test_check_member_name_is_the_full_rules(name: str) -> None:
    if _full_rules_accept(name):
        check_member_name(name)
    else:
        with pytest.raises(UnsafeMember):
            check_member_name(name)
