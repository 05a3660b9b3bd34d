"""Every parser of inside inputs, and the plan loader, under random and mutated input (issue 8).

A parser either returns well-shaped records or raises `InputError` (the plan loader: `PlanError`
or `InputError`); never any other exception, and never slowly enough to hang a pack: inputs
built to make a backtracking regular expression explode are among the examples.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from airgap.errors import InputError, PlanError
from airgap.formats import rum as rum_module
from airgap.inside.parsers import (
    normalize_mac,
    parse_dossier,
    parse_dossier_file,
    parse_regkey_file,
    parse_return_capture,
    parse_return_file,
    parse_rum_bytes,
    parse_rum_file,
    parse_slr_request,
    parse_slr_request_file,
    parse_udi_capture,
    parse_udi_file,
)
from airgap.inside.parsers import udi as udi_module
from airgap.inside.parsers._text import PID_RE, SN_RE
from airgap.inside.parsers.codes import REQUEST_CODE_RE, RETURN_CODE_RE
from airgap.inside.parsers.udi import parse_plain_udi_capture
from airgap.inside.plan import ACTIONS, CSV_COLUMNS, PlanItem, load_plan

if TYPE_CHECKING:
    from fuzz.conftest import Sandbox


def scaled(examples: int) -> int:
    """`examples`, times FUZZ_SCALE from the environment (e.g. 20 for a long local hunt)."""
    return max(1, round(examples * float(os.environ.get("FUZZ_SCALE", "1"))))


FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
SLOW = 2.0  # seconds; no parser may take this long on these small inputs

# --- seeds: what the devices really print (see /work/shared/samples) -----------------------------

UDI_SEEDS = [
    "UDI: PID:C9300-24T,SN:FOC2437L1ZK\n",
    "sw-core-01#show license udi\nUDI: PID:C9300-48P,SN:FOC2501Y0QM\n\nHA UDI List:\n"
    "    Active:PID:C9300-48P,SN:FOC2501Y0QM\n    Standby:PID:C9300-48P,SN:FOC2501Y0R2\n"
    "sw-core-01#",
    "SlotID   PID                    SN                      UDI\n" + "-" * 80 + "\n"
    "*1       C9300-48U             FCW2231G0KD     C9300-48U:FCW2231G0KD\n"
    " 2       C9300-48U             FCW2231G0KF     C9300-48U:FCW2231G0KF\n",
    "Device# PID SN UDI\n1 ISR4331/K9 FDO21520TGH ISR4331/K9:FDO21520TGH\n",
]
RETURN_SEED = (
    "sw-core-01#license smart authorization return local offline\n"
    "Enter this return code in Cisco Smart Software Manager portal:\n"
    "UDI: PID:C9300-24T,SN:FOC2437L1ZK\n"
    "    Return code: Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ\n\nsw-core-01#"
)
SLR_SEEDS = [
    "sw-core-01#license smart reservation request local\n"
    "Enter this request code in the Cisco Smart Software Manager portal:\n"
    "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C\n\nsw-core-01#",
    "UDI: PID:C9300-24T,SN:FOC2437L1ZK\nRequest code: CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C\n",
]
_PAYLOAD = json.dumps(
    {
        "asset_identification": {
            "report_id": 1723449601,
            "instance": {"sudi": {"udi_pid": "C9300-24T", "udi_serial_number": "FOC2437L1ZK"}},
        }
    }
)
_SIGNATURE = {"sudi": {"udi_pid": "C9300-24T", "udi_serial_number": "FOC2437L1ZK"}, "value": "x"}
RUM_REPORT = json.dumps({"payload": _PAYLOAD, "header": {}, "signature": _SIGNATURE})
RUM_INFO = json.dumps(
    {"sudi": {"udi_pid": "C9300-24T", "udi_serial_number": "FOC2437L1ZK"}, "hostname": "sw-1"}
)
RUM_SEED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<smartLicense>\n'
    f"<smartLicenseSystemInfo><data><![CDATA[{RUM_INFO}]]></data></smartLicenseSystemInfo>\n"
    f"<RUMReport><![CDATA[{RUM_REPORT}]]></RUMReport>\n</smartLicense>\n"
)
DOSSIER_SEED = "6db104fbfc4338db787c24e2a834942133ccc8ded4b45fe315de4a2e0b41f1635cf8a15e3d8\n" * 3
REGKEY_SEED = "# base key, then add-ons\nQ4821-07395-61827-30546-9172843\nT582617-4093851\n"

LINES = [
    line
    for seed in [*UDI_SEEDS, RETURN_SEED, *SLR_SEEDS, REGKEY_SEED]
    for line in seed.splitlines()
] + [
    "UDI: PID:,SN:",
    "UDI: PID:C9300-24T,SN:FOC1,VID:V01",
    "PID:",
    "HA UDI List:",
    "Member:PID:bad pid,SN:x",
    "Return code:",
    "Request code:",
    " --More-- ",
    "<--- More --->",
    "\x1b[1;31mUDI\x1b[0m: PID:A,SN:B",
    "abc\b\b\bUDI: PID:A,SN:B",
    "junk\rUDI: PID:A,SN:B",
    "sw1(config)#",
    "sw1>terminal length 0",
    "sw1#sh lic udi",
    "sw1#show version",
    "\t",
    "-" * 300,
    "a" + " " * 300 + "b",
]


@st.composite
def mutated(draw: st.DrawFn, seed: str) -> str:
    """`seed` with a few characters replaced, deleted, inserted or a slice duplicated."""
    text = seed
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["replace", "delete", "insert", "duplicate", "cut"]))
        if op == "replace" and at < len(text):
            text = text[:at] + draw(st.characters()) + text[at + 1 :]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif op == "insert":
            text = text[:at] + draw(st.text(max_size=10) | st.sampled_from(LINES)) + text[at:]
        elif op == "duplicate":
            text = text[:at] + text[at : at + draw(st.integers(1, 80))] * 2 + text[at:]
        else:
            text = text[:at]
    return text


def captures(*seeds: str) -> st.SearchStrategy[str]:
    """Random text, mutated seeds, and logs stitched from lines devices print."""
    stitched = st.tuples(
        st.lists(st.sampled_from(LINES) | st.text(max_size=30), max_size=12),
        st.sampled_from(["\n", "\r\n", "\r", "\n\n"]),
    ).map(lambda parts: parts[1].join(parts[0]))
    return st.one_of(st.text(max_size=300), stitched, *(mutated(seed) for seed in seeds))


def timed(parse: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a parser; InputError is returned, not raised; anything else fails the test."""
    start = time.perf_counter()
    try:
        result = parse(*args, **kwargs)
    except InputError as exc:
        assert exc.code == "E_INPUT" and exc.exit_code == 1
        result = exc
    elapsed = time.perf_counter() - start
    assert elapsed < SLOW, f"{parse.__name__} took {elapsed:.1f} s"
    if currently_in_test_context():
        event(f"{parse.__name__}: {type(result).__name__}")
    return result


