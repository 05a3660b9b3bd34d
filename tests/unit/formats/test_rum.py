"""RUM report files: both payload layouts, byte-exact payloads, and files that are not RUM."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from airgap.errors import InputError
from airgap.formats.rum import parse_rum_bytes, parse_rum_file

Sample = Callable[[str], Path]
Writer = Callable[..., Path]

C9300 = ("C9300-24T", "FOC2437L1ZK")
ISR = ("ISR4331/K9", "FDO2213A0KX")


def _raw_payloads(text: str) -> list[str]:
    """The payload strings decoded straight from the file's bytes, independent of the parser."""
    raws = re.findall(r'\{"payload":"((?:[^"\\]|\\.)*)"', text)
    return [json.loads(f'"{raw}"') for raw in raws]


def _payload_literals(text: str) -> list[str]:
    return re.findall(r'\{"payload":"((?:[^"\\]|\\.)*)"', text)


def _report(payload: str, sudi: tuple[str, str] | None = C9300) -> str:
    outer: dict[str, object] = {"payload": payload, "header": {"type": "rum"}}
    signature: dict[str, object] = {"signing_type": "builtin", "key": "k", "value": "dmFsdWU="}
    if sudi is not None:
        signature["sudi"] = {"udi_pid": sudi[0], "udi_serial_number": sudi[1]}
    outer["signature"] = signature
    return f"<RUMReport><![CDATA[{json.dumps(outer, separators=(',', ':'))}]]></RUMReport>"


# --- the shared samples --------------------------------------------------------------------------


def test_c9300_sample_has_three_reports_of_one_device(sample: Sample) -> None:
    path = sample("cisco/rum/rum-report-c9300.xml")
    rum = parse_rum_file(path)
    assert rum.path == path
    assert rum.udi == C9300
    assert rum.hostname == "sw-core-01"
    assert [r.udi for r in rum.reports] == [C9300] * 3
    assert [r.report_id for r in rum.reports] == ["1723449601", "1723449602", "1726042203"]
    assert rum.reports[0].signature == {
        "sudi": {"udi_pid": "C9300-24T", "udi_serial_number": "FOC2437L1ZK"},
        "signing_type": "builtin",
        "key": "regid.2017-05.com.cisco.C9300,v1_727af1d9-6c39-4444-b301-863f81445b72",
        "value": "1Pql4rgaNn1V3Htf7Ji8eIbi0X2edE9qn4rm4IGti8A=",
    }


def test_isr_sample_in_the_older_layout_on_one_line(sample: Sample) -> None:
    rum = parse_rum_file(sample("cisco/rum/rum-report-isr.xml"))
    assert (rum.udi, rum.hostname) == (ISR, "rtr-wan-01")
    assert [(r.udi, r.report_id) for r in rum.reports] == [(ISR, "1725148801")]


@pytest.mark.parametrize("name", ["rum-report-c9300.xml", "rum-report-isr.xml"])
def test_payloads_are_kept_byte_for_byte(sample: Sample, name: str) -> None:
    path = sample(f"cisco/rum/{name}")
    text = path.read_text(encoding="utf-8")
    rum = parse_rum_file(path)
    assert [r.payload for r in rum.reports] == _raw_payloads(text)
    # The device escaped nothing but quotes, so re-escaping the kept string gives the file's
    # exact characters back: nothing was re-serialized, re-ordered or re-spaced.
    for report, literal in zip(rum.reports, _payload_literals(text), strict=True):
        assert report.payload.replace('"', '\\"') == literal
        assert report.payload.encode("utf-8") in text.replace('\\"', '"').encode("utf-8")


def test_ack_sample_is_not_a_rum_report(sample: Sample) -> None:
    path = sample("cisco/rum/ack-c9300.xml")
    with pytest.raises(InputError) as info:
        parse_rum_file(path)
    assert info.value.code == "E_INPUT"
    assert info.value.message.startswith(f"{path}:1: not a RUM report")


def test_parse_bytes_matches_parse_file(sample: Sample) -> None:
    path = sample("cisco/rum/rum-report-c9300.xml")
    assert parse_rum_bytes(path.read_bytes(), path=path) == parse_rum_file(path)


# --- layout variants -----------------------------------------------------------------------------


def test_crlf_declaration_comment_and_escaped_system_info(write: Writer) -> None:
    info = json.dumps({"sudi": {"udi_pid": ISR[0], "udi_serial_number": ISR[1]}, "hostname": "r1"})
    escaped = info.replace("&", "&amp;").replace('"', "&quot;")
    payload = '{"version":"2.0","asset_identification":{"report_id":7}}'
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n<!-- saved by hand -->\r\n'
        "<smartLicense>\r\n"
        f"<smartLicenseSystemInfo><data>{escaped}</data></smartLicenseSystemInfo>\r\n"
        f"{_report(payload, ISR)}\r\n"
        "</smartLicense>\r\n"
    )
    rum = parse_rum_file(write("r1.xml", text))
    assert (rum.udi, rum.hostname) == (ISR, "r1")
    assert [(r.payload, r.report_id) for r in rum.reports] == [(payload, "7")]


