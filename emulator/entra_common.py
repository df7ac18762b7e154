"""Entra building blocks: the store (codes, refresh tokens), tenant path segments, error shapes and scope handling."""

from __future__ import annotations

import datetime as dt
import random
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulator.core import Request, Response, add_query, json_response, redirect
from emulator.directory import CONSUMER_TENANT_ID, Tenant
from emulator.entra_pages import form_post_page
from emulator.state import EmulatorState
from emulator.tokens import GRAPH_RESOURCE

# The multi-tenant path segments of login.microsoftonline.com (any other segment is a tenant id or domain).
TENANT_ALIASES = ("common", "organizations", "consumers")
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
CODE_LIFETIME_S = 600  # authorization codes live about 10 minutes
REFRESH_IDLE_S = 90 * 86400  # refresh tokens expire after 90 days without use
ID_TOKEN_LIFETIME_S = 3600  # ID tokens are valid for one hour (configurable-token-lifetimes, "ID tokens")
# Display casing for well-known Graph permissions (Entra treats scope names case-insensitively).
KNOWN_CASING = {
    s.lower(): s
    for s in ("Mail.Send", "Mail.Send.Shared", "Mail.ReadWrite", "Mail.Read", "User.Read", "Mail.ReadWrite.Shared")
}


@dataclass
class AuthCode:
    """A pending authorization code."""

    client_id: str
    redirect_uri: str
    challenge: str
    oid: str
    tid: str
    scope: str
    nonce: str | None
    issued_at: float
    used: bool = False


@dataclass
class RefreshGrant:
    """One issued refresh token (opaque to clients; each use issues a new one, the old stays valid)."""

    client_id: str
    oid: str
    tid: str
    issued_at: float
    # Canonical scopes of the original authorization request, carried to every refresh token of the grant
    # (a class-attribute default: grants restored from an older state file have none and are not checked).
    scopes: tuple[str, ...] = ()


@dataclass
class EntraSettings:
    """Knobs tests may turn (``/_emulator/entra``)."""

    access_token_lifetime_s: int | None = None  # None: random 3600-5400 s like Entra
    code_lifetime_s: int = CODE_LIFETIME_S
    refresh_idle_s: int = REFRESH_IDLE_S
    # Claims laid over every id_token the token endpoint issues (security tests: a wrong nonce, another tid or
    # iss). ``id_token_lifetime_s``: exp - iat of the id_tokens it issues (Entra: one hour); a negative value
    # issues a token that is already expired (the app must refuse it: OIDC Core 3.1.3.7 item 9).
    id_token_claims: dict[str, Any] | None = None
    id_token_lifetime_s: int = ID_TOKEN_LIFETIME_S
    # The app-credential switch (emulator/entra_app_errors.py): {code, grants, client_id} or None.
    app_credential_error: dict[str, Any] | None = None
    # What a refresh may ask for (AADSTS65001 beyond it): "consent" (default: anything the user or their admin
    # consented to for the app, what Entra does in practice) or "grant" (the documented, stricter rule: "equivalent
    # to or a subset of the scopes requested in the original authorization_code request leg").
    refresh_scope_rule: str = "consent"


@dataclass
class EntraStore:
    """Entra's server-side state; ``state.entra``."""

    codes: dict[str, AuthCode] = field(default_factory=dict)
    refresh: dict[str, RefreshGrant] = field(default_factory=dict)
    settings: EntraSettings = field(default_factory=EntraSettings)
    casing: dict[str, str] = field(default_factory=lambda: dict(KNOWN_CASING))
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def new_code(self, code: AuthCode) -> str:
        """Store a code and return its opaque value."""
        value = "1.emu." + secrets.token_urlsafe(48)
        with self.lock:
            self.codes[value] = code
        return value

    def new_refresh_token(self, grant: RefreshGrant) -> str:
        """Store a refresh grant and return its opaque value."""
        value = "1.emu-rt." + secrets.token_urlsafe(64)
        with self.lock:
            self.refresh[value] = grant
        return value

    def access_lifetime(self) -> int:
        """Access token lifetime in seconds (random 60-90 minutes unless configured)."""
        if self.settings.access_token_lifetime_s is not None:
            return self.settings.access_token_lifetime_s
        with self.lock:
            return self.rng.randint(3600, 5400)


