"""Emulated Azure Key Vault secrets API (one vault served at the emulator's base URL).

Bearer challenge first, versions (get by version, list versions), tags, paging with nextLink, soft delete
(409 ObjectIsDeletedButRecoverable on reuse), recover, purge refused while purge protection is on (as the
deployed vault), automatic purge after the retention period, 25 KB values, name rules. The gate every call
passes (RBAC, throttling, audit) is in keyvault_common; keys in keyvault_keys; admin routes in keyvault_admin.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulator import keyvault_admin, keyvault_keys
from emulator.core import Request, Response, Router, json_response
from emulator.keyvault_common import KeyVaultStore, VaultConfig, body, kv_error, page, vault_route
from emulator.keyvault_limits import Cost
from emulator.state import EmulatorState

__all__ = ["KeyVaultStore", "SecretEntry", "SecretVersion", "VaultConfig", "register"]

NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15


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


_error = kv_error


def _create_cost(kv: KeyVaultStore, params: dict[str, str], req: Request) -> Cost:
    return Cost.secret_create()


def _other_cost(kv: KeyVaultStore, params: dict[str, str], req: Request) -> Cost:
    return Cost.vault_other()


def register(router: Router, state: EmulatorState) -> None:
    """Register the Key Vault routes (secrets here, keys in keyvault_keys) and the vault's admin routes."""
    kv = KeyVaultStore()
    state.keyvault = kv

    def vault() -> str:
        return state.base_url

    def route(method: str, pattern: str, endpoint: str, operation: str, action: str, kind: str, create: bool = False):
        cost = _create_cost if create else _other_cost
        return vault_route(
            router, state, kv, method, pattern, endpoint, operation=operation, action=action, kind=kind, cost=cost
        )

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

    def find_version(entry: SecretEntry, name: str, version: str) -> SecretVersion:
        v = entry.versions[-1] if not version else next((x for x in entry.versions if x.version == version), None)
        if v is None:
            raise _error(
                404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found in this key vault."
            )
        return v

    def attrs(v: SecretVersion) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": kv.config.recovery_level(),
            "recoverableDays": kv.config.retention_days,
        }
        if v.nbf is not None:
            out["nbf"] = v.nbf
        if v.exp is not None:
            out["exp"] = v.exp
        return out

    def secret_id(entry: SecretEntry, v: SecretVersion) -> str:
        return f"{vault()}/secrets/{entry.name}/{v.version}"

    def bundle(entry: SecretEntry, v: SecretVersion, *, value: bool = True, item: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": secret_id(entry, v), "attributes": attrs(v)}
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

    def tags_of(data: dict[str, Any]) -> dict[str, str] | None:
        tags = data.get("tags")
        if tags is None:
            return None
        if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
            raise _error(400, "BadParameter", f"Tags must be an object with at most {MAX_TAGS} entries.")
        return {str(k): str(v) for k, v in tags.items()}

    @route("PUT", "/secrets/{name}", "kv.setSecret", "SecretSet", "secrets/setSecret/action", "write", create=True)
    def set_secret(req: Request, call: Any, name: str) -> Response:
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
            kv.expire_deleted(now)
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
            call.id = secret_id(entry, version)
            return json_response(200, bundle(entry, version))

    @route(
        "GET",
        "/secrets/{name}/versions",
        "kv.listVersions",
        "SecretListVersions",
        "secrets/readMetadata/action",
        "read",
    )
    def list_versions(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = live(name)
            items = [bundle(entry, v, value=False) for v in entry.versions]
        call.id = f"{vault()}/secrets/{entry.name}"
        return page(vault(), items, req, f"/secrets/{entry.name}/versions")

    def get_version(req: Request, call: Any, name: str, version: str = "") -> Response:
        with kv.lock:
            entry = live(name)
            v = find_version(entry, name, version)
            call.id = secret_id(entry, v)
            call.extra["latest"] = v is entry.versions[-1]
            if not v.enabled:
                raise _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
            return json_response(200, bundle(entry, v))

    for pattern in ("/secrets/{name}", "/secrets/{name}/{version}"):
        route("GET", pattern, "kv.getSecret", "SecretGet", "secrets/getSecret/action", "read")(get_version)

    def update(req: Request, call: Any, name: str, version: str = "") -> Response:
        data = body(req)
        tags = tags_of(data)
        with kv.lock:
            entry = live(name)
            v = find_version(entry, name, version)
            call.id = secret_id(entry, v)
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

    for pattern in ("/secrets/{name}", "/secrets/{name}/{version}"):
        route("PATCH", pattern, "kv.updateSecret", "SecretUpdate", "secrets/update/action", "write")(update)

    @route("DELETE", "/secrets/{name}", "kv.deleteSecret", "SecretDelete", "secrets/delete", "write")
    def delete_secret(req: Request, call: Any, name: str) -> Response:
        now = int(state.clock.now())
        with kv.lock:
            entry = live(name)
            del kv.secrets[name.lower()]
            entry.deleted_date = now
            entry.scheduled_purge = now + kv.config.retention_days * 86400
            kv.deleted[name.lower()] = entry
            call.id = f"{vault()}/secrets/{entry.name}"
            return json_response(200, deleted_bundle(entry, value=False))

    @route("GET", "/secrets", "kv.listSecrets", "SecretList", "secrets/readMetadata/action", "read")
    def list_secrets(req: Request, call: Any) -> Response:
        with kv.lock:
            items = [bundle(e, e.versions[-1], value=False, item=True) for _, e in sorted(kv.secrets.items())]
        return page(vault(), items, req, "/secrets")

    def deleted_entry(name: str) -> SecretEntry:
        kv.expire_deleted(state.clock.now())
        entry = kv.deleted.get(name.lower())
        if entry is None:
            raise _error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return entry

    @route(
        "GET", "/deletedsecrets", "kv.listDeletedSecrets", "SecretListDeleted", "secrets/readMetadata/action", "read"
    )
    def list_deleted(req: Request, call: Any) -> Response:
        with kv.lock:
            kv.expire_deleted(state.clock.now())
            items = [deleted_bundle(e, value=False) for _, e in sorted(kv.deleted.items())]
        return page(vault(), items, req, "/deletedsecrets")

    @route(
        "GET",
        "/deletedsecrets/{name}",
        "kv.getDeletedSecret",
        "SecretGetDeleted",
        "secrets/readMetadata/action",
        "read",
    )
    def get_deleted(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = deleted_entry(name)
            call.id = f"{vault()}/deletedsecrets/{entry.name}"
            return json_response(200, deleted_bundle(entry, value=False))

    @route("DELETE", "/deletedsecrets/{name}", "kv.purgeDeletedSecret", "SecretPurge", "secrets/purge/action", "write")
    def purge(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = deleted_entry(name)
            call.id = f"{vault()}/deletedsecrets/{entry.name}"
            if kv.config.purge_protection:
                raise purge_refused()
            del kv.deleted[name.lower()]
        return Response(204)

    def purge_refused() -> Exception:
        host = vault().split("://", 1)[-1]
        return _error(
            403,
            "Forbidden",
            'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault '
            f"service will automatically purge it after the retention period has passed.\r\nVault: {host};"
            "location=emulator",
        )

    @route(
        "POST",
        "/deletedsecrets/{name}/recover",
        "kv.recoverDeletedSecret",
        "SecretRecover",
        "secrets/recover/action",
        "write",
    )
    def recover(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = deleted_entry(name)
            del kv.deleted[name.lower()]
            entry.deleted_date = entry.scheduled_purge = None
            kv.secrets[name.lower()] = entry
            call.id = secret_id(entry, entry.versions[-1])
            return json_response(200, bundle(entry, entry.versions[-1], value=False))

    keyvault_keys.register(router, state, kv, purge_refused)
    keyvault_admin.register(router, state, kv)
