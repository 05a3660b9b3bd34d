"""The JSON Schemas of plans, request items and response items, built from the catalogue.

The schema files shipped in the package (`airgap/schemas/`) and at the repository root
(`schemas/`) are this module's output, checked by a test; third parties validate against the
files, airgap validates against what this module builds, so the two can never drift.
Regenerate the files with `python -m airgap.model.schemas --write`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from airgap.model.actions import ACTIONS, Action
from airgap.model.fields import FIELDS

__all__ = ["GENERATED", "build", "render"]

GENERATED: Final = ("plan", "request-items", "response-items")
"""The schemas this module builds; the others (manifest, kit items, site card) are files."""

_ID: Final = "https://airgap.invalid/schemas/{name}.schema.json"
_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
_ITEM_ID: Final = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
_MEMBER: Final = {"type": "string", "pattern": "^files/[A-Za-z0-9._/-]{1,190}$"}
_DEVICE_REF: Final = {
    "udi": {"$ref": "#/$defs/cisco_device"},
    "mac": {"$ref": "#/$defs/mac_device"},
    "none": {"type": "null"},
}


def _action_names() -> list[str]:
    return list(ACTIONS)


def _request_condition(entry: Action) -> dict[str, Any]:
    then: dict[str, Any] = {"device": _DEVICE_REF[entry.device]}
    params: dict[str, Any] = {}
    required = list(entry.required_params())
    if required:
        params["required"] = required
    properties = {name: dict(schema) for name, schema in entry.request_params().items()}
    if properties:
        params["properties"] = properties
    if params:
        then["params"] = params
    if entry.needs_files:
        then["files"] = {"minItems": 1}
    return {
        "if": {"properties": {"action": {"const": entry.name}}},
        "then": {"properties": then},
    }


def _request_items() -> dict[str, Any]:
    return {
        "$schema": _DRAFT,
        "$id": _ID.format(name="request-items"),
        "title": "items.json of a request bundle",
        "description": "The request items: one vendor action each, for one device or none. "
        "Which params each action takes is listed per action under allOf (see docs/format.md).",
        "type": "object",
        "additionalProperties": False,
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
        "$defs": {
            "member": _MEMBER,
            "udi": {
                "type": "object",
                "additionalProperties": False,
                "required": ["pid", "sn"],
                "properties": {
                    "pid": {"type": "string", "pattern": "^[A-Za-z0-9/._+-]{1,64}$"},
                    "sn": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                },
            },
            "cisco_device": {
                "type": "object",
                "additionalProperties": False,
                "required": ["udi"],
                "properties": {
                    "hostname": {"type": ["string", "null"], "maxLength": 255},
                    "udi": {"$ref": "#/$defs/udi"},
                },
            },
            "mac_device": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mac"],
                "properties": {
                    "mac": {"type": "string", "pattern": "^[0-9A-F]{2}(:[0-9A-F]{2}){5}$"}
                },
            },
            "entitlements": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["tag", "count"],
                    "properties": {
                        "tag": {"type": "string", "minLength": 1, "maxLength": 512},
                        "count": {"type": "integer", "minimum": 1},
                    },
                },
            },
            "item": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "action", "device", "params", "files"],
                "properties": {
                    "id": _ITEM_ID,
                    "action": {"enum": _action_names()},
                    "device": {
                        "oneOf": [
                            {"type": "null"},
                            {"$ref": "#/$defs/cisco_device"},
                            {"$ref": "#/$defs/mac_device"},
                        ]
                    },
                    "params": {"type": "object"},
                    "files": {"type": "array", "items": {"$ref": "#/$defs/member"}},
                },
                "allOf": [_request_condition(entry) for entry in ACTIONS.values()],
            },
        },
    }


def _response_items() -> dict[str, Any]:
    return {
        "$schema": _DRAFT,
        "$id": _ID.format(name="response-items"),
        "title": "items.json of a response bundle",
        "description": "Response items: one per answered request item. Vendor ids are strings.",
        "type": "object",
        "additionalProperties": False,
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "id",
                        "request_item",
                        "action",
                        "status",
                        "result",
                        "error",
                        "files",
                        "vendor_refs",
                    ],
                    "properties": {
                        "id": _ITEM_ID,
                        "request_item": _ITEM_ID,
                        "action": {"enum": _action_names()},
                        "status": {"enum": ["ok", "failed", "pending", "needs_attention"]},
                        "result": {"type": "object"},
                        "error": {
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": ["code", "message"],
                                    "properties": {
                                        "code": {"type": "string"},
                                        "message": {"type": "string"},
                                    },
                                },
                            ]
                        },
                        "files": {"type": "array", "items": _MEMBER},
                        "vendor_refs": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
            }
        },
    }


def _plan_field(name: str) -> dict[str, Any]:
    plan_field = FIELDS[name]
    if plan_field.plan_type == "entitlements":
        return {
            "type": ["string", "array", "null"],
            "maxLength": 65536,
            "description": plan_field.description,
            "items": {
                "type": ["string", "object"],
                "maxLength": 4096,
                "required": ["tag", "count"],
                "additionalProperties": False,
                "properties": {
                    "tag": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "count": {"type": "integer", "minimum": 1},
                },
            },
        }
    if plan_field.plan_type == "bool":
        return {"type": ["boolean", "null"], "description": plan_field.description}
    ref = "#/$defs/list" if plan_field.plan_type == "list" else "#/$defs/text"
    return {"$ref": ref, "description": plan_field.description}


def _per_action_fields() -> str:
    parts = []
    for entry in ACTIONS.values():
        required = ", ".join(entry.required) or "none"
        optional = ", ".join(entry.optional)
        parts.append(f"{entry.name} ({required}{'; ' + optional if optional else ''})")
    return "; ".join(parts)


def _plan() -> dict[str, Any]:
    return {
        "$schema": _DRAFT,
        "$id": _ID.format(name="plan"),
        "title": "airgap plan",
        "description": "A plan for `airgap inside pack`: the JSON twin of the CSV plan. Each "
        "item is one CSV row written as an object: the same field names as the CSV columns, a "
        "missing field or null meaning an empty cell. Fields that hold lists (entitlements, "
        "tags, add_on_keys, and virtual_account for cisco.devices) take either a JSON array or "
        "the CSV's ';'-separated string. Relative file paths (rum_file, dossier_file) resolve "
        "against the plan's folder. This schema checks the shape; which fields each action "
        "needs or allows, and the value formats, are checked by the loader (airgap.inside.plan) "
        "and listed in each field's description. Per action (required; optional): "
        + _per_action_fields()
        + ". Conditions across fields: cisco.slr_reserve needs entitlements unless "
        "reservation_type is UNIVERSAL, and pid and sn unless the request code embeds them; "
        "bigiq.regkey_activate needs dossier_file when mode is manual and refuses it otherwise.",
        "type": "object",
        "required": ["items"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"type": "string", "description": "Optional pointer to this schema."},
            "description": {"type": "string", "description": "Free text for people; ignored."},
            "items": {
                "type": "array",
                "minItems": 1,
                "description": "The plan's items, in order; each becomes one request item.",
                "items": {"$ref": "#/$defs/item"},
            },
        },
        "$defs": {
            "text": {"type": ["string", "null"], "maxLength": 4096},
            "list": {
                "type": ["string", "array", "null"],
                "items": {"type": "string", "maxLength": 4096},
                "maxLength": 65536,
            },
            "item": {
                "type": "object",
                "required": ["action"],
                "additionalProperties": False,
                "properties": {
                    "action": {
                        "enum": _action_names(),
                        "description": "What to do; see the schema's description for each "
                        "action's fields.",
                    },
                    **{name: _plan_field(name) for name in FIELDS},
                },
            },
        },
    }


_BUILDERS: Final = {
    "plan": _plan,
    "request-items": _request_items,
    "response-items": _response_items,
}


def build(name: str) -> dict[str, Any]:
    """The schema `name` (one of `GENERATED`) as the catalogue defines it now.

    Raises:
        KeyError: `name` is not a generated schema.
    """
    return _BUILDERS[name]()


def render(name: str) -> str:
    """The schema file's text: indented JSON, two spaces, one trailing newline."""
    return json.dumps(build(name), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m airgap.model.schemas [--write|--check] [DIR …]`: regenerate or check files.

    Without DIR, the package's `airgap/schemas/` and, in a checkout, the repository's
    `schemas/` are used. Returns 1 when `--check` finds a file that differs.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    write = "--write" in args
    folders = [Path(a) for a in args if not a.startswith("--")]
    if not folders:
        package = Path(__file__).resolve().parents[1] / "schemas"
        folders = [package]
        checkout = package.parents[1] / "schemas"
        if checkout.is_dir():
            folders.append(checkout)
    stale: list[Path] = []
    for folder in folders:
        for name in GENERATED:
            path = folder / f"{name}.schema.json"
            text = render(name)
            if path.exists() and path.read_text(encoding="utf-8") == text:
                continue
            if write:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
            else:
                stale.append(path)
    for path in stale:
        print(f"out of date: {path} (run python -m airgap.model.schemas --write)")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
