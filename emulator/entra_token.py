"""Emulated Entra token endpoint: authorization_code (+PKCE), refresh_token, client_credentials.

Client authentication: client_secret (post or basic) or a client_assertion JWT matched against the
app's federated identity credentials (the managed-identity path, no secret).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import jwt

from emulator.core import HTTPError, Request, Response, Router, json_response, redirect
from emulator.directory import App, User
from emulator.entra_app_errors import parse_switch, refusal
from emulator.entra_common import (
    ID_TOKEN_LIFETIME_S,
    OIDC_SCOPES,
    EntraSettings,
    RefreshGrant,
    ScopeError,
    consented,
    display_perm,
    parse_scopes,
    resolve_tenant,
    token_error,
    unknown_tenant,
)
from emulator.entra_tenant_apps import refusal as tenant_app_refusal
from emulator.state import EmulatorState
from emulator.tokens import GRAPH_RESOURCE, b64url, issue_access_token, issuer_for

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def register(router: Router, state: EmulatorState) -> None:
    """Register the token, logout and Entra-settings routes."""

    @router.route("POST", "/{tenant}/oauth2/v2.0/token", "entra.token")
    def token(req: Request, tenant: str) -> Response:
        try:
            return _token(state, req, tenant)
        except HTTPError as exc:
            return exc.response

    @router.route("GET", "/{tenant}/oauth2/v2.0/logout", "entra.logout")
    def logout(req: Request, tenant: str) -> Response:
        target = req.query.get("post_logout_redirect_uri") or f"{state.base_url}/_emulator/health"
        resp = redirect(target)
        resp.headers["Set-Cookie"] = "emu_sso=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=None"
        return resp

    @router.route("GET", "/_emulator/entra", "admin.entra")
    def read_settings(req: Request) -> Response:
        return json_response(200, vars(state.entra.settings))

    @router.route("POST", "/_emulator/entra", "admin.entra")
    def change_settings(req: Request) -> Response:
        data = req.json() if req.body else {}
        if data.get("reset"):
            state.entra.settings = EntraSettings()
        for key in ("access_token_lifetime_s", "code_lifetime_s", "refresh_idle_s"):
            if key in data:
                setattr(state.entra.settings, key, None if data[key] is None else int(data[key]))
        if "id_token_lifetime_s" in data:
            lifetime = data["id_token_lifetime_s"]
            if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, int)):
                problem = {"code": "BadRequest", "message": "id_token_lifetime_s must be an integer or null"}
                return json_response(400, {"error": problem})
            state.entra.settings.id_token_lifetime_s = ID_TOKEN_LIFETIME_S if lifetime is None else lifetime
        if "id_token_claims" in data:
            claims = data["id_token_claims"]
            if claims is not None and not isinstance(claims, dict):
                problem = {"code": "BadRequest", "message": "id_token_claims must be an object or null"}
                return json_response(400, {"error": problem})
            state.entra.settings.id_token_claims = claims or None
        if "refresh_scope_rule" in data:
            if data["refresh_scope_rule"] not in ("consent", "grant"):
                problem = {"code": "BadRequest", "message": "refresh_scope_rule must be consent or grant"}
                return json_response(400, {"error": problem})
            state.entra.settings.refresh_scope_rule = data["refresh_scope_rule"]
        if "app_credential_error" in data:
            try:
                state.entra.settings.app_credential_error = parse_switch(data["app_credential_error"])
            except ValueError as exc:
                return json_response(400, {"error": {"code": "BadRequest", "message": str(exc)}})
        return json_response(200, vars(state.entra.settings))


def _fail(state: EmulatorState, req: Request, error: str, code: int, message: str, **kw: Any) -> HTTPError:
    return HTTPError(token_error(state, req, error, code, message, **kw))


def _token(state: EmulatorState, req: Request, tenant: str) -> Response:
    found = resolve_tenant(state, tenant)
    if found is None:
        return unknown_tenant(state, tenant)
    kind, tn = found
    form = req.form()
    app = _authenticate_client(state, req, form, tenant)
    refused = refusal(state.entra.settings.app_credential_error, app.client_id, form.get("grant_type", ""), tenant)
    if refused:  # the app-credential switch (emulator/entra_app_errors.py): refuse the app's own credential
        error, code, status, message = refused
        state.counters.incr("entra.app_credential_refused")
        raise HTTPError(token_error(state, req, error, code, message, status=status))
    if app.sign_in_audience == "AzureADMyOrg" and kind in ("common", "organizations", "consumers"):
        raise _fail(
            state,
            req,
            "invalid_request",
            50194,
            (
                f"Application '{app.client_id}'({app.display_name}) is not configured as a multi-tenant application. "
                "Usage of the /common endpoint is not supported for such applications created after '10/15/2018'. "
                "Use a tenant-specific endpoint or configure the application to be multi-tenant."
            ),
        )
    grant = form.get("grant_type", "")
    # Per-grant counters let tests tell user-token refreshes from app-only (Key Vault) token calls.
    state.counters.incr(f"entra.grant.{grant or 'none'}")
    if grant == "authorization_code":
        return _redeem_code(state, req, app, form)
    if grant == "refresh_token":
        return _redeem_refresh(state, req, app, form)
    if grant == "client_credentials":
        if kind != "tenant" or tn is None:
            raise _fail(
                state,
                req,
                "invalid_request",
                50059,
                "No tenant-identifying information found in either the request or implied by any provided credentials.",
            )
        return _client_credentials(state, req, app, form, tn.tid)
    raise _fail(state, req, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")


def _authenticate_client(state: EmulatorState, req: Request, form: dict[str, str], tenant: str) -> App:
    client_id, secret = form.get("client_id", ""), form.get("client_secret")
    auth = req.headers.get("Authorization") or ""
    if auth.lower().startswith("basic "):
        try:
            user, _, pwd = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            user, pwd = "", ""
        client_id, secret = client_id or user, secret or pwd
    app = state.apps.get(client_id) if client_id else None
    if app is None:
        raise _fail(
            state,
            req,
            "unauthorized_client",
            700016,
            (
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant."
            ),
        )
    if form.get("client_assertion"):
        _check_assertion(state, req, app, form)
        return app
    if not secret:
        raise _fail(
            state,
            req,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    match = next((s for s in app.secrets if s.value == secret), None)
    if match is None:
        raise _fail(
            state,
            req,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret "
            "being sent in the request is the client secret value, not the client secret ID, for a secret "
            f"added to app '{app.client_id}'.",
        )
    if match.expires_at is not None and match.expires_at <= state.clock.now():
        raise _fail(
            state,
            req,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app "
            f"'{app.client_id}' are expired. Visit the Azure portal to create new keys for your app.",
        )
    return app


def _check_assertion(state: EmulatorState, req: Request, app: App, form: dict[str, str]) -> None:
    """Workload identity federation: a token from a trusted issuer whose iss/sub/aud match a credential."""
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise _fail(state, req, "invalid_request", 70002, f"The client_assertion_type must be '{ASSERTION_TYPE}'.")
    try:
        claims = state.keys.decode(form["client_assertion"])
    except jwt.PyJWTError:
        raise _fail(state, req, "invalid_client", 700027, "Client assertion failed signature validation.") from None
    now = state.clock.now()
    if claims.get("exp", 0) <= now or claims.get("nbf", 0) > now + 300:
        raise _fail(state, req, "invalid_client", 700024, "Client assertion is not within its valid time range.")
    audiences = claims.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    for fic in app.federated_credentials:
        if fic.issuer == claims.get("iss") and fic.subject == claims.get("sub") and set(audiences) & set(fic.audiences):
            return
    raise _fail(
        state,
        req,
        "invalid_request",
        70021,
        (
            "No matching federated identity record found for presented assertion. Assertion Issuer: "
            f"'{claims.get('iss')}'. Assertion Subject: '{claims.get('sub')}'. Assertion Audience: "
            f"'{','.join(map(str, audiences))}'."
        ),
    )


def _redeem_code(state: EmulatorState, req: Request, app: App, form: dict[str, str]) -> Response:
    store, value = state.entra, form.get("code", "")
    with store.lock:
        code = store.codes.get(value)
        if code is None or code.client_id != app.client_id:
            raise _fail(state, req, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
        if code.used:
            raise _fail(
                state,
                req,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, "
                "please retry with a new valid code or use an existing refresh token.",
            )
        if state.clock.now() - code.issued_at > store.settings.code_lifetime_s:
            raise _fail(
                state,
                req,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has "
                "expired due to inactivity. Send a new interactive authorization request for this user "
                "and resource.",
            )
        if form.get("redirect_uri") != code.redirect_uri:
            raise _fail(
                state,
                req,
                "invalid_grant",
                500112,
                "The reply address does not match the reply address provided when requesting Authorization code.",
            )
        verifier = form.get("code_verifier", "")
        if not verifier or b64url(hashlib.sha256(verifier.encode("ascii")).digest()) != code.challenge:
            raise _fail(
                state,
                req,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            )
        code.used = True
    user = state.directory.user(code.oid)
    if user is None:
        raise _fail(state, req, "invalid_grant", 50034, "The user account does not exist in the directory.")
    _check_enterprise_app(state, req, app, user.tid)
    original = _canonical_or_none(code.scope)
    return _issue(
        state, req, app, user, form.get("scope") or code.scope, code.nonce, check_consent=False, grant_scopes=original
    )


def _check_enterprise_app(state: EmulatorState, req: Request, app: App, tid: str) -> None:
    """Tenant ``tid`` deleted (AADSTS700016) or disabled (AADSTS7000112) the app: emulator/entra_tenant_apps.py."""
    refused = tenant_app_refusal(state, app, tid)
    if refused:
        raise _fail(state, req, *refused)


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%m/%d/%Y %H:%M:%S")


def _redeem_refresh(state: EmulatorState, req: Request, app: App, form: dict[str, str]) -> Response:
    store = state.entra
    with store.lock:
        grant = store.refresh.get(form.get("refresh_token", ""))
    if grant is None or grant.client_id != app.client_id:
        raise _fail(state, req, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    now = state.clock.now()
    idle = now - grant.issued_at
    if idle > store.settings.refresh_idle_s:
        days = store.settings.refresh_idle_s // 86400
        raise _fail(
            state,
            req,
            "invalid_grant",
            700082,
            f"The refresh token has expired due to inactivity. The "
            f"token was issued on {_when(grant.issued_at)} and was inactive for {days}.00:00:00.",
        )
    user = state.directory.user(grant.oid)
    if user is None:
        raise _fail(state, req, "invalid_grant", 50034, "The user account does not exist in the directory.")
    _check_enterprise_app(state, req, app, user.tid)
    if user.is_shared or "disabled" in user.failures:
        raise _fail(state, req, "invalid_grant", 50057, "The user account is disabled.")
    revoked = user.tokens_valid_after > grant.issued_at
    if "password_reset" in user.failures or (revoked and user.revocation_reason == "password_reset"):
        raise _fail(
            state,
            req,
            "invalid_grant",
            50173,
            (
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might "
                f"have changed or reset their password. The grant was issued on '{_when(grant.issued_at)}' and the "
                f"TokensValidFrom date (before which tokens are not valid) for this user is "
                f"'{_when(user.tokens_valid_after or now)}'."
            ),
            suberror="bad_token",
        )
    if revoked:
        raise _fail(
            state,
            req,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has "
            "expired due to inactivity. Send a new interactive authorization request for this user and "
            "resource.",
            suberror="bad_token",
        )
    requested = _canonical_or_none(form.get("scope", ""))
    if store.settings.refresh_scope_rule == "grant" and grant.scopes and requested and requested - set(grant.scopes):
        raise _consent_required(state, req, app)  # wider than the original request (the documented rule)
    return _issue(
        state, req, app, user, form.get("scope", ""), None, check_consent=True, grant_scopes=tuple(grant.scopes)
    )


def _canonical_or_none(scope: str) -> frozenset[str] | None:
    """The canonical permissions a scope string asks for (None when it does not parse: _issue answers that)."""
    try:
        return frozenset(parse_scopes(scope).canonical())
    except ScopeError:
        return None


def _consent_required(state: EmulatorState, req: Request, app: App) -> HTTPError:
    return _fail(
        state,
        req,
        "invalid_grant",
        65001,
        (
            f"The user or administrator has not consented to use the application with ID '{app.client_id}' named "
            f"'{app.display_name}'. Send an interactive authorization request for this user and resource."
        ),
        suberror="consent_required",
    )


def _issue(
    state: EmulatorState,
    req: Request,
    app: App,
    user: User,
    scope: str,
    nonce: str | None,
    *,
    check_consent: bool,
    grant_scopes: tuple[str, ...] | frozenset[str] | None = None,
) -> Response:
    """Mint access/id/refresh tokens for a user after scripted failures and consent checks."""
    try:
        scopes = parse_scopes(scope)
    except ScopeError as exc:
        raise _fail(state, req, "invalid_scope", exc.code, str(exc)) from None
    resource = scopes.resource or GRAPH_RESOURCE
    have = consented(state, user, app.client_id)
    if "consent_revoked" in user.failures or (check_consent and (scopes.canonical() - have)):
        raise _consent_required(state, req, app)
    if "ca_block" in user.failures:
        raise _fail(
            state,
            req,
            "invalid_grant",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
            suberror="message_only",
        )
    if "mfa_required" in user.failures:
        claims = json.dumps({"access_token": {"capolids": {"essential": True, "values": ["emu-mfa-policy"]}}})
        raise _fail(
            state,
            req,
            "interaction_required",
            50076,
            (
                "Due to a configuration change made by your administrator, or because you moved to a new location, "
                f"you must use multi-factor authentication to access '{resource}'."
            ),
            suberror="basic_action",
            claims=claims,
        )
    # OIDC consents (recorded as Graph permissions) are not resource permissions: never in ``scp``.
    oidc = {f"{GRAPH_RESOURCE}/{o}" for o in OIDC_SCOPES}
    granted = scopes.canonical() | {c for c in have if c.startswith(f"{resource.lower()}/") and c not in oidc}
    perms = sorted({display_perm(state.entra, c) for c in granted})
    now, lifetime = int(state.clock.now()), state.entra.access_lifetime()
    access = issue_access_token(
        state,
        tid=user.tid,
        oid=user.oid,
        client_id=app.client_id,
        scopes=perms,
        audience=resource,
        lifetime_s=lifetime,
        upn=user.upn,
        extra={"name": user.display_name, "app_displayname": app.display_name},
    )
    shown = (
        perms
        if resource == GRAPH_RESOURCE and (scopes.short_form or not scopes.perms)
        else [f"{resource}/{p}" for p in perms]
    )
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join(shown + [s for s in scopes.oidc if s != "offline_access"]),
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
        "client_info": b64url(json.dumps({"uid": user.oid, "utid": user.tid}).encode()),
    }
    if "offline_access" in scopes.oidc:
        grant = RefreshGrant(app.client_id, user.oid, user.tid, now, tuple(sorted(grant_scopes or ())))
        body["refresh_token"] = state.entra.new_refresh_token(grant)
    if "openid" in scopes.oidc:
        body["id_token"] = _id_token(state, app, user, nonce, now)
    return json_response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})


def _id_token(state: EmulatorState, app: App, user: User, nonce: str | None, now: int) -> str:
    # ``sub`` is pairwise (per app), as in Entra; ``oid`` is the stable user id apps should key on.
    sub = b64url(hashlib.sha256(f"{user.oid}:{app.client_id}".encode()).digest())
    claims: dict[str, Any] = {
        "ver": "2.0",
        "iss": issuer_for(state, user.tid),
        "sub": sub,
        "aud": app.client_id,
        "exp": now + state.entra.settings.id_token_lifetime_s,
        "iat": now,
        "nbf": now,
        "name": user.display_name,
        "preferred_username": user.upn,
        "oid": user.oid,
        "tid": user.tid,
        "email": user.mail,
    }
    if nonce:
        claims["nonce"] = nonce
    # Per user first (preferred_username "could be an email address, phone number, or a generic username
    # without a specified format"; ``email`` is an optional claim: id-token-claims-reference), then the global knob.
    overrides = {**(user.id_token_claims or {}), **(state.entra.settings.id_token_claims or {})}
    for name, value in overrides.items():
        if value is None:  # the knob's null leaves the claim out (Entra omits claims, it never sends null)
            claims.pop(name, None)
        else:
            claims[name] = value
    return state.keys.sign(claims)


def _client_credentials(state: EmulatorState, req: Request, app: App, form: dict[str, str], tid: str) -> Response:
    try:
        scopes = parse_scopes(form.get("scope", ""))
    except ScopeError as exc:
        raise _fail(state, req, "invalid_scope", exc.code, str(exc)) from None
    if not scopes.is_default or len(scopes.perms) != 1 or scopes.oidc:
        raise _fail(
            state,
            req,
            "invalid_scope",
            1002012,
            (
                f"The provided value for scope {form.get('scope', '')} is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    _check_enterprise_app(state, req, app, tid)
    tenant = state.directory.tenant(tid)
    if tid != app.home_tid and app.client_id not in (tenant.admin_consented if tenant else {}):
        raise _fail(
            state,
            req,
            "unauthorized_client",
            700016,
            (f"Application with identifier '{app.client_id}' was not found in the directory '{tid}'."),
        )
    lifetime = state.entra.access_lifetime()
    access = issue_access_token(
        state,
        tid=tid,
        oid=None,
        client_id=app.client_id,
        scopes=[],
        audience=scopes.resource or GRAPH_RESOURCE,
        lifetime_s=lifetime,
        roles=list(app.app_roles),
        extra={"app_displayname": app.display_name},
    )
    body = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access}
    return json_response(200, body, {"Cache-Control": "no-store"})
