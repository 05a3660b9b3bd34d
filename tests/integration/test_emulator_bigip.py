"""The BIG-IP fleet emulator over real HTTPS, called the way F5's own clients call a BIG-IP.

The request snippets mirror the Ansible module `bigip_device_license` (and its F5RestClient),
f5-cloud-libs (`bigIp.js`, `bigIpOnboard.js`) and f5-sdk: same paths, bodies and quoting. No code
from `airgap.devices` is used here; the transport has its own tests.
"""

from __future__ import annotations

import base64
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from airgap.emulators.bigip import (
    INVENTORY_HEADER,
    STAT_KEYS,
    BigIpFleetServer,
    parse_fleet_faults,
    start_bigip_fleet,
)
from airgap.emulators.bigiq import license_text
from airgap.errors import ConfigError

LOGIN = "/mgmt/shared/authn/login"
DEVICE_INFO = "/mgmt/shared/identified-devices/config/device-info"
DOSSIER = "/mgmt/tm/util/get-dossier"
BASH = "/mgmt/tm/util/bash"
REGISTRATION = "/mgmt/tm/shared/licensing/registration"
MCP_STATE = "/mgmt/tm/sys/mcp-state"

REGKEY = "Q4821-07395-61827-30546-9172843"  # samples/f5/regkey.txt
ADD_ON = "T582617-4093851"
ADD_ON_2 = "K104729-3356120"


class FakeClock:
    """A monotonic clock the test moves by hand (token expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Box:
    """One emulated BIG-IP as a client sees it: a base URL and a TLS-verifying session."""

    url: str
    cert: Path
    session: requests.Session = field(default_factory=requests.Session)
    token: str | None = None

    def __post_init__(self) -> None:
        # REQUESTS_CA_BUNDLE would replace the emulator's certificate otherwise.
        self.session.trust_env = False
        self.session.verify = str(self.cert)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers.setdefault("X-F5-Auth-Token", self.token)
        return self.session.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)

    # --- as F5's Ansible client (module_utils/bigip.py F5RestClient) --------------------------

    def login(self, password: str = "any-password", user: str = "admin") -> requests.Response:
        response = self.session.post(
            self.url + LOGIN,
            json={"username": user, "password": password, "loginProviderName": "tmos"},
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        if response.status_code == 200:
            self.token = response.json()["token"]["token"]
        return response

    # --- as bigip_device_license ---------------------------------------------------------------

    def read_dossier(self, key: str, add_ons: list[str] | None = None) -> requests.Response:
        params = {"command": "run", "utilCmdArgs": f'-b "{key}"'}
        if add_ons:
            params["utilCmdArgs"] = "-a {} ".format(" ".join(add_ons)) + params["utilCmdArgs"]
        return self.post(DOSSIER, params)

    def bash(self, script: str) -> requests.Response:
        return self.post(BASH, {"command": "run", "utilCmdArgs": f'-c "{script}"'})

    def upload_license(self, text: str) -> requests.Response:
        escape_patterns = r"([$\"" + "'])"
        payload = re.sub(escape_patterns, r"\\\1", text)
        return self.bash(f"cat > /config/bigip.license <<EOF\n{payload}\nEOF")

    def reload_license(self) -> requests.Response:
        return self.bash("/usr/bin/reloadlic")

    def mcpd_ready(self) -> bool:
        try:
            response = self.bash("tmsh show sys mcp-state | grep running")
            body = response.json()
            if response.status_code not in (200, 201) or body.get("code", 200) not in (200, 201):
                return False
            return "commandResult" in body
        except ValueError:
            return False

    def exists(self, key: str) -> bool:
        body = self.get(REGISTRATION).json()
        return bool(body.get("registrationKey") == key)

    def is_revoked(self) -> bool:
        body = self.bash("egrep Revoked /config/bigip.license").json()
        return "commandResult" in body and "Revoked" in body["commandResult"]

    def stats(self) -> dict[str, Any]:
        response = self.session.get(self.url + "/_emulator/stats", timeout=10)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body


FleetFactory = Callable[..., tuple[BigIpFleetServer, list[Box]]]


@pytest.fixture
def fleet() -> Iterator[FleetFactory]:
    started: list[BigIpFleetServer] = []

    def make(devices: int = 1, **options: Any) -> tuple[BigIpFleetServer, list[Box]]:
        server = start_bigip_fleet(devices, **options)
        started.append(server)
        return server, [Box(url, server.cert_path) for url in server.urls]

    yield make
    for server in started:
        server.stop()


def wait_until_ready(box: Box, timeout: float = 10.0) -> None:
    """Poll as bigip_device_license's wait_for_mcpd does, without its fixed sleeps."""
    deadline = time.monotonic() + timeout
    while not box.mcpd_ready():
        assert time.monotonic() < deadline, "mcpd did not come back"
        time.sleep(0.05)


