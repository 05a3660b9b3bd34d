"""OData query options on the emulator's collections: $filter, $orderby, $skip, $top, $select.

`apply_query` narrows a rendered collection (a list of JSON objects) by the options a request
carries; `parse_filter` compiles a `$filter` into a predicate.
`$filter` has `eq ne gt ge lt le`, `and`, `or`, `not` and parentheses; literals are strings in
single quotes (a quote inside is doubled: `'O''Brien'`), numbers, `true`, `false` and `null`; a
field is a name or a `/`-separated path into nested objects. A field named `macAddress` compares
MAC addresses whatever their case and separators. A field an item lacks matches only `ne`.
`gt`/`ge`/`lt`/`le` compare strings with strings and numbers with numbers, and are false otherwise.

Leaves out the rest of OData: functions (`substringof`, `startswith`...), `in`, arithmetic,
`$expand`, `$count`, and `$orderby` on more than one field (it sorts by the text of one field).
Pure: no HTTP and no state. A malformed option raises `ApiError(400, ...)`, which the emulator
answers as BIG-IQ does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, TypeAlias

from airgap.emulators.bigiq.records import ApiError, normalize_mac

__all__ = ["Predicate", "apply_query", "parse_filter"]

Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]

_MISSING: Final = object()
_FILTER_TOKEN: Final = re.compile(
    r"\s*(?:(?P<lparen>\()|(?P<rparen>\))|(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>-?\d+(?:\.\d+)?)(?![\w.])|(?P<word>[A-Za-z_$][\w$/.]*))"
)
_OPERATORS: Final = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


def apply_query(
    items: list[dict[str, Any]], query: Mapping[str, list[str]]
) -> tuple[list[dict[str, Any]], int]:
    """Apply the OData options of a request to a rendered collection.

    Options apply in this order: `$filter`, `$orderby`, `$skip`, `$top`, `$select`. Only the first
    value of a repeated option counts; an empty one is ignored.

    Args:
        items: the collection's items, as the emulator renders them.
        query: the request's query string, as `urllib.parse.parse_qs` gives it.

    Raises:
        ApiError: 400 if `$filter` is malformed or `$skip`/`$top` is not a whole number >= 0.

    Returns:
        The page of items, and how many items matched `$filter` before `$skip` and `$top`.
    """
    text = _first(query, "$filter")
    if text is not None and text.strip():
        predicate = parse_filter(text)
        items = [item for item in items if predicate(item)]
    total = len(items)
    order = _first(query, "$orderby")
    if order and order.strip():
        field_name, _, direction = order.strip().partition(" ")
        items = sorted(
            items,
            key=lambda i: str(_lookup(i, field_name)),
            reverse=direction.strip().lower() == "desc",
        )
    skip = _int_option(query, "$skip")
    top = _int_option(query, "$top")
    if skip:
        items = items[skip:]
    if top is not None:
        items = items[:top]
    select = _first(query, "$select")
    if select and select.strip():
        fields = [f.strip() for f in select.split(",") if f.strip()]
        items = [{k: item[k] for k in fields if k in item} for item in items]
    return items, total


def parse_filter(text: str) -> Predicate:
    """Compile a `$filter` such as `(name eq 'x')` or `macAddress eq '..' and status eq '..'`.

    Args:
        text: the `$filter` value, already URL-decoded.

    Raises:
        ApiError: 400 `Invalid $filter expression: <text>` if `text` does not parse.

    Returns:
        A predicate over one item of a collection.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _FILTER_TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise ApiError(400, f"Invalid $filter expression: {text}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    parser = _FilterParser(tokens, text)
    predicate = parser.expression()
    if parser.pos != len(tokens):
        parser.fail()
    return predicate


def _first(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _int_option(query: Mapping[str, list[str]], key: str) -> int | None:
    text = _first(query, key)
    if text is None or text.strip() == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"Invalid {key} value '{text}'") from None
    if value < 0:
        raise ApiError(400, f"Invalid {key} value '{text}'")
    return value


def _lookup(item: Mapping[str, Any], path: str) -> Any:
    current: Any = item
    for part in path.split("/"):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


class _FilterParser:
    """Recursive descent over `or` / `and` / `not` / parentheses / `field op value`."""

    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.pos = tokens, text, 0

    def fail(self) -> NoReturn:
        raise ApiError(400, f"Invalid $filter expression: {self.text}")

    def peek_word(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word":
            return self.tokens[self.pos][1].lower()
        return None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            self.fail()
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expression(self) -> Predicate:
        parts = [self.conjunction()]
        while self.peek_word() == "or":
            self.pos += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda i: any(p(i) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.peek_word() == "and":
            self.pos += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda i: all(p(i) for p in parts))

    def unary(self) -> Predicate:
        if self.peek_word() == "not":
            self.pos += 1
            inner = self.unary()
            return lambda i: not inner(i)
        kind, value = self.take()
        if kind == "lparen":
            inner = self.expression()
            if self.take()[0] != "rparen":
                self.fail()
            return inner
        if kind != "word":
            self.fail()
        field_name = value
        op_kind, op = self.take()
        if op_kind != "word" or op.lower() not in _OPERATORS:
            self.fail()
        literal = self.literal()
        return _comparison(field_name, op.lower(), literal)

    def literal(self) -> Any:
        kind, value = self.take()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "word" and value.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value.lower()]
        self.fail()


def _comparison(field_name: str, op: str, literal: Any) -> Predicate:
    is_mac = field_name.rsplit("/", 1)[-1].lower() == "macaddress"
    if is_mac and isinstance(literal, str):
        literal = normalize_mac(literal) or literal.upper()

    def predicate(item: Mapping[str, Any]) -> bool:
        value = _lookup(item, field_name)
        if value is _MISSING:
            return op == "ne"
        if is_mac and isinstance(value, str):
            value = normalize_mac(value) or value.upper()
        if op == "eq":
            return bool(value == literal)
        if op == "ne":
            return bool(value != literal)
        comparable = (isinstance(value, str) and isinstance(literal, str)) or (
            isinstance(value, int | float)
            and isinstance(literal, int | float)
            and not isinstance(value, bool)
        )
        if not comparable:
            return False
        if op == "gt":
            return bool(value > literal)
        if op == "ge":
            return bool(value >= literal)
        if op == "lt":
            return bool(value < literal)
        return bool(value <= literal)

    return predicate
