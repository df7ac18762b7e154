"""What the emulated vault's secrets and keys share: knobs, the store, errors, and the gate every call passes.

The gate (:func:`vault_route`) does, in the service's order: ``api-version`` check, bearer token (audience,
expiry, tenant), authorisation (``allowed_principals`` or the built-in RBAC roles of ``role_assignments``),
throttling (the old flat ``ops_limit``, or Microsoft's weighted service limits when ``limits`` is on), then
the handler, and records one audit entry per authenticated call, shaped after Key Vault's ``AuditEvent``
log (https://learn.microsoft.com/en-us/azure/key-vault/general/logging): ``operationName`` (SecretGet,
KeyUnwrap, ...), ``identity`` (oid/appid/tid of the token), ``id`` (the object URI with the version
served), ``httpStatusCode``.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from emulator.core import HTTPError, Request, Response, Router, json_response
from emulator.directory import HOME_TENANT_ID
from emulator.keyvault_limits import WINDOW_S, Cost, ServiceLimits
from emulator.keyvault_rbac import PREFIX, forbidden_message, permits
from emulator.state import EmulatorState
from emulator.tokens import KEYVAULT_RESOURCE, keyvault_challenge, verify_bearer

MAX_PAGE = 25  # Key Vault returns at most 25 items per page
AUDIT_MAX = 50_000


@dataclass
class VaultConfig:
    """Knobs for tests. No field uses a default factory: an old persisted config reads class defaults."""

    tenant_id: str = HOME_TENANT_ID
    ops_limit: int = 4000  # flat limit over every call, used while ``limits`` is off
    window_s: float = WINDOW_S
    allowed_principals: list[str] | None = None  # None: any token for the vault tenant is authorised
    # None: no RBAC model (any caller may do anything); else {oid or appid: [built-in role names]}.
    role_assignments: dict[str, list[str]] | None = None
    purge_protection: bool = True  # as deployed (infra/core/security/keyvault.bicep)
    retention_days: int = 90  # softDeleteRetentionInDays, 7..90
    limits: bool = False  # enforce the service limits of keyvault_limits.py instead of ops_limit
    limits_scale: float = 1.0
    retry_after: bool = True  # send Retry-After on a limits 429 (a captured real 429 had none)

    def recovery_level(self) -> str:
        """DeletionRecoveryLevel for these settings (Recoverable = soft delete, purge not permitted, 90 days)."""
        base = "Recoverable" if self.retention_days >= 90 else "CustomizedRecoverable"
        return base if self.purge_protection else f"{base}+Purgeable"


class KeyVaultStore:
    """Secrets, keys and their deleted twins (keyed by lower-cased name), knobs, windows and the audit log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: dict[str, Any] = {}
        self.deleted: dict[str, Any] = {}
        self.keys: dict[str, Any] = {}
        self.deleted_keys: dict[str, Any] = {}
        self.config = VaultConfig()
        self.ops: deque[float] = deque()
        self.limiter = ServiceLimits()
        self.audit: deque[dict[str, Any]] = deque(maxlen=AUDIT_MAX)
        self.audit_seq = itertools.count(1)

    def __getstate__(self) -> dict[str, Any]:
        # The limiter windows and the audit log are test observations, not the emulated world: not persisted.
        return {k: v for k, v in self.__dict__.items() if k not in ("limiter", "audit", "audit_seq")}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)

    def reset_knobs(self) -> None:
        """Every knob back to its default except the vault tenant; windows cleared (audit kept)."""
        tenant = self.config.tenant_id
        self.config = VaultConfig(tenant_id=tenant)
        self.ops.clear()
        self.limiter.clear()

    def expire_deleted(self, now: float) -> None:
        """The service purges deleted objects itself once their scheduled purge date has passed."""
        for table in (self.deleted, self.deleted_keys):
            for name in [n for n, e in table.items() if e.scheduled_purge is not None and e.scheduled_purge <= now]:
                del table[name]


