"""The benchmark stack: Azurite + the in-process emulator + Mailbridge configured for fresh tenants.

It reuses the test suite's helpers (``tests.fixtures``) for the app wiring and the queue path driven by
devhost's QueueListener, so the benchmarks measure exactly what the end-to-end tests exercise.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.request_count import start_counting, storage_hosts
from emulator.client import EmulatorAdmin
from shared.services import reset_services
from stack.azurite import Azurite
from stack.local import start_emulator_process, stop_pid
from stack.seed import ensure_token_key
from tests.fixtures.app import FUNCTION_KEY, PUBLIC_BASE_URL, RETURN_ORIGIN, Mailbridge
from tests.fixtures.emulator import DEFAULT_REDIRECT, EmuTenant
from tests.fixtures.sender import POISON_FUNCTION, SendKit, function_spec


@dataclass
class EmulatorProcess:
    """The emulator as its own process (``python -m emulator``), as Entra, Graph and Key Vault are remote
    services: the bench process's CPU time is then the app's (plus the harness's), not the emulator's."""

    base_url: str
    ca_path: Path
    pid: int

    @classmethod
    def start(cls, state_dir: Path) -> EmulatorProcess:
        proc, info = start_emulator_process(state_dir, state_dir.parent / "emulator.log")
        return cls(info["base_url"], Path(info["ca_file"]), proc.pid)

    def stop(self) -> None:
        stop_pid(self.pid)


def app_functions() -> dict[str, Any]:
    """function_app's functions by name (``get_functions()`` may be called only once per app)."""
    from function_app import app

    return {fn.get_function_name(): fn for fn in app.get_functions()}


@dataclass
class BenchStack:
    """Started services plus an operator tenant owning the Key Vault and the Mailbridge app registrations."""

    root: Path
    azurite: Azurite | None = None
    emulator: EmulatorProcess | None = None
    admin: EmulatorAdmin | None = None
    operator_tid: str = ""
    functions: dict[str, Any] = field(default_factory=dict)
    _saved_env: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def start(cls, root: Path | None = None) -> BenchStack:
        root = Path(root or tempfile.mkdtemp(prefix="mailbridge-bench-"))
        stack = cls(root)
        stack.azurite = Azurite(root / "azurite").start(timeout=60)
        stack.emulator = EmulatorProcess.start(root / "emulator")
        stack.admin = EmulatorAdmin(stack.emulator.base_url, stack.emulator.ca_path)
        tenant = stack.admin.create_tenant("user", "work", domain=f"operator{uuid.uuid4().hex[:6]}.example")
        stack.operator_tid = tenant["tid"]
        stack.admin.keyvault_config(tenant_id=tenant["tid"])
        stack.functions = app_functions()
        return stack

    def stop(self) -> None:
        reset_services()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.emulator is not None:
            self.emulator.stop()
        if self.azurite is not None:
            self.azurite.stop()

    def tenant(self, users: tuple[str, ...]) -> EmuTenant:
        """A fresh customer tenant with ``users`` and its own app registration (used by the naive baseline)."""
        assert self.emulator is not None and self.admin is not None
        suffix = uuid.uuid4().hex[:10]
        tenant = self.admin.create_tenant("user", "work", domain=f"t{suffix}.example")
        app = self.admin.register_app(
            home_tid=tenant["tid"],
            display_name=f"Naive {suffix}",
            redirect_uris=[DEFAULT_REDIRECT],
            sign_in_audience="AzureADMultipleOrgs",
            secrets=[{"value": f"secret-{suffix}"}],
        )
        kit = EmuTenant(self.emulator, self.admin, tenant, app, app["secrets"][0]["value"], DEFAULT_REDIRECT)
        for name in users:
            kit.add_user(name)
        return kit

    def env_for(self, **settings: str) -> dict[str, str]:
        """App settings for a fresh Mailbridge registration (multi-tenant, in the operator tenant)."""
        assert self.emulator is not None and self.admin is not None and self.azurite is not None
        suffix = uuid.uuid4().hex[:8]
        app = self.admin.register_app(
            home_tid=self.operator_tid,
            display_name=f"Mailbridge {suffix}",
            redirect_uris=[f"{PUBLIC_BASE_URL}/api/connect/callback", f"{PUBLIC_BASE_URL}/api/admin-consent/callback"],
            sign_in_audience="AzureADMultipleOrgs",
            secrets=[{"value": f"mb-secret-{suffix}"}],
        )
        ensure_token_key(self.admin, self.operator_tid, app["client_id"], app["secrets"][0]["value"])
        return {
            "ENTRA_CLIENT_ID": app["client_id"],
            "ENTRA_CLIENT_SECRET": app["secrets"][0]["value"],
            "ENTRA_CLIENT_CREDENTIAL": "secret",
            "ENTRA_TENANT": "organizations",
            "ENTRA_AUTHORITY_HOST": self.emulator.base_url,
            "GRAPH_ENDPOINT": self.emulator.base_url,
            "KEY_VAULT_URL": self.emulator.base_url,
            "KEY_VAULT_AUTH": "app",
            "MAILBRIDGE_CA_BUNDLE": str(self.emulator.ca_path),
            "AzureWebJobsStorage": self.azurite.connection_string,
            "TABLE_PREFIX": f"t{suffix}",
            "OUTBOUND_QUEUE": f"outbound-{suffix}",
            "EVENTS_QUEUE": f"events-{suffix}",
            "WEBHOOK_QUEUE": f"webhooks-{suffix}",
            "ATTACHMENTS_CONTAINER": f"attachments-{suffix}",
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "ALLOWED_RETURN_ORIGINS": RETURN_ORIGIN,
            "TICKET_SIGNING_KEY": "bench-ticket-key-" + "k" * 32,
            "DEVHOST_FUNCTION_KEYS": FUNCTION_KEY,
            **settings,
        }

    def send_kit(self, users: tuple[str, ...], **settings: str) -> SendKit:
        """Mailbridge for a fresh tenant with ``users``, configured in this process (like the ``send_kit`` fixture)."""
        assert self.admin is not None
        env = self.env_for(**settings)
        kit = self.tenant(users)
        for key, value in env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        reset_services()
        specs = (function_spec(self.functions), function_spec(self.functions, POISON_FUNCTION))
        return SendKit(Mailbridge(self.functions, kit, self.admin, env), *specs)


class StorageRequests:
    """Counts azure-core requests to the Storage account while active (``with``), split into the function's
    (made while devhost runs the user's function: devhost.functions.in_function) and the host's (receive, delete;
    in Azure the Functions host makes those outside Python). Producers' enqueues in the bench's own thread
    count as neither."""

    def __init__(self, connection_string: str) -> None:
        self.hosts = storage_hosts(connection_string)
        self.seen: Counter[str] = Counter()
        self._stop = None
        self._in_function = None

    @property
    def function(self) -> int:
        return self.seen["function"]

    @property
    def host(self) -> int:
        return self.seen["host"]

    @property
    def function_by_target(self) -> Counter[str]:
        """``<method> <table or queue>`` of the function's requests."""
        return Counter({k[len("function ") :]: n for k, n in self.seen.items() if k.startswith("function ")})

    def _keys(self, request):
        parts = urlsplit(request.url)
        if parts.netloc not in self.hosts:
            return
        if getattr(self._in_function, "active", False):
            target = parts.path.strip("/").split("/")[-1].split("(")[0]
            yield from ("function", f"function {request.method} {target}")
        elif threading.current_thread().name.startswith(("q-", "devhost-queue-")):
            yield "host"

    def __enter__(self) -> StorageRequests:
        from azure.core.pipeline.transport import RequestsTransport

        from devhost.functions import in_function

        self._in_function = in_function  # imported once, not on every counted request
        self.seen, self._stop = start_counting(RequestsTransport, self._keys)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._stop()
