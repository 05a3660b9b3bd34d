"""What an emulated Cisco IOS-XE device hands an operator: UDI capture, RUM report, return code.

The RUM signature is an HMAC-SHA256 with `EMULATOR_RUM_KEY`, which the Cisco emulator checks.
Real devices sign with keys held in their secure element; no emulator has those, so reports from
real devices (and the samples) never verify here. The return code is derived from the UDI, so the
Cisco emulator can recompute it. Layouts follow samples/cisco/ (README there); this module writes
files and knows nothing about HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap.errors import InputError

EMULATOR_RUM_KEY = b"airgap-emulator/rum-signing-key/v1"
_RETURN_CODE_KEY = b"airgap-emulator/return-code/v1"
_ASSET_SIGNATURE_KEY = b"airgap-emulator/asset-signature/v1"
_NONCE_KEY = b"airgap-emulator/nonce/v1"
_NAMESPACE = uuid.UUID("6f1d3c2a-8b4e-5a79-9c0d-2e7f41b8a3d6")

PID_PATTERN = re.compile(r"[A-Z0-9/._-]+")
SN_PATTERN = re.compile(r"[A-Z0-9]+")
HOSTNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

# Public Cisco tag strings, as in samples/cisco/rum/.
C9300_SOFTWARE_TAG = "regid.2017-05.com.cisco.C9300,v1_727af1d9-6c39-4444-b301-863f81445b72"
ISR4300_SOFTWARE_TAG = "regid.2014-12.com.cisco.ISR_4300,1.0_2b9d6e41-8f0a-4c73-b5e2-91a7c3d0f684"
NETWORK_ADVANTAGE_TAG = (
    "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"
)
DNA_ADVANTAGE_TAG = (
    "regid.2017-05.com.cisco.c9300_dna_advantage,1.0_411773c3-2116-4c10-94a4-5d357fe6ff18"
)
ISR_APPX_TAG = "regid.2014-12.com.cisco.ISR_4331_Appx,1.0_e58a0c37-1d94-4f26-8b3e-6a7f2c9d0b15"
SOFTWARE_VERSION = "17.12.04"
_REPORT_PERIOD = 30 * 24 * 3600  # seconds of usage covered by each report
_SAMPLE_SECONDS = 900  # seconds between usage samples
_ALPHANUMERIC = string.ascii_letters + string.digits


@dataclass(frozen=True)
class DeviceFiles:
    """The paths `write_device` wrote."""

    hostname: str
    udi: Path  # `show license udi` terminal capture
    rum: Path  # signed RUM usage report
    return_code: Path | None = None  # `license smart authorization return` capture


def sign_payload(payload: str) -> str:
    """Sign a RUM payload string as an emulated device does.

    Args:
        payload: the payload exactly as it appears in the report (a JSON text).

    Returns:
        Base64 of HMAC-SHA256 over the payload's UTF-8 bytes with `EMULATOR_RUM_KEY`.
    """
    digest = hmac.new(EMULATOR_RUM_KEY, payload.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_payload(payload: str, value: str) -> bool:
    """Check a RUM payload signature made by `sign_payload`; any changed byte fails.

    Args:
        payload: the payload string as received.
        value: the base64 signature value from the report.

    Returns:
        True when the signature matches.
    """
    expected = sign_payload(payload).encode("ascii")
    return hmac.compare_digest(expected, value.encode("utf-8", "surrogatepass"))


def return_code_for(pid: str, sn: str) -> str:
    """The return code an emulated device prints for `license smart authorization return`.

    Shape as in samples/cisco/return-code.txt: 51 alphanumerics starting with `C`, in eight
    dash-separated groups of 6 and a final group of 3.

    Args:
        pid: product id, e.g. "C9300-24T".
        sn: serial number, e.g. "FOC2437L1ZK".

    Returns:
        The code, derived from an HMAC of the UDI, so the Cisco emulator can recompute it.
    """
    digest = hmac.new(_RETURN_CODE_KEY, _udi(pid, sn).encode("utf-8"), hashlib.sha512).digest()
    chars = "C" + "".join(_ALPHANUMERIC[b % len(_ALPHANUMERIC)] for b in digest[:50])
    groups = [chars[i : i + 6] for i in range(0, 48, 6)] + [chars[48:51]]
    return "-".join(groups)


def product_instance_identifier(pid: str, sn: str) -> str:
    """The device's product instance identifier (a UUID), stable for a UDI."""
    return str(uuid.uuid5(_NAMESPACE, _udi(pid, sn)))


