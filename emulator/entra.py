"""Emulated Entra ID (Microsoft identity platform v2.0): discovery, authorize, admin consent.

The token endpoint lives in ``entra_token.py``. Tenant path segment: tenant id, domain, ``common``,
``organizations`` or ``consumers`` as on login.microsoftonline.com.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

from emulator import entra_token
from emulator.core import Request, Response, Router, json_response
from emulator.directory import App, Tenant, User
from emulator.entra_common import (
    TENANT_ALIASES,
    AuthCode,
    EntraStore,
    ScopeError,
    ScopeRequest,
    consented,
    display_perm,
    parse_scopes,
    redirect_error,
    resolve_tenant,
    respond_to_app,
    unknown_tenant,
)
from emulator.entra_pages import (
    consent_page,
    error_page,
    need_admin_approval_page,
    sign_in_only_page,
    sign_in_page,
)
from emulator.entra_tenant_apps import app_state, consented_again, disabled_message
from emulator.state import EmulatorState
from emulator.tokens import GRAPH_RESOURCE

SSO_COOKIE = "emu_sso"
PROMPTS = ("login", "consent", "select_account", "none", "create")


def register(router: Router, state: EmulatorState) -> None:
    """Register Entra routes (call last: its ``/{tenant}/...`` patterns are catch-alls)."""
    state.entra = EntraStore()
    base = lambda: state.base_url  # noqa: E731 - base_url is known only once the server is bound

    @router.route("GET", "/{tenant}/v2.0/.well-known/openid-configuration", "entra.discovery")
    def discovery(req: Request, tenant: str) -> Response:
        found = resolve_tenant(state, tenant)
        if found is None:
            return unknown_tenant(state, tenant)
        kind, tn = found
        path = kind if kind in TENANT_ALIASES else tn.tid  # type: ignore[union-attr]
        issuer_tid = tn.tid if tn else "{tenantid}"  # multi-tenant aliases publish a placeholder
        b = base()
        return json_response(
            200,
            {
                "token_endpoint": f"{b}/{path}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{b}/{path}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{b}/{issuer_tid}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{b}/oidc/userinfo",
                "authorization_endpoint": f"{b}/{path}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{b}/{path}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{b}/{path}/oauth2/v2.0/logout",
                "claims_supported": [
                    "sub",
                    "iss",
                    "cloud_instance_name",
                    "cloud_instance_host_name",
                    "cloud_graph_host_name",
                    "msgraph_host",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "acr",
                    "nonce",
                    "preferred_username",
                    "name",
                    "tid",
                    "ver",
                    "at_hash",
                    "c_hash",
                    "email",
                ],
                "tenant_region_scope": "EU" if tn and tn.kind == "work" else None,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": b.split("://", 1)[1],
                "rbac_url": "https://pas.windows.net",
            },
        )

    @router.route("GET", "/{tenant}/discovery/v2.0/keys", "entra.keys")
    def keys(req: Request, tenant: str) -> Response:
        return json_response(200, state.keys.jwks())

    @router.route("GET", "/{tenant}/oauth2/v2.0/authorize", "entra.authorize")
    def authorize_get(req: Request, tenant: str) -> Response:
        return _authorize(state, req, tenant, dict(req.query), submitted=False)

    @router.route("POST", "/{tenant}/oauth2/v2.0/authorize", "entra.authorize")
    def authorize_post(req: Request, tenant: str) -> Response:
        return _authorize(state, req, tenant, {**req.query, **req.form()}, submitted=True)

    for pattern in ("/{tenant}/v2.0/adminconsent", "/{tenant}/adminconsent"):
        router.add("GET", pattern, "entra.adminconsent", lambda req, tenant: _admin_consent(state, req, tenant))
        router.add("POST", pattern, "entra.adminconsent", lambda req, tenant: _admin_consent(state, req, tenant))

    entra_token.register(router, state)


def _sso_user(state: EmulatorState, req: Request) -> User | None:
    cookie = SimpleCookie(req.headers.get("Cookie") or "")
    morsel = cookie.get(SSO_COOKIE)
    return state.directory.user(morsel.value) if morsel else None


def _check_client(state: EmulatorState, p: dict[str, str], tenant_seg: str) -> App | Response:
    """Errors that are shown as a page (never redirected): unknown app, bad redirect URI, unknown tenant."""
    if resolve_tenant(state, tenant_seg) is None:
        return error_page(90002, f"Tenant '{tenant_seg}' not found.")
    client_id = p.get("client_id", "")
    app = state.apps.get(client_id) if client_id else None
    if app is None:
        return error_page(
            700016,
            f"Application with identifier '{client_id}' was not found in the directory '{tenant_seg}'. This can "
            "happen if the application has not been installed by the administrator of the tenant.",
        )
    redirect_uri = p.get("redirect_uri", "")
    if redirect_uri not in app.redirect_uris:  # exact, case-sensitive match like Entra for web apps
        return error_page(
            50011,
            f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
            f"configured for the application '{app.client_id}'.",
        )
    return app


def _user_allowed(state: EmulatorState, app: App, kind: str, tn: Tenant | None, user: User) -> str | None:
    """Why this user cannot sign in through this authority to this app (None when fine)."""
    personal = state.directory.tenant(user.tid).kind == "personal"  # type: ignore[union-attr]
    if kind == "tenant" and tn is not None and user.tid != tn.tid:
        return (
            f"AADSTS50020: User account '{user.upn}' from identity provider does not exist in tenant "
            f"'{tn.display_name}' and cannot access the application '{app.client_id}' in that tenant."
        )
    if kind == "organizations" and personal:
        return "AADSTS50020: You can't sign in here with a personal account. Use your work or school account."
    if kind == "consumers" and not personal:
        return "AADSTS50020: This endpoint only accepts personal Microsoft accounts."
    if personal and app.sign_in_audience in ("AzureADMyOrg", "AzureADMultipleOrgs"):
        return "AADSTS50020: You can't sign in here with a personal account. Use your work or school account."
    if not personal and app.sign_in_audience == "PersonalMicrosoftAccount":
        return "AADSTS50020: This application only accepts personal Microsoft accounts."
    if app.sign_in_audience == "AzureADMyOrg" and user.tid != app.home_tid:
        return (
            f"AADSTS700016: Application with identifier '{app.client_id}' was not found in the directory '{user.tid}'."
        )
    if user.is_shared or "disabled" in user.failures:
        return "AADSTS50057: The user account is disabled."
    if app_state(state.directory.tenant(user.tid), app.client_id) == "disabled":
        return f"AADSTS7000112: {disabled_message(app)}"  # the user's tenant disabled the app (entra_tenant_apps)
    return None


def _authorize(state: EmulatorState, req: Request, tenant: str, p: dict[str, str], *, submitted: bool) -> Response:
    checked = _check_client(state, p, tenant)
    if isinstance(checked, Response):
        return checked
    app = checked
    kind, tn = resolve_tenant(state, tenant)  # type: ignore[misc]
    redirect_uri, app_state = p["redirect_uri"], p.get("state")
    mode = p.get("response_mode", "query")

    def fail(error: str, code: int, message: str, subcode: str | None = None) -> Response:
        return redirect_error(state, redirect_uri, app_state, error, code, message, subcode=subcode, response_mode=mode)

    if p.get("response_type") != "code":
        return fail("unsupported_response_type", 700054, "response_type must be 'code' for this application.")
    if app.sign_in_audience == "AzureADMyOrg" and kind in ("common", "organizations", "consumers"):
        return fail(
            "invalid_request",
            50194,
            (
                f"Application '{app.client_id}'({app.display_name}) is not configured as a multi-tenant application. "
                "Usage of the /common endpoint is not supported for such applications created after '10/15/2018'. "
                "Use a tenant-specific endpoint or configure the application to be multi-tenant."
            ),
        )
    # Project policy (stricter than Entra for confidential web apps): PKCE with S256 is mandatory.
    if not p.get("code_challenge"):
        return fail(
            "invalid_request",
            9002325,
            "Proof Key for Code Exchange is required (emulator policy: "
            "code_challenge with code_challenge_method=S256).",
        )
    if p.get("code_challenge_method", "plain") != "S256":
        return fail(
            "invalid_request", 9002325, "code_challenge_method must be S256 (emulator policy; 'plain' is rejected)."
        )
    prompt = p.get("prompt", "")
    if prompt and prompt not in PROMPTS:
        return fail(
            "invalid_request", 90023, f"Invalid request. The prompt request parameter value '{prompt}' is invalid."
        )
    try:
        scopes = parse_scopes(p.get("scope", ""))
    except ScopeError as exc:
        return fail("invalid_scope", exc.code, str(exc))
    if "openid" not in scopes.oidc and scopes.resource is None:
        return fail("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")

    sso = _sso_user(state, req)
    if prompt == "none":
        if sso is None:
            return fail("login_required", 50058, "A silent sign-in request was sent but no user is signed in.")
        return _complete(state, req, app, kind, tn, p, scopes, sso, fail, silent=True)
    action_url = f"{state.base_url}{req.path}" + (f"?{req.raw_query}" if req.raw_query else "")
    label = tn.display_name if tn else kind

    def page(error: str = "") -> Response:
        accounts = [u.upn for u in state.directory.users_in(tn.tid) if not u.is_shared][:25] if tn else []
        hint = p.get("login_hint") or (sso.upn if sso and prompt not in ("login", "select_account") else "")
        return sign_in_only_page(
            action_url=action_url, app_name=app.display_name, login_hint=hint, accounts=accounts, error=error
        )

    if not submitted or "action" not in p:
        return page()
    if p["action"] == "cancel":
        return fail("access_denied", 65004, "User declined to consent to access the app.", subcode="cancel")
    username = p.get("username", "").strip()
    user = state.directory.find_user(tn.tid if kind == "tenant" and tn else None, username) if username else None
    if user is None:
        return page(f"AADSTS50034: The user account {username or '(empty)'} does not exist in the directory.")
    if p.get("password") and p["password"] != user.password:
        return page("AADSTS50126: Error validating credentials due to invalid username or password.")
    problem = _user_allowed(state, app, kind, tn, user)
    if problem:
        return page(problem)
    return _complete(state, req, app, kind, tn, p, scopes, user, fail, silent=False, pages=(action_url, label))


def _complete(
    state: EmulatorState,
    req: Request,
    app: App,
    kind: str,
    tn: Tenant | None,
    p: dict[str, str],
    scopes: ScopeRequest,
    user: User,
    fail: Any,
    *,
    silent: bool,
    pages: tuple[str, str] = ("", ""),
) -> Response:
    """After the user is known: scripted failures, consent policy (step 2 pages), then the code.

    Step 2 is Microsoft's: nothing when the user (or their admin, e.g. with ``/.default``) already consented
    to everything asked; "Need admin approval" when the organisation does not let this user consent
    (answered with ``back``, or ``request`` under the admin consent workflow); else the permission page,
    whose ``accept`` grants. ``action=accept`` on the first POST signs in and consents in one go (scripts).
    """
    if "ca_block" in user.failures:
        return fail(
            "access_denied",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        )
    if "mfa_required" in user.failures:
        return fail(
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, or "
            "because you moved to a new location, you must use multi-factor authentication to access "
            f"'{scopes.resource or GRAPH_RESOURCE}'.",
        )
    tenant = state.directory.tenant(user.tid)
    have = consented(state, user, app.client_id)
    missing = scopes.consent_scopes() - have
    if scopes.is_default and not any(c.startswith(f"{scopes.resource}/") for c in have):
        missing = {f"{scopes.resource}/.default"}
    needs_consent = bool(missing) or p.get("prompt") == "consent"
    if needs_consent:
        consent_msg = (
            f"The user or administrator has not consented to use the application with ID "
            f"'{app.client_id}' named '{app.display_name}'. Send an interactive authorization "
            "request for this user and resource."
        )
        if silent:
            return fail("consent_required", 65001, consent_msg)
        policy = tenant.consent_policy if tenant else "user"
        action, (action_url, label) = p.get("action", ""), pages
        if missing and policy in ("blocked", "admin_required") and not user.is_admin:
            if action == "request" and tenant is not None and tenant.admin_consent_workflow:
                with state.lock:
                    tenant.consent_requests.append(
                        {
                            "client_id": app.client_id,
                            "user": user.upn,
                            "scopes": sorted(missing),
                            "justification": p.get("justification", "")[:500],
                            "at": state.clock.now(),
                        }
                    )
                return fail("access_denied", 90095, "Admin consent is required: the request was sent to an admin.")
            if action == "back":
                if policy == "blocked":
                    return fail("access_denied", 90094, "The grant requires admin permission.")
                return fail("consent_required", 65001, consent_msg)
            return need_admin_approval_page(
                action_url=action_url,
                app_name=app.display_name,
                username=user.upn,
                password=p.get("password", ""),
                workflow=bool(tenant and tenant.admin_consent_workflow),
            )
        if action != "accept":
            perms = [display_perm(state.entra, c) for c in sorted(scopes.consent_scopes())]
            return consent_page(
                action_url=action_url,
                app_name=app.display_name,
                tenant_label=label,
                permissions=perms,
                username=user.upn,
                password=p.get("password", ""),
            )
        # Consenting to ``<resource>/.default`` means consenting to the app's configured permissions.
        granted = (_admin_grants(app, scopes) if scopes.is_default else scopes.canonical()) | scopes.consent_scopes()
        with state.lock:
            user.consents.setdefault(app.client_id, set()).update(granted)
            consented_again(state, state.directory.tenant(user.tid), app.client_id)
            for perm in scopes.perms:
                state.entra.casing.setdefault(perm.lower(), perm)
    code = state.entra.new_code(
        AuthCode(
            client_id=app.client_id,
            redirect_uri=p["redirect_uri"],
            challenge=p["code_challenge"],
            oid=user.oid,
            tid=user.tid,
            scope=p.get("scope", ""),
            nonce=p.get("nonce"),
            issued_at=state.clock.now(),
        )
    )
    params = {"code": code}
    if p.get("state") is not None:
        params["state"] = p["state"]
    params["session_state"] = user.oid[:8] + "-emu-session"
    resp = respond_to_app(p["redirect_uri"], params, p.get("response_mode", "query"))
    resp.headers["Set-Cookie"] = f"{SSO_COOKIE}={user.oid}; Path=/; Secure; HttpOnly; SameSite=None"
    return resp


def _admin_consent(state: EmulatorState, req: Request, tenant: str) -> Response:
    """``/{tenant}/v2.0/adminconsent``: an admin grants the app's permissions for the whole tenant."""
    p = {**req.query, **(req.form() if req.method == "POST" else {})}
    checked = _check_client(state, p, tenant)
    if isinstance(checked, Response):
        return checked
    app = checked
    redirect_uri, app_state = p["redirect_uri"], p.get("state")
    kind, tn = resolve_tenant(state, tenant)  # type: ignore[misc]
    if kind in ("common", "consumers"):
        # Observed Entra behaviour for /common/v2.0/adminconsent (MicrosoftDocs/azure-docs#45151).
        return redirect_error(
            state,
            redirect_uri,
            app_state,
            "invalid_request",
            90014,
            "The provided request must include a 'response_type' input parameter.",
        )
    scope = p.get("scope") or f"{GRAPH_RESOURCE}/.default"
    try:
        scopes = parse_scopes(scope)
    except ScopeError as exc:
        return redirect_error(state, redirect_uri, app_state, "invalid_scope", exc.code, str(exc))
    action_url = f"{state.base_url}{req.path}" + (f"?{req.raw_query}" if req.raw_query else "")
    grants = _admin_grants(app, scopes)
    perms = [display_perm(state.entra, g) for g in sorted(grants)]

    def page(error: str = "") -> Response:
        return sign_in_page(
            action_url=action_url,
            app_name=app.display_name,
            tenant_label=tn.display_name if tn else "your organization",
            permissions=perms,
            error=error,
            admin_approval=True,
            login_hint=p.get("login_hint", ""),
        )

    if req.method == "GET" or "action" not in p:
        return page()
    if p["action"] == "cancel":
        return redirect_error(
            state,
            redirect_uri,
            app_state,
            "access_denied",
            65004,
            "The admin declined to consent to access the app.",
            subcode="cancel",
        )
    admin = state.directory.find_user(tn.tid if tn else None, p.get("username", "").strip())
    if admin is None or (tn is not None and admin.tid != tn.tid):
        return page("AADSTS50034: The user account does not exist in the directory.")
    if not admin.is_admin:
        return page("AADSTS90094: The grant requires admin permission. Sign in with an administrator account.")
    target = state.directory.tenant(admin.tid)
    with state.lock:
        target.admin_consented.setdefault(app.client_id, set()).update(grants)  # type: ignore[union-attr]
        consented_again(state, target, app.client_id)
    params = {"admin_consent": "True", "tenant": admin.tid, "scope": scope}
    if app_state is not None:
        params["state"] = app_state
    return respond_to_app(redirect_uri, params)


def _admin_grants(app: App, scopes: ScopeRequest) -> set[str]:
    """What admin consent grants: ``.default`` = the app's configured permissions, else those requested."""
    if scopes.is_default or not scopes.perms:
        resource = scopes.resource or GRAPH_RESOURCE
        out = set()
        for perm in app.api_permissions:
            out.add((perm if "://" in perm else f"{resource}/{perm}").lower())
        return out
    return scopes.consent_scopes()
