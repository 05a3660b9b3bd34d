"""BigIqClient against the BIG-IQ emulator over real HTTP: sessions, tasks, RegKeys, reconcile.

Each test starts its own `EmulatorServer(BigIqEmulator(...))` on a free port; what the client
did is checked through its outcomes and the emulator's own counts (at-most-once).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airgap.config import Config, HomePaths
from airgap.emulators.bigiq import (
    DEMO_REGKEY_POOL,
    EULA_TEXT,
    REGKEY_EULA,
    REGKEY_FAIL_ONCE,
    REGKEY_PLAIN,
    REGKEY_READY,
    BigIqEmulator,
    Token,
    license_text,
)
from airgap.emulators.server import EmulatorServer, Faults
from airgap.errors import AirgapError, AuthError, ConfigError, NetworkError
from airgap.outside.bigiq import BigIqClient, BigIqSettings
from airgap.outside.http import RetryPolicy, UncertainOutcome
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, WorkItem

PASSWORD = "Emul4tor-Pa55word-do-not-leak"
MAC = "00:50:56:9A:3C:E1"
TASKS = "/mgmt/cm/device/tasks/licensing/pool/member-management"
FAST_RETRY = RetryPolicy(attempts=3, backoff_factor=0.01, jitter=0.0, retry_after_max=0.05)
UNKNOWN_KEY = "Z9999-99999-99999-99999-9999999"  # well-formed, unknown to the F5 server


class FakeClock:
    """Monotonic seconds moved by hand; shared by the emulator and the client."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ExactPathFaults(Faults):
    """Faults that also drop the connection once for one exact path (e.g. a POST collection
    whose path is a prefix of the GETs before it, which `fail_next` would hit first)."""

    def __init__(self) -> None:
        super().__init__()
        self.reset_paths: list[str] = []

    def draw(self, path: str) -> int | str | None:
        if path.rstrip("/") in self.reset_paths:
            self.reset_paths.remove(path.rstrip("/"))
            return "reset"
        return super().draw(path)


@dataclass
class Bench:
    """One emulator on a free port and the clients made for it."""

    emu: BigIqEmulator
    server: EmulatorServer
    faults: ExactPathFaults
    clients: list[BigIqClient] = field(default_factory=list)

    def client(
        self,
        *,
        password: str = PASSWORD,
        start: bool = True,
        verify: bool | str = True,
        **kwargs: Any,
    ) -> BigIqClient:
        settings = BigIqSettings(
            url=self.server.url, username="admin", password=password, verify_tls=verify
        )
        kwargs.setdefault("poll_interval", 0.01)
        client = BigIqClient(settings, retry=FAST_RETRY, limiter=None, timeout=10.0, **kwargs)
        self.clients.append(client)
        if start:
            client.start()
        return client

    def stats(self) -> dict[str, Any]:
        return self.emu.stats()

    def mutations(self, mac: str = MAC) -> dict[str, int]:
        return dict(self.stats()["mutations"].get(mac, {}))

    def offering_stats(self, key: str) -> dict[str, int]:
        return dict(self.stats()["offerings"].get(key, {}))


@pytest.fixture
def bigiq() -> Iterator[Callable[..., Bench]]:
    """Factory: `bigiq(latency_ms=…, tls=…, **emulator_kwargs)`; everything stops afterwards."""
    benches: list[Bench] = []

    def make(*, latency_ms: float = 0, tls: bool = False, **kwargs: Any) -> Bench:
        kwargs.setdefault("password", PASSWORD)
        emu = BigIqEmulator(**kwargs)
        faults = ExactPathFaults()
        server = EmulatorServer(emu, latency_ms=latency_ms, faults=faults, tls=tls).start()
        bench = Bench(emu, server, faults)
        benches.append(bench)
        return bench

    yield make
    for bench in benches:
        for client in bench.clients:
            client.finish()
        bench.server.stop()


_counter = iter(range(1, 1_000_000))


def _id() -> str:
    return f"item-{next(_counter):04d}"


def assign_item(
    mac: str = MAC, *, pool: str = "demo-utility", hypervisor: str = "vmware", **params: Any
) -> WorkItem:
    params = {"pool": pool, "hypervisor": hypervisor, "unit_of_measure": "yearly", **params}
    return WorkItem(_id(), "bigiq.assign", {"mac": mac}, {k: v for k, v in params.items() if v})