def the_license(key: str = REGKEY) -> str:
    return license_text(key, dossier="ab" * 231, licensed_version="17.1.1")


# --- authentication -------------------------------------------------------------------------


def test_login_gives_a_token_the_device_accepts_as_x_f5_auth_token(fleet: FleetFactory) -> None:
    _server, (box,) = fleet()
    response = box.login()
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    token = response.json()["token"]
    assert re.fullmatch(r"[A-Z2-7]{26}", token["token"])
    assert token["timeout"] == 1200
    assert token["kind"] == "shared:authz:tokens:authtokenitemstate"
    assert token["expirationMicros"] - token["lastUpdateMicros"] == 1200 * 1_000_000
    assert box.get(DEVICE_INFO).status_code == 200


@pytest.mark.parametrize(
    ("user", "password"), [("admin", ""), ("root", "pw"), ("admin", None)], ids=str
)
def test_login_refused_without_admin_and_a_password(
    fleet: FleetFactory, user: str, password: str | None
) -> None:
    _server, (box,) = fleet()
    body: dict[str, Any] = {"username": user, "loginProviderName": "tmos"}
    if password is not None:
        body["password"] = password
    response = box.session.post(box.url + LOGIN, json=body, timeout=10)
    assert response.status_code == 401
    assert response.json()["message"] == "Authentication failed."
    assert response.json()["kind"] == ":resterrorresponse"
    assert "password" not in response.json()["originalRequestBody"]


def test_password_option_requires_that_password(fleet: FleetFactory) -> None:
    _server, (box,) = fleet(password="s3cret-value")
    assert box.login("other").status_code == 401
    assert box.login("s3cret-value").status_code == 200
    assert box.stats()["devices"]["bigip-0001"]["login_failed"] == 1


def test_expired_unknown_and_missing_tokens_are_answered_401(fleet: FleetFactory) -> None:
    clock = FakeClock()
    _server, (box, other) = fleet(2, token_ttl=10, clock=clock)
    assert box.login().status_code == 200
    clock.advance(9.5)
    assert box.get(DEVICE_INFO).status_code == 200
    clock.advance(1)
    expired = box.get(DEVICE_INFO)
    assert expired.status_code == 401
    assert expired.json()["message"] == "X-F5-Auth-Token has expired."
    # A token is good only on the device that issued it.
    other.token = box.token
    assert other.get(DEVICE_INFO).json()["message"] == "X-F5-Auth-Token does not exist."
    other.token = None
    missing = other.get(DEVICE_INFO)
    assert missing.status_code == 401
    assert missing.json()["message"].startswith("Authorization failed: no user authentication")
    assert box.stats()["devices"]["bigip-0001"]["unauthorized"] == 1


