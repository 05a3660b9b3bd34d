"""Load the JSON Schemas and validate documents against them.

Plans, request items and response items are validated against the schemas the action
catalogue builds (`airgap.model.schemas`), so an action added to the catalogue is accepted
everywhere at once; the shipped files of those three are the same text, held to it by a test.
The manifest, kit items and site card schemas are read from the package's files.

Validation is on the hot path of pack and verify (one item per device, thousands per
bundle), so the yes/no check runs in jsonschema-rs; only a document that fails is walked again
with the pure-Python jsonschema to word the most relevant error for a person.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from airgap.errors import SchemaError
from airgap.model.actions import catalogue_generation
from airgap.model.schemas import GENERATED, build

if TYPE_CHECKING:
    import jsonschema


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (`manifest`, `request-items`, …) as airgap validates against it."""
    return _load(name, catalogue_generation())


@functools.cache
def _load(name: str, generation: int) -> dict[str, Any]:
    if name in GENERATED:
        return build(name)
    text = resources.files("airgap").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _fast(name: str) -> Any:
    return _fast_for(name, catalogue_generation())


@functools.cache
def _fast_for(name: str, generation: int) -> Any:
    return jsonschema_rs.Draft202012Validator(_load(name, generation))


def _explaining(name: str) -> jsonschema.Draft202012Validator:
    return _explaining_for(name, catalogue_generation())


@functools.cache
def _explaining_for(name: str, generation: int) -> jsonschema.Draft202012Validator:
    # Imported here: it costs ~60 ms at start-up and is needed only to word a failure.
    import jsonschema

    schema = _load(name, generation)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(name: str, document: Any, *, what: str) -> None:
    """Validate `document` against `schemas/<name>.schema.json`.

    Raises:
        SchemaError: naming the first violation and where it is.
    """
    _check(_fast(name), lambda: _explaining(name), document, what=what, at=())


def validate_item(name: str, item: Any, *, index: int, what: str) -> None:
    """Validate one entry of the `items` array of an items document (`request-items`,
    `response-items`) against that array's item schema, as if it stood at `items/<index>`.

    A writer checks items one at a time as it produces them rather than holding a whole
    document. Those schemas constrain the document only through each item (a test holds their
    top level to that shape), so checking every item is checking the document.

    Raises:
        SchemaError: naming the first violation and where it is (`items/<index>/…`).
    """
    item_validator(name, what=what)(item, index)


def item_validator(name: str, *, what: str) -> Callable[[Any, int], None]:
    """`validate_item` for many items: a function of (item, index), bound to the catalogue
    as it is now, that skips the per-call look-ups (it runs once per device of a pack).

    Raises (when called):
        SchemaError: as `validate_item`.
    """
    generation = catalogue_generation()
    fast = _fast_item(name, generation)
    is_valid = fast.is_valid

    def check(item: Any, index: int) -> None:
        try:
            if is_valid(item):
                return
        except (ValueError, OverflowError):
            pass  # `_check` asks again and lets jsonschema decide
        _check(
            fast,
            lambda: _explaining_item(name, generation),
            item,
            what=what,
            at=("items", index),
        )

    return check


def _item_schema(name: str, generation: int) -> dict[str, Any]:
    schema = _load(name, generation)
    entry: dict[str, Any] = {
        "$schema": schema["$schema"],
        **schema["properties"]["items"]["items"],
    }
    if "$defs" in schema:
        entry["$defs"] = schema["$defs"]  # what `#/$defs/…` references resolve against
    return entry


@functools.cache
def _fast_item(name: str, generation: int) -> Any:
    return jsonschema_rs.Draft202012Validator(_item_schema(name, generation))


@functools.cache
def _explaining_item(name: str, generation: int) -> jsonschema.Draft202012Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(_item_schema(name, generation))


def _check(
    fast: Any,
    explaining: Callable[[], jsonschema.Draft202012Validator],
    document: Any,
    *,
    what: str,
    at: tuple[str | int, ...],
) -> None:
    try:
        fast_says_invalid = not fast.is_valid(document)
    except (ValueError, OverflowError):
        fast_says_invalid = False  # e.g. an integer beyond what it takes: jsonschema decides
    else:
        if not fast_says_invalid:
            return
    from jsonschema.exceptions import best_match

    error = best_match(explaining().iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in (*at, *error.absolute_path)) or "(top)"
        raise SchemaError(f"{what}: {where}: {error.message[:300]}")
    if fast_says_invalid:
        # The validators can disagree at the edges (Python's `$` also matches before a final
        # newline); the stricter answer wins.
        raise SchemaError(f"{what}: does not match the schema")