def revoke_item(mac: str = MAC, *, pool: str = "demo-utility") -> WorkItem:
    return WorkItem(_id(), "bigiq.revoke", {"mac": mac}, {"pool": pool})


def regkey_item(
    regkey: str,
    *,
    mode: str = "automatic",
    accept_eula: bool = False,
    dossier: str | None = None,
    pool: str = DEMO_REGKEY_POOL,
    item_id: str | None = None,
) -> WorkItem:
    params: dict[str, Any] = {"pool": pool, "regkey": regkey, "mode": mode}
    if dossier is not None:
        params["dossier"] = dossier
    params["accept_eula"] = accept_eula
    return WorkItem(item_id or _id(), "bigiq.regkey_activate", None, params)


def assignments_item(pool: str | None = None) -> WorkItem:
    return WorkItem(_id(), "bigiq.assignments", None, {"pool": pool} if pool else {})


def settle(client: BigIqClient, item: WorkItem, outcome: Outcome, limit: float = 10.0) -> Outcome:
    """Poll a pending outcome until it is final, as the processor would (faster)."""
    deadline = time.monotonic() + limit
    while outcome.status == "pending":
        assert time.monotonic() < deadline, f"{item.id} still pending: {outcome}"
        time.sleep(min(outcome.retry_after or 0.0, 0.05))
        outcome = client.poll(item, outcome.vendor_ref)
    return outcome


def run(client: BigIqClient, item: WorkItem) -> Outcome:
    return settle(client, item, client.submit(item))


def license_server(calls: list[tuple[str, str, list[str]]]) -> Callable[..., str]:
    """Stands in for activate.f5.com: license text for a dossier, via the emulator's helper."""

    def issue(reg_key: str, dossier: str, add_on_keys: Sequence[str]) -> str:
        calls.append((reg_key, dossier, list(add_on_keys)))
        return license_text(reg_key, dossier=dossier)

    return issue


# --- assign / revoke ---------------------------------------------------------------------------


