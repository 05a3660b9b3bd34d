"""The BIG-IQ emulator's OData options: `$filter` grammar and semantics, paging, `$select`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airgap.emulators.bigiq import BigIqEmulator
from airgap.emulators.bigiq.odata import apply_query, parse_filter
from airgap.emulators.bigiq.records import ApiError
from airgap.emulators.server import Request

ITEMS: list[dict[str, Any]] = [
    {"name": "alpha", "status": "READY", "count": 3, "pool": {"name": "p1"}, "on": True},
    {"name": "beta", "status": "FAILED", "count": 10, "pool": {"name": "p2"}, "on": False},
    {"name": "O'Brien", "status": "READY", "count": 7, "pool": {"name": "p1"}},
    {"name": "delta", "status": None, "count": 2.5},
]


def names(text: str) -> list[str]:
    predicate = parse_filter(text)
    return [item["name"] for item in ITEMS if predicate(item)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name eq 'alpha'", ["alpha"]),
        ("name ne 'alpha'", ["beta", "O'Brien", "delta"]),
        ("status eq 'READY' and count gt 5", ["O'Brien"]),
        ("name eq 'alpha' or name eq 'beta'", ["alpha", "beta"]),
        ("not status eq 'READY'", ["beta", "delta"]),
        ("not (status eq 'READY' or count lt 3)", ["beta"]),
        # `not` binds tighter than `and`, `and` tighter than `or`; parentheses change that.
        ("not name eq 'alpha' and count gt 5", ["beta", "O'Brien"]),
        ("not (name eq 'alpha' and count gt 5)", ["alpha", "beta", "O'Brien", "delta"]),
        ("name eq 'alpha' or status eq 'READY' and count ge 7", ["alpha", "O'Brien"]),
        ("(name eq 'alpha' or status eq 'READY') and count ge 7", ["O'Brien"]),
        ("(name eq 'alpha' or name eq 'beta') and count le 3", ["alpha"]),
        ("((name eq 'alpha'))", ["alpha"]),
    ],
)
def test_filter_combines_comparisons_with_and_or_not_and_parentheses(
    text: str, expected: list[str]
) -> None:
    assert names(text) == expected


def test_filter_keywords_and_operators_ignore_case() -> None:
    assert names("name EQ 'alpha' OR NOT name Ne 'beta'") == ["alpha", "beta"]


def test_a_doubled_quote_inside_a_literal_is_one_quote() -> None:
    assert names("name eq 'O''Brien'") == ["O'Brien"]
    assert names("name eq 'O''''Brien'") == []  # two quotes stay two


def test_filter_literals_numbers_booleans_and_null() -> None:
    assert names("count eq 10") == ["beta"]
    assert names("count eq 2.5") == ["delta"]
    assert names("count gt -1 and count lt 3") == ["delta"]
    assert names("on eq true") == ["alpha"]
    assert names("on eq false") == ["beta"]
    assert names("status eq null") == ["delta"]


def test_a_missing_field_matches_only_ne() -> None:
    assert names("missing eq 'x'") == []
    assert names("missing ne 'x'") == ["alpha", "beta", "O'Brien", "delta"]
    assert names("on ne true") == ["beta", "O'Brien", "delta"]


def test_filter_reads_nested_fields_by_slash_path() -> None:
    assert names("pool/name eq 'p1'") == ["alpha", "O'Brien"]
    assert names("pool/name/deeper eq 'p1'") == []


def test_order_comparisons_need_matching_types() -> None:
    assert names("name gt 'b'") == ["beta", "delta"]
    assert names("count gt 'a'") == []  # a number never orders against a string
    assert names("on ge 0") == []  # nor does a boolean against a number


def test_mac_address_fields_compare_whatever_the_format() -> None:
    items = [{"macAddress": "00:50:56:9A:3C:E1"}, {"macAddress": "00-50-56-00-00-01"}]
    for literal in ("00-50-56-9a-3c-e1", "0050.569a.3ce1", "00:50:56:9A:3C:E1"):
        page, _ = apply_query(items, {"$filter": [f"macAddress eq '{literal}'"]})
        assert page == [items[0]], literal
    page, _ = apply_query(items, {"$filter": ["macAddress eq '00:50:56:00:00:01'"]})
    assert page == [items[1]]


@pytest.mark.parametrize(
    "text",
    [
        "name eq",
        "name eq 'unterminated",
        "name foo 'x'",
        "'x' eq name",
        "((name eq 'x')",
        "name eq 'x')",
        "name eq 'x' extra",
        "name eq 'x' and",
        "not",
        "name eq 1.",
        "name eq x",
        "name eq 'x' # y",
    ],
)
def test_malformed_filter_is_400(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_filter(text)
    assert caught.value.status == 400
    assert caught.value.message == f"Invalid $filter expression: {text}"


def test_malformed_filter_gets_the_emulators_400_error_body() -> None:
    emu = BigIqEmulator()
    login = emu.handle(
        Request(
            "POST",
            "/mgmt/shared/authn/login",
            {},
            {},
            json.dumps({"username": "admin", "password": "x"}).encode(),
        )
    )
    token = json.loads(login.body)["token"]["token"]
    response = emu.handle(
        Request(
            "GET",
            "/mgmt/cm/device/licensing/assignments",
            {"$filter": ["macAddress eq"]},
            {"x-f5-auth-token": token},
            b"",
        )
    )
    assert response.status == 400
    body = json.loads(response.body)
    assert body["code"] == 400
    assert body["message"] == "Invalid $filter expression: macAddress eq"
    assert (body["errorStack"], body["kind"]) == ([], ":resterrorresponse")
    assert emu.stats()["calls"]["assignments.list"] == 1


def test_query_counts_filtered_items_then_pages_and_selects() -> None:
    query = {
        "$filter": ["status ne 'FAILED'"],
        "$orderby": ["name desc"],
        "$skip": ["1"],
        "$top": ["1"],
        "$select": ["name, count"],
    }
    page, total = apply_query(ITEMS, query)
    assert (page, total) == ([{"name": "alpha", "count": 3}], 3)


def test_empty_options_are_ignored_and_only_the_first_value_counts() -> None:
    page, total = apply_query(ITEMS, {"$filter": [" "], "$top": [""], "$skip": [""]})
    assert (page, total) == (ITEMS, 4)
    page, _ = apply_query(ITEMS, {"$filter": ["name eq 'beta'", "name eq 'alpha'"]})
    assert [item["name"] for item in page] == ["beta"]


def test_orderby_sorts_ascending_by_default() -> None:
    page, _ = apply_query(ITEMS, {"$orderby": ["name"], "$select": ["name"]})
    assert page == [{"name": "O'Brien"}, {"name": "alpha"}, {"name": "beta"}, {"name": "delta"}]


@pytest.mark.parametrize(("key", "value"), [("$top", "-1"), ("$skip", "x"), ("$top", "1.5")])
def test_bad_top_or_skip_is_400(key: str, value: str) -> None:
    with pytest.raises(ApiError) as caught:
        apply_query(ITEMS, {key: [value]})
    assert (caught.value.status, caught.value.message) == (400, f"Invalid {key} value '{value}'")