def _element_schema(name: str) -> dict[str, Any] | None:
    """A schema for a list of the elements of `schemas/<name>`'s top-level `items` array, or
    None when the document is not just that array or the array carries constraints of its own
    (such as a minimum count) that only the whole document can be checked against."""
    schema = load_schema(name)
    top = set(schema) - {"$schema", "$id", "title", "description", "$defs"}
    properties = schema.get("properties")
    if top != {"type", "additionalProperties", "required", "properties"} or properties is None:
        return None
    array = properties.get("items")
    if (
        schema.get("type") != "object"
        or set(properties) != {"items"}
        or schema.get("required") != ["items"]
        or schema.get("additionalProperties") is not False
        or not isinstance(array, dict)
        or set(array) != {"type", "items"}
        or array.get("type") != "array"
    ):
        return None
    return {"$defs": schema.get("$defs", {}), "type": "array", "items": array["items"]}


@functools.cache
def _fast_elements(name: str) -> Any:
    schema = _element_schema(name)
    return None if schema is None else jsonschema_rs.Draft202012Validator(schema)


def elements_checker(name: str) -> Callable[[list[Any], list[Any] | None], bool | None]:
    """`elements_valid` for `schemas/<name>`, bound once: for many batches of a large document.

    Where the item schema chooses what else applies by the item's action (an `allOf` of
    `{"if": {"properties": {"action": {"const": X}}}, "then": …}`, one per action, and
    `action` required), each batch is validated an action at a time, against the item schema
    with only that action's `then` (or none, for an action no branch names). That is the same
    answer: for an object whose `action` is X, the branch for X applies and every other `if`
    fails; anything else (not an object, no action) is validated against the whole schema. It
    spares testing ten branches on every item. The checker takes the elements and, if the
    caller has them, their `action` values in order.
    """
    split = _by_action(name, catalogue_generation())
    if split is None:

        def plain(elements: list[Any], actions: list[Any] | None = None) -> bool | None:
            return elements_valid(name, elements)

        return plain
    neutral, branches = split
    whole = _fast_elements(name)

    def check(elements: list[Any], actions: list[Any] | None = None) -> bool | None:
        try:
            if actions is None:
                actions = list(map(_ACTION, elements))
            kinds = set(actions)
        except (TypeError, KeyError):  # an element is not an object with a plain action
            return elements_valid(name, elements)
        try:
            if len(kinds) == 1:
                return bool(branches.get(actions[0], neutral).is_valid(elements))
            return all(
                branches.get(kind, neutral).is_valid(
                    [e for e, action in zip(elements, actions, strict=True) if action == kind]
                )
                for kind in kinds
            )
        except (ValueError, OverflowError):
            return None if whole is None else elements_valid(name, elements)

    return check


_ACTION = operator.itemgetter("action")


@functools.cache
def _by_action(name: str, generation: int) -> tuple[Any, dict[str, Any]] | None:
    """Validators of a list of items per action (see `elements_checker`), or None when the
    item schema does not have that shape."""
    schema = _element_schema(name)
    # `unevaluated*` keywords see what the `if`s evaluated: dropping them would change answers.
    if schema is None or "unevaluated" in json.dumps(schema):
        return None
    defs, entry = schema["$defs"], schema["items"]
    item = entry
    ref = entry.get("$ref") if set(entry) == {"$ref"} else None
    if isinstance(ref, str) and ref.startswith("#/$defs/") and "/" not in ref[8:]:
        item = defs.get(ref[8:])
    if not isinstance(item, dict) or "action" not in item.get("required", ()):
        return None
    branches = item.get("allOf")
    if not isinstance(branches, list) or not branches:
        return None
    thens: dict[str, Any] = {}
    for branch in branches:
        if not isinstance(branch, dict) or set(branch) != {"if", "then"}:
            return None
        condition = branch["if"]
        const = condition.get("properties", {}).get("action", {}).get("const")
        if condition != {"properties": {"action": {"const": const}}} or not isinstance(const, str):
            return None
        if const in thens:
            return None
        thens[const] = branch["then"]
    base = {key: value for key, value in item.items() if key != "allOf"}

    def validator(then: Any) -> Any:
        single = base if then is None else {**base, "allOf": [then]}
        return jsonschema_rs.Draft202012Validator({"$defs": defs, "type": "array", "items": single})

    return validator(None), {const: validator(then) for const, then in thens.items()}


def elements_valid(name: str, elements: list[Any]) -> bool | None:
    """Whether every one of `elements` is a valid element of the `items` array of
    `schemas/<name>.schema.json` (so `{"items": elements}` is a valid document).

    A yes/no check for documents read a batch of elements at a time; on False, validate the
    whole document with `validate` to word the error. None: the schema cannot be checked
    element by element (or an element holds what the fast validator cannot take).
    """
    validator = _fast_elements(name)
    if validator is None:
        return None
    try:
        return bool(validator.is_valid(elements))
    except (ValueError, OverflowError):
        return None
