"""`import_response`: responses built with the bundle library and an outside test key."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airgap.bundle import PayloadFile, WrittenBundle, build_bundle
from airgap.emulators.device import write_device
from airgap.errors import (
    ConfigError,
    HashMismatch,
    Replay,
    UnknownRequest,
    UntrustedKey,
    WrongRole,
)
from airgap.home import Home
from airgap.inside.importer import ResponseMismatch, folders, import_response, inside_status
from airgap.inside.pack import PackResult, pack
from airgap.inside.state import InsideState
from airgap.units import utc_now

MakePlan = Callable[..., Path]

TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
CODE = "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"
SLR = "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C"
REGKEY = "Q4821-07395-61827-30546-9172843"

# What an `ok` answer carries per action (the outside's file names).
OK_FILES: dict[str, dict[str, bytes]] = {
    "cisco.reserve": {"lic.txt": b"<smartLicense>authorization</smartLicense>\n"},
    "cisco.report_usage": {"ack.xml": b"<smartLicense>ack</smartLicense>\n"},
    "cisco.return": {"return.json": b'{"status": "RETURNED"}\n'},
    "cisco.slr_reserve": {"slr-auth.txt": b"<specificPLR>code</specificPLR>\n"},
    "bigiq.assign": {"bigip.license": b"Auth vers : 5b\nRegistration Key : X\n"},
    "bigiq.revoke": {"revoke.json": b'{"status": "FINISHED"}\n'},
    "bigiq.regkey_activate": {"license.txt": b"Auth vers : 5b\n", "eula.txt": b"EULA\n"},
    "cisco.usage_summary": {"result.json": b'{"licenses": []}\n'},
}


@dataclass
class World:
    inside: Home
    outside: Home
    request: PackResult
    items: list[dict[str, Any]]
    tmp: Path
    out: Path
    sequence: int = 0

    def item(self, item_id: str) -> dict[str, Any]:
        return next(i for i in self.items if i["id"] == item_id)

    def answer(
        self,
        item_id: str,
        status: str = "ok",
        *,
        files: dict[str, bytes] | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
        action: str | None = None,
        request_item: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        action = action or self.item(item_id)["action"]
        if files is None:
            files = OK_FILES[action] if status == "ok" else {}
        if error is None and status != "ok":
            error = {"code": "E_VENDOR", "message": f"{item_id} did not work: reason «x»"}
        members = {f"files/{item_id}/{name}": data for name, data in files.items()}
        item = {
            "id": item_id,
            "request_item": request_item or item_id,
            "action": action,
            "status": status,
            "result": result or {},
            "error": error,
            "files": sorted(members),
            "vendor_refs": {"poll_id": "773126444402795033"},
        }
        return item, members

    def respond(
        self,
        answers: list[tuple[dict[str, Any], dict[str, bytes]]],
        *,
        name: str | None = None,
        in_reply_to: dict[str, str] | None = None,
        signer: Home | None = None,
        kind: str = "response",
    ) -> WrittenBundle:
        self.sequence += 1
        producer = signer or self.outside
        now = utc_now()
        files = [PayloadFile(p, d) for _, members in answers for p, d in members.items()]
        return build_bundle(
            self.tmp / (name or f"resp-{self.sequence}.airgap"),
            kind=kind,
            items=[item for item, _ in answers],
            files=files,
            signers=[producer.signer()],
            sequence=self.sequence,
            created=now,
            expires=now + timedelta(days=7),
            audit_head=producer.audit().head(),
            in_reply_to=in_reply_to
            or {
                "bundle_id": self.request.bundle_id,
                "manifest_sha256": self.request.manifest_sha256,
            },
        )

    def reply_to(self) -> dict[str, str]:
        return {
            "bundle_id": self.request.bundle_id,
            "manifest_sha256": self.request.manifest_sha256,
        }

    def all_ok(self) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
        return [self.answer(i["id"]) for i in self.items]

    def run(self, path: Path) -> Any:
        return import_response(self.inside, path, out=self.out)

    @property
    def request_dir(self) -> Path:
        return self.out / self.request.bundle_id[:8]


@pytest.fixture
def world(
    make_home: Callable[..., Path],
    exchange_cards: Callable[[Path, Path], None],
    make_plan: MakePlan,
    tmp_path: Path,
) -> World:
    inside_path, outside_path = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside_path, outside_path)
    inside = Home.open(inside_path)
    files = write_device(pid="C9300-24T", sn="FOC00000003", hostname="sw-3", out=tmp_path / "dev")
    plan = make_plan(
        [
            {"action": "cisco.reserve", "hostname": "sw-1", "pid": "C9300-24T", "sn": "FOC1",
             "entitlements": TAG},
            {"action": "cisco.reserve", "hostname": "sw-2", "pid": "C9300-24T", "sn": "FOC2",
             "entitlements": TAG},
            {"action": "cisco.report_usage", "rum_file": str(files.rum)},
            {"action": "cisco.return", "hostname": "sw-2", "pid": "C9300-24T", "sn": "FOC2",
             "return_code": CODE},
            {"action": "cisco.slr_reserve", "request_code": SLR, "entitlements": "HSEC:1"},
            {"action": "bigiq.assign", "mac": "52:54:00:aa:bb:cc", "pool": "p",
             "hypervisor": "kvm"},
            {"action": "bigiq.revoke", "mac": "52:54:00:aa:bb:dd", "pool": "p"},
            {"action": "bigiq.regkey_activate", "pool": "demo-regkey", "regkey": REGKEY,
             "mode": "automatic", "accept_eula": "yes"},
            {"action": "cisco.usage_summary", "tags": TAG},
        ]
    )  # fmt: skip
    request = pack(
        inside,
        plans=[plan],
        udi_dir=None,
        entitlements=[],
        rum_dir=None,
        returns_dir=None,
        output=tmp_path / "req.airgap",
    )
    with InsideState(inside.paths.state_db) as state:
        record = state.request(request.bundle_id)
        assert record is not None
        items = record.items
    return World(inside, Home.open(outside_path), request, items, tmp_path, tmp_path / "out")


def files_under(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def last_audit(home: Home) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(home.paths.audit_log.read_text().splitlines()[-1])
    return entry


def test_complete_response_writes_every_output(world: World) -> None:
    response = world.respond(world.all_ok())
    result = world.run(response.path)
    assert not result.partial and not result.already_imported
    assert result.counts["ok"] == 9
    assert result.out_dir == world.request_dir.absolute()
    written = files_under(world.request_dir)
    assert written["cisco/sw-1/lic.txt"] == OK_FILES["cisco.reserve"]["lic.txt"]
    assert written["cisco/sw-2/lic.txt"] == OK_FILES["cisco.reserve"]["lic.txt"]
    assert written["cisco/sw-3/ack-1.xml"] == OK_FILES["cisco.report_usage"]["ack.xml"]
    assert written["cisco/sw-2/return.json"] == OK_FILES["cisco.return"]["return.json"]
    assert written["cisco/C9300-24T_FOC2437L1ZK/slr-auth.txt"].startswith(b"<specificPLR>")
    assert written["bigiq/52-54-00-AA-BB-CC/bigip.license"].startswith(b"Auth vers")
    assert written["bigiq/52-54-00-AA-BB-DD/revoke.json"] == b'{"status": "FINISHED"}\n'
    assert written[f"bigiq/{REGKEY}/license.txt"] == b"Auth vers : 5b\n"
    assert written[f"bigiq/{REGKEY}/eula.txt"] == b"EULA\n"
    assert written["queries/i00009.json"] == b'{"licenses": []}\n'
    assert set(written) >= {"INSTRUCTIONS.md", "summary.json"}
    summary = json.loads(written["summary.json"])
    assert summary["complete"] is True
    assert summary["counts"]["ok"] == 9
    assert summary["request"]["bundle_id"] == world.request.bundle_id
    assert [i["status"] for i in summary["items"]] == ["ok"] * 9
    with InsideState(world.inside.paths.state_db) as state:
        assert state.request(world.request.bundle_id).status == "complete"  # type: ignore[union-attr]
        recorded = state.response(response.manifest.bundle_id)
        assert recorded is not None and recorded.manifest_sha256 == response.manifest_sha256
        assert {r.response_id for r in state.items(world.request.bundle_id)} == {
            response.manifest.bundle_id
        }
    entry = last_audit(world.inside)
    assert entry["event"] == "import"
    assert entry["bundle_id"] == response.manifest.bundle_id
    assert entry["manifest_sha256"] == response.manifest_sha256
    assert entry["details"]["request_id"] == world.request.bundle_id
    assert entry["details"]["producer_audit_head"] == response.manifest.audit_head
    assert entry["details"]["counts"]["ok"] == 9


def test_instructions_hold_the_exact_device_commands(world: World) -> None:
    world.run(world.respond(world.all_ok()).path)
    text = (world.request_dir / "INSTRUCTIONS.md").read_text()
    for line in (
        "copy usbflash0:lic.txt flash:",
        "license smart import flash:lic.txt",
        "copy usbflash0:ack-1.xml flash:",
        "license smart import flash:ack-1.xml",
        "license smart reservation install file flash:slr-auth.txt",
        "/config/bigip.license",
        "reloadlic",
        "`cisco/sw-1/lic.txt`",
        "`queries/i00009.json`",
    ):
        assert line in text, line
    assert "Return confirmed" in text
    assert "Not done" not in text


def test_partial_response_reports_reasons_verbatim(world: World) -> None:
    answers = world.all_ok()
    answers[0] = world.answer(
        "i00001", "failed", error={"code": "FAILED", "message": "Insufficient licenses\n(1 of 0)"}
    )
    answers[5] = world.answer("i00006", "pending", error=None)
    answers[6] = world.answer(
        "i00007", "needs_attention", error={"code": "NEEDS_ATTENTION", "message": "check it"}
    )
    del answers[8]  # the query is not answered at all
    result = world.run(world.respond(answers).path)
    assert result.partial
    assert result.counts == {
        "ok": 5,
        "failed": 1,
        "pending": 1,
        "needs_attention": 1,
        "outstanding": 1,
    }
    written = files_under(world.request_dir)
    assert "cisco/sw-1/lic.txt" not in written
    assert "bigiq/52-54-00-AA-BB-CC/bigip.license" not in written
    text = written["INSTRUCTIONS.md"].decode()
    assert "> Insufficient licenses\n> (1 of 0)" in text
    assert "i00006 did not work: reason «x»" in text
    assert "> check it" in text
    assert "no answer yet" in text
    with InsideState(world.inside.paths.state_db) as state:
        assert state.request(world.request.bundle_id).status == "outstanding"  # type: ignore[union-attr]
        states = {r.item_id: r.status for r in state.items(world.request.bundle_id)}
    assert states["i00001"] == "failed" and states["i00009"] == "outstanding"


def test_importing_the_same_response_again_is_a_no_op(world: World) -> None:
    response = world.respond(world.all_ok())
    world.run(response.path)
    before = {p: p.stat().st_mtime_ns for p in world.request_dir.rglob("*")}
    audit_lines = len(world.inside.paths.audit_log.read_text().splitlines())
    again = world.run(response.path)
    assert again.already_imported
    assert again.counts["ok"] == 9
    assert {p: p.stat().st_mtime_ns for p in world.request_dir.rglob("*")} == before
    assert len(world.inside.paths.audit_log.read_text().splitlines()) == audit_lines


def test_a_later_response_fills_pending_items(world: World) -> None:
    first = world.all_ok()
    first[0] = world.answer("i00001", "pending", error=None)
    assert world.run(world.respond(first).path).partial
    assert not (world.request_dir / "cisco/sw-1/lic.txt").exists()
    # The outside re-emits every final item unchanged, and finishes the pending one.
    later = world.run(world.respond(world.all_ok()).path)
    assert not later.partial
    assert (world.request_dir / "cisco/sw-1/lic.txt").read_bytes() == OK_FILES["cisco.reserve"][
        "lic.txt"
    ]
    assert len(later.written) == 3  # lic.txt, INSTRUCTIONS.md and summary.json
    summary = json.loads((world.request_dir / "summary.json").read_text())
    assert len(summary["responses"]) == 2 and summary["complete"]


def test_an_older_response_imported_late_does_not_undo_final_items(world: World) -> None:
    older = world.all_ok()
    older[0] = world.answer("i00001", "pending", error=None)
    older_bundle = world.respond(older)
    world.run(world.respond(world.all_ok()).path)
    result = world.run(older_bundle.path)
    assert result.stale == ["i00001"]
    assert result.counts["ok"] == 9


def test_a_foreign_response_is_refused_and_nothing_is_written(world: World) -> None:
    response = world.respond(
        world.all_ok(), in_reply_to={"bundle_id": str(uuid.uuid4()), "manifest_sha256": "1" * 64}
    )
    with pytest.raises(UnknownRequest) as caught:
        world.run(response.path)
    assert caught.value.code == "E_UNKNOWN_REQUEST" and caught.value.exit_code == 3
    assert not world.out.exists()
    entry = last_audit(world.inside)
    assert (entry["event"], entry["details"]["code"]) == ("refusal", "E_UNKNOWN_REQUEST")


def test_a_response_to_another_manifest_of_the_same_id_is_refused(world: World) -> None:
    response = world.respond(
        world.all_ok(),
        in_reply_to={"bundle_id": world.request.bundle_id, "manifest_sha256": "2" * 64},
    )
    with pytest.raises(UnknownRequest, match="manifest"):
        world.run(response.path)
    assert not world.out.exists()


def test_a_tampered_response_is_refused_and_nothing_is_written(world: World) -> None:
    response = world.respond(world.all_ok())
    data = bytearray(response.path.read_bytes())
    at = data.index(b"<smartLicense>authorization")
    data[at + 1] ^= 0x20
    response.path.write_bytes(bytes(data))
    with pytest.raises(HashMismatch):
        world.run(response.path)
    assert not world.out.exists()
    assert last_audit(world.inside)["details"]["code"] == "E_HASH_MISMATCH"


def test_a_response_from_an_untrusted_outside_site_is_refused(
    world: World, make_home: Callable[..., Path]
) -> None:
    stranger = Home.open(make_home("outside", name="stranger"))
    response = world.respond(world.all_ok(), signer=stranger)
    with pytest.raises(UntrustedKey):
        world.run(response.path)
    assert not world.out.exists()
    assert last_audit(world.inside)["details"]["code"] == "E_UNTRUSTED_KEY"


def test_a_request_is_not_a_response(world: World) -> None:
    with pytest.raises(WrongRole):
        world.run(world.request.path)
    assert not world.out.exists()


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"result": {"udi": {"pid": "C9300-24T", "sn": "FOC2"}}}, "is about device"),
        ({"result": {"sudi": {"udi_pid": "C9300-24T", "udi_serial_number": "X"}}}, "device"),
        ({"action": "cisco.return", "files": {}}, "asked for cisco.reserve"),
        ({"request_item": "i99999"}, "not an item of request"),
        ({"files": {"bigip.license": b"x"}}, "expected files: lic.txt"),
        ({"files": {}}, "carries no lic.txt"),
    ],
)
def test_an_item_that_does_not_fit_its_request_item_is_refused(
    world: World, change: dict[str, Any], phrase: str
) -> None:
    answers = world.all_ok()
    answers[0] = world.answer("i00001", **change)
    with pytest.raises(ResponseMismatch, match=phrase) as caught:
        world.run(world.respond(answers).path)
    assert caught.value.code == "E_SCHEMA" and caught.value.exit_code == 3
    assert not world.out.exists()


def test_a_mac_in_a_confirmation_must_be_the_request_items(world: World) -> None:
    answers = world.all_ok()
    answers[6] = world.answer(
        "i00007", files={"revoke.json": b'{"macAddress": "52:54:00:AA:BB:CC"}'}
    )
    with pytest.raises(ResponseMismatch, match="52:54:00:AA:BB:CC"):
        world.run(world.respond(answers).path)


def test_a_regkey_result_must_name_the_requested_key(world: World) -> None:
    answers = world.all_ok()
    answers[7] = world.answer("i00008", result={"regkey": "A1234-56789-01234-56789-0123456"})
    with pytest.raises(ResponseMismatch, match="registration key"):
        world.run(world.respond(answers).path)
    answers[7] = world.answer("i00008", result={"regkey": REGKEY.lower()})
    answers[8] = world.answer("i00009", result={"mac": "52:54:00:AA:BB:EE"})  # a query: any
    assert not world.run(world.respond(answers).path).partial


def test_two_answers_for_one_request_item_are_refused(world: World) -> None:
    extra, _ = world.answer("i00001", "failed")
    answers = [*world.all_ok(), ({**extra, "id": "extra"}, {})]
    with pytest.raises(ResponseMismatch, match="both answer"):
        world.run(world.respond(answers).path)


def test_a_conflicting_final_result_is_refused(world: World) -> None:
    world.run(world.respond(world.all_ok()).path)
    before = files_under(world.request_dir)
    answers = world.all_ok()
    answers[0] = world.answer("i00001", "failed")
    with pytest.raises(Replay) as caught:
        world.run(world.respond(answers).path)
    assert caught.value.code == "E_REPLAY"
    answers[0] = world.answer("i00001", files={"lic.txt": b"another code\n"})
    with pytest.raises(Replay, match="already ok"):
        world.run(world.respond(answers).path)
    assert files_under(world.request_dir) == before


def test_a_different_existing_file_is_never_overwritten(world: World) -> None:
    target = world.request_dir / "cisco/sw-2/lic.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the operator's own file\n")
    with pytest.raises(ConfigError, match="already exists with different content") as caught:
        world.run(world.respond(world.all_ok()).path)
    assert caught.value.exit_code == 1
    assert files_under(world.request_dir) == {"cisco/sw-2/lic.txt": b"the operator's own file\n"}
    with InsideState(world.inside.paths.state_db) as state:
        assert state.item_counts(world.request.bundle_id)["outstanding"] == 9


def test_an_edited_instructions_file_is_not_replaced(world: World) -> None:
    first = world.all_ok()
    first[0] = world.answer("i00001", "pending", error=None)
    world.run(world.respond(first).path)
    notes = world.request_dir / "INSTRUCTIONS.md"
    notes.write_text(notes.read_text() + "\nmy notes\n")
    with pytest.raises(ConfigError, match=r"INSTRUCTIONS\.md"):
        world.run(world.respond(world.all_ok()).path)
    assert not (world.request_dir / "cisco/sw-1/lic.txt").exists()


def test_ha_members_sharing_a_hostname_get_their_own_folders() -> None:
    def reserve(n: int, sn: str) -> dict[str, Any]:
        return {
            "id": f"i{n:05d}",
            "action": "cisco.reserve",
            "device": {"hostname": "stack-1", "udi": {"pid": "C9300-48P", "sn": sn}},
            "params": {},
        }

    where = folders(
        [reserve(1, "A1"), reserve(2, "B2"), {**reserve(3, "A1"), "action": "cisco.return"}]
    )
    assert where == {
        "i00001": "cisco/stack-1_C9300-48P_A1",
        "i00002": "cisco/stack-1_C9300-48P_B2",
        "i00003": "cisco/stack-1_C9300-48P_A1",
    }


def test_status_lists_outstanding_requests_and_item_states(world: World) -> None:
    answers = world.all_ok()
    answers[1] = world.answer("i00002", "failed")
    answers[2] = world.answer("i00003", "pending")
    world.run(world.respond(answers).path)
    [entry] = inside_status(world.inside)["requests"]
    assert entry["bundle_id"] == world.request.bundle_id
    assert entry["status"] == "outstanding" and entry["expired"] is False
    assert (entry["counts"]["failed"], entry["counts"]["pending"], entry["counts"]["ok"]) == (
        1,
        1,
        7,
    )
    failed = [i for i in entry["items"] if i["status"] == "failed"]
    assert failed[0]["device"] == "C9300-24T:FOC2"
    assert failed[0]["error"]["message"].startswith("i00002 did not work")
    assert len(entry["responses"]) == 1
    # Once every item is final the request is complete and leaves the default listing.
    answers[2] = world.answer("i00003")
    world.run(world.respond(answers).path)
    assert inside_status(world.inside)["requests"] == []
    [done] = inside_status(world.inside, include_complete=True)["requests"]
    assert done["status"] == "complete" and len(done["responses"]) == 2


def test_import_refuses_an_outside_home(world: World) -> None:
    with pytest.raises(ConfigError, match="needs an inside home"):
        import_response(world.outside, world.request.path, out=world.out)


def test_output_files_are_written_atomically(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def watch(src: Any, dst: Any) -> None:
        seen.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watch)
    world.run(world.respond(world.all_ok()).path)
    assert {"lic.txt", "INSTRUCTIONS.md", "summary.json", "bigip.license"} <= set(seen)


def test_an_encrypted_compressed_response_is_imported(world: World) -> None:
    world.sequence += 1
    now = utc_now()
    answers = world.all_ok()
    response = build_bundle(
        world.tmp / "resp-sealed.airgap",
        kind="response",
        items=[item for item, _ in answers],
        files=[PayloadFile(p, d) for _, members in answers for p, d in members.items()],
        signers=[world.outside.signer()],
        sequence=world.sequence,
        created=now,
        expires=now + timedelta(days=1),
        audit_head=world.outside.audit().head(),
        in_reply_to=world.reply_to(),
        compress=True,
        encrypt_to=world.outside.recipients(),
    )
    assert response.path.read_bytes().startswith(b"age-encryption.org/v1")
    result = world.run(response.path)
    assert result.counts["ok"] == 9 and not result.partial


def test_an_output_folder_that_is_a_file_is_refused(world: World) -> None:
    world.out.mkdir()
    world.request_dir.write_text("not a folder")
    with pytest.raises(ConfigError, match="is not a folder"):
        world.run(world.respond(world.all_ok()).path)
    with InsideState(world.inside.paths.state_db) as state:
        assert state.item_counts(world.request.bundle_id)["outstanding"] == 9
