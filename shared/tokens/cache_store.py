"""Sealed MSAL token caches (issue 26): one Table row per connection, erased by deleting that row.

Each cache is sealed with AES-256-GCM under a data key of its own; the data key is wrapped by the vault's RSA key
(``TokenKey``, RSA-OAEP-256) and the wrapped key lives in the same row as the sealed cache, table
``tokencaches``: PartitionKey = the cache's name (``mb-<connection id>-g<generation>``, or ``mb-p<hash>`` for a
pending grant), RowKey = ``cache``. So:

- **No refresh token is readable without Key Vault**: the row is ciphertext; opening it takes an ``unwrapkey`` on
  the vault, which only the app's identity may call (Key Vault Crypto Service Encryption User on the key) and which
  the vault's audit log records.
- **Erasure is real**: a Table delete is a delete (no soft delete, no versions), and the row holds the only copy
  of the wrapped data key, so what any copy of the sealed cache held is gone with it, purge protection on the
  vault notwithstanding (crypto-shredding).
- **At most one readable refresh token per connection**: a write replaces the row (no versions).
- **No Key Vault write per refresh**: a rotated cache is sealed again with the same data key (fresh nonce) and
  the row replaced; Key Vault is read once per instance per connection (the unwrap; the data key is then cached).

Upgrade path: a name with no row is looked up among the legacy plain secrets (``TokenCacheVault``); one found is
sealed into a row (insert-if-absent, so an older copy never overwrites a newer one) and then soft-deleted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.base.errors import TemporarilyUnavailable
from shared.base.settings import TOKEN_CACHES_TABLE
from shared.base.storage import StorageClients
from shared.tokens.secrets import MAX_SECRET_BYTES, SecretTooLarge, TokenCacheVault, TokenKey, secret_name

logger = logging.getLogger(__name__)

CACHE_ROW = "cache"
FORMAT = 1


class TokenCacheStore:
    """Reads, writes and erases sealed token caches by name (the interface the connect flow and TokenService use)."""

    def __init__(self, storage: StorageClients, key: TokenKey, legacy: TokenCacheVault, max_keys: int = 10_000) -> None:
        self.storage = storage
        self.key = key
        self.legacy = legacy
        self.max_keys = max_keys
        # name -> (kid, wrapped key, data key): this instance's unwrapped data keys, most recently used last.
        self._keys: OrderedDict[str, tuple[str, bytes, bytes]] = OrderedDict()
        self._keys_lock = threading.Lock()
        self.upgraded = 0  # legacy secrets sealed into the store by this instance

    @property
    def table(self):
        return self.storage.table(TOKEN_CACHES_TABLE)

    # --- data keys ---------------------------------------------------------------------------------------
    def _cached(self, name: str) -> tuple[str, bytes, bytes] | None:
        """(kid, wrapped key, data key) this instance holds for ``name``."""
        with self._keys_lock:
            hit = self._keys.get(name)
            if hit is not None:
                self._keys.move_to_end(name)
            return hit

    def _keep_key(self, name: str, kid: str, wrapped: bytes, data_key: bytes) -> None:
        with self._keys_lock:
            self._keys[name] = (kid, wrapped, data_key)
            self._keys.move_to_end(name)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)

    def forget_keys(self) -> None:
        """Drop every data key this instance unwrapped (and the vault clients): what a new instance starts with."""
        with self._keys_lock:
            self._keys.clear()
        self.key.reset_clients()
        self.legacy.reset_clients()

    def _forget_key(self, name: str) -> None:
        with self._keys_lock:
            self._keys.pop(name, None)

    # --- rows -----------------------------------------------------------------------------------------
    def _get_row(self, name: str) -> dict | None:
        try:
            return self.table.get_entity(name, CACHE_ROW)
        except ResourceNotFoundError:
            return None

    def _open(self, name: str, row: dict) -> str:
        wrapped = bytes(row["wrapped"])
        held = self._cached(name)
        if held is not None and held[1] == wrapped:
            data_key = held[2]
        else:
            data_key = self.key.unwrap(row["kid"], wrapped)
            self._keep_key(name, row["kid"], wrapped, data_key)
        try:
            plain = AESGCM(data_key).decrypt(bytes(row["nonce"]), bytes(row["sealed"]), name.encode())
        except InvalidTag:
            # Not ours or tampered with (a row copied under another name fails here: the name is the AAD).
            raise TemporarilyUnavailable(detail=f"token cache {name} does not open") from None
        return plain.decode()

    def _sealed_row(self, name: str, value: str, connection: str, *, new_key: bool) -> dict:
        """The row holding ``value`` sealed with the data key this instance holds for ``name`` (so the other
        instances' cached keys stay good), or with a new one. A row carries its own wrapped key: whichever data key
        sealed it, the row alone opens it, and deleting the row erases it."""
        raw = value.encode()
        if len(raw) > MAX_SECRET_BYTES:
            raise SecretTooLarge(detail=f"{len(raw)} bytes")
        held = None if new_key else self._cached(name)
        if held is None:
            data_key = AESGCM.generate_key(bit_length=256)
            kid, wrapped = self.key.wrap(data_key)
            self._keep_key(name, kid, wrapped, data_key)
        else:
            kid, wrapped, data_key = held
        nonce = os.urandom(12)
        return {
            "PartitionKey": name,
            "RowKey": CACHE_ROW,
            "format": FORMAT,
            "connection": connection,
            "kid": kid,
            "wrapped": wrapped,
            "nonce": nonce,
            "sealed": AESGCM(data_key).encrypt(nonce, raw, name.encode()),
        }

    # --- the interface ---------------------------------------------------------------------------------
    def read(self, name: str) -> str | None:
        """The cache stored under ``name``, or None. A legacy plain secret of that name is upgraded on the way."""
        row = self._get_row(name)
        if row is not None:
            return self._open(name, row)
        return self._upgrade(name)

    def write(self, name: str, value: str, *, tags: dict[str, str] | None = None) -> None:
        """Replace the cache stored under ``name`` (the previous one is gone: Table storage keeps no versions)."""
        connection = (tags or {}).get("connection", "")
        self.table.upsert_entity(self._sealed_row(name, value, connection, new_key=False), mode="replace")

    def write_new_name(self, connection_id: str, generation: int, value: str) -> tuple[str, int]:
        """Store ``value`` as generation ``generation`` of the connection, under a new data key; (name, generation).
        Used by connect (first write, reconnect) and by the rotation every ``max_secret_versions`` writes."""
        name = secret_name(connection_id, generation)
        self._forget_key(name)
        row = self._sealed_row(name, value, connection_id, new_key=True)
        self.table.upsert_entity(row, mode="replace")
        return name, generation

    def delete(self, name: str) -> bool:
        """Erase the cache: delete its row, the only copy of its wrapped data key, and the legacy secret of the same
        name if one is left (soft delete: see docs/security.md). False when there was nothing to erase."""
        self._forget_key(name)
        existed = self._get_row(name) is not None
        if existed:
            try:
                self.table.delete_entity(name, CACHE_ROW)
            except ResourceNotFoundError:
                pass
        legacy = self.legacy.delete(name)
        return existed or legacy

    # --- upgrade path -------------------------------------------------------------------------------------
    def _upgrade(self, name: str) -> str | None:
        """Seal a legacy plain secret into the store and soft-delete it; its value, or None when there is none."""
        value = self.legacy.read(name)
        if value is None:
            return None
        connection = name[3:].rsplit("-g", 1)[0] if name.startswith("mb-c") else ""
        try:
            self.table.create_entity(self._sealed_row(name, value, connection, new_key=True))
        except ResourceExistsError:
            # Another instance upgraded (or a refresh stored a newer cache) first: theirs stands.
            row = self._get_row(name)
            return self._open(name, row) if row is not None else value
        self.legacy.delete(name)
        self.upgraded += 1
        logger.info("Token cache %s moved from its Key Vault secret to the sealed store", name)
        return value
