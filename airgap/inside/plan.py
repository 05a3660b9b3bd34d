"""Load what `airgap inside pack` should ask for: plan files.

A plan is CSV (a header row, then one item per row) or JSON (`{"items": [...]}`, checked against
`schemas/plan.schema.json`), using the plan fields of the action catalogue
(`airgap.model`): which fields each action needs and allows, and where each value goes in the
request item, are declared there; this module checks and converts the cells. Every bad row is
reported at once, with its line number, in one `PlanError`. Building the request bundle from
the items is left to `pack`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from airgap.errors import InputError, PlanError
from airgap.formats.rum import RumFile, parse_rum_bytes
from airgap.inside.parsers._text import (
    HOSTNAME_RE,
    PID_RE,
    SN_RE,
    decode_capture,
    read_bytes,
)
from airgap.inside.parsers.codes import (
    REQUEST_CODE_RE,
    RETURN_CODE_RE,
    slr_request_udi,
)
from airgap.inside.parsers.f5 import check_addon_key, check_regkey, parse_dossier_file
from airgap.model import ACTIONS, CSV_COLUMNS, FIELDS, Action, device_key, normalize_mac
from airgap.model.fields import HYPERVISORS, MODES, RESERVATION_TYPES, UNITS_OF_MEASURE
from airgap.schema import load_schema
from airgap.spool import RecordSpool

__all__ = [
    "ACTIONS",
    "CSV_COLUMNS",
    "HYPERVISORS",
    "UNITS_OF_MEASURE",
    "DuplicateCheck",
    "PlanItem",
    "check_duplicates",
    "load_plan",
    "parse_entitlement_spec",
    "reserve_entitlements",
]

_logger = logging.getLogger(__name__)

MAX_COUNT = 1_000_000  # licences per entitlement; anything larger is a typo
MAX_TAG = 512  # characters in an entitlement tag, as request-items.schema.json allows


# Not frozen: a frozen dataclass costs four times as much to create, and a large pack creates
# twenty thousand of these. Nothing changes one after it is made.
@dataclass(slots=True)
class PlanItem:
    """One thing to ask the outside for, before it gets an id and a place in a bundle.

    `device` and `params` have the shapes of request items (docs/format.md). `attachments` are
    files to carry verbatim (a RUM report); `attachment_sha256` holds their SHA-256 (hex) as
    read while parsing, in the same order, or is empty when not computed.
    `origin` says where the item came from (`plan.csv:12`, `udi/sw1.txt:4`) for messages.
    """

    action: str
    device: dict[str, Any] | None
    params: dict[str, Any]
    attachments: tuple[Path | str, ...]  # as given; folder intake keeps them as text (cheaper)
    origin: str
    attachment_sha256: tuple[str, ...] = ()


class _Bad(Exception):
    """One problem with one field; collected, never raised out of this module."""


# --- entitlements --------------------------------------------------------------------------------

_TAG_RE = re.compile(r"^[^\s;]+$")


def _entitlement(spec: str) -> tuple[str, int]:
    text = spec.strip()
    tag, colon, count_text = text.rpartition(":")
    if not colon:
        tag, count_text = text, "1"
    if not tag or not _TAG_RE.match(tag):
        raise _Bad(f"entitlement {spec!r} is not TAG[:COUNT]")
    if len(tag) > MAX_TAG:
        raise _Bad(f"entitlement tag {tag[:20]!r}… is longer than {MAX_TAG} characters")
    if not count_text.isdigit() or not count_text.isascii():
        raise _Bad(f"entitlement {spec!r}: count {count_text!r} is not a whole number")
    if len(count_text) > len(str(MAX_COUNT)):  # int() of thousands of digits is refused
        raise _Bad(f"entitlement {spec[:40]!r}…: count must be between 1 and {MAX_COUNT}")
    count = int(count_text)
    if not 1 <= count <= MAX_COUNT:
        raise _Bad(f"entitlement {spec!r}: count must be between 1 and {MAX_COUNT}")
    return tag, count


def parse_entitlement_spec(spec: str) -> tuple[str, int]:
    """Parse one `TAG[:N]` entitlement (as given to `--entitlement`); N defaults to 1.

    The count is split at the last colon, since Cisco tags hold commas and dots but no colon.

    Raises:
        PlanError: an empty tag, a tag with spaces or `;`, or a count that is not 1 or more.

    Returns:
        (tag, count).
    """
    try:
        return _entitlement(spec)
    except _Bad as e:
        raise PlanError(str(e), problems=[str(e)]) from None


def reserve_entitlements(entitlements: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """The `entitlements` parameter of the reserves `--udi DIR --entitlement TAG[:N]` makes.

    Raises:
        PlanError: no entitlement, a malformed one, or the same tag twice.
    """
    if not entitlements:
        message = "--udi needs at least one --entitlement TAG[:N]"
        raise PlanError(message, problems=[message])
    try:
        return _entitlements([f"{tag}:{count}" for tag, count in entitlements])
    except _Bad as e:
        raise PlanError(str(e), problems=[str(e)]) from None


def _entitlements(value: Any) -> list[dict[str, Any]]:
    entries: list[Any] = _split(value) if isinstance(value, str) else list(value)
    if not entries:
        raise _Bad("entitlements is empty")
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        if isinstance(entry, dict):  # JSON {"tag", "count"}; the schema checked the types
            tag, count = _entitlement(f"{entry['tag']}:{entry['count']}")
        else:
            tag, count = _entitlement(str(entry))
        if tag in seen:
            raise _Bad(f"entitlement {tag} is listed twice")
        seen.add(tag)
        result.append({"tag": tag, "count": count})
    return result


# --- field converters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    base_dir: Path


def _split(value: Any) -> list[str]:
    """A list cell: `;`-separated text, or a JSON array of strings."""
    parts = value.split(";") if isinstance(value, str) else value
    return [p.strip() for p in parts if p.strip()]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{name} must be text")
    return value.strip()


def _pattern(regex: re.Pattern[str], what: str) -> Callable[[Any, str, _Ctx], str]:
    def convert(value: Any, name: str, ctx: _Ctx) -> str:
        text = _text(value, name)
        if not regex.fullmatch(text):
            raise _Bad(f"{name} {text!r} is not {what}")
        return text

    return convert


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[Any, str, _Ctx], str]:
    def convert(value: Any, name: str, ctx: _Ctx) -> str:
        text = _text(value, name)
        text = text.upper() if upper else text.lower()
        if text not in choices:
            raise _Bad(f"{name} {value!r} is not one of {', '.join(choices)}")
        return text

    return convert


def _plain(value: Any, name: str, ctx: _Ctx) -> str:
    return _text(value, name)


def _list(value: Any, name: str, ctx: _Ctx) -> list[str]:
    items = _split(value)
    if not items:
        raise _Bad(f"{name} is empty")
    return items


def _mac(value: Any, name: str, ctx: _Ctx) -> str:
    try:
        return normalize_mac(_text(value, name))
    except InputError as e:
        raise _Bad(f"{name}: {e.message}") from None


def _regkey(value: Any, name: str, ctx: _Ctx) -> str:
    try:
        return check_regkey(_text(value, name))
    except InputError as e:
        raise _Bad(f"{name}: {e.message}") from None


def _add_on_keys(value: Any, name: str, ctx: _Ctx) -> list[str]:
    keys: list[str] = []
    for key in _list(value, name, ctx):
        try:
            checked = check_addon_key(key)
        except InputError as e:
            raise _Bad(f"{name}: {e.message}") from None
        if checked in keys:
            raise _Bad(f"{name}: {checked} is listed twice")
        keys.append(checked)
    return keys


_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


def _bool(value: Any, name: str, ctx: _Ctx) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value, name).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Bad(f"{name} {value!r} is not true or false")


def _path(value: Any, name: str, ctx: _Ctx) -> Path:
    text = _text(value, name)
    try:
        path = Path(text).expanduser()
        resolved = path if path.is_absolute() else ctx.base_dir / path
        found = resolved.is_file()
    except (OSError, RuntimeError, ValueError) as exc:  # ~nosuchuser, names too long, NUL
        raise _Bad(f"{name} {text[:80]!r} is not a usable path ({exc})") from None
    if not found:
        raise _Bad(f"{name} {str(path)!r} not found (looked for {resolved})")
    return resolved


@dataclass(frozen=True)
class _Rum:
    rum: RumFile
    sha256: str


def _rum_file(value: Any, name: str, ctx: _Ctx) -> _Rum:
    path = _path(value, name, ctx)
    try:
        data = read_bytes(path)
        return _Rum(parse_rum_bytes(data, path=path), hashlib.sha256(data).hexdigest())
    except InputError as e:
        raise _Bad(f"{name}: {e.message}") from None


def _dossier(value: Any, name: str, ctx: _Ctx) -> str:
    path = _path(value, name, ctx)
    try:
        return parse_dossier_file(path)
    except InputError as e:
        raise _Bad(f"{name}: {e.message}") from None


_Convert = Callable[[Any, str, _Ctx], Any]

_CONVERTERS: dict[str, _Convert] = {
    "hostname": _pattern(HOSTNAME_RE, "a hostname"),
    "pid": _pattern(PID_RE, "a product id"),
    "sn": _pattern(SN_RE, "a serial number"),
    "entitlements": lambda value, name, ctx: _entitlements(value),
    "return_code": _pattern(RETURN_CODE_RE, "a return code (C + 8 groups of 6 + 1 of 3)"),
    "request_code": _pattern(REQUEST_CODE_RE, "a request code"),
    "reservation_type": _choice(RESERVATION_TYPES, upper=True),
    "rum_file": _rum_file,
    "mac": _mac,
    "hypervisor": _choice(HYPERVISORS),
    "pool": _plain,
    "sku_keyword1": _plain,
    "sku_keyword2": _plain,
    "unit_of_measure": _choice(UNITS_OF_MEASURE),
    "tenant": _plain,
    "chargeback_tag": _plain,
    "regkey": _regkey,
    "add_on_keys": _add_on_keys,
    "mode": _choice(MODES),
    "dossier_file": _dossier,
    "accept_eula": _bool,
    "virtual_account": _plain,  # a list where the action's param is one (cisco.devices)
    "tags": _list,
}


def _converter(entry: Action, name: str) -> _Convert:
    """The converter of a field for an action: a plain text field whose param is a list for
    this action (cisco.devices' virtual accounts) is read as a `;`-separated list."""
    convert = _CONVERTERS[name]
    if convert is _plain and FIELDS[name].plan_type == "list":
        schema = entry.request_params().get(entry.param_of(FIELDS[name]), {})
        if schema.get("type") == "array":
            return _list
    return convert


# --- building items ------------------------------------------------------------------------------


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _build(
    action: str, fields: dict[str, Any], origin: str, ctx: _Ctx, problems: list[str]
) -> PlanItem | None:
    """Check one row's fields for `action` and build its item; problems go to `problems`."""
    entry = ACTIONS[action]
    required, allowed = set(entry.required), {*entry.required, *entry.optional}
    before = len(problems)
    present = {name: value for name, value in fields.items() if not _is_absent(value)}
    for name in sorted(set(present) - allowed):
        problems.append(f"{origin}: {action} does not take {name}")
    for name in sorted(required - set(present)):
        problems.append(f"{origin}: {action} needs {name}")
    v: dict[str, Any] = {}
    for name, value in present.items():
        if name not in allowed:
            continue
        try:
            v[name] = _converter(entry, name)(value, name, ctx)
        except _Bad as e:
            problems.append(f"{origin}: {e}")
    if len(problems) > before:
        return None
    try:
        return _assemble(entry, v, origin)
    except _Bad as e:
        problems.append(f"{origin}: {e}")
        return None


def _assemble(entry: Action, v: dict[str, Any], origin: str) -> PlanItem:
    """Shape checked values into an item as the catalogue says; raises _Bad for conditions
    across fields (the action's own rule in `_RULES`, if it has one)."""
    device: dict[str, Any] | None = None
    if entry.device == "udi" and "pid" in v and "sn" in v:
        device = {"hostname": v.get("hostname"), "udi": {"pid": v["pid"], "sn": v["sn"]}}
    elif entry.device == "mac":
        device = {"mac": v["mac"]}
    params: dict[str, Any] = {}
    for plan_field in entry.fields:
        if plan_field.target == "params" and plan_field.name in v:
            params[entry.param_of(plan_field)] = v[plan_field.name]
    for name, default in entry.defaults.items():
        params.setdefault(name, default)
    item = PlanItem(entry.name, device, params, (), origin)
    rule = _RULES.get(entry.name)
    if rule is not None:
        rule(item, v)
    return item


def _usage_report(item: PlanItem, v: dict[str, Any]) -> None:
    # The device is the one the report is about, not a plan column.
    rum: _Rum = v["rum_file"]
    item.device = {
        "hostname": rum.rum.hostname,
        "udi": {"pid": rum.rum.udi[0], "sn": rum.rum.udi[1]},
    }
    item.attachments, item.attachment_sha256 = (Path(rum.rum.path),), (rum.sha256,)


def _slr_reservation(item: PlanItem, v: dict[str, Any]) -> None:
    item.device = _slr_device(v)
    if item.params["reservation_type"] == "SPECIFIC" and "entitlements" not in v:
        raise _Bad("cisco.slr_reserve needs entitlements (unless reservation_type is UNIVERSAL)")


def _regkey_activation(item: PlanItem, v: dict[str, Any]) -> None:
    # The dossier travels as text in params: it is short, and signing items.json then covers
    # it without a separate attachment.
    if v["mode"] == "manual" and "dossier_file" not in v:
        raise _Bad("bigiq.regkey_activate with mode manual needs dossier_file")
    if v["mode"] != "manual" and "dossier_file" in v:
        raise _Bad("dossier_file is only for mode manual")


# Conditions across fields, and devices that come from something else than plan columns. An
# action whose fields map one to one onto its item (most of them) needs no rule.
_RULES: dict[str, Callable[[PlanItem, dict[str, Any]], None]] = {
    "cisco.report_usage": _usage_report,
    "cisco.slr_reserve": _slr_reservation,
    "bigiq.regkey_activate": _regkey_activation,
}


def _slr_device(v: dict[str, Any]) -> dict[str, Any]:
    embedded = slr_request_udi(v["request_code"])
    if ("pid" in v) != ("sn" in v):
        raise _Bad("cisco.slr_reserve needs both pid and sn, or neither")
    if "pid" in v:
        if embedded is not None and embedded != (v["pid"], v["sn"]):
            raise _Bad(f"request_code names {embedded[0]}:{embedded[1]}, not {v['pid']}:{v['sn']}")
        pid, sn = v["pid"], v["sn"]
    elif embedded is None:
        raise _Bad("cisco.slr_reserve needs pid and sn (the request code does not name the device)")
    else:
        pid, sn = embedded
    return {"hostname": v.get("hostname"), "udi": {"pid": pid, "sn": sn}}


# --- CSV and JSON plans --------------------------------------------------------------------------


def _csv_rows(text: str, source: str, problems: list[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (origin, {column: cell}) for each data row; header problems go to `problems`."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str | None] | None = None
    line = 0
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in cells) or cells[0].lstrip().startswith("#"):
                continue  # blank rows and `#` comment rows
            if header is None:
                header = _csv_header(cells, f"{source}:{start}", problems)
                if header is None:
                    return
                continue
            origin = f"{source}:{start}"
            fields: dict[str, str] = {}
            for index, cell in enumerate(cells):
                name = header[index] if index < len(header) else ""
                if name:
                    fields[name] = cell
                elif name == "" and cell.strip():
                    # A cell under no column name (past the header's end, or under an empty
                    # header cell) would be lost silently.
                    problems.append(
                        f"{origin}: cell {index + 1} ({cell.strip()!r}) has no column name "
                        f"in the header"
                    )
                    break
            yield origin, fields
    except csv.Error as e:
        problems.append(f"{source}:{reader.line_num}: not valid CSV ({e})")


def _csv_header(cells: list[str], origin: str, problems: list[str]) -> list[str | None] | None:
    """Column names by position, or None if rows can't be read.

    A name is None for a column already reported (unknown, repeated) and "" for an unnamed one.
    """
    names = [cell.strip().lower() for cell in cells]
    header: list[str | None] = []
    known = set(CSV_COLUMNS)
    for name in names:
        if name in known and name in header:
            problems.append(f"{origin}: column {name!r} appears twice")
            header.append(None)
        elif name in known:
            header.append(name)
        elif name:
            problems.append(f"{origin}: unknown column {name!r}")
            header.append(None)
        else:
            header.append("")
    if "action" not in header:
        hint = ""
        if len(cells) == 1 and ";" in cells[0]:
            hint = " (the file looks ';'-separated; save it as comma-separated CSV)"
        problems.append(f"{origin}: the header has no 'action' column{hint}")
        return None
    return header


_WS = re.compile(r"[ \t\n\r]*")


def _json_item_lines(text: str, count: int) -> list[int]:
    """The line on which each element of the top-level "items" array starts.

    json.loads keeps no positions, so the top-level object is walked with raw_decode. Falls
    back to line 1 for every item if the layout is not what it expects.
    """
    decoder = json.JSONDecoder()
    try:
        pos = _skip(text, 0)
        if text[pos] != "{":
            raise ValueError("not an object")
        pos = _skip(text, pos + 1)
        while text[pos] != "}":
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, _skip(text, pos) + 1)  # past the ':'
            if key == "items" and text[pos] == "[":
                lines: list[int] = []
                line, last = 1, 0
                pos = _skip(text, pos + 1)
                while text[pos] != "]":
                    line += text.count("\n", last, pos)
                    last = pos
                    lines.append(line)
                    _, pos = decoder.raw_decode(text, pos)
                    pos = _skip(text, pos)
                    if text[pos] == ",":
                        pos = _skip(text, pos + 1)
                if len(lines) == count:
                    return lines
                break
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos] == ",":
                pos = _skip(text, pos + 1)
    except (ValueError, IndexError):
        pass
    return [1] * count


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _json_rows(text: str, source: str, problems: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        document = json.loads(text)
    except ValueError as e:
        line = getattr(e, "lineno", 1)
        problems.append(f"{source}:{line}: not valid JSON ({getattr(e, 'msg', e)})")
        return
    except RecursionError:
        problems.append(f"{source}:1: the JSON is nested too deeply to be a plan")
        return
    if isinstance(document, dict) and document.get("items") == []:
        problems.append(f"{source}:1: the plan has no items")
        return
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

    validator = Draft202012Validator(load_schema("plan"))
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.path])
    raw_items = document.get("items") if isinstance(document, dict) else None
    count = len(raw_items) if isinstance(raw_items, list) else 0
    lines = _json_item_lines(text, count) if count else []
    bad_items: set[int] = set()
    for error in errors:
        path = list(error.path)
        if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
            index = path[1]
            bad_items.add(index)
            at = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path[2:])
            problems.append(f"{source}:{lines[index]}: items[{index}]{at}: {error.message}")
        else:
            where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path)
            problems.append(f"{source}:1: {where.lstrip('.') or 'plan'}: {error.message}")
    if not isinstance(raw_items, list):
        return
    for index, item in enumerate(raw_items):
        if index not in bad_items and isinstance(item, dict):
            yield f"{source}:{lines[index]}", dict(item)