def kv_error(status: int, code: str, message: str, inner: str | None = None, headers: dict | None = None) -> HTTPError:
    """A Key Vault error response (``innererror`` nested in ``error``, as the service sends it)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return HTTPError(json_response(status, {"error": err}, headers))


def body(req: Request) -> dict[str, Any]:
    """The JSON object body or 400 BadParameter."""
    try:
        data = req.json()
    except ValueError:
        raise kv_error(400, "BadParameter", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise kv_error(400, "BadParameter", "The request body must be a JSON object.")
    return data


def page(vault: str, items: list[dict[str, Any]], req: Request, path: str) -> Response:
    """One page of ``items`` (``maxresults`` ≤ 25) with a ``nextLink`` when more remain."""
    try:
        size = min(MAX_PAGE, max(1, int(req.query.get("maxresults") or MAX_PAGE)))
        start = int(req.query.get("$skiptoken") or 0)
    except ValueError:
        raise kv_error(400, "BadParameter", "maxresults must be an integer between 1 and 25.") from None
    chunk = items[start : start + size]
    next_link = None
    if start + size < len(items):
        next_link = f"{vault}{path}?api-version={req.query['api-version']}&$skiptoken={start + size}&maxresults={size}"
    return json_response(200, {"value": chunk, "nextLink": next_link})


@dataclass
class Call:
    """The audit entry of one call; handlers fill in ``id`` (the object URI, version included)."""

    seq: int
    time: float
    operationName: str  # noqa: N815 - the AuditEvent field name
    operationVersion: str  # noqa: N815
    dataAction: str  # noqa: N815
    kind: str
    identity: dict[str, Any]
    requestUri: str  # noqa: N815
    id: str | None = None
    httpStatusCode: int | None = None  # noqa: N815
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[..., Response]
CostOf = Callable[[KeyVaultStore, dict[str, str], Request], Cost]


def vault_route(
    router: Router,
    state: EmulatorState,
    kv: KeyVaultStore,
    method: str,
    pattern: str,
    endpoint: str,
    *,
    operation: str,
    action: str,
    kind: str,
    cost: CostOf,
) -> Callable[[Handler], Handler]:
    """Register ``handler(req, call, **params)`` behind the gate (see the module docstring).

    ``action`` is the RBAC data action after ``Microsoft.KeyVault/vaults/``; ``kind`` the counter
    family (read, write, wrap, unwrap); ``cost`` picks the service-limit budget for the call.
    """

    def decorator(handler: Handler) -> Handler:
        router.add(method, pattern, endpoint, _gate(state, kv, operation, action, kind, cost, handler))
        return handler

    return decorator


def _gate(
    state: EmulatorState, kv: KeyVaultStore, operation: str, action: str, kind: str, cost: CostOf, handler: Handler
) -> Callable[..., Response]:
    def gated(req: Request, **params: str) -> Response:
        if not req.query.get("api-version"):
            raise kv_error(400, "BadParameter", "The api-version query parameter is missing.")
        tenant = kv.config.tenant_id
        claims = verify_bearer(state, req, KEYVAULT_RESOURCE, challenge_tenant=tenant)
        if claims.get("tid") != tenant:
            raise keyvault_challenge(
                state,
                f"AKV10032: Invalid issuer. Expected one of {state.base_url}/{tenant}/v2.0, found {claims.get('iss')}.",
                tenant,
            )
        now = state.clock.now()
        identity = {k: claims.get(k) for k in ("oid", "appid", "tid", "upn") if claims.get(k)}
        call = Call(0, now, operation, req.query["api-version"], PREFIX + action, kind, identity, req.path)
        status = 500
        try:
            _authorise(kv, claims, PREFIX + action, f"{state.base_url}{req.path}")
            _throttle(state, kv, cost(kv, params, req), now)
            state.counters.incr(f"kv.kind.{kind}")
            response = handler(req, call, **params)
            status = response.status
            return response
        except HTTPError as exc:
            status = exc.response.status
            raise
        finally:
            call.httpStatusCode = status
            with kv.lock:
                call.seq = next(kv.audit_seq)
                kv.audit.append(asdict(call))

    return gated


def _authorise(kv: KeyVaultStore, claims: dict[str, Any], action: str, resource: str) -> None:
    caller = {claims.get("oid"), claims.get("appid")} - {None}
    allowed = kv.config.allowed_principals
    assignments = kv.config.role_assignments
    denied = allowed is not None and not caller & set(allowed)
    if assignments is not None and not denied:
        roles = [role for principal in caller for role in assignments.get(principal, [])]
        denied = not permits(roles, action)
    if denied:
        raise kv_error(403, "Forbidden", forbidden_message(action, claims, resource), "ForbiddenByRbac")


def _throttle(state: EmulatorState, kv: KeyVaultStore, cost: Cost, now: float) -> None:
    config = kv.config
    with kv.lock:
        if config.limits:
            retry = kv.limiter.admit(cost, now, config.limits_scale, config.window_s)
            if retry is None:
                return
            state.counters.incr("kv.throttled")
            state.counters.incr(f"kv.throttled.{cost.budget}")
            raise kv_error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. "
                "Reason: VaultRequestTypeLimitReached",
                headers={"Retry-After": str(retry)} if config.retry_after else None,
            )
        while kv.ops and kv.ops[0] <= now - config.window_s:
            kv.ops.popleft()
        if len(kv.ops) >= config.ops_limit:
            retry = max(1, math.ceil(kv.ops[0] + config.window_s - now))
            state.counters.incr("kv.throttled")
            raise kv_error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: A single client "
                "has exceeded the maximum number of requests per 10 seconds.",
                headers={"Retry-After": str(retry)},
            )
        kv.ops.append(now)
