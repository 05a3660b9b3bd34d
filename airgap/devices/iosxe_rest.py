"""IOS XE over the Smart Licensing Using Policy REST API (HTTPS, basic auth, 17.3.2 and later).

Calls the API as Cisco's IOS XE sample code does (`GET /smartlic-service/list` with
`FOXY-API-VERSION: 1`, `POST /smartlic-service/close-reports` with a `test=` form body,
`GET /smartlic-service/all-reports`, `POST /smartlic-service/import` with the file's text) and
wraps the reports into a usage file the way that sample writes one for an offline upload:
`<smartLicense><RUMReport><![CDATA[<report JSON>]]></RUMReport>…</smartLicense>`, so every
signed payload string reaches Cisco byte for byte.

What the API does not offer is said where it matters: it has no `show license udi` (the UDIs
are read from the reports' own `ha_udi` and signature, or from the table of contents), no
documented confirmation of an import beyond the table of contents (read leniently: every field
but `usage_list` is optional), and no way to return an authorization code (Cisco's API
reference says so), for which the ssh transport is needed.

TLS is verified against the CA bundle the inventory names, or the system's; it is off only when
the inventory row says `verify=false`. A `requests.Session` is not shared between threads: use
one transport per thread at a time.
"""

from __future__ import annotations

import json
from typing import Any

import requests
import urllib3

from airgap.devices.base import Endpoint, Login
from airgap.devices.iosxe import LicenseStatus, UdiAuthorization
from airgap.errors import DeviceAuthError, DeviceError, DeviceUnreachable

__all__ = ["RestTransport"]

BASE_PATH = "/smartlic-service"
_TOC_HEADERS = {
    "FOXY-API-VERSION": "1",
    "Accept": "application/yang-data+json",
    "Content-Type": "application/yang-data+json",
    "Cache-Control": "no-cache",
}
_ACKED_STATES = ("ACKED", "ACK", "ACKNOWLEDGED")


