"""The BIG-IQ assignment list (`bigiq.assignments`), read page by page into `result.json`."""

from __future__ import annotations

from typing import Any

from airgap.outside.bigiq._common import (
    _ASSIGNMENTS,
    _LIST_PAGE,
    _assignment_pool,
    _pretty,
    _with_query,
)
from airgap.outside.bigiq.session import BigIqSession
from airgap.outside.vendor import Outcome, WorkItem


class Assignments:
    """The assignment query; it never changes BIG-IQ's state."""

    def __init__(self, session: BigIqSession) -> None:
        """Query through `session`."""
        self.session = session

    def query(self, item: WorkItem) -> Outcome:
        """Every assignment (of the item's pool, if it names one) as `result.json`.

        Raises:
            NetworkError, AuthError, VendorError: as `BigIqSession.get`.

        Returns:
            `ok` with the count in the result and the rows in the file.
        """
        pool = item.params.get("pool")
        rows: list[dict[str, Any]] = []
        skip = 0
        while True:
            body = self.session.get(
                _with_query(_ASSIGNMENTS, {"$top": str(_LIST_PAGE), "$skip": str(skip)})
            )
            page = [i for i in body.get("items", []) if isinstance(i, dict)]
            rows.extend(page)
            skip += len(page)
            total = body.get("totalItems")
            if len(page) < _LIST_PAGE or (isinstance(total, int) and skip >= total):
                break
        if pool:
            rows = [row for row in rows if _assignment_pool(row) == pool]
        result = {"pool": pool or None, "count": len(rows)}
        document = {**result, "assignments": rows}
        return Outcome.ok(result, files={"result.json": _pretty(document)})
