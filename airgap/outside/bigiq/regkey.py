"""BIG-IQ RegKey activation: add a key to a RegKey pool and walk its offering to READY.

`bigiq.regkey_activate` adds the registration key to a RegKey pool (one POST), then walks the
offering through its states: accept the EULA only when the item says `accept_eula`, retry an
`ACTIVATION_FAILED` once, and end with `license.txt` (plus `eula.txt` when a EULA was shown).

Manual activation. BIG-IQ's manual flow stops at `ACTIVATING_MANUAL_NEED_LICENSE_TEXT` and
waits for license text that F5's activation server (activate.f5.com) issues for a dossier. The
request item carries the dossier of the device the key is for (`get_dossier` on the inside);
obtaining license text for it is a call to F5, which has no documented API here and which the
emulator does not serve. So that step is an injected `LicenseSource` (the outside site's
connection to F5: `LicenseDirectory` reads text the operator saved; tests pass one built on
`airgap.emulators.bigiq.license_text`). The client hands it the item's dossier, PATCHes the text
it returns into BIG-IQ (`ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED`) and returns that text as
`license.txt`. Without a source a manual item fails before anything is sent to BIG-IQ
(`MANUAL_ACTIVATION_UNAVAILABLE`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import quote

from airgap.errors import AirgapError, InputError, ItemCode, NetworkError, VendorError
from airgap.outside.bigiq._common import (
    _REGKEY_POOLS,
    _add_on_keys,
    _literal,
    _mode,
    _object,
    _param,
    _refusal,
    _submitted_object,
    _with_query,
)
from airgap.outside.bigiq.session import BigIqSession
from airgap.outside.http import UncertainOutcome, VendorRejected
from airgap.outside.vendor import NOT_SUBMITTED, Outcome, Reconciled, WorkItem

_log = logging.getLogger(__name__)

# Offering statuses, as BIG-IQ spells them.
_AUTOMATIC: Final = "ACTIVATING_AUTOMATIC"
_MANUAL: Final = "ACTIVATING_MANUAL"
_NEED_EULA: Final = "ACTIVATING_AUTOMATIC_NEED_EULA_ACCEPT"
_EULA_ACCEPTED: Final = "ACTIVATING_AUTOMATIC_EULA_ACCEPTED"
_NEED_LICENSE_TEXT: Final = "ACTIVATING_MANUAL_NEED_LICENSE_TEXT"
_LICENSE_TEXT_PROVIDED: Final = "ACTIVATING_MANUAL_LICENSE_TEXT_PROVIDED"
_READY: Final = "READY"
_ACTIVATION_FAILED: Final = "ACTIVATION_FAILED"


class LicenseDirectory:
    """License text the operator saved from activate.f5.com: `DIR/<REGKEY>.license`.

    The connected side's way to serve manual activations without an F5 API: the first run
    fails the item with the dossier to paste at activate.f5.com and the file name to save the
    answer under; a later request for the same key picks it up.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, reg_key: str, dossier: str, add_on_keys: Sequence[str]) -> str:
        """The saved license text for `reg_key`.

        Raises:
            InputError: no such file yet (the message says what to fetch and where to put it).
        """
        path = self.directory / f"{reg_key}.license"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise InputError(
                f"no license text for {reg_key} in {self.directory}: paste the item's dossier "
                f"({dossier[:16]}…) at activate.f5.com"
                + (f" with add-on keys {', '.join(add_on_keys)}" if add_on_keys else "")
                + f", save the answer as {path.name} there, and send the request again"
            ) from None
        if "Registration Key" not in text:
            raise InputError(f"{path} is not a BIG-IP license file")
        return text


class LicenseSource(Protocol):
    """Where a manual RegKey activation gets its license text: F5's activation server.

    Implementations may raise `NetworkError` when F5 cannot be reached this time (the item is
    polled again later) or another `AirgapError` when F5 refuses (the item fails with its code).
    """

    def __call__(self, reg_key: str, dossier: str, add_on_keys: Sequence[str]) -> str:
        """Return the BIG-IP license text F5 issues for a dossier.

        Args:
            reg_key: the base registration key.
            dossier: the hex dossier of the device the key is activated for.
            add_on_keys: add-on keys activated with it.

        Returns:
            The license text (what goes into /config/bigip.license).
        """
        ...


