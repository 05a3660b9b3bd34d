"""`airgap emulate bigiq` answers requests shaped as F5's own clients send them.

Plain `requests` against the emulator in its own process. The shapes come from F5's published
clients, not from airgap's: the token login of F5Networks/f5-ansible's `F5RestClient`
(module_utils/bigip.py: `username`, `password`, `loginProviderName` defaulting to "tmos"), the
offering look-up of its `bigiq_utility_license_assignment` module
(`offerings?$filter=(name+eq+'...')&$top=1`, reading `totalItems`), the offering activation of
its `bigiq_regkey_license` module (EULA text echoed back in a PATCH), and the UNREACHABLE
assign and revoke bodies of f5devcentral/f5-sdk-python
(f5cloudsdk/bigiq/licensing/pool_member_management.py: the revoke carries no hypervisor).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from integration.conftest import RunningEmulator

from airgap.emulators.bigiq import REGKEY_EULA

TASKS = "/mgmt/cm/device/tasks/licensing/pool/member-management"
UTILITY = "/mgmt/cm/device/licensing/pool/utility/licenses"


class F5Client:
    """Token login as F5RestClient does it, then X-F5-Auth-Token on every call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False

    def login(self, user: str = "admin", provider: str | None = None) -> requests.Response:
        payload = {"username": user, "password": "secret", "loginProviderName": provider or "tmos"}
        resp = self.session.post(self.url + "/mgmt/shared/authn/login", json=payload, timeout=10)
        if resp.status_code == 200:
            self.session.headers["X-F5-Auth-Token"] = resp.json()["token"]["token"]
        return resp

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=10)

    def task(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a member-management task and GET it until it is no longer STARTED."""
        resp = self.session.post(self.url + TASKS, json=body, timeout=10)
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state: dict[str, Any] = self.get(f"{TASKS}/{task_id}").json()
            if state["status"] != "STARTED":
                return state
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} never finished")


@pytest.fixture
def bigiq(start_emulator: Callable[..., RunningEmulator]) -> RunningEmulator:
    return start_emulator("bigiq", "--task-delay", "0.1")


def test_f5_ansible_token_login_and_offering_lookup(bigiq: RunningEmulator) -> None:
    client = F5Client(bigiq.url)
    resp = client.login()
    assert resp.status_code == 200, resp.text
    assert resp.json()["token"]["token"]
    [pool] = [p for p in client.get(UTILITY).json()["items"] if p["name"] == "demo-utility"]
    # The module's raw query string: `+` for spaces, as it builds it.
    found = client.get(
        f"{UTILITY}/{pool['regKey']}/offerings?$filter=(name+eq+'no-such-offering')&$top=1"
    )
    assert found.status_code == 200, found.text
    assert found.json()["totalItems"] == 0


def test_f5_sdk_unreachable_assign_then_revoke_without_hypervisor(bigiq: RunningEmulator) -> None:
    client = F5Client(bigiq.url)
    assert client.login().status_code == 200
    assign = {
        "licensePoolName": "demo-regkey",
        "command": "assign",
        "address": "192.0.2.10",
        "assignmentType": "UNREACHABLE",
        "macAddress": "FA:16:3E:1B:6D:32",
        "hypervisor": "azure",
    }
    assigned = client.task(assign)
    assert assigned["status"] == "FINISHED", assigned
    assert "licenseText" in assigned
    revoke = {key: assign[key] for key in ("licensePoolName", "address", "macAddress")}
    revoke.update(command="revoke", assignmentType="UNREACHABLE")
    revoked = client.task(revoke)
    assert revoked["status"] == "FINISHED", revoked
    assert bigiq.stats()["mutations"]["FA:16:3E:1B:6D:32"] == {"assign": 1, "revoke": 1}


def test_utility_assign_with_the_documented_fields(bigiq: RunningEmulator) -> None:
    # F5's terraform resource bigip_common_license_manage_bigiq documents these fields:
    # unit of measure required for utility pools, SKU keywords optional, MAC and hypervisor
    # required for an unreachable BIG-IP.
    client = F5Client(bigiq.url)
    assert client.login().status_code == 200
    done = client.task(
        {
            "licensePoolName": "demo-utility",
            "command": "assign",
            "assignmentType": "UNREACHABLE",
            "macAddress": "fa-16-3e-1b-6d-40",
            "hypervisor": "vmware",
            "unitOfMeasure": "yearly",
            "skuKeyword1": "BT",
            "skuKeyword2": "1G",
        }
    )
    assert done["status"] == "FINISHED", done


def test_f5_ansible_regkey_license_flow_accepts_the_eula_it_was_shown(
    bigiq: RunningEmulator,
) -> None:
    # bigiq_regkey_license (F5Networks/f5-ansible): POST the offering with status
    # ACTIVATING_AUTOMATIC, GET it until READY, and on NEED_EULA_ACCEPT PATCH the status
    # back with the eulaText it was shown.
    client = F5Client(bigiq.url)
    assert client.login().status_code == 200
    pools = client.get("/mgmt/cm/device/licensing/pool/regkey/licenses").json()["items"]
    [pool] = [p for p in pools if p["name"] == "demo-regkey"]
    offerings = f"/mgmt/cm/device/licensing/pool/regkey/licenses/{pool['id']}/offerings"
    params = {"regKey": REGKEY_EULA, "description": "from ansible", "name": REGKEY_EULA}
    params["status"] = "ACTIVATING_AUTOMATIC"
    created = client.session.post(client.url + offerings, json=params, timeout=10)
    assert created.status_code == 200, created.text
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resource = client.get(f"{offerings}/{REGKEY_EULA}").json()
        seen.append(resource["status"])
        if resource["status"] == "READY":
            break
        if resource["status"] == "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT":
            accepted = client.session.patch(
                client.url + f"{offerings}/{REGKEY_EULA}",
                json={
                    "status": "ACTIVATING_AUTOMATIC_EULA_ACCEPTED",
                    "eulaText": resource["eulaText"],
                },
                timeout=10,
            )
            assert accepted.status_code == 200, accepted.text
        assert resource["status"] != "ACTIVATION_FAILED", resource
        time.sleep(0.05)
    assert seen[-1] == "READY", seen
    assert "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT" in seen


@pytest.mark.parametrize("provider", ["tmos", "local", "corp-radius"])
def test_any_user_of_any_login_provider_logs_in(bigiq: RunningEmulator, provider: str) -> None:
    # F5RestClient logs in as whatever `provider.user` and `auth_provider` say; BIG-IQ has users
    # besides admin and providers (RADIUS, LDAP, TACACS+) configured under their own names.
    client = F5Client(bigiq.url)
    resp = client.login(user="netops", provider=provider)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["username"] == "netops"
    assert body["loginReference"]["link"].endswith(f"/providers/{provider}/login")
    assert client.get(UTILITY).status_code == 200


def test_an_empty_user_or_provider_is_still_refused(bigiq: RunningEmulator) -> None:
    client = F5Client(bigiq.url)
    assert client.login(user="").status_code == 401
    refused = client.session.post(
        client.url + "/mgmt/shared/authn/login",
        json={"username": "admin", "password": "secret", "loginProviderName": ""},
        timeout=10,
    )
    # An empty provider name reads as "none given": BIG-IQ falls back to its local provider.
    assert refused.status_code == 200, refused.text


@pytest.mark.parametrize("assignment_type", ["MANAGED", "UNMANAGED"])
def test_a_reachable_device_assign_runs_and_fails_as_unreachable(
    bigiq: RunningEmulator, assignment_type: str
) -> None:
    # f5-ansible and f5-sdk send MANAGED and UNMANAGED assignments; inside an air gap BIG-IQ
    # cannot reach the BIG-IP, so the task is accepted and then fails, licensing nothing.
    client = F5Client(bigiq.url)
    assert client.login().status_code == 200
    done = client.task(
        {
            "licensePoolName": "demo-regkey",
            "command": "assign",
            "address": "192.0.2.44",
            "assignmentType": assignment_type,
            "user": "admin",
            "password": "device-secret",
        }
    )
    assert done["status"] == "FAILED", done
    assert "192.0.2.44" in done["errorMessage"]
    assert client.get("/mgmt/cm/device/licensing/assignments").json()["items"] == []


def test_a_registration_key_of_another_shape_enters_the_pool_and_fails_activation(
    bigiq: RunningEmulator,
) -> None:
    client = F5Client(bigiq.url)
    assert client.login().status_code == 200
    pools = client.get("/mgmt/cm/device/licensing/pool/regkey/licenses").json()["items"]
    [pool] = [p for p in pools if p["name"] == "demo-regkey"]
    offerings = f"/mgmt/cm/device/licensing/pool/regkey/licenses/{pool['id']}/offerings"
    created = client.session.post(
        client.url + offerings,
        json={"regKey": "ABCD-1234", "status": "ACTIVATING_AUTOMATIC"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 10
    status = created.json()["status"]
    while status.startswith("ACTIVATING") and time.monotonic() < deadline:
        time.sleep(0.05)
        status = client.get(f"{offerings}/ABCD-1234").json()["status"]
    assert status == "ACTIVATION_FAILED"