# --- captures ------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=scaled(300))
@given(text=captures(*UDI_SEEDS))
@example(text="-" * 20_000)
@example(text="A" + " " * 20_000 + "B")
@example(text="UDI: PID:a,SN:b" + " , a : b" * 3000 + ",,")
def test_udi_parser_returns_udis_or_input_error(text: str) -> None:
    records = timed(parse_udi_capture, text, source="udi.txt")
    if not isinstance(records, InputError):
        assert records
        for record in records:
            assert PID_RE.match(record.pid) and SN_RE.match(record.sn), record


@st.composite
def near_plain_captures(draw: st.DrawFn) -> str:
    """The common `show license udi` capture shape, and near misses of it."""
    host = st.sampled_from(["sw-1", "sw-2", "Sw.core_1", "r"])
    blank = st.sampled_from(["", " ", "\t", "  \t"])
    udi = st.sampled_from(
        [
            "UDI: PID:C9300-24T,SN:FOC2437L1ZK",
            "UDI: PID:ISR4331/K9,SN:FDO2121A0B1",
            "UDI: PID:C9300-24T,SN:FOC2437L1ZK,VID:V01",
            "UDI:PID:C9300-24T,SN:FOC2437L1ZK",
            "UDI: PID:C9300-24T,SN:FOC2437L1ZK \t",
            "UDI: PID:-bad,SN:X",
            "Return code: CqaUPW-WSPYiq",
            "HA UDI List:",
        ]
    )
    commands = st.sampled_from(
        ["terminal length 0", "show license udi", "sh lic udi", "", "show version"]
    )
    prompt = st.tuples(host, st.sampled_from(["#", ">", "(config)#"]), commands).map("".join)
    lines = (
        draw(st.lists(blank, max_size=2))
        + draw(st.lists(prompt, max_size=2))
        + [draw(udi)]
        + draw(st.lists(blank, max_size=3))
        + draw(st.lists(prompt | udi, max_size=2))
    )
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", "\n", "\r\n", "\n\n", " "]))