def timestamp(state: Any) -> str:
    """Entra's error timestamp format, on the emulator clock."""
    return dt.datetime.fromtimestamp(state.clock.now(), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _describe(state: Any, req: Request | None, code: int, message: str) -> tuple[str, dict[str, Any]]:
    trace = str(uuid.uuid4())
    corr = (req.headers.get("client-request-id") if req else None) or str(uuid.uuid4())
    ts = timestamp(state)
    desc = f"AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}"
    extra = {
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"{state.base_url}/error?code={code}",
    }
    return desc, extra


def token_error(
    state: Any,
    req: Request | None,
    error: str,
    code: int,
    message: str,
    *,
    status: int | None = None,
    suberror: str | None = None,
    claims: str | None = None,
) -> Response:
    """A token-endpoint error in Entra's JSON shape (400; 401 for invalid_client)."""
    desc, extra = _describe(state, req, code, message)
    body: dict[str, Any] = {"error": error, "error_description": desc, **extra}
    if suberror:
        body["suberror"] = suberror
    if claims:
        body["claims"] = claims
    return json_response(status or (401 if error == "invalid_client" else 400), body)


def resolve_tenant(state: EmulatorState, segment: str) -> tuple[str, Tenant | None] | None:
    """('common'|'organizations'|'consumers'|'tenant', Tenant) for a path segment; None if unknown."""
    seg = segment.lower()
    if seg in TENANT_ALIASES:
        return seg, state.directory.tenant(CONSUMER_TENANT_ID) if seg == "consumers" else None
    tenant = state.directory.tenant(seg)
    return ("tenant", tenant) if tenant else None


def unknown_tenant(state: EmulatorState, segment: str) -> Response:
    """Entra's answer for an unknown tenant on discovery/token endpoints."""
    return token_error(
        state,
        None,
        "invalid_tenant",
        90002,
        f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud.",
    )


def redirect_error(
    state: Any,
    redirect_uri: str,
    app_state: str | None,
    error: str,
    code: int,
    message: str,
    *,
    subcode: str | None = None,
    response_mode: str = "query",
) -> Response:
    """Send the browser back to the app with ``error``/``error_description``/``error_uri``/``state``."""
    desc, extra = _describe(state, None, code, message)
    params = {"error": error, "error_description": desc, "error_uri": extra["error_uri"]}
    if subcode:
        params["error_subcode"] = subcode
    if app_state is not None:
        params["state"] = app_state
    return respond_to_app(redirect_uri, params, response_mode)


def respond_to_app(redirect_uri: str, params: dict[str, str], response_mode: str = "query") -> Response:
    """Deliver authorize results per ``response_mode`` (query redirect or auto-posting form)."""
    if response_mode == "form_post":
        return form_post_page(redirect_uri, params)
    return redirect(add_query(redirect_uri, params))


@dataclass
class ScopeRequest:
    """A parsed ``scope`` parameter: OIDC scopes plus permissions on (at most) one resource."""

    oidc: list[str]
    resource: str | None
    perms: list[str]  # as written by the client, without resource prefix
    short_form: bool  # Graph scopes written without the https://graph.microsoft.com/ prefix

    def canonical(self) -> set[str]:
        """Lower-cased ``resource/perm`` strings (how consent is recorded)."""
        return {f"{self.resource}/{p}".lower() for p in self.perms if p != ".default"}

    def consent_scopes(self) -> set[str]:
        """What a user (or admin) must have consented to: the permissions plus the OIDC scopes, which are
        Microsoft Graph delegated permissions too (openid, profile, email, offline_access: "OpenID Connect
        scopes" in the permissions-and-consent overview). An admin consent with a dynamic scope list grants
        only what it names, so one without offline_access leaves users a consent to give."""
        return self.canonical() | {f"{GRAPH_RESOURCE}/{scope}" for scope in self.oidc}

    @property
    def is_default(self) -> bool:
        """True for ``<resource>/.default``."""
        return ".default" in self.perms


class ScopeError(ValueError):
    """The scope parameter is invalid (AADSTS70011 / 28000)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_scopes(scope: str) -> ScopeRequest:
    """Split a space-separated scope string; Graph is the resource of un-prefixed permissions."""
    oidc: list[str] = []
    resources: set[str] = set()
    perms: list[str] = []
    short = False
    for item in scope.split():
        if item.lower() in OIDC_SCOPES:
            oidc.append(item.lower())
            continue
        if "://" in item:
            resource, _, perm = item.rpartition("/")
        else:
            resource, perm, short = GRAPH_RESOURCE, item, True
        if not perm:
            raise ScopeError(70011, f"The provided value for the input parameter 'scope' is not valid: {item}.")
        resources.add(resource.rstrip("/").lower())
        perms.append(perm)
    if len(resources) > 1:
        raise ScopeError(
            28000,
            "Provided value for the input parameter scope is not valid because it contains more than one resource.",
        )
    resource = resources.pop() if resources else None
    if resource == "https://graph.microsoft.com":
        resource = GRAPH_RESOURCE
    return ScopeRequest(oidc, resource, perms, short)


def consented(state: Any, user: Any, client_id: str) -> set[str]:
    """Canonical scopes consented for ``client_id`` by the user or by their tenant's admin."""
    tenant = state.directory.tenant(user.tid)
    granted = set(user.consents.get(client_id.lower(), set()))
    if tenant is not None:
        granted |= tenant.admin_consented.get(client_id.lower(), set())
    return {_canonical_consent(s) for s in granted}


def _canonical_consent(scope: str) -> str:
    """Admin API grants may use short Graph names; normalise to ``resource/perm`` lower-case."""
    scope = scope.lower()
    return scope if "://" in scope else f"{GRAPH_RESOURCE}/{scope}"


def display_perm(store: EntraStore, canonical: str) -> str:
    """The display casing of a permission (``https://graph.microsoft.com/mail.send`` -> ``Mail.Send``)."""
    perm = canonical.rpartition("/")[2]
    return store.casing.get(perm, perm)