def test_basic_auth_works_on_every_call_as_f5_sdk_and_ansible_use_it(fleet: FleetFactory) -> None:
    _server, (box,) = fleet(password="pw-basic")
    # F5RestClient.connect_via_basic_auth checks the credentials with GET /mgmt/tm/sys.
    sys_root = box.get("/mgmt/tm/sys", auth=("admin", "pw-basic"))
    assert sys_root.status_code == 200
    assert sys_root.json()["kind"] == "tm:sys:syscollectionstate"
    assert box.get(REGISTRATION, auth=("admin", "pw-basic")).status_code == 200
    wrong = box.get(REGISTRATION, auth=("admin", "nope"))
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    # Login with only a Basic header, as some clients do.
    login = box.session.post(box.url + LOGIN, auth=("admin", "pw-basic"), timeout=10)
    assert login.status_code == 200


def test_token_timeout_patch_and_logout_delete(fleet: FleetFactory) -> None:
    clock = FakeClock()
    _server, (box,) = fleet(token_ttl=60, clock=clock)
    box.login()
    link = f"/mgmt/shared/authz/tokens/{box.token}"
    patched = box.request("PATCH", link, json={"timeout": 3600})
    assert patched.status_code == 200
    assert patched.json()["timeout"] == 3600
    assert box.request("PATCH", link, json={"timeout": 36001}).status_code == 400
    clock.advance(600)
    assert box.get(DEVICE_INFO).status_code == 200
    assert box.request("DELETE", link).status_code == 200
    assert box.get(DEVICE_INFO).json()["message"] == "X-F5-Auth-Token does not exist."
    assert box.stats()["devices"]["bigip-0001"]["logout"] == 1


# --- identity ---------------------------------------------------------------------------------


def test_each_device_has_its_own_identity(fleet: FleetFactory) -> None:
    _server, boxes = fleet(3)
    infos = []
    for box in boxes:
        box.login()
        infos.append(box.get(DEVICE_INFO).json())
    assert [i["hostname"] for i in infos] == ["bigip-0001", "bigip-0002", "bigip-0003"]
    macs = [i["baseMac"] for i in infos]
    assert len(set(macs)) == 3
    assert all(re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac) for mac in macs)
    assert len({i["machineId"] for i in infos}) == 3
    first = infos[0]
    assert (first["version"], first["platform"], first["product"]) == ("17.1.1.3", "Z100", "BIG-IP")
    assert first["kind"] == "shared:resolver:device-groups:deviceinfostate"
    assert first["selfLink"] == "https://localhost" + DEVICE_INFO
    assert "license" not in first


def test_device_state_edited_by_a_test_is_what_the_device_reports(fleet: FleetFactory) -> None:
    server, (box,) = fleet()
    with server.fleet.lock:
        server.devices[0].base_mac = "00:01:2:a:B:d0"
        server.devices[0].install(the_license())
    box.login()
    info = box.get(DEVICE_INFO).json()
    assert info["baseMac"] == "00:01:2:a:B:d0"
    assert info["license"]["registrationKey"] == REGKEY


# --- dossier ----------------------------------------------------------------------------------