@settings(FUZZ, max_examples=scaled(500))
@given(text=near_plain_captures())
@example(text="\nsw-1#terminal length 0\nsw-1#show license udi\nUDI: PID:A,SN:B\n\n\nsw-1#")
@example(text="UDI: PID:C9300-24T,SN:FOC2437L1ZK\n")
def test_the_fast_path_for_plain_udi_captures_agrees_with_the_general_parser(text: str) -> None:
    fast = parse_plain_udi_capture(text)
    if currently_in_test_context():
        event("fast path" if fast is not None else "general parser")
    if fast is not None:
        assert fast == udi_module._parse_any_shape(text, source="udi.txt")


@settings(FUZZ, max_examples=scaled(500))
@given(
    pieces=st.lists(
        st.sampled_from(["<![CDATA[", "]]>", "]]", "]", "{", "}", "&amp;", "a", " ", "<", "\n"]),
        max_size=10,
    ),
    before=st.sampled_from(["", "x", "<x>"]),
    wrapped=st.booleans(),
)
@example(pieces=["a", "]]>", "b", "<![CDATA[", "c"], before="", wrapped=True)
def test_the_fast_path_for_cdata_agrees_with_reading_element_text_in_parts(
    pieces: list[str], before: str, wrapped: bool
) -> None:
    content = "".join(pieces)
    text = before + (f"<![CDATA[{content}]]>" if wrapped else content) + "</end>"
    start, end = len(before), len(text) - len("</end>")

    def read(function: Any) -> str | InputError:
        try:
            result: str = function(text, start, end, source="r.xml", what="<data>")
        except InputError as exc:
            return exc
        return result

    fast, general = read(rum_module._element_text), read(rum_module._element_text_in_parts)
    if isinstance(general, InputError):
        assert isinstance(fast, InputError) and fast.message == general.message
    else:
        assert fast == general


@settings(FUZZ, max_examples=scaled(200))
@given(text=captures(RETURN_SEED))
def test_return_parser_returns_a_code_or_input_error(text: str) -> None:
    code = timed(parse_return_capture, text, source="return.txt")
    if not isinstance(code, InputError):
        assert RETURN_CODE_RE.fullmatch(code.code)
        assert code.pid and code.sn


@settings(FUZZ, max_examples=scaled(200))
@given(text=captures(*SLR_SEEDS))
def test_slr_parser_returns_a_code_or_input_error(text: str) -> None:
    request = timed(parse_slr_request, text, source="slr.txt")
    if not isinstance(request, InputError):
        assert REQUEST_CODE_RE.fullmatch(request.code)
        assert (request.pid is None) == (request.sn is None)


CAPTURE_FILE_PARSERS = [parse_udi_file, parse_return_file, parse_slr_request_file]


@settings(FUZZ, max_examples=scaled(150))
@given(
    prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\0"]),
    body=st.binary(max_size=400)
    | captures(*UDI_SEEDS, RETURN_SEED).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | captures(*UDI_SEEDS).map(lambda t: t.encode("utf-16-le", "surrogatepass")),
    parse=st.sampled_from(CAPTURE_FILE_PARSERS),
)
def test_capture_files_of_any_bytes_parse_or_raise_input_error(
    sandbox: Sandbox, prefix: bytes, body: bytes, parse: Any
) -> None:
    path = sandbox.bundles / "capture.txt"
    path.write_bytes(prefix + body)
    timed(parse, path)
    path.unlink()


def test_capture_file_parsers_refuse_what_is_not_a_readable_file(tmp_path: Path) -> None:
    for parse in [*CAPTURE_FILE_PARSERS, parse_dossier_file]:
        for path in (tmp_path / "missing.txt", tmp_path):
            assert isinstance(timed(parse, path), InputError)


# --- RUM reports ---------------------------------------------------------------------------------

ENTITIES = ["&#x110000;", "&#99999999999999999999;", "&#0;", "&#xD800;", "&lt;", "&amp;", "&#"]


