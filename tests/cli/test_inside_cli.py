"""`airgap inside pack | import | status` through the real command."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airgap.bundle import PayloadFile, WrittenBundle, build_bundle
from airgap.emulators.device import write_device
from airgap.home import Home
from airgap.units import utc_now

Airgap = Callable[..., subprocess.CompletedProcess[str]]
TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"


@pytest.fixture
def sites(
    make_home: Callable[..., Path], exchange_cards: Callable[[Path, Path], None]
) -> tuple[Path, Path]:
    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    return inside, outside


@pytest.fixture
def captures(tmp_path: Path) -> tuple[Path, Path]:
    raw, udi, rum = tmp_path / "raw", tmp_path / "udi", tmp_path / "rum"
    udi.mkdir()
    rum.mkdir()
    for n in range(2):
        files = write_device(pid="C9300-24T", sn=f"FOC{n:08d}", hostname=f"sw-{n}", out=raw)
        shutil.move(files.udi, udi / files.udi.name)
        shutil.move(files.rum, rum / files.rum.name)
    return udi, rum


def respond(
    outside: Path, request: dict[str, Any], statuses: dict[str, str], out: Path
) -> WrittenBundle:
    """A response from the outside home: `statuses` maps item ids to their status."""
    home = Home.open(outside)
    names = {"cisco.reserve": "lic.txt", "cisco.report_usage": "ack.xml"}
    items, files = [], []
    for item_id, status in statuses.items():
        action = request["actions"][item_id]
        members = []
        if status == "ok":
            member = f"files/{item_id}/{names[action]}"
            files.append(PayloadFile(member, f"code for {item_id}\n".encode()))
            members.append(member)
        items.append(
            {
                "id": item_id,
                "request_item": item_id,
                "action": action,
                "status": status,
                "result": {},
                "error": None
                if status == "ok"
                else {"code": "E_VENDOR", "message": f"Cisco said no to {item_id}"},
                "files": members,
                "vendor_refs": {},
            }
        )
    now = utc_now()
    return build_bundle(
        out,
        kind="response",
        items=items,
        files=files,
        signers=[home.signer()],
        sequence=1,
        created=now,
        expires=now + timedelta(days=1),
        audit_head=home.audit().head(),
        in_reply_to={
            "bundle_id": request["bundle_id"],
            "manifest_sha256": request["manifest_sha256"],
        },
    )


def test_pack_import_status_round_trip(
    airgap: Airgap, sites: tuple[Path, Path], captures: tuple[Path, Path], tmp_path: Path
) -> None:
    inside, outside = sites
    udi, rum = captures
    request_file = tmp_path / "req.airgap"
    packed = airgap(
        "--home", str(inside), "--json", "inside", "pack", "--udi", str(udi),
        "--entitlement", f"{TAG}:1", "--rum", str(rum), "-o", str(request_file), "--compress",
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    document = json.loads(packed.stdout)
    assert document["ok"] is True
    assert document["by_action"] == {"cisco.report_usage": 2, "cisco.reserve": 2}
    assert document["by_vendor"] == {"cisco": 4}
    assert document["sequence"] == 1
    verified = airgap("--home", str(outside), "verify", str(request_file))
    assert verified.returncode == 0, verified.stderr

    status = airgap("--home", str(inside), "--json", "inside", "status")
    [entry] = json.loads(status.stdout)["requests"]
    assert entry["bundle_id"] == document["bundle_id"]
    assert entry["counts"]["outstanding"] == 4
    request = {
        **document,
        "actions": {item["id"]: item["action"] for item in entry["items"]},
    }

    partial = respond(
        outside,
        request,
        {"i00001": "ok", "i00002": "failed", "i00003": "ok", "i00004": "pending"},
        tmp_path / "resp-1.airgap",
    )
    out = tmp_path / "licences"
    first = airgap("--home", str(inside), "inside", "import", str(partial.path), "--out", str(out))
    assert first.returncode == 4, first.stderr
    assert "Cisco said no to i00002" in first.stdout
    folder = out / document["bundle_id"][:8]
    assert (folder / "cisco/sw-0/lic.txt").read_text() == "code for i00001\n"
    assert (folder / "cisco/sw-0/ack-1.xml").read_text() == "code for i00003\n"
    instructions = (folder / "INSTRUCTIONS.md").read_text()
    assert "license smart import flash:lic.txt" in instructions
    assert "Cisco said no to i00002" in instructions

    again = airgap(
        "--home", str(inside), "--json", "inside", "import", str(partial.path), "--out", str(out)
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_imported"] is True

    human_status = airgap("--home", str(inside), "inside", "status")
    assert human_status.returncode == 0
    assert document["bundle_id"][:8] in human_status.stdout
    assert "Cisco said no to i00002" in human_status.stdout

    rest = respond(
        outside,
        request,
        {"i00001": "ok", "i00002": "failed", "i00003": "ok", "i00004": "ok"},
        tmp_path / "resp-2.airgap",
    )
    second = airgap(
        "--home", str(inside), "--json", "inside", "import", str(rest.path), "--out", str(out)
    )
    assert second.returncode == 4  # i00002 stays failed
    assert json.loads(second.stdout)["counts"]["ok"] == 3
    assert (folder / "cisco/sw-1/ack-1.xml").read_text() == "code for i00004\n"


def test_import_of_a_foreign_response_exits_3(
    airgap: Airgap, sites: tuple[Path, Path], tmp_path: Path
) -> None:
    import uuid

    inside, outside = sites
    request = {
        "bundle_id": str(uuid.uuid4()),
        "manifest_sha256": "0" * 64,
        "actions": {"i00001": "cisco.reserve"},
    }
    response = respond(outside, request, {"i00001": "ok"}, tmp_path / "resp.airgap")
    out = tmp_path / "out"
    result = airgap(
        "--home", str(inside), "--json", "inside", "import", str(response.path), "--out", str(out)
    )
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "E_UNKNOWN_REQUEST"
    assert not out.exists()


def test_a_bad_plan_lists_every_problem_and_writes_nothing(
    cli_runner: Callable[..., Any], sites: tuple[Path, Path], tmp_path: Path
) -> None:
    inside, _ = sites
    plan = tmp_path / "plan.csv"
    plan.write_text("action,pid,sn\ncisco.reserve,C9300-24T,\nbogus,,\n")
    output = tmp_path / "req.airgap"
    result = cli_runner("--home", str(inside), "inside", "pack", str(plan), "-o", str(output))
    assert result.exit_code == 1, result.output
    assert "E_PLAN" in result.output
    assert f"{plan}:2" in result.output and f"{plan}:3" in result.output
    assert not output.exists()
    as_json = cli_runner(
        "--home", str(inside), "--json", "inside", "pack", str(plan), "-o", str(output)
    )
    document = json.loads(as_json.stdout)
    assert document["error"]["code"] == "E_PLAN"
    assert len(document["error"]["problems"]) >= 2


def test_pack_needs_inputs_and_an_output(
    cli_runner: Callable[..., Any], sites: tuple[Path, Path], tmp_path: Path
) -> None:
    inside, _ = sites
    missing_output = cli_runner("--home", str(inside), "inside", "pack", "plan.csv")
    assert missing_output.exit_code == 2
    nothing = cli_runner("--home", str(inside), "inside", "pack", "-o", str(tmp_path / "r"))
    assert nothing.exit_code == 1
    assert "nothing to pack" in nothing.output
    bad_expiry = cli_runner(
        "--home", str(inside), "inside", "pack", "--udi", str(tmp_path), "--entitlement", TAG,
        "--expires", "soon", "-o", str(tmp_path / "r"),
    )  # fmt: skip
    assert bad_expiry.exit_code == 1 and "E_CONFIG" in bad_expiry.output


def test_pack_refuses_an_existing_output(
    cli_runner: Callable[..., Any], sites: tuple[Path, Path], tmp_path: Path
) -> None:
    inside, _ = sites
    plan = tmp_path / "plan.csv"
    plan.write_text("action\nbigiq.assignments\n")
    output = tmp_path / "req.airgap"
    output.write_text("keep me")
    result = cli_runner("--home", str(inside), "inside", "pack", str(plan), "-o", str(output))
    assert result.exit_code == 1
    assert "already exists" in result.output and "-o" in result.output
    assert output.read_text() == "keep me"


def test_inside_commands_refuse_an_outside_home(
    cli_runner: Callable[..., Any], sites: tuple[Path, Path], tmp_path: Path
) -> None:
    _, outside = sites
    for args in (
        ["inside", "status"],
        ["inside", "import", str(tmp_path / "x.airgap")],
        ["inside", "pack", "--rum", str(tmp_path), "-o", str(tmp_path / "r.airgap")],
    ):
        result = cli_runner("--home", str(outside), "--json", *args)
        assert result.exit_code == 1, result.output
        assert json.loads(result.stdout)["error"]["code"] == "E_CONFIG"


def test_status_with_nothing_packed(
    cli_runner: Callable[..., Any], sites: tuple[Path, Path]
) -> None:
    inside, _ = sites
    result = cli_runner("--home", str(inside), "inside", "status")
    assert result.exit_code == 0
    assert "No outstanding requests." in result.output


UNWRAPPED_C9800 = Path(__file__).resolve().parents[1] / "data" / "rum" / "c9800-cl-unwrapped.xml"


def test_pack_of_an_unwrapped_c9800_report_keeps_its_payload_byte_for_byte(
    airgap: Airgap, sites: tuple[Path, Path], tmp_path: Path
) -> None:
    import tarfile

    inside, outside = sites
    rum = tmp_path / "rum"
    rum.mkdir()
    shutil.copy(UNWRAPPED_C9800, rum / UNWRAPPED_C9800.name)
    request_file = tmp_path / "req.airgap"
    packed = airgap(
        "--home", str(inside), "--json", "inside", "pack", "--rum", str(rum),
        "-o", str(request_file),
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    assert json.loads(packed.stdout)["by_action"] == {"cisco.report_usage": 1}
    assert airgap("--home", str(outside), "verify", str(request_file)).returncode == 0

    original = UNWRAPPED_C9800.read_bytes()
    # The signed payload, read straight from the sample without airgap's parser.
    cdata = original.decode().split("<![CDATA[", 1)[1].rsplit("]]>", 1)[0]
    expected_payload = json.loads(cdata)["payload"]
    with tarfile.open(request_file) as tar:
        items = json.loads(tar.extractfile("items.json").read())["items"]  # type: ignore[union-attr]
        [item] = items
        assert item["device"]["udi"] == {"pid": "C9800-CL-K9", "sn": "9K2XQ7TZ3RA"}
        [member] = item["files"]
        carried = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert carried == original
    from airgap.formats.rum import parse_rum_bytes

    [report] = parse_rum_bytes(carried, path=member).reports
    assert report.payload == expected_payload
    assert report.payload.encode() in carried.replace(b'\\"', b'"')