def _is_json(path: Path, text: str) -> bool:
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() == ".csv":
        return False
    return text.lstrip().startswith("{")


def load_plan(path: Path) -> list[PlanItem]:
    """Load a CSV or JSON plan file into items.

    JSON is chosen by a `.json` suffix (or, for other suffixes than `.csv`, a leading `{`).
    Relative `rum_file` and `dossier_file` paths resolve against the plan's folder. Items that
    repeat an earlier item (see `check_duplicates`) are problems too.

    Args:
        path: the plan file; its path as given names it in messages and origins.

    Raises:
        InputError: the file is missing or unreadable.
        PlanError: anything wrong with the content; `problems` lists every one, each starting
            `plan.csv:LINE:`.

    Returns:
        The items, in plan order, each with `origin` = `<path>:<line>`.
    """
    source = str(path)
    data = read_bytes(path)
    if not data.strip():
        raise PlanError(f"{source}: the plan is empty", problems=[f"{source}:1: the plan is empty"])
    try:
        text = decode_capture(data, source=source)
    except InputError as e:
        raise PlanError(e.message, problems=[e.message], hint=e.hint) from None
    problems: list[str] = []
    rows: Iterable[tuple[str, dict[str, Any]]] = (
        _json_rows(text, source, problems)
        if _is_json(path, text)
        else _csv_rows(text, source, problems)
    )
    ctx = _Ctx(path.parent)
    items: list[PlanItem] = []
    seen_rows = False
    for origin, fields in rows:
        seen_rows = True
        action_value = fields.pop("action", None)
        action = action_value.strip().lower() if isinstance(action_value, str) else ""
        if not action:
            problems.append(f"{origin}: no action")
            continue
        if action not in ACTIONS:
            problems.append(
                f"{origin}: unknown action {action_value!r} (known: {', '.join(ACTIONS)})"
            )
            continue
        item = _build(action, fields, origin, ctx, problems)
        if item is not None:
            items.append(item)
    if not seen_rows and not problems:
        problems.append(f"{source}:1: the plan has no items")
    with DuplicateCheck() as duplicates:
        for item in items:
            duplicates.add(item)
        problems.extend(duplicates.problems())
    if problems:
        raise _plan_error(source, problems)
    return items