def rum_documents() -> st.SearchStrategy[str]:
    content = st.one_of(
        st.just(f"<![CDATA[{RUM_REPORT}]]>"),
        st.just(RUM_REPORT.replace("&", "&amp;").replace("<", "&lt;")),
        st.text(max_size=60),
        st.lists(st.sampled_from(ENTITIES) | st.text(max_size=5), max_size=6).map("".join),
        st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
        mutated(RUM_REPORT),
    )
    reports = st.lists(
        content.map(lambda c: f"<RUMReport>{c}</RUMReport>") | st.sampled_from(["<RUMReport>"]),
        max_size=3,
    )
    # With the <smartLicense> wrapper, or without it (reports, maybe system info, at the top).
    return st.builds(
        lambda head, comments, wrap, reports, tail: (
            head + comments + wrap + "".join(reports) + (tail if wrap else tail[-1:])
        ),
        st.sampled_from(["", '<?xml version="1.0"?>\n', " \n"]),
        st.integers(0, 40).map(lambda n: "<!---->" * n),
        st.sampled_from(
            [
                "<smartLicense>",
                "",
                f"<smartLicenseSystemInfo><data>{RUM_INFO}</data></smartLicenseSystemInfo>\n",
            ]
        ),
        reports,
        st.sampled_from(["</smartLicense>", "</smartLicense >\n", "", "</smartLicense>x"]),
    )


