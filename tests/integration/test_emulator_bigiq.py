"""The BIG-IQ emulator over real HTTP: tokens, pools, member tasks, assignments, RegKey offerings.

Each test starts its own `EmulatorServer` on a random port and talks to it with `requests`, so
what a vendor client would see is what is checked. No code from `airgap.outside` is used.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from airgap.emulators.bigiq import (
    DEMO_REGKEY_POOL,
    EULA_TEXT,
    REGKEY_EULA,
    REGKEY_FAIL_ONCE,
    REGKEY_PLAIN,
    REGKEY_READY,
    BigIqEmulator,
    license_text,
    normalize_mac,
    parse_pool_specs,
)
from airgap.emulators.server import EmulatorServer
from airgap.errors import ConfigError

LOGIN = "/mgmt/shared/authn/login"
EXCHANGE = "/mgmt/shared/authn/exchange"
TASKS = "/mgmt/cm/device/tasks/licensing/pool/member-management"
ASSIGNMENTS = "/mgmt/cm/device/licensing/assignments"
UTILITY = "/mgmt/cm/device/licensing/pool/utility/licenses"
REGKEY = "/mgmt/cm/device/licensing/pool/regkey/licenses"
VERSION = "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices"

MAC = "00:50:56:9A:3C:E1"  # the BIG-IP VE of samples/f5/bigiq-*.json


class FakeClock:
    """A monotonic clock the test moves by hand, so delays are checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _session() -> requests.Session:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE and proxy variables would override session.verify and reroute
    # 127.0.0.1. See: <https://github.com/psf/requests/issues/3829>
    session.trust_env = False
    return session


