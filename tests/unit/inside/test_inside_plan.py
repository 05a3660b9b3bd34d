"""Plan files: every action in CSV and JSON, path resolution, and every class of plan error."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

from airgap.errors import InputError, PlanError
from airgap.inside.plan import (
    ACTIONS,
    CSV_COLUMNS,
    HYPERVISORS,
    PlanItem,
    load_plan,
    parse_entitlement_spec,
)

Sample = Callable[[str], Path]
Writer = Callable[..., Path]
MakePlan = Callable[..., Path]

CODE = "Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ"
SLR = "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C"
TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
REGKEY = "Q4821-07395-61827-30546-9172843"

# One row per action, as an operator would write them (mixed case, any MAC notation).
ROWS: list[dict[str, str]] = [
    {
        "action": "cisco.reserve",
        "hostname": "sw-core-01",
        "pid": "C9300-24T",
        "sn": "FOC2437L1ZK",
        "entitlements": f"{TAG}:2;DNA_ADV",
        "virtual_account": "Lab",
    },
    {"action": "cisco.report_usage", "rum_file": "rum/c9300.xml"},
    {"action": "cisco.return", "pid": "C9300-24T", "sn": "FOC0000002", "return_code": CODE},
    {"action": "cisco.slr_reserve", "request_code": SLR, "entitlements": "HSEC:1"},
    {"action": "cisco.usage_summary", "tags": f"{TAG}; DNA_ADV"},
    {"action": "cisco.devices", "virtual_account": "Default;Lab"},
    {
        "action": "bigiq.assign",
        "mac": "0050.569a.3ce1",
        "pool": "VE-UTILITY-POOL-1G",
        "hypervisor": "VMware",
        "sku_keyword1": "F5-BIG-LTM",
        "unit_of_measure": "Hourly",
        "tenant": "lab",
        "chargeback_tag": "cc-42",
    },
    {"action": "bigiq.revoke", "mac": "00-50-56-9a-3c-e2", "pool": "VE-UTILITY-POOL-1G"},
    {
        "action": "bigiq.regkey_activate",
        "pool": "demo-regkey",
        "regkey": REGKEY.lower(),
        "add_on_keys": "T582617-4093851",
        "mode": "manual",
        "dossier_file": "dossier.txt",
        "accept_eula": "yes",
    },
    {"action": "bigiq.assignments", "pool": "VE-UTILITY-POOL-1G"},
    {"action": "BIGIQ.Assignments"},
]


def expected(tmp_path: Path, sample: Sample) -> list[tuple[str, Any, Any, tuple[Path, ...]]]:
    dossier = sample("f5/dossier.txt").read_text().strip()
    return [
        (
            "cisco.reserve",
            {"hostname": "sw-core-01", "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
            {
                "entitlements": [{"tag": TAG, "count": 2}, {"tag": "DNA_ADV", "count": 1}],
                "virtual_account": "Lab",
            },
            (),
        ),
        (
            "cisco.report_usage",
            {"hostname": "sw-core-01", "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
            {},
            (tmp_path / "rum" / "c9300.xml",),
        ),
        (
            "cisco.return",
            {"hostname": None, "udi": {"pid": "C9300-24T", "sn": "FOC0000002"}},
            {"return_code": CODE},
            (),
        ),
        (
            "cisco.slr_reserve",
            {"hostname": None, "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
            {
                "request_code": SLR,
                "reservation_type": "SPECIFIC",
                "entitlements": [{"tag": "HSEC", "count": 1}],
            },
            (),
        ),
        ("cisco.usage_summary", None, {"tags": [TAG, "DNA_ADV"]}, ()),
        ("cisco.devices", None, {"virtual_accounts": ["Default", "Lab"]}, ()),
        (
            "bigiq.assign",
            {"mac": "00:50:56:9A:3C:E1"},
            {
                "pool": "VE-UTILITY-POOL-1G",
                "hypervisor": "vmware",
                "sku_keyword1": "F5-BIG-LTM",
                "unit_of_measure": "hourly",
                "tenant": "lab",
                "chargeback_tag": "cc-42",
            },
            (),
        ),
        ("bigiq.revoke", {"mac": "00:50:56:9A:3C:E2"}, {"pool": "VE-UTILITY-POOL-1G"}, ()),
        (
            "bigiq.regkey_activate",
            None,
            {
                "pool": "demo-regkey",
                "regkey": REGKEY,
                "mode": "manual",
                "add_on_keys": ["T582617-4093851"],
                "dossier": dossier,
                "accept_eula": True,
            },
            (),
        ),
        ("bigiq.assignments", None, {"pool": "VE-UTILITY-POOL-1G"}, ()),
        ("bigiq.assignments", None, {}, ()),
    ]


def _shape(items: list[PlanItem]) -> list[tuple[str, Any, Any, tuple[Path, ...]]]:
    return [(i.action, i.device, i.params, i.attachments) for i in items]


@pytest.fixture
def inputs(tmp_path: Path, sample: Sample) -> Path:
    """The files the plans refer to, relative to tmp_path."""
    (tmp_path / "rum").mkdir()
    shutil.copy(sample("cisco/rum/rum-report-c9300.xml"), tmp_path / "rum" / "c9300.xml")
    shutil.copy(sample("f5/dossier.txt"), tmp_path / "dossier.txt")
    return tmp_path


def _problems(path: Path) -> list[str]:
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.code == "E_PLAN"
    assert str(len(info.value.problems)) in info.value.message
    return info.value.problems


# --- good plans ----------------------------------------------------------------------------------


def test_csv_plan_with_every_action(
    inputs: Path, sample: Sample, make_plan: MakePlan, tmp_path: Path
) -> None:
    path = make_plan(ROWS)
    items = load_plan(path)
    assert _shape(items) == expected(tmp_path, sample)
    assert [i.origin for i in items] == [f"{path}:{n}" for n in range(2, 13)]
    rum_bytes = (tmp_path / "rum" / "c9300.xml").read_bytes()
    assert items[1].attachment_sha256 == (hashlib.sha256(rum_bytes).hexdigest(),)


def test_json_plan_mirrors_the_csv(
    inputs: Path, sample: Sample, write: Writer, tmp_path: Path
) -> None:
    items_json: list[dict[str, Any]] = [dict(row) for row in ROWS]
    # JSON may use arrays and objects where CSV uses ';' strings, and a real boolean.
    items_json[0]["entitlements"] = [{"tag": TAG, "count": 2}, "DNA_ADV"]
    items_json[4]["tags"] = [TAG, "DNA_ADV"]
    items_json[5]["virtual_account"] = ["Default", "Lab"]
    items_json[8]["accept_eula"] = True
    items_json[8]["add_on_keys"] = ["T582617-4093851"]
    items_json[9]["tenant"] = None  # null is an empty cell
    items_json[10]["action"] = "bigiq.assignments"  # JSON names actions exactly
    path = write("plan.json", json.dumps({"items": items_json}, indent=2))
    items = load_plan(path)
    assert _shape(items) == expected(tmp_path, sample)
    text = path.read_text().splitlines()
    # Each origin names the line where the item's object opens.
    for item in items:
        line = int(item.origin.rsplit(":", 1)[1])
        assert text[line - 1].strip() == "{"
        assert item.action.lower() in text[line].lower()


def test_relative_paths_resolve_against_the_plan_folder(
    sample: Sample, write: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rum = write("plans/inputs/r.xml", sample("cisco/rum/rum-report-isr.xml").read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plan = write(
        "plans/p.csv",
        f"action,rum_file\ncisco.report_usage,inputs/r.xml\ncisco.report_usage,{rum}\n",
    )
    # The same file twice, once relative and once absolute, is one file sent twice.
    assert _problems(plan) == [
        f"{plan}:3: cisco.report_usage with the same RUM file content repeats {plan}:2"
    ]
    plan.write_text("action,rum_file\ncisco.report_usage,inputs/r.xml\n")
    assert [i.attachments for i in load_plan(plan)] == [(rum,)]
    plan.write_text(f"action,rum_file\ncisco.report_usage,{rum}\n")
    assert [i.attachments for i in load_plan(plan)] == [(rum,)]


def test_subset_of_columns_in_any_order_case_and_spaces(write: Writer) -> None:
    path = write(
        "p.csv",
        "\ufeffSN , PID,Action,Entitlements\r\n"
        "# a comment row\r\n"
        "\r\n"
        " FOC1 ,C9300-24T, cisco.reserve ,TAG\r\n",
    )
    (item,) = load_plan(path)
    assert item.device == {"hostname": None, "udi": {"pid": "C9300-24T", "sn": "FOC1"}}
    assert item.params == {"entitlements": [{"tag": "TAG", "count": 1}]}
    assert item.origin == f"{path}:4"


def test_slr_universal_needs_no_entitlements_and_pid_sn_may_be_given(write: Writer) -> None:
    path = write(
        "p.csv",
        "action,request_code,reservation_type,pid,sn,hostname\n"
        f"cisco.slr_reserve,{SLR},universal,C9300-24T,FOC2437L1ZK,sw1\n"
        "cisco.slr_reserve,XY-opaque-code-123,Universal,N9K-C9364C,FDO111,\n",
    )
    items = load_plan(path)
    assert [i.device for i in items] == [
        {"hostname": "sw1", "udi": {"pid": "C9300-24T", "sn": "FOC2437L1ZK"}},
        {"hostname": None, "udi": {"pid": "N9K-C9364C", "sn": "FDO111"}},
    ]
    assert items[0].params == {
        "request_code": SLR,
        "reservation_type": "UNIVERSAL",
        "entitlements": [],
    }


def test_regkey_automatic_defaults_accept_eula_to_false(write: Writer) -> None:
    path = write("p.csv", f"action,pool,regkey,mode\nbigiq.regkey_activate,rk,{REGKEY},Automatic\n")
    (item,) = load_plan(path)
    assert item.params == {
        "pool": "rk",
        "regkey": REGKEY,
        "mode": "automatic",
        "accept_eula": False,
    }


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("TAG:2", ("TAG", 2)), ("TAG", ("TAG", 1)), (f"{TAG}:10", (TAG, 10)), (" T:1 ", ("T", 1))],
)
def test_parse_entitlement_spec(spec: str, parsed: tuple[str, int]) -> None:
    assert parse_entitlement_spec(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["", ":2", "TAG:", "TAG:0", "TAG:-1", "TAG:x", "A B:1", "T:1e3", "T" * 513]
)
def test_parse_entitlement_spec_refuses(spec: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_entitlement_spec(spec)
    assert info.value.code == "E_PLAN"


# --- bad plans -----------------------------------------------------------------------------------


def test_every_bad_row_is_reported_at_once_with_its_line(inputs: Path, write: Writer) -> None:
    path = write(
        "plan.csv",
        "action,hostname,pid,sn,entitlements,mac,hypervisor,pool,rum_file,mode,dossier_file,"
        "return_code,unit_of_measure,regkey,accept_eula,tags,virtual_account\n"
        # 2: fine
        "cisco.reserve,sw1,C9300-24T,FOC1,TAG:1,,,,,,,,,,,,\n"
        # 3: missing pid
        "cisco.reserve,sw1,,FOC2,TAG:1,,,,,,,,,,,,\n"
        # 4: unknown action
        "cisco.reserv,sw1,C9300-24T,FOC3,TAG:1,,,,,,,,,,,,\n"
        # 5: a field that does not belong to the action
        "cisco.reserve,sw1,C9300-24T,FOC4,TAG:1,00:50:56:9a:3c:e1,,,,,,,,,,,\n"
        # 6: bad entitlement syntax
        "cisco.reserve,sw1,C9300-24T,FOC5,TAG:;:3,,,,,,,,,,,,\n"
        # 7: bad count
        "cisco.reserve,sw1,C9300-24T,FOC6,TAG:0,,,,,,,,,,,,\n"
        # 8: bad MAC, hypervisor and unit of measure
        "bigiq.assign,,,,,00:50:56:9a:3c,vbox,pool1,,,,,weekly,,,,\n"
        # 9: missing referenced file
        "cisco.report_usage,,,,,,,,missing.xml,,,,,,,,\n"
        # 10: manual activation without a dossier
        f"bigiq.regkey_activate,,,,,,,rk,,manual,,,,{REGKEY},,,\n"
        # 11: bad hostname and return code
        "cisco.return,bad host,C9300-24T,FOC7,,,,,,,,Cxx,,,,,\n"
        # 12: no action
        ",sw1,C9300-24T,FOC8,TAG:1,,,,,,,,,,,,\n"
        # 13: bad boolean and a dossier file that is not hex
        f"bigiq.regkey_activate,,,,,,,rk,,manual,plan.csv,,,{REGKEY},maybe,,\n",
    )
    problems = _problems(path)
    p = str(path)
    assert problems == [
        f"{p}:3: cisco.reserve needs pid",
        f"{p}:4: unknown action 'cisco.reserv' (known: {', '.join(ACTIONS)})",
        f"{p}:5: cisco.reserve does not take mac",
        f"{p}:6: entitlement 'TAG:': count '' is not a whole number",
        f"{p}:7: entitlement 'TAG:0': count must be between 1 and 1000000",
        f"{p}:8: mac: '00:50:56:9a:3c' is not a MAC address",
        f"{p}:8: hypervisor 'vbox' is not one of {', '.join(HYPERVISORS)}",
        f"{p}:8: unit_of_measure 'weekly' is not one of yearly, monthly, daily, hourly",
        f"{p}:9: rum_file 'missing.xml' not found (looked for {path.parent / 'missing.xml'})",
        f"{p}:10: bigiq.regkey_activate with mode manual needs dossier_file",
        f"{p}:11: hostname 'bad host' is not a hostname",
        f"{p}:11: return_code 'Cxx' is not a return code (C + 8 groups of 6 + 1 of 3)",
        f"{p}:12: no action",
        f"{p}:13: dossier_file: {path}:1: a dossier is hex digits only; found 't' at column 3",
        f"{p}:13: accept_eula 'maybe' is not true or false",
    ]


def test_unknown_and_repeated_columns(write: Writer) -> None:
    path = write("p.csv", "action,pid,sn,colour,pid\ncisco.reserve,C9300-24T,FOC1,red,X\n")
    assert _problems(path) == [
        f"{path}:1: unknown column 'colour'",
        f"{path}:1: column 'pid' appears twice",
        f"{path}:2: cisco.reserve needs entitlements",
    ]


def test_semicolon_separated_csv_gets_a_hint(write: Writer) -> None:
    path = write("p.csv", "action;pid;sn\ncisco.reserve;C9300-24T;FOC1\n")
    problems = _problems(path)
    assert problems[-1] == (
        f"{path}:1: the header has no 'action' column "
        "(the file looks ';'-separated; save it as comma-separated CSV)"
    )


def test_row_longer_than_the_header(write: Writer) -> None:
    path = write(
        "p.csv",
        "action,tags,\ncisco.usage_summary,A,B\ncisco.usage_summary,C,,\ncisco.usage_summary,D,,,E\n",
    )
    assert _problems(path) == [
        f"{path}:2: cell 3 ('B') has no column name in the header",
        f"{path}:4: cell 5 ('E') has no column name in the header",
    ]


def test_a_bad_rum_file_is_reported_with_its_own_location(write: Writer, sample: Sample) -> None:
    ack = write("ack.xml", sample("cisco/rum/ack-c9300.xml").read_bytes())
    path = write("p.csv", "action,rum_file\ncisco.report_usage,ack.xml\n")
    assert _problems(path) == [
        f"{path}:2: rum_file: {ack}:1: not a RUM report (<smartLicense> holds no <RUMReport>)"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "{p}: the plan is empty"),
        ("  \n\n", "{p}: the plan is empty"),
        ("action,pid\n", "{p}:1: the plan has no items"),
        ("action,pid\n\n# nothing yet\n", "{p}:1: the plan has no items"),
    ],
)
def test_empty_csv_plans(write: Writer, content: str, problem: str) -> None:
    path = write("plan.csv", content)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert problem.format(p=path) in [info.value.message, *info.value.problems]


def test_cross_field_rules(write: Writer, inputs: Path) -> None:
    path = write(
        "p.csv",
        "action,request_code,pid,sn,entitlements,pool,regkey,mode,dossier_file\n"
        "cisco.slr_reserve,XY-opaque-code-123,,,T:1,,,,\n"
        f"cisco.slr_reserve,{SLR},C9300-24T,OTHER,T:1,,,,\n"
        f"cisco.slr_reserve,{SLR},C9300-24T,,T:1,,,,\n"
        f"cisco.slr_reserve,{SLR},,,,,,,\n"
        f"bigiq.regkey_activate,,,,,rk,{REGKEY},automatic,dossier.txt\n"
        f"bigiq.regkey_activate,,,,,rk,{REGKEY},sometimes,\n",
    )
    assert _problems(path) == [
        f"{path}:2: cisco.slr_reserve needs pid and sn (the request code does not name the device)",
        f"{path}:3: request_code names C9300-24T:FOC2437L1ZK, not C9300-24T:OTHER",
        f"{path}:4: cisco.slr_reserve needs both pid and sn, or neither",
        f"{path}:5: cisco.slr_reserve needs entitlements (unless reservation_type is UNIVERSAL)",
        f"{path}:6: dossier_file is only for mode manual",
        f"{path}:7: mode 'sometimes' is not one of automatic, manual",
    ]


def test_duplicates_in_a_plan_name_both_lines(write: Writer) -> None:
    path = write(
        "p.csv",
        "action,pid,sn,entitlements,mac,pool,hypervisor,tags\n"
        "cisco.reserve,C9300-24T,FOC1,A,,,,\n"
        "bigiq.assign,,,,aa:bb:cc:dd:ee:ff,p,kvm,\n"
        "cisco.reserve,C9300-24T,FOC1,B:2,,,,\n"
        "bigiq.assign,,,,AABB.CCDD.EEFF,p,xen,\n"
        "cisco.usage_summary,,,,,,,A;B\n"
        "cisco.usage_summary,,,,,,,A; B\n",
    )
    assert _problems(path) == [
        f"{path}:4: cisco.reserve for C9300-24T:FOC1 repeats {path}:2",
        f"{path}:5: bigiq.assign for AA:BB:CC:DD:EE:FF repeats {path}:3",
        f"{path}:7: cisco.usage_summary with the same parameters repeats {path}:6",
    ]


# --- JSON plans ----------------------------------------------------------------------------------


def test_json_plan_schema_errors_are_located(write: Writer) -> None:
    text = """{
  "items": [
    {"action": "cisco.reserve", "pid": "C9300-24T", "sn": "FOC1", "entitlements": "T:1"},
    {"action": "cisco.reserve", "pid": 9300, "sn": "FOC2", "entitlements": "T:1"},
    {"action": "cisco.teleport"},
    {"action": "bigiq.assign", "mac": "aa:bb:cc:dd:ee:ff", "pool": "p", "hypervisor": "kvm",
     "colour": "red"},
    {"action": "cisco.reserve", "pid": "C9300-24T", "sn": "FOC3",
     "entitlements": [{"tag": "T", "count": 0}]},
    {"action": "bigiq.regkey_activate", "pool": "p", "regkey": "Q4821-07395-61827-30546-9172843",
     "mode": "automatic", "accept_eula": "yes"},
    {"action": "cisco.reserve", "pid": "C9300-24T", "sn": "FOC4"}
  ]
}
"""
    path = write("plan.json", text)
    problems = _problems(path)
    assert problems[0] == f"{path}:4: items[1].pid: 9300 is not of type 'string', 'null'"
    assert problems[1].startswith(f"{path}:5: items[2].action: 'cisco.teleport' is not one of")
    assert problems[2] == (
        f"{path}:6: items[3]: Additional properties are not allowed ('colour' was unexpected)"
    )
    assert (
        problems[3] == f"{path}:8: items[4].entitlements[0].count: 0 is less than the minimum of 1"
    )
    assert problems[4] == f"{path}:10: items[5].accept_eula: 'yes' is not of type 'boolean', 'null'"
    assert problems[5] == f"{path}:12: cisco.reserve needs entitlements"
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"items": []}', "{p}:1: the plan has no items"),
        ('{"items": [}', "{p}:1: not valid JSON (Expecting value)"),
        ('{\n  "items": [\n    {"action": "cisco.devices",}\n  ]\n}', "{p}:3: not valid JSON"),
        ('[{"action": "cisco.devices"}]', "{p}:1: plan: [{'action': 'cisco.devices'}] is not"),
        ('{"plan": []}', "{p}:1: plan: 'items' is a required property"),
    ],
)
def test_bad_json_plans(write: Writer, text: str, problem: str) -> None:
    path = write("plan.json", text)
    problems = _problems(path)
    assert any(p.startswith(problem.replace("{p}", str(path))) for p in problems), problems


def test_json_origins_with_other_keys_before_items(write: Writer) -> None:
    text = (
        '{"$schema": "plan.schema.json",\n'
        ' "description": "lab [items] {not json}",\n'
        ' "items": [{"action": "cisco.usage_summary", "tags": ["A", "B"]},\n'
        "\n"
        '   {"action": "bigiq.assignments"}]}\n'
    )
    path = write("plan.json", text)
    assert [i.origin for i in load_plan(path)] == [f"{path}:3", f"{path}:5"]


def test_plan_suffix_other_than_csv_or_json_is_sniffed(write: Writer) -> None:
    path = write("plan.txt", '{"items": [{"action": "bigiq.assignments"}]}')
    assert [i.action for i in load_plan(path)] == ["bigiq.assignments"]
    path = write("plan.dat", "action\nbigiq.assignments\n")
    assert [i.action for i in load_plan(path)] == ["bigiq.assignments"]


def test_unreadable_plans(write: Writer, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_plan(tmp_path / "absent.csv")
    path = write("bin.csv", b"action\n\x00\x00")
    with pytest.raises(PlanError, match=r"bin\.csv:2: binary data"):
        load_plan(path)


# --- the schema ----------------------------------------------------------------------------------


def test_schema_matches_the_loader() -> None:
    schema = json.loads((files("airgap") / "schemas" / "plan.schema.json").read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    item = schema["$defs"]["item"]
    assert item["properties"]["action"]["enum"] == list(ACTIONS)
    assert list(item["properties"]) == list(CSV_COLUMNS)
    for action, rule in ACTIONS.items():
        assert action in schema["description"]
        assert {*rule.required, *rule.optional} <= set(CSV_COLUMNS)


def test_items_fit_the_request_items_schema(inputs: Path, make_plan: MakePlan) -> None:
    # Contract check with the bundle side: plan items become request items without reshaping.
    schema = json.loads(
        (files("airgap") / "schemas" / "request-items.schema.json").read_text("utf-8")
    )
    items = [
        {
            "id": f"i{n}",
            "action": i.action,
            "device": i.device,
            "params": i.params,
            "files": [f"files/{n}/{p.name}" for p in i.attachments],
        }
        for n, i in enumerate(load_plan(make_plan(ROWS)))
    ]
    errors = list(Draft202012Validator(schema).iter_errors({"items": items}))
    assert [e.message for e in errors] == []
