"""One job per device: concurrency bounded, certain failures retried, uncertain ones never,
every failure sorted into what the operator acts on."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from airgap.errors import (
    ConfigError,
    DeviceAuthError,
    DeviceError,
    DeviceMismatch,
    DeviceUnreachable,
    HostKeyMismatch,
)
from airgap.inside.fleet import FleetPolicy, run_fleet

FAST = FleetPolicy(concurrency=4, attempts=3, backoff=0.0, jitter=0.0)


def test_outcomes_come_back_in_target_order_and_concurrency_is_bounded() -> None:
    active, peak, lock = 0, 0, threading.Lock()

    def job(n: int) -> dict[str, int]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.01)
        with lock:
            active -= 1
        return {"n": n}

    seen: list[tuple[int, int]] = []
    outcomes = run_fleet(
        list(range(20)), job, name=str, policy=FAST, progress=lambda d, t: seen.append((d, t))
    )
    assert [o.details["n"] for o in outcomes] == list(range(20))
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    assert peak <= 4
    assert seen[0] == (0, 20) and seen[-1] == (20, 20)


def test_a_device_that_certainly_was_not_reached_is_tried_again_up_to_the_limit() -> None:
    calls: Counter[str] = Counter()

    def job(name: str) -> dict[str, str]:
        calls[name] += 1
        if name == "flaky" and calls[name] < 3:
            raise DeviceUnreachable("connection refused")
        if name == "down":
            raise DeviceUnreachable("connection refused")
        return {}

    flaky, down = run_fleet(["flaky", "down"], job, name=str, policy=FAST)
    assert (flaky.status, flaky.attempts) == ("ok", 3)
    assert (down.status, down.attempts, down.code) == ("unreachable", 3, "E_UNREACHABLE")
    assert calls == {"flaky": 3, "down": 3}


def test_a_device_that_may_have_acted_is_never_tried_again_here() -> None:
    calls: Counter[str] = Counter()

    def job(name: str) -> dict[str, str]:
        calls[name] += 1
        raise DeviceUnreachable("line dropped after the import was sent", uncertain=True)

    (outcome,) = run_fleet(["sw1"], job, name=str, policy=FAST)
    assert (outcome.status, outcome.uncertain, outcome.attempts) == ("unreachable", True, 1)
    assert calls == {"sw1": 1}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DeviceAuthError("Authentication failed"), "auth_failed"),
        (DeviceError("% Invalid input detected at '^' marker."), "device_error"),
        (DeviceMismatch("UDI differs"), "refused"),
        (HostKeyMismatch("host key changed"), "refused"),
        (ConfigError("no credential"), "failed"),
    ],
)
def test_failures_are_sorted_and_the_device_words_kept(error: Exception, status: str) -> None:
    def job(_: str) -> dict[str, str]:
        raise error

    (outcome,) = run_fleet(["sw1"], job, name=str, policy=FAST)
    assert outcome.status == status and outcome.attempts == 1
    assert outcome.message == getattr(error, "message", "")
    assert outcome.code == getattr(error, "code", None)


def test_a_stop_leaves_devices_not_started_as_interrupted() -> None:
    stop = threading.Event()

    def job(n: int) -> dict[str, int]:
        stop.set()  # the first device asks the run to stop
        return {}

    outcomes = run_fleet(
        list(range(10)), job, name=str, policy=FleetPolicy(concurrency=1), stop=stop
    )
    assert outcomes[0].ok
    assert {o.code for o in outcomes[1:]} == {"E_INTERRUPTED"}


def test_a_bug_in_a_job_is_not_hidden() -> None:
    def job(_: int) -> dict[str, int]:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_fleet([1], job, name=str, policy=FAST)


def test_backoff_is_capped_and_pure() -> None:
    policy = FleetPolicy(backoff=1.0, backoff_max=5.0, jitter=0.5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, draw=0.5) == 1.25