def _plan_error(source: str, problems: list[str]) -> PlanError:
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    return PlanError(
        f"{source}: {count} {noun} in the plan; the first: {problems[0]}",
        problems=problems,
        hint="Fix every listed row and run the command again; nothing was packed.",
    )


# --- duplicates ----------------------------------------------------------------------------------


def _sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    return digest.hexdigest()


def _duplicate_key(item: PlanItem, device: str | None = None) -> str:
    """What makes two items of one action the same request (the catalogue's `dedupe_by`).

    `device` may give the item's device key when the caller has it already.
    """
    by = ACTIONS[item.action].dedupe_by
    if by == "device":
        return str(device if device is not None else device_key({"device": item.device}))
    if by == "files":
        digests = item.attachment_sha256 or tuple(_sha256_file(p) for p in item.attachments)
        return ",".join(digests)
    if by != "params":
        return str(item.params[by])
    return json.dumps(item.params, sort_keys=True, default=str)


def _described(action: str, key: str) -> str:
    """How a repeat is named in the problem: `for PID:SN`, `of KEY`, …"""
    by = ACTIONS[action].dedupe_by
    if by == "device":
        return f"for {key}"
    if by == "files":
        return "with the same RUM file content"
    if by != "params":
        return f"of {key}"
    return "with the same parameters"


