"""Load the JSON Schemas shipped inside the package and validate documents against them.

Validation is on the hot path of pack and verify (one item per device, thousands per
bundle), so the yes/no check runs in jsonschema-rs; only a document that fails is walked again
with the pure-Python jsonschema to word the most relevant error for a person.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from airgap.errors import SchemaError

if TYPE_CHECKING:
    import jsonschema


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema document `schemas/<name>.schema.json`."""
    text = resources.files("airgap").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _fast(name: str) -> Any:
    return jsonschema_rs.Draft202012Validator(load_schema(name))


@functools.cache
def _explaining(name: str) -> jsonschema.Draft202012Validator:
    # Imported here: it costs ~60 ms at start-up and is needed only to word a failure.
    import jsonschema

    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(name: str, document: Any, *, what: str) -> None:
    """Validate `document` against `schemas/<name>.schema.json`.

    Raises:
        SchemaError: naming the first violation and where it is.
    """
    try:
        fast_says_invalid = not _fast(name).is_valid(document)
    except (ValueError, OverflowError):
        fast_says_invalid = False  # e.g. an integer beyond what it takes: jsonschema decides
    else:
        if not fast_says_invalid:
            return
    from jsonschema.exceptions import best_match

    error = best_match(_explaining(name).iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
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
