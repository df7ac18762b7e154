"""Directory model: tenants, users (mailboxes), app registrations and managed identities."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
# Fixed id so the demo stack and docs can name the emulator's default "home" tenant.
HOME_TENANT_ID = "00000000-0000-4000-8000-00000000c0de"
CONSENT_POLICIES = ("user", "admin_required", "blocked")
USER_FAILURES = ("mfa_required", "ca_block", "consent_revoked", "password_reset", "disabled")
SIGN_IN_AUDIENCES = (
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
)


@dataclass
class Tenant:
    """An Entra tenant (``kind`` "work") or the consumer (Outlook.com) tenant (``kind`` "personal")."""

    tid: str
    domain: str
    display_name: str = ""
    consent_policy: str = "user"
    admin_consented: dict[str, set[str]] = field(default_factory=dict)
    kind: str = "work"
    # "Users can request admin consent to apps they are unable to consent to" (admin consent workflow):
    # the "Need admin approval" page then offers a request form; requests land here.
    admin_consent_workflow: bool = False
    consent_requests: list[dict[str, Any]] = field(default_factory=list)
    # Isolation faults (issue 25; docs/emulator.md). Defaults are class attributes so tenants restored from an
    # older state file (emulator/persist.py) read them too. ``enterprise_apps``: client_id -> "deleted" |
    # "disabled" (this tenant's admin removed or disabled the app's service principal); ``exchange_online``
    # False: the tenant has no Exchange Online, every Graph mailbox call answers 401 OrganizationFromTenantGuidNotFound.
    enterprise_apps: dict[str, str] | None = None
    exchange_online: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the admin API."""
        return {
            "tid": self.tid,
            "domain": self.domain,
            "display_name": self.display_name,
            "consent_policy": self.consent_policy,
            "admin_consented": {k: sorted(v) for k, v in self.admin_consented.items()},
            "kind": self.kind,
            "admin_consent_workflow": self.admin_consent_workflow,
            "consent_requests": list(self.consent_requests),
            "enterprise_apps": dict(self.enterprise_apps or {}),
            "exchange_online": self.exchange_online,
        }


@dataclass
class User:
    """A user and their mailbox (or a shared mailbox, which cannot sign in)."""

    oid: str
    tid: str
    upn: str
    mail: str
    display_name: str = ""
    aliases: list[str] = field(default_factory=list)
    is_shared: bool = False
    password: str = "password"
    send_as: set[str] = field(default_factory=set)
    send_on_behalf: set[str] = field(default_factory=set)
    full_access: set[str] = field(default_factory=set)
    failures: set[str] = field(default_factory=set)
    # Refresh tokens issued before this emulator time are invalid (password reset / revocation).
    tokens_valid_after: float = 0.0
    revocation_reason: str = ""
    consents: dict[str, set[str]] = field(default_factory=dict)  # client_id -> user-consented scopes
    is_admin: bool = False
    # Isolation faults (issue 25), class-attribute defaults for the same reason as Tenant's:
    # ``mailbox_state`` {"state": one of emulator.graph_mailbox_state.MAILBOX_STATES, "status": HTTP status}
    # or None; ``id_token_claims`` laid over this user's ID tokens (a null value leaves the claim out).
    mailbox_state: dict[str, Any] | None = None
    id_token_claims: dict[str, Any] | None = None

    def addresses(self) -> list[str]:
        """Every address this mailbox answers to, lower-cased."""
        return [a.lower() for a in [self.upn, self.mail, *self.aliases] if a]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the admin API (no password)."""
        return {
            "oid": self.oid,
            "tid": self.tid,
            "upn": self.upn,
            "mail": self.mail,
            "display_name": self.display_name,
            "aliases": list(self.aliases),
            "is_shared": self.is_shared,
            "is_admin": self.is_admin,
            "send_as": sorted(self.send_as),
            "send_on_behalf": sorted(self.send_on_behalf),
            "full_access": sorted(self.full_access),
            "failures": sorted(self.failures),
            "tokens_valid_after": self.tokens_valid_after,
            "consents": {k: sorted(v) for k, v in self.consents.items()},
            "mailbox_state": dict(self.mailbox_state) if self.mailbox_state else None,
            "id_token_claims": dict(self.id_token_claims or {}),
        }


class Directory:
    """Tenants and users, with lookups by id, upn, mail or alias (case-insensitive)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tenants: dict[str, Tenant] = {}
        self.users: dict[str, User] = {}

    def add_tenant(self, tenant: Tenant) -> Tenant:
        """Add or replace a tenant."""
        with self._lock:
            self.tenants[tenant.tid] = tenant
            return tenant

    def tenant(self, tid_or_domain: str) -> Tenant | None:
        """Find a tenant by id or verified domain."""
        key = tid_or_domain.lower()
        with self._lock:
            if key in self.tenants:
                return self.tenants[key]
            for tenant in self.tenants.values():
                if tenant.domain.lower() == key:
                    return tenant
        return None

    def add_user(self, user: User) -> User:
        """Add a user; the address must not be taken in that tenant."""
        with self._lock:
            for address in user.addresses():
                if self.find_user(user.tid, address) is not None:
                    raise ValueError(f"address {address} already exists in tenant {user.tid}")
            self.users[user.oid] = user
            return user

    def user(self, oid: str) -> User | None:
        """User by object id."""
        with self._lock:
            return self.users.get(oid.lower())

    def find_user(self, tid: str | None, id_or_address: str) -> User | None:
        """Match oid, upn, mail or alias case-insensitively; ``tid`` None searches every tenant."""
        key = id_or_address.lower()
        with self._lock:
            found = self.users.get(key)
            if found is not None and (tid is None or found.tid == tid):
                return found
            for user in self.users.values():
                if (tid is None or user.tid == tid) and key in user.addresses():
                    return user
        return None

    def users_in(self, tid: str) -> list[User]:
        """All users of a tenant."""
        with self._lock:
            return [u for u in self.users.values() if u.tid == tid]