def test_get_dossier_as_bigip_device_license_asks_for_it(fleet: FleetFactory) -> None:
    _server, (box, other) = fleet(2)
    box.login()
    other.login()
    response = box.read_dossier(REGKEY)
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "tm:util:get-dossier:runstate"
    assert body["command"] == "run"
    assert body["utilCmdArgs"] == f'-b "{REGKEY}"'
    dossier = body["commandResult"]
    assert re.fullmatch(r"[0-9a-f]{462}", dossier)
    # The same keys give the same dossier; add-ons change it; space- or comma-separated.
    assert other.read_dossier(REGKEY).json()["commandResult"] == dossier
    with_add_ons = box.read_dossier(REGKEY, [ADD_ON, ADD_ON_2]).json()["commandResult"]
    assert with_add_ons != dossier
    comma_args = f'-a {ADD_ON},{ADD_ON_2} -b "{REGKEY}"'
    comma = box.post(DOSSIER, {"command": "run", "utilCmdArgs": comma_args})
    assert comma.json()["commandResult"] == with_add_ons
    # The license F5 issues for it names the dossier it was made for.
    assert f"Dossier :                          {dossier[:128]}" in license_text(
        REGKEY, dossier=dossier
    )
    assert box.stats()["devices"]["bigip-0001"]["dossier"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"command": "run", "utilCmdArgs": '-b "not-a-key"'},
        {"command": "run", "utilCmdArgs": f'-b "{REGKEY}" -a BAD'},
        {"command": "run", "utilCmdArgs": f'-r -b "{REGKEY}"'},
        {"command": "list", "utilCmdArgs": f'-b "{REGKEY}"'},
    ],
    ids=["bad-key", "bad-add-on", "unknown-flag", "not-run"],
)
def test_get_dossier_refuses_bad_arguments_in_the_tm_envelope(
    fleet: FleetFactory, body: dict[str, Any]
) -> None:
    _server, (box,) = fleet()
    box.login()
    response = box.post(DOSSIER, body)
    assert response.status_code == 400
    assert set(response.json()) == {"code", "message", "errorStack", "apiError"}
    assert box.stats()["devices"]["bigip-0001"]["dossier"] == 0


# --- registration and installing a license ----------------------------------------------------


def test_unlicensed_registration_has_no_registration_key(fleet: FleetFactory) -> None:
    _server, (box,) = fleet()
    box.login()
    body = box.get(REGISTRATION).json()
    # f5-cloud-libs: `if (response.registrationKey ...)`; bigip_device_license: a KeyError.
    assert "registrationKey" not in body
    assert body["kind"] == "tm:shared:licensing:registration:licensestate"
    assert not box.exists(REGKEY)


def test_license_installed_as_bigip_device_license_does(fleet: FleetFactory) -> None:
    _server, (box, untouched) = fleet(2, restart_seconds=0.5)
    box.login()
    text = the_license()
    assert '"/config/bigip.license"' in text  # the quotes Ansible escapes
    written = box.upload_license(text)
    assert written.status_code == 200
    assert "commandResult" not in written.json()
    assert not box.exists(REGKEY)  # written, not loaded yet
    assert box.reload_license().status_code == 200

    # mcpd restarts: every call to this device answers 503 for a while, the others do not.
    restarting = box.get(REGISTRATION)
    assert restarting.status_code == 503
    assert restarting.headers["Content-Type"] == "application/json"
    assert restarting.json()["message"] == "The connection to mcpd has been lost, try again."
    assert not box.mcpd_ready()
    untouched.login()
    assert untouched.get(REGISTRATION).status_code == 200
    wait_until_ready(box)

    assert box.exists(REGKEY)
    assert not box.is_revoked()
    registration = box.get(REGISTRATION).json()
    assert registration["registrationKey"] == REGKEY
    assert registration["licensedVersion"] == "17.1.1"
    assert registration["platformId"] == "Z100"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00\+00:00", registration["licensedDateTime"])
    assert registration["activeModules"][0].startswith("Local Traffic Manager, VE-1G|")
    # The file holds the text (the here-document's escapes undone, plus its last newline).
    content = box.bash("cat /config/bigip.license").json()["commandResult"]
    assert content == text + "\n"
    stats = box.stats()["devices"]
    assert {k: stats["bigip-0001"][k] for k in ("write", "reloadlic", "install")} == {
        "write": 1,
        "reloadlic": 1,
        "install": 1,
    }
    assert stats["bigip-0001"]["unavailable"] >= 2
    assert stats["bigip-0002"]["install"] == 0


