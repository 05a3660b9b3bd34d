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