def test_assign_returns_bigip_license_naming_the_mac(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(task_delay=0.05)
    client = bench.client()
    item = assign_item("00-50-56-9a-3c-e1", sku_keyword1="BT", sku_keyword2="1G")

    first = client.submit(item)
    assert first.status == "pending"
    assert set(first.vendor_ref) == {"task"}
    outcome = settle(client, item, first)

    assert outcome.status == "ok", outcome
    text = outcome.files["bigip.license"].decode()
    assert f"Assigned to the device with MAC address {MAC}" in text
    assert "Registration Key" in text
    assert outcome.result["mac"] == MAC
    assert outcome.result["pool"] == "demo-utility"
    assert outcome.result["task"] == first.vendor_ref["task"]
    assert outcome.vendor_ref == first.vendor_ref
    assert bench.mutations() == {"assign": 1, "revoke": 0}
    # Absent optional fields are not sent at all.
    (task,) = bench.emu.tasks.values()
    assert task.body == {
        "command": "assign",
        "licensePoolName": "demo-utility",
        "assignmentType": "UNREACHABLE",
        "macAddress": MAC,
        "hypervisor": "vmware",
        "skuKeyword1": "BT",
        "skuKeyword2": "1G",
        "unitOfMeasure": "yearly",
    }


def test_revoke_returns_confirmation_json(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    assert run(client, assign_item()).status == "ok"

    outcome = run(client, revoke_item())

    assert outcome.status == "ok", outcome
    confirmation = json.loads(outcome.files["revoke.json"])
    assert confirmation["command"] == "revoke"
    assert confirmation["mac"] == MAC
    assert confirmation["pool"] == "demo-utility"
    assert confirmation["status"] == "FINISHED"
    assert confirmation["task"] == outcome.vendor_ref["task"]
    assert bench.mutations() == {"assign": 1, "revoke": 1}
    assert bench.stats()["pools"]["demo-utility"]["assigned"] == 0


def test_refusals_fail_with_bigiq_message_verbatim_while_others_succeed(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq(pools={"demo-utility": 100, "small": 1}, task_delay=0.05)
    client = bench.client()
    taken = "00:50:56:00:00:01"
    assert run(client, assign_item(taken)).status == "ok"
    items = {
        "unknown pool": assign_item("00:50:56:00:00:02", pool="nope"),
        "small ok": assign_item("00:50:56:00:00:03", pool="small"),
        "already licensed": assign_item(taken),
        "bad hypervisor": assign_item("00:50:56:00:00:04", hypervisor="virtualbox"),
        "fine": assign_item("00:50:56:00:00:05"),
        "revoke unassigned": revoke_item("00:50:56:00:00:06"),
    }
    outcomes = {name: run(client, item) for name, item in items.items()}
    exhausted = run(client, assign_item("00:50:56:00:00:07", pool="small"))

    assert outcomes["small ok"].status == "ok"
    assert outcomes["fine"].status == "ok"
    expected = {
        "unknown pool": "License pool 'nope' not found",
        "already licensed": (
            f"The device with MAC address {taken} is already licensed from pool 'demo-utility'"
        ),
        "bad hypervisor": (
            "Invalid hypervisor 'virtualbox'. Valid values are: "
            "aws, azure, gce, vmware, hyperv, kvm, xen, alibaba"
        ),
        "revoke unassigned": (
            "The device with MAC address 00:50:56:00:00:06 has no license assigned from pool "
            "'demo-utility'"
        ),
    }
    for name, message in expected.items():
        assert outcomes[name].status == "failed", name
        assert outcomes[name].error == {"code": "E_VENDOR", "message": message}, name
    assert exhausted.status == "failed"
    assert exhausted.error == {
        "code": "E_VENDOR",
        "message": "There are no available licenses in pool 'small'",
    }
    assert bench.mutations(taken) == {"assign": 1, "revoke": 0}


def test_http_400_on_submit_is_an_item_failure_with_bigiq_message(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq()
    client = bench.client()
    item = regkey_item(REGKEY_PLAIN)
    item = WorkItem(item.id, item.action, None, {**item.params, "add_on_keys": ["not-a-key"]})

    outcome = client.submit(item)

    assert outcome.status == "failed"
    assert outcome.error == {"code": "E_VENDOR", "message": "Invalid add-on key 'NOT-A-KEY'"}
    assert bench.stats()["offerings"] == {}


def test_429_on_assign_is_resent_and_assigns_once(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    bench.server.faults.fail_next(TASKS, 429)

    outcome = run(client, assign_item())

    assert outcome.status == "ok"
    assert bench.mutations() == {"assign": 1, "revoke": 0}


def test_403_is_an_auth_error(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    bench.server.faults.fail_next(TASKS, 403)

    with pytest.raises(AuthError) as caught:
        client.submit(assign_item())
    assert "403" in caught.value.message


# --- sessions -------------------------------------------------------------------------------


def test_threaded_batch_outlives_several_token_lifetimes(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(token_ttl=0.5, task_delay=0.3, latency_ms=20)
    client = bench.client(poll_interval=0.1)
    items = [assign_item(f"00:50:56:01:00:{n:02X}") for n in range(40)]
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda item: run(client, item), items))

    elapsed = time.monotonic() - started
    assert elapsed > 3 * 0.5, f"the batch must outlive several tokens ({elapsed:.2f}s)"
    assert [o.status for o in outcomes] == ["ok"] * 40
    tokens = bench.stats()["tokens"]
    assert tokens["logins"] == 1
    assert tokens["refreshes"] >= 3
    assert tokens["refresh_failures"] == 0
    mutations = bench.stats()["mutations"]
    assert all(mutations[f"00:50:56:01:00:{n:02X}"]["assign"] == 1 for n in range(40))


def test_token_is_refreshed_before_it_expires(bigiq: Callable[..., Bench]) -> None:
    clock = FakeClock()
    bench = bigiq(clock=clock, token_ttl=300)
    client = bench.client(clock=clock)

    clock.advance(280)  # inside the renewal margin, still valid on BIG-IQ
    assert run(client, assignments_item()).status == "ok"
    clock.advance(280)
    assert run(client, assignments_item()).status == "ok"

    tokens = bench.stats()["tokens"]
    assert tokens == {**tokens, "logins": 1, "refreshes": 2, "expired": 0, "unauthorized": 0}


def test_many_threads_with_an_old_token_refresh_it_once(bigiq: Callable[..., Bench]) -> None:
    clock = FakeClock()
    bench = bigiq(clock=clock, token_ttl=300, latency_ms=30)
    client = bench.client(clock=clock)
    clock.advance(400)  # expired on BIG-IQ too
    barrier = threading.Barrier(8)

    def query(_: int) -> Outcome:
        barrier.wait()
        return client.submit(assignments_item())

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(query, range(8)))

    assert [o.status for o in outcomes] == ["ok"] * 8
    tokens = bench.stats()["tokens"]
    assert tokens["refreshes"] == 1
    assert tokens["logins"] == 1


def test_401_renews_the_token_and_resends_once(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    with bench.emu.lock:  # BIG-IQ forgets the access token (e.g. restarted)
        for name in [n for n, t in bench.emu.tokens.items() if t.kind == "access"]:
            del bench.emu.tokens[name]

    outcome = run(client, assign_item())

    assert outcome.status == "ok"
    tokens = bench.stats()["tokens"]
    assert tokens["unauthorized"] == 1
    assert tokens["refreshes"] == 1
    assert tokens["logins"] == 1
    assert bench.mutations() == {"assign": 1, "revoke": 0}


def test_refused_refresh_token_leads_to_a_new_login(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    with bench.emu.lock:
        bench.emu.tokens.clear()

    assert run(client, assign_item()).status == "ok"

    tokens = bench.stats()["tokens"]
    assert tokens["refresh_failures"] == 1
    assert tokens["logins"] == 2


def test_finish_logs_out_and_never_raises(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    assert len(bench.emu.tokens) == 2  # access and refresh

    client.finish()
    client.finish()

    assert bench.emu.tokens == {}
    assert bench.stats()["tokens"]["logouts"] == 2
    other = bench.client()
    bench.server.stop()
    other.finish()  # BIG-IQ gone: still quiet


def test_wrong_password_is_an_auth_error_without_the_password(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq()
    wrong = "Wr0ng-Pa55word-also-secret"

    with pytest.raises(AuthError) as caught:
        bench.client(password=wrong)

    error = caught.value
    for text in (str(error), repr(error), error.message, error.hint or ""):
        assert wrong not in text
        assert PASSWORD not in text
    assert "admin" in error.message


def test_old_bigiq_is_refused_at_start_and_logged_out(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(version="5.3.1")

    with pytest.raises(ConfigError) as caught:
        bench.client()

    assert "5.3.1" in caught.value.message and "5.4" in caught.value.message
    assert bench.emu.tokens == {}


def test_start_reports_the_version(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(version="8.3.0")
    client = bench.client()
    assert client.version == "8.3.0"
    assert bench.stats()["calls"]["version"] == 1


def test_tls_with_a_ca_bundle_despite_requests_ca_bundle(
    bigiq: Callable[..., Bench], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = bigiq(tls=True)
    assert bench.server.cert_path is not None
    # A configured CA bundle wins over the environment's (psf/requests#3829): it is passed with
    # every request, which REQUESTS_CA_BUNDLE cannot replace.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/ca.pem")

    client = bench.client(verify=str(bench.server.cert_path))
    assert run(client, assign_item()).status == "ok"

    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name)
    with pytest.raises(NetworkError):
        bench.client(verify=True)  # the self-signed certificate is not trusted by default


# --- reconcile ------------------------------------------------------------------------------


def test_reset_on_assign_is_reconciled_to_the_one_assignment(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    item = assign_item()
    bench.server.faults.fail_next(TASKS, "reset")

    with pytest.raises(UncertainOutcome):
        client.submit(item)
    found = client.reconcile(item, {})

    assert isinstance(found, Outcome)
    outcome = settle(client, item, found)
    assert outcome.status == "ok"
    assert f"MAC address {MAC}" in outcome.files["bigip.license"].decode()
    assert bench.mutations() == {"assign": 1, "revoke": 0}
    assert bench.stats()["calls"]["assign"] == 1


def test_reconcile_finds_a_running_task_and_polls_it(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(task_delay=0.3)
    client = bench.client()
    item = assign_item()
    bench.server.faults.fail_next(TASKS, "reset")
    with pytest.raises(UncertainOutcome):
        client.submit(item)

    found = client.reconcile(item, {})

    assert isinstance(found, Outcome) and found.status == "pending"
    assert found.vendor_ref == {"task": next(iter(bench.emu.tasks))}
    assert settle(client, item, found).status == "ok"
    assert bench.stats()["calls"]["assign"] == 1


def test_reconcile_with_a_task_ref_polls_it(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    item = assign_item()
    submitted = client.submit(item)

    found = client.reconcile(item, submitted.vendor_ref)

    assert isinstance(found, Outcome) and found.status == "ok"


def test_reconcile_untouched_mac_is_not_submitted(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    assert run(client, assign_item("00:50:56:00:00:99")).status == "ok"  # another device

    assert client.reconcile(assign_item(), {}) is NOT_SUBMITTED
    assert client.reconcile(revoke_item(), {}) is NOT_SUBMITTED


def test_500_on_assign_never_reached_bigiq_so_reconcile_says_not_submitted(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq()
    client = bench.client()
    item = assign_item()
    bench.server.faults.fail_next(TASKS, 500)  # answered before BIG-IQ's handler runs

    with pytest.raises(UncertainOutcome):
        client.submit(item)

    assert client.reconcile(item, {}) is NOT_SUBMITTED
    assert run(client, item).status == "ok"
    assert bench.mutations() == {"assign": 1, "revoke": 0}


def test_reconcile_of_a_mac_held_through_other_parameters_is_not_resubmitted_twice(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq()
    client = bench.client()
    assert run(client, assign_item(hypervisor="kvm")).status == "ok"
    item = assign_item(hypervisor="vmware")

    assert client.reconcile(item, {}) is NOT_SUBMITTED
    again = run(client, item)

    assert again.status == "failed"
    assert again.error is not None and "already licensed" in again.error["message"]
    assert bench.mutations() == {"assign": 1, "revoke": 0}


def test_reconcile_with_several_running_tasks_needs_attention(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq(task_delay=30)
    client = bench.client()
    item = assign_item()
    client.submit(item)
    client.submit(item)

    found = client.reconcile(item, {})

    assert isinstance(found, Outcome)
    assert found.status == "needs_attention"
    assert found.error is not None and MAC in found.error["message"]


def test_reset_on_revoke_is_reconciled(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    assert run(client, assign_item()).status == "ok"
    item = revoke_item()
    bench.server.faults.fail_next(TASKS, "reset")

    with pytest.raises(UncertainOutcome):
        client.submit(item)
    found = client.reconcile(item, {})

    assert isinstance(found, Outcome) and found.status == "ok"
    assert json.loads(found.files["revoke.json"])["status"] == "FINISHED"
    assert bench.mutations() == {"assign": 1, "revoke": 1}


# --- RegKey activation ------------------------------------------------------------------------


def test_regkey_automatic_with_accepted_eula(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(task_delay=0.05)
    client = bench.client()

    outcome = run(client, regkey_item(REGKEY_EULA, accept_eula=True))

    assert outcome.status == "ok", outcome
    assert outcome.result["status"] == "READY"
    assert outcome.result["eula_accepted"] is True
    assert outcome.result["eula_text"] == EULA_TEXT
    assert outcome.files["eula.txt"] == EULA_TEXT.encode()
    assert f"{REGKEY_EULA}\n" in outcome.files["license.txt"].decode()
    assert outcome.vendor_ref["regkey"] == REGKEY_EULA
    assert bench.offering_stats(REGKEY_EULA) == {"create": 1, "eula_accept": 1}


def test_regkey_eula_not_accepted_fails_and_activates_nothing(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()

    outcome = run(client, regkey_item(REGKEY_EULA, accept_eula=False))

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["code"] == "EULA_NOT_ACCEPTED"
    assert "accept_eula" in outcome.error["message"]
    assert outcome.result["eula_text"] == EULA_TEXT
    assert bench.offering_stats(REGKEY_EULA) == {"create": 1}
    offering = bench.emu.pools[DEMO_REGKEY_POOL].offerings[REGKEY_EULA]  # type: ignore[union-attr]
    assert offering.status == "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT"

    # A later request that accepts it continues the same offering.
    accepted = run(client, regkey_item(REGKEY_EULA, accept_eula=True))
    assert accepted.status == "ok"
    assert bench.offering_stats(REGKEY_EULA) == {"create": 1, "eula_accept": 1}


def test_regkey_plain_automatic_has_no_eula(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()

    outcome = run(client, regkey_item(REGKEY_PLAIN))

    assert outcome.status == "ok"
    assert set(outcome.files) == {"license.txt"}
    assert outcome.result["eula_accepted"] is False


def test_regkey_manual_with_dossier_uses_the_license_source(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(task_delay=0.05)
    calls: list[tuple[str, str, list[str]]] = []
    client = bench.client(license_source=license_server(calls))
    dossier = "ab" * 231

    outcome = run(client, regkey_item(REGKEY_PLAIN, mode="manual", dossier=dossier))

    assert outcome.status == "ok", outcome
    assert calls == [(REGKEY_PLAIN, dossier, [])]
    text = outcome.files["license.txt"].decode()
    assert text == license_text(REGKEY_PLAIN, dossier=dossier)
    assert f"{dossier[:128]}\n" in text
    assert "bigiq_dossier" in outcome.result  # BIG-IQ's own dossier, kept for the audit
    offering = bench.emu.pools[DEMO_REGKEY_POOL].offerings[REGKEY_PLAIN]  # type: ignore[union-attr]
    assert offering.status == "READY"
    assert bench.offering_stats(REGKEY_PLAIN) == {"create": 1, "license_text": 1}


def test_regkey_manual_without_license_source_sends_nothing(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()

    outcome = client.submit(regkey_item(REGKEY_PLAIN, mode="manual", dossier="ab" * 231))

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["code"] == "MANUAL_ACTIVATION_UNAVAILABLE"
    assert bench.stats()["offerings"] == {}


def test_regkey_failed_activation_is_retried_once(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(task_delay=0.05)
    client = bench.client()

    outcome = run(client, regkey_item(REGKEY_FAIL_ONCE))

    assert outcome.status == "ok"
    assert bench.offering_stats(REGKEY_FAIL_ONCE) == {"create": 1, "activate": 1}


def test_regkey_failing_twice_fails_with_bigiq_message(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()

    outcome = run(client, regkey_item(UNKNOWN_KEY))

    assert outcome.status == "failed"
    assert outcome.error == {
        "code": "ACTIVATION_FAILED",
        "message": f"Registration key {UNKNOWN_KEY} is not valid: "
        "the F5 license server does not recognize it",
    }
    assert bench.offering_stats(UNKNOWN_KEY) == {"create": 1, "activate": 1}


def test_regkey_refusals(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()

    no_pool = client.submit(regkey_item(REGKEY_PLAIN, pool="nope"))
    exists = client.submit(regkey_item(REGKEY_READY[0]))

    assert no_pool.status == "failed"
    assert no_pool.error is not None and no_pool.error["code"] == "POOL_NOT_FOUND"
    assert exists.status == "failed"
    assert exists.error == {
        "code": "E_VENDOR",
        "message": f"Registration key {REGKEY_READY[0]} already exists in pool 'demo-regkey'",
    }


def test_regkey_reset_on_post_is_reconciled(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq()
    client = bench.client()
    item = regkey_item(REGKEY_PLAIN)
    untouched = regkey_item(REGKEY_EULA)
    pool_id = bench.emu.pools[DEMO_REGKEY_POOL].id  # type: ignore[union-attr]
    bench.faults.reset_paths.append(
        f"/mgmt/cm/device/licensing/pool/regkey/licenses/{pool_id}/offerings"
    )

    with pytest.raises(UncertainOutcome):
        client.submit(item)

    assert client.reconcile(untouched, {}) is NOT_SUBMITTED
    found = client.reconcile(item, {})
    assert isinstance(found, Outcome) and found.status == "pending"
    assert settle(client, item, found).status == "ok"
    assert bench.offering_stats(REGKEY_PLAIN) == {"create": 1}


def test_regkey_reconcile_ignores_an_offering_made_by_someone_else(
    bigiq: Callable[..., Bench],
) -> None:
    bench = bigiq()
    client = bench.client()
    assert run(client, regkey_item(REGKEY_PLAIN)).status == "ok"

    assert client.reconcile(regkey_item(REGKEY_PLAIN), {}) is NOT_SUBMITTED


# --- assignments query ------------------------------------------------------------------------


def test_assignments_query(bigiq: Callable[..., Bench]) -> None:
    bench = bigiq(pools={"demo-utility": 10, "lab": 10})
    client = bench.client()
    for n, pool in ((1, "demo-utility"), (2, "demo-utility"), (3, "lab")):
        assert run(client, assign_item(f"00:50:56:00:01:0{n}", pool=pool)).status == "ok"

    everything = client.submit(assignments_item())
    lab = client.submit(assignments_item("lab"))

    assert everything.status == "ok" and everything.result == {"pool": None, "count": 3}
    document = json.loads(lab.files["result.json"])
    assert document["count"] == 1
    assert [a["macAddress"] for a in document["assignments"]] == ["00:50:56:00:01:03"]
    assert lab.files["result.json"].endswith(b"\n")


# --- settings and secrets ---------------------------------------------------------------------


def _config(tmp_path: Path, values: dict[str, Any], secrets: dict[str, str]) -> Config:
    return Config(paths=HomePaths(tmp_path), values=values, secrets=secrets)


def test_settings_from_config(tmp_path: Path) -> None:
    secrets = {"bigiq.username": "admin", "bigiq.password": PASSWORD}
    values: dict[str, Any] = {"bigiq.url": "https://bigiq.example.net", "bigiq.verify_tls": True}

    plain = BigIqSettings.from_config(_config(tmp_path, values, secrets))
    with_ca = BigIqSettings.from_config(
        _config(tmp_path, {**values, "bigiq.ca_bundle": "/etc/ca.pem"}, secrets)
    )
    insecure = BigIqSettings.from_config(
        _config(tmp_path, {**values, "bigiq.verify_tls": False}, secrets)
    )

    assert plain == BigIqSettings("https://bigiq.example.net", "admin", PASSWORD, "tmos", True)
    assert with_ca.verify_tls == "/etc/ca.pem"
    assert insecure.verify_tls is False
    assert PASSWORD not in repr(plain)


def test_settings_name_every_missing_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        BigIqSettings.from_config(_config(tmp_path, {}, {}))

    for name in ("AIRGAP_BIGIQ_URL", "AIRGAP_BIGIQ_USERNAME", "AIRGAP_BIGIQ_PASSWORD"):
        assert name in caught.value.message


def test_secrets_never_reach_errors_results_reprs_or_logs(
    bigiq: Callable[..., Bench],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    bench = bigiq(clock=clock)
    issued: list[str] = []
    original = bench.emu._issue

    def spy(username: str, provider: str) -> tuple[Token, Token]:
        pair = original(username, provider)
        issued.extend(token.token for token in pair)
        return pair

    monkeypatch.setattr(bench.emu, "_issue", spy)
    client = bench.client(clock=clock, license_source=license_server([]))
    seen: list[str] = [repr(client), repr(client.settings)]
    outcomes = [run(client, assign_item())]
    clock.advance(290)  # a refresh, with a rotated refresh token
    outcomes.append(run(client, regkey_item(REGKEY_EULA, accept_eula=True)))
    outcomes.append(run(client, regkey_item(REGKEY_PLAIN, mode="manual", dossier="cd" * 231)))
    outcomes.append(run(client, assignments_item()))
    bench.server.faults.fail_next(TASKS, "reset")
    errors: list[AirgapError] = []
    try:
        client.submit(assign_item("00:50:56:00:00:42"))
    except UncertainOutcome as exc:
        errors.append(exc)
    client.finish()
    bench.server.stop()
    try:
        bench.client(clock=clock)
    except NetworkError as exc:
        errors.append(exc)

    assert len(issued) >= 4 and len(errors) == 2
    assert bench.stats()["tokens"]["refreshes"] == 1
    for outcome in outcomes:
        assert outcome.status == "ok"
        seen += [repr(outcome), json.dumps(outcome.result)]
        seen += [data.decode() for data in outcome.files.values()]
    for error in errors:
        seen += [str(error), repr(error), error.hint or "", repr(getattr(error, "history", ""))]
    seen += [r.getMessage() for r in caplog.records if r.name.startswith("airgap.outside")]
    text = "\n".join(seen)
    for secret in [PASSWORD, *issued]:
        assert secret not in text