@pytest.mark.parametrize(
    "script",
    [
        "cat > /config/bigip.license << 'LICENSEEOF'\n{lines}\nLICENSEEOF",
        "cat <<EOF > /config/bigip.license\n{lines}\nEOF",
        "echo {b64} | base64 -d > /config/bigip.license",
        "echo '{b64}' | base64 --decode > /config/bigip.license",
    ],
    ids=["quoted-heredoc", "heredoc-first", "base64", "base64-quoted"],
)
def test_other_ways_of_writing_the_license_file_are_understood(
    fleet: FleetFactory, script: str
) -> None:
    _server, (box,) = fleet(restart_seconds=0)
    box.login()
    text = the_license()
    b64 = base64.b64encode(text.encode()).decode()
    command = script.format(lines=text.rstrip("\n"), b64=b64)
    # Quoted for the -c "..." argument as bash reads a double-quoted word.
    escaped = command.replace("\\", "\\\\").replace('"', '\\"')
    response = box.post(BASH, {"command": "run", "utilCmdArgs": f'-c "{escaped}"'})
    assert response.status_code == 200, response.text
    box.reload_license()
    assert box.exists(REGKEY)
    assert box.bash("cat /config/bigip.license").json()["commandResult"] == text


def test_echo_with_single_quotes_writes_the_file(fleet: FleetFactory) -> None:
    _server, (box,) = fleet(restart_seconds=0)
    box.login()
    text = the_license()
    command = f"echo '{text.rstrip()}' > /config/bigip.license".replace('"', '\\"')
    response = box.post(BASH, {"command": "run", "utilCmdArgs": f'-c "{command}"'})
    assert response.status_code == 200, response.text
    box.reload_license()
    assert box.exists(REGKEY)
    assert box.bash("cat /config/bigip.license").json()["commandResult"] == text


def test_registration_put_with_license_text_installs_as_f5_sdk_update_does(
    fleet: FleetFactory,
) -> None:
    _server, (box,) = fleet(restart_seconds=0.3)
    box.login()
    loaded = box.get(REGISTRATION).json()  # update() sends the loaded object back, changed
    response = box.request("PUT", REGISTRATION, json={**loaded, "licenseText": the_license()})
    assert response.status_code == 200
    assert response.json()["registrationKey"] == REGKEY
    assert box.get(REGISTRATION).status_code == 503
    wait_until_ready(box)
    assert box.exists(REGKEY)
    bad = box.request("PUT", REGISTRATION, json={"licenseText": "# not a license\n"})
    assert bad.status_code == 400
    assert box.stats()["devices"]["bigip-0001"]["install"] == 1


def test_reloadlic_without_a_new_file_is_no_install(fleet: FleetFactory) -> None:
    server, (box,) = fleet(restart_seconds=0)
    with server.fleet.lock:
        server.devices[0].install(the_license())
    box.login()
    box.reload_license()
    box.reload_license()
    counts = box.stats()["devices"]["bigip-0001"]
    assert (counts["reloadlic"], counts["install"]) == (2, 0)
    assert box.exists(REGKEY)


def test_a_license_without_a_registration_key_leaves_the_box_unlicensed(
    fleet: FleetFactory,
) -> None:
    server, (box,) = fleet(restart_seconds=0)
    with server.fleet.lock:
        server.devices[0].install(the_license())
    box.login()
    box.upload_license("# BIG-IP System License Key File\nUsage : Production\n")
    box.reload_license()
    assert "registrationKey" not in box.get(REGISTRATION).json()


def test_mcp_state_reports_running_to_tmsh_and_to_f5_cloud_libs_ready(fleet: FleetFactory) -> None:
    _server, (box,) = fleet()
    box.login()
    field_fmt = box.bash("tmsh show sys mcp-state field-fmt").json()["commandResult"]
    assert "phase running" in field_fmt
    assert "running" in box.bash("tmsh show sys mcp-state").json()["commandResult"]
    assert box.mcpd_ready()
    # f5-cloud-libs BigIp.ready(): availability probes, then every mcp-state entry's phase.
    for probe in (
        "/mgmt/shared/echo-js/available",
        "/mgmt/shared/identified-devices/config/device-info/available",
        "/mgmt/tm/sys/available",
        "/mgmt/tm/cm/available",
    ):
        assert box.get(probe).status_code == 200
    entries = box.get(MCP_STATE + "/").json()["entries"]
    phases = [e["nestedStats"]["entries"]["phase"]["description"] for e in entries.values()]
    assert phases == ["running"]