def software_tag_for(pid: str) -> str:
    """The software tag identifier an emulated device of this PID reports."""
    if pid.startswith("C9300"):
        return C9300_SOFTWARE_TAG
    if pid.startswith("ISR43"):
        return ISR4300_SOFTWARE_TAG
    family = re.sub(r"[^A-Za-z0-9_]", "_", re.split(r"[-/]", pid, maxsplit=1)[0])
    return f"regid.2024-01.com.cisco.{family},1.0_{uuid.uuid5(_NAMESPACE, 'tag:' + family)}"


def entitlement_tags_for(pid: str) -> list[str]:
    """The entitlement tags an emulated device of this PID reports usage for, one per report."""
    if pid.startswith("C9300"):
        return [NETWORK_ADVANTAGE_TAG, DNA_ADVANTAGE_TAG]
    if pid.startswith("ISR43"):
        return [ISR_APPX_TAG]
    return [NETWORK_ADVANTAGE_TAG]


def default_hostname(sn: str) -> str:
    """The hostname used when none is given: `dev-<sn lower-case>`."""
    return f"dev-{sn.lower()}"


def render_udi_capture(*, pid: str, sn: str, hostname: str) -> str:
    """A `show license udi` terminal capture, laid out like samples/.../with-prompt.txt."""
    return (
        f"\n{hostname}#terminal length 0\n"
        f"{hostname}#show license udi\n"
        f"UDI: PID:{pid},SN:{sn}\n"
        "\n\n"
        f"{hostname}#"
    )


def render_return_capture(*, pid: str, sn: str, hostname: str) -> str:
    """A `license smart authorization return local offline` capture, like return-code.txt."""
    return (
        f"{hostname}#license smart authorization return local offline\n"
        "Enter this return code in Cisco Smart Software Manager portal:\n"
        f"UDI: PID:{pid},SN:{sn}\n"
        f"    Return code: {return_code_for(pid, sn)}\n"
        "\n"
        f"{hostname}#"
    )


def render_rum_report(*, pid: str, sn: str, hostname: str, now: datetime) -> str:
    """A RUM report as `license smart save usage` writes it, one signed report per entitlement.

    Laid out like samples/cisco/rum/rum-report-c9300.xml (payload layout v2.0).

    Args:
        pid: product id.
        sn: serial number.
        hostname: device hostname.
        now: when the report is saved; the only input that is not derived from the UDI.

    Returns:
        The XML text.
    """
    sudi = {"udi_pid": pid, "udi_serial_number": sn}
    piid = product_instance_identifier(pid, sn)
    software_tag = software_tag_for(pid)
    end = int(now.timestamp()) // 60 * 60
    start = end - _REPORT_PERIOD
    timestamp_ms = int(now.timestamp() * 1000)
    system_info = {
        "sudi": sudi,
        "product_instance_identifier": piid,
        "hostname": hostname,
        "software_tag_identifier": software_tag,
        "timestamp": timestamp_ms,
        "nonce": _nonce(pid, sn, timestamp_ms),
        "device_list": [
            {"sudi": sudi, "hostname": hostname, "software_tag_identifier": software_tag}
        ],
    }
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<smartLicense>",
        "<smartLicenseSystemInfo><data><![CDATA["
        + _compact(system_info)
        + "]]></data></smartLicenseSystemInfo>",
    ]
    for index, entitlement in enumerate(entitlement_tags_for(pid)):
        report_id = start + index
        payload = _compact(
            {
                "version": "2.0",
                "asset_identification": {
                    "report_id": report_id,
                    "asset": {"name": software_tag},
                    "instance": {"sudi": sudi, "product_instance_identifier": piid},
                },
                "signature": {
                    "signing_type": "builtin",
                    "key": software_tag,
                    "value": _asset_signature(pid, sn, report_id),
                },
                "meta": {
                    "entitlement_tag": entitlement,
                    "utility_enabled": False,
                    "software_version": SOFTWARE_VERSION,
                    "ha_udi": [{"role": "Active", "sudi": sudi}],
                },
                "measurements": [
                    {
                        "log_time": end - 12,
                        "metric_name": "ENTITLEMENT",
                        "start_time": start + index,
                        "end_time": end,
                        "sample_interval": end - start - index,
                        "num_samples": (end - start - index) // _SAMPLE_SECONDS,
                        "meta": {"termination_reason": "CurrentUsageRequested"},
                        "value": {"type": "COUNT", "value": "1"},
                    }
                ],
            }
        )
        envelope = {
            "payload": payload,
            "header": {"type": "rum"},
            "signature": {
                "sudi": sudi,
                "signing_type": "builtin",
                "key": software_tag,
                "value": sign_payload(payload),
            },
        }
        lines.append("<RUMReport><![CDATA[" + _compact(envelope) + "]]></RUMReport>")
    lines.append("</smartLicense>")
    return "\n".join(lines) + "\n"