def test_without_system_info_the_udi_comes_from_the_report(write: Writer) -> None:
    payload = json.dumps(
        {
            "asset_identification": {
                "instance": {"sudi": {"udi_pid": "C9500", "udi_serial_number": "S1"}}
            }
        }
    )
    rum = parse_rum_file(write("x.xml", f"<smartLicense>{_report(payload, None)}</smartLicense>"))
    assert (rum.udi, rum.hostname, rum.reports[0].report_id) == (("C9500", "S1"), None, None)


def test_unicode_and_slash_escapes_are_decoded_once_and_kept(write: Writer) -> None:
    # The outer JSON may escape characters; the payload is the decoded string, not re-encoded.
    cdata = (
        '{"payload":"{\\"meta\\":{\\"report_id\\":9,\\"note\\":\\"caf\\u00e9 a\\/b\\"}}",'
        '"signature":{"sudi":{"udi_pid":"C9300-24T","udi_serial_number":"FOC2437L1ZK"}}}'
    )
    text = f"<smartLicense><RUMReport><![CDATA[{cdata}]]></RUMReport></smartLicense>"
    rum = parse_rum_file(write("u.xml", text))
    assert rum.reports[0].payload == '{"meta":{"report_id":9,"note":"café a/b"}}'
    assert rum.reports[0].report_id == "9"


# --- refusals ------------------------------------------------------------------------------------


def _sample_text(sample: Sample) -> str:
    return sample("cisco/rum/rum-report-c9300.xml").read_text(encoding="utf-8")


def _truncated(sample: Sample, at: str) -> str:
    text = _sample_text(sample)
    return text[: text.index(at)]


@pytest.mark.parametrize(
    ("make", "line", "phrase"),
    [
        (lambda s: b"", 1, "the file is empty"),
        (lambda s: b"\x1f\x8b\x08\x00\x00\x00\x00", 1, "binary data"),
        (lambda s: b'{"payload": "{}"}', 1, "not a RUM report"),
        (lambda s: b"<?xml version='1.0'?><config><a/></config>", 1, "not a RUM report"),
        (lambda s: _truncated(s, "2591938").encode(), 5, "no closing </smartLicense>"),
        (
            lambda s: (_truncated(s, "2591938") + "</smartLicense>").encode(),
            5,
            "<RUMReport> is never closed",
        ),
        (
            lambda s: _sample_text(s).replace("]]></RUMReport>", "</RUMReport>", 1).encode(),
            4,
            "unterminated CDATA",
        ),
        (
            lambda s: b"<smartLicense><RUMReport><![CDATA[not json]]></RUMReport></smartLicense>",
            1,
            "not valid JSON",
        ),
        (
            lambda s: (
                b'<smartLicense>\n<RUMReport><![CDATA[{"header":{}}]]></RUMReport>\n</smartLicense>'
            ),
            2,
            'lacks a "payload"',
        ),
        (
            lambda s: (
                b'<smartLicense><RUMReport><![CDATA[{"payload":"x","signature":{}}]]>'
                b"</RUMReport></smartLicense>"
            ),
            1,
            "not a JSON object",
        ),
        (
            lambda s: (
                b'<smartLicense><RUMReport><![CDATA[{"payload":"{}","signature":{}}]]>'
                b"</RUMReport></smartLicense>"
            ),
            1,
            "names no device",
        ),
        (
            lambda s: (
                b"<smartLicense>\n<RUMReport><![CDATA[{}]]>\n<RUMReport></RUMReport></smartLicense>"
            ),
            2,
            "never closed",
        ),
        (lambda s: b"<smartLicense>\n\n</smartLicense>", 1, "holds no <RUMReport>"),
        (
            lambda s: (
                b"<smartLicense><smartLicenseSystemInfo><data>{oops</data>"
                b"</smartLicenseSystemInfo></smartLicense>"
            ),
            1,
            "not valid JSON",
        ),
    ],
)
def test_bad_files_are_refused_with_file_and_line(
    sample: Sample,
    write: Writer,
    make: Callable[[Sample], bytes],
    line: int,
    phrase: str,
) -> None:
    path = write("bad.xml", make(sample))
    with pytest.raises(InputError) as info:
        parse_rum_file(path)
    assert info.value.code == "E_INPUT"
    assert info.value.message.startswith(f"{path}:{line}: "), info.value.message
    assert phrase in info.value.message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        parse_rum_file(tmp_path / "absent.xml")