# --- util/bash runs nothing else ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        '-c "touch {marker}"',
        '-c "cat /etc/passwd"',
        '-c "rm -f /config/bigip.license"',
        "/config/bigip.license",  # bigip_device_license's "remove" sends exactly this
        '-c "cat > /LICENSE.F5 <<EOF\nEULA\nEOF"',  # its EULA upload
        '-c "/usr/bin/reloadlic; touch {marker}"',
        '-c "$(touch {marker})"',
        '-c "cat > /config/bigip.license <<EOF\n$(touch {marker})\nEOF"',
        '-c "cat > /config/bigip.license <<EOF\nx\nEOF\ntouch {marker}"',
        "-c 'tmsh show sys mcp-state' -c 'touch {marker}'",
    ],
)
def test_util_bash_refuses_every_other_command_and_runs_none(
    fleet: FleetFactory, tmp_path: Path, args: str
) -> None:
    server, (box,) = fleet()
    with server.fleet.lock:
        server.devices[0].install(the_license())
    box.login()
    marker = tmp_path / "ran"
    response = box.post(BASH, {"command": "run", "utilCmdArgs": args.format(marker=marker)})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message", "errorStack", "apiError"}
    assert "runs no shell" in body["message"]
    assert not marker.exists()
    assert box.exists(REGKEY)
    counts = box.stats()["devices"]["bigip-0001"]
    assert (counts["refused_bash"], counts["write"], counts["reloadlic"]) == (1, 0, 0)


# --- faults, stats, inventory -----------------------------------------------------------------


def test_server_faults_can_target_one_device(fleet: FleetFactory) -> None:
    server, (first, second) = fleet(2)
    first.login()
    second.login()
    server.fail_next(1, 500, path_contains=REGISTRATION)
    assert first.get(REGISTRATION).status_code == 200
    assert second.get(REGISTRATION).status_code == 500
    assert second.get(REGISTRATION).status_code == 200
    server.fail_next("bigip-0002", "reset", body_contains="reloadlic")
    assert second.bash("tmsh show sys mcp-state").status_code == 200
    with pytest.raises(requests.ConnectionError):
        second.reload_license()
    assert second.stats()["devices"]["bigip-0002"]["reloadlic"] == 1  # it ran, then dropped


def test_device_faults_auth_and_restart_armed_for_one_device(fleet: FleetFactory) -> None:
    server, (first, second) = fleet(2, restart_seconds=0.3)
    armed = first.session.post(
        first.url + "/_emulator/device-faults",
        json={"device": "bigip-0001", "kind": "auth"},
        timeout=10,
    )
    assert armed.json() == {"armed": True}
    assert first.login().status_code == 401
    assert first.login().status_code == 200
    assert second.login().status_code == 200
    server.fail_next(1, "restart")
    assert second.get(REGISTRATION).status_code == 503
    assert first.get(REGISTRATION).status_code == 200
    wait_until_ready(second)
    stats = first.stats()["devices"]
    assert stats["bigip-0001"]["login_failed"] == 1
    assert stats["bigip-0002"]["restarts"] == 1
    bad = first.session.post(
        first.url + "/_emulator/device-faults", json={"device": "nope", "kind": "auth"}, timeout=10
    )
    assert bad.status_code == 400


def test_fault_rates_for_device_kinds(fleet: FleetFactory) -> None:
    _server, (box,) = fleet(faults="auth=1")
    assert box.login().status_code == 401
    _server2, (box2,) = fleet(faults="restart=1,seed=3", restart_seconds=0.01)
    assert box2.login().status_code == 503


