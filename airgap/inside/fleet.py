"""Run one job per device across an estate: concurrently, with bounded retries, and with one
outcome per device in the words an operator acts on.

`inside collect` and `inside apply` hand this module a list of devices and a function that does
the work on one of them; it runs them on a thread pool, retries a device that certainly could
not be reached (never one whose state may have changed: that is the job's to confirm), and sorts
every failure into ok / unreachable / auth failed / device error (the device's words, verbatim)
/ refused. It knows nothing of transports, state.db or files.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from airgap.errors import (
    AirgapError,
    DeviceAuthError,
    DeviceError,
    DeviceMismatch,
    DeviceUnreachable,
    HostKeyMismatch,
    HostKeyUnknown,
)

__all__ = ["DeviceOutcome", "FleetPolicy", "Status", "run_fleet"]

_log = logging.getLogger(__name__)

Status = Literal["ok", "unreachable", "auth_failed", "device_error", "refused", "failed"]
T = TypeVar("T")
_STATUS_OF: Final[tuple[tuple[type[AirgapError], Status], ...]] = (
    (DeviceUnreachable, "unreachable"),
    (DeviceAuthError, "auth_failed"),
    (DeviceError, "device_error"),
    (DeviceMismatch, "refused"),
    (HostKeyMismatch, "refused"),
    # airgap itself declines to log in until the key is accepted: the same "refused" as a
    # changed key, so a first run's table does not read as a device fault.
    (HostKeyUnknown, "refused"),
)


@dataclass(frozen=True)
class FleetPolicy:
    """How a run treats devices: how many at once, and how a device that cannot be reached is
    tried again."""

    concurrency: int = 16  # devices worked on at once
    attempts: int = 3  # tries per device when it certainly could not be reached
    backoff: float = 1.0  # seconds before the second try, doubling after
    backoff_max: float = 30.0  # seconds
    jitter: float = 0.25  # seconds, times a uniform draw

    def delay(self, failures: int, draw: float = 0.0) -> float:
        """Seconds to wait after `failures` failed tries of one device. Pure."""
        return (
            min(self.backoff_max, self.backoff * 2.0 ** max(0, failures - 1)) + draw * self.jitter
        )


@dataclass(frozen=True)
class DeviceOutcome(Generic[T]):
    """What became of one device's job."""

    target: T
    name: str  # the device as the operator knows it (hostname)
    status: Status
    details: Mapping[str, Any] = field(default_factory=dict)  # the job's own result when ok
    code: str | None = None  # the stable error code otherwise
    message: str = ""  # the device's own words when it said something
    uncertain: bool = False  # the device may have acted although the job did not finish
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """True when the job finished on this device."""
        return self.status == "ok"


def run_fleet(
    targets: Sequence[T],
    job: Callable[[T], Mapping[str, Any]],
    *,
    name: Callable[[T], str],
    policy: FleetPolicy,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> list[DeviceOutcome[T]]:
    """Run `job` on every target and return one outcome per target, in `targets` order.

    A job returns its result (kept in `details`) or raises an `AirgapError`: device errors are
    sorted into statuses; `DeviceUnreachable` that is not uncertain is retried up to
    `policy.attempts` times with backoff; anything else that is an `AirgapError` is `failed`
    with its code. Other exceptions (bugs) propagate after the in-flight jobs finish.

    Args:
        targets: the devices.
        job: the work on one device (runs in a worker thread).
        name: how to call a target in outcomes.
        policy: concurrency and retries.
        progress: called with (devices finished, devices in all).
        stop: when set, no new device is started; those not started are `failed` with
            `E_INTERRUPTED`.
        sleep / rng: injectable for tests.

    Returns:
        The outcomes.
    """
    total = len(targets)
    outcomes: dict[int, DeviceOutcome[T]] = {}
    tried: dict[int, int] = {}  # tries so far, per target index
    # (when, index): a heap of devices waiting to start; input order first, retries by time.
    due: list[tuple[float, int]] = [(0.0, index) for index in range(total)]

    def attempt(index: int, tries: int) -> DeviceOutcome[T]:
        target = targets[index]
        try:
            details = job(target)
        except AirgapError as exc:
            status: Status = next(
                (status for kind, status in _STATUS_OF if isinstance(exc, kind)), "failed"
            )
            return DeviceOutcome(
                target,
                name(target),
                status,
                code=exc.code,
                message=exc.message,
                uncertain=bool(getattr(exc, "uncertain", False)),
                attempts=tries,
            )
        return DeviceOutcome(target, name(target), "ok", details=dict(details), attempts=tries)

    def report() -> None:
        if progress is not None:
            progress(len(outcomes), total)

    report()
    with ThreadPoolExecutor(
        max_workers=max(1, policy.concurrency), thread_name_prefix="airgap-device"
    ) as pool:
        running: dict[Future[DeviceOutcome[T]], int] = {}
        while due or running:
            now = time.monotonic()
            while due and due[0][0] <= now and len(running) < policy.concurrency:
                _, index = heapq.heappop(due)
                if stop is not None and stop.is_set():
                    outcomes[index] = DeviceOutcome(
                        targets[index],
                        name(targets[index]),
                        "failed",
                        code="E_INTERRUPTED",
                        message="not started: the run was interrupted",
                    )
                    continue
                tried[index] = tried.get(index, 0) + 1
                running[pool.submit(attempt, index, tried[index])] = index
            if not running:
                if due:
                    sleep(max(0.0, due[0][0] - time.monotonic()))
                continue
            # Full, or nothing else due yet: sleep until a device finishes or the next retry is
            # due (a zero timeout here would spin while every worker is busy).
            timeout = None
            if due and len(running) < policy.concurrency:
                timeout = max(0.0, due[0][0] - time.monotonic())
            done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                outcome = future.result()
                retry = (
                    outcome.status == "unreachable"
                    and not outcome.uncertain
                    and outcome.attempts < policy.attempts
                    and not (stop is not None and stop.is_set())
                )
                if retry:
                    wait_for = policy.delay(outcome.attempts, rng())
                    _log.debug("%s unreachable; again in %.1fs", outcome.name, wait_for)
                    heapq.heappush(due, (time.monotonic() + wait_for, index))
                    continue
                outcomes[index] = outcome
                report()
    return [outcomes[index] for index in range(total)]
