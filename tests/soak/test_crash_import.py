"""Crash loops (issue 8 item 4): `kill -9` at random points, then run again; nothing lost.

The inside importer: a response of many items with files is imported by `airgap inside import`
processes killed at random moments (while verifying, while writing the per-device files, after
recording), over and over, then imported once more. After that the outputs are complete and
agree with summary.json, INSTRUCTIONS.md and state.db, every item is final, no temporary file is
left behind and the audit log verifies with exactly one import entry per response. A later
response (finishing the items the first left pending) goes through the same loop.

The outside processor: a mixed Cisco + BIG-IQ batch, killed at least 20 times mid-run, then run
to the end: each device reserved, reported or assigned exactly once at its vendor.

Sizes: the `ci` cases run by default; the `soak` cases only with `-m soak`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import airgap_command, run_airgap
from soak.test_soak import (
    audit_events,
    audit_verify,
    emulators,
    import_response,
    mac,
    pack,
    process,
    sites,
    udi_of,
    write_plan,
)

from airgap.audit import AuditLog
from airgap.bundle import PayloadFile, build_bundle, open_bundle
from airgap.emulators.device import return_code_for, write_device
from airgap.home import Home
from airgap.inside.state import InsideState
from airgap.units import utc_now

__all__ = ["emulators", "sites"]  # fixtures shared with test_soak

RESERVE_TAG = "regid.2017-03.com.cisco.advantagek9"
REPORTS = frozenset({"INSTRUCTIONS.md", "summary.json"})
FILE_FOR = {
    "cisco.reserve": "lic.txt",
    "cisco.report_usage": "ack.xml",
    "cisco.return": "return.json",
    "bigiq.assign": "bigip.license",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    env.update(extra)
    return env


# --- the inside importer -------------------------------------------------------------------------


def import_plan(total: int, rum_dir: Path) -> list[dict[str, str]]:
    """40% reservations, 20% usage reports, 10% returns, 30% BIG-IQ assignments."""
    rows: list[dict[str, str]] = []
    for n in range(total):
        kind = n % 10
        if kind < 4:
            rows.append(
                {
                    "action": "cisco.reserve",
                    "hostname": f"sw-{n}",
                    "pid": "C9300-24T",
                    "sn": f"FOC{n:08d}",
                    "entitlements": f"{RESERVE_TAG}:1",
                }
            )
        elif kind < 6:
            files = write_device(
                pid="C9300-24T", sn=f"FXS{n:08d}", hostname=f"acc-{n}", out=rum_dir
            )
            rows.append({"action": "cisco.report_usage", "rum_file": str(files.rum)})
        elif kind < 7:
            rows.append(
                {
                    "action": "cisco.return",
                    "hostname": f"ret-{n}",
                    "pid": "C9300-24T",
                    "sn": f"RET{n:08d}",
                    "return_code": return_code_for("C9300-24T", f"RET{n:08d}"),
                }
            )
        else:
            rows.append(
                {
                    "action": "bigiq.assign",
                    "mac": mac(n),
                    "pool": "demo-utility",
                    "hypervisor": "vmware",
                    "unit_of_measure": "yearly",
                }
            )
    return rows


@dataclass
class Answer:
    """What a synthetic response says about one request item."""

    status: str
    files: dict[str, bytes] = field(default_factory=dict)
    error: dict[str, str] | None = None


def answers_for(request_items: list[dict[str, Any]], *, finish: bool) -> dict[str, Answer]:
    """Every 20th item (offset 7) fails, every 20th (offset 13) is pending until `finish`."""
    answers: dict[str, Answer] = {}
    for index, item in enumerate(request_items):
        item_id, action = str(item["id"]), str(item["action"])
        if index % 20 == 7:
            answers[item_id] = Answer(
                "failed", error={"code": "E_VENDOR", "message": f"vendor refused {item_id}"}
            )
            continue
        if index % 20 == 13 and not finish:
            answers[item_id] = Answer(
                "pending", error={"code": "PENDING", "message": "still in progress at the vendor"}
            )
            continue
        name = FILE_FOR[action]
        if name == "return.json":
            udi = item["device"]["udi"]
            data = json.dumps({"udi": udi, "status": "RETURNED"}, sort_keys=True).encode()
        else:
            # Big enough that writing the outputs takes a while; unique per item.
            data = (f"{action} {item_id} " + "x" * 64 + "\n").encode() * 24
        answers[item_id] = Answer("ok", files={name: data})
    return answers


def synthetic_response(
    outside: Path,
    request: Path,
    output: Path,
    answers: dict[str, Answer],
    sequence: int,
) -> tuple[str, dict[str, Any]]:
    """A response signed by the outside home, as `outside process` would write it.

    Returns:
        The response's bundle id and the request's manifest summary.
    """
    home = Home.open(outside)
    with open_bundle(request, home.policy(expected_kind="request"), limits=home.limits()) as req:
        request_items = list(req.items)
        reply = {"bundle_id": req.manifest.bundle_id, "manifest_sha256": req.manifest_sha256}
    items: list[dict[str, Any]] = []
    files: list[PayloadFile] = []
    for item in request_items:
        item_id = str(item["id"])
        answer = answers[item_id]
        members = []
        for name, data in sorted(answer.files.items()):
            members.append(f"files/{item_id}/{name}")
            files.append(PayloadFile(members[-1], data))
        items.append(
            {
                "id": item_id,
                "request_item": item_id,
                "action": item["action"],
                "status": answer.status,
                "result": {"status_message": answer.status},
                "error": answer.error,
                "files": members,
                "vendor_refs": {},
            }
        )
    now = utc_now()
    written = build_bundle(
        output,
        kind="response",
        items=items,
        files=files,
        signers=[home.signer()],
        sequence=sequence,
        created=now,
        expires=now + timedelta(days=1),
        audit_head=home.audit().head(),
        in_reply_to=reply,
    )
    return written.manifest.bundle_id, {"items": request_items}


def output_files(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def temp_files(*roots: Path) -> list[str]:
    found: list[str] = []
    for root in roots:
        found += [str(p) for p in root.rglob(".*.tmp")]
    return found


@dataclass
class Loop:
    kills: int = 0
    before_writing: int = 0  # killed while starting or verifying: nothing new on disk
    while_writing: int = 0  # killed with outputs half written (files or temp files new)
    after_recording: int = 0  # killed after state.db recorded the import (audit, exit)
    completed: int = 0  # runs that finished before their kill came
    temps_seen: int = 0  # kills that left a temp file behind for the next run to deal with
    system_temp_dirs: int = 0  # airgap-* folders killed runs left in TMPDIR


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _after(deadline: float) -> Callable[[], bool]:
    return lambda: time.monotonic() >= deadline


def _changed(path: Path, was: int | None) -> Callable[[], bool]:
    return lambda: _stamp(path) != was


def crash_import_loop(
    inside: Path,
    response: Path,
    response_id: str,
    out: Path,
    request_dir: Path,
    tmpdir: Path,
    *,
    kills: int,
    verify_seconds: float,
    expected: set[str],
    rng: random.Random,
    loop: Loop,
) -> None:
    """Start `inside import`, kill it at a random point; `kills` times or until one finishes.

    Where the kill lands is chosen first and then watched for, so that it is not left to the
    timing of a busy machine: a fifth of the runs die while starting or verifying, most right
    after a randomly chosen output file appears (in the middle of writing the next one), one in
    ten just after summary.json is replaced (recording the import, logging it, exiting).
    """
    command = [
        *airgap_command(),
        "--home",
        str(inside),
        "inside",
        "import",
        str(response),
        "--out",
        str(out),
    ]
    env = clean_env(TMPDIR=str(tmpdir))
    summary = request_dir / "summary.json"
    for _ in range(kills):
        before = output_files(request_dir)
        missing = sorted(f for f in expected - before if f not in REPORTS)
        draw = rng.random()
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        ready: Callable[[], bool]
        if draw < 0.2:
            ready = _after(time.monotonic() + rng.uniform(0.1, 1.0) * verify_seconds)
            jitter = 0.0
        elif draw < 0.9 and missing:
            ready = (request_dir / missing[int(len(missing) * rng.random() ** 2)]).exists
            jitter = rng.uniform(0.0, 0.02)
        else:
            ready = _changed(summary, _stamp(summary))
            jitter = rng.uniform(0.0, 0.15)
        while proc.poll() is None and not ready():
            time.sleep(0.002)
        if proc.poll() is None and jitter:
            time.sleep(jitter)
        if proc.poll() is not None:
            assert proc.returncode in (0, 4), f"import exited {proc.returncode}"
            loop.completed += 1
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loop.kills += 1
        after = output_files(request_dir)
        with InsideState(inside / "state.db") as state:
            recorded = state.response(response_id) is not None
        left = temp_files(request_dir) if request_dir.exists() else []
        loop.temps_seen += bool(left)
        if recorded:  # only the audit entry may be missing: the next import's business
            loop.after_recording += 1
            return
        if after != before or left:
            loop.while_writing += 1
        else:
            loop.before_writing += 1


def check_outputs(
    inside: Path,
    request_id: str,
    request_items: list[dict[str, Any]],
    answers: dict[str, Answer],
    response_ids: list[str],
    request_dir: Path,
) -> dict[str, int]:
    """Outputs, summary.json, INSTRUCTIONS.md and state.db agree and are complete."""
    summary = json.loads((request_dir / "summary.json").read_text(encoding="utf-8"))
    instructions = (request_dir / "INSTRUCTIONS.md").read_text(encoding="utf-8")
    assert summary["request"]["bundle_id"] == request_id
    assert [r["bundle_id"] for r in summary["responses"]] == response_ids
    for rid in response_ids:
        assert rid in instructions
    assert [i["id"] for i in summary["items"]] == [str(i["id"]) for i in request_items]
    listed = {"summary.json", "INSTRUCTIONS.md"}
    counts: dict[str, int] = {}
    for shown in summary["items"]:
        answer = answers[shown["id"]]
        assert shown["status"] == answer.status, shown
        counts[answer.status] = counts.get(answer.status, 0) + 1
        if answer.status == "ok":
            assert len(shown["files"]) == 1, shown
            (rel,) = shown["files"]
            (data,) = answer.files.values()
            assert (request_dir / rel).read_bytes() == data, rel
            listed.add(rel)
            assert rel.rsplit("/", 2)[0] in instructions, rel
        else:
            assert shown["files"] == [] and shown["error"] == answer.error, shown
            assert answer.error is not None and answer.error["message"] in instructions
    assert summary["counts"] == {**summary["counts"], **counts}
    assert sum(summary["counts"].values()) == len(request_items)
    # Nothing on disk that the summary does not account for (no strays, no temp files).
    assert output_files(request_dir) == listed
    with InsideState(inside / "state.db") as state:
        records = {r.item_id: r for r in state.items(request_id)}
        assert {k: r.status for k, r in records.items()} == {
            k: a.status for k, a in answers.items()
        }
        imported = [r.bundle_id for r in state.responses(request_id)]
        assert imported == response_ids
        request = state.request(request_id)
        assert request is not None
        complete = all(a.status in ("ok", "failed") for a in answers.values())
        assert request.status == ("complete" if complete else "outstanding")
    return counts


IMPORT_SIZES = [
    pytest.param(300, 8, id="ci"),
    pytest.param(2000, 60, id="soak", marks=[pytest.mark.soak, pytest.mark.slow]),
]


@pytest.mark.parametrize(("total", "target_kills"), IMPORT_SIZES)
def test_inside_import_killed_at_random_points_then_complete_and_consistent(
    total: int, target_kills: int, sites, tmp_path: Path
) -> None:
    started = time.monotonic()
    inside, outside = sites
    rng = random.Random(int(os.environ.get("AIRGAP_CRASH_SEED", "8")))
    rows = import_plan(total, tmp_path / "rum")
    plan = write_plan(tmp_path / "plan.csv", rows)
    out = tmp_path / "licences"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    loop = Loop()
    rounds = 0
    while loop.kills < target_kills and rounds < 12:
        rounds += 1
        request = tmp_path / f"req-{rounds}.airgap"
        packed = pack(inside, plan, request)
        request_id = packed["bundle_id"]
        request_dir = out / request_id[:8]
        first_response, second_response = (
            tmp_path / f"resp-{rounds}a.airgap",
            tmp_path / f"resp-{rounds}b.airgap",
        )
        with open_bundle(request, Home.open(outside).policy(expected_kind="request")) as opened:
            request_items = list(opened.items)
        first = answers_for(request_items, finish=False)
        second = answers_for(request_items, finish=True)
        first_id, _ = synthetic_response(outside, request, first_response, first, 2 * rounds - 1)
        second_id, _ = synthetic_response(outside, request, second_response, second, 2 * rounds)

        # What an import writes and how long verifying takes: into a copy of the home.
        scratch = tmp_path / "scratch"
        shutil.copytree(inside, scratch / "home")
        expected: list[set[str]] = []
        seconds: list[float] = []
        for response in (first_response, second_response):
            clock = time.monotonic()
            code, _ = import_response(scratch / "home", response, scratch / "out")
            seconds.append(time.monotonic() - clock)
            assert code in (0, 4)
            expected.append(output_files(scratch / "out" / request_id[:8]))
        # The second writes few files: about what start-up and verifying take.
        full_seconds, noop_seconds = seconds
        shutil.rmtree(scratch)

        for response, response_id, answers, imported_ids, files, share in (
            (first_response, first_id, first, [first_id], expected[0], 0.7),
            (second_response, second_id, second, [first_id, second_id], expected[1], 1.0),
        ):
            crash_import_loop(
                inside,
                response,
                response_id,
                out,
                request_dir,
                tmpdir,
                kills=max(3, round((target_kills - loop.kills) * share)),
                verify_seconds=noop_seconds,
                expected=files,
                rng=rng,
                loop=loop,
            )
            code, document = import_response(inside, response, out)
            assert code in (0, 4), document
            assert document["out"] == str(request_dir.absolute())
            again_code, again = import_response(inside, response, out)
            assert again_code == 0 and again["already_imported"] is True, again
            counts = check_outputs(
                inside, request_id, request_items, answers, imported_ids, request_dir
            )
            assert output_files(request_dir) == files
        assert "pending" not in counts
    assert loop.kills >= target_kills, loop

    assert temp_files(out) == []
    # Killed runs leave the verified payload they were reading in TMPDIR (reported, not ours).
    loop.system_temp_dirs = len(list(tmpdir.glob("airgap-*")))
    # The audit log's own crash window (airgap/audit.py, not the importer): a kill after the
    # new line is written but before audit.head is replaced leaves `.audit.head.*.tmp` in the
    # home, and `audit verify` fails until the next entry is appended. Everything else about
    # the log must hold: the chain of lines, and exactly one import entry per response.
    # Only a killed audit append may leave a head temp file; the next append removes it.
    head_temps = [t for t in temp_files(inside) if Path(t).name.startswith(".audit.head.")]
    assert sorted(temp_files(inside)) == sorted(head_temps)
    chain_verifies(inside)
    verify = run_airgap("--home", str(inside), "audit", "verify")
    imports = Counter(e["bundle_id"] for e in audit_events(inside) if e["event"] == "import")
    assert len(imports) == 2 * rounds and set(imports.values()) == {1}, imports
    print(
        f"\nCRASH-IMPORT items={total} rounds={rounds} responses={2 * rounds} "
        f"kills={loop.kills} (before_writing={loop.before_writing} "
        f"while_writing={loop.while_writing} after_recording={loop.after_recording} "
        f"left_temp_files={loop.temps_seen}) runs_finished_before_kill={loop.completed} "
        f"stale_system_temp_dirs={loop.system_temp_dirs} duplicates_found=0 "
        f"full_import={full_seconds:.1f}s second_import={noop_seconds:.1f}s "
        f"elapsed={time.monotonic() - started:.1f}s"
    )
    # A kill between an audit line and its head leaves the head one entry behind (accepted)
    # and possibly a head temp file, which the next append removes.
    assert verify.returncode == 0, verify.stdout + verify.stderr


def chain_verifies(home: Path) -> None:
    """The audit lines chain (prev hash, seq) from the first to the last, head file aside."""
    prev, seq = "0" * 64, 0
    for raw in (home / "audit.jsonl").read_bytes().splitlines():
        entry = json.loads(raw)
        assert entry["prev"] == prev and entry["seq"] == seq + 1, entry
        prev, seq = hashlib.sha256(raw).hexdigest(), seq + 1


# --- the windows a random kill rarely hits, hit on purpose ----------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the product catches it, nothing after it runs."""