def test_parse_fleet_faults_splits_device_kinds_from_server_kinds() -> None:
    faults, auth, restart = parse_fleet_faults("429=0.1, auth=0.2,reset=0.05,restart=0.3")
    assert (faults.rate_429, faults.rate_reset, auth, restart) == (0.1, 0.05, 0.2, 0.3)
    assert parse_fleet_faults(None)[1:] == (0.0, 0.0)
    for bad in ("auth=2", "auth=x", "auth=0.1,auth=0.2", "bogus=1", "restart"):
        with pytest.raises(ConfigError):
            parse_fleet_faults(bad)


def test_stats_answer_on_every_device_address_for_the_whole_fleet(fleet: FleetFactory) -> None:
    server, boxes = fleet(3)
    boxes[2].login()
    views = [box.stats() for box in boxes]
    assert views[0] == views[1] == views[2] == server.stats()
    assert list(views[0]["devices"]) == ["bigip-0001", "bigip-0002", "bigip-0003"]
    assert set(views[0]["devices"]["bigip-0003"]) == set(STAT_KEYS)
    assert views[0]["devices"]["bigip-0003"]["login"] == 1
    assert views[0]["licensed"] == 0
    assert views[0]["faults"] == {"429": 0, "500": 0, "reset": 0, "slow": 0}


def test_every_answer_is_json_even_errors(fleet: FleetFactory) -> None:
    _server, (box,) = fleet()
    box.login()
    for response in (
        box.get("/mgmt/tm/ltm/pool"),
        box.request("DELETE", REGISTRATION),
        box.request("POST", DOSSIER, data=b"{not json"),
        box.session.get(box.url + DEVICE_INFO, timeout=10),
    ):
        assert response.status_code >= 400
        assert response.headers["Content-Type"] == "application/json"
        assert isinstance(response.json()["message"], str)
    unknown = box.get("/mgmt/tm/ltm/pool").json()
    assert unknown["message"] == "Public URI path not registered: /tm/ltm/pool"


def test_inventory_rows_point_at_each_device(fleet: FleetFactory, tmp_path: Path) -> None:
    server, boxes = fleet(3)
    rows = server.inventory_rows
    assert [row["hostname"] for row in rows] == ["bigip-0001", "bigip-0002", "bigip-0003"]
    assert [f"https://{row['host']}:{row['port']}" for row in rows] == [b.url for b in boxes]
    assert {(r["platform"], r["transport"], r["credential"]) for r in rows} == {
        ("bigip", "icontrol", "lab")
    }
    assert all(Path(row["ca_bundle"]).is_absolute() for row in rows)
    path = tmp_path / "inv" / "bigip.csv"
    server.write_inventory(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == INVENTORY_HEADER
        assert list(reader) == rows


def test_cli_serves_a_fleet_writes_the_inventory_and_prints_the_stats_url(
    tmp_path: Path,
) -> None:
    inventory, cert = tmp_path / "bigip.csv", tmp_path / "bigip.pem"
    exe = shutil.which("airgap")
    command = [exe] if exe else [sys.executable, "-m", "airgap"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRGAP_")}
    proc = subprocess.Popen(
        [
            *command,
            "emulate",
            "bigip",
            "--devices",
            "2",
            "--restart-seconds",
            "0.2",
            "--inventory-out",
            str(inventory),
            "--cert-out",
            str(cert),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        stats_url = proc.stdout.readline().strip()
        assert stats_url.startswith("https://127.0.0.1:") and stats_url.endswith("/_emulator/stats")
        with inventory.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [row["hostname"] for row in rows] == ["bigip-0001", "bigip-0002"]
        assert {row["ca_bundle"] for row in rows} == {str(cert.resolve())}
        box = Box(f"https://127.0.0.1:{rows[1]['port']}", cert)
        assert box.login().status_code == 200
        session = requests.Session()
        session.trust_env = False
        stats = session.get(stats_url, verify=str(cert), timeout=10).json()
        assert stats["devices"]["bigip-0002"]["login"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
