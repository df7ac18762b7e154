"""Emulated Azure Key Vault secrets API (one vault served at the emulator's base URL).

Bearer challenge first, versions, tags, paging with nextLink, soft delete (409
ObjectIsDeletedButRecoverable on reuse), recover, purge, 25 KB values, name rules, and a
vault-wide operations-per-10-seconds limit answered with 429 + Retry-After.
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emulator.core import HTTPError, Request, Response, Router, json_response
from emulator.directory import HOME_TENANT_ID
from emulator.state import EmulatorState
from emulator.tokens import KEYVAULT_RESOURCE, keyvault_challenge, verify_bearer

NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
RETENTION_DAYS = 90
MAX_PAGE = 25  # Key Vault returns at most 25 items per page


@dataclass
class SecretVersion:
    """One version of a secret."""

    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    created: int
    updated: int
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None


@dataclass
class SecretEntry:
    """A secret: its display name and versions (oldest first)."""

    name: str
    versions: list[SecretVersion] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge: int | None = None


@dataclass
class VaultConfig:
    """Knobs for tests: the vault's tenant, throttling limit, allowed callers."""

    tenant_id: str = HOME_TENANT_ID
    ops_limit: int = 4000
    window_s: float = 10.0
    allowed_principals: list[str] | None = None  # None: any token for the vault tenant is authorised


