"""The fast canonical-JSON path is byte-equal to the rfc8785 reference where it applies."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from airgap.bundle.manifest import canonical_bytes

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_fast_path_matches_rfc8785(document: Any) -> None:
    assert canonical_bytes(document) == rfc8785.dumps(document)


def test_documents_outside_the_fast_path_still_match() -> None:
    for document in ({"é": 1, "z": 2}, {"a": 1.5}, {"big": 2**60}, {"\U0001f600": 1, "\uffff": 2}):
        try:
            expected = rfc8785.dumps(document)
        except Exception:  # rfc8785 refuses some values; so must we
            continue
        assert canonical_bytes(document) == expected
