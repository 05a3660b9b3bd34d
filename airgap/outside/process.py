"""`airgap outside process`: verify a request, work every item at its vendor, sign a response.

The journal (state.db) is the source of truth. Every non-idempotent vendor call is preceded by a
durable SUBMITTING row; a run killed at any moment resumes from the journal: SUBMITTING items
are reconciled with a vendor look-up, SUBMITTED items are polled, and nothing is sent twice.
Items `outside portal-export` handed to the CSSM portal are never sent: they stay pending with a
note until `outside portal-import` brings their files. The steps shared with the portal path
(open, admit, claim, respond) live in `airgap.outside.handling`.

Work is scheduled, not slept on: a thread pool makes the calls, and items waiting for their
next poll sit in a heap, so a slow vendor poll interval never holds a worker.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from airgap.bundle import OpenedBundle
from airgap.config import Config
from airgap.errors import AuthError, ConfigError, ItemCode, NetworkError, VendorError
from airgap.home import Home
from airgap.model import action
from airgap.outside.handling import (
    ProcessResult,
    admit,
    opened_request,
    portal_note,
    portal_ref,
    response_items,
    write_response,
)
from airgap.outside.http import RateLimiter, RetryPolicy, UncertainOutcome
from airgap.outside.journal import ItemState, Journal, JournalItem
from airgap.outside.vendor import NOT_SUBMITTED, ClientOptions, Outcome, VendorClient, WorkItem
from airgap.review import require_home_role
from airgap.units import parse_duration

_log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (items final or parked, items in all)
ClientFactory = Callable[[str, Home, "ProcessOptions"], VendorClient]
DEFAULT_POLL = 1.0  # seconds, when a vendor gives no interval
MAX_RESUBMITS = 10  # reconcile-proved no-effect resubmissions of one item in one run


@dataclass(frozen=True)
class ProcessOptions:
    """How one `outside process` run behaves. Built once by the CLI from options and config."""

    output: Path | None = None
    max_wait: timedelta = timedelta(hours=2)
    concurrency: int = 8
    rate: float = 5.0  # calls per second per vendor; 0 = unlimited
    dry_run: bool = False
    resubmit: frozenset[str] = frozenset()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    split: int | None = None  # bytes per part: write the response as NAME.001, NAME.002, …
    license_dir: Path | None = None  # F5 license text for manual RegKey activations

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> ProcessOptions:
        """Options for a run: `limits.max_wait`, `limits.concurrency` and `limits.rate` from the
        config, then `overrides` (command-line options; a None value means "not given").

        Args:
            config: the home's merged configuration (config.toml and `AIRGAP_*` overrides).
            overrides: any `ProcessOptions` field; `max_wait` may also be a duration text
                such as `30m` or `2h`.

        Raises:
            ConfigError: (E_CONFIG) a duration does not parse.

        Returns:
            The options.
        """
        given = {key: value for key, value in overrides.items() if value is not None}
        max_wait = given.pop("max_wait", None) or str(config.get("limits.max_wait"))
        if isinstance(max_wait, str):
            max_wait = parse_duration(max_wait, what="--max-wait")
        return cls(
            max_wait=max_wait,
            concurrency=int(given.pop("concurrency", None) or config.get("limits.concurrency")),
            rate=float(given.pop("rate", config.get("limits.rate"))),
            **given,
        )


def default_client(vendor: str, home: Home, options: ProcessOptions) -> VendorClient:
    """Build the real client of a vendor (see `airgap.outside.registry`) for a run.

    Raises:
        ConfigError: no client for the vendor, or a URL or a secret is missing.
    """
    from airgap.outside.registry import build_client

    limiter = RateLimiter(options.rate, burst=max(1.0, options.rate)) if options.rate > 0 else None
    extras = ClientOptions(retry=options.retry, limiter=limiter, license_dir=options.license_dir)
    return build_client(vendor, home.config, extras)


def vendor_of(action_name: str) -> str:
    """The vendor serving an action (`cisco.reserve` → `cisco`), as the catalogue says."""
    return action(action_name).vendor


def process_request(
    home: Home,
    request: Path,
    options: ProcessOptions,
    *,
    client_factory: ClientFactory = default_client,
    progress: Progress | None = None,
) -> ProcessResult:
    """Verify `request`, work its items at the vendors, and write the signed response.

    Args:
        home: an outside home.
        request: the request bundle (or the first of its parts, `NAME.001`).
        options: concurrency, rate, deadline, output, dry-run, operator resubmits.
        client_factory: builds a `VendorClient` per vendor (tests pass emulator-bound ones).
        progress: called with (items settled, items in all) as work proceeds.

    Returns:
        The result, with the response's path and id unless `dry_run`.

    Raises:
        VerificationError: the request was refused (E_REPLAY for a replay).
        ConfigError / AuthError / NetworkError: a vendor cannot be used at all.
        Busy: another process is working on this request.
    """
    require_home_role(home, "outside")
    signer = None if options.dry_run else home.signer()  # ask for a passphrase before any work
    with opened_request(home, request, action="process") as opened:
        if options.dry_run:
            return _dry_run(opened)
        with Journal.open(home.paths.state_db) as journal:
            admission = admit(home, journal, opened, request, action="process")
            owner = f"{os.getpid()}@{socket.gethostname()}"
            with journal.claim(opened.manifest.bundle_id, owner):
                run = _Run(journal, opened, options, client_factory, home, progress)
                run.execute()
                assert signer is not None
                # What the run's journal changes handed back is the journal as it stands.
                result = write_response(
                    home,
                    journal,
                    opened,
                    list(run.entries.values()),
                    run.transient,
                    signer=signer,
                    request=request,
                    output=options.output,
                    split=options.split,
                    event="process",
                    vendor_calls=run.vendor_calls,
                )
                result.resumed = not admission.new
                return result


def _dry_run(opened: OpenedBundle) -> ProcessResult:
    plan = Counter(str(item["action"]) for item in opened.items)
    return ProcessResult(
        request_id=opened.manifest.bundle_id,
        request_sha256=opened.manifest_sha256,
        items=[
            {"id": item["id"], "action": item["action"], "status": "planned"}
            for item in opened.items
        ],
        counts={"planned": len(opened.items)},
        plan=dict(sorted(plan.items())),
    )


@dataclass(frozen=True)
class _StepResult:
    """What one step of an item came back with: an outcome for the journal, and what next."""

    record: Outcome | None  # to be recorded in the loop's next commit
    follow_up: tuple[str, float] | None  # (step kind, delay in seconds); None: settled


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    kind: str = field(compare=False)  # "submit" | "resubmit" | "poll" | "reconcile"
    item_id: str = field(compare=False)


class _Run:
    """One pass over a request's unfinished items."""

    def __init__(
        self,
        journal: Journal,
        opened: OpenedBundle,
        options: ProcessOptions,
        client_factory: ClientFactory,
        home: Home,
        progress: Progress | None,
    ) -> None:
        self.journal = journal
        self.bundle_id = opened.manifest.bundle_id
        self.options = options
        self.client_factory = client_factory
        self.home = home
        self.progress = progress
        self.work = {
            str(item["id"]): WorkItem(
                id=str(item["id"]),
                action=str(item["action"]),
                device=item.get("device"),
                params=item.get("params") or {},
                files={path: opened.file_path(path) for path in item.get("files", [])},
            )
            for item in opened.items
        }
        # Item id -> the item as journaled now, kept from what every journal change hands back:
        # this run holds the claim on the request, so nothing else changes its items.
        self.entries: dict[str, JournalItem] = {}
        self.clients: dict[str, VendorClient] = {}
        self.transient: dict[str, dict[str, str]] = {}  # item id -> why it is still pending
        self.resubmits: Counter[str] = Counter()
        self.vendor_calls = False
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._settled = 0
        self._lock = threading.Lock()

    # --- scheduling

    def schedule(self, kind: str, item_id: str, delay: float = 0.0) -> None:
        heapq.heappush(self._heap, _Due(time.monotonic() + delay, next(self._seq), kind, item_id))

    def _note(self, entry: JournalItem) -> JournalItem:
        self.entries[entry.item_id] = entry
        return entry

    def initial_work(self) -> list[tuple[str, str]]:
        """Read the request's items once, apply the operator's resubmits, and list the steps.

        Raises:
            ConfigError: a `--resubmit` names an item not in the request or not in
                NEEDS_ATTENTION; nothing has changed then.
        """
        self.entries = {entry.item_id: entry for entry in self.journal.items(self.bundle_id)}
        resubmit = self._checked_resubmits()
        if resubmit:
            for entry in self.journal.resubmit_many(self.bundle_id, resubmit):
                self._note(entry)
        todo: list[tuple[str, str]] = []
        for entry in self.entries.values():
            if entry.item_id in resubmit:
                todo.append(("resubmit", entry.item_id))
            elif entry.state == ItemState.NEW:
                todo.append(("submit", entry.item_id))
            elif entry.state == ItemState.SUBMITTING:
                todo.append(("reconcile", entry.item_id))
            elif entry.state == ItemState.SUBMITTED:
                ref = portal_ref(entry)
                if ref is None:
                    todo.append(("poll", entry.item_id))
                else:
                    # Handed to an operator for the CSSM portal: never sent to the API too.
                    self.transient[entry.item_id] = portal_note(ref)
        return todo

    def _checked_resubmits(self) -> list[str]:
        """The `--resubmit` items in request order, once every one was found NEEDS_ATTENTION.

        Every argument is checked before anything changes: a refused command leaves the journal
        as it was.
        """
        wanted = self.options.resubmit
        problems = []
        unknown = sorted(wanted - set(self.entries))
        if unknown:
            problems.append(f"--resubmit names items not in this request: {unknown}")
        states = {
            item_id: self.entries[item_id].state.value
            for item_id in sorted(wanted - set(unknown))
            if self.entries[item_id].state != ItemState.NEEDS_ATTENTION
        }
        if states:
            problems.append(
                "--resubmit names items that are not in NEEDS_ATTENTION: "
                + ", ".join(f"{item_id} is {state}" for item_id, state in states.items())
            )
        if problems:
            raise ConfigError(
                "; ".join(problems),
                hint="Only an item left needing attention can be resubmitted (`airgap outside "
                "status` lists them); nothing was changed.",
            )
        return [item_id for item_id in self.entries if item_id in wanted]

    def execute(self) -> None:
        """Run until every item is final or parked, or the deadline passes."""
        todo = self.initial_work()
        total = len(self.work)
        self._settled = total - len(todo)
        self._report(total)
        if not todo:
            return
        self.start_clients({vendor_of(self.work[item_id].action) for _, item_id in todo})
        for kind, item_id in todo:
            self.schedule(kind, item_id)
        deadline = time.monotonic() + self.options.max_wait.total_seconds()
        try:
            with ThreadPoolExecutor(
                max_workers=self.options.concurrency, thread_name_prefix="airgap-item"
            ) as pool:
                self._loop(pool, deadline, total)
        finally:
            for client in self.clients.values():
                client.finish()

    def _loop(self, pool: ThreadPoolExecutor, deadline: float, total: int) -> None:
        """Hand due steps to the pool and take back what they did, one journal commit a turn.

        A turn collects every step that finished, queues what each item does next, takes the
        steps now due, and then makes one durable commit of the finished calls' outcomes and
        of the SUBMITTING rows of the submits about to start (a group commit: the more calls
        finish while a commit is on disk, the more the next one carries). Only then do the new
        steps start, so every call sees the journal as it stands and no submit goes out before
        its SUBMITTING row is durable. An outcome not yet committed when the process dies is
        only a call made again: the item is still SUBMITTING (reconciled, never resent) or
        SUBMITTED (polled).
        """
        finished: queue.SimpleQueue[Future[_StepResult]] = queue.SimpleQueue()
        running: dict[Future[_StepResult], str] = {}
        while self._heap or running:
            timeout: float | None = None
            if self._heap and len(running) < self.options.concurrency:
                timeout = max(0.0, self._heap[0].at - time.monotonic())
            came_back: list[Future[_StepResult]] = []
            if running and timeout != 0.0:
                with suppress(queue.Empty):
                    came_back.append(finished.get(timeout=timeout))
            elif timeout:
                time.sleep(timeout)
            while True:  # everything else that finished meanwhile joins this turn's commit
                try:
                    came_back.append(finished.get_nowait())
                except queue.Empty:
                    break
            outcomes: dict[str, Outcome] = {}
            failure: BaseException | None = None
            while came_back:
                for future in came_back:
                    item_id = running.pop(future)
                    try:
                        step = future.result()
                    except BaseException as exc:  # stops the batch, raised after the commit
                        failure = failure or exc
                        continue
                    if step.record is not None:
                        outcomes[item_id] = step.record
                    if step.follow_up is None:
                        self._settled += 1
                    else:
                        kind, delay = step.follow_up
                        self.schedule(kind, item_id, delay)
                # A batch that stops still records what its calls in flight come back with.
                came_back = [finished.get() for _ in running] if failure is not None else []
            now = time.monotonic()
            ready: list[_Due] = []
            while (
                failure is None
                and self._heap
                and self._heap[0].at <= now
                and len(running) + len(ready) < self.options.concurrency
            ):
                ready.append(heapq.heappop(self._heap))
            submits = [due.item_id for due in ready if due.kind == "submit"]
            if outcomes or submits:
                for entry in self.journal.advance(self.bundle_id, outcomes, submits):
                    self._note(entry)
            if failure is not None:
                raise failure
            for due in ready:
                # A submit's SUBMITTING row is durable now: its worker only makes the call.
                kind = "submitting" if due.kind == "submit" else due.kind
                future = pool.submit(self._step, kind, due.item_id)
                running[future] = due.item_id
                future.add_done_callback(finished.put)
            if self._heap and self._heap[0].at > deadline:
                # Nothing due before the deadline can be started; the rest stays pending.
                parked = [d for d in self._heap if d.at > deadline]
                self._heap = [d for d in self._heap if d.at <= deadline]
                heapq.heapify(self._heap)
                for due in parked:
                    self.transient.setdefault(
                        due.item_id,
                        {
                            "code": ItemCode.PENDING,
                            "message": "still in progress at the vendor when "
                            "--max-wait ran out; process the request again to finish it",
                        },
                    )
                    self._settled += 1
            if came_back or not running:
                self._report(total)

    def _report(self, total: int) -> None:
        if self.progress is not None:
            self.progress(min(self._settled, total), total)

    def start_clients(self, vendors: set[str]) -> None:
        for vendor in sorted(vendors):
            client = self.client_factory(vendor, self.home, self.options)
            client.start()
            self.clients[vendor] = client
        self.vendor_calls = True

    # --- one step of one item (runs in a worker thread)

    def _step(self, kind: str, item_id: str) -> _StepResult:
        item = self.work[item_id]
        client = self.clients[vendor_of(item.action)]
        try:
            if kind in ("submitting", "resubmit"):
                return self._submit(client, item)
            ref = dict(self.entries[item_id].vendor_ref or {})
            if kind == "poll":
                return self._apply(item, client.poll(item, ref))
            return self._reconcile(client, item, ref)
        except (AuthError, ConfigError):
            raise
        except NetworkError as exc:
            # The vendor could not be asked this time: try again later with whatever step the
            # journal now calls for (an uncertain submit is reconciled, never resent).
            self.transient[item_id] = {"code": exc.code, "message": exc.message}
            follow = {
                ItemState.NEW: "submit",
                ItemState.SUBMITTING: "reconcile",
                ItemState.SUBMITTED: "poll",
            }.get(self.entries[item_id].state)
            return _StepResult(None, (follow, self._retry_delay(item_id)) if follow else None)

    def _retry_delay(self, item_id: str) -> float:
        with self._lock:
            self.resubmits[f"wait:{item_id}"] += 1
            failures = self.resubmits[f"wait:{item_id}"]
        return self.options.retry.delay(min(failures, 8))

    def _submit(self, client: VendorClient, item: WorkItem) -> _StepResult:
        """Make the item's vendor call; its SUBMITTING row is already durable."""
        try:
            outcome = client.submit(item)
        except UncertainOutcome as exc:
            _log.info("item %s: outcome uncertain (%s); reconciling", item.id, exc.code)
            return self._reconcile(client, item, {})
        except (AuthError, ConfigError):
            self._note(self.journal.release(self.bundle_id, item.id))
            raise
        except NetworkError as exc:
            # Certainly not acted upon (http.py raises UncertainOutcome otherwise): back to NEW,
            # and tried again after a backoff while the deadline allows, a bounded number of
            # times; what is left is pending for a later run.
            self._note(self.journal.release(self.bundle_id, item.id))
            self.transient[item.id] = {"code": exc.code, "message": exc.message}
            with self._lock:
                self.resubmits[f"unreached:{item.id}"] += 1
                tries = self.resubmits[f"unreached:{item.id}"]
            retry = ("submit", self._retry_delay(item.id)) if tries <= MAX_RESUBMITS else None
            return _StepResult(None, retry)
        except VendorError as exc:
            self._note(
                self.journal.mark_failed(
                    self.bundle_id, item.id, {"code": exc.code, "message": exc.message}
                )
            )
            return _StepResult(None, None)
        return self._apply(item, outcome)

    def _reconcile(
        self, client: VendorClient, item: WorkItem, ref: Mapping[str, str]
    ) -> _StepResult:
        found = client.reconcile(item, ref)
        if found is NOT_SUBMITTED:
            with self._lock:
                self.resubmits[item.id] += 1
                tries = self.resubmits[item.id]
            self._note(self.journal.release(self.bundle_id, item.id))
            if tries > MAX_RESUBMITS:
                self.transient[item.id] = {
                    "code": ItemCode.PENDING,
                    "message": "the vendor kept losing this call; process the request again",
                }
                return _StepResult(None, None)
            return _StepResult(None, ("submit", 0.0))
        assert isinstance(found, Outcome)
        return self._apply(item, found)

    def _apply(self, item: WorkItem, outcome: Outcome) -> _StepResult:
        """What an outcome asks the journal to record, and what comes next for the item (None:
        settled for this run). The loop records it in its next commit."""
        self.transient.pop(item.id, None)
        if outcome.status == "pending":
            # A pending answer to a poll changes nothing: the item is SUBMITTED already.
            record = outcome if self.entries[item.id].state == ItemState.SUBMITTING else None
            delay = outcome.retry_after if outcome.retry_after is not None else DEFAULT_POLL
            return _StepResult(record, ("poll", max(0.0, delay)))
        if outcome.status == "ok":
            unknown = set(outcome.files) - action(item.action).response_files
            if unknown:
                raise VendorError(f"client produced unexpected file names {sorted(unknown)}")
        return _StepResult(outcome, None)


def outside_status(home: Home) -> dict[str, Any]:
    """Requests seen, items per state, and anything needing attention (for `outside status`).

    Raises:
        ConfigError: this is not an outside home, or state.db is damaged.
    """
    require_home_role(home, "outside")
    with Journal.open(home.paths.state_db) as journal:
        return journal.summary().to_dict()


__all__ = [
    "ProcessOptions",
    "ProcessResult",
    "default_client",
    "outside_status",
    "process_request",
    "response_items",
]
