"""The fast canonical-JSON path is byte-equal to the rfc8785 reference where it applies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from airgap.bundle.manifest import Manifest, MemberEntry, canonical_bytes

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
    for document in ({"é": 1, "z": 2}, {"a": 1.5}, {"\U0001f600": 1, "\uffff": 2}):
        assert canonical_bytes(document) == rfc8785.dumps(document)


@pytest.mark.parametrize(
    "document",
    [
        {"big": 2**60},
        {"big": -(2**53)},
        [2**53],
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"surrogate": "\ud800"},
        {"\udfff": 1},
        {"bytes": b"x"},
        {1: "non-string key"},
    ],
)
def test_values_rfc8785_refuses_are_refused_too(document: Any) -> None:
    with pytest.raises(Exception) as reference:
        rfc8785.dumps(document)
    with pytest.raises(type(reference.value)):
        canonical_bytes(document)


paths = st.text(st.sampled_from('abcXYZ019._-/é\u2028"\\'), min_size=1, max_size=30)
members = st.builds(
    MemberEntry,
    path=paths,
    sha256=st.text(st.sampled_from("0123456789abcdef"), min_size=64, max_size=64),
    size=st.integers(0, 2**53 - 1) | st.sampled_from([2**53, 2**60]),
)


@settings(max_examples=200, deadline=None)
@given(
    members=st.lists(members, max_size=12),
    name=text,
    by_action=st.dictionaries(
        st.sampled_from(["cisco.reserve", "bigiq.assign"]), st.integers(0, 99)
    ),
    reply=st.none() | st.fixed_dictionaries({"bundle_id": text, "manifest_sha256": text}),
)
def test_manifest_bytes_match_rfc8785(
    members: list[MemberEntry], name: str, by_action: dict[str, int], reply: Any
) -> None:
    manifest = Manifest(
        bundle_id="0b9f3a1e-1f2e-4c3d-8e9f-0a1b2c3d4e5f",
        kind="request",
        created=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        expires=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        producer={"name": name, "role": "inside", "fingerprint": "SHA256:abc"},
        sequence=7,
        in_reply_to=reply,
        audit_head="0" * 64,
        summary={"items": sum(by_action.values()), "by_action": by_action},
        members=tuple(members),
    )
    try:
        expected = rfc8785.dumps(manifest.to_json())
    except Exception as refused:  # rfc8785 refuses sizes beyond 2**53; so must the manifest
        with pytest.raises(type(refused)):
            manifest.to_canonical_bytes()
        return
    assert manifest.to_canonical_bytes() == expected