class RegKeys:
    """RegKey activations. Thread-safe: the steps taken are kept under a lock."""

    def __init__(
        self,
        session: BigIqSession,
        *,
        poll_interval: float,
        license_source: LicenseSource | None,
    ) -> None:
        """Serve RegKey activations through `session`.

        Args:
            session: the logged-in BIG-IQ session.
            poll_interval: seconds suggested between polls of an activation.
            license_source: F5's activation server for manual activation (see the module
                docstring); None refuses manual items before anything is sent.
        """
        self.session = session
        self.poll_interval = poll_interval
        self._license_source = license_source
        self._state_lock = threading.Lock()
        # Activation steps this client took, by (pool id, regkey). In memory only: after a
        # restart an offering may get one more retry, and the EULA text of a key accepted
        # before the restart is no longer at hand (BIG-IQ stops showing it once accepted).
        self._eula_accepted: dict[tuple[str, str], str] = {}
        self._retried: set[tuple[str, str]] = set()

    def submit(self, item: WorkItem) -> Outcome:
        """Add the key to its RegKey pool (the one mutating call), or continue a waiting one.

        Raises:
            _BadItem: the item lacks its pool, key, mode or (manual) dossier.
            UncertainOutcome: (E_NETWORK) BIG-IQ may have added the key; reconcile.
            NetworkError, AuthError: as `BigIqSession.call`.

        Returns:
            `pending` on the offering, or `failed` when BIG-IQ or this site refuses the item.
        """
        pool = _param(item, "pool")
        reg_key = _param(item, "regkey").strip().upper()
        mode = _mode(item)
        add_on_keys = _add_on_keys(item)
        if mode == "manual":
            _param(item, "dossier")
            if self._license_source is None:
                return Outcome.failed(
                    ItemCode.MANUAL_ACTIVATION_UNAVAILABLE,
                    f"manual activation of {reg_key} needs license text from F5's activation "
                    "server for the item's dossier, and this outside site has no connection to "
                    "it configured; get the license at activate.f5.com with the dossier, or "
                    "use mode automatic",
                )
        pool_id = self._pool_id(pool)
        if pool_id is None:
            return Outcome.failed(
                ItemCode.POOL_NOT_FOUND, f"RegKey pool {pool!r} not found on BIG-IQ"
            )
        ref = {"pool_id": pool_id, "regkey": reg_key}
        existing = self.session.get_or_none(_offering_path(pool_id, reg_key))
        if existing is not None and _adoptable(existing, mode):
            # Left waiting by an earlier request (EULA declined, activation failed, license
            # text never provided): continue it rather than have BIG-IQ refuse a second add.
            _log.info("BIG-IQ: continuing the activation of %s in pool %s", reg_key, pool)
            return Outcome.pending(ref, retry_after=0.0)
        body = {
            "regKey": reg_key,
            "status": _MANUAL if mode == "manual" else _AUTOMATIC,
            "addOnKeys": add_on_keys,
            "description": _description(item),
        }
        path = _offering_path(pool_id)
        try:
            response = self.session.call("POST", path, json=body, mutating=True)
        except VendorRejected as exc:
            return _refusal(exc)
        _submitted_object(response, f"POST {path}")
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _pool_id(self, pool: str) -> str | None:
        query = {"$filter": f"(name eq {_literal(pool)})", "$top": "1"}
        body = self.session.get(_with_query(_REGKEY_POOLS, query))
        for entry in body.get("items", []):
            if isinstance(entry, Mapping) and entry.get("name") == pool and entry.get("id"):
                return str(entry["id"])
        return None

    def poll(self, item: WorkItem, ref: Mapping[str, str]) -> Outcome:
        """Read the offering and take the step BIG-IQ waits for, if the item allows it.

        Raises:
            NetworkError, AuthError, VendorError: as `BigIqSession.get`.

        Returns:
            The offering's outcome now.
        """
        pool_id, reg_key = ref.get("pool_id"), ref.get("regkey")
        if not pool_id or not reg_key:
            return Outcome.needs_attention(
                "no BIG-IQ RegKey pool and key were recorded for this item", vendor_ref=ref
            )
        offering = self.session.get_or_none(_offering_path(pool_id, reg_key))
        if offering is None:
            return Outcome.needs_attention(
                f"registration key {reg_key} is no longer in the RegKey pool on BIG-IQ",
                vendor_ref=ref,
            )
        return self._advance(item, dict(ref), offering)

    def _advance(self, item: WorkItem, ref: dict[str, str], offering: Mapping[str, Any]) -> Outcome:
        """Turn an offering's state into an outcome, taking the step BIG-IQ waits for."""
        key = (ref["pool_id"], ref["regkey"])
        status = offering.get("status")
        message = str(offering.get("message") or "")
        mode = _mode(item)
        if status == _READY:
            return self._ready(item, ref, offering)
        if status == _NEED_EULA:
            eula = offering.get("eulaText")
            if item.params.get("accept_eula") is not True:
                return Outcome.failed(
                    ItemCode.EULA_NOT_ACCEPTED,
                    f"BIG-IQ needs F5's EULA accepted before it activates {ref['regkey']}; "
                    "the request did not accept it. Read the EULA text attached to this "
                    "result and set accept_eula to activate the key",
                    result={**self._offering_result(item, ref, offering), "eula_text": eula},
                    vendor_ref=ref,
                )
            if not isinstance(eula, str) or not eula:
                return Outcome.needs_attention(
                    f"BIG-IQ asks to accept a EULA for {ref['regkey']} but shows no EULA text",
                    vendor_ref=ref,
                )
            with self._state_lock:
                # Kept before the PATCH: once accepted, BIG-IQ stops showing the text.
                self._eula_accepted[key] = eula
            patched = self._patch_offering(ref, {"status": _EULA_ACCEPTED, "eulaText": eula})
            if isinstance(patched, Outcome):
                return patched
            _log.info("BIG-IQ: accepted the EULA for %s as the request asked", ref["regkey"])
            return self._step_result(item, ref, patched)
        if status == _NEED_LICENSE_TEXT:
            dossier = item.params.get("dossier")
            source = self._license_source
            if mode != "manual" or not isinstance(dossier, str) or not dossier or source is None:
                return Outcome.needs_attention(
                    f"BIG-IQ waits for manual license text for {ref['regkey']}, which this "
                    "item cannot provide",
                    vendor_ref=ref,
                )
            try:
                text = source(ref["regkey"], dossier, _add_on_keys(item))
            except NetworkError:
                raise
            except AirgapError as exc:
                return Outcome.failed(exc.code, exc.message, vendor_ref=ref)
            patched = self._patch_offering(
                ref, {"status": _LICENSE_TEXT_PROVIDED, "licenseText": text}
            )
            if isinstance(patched, Outcome):
                return patched
            return self._step_result(item, ref, patched)
        if status == _ACTIVATION_FAILED:
            with self._state_lock:
                retry = key not in self._retried
                self._retried.add(key)
            if not retry:
                return Outcome.failed(
                    ItemCode.ACTIVATION_FAILED,
                    message or f"BIG-IQ could not activate {ref['regkey']}",
                    result=self._offering_result(item, ref, offering),
                    vendor_ref=ref,
                )
            _log.info("BIG-IQ: activation of %s failed; retrying once", ref["regkey"])
            restart = {"status": _MANUAL if mode == "manual" else _AUTOMATIC}
            patched = self._patch_offering(ref, restart)
            if isinstance(patched, Outcome):
                return patched
            return self._step_result(item, ref, patched)
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _step_result(
        self, item: WorkItem, ref: dict[str, str], offering: Mapping[str, Any]
    ) -> Outcome:
        # The answer to a step is final only when it says so (a manual license text is judged
        # at once); anything else is looked at again on the next poll, never acted on here.
        if offering.get("status") in (_READY, _ACTIVATION_FAILED):
            if offering.get("status") == _ACTIVATION_FAILED:
                with self._state_lock:
                    self._retried.add((ref["pool_id"], ref["regkey"]))
            return self._advance(item, ref, offering)
        return Outcome.pending(ref, retry_after=self.poll_interval)

    def _patch_offering(
        self, ref: Mapping[str, str], body: Mapping[str, Any]
    ) -> dict[str, Any] | Outcome:
        path = _offering_path(ref["pool_id"], ref["regkey"])
        try:
            response = self.session.call("PATCH", path, json=dict(body), mutating=True)
        except UncertainOutcome:
            # Re-read on the next poll: BIG-IQ takes each step only from the state before it.
            return Outcome.pending(dict(ref), retry_after=self.poll_interval)
        except VendorRejected as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return Outcome.failed(
                    VendorError.code, exc.vendor_message or exc.message, vendor_ref=dict(ref)
                )
            raise
        try:
            return _object(response, what=path)
        except VendorError:
            return Outcome.pending(dict(ref), retry_after=self.poll_interval)

    def _ready(self, item: WorkItem, ref: dict[str, str], offering: Mapping[str, Any]) -> Outcome:
        with self._state_lock:
            accepted = self._eula_accepted.get((ref["pool_id"], ref["regkey"]))
        shown = offering.get("eulaText")
        eula = accepted if accepted is not None else (shown if isinstance(shown, str) else None)
        result = self._offering_result(item, ref, offering)
        result["eula_accepted"] = accepted is not None
        if eula:
            result["eula_text"] = eula
        files: dict[str, bytes] = {}
        text = offering.get("licenseText")
        if isinstance(text, str) and text.strip():
            files["license.txt"] = text.encode("utf-8")
        else:
            result["license_text"] = "BIG-IQ did not return the license text"
        if eula:
            files["eula.txt"] = eula.encode("utf-8")
        return Outcome.ok(result, files=files, vendor_ref=ref)

    def _offering_result(
        self, item: WorkItem, ref: Mapping[str, str], offering: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "pool": item.params.get("pool"),
            "pool_id": ref["pool_id"],
            "regkey": ref["regkey"],
            "mode": item.params.get("mode"),
            "status": offering.get("status"),
            "message": offering.get("message"),
            "add_on_keys": list(offering.get("addOnKeys") or []),
        }
        dossier = offering.get("dossier")
        if isinstance(dossier, str) and dossier and dossier != item.params.get("dossier"):
            result["bigiq_dossier"] = dossier  # BIG-IQ's own, when it differs from the item's
        return result

    def reconcile(self, item: WorkItem) -> Reconciled:
        """`pending` on an offering this item made (its description names it), else
        `NOT_SUBMITTED`.

        Raises:
            NetworkError, AuthError, VendorError: as `BigIqSession.get`.
        """
        pool = _param(item, "pool")
        reg_key = _param(item, "regkey").strip().upper()
        pool_id = self._pool_id(pool)
        if pool_id is None:
            return NOT_SUBMITTED  # submit posts nothing without the pool
        offering = self.session.get_or_none(_offering_path(pool_id, reg_key))
        if offering is None or offering.get("description") != _description(item):
            # Absent, or added by someone else (BIG-IQ refuses a second add of a key, so our
            # POST cannot have made it): a resubmission continues it or is refused verbatim.
            return NOT_SUBMITTED
        return Outcome.pending({"pool_id": pool_id, "regkey": reg_key}, retry_after=0.0)


def _description(item: WorkItem) -> str:
    # Marks the offering as this item's, so reconciliation can tell it from someone else's.
    return f"airgap request item {item.id}"


def _adoptable(offering: Mapping[str, Any], mode: str) -> bool:
    status = offering.get("status")
    return status in (_NEED_EULA, _ACTIVATION_FAILED) or (
        status == _NEED_LICENSE_TEXT and mode == "manual"
    )


def _offering_path(pool_id: str, reg_key: str | None = None) -> str:
    path = f"{_REGKEY_POOLS}/{quote(pool_id, safe='')}/offerings"
    return f"{path}/{quote(reg_key, safe='')}" if reg_key else path