def write_device(
    *,
    pid: str,
    sn: str,
    hostname: str | None,
    out: Path,
    return_code: bool = False,
    now: datetime | None = None,
) -> DeviceFiles:
    """Write an emulated device's capture files into `out` (created if missing).

    Files: `<hostname>.udi.txt`, `<hostname>.rum.xml` and, with `return_code`,
    `<hostname>.return.txt`. Output depends only on the arguments (`now` defaults to the
    current time and only affects the RUM report).

    Args:
        pid: product id, `[A-Z0-9/._-]+`, e.g. "C9300-24T" or "ISR4331/K9".
        sn: serial number, `[A-Z0-9]+`.
        hostname: device hostname; default `dev-<sn lower-case>`.
        out: output folder.
        return_code: also write the return-code capture.
        now: report time (timezone-aware; naive values are taken as UTC).

    Raises:
        InputError: invalid pid, sn or hostname, or the files cannot be written.

    Returns:
        The paths written.
    """
    if not PID_PATTERN.fullmatch(pid):
        raise InputError(
            f"invalid PID {pid!r}",
            hint="Use upper-case letters, digits and / . _ -, e.g. C9300-24T.",
        )
    if not SN_PATTERN.fullmatch(sn):
        raise InputError(
            f"invalid serial number {sn!r}",
            hint="Use upper-case letters and digits only, e.g. FOC2437L1ZK.",
        )
    name = hostname if hostname is not None else default_hostname(sn)
    if not HOSTNAME_PATTERN.fullmatch(name):
        raise InputError(
            f"invalid hostname {name!r}",
            hint="Use letters, digits, '.', '_' and '-', at most 63 characters.",
        )
    when = now if now is not None else datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    contents: list[tuple[Path, str]] = [
        (out / f"{name}.udi.txt", render_udi_capture(pid=pid, sn=sn, hostname=name)),
        (out / f"{name}.rum.xml", render_rum_report(pid=pid, sn=sn, hostname=name, now=when)),
    ]
    if return_code:
        contents.append(
            (out / f"{name}.return.txt", render_return_capture(pid=pid, sn=sn, hostname=name))
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, text in contents:
            path.write_bytes(text.encode("utf-8"))
    except OSError as exc:
        raise InputError(f"cannot write device files to {out}: {exc}") from exc
    return DeviceFiles(
        hostname=name,
        udi=contents[0][0],
        rum=contents[1][0],
        return_code=contents[2][0] if return_code else None,
    )


def _udi(pid: str, sn: str) -> str:
    return f"PID:{pid},SN:{sn}"


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _nonce(pid: str, sn: str, timestamp_ms: int) -> str:
    # Devices write a 19-digit decimal nonce in the system info (see the samples).
    material = f"{_udi(pid, sn)}|{timestamp_ms}".encode()
    number = int.from_bytes(hmac.new(_NONCE_KEY, material, hashlib.sha256).digest()[:8], "big")
    return str(10**18 + number % (9 * 10**18))


def _asset_signature(pid: str, sn: str, report_id: int) -> str:
    material = f"{_udi(pid, sn)}|{report_id}".encode()
    digest = hmac.new(_ASSET_SIGNATURE_KEY, material, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