@dataclass
class Api:
    """A thin HTTP helper around one emulator, the way a client would call BIG-IQ."""

    url: str
    emu: BigIqEmulator
    server: EmulatorServer
    session: requests.Session = field(default_factory=lambda: _session())
    token: str | None = None
    refresh: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers.setdefault("X-F5-Auth-Token", self.token)
        if path.startswith("https://localhost"):
            path = path[len("https://localhost") :]  # selfLinks name BIG-IQ itself
        return self.session.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    def patch(self, path: str, body: Any) -> requests.Response:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> requests.Response:
        return self.request("DELETE", path)

    def login(self, password: str = "any-password") -> dict[str, Any]:
        response = self.session.post(
            self.url + LOGIN,
            json={"username": "admin", "password": password, "loginProviderName": "tmos"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        self.token, self.refresh = body["token"]["token"], body["refreshToken"]["token"]
        return body

    def stats(self) -> dict[str, Any]:
        response = self.session.get(self.url + "/_emulator/stats", timeout=10)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def submit(self, command: str = "assign", **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "command": command,
            "licensePoolName": "demo-utility",
            "assignmentType": "UNREACHABLE",
            "macAddress": MAC,
        }
        if command == "assign":
            body.update(
                hypervisor="vmware", skuKeyword1="BT", skuKeyword2="1G", unitOfMeasure="yearly"
            )
        body.update(fields)
        response = self.post(TASKS, body)
        assert response.status_code == 202, response.text
        task: dict[str, Any] = response.json()
        assert task["status"] == "STARTED"
        return task

    def task(self, task: dict[str, Any]) -> dict[str, Any]:
        response = self.get(task["selfLink"])
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def run(self, command: str = "assign", **fields: Any) -> dict[str, Any]:
        """Submit a task and return it finished (the emulators here have no task delay)."""
        return self.task(self.submit(command, **fields))


@pytest.fixture
def bigiq() -> Iterator[Callable[..., Api]]:
    """Factory: `bigiq(**emulator_kwargs)` starts an emulator on a free port and logs in."""
    started: list[Api] = []

    def make(*, login: bool = True, tls: bool = False, **kwargs: Any) -> Api:
        emu = BigIqEmulator(**kwargs)
        server = EmulatorServer(emu, tls=tls).start()
        api = Api(server.url, emu, server)
        if tls:
            assert server.cert_path is not None
            api.session.verify = str(server.cert_path)
        started.append(api)
        if login:
            api.login(kwargs.get("password") or "any-password")
        return api

    yield make
    for api in started:
        api.session.close()
        api.server.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("emulator-")]


def assert_error(response: requests.Response, status: int) -> dict[str, Any]:
    """BIG-IQ's error shape, always JSON."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["code"] == status
    assert body["errorStack"] == []
    assert body["kind"] == ":resterrorresponse"
    assert isinstance(body["message"], str)
    return body


def assert_resource(body: dict[str, Any]) -> None:
    for key in ("kind", "selfLink", "generation", "lastUpdateMicros"):
        assert key in body, key
    assert body["selfLink"].startswith("https://localhost/mgmt/")


def assert_collection(body: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("items", "kind", "selfLink", "generation"):
        assert key in body, key
    items: list[dict[str, Any]] = body["items"]
    return items


# --- authentication -------------------------------------------------------------------------


def test_login_returns_token_and_refresh_token(bigiq: Callable[..., Api]) -> None:
    api = bigiq(login=False)
    before = time.time()
    body = api.login()
    assert body["username"] == "admin"
    assert body["loginProviderName"] == "tmos"
    token, refresh = body["token"], body["refreshToken"]
    assert token["token"] != refresh["token"]
    assert token["token"].count(".") == 2  # a JWT, as on BIG-IQ
    # 5 minutes for the access token, 10 hours for the refresh token.
    assert abs(token["expirationMicros"] / 1e6 - (before + 300)) < 5
    assert abs(refresh["expirationMicros"] / 1e6 - (before + 36000)) < 5
    assert api.get(VERSION).status_code == 200


def test_login_without_provider_and_with_basic_header(bigiq: Callable[..., Api]) -> None:
    api = bigiq(login=False, password="s3cret")
    basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    response = api.session.post(
        api.url + LOGIN,
        json={"username": "admin", "password": "s3cret"},
        headers={"Authorization": basic},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["loginProviderName"] == "local"
    # Basic credentials alone are enough as well.
    response = api.session.post(api.url + LOGIN, headers={"Authorization": basic}, timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "wrong"), ("admin", ""), ("", "s3cret"), (None, None)],
)
def test_login_with_bad_credentials_is_401(
    bigiq: Callable[..., Api], username: str | None, password: str | None
) -> None:
    api = bigiq(login=False, password="s3cret")
    body = {"username": username, "password": password, "loginProviderName": "tmos"}
    assert_error(api.session.post(api.url + LOGIN, json=body, timeout=10), 401)
    assert api.stats()["tokens"]["login_failures"] == 1
    assert api.stats()["tokens"]["logins"] == 0


def test_any_non_empty_password_works_without_configured_password(
    bigiq: Callable[..., Api],
) -> None:
    api = bigiq(login=False)
    api.login("whatever")
    assert api.get(VERSION).status_code == 200


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_api_call_without_valid_token_is_401(bigiq: Callable[..., Api], token: str | None) -> None:
    api = bigiq()
    api.token = token
    assert_error(api.get(UTILITY), 401)
    assert api.stats()["tokens"]["unauthorized"] == 1


def test_refresh_token_is_not_an_access_token(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    api.token = api.refresh
    assert_error(api.get(UTILITY), 401)


def test_expired_token_is_401_and_exchange_works_while_carrying_it(
    bigiq: Callable[..., Api],
) -> None:
    api = bigiq(token_ttl=0.5)
    assert api.get(VERSION).status_code == 200
    time.sleep(0.6)
    body = assert_error(api.get(VERSION), 401)
    assert body["message"] == "invalid registered claims"

    # Clients refresh while still sending the expired X-F5-Auth-Token.
    response = api.post(EXCHANGE, {"refreshToken": {"token": api.refresh}})
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert fresh["token"]["token"] != api.token
    assert fresh["refreshToken"]["token"]
    api.token = fresh["token"]["token"]
    assert api.get(VERSION).status_code == 200

    tokens = api.stats()["tokens"]
    assert (tokens["logins"], tokens["refreshes"], tokens["expired"]) == (1, 1, 1)


def test_expired_refresh_token_is_refused(bigiq: Callable[..., Api]) -> None:
    clock = FakeClock()
    api = bigiq(clock=clock, token_ttl=300, refresh_ttl=36000)
    clock.advance(36001)
    body = assert_error(api.post(EXCHANGE, {"refreshToken": {"token": api.refresh}}), 401)
    assert body["message"] == "invalid registered claims"
    assert_error(api.post(EXCHANGE, {"refreshToken": {"token": "bogus"}}), 401)
    assert api.stats()["tokens"]["refresh_failures"] == 2


def test_a_long_batch_keeps_working_by_refreshing(bigiq: Callable[..., Api]) -> None:
    clock = FakeClock()
    api = bigiq(clock=clock)
    for _ in range(3):  # 15 minutes of work against 5-minute tokens
        clock.advance(301)
        assert_error(api.get(VERSION), 401)
        fresh = api.post(EXCHANGE, {"refreshToken": {"token": api.refresh}}).json()
        api.token, api.refresh = fresh["token"]["token"], fresh["refreshToken"]["token"]
        assert api.get(VERSION).status_code == 200
    assert api.stats()["tokens"]["refreshes"] == 3


def test_logout_invalidates_the_token(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    response = api.delete(f"/mgmt/shared/authz/tokens/{api.token}")
    assert response.status_code == 200, response.text
    assert_resource(response.json())
    assert_error(api.get(VERSION), 401)
    assert api.stats()["tokens"]["logouts"] == 1


# --- envelope, version, pools -----------------------------------------------------------------


def test_version_with_select(bigiq: Callable[..., Api]) -> None:
    api = bigiq(version="8.2.0")
    response = api.get(VERSION, params={"$select": "version"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["items"][0] == {"version": "8.2.0"}


def test_unknown_path_and_wrong_method(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    body = assert_error(api.get("/mgmt/cm/device/licensing/nothing-here"), 404)
    assert "/mgmt/cm/device/licensing/nothing-here" in body["message"]
    assert_error(api.request("PUT", TASKS), 405)
    assert_error(api.get(f"{TASKS}/no-such-task"), 404)


def test_bad_json_body_is_400_json(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    response = api.request(
        "POST", TASKS, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400)


def test_utility_pools_filter_and_top(bigiq: Callable[..., Api]) -> None:
    api = bigiq(pools={"VE-UTILITY-POOL-1G": 5, "VE-UTILITY-POOL-10G": 2})
    items = assert_collection(api.get(UTILITY).json())
    assert [i["name"] for i in items] == ["VE-UTILITY-POOL-1G", "VE-UTILITY-POOL-10G"]
    for item in items:
        assert_resource(item)
        assert item["status"] == "READY"

    query = {"$filter": "(name eq 'VE-UTILITY-POOL-10G')", "$top": "1"}
    found = api.get(UTILITY, params=query).json()
    assert [i["name"] for i in found["items"]] == ["VE-UTILITY-POOL-10G"]
    assert api.get(found["items"][0]["selfLink"]).json()["regKey"] == found["items"][0]["regKey"]
    assert api.get(UTILITY, params={"$top": "1"}).json()["items"][0]["name"].endswith("-1G")
    assert api.get(UTILITY, params={"$filter": "name eq 'nope'"}).json()["items"] == []
    assert_error(api.get(UTILITY, params={"$filter": "name eq"}), 400)


def test_regkey_pool_lookup_and_offerings(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    found = api.get(REGKEY, params={"$filter": f"(name eq '{DEMO_REGKEY_POOL}')", "$top": "1"})
    (pool,) = found.json()["items"]
    assert_resource(pool)
    offerings = assert_collection(api.get(f"{REGKEY}/{pool['id']}/offerings").json())
    assert {o["regKey"] for o in offerings} == set(REGKEY_READY)
    assert {o["status"] for o in offerings} == {"READY"}


# --- member management: assign / revoke -------------------------------------------------------


def test_assign_unreachable_finishes_with_license_text(bigiq: Callable[..., Api]) -> None:
    clock = FakeClock()
    api = bigiq(clock=clock, task_delay=5)
    task = api.submit(macAddress="00-50-56-9a-3c-e1", address="10.20.30.41")
    assert_resource(task)
    assert task["macAddress"] == MAC  # normalized
    assert api.task(task)["status"] == "STARTED"
    assignment = api.get(ASSIGNMENTS).json()["items"][0]
    assert assignment["status"] == "INSTALLING"  # capacity is taken at once

    clock.advance(5)
    done = api.task(task)
    assert done["status"] == "FINISHED"
    assert_resource(done)
    text = done["licenseText"]
    assert text.startswith("#\nAuth vers :                        5b\n")
    assert MAC in text
    for line in ("Registration Key :", "Dossier :", "Authorization :", "Licensed version :"):
        assert f"\n{line}" in text
    assert "Licensed version :                 8.3.0\n" in text
    assert "F5-BIG-MSP-BT-1G-LIC|" in text
    link = done["licenseAssignmentReference"]["link"]
    assert link.startswith(f"https://localhost{UTILITY}/")
    member = api.get(link)
    assert member.status_code == 200
    assert member.json()["status"] == "LICENSED"
    assert api.get(ASSIGNMENTS).json()["items"][0]["status"] == "LICENSED"
    assert api.stats()["mutations"] == {MAC: {"assign": 1, "revoke": 0}}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"licensePoolName": "bad pool name"}, "License pool 'bad pool name' not found"),
        ({"hypervisor": "virtualbox"}, "Invalid hypervisor 'virtualbox'"),
        ({"unitOfMeasure": "weekly"}, "Invalid unitOfMeasure 'weekly'"),
        ({"macAddress": "00:50:56:zz:3c:e1"}, "Invalid MAC address '00:50:56:zz:3c:e1'"),
    ],
)
def test_assign_fails_with_bigiq_wording(
    bigiq: Callable[..., Api], fields: dict[str, Any], message: str
) -> None:
    api = bigiq()
    task = api.run(**fields)
    assert task["status"] == "FAILED"
    assert task["errorMessage"].startswith(message)
    assert task["currentStep"] == "GET_LICENSE"
    assert "licenseText" not in task
    assert api.stats()["mutations"] == {}


@pytest.mark.parametrize("hypervisor", ["aws", "azure", "gce", "hyperv", "kvm", "xen", "alibaba"])
def test_every_documented_hypervisor_is_accepted(
    bigiq: Callable[..., Api], hypervisor: str
) -> None:
    api = bigiq()
    assert api.run(hypervisor=hypervisor, unitOfMeasure="hourly")["status"] == "FINISHED"


def test_assign_fails_when_pool_is_exhausted(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    api.emu.pools["demo-utility"].capacity = 0
    task = api.run()
    assert task["status"] == "FAILED"
    assert task["errorMessage"] == "There are no available licenses in pool 'demo-utility'"


def test_assign_fails_when_mac_already_licensed(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    assert api.run()["status"] == "FINISHED"
    again = api.run(macAddress=MAC.lower())
    assert again["status"] == "FAILED"
    assert "already licensed" in again["errorMessage"]
    assert api.stats()["mutations"][MAC] == {"assign": 1, "revoke": 0}


def test_revoke_unassigned_mac_fails(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    task = api.run("revoke")
    assert task["status"] == "FAILED"
    assert "has no license assigned" in task["errorMessage"]
    assert api.stats()["mutations"] == {}


def test_revoke_frees_the_license(bigiq: Callable[..., Api]) -> None:
    api = bigiq(pools={"one": 1})
    other = "00:50:56:9A:41:07"
    assert api.run(licensePoolName="one")["status"] == "FINISHED"
    assert api.run(licensePoolName="one", macAddress=other)["status"] == "FAILED"
    revoke = api.run("revoke", licensePoolName="one", macAddress="0050.569a.3ce1")
    assert revoke["status"] == "FINISHED"
    assert "licenseText" not in revoke
    assert api.get(ASSIGNMENTS).json()["items"] == []
    assert api.run(licensePoolName="one", macAddress=other)["status"] == "FINISHED"
    assert api.stats()["mutations"] == {
        MAC: {"assign": 1, "revoke": 1},
        other: {"assign": 1, "revoke": 0},
    }


def test_concurrent_assigns_never_overbook(bigiq: Callable[..., Api]) -> None:
    api = bigiq(pools={"small": 5})
    macs = [f"00:50:56:00:00:{i:02X}" for i in range(20)]

    def assign(mac: str) -> str:
        with _session() as session:
            headers = {"X-F5-Auth-Token": api.token or ""}
            body = {
                "command": "assign",
                "licensePoolName": "small",
                "assignmentType": "UNREACHABLE",
                "macAddress": mac,
                "hypervisor": "kvm",
                "unitOfMeasure": "daily",
            }
            posted = session.post(api.url + TASKS + "/", json=body, headers=headers, timeout=10)
            assert posted.status_code == 202, posted.text
            link = posted.json()["selfLink"].replace("https://localhost", api.url)
            status: str = session.get(link, headers=headers, timeout=10).json()["status"]
            return status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(assign, macs))
    assert statuses.count("FINISHED") == 5
    assert statuses.count("FAILED") == 15
    stats = api.stats()
    assert stats["pools"]["small"] == {
        "type": "UTILITY",
        "capacity": 5,
        "assigned": 5,
        "available": 0,
    }
    assert sum(m["assign"] for m in stats["mutations"].values()) == 5
    assert stats["calls"]["assign"] == 20


def test_concurrent_assigns_of_one_mac_license_it_once(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    with ThreadPoolExecutor(max_workers=8) as pool:
        tasks = list(pool.map(lambda _: _submit_in_own_session(api), range(8)))
    statuses = [api.task(t)["status"] for t in tasks]
    assert statuses.count("FINISHED") == 1
    assert api.stats()["mutations"] == {MAC: {"assign": 1, "revoke": 0}}


def _submit_in_own_session(api: Api) -> dict[str, Any]:
    # Each thread needs its own session: requests.Session is not thread-safe.
    with _session() as session:
        response = session.post(
            api.url + TASKS,
            json=_assign_body(),
            headers={"X-F5-Auth-Token": api.token or ""},
            timeout=10,
        )
    assert response.status_code == 202
    body: dict[str, Any] = response.json()
    return body


def test_uncertain_submit_is_reconciled_by_task_list_filter(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    # The server handles the POST, then drops the connection: the client cannot know.
    api.server.faults.fail_next("member-management", "reset")
    with pytest.raises(requests.ConnectionError):
        api.post(TASKS, {**_assign_body(), "macAddress": "00-50-56-9A-3C-E1"})
    query = {"$filter": "macAddress eq '00:50:56:9a:3c:e1'"}
    items = assert_collection(api.get(TASKS, params=query).json())
    assert [(t["command"], t["status"]) for t in items] == [("assign", "FINISHED")]
    assert items[0]["licenseText"]
    assert (
        api.get(TASKS, params={"$filter": "macAddress eq '00:00:00:00:00:01'"}).json()["items"]
        == []
    )
    stats = api.stats()
    assert stats["mutations"] == {MAC: {"assign": 1, "revoke": 0}}
    assert stats["faults"]["reset"] == 1


def _assign_body() -> dict[str, Any]:
    return {
        "command": "assign",
        "licensePoolName": "demo-utility",
        "assignmentType": "UNREACHABLE",
        "macAddress": MAC,
        "hypervisor": "vmware",
        "unitOfMeasure": "yearly",
    }


def test_assignments_listing_and_filter(bigiq: Callable[..., Api]) -> None:
    api = bigiq(pools={"A": 10, "B": 10})
    api.run(licensePoolName="A", macAddress="00:50:56:00:00:0A", tenant="t1")
    api.run(licensePoolName="B", macAddress="00:50:56:00:00:0B", chargebackTag="cb")
    items = assert_collection(api.get(ASSIGNMENTS).json())
    assert [(i["macAddress"], i["pool"]["name"], i["status"]) for i in items] == [
        ("00:50:56:00:00:0A", "A", "LICENSED"),
        ("00:50:56:00:00:0B", "B", "LICENSED"),
    ]
    for item in items:
        assert_resource(item)
        assert item["assignmentType"] == "UNREACHABLE"
    by_mac = api.get(ASSIGNMENTS, params={"$filter": "macAddress eq '00-50-56-00-00-0b'"})
    assert [i["pool"]["name"] for i in by_mac.json()["items"]] == ["B"]
    by_pool = api.get(ASSIGNMENTS, params={"$filter": "pool/name eq 'A' and status eq 'LICENSED'"})
    assert [i["tenant"] for i in by_pool.json()["items"]] == ["t1"]
    assert api.get(items[0]["selfLink"]).json()["id"] == items[0]["id"]


def test_collection_posts_accept_a_trailing_slash(bigiq: Callable[..., Api]) -> None:
    api = bigiq(login=False)
    response = api.session.post(
        api.url + LOGIN + "/", json={"username": "admin", "password": "x"}, timeout=10
    )
    assert response.status_code == 200
    api.token = response.json()["token"]["token"]
    assert api.post(TASKS + "/", _assign_body()).status_code == 202
    pool_id = api.emu.pools[DEMO_REGKEY_POOL].id  # type: ignore[union-attr]
    posted = api.post(f"{REGKEY}/{pool_id}/offerings/", {"regKey": REGKEY_PLAIN})
    assert posted.status_code == 200, posted.text
    assert api.get(UTILITY + "/").status_code == 200


# --- RegKey offerings ---------------------------------------------------------------------------


def _offerings(api: Api) -> str:
    pool = api.get(REGKEY, params={"$filter": f"(name eq '{DEMO_REGKEY_POOL}')"}).json()["items"][0]
    return f"{REGKEY}/{pool['id']}/offerings"


def test_regkey_automatic_activation_with_eula(bigiq: Callable[..., Api]) -> None:
    clock = FakeClock()
    api = bigiq(clock=clock, task_delay=2)
    base = _offerings(api)
    body = {"regKey": REGKEY_EULA.lower(), "status": "ACTIVATING_AUTOMATIC", "addOnKeys": []}
    created = api.post(base, {**body, "description": "lab"}).json()
    assert_resource(created)
    assert (created["regKey"], created["status"]) == (REGKEY_EULA, "ACTIVATING_AUTOMATIC")
    link = created["selfLink"]
    assert api.get(link).json()["status"] == "ACTIVATING_AUTOMATIC"

    clock.advance(2)
    waiting = api.get(link).json()
    assert waiting["status"] == "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT"
    assert waiting["eulaText"] == EULA_TEXT
    wrong = {"status": "ACTIVATING_AUTOMATIC_EULA_ACCEPTED", "eulaText": "I agree"}
    assert_error(api.patch(link, wrong), 400)
    accept = {"status": "ACTIVATING_AUTOMATIC_EULA_ACCEPTED", "eulaText": waiting["eulaText"]}
    assert api.patch(link, accept).json()["status"] == "ACTIVATING_AUTOMATIC_EULA_ACCEPTED"

    clock.advance(2)
    ready = api.get(link).json()
    assert ready["status"] == "READY"
    assert f"Registration Key :                 {REGKEY_EULA}\n" in ready["licenseText"]
    assert api.stats()["offerings"][REGKEY_EULA] == {"create": 1, "eula_accept": 1}


def test_regkey_plain_key_activates_without_eula(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    created = api.post(_offerings(api), {"regKey": REGKEY_PLAIN, "status": "ACTIVATING_AUTOMATIC"})
    ready = api.get(created.json()["selfLink"]).json()
    assert ready["status"] == "READY"
    assert "eulaText" not in ready


def test_regkey_manual_activation_with_dossier(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    created = api.post(_offerings(api), {"regKey": REGKEY_PLAIN, "status": "ACTIVATING_MANUAL"})
    link = created.json()["selfLink"]
    waiting = api.get(link).json()
    assert waiting["status"] == "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
    dossier = waiting["dossier"]
    assert len(dossier) > 128 and int(dossier, 16) >= 0  # one lowercase hex string

    # A license for another key is refused...
    other = license_text(REGKEY_EULA, dossier=dossier)
    step = {"status": "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED", "licenseText": other}
    failed = api.patch(link, step).json()
    assert failed["status"] == "ACTIVATION_FAILED"
    assert REGKEY_PLAIN in failed["message"]
    # ...and after a retry the right one (from activate.f5.com) makes the key READY at once.
    assert api.patch(link, {"status": "ACTIVATING_MANUAL"}).status_code == 200
    assert api.get(link).json()["status"] == "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
    text = license_text(REGKEY_PLAIN, dossier=dossier)
    step = {"status": "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED", "licenseText": text}
    ready = api.patch(link, step).json()
    assert ready["status"] == "READY"
    assert ready["licenseText"] == text


def test_regkey_activation_fails_once_then_succeeds_on_retry(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    created = api.post(
        _offerings(api), {"regKey": REGKEY_FAIL_ONCE, "status": "ACTIVATING_AUTOMATIC"}
    )
    link = created.json()["selfLink"]
    failed = api.get(link).json()
    assert failed["status"] == "ACTIVATION_FAILED"
    assert failed["message"]
    retried = api.patch(link, {"status": "ACTIVATING_AUTOMATIC"})
    assert retried.json()["status"] == "ACTIVATING_AUTOMATIC"
    assert api.get(link).json()["status"] == "READY"


def test_regkey_unknown_or_malformed_keys(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    base = _offerings(api)
    unknown = "Z0000-00000-00000-00000-0000000"
    created = api.post(base, {"regKey": unknown, "status": "ACTIVATING_AUTOMATIC"}).json()
    failed = api.get(created["selfLink"]).json()
    assert failed["status"] == "ACTIVATION_FAILED"
    assert unknown in failed["message"]
    assert_error(api.post(base, {"regKey": "", "status": "ACTIVATING_AUTOMATIC"}), 400)
    assert_error(api.post(base, {"regKey": REGKEY_PLAIN, "status": "READY"}), 400)
    assert_error(api.post(base, {"regKey": unknown, "status": "ACTIVATING_AUTOMATIC"}), 400)
    assert_error(api.get(f"{base}/{REGKEY_PLAIN}"), 404)


def test_patch_out_of_order_is_refused(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    link = f"{_offerings(api)}/{REGKEY_READY[0]}"
    accept = {"status": "ACTIVATING_AUTOMATIC_EULA_ACCEPTED", "eulaText": EULA_TEXT}
    assert_error(api.patch(link, accept), 400)


def test_delete_offering_refused_while_assigned(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    task = api.run(licensePoolName=DEMO_REGKEY_POOL, unitOfMeasure=None)
    assert task["status"] == "FINISHED", task
    key = REGKEY_READY[0]
    assert f"Registration Key :                 {key}\n" in task["licenseText"]
    assert f"/offerings/{key}/members/" in task["licenseAssignmentReference"]["link"]
    link = f"{_offerings(api)}/{key}"
    members = api.get(f"{link}/members").json()["items"]
    assert [m["macAddress"] for m in members] == [MAC]

    body = assert_error(api.delete(link), 400)
    assert "assigned" in body["message"]
    assert api.run("revoke", licensePoolName=DEMO_REGKEY_POOL)["status"] == "FINISHED"
    deleted = api.delete(link)
    assert deleted.status_code == 200, deleted.text
    assert_error(api.get(link), 404)
    assert api.stats()["offerings"][key] == {"delete": 1}


def test_regkey_pool_hands_out_each_ready_key_once(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    results = [
        api.run(licensePoolName=DEMO_REGKEY_POOL, macAddress=f"00:50:56:00:01:0{i}")
        for i in range(3)
    ]
    assert [r["status"] for r in results] == ["FINISHED", "FINISHED", "FAILED"]
    assert (
        results[2]["errorMessage"]
        == f"There are no available licenses in pool '{DEMO_REGKEY_POOL}'"
    )


# --- stats, TLS and plain helpers ---------------------------------------------------------------


def test_stats_count_calls_and_mutations(bigiq: Callable[..., Api]) -> None:
    api = bigiq()
    api.run()
    api.run()  # already licensed: no state change
    api.run("revoke")
    api.get(ASSIGNMENTS)
    stats = api.stats()
    assert stats["calls"]["login"] == 1
    assert stats["calls"]["assign"] == 2
    assert stats["calls"]["revoke"] == 1
    assert stats["calls"]["member-management"] == 3
    assert stats["calls"]["task.get"] == 3
    assert stats["calls"]["assignments.list"] == 1
    assert stats["mutations"] == {MAC: {"assign": 1, "revoke": 1}}
    assert stats["tasks"] == 3


def test_serves_over_tls_with_verification(bigiq: Callable[..., Api]) -> None:
    api = bigiq(tls=True)
    assert api.url.startswith("https://")
    assert api.get(VERSION).json()["items"][0]["version"] == "8.3.0"


def test_parse_pool_specs() -> None:
    assert parse_pool_specs(["VE-UTILITY-POOL-1G:500", "a:b:2"]) == {
        "VE-UTILITY-POOL-1G": 500,
        "a:b": 2,
    }
    for bad in (["nocolon"], [":5"], ["p:x"], ["p:-1"], ["p:1", "p:2"]):
        with pytest.raises(ConfigError):
            parse_pool_specs(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_ttl": 0},
        {"task_delay": -1},
        {"password": ""},
        {"pools": {"p": -1}},
        {"pools": {DEMO_REGKEY_POOL: 1}},
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BigIqEmulator(**kwargs)


def test_normalize_mac() -> None:
    for raw in ("00:50:56:9a:3c:e1", "00-50-56-9A-3C-E1", "0050.569a.3ce1", "0050569A3CE1"):
        assert normalize_mac(raw) == MAC
    assert normalize_mac("00:50:56:9a:3c") is None
    assert normalize_mac("zz:50:56:9a:3c:e1") is None
