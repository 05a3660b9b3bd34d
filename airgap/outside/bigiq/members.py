"""BIG-IQ UNREACHABLE assign and revoke: one member-management task per item, and reconcile.

`bigiq.assign` / `bigiq.revoke` POST one task to member-management (`assignmentType`
UNREACHABLE), then GET it until FINISHED (`bigip.license` / `revoke.json`) or FAILED (BIG-IQ's
`errorMessage` verbatim). After a lost answer the tasks for the MAC and the assignment list
tell what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlsplit

from airgap.errors import VendorError
from airgap.outside.bigiq._common import (
    _ASSIGNMENTS,
    _TASKS,
    ASSIGN,
    _assignment_pool,
    _item_mac,
    _literal,
    _normalize_mac,
    _param,
    _pretty,
    _refusal,
    _submitted_object,
    _with_query,
)
from airgap.outside.bigiq.session import BigIqSession
from airgap.outside.http import UncertainOutcome, VendorRejected
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem

_OPTIONAL_ASSIGN_FIELDS: Final = (
    ("sku_keyword1", "skuKeyword1"),
    ("sku_keyword2", "skuKeyword2"),
    ("unit_of_measure", "unitOfMeasure"),
    ("tenant", "tenant"),
    ("chargeback_tag", "chargebackTag"),
)


class Members:
    """Assign and revoke through member-management tasks. Thread-safe (no state of its own)."""

    def __init__(self, session: BigIqSession, *, poll_interval: float) -> None:
        """Serve member tasks through `session`.

        Args:
            session: the logged-in BIG-IQ session.
            poll_interval: seconds suggested between polls of a running task.
        """
        self.session = session
        self.poll_interval = poll_interval

    def submit(self, item: WorkItem) -> Outcome:
        """POST the item's assign or revoke task (the one mutating call), then read the task.

        Raises:
            _BadItem: the item lacks its MAC, pool or hypervisor.
            UncertainOutcome: (E_NETWORK) BIG-IQ may have made the task; reconcile.
            NetworkError, AuthError: as `BigIqSession.call`.

        Returns:
            `pending` on the task, its final outcome, or BIG-IQ's refusal as `failed`.
        """
        command = "assign" if item.action == ASSIGN else "revoke"
        mac = _item_mac(item)
        pool = _param(item, "pool")
        body: dict[str, Any] = {
            "command": command,
            "licensePoolName": pool,
            "assignmentType": "UNREACHABLE",
            "macAddress": mac,
        }
        if command == "assign":
            body["hypervisor"] = _param(item, "hypervisor")
            for name, key in _OPTIONAL_ASSIGN_FIELDS:
                value = item.params.get(name)
                if value is not None and value != "":
                    body[key] = str(value)
        try:
            response = self.session.call("POST", _TASKS, json=body, mutating=True)
        except VendorRejected as exc:
            return _refusal(exc)
        task = _submitted_object(response, f"POST {_TASKS}")
        task_id = _task_id(task)
        if not task_id:
            raise UncertainOutcome(
                f"POST {_TASKS}: BIG-IQ accepted the {command} of {mac} but named no task",
                hint="Reconcile with a vendor query before sending it again.",
                method="POST",
                url=_TASKS,
                status=response.status,
            )
        return self._task_outcome(item, task, task_id)

    def poll(self, item: WorkItem, task_id: str) -> Outcome:
        """Read the item's task once (never changes BIG-IQ's state).

        Raises:
            NetworkError, AuthError, VendorError: as `BigIqSession.get`.

        Returns:
            The task's outcome, or `needs_attention` when BIG-IQ no longer has it.
        """
        task = self.session.get_or_none(f"{_TASKS}/{quote(task_id, safe='')}")
        if task is None:
            return Outcome.needs_attention(
                f"BIG-IQ task {task_id} no longer exists (tasks are kept one week)",
                vendor_ref={"task": task_id},
            )
        return self._task_outcome(item, task, task_id)

    def _task_outcome(self, item: WorkItem, task: Mapping[str, Any], task_id: str) -> Outcome:
        ref = {"task": task_id}
        command = "assign" if item.action == ASSIGN else "revoke"
        mac = _item_mac(item)
        task_mac = _normalize_mac(str(task.get("macAddress", "")))
        if task.get("command", command) != command or (task_mac and task_mac != mac):
            return Outcome.needs_attention(
                f"BIG-IQ task {task_id} is a {task.get('command')} of {task.get('macAddress')}, "
                f"not the {command} of {mac} this item asks for",
                vendor_ref=ref,
            )
        status = task.get("status")
        summary = _task_summary(task, task_id, mac)
        if status == "FINISHED":
            if command == "revoke":
                confirmation = {"vendor": "F5 BIG-IQ", **summary}
                return Outcome.ok(
                    summary, files={"revoke.json": _pretty(confirmation)}, vendor_ref=ref
                )
            text = task.get("licenseText")
            if not isinstance(text, str) or not text.strip():
                return Outcome.needs_attention(
                    f"BIG-IQ task {task_id} finished the assignment of {mac} without license text",
                    vendor_ref=ref,
                )
            return Outcome.ok(
                summary, files={"bigip.license": text.encode("utf-8")}, vendor_ref=ref
            )
        if status == "FAILED":
            message = task.get("errorMessage")
            if not isinstance(message, str) or not message:
                message = f"BIG-IQ task {task_id} failed without an error message"
            return Outcome.failed(VendorError.code, message, result=summary, vendor_ref=ref)
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def reconcile(self, item: WorkItem) -> Reconciled:
        """Decide from the MAC's tasks and assignments what a submit whose answer was lost did.

        Raises:
            NetworkError, AuthError, VendorError: as `BigIqSession.get`.

        Returns:
            An outcome, `NOT_SUBMITTED`, or `needs_attention` (see `BigIqClient.reconcile`).
        """
        command = "assign" if item.action == ASSIGN else "revoke"
        mac = _item_mac(item)
        pool = _param(item, "pool")
        mac_filter = f"macAddress eq {_literal(mac)} or macAddress eq {_literal(mac.lower())}"
        tasks, tasks_complete = self._list(_TASKS, mac_filter)
        assignments, assignments_complete = self._list(_ASSIGNMENTS, mac_filter)
        if not (tasks_complete and assignments_complete):
            return Outcome.needs_attention(
                f"BIG-IQ lists more {command} records for {mac} than one page holds; check "
                "the member-management tasks by hand"
            )
        mine = [
            t
            for t in tasks
            if t.get("command") == command
            and t.get("licensePoolName") == pool
            and _normalize_mac(str(t.get("macAddress", ""))) == mac
            and (command == "revoke" or _same_assign_params(t, item))
        ]
        running = [t for t in mine if t.get("status") not in ("FINISHED", "FAILED")]
        if len(running) > 1:
            ids = ", ".join(str(_task_id(t)) for t in running)
            return Outcome.needs_attention(
                f"BIG-IQ runs several {command} tasks for {mac} in pool {pool!r} ({ids}); "
                "which one this item made cannot be told"
            )
        if running:
            task_id = _task_id(running[0])
            if task_id:
                return Outcome.pending({"task": task_id}, retry_after=self.poll_interval)
        held = [
            a
            for a in assignments
            if _assignment_pool(a) == pool and _normalize_mac(str(a.get("macAddress", ""))) == mac
        ]
        finished = [t for t in mine if t.get("status") == "FINISHED"]
        if command == "assign":
            if not held:
                # Nothing assigned: failed tasks had no effect, and a finished one was undone
                # since; a resubmission cannot license the device twice.
                return NOT_SUBMITTED
            linked = [t for t in finished if _explains(t, held[0])]
            if linked:
                task = max(linked, key=_task_time)
                return self._task_outcome(item, task, str(_task_id(task)))
            if finished:
                return Outcome.needs_attention(
                    f"{mac} is assigned from pool {pool!r}, but no finished assign task can be "
                    "tied to that assignment"
                )
            # Assigned, but not by a task of this item's shape: our call made no assignment
            # (BIG-IQ refuses a second one), and a resubmission is refused verbatim.
            return NOT_SUBMITTED
        if held:
            return NOT_SUBMITTED  # still assigned: the revoke has had no effect
        if finished:
            task = max(finished, key=_task_time)
            return self._task_outcome(item, task, str(_task_id(task)))
        return NOT_SUBMITTED

    def _list(self, path: str, odata_filter: str) -> tuple[list[dict[str, Any]], bool]:
        body = self.session.get(_with_query(path, {"$filter": odata_filter}))
        items = [i for i in body.get("items", []) if isinstance(i, dict)]
        total = body.get("totalItems")
        complete = "nextLink" not in body and not (isinstance(total, int) and total > len(items))
        return items, complete


def _task_id(task: Mapping[str, Any]) -> str | None:
    value = task.get("id")
    if isinstance(value, str) and value:
        return value
    link = task.get("selfLink")
    if isinstance(link, str) and link.rstrip("/"):
        return link.rstrip("/").rsplit("/", 1)[-1] or None
    return None


def _task_time(task: Mapping[str, Any]) -> int:
    value = task.get("lastUpdateMicros")
    return value if isinstance(value, int) else 0


def _task_summary(task: Mapping[str, Any], task_id: str, mac: str) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "command": task.get("command"),
        "mac": mac,
        "pool": task.get("licensePoolName"),
        "task": task_id,
        "status": task.get("status"),
    }
    for key, name in (
        ("hypervisor", "hypervisor"),
        ("currentStep", "step"),
        ("startDateTime", "started"),
        ("endDateTime", "ended"),
    ):
        if task.get(key) is not None:
            summary[name] = task[key]
    reference = task.get("licenseAssignmentReference")
    if isinstance(reference, Mapping) and isinstance(reference.get("link"), str):
        summary["assignment"] = urlsplit(reference["link"]).path
    return summary


def _same_assign_params(task: Mapping[str, Any], item: WorkItem) -> bool:
    """Whether an assign task carries this item's parameters (fields it does not echo match)."""
    wanted = {"hypervisor": item.params.get("hypervisor")}
    wanted.update({key: item.params.get(name) for name, key in _OPTIONAL_ASSIGN_FIELDS})
    for key, value in wanted.items():
        if key in task and task[key] != (value if value not in ("", None) else None):
            return False
    return True


def _explains(task: Mapping[str, Any], assignment: Mapping[str, Any]) -> bool:
    """Whether a finished assign task made this assignment (the member they name agrees)."""
    reference = task.get("licenseAssignmentReference")
    link = reference.get("link") if isinstance(reference, Mapping) else None
    if not isinstance(link, str):
        return False
    task_path = urlsplit(link).path.rstrip("/")
    if task_path.rsplit("/", 1)[-1] == assignment.get("id"):
        return True
    license_ref = assignment.get("licenseReference")
    other = license_ref.get("link") if isinstance(license_ref, Mapping) else None
    return isinstance(other, str) and urlsplit(other).path.rstrip("/") == task_path
