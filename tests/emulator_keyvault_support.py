"""Helpers for the emulated Key Vault tests (keys, erasure, limits, audit): callers with their own app
identity and bearer token, and raw HTTPS calls to the vault.

``azure-keyvault-keys`` is not in the shared venv yet; the keys tests drive the REST API with ``requests`` and
a real azure-identity token, and run the SDK tests only where the package is installed.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential

from emulator.client import EmulatorAdmin
from emulator.tokens import KEYVAULT_RESOURCE

API = "7.6"


def b64url(data: bytes) -> str:
    """Unpadded base64url (Key Vault's encoding of key material and wrapped values)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode unpadded base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Caller:
    """An app registered in the vault's tenant, with a token from azure-identity over HTTPS."""

    base_url: str
    http: requests.Session
    client_id: str
    client_secret: str
    tenant_id: str
    credential: ClientSecretCredential
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def oid(self) -> str:
        """The token's ``oid`` (the app's service principal)."""
        return self.claims["oid"]

    def renew(self) -> None:
        """A new credential, so the next token is issued on the emulator clock (after ``advance_clock``)."""
        self.credential = ClientSecretCredential(
            self.tenant_id,
            self.client_id,
            self.client_secret,
            authority=self.base_url,
            disable_instance_discovery=True,
            connection_verify=self.http.verify,
        )

    def headers(self) -> dict[str, str]:
        """A bearer header with a current token."""
        return {"Authorization": f"Bearer {self.credential.get_token(f'{KEYVAULT_RESOURCE}/.default').token}"}

    def call(self, method: str, path: str, json: Any = None, **params: str) -> requests.Response:
        """One data-plane call (``api-version`` added)."""
        query = {"api-version": API, **params}
        return self.http.request(
            method, f"{self.base_url}{path}", params=query, json=json, headers=self.headers(), timeout=30
        )

    def ok(self, method: str, path: str, json: Any = None, **params: str) -> Any:
        """A call that must succeed; its JSON body (None for 204)."""
        resp = self.call(method, path, json, **params)
        assert resp.status_code in (200, 204), (resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def secret_client(self) -> Any:
        """A real azure-keyvault-secrets ``SecretClient`` acting as this caller."""
        from azure.keyvault.secrets import SecretClient

        return SecretClient(
            self.base_url, self.credential, verify_challenge_resource=False, connection_verify=self.http.verify
        )


@pytest.fixture
def vault_caller(
    emulator: Any, emulator_admin: EmulatorAdmin, emu_http: requests.Session
) -> Iterator[Callable[[], Caller]]:
    """Factory: a fresh app identity in the vault's tenant (``caller.oid`` is what role assignments name)."""

    def make() -> Caller:
        tenant_id = emulator_admin.keyvault_config()["tenant_id"]
        secret = f"kv-{uuid.uuid4().hex}"
        app = emulator_admin.register_app(home_tid=tenant_id, display_name="vault caller", secrets=[secret])
        credential = ClientSecretCredential(
            tenant_id,
            app["client_id"],
            secret,
            authority=emulator.base_url,
            disable_instance_discovery=True,
            connection_verify=str(emulator.ca_path),
        )
        caller = Caller(emulator.base_url, emu_http, app["client_id"], secret, tenant_id, credential)
        caller.claims = emulator_admin.decode_token(credential.get_token(f"{KEYVAULT_RESOURCE}/.default").token)
        return caller

    yield make
    # The Key Vault SDK keeps every vault's auth challenge in one process-wide cache (keyed by the vault URL):
    # a challenge this caller's SecretClient cached must not steer the app's own vault client in later tests.
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()


def everything_the_vault_gives_back(caller: Caller, secret: str) -> set[str]:
    """Every value of ``secret`` a caller with secrets roles can redeem: each live version, and after
    recovering a deleted secret each of its versions (recovering is part of the attack)."""
    values: set[str] = set()
    if caller.call("GET", f"/deletedsecrets/{secret}").status_code == 200:
        caller.ok("POST", f"/deletedsecrets/{secret}/recover")
    listing = caller.call("GET", f"/secrets/{secret}/versions")
    if listing.status_code != 200:
        return values
    for item in listing.json()["value"]:
        got = caller.call("GET", item["id"].split(caller.base_url, 1)[1])
        if got.status_code == 200:
            values.add(got.json()["value"])
    return values


def audit(admin: EmulatorAdmin, **filters: Any) -> list[dict[str, Any]]:
    """The vault's audit entries (filters: since, principal, operation, name)."""
    return admin.keyvault_audit(**filters)["value"]


def name(prefix: str = "k") -> str:
    """A unique object name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
