"""Emulated Key Vault keys: RSA / RSA-HSM keys, versions, soft delete, purge protection, wrapkey / unwrapkey.

REST shapes from the Key Vault keys reference (https://learn.microsoft.com/en-us/rest/api/keyvault/keys/):
``POST /keys/{name}/create`` (``kty``, ``key_size``, ``key_ops``, ``attributes``, ``tags``) → KeyBundle
``{"key": {kid, kty, key_ops, n, e}, "attributes": {...}, "tags"}``; ``GET /keys/{name}[/{version}]``,
``GET /keys/{name}/versions``, ``GET /keys``; ``PATCH /keys/{name}/{version}``; ``DELETE /keys/{name}`` →
DeletedKeyBundle (``recoveryId``, ``deletedDate``, ``scheduledPurgeDate``); ``GET /deletedkeys[/{name}]``,
``POST /deletedkeys/{name}/recover``, ``DELETE /deletedkeys/{name}`` (purge; refused under purge protection);
``POST /keys/{name}/{version}/wrapkey|unwrapkey`` with ``{"alg", "value"}`` (base64url) →
``{"kid", "value"}``. Algorithms: RSA-OAEP (SHA-1), RSA-OAEP-256, RSA1_5. A deleted key cannot be used:
its URL answers 404 ``KeyNotFound`` until it is recovered.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emulator.core import Request, Response, Router, json_response
from emulator.keyvault_common import KeyVaultStore, body, kv_error, page, vault_route
from emulator.keyvault_limits import Cost
from emulator.state import EmulatorState

NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
KEY_TYPES = ("RSA", "RSA-HSM")
KEY_SIZES = (2048, 3072, 4096)
ALL_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]


def _oaep(hash_cls: type[hashes.HashAlgorithm]) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hash_cls()), algorithm=hash_cls(), label=None)


PADDINGS: dict[str, Callable[[], padding.AsymmetricPadding]] = {
    "RSA-OAEP": lambda: _oaep(hashes.SHA1),
    "RSA-OAEP-256": lambda: _oaep(hashes.SHA256),
    "RSA1_5": padding.PKCS1v15,
}


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JSON Web Keys and Key Vault values are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding; ValueError when it is not base64url."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


@dataclass
class KeyVersion:
    """One version of a key (the private half never leaves the emulated vault)."""

    version: str
    private: rsa.RSAPrivateKey
    kty: str
    size: int
    key_ops: list[str]
    created: int
    updated: int
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] | None = None


@dataclass
class KeyEntry:
    """A key: its display name and versions (oldest first)."""

    name: str
    versions: list[KeyVersion] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge: int | None = None


def register(router: Router, state: EmulatorState, kv: KeyVaultStore, purge_refused: Callable[[], Exception]) -> None:
    """Register the keys routes on the vault ``kv``."""

    def vault() -> str:
        return state.base_url

    def key_cost(create: bool) -> Callable[[KeyVaultStore, dict[str, str], Request], Cost]:
        def cost(store: KeyVaultStore, params: dict[str, str], req: Request) -> Cost:
            kty, size = "RSA", 2048
            entry = store.keys.get(params.get("name", "").lower())
            if create:
                try:
                    data = req.json()
                    kty, size = str(data.get("kty", kty)), int(data.get("key_size") or size)
                except (ValueError, TypeError, AttributeError):
                    pass
            elif entry is not None and entry.versions:
                kty, size = entry.versions[-1].kty, entry.versions[-1].size
            return Cost.key(hsm=kty.endswith("-HSM"), size=size, create=create)

        return cost

    def list_cost(store: KeyVaultStore, params: dict[str, str], req: Request) -> Cost:
        return Cost.vault_other()

    def route(
        method: str, patterns: tuple[str, ...], endpoint: str, operation: str, action: str, kind: str, **kw: Any
    ) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        cost = kw.get("cost") or key_cost(kw.get("create", False))

        def decorator(handler: Callable[..., Response]) -> Callable[..., Response]:
            for pattern in patterns:
                vault_route(
                    router,
                    state,
                    kv,
                    method,
                    pattern,
                    endpoint,
                    operation=operation,
                    action=action,
                    kind=kind,
                    cost=cost,
                )(handler)
            return handler

        return decorator

    def kid(entry: KeyEntry, v: KeyVersion) -> str:
        return f"{vault()}/keys/{entry.name}/{v.version}"

    def attrs(v: KeyVersion) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": kv.config.recovery_level(),
            "recoverableDays": kv.config.retention_days,
            "exportable": False,
        }
        if v.nbf is not None:
            out["nbf"] = v.nbf
        if v.exp is not None:
            out["exp"] = v.exp
        return out

    def bundle(entry: KeyEntry, v: KeyVersion) -> dict[str, Any]:
        numbers = v.private.public_key().public_numbers()
        jwk = {
            "kid": kid(entry, v),
            "kty": v.kty,
            "key_ops": list(v.key_ops),
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }
        out: dict[str, Any] = {"key": jwk, "attributes": attrs(v)}
        if v.tags is not None:
            out["tags"] = v.tags
        return out

    def item(entry: KeyEntry, v: KeyVersion, versioned: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kid": kid(entry, v) if versioned else f"{vault()}/keys/{entry.name}",
            "attributes": attrs(v),
        }
        if v.tags is not None:
            out["tags"] = v.tags
        return out

    def deleted_bundle(entry: KeyEntry) -> dict[str, Any]:
        out = bundle(entry, entry.versions[-1])
        out.update(
            recoveryId=f"{vault()}/deletedkeys/{entry.name}",
            deletedDate=entry.deleted_date,
            scheduledPurgeDate=entry.scheduled_purge,
        )
        return out

    def not_found(name: str, version: str = "") -> Exception:
        ident = f"{name}/{version}" if version else name
        return kv_error(
            404,
            "KeyNotFound",
            f"A key with (name/id) {ident} was not found in this key vault. If you recently deleted this key you "
            "may be able to recover it using the correct recovery command. For help resolving this issue, please "
            "see https://go.microsoft.com/fwlink/?linkid=2125182",
        )

    def live(name: str, version: str = "") -> tuple[KeyEntry, KeyVersion]:
        entry = kv.keys.get(name.lower())
        if entry is None:
            raise not_found(name)
        v = entry.versions[-1] if not version else next((x for x in entry.versions if x.version == version), None)
        if v is None:
            raise not_found(name, version)
        return entry, v

    def deleted_entry(name: str) -> KeyEntry:
        kv.expire_deleted(state.clock.now())
        entry = kv.deleted_keys.get(name.lower())
        if entry is None:
            raise kv_error(404, "KeyNotFound", f"Deleted Key not found: {name}")
        return entry

    def apply_attributes(v: KeyVersion, data: dict[str, Any]) -> None:
        attributes = data.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise kv_error(400, "BadParameter", "Property 'attributes' must be an object.")
        for key in ("enabled", "nbf", "exp"):
            if key in attributes:
                setattr(v, key, attributes[key])
        tags = data.get("tags")
        if tags is not None:
            if not isinstance(tags, dict) or len(tags) > 15:
                raise kv_error(400, "BadParameter", "Tags must be an object with at most 15 entries.")
            v.tags = {str(k): str(t) for k, t in tags.items()}
        ops = data.get("key_ops")
        if ops is not None:
            if not isinstance(ops, list) or not set(ops) <= set(ALL_OPS):
                raise kv_error(400, "BadParameter", f"key_ops must be a list drawn from {ALL_OPS}.")
            v.key_ops = list(ops)

    @route("POST", ("/keys/{name}/create",), "kv.createKey", "KeyCreate", "keys/create/action", "write", create=True)
    def create_key(req: Request, call: Any, name: str) -> Response:
        if not NAME_RE.match(name):
            raise kv_error(400, "BadParameter", f"The request URI contains an invalid name: {name}")
        data = body(req)
        kty, size = data.get("kty"), data.get("key_size") or 2048
        if kty not in KEY_TYPES:
            raise kv_error(400, "BadParameter", f"The emulator models kty {KEY_TYPES}; got {kty!r}.")
        if size not in KEY_SIZES:
            raise kv_error(400, "BadParameter", f"Invalid key size {size}: RSA keys are 2048, 3072 or 4096 bits.")
        now = int(state.clock.now())
        version = KeyVersion(
            uuid.uuid4().hex, rsa.generate_private_key(65537, size), kty, size, list(ALL_OPS), now, now
        )
        apply_attributes(version, data)
        with kv.lock:
            kv.expire_deleted(now)
            if name.lower() in kv.deleted_keys:
                raise kv_error(
                    409,
                    "Conflict",
                    f"Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in "
                    "this state, the key can only be recovered or purged.",
                    "ObjectIsDeletedButRecoverable",
                )
            entry = kv.keys.setdefault(name.lower(), KeyEntry(name))
            entry.versions.append(version)
            call.id = kid(entry, version)
            return json_response(200, bundle(entry, version))

    @route("GET", ("/keys/{name}/versions",), "kv.listKeyVersions", "KeyListVersions", "keys/read", "read")
    def list_versions(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry, _ = live(name)
            items = [item(entry, v, versioned=True) for v in entry.versions]
        call.id = f"{vault()}/keys/{entry.name}"
        return page(vault(), items, req, f"/keys/{entry.name}/versions")

    @route("GET", ("/keys/{name}", "/keys/{name}/{version}"), "kv.getKey", "KeyGet", "keys/read", "read")
    def get_key(req: Request, call: Any, name: str, version: str = "") -> Response:
        with kv.lock:
            entry, v = live(name, version)
            call.id = kid(entry, v)
            return json_response(200, bundle(entry, v))

    @route(
        "PATCH", ("/keys/{name}", "/keys/{name}/{version}"), "kv.updateKey", "KeyUpdate", "keys/update/action", "write"
    )
    def update_key(req: Request, call: Any, name: str, version: str = "") -> Response:
        data = body(req)
        with kv.lock:
            entry, v = live(name, version)
            apply_attributes(v, data)
            v.updated = int(state.clock.now())
            call.id = kid(entry, v)
            return json_response(200, bundle(entry, v))

    @route("GET", ("/keys",), "kv.listKeys", "KeyList", "keys/read", "read", cost=list_cost)
    def list_keys(req: Request, call: Any) -> Response:
        with kv.lock:
            items = [item(e, e.versions[-1], versioned=False) for _, e in sorted(kv.keys.items())]
        return page(vault(), items, req, "/keys")

    @route("DELETE", ("/keys/{name}",), "kv.deleteKey", "KeyDelete", "keys/delete", "write")
    def delete_key(req: Request, call: Any, name: str) -> Response:
        now = int(state.clock.now())
        with kv.lock:
            entry, _ = live(name)
            del kv.keys[name.lower()]
            entry.deleted_date, entry.scheduled_purge = now, now + kv.config.retention_days * 86400
            kv.deleted_keys[name.lower()] = entry
            call.id = f"{vault()}/keys/{entry.name}"
            return json_response(200, deleted_bundle(entry))

    @route("GET", ("/deletedkeys",), "kv.listDeletedKeys", "KeyListDeleted", "keys/read", "read", cost=list_cost)
    def list_deleted(req: Request, call: Any) -> Response:
        with kv.lock:
            kv.expire_deleted(state.clock.now())
            items = []
            for _, e in sorted(kv.deleted_keys.items()):
                entry_item = item(e, e.versions[-1], versioned=False)
                entry_item.update(
                    recoveryId=f"{vault()}/deletedkeys/{e.name}",
                    deletedDate=e.deleted_date,
                    scheduledPurgeDate=e.scheduled_purge,
                )
                items.append(entry_item)
        return page(vault(), items, req, "/deletedkeys")

    @route("GET", ("/deletedkeys/{name}",), "kv.getDeletedKey", "KeyGetDeleted", "keys/read", "read")
    def get_deleted(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = deleted_entry(name)
            call.id = f"{vault()}/deletedkeys/{entry.name}"
            return json_response(200, deleted_bundle(entry))

    @route("DELETE", ("/deletedkeys/{name}",), "kv.purgeDeletedKey", "KeyPurge", "keys/purge/action", "write")
    def purge(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = deleted_entry(name)
            call.id = f"{vault()}/deletedkeys/{entry.name}"
            if kv.config.purge_protection:
                raise purge_refused()
            del kv.deleted_keys[name.lower()]
        return Response(204)

    @route(
        "POST", ("/deletedkeys/{name}/recover",), "kv.recoverDeletedKey", "KeyRecover", "keys/recover/action", "write"
    )
    def recover(req: Request, call: Any, name: str) -> Response:
        with kv.lock:
            entry = deleted_entry(name)
            del kv.deleted_keys[name.lower()]
            entry.deleted_date = entry.scheduled_purge = None
            kv.keys[name.lower()] = entry
            call.id = kid(entry, entry.versions[-1])
            return json_response(200, bundle(entry, entry.versions[-1]))

    def crypto(req: Request, call: Any, name: str, version: str, op: str) -> Response:
        data = body(req)
        alg, value = data.get("alg"), data.get("value")
        try:
            raw = unb64url(value)
        except ValueError:
            raise kv_error(
                400, "BadParameter", "Content of 'value' is not base64url.\r\nProperty 'value' is required.\r\n"
            ) from None
        if alg not in PADDINGS:
            raise kv_error(400, "BadParameter", f"Invalid algorithm {alg!r}: expected one of {sorted(PADDINGS)}.")
        with kv.lock:
            entry, v = live(name, version)
            call.id = kid(entry, v)
            call.extra["alg"] = alg
            if not v.enabled:
                raise kv_error(403, "Forbidden", f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
            if op not in v.key_ops:
                raise kv_error(403, "Forbidden", f"Operation {op} is not allowed on this key.")
            private = v.private
        try:
            out = (
                private.public_key().encrypt(raw, PADDINGS[alg]())
                if op == "wrapKey"
                else private.decrypt(raw, PADDINGS[alg]())
            )
        except ValueError:
            message = "Error occurred while decoding OAEP padding." if op == "unwrapKey" else "Value too long to wrap."
            raise kv_error(400, "BadParameter", message) from None
        return json_response(200, {"kid": kid(entry, v), "value": b64url(out)})

    # The SDK sends an empty version as ``/keys/{name}//wrapkey``; both forms address the latest version.
    wrap_paths = ("/keys/{name}/{version}/wrapkey", "/keys/{name}/wrapkey", "/keys/{name}//wrapkey")
    unwrap_paths = tuple(p.replace("wrapkey", "unwrapkey") for p in wrap_paths)

    @route("POST", wrap_paths, "kv.wrapKey", "KeyWrap", "keys/wrap/action", "wrap")
    def wrap(req: Request, call: Any, name: str, version: str = "") -> Response:
        return crypto(req, call, name, version, "wrapKey")

    @route("POST", unwrap_paths, "kv.unwrapKey", "KeyUnwrap", "keys/unwrap/action", "unwrap")
    def unwrap(req: Request, call: Any, name: str, version: str = "") -> Response:
        return crypto(req, call, name, version, "unwrapKey")