@pytest.mark.parametrize(
    "name", ["cisco/auth-code-lic.txt", "cisco/show-license-udi/single.txt", "f5/bigip.license"]
)
def test_other_samples_are_not_rum_reports(sample: Sample, name: str) -> None:
    path = sample(name)
    with pytest.raises(InputError) as info:
        parse_rum_file(path)
    assert info.value.message.startswith(f"{path}:1: not a RUM report")


# --- reports without the <smartLicense> wrapper --------------------------------------------------

UNWRAPPED_C9800 = Path(__file__).resolve().parents[2] / "data" / "rum" / "c9800-cl-unwrapped.xml"
C9800 = ("C9800-CL-K9", "9K2XQ7TZ3RA")


def _pretty_report(payload: str, sudi: tuple[str, str] | None = C9800) -> str:
    """One `<RUMReport>` whose CDATA is pretty-printed JSON, as the C9800 sample has it."""
    signature: dict[str, object] = {"signing_type": "virtual", "key": "k", "value": "dmFsdWU="}
    if sudi is not None:
        signature = {"sudi": {"udi_pid": sudi[0], "udi_serial_number": sudi[1]}, **signature}
    body = json.dumps({"payload": payload, "signature": signature}, indent=2)
    return f"<RUMReport><![CDATA[{body}]]></RUMReport>"


def _v2_payload(report_id: int, sudi: tuple[str, str] = C9800) -> str:
    instance = {"sudi": {"udi_pid": sudi[0], "udi_serial_number": sudi[1]}}
    ident = {"report_id": report_id, "asset": {"name": "sw"}, "instance": instance}
    return json.dumps({"version": "2.0", "asset_identification": ident}, separators=(",", ":"))


def test_a_lone_c9800_report_without_the_wrapper_is_read() -> None:
    data = UNWRAPPED_C9800.read_bytes()
    rum = parse_rum_bytes(data, path=UNWRAPPED_C9800)
    assert rum.udi == C9800
    assert rum.hostname is None
    [report] = rum.reports
    assert report.udi == C9800
    assert report.report_id == "1731402817"
    assert report.signature["signing_type"] == "virtual"
    cdata = data.decode().split("<![CDATA[", 1)[1].rsplit("]]>", 1)[0]
    assert report.payload == json.loads(cdata)["payload"]
    assert json.loads(report.payload)["version"] == "2.0"


def test_unwrapped_reports_beside_system_info_are_all_read(write: Writer) -> None:
    info = json.dumps(
        {"sudi": {"udi_pid": C9800[0], "udi_serial_number": C9800[1]}, "hostname": "wlc-1"}
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<smartLicenseSystemInfo><data><![CDATA[{info}]]></data></smartLicenseSystemInfo>\n"
        f"{_pretty_report(_v2_payload(11))}\n{_pretty_report(_v2_payload(12))}\n"
    )
    rum = parse_rum_file(write("two.xml", text))
    assert rum.udi == C9800
    assert rum.hostname == "wlc-1"
    assert [r.report_id for r in rum.reports] == ["11", "12"]
    assert [r.payload for r in rum.reports] == [_v2_payload(11), _v2_payload(12)]


def test_an_unwrapped_report_whose_signature_has_no_sudi_takes_the_udi_from_the_payload(
    write: Writer,
) -> None:
    rum = parse_rum_file(write("nosudi.xml", _pretty_report(_v2_payload(7), sudi=None)))
    assert rum.udi == C9800
    assert rum.reports[0].report_id == "7"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        # cut inside the report
        (_pretty_report(_v2_payload(1))[:200], "does not end with a closed </RUMReport>"),
        # one whole report, the next one cut short
        (
            _pretty_report(_v2_payload(1)) + "\n" + _pretty_report(_v2_payload(2))[:40],
            "does not end with a closed </RUMReport>",
        ),
        # a report closed, then text that is not a report
        (_pretty_report(_v2_payload(1)) + "\ntrailing words", "does not end with a closed"),
        # system info alone is not a usage report
        (
            '<smartLicenseSystemInfo><data>{"hostname":"x"}</data></smartLicenseSystemInfo>',
            "the file holds no <RUMReport>",
        ),
        # an element name that only starts like the wrapper
        ("<smartLicenseRumAck><data>[]</data></smartLicenseRumAck>", "not a RUM report"),
        ("<RUMReports><x/></RUMReports>", "not a RUM report"),
    ],
)
def test_unwrapped_files_that_are_not_whole_reports_are_refused(
    write: Writer, text: str, phrase: str
) -> None:
    path = write("bad.xml", text)
    with pytest.raises(InputError) as info:
        parse_rum_file(path)
    assert info.value.code == "E_INPUT"
    assert phrase in info.value.message, info.value.message