@settings(FUZZ, max_examples=scaled(300))
@given(
    data=st.binary(max_size=500)
    | rum_documents().map(lambda t: t.encode("utf-8", "surrogatepass"))
    | mutated(RUM_SEED).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
@example(data=RUM_SEED.encode())
@example(data=f"<RUMReport><![CDATA[{RUM_REPORT}]]></RUMReport>".encode())
@example(data=f"<RUMReport><![CDATA[{RUM_REPORT}]]></RUMReport><RUMRep".encode())
@example(data=RUM_SEED.replace("FOC2437L1ZK", "&#x110000;", 1).encode())
@example(data=("<!---->" * 40 + "x</smartLicense>").encode())
@example(
    data=("<smartLicense><RUMReport>" + "[" * 100_000 + "</RUMReport></smartLicense>").encode()
)
def test_rum_parser_returns_reports_or_input_error(data: bytes) -> None:
    rum = timed(parse_rum_bytes, data, path=Path("rum.xml"))
    if not isinstance(rum, InputError):
        assert rum.reports
        assert PID_RE.match(rum.udi[0]) and SN_RE.match(rum.udi[1])
        for report in rum.reports:
            report.payload.encode("utf-8")  # sendable as it is


@settings(FUZZ, max_examples=scaled(200))
@given(
    reports=st.lists(
        st.one_of(st.just(RUM_REPORT), mutated(RUM_REPORT), st.text(max_size=20)).map(
            lambda c: f"<RUMReport><![CDATA[{c}]]></RUMReport>\n"
        ),
        max_size=3,
    ),
    info=st.booleans(),
)
def test_reports_read_the_same_with_or_without_the_smartlicense_wrapper(
    reports: list[str], info: bool
) -> None:
    body = (
        f"<smartLicenseSystemInfo><data>{RUM_INFO}</data></smartLicenseSystemInfo>\n"
        if info
        else ""
    ) + "".join(reports)
    wrapped = timed(parse_rum_bytes, f"<smartLicense>\n{body}</smartLicense>\n".encode(), path="r")
    bare = timed(parse_rum_bytes, body.encode(), path="r")
    if isinstance(wrapped, InputError):
        assert isinstance(bare, InputError)
    else:
        assert not isinstance(bare, InputError), bare.message
        assert (bare.udi, bare.hostname, bare.reports) == (
            wrapped.udi,
            wrapped.hostname,
            wrapped.reports,
        )


def test_rum_file_parser_refuses_a_missing_file(tmp_path: Path) -> None:
    assert isinstance(timed(parse_rum_file, tmp_path / "missing.xml"), InputError)


# --- F5 inputs -----------------------------------------------------------------------------------

MAC_SEEDS = [
    "00:50:56:9a:3c:e1",
    "00-50-56-9A-3C-E2",
    "0050.569a.3ce1",
    "0050569a3ce1",
    "0:5:6:9:3:e",
]


@settings(FUZZ, max_examples=scaled(300))
@given(text=st.text(max_size=40) | st.sampled_from(MAC_SEEDS).flatmap(mutated))
@example(text="a:" * 10_000)
def test_normalize_mac_returns_one_notation_or_input_error(text: str) -> None:
    mac = timed(normalize_mac, text)
    if not isinstance(mac, InputError):
        assert re.fullmatch(r"[0-9A-F]{2}(?::[0-9A-F]{2}){5}", mac), mac


@settings(FUZZ, max_examples=scaled(200))
@given(text=st.text(max_size=200) | mutated(DOSSIER_SEED))
def test_dossier_parser_returns_hex_or_input_error(text: str) -> None:
    dossier = timed(parse_dossier, text, source="dossier.txt")
    if not isinstance(dossier, InputError):
        assert dossier and re.fullmatch(r"[0-9A-Fa-f]+", dossier), dossier


@settings(FUZZ, max_examples=scaled(200))
@given(text=st.text(max_size=200) | mutated(REGKEY_SEED))
def test_regkey_parser_returns_keys_or_input_error(text: str) -> None:
    keys = timed(parse_regkey_file, text, source="regkey.txt")
    if not isinstance(keys, InputError):
        base, add_ons = keys
        assert re.fullmatch(r"[A-Z0-9]{5}(?:-[A-Z0-9]{5}){3}-[A-Z0-9]{7}", base)
        assert len(set(add_ons)) == len(add_ons)


# --- the plan loader -----------------------------------------------------------------------------

# Cell values per column: a good one, a near miss, and anything. File cells name files that the
# test puts next to the plan (or not). Left out until plan.py is fixed (see PLAN_BUGS below):
# `~user/` paths; file names too long for the OS and 4300-digit numbers are never drawn anyway.
CELL_VALUES: dict[str, list[str]] = {
    "action": [*ACTIONS, "CISCO.RESERVE", "cisco.steal", ""],
    "hostname": ["sw-1", "-bad", "a" * 300],
    "pid": ["C9300-24T", "bad pid", ""],
    "sn": ["FOC2437L1ZK", "FOC 1", ""],
    "entitlements": ["regid.tag:1", "a:0", "a;a", "a:99999999", "tag:1;other:2", ":", "a b"],
    "return_code": ["Cm01IB-cCt9Y6-JQ5Xlv-zS3GTE-L8ORTk-uTkMbV-ns6b1f-XlcTU1-0xZ", "C1"],
    "request_code": ["CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C", "short"],
    "reservation_type": ["SPECIFIC", "universal", "other"],
    "rum_file": ["rum.xml", "bad-rum.xml", "missing.xml", ".", "sub/../rum.xml", "/dev/null"],
    "mac": [*MAC_SEEDS, "00:50:56", "zz"],
    "hypervisor": ["vmware", "KVM", "bare-metal"],
    "pool": ["pool-1", ""],
    "unit_of_measure": ["yearly", "weekly"],
    "regkey": ["Q4821-07395-61827-30546-9172843", "Q4821"],
    "add_on_keys": ["T582617-4093851", "T582617-4093851;T582617-4093851", "x"],
    "mode": ["automatic", "manual", "auto"],
    "dossier_file": ["dossier.txt", "rum.xml", "missing.txt"],
    "accept_eula": ["yes", "no", "maybe"],
    "virtual_account": ["Default", "A;B", ";"],
    "tags": ["a;b", ";", "tag"],
}


def cells(column: str) -> st.SearchStrategy[str]:
    return st.sampled_from(CELL_VALUES.get(column, ["", "x"])) | st.text(max_size=12).filter(
        lambda t: not t.lstrip().startswith("~")
    )


def good_value(column: str, row: int) -> str:
    """A value that passes for `column`, different in every row where it names a device."""
    if column == "sn":
        return f"FOC2437L1Z{row}"
    if column == "mac":
        return f"00:50:56:9a:3c:e{row}"
    if column == "request_code":
        return "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C" if row == 0 else f"REQ-{row}-ABCDEFGH"
    return CELL_VALUES.get(column, ["x"])[0]


@st.composite
def plan_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-4 items, each an action with mostly good values for the fields it needs and allows."""
    rows = []
    for row in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(sorted(ACTIONS)))
        rule = ACTIONS[action]
        item: dict[str, Any] = {"action": action}
        for column in sorted({*rule.required, *rule.optional}):
            if column in rule.required or draw(st.booleans()):
                good = draw(st.integers(0, 5)) > 0
                item[column] = good_value(column, row) if good else draw(cells(column))
        if draw(st.integers(0, 5)) == 0:  # now and then a field the action does not take
            column = draw(st.sampled_from(CSV_COLUMNS))
            item[column] = draw(cells(column))
        rows.append(item)
    return rows


@st.composite
def csv_plans(draw: st.DrawFn) -> str:
    items = draw(plan_rows())
    columns = ["action", *sorted({c for item in items for c in item} - {"action"})]
    columns += draw(st.lists(st.sampled_from(["ACTION", "Unknown", "", "pid"]), max_size=1))
    rows = [columns] + [[item.get(c, "") for c in columns] for item in items]
    if draw(st.integers(0, 4)) == 0:  # a ragged row
        rows.append(draw(st.lists(cells("action"), max_size=len(columns) + 2)))
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    text = buffer.getvalue()
    return draw(st.just(text) | mutated(text))


@st.composite
def json_plans(draw: st.DrawFn) -> str:
    items: list[Any] = draw(plan_rows())
    for item in items:
        for name in draw(st.lists(st.sampled_from(sorted(item)), max_size=2)):
            item[name] = draw(
                st.none()
                | st.lists(st.sampled_from(CELL_VALUES.get(name, ["x"])), max_size=3)
                | st.integers(-5, 10**6)
                | st.booleans()
                | st.fixed_dictionaries({"tag": st.text(max_size=4), "count": st.integers(0, 3)})
                | st.lists(
                    st.fixed_dictionaries({"tag": st.sampled_from("ab"), "count": st.integers()})
                )
            )
    document: Any = {"items": items}
    if draw(st.integers(0, 5)) == 0:
        document = draw(st.sampled_from([items, {"items": {}}, {"item": items}, None, 3]))
    text = json.dumps(document, indent=draw(st.sampled_from([None, 2])))
    return draw(st.just(text) | mutated(text))


@settings(FUZZ, max_examples=scaled(200))
@given(
    text=csv_plans() | json_plans() | st.text(max_size=200),
    name=st.sampled_from(["plan.csv", "plan.json", "plan.txt"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
@example(
    text="action,entitlements\ncisco.reserve,tag:" + "1" * 4000, name="plan.csv", encoding="utf-8"
)
def test_plan_loader_returns_items_or_plan_error(
    sandbox: Sandbox, text: str, name: str, encoding: str
) -> None:
    folder = sandbox.bundles
    (folder / "rum.xml").write_text(RUM_SEED)
    (folder / "bad-rum.xml").write_text("<smartLicense></smartLicense>")
    (folder / "dossier.txt").write_text(DOSSIER_SEED)
    path = folder / name
    path.write_bytes(text.encode(encoding, "surrogatepass"))
    start = time.perf_counter()
    try:
        items = load_plan(path)
    except (PlanError, InputError) as exc:
        assert exc.code in ("E_PLAN", "E_INPUT")
        if isinstance(exc, PlanError):
            assert exc.problems
        event(exc.code)
    else:
        event("items")
        assert items and all(isinstance(item, PlanItem) for item in items)
        assert all(item.action in ACTIONS for item in items)
    assert time.perf_counter() - start < SLOW
    assert {p.name for p in folder.iterdir()} == {"rum.xml", "bad-rum.xml", "dossier.txt", name}
    path.unlink()


# Found by this fuzzing in airgap/inside/plan.py, which is outside what this work may change;
# the exact inputs stay here, strict, so they fail loudly once fixed (then drop the marks).
PLAN_BUGS = {
    "tilde-user": (
        "action,rum_file\ncisco.report_usage,~no-such-user-airgap/x.xml\n",
        RuntimeError,
    ),
    "long-file-name": ("action,rum_file\ncisco.report_usage," + "a" * 5000 + "\n", OSError),
    "huge-count": (
        "action,pid,sn,entitlements\ncisco.reserve,A,B,tag:" + "1" * 5000 + "\n",
        ValueError,
    ),
    "deep-json": ('{"items":' + "[" * 100_000 + "}", RecursionError),
}


@pytest.mark.parametrize("case", sorted(PLAN_BUGS))
def test_plan_loader_inputs_that_once_crashed_are_plan_errors(tmp_path: Path, case: str) -> None:
    text, _ = PLAN_BUGS[case]
    path = tmp_path / ("plan.json" if text.startswith("{") else "plan.csv")
    path.write_text(text)
    with pytest.raises((PlanError, InputError)):
        load_plan(path)
