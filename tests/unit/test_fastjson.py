"""orjson on the hot paths gives the standard library's answers (airgap/fastjson.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airgap import fastjson

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: those fall back to json
    | st.text(max_size=20)  # lone surrogates too
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


def _json_bytes(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(documents)
def test_dumps_sorted_writes_what_json_writes(document: Any) -> None:
    try:
        expected = _json_bytes(document)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            fastjson.dumps_sorted(document)
        return
    assert fastjson.dumps_sorted(document) == expected


@settings(max_examples=300, deadline=None)
@given(
    documents
    | st.dictionaries(st.text(max_size=4), st.floats(allow_nan=False, allow_infinity=False))
)
def test_dumps_indented_writes_what_json_writes_indented(document: Any) -> None:
    try:
        text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
        expected = text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            fastjson.dumps_indented(document)
        return
    assert fastjson.dumps_indented(document) == expected


# Integers within 64 bits: beyond, loads may give floats (documented; the RUM parser reads none).
small_documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(small_documents)
def test_loads_reads_what_json_reads(document: Any) -> None:
    text = json.dumps(document)  # ASCII escapes: lone surrogates survive as \ud800
    expected = json.loads(text)
    got = fastjson.loads(text)
    assert _json_bytes(got) == _json_bytes(expected)  # the same types, not only equal values


def test_what_orjson_refuses_gets_json_s_answer() -> None:
    assert math.isnan(fastjson.loads("NaN"))
    assert fastjson.loads("1e400") == math.inf
    assert fastjson.loads('"\\ud800"') == "\ud800"
    with pytest.raises(json.JSONDecodeError, match="Expecting value: line 1 column 1"):
        fastjson.loads("<xml/>")
    assert fastjson.dumps_sorted({"n": 2**70}) == b'{"n":1180591620717411303424}'