class RestTransport:
    """One IOS XE device over its SLP REST API."""

    def __init__(self, endpoint: Endpoint, login: Login) -> None:
        """Prepare a session; nothing is sent yet.

        Args:
            endpoint: host, port, TLS verification and the per-call timeout.
            login: the device's local user; a password is required.

        Raises:
            DeviceAuthError: the login has no password (the API takes basic auth only).
        """
        if not login.password:
            raise DeviceAuthError(
                f"{endpoint.hostname}: the SLP REST API needs a password (a key file is for ssh)"
            )
        self._reports: list[dict[str, Any]] | None = None  # the last all-reports answer
        self.endpoint = endpoint
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self.base = f"https://{host}:{endpoint.port}{BASE_PATH}"
        self._session = requests.Session()
        self._session.auth = (login.username, login.password)
        self._session.verify = endpoint.verify
        self._session.trust_env = False  # no proxies or netrc from the environment

    @property
    def name(self) -> str:
        """How messages name the device."""
        return f"{self.endpoint.hostname} ({self.endpoint.host}:{self.endpoint.port})"

    def _call(
        self,
        method: str,
        path: str,
        *,
        mutating: bool,
        data: bytes | dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        url = self.base + path
        timeout = self.endpoint.timeout
        try:
            response = self._session.request(
                method, url, data=data, headers=headers, timeout=(timeout, timeout)
            )
        except requests.exceptions.SSLError as exc:
            raise DeviceUnreachable(
                f"{self.name}: TLS verification failed ({_reason(exc)})",
                reason="tls",
                hint="Give the device's CA bundle in the inventory's ca_bundle column.",
            ) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise DeviceUnreachable(
                f"{self.name}: no connection within {timeout:g} s", reason="timeout"
            ) from exc
        except requests.exceptions.ReadTimeout as exc:
            raise DeviceUnreachable(
                f"{self.name}: {method} {path} got no answer within {timeout:g} s"
                + ("; the device may have acted" if mutating else ""),
                reason="timeout",
                uncertain=mutating,
                hint="Read the device's status before trying again." if mutating else None,
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise DeviceUnreachable(
                    f"{self.name}: connection refused ({_reason(exc)})", reason="refused"
                ) from exc
            raise DeviceUnreachable(
                f"{self.name}: the connection dropped during {method} {path}"
                + ("; the device may have acted" if mutating else ""),
                reason="dropped",
                uncertain=mutating,
                hint="Read the device's status before trying again." if mutating else None,
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise DeviceUnreachable(
                f"{self.name}: {method} {path} failed ({_reason(exc)})",
                reason="dropped",
                uncertain=mutating,
            ) from exc
        if response.status_code == 401:
            raise DeviceAuthError(f"{self.name}: the device refused the credentials (HTTP 401)")
        if response.status_code >= 400:
            raise DeviceError(f"{self.name}: {_device_text(response)}")
        return response

    def _json(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise DeviceError(f"{self.name}: {what} is not JSON") from exc
        if not isinstance(body, dict):
            raise DeviceError(f"{self.name}: {what} is not a JSON object")
        return body

    def close_reports(self) -> None:
        """Close the open reports so that current usage is reported.

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError: as the call failed.
        """
        # Cisco's sample posts a form body `test=`; the device ignores the body.
        self._call("POST", "/close-reports", mutating=False, data={"test": ""})
        self._reports = None

    def all_reports(self) -> list[dict[str, Any]]:
        """The signed reports the device holds, as it sent them."""
        body = self._json(self._call("GET", "/all-reports", mutating=False), "all-reports")
        usage = body.get("usage", [])
        if isinstance(usage, dict):
            usage = [usage]
        if not isinstance(usage, list) or not all(isinstance(r, dict) for r in usage):
            raise DeviceError(f"{self.name}: all-reports holds no list of reports")
        self._reports = usage
        return usage

    def toc(self) -> dict[str, Any]:
        """`GET /smartlic-service/list`: the table of contents."""
        response = self._call("GET", "/list", mutating=False, headers=_TOC_HEADERS)
        return self._json(response, "the table of contents")

    def read_udi(self) -> str:
        """The device's UDIs in `show license udi` layout.

        The API has no UDI call: the UDIs come from the newest report's `ha_udi` (or its
        signature's `sudi`), else from the table of contents.

        Raises:
            DeviceError: neither names a UDI.
            DeviceUnreachable, DeviceAuthError: as the call failed.
        """
        members: list[tuple[str, str, str]] = []
        # The reports a usage read just fetched name the UDIs too: no second request.
        reports = self._reports if self._reports is not None else self.all_reports()
        for report in reversed(reports):
            members = _members_of_report(report)
            if members:
                break
        if not members:
            members = _members_of_toc(self.toc())
        if not members:
            raise DeviceError(f"{self.name}: the device names no UDI (no reports to read it from)")
        _role, pid, sn = members[0]
        text = f"UDI: PID:{pid},SN:{sn}\n\n"
        if len(members) > 1:
            text += "HA UDI List:\n"
            text += "".join(f"    {r}:PID:{p},SN:{s}\n" for r, p, s in members)
            text += "\n"
        return text + "\n"

    def read_usage_and_udi(self) -> tuple[bytes, str]:
        """`read_usage()` then `read_udi()` (which reads the UDIs from the reports just read).

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError: as a call failed.
        """
        usage = self.read_usage(close=True)
        return usage, self.read_udi()

    def read_usage(self, close: bool = True) -> bytes:
        """The device's reports as a usage file, wrapped as Cisco's sample code does.

        Args:
            close: close open reports first, so current usage is included.

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError: as a call failed.

        Returns:
            `<smartLicense>` with one `<RUMReport>` per report (none if the device has none).
        """
        if close:
            self.close_reports()
        parts = ["<smartLicense>"]
        for report in self.all_reports():
            # json.dumps keeps the payload string's value; `]]>` can only occur inside a JSON
            # string, where `\u003e` stands for the same character.
            text = json.dumps(report).replace("]]>", "]]\\u003e")
            parts.append(f"<RUMReport><![CDATA[{text}]]></RUMReport>")
        parts.append("</smartLicense>")
        return "".join(parts).encode("utf-8")

    def import_file(self, name: str, data: bytes) -> str:
        """Push an ACK, policy or authorization code to the device.

        Args:
            name: the file's name (for messages; the API takes only the content).
            data: the file as Cisco wrote it.

        Raises:
            DeviceUnreachable: with `uncertain` set when the answer was lost after sending.
            DeviceAuthError: credentials refused.
            DeviceError: the device refused the file (its text verbatim).

        Returns:
            The device's answer.
        """
        # Cisco's sample sends the XML as application/json; devices accept it that way.
        response = self._call(
            "POST",
            "/import",
            mutating=True,
            data=data,
            headers={"Content-Type": "application/json"},
        )
        try:
            body = response.json()
        except ValueError:
            return response.text
        if isinstance(body, dict):
            for key in ("message", "status", "result"):
                if isinstance(body.get(key), str):
                    return str(body[key])
        return response.text

    def udis(self) -> tuple[tuple[str, str], ...]:
        """The device's UDIs, active unit first (one request: the table of contents)."""
        return self.status().udis

    def status(self) -> LicenseStatus:
        """The licensing state the table of contents shows (fields read leniently).

        Raises:
            DeviceUnreachable, DeviceAuthError, DeviceError: as the call failed.
        """
        toc = self.toc()
        members = _members_of_toc(toc)
        acked: frozenset[int] | None = None
        usage = toc.get("usage_list")
        if isinstance(usage, list):
            ids = set()
            seen_state = False
            for entry in usage:
                if not isinstance(entry, dict):
                    continue
                state = entry.get("state", entry.get("status"))
                if isinstance(state, str):
                    seen_state = True
                    if state.upper() in _ACKED_STATES and _is_int(entry.get("report_id")):
                        ids.add(int(entry["report_id"]))
            acked = frozenset(ids) if seen_state else None
        auths: list[UdiAuthorization] = []
        raw_auths = toc.get("authorizations")
        if isinstance(raw_auths, list):
            for entry in raw_auths:
                if isinstance(entry, dict) and entry.get("pid") and entry.get("sn"):
                    auths.append(
                        UdiAuthorization(
                            str(entry["pid"]),
                            str(entry["sn"]),
                            str(entry.get("status") or "SMART AUTHORIZATION INSTALLED"),
                            _opt_str(entry.get("installed")),
                            _opt_str(entry.get("confirmation_code")),
                        )
                    )
        listed = {(a.pid, a.sn) for a in auths}
        for _role, pid, sn in members:
            if (pid, sn) not in listed and isinstance(raw_auths, list):
                auths.append(UdiAuthorization(pid, sn, "NOT INSTALLED"))
        return LicenseStatus(
            udis=tuple((pid, sn) for _role, pid, sn in members),
            last_ack_received=_opt_str(toc.get("last_ack_received")),
            acknowledged_report_ids=acked,
            authorizations=tuple(auths),
        )

    def return_authorization(self) -> str:
        """Not offered by the SLP REST API.

        Raises:
            DeviceError: always; Cisco's API reference says a return API is not available.
        """
        raise DeviceError(
            f"{self.name}: the SLP REST API cannot return an authorization code",
            hint="List the device with transport ssh to return its authorization code.",
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


def _reason(exc: BaseException) -> str:
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        args = getattr(inner, "args", ())
        nxt = args[0] if args and isinstance(args[0], BaseException) else None
        inner = nxt or inner.__cause__ or inner.__context__
        if inner is exc:
            break
    return type(exc).__name__


def _never_connected(exc: BaseException) -> bool:
    """Whether a connection error happened before the request was sent."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        if isinstance(item, urllib3.exceptions.ProtocolError):
            return False
        reason = getattr(item, "reason", None)
        for nxt in (*getattr(item, "args", ()), reason, item.__cause__, item.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return False


def _device_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "errors"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    text = response.text.strip()
    return text[:500] if text else f"HTTP {response.status_code}"


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.isdigit()
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _members_of_report(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(role, pid, sn) of a report's `ha_udi`, else of its signature's `sudi`."""
    members: list[tuple[str, str, str]] = []
    payload = report.get("payload")
    if isinstance(payload, str):
        try:
            inner = json.loads(payload)
        except ValueError:
            inner = None
        meta = inner.get("meta") if isinstance(inner, dict) else None
        ha = meta.get("ha_udi") if isinstance(meta, dict) else None
        if isinstance(ha, list):
            for entry in ha:
                sudi = entry.get("sudi") if isinstance(entry, dict) else None
                if isinstance(sudi, dict) and sudi.get("udi_pid") and sudi.get("udi_serial_number"):
                    role = entry.get("role") if isinstance(entry.get("role"), str) else "Member"
                    members.append((role, str(sudi["udi_pid"]), str(sudi["udi_serial_number"])))
    if not members:
        signature = report.get("signature")
        sudi = signature.get("sudi") if isinstance(signature, dict) else None
        if isinstance(sudi, dict) and sudi.get("udi_pid") and sudi.get("udi_serial_number"):
            members.append(("Active", str(sudi["udi_pid"]), str(sudi["udi_serial_number"])))
    return members


def _members_of_toc(toc: dict[str, Any]) -> list[tuple[str, str, str]]:
    members: list[tuple[str, str, str]] = []
    ha = toc.get("ha_udi")
    if isinstance(ha, list):
        for entry in ha:
            if isinstance(entry, dict) and entry.get("pid") and entry.get("sn"):
                role = entry.get("role") if isinstance(entry.get("role"), str) else "Member"
                members.append((str(role), str(entry["pid"]), str(entry["sn"])))
    udi = toc.get("udi")
    if not members and isinstance(udi, dict) and udi.get("pid") and udi.get("sn"):
        members.append(("Active", str(udi["pid"]), str(udi["sn"])))
    return members
