"""Test-only admin routes of the emulated vault: knobs, the audit log, operation counters and limit usage.

- ``GET/POST /_emulator/keyvault``: read / change the knobs of :class:`emulator.keyvault_common.VaultConfig`
  (``reset: true`` first puts every knob back, the vault tenant included).
- ``GET /_emulator/keyvault/audit?since=&principal=&operation=&name=``: audit entries (oldest first) after
  sequence number ``since``, optionally only one caller's (oid or appid), one ``operationName`` (comma
  separated list allowed) or one object name; ``DELETE`` empties the log.
- ``GET /_emulator/keyvault/stats``: calls admitted per kind (read, write, wrap, unwrap), throttled calls per
  budget, and the share of each service-limit budget used in the current window.
"""

from __future__ import annotations

from typing import Any

from emulator.core import Request, Response, Router, json_response
from emulator.keyvault_common import KeyVaultStore, VaultConfig, body, kv_error
from emulator.keyvault_limits import BUDGETS
from emulator.keyvault_rbac import role_name
from emulator.state import EmulatorState

KINDS = ("read", "write", "wrap", "unwrap")


def register(router: Router, state: EmulatorState, kv: KeyVaultStore) -> None:
    """Register ``/_emulator/keyvault`` and its audit and stats routes."""

    @router.route("GET", "/_emulator/keyvault", "admin.keyvault")
    def read_config(req: Request) -> Response:
        counts = {
            "secrets": len(kv.secrets),
            "deleted": len(kv.deleted),
            "keys": len(kv.keys),
            "deleted_keys": len(kv.deleted_keys),
        }
        return json_response(200, {**vars(kv.config), "vault_url": state.base_url, **counts})

    @router.route("POST", "/_emulator/keyvault", "admin.keyvault")
    def change_config(req: Request) -> Response:
        data = body(req)
        with kv.lock:
            config = VaultConfig() if data.get("reset") else VaultConfig(**vars(kv.config))
            try:
                _apply(config, data)
            except (TypeError, ValueError) as exc:
                raise kv_error(400, "BadParameter", str(exc)) from None
            kv.config = config
            kv.ops.clear()
            kv.limiter.clear()
        return read_config(req)

    @router.route("GET", "/_emulator/keyvault/audit", "admin.keyvault.audit")
    def read_audit(req: Request) -> Response:
        since = int(req.query.get("since") or 0)
        principal = req.query.get("principal")
        operations = set(filter(None, (req.query.get("operation") or "").split(",")))
        name = (req.query.get("name") or "").lower()
        with kv.lock:
            entries = [e for e in kv.audit if e["seq"] > since]
        if principal:
            entries = [e for e in entries if principal in (e["identity"].get("oid"), e["identity"].get("appid"))]
        if operations:
            entries = [e for e in entries if e["operationName"] in operations]
        if name:
            entries = [e for e in entries if _object_name(e) == name]
        return json_response(200, {"value": entries, "count": len(entries)})

    @router.route("DELETE", "/_emulator/keyvault/audit", "admin.keyvault.audit")
    def clear_audit(req: Request) -> Response:
        with kv.lock:
            removed = len(kv.audit)
            kv.audit.clear()
        return json_response(200, {"removed": removed})

    @router.route("GET", "/_emulator/keyvault/stats", "admin.keyvault.stats")
    def read_stats(req: Request) -> Response:
        counters = state.counters.snapshot()
        with kv.lock:
            usage = kv.limiter.usage(state.clock.now(), kv.config.window_s)
        return json_response(
            200,
            {
                "ops": {kind: counters.get(f"kv.kind.{kind}", 0) for kind in KINDS},
                "throttled": {
                    "total": counters.get("kv.throttled", 0),
                    **{b: counters.get(f"kv.throttled.{b}", 0) for b in BUDGETS},
                },
                "window_usage": usage,
                "limits": kv.config.limits,
                "limits_scale": kv.config.limits_scale,
            },
        )


def _object_name(entry: dict[str, Any]) -> str:
    """The object name of an audit entry (``/secrets/{name}/...``, ``/deletedkeys/{name}``, ...)."""
    parts = entry["requestUri"].strip("/").split("/")
    return parts[1].lower() if len(parts) > 1 else ""


def _apply(config: VaultConfig, data: dict[str, Any]) -> None:
    """Lay the given knobs over ``config`` (validated; ValueError names the bad one)."""
    if "tenant_id" in data:
        config.tenant_id = str(data["tenant_id"]).lower()
    if "ops_limit" in data:
        config.ops_limit = int(data["ops_limit"])
    if "window_s" in data:
        config.window_s = float(data["window_s"])
    if "allowed_principals" in data:
        allowed = data["allowed_principals"]
        config.allowed_principals = None if allowed is None else [str(a).lower() for a in allowed]
    if "role_assignments" in data:
        assignments = data["role_assignments"]
        if assignments is not None and not isinstance(assignments, dict):
            raise ValueError("role_assignments must be an object {principal id: [role names]} or null")
        config.role_assignments = (
            None
            if assignments is None
            else {str(p).lower(): [role_name(str(r)) for r in roles] for p, roles in assignments.items()}
        )
    for flag in ("purge_protection", "limits", "retry_after"):
        if flag in data:
            config.__setattr__(flag, bool(data[flag]))
    if "retention_days" in data:
        days = int(data["retention_days"])
        if not 7 <= days <= 90:
            raise ValueError("retention_days must be between 7 and 90 (softDeleteRetentionInDays)")
        config.retention_days = days
    if "limits_scale" in data:
        scale = float(data["limits_scale"])
        if not 0 < scale <= 1000:
            raise ValueError("limits_scale must be > 0")
        config.limits_scale = scale