@dataclass
class ClientSecret:
    """A client secret; ``expires_at`` is emulator epoch seconds (None = never)."""

    value: str
    expires_at: float | None = None
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class FederatedCredential:
    """Trust a token from ``issuer`` about ``subject`` (audience api://AzureADTokenExchange)."""

    issuer: str
    subject: str
    audiences: list[str] = field(default_factory=lambda: ["api://AzureADTokenExchange"])
    name: str = "fic"


@dataclass
class App:
    """An app registration (client application)."""

    client_id: str
    home_tid: str
    display_name: str = "app"
    secrets: list[ClientSecret] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    sign_in_audience: str = "AzureADMultipleOrgs"
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    # Application permissions (app-only roles) granted, per resource audience.
    app_roles: list[str] = field(default_factory=list)
    # Statically configured delegated permissions: what ``<resource>/.default`` means at admin consent
    # (a registration lists the OIDC scopes too, as infra/app/appregistration.bicep does).
    api_permissions: list[str] = field(
        default_factory=lambda: [
            "Mail.Send",
            "Mail.Send.Shared",
            "Mail.ReadWrite",
            "User.Read",
            "openid",
            "profile",
            "offline_access",
        ]
    )
    service_principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the admin API (secret values omitted)."""
        return {
            "client_id": self.client_id,
            "home_tid": self.home_tid,
            "display_name": self.display_name,
            "secrets": [{"key_id": s.key_id, "expires_at": s.expires_at} for s in self.secrets],
            "redirect_uris": list(self.redirect_uris),
            "sign_in_audience": self.sign_in_audience,
            "federated_credentials": [vars(f) for f in self.federated_credentials],
            "app_roles": list(self.app_roles),
            "api_permissions": list(self.api_permissions),
            "service_principal_id": self.service_principal_id,
        }


@dataclass
class ManagedIdentity:
    """A user-assigned managed identity reachable through the ``/_msi/token`` endpoint."""

    client_id: str
    principal_id: str
    tid: str


class AppRegistry:
    """Registered applications and managed identities."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.apps: dict[str, App] = {}
        self.identities: dict[str, ManagedIdentity] = {}

    def add(self, app: App) -> App:
        """Register (or replace) an app."""
        with self._lock:
            self.apps[app.client_id.lower()] = app
            return app

    def get(self, client_id: str) -> App | None:
        """App by client id (case-insensitive)."""
        with self._lock:
            return self.apps.get(client_id.lower())

    def add_identity(self, identity: ManagedIdentity) -> ManagedIdentity:
        """Register a managed identity."""
        with self._lock:
            self.identities[identity.client_id.lower()] = identity
            return identity

    def identity(self, client_id: str | None) -> ManagedIdentity | None:
        """Managed identity by client id; None picks the only one when exactly one exists."""
        with self._lock:
            if client_id:
                return self.identities.get(client_id.lower())
            if len(self.identities) == 1:
                return next(iter(self.identities.values()))
        return None
