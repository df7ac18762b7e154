"""Demo data for the local stack: tenants, users and the Mailbridge app registration in a fresh emulator,
and the app settings (``.run/local.settings.json``) that point the app at them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.client import EmulatorAdmin

DEMO_PASSWORD = "password"  # noqa: S105 - the emulator's documented default; a local demo account only
CUSTOMER_DOMAIN = "contoso.example"
ADMIN_REQUIRED_DOMAIN = "fabrikam.example"
OPERATOR_DOMAIN = "mailbridge-operator.example"
# The local demo advertises the shared mailbox team@contoso.example: send-as is on here. Deployed apps keep
# the least-privilege default of local.settings.sample.json / infra (off).
# Shared mailboxes on (the advertised team@ mailbox); webhooks may target a receiver on this machine (http or a
# private address): local development only, never in Azure (docs/events.md).
LOCAL_DEMO_DEFAULTS = {"ENABLE_SHARED_MAILBOXES": "true", "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}
# KEY_VAULT_KEY_NAME's default; infra/core/security/keyvault.bicep creates it
TOKEN_KEY_NAME = "mailbridge-tokens"  # noqa: S105 - a key name, not a secret


@dataclass
class DemoSeed:
    """What was created in the emulator: who can sign in, and the app's credentials."""

    operator_tid: str
    customer_tid: str
    admin_required_tid: str
    client_id: str
    client_secret: str = field(repr=False)
    users: dict[str, str] = field(default_factory=dict)  # role -> address


def seed_demo(admin: EmulatorAdmin, app_base_url: str) -> DemoSeed:
    """Create the demo directory in a fresh emulator (its state is in memory, so fixed domains are safe).

    - operator tenant: home of the Mailbridge app registration and of the Key Vault;
    - contoso.example (users may consent): alice, bob, shared mailbox team@ (alice may Send As);
    - fabrikam.example (admin approval required): carol, and admin@ who can approve the app.
    """
    operator = admin.create_tenant("user", "work", domain=OPERATOR_DOMAIN, display_name="Mailbridge operator")
    admin.keyvault_config(tenant_id=operator["tid"])

    contoso = admin.create_tenant("user", "work", domain=CUSTOMER_DOMAIN, display_name="Contoso (demo)")
    alice = admin.create_user(contoso["tid"], f"alice@{CUSTOMER_DOMAIN}", display_name="Alice Example")
    admin.create_user(contoso["tid"], f"bob@{CUSTOMER_DOMAIN}", display_name="Bob Example")
    admin.create_user(
        contoso["tid"],
        f"team@{CUSTOMER_DOMAIN}",
        display_name="Contoso Team (shared)",
        is_shared=True,
        send_as=[alice["oid"]],
        full_access=[alice["oid"]],
    )

    fabrikam = admin.create_tenant(
        "admin_required", "work", domain=ADMIN_REQUIRED_DOMAIN, display_name="Fabrikam (admin approval)"
    )
    admin.create_user(fabrikam["tid"], f"carol@{ADMIN_REQUIRED_DOMAIN}", display_name="Carol Example")
    admin.create_user(fabrikam["tid"], f"admin@{ADMIN_REQUIRED_DOMAIN}", display_name="Fabrikam Admin", is_admin=True)

    secret = "local-" + secrets.token_urlsafe(24)
    app = admin.register_app(
        home_tid=operator["tid"],
        display_name="Mailbridge (local)",
        redirect_uris=[f"{app_base_url}/api/connect/callback", f"{app_base_url}/api/admin-consent/callback"],
        sign_in_audience="AzureADMultipleOrgs",
        secrets=[{"value": secret}],
    )
    ensure_token_key(admin, operator["tid"], app["client_id"], app["secrets"][0]["value"])
    return DemoSeed(
        operator_tid=operator["tid"],
        customer_tid=contoso["tid"],
        admin_required_tid=fabrikam["tid"],
        client_id=app["client_id"],
        client_secret=app["secrets"][0]["value"],
        users={
            "alice": f"alice@{CUSTOMER_DOMAIN}",
            "bob": f"bob@{CUSTOMER_DOMAIN}",
            "shared": f"team@{CUSTOMER_DOMAIN}",
            "carol": f"carol@{ADMIN_REQUIRED_DOMAIN}",
            "tenant_admin": f"admin@{ADMIN_REQUIRED_DOMAIN}",
        },
    )


def local_settings(
    sample: Path,
    *,
    seed: DemoSeed,
    emulator_base_url: str,
    ca_file: str,
    storage_connection_string: str,
    app_base_url: str,
    function_key: str,
    master_key: str,
    ticket_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``local.settings.sample.json`` with the real local values filled in, then the local stack's demo
    defaults (shared mailboxes on, so the advertised team@ mailbox works), then any sample setting given in
    ``environ`` (``ENABLE_SHARED_MAILBOXES=false make run``): the environment wins over every value the
    stack does not wire itself. ``_overridden`` lists the names taken from the environment."""
    doc = json.loads(sample.read_text())
    wired = {
        "AzureWebJobsStorage": storage_connection_string,
        "ENTRA_CLIENT_ID": seed.client_id,
        "ENTRA_CLIENT_CREDENTIAL": "secret",
        "ENTRA_CLIENT_SECRET": seed.client_secret,
        "ENTRA_TENANT": "organizations",
        "ENTRA_AUTHORITY_HOST": emulator_base_url,
        "GRAPH_ENDPOINT": emulator_base_url,
        "KEY_VAULT_URL": emulator_base_url,
        "KEY_VAULT_AUTH": "app",
        "MAILBRIDGE_CA_BUNDLE": ca_file,
        "PUBLIC_BASE_URL": app_base_url,
        "ALLOWED_RETURN_ORIGINS": app_base_url,
        "ENABLE_SAMPLE_UI": "true",
        "TICKET_SIGNING_KEY": ticket_key or secrets.token_urlsafe(48),
        "DEVHOST_FUNCTION_KEYS": function_key,
        "DEVHOST_MASTER_KEY": master_key,
    }
    doc["Values"].update(LOCAL_DEMO_DEFAULTS)
    overridden = sorted(k for k in doc["Values"] if k not in wired and environ is not None and k in environ)
    for key in overridden:
        doc["Values"][key] = environ[key]  # type: ignore[index]
    doc["Values"].update(wired)
    doc["_overridden"] = overridden
    doc.setdefault("Host", {})["LocalHttpPort"] = int(app_base_url.rsplit(":", 1)[1])
    return doc


def ensure_token_key(
    admin: EmulatorAdmin, tenant_id: str, client_id: str, client_secret: str, name: str = TOKEN_KEY_NAME
) -> str:
    """The emulated vault's RSA key that wraps the token caches' data keys (as Bicep creates it in Azure: RSA 2048,
    wrapKey/unwrapKey only), created by the operator's app unless it exists; its versioned id."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.identity import ClientSecretCredential
    from azure.keyvault.keys import KeyClient, KeyOperation

    credential = ClientSecretCredential(
        tenant_id,
        client_id,
        client_secret,
        authority=admin.base_url,
        disable_instance_discovery=True,
        connection_verify=admin.ca_file,
    )
    client = KeyClient(admin.base_url, credential, verify_challenge_resource=False, connection_verify=admin.ca_file)
    try:
        return client.get_key(name).id
    except ResourceNotFoundError:
        key = client.create_rsa_key(name, size=2048, key_operations=[KeyOperation.wrap_key, KeyOperation.unwrap_key])
        return key.id
