"""Test-only admin API under ``/_emulator/...``: directory, apps, consent, failures, clock, faults, counters.

No authentication: it exists only on the local emulator. Documented in docs/emulator.md.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import jwt

from emulator.core import HTTPError, Request, Response, Router, json_response
from emulator.directory import (
    CONSENT_POLICIES,
    HOME_TENANT_ID,
    SIGN_IN_AUDIENCES,
    USER_FAILURES,
    App,
    ClientSecret,
    FederatedCredential,
    ManagedIdentity,
    Tenant,
    User,
)
from emulator.entra_tenant_apps import consented_again, set_app_state
from emulator.state import EmulatorState
from emulator.tokens import issuer_for


def bad_request(message: str) -> HTTPError:
    """A 400 for malformed admin calls."""
    return HTTPError(json_response(400, {"error": {"code": "BadRequest", "message": message}}))


def not_found(what: str) -> HTTPError:
    """A 404 for unknown admin objects."""
    return HTTPError(json_response(404, {"error": {"code": "NotFound", "message": f"{what} not found"}}))


def body_of(req: Request) -> dict[str, Any]:
    """The JSON object body (empty dict when there is no body)."""
    if not req.body:
        return {}
    try:
        data = req.json()
    except ValueError as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    return data


def _str_set(value: Any, field_name: str) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{field_name} must be a list of strings")
    return {v.lower() for v in value}


def register(router: Router, state: EmulatorState) -> None:
    """Register the directory/app/clock/fault/counter admin routes."""
    d = state.directory

    def get_tenant(tid: str) -> Tenant:
        tenant = d.tenant(tid)
        if tenant is None:
            raise not_found(f"tenant {tid}")
        return tenant

    def get_user(ident: str) -> User:
        user = d.find_user(None, ident)
        if user is None:
            raise not_found(f"user {ident}")
        return user

    @router.route("GET", "/_emulator/health", "admin.health")
    def health(req: Request) -> Response:
        return json_response(200, {"ok": True, "base_url": state.base_url, "now": state.clock.now()})

    @router.route("POST", "/_emulator/tenants", "admin.tenants")
    def create_tenant(req: Request) -> Response:
        data = body_of(req)
        tid = str(data.get("tid") or uuid.uuid4()).lower()
        policy = data.get("consent_policy", "user")
        if policy not in CONSENT_POLICIES:
            raise bad_request(f"consent_policy must be one of {CONSENT_POLICIES}")
        kind = data.get("kind", "work")
        if kind not in ("work", "personal"):
            raise bad_request("kind must be work or personal")
        domain = data.get("domain") or f"t{tid[:8]}.onmicrosoft.example"
        if d.tenant(tid) is not None or d.tenant(domain) is not None:
            raise HTTPError(json_response(409, {"error": {"code": "Conflict", "message": "tenant exists"}}))
        tenant = d.add_tenant(Tenant(tid, domain, data.get("display_name", domain), policy, {}, kind))
        return json_response(201, tenant.to_dict())

    @router.route("GET", "/_emulator/tenants/{tid}", "admin.tenants")
    def read_tenant(req: Request, tid: str) -> Response:
        return json_response(200, get_tenant(tid).to_dict())

    @router.route("PATCH", "/_emulator/tenants/{tid}", "admin.tenants")
    def update_tenant(req: Request, tid: str) -> Response:
        tenant, data = get_tenant(tid), body_of(req)
        if "consent_policy" in data:
            if data["consent_policy"] not in CONSENT_POLICIES:
                raise bad_request(f"consent_policy must be one of {CONSENT_POLICIES}")
            tenant.consent_policy = data["consent_policy"]
        if "display_name" in data:
            tenant.display_name = str(data["display_name"])
        if "admin_consent_workflow" in data:
            tenant.admin_consent_workflow = bool(data["admin_consent_workflow"])
        if "exchange_online" in data:  # False: no Exchange Online in this tenant (emulator/graph_mailbox_state.py)
            if not isinstance(data["exchange_online"], bool):
                raise bad_request("exchange_online must be true or false")
            tenant.exchange_online = data["exchange_online"]
        return json_response(200, tenant.to_dict())

    @router.route("PUT", "/_emulator/tenants/{tid}/enterprise-apps/{client_id}", "admin.tenants")
    def set_enterprise_app(req: Request, tid: str, client_id: str) -> Response:
        # This tenant's admin deletes or disables the app's service principal (emulator/entra_tenant_apps.py).
        tenant, data = get_tenant(tid), body_of(req)
        if "state" not in data:
            raise bad_request('body must be {"state": "deleted" | "disabled" | null}')
        try:
            set_app_state(state, tenant, client_id, data["state"])
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        return json_response(200, tenant.to_dict())

    @router.route("POST", "/_emulator/tenants/{tid}/consent", "admin.consent")
    def grant_tenant_consent(req: Request, tid: str) -> Response:
        tenant, data = get_tenant(tid), body_of(req)
        client_id = str(data.get("client_id", "")).lower()
        with state.lock:
            tenant.admin_consented.setdefault(client_id, set()).update(_str_set(data.get("scopes"), "scopes"))
            consented_again(state, tenant, client_id)
        return json_response(200, tenant.to_dict())

    @router.route("DELETE", "/_emulator/tenants/{tid}/consent/{client_id}", "admin.consent")
    def revoke_tenant_consent(req: Request, tid: str, client_id: str) -> Response:
        tenant = get_tenant(tid)
        with state.lock:
            tenant.admin_consented.pop(client_id.lower(), None)
        return json_response(200, tenant.to_dict())

    @router.route("POST", "/_emulator/users", "admin.users")
    def create_user(req: Request) -> Response:
        data = body_of(req)
        tenant = get_tenant(str(data.get("tid", "")))
        upn = data.get("upn")
        if not isinstance(upn, str) or "@" not in upn:
            raise bad_request("upn (an address) is required")
        user = User(
            oid=str(data.get("oid") or uuid.uuid4()).lower(),
            tid=tenant.tid,
            upn=upn,
            mail=data.get("mail") or upn,
            display_name=data.get("display_name") or upn.split("@")[0],
            aliases=list(data.get("aliases") or []),
            is_shared=bool(data.get("is_shared", False)),
            password=str(data.get("password", "password")),
            send_as=_str_set(data.get("send_as"), "send_as"),
            send_on_behalf=_str_set(data.get("send_on_behalf"), "send_on_behalf"),
            full_access=_str_set(data.get("full_access"), "full_access"),
            failures=_failures(data.get("failures")),
            is_admin=bool(data.get("is_admin", False)),
            id_token_claims=_claims(data.get("id_token_claims")),
        )
        try:
            d.add_user(user)
        except ValueError as exc:
            raise HTTPError(json_response(409, {"error": {"code": "Conflict", "message": str(exc)}})) from None
        return json_response(201, user.to_dict())

    @router.route("GET", "/_emulator/users/{ident}", "admin.users")
    def read_user(req: Request, ident: str) -> Response:
        return json_response(200, get_user(ident).to_dict())

    @router.route("PATCH", "/_emulator/users/{ident}", "admin.users")
    def update_user(req: Request, ident: str) -> Response:
        user, data = get_user(ident), body_of(req)
        with state.lock:
            for name in ("send_as", "send_on_behalf", "full_access"):
                if name in data:
                    setattr(user, name, _str_set(data[name], name))
            if "failures" in data:
                user.failures = _failures(data["failures"])
            if "aliases" in data:
                user.aliases = list(data["aliases"])
            for name in ("display_name", "password"):
                if name in data:
                    setattr(user, name, str(data[name]))
            for name in ("is_shared", "is_admin"):
                if name in data:
                    setattr(user, name, bool(data[name]))
            if "id_token_claims" in data:
                user.id_token_claims = _claims(data["id_token_claims"])
        return json_response(200, user.to_dict())

    @router.route("POST", "/_emulator/users/{ident}/failures", "admin.failures")
    def set_failures(req: Request, ident: str) -> Response:
        user, data = get_user(ident), body_of(req)
        with state.lock:
            user.failures |= _failures(data.get("add"))
            user.failures -= _failures(data.get("remove"))
        return json_response(200, user.to_dict())

    @router.route("POST", "/_emulator/users/{ident}/revoke", "admin.revoke")
    def revoke(req: Request, ident: str) -> Response:
        # Password reset and "revoke sessions" both invalidate refresh tokens issued before now.
        user, data = get_user(ident), body_of(req)
        reason = data.get("reason", "revoke_sessions")
        if reason not in ("password_reset", "revoke_sessions"):
            raise bad_request("reason must be password_reset or revoke_sessions")
        with state.lock:
            user.tokens_valid_after = state.clock.now()
            user.revocation_reason = reason
        return json_response(200, user.to_dict())

    @router.route("POST", "/_emulator/users/{ident}/consent", "admin.consent")
    def grant_user_consent(req: Request, ident: str) -> Response:
        user, data = get_user(ident), body_of(req)
        with state.lock:
            client_id = str(data.get("client_id", "")).lower()
            user.consents.setdefault(client_id, set()).update(_str_set(data.get("scopes"), "scopes"))
            consented_again(state, d.tenant(user.tid), client_id)
        return json_response(200, user.to_dict())

    @router.route("DELETE", "/_emulator/users/{ident}/consent/{client_id}", "admin.consent")
    def revoke_user_consent(req: Request, ident: str, client_id: str) -> Response:
        user = get_user(ident)
        with state.lock:
            user.consents.pop(client_id.lower(), None)
        return json_response(200, user.to_dict())

    @router.route("POST", "/_emulator/apps", "admin.apps")
    def create_app(req: Request) -> Response:
        data = body_of(req)
        home = get_tenant(str(data.get("home_tid") or HOME_TENANT_ID))
        audience = data.get("sign_in_audience", "AzureADMultipleOrgs")
        if audience not in SIGN_IN_AUDIENCES:
            raise bad_request(f"sign_in_audience must be one of {SIGN_IN_AUDIENCES}")
        client_id = str(data.get("client_id") or uuid.uuid4()).lower()
        if state.apps.get(client_id) is not None:
            raise HTTPError(json_response(409, {"error": {"code": "Conflict", "message": "app exists"}}))
        app = App(
            client_id=client_id,
            home_tid=home.tid,
            display_name=str(data.get("display_name", "Mailbridge")),
            redirect_uris=list(data.get("redirect_uris") or []),
            sign_in_audience=audience,
            app_roles=list(data.get("app_roles") or []),
        )
        if data.get("api_permissions") is not None:
            app.api_permissions = list(data["api_permissions"])
        created = _add_credentials(state, app, data)
        state.apps.add(app)
        return json_response(201, {**app.to_dict(), "secrets": created})

    @router.route("GET", "/_emulator/apps/{client_id}", "admin.apps")
    def read_app(req: Request, client_id: str) -> Response:
        app = state.apps.get(client_id)
        if app is None:
            raise not_found(f"app {client_id}")
        return json_response(200, app.to_dict())

    @router.route("PATCH", "/_emulator/apps/{client_id}", "admin.apps")
    def update_app(req: Request, client_id: str) -> Response:
        app, data = state.apps.get(client_id), body_of(req)
        if app is None:
            raise not_found(f"app {client_id}")
        with state.lock:
            if "redirect_uris" in data:
                app.redirect_uris = list(data["redirect_uris"])
            if "sign_in_audience" in data:
                app.sign_in_audience = data["sign_in_audience"]
            if "api_permissions" in data:
                app.api_permissions = list(data["api_permissions"])
            if data.get("replace_secrets"):
                app.secrets = []
            created = _add_credentials(state, app, data)
        return json_response(200, {**app.to_dict(), "secrets": created})

    @router.route("POST", "/_emulator/identities", "admin.identities")
    def create_identity(req: Request) -> Response:
        data = body_of(req)
        tenant = get_tenant(str(data.get("tid") or HOME_TENANT_ID))
        identity = ManagedIdentity(
            client_id=str(data.get("client_id") or uuid.uuid4()).lower(),
            principal_id=str(data.get("principal_id") or uuid.uuid4()).lower(),
            tid=tenant.tid,
        )
        state.apps.add_identity(identity)
        return json_response(201, {**vars(identity), "issuer": issuer_for(state, tenant.tid)})

    @router.route("GET", "/_emulator/clock", "admin.clock")
    def read_clock(req: Request) -> Response:
        return json_response(200, {"now": state.clock.now(), "offset": state.clock.offset})

    @router.route("POST", "/_emulator/clock", "admin.clock")
    def move_clock(req: Request) -> Response:
        data = body_of(req)
        if data.get("reset"):
            state.clock.reset()
        elif isinstance(data.get("advance"), int | float):
            state.clock.advance(float(data["advance"]))
        else:
            raise bad_request('body must be {"advance": seconds} or {"reset": true}')
        return json_response(200, {"now": state.clock.now(), "offset": state.clock.offset})

    @router.route("GET", "/_emulator/faults", "admin.faults")
    def list_faults(req: Request) -> Response:
        return json_response(200, {"faults": [r.to_dict() for r in state.faults.rules()]})

    @router.route("POST", "/_emulator/faults", "admin.faults")
    def add_fault(req: Request) -> Response:
        data = body_of(req)
        try:
            rule = state.faults.add(
                str(data.get("endpoint", "")),
                str(data.get("kind", "")),
                rate=data.get("rate"),
                count=data.get("count"),
                retry_after=int(data.get("retry_after", 1)),
                latency_ms=int(data.get("latency_ms", 0)),
            )
        except (ValueError, TypeError) as exc:
            raise bad_request(str(exc)) from None
        return json_response(201, rule.to_dict())

    @router.route("DELETE", "/_emulator/faults", "admin.faults")
    def clear_faults(req: Request) -> Response:
        return json_response(200, {"removed": state.faults.clear(req.query.get("endpoint"))})

    @router.route("POST", "/_emulator/faults/seed", "admin.faults")
    def seed_faults(req: Request) -> Response:
        state.faults.seed(int(body_of(req).get("seed", 0)))
        return json_response(200, {"ok": True})

    @router.route("GET", "/_emulator/counters", "admin.counters")
    def read_counters(req: Request) -> Response:
        prefix = req.query.get("prefix", "")
        snap = {k: v for k, v in state.counters.snapshot().items() if k.startswith(prefix)}
        return json_response(200, {"counters": snap})

    @router.route("DELETE", "/_emulator/counters", "admin.counters")
    def reset_counters(req: Request) -> Response:
        state.counters.reset()
        return json_response(200, {"ok": True})

    @router.route("POST", "/_emulator/reset", "admin.reset")
    def reset(req: Request) -> Response:
        # Resets the knobs tests turn (faults, clock, counters); the directory stays (tests use fresh ids).
        state.faults.clear()
        state.clock.reset()
        state.counters.reset()
        return json_response(200, {"ok": True})

    @router.route("POST", "/_emulator/tokens/decode", "admin.tokens")
    def decode_token(req: Request) -> Response:
        token = str(body_of(req).get("token", ""))
        try:
            claims = state.keys.decode(token)
        except jwt.PyJWTError as exc:
            raise bad_request(f"not a token issued by this emulator: {exc}") from None
        return json_response(200, {"claims": claims})


def _claims(value: Any) -> dict[str, Any] | None:
    """A user's ID-token claim overrides (``{"preferred_username": "+1 425 555 0100", "email": null}``)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise bad_request("id_token_claims must be an object (a null value leaves that claim out) or null")
    return dict(value) or None


