"""The action catalogue is the one place an action is declared: its tables agree with every
consumer, the shipped schemas are its output, and a new action reaches plan, schema, processor,
importer and instructions from one entry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from airgap.home import Home
from airgap.inside import plan as plan_module
from airgap.inside.importer import import_response
from airgap.inside.pack import pack
from airgap.model import ACTIONS, CSV_COLUMNS, FIELDS, Action, DeviceGuide, registered
from airgap.model.schemas import GENERATED, render
from airgap.outside.process import ProcessOptions, process_request
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem
from airgap.schema import validate

REPO = Path(__file__).resolve().parents[3]


def test_every_plan_field_has_a_converter_and_every_action_known_fields() -> None:
    assert set(plan_module._CONVERTERS) == set(FIELDS)
    assert ("action", *FIELDS) == CSV_COLUMNS
    for entry in ACTIONS.values():
        assert set(entry.required) | set(entry.optional) <= set(FIELDS), entry.name
        assert entry.required_file is None or entry.required_file in entry.files, entry.name
        assert entry.numbered_file is None or entry.numbered_file in entry.files, entry.name
        assert not entry.query or entry.result_file, entry.name
        assert entry.guide.file is None or entry.guide.file in entry.files, entry.name


@pytest.mark.parametrize("folder", ["airgap/schemas", "schemas"])
@pytest.mark.parametrize("name", GENERATED)
def test_shipped_schemas_are_what_the_catalogue_builds(folder: str, name: str) -> None:
    path = REPO / folder / f"{name}.schema.json"
    assert path.read_text(encoding="utf-8") == render(name), (
        f"{path} is out of date: run `python -m airgap.model.schemas --write`"
    )


def test_top_level_schemas_are_the_package_schemas() -> None:
    package = {p.name: p.read_bytes() for p in (REPO / "airgap" / "schemas").glob("*.json")}
    public = {p.name: p.read_bytes() for p in (REPO / "schemas").glob("*.json")}
    assert public == package


# --- a throw-away action, declared once ---------------------------------------------------------

PING = Action(
    "cisco.ping_license",
    "A test action: ask Cisco to confirm a device's reservation, get a confirmation file back.",
    device="udi",
    required=("pid", "sn"),
    optional=("hostname", "virtual_account"),
    mutating=True,
    polled=False,
    files=("pong.txt",),
    required_file="pong.txt",
    guide=DeviceGuide(
        file="pong.txt",
        intro="Pong: `{path}`. On the device:",
        commands=("show file flash:{name}",),
    ),
)


class PingClient:
    """The one client method the new action needs (the Cisco client would get it)."""

    vendor: ClassVar[str] = "cisco"
    actions: ClassVar[frozenset[str]] = frozenset({PING.name})

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def start(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def submit(self, item: WorkItem) -> Outcome:
        self.submitted.append(item.id)
        assert item.udi is not None
        return Outcome.ok(
            {"udi": {"pid": item.udi[0], "sn": item.udi[1]}}, files={"pong.txt": b"pong\n"}
        )

    def poll(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Outcome:
        raise AssertionError("not polled")

    def reconcile(self, item: WorkItem, vendor_ref: Mapping[str, str]) -> Reconciled:
        return NOT_SUBMITTED


def test_a_new_action_declared_in_the_catalogue_flows_through_every_stage(
    make_home: Any, exchange_cards: Any, tmp_path: Path
) -> None:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    plan = tmp_path / "plan.csv"
    plan.write_text("action,hostname,pid,sn\ncisco.ping_license,sw-9,C9300-24T,FOC0000PING\n")
    client = PingClient()
    with registered(PING):
        # plan and request schema
        request = pack(
            Home.open(inside),
            plans=[plan],
            udi_dir=None,
            entitlements=[],
            rum_dir=None,
            returns_dir=None,
            output=tmp_path / "req.airgap",
        )
        assert request.by_action == {PING.name: 1} and request.by_vendor == {"cisco": 1}
        # processor: the response schema takes the action and the file it declares
        processed = process_request(
            Home.open(outside),
            request.path,
            ProcessOptions(output=tmp_path / "resp.airgap", rate=0),
            client_factory=lambda *_: client,
        )
        assert client.submitted == ["i00001"] and processed.counts == {"ok": 1}
        # importer and instructions
        imported = import_response(
            Home.open(inside), tmp_path / "resp.airgap", out=tmp_path / "out"
        )
        device_dir = imported.out_dir / "cisco" / "sw-9"
        assert (device_dir / "pong.txt").read_bytes() == b"pong\n"
        guide = (imported.out_dir / "INSTRUCTIONS.md").read_text()
        assert "Pong: `cisco/sw-9/pong.txt`. On the device:" in guide
        assert "show file flash:pong.txt" in guide
    # Outside the block the action is gone again: the schema refuses it.
    item = {"id": "i1", "action": PING.name, "device": None, "params": {}, "files": []}
    with pytest.raises(Exception, match="ping_license"):
        validate("request-items", {"items": [item]}, what="items.json")


def test_registering_a_clash_or_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="already"), registered(ACTIONS["cisco.reserve"]):
        pass
    odd = Action("cisco.odd", "odd", device="none", required=("no_such_field",))
    with pytest.raises(ValueError, match="no_such_field"), registered(odd):
        pass


def test_generated_request_schema_lists_each_action_once() -> None:
    schema = json.loads(render("request-items"))
    consts = [c["if"]["properties"]["action"]["const"] for c in schema["$defs"]["item"]["allOf"]]
    assert consts == list(ACTIONS)
