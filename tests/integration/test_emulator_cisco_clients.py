"""`airgap emulate cisco` answers requests shaped exactly as clients written by others send them.

The client below is plain `requests` against the emulator run as a separate process on a real
socket. Its requests mirror Cisco's published sample for the swapi offline flow, repository
gve-sw/gve_devnet_smart_licensing_using_policy_offline_reservation_tools: `smartaccount.py`
(form-encoded client-credentials token, `GET v2/accounts/search`, device headers built once,
count `"1"` as a string, a poll whose timestamp is a string, one nonce for every call) and the
Postman collection `postman-collection/Smart Licensing Using Policy Offline.postman_collection.json`
(the fixed 10-character nonce `"random1234"`, the doubled `/services/api/services/api/` prefix,
the device list without `X-CSW-*` headers). None of these values come from airgap's own client.
"""

from __future__ import annotations

import base64
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from integration.conftest import RunningEmulator

from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, return_code_for, write_device

# Postman collection: every body carries this nonce, and the service answers OK_POLL.
POSTMAN_NONCE = "random1234"
BASE = "/services/api/services/api/smart-accounts-and-licensing/"
PID, SN, HOSTNAME = "C8000V", "ASDF1234", "Test-Device-01"
HSEC = "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4"


class SampleClient:
    """The request shapes of Cisco's published `smartaccount.py`, one method per call."""

    def __init__(self, url: str, *, nonce: str = POSTMAN_NONCE) -> None:
        self.url = url
        self.nonce = nonce
        self.session = requests.Session()
        self.session.trust_env = False
        self.auth: dict[str, str] = {}
        self.device_headers: dict[str, str] = {}
        self.statuses: list[str] = []

    def get_token(self) -> None:
        form = {"client_id": "sample-id", "client_secret": "sample-secret"}
        form["grant_type"] = "client_credentials"
        resp = self.session.post(
            self.url + "/as/token.oauth2",
            data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        self.auth = {"Authorization": f"Bearer {json.loads(resp.text)['access_token']}"}

    def account_ids(self, domain: str, virtual_account: str) -> tuple[Any, Any]:
        resp = self.session.get(self.url + BASE + "v2/accounts/search", headers=self.auth)
        assert resp.status_code == 200, resp.text
        for account in json.loads(resp.text)["accounts"]:
            if account["domain"].lower() == domain.lower():
                for va in account["virtual_accounts"]:
                    if va["name"] == virtual_account:
                        return account["account_id"], va["virtual_account_id"]
        raise AssertionError(f"no {domain}/{virtual_account} in {resp.text}")

    def make_device_headers(self, sa_id: Any, va_id: Any) -> None:
        self.device_headers = {
            "Content-Type": "application/json",
            "X-CSW-SMART-ACCOUNT-ID": f"{sa_id}",
            "X-CSW-VIRTUAL-ACCOUNT-ID": f"{va_id}",
            "X-CSW-REQUESTING-SYSTEM": json.dumps(
                {"udi_pid": f"{PID}", "udi_serial_number": f"{SN}"}
            ),
        }

    def post(self, endpoint: str, data: dict[str, Any]) -> requests.Response:
        body = json.dumps({"data": data})
        return self.session.post(
            self.url + BASE + endpoint,
            headers={**self.auth, **self.device_headers},
            data=body,
            timeout=10,
        )

    def request_auth_code(self, *, keys: list[dict[str, str]], **extra: str) -> requests.Response:
        entry: dict[str, Any] = {
            "sudi": {"udi_pid": f"{PID}", "udi_serial_number": f"{SN}"},
            "hostname": f"{HOSTNAME}",
            "keys": keys,
            **extra,
        }
        stamp = int(time.time() * 1000)
        return self.post(
            "v2/devices/authrequest",
            {"timestamp": stamp, "nonce": self.nonce, "licenses": [entry]},
        )

    def poll_until_complete(self, poll_id: Any, poll_type: str) -> dict[str, Any]:
        """The sample's loop: COMPLETE ends it; OK_POLL with `message == ""` means wait."""
        data = {
            "timestamp": f"{int(time.time() * 1000)}",
            "nonce": self.nonce,
            "poll_id": poll_id,
            "action": poll_type,
        }
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            resp = self.post("v2/accounts/poll", data)
            body: dict[str, Any] = json.loads(resp.text)
            self.statuses.append(body["status"])
            if body["status"] == "COMPLETE":
                return body
            assert body["status"] == "OK_POLL", resp.text
            # The sample: `if response["message"] == ""` waits, anything else is an error.
            assert body["message"] == "", f"the sample gives up here: {resp.text}"
            time.sleep(0.1)
        raise AssertionError(f"poll {poll_id} never completed")

    def send_usage_report(self, rum_file: Path, entitlement_tag: str) -> requests.Response:
        """The sample's `parseXML` and `sendUsageReport`: payloads re-serialized as it does."""
        report = {"sudi": {"udi_pid": f"{PID}", "udi_serial_number": f"{SN}"}, "usage": []}
        tree = ET.parse(rum_file).getroot()
        for item in tree.findall("./RUMReport"):
            assert item.text is not None
            usage_item = json.loads(item.text)
            payload = json.loads(usage_item["payload"])
            if payload["meta"]["entitlement_tag"] == entitlement_tag:
                escaped = json.dumps(payload).replace(" ", "")
                report["usage"].append({"payload": escaped, "signature": usage_item["signature"]})
        assert report["usage"], "the sample found nothing to upload"
        stamp = int(time.time() * 1000)
        return self.post(
            "v2/devices/reportusage",
            {"timestamp": stamp, "nonce": f"{self.nonce}", "reports": [report]},
        )


@pytest.fixture
def cisco(start_emulator: Callable[..., RunningEmulator]) -> Callable[..., RunningEmulator]:
    """`cisco("--strict-nonce")`: `airgap emulate cisco` in its own process."""

    def start(*args: str) -> RunningEmulator:
        return start_emulator("cisco", "--poll-delay", "0.2", *args)

    return start


def signed_in(url: str, **kw: str) -> SampleClient:
    client = SampleClient(url, **kw)
    client.get_token()
    sa_id, va_id = client.account_ids("demo.example.com", "Default")
    client.make_device_headers(sa_id, va_id)
    return client


def test_a_fixed_ten_character_nonce_reserves_and_polls_like_ciscos_postman_example(
    cisco: Callable[..., RunningEmulator],
) -> None:
    emulator = cisco()
    client = signed_in(emulator.url)
    resp = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    assert resp.status_code == 202, resp.text
    answer = json.loads(resp.text)
    assert answer["status"] == "OK_POLL"
    done = client.poll_until_complete(answer["poll_id"], answer["action"])
    [authorization] = done["data"]["authorizations"]
    assert authorization["status"] == "SUCCESS", authorization
    license_xml = base64.b64decode(authorization["smart_license"]).decode()
    assert f"<udi>P:{PID},S:{SN}</udi>" in license_xml
    stats = emulator.stats()
    assert stats["mutations"][f"{PID}:{SN}"]["reserve"] == 1
    # The same nonce on every call: accepted, and counted as reuse.
    assert stats["nonce_reuse"] >= 1


def test_strict_nonce_refuses_a_reused_nonce_never_a_short_one(
    cisco: Callable[..., RunningEmulator],
) -> None:
    emulator = cisco("--strict-nonce")
    client = signed_in(emulator.url, nonce="x")
    first = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    assert first.status_code == 202, first.text
    again = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    assert again.status_code == 400, again.text
    assert again.json()["code"] == "NONCE_REUSED"
    client.nonce = POSTMAN_NONCE
    third = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    assert third.status_code == 202, third.text
    assert emulator.stats()["mutations"][f"{PID}:{SN}"]["reserve"] == 2


def test_an_empty_nonce_is_still_refused(cisco: Callable[..., RunningEmulator]) -> None:
    emulator = cisco()
    client = signed_in(emulator.url, nonce="")
    resp = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    assert resp.status_code == 400, resp.text
    assert "nonce" in resp.json()["message"]
    assert emulator.stats()["mutations"] == {}


def test_the_samples_return_request_gives_the_reservation_back(
    cisco: Callable[..., RunningEmulator],
) -> None:
    emulator = cisco()
    client = signed_in(emulator.url)
    reserved = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    client.poll_until_complete(reserved.json()["poll_id"], "authorizations")
    returned = client.request_auth_code(keys=[], remove_code=return_code_for(PID, SN))
    assert returned.status_code == 202, returned.text
    done = client.poll_until_complete(returned.json()["poll_id"], "authorizations")
    assert done["data"]["authorizations"][0]["status"] == "SUCCESS"
    assert emulator.stats()["mutations"][f"{PID}:{SN}"] == {"reserve": 1, "return": 1, "report": 0}


def test_the_postman_device_list_call_needs_no_device_headers(
    cisco: Callable[..., RunningEmulator],
) -> None:
    emulator = cisco()
    client = signed_in(emulator.url)
    client.device_headers = {}
    resp = client.session.post(
        emulator.url
        + "/services/api/smart-accounts-and-licensing/v1/accounts/demo.example.com/devices",
        headers={"Content-Type": "application/json", **client.auth},
        # The collection's raw body, CRLFs and all.
        data='{\r\n  "virtualAccounts": [\r\n      "Default"\r\n  ],\r\n'
        '  "limit": 10,\r\n  "offset": 0\r\n}',
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert re.fullmatch(r"\d+", str(resp.json()["totalRecords"]))


def test_the_samples_poll_loop_waits_through_ok_poll_and_reads_the_complete_envelope(
    cisco: Callable[..., RunningEmulator],
) -> None:
    emulator = cisco("--poll-delay", "1")
    client = signed_in(emulator.url)
    resp = client.request_auth_code(keys=[{"entitlement": HSEC, "count": "1"}])
    answer = resp.json()
    # The 202 answer has the keys of the Postman collection's example.
    assert {"status", "message_code", "message", "timestamp", "nonce", "type", "poll_id"} <= set(
        answer
    )
    assert answer["nonce"] == POSTMAN_NONCE
    done = client.poll_until_complete(answer["poll_id"], answer["action"])
    assert client.statuses[0] == "OK_POLL" and client.statuses[-1] == "COMPLETE"
    assert done["type"] == "authorizations"
    assert (done["message_code"], done["message"], done["nonce"]) == ("", "", POSTMAN_NONCE)
    assert re.fullmatch(r"[0-9a-f-]{36}", done["correlation_id"])


def test_the_samples_usage_report_with_re_serialized_payloads_is_acknowledged(
    cisco: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = cisco()
    device = write_device(pid=PID, sn=SN, hostname=HOSTNAME, out=tmp_path)
    client = signed_in(emulator.url)
    resp = client.send_usage_report(device.rum, NETWORK_ADVANTAGE_TAG)
    assert resp.status_code == 202, resp.text
    answer = json.loads(resp.text)
    assert answer["status"] != "FAILED"
    done = client.poll_until_complete(answer["poll_id"], "acknowledgements")
    [ack] = done["data"]["acknowledgements"]
    assert ack["status"] == "SUCCESS", ack
    assert "<smartLicenseRumAck>" in base64.b64decode(ack["smart_license"]).decode()
    assert emulator.stats()["mutations"][f"{PID}:{SN}"]["report"] == 1


@pytest.mark.parametrize(
    "timestamp", [None, "1656610485678", 1234574567], ids=["missing", "string", "seconds"]
)
def test_any_timestamp_or_none_is_accepted(
    cisco: Callable[..., RunningEmulator], timestamp: object
) -> None:
    emulator = cisco()
    client = signed_in(emulator.url)
    data: dict[str, Any] = {
        "nonce": POSTMAN_NONCE,
        "licenses": [
            {
                "sudi": {"udi_pid": PID, "udi_serial_number": SN},
                "keys": [{"entitlement": HSEC, "count": "1"}],
            }
        ],
    }
    if timestamp is not None:
        data["timestamp"] = timestamp
    resp = client.post("v2/devices/authrequest", data)
    assert resp.status_code == 202, resp.text
