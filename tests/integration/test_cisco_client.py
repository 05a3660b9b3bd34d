"""The Cisco client against the Cisco emulator over real HTTP: every action, tokens, faults,
reconciliation, account resolution, secrets and at-most-once under concurrency.

Each test drives `submit` → `poll` (or `reconcile`) directly, as the processor would, and checks
what Cisco saw through the emulator's stats.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests

from airgap.config import DEFAULTS, Config, HomePaths
from airgap.emulators.cisco import CiscoEmulator, build_cisco_server
from airgap.emulators.device import NETWORK_ADVANTAGE_TAG, return_code_for, write_device
from airgap.emulators.server import EmulatorServer, Request, Response
from airgap.errors import AirgapError, AuthError, ConfigError
from airgap.outside import cisco as cisco_module
from airgap.outside.cisco import CiscoClient, CiscoSettings
from airgap.outside.http import RetryPolicy, UncertainOutcome
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem

PID = "C9300-24T"
HSEC = "regid.2021-05.com.cisco.C9K_HSEC,1.0_4c1f0e8a-72d3-4b9e-a6f5-0d93e1b7c2a4"
CLIENT_ID = "airgap-test-client-id-41c7"
SECRET = "s3cret-value-never-shown-7f3a9b"
POLL_DELAY = 0.2  # seconds
FAST_RETRY = RetryPolicy(attempts=4, backoff_factor=0.01, jitter=0.0, retry_after_max=0.05)


@dataclass
class Cisco:
    """An emulator server and a client pointed at it."""

    server: EmulatorServer
    emu: CiscoEmulator
    client: CiscoClient
    settings: CiscoSettings

    def stats(self) -> dict[str, Any]:
        """`GET /_emulator/stats`: calls, mutations per UDI, nonce reuse and injected faults."""
        with requests.Session() as session:
            session.trust_env = False
            verify = str(self.server.cert_path) if self.server.cert_path else True
            response = session.get(f"{self.server.url}/_emulator/stats", timeout=5, verify=verify)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def mutations(self, sn: str, pid: str = PID) -> dict[str, int]:
        return dict(self.stats()["mutations"].get(f"{pid}:{sn}", {}))


def settings_for(url: str, **overrides: Any) -> CiscoSettings:
    base = CiscoSettings(
        token_url=f"{url}/oauth2/default/v1/token",
        api_base=f"{url}/services/api/smart-accounts-and-licensing/",
        client_id=CLIENT_ID,
        client_secret=SECRET,
    )
    return replace(base, **overrides)


MakeCisco = Callable[..., Cisco]


@pytest.fixture
def make_cisco() -> Iterator[MakeCisco]:
    made: list[Cisco] = []

    def make(
        *,
        app: CiscoEmulator | None = None,
        start: bool = True,
        settings: dict[str, Any] | None = None,
        **server: Any,
    ) -> Cisco:
        server.setdefault("poll_delay", POLL_DELAY)
        if app is None:
            emulator_server = build_cisco_server(**server).start()
        else:
            emulator_server = EmulatorServer(app).start()
        emu = emulator_server.app
        assert isinstance(emu, CiscoEmulator)
        config = settings_for(emulator_server.url, **(settings or {}))
        client = CiscoClient(config, retry=FAST_RETRY, limiter=None, timeout=5)
        env = Cisco(emulator_server, emu, client, config)
        made.append(env)
        if start:
            client.start()
        return env

    yield make
    for env in made:
        env.client.finish()
        env.server.stop()


@pytest.fixture
def cisco(make_cisco: MakeCisco) -> Cisco:
    return make_cisco()


# --- items and driving -------------------------------------------------------------------------


def reserve_item(
    sn: str, *, pid: str = PID, tags: dict[str, int] | None = None, **params: Any
) -> WorkItem:
    entitlements = [{"tag": tag, "count": n} for tag, n in (tags or {HSEC: 1}).items()]
    return WorkItem(
        id=f"reserve-{sn}",
        action="cisco.reserve",
        device={"hostname": f"sw-{sn.lower()}", "udi": {"pid": pid, "sn": sn}},
        params={"entitlements": entitlements, **params},
    )


def return_item(sn: str, *, pid: str = PID, code: str | None = None) -> WorkItem:
    return WorkItem(
        id=f"return-{sn}",
        action="cisco.return",
        device={"hostname": f"sw-{sn.lower()}", "udi": {"pid": pid, "sn": sn}},
        params={"return_code": code if code is not None else return_code_for(pid, sn)},
    )


def report_item(rum: Path, *, pid: str = PID, sn: str) -> WorkItem:
    return WorkItem(
        id=f"report-{sn}",
        action="cisco.report_usage",
        device={"hostname": None, "udi": {"pid": pid, "sn": sn}},
        params={},
        files={f"files/report-{sn}/{rum.name}": rum},
    )


def slr_item(sn: str, *, pid: str = PID) -> WorkItem:
    return WorkItem(
        id=f"slr-{sn}",
        action="cisco.slr_reserve",
        device={"hostname": None, "udi": {"pid": pid, "sn": sn}},
        params={
            "request_code": f"CB-Z{pid}:{sn}-AQ7fK2mZr-3C",
            "reservation_type": "SPECIFIC",
            "entitlements": [{"tag": HSEC, "count": 2}],
        },
    )


def query_item(action: str, **params: Any) -> WorkItem:
    return WorkItem(id=f"q-{action}", action=action, device=None, params=params)


def drive(client: CiscoClient, item: WorkItem, outcome: Outcome, *, limit: float = 5.0) -> Outcome:
    """Poll a pending outcome to its end, faster than the advised interval (tests only)."""
    deadline = time.monotonic() + limit
    while outcome.status == "pending":
        assert time.monotonic() < deadline, f"{item.id} still pending"
        time.sleep(0.05)
        outcome = client.poll(item, outcome.vendor_ref)
    return outcome


def run(client: CiscoClient, item: WorkItem) -> Outcome:
    return drive(client, item, client.submit(item))


def final(found: Reconciled) -> Outcome:
    assert isinstance(found, Outcome), found
    return found


# --- settings ---------------------------------------------------------------------------------


def make_config(tmp_path: Path, values: dict[str, Any], secrets: dict[str, str]) -> Config:
    merged = {k: v for k, v in DEFAULTS.items() if v is not None}
    merged.update(values)
    return Config(paths=HomePaths(tmp_path), values=merged, secrets=secrets)


def test_settings_from_config_reads_keys_and_secrets(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    config = make_config(
        tmp_path,
        {"cisco.smart_account": "demo.example.com", "cisco.ca_bundle": str(ca)},
        {"cisco.client_id": CLIENT_ID, "cisco.client_secret": SECRET},
    )
    settings = CiscoSettings.from_config(config)
    assert settings.token_url == "https://id.cisco.com/oauth2/default/v1/token"
    assert settings.api_base.endswith("/services/api/smart-accounts-and-licensing/")
    assert settings.smart_account == "demo.example.com"
    assert settings.virtual_account == "Default"
    assert settings.verify_tls == str(ca)
    assert (settings.client_id, settings.client_secret) == (CLIENT_ID, SECRET)
    off = make_config(
        tmp_path,
        {"cisco.verify_tls": False, "cisco.ca_bundle": str(ca)},
        {"cisco.client_id": CLIENT_ID, "cisco.client_secret": SECRET},
    )
    assert CiscoSettings.from_config(off).verify_tls is False


def test_settings_without_secrets_name_the_environment_variables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        CiscoSettings.from_config(make_config(tmp_path, {}, {"cisco.client_id": CLIENT_ID}))
    assert caught.value.code == "E_CONFIG"
    assert "AIRGAP_CISCO_CLIENT_SECRET" in caught.value.message
    assert caught.value.hint is not None
    assert "AIRGAP_CISCO_CLIENT_ID" in caught.value.hint
    assert "AIRGAP_CISCO_CLIENT_SECRET" in caught.value.hint
    assert CLIENT_ID not in str(caught.value) + caught.value.hint


def test_repr_of_settings_and_client_hide_secrets(cisco: Cisco) -> None:
    shown = repr(cisco.settings) + str(cisco.settings) + repr(cisco.client)
    assert SECRET not in shown
    assert CLIENT_ID not in shown
    assert "api_base" in shown


# --- actions end to end ------------------------------------------------------------------------


def test_reserve_ends_with_lic_txt_holding_the_authorization(cisco: Cisco) -> None:
    item = reserve_item("FOC0001")
    pending = cisco.client.submit(item)
    assert pending.status == "pending"
    assert pending.vendor_ref["action"] == "authorizations"
    # build_cisco_server advises max(1, ceil(poll_delay)) seconds, and the client passes it on.
    assert pending.retry_after == 1.0
    outcome = drive(cisco.client, item, pending)
    assert outcome.status == "ok", outcome
    lic = outcome.files["lic.txt"].decode()
    assert lic.startswith("<smartLicense><smartLicenseAuthorization>")
    assert f"<udi>P:{PID},S:FOC0001</udi>" in lic
    assert f"<tag>{HSEC}</tag><count>1</count>" in lic
    assert set(outcome.result) == {
        "auth_status",
        "correlation_id",
        "product_instance_identifier",
        "status_message",
    }
    assert outcome.result["auth_status"] == "AUTHORIZED"
    assert outcome.vendor_ref == pending.vendor_ref
    assert cisco.mutations("FOC0001") == {"reserve": 1, "return": 0, "report": 0}
    stats = cisco.stats()
    assert stats["nonce_reuse"] == 0
    assert stats["calls"]["token"] == 1


def test_poll_ids_beyond_2_53_are_kept_exact_as_strings(cisco: Cisco) -> None:
    pending = cisco.client.submit(reserve_item("FOC0002"))
    poll_id = pending.vendor_ref["poll_id"]
    assert isinstance(poll_id, str)
    assert int(poll_id) > 2**53
    with cisco.emu.lock:
        assert int(poll_id) in cisco.emu.polls  # every digit survived
    assert str(int(poll_id)) == poll_id


def test_reserve_refused_by_cisco_is_failed_with_its_message(cisco: Cisco) -> None:
    with cisco.emu.lock:
        cisco.emu.default_quantity = None  # unlisted tags are unknown to the account
    outcome = run(cisco.client, reserve_item("FOC0003", tags={"regid.bogus.tag": 1}))
    assert outcome.status == "failed"
    assert outcome.error == {
        "code": "INVALID_ENTITLEMENT",
        "message": "Entitlement tag 'regid.bogus.tag' is not valid for this account",
    }
    assert cisco.mutations("FOC0003") == {}


def test_a_4xx_refusal_of_the_request_is_failed_not_raised(cisco: Cisco) -> None:
    cisco.server.faults.fail_next("authrequest", 400)
    outcome = cisco.client.submit(reserve_item("FOC0004"))
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["message"]
    assert cisco.mutations("FOC0004") == {}


def test_return_ends_with_return_json(cisco: Cisco) -> None:
    assert run(cisco.client, reserve_item("FOC0005", tags={HSEC: 2})).status == "ok"
    outcome = run(cisco.client, return_item("FOC0005"))
    assert outcome.status == "ok", outcome
    document = json.loads(outcome.files["return.json"])
    assert document["udi"] == {"pid": PID, "sn": "FOC0005"}
    assert document["status"] == "RETURNED"
    assert document["returned_entitlements"] == [{"entitlement": HSEC, "count": 2}]
    assert document["status_message"] == (
        "The reserved licenses were returned to virtual account Default"
    )
    assert document["correlation_id"] == outcome.result["correlation_id"]
    assert cisco.mutations("FOC0005") == {"reserve": 1, "return": 1, "report": 0}


def test_return_with_a_wrong_code_fails_with_ciscos_message(cisco: Cisco) -> None:
    run(cisco.client, reserve_item("FOC0006"))
    outcome = run(cisco.client, return_item("FOC0006", code=return_code_for(PID, "OTHER1")))
    assert outcome.status == "failed"
    assert outcome.error == {
        "code": "INVALID_RETURN_CODE",
        "message": f"The return code is not valid for UDI PID:{PID},SN:FOC0006",
    }


def test_report_usage_ends_with_the_ack(cisco: Cisco, tmp_path: Path) -> None:
    files = write_device(pid=PID, sn="FOC0007", hostname="sw7", out=tmp_path)
    outcome = run(cisco.client, report_item(files.rum, sn="FOC0007"))
    assert outcome.status == "ok", outcome
    ack = outcome.files["ack.xml"].decode()
    assert ack.startswith("<smartLicense>")
    assert "<smartLicenseRumAck>" in ack
    assert '"udi_serial_number":"FOC0007"' in ack
    assert outcome.vendor_ref["action"] == "acknowledgements"
    assert cisco.mutations("FOC0007")["report"] == 1
    by_tag = {report.udi: report for report in cisco.emu.reports.values()}
    assert NETWORK_ADVANTAGE_TAG in by_tag[f"{PID}:FOC0007"].entitlement_tags


def test_report_altered_by_one_byte_fails_with_ciscos_message(cisco: Cisco, tmp_path: Path) -> None:
    files = write_device(pid=PID, sn="FOC0008", hostname="sw8", out=tmp_path)
    text = files.rum.read_text()
    assert text.count("17.12.04") >= 1
    files.rum.write_text(text.replace("17.12.04", "17.12.05", 1))  # one byte, inside a payload
    outcome = run(cisco.client, report_item(files.rum, sn="FOC0008"))
    assert outcome.status == "failed"
    assert outcome.error == {
        "code": "INVALID_SIGNATURE",
        "message": f"Signature validation failed for usage[0] of UDI PID:{PID},SN:FOC0008",
    }
    assert cisco.mutations("FOC0008") == {}


def test_duplicate_report_fails_with_ciscos_message(cisco: Cisco, tmp_path: Path) -> None:
    files = write_device(pid=PID, sn="FOC0009", hostname="sw9", out=tmp_path)
    assert run(cisco.client, report_item(files.rum, sn="FOC0009")).status == "ok"
    again = run(cisco.client, report_item(files.rum, sn="FOC0009"))
    assert again.status == "failed"
    assert again.error == {
        "code": "DUPLICATE_REPORT",
        "message": f"Duplicate report: usage[0] of UDI PID:{PID},SN:FOC0009 was already received",
    }
    assert cisco.mutations("FOC0009")["report"] == 1


def test_unreadable_report_file_is_failed_without_calling_cisco(
    cisco: Cisco, tmp_path: Path
) -> None:
    bogus = tmp_path / "not-rum.xml"
    bogus.write_text("<hello/>")
    outcome = cisco.client.submit(report_item(bogus, sn="FOC0010"))
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["code"] == "E_INPUT"
    assert "reportusage" not in cisco.stats()["calls"]


def test_slr_reserve_ends_with_the_authorization_code(cisco: Cisco) -> None:
    outcome = cisco.client.submit(slr_item("FOC0011"))
    assert outcome.status == "ok", outcome
    code = outcome.files["slr-auth.txt"].decode()
    assert code.startswith("<specificPLR><authorizationCode>")
    assert f"<udi>P:{PID},S:FOC0011</udi>" in code
    assert f"<tag>{HSEC}</tag><count>2</count>" in code
    assert cisco.mutations("FOC0011")["reserve"] == 1


def test_slr_refused_code_is_failed_with_ciscos_message(cisco: Cisco) -> None:
    item = replace(slr_item("FOC0012"), params={**slr_item("FOC0012").params, "request_code": "x"})
    outcome = cisco.client.submit(item)
    assert outcome.status == "failed"
    assert outcome.error == {
        "code": "INVALID_RESERVATION_CODE",
        "message": "The reservation request code 'x' is invalid",
    }


def test_usage_summary_writes_result_json(cisco: Cisco) -> None:
    run(cisco.client, reserve_item("FOC0013", tags={HSEC: 3}))
    outcome = cisco.client.submit(query_item("cisco.usage_summary", tags=[HSEC]))
    assert outcome.status == "ok"
    document = json.loads(outcome.files["result.json"])
    assert document["smart_account"] == "demo.example.com"
    [entry] = document["licenses"]
    assert (entry["tag"], entry["reserved"]) == (HSEC, 3)
    assert outcome.files["result.json"].startswith(b"{\n  ")  # pretty, for people


def test_devices_pages_through_the_list(cisco: Cisco, monkeypatch: pytest.MonkeyPatch) -> None:
    for sn in ("FOC0021", "FOC0022", "FOC0023"):
        run(cisco.client, reserve_item(sn))
    run(cisco.client, reserve_item("FOC0024", virtual_account="Lab"))
    monkeypatch.setattr(cisco_module, "_PAGE_SIZE", 2)
    before = cisco.stats()["calls"].get("devices", 0)
    outcome = cisco.client.submit(query_item("cisco.devices", virtual_accounts=["Default"]))
    assert outcome.status == "ok"
    document = json.loads(outcome.files["result.json"])
    assert document["total"] == 3
    assert [d["serialNumber"] for d in document["devices"]] == ["FOC0021", "FOC0022", "FOC0023"]
    assert cisco.stats()["calls"]["devices"] - before == 2  # pages of 2 and 1
    everything = cisco.client.submit(query_item("cisco.devices", virtual_accounts=[]))
    assert json.loads(everything.files["result.json"])["total"] == 4
    unknown = cisco.client.submit(query_item("cisco.devices", virtual_accounts=["Nope"]))
    assert unknown.status == "failed"
    assert unknown.error is not None and "Default, Lab" in unknown.error["message"]


# --- tokens, 401, 429 ---------------------------------------------------------------------------


def test_expired_token_is_refreshed_before_use(make_cisco: MakeCisco) -> None:
    env = make_cisco(token_ttl=1)
    item = reserve_item("FOC0031")
    pending = env.client.submit(item)
    time.sleep(1.1)
    outcome = drive(env.client, item, pending)
    assert outcome.status == "ok"
    assert env.stats()["calls"]["token"] == 2
    assert env.mutations("FOC0031")["reserve"] == 1


def test_a_401_mid_run_is_handled_with_one_refresh_for_all_threads(cisco: Cisco) -> None:
    items = [reserve_item(f"FOC004{n}") for n in range(8)]
    pendings = [cisco.client.submit(item) for item in items]
    with cisco.emu.lock:
        cisco.emu.tokens.clear()  # the service forgets every token: the next calls get 401
    barrier = threading.Barrier(8)

    def poll(index: int) -> Outcome:
        barrier.wait()
        return drive(cisco.client, items[index], pendings[index])

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(poll, range(8)))
    assert [o.status for o in outcomes] == ["ok"] * 8
    assert cisco.stats()["calls"]["token"] == 2  # the start's token and one refresh


def test_a_401_on_a_mutating_call_is_retried_once_with_a_new_token(cisco: Cisco) -> None:
    with cisco.emu.lock:
        cisco.emu.tokens.clear()
    outcome = run(cisco.client, reserve_item("FOC0050"))
    assert outcome.status == "ok"
    assert cisco.mutations("FOC0050")["reserve"] == 1
    assert cisco.stats()["calls"]["token"] == 2


def test_a_second_401_raises_auth_error(cisco: Cisco) -> None:
    cisco.server.faults.fail_next("summary", 401)
    cisco.server.faults.fail_next("summary", 401)
    with pytest.raises(AuthError) as caught:
        cisco.client.submit(query_item("cisco.usage_summary", tags=[]))
    assert caught.value.code == "E_AUTH"
    assert_no_secret(cisco, caught.value)


def test_429_with_retry_after_is_retried_without_a_second_reservation(cisco: Cisco) -> None:
    cisco.server.faults.fail_next("authrequest", 429)
    outcome = run(cisco.client, reserve_item("FOC0051"))
    assert outcome.status == "ok"
    stats = cisco.stats()
    assert stats["faults"]["429"] == 1
    assert stats["calls"]["authrequest"] == 1  # the 429 never reached the service
    assert cisco.mutations("FOC0051")["reserve"] == 1


def test_wrong_account_403_raises_config_error(cisco: Cisco) -> None:
    with cisco.emu.lock:
        cisco.emu.account_id = 1  # the client's X-CSW-SMART-ACCOUNT-ID no longer matches
    with pytest.raises(ConfigError) as caught:
        cisco.client.submit(reserve_item("FOC0052"))
    assert "does not exist or is not accessible" in caught.value.message
    assert cisco.mutations("FOC0052") == {}


# --- uncertain outcomes and reconciliation -----------------------------------------------------


def test_reset_on_reserve_is_uncertain_and_reconcile_recovers_the_code(cisco: Cisco) -> None:
    item = reserve_item("FOC0061")
    cisco.server.faults.fail_next("authrequest", "reset")
    with pytest.raises(UncertainOutcome):
        cisco.client.submit(item)
    found = final(cisco.client.reconcile(item, {}))
    assert found.status == "ok", found
    lic = found.files["lic.txt"]
    assert f"<udi>P:{PID},S:FOC0061</udi>".encode() in lic
    with cisco.emu.lock:
        stored = cisco.emu.reservations[f"{PID}:FOC0061"].smart_license
    assert stored is not None and lic == base64.b64decode(stored)
    assert "confirmed by device look-up" in found.result["status_message"]
    assert cisco.mutations("FOC0061") == {"reserve": 1, "return": 0, "report": 0}


def test_reconcile_of_a_reservation_without_its_code_needs_attention(cisco: Cisco) -> None:
    item = reserve_item("FOC0062")
    cisco.server.faults.fail_next("authrequest", "reset")
    with pytest.raises(UncertainOutcome):
        cisco.client.submit(item)
    with cisco.emu.lock:
        cisco.emu.reservations[f"{PID}:FOC0062"].smart_license = None  # as real accounts may
    found = final(cisco.client.reconcile(item, {}))
    assert found.status == "needs_attention"
    assert found.error is not None
    assert "--resubmit reserve-FOC0062" in found.error["message"]
    assert cisco.mutations("FOC0062")["reserve"] == 1


def test_reconcile_finds_nothing_for_untouched_devices(cisco: Cisco, tmp_path: Path) -> None:
    run(cisco.client, reserve_item("FOC0063", tags={HSEC: 1}))
    assert cisco.client.reconcile(reserve_item("FOC0064"), {}) is NOT_SUBMITTED
    # A reservation with other entitlements is not this request's: Cisco replaces it on resend.
    assert cisco.client.reconcile(reserve_item("FOC0063", tags={HSEC: 5}), {}) is NOT_SUBMITTED
    assert cisco.client.reconcile(return_item("FOC0063"), {}) is NOT_SUBMITTED  # still reserved
    assert cisco.client.reconcile(slr_item("FOC0065"), {}) is NOT_SUBMITTED
    rum = write_device(pid=PID, sn="FOC0066", hostname=None, out=tmp_path).rum
    assert cisco.client.reconcile(report_item(rum, sn="FOC0066"), {}) is NOT_SUBMITTED
    assert cisco.client.reconcile(query_item("cisco.devices"), {}) is NOT_SUBMITTED
    calls = cisco.stats()["calls"]
    assert calls["authrequest"] == 1 and "reserve_licenses" not in calls  # read-only


def test_reset_on_return_is_reconciled_by_device_look_up(cisco: Cisco) -> None:
    run(cisco.client, reserve_item("FOC0071"))
    item = return_item("FOC0071")
    cisco.server.faults.fail_next("authrequest", "reset")
    with pytest.raises(UncertainOutcome):
        cisco.client.submit(item)
    found = final(cisco.client.reconcile(item, {}))
    assert found.status == "ok", found
    assert "confirmed by device look-up" in found.result["status_message"]
    document = json.loads(found.files["return.json"])
    assert document["udi"] == {"pid": PID, "sn": "FOC0071"}
    assert cisco.mutations("FOC0071") == {"reserve": 1, "return": 1, "report": 0}


def test_return_reconcile_for_an_unknown_device_needs_attention(cisco: Cisco) -> None:
    found = final(cisco.client.reconcile(return_item("FOC0072"), {}))
    assert found.status == "needs_attention"
    assert found.error is not None and "--resubmit return-FOC0072" in found.error["message"]


def test_reset_on_slr_reserve_needs_attention(cisco: Cisco) -> None:
    item = slr_item("FOC0073")
    cisco.server.faults.fail_next("reserve-licenses", "reset")
    with pytest.raises(UncertainOutcome):
        cisco.client.submit(item)
    found = final(cisco.client.reconcile(item, {}))
    assert found.status == "needs_attention"
    assert cisco.mutations("FOC0073")["reserve"] == 1


def test_reconcile_with_a_poll_id_polls_it(cisco: Cisco) -> None:
    item = reserve_item("FOC0074")
    pending = cisco.client.submit(item)
    time.sleep(POLL_DELAY + 0.05)
    found = final(cisco.client.reconcile(item, pending.vendor_ref))
    assert found.status == "ok"
    assert found.vendor_ref == pending.vendor_ref
    assert cisco.mutations("FOC0074")["reserve"] == 1


def test_a_poll_id_cisco_forgot_falls_back_to_the_device_list(cisco: Cisco) -> None:
    item = reserve_item("FOC0075")
    pending = cisco.client.submit(item)
    with cisco.emu.lock:
        cisco.emu.polls.clear()
    found = cisco.client.poll(item, pending.vendor_ref)
    assert found.status == "ok"
    assert f"<udi>P:{PID},S:FOC0075</udi>".encode() in found.files["lic.txt"]


# --- account resolution ------------------------------------------------------------------------


def test_unknown_smart_account_lists_the_available_ones(make_cisco: MakeCisco) -> None:
    env = make_cisco(start=False, settings={"smart_account": "nope.example.com"})
    with pytest.raises(ConfigError) as caught:
        env.client.start()
    assert "nope.example.com" in caught.value.message
    assert "demo.example.com" in caught.value.message


def test_unknown_virtual_account_lists_the_available_ones(make_cisco: MakeCisco) -> None:
    env = make_cisco(start=False, settings={"virtual_account": "Nope"})
    with pytest.raises(ConfigError) as caught:
        env.client.start()
    assert "'Nope'" in caught.value.message
    assert "Default, Lab" in caught.value.message


def test_named_smart_account_and_item_virtual_account_are_used(make_cisco: MakeCisco) -> None:
    env = make_cisco(settings={"smart_account": "demo.example.com"})
    outcome = run(env.client, reserve_item("FOC0081", virtual_account="Lab"))
    assert outcome.status == "ok"
    with env.emu.lock:
        assert env.emu.reservations[f"{PID}:FOC0081"].virtual_account == "Lab"
    unknown = env.client.submit(reserve_item("FOC0082", virtual_account="Nope"))
    assert unknown.status == "failed"
    assert unknown.error is not None and "Default, Lab" in unknown.error["message"]
    assert env.mutations("FOC0082") == {}


class _TwoAccounts(CiscoEmulator):
    """The emulator with a second smart account visible to the credentials."""

    def handle(self, request: Request) -> Response:
        response = super().handle(request)
        if request.path.endswith("v2/accounts/search") and response.status == 200:
            body = json.loads(response.body)
            body["accounts"].append(
                {
                    "account_name": "Other",
                    "domain": "other.example.com",
                    "account_id": 77,
                    "virtual_accounts": [{"name": "Default", "virtual_account_id": 78}],
                }
            )
            return Response.json(200, body)
        return response


def test_several_accounts_and_none_chosen_is_a_config_error(make_cisco: MakeCisco) -> None:
    env = make_cisco(app=_TwoAccounts(poll_delay=POLL_DELAY), start=False)
    with pytest.raises(ConfigError) as caught:
        env.client.start()
    assert "demo.example.com" in caught.value.message
    assert "other.example.com" in caught.value.message
    chosen = CiscoClient(
        replace(env.settings, smart_account="demo.example.com"), retry=FAST_RETRY, limiter=None
    )
    try:
        chosen.start()
        assert run(chosen, reserve_item("FOC0083")).status == "ok"
    finally:
        chosen.finish()


# --- secrets ------------------------------------------------------------------------------------


def texts_of(exc: BaseException) -> str:
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args)]
        if isinstance(seen, AirgapError):
            parts += [seen.message, seen.hint or ""]
        for value in vars(seen).values():
            parts.append(repr(value))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def assert_no_secret(env: Cisco, exc: BaseException) -> None:
    text = texts_of(exc)
    with env.emu.lock:
        tokens = list(env.emu.tokens)
    for secret in (SECRET, CLIENT_ID, *tokens):
        assert secret not in text


def test_refused_credentials_raise_auth_error_without_the_secret(make_cisco: MakeCisco) -> None:
    env = make_cisco(start=False, client_secret="the-right-secret-value-0000")
    with pytest.raises(AuthError) as caught:
        env.client.start()
    assert caught.value.code == "E_AUTH"
    assert "Client authentication failed" in caught.value.message
    assert caught.value.hint is not None and "AIRGAP_CISCO_CLIENT_SECRET" in caught.value.hint
    assert_no_secret(env, caught.value)


def test_secrets_and_tokens_never_reach_outcomes_or_errors(cisco: Cisco, tmp_path: Path) -> None:
    outcomes = [
        run(cisco.client, reserve_item("FOC0091")),
        run(cisco.client, return_item("FOC0091")),
        cisco.client.submit(query_item("cisco.devices")),
    ]
    cisco.server.faults.fail_next("authrequest", "reset")
    with pytest.raises(UncertainOutcome) as caught:
        cisco.client.submit(reserve_item("FOC0092"))
    assert_no_secret(cisco, caught.value)
    with cisco.emu.lock:
        tokens = list(cisco.emu.tokens)  # every token issued, expired or not
    assert tokens
    for outcome in outcomes:
        text = json.dumps(
            [outcome.result, dict(outcome.vendor_ref), outcome.error], default=str
        ) + "".join(data.decode("utf-8", "replace") for data in outcome.files.values())
        for secret in (SECRET, CLIENT_ID, *tokens):
            assert secret not in text


# --- concurrency, TLS, emulator defaults --------------------------------------------------------


def test_eight_threads_reserve_fifty_devices_once_each(cisco: Cisco) -> None:
    items = [reserve_item(f"FOCC{n:04d}") for n in range(50)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda item: run(cisco.client, item), items))
    assert [o.status for o in outcomes] == ["ok"] * 50
    for item, outcome in zip(items, outcomes, strict=True):
        assert item.udi is not None
        assert f"<udi>P:{PID},S:{item.udi[1]}</udi>".encode() in outcome.files["lic.txt"]
    mutations = cisco.stats()["mutations"]
    assert len(mutations) == 50
    assert all(counts == {"reserve": 1, "return": 0, "report": 0} for counts in mutations.values())
    stats = cisco.stats()
    assert stats["calls"]["token"] == 1
    assert stats["nonce_reuse"] == 0


def test_tls_with_a_ca_file_wins_over_requests_ca_bundle(
    make_cisco: MakeCisco, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psf/requests#3829: REQUESTS_CA_BUNDLE replaces a Session's own `verify`. The client passes
    # the CA file with each request, which the environment cannot replace.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    cert = tmp_path / "emulator.pem"
    env = make_cisco(start=False, tls=True, cert_out=cert)
    client = CiscoClient(
        replace(env.settings, verify_tls=str(cert)), retry=FAST_RETRY, limiter=None
    )
    try:
        assert run(client, reserve_item("FOC0101")).status == "ok"
    finally:
        client.finish()


def test_emulator_advises_a_poll_interval_from_its_delay() -> None:
    for delay, interval in ((0.2, 1), (1.0, 1), (2.5, 3)):
        server = build_cisco_server(poll_delay=delay)
        try:
            assert isinstance(server.app, CiscoEmulator)
            assert server.app.poll_interval == interval
        finally:
            server.stop()
    explicit = build_cisco_server(poll_delay=0.2, poll_interval=300)
    try:
        assert isinstance(explicit.app, CiscoEmulator)
        assert explicit.app.poll_interval == 300
    finally:
        explicit.stop()
    with pytest.raises(ConfigError):
        build_cisco_server(poll_interval=0)


def test_finish_is_idempotent_and_never_raises(cisco: Cisco) -> None:
    cisco.client.finish()
    cisco.client.finish()
