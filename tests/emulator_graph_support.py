"""Helpers for the emulated-Graph tests: a tenant with users and a shared mailbox, strict HTTPS
calls with bearer tokens, and a fixture that restores Graph limits after a test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from emulator.tokens import GRAPH_RESOURCE, issue_access_token

PROP_ID = "String {5f2c1a9e-3b7d-4c1e-9a55-0d4c2b7e8f10} Name MailbridgeId"


def rcpt(address: str, name: str | None = None) -> dict[str, Any]:
    """A Graph recipient."""
    email: dict[str, Any] = {"address": address}
    if name:
        email["name"] = name
    return {"emailAddress": email}


@dataclass
class GraphKit:
    """A fresh tenant (alice, bob, carol, and a shared mailbox `team`) plus call helpers."""

    tenant: Any  # tests.fixtures.emulator.EmuTenant
    http: requests.Session

    @property
    def base(self) -> str:
        """Emulator base URL."""
        return self.tenant.emulator.base_url

    def addr(self, name: str) -> str:
        """Primary address of user `name`."""
        return self.tenant.users[name]["mail"]

    def oid(self, name: str) -> str:
        """Object id of user `name`."""
        return self.tenant.users[name]["oid"]

    def token(self, name: str, *scopes: str, lifetime_s: int = 3600, audience: str = GRAPH_RESOURCE) -> str:
        """Delegated Graph token for `name` with `scopes` (default Mail.Send)."""
        return self.tenant.token(name, scopes or ("Mail.Send",), audience=audience, lifetime_s=lifetime_s)

    def app_token(self, *roles: str) -> str:
        """App-only Graph token (application permissions `roles`)."""
        return issue_access_token(
            self.tenant.emulator.state,
            tid=self.tenant.tid,
            oid=None,
            client_id=self.tenant.client_id,
            scopes=[],
            audience=GRAPH_RESOURCE,
            lifetime_s=3600,
            roles=list(roles),
        )

    def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> requests.Response:
        """Call `path` (relative to the base URL) with a bearer token."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("https://") else f"{self.base}{path}"
        return self.http.request(method, url, headers=headers, timeout=60, **kwargs)

    def send(
        self, token: str, message: dict[str, Any], *, user: str | None = None, save: bool | None = None, **kwargs: Any
    ) -> requests.Response:
        """POST sendMail for /me (or /users/{user})."""
        body: dict[str, Any] = {"message": message}
        if save is not None:
            body["saveToSentItems"] = save
        where = f"/v1.0/users/{user}" if user else "/v1.0/me"
        return self.call("POST", f"{where}/sendMail", token, json=body, **kwargs)

    def simple(self, subject: str = "hello", to: str = "rcpt@external.example", **extra: Any) -> dict[str, Any]:
        """A minimal valid message whose `x-mailbridge-id` header (the idempotency key the
        delivery log groups by) is the subject."""
        return {
            "subject": subject,
            "body": {"contentType": "text", "content": "hi"},
            "toRecipients": [rcpt(to)],
            "internetMessageHeaders": [{"name": "x-mailbridge-id", "value": subject}],
            **extra,
        }


@pytest.fixture
def graph_kit(emu_tenant: Callable[..., Any]) -> Iterator[GraphKit]:
    """A tenant with alice, bob, carol and the shared mailbox `team` (alice: Send As + Full Access,
    bob: Send on Behalf + Full Access, carol: nothing)."""
    kit = emu_tenant(users=("alice", "bob", "carol"))
    alice, bob = kit.users["alice"]["oid"], kit.users["bob"]["oid"]
    kit.add_user(
        "team",
        is_shared=True,
        display_name="Team Mailbox",
        send_as=[alice],
        send_on_behalf=[bob],
        full_access=[alice, bob],
    )
    http = kit.http()
    yield GraphKit(kit, http)
    http.close()


@pytest.fixture
def graph_limits(emulator: Any) -> Iterator[Any]:
    """The live `GraphLimits`; restored to Microsoft's defaults after the test."""
    limits = emulator.state.graph.limits
    yield limits
    limits.__init__()


def unique(prefix: str = "k") -> str:
    """A unique idempotency key."""
    return f"{prefix}-{uuid.uuid4().hex}"