class KeyVaultStore:
    """Secrets and deleted secrets, keyed by lower-cased name (Key Vault names are case-insensitive)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: dict[str, SecretEntry] = {}
        self.deleted: dict[str, SecretEntry] = {}
        self.config = VaultConfig()
        self.ops: deque[float] = deque()


def _error(status: int, code: str, message: str, inner: str | None = None, headers: dict | None = None) -> HTTPError:
    err: dict[str, Any] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return HTTPError(json_response(status, {"error": err}, headers))


def register(router: Router, state: EmulatorState) -> None:
    """Register the Key Vault routes and its admin route."""
    kv = KeyVaultStore()
    state.keyvault = kv

    def vault() -> str:
        return state.base_url

    def guard(req: Request) -> None:
        """api-version, bearer token (audience, expiry, tenant, caller) and the throttling window."""
        if not req.query.get("api-version"):
            raise _error(400, "BadParameter", "The api-version query parameter is missing.")
        tenant = kv.config.tenant_id
        claims = verify_bearer(state, req, KEYVAULT_RESOURCE, challenge_tenant=tenant)
        if claims.get("tid") != tenant:
            raise keyvault_challenge(
                state,
                f"AKV10032: Invalid issuer. Expected one of {state.base_url}/{tenant}/v2.0, found {claims.get('iss')}.",
                tenant,
            )
        allowed = kv.config.allowed_principals
        if allowed is not None and not {claims.get("oid"), claims.get("appid")} & set(allowed):
            raise _error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource. If role "
                "assignments were recently changed, please wait several minutes for role assignments "
                "to become effective.",
                "ForbiddenByRbac",
            )
        now = state.clock.now()
        with kv.lock:
            while kv.ops and kv.ops[0] <= now - kv.config.window_s:
                kv.ops.popleft()
            if len(kv.ops) >= kv.config.ops_limit:
                retry = max(1, math.ceil(kv.ops[0] + kv.config.window_s - now))
                state.counters.incr("kv.throttled")
                raise _error(
                    429,
                    "Throttled",
                    "Request was not processed because too many requests were "
                    "received. Reason: A single client has exceeded the maximum number of requests "
                    "per 10 seconds.",
                    headers={"Retry-After": str(retry)},
                )
            kv.ops.append(now)

    def check_name(name: str) -> None:
        if not NAME_RE.match(name):
            raise _error(400, "BadParameter", f"The request URI contains an invalid name: {name}")

    def live(name: str) -> SecretEntry:
        entry = kv.secrets.get(name.lower())
        if entry is None:
            raise _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. "
                "If you recently deleted this secret you may be able to recover it using the correct "
                "recovery command.",
            )
        return entry

    def attrs(v: SecretVersion) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": RETENTION_DAYS,
        }
        if v.nbf is not None:
            out["nbf"] = v.nbf
        if v.exp is not None:
            out["exp"] = v.exp
        return out

    def bundle(entry: SecretEntry, v: SecretVersion, *, value: bool = True, item: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": f"{vault()}/secrets/{entry.name}/{v.version}", "attributes": attrs(v)}
        if item and not value:
            out["id"] = f"{vault()}/secrets/{entry.name}"
        if value:
            out["value"] = v.value
        if v.content_type is not None:
            out["contentType"] = v.content_type
        if v.tags is not None:
            out["tags"] = v.tags
        return out

    def deleted_bundle(entry: SecretEntry, value: bool) -> dict[str, Any]:
        out = bundle(entry, entry.versions[-1], value=value, item=not value)
        out.update(
            recoveryId=f"{vault()}/deletedsecrets/{entry.name}",
            deletedDate=entry.deleted_date,
            scheduledPurgeDate=entry.scheduled_purge,
        )
        return out

    def page(items: list[dict[str, Any]], req: Request, path: str) -> Response:
        try:
            size = min(MAX_PAGE, max(1, int(req.query.get("maxresults") or MAX_PAGE)))
            start = int(req.query.get("$skiptoken") or 0)
        except ValueError:
            raise _error(400, "BadParameter", "maxresults must be an integer between 1 and 25.") from None
        chunk = items[start : start + size]
        next_link = None
        if start + size < len(items):
            next_link = (
                f"{vault()}{path}?api-version={req.query['api-version']}&$skiptoken={start + size}&maxresults={size}"
            )
        return json_response(200, {"value": chunk, "nextLink": next_link})

    def tags_of(data: dict[str, Any]) -> dict[str, str] | None:
        tags = data.get("tags")
        if tags is None:
            return None
        if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
            raise _error(400, "BadParameter", f"Tags must be an object with at most {MAX_TAGS} entries.")
        return {str(k): str(v) for k, v in tags.items()}

    def body(req: Request) -> dict[str, Any]:
        try:
            data = req.json()
        except ValueError:
            raise _error(400, "BadParameter", "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise _error(400, "BadParameter", "The request body must be a JSON object.")
        return data

    @router.route("PUT", "/secrets/{name}", "kv.setSecret")
    def set_secret(req: Request, name: str) -> Response:
        guard(req)
        check_name(name)
        data = body(req)
        value = data.get("value")
        if not isinstance(value, str):
            raise _error(400, "BadParameter", "Property 'value' is required and must be a string.")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise _error(400, "BadParameter", "Secret value exceeds the maximum allowed size of 25 KB.")
        tags, attributes = tags_of(data), data.get("attributes") or {}
        now = int(state.clock.now())
        with kv.lock:
            if name.lower() in kv.deleted:
                raise _error(
                    409,
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, and "
                    "its name cannot be reused; in this state, the secret can only be recovered or purged.",
                    "ObjectIsDeletedButRecoverable",
                )
            entry = kv.secrets.setdefault(name.lower(), SecretEntry(name))
            version = SecretVersion(
                uuid.uuid4().hex,
                value,
                data.get("contentType"),
                tags,
                now,
                now,
                bool(attributes.get("enabled", True)),
                attributes.get("nbf"),
                attributes.get("exp"),
            )
            entry.versions.append(version)
            return json_response(200, bundle(entry, version))

    @router.route("GET", "/secrets/{name}/versions", "kv.listVersions")
    def list_versions(req: Request, name: str) -> Response:
        guard(req)
        with kv.lock:
            entry = live(name)
            items = [bundle(entry, v, value=False) for v in entry.versions]
        return page(items, req, f"/secrets/{entry.name}/versions")

    def get_version(req: Request, name: str, version: str = "") -> Response:
        guard(req)
        with kv.lock:
            entry = live(name)
            v = entry.versions[-1] if not version else next((x for x in entry.versions if x.version == version), None)
            if v is None:
                raise _error(
                    404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found in this key vault."
                )
            if not v.enabled:
                raise _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
            return json_response(200, bundle(entry, v))

    router.add("GET", "/secrets/{name}", "kv.getSecret", get_version)
    router.add("GET", "/secrets/{name}/{version}", "kv.getSecret", get_version)

    def update(req: Request, name: str, version: str = "") -> Response:
        guard(req)
        data = body(req)
        tags = tags_of(data)
        with kv.lock:
            entry = live(name)
            v = entry.versions[-1] if not version else next((x for x in entry.versions if x.version == version), None)
            if v is None:
                raise _error(404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found.")
            if "contentType" in data:
                v.content_type = data["contentType"]
            if tags is not None:
                v.tags = tags
            attributes = data.get("attributes") or {}
            for key in ("enabled", "nbf", "exp"):
                if key in attributes:
                    setattr(v, key, attributes[key])
            v.updated = int(state.clock.now())
            return json_response(200, bundle(entry, v, value=False))

    router.add("PATCH", "/secrets/{name}", "kv.updateSecret", update)
    router.add("PATCH", "/secrets/{name}/{version}", "kv.updateSecret", update)

    @router.route("DELETE", "/secrets/{name}", "kv.deleteSecret")
    def delete_secret(req: Request, name: str) -> Response:
        guard(req)
        now = int(state.clock.now())
        with kv.lock:
            entry = live(name)
            del kv.secrets[name.lower()]
            entry.deleted_date, entry.scheduled_purge = now, now + RETENTION_DAYS * 86400
            kv.deleted[name.lower()] = entry
            return json_response(200, deleted_bundle(entry, value=False))

    @router.route("GET", "/secrets", "kv.listSecrets")
    def list_secrets(req: Request) -> Response:
        guard(req)
        with kv.lock:
            items = [bundle(e, e.versions[-1], value=False, item=True) for _, e in sorted(kv.secrets.items())]
        return page(items, req, "/secrets")

    def deleted_entry(name: str) -> SecretEntry:
        entry = kv.deleted.get(name.lower())
        if entry is None:
            raise _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return entry

    @router.route("GET", "/deletedsecrets", "kv.listDeletedSecrets")
    def list_deleted(req: Request) -> Response:
        guard(req)
        with kv.lock:
            items = [deleted_bundle(e, value=False) for _, e in sorted(kv.deleted.items())]
        return page(items, req, "/deletedsecrets")

    @router.route("GET", "/deletedsecrets/{name}", "kv.getDeletedSecret")
    def get_deleted(req: Request, name: str) -> Response:
        guard(req)
        with kv.lock:
            return json_response(200, deleted_bundle(deleted_entry(name), value=False))

    @router.route("DELETE", "/deletedsecrets/{name}", "kv.purgeDeletedSecret")
    def purge(req: Request, name: str) -> Response:
        guard(req)
        with kv.lock:
            deleted_entry(name)
            del kv.deleted[name.lower()]
        return Response(204)

    @router.route("POST", "/deletedsecrets/{name}/recover", "kv.recoverDeletedSecret")
    def recover(req: Request, name: str) -> Response:
        guard(req)
        with kv.lock:
            entry = deleted_entry(name)
            del kv.deleted[name.lower()]
            entry.deleted_date = entry.scheduled_purge = None
            kv.secrets[name.lower()] = entry
            return json_response(200, bundle(entry, entry.versions[-1], value=False))

    @router.route("GET", "/_emulator/keyvault", "admin.keyvault")
    def read_config(req: Request) -> Response:
        return json_response(
            200, {**vars(kv.config), "vault_url": vault(), "secrets": len(kv.secrets), "deleted": len(kv.deleted)}
        )

    @router.route("POST", "/_emulator/keyvault", "admin.keyvault")
    def change_config(req: Request) -> Response:
        data = body(req)
        with kv.lock:
            if data.get("reset"):
                kv.config = VaultConfig()
            if "tenant_id" in data:
                kv.config.tenant_id = str(data["tenant_id"]).lower()
            if "ops_limit" in data:
                kv.config.ops_limit = int(data["ops_limit"])
            if "window_s" in data:
                kv.config.window_s = float(data["window_s"])
            if "allowed_principals" in data:
                allowed = data["allowed_principals"]
                kv.config.allowed_principals = None if allowed is None else [str(a).lower() for a in allowed]
            kv.ops.clear()
        return read_config(req)