class DuplicateCheck:
    """`check_duplicates` for items that stream past one at a time.

    It holds a hash per item rather than the items. The key and origin of every item go to a
    `RecordSpool` on disk; only when a hash repeats is the spool read back, to confirm the
    repeat and name both places. Use as a context manager, or call `close()`.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._repeated: set[int] = set()
        self._spool = RecordSpool()

    def add(self, item: PlanItem, *, device: str | None = None) -> None:
        """Note one item; `device` may give its device key (`device_key`) if known.

        Raises:
            InputError: an attachment whose hash was not known could not be read.
        """
        key = _duplicate_key(item, device)
        marker = hash((item.action, key))
        if marker in self._seen:
            self._repeated.add(marker)
        else:
            self._seen.add(marker)
        self._spool.append((item.action, key, item.origin))

    def problems(self) -> list[str]:
        """One problem per repeated item, naming it and the first of its kind, in item order."""
        if not self._repeated:
            return []
        first: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        for action, key, origin in self._spool:
            if hash((action, key)) not in self._repeated:
                continue
            earlier = first.get((action, key))
            if earlier is None:
                first[(action, key)] = origin
                continue
            problems.append(f"{origin}: {action} {_described(action, key)} repeats {earlier}")
        return problems

    def check(self) -> None:
        """Raise for the repeats noted so far, as `check_duplicates` does.

        Raises:
            PlanError: one problem per repeated item, naming both origins.
        """
        problems = self.problems()
        if problems:
            count = len(problems)
            raise PlanError(
                f"{count} duplicate item{'s' if count != 1 else ''}; the first: {problems[0]}",
                problems=problems,
                hint="Remove the repeated rows or files; each request may appear once per bundle.",
            )

    def close(self) -> None:
        """Drop what was noted."""
        self._spool.close()

    def __enter__(self) -> DuplicateCheck:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_duplicates(items: Iterable[PlanItem]) -> None:
    """Refuse the same request twice: same action and device, RUM content, or query.

    Devices are compared by UDI (`PID:SN`) or MAC; usage reports by the content of their files;
    regkey activations by key; queries by their parameters.

    Raises:
        PlanError: one problem per repeated item, naming both origins.
        InputError: an attachment whose hash was not known could not be read.
    """
    with DuplicateCheck() as duplicates:
        for item in items:
            duplicates.add(item)
        duplicates.check()