def test_import_killed_at_each_narrow_window_then_completes(
    sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after writing the outputs but before recording them; after recording but before
    the audit entry; with a temporary file left beside an output: the next import completes."""
    import airgap.audit
    from airgap.inside.importer import import_response as run_import
    from airgap.inside.state import InsideState as State

    inside, outside = sites
    rows = import_plan(20, tmp_path / "rum")
    out = tmp_path / "licences"
    for round_ in range(3):
        request = tmp_path / f"req-{round_}.airgap"
        request_id = pack(inside, write_plan(tmp_path / "plan.csv", rows), request)["bundle_id"]
        request_dir = out / request_id[:8]
        with open_bundle(request, Home.open(outside).policy(expected_kind="request")) as opened:
            request_items = list(opened.items)
        answers = answers_for(request_items, finish=True)
        response = tmp_path / f"resp-{round_}.airgap"
        response_id, _ = synthetic_response(outside, request, response, answers, round_ + 1)
        home = Home.open(inside)
        with monkeypatch.context() as patch:
            if round_ == 0:  # the outputs are on disk, state.db never heard of them
                patch.setattr(State, "record_import", _raise_killed)
            elif round_ == 1:  # state.db recorded the import, the audit log did not
                patch.setattr(airgap.audit.AuditLog, "append", _append_but_not_imports)
            else:  # an earlier import died while writing this device's file
                (request_dir / "cisco" / "sw-0").mkdir(parents=True)
                (request_dir / "cisco" / "sw-0" / ".lic.txt.k2j4l_9x.tmp").write_bytes(b"half")
                (request_dir / "cisco" / "sw-0" / ".notes.abcdefgh.tmp").write_bytes(b"mine")
                patch.setattr(State, "record_import", _raise_killed)
            with pytest.raises(Killed):
                run_import(home, response, out=out)
        result = run_import(home, response, out=out)
        assert result.already_imported is (round_ == 1)
        again = run_import(home, response, out=out)
        assert again.already_imported is True
        if round_ == 2:  # the half-written temporary file is gone; someone else's is not
            folder = request_dir / "cisco" / "sw-0"
            assert not (folder / ".lic.txt.k2j4l_9x.tmp").exists()
            assert (folder / ".notes.abcdefgh.tmp").read_bytes() == b"mine"
            (folder / ".notes.abcdefgh.tmp").unlink()
        counts = check_outputs(
            inside, request_id, request_items, answers, [response_id], request_dir
        )
        assert counts["ok"] == sum(a.status == "ok" for a in answers.values())
        imports = [e for e in audit_events(inside) if e["event"] == "import"]
        assert [e["bundle_id"] for e in imports].count(response_id) == 1
        if round_ == 1:
            assert imports[-1]["details"]["recovered"] is True
    assert temp_files(out, inside) == []
    audit_verify(inside)


def _raise_killed(*args: Any, **kwargs: Any) -> None:
    raise Killed


_APPEND = AuditLog.append


def _append_but_not_imports(self: AuditLog, event: str, **kwargs: Any) -> str:
    if event == "import":
        raise Killed
    return _APPEND(self, event, **kwargs)


# --- the outside processor, mixed batch ----------------------------------------------------------

OUTSIDE_SIZES = [
    pytest.param(20, 150, id="ci"),
    pytest.param(60, 800, id="soak", marks=[pytest.mark.soak, pytest.mark.slow]),
]


@pytest.mark.parametrize(("kills", "per_vendor"), OUTSIDE_SIZES)
def test_outside_process_killed_repeatedly_on_mixed_batch_then_exactly_once(
    kills: int, per_vendor: int, sites, emulators, tmp_path: Path
) -> None:
    started = time.monotonic()
    inside, outside = sites
    cisco = emulators("cisco", "--latency", "60", "--poll-delay", "0.3")
    bigiq = emulators("bigiq", "--latency", "60", "--task-delay", "0.3")
    from integration.conftest import DEMO_SECRETS, kill_mid_run, point_outside_at

    point_outside_at(outside, cisco=cisco.url, bigiq=bigiq.url)
    reports = per_vendor // 6
    rows: list[dict[str, str]] = []
    for n in range(per_vendor):
        rows.append(
            {
                "action": "cisco.reserve",
                "hostname": f"sw-{n}",
                "pid": "C9300-24T",
                "sn": f"FOC{n:08d}",
                "entitlements": f"{RESERVE_TAG}:1",
            }
        )
        rows.append(
            {
                "action": "bigiq.assign",
                "mac": mac(n),
                "pool": "demo-utility",
                "hypervisor": "vmware",
                "unit_of_measure": "yearly",
            }
        )
        if n < reports:
            files = write_device(
                pid="C9300-24T", sn=f"FXS{n:08d}", hostname=f"acc-{n}", out=tmp_path / "rum"
            )
            rows.append({"action": "cisco.report_usage", "rum_file": str(files.rum)})
    request = tmp_path / "req.airgap"
    pack(inside, write_plan(tmp_path / "plan.csv", rows), request)
    command = [
        *airgap_command(),
        "outside",
        "process",
        str(request),
        "-o",
        str(tmp_path / "killed.airgap"),
        "--rate",
        "0",
        "--concurrency",
        "4",
    ]
    env = clean_env(**DEMO_SECRETS, AIRGAP_HOME=str(outside))
    rng = random.Random(int(os.environ.get("AIRGAP_CRASH_SEED", "20")))
    # Each run is killed once both emulators together have seen N more changes than before it
    # started, N up to a share of the work that leaves half of it for the final run.
    work = 2 * per_vendor + reports
    most = max(2, work // (2 * kills))
    records = kill_mid_run(
        command, env, [cisco, bigiq], kills=kills, rng=rng, per_kill=(max(1, most // 3), most)
    )
    killed = len(records)
    for number, record in enumerate(records, 1):
        assert record.at_kill > record.before_run, f"kill {number} landed before any vendor call"
    assert records[-1].after_kill < work, "the killed runs did all the work"
    code, document = process(
        outside, request, tmp_path / "resp.airgap", "--concurrency", "16", timeout=900
    )
    assert killed == kills
    items = document["items"]
    assert len(items) == len(rows)
    duplicate_reports = 0
    for item in items:
        if item["status"] == "ok":
            continue
        # A report accepted just before a kill, then sent again: Cisco refuses the copy.
        error = item["error"] or {}
        assert item["action"] == "cisco.report_usage", item
        assert item["status"] == "failed" and error.get("code") == "DUPLICATE_REPORT", item
        duplicate_reports += 1
    assert code in (0, 4) and (code == 0) == (duplicate_reports == 0), document["counts"]
    seen = {**cisco.stats()["mutations"], **bigiq.stats()["mutations"]}
    expected: dict[str, dict[str, int]] = {}
    for n in range(per_vendor):
        expected[udi_of(f"FOC{n:08d}")] = {"reserve": 1, "return": 0, "report": 0}
        expected[mac(n)] = {"assign": 1, "revoke": 0}
        if n < reports:
            expected[udi_of(f"FXS{n:08d}")] = {"reserve": 0, "return": 0, "report": 1}
    duplicates = sorted(key for key, counts in seen.items() if max(counts.values()) > 1)
    assert not duplicates, {key: seen[key] for key in duplicates[:20]}
    assert seen == expected
    audit_verify(outside)
    print(
        f"\nCRASH-OUTSIDE items={len(rows)} (cisco.reserve={per_vendor} "
        f"bigiq.assign={per_vendor} cisco.report_usage={reports}) kills={killed} "
        f"duplicate_report_refused_after_kill={duplicate_reports} "
        f"duplicates_found={len(duplicates)} elapsed={time.monotonic() - started:.1f}s"
    )