def _failures(value: Any) -> set[str]:
    failures = _str_set(value, "failures")
    unknown = failures - set(USER_FAILURES)
    if unknown:
        raise bad_request(f"unknown failures {sorted(unknown)}; known: {USER_FAILURES}")
    return failures


def _add_credentials(state: EmulatorState, app: App, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Add secrets / federated credentials from an admin body; returns the new secrets with values."""
    created = []
    for spec in data.get("secrets") or []:
        spec = spec if isinstance(spec, dict) else {"value": spec}
        expires_at = spec.get("expires_at")
        if expires_at is None and spec.get("expires_in_s") is not None:
            expires_at = state.clock.now() + float(spec["expires_in_s"])
        secret = ClientSecret(str(spec.get("value") or secrets.token_urlsafe(30)), expires_at)
        app.secrets.append(secret)
        created.append({"key_id": secret.key_id, "value": secret.value, "expires_at": secret.expires_at})
    for fic in data.get("federated_credentials") or []:
        if not isinstance(fic, dict) or not fic.get("issuer") or not fic.get("subject"):
            raise bad_request("federated credential needs issuer and subject")
        app.federated_credentials.append(
            FederatedCredential(
                str(fic["issuer"]),
                str(fic["subject"]),
                list(fic.get("audiences") or ["api://AzureADTokenExchange"]),
                str(fic.get("name", "fic")),
            )
        )
    return created
