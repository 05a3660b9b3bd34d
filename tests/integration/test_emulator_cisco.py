"""The Cisco Smart Licensing emulator over real HTTP: tokens, SLUP, polls, RUM, SLR, faults, TLS.

The client here is deliberately naive (plain `requests`), so these tests pin the emulator's
wire behaviour rather than the product's client.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airgap.emulators.cisco import CiscoEmulator, build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, return_code_for, write_device
from airgap.emulators.server import EmulatorServer, Faults
from airgap.errors import ConfigError

API = "/services/api/smart-accounts-and-licensing/"
PREFIXES = [
    "/services/api/smart-accounts-and-licensing/",
    "/services/api/services/api/smart-accounts-and-licensing/",
    "//services/api/smart-accounts-and-licensing/",
]
PID, SN = "C9300-24T", "FOC2437L1ZK"
HSEC = "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4"
POLL_DELAY = 0.15  # seconds


@dataclass
class Swapi:
    """A minimal hand-written client for the emulator."""

    server: EmulatorServer
    emu: CiscoEmulator
    session: requests.Session
    verify: str | bool = True
    token: str | None = None

    def get_token(self, path: str = "/oauth2/default/v1/token", **form: str) -> requests.Response:
        fields = {"grant_type": "client_credentials", "client_id": "id", "client_secret": "s"}
        fields.update(form)
        return self.session.post(self.server.url + path, data=fields, timeout=5, verify=self.verify)

    def login(self) -> Swapi:
        resp = self.get_token()
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access_token"]
        return self

    def headers(self, pid: str = PID, sn: str = SN, va: str = "Default") -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "X-CSW-SMART-ACCOUNT-ID": str(self.emu.account_id),
            "X-CSW-VIRTUAL-ACCOUNT-ID": str(self.emu.virtual_accounts[va]),
            "X-CSW-REQUESTING-SYSTEM": json.dumps({"udi_pid": pid, "udi_serial_number": sn}),
        }

    def post(
        self,
        endpoint: str,
        data: dict[str, Any] | None = None,
        *,
        prefix: str = API,
        headers: dict[str, str] | None = None,
        nonce: str | None = None,
        body: Any = None,
    ) -> requests.Response:
        if body is None:
            body = {
                "data": {
                    "timestamp": int(time.time() * 1000),
                    "nonce": nonce or secrets.token_hex(8),
                    **(data or {}),
                }
            }
        return self.session.post(
            self.server.url + prefix + endpoint,
            data=json.dumps(body) if not isinstance(body, bytes) else body,
            headers={"Content-Type": "application/json", **(headers or self.headers())},
            timeout=5,
            verify=self.verify,
        )

    def reserve(self, pid: str = PID, sn: str = SN, count: Any = "1", **kw: Any) -> int:
        resp = self.post(
            "v2/devices/authrequest",
            {"licenses": [license_entry(pid, sn, keys=[{"entitlement": HSEC, "count": count}])]},
            headers=self.headers(pid, sn),
            **kw,
        )
        assert resp.status_code == 202, resp.text
        return int(resp.json()["poll_id"])

    def give_back(self, code: str, pid: str = PID, sn: str = SN) -> int:
        entry = license_entry(pid, sn, keys=[], remove_code=code)
        resp = self.post("v2/devices/authrequest", {"licenses": [entry]})
        assert resp.status_code == 202, resp.text
        return int(resp.json()["poll_id"])

    def poll(self, poll_id: int | str, action: str = "authorizations") -> requests.Response:
        return self.post("v2/accounts/poll", {"poll_id": poll_id, "action": action})

    def complete(self, poll_id: int, action: str = "authorizations") -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            resp = self.poll(poll_id, action)
            body: dict[str, Any] = resp.json()
            if body["status"] == "COMPLETE":
                assert resp.status_code == 200
                return body
            time.sleep(0.03)
        raise AssertionError(f"poll {poll_id} never completed")

    def stats(self) -> dict[str, Any]:
        resp = self.session.get(f"{self.server.url}/_emulator/stats", timeout=5, verify=self.verify)
        result: dict[str, Any] = resp.json()
        return result


def license_entry(pid: str, sn: str, **extra: Any) -> dict[str, Any]:
    return {"sudi": {"udi_pid": pid, "udi_serial_number": sn}, "hostname": "sw-1", **extra}


def rum_request(path: Path) -> dict[str, Any]:
    """The `reports[]` entry a client builds from a RUM file, payloads kept byte for byte."""
    usage = []
    for raw in re.findall(r"<RUMReport><!\[CDATA\[(.*?)\]\]></RUMReport>", path.read_text()):
        envelope = json.loads(raw)
        usage.append({"payload": envelope["payload"], "signature": envelope["signature"]})
    hostname = re.search(r'"hostname":"([^"]+)"', path.read_text())
    assert hostname is not None
    return {"sudi": usage[0]["signature"]["sudi"], "hostname": hostname.group(1), "usage": usage}


SwapiFactory = Callable[..., Swapi]


@pytest.fixture
def make_swapi() -> Iterator[SwapiFactory]:
    made: list[Swapi] = []

    def make(
        *,
        latency_ms: float = 0,
        faults: Faults | None = None,
        tls: bool = False,
        cert_out: Path | None = None,
        **emulator: Any,
    ) -> Swapi:
        emulator.setdefault("poll_delay", POLL_DELAY)
        emu = CiscoEmulator(seed=1, **emulator)
        server = EmulatorServer(
            emu, latency_ms=latency_ms, faults=faults, tls=tls, cert_out=cert_out
        ).start()
        verify: str | bool = str(server.cert_path) if tls else True
        client = Swapi(server, emu, requests.Session(), verify=verify)
        made.append(client)
        return client

    yield make
    for client in made:
        client.session.close()
        client.server.stop()


@pytest.fixture
def swapi(make_swapi: SwapiFactory) -> Swapi:
    return make_swapi().login()


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/oauth2/default/v1/token", "/as/token.oauth2"])
def test_token_endpoints_issue_bearer_tokens(make_swapi: SwapiFactory, path: str) -> None:
    client = make_swapi()
    resp = client.get_token(path)
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert len(body["access_token"]) > 20


def test_token_refuses_bad_credentials(make_swapi: SwapiFactory) -> None:
    client = make_swapi(client_secret="right")
    for form in ({"client_secret": "wrong"}, {"client_secret": ""}, {"client_id": ""}):
        resp = client.get_token(**form)
        assert resp.status_code == 401
        assert resp.json()["error"] == "invalid_client"
        assert "error_description" in resp.json()
    assert client.get_token(client_secret="right").status_code == 200
    resp = client.get_token(grant_type="password", client_secret="right")
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


def test_token_accepts_basic_client_authentication(make_swapi: SwapiFactory) -> None:
    client = make_swapi()
    resp = client.session.post(
        client.server.url + "/as/token.oauth2",
        data={"grant_type": "client_credentials"},
        auth=("id", "secret"),
        timeout=5,
    )
    assert resp.status_code == 200


def test_expired_token_is_refused(make_swapi: SwapiFactory) -> None:
    client = make_swapi(token_ttl=0.1).login()
    assert client.session.get(
        client.server.url + API + "v2/accounts/search",
        headers=client.headers(),
        timeout=5,
    ).ok
    time.sleep(0.15)
    resp = client.post("v2/devices/authrequest", {"licenses": [license_entry(PID, SN)]})
    assert resp.status_code == 401
    assert resp.json() == {
        "status": "ERROR",
        "code": "UNAUTHORIZED",
        "message": resp.json()["message"],
    }
    assert "expired" in resp.json()["message"].lower()
    assert "Bearer" in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc"])
def test_missing_or_unknown_bearer_is_refused(swapi: Swapi, authorization: str | None) -> None:
    headers = swapi.headers()
    if authorization is None:
        del headers["Authorization"]
    else:
        headers["Authorization"] = authorization
    resp = swapi.post("v2/devices/authrequest", {"licenses": []}, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["code"] == "UNAUTHORIZED"


# --- accounts, headers, bodies ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_accounts_search_under_every_prefix(swapi: Swapi, prefix: str) -> None:
    resp = swapi.session.get(
        swapi.server.url + prefix + "v2/accounts/search",
        headers={"Authorization": f"Bearer {swapi.token}"},
        timeout=5,
    )
    assert resp.status_code == 200
    assert ": " not in resp.text and ", " not in resp.text
    (account,) = resp.json()["accounts"]
    assert account["domain"] == "demo.example.com"
    assert isinstance(account["account_id"], int)
    names = {va["name"]: va["virtual_account_id"] for va in account["virtual_accounts"]}
    assert set(names) == {"Default", "Lab"}
    assert all(isinstance(number, int) for number in names.values())


@pytest.mark.parametrize(
    "header",
    ["X-CSW-SMART-ACCOUNT-ID", "X-CSW-VIRTUAL-ACCOUNT-ID", "X-CSW-REQUESTING-SYSTEM"],
)
def test_missing_device_header_is_a_vendor_error(swapi: Swapi, header: str) -> None:
    headers = swapi.headers()
    del headers[header]
    resp = swapi.post("v2/devices/authrequest", {"licenses": []}, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["code"] == "MISSING_HEADER"
    assert header in resp.json()["message"]


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("X-CSW-SMART-ACCOUNT-ID", "999", 403),
        ("X-CSW-VIRTUAL-ACCOUNT-ID", "Nope", 403),
        ("X-CSW-REQUESTING-SYSTEM", "not json", 400),
        ("X-CSW-REQUESTING-SYSTEM", '{"udi_pid":"X"}', 400),
    ],
)
def test_wrong_device_header_is_refused(swapi: Swapi, header: str, value: str, status: int) -> None:
    headers = swapi.headers()
    headers[header] = value
    resp = swapi.post("v2/devices/authrequest", {"licenses": []}, headers=headers)
    assert resp.status_code == status
    assert set(resp.json()) == {"status", "code", "message"}


def test_account_headers_accept_names_too(swapi: Swapi) -> None:
    headers = swapi.headers()
    headers["X-CSW-SMART-ACCOUNT-ID"] = "demo.example.com"
    headers["X-CSW-VIRTUAL-ACCOUNT-ID"] = "Lab"
    entry = license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": 1}])
    assert swapi.post("v2/devices/authrequest", {"licenses": [entry]}, headers=headers).ok
    assert swapi.emu.reservations[f"{PID}:{SN}"].virtual_account == "Lab"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        {"licenses": []},
        {"data": "x"},
        {"data": {"nonce": "0123456789abcdef", "licenses": []}},
        {
            "data": {
                "timestamp": 1,
                "nonce": "",
                "licenses": [license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": 1}])],
            }
        },
        {"data": {"timestamp": 1, "nonce": "0123456789abcdef", "licenses": []}},
        {"data": {"timestamp": 1, "nonce": "0123456789abcdef", "licenses": [{"sudi": {}}]}},
        {
            "data": {
                "timestamp": 1,
                "nonce": "0123456789abcdef",
                "licenses": [license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": "x"}])],
            }
        },
        {
            "data": {
                "timestamp": 1,
                "nonce": "0123456789abcdef",
                "licenses": [license_entry(PID, SN, keys=[], remove_code=None)],
            }
        },
    ],
)
def test_malformed_body_is_a_400(swapi: Swapi, body: Any) -> None:
    resp = swapi.post("v2/devices/authrequest", body=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["status"] == "ERROR"
    assert swapi.emu.reservations == {}


def test_unknown_path_and_wrong_method(swapi: Swapi) -> None:
    resp = swapi.post("v2/devices/nothing")
    assert resp.status_code == 404
    assert resp.json()["code"] == "NOT_FOUND"
    assert requests.get(swapi.server.url + "/elsewhere", timeout=5).status_code == 404
    resp = swapi.session.get(swapi.server.url + API + "v2/devices/authrequest", timeout=5)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"


# --- reserve, poll, return --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("count", ["1", 1])
def test_reserve_polls_until_complete(swapi: Swapi, prefix: str, count: Any) -> None:
    entry = license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": count}])
    resp = swapi.post("v2/devices/authrequest", {"licenses": [entry]}, prefix=prefix)
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "OK_POLL"
    assert body["poll_interval"] == 300
    assert body["action"] == "authorizations"
    first = swapi.post(
        "v2/accounts/poll",
        {"poll_id": body["poll_id"], "action": "authorizations"},
        prefix=prefix,
    )
    assert first.status_code == 202
    assert first.json()["status"] == "OK_POLL"
    time.sleep(POLL_DELAY)
    done = swapi.complete(body["poll_id"])
    (auth,) = done["data"]["authorizations"]
    assert auth["status"] == "SUCCESS"
    assert auth["sudi"] == {"udi_pid": PID, "udi_serial_number": SN}
    assert set(auth) >= {
        "product_instance_identifier",
        "smart_license",
        "auth_status",
        "error_code",
        "status_message",
        "correlation_id",
    }
    lic = base64.b64decode(auth["smart_license"]).decode()
    assert lic.startswith("<smartLicense><smartLicenseAuthorization>")
    assert f"<udi>P:{PID},S:{SN}</udi>" in lic
    assert f"<tag>{HSEC}</tag><count>1</count>" in lic
    assert f"<piid>{auth['product_instance_identifier']}</piid>" in lic
    assert "<smartAccountDomain>demo.example.com</smartAccountDomain>" in lic
    assert swapi.stats()["mutations"] == {f"{PID}:{SN}": {"reserve": 1, "return": 0, "report": 0}}


def test_poll_id_is_a_bare_18_digit_integer_read_exactly(swapi: Swapi) -> None:
    entry = license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": "1"}])
    resp = swapi.post("v2/devices/authrequest", {"licenses": [entry]})
    match = re.search(r'"poll_id":(\d+)[,}]', resp.text)
    assert match is not None, resp.text
    literal = match.group(1)
    assert len(literal) == 18
    assert int(literal) > 2**53
    assert json.loads(resp.text, parse_int=str)["poll_id"] == literal
    # A client that reads the id as a double loses digits and asks for a poll that is not there.
    rounded = int(float(literal))
    assert rounded != int(literal)
    lost = swapi.poll(rounded)
    assert lost.status_code == 404
    assert lost.json()["code"] == "POLL_ID_NOT_FOUND"
    time.sleep(POLL_DELAY)
    as_string = swapi.poll(literal)
    assert as_string.json()["status"] == "COMPLETE"
    assert f'"poll_id":{literal},' in as_string.text


def test_unknown_or_malformed_poll_id(swapi: Swapi) -> None:
    assert swapi.poll(123456789012345678).status_code == 404
    assert swapi.poll("12ab").status_code == 400
    poll_id = swapi.reserve()
    assert swapi.poll(poll_id, "acknowledgements").status_code == 400


def test_reserve_refused_when_licenses_run_out(swapi: Swapi) -> None:
    swapi.emu.licenses[HSEC] = 1
    swapi.complete(swapi.reserve(sn="FOC1"))
    done = swapi.complete(swapi.reserve(sn="FOC2"))
    (auth,) = done["data"]["authorizations"]
    assert auth["status"] == "FAILED"
    assert auth["error_code"] == "INSUFFICIENT_LICENSES"
    assert auth["smart_license"] == ""
    assert "Insufficient" in auth["status_message"]
    assert f"{PID}:FOC2" not in swapi.stats()["mutations"]


def test_return_accepted_after_reserve_then_refused_again(swapi: Swapi, tmp_path: Path) -> None:
    files = write_device(pid=PID, sn=SN, hostname="sw-1", out=tmp_path, return_code=True)
    assert files.return_code is not None
    code = re.search(r"Return code: (\S+)", files.return_code.read_text()).group(1)  # type: ignore[union-attr]
    swapi.complete(swapi.reserve())
    done = swapi.complete(swapi.give_back(code))
    (auth,) = done["data"]["authorizations"]
    assert auth["status"] == "SUCCESS", auth
    assert auth["auth_status"] == "RETURNED"
    assert f"{PID}:{SN}" not in swapi.emu.reservations
    again = swapi.complete(swapi.give_back(code))["data"]["authorizations"][0]
    assert again["status"] == "FAILED"
    assert again["error_code"] == "NO_RESERVATION"
    assert swapi.stats()["mutations"][f"{PID}:{SN}"] == {"reserve": 1, "return": 1, "report": 0}


def test_return_refused_without_reservation(swapi: Swapi) -> None:
    done = swapi.complete(swapi.give_back(return_code_for(PID, SN)))
    (auth,) = done["data"]["authorizations"]
    assert auth["status"] == "FAILED"
    assert auth["error_code"] == "NO_RESERVATION"
    assert swapi.stats()["mutations"] == {}


def test_return_refused_with_a_wrong_code(swapi: Swapi) -> None:
    swapi.complete(swapi.reserve())
    wrong = return_code_for(PID, "OTHER1")
    done = swapi.complete(swapi.give_back(wrong))
    (auth,) = done["data"]["authorizations"]
    assert auth["status"] == "FAILED"
    assert auth["error_code"] == "INVALID_RETURN_CODE"
    assert f"{PID}:{SN}" in swapi.emu.reservations


# --- usage reports ----------------------------------------------------------------------------


def test_rum_report_accepted_tampered_failed_and_duplicate_failed(
    swapi: Swapi, tmp_path: Path
) -> None:
    files = write_device(pid=PID, sn=SN, hostname="sw-1", out=tmp_path)
    report = rum_request(files.rum)
    resp = swapi.post("v2/devices/reportusage", {"reports": [report]})
    assert resp.status_code == 202
    assert resp.json()["action"] == "acknowledgements"
    time.sleep(POLL_DELAY)
    done = swapi.complete(resp.json()["poll_id"], "acknowledgements")
    (ack,) = done["data"]["acknowledgements"]
    assert ack["status"] == "SUCCESS", ack
    assert ack["sudi"] == {"udi_pid": PID, "udi_serial_number": SN}
    assert ack["software_tag_identifier"].startswith("regid.2017-05.com.cisco.C9300")
    xml = base64.b64decode(ack["smart_license"]).decode()
    assert xml.startswith("<smartLicense><smartLicensePolicy>")
    data = re.search(r"<smartLicenseRumAck><data><!\[CDATA\[(.*?)\]\]>", xml)
    assert data is not None
    (acked,) = json.loads(data.group(1))
    assert acked["hostname"] == "sw-1"
    assert len(acked["report_acks"]) == len(report["usage"])

    tampered = json.loads(json.dumps(report))
    payload = tampered["usage"][0]["payload"]
    tampered["usage"][0]["payload"] = payload.replace('"value":"1"', '"value":"2"', 1)
    assert tampered["usage"][0]["payload"] != payload
    resp = swapi.post("v2/devices/reportusage", {"reports": [tampered]})
    (bad,) = swapi.complete(resp.json()["poll_id"], "acknowledgements")["data"]["acknowledgements"]
    assert bad["status"] == "FAILED"
    assert bad["error_code"] == "INVALID_SIGNATURE"
    assert bad["smart_license"] == ""

    resp = swapi.post("v2/devices/reportusage", {"reports": [report]})
    (dup,) = swapi.complete(resp.json()["poll_id"], "acknowledgements")["data"]["acknowledgements"]
    assert dup["status"] == "FAILED"
    assert "duplicate" in dup["status_message"].lower()
    assert swapi.stats()["mutations"] == {f"{PID}:{SN}": {"reserve": 0, "return": 0, "report": 1}}


def test_sample_reports_with_real_signatures_do_not_verify(swapi: Swapi, tmp_path: Path) -> None:
    files = write_device(pid=PID, sn=SN, hostname="sw-1", out=tmp_path)
    report = rum_request(files.rum)
    report["usage"][0]["signature"]["value"] = "1Pql4rgaNn1V3Htf7Ji8eIbi0X2edE9qn4rm4IGti8A="
    resp = swapi.post("v2/devices/reportusage", {"reports": [report]})
    (ack,) = swapi.complete(resp.json()["poll_id"], "acknowledgements")["data"]["acknowledgements"]
    assert ack["status"] == "FAILED"


def test_malformed_report_is_a_400(swapi: Swapi) -> None:
    bad = {"sudi": {"udi_pid": PID, "udi_serial_number": SN}, "usage": [{"payload": {}}]}
    assert swapi.post("v2/devices/reportusage", {"reports": [bad]}).status_code == 400
    assert swapi.post("v2/devices/reportusage", {"reports": []}).status_code == 400


# --- nonces -----------------------------------------------------------------------------------


def test_reused_nonce_is_accepted_and_counted(swapi: Swapi) -> None:
    swapi.reserve(nonce="AAAAAAAAAAAAAAAA")
    swapi.reserve(nonce="AAAAAAAAAAAAAAAA")
    assert swapi.stats()["nonce_reuse"] == 1


def test_reused_nonce_is_refused_under_strict_nonce(make_swapi: SwapiFactory) -> None:
    client = make_swapi(strict_nonce=True).login()
    client.reserve(nonce="AAAAAAAAAAAAAAAA")
    entry = license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": 1}])
    resp = client.post("v2/devices/authrequest", {"licenses": [entry]}, nonce="AAAAAAAAAAAAAAAA")
    assert resp.status_code == 400
    assert resp.json()["code"] == "NONCE_REUSED"
    assert client.stats()["mutations"][f"{PID}:{SN}"]["reserve"] == 1


# --- summary, devices, SLR --------------------------------------------------------------------


def test_usage_summary_counts_reservations_and_reports(swapi: Swapi, tmp_path: Path) -> None:
    swapi.reserve(sn="FOC1")
    swapi.reserve(sn="FOC2")
    files = write_device(pid=PID, sn="FOC3", hostname=None, out=tmp_path)
    swapi.post("v2/devices/reportusage", {"reports": [rum_request(files.rum)]})
    resp = swapi.post("v3/licenses/summary", {"tags": [HSEC, NETWORK_ADVANTAGE_TAG]})
    assert resp.status_code == 200
    by_tag = {entry["tag"]: entry for entry in resp.json()["data"]["licenses"]}
    assert by_tag[HSEC]["reserved"] == 2
    assert by_tag[HSEC]["in_use"] == 2
    assert by_tag[HSEC]["available"] == by_tag[HSEC]["purchased"] - 2
    assert by_tag[NETWORK_ADVANTAGE_TAG]["reported"] == 1
    everything = swapi.post("v3/licenses/summary", {"tags": []}).json()["data"]["licenses"]
    assert {HSEC, NETWORK_ADVANTAGE_TAG} <= {entry["tag"] for entry in everything}
    assert swapi.post("v3/licenses/summary", {"tags": "x"}).status_code == 400


def test_devices_are_listed_with_paging(swapi: Swapi) -> None:
    for sn in ("FOC1", "FOC2", "FOC3"):
        swapi.reserve(sn=sn)
    url = swapi.server.url + API + "v1/accounts/demo.example.com/devices"
    auth = {"Authorization": f"Bearer {swapi.token}"}

    def page(**body: Any) -> requests.Response:
        return swapi.session.post(url, json=body, headers=auth, timeout=5)

    first = page(virtualAccounts=["Default"], limit=2, offset=0).json()
    assert first["totalRecords"] == 3
    assert [d["serialNumber"] for d in first["devices"]] == ["FOC1", "FOC2"]
    assert first["devices"][0]["reservationStatus"] == "RESERVED"
    assert first["devices"][0]["licenses"] == [{"entitlementTag": HSEC, "quantity": 1}]
    second = page(virtualAccounts=["Default"], limit="2", offset="2").json()
    assert [d["serialNumber"] for d in second["devices"]] == ["FOC3"]
    assert page(virtualAccounts=["Lab"]).json()["totalRecords"] == 0
    assert page(virtualAccounts=["Nope"]).status_code == 400
    assert page(limit=0).status_code == 400
    other = swapi.session.post(
        swapi.server.url + API + "v1/accounts/other.example.com/devices",
        json={},
        headers=auth,
        timeout=5,
    )
    assert other.status_code == 403


def test_slr_reserve_licenses_returns_authorization_codes(swapi: Swapi) -> None:
    url = (
        swapi.server.url
        + API
        + "v2/accounts/demo.example.com/virtual-accounts/Default/reserve-licenses"
    )
    body = {
        "reservationRequests": [
            {
                "reservationCode": "CB-ZC9300-24T:FOC2437L1ZK-AQ7fK2mZr-3C",
                "reservationType": "SPECIFIC",
                "licenses": [
                    {"entitlementTag": HSEC, "quantity": "1", "precedence": "LONGEST_TERM_FIRST"}
                ],
            },
            {
                "reservationCode": "garbage",
                "reservationType": "SPECIFIC",
                "licenses": [{"entitlementTag": HSEC, "quantity": 1}],
            },
        ]
    }
    resp = swapi.session.post(
        url, json=body, headers={"Authorization": f"Bearer {swapi.token}"}, timeout=5
    )
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["status"] == "PARTIAL_SUCCESS"
    good, bad = answer["authorizationCodes"]
    assert good["status"] == "SUCCESS"
    assert good["authorizationCode"].startswith("<specificPLR><authorizationCode>")
    assert f"<udi>P:{PID},S:{SN}</udi>" in good["authorizationCode"]
    assert bad["status"] == "FAILED"
    assert bad["errorCode"] == "INVALID_RESERVATION_CODE"
    assert swapi.stats()["mutations"][f"{PID}:{SN}"]["reserve"] == 1
    missing = swapi.session.post(
        url.replace("/Default/", "/Nope/"),
        json=body,
        headers={"Authorization": f"Bearer {swapi.token}"},
        timeout=5,
    )
    assert missing.status_code == 404


# --- faults, stats, TLS -----------------------------------------------------------------------


def test_injected_429_has_retry_after_and_changes_nothing(swapi: Swapi) -> None:
    swapi.server.faults.fail_next("authrequest", 429)
    entry = license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": 1}])
    resp = swapi.post("v2/devices/authrequest", {"licenses": [entry]})
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    stats = swapi.stats()
    assert stats["mutations"] == {}
    assert "authrequest" not in stats["calls"]
    assert stats["faults"]["429"] == 1
    assert swapi.emu.polls == {}
    swapi.reserve()
    assert swapi.stats()["mutations"][f"{PID}:{SN}"]["reserve"] == 1


def test_reset_loses_the_answer_but_the_reservation_happened(swapi: Swapi) -> None:
    swapi.server.faults.fail_next("authrequest", "reset")
    entry = license_entry(PID, SN, keys=[{"entitlement": HSEC, "count": 1}])
    with pytest.raises(requests.ConnectionError):
        swapi.post("v2/devices/authrequest", {"licenses": [entry]})
    stats = swapi.stats()
    assert stats["faults"]["reset"] == 1
    assert stats["calls"]["authrequest"] == 1
    assert stats["mutations"] == {f"{PID}:{SN}": {"reserve": 1, "return": 0, "report": 0}}
    devices = swapi.session.post(
        swapi.server.url + API + "v1/accounts/demo.example.com/devices",
        json={},
        headers={"Authorization": f"Bearer {swapi.token}"},
        timeout=5,
    ).json()["devices"]
    assert [d["reservationStatus"] for d in devices] == ["RESERVED"]


def test_stats_endpoint_shape(swapi: Swapi) -> None:
    swapi.reserve()
    stats = swapi.stats()
    assert set(stats) == {"calls", "mutations", "nonce_reuse", "faults"}
    assert stats["calls"] == {"token": 1, "authrequest": 1}
    assert stats["nonce_reuse"] == 0
    assert stats["faults"] == {"429": 0, "500": 0, "reset": 0, "slow": 0}


def test_tls_with_cert_out_is_verified(make_swapi: SwapiFactory, tmp_path: Path) -> None:
    cert = tmp_path / "cisco.pem"
    client = make_swapi(tls=True, cert_out=cert).login()
    assert client.server.url.startswith("https://")
    assert client.verify == str(cert)
    client.complete(client.reserve())
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(client.server.url + "/as/token.oauth2", timeout=5)


def test_build_cisco_server_for_the_cli(tmp_path: Path) -> None:
    server = build_cisco_server(
        poll_delay=0, faults="500=1", token_ttl=5, tls=True, cert_out=tmp_path / "c.pem"
    )
    with server:
        assert isinstance(server.app, CiscoEmulator)
        assert server.app.token_ttl == 5
        resp = requests.post(
            server.url + "/as/token.oauth2", verify=str(tmp_path / "c.pem"), timeout=5
        )
        assert resp.status_code == 500
    with pytest.raises(ConfigError):
        build_cisco_server(faults="bogus=1")
