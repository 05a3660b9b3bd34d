"""Load the JSON Schemas shipped inside the package and validate documents against them."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import jsonschema

from airgap.errors import SchemaError


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("airgap").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load_schema(name: str) -> dict[str, Any]:
    """The schema document `schemas/<name>.schema.json`."""
    schema: dict[str, Any] = _validator(name).schema  # type: ignore[assignment]
    return schema


def validate(name: str, document: Any, *, what: str) -> None:
    """Validate `document` against `schemas/<name>.schema.json`.

    Raises:
        SchemaError: naming the first violation and where it is.
    """
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise SchemaError(f"{what}: {where}: {error.message[:300]}")
