"""The BIG-IQ emulator itself: `BigIqEmulator`, its routes, and the state changes they make.

`BigIqEmulator` is an `App` for `airgap.emulators.server.EmulatorServer`, which owns HTTP, TLS,
latency, fault injection and `GET /_emulator/stats`. It serves the paths, status codes and bodies
of F5 BIG-IQ License Manager: login, token exchange and logout with real token lifetimes; utility
pools with a capacity; a RegKey pool whose offerings go through automatic (EULA) and manual
(dossier) activation; UNREACHABLE assign/revoke tasks that return BIG-IP license text; the
assignment list. Every outcome is decided when the request arrives, under one lock, so concurrent
assigns cannot overbook a pool; a task only reveals it once `task_delay` has passed.

State is plain attributes that tests may edit under `emu.lock`:
`emu.pools["demo-utility"].capacity = 0`, `emu.regkeys[key] = RegKeySpec(eula=True)`,
`emu.tokens.clear()`. `stats()` counts calls per route and state changes per MAC.

This module routes and decides; it borrows the rest. The records and constants are in `records`,
token rules in `tokens`, `$filter` and the other query options in `odata`, license text and
dossiers in `license`. Not modelled: MANAGED/UNMANAGED assignments (only UNREACHABLE), purchased
pools, creating or deleting pools over the API, SKU matching inside utility pools (any
skuKeyword is accepted), partitions and roles. Never imports `airgap.outside`: the clients are
tested against this, not against themselves.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias
from urllib.parse import unquote

from airgap.emulators.bigiq.license import (
    assignment_license_text,
    dossier_for,
    fake_regkey,
    license_text,
)
from airgap.emulators.bigiq.odata import apply_query
from airgap.emulators.bigiq.records import (
    ACTIVATION_FAILED,
    ASSIGNMENTS,
    AUTOMATIC,
    DEFAULT_UTILITY_POOLS,
    DEMO_REGKEY_POOL,
    EULA_ACCEPTED,
    EULA_TEXT,
    HOST,
    HYPERVISORS,
    LICENSE_TEXT_PROVIDED,
    MANUAL,
    NEED_EULA,
    NEED_LICENSE_TEXT,
    POOL_BASE,
    READY,
    REGKEY_EULA,
    REGKEY_EULA_2,
    REGKEY_FAIL_ONCE,
    REGKEY_PLAIN,
    REGKEY_READY,
    TASK_RETENTION,
    TASKS,
    TOKENS,
    UNITS_OF_MEASURE,
    USER_LINK,
    ApiError,
    Assignment,
    MemberTask,
    Offering,
    PendingChange,
    Pool,
    RegKeyPool,
    RegKeySpec,
    Token,
    UtilityPool,
    iso_time,
    normalize_mac,
)
from airgap.emulators.bigiq.tokens import STAT_KEYS, TokenAuthority, render_token
from airgap.emulators.server import BadRequest, Request, Response, basic_credentials
from airgap.errors import ConfigError

__all__ = ["BigIqEmulator", "parse_pool_specs"]

_NAMESPACE: Final = uuid.UUID("6b1f0c52-8d3e-4f7a-9c41-2e5d7a90b3c8")

_ADDON_RE: Final = re.compile(r"^[A-Z0-9]{7}-[A-Z0-9]{7}$")
_LICENSE_REGKEY_RE: Final = re.compile(r"^Registration Key\s*:\s*(\S+)\s*$", re.MULTILINE)


# --- public helpers -------------------------------------------------------------------------


def parse_pool_specs(specs: Iterable[str]) -> dict[str, int]:
    """Parse repeated `--pool NAME:CAPACITY` options into the `pools` constructor argument.

    Args:
        specs: strings such as `VE-UTILITY-POOL-1G:500`; the last colon splits name and capacity.

    Raises:
        ConfigError: a spec is malformed, a capacity is not a whole number >= 0, or a name repeats.

    Returns:
        Pool name to capacity, in the order given.
    """
    pools: dict[str, int] = {}
    for spec in specs:
        name, sep, capacity_text = spec.rpartition(":")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(
                f"--pool {spec!r}: expected NAME:CAPACITY",
                hint="For example --pool VE-UTILITY-POOL-1G:500.",
            )
        try:
            capacity = int(capacity_text)
        except ValueError:
            raise ConfigError(f"--pool {spec!r}: capacity must be a whole number") from None
        if capacity < 0:
            raise ConfigError(f"--pool {spec!r}: capacity must not be negative")
        if name in pools:
            raise ConfigError(f"--pool {spec!r}: pool {name!r} is given twice")
        pools[name] = capacity
    return pools


# --- the emulator ---------------------------------------------------------------------------


class BigIqEmulator:
    """F5 BIG-IQ License Manager as an `App` for `EmulatorServer`.

    CLI mapping for `airgap emulate bigiq`: `--token-ttl S` -> `token_ttl`, `--password P` ->
    `password`, `--task-delay S` -> `task_delay`, `--pool NAME:CAPACITY`... ->
    `pools=parse_pool_specs(...)`; `--port`, `--latency`, `--faults`, `--tls`, `--cert-out` belong
    to `EmulatorServer`.
    """

    def __init__(
        self,
        *,
        token_ttl: float = 300.0,
        refresh_ttl: float = 36000.0,
        password: str | None = None,
        task_delay: float = 0.0,
        pools: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        version: str = "8.3.0",
    ) -> None:
        """Build an emulator with a fresh state.

        Args:
            token_ttl: seconds an access token lives (BIG-IQ: 300).
            refresh_ttl: seconds a refresh token lives (BIG-IQ: 36000).
            password: the password user `admin` must give; None accepts any non-empty one.
            task_delay: seconds tasks and activations stay in progress before showing the outcome.
            pools: utility pools, name to capacity; None gives `{"demo-utility": 1000}`. The
                RegKey pool `demo-regkey` is always there.
            clock: monotonic seconds, for token expiry and delays; tests pass a fake one.
            version: the BIG-IQ version the version endpoint reports.

        Raises:
            ConfigError: a lifetime is not positive, the delay or a capacity is negative, the
                password is empty, or a pool name is empty or `demo-regkey`.
        """
        if token_ttl <= 0 or refresh_ttl <= 0:
            raise ConfigError("token lifetimes must be positive")
        if task_delay < 0:
            raise ConfigError("task delay must not be negative")
        if password == "":
            raise ConfigError("the emulator password must not be empty")
        utility = dict(DEFAULT_UTILITY_POOLS if pools is None else pools)
        for name, capacity in utility.items():
            if not name or name == DEMO_REGKEY_POOL:
                raise ConfigError(f"utility pool name {name!r} is not allowed")
            if capacity < 0:
                raise ConfigError(f"pool {name!r}: capacity must not be negative")

        self.task_delay = task_delay
        self.clock = clock
        self.version = version
        self.lock = threading.RLock()  # one lock for all state; tests may hold it to edit state
        self.machine_id = str(uuid.uuid5(_NAMESPACE, "bigiq-emulator"))

        self._clock0 = clock()
        self._wall0 = time.time()
        self._rest_operation = 0
        self.generation = 1  # bumped on every state change; collections report it

        now_micros = self._micros(self._clock0)
        self.auth = TokenAuthority(
            access_ttl=token_ttl,
            refresh_ttl=refresh_ttl,
            password=password,
            clock=clock,
            micros=self._micros,
        )
        self.tasks: dict[str, MemberTask] = {}  # creation order
        self.pools: dict[str, Pool] = {}
        for name, capacity in utility.items():
            self.pools[name] = UtilityPool(
                name=name,
                capacity=capacity,
                reg_key=fake_regkey(f"utility:{name}"),
                offering_id=str(uuid.uuid5(_NAMESPACE, f"offering:{name}")),
                created_micros=now_micros,
            )
        # What the emulated activate.f5.com knows; tests may add keys.
        self.regkeys: dict[str, RegKeySpec] = {
            REGKEY_PLAIN: RegKeySpec(),
            REGKEY_EULA: RegKeySpec(eula=True),
            REGKEY_EULA_2: RegKeySpec(eula=True),
            REGKEY_FAIL_ONCE: RegKeySpec(fail_times=1),
            **{key: RegKeySpec() for key in REGKEY_READY},
        }
        regkey_pool = RegKeyPool(
            name=DEMO_REGKEY_POOL,
            id=str(uuid.uuid5(_NAMESPACE, f"pool:{DEMO_REGKEY_POOL}")),
            created_micros=now_micros,
        )
        for key in REGKEY_READY:
            dossier = dossier_for(key, [])
            regkey_pool.offerings[key] = Offering(
                reg_key=key,
                pool_id=regkey_pool.id,
                status=READY,
                message="Activated",
                dossier=dossier,
                description="Preloaded by the emulator",
                license_text=license_text(key, dossier=dossier, licensed_version=version),
                last_update_micros=now_micros,
            )
        self.pools[DEMO_REGKEY_POOL] = regkey_pool

        self.calls: Counter[str] = Counter()
        self.mutations: dict[str, Counter[str]] = {}
        self.offering_stats: dict[str, Counter[str]] = {}

    @property
    def tokens(self) -> dict[str, Token]:
        """The live tokens, access and refresh, by their text (`self.auth.tokens`)."""
        return self.auth.tokens

    @property
    def token_stats(self) -> Counter[str]:
        """The token counters of `stats()` (`self.auth.stats`)."""
        return self.auth.stats

    # --- App interface ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one API request as BIG-IQ would.

        Args:
            request: the parsed HTTP request from `EmulatorServer`.

        Returns:
            A JSON response; errors use BIG-IQ's `{"code","message","errorStack","kind"}` shape.
        """
        path = re.sub(r"/{2,}", "/", unquote(request.path))
        if len(path) > 1:
            path = path.rstrip("/")  # real clients POST to collections with a trailing slash
        with self.lock:
            try:
                return self._dispatch(request, path)
            except ApiError as exc:
                return self._error(exc.status, exc.message)
            except BadRequest as exc:
                return self._error(400, f"Invalid request body: {exc}")

    def stats(self) -> dict[str, Any]:
        """Counters for `GET /_emulator/stats`.

        Returns:
            `calls` per route or action (`login`, `assign`, `task.get`...); `mutations` per MAC
            (`assign`/`revoke` that changed state); `tokens` (`logins`, `login_failures`,
            `refreshes`, `refresh_failures`, `expired`, `unauthorized`, `logouts`); `offerings`
            per regKey; `pools` with capacity, assigned and available counts; `tasks`.
        """
        with self.lock:
            pools: dict[str, dict[str, Any]] = {}
            for name, pool in self.pools.items():
                pools[name] = {
                    "type": pool.license_type,
                    "capacity": pool.capacity,
                    "assigned": len(pool.members),
                    "available": pool.available(),
                }
            return {
                "calls": dict(self.calls),
                "mutations": {mac: dict(c) for mac, c in self.mutations.items()},
                "tokens": {key: self.auth.stats[key] for key in STAT_KEYS},
                "offerings": {key: dict(c) for key, c in self.offering_stats.items()},
                "pools": pools,
                "tasks": len(self.tasks),
            }

    # --- routing ----------------------------------------------------------------------------

    def _dispatch(self, request: Request, path: str) -> Response:
        allowed: list[str] = []
        for route in _ROUTES:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            params = match.groupdict()
            self.calls[route.name] += 1
            user = self._authenticate(request) if route.auth else None
            return route.handler(self, request, params, user)
        if allowed:
            self.calls["method-not-allowed"] += 1
            raise ApiError(405, f"Method {request.method} not allowed on {path}")
        self.calls["unknown"] += 1
        raise ApiError(404, f"Public URI path not registered: {path}")

    def _authenticate(self, request: Request) -> Token:
        raw = request.headers.get("x-f5-auth-token", "").strip()
        return self.auth.authenticate(raw, request.path)

    # --- time, links, errors ------------------------------------------------------------------

    def _micros(self, now: float) -> int:
        # Wall time that follows `clock`, so a fake clock moves dates and expiry together.
        return int((self._wall0 + (now - self._clock0)) * 1_000_000)

    def _changed(self) -> None:
        self.generation += 1

    def _error(self, status: int, message: str) -> Response:
        self._rest_operation += 1
        return Response.json(
            status,
            {
                "code": status,
                "message": message,
                "restOperationId": self._rest_operation,
                "errorStack": [],
                "kind": ":resterrorresponse",
            },
        )

    def _collection(
        self,
        path: str,
        kind: str,
        items: list[dict[str, Any]],
        query: Mapping[str, list[str]],
    ) -> Response:
        selected, total = apply_query(items, query)
        body: dict[str, Any] = {
            "items": selected,
            "generation": self.generation,
            "kind": kind,
            "lastUpdateMicros": self._micros(self.clock()),
            "selfLink": HOST + path,
        }
        if any(k in query for k in ("$filter", "$top", "$skip")):
            body["totalItems"] = total
        return Response.json(200, body)

    # --- authentication -----------------------------------------------------------------------

    def _login(self, request: Request, _params: dict[str, str], _user: Token | None) -> Response:
        body = request.json() if request.body.strip() else {}
        if not isinstance(body, dict):
            raise ApiError(400, "The login request must be a JSON object")
        username, password = body.get("username"), body.get("password")
        if username is None and password is None:
            # Some clients send only a Basic Authorization header. Characters outside the base64
            # alphabet are skipped rather than refused (what BIG-IQ does there is not known).
            username, password = basic_credentials(
                request.headers.get("authorization", ""), validate=False
            )
        provider = body.get("loginProviderName") or "local"
        self.auth.login(username, password, provider)
        access, refresh = self._issue(str(username), str(provider))
        return Response.json(
            200,
            {
                "username": str(username),
                "loginReference": {
                    "link": f"{HOST}/mgmt/cm/system/authn/providers/{provider}/login"
                },
                "loginProviderName": provider,
                "token": render_token(access),
                "refreshToken": render_token(refresh),
                "generation": 0,
                "lastUpdateMicros": 0,
            },
        )

    def _exchange(self, request: Request, _params: dict[str, str], _user: Token | None) -> Response:
        # No X-F5-Auth-Token check: clients call this precisely when theirs has expired.
        body = request.json()
        ref = body.get("refreshToken") if isinstance(body, dict) else None
        raw = ref.get("token") if isinstance(ref, dict) else ref
        token = self.auth.redeem(raw)
        access, refresh = self._issue(token.username, token.provider)
        return Response.json(
            200,
            {
                "username": token.username,
                "loginProviderName": token.provider,
                "token": render_token(access),
                "refreshToken": render_token(refresh),
                "generation": 0,
                "lastUpdateMicros": 0,
            },
        )

    def _token_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(200, render_token(self.auth.find(params["token"])))

    def _logout(self, _request: Request, params: dict[str, str], _user: Token | None) -> Response:
        return Response.json(200, render_token(self.auth.logout(params["token"])))

    def _issue(self, username: str, provider: str) -> tuple[Token, Token]:
        # Login and exchange both issue through here, so a test can watch every token handed out.
        return self.auth.issue(username, provider)

    # --- version ------------------------------------------------------------------------------

    def _devices(self, request: Request, _params: dict[str, str], _user: Token | None) -> Response:
        path = "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices"
        item = {
            "uuid": self.machine_id,
            "machineId": self.machine_id,
            "deviceUri": "https://127.0.0.1:443",
            "hostname": "bigiq-emulator.localdomain",
            "address": "127.0.0.1",
            "product": "BIG-IQ",
            "version": self.version,
            "build": "0.0.1",
            "edition": "Final",
            "isVirtual": True,
            "generation": 1,
            "lastUpdateMicros": self._micros(self._clock0),
            "kind": "shared:resolver:device-groups:restdeviceresolverdevicestate",
            "selfLink": f"{HOST}{path}/{self.machine_id}",
        }
        return self._collection(
            path,
            "shared:resolver:device-groups:devicegroupdevicecollectionstate",
            [item],
            request.query,
        )

    def _device_info(
        self, _request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(
            200,
            {
                "machineId": self.machine_id,
                "hostname": "bigiq-emulator.localdomain",
                "product": "BIG-IQ",
                "version": self.version,
                "build": "0.0.1",
                "edition": "Final",
                "isVirtual": True,
                "generation": 0,
                "lastUpdateMicros": 0,
                "kind": "shared:resolver:device-groups:deviceinfostate",
                "selfLink": f"{HOST}/mgmt/shared/identified-devices/config/device-info",
            },
        )

    # --- pools ----------------------------------------------------------------------------------

    def _utility_pool(self, reg_key: str) -> UtilityPool:
        for pool in self.pools.values():
            if isinstance(pool, UtilityPool) and pool.reg_key == reg_key:
                return pool
        raise ApiError(404, f"Object not found - {POOL_BASE}/utility/licenses/{reg_key}")

    def _regkey_pool(self, pool_id: str) -> RegKeyPool:
        for pool in self.pools.values():
            if isinstance(pool, RegKeyPool) and pool.id == pool_id:
                return pool
        raise ApiError(404, f"Object not found - {POOL_BASE}/regkey/licenses/{pool_id}")

    def _render_utility_pool(self, pool: UtilityPool) -> dict[str, Any]:
        return {
            "regKey": pool.reg_key,
            "name": pool.name,
            "sortName": "Utility Pool",
            "status": READY,
            "message": "Activated",
            "generation": 1 + len(pool.members),
            "lastUpdateMicros": pool.created_micros,
            "kind": "cm:device:licensing:pool:utility:licenses:regkeypoollicensestate",
            "selfLink": f"{HOST}{POOL_BASE}/utility/licenses/{pool.reg_key}",
        }

    def _render_regkey_pool(self, pool: RegKeyPool) -> dict[str, Any]:
        return {
            "id": pool.id,
            "name": pool.name,
            "sortName": "Registration Key Pool",
            "generation": 1 + len(pool.offerings),
            "lastUpdateMicros": pool.created_micros,
            "kind": "cm:device:licensing:pool:regkey:licenses:regkeypoollicensestate",
            "selfLink": f"{HOST}{POOL_BASE}/regkey/licenses/{pool.id}",
        }

    def _utility_pools(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        items = [
            self._render_utility_pool(p) for p in self.pools.values() if isinstance(p, UtilityPool)
        ]
        return self._collection(
            f"{POOL_BASE}/utility/licenses",
            "cm:device:licensing:pool:utility:licenses:regkeypoollicensecollectionstate",
            items,
            request.query,
        )

    def _utility_pool_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(200, self._render_utility_pool(self._utility_pool(params["key"])))

    def _utility_offerings(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._utility_pool(params["key"])
        base = f"{POOL_BASE}/utility/licenses/{pool.reg_key}/offerings"
        item = {
            "id": pool.offering_id,
            "name": pool.offering_name,
            "status": "VALID",
            "licenseCount": pool.capacity,
            "generation": 1,
            "lastUpdateMicros": pool.created_micros,
            "kind": "cm:device:licensing:pool:utility:licenses:offerings:utilityofferingstate",
            "selfLink": f"{HOST}{base}/{pool.offering_id}",
        }
        return self._collection(
            base,
            "cm:device:licensing:pool:utility:licenses:offerings:utilityofferingcollectionstate",
            [item],
            request.query,
        )

    def _utility_members(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._utility_pool(params["key"])
        if params["offering"] != pool.offering_id:
            raise ApiError(404, f"Object not found - {request.path}")
        base = f"{POOL_BASE}/utility/licenses/{pool.reg_key}/offerings/{pool.offering_id}/members"
        members = [self._render_member(pool, a) for a in pool.members.values()]
        if "member" in params:
            for member in members:
                if member["id"] == params["member"]:
                    return Response.json(200, member)
            raise ApiError(404, f"Object not found - {base}/{params['member']}")
        return self._collection(
            base,
            "cm:device:licensing:pool:utility:licenses:offerings:members:"
            "utilitylicensemembercollectionstate",
            members,
            request.query,
        )

    def _regkey_pools(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        items = [
            self._render_regkey_pool(p) for p in self.pools.values() if isinstance(p, RegKeyPool)
        ]
        return self._collection(
            f"{POOL_BASE}/regkey/licenses",
            "cm:device:licensing:pool:regkey:licenses:regkeypoollicensecollectionstate",
            items,
            request.query,
        )

    def _regkey_pool_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        return Response.json(200, self._render_regkey_pool(self._regkey_pool(params["pool"])))

    # --- RegKey offerings -----------------------------------------------------------------------

    def _offering(self, pool: RegKeyPool, reg_key: str) -> Offering:
        offering = pool.offerings.get(reg_key.upper())
        if offering is None:
            raise ApiError(
                404,
                f"Object not found - {POOL_BASE}/regkey/licenses/{pool.id}/offerings/{reg_key}",
            )
        self._advance(offering)
        return offering

    def _advance(self, offering: Offering) -> None:
        # Apply a status change whose time has come; its outcome was fixed when it was asked for.
        pending = offering.pending
        if pending is None or self.clock() < pending.due:
            return
        offering.pending = None
        offering.status = pending.status
        offering.message = pending.message
        offering.eula_text = pending.eula_text
        if pending.license_text is not None:
            offering.license_text = pending.license_text
        offering.generation += 1
        offering.last_update_micros = self._micros(pending.due)

    def _offering_stat(self, reg_key: str, what: str) -> None:
        self.offering_stats.setdefault(reg_key, Counter())[what] += 1
        self._changed()

    def _start_activation(self, offering: Offering, mode: str) -> None:
        now = self.clock()
        due = now + self.task_delay
        offering.eula_text = None
        offering.license_text = None
        offering.generation += 1
        offering.last_update_micros = self._micros(now)
        if mode == MANUAL:
            offering.status, offering.message = MANUAL, "Manual activation in progress"
            offering.pending = PendingChange(
                due, NEED_LICENSE_TEXT, "Provide the license text from activate.f5.com"
            )
            return
        offering.status, offering.message = AUTOMATIC, "Automatic activation in progress"
        spec = self.regkeys.get(offering.reg_key)
        if spec is None:
            offering.pending = PendingChange(
                due,
                ACTIVATION_FAILED,
                f"Registration key {offering.reg_key} is not valid: "
                "the F5 license server does not recognize it",
            )
        elif spec.fail_times > 0:
            spec.fail_times -= 1  # decided now, so a retry is what makes it work
            offering.pending = PendingChange(
                due,
                ACTIVATION_FAILED,
                "Automatic activation failed: the F5 license server did not answer in time; "
                "retry the activation",
            )
        elif spec.eula:
            offering.pending = PendingChange(due, NEED_EULA, "Accept EULA to continue", EULA_TEXT)
        else:
            offering.pending = PendingChange(
                due, READY, "Activated", license_text=self._offering_license(offering)
            )

    def _offering_license(self, offering: Offering) -> str:
        return license_text(
            offering.reg_key, dossier=offering.dossier, licensed_version=self.version
        )

    def _render_offering(self, offering: Offering) -> dict[str, Any]:
        link = f"{HOST}{POOL_BASE}/regkey/licenses/{offering.pool_id}/offerings/{offering.reg_key}"
        body: dict[str, Any] = {
            "regKey": offering.reg_key,
            "name": f"License for {offering.reg_key}",
            "sortName": "Registration Key Pool Item",
            "description": offering.description,
            "addOnKeys": list(offering.add_on_keys),
            "status": offering.status,
            "message": offering.message,
            "dossier": offering.dossier,
        }
        if offering.eula_text is not None:
            body["eulaText"] = offering.eula_text
        if offering.license_text is not None and offering.status == READY:
            body["licenseText"] = offering.license_text
            body["licenseState"] = {
                "vendor": "F5, Inc.",
                "registrationKey": offering.reg_key,
                "licensedVersion": self.version,
                "licensedDateTime": iso_time(offering.last_update_micros),
            }
        body.update(
            {
                "generation": offering.generation,
                "lastUpdateMicros": offering.last_update_micros,
                "kind": "cm:device:licensing:pool:regkey:licenses:item:offerings:"
                "regkeypoollicenseofferingstate",
                "selfLink": link,
            }
        )
        return body

    def _offerings_list(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        for offering in pool.offerings.values():
            self._advance(offering)
        return self._collection(
            f"{POOL_BASE}/regkey/licenses/{pool.id}/offerings",
            "cm:device:licensing:pool:regkey:licenses:item:offerings:"
            "regkeypoollicenseofferingcollectionstate",
            [self._render_offering(o) for o in pool.offerings.values()],
            request.query,
        )

    def _offering_create(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        body = _json_object(request)
        raw_key = body.get("regKey")
        reg_key = raw_key.strip().upper() if isinstance(raw_key, str) else ""
        if not reg_key:
            raise ApiError(400, f"Invalid registration key '{raw_key}'")
        # A key of an unusual shape goes into the pool like any other; F5's license server is
        # what refuses it (its activation ends ACTIVATION_FAILED).
        status = body.get("status", AUTOMATIC)
        if status not in (AUTOMATIC, MANUAL):
            raise ApiError(
                400, f"Invalid status '{status}'; use {AUTOMATIC} or {MANUAL} to add a key"
            )
        add_on_keys = _add_on_keys(body)
        for other in self.pools.values():
            if isinstance(other, RegKeyPool) and reg_key in other.offerings:
                raise ApiError(
                    400, f"Registration key {reg_key} already exists in pool '{other.name}'"
                )
        description = body.get("description")
        offering = Offering(
            reg_key=reg_key,
            pool_id=pool.id,
            status=str(status),
            message="",
            dossier=dossier_for(reg_key, add_on_keys),
            description=description if isinstance(description, str) else "",
            add_on_keys=add_on_keys,
            generation=0,
        )
        self._start_activation(offering, str(status))
        pool.offerings[reg_key] = offering
        self._offering_stat(reg_key, "create")
        return Response.json(200, self._render_offering(offering))

    def _offering_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        return Response.json(200, self._render_offering(self._offering(pool, params["key"])))

    def _offering_patch(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        offering = self._offering(pool, params["key"])
        body = _json_object(request)
        status = body.get("status")
        if offering.pending is not None and status is not None:
            raise ApiError(
                400,
                f"Registration key {offering.reg_key} is {offering.status}; "
                "wait for the activation step to finish",
            )
        if isinstance(body.get("description"), str):
            offering.description = body["description"]
            offering.generation += 1
        if status is None:
            self._offering_stat(offering.reg_key, "patch")
            return Response.json(200, self._render_offering(offering))
        if status == EULA_ACCEPTED and offering.status == NEED_EULA:
            if body.get("eulaText") != offering.eula_text:
                raise ApiError(400, "eulaText must be the EULA text presented, unchanged")
            offering.status, offering.message = EULA_ACCEPTED, "Finishing activation"
            offering.eula_text = None
            offering.pending = PendingChange(
                self.clock() + self.task_delay,
                READY,
                "Activated",
                license_text=self._offering_license(offering),
            )
            offering.generation += 1
            self._offering_stat(offering.reg_key, "eula_accept")
        elif status == LICENSE_TEXT_PROVIDED and offering.status == NEED_LICENSE_TEXT:
            text = body.get("licenseText")
            if not isinstance(text, str) or not text.strip():
                raise ApiError(400, "licenseText is required")
            # BIG-IQ answers this one synchronously: READY or ACTIVATION_FAILED.
            keys = _LICENSE_REGKEY_RE.findall(text)
            if keys == [offering.reg_key]:
                offering.status, offering.message = READY, "Activated"
                offering.license_text = text
            else:
                offering.status = ACTIVATION_FAILED
                offering.message = (
                    f"The license text is not for registration key {offering.reg_key}"
                )
            offering.generation += 1
            self._offering_stat(offering.reg_key, "license_text")
        elif status in (AUTOMATIC, MANUAL) and offering.status in (ACTIVATION_FAILED, READY):
            if offering.assigned_to:
                raise ApiError(
                    400,
                    f"Registration key {offering.reg_key} is assigned to "
                    f"{offering.assigned_to}; revoke it before reactivating",
                )
            if "addOnKeys" in body:
                offering.add_on_keys = _add_on_keys(body)
                offering.dossier = dossier_for(offering.reg_key, offering.add_on_keys)
            self._start_activation(offering, str(status))
            self._offering_stat(offering.reg_key, "activate")
        else:
            raise ApiError(
                400,
                f"Cannot change the status of {offering.reg_key} from {offering.status} "
                f"to {status}",
            )
        offering.last_update_micros = self._micros(self.clock())
        return Response.json(200, self._render_offering(offering))

    def _offering_delete(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        offering = self._offering(pool, params["key"])
        if offering.assigned_to:
            raise ApiError(
                400,
                f"Registration key {offering.reg_key} is assigned to the device with MAC "
                f"address {offering.assigned_to}; revoke the license before deleting the key",
            )
        del pool.offerings[offering.reg_key]
        self._offering_stat(offering.reg_key, "delete")
        return Response.json(200, self._render_offering(offering))

    def _offering_members(
        self, request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        pool = self._regkey_pool(params["pool"])
        offering = self._offering(pool, params["key"])
        base = f"{POOL_BASE}/regkey/licenses/{pool.id}/offerings/{offering.reg_key}/members"
        members = [
            self._render_member(pool, a)
            for a in pool.members.values()
            if a.reg_key == offering.reg_key
        ]
        if "member" in params:
            for member in members:
                if member["id"] == params["member"]:
                    return Response.json(200, member)
            raise ApiError(404, f"Object not found - {base}/{params['member']}")
        return self._collection(
            base,
            "cm:device:licensing:pool:regkey:licenses:item:offerings:regkey:members:"
            "regkeypoollicensemembercollectionstate",
            members,
            request.query,
        )

    # --- member management ------------------------------------------------------------------

    def _member_link(self, pool: Pool, assignment: Assignment) -> str:
        if isinstance(pool, UtilityPool):
            return (
                f"{HOST}{POOL_BASE}/utility/licenses/{pool.reg_key}/offerings/"
                f"{pool.offering_id}/members/{assignment.id}"
            )
        return (
            f"{HOST}{POOL_BASE}/regkey/licenses/{pool.id}/offerings/{assignment.reg_key}"
            f"/members/{assignment.id}"
        )

    def _member_status(self, assignment: Assignment) -> str:
        return "LICENSED" if self.clock() >= assignment.ready_at else "INSTALLING"

    def _render_member(self, pool: Pool, assignment: Assignment) -> dict[str, Any]:
        status = self._member_status(assignment)
        kind = (
            "cm:device:licensing:pool:utility:licenses:offerings:members:utilitylicensememberstate"
            if isinstance(pool, UtilityPool)
            else "cm:device:licensing:pool:regkey:licenses:item:offerings:regkey:members:"
            "regkeypoollicensememberstate"
        )
        return {
            "id": assignment.id,
            "deviceAddress": assignment.address or "",
            "macAddress": assignment.mac,
            "assignmentType": "UNREACHABLE",
            "status": status,
            "message": "Device licensed" if status == "LICENSED" else "Assigning license",
            "generation": 1 if status == "INSTALLING" else 2,
            "lastUpdateMicros": assignment.created_micros,
            "kind": kind,
            "selfLink": self._member_link(pool, assignment),
        }

    def _member_management(
        self, request: Request, _params: dict[str, str], user: Token | None
    ) -> Response:
        body = _json_object(request)
        command = body.get("command")
        if command not in ("assign", "revoke"):
            raise ApiError(400, f"Invalid command '{command}'; expected assign or revoke")
        self.calls[str(command)] += 1  # besides "member-management", which counts every POST
        assignment_type = body.get("assignmentType")
        if assignment_type not in ("UNREACHABLE", "MANAGED", "UNMANAGED"):
            raise ApiError(
                400,
                f"Invalid assignmentType '{assignment_type}'; expected UNREACHABLE, MANAGED or "
                "UNMANAGED",
            )
        now = self.clock()
        raw_mac = body.get("macAddress")
        mac = normalize_mac(raw_mac) if isinstance(raw_mac, str) else None
        pool_name = body.get("licensePoolName")
        task = MemberTask(
            id=str(uuid.uuid4()),
            command=str(command),
            body=dict(body),
            mac=mac or (raw_mac if isinstance(raw_mac, str) else ""),
            pool=pool_name if isinstance(pool_name, str) else "",
            username=user.username if user else "admin",
            created=now,
            created_micros=self._micros(now),
        )
        if assignment_type != "UNREACHABLE":
            # Nothing inside an air gap is reachable from BIG-IQ: the task runs and fails as it
            # does for a BIG-IP BIG-IQ cannot reach, and licenses nothing.
            address = body.get("address")
            task.error_message = (
                f"Unable to reach the device at {address or '(no address given)'}: "
                "the connection timed out"
            )
        elif command == "assign":
            self._decide_assign(task, body, mac, raw_mac)
        else:
            self._decide_revoke(task, mac, raw_mac)
        self._prune_tasks(now)
        self.tasks[task.id] = task
        self._changed()
        # The submit answer always shows STARTED, as on BIG-IQ; the outcome comes from a GET.
        return Response.json(202, self._render_task(task, just_created=True))

    def _decide_assign(
        self, task: MemberTask, body: dict[str, Any], mac: str | None, raw_mac: Any
    ) -> None:
        pool = self.pools.get(task.pool)
        hypervisor = body.get("hypervisor")
        unit = body.get("unitOfMeasure")
        if pool is None:
            task.error_message = f"License pool '{task.pool}' not found"
            return
        if hypervisor is None:
            task.error_message = "A hypervisor is required to license an unreachable device"
            return
        if hypervisor not in HYPERVISORS:
            task.error_message = (
                f"Invalid hypervisor '{hypervisor}'. Valid values are: "
                "aws, azure, gce, vmware, hyperv, kvm, xen, alibaba"
            )
            return
        if isinstance(pool, UtilityPool) and unit is None:
            task.error_message = "A unitOfMeasure is required to assign a utility license"
            return
        if unit is not None and unit not in UNITS_OF_MEASURE:
            task.error_message = (
                f"Invalid unitOfMeasure '{unit}'. Valid values are: yearly, monthly, daily, hourly"
            )
            return
        if mac is None:
            task.error_message = f"Invalid MAC address '{raw_mac}'"
            return
        for other in self.pools.values():
            if mac in other.members:
                task.error_message = (
                    f"The device with MAC address {mac} is already licensed "
                    f"from pool '{other.name}'"
                )
                return
        if isinstance(pool, UtilityPool):
            if pool.available() <= 0:
                task.error_message = f"There are no available licenses in pool '{pool.name}'"
                return
            reg_key = pool.reg_key
            offering: Offering | None = None
        else:
            offering = pool.free_offering()
            if offering is None:
                task.error_message = f"There are no available licenses in pool '{pool.name}'"
                return
            reg_key = offering.reg_key

        # Decided: consume the license now so concurrent assigns cannot overbook the pool.
        text = self._assignment_license(task, pool, reg_key, mac, body)
        assignment = Assignment(
            id=str(uuid.uuid4()),
            mac=mac,
            pool=pool.name,
            reg_key=reg_key,
            hypervisor=str(hypervisor),
            license_text=text,
            task_id=task.id,
            ready_at=task.created + self.task_delay,
            created_micros=task.created_micros,
            unit_of_measure=_opt_str(unit),
            sku_keyword1=_opt_str(body.get("skuKeyword1")),
            sku_keyword2=_opt_str(body.get("skuKeyword2")),
            tenant=_opt_str(body.get("tenant")),
            chargeback_tag=_opt_str(body.get("chargebackTag")),
            address=_opt_str(body.get("address")),
        )
        pool.members[mac] = assignment
        if offering is not None:
            offering.assigned_to = mac
        task.license_text = text
        task.assignment_link = self._member_link(pool, assignment)
        self.mutations.setdefault(mac, Counter({"assign": 0, "revoke": 0}))["assign"] += 1

    def _decide_revoke(self, task: MemberTask, mac: str | None, raw_mac: Any) -> None:
        pool = self.pools.get(task.pool)
        if pool is None:
            task.error_message = f"License pool '{task.pool}' not found"
            return
        if mac is None:
            task.error_message = f"Invalid MAC address '{raw_mac}'"
            return
        assignment = pool.members.pop(mac, None)
        if assignment is None:
            task.error_message = (
                f"The device with MAC address {mac} has no license assigned from pool '{pool.name}'"
            )
            return
        if isinstance(pool, RegKeyPool):
            offering = pool.offerings.get(assignment.reg_key)
            if offering is not None:
                offering.assigned_to = None
        self.mutations.setdefault(mac, Counter({"assign": 0, "revoke": 0}))["revoke"] += 1

    def _assignment_license(
        self, task: MemberTask, pool: Pool, reg_key: str, mac: str, body: dict[str, Any]
    ) -> str:
        return assignment_license_text(
            reg_key,
            mac,
            task_id=task.id,
            licensed=datetime.fromtimestamp(task.created_micros / 1_000_000, UTC).date(),
            licensed_version=self.version,
            manager_id=self.machine_id,
            utility=isinstance(pool, UtilityPool),
            sku_keyword1=_opt_str(body.get("skuKeyword1")),
            sku_keyword2=_opt_str(body.get("skuKeyword2")),
            unit_of_measure=_opt_str(body.get("unitOfMeasure")),
        )

    def _prune_tasks(self, now: float) -> None:
        for task_id in [t.id for t in self.tasks.values() if now - t.created > TASK_RETENTION]:
            del self.tasks[task_id]

    def _render_task(self, task: MemberTask, *, just_created: bool = False) -> dict[str, Any]:
        done = not just_created and self.clock() >= task.created + self.task_delay
        if not done:
            status = "STARTED"
        else:
            status = "FAILED" if task.error_message is not None else "FINISHED"
        if task.command == "revoke":
            step = "REVOKE_LICENSE"
        elif status == "FINISHED":
            step = "LICENSE_ASSIGNMENT"
        else:
            step = "GET_LICENSE"
        body: dict[str, Any] = {
            "id": task.id,
            "command": task.command,
            "assignmentType": "UNREACHABLE",
            "licensePoolName": task.pool,
            "macAddress": task.mac,
        }
        for key in ("address", "hypervisor", "skuKeyword1", "skuKeyword2", "unitOfMeasure"):
            if isinstance(task.body.get(key), str):
                body[key] = task.body[key]
        for key in ("tenant", "chargebackTag"):
            if isinstance(task.body.get(key), str):
                body[key] = task.body[key]
        body.update(
            {
                "status": status,
                "currentStep": step,
                "startDateTime": iso_time(task.created_micros),
                "username": task.username,
                "userReference": {"link": USER_LINK},
                "identityReferences": [{"link": USER_LINK}],
                "ownerMachineId": self.machine_id,
            }
        )
        last_update = task.created_micros
        if done:
            last_update = task.created_micros + int(self.task_delay * 1_000_000)
            body["endDateTime"] = iso_time(last_update)
            if task.error_message is not None:
                body["errorMessage"] = task.error_message
            elif task.command == "assign":
                body["licenseAssignmentReference"] = {"link": task.assignment_link}
                body["licenseText"] = task.license_text
        body.update(
            {
                "generation": 1 if not done else 3,
                "lastUpdateMicros": last_update,
                "kind": "cm:device:tasks:licensing:pool:member-management:"
                "devicelicensingassignmenttaskstate",
                "selfLink": f"{HOST}{TASKS}/{task.id}",
            }
        )
        return body

    def _tasks_list(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        self._prune_tasks(self.clock())
        return self._collection(
            TASKS,
            "cm:device:tasks:licensing:pool:member-management:"
            "devicelicensingassignmenttaskcollectionstate",
            [self._render_task(t) for t in self.tasks.values()],
            request.query,
        )

    def _task_get(self, _request: Request, params: dict[str, str], _user: Token | None) -> Response:
        task = self.tasks.get(params["id"])
        if task is None:
            raise ApiError(404, f"Object not found - {TASKS}/{params['id']}")
        return Response.json(200, self._render_task(task))

    # --- assignments ----------------------------------------------------------------------------

    def _render_assignment(self, pool: Pool, assignment: Assignment) -> dict[str, Any]:
        status = self._member_status(assignment)
        pool_ref: dict[str, Any] = {"name": pool.name, "licenseType": pool.license_type}
        if isinstance(pool, RegKeyPool):
            pool_ref["id"] = pool.id
        else:
            pool_ref["regKey"] = pool.reg_key
        body: dict[str, Any] = {
            "id": assignment.id,
            "assignmentType": "UNREACHABLE",
            "deviceAddress": assignment.address or "",
            "macAddress": assignment.mac,
            "hypervisor": assignment.hypervisor,
            "status": status,
            "message": "Device licensed" if status == "LICENSED" else "Assigning license",
            "licenseType": pool.license_type,
            "pool": pool_ref,
            "registrationKey": assignment.reg_key,
            "licenseReference": {"link": self._member_link(pool, assignment)},
            "auditRecordReference": {
                "link": f"{HOST}/mgmt/cm/device/licensing/audit/{assignment.id}"
            },
        }
        optional = {
            "unitOfMeasure": assignment.unit_of_measure,
            "skuKeyword1": assignment.sku_keyword1,
            "skuKeyword2": assignment.sku_keyword2,
            "tenant": assignment.tenant,
            "chargebackTag": assignment.chargeback_tag,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body.update(
            {
                "generation": 1 if status == "INSTALLING" else 2,
                "lastUpdateMicros": assignment.created_micros,
                "kind": "cm:device:licensing:assignments:licenseassignmentstate",
                "selfLink": f"{HOST}{ASSIGNMENTS}/{assignment.id}",
            }
        )
        return body

    def _all_assignments(self) -> list[dict[str, Any]]:
        rows = [(a, p) for p in self.pools.values() for a in p.members.values()]
        rows.sort(key=lambda row: (row[0].created_micros, row[0].id))
        return [self._render_assignment(p, a) for a, p in rows]

    def _assignments_list(
        self, request: Request, _params: dict[str, str], _user: Token | None
    ) -> Response:
        return self._collection(
            ASSIGNMENTS,
            "cm:device:licensing:assignments:licenseassignmentcollectionstate",
            self._all_assignments(),
            request.query,
        )

    def _assignment_get(
        self, _request: Request, params: dict[str, str], _user: Token | None
    ) -> Response:
        for item in self._all_assignments():
            if item["id"] == params["id"]:
                return Response.json(200, item)
        raise ApiError(404, f"Object not found - {ASSIGNMENTS}/{params['id']}")


# --- routes ---------------------------------------------------------------------------------

_Handler: TypeAlias = Callable[[BigIqEmulator, Request, dict[str, str], Token | None], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # the key in stats()["calls"]
    handler: _Handler
    auth: bool = True


def _route(method: str, path: str, name: str, handler: _Handler, *, auth: bool = True) -> _Route:
    # `{name}` in `path` captures one path segment.
    parts = re.split(r"\{(\w+)\}", path)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return _Route(method, re.compile(regex), name, handler, auth)


_E = BigIqEmulator
_REGKEY_OFFERINGS = f"{POOL_BASE}/regkey/licenses/{{pool}}/offerings"
_UTILITY_MEMBERS = f"{POOL_BASE}/utility/licenses/{{key}}/offerings/{{offering}}/members"
_ROUTES: Final[tuple[_Route, ...]] = (
    _route("POST", "/mgmt/shared/authn/login", "login", _E._login, auth=False),
    _route("POST", "/mgmt/shared/authn/exchange", "exchange", _E._exchange, auth=False),
    _route("GET", f"{TOKENS}/{{token}}", "token.get", _E._token_get),
    _route("DELETE", f"{TOKENS}/{{token}}", "logout", _E._logout),
    _route(
        "GET",
        "/mgmt/shared/resolver/device-groups/cm-shared-all-big-iqs/devices",
        "version",
        _E._devices,
    ),
    _route(
        "GET", "/mgmt/shared/identified-devices/config/device-info", "device-info", _E._device_info
    ),
    _route("GET", f"{POOL_BASE}/utility/licenses", "utility.pools", _E._utility_pools),
    _route("GET", f"{POOL_BASE}/utility/licenses/{{key}}", "utility.pool", _E._utility_pool_get),
    _route(
        "GET",
        f"{POOL_BASE}/utility/licenses/{{key}}/offerings",
        "utility.offerings",
        _E._utility_offerings,
    ),
    _route("GET", _UTILITY_MEMBERS, "utility.members", _E._utility_members),
    _route("GET", f"{_UTILITY_MEMBERS}/{{member}}", "utility.member", _E._utility_members),
    _route("GET", f"{POOL_BASE}/regkey/licenses", "regkey.pools", _E._regkey_pools),
    _route("GET", f"{POOL_BASE}/regkey/licenses/{{pool}}", "regkey.pool", _E._regkey_pool_get),
    _route("GET", _REGKEY_OFFERINGS, "offerings.list", _E._offerings_list),
    _route("POST", _REGKEY_OFFERINGS, "offering.create", _E._offering_create),
    _route("GET", f"{_REGKEY_OFFERINGS}/{{key}}", "offering.get", _E._offering_get),
    _route("PATCH", f"{_REGKEY_OFFERINGS}/{{key}}", "offering.patch", _E._offering_patch),
    _route("DELETE", f"{_REGKEY_OFFERINGS}/{{key}}", "offering.delete", _E._offering_delete),
    _route("GET", f"{_REGKEY_OFFERINGS}/{{key}}/members", "offering.members", _E._offering_members),
    _route(
        "GET",
        f"{_REGKEY_OFFERINGS}/{{key}}/members/{{member}}",
        "offering.member",
        _E._offering_members,
    ),
    _route("GET", TASKS, "tasks.list", _E._tasks_list),
    _route("POST", TASKS, "member-management", _E._member_management),
    _route("GET", f"{TASKS}/{{id}}", "task.get", _E._task_get),
    _route("GET", ASSIGNMENTS, "assignments.list", _E._assignments_list),
    _route("GET", f"{ASSIGNMENTS}/{{id}}", "assignment.get", _E._assignment_get),
)


# --- small helpers --------------------------------------------------------------------------


def _json_object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return body


def _add_on_keys(body: Mapping[str, Any]) -> list[str]:
    raw = body.get("addOnKeys", [])
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise ApiError(400, "addOnKeys must be a list of add-on registration keys")
    keys = [k.strip().upper() for k in raw]
    for key in keys:
        if not _ADDON_RE.match(key):
            raise ApiError(400, f"Invalid add-on key '{key}'")
    return keys


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
