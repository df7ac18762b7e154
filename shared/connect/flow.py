"""The connect flow (DESIGN flows 1-4, 7, 8): links, start, callback, admin consent, status, disconnect."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msal

from shared.base import errors
from shared.base.settings import _TENANT_RE
from shared.base.telemetry import log_outcome
from shared.connect.grants import GrantService
from shared.connect.id_tokens import IdTokenRules, require_valid
from shared.connect.tickets import check_return_url, issue_ticket, open_token, sign_token, verify_ticket
from shared.tokens.entra_errors import TOKEN_ENDPOINT_OUTAGES, classify, map_entra_error, token_endpoint_outage
from shared.tokens.scopes import missing_features
from shared.tokens.store import Connection

if TYPE_CHECKING:
    from shared.base.identity import MsalFactory
    from shared.base.settings import Settings
    from shared.base.storage import StorageClients
    from shared.tokens.app_credential import AppCredentialHealth
    from shared.tokens.cache_store import TokenCacheStore
    from shared.tokens.locks import ConnectionLocks
    from shared.tokens.store import ConnectionStore, FlowStore
    from shared.tokens.tokens import TokenService

logger = logging.getLogger(__name__)

# MSAL warns on every initiate_auth_code_flow that response_mode=form_post "is recommended". We use the
# query mode on purpose: Entra's form_post is a cross-site POST, which does not carry the SameSite=Lax
# browser-binding cookie the callback checks (RFC 9700 §4.3.1's concern, leaking the code via the URL, is
# covered by PKCE, the single-use state and Referrer-Policy: no-referrer on every answer of ours).
warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended", category=UserWarning)

_PROMPTS = {"login", "consent", "select_account", "none"}
_ADMIN_CONSENT_PURPOSE = "admin-consent-state"
FLOW_TTL_SECONDS = 600


@dataclass(frozen=True)
class BrowserStep:
    """Where to send the browser, and the Set-Cookie header value to send with it (if any)."""

    location: str
    set_cookie: str | None = None


@dataclass(frozen=True)
class AdminConsentOutcome:
    """Entra's admin-consent answer as Mailbridge understood it: the allow-listed return URL (None: show a page),
    the result parameters, and the Set-Cookie value clearing the browser-binding cookie."""

    return_url: str | None
    result: dict[str, str]
    clear_cookie: str


def parse_cookies(header: str | None) -> dict[str, str]:
    """Cookie name -> value from a request's Cookie header, parsed as RFC 6265 §5.4 says a browser builds it
    (``name=value`` pairs joined by ``;``; the first of a repeated name wins). Lenient on purpose: behind a custom
    domain (``mail.example.com``) the browser also sends the parent domain's cookies, and one of them with a JSON
    value, a space or a non-ASCII character made ``http.cookies.SimpleCookie`` drop the whole header, so every
    sign-in in that browser failed ``invalid_state`` (and any subdomain could set such a cookie on purpose)."""
    cookies: dict[str, str] = {}
    for pair in (header or "").split(";"):
        name, sep, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if sep and name and name not in cookies:
            cookies[name] = value
    return cookies


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query string (existing parameters kept)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


class LastUse(Protocol):
    """When a connection last took a message (the send path's delivery records answer it)."""

    def last_logged_at(self, connection_id: str) -> float | None: ...


class WaitingMessages(Protocol):
    """Finishes a disconnected connection's waiting messages (the send path's intake answers it)."""

    def finish_waiting(self, connection_id: str) -> int: ...


class ConnectServices(Protocol):
    """What the connect flow uses of the composition root (shared.services.Services provides it)."""

    settings: Settings
    storage: StorageClients
    clock: Callable[[], float]
    connections: ConnectionStore
    flows: FlowStore
    msal: MsalFactory
    token_caches: TokenCacheStore
    locks: ConnectionLocks
    tokens: TokenService
    app_credential: AppCredentialHealth
    deliveries: LastUse
    waiting_messages: WaitingMessages


class ConnectService:
    def __init__(self, services: ConnectServices) -> None:
        self.s = services
        self.settings = services.settings

    @property
    def callback_url(self) -> str:
        return f"{self.settings.public_base_url}/api/connect/callback"

    @property
    def admin_callback_url(self) -> str:
        return f"{self.settings.public_base_url}/api/admin-consent/callback"

    # 1. connect link ----------------------------------------------------------------------------------
    def create_link(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.InvalidRequest("The body must be a JSON object.")
        user_ref = body.get("user_ref")
        if not isinstance(user_ref, str) or not user_ref.strip() or len(user_ref) > 256:
            raise errors.InvalidRequest("user_ref is required: a string of 1-256 characters.")
        return_url = check_return_url(body.get("return_url"), self.settings.allowed_return_origins)
        hints = {}
        for key in ("login_hint", "domain_hint"):
            value = body.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > 256 or "\n" in value):
                raise errors.InvalidRequest(f"{key} must be a string of at most 256 characters.")
            hints[key] = value
        prompt = body.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or prompt not in _PROMPTS):
            raise errors.InvalidRequest(f"prompt must be one of {sorted(_PROMPTS)}.")
        reconnect = body.get("connection_id")
        if reconnect is not None:
            if not isinstance(reconnect, str) or len(reconnect) > 64:
                raise errors.InvalidRequest("connection_id must be a connection id string.")
            existing = self.s.connections.get(reconnect)
            if existing.user_ref != user_ref:
                raise errors.NotFound(f"No connection {reconnect} for this user_ref.")
            hints["login_hint"] = hints.get("login_hint") or existing.mailbox or None
        token, ticket = issue_ticket(
            self.settings.ticket_signing_key,
            user_ref=user_ref,
            return_url=return_url,
            prompt=prompt,
            connection_id=reconnect,
            **hints,
        )
        connect_url = f"{self.settings.public_base_url}/api/connect/start?{urlencode({'ticket': token})}"
        return {"connect_url": connect_url, "expires_at": _iso(ticket.expires_at)}

    # 2. start -----------------------------------------------------------------------------------------
    # Browser binding (RFC 6749 §10.12, RFC 9700 §4.7): start sets a per-flow cookie whose hash the flow
    # keeps; the callback must come from the browser holding it. A forwarded sign-in URL is then useless.
    def _cookie_name(self, state: str) -> str:
        prefix = "__Host-" if self._secure_cookies else ""
        return f"{prefix}mb_connect_{self.s.flows.binding_cookie_suffix(state)}"

    @property
    def _secure_cookies(self) -> bool:
        # Only a plain-http loopback PUBLIC_BASE_URL (the local stack) goes without Secure / __Host-.
        return urlsplit(self.settings.public_base_url).scheme == "https"

    def _cookie(self, name: str, value: str, max_age: int) -> str:
        secure = "; Secure" if self._secure_cookies else ""
        return f"{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"

    def start(self, ticket_token: str | None) -> BrowserStep:
        """Verify and burn the ticket, start an MSAL auth code flow (PKCE S256, state, nonce) bound to this
        browser by a cookie; the authorize URL to redirect to, with the cookie."""
        ticket = verify_ticket(self.settings.ticket_signing_key, ticket_token)
        self.s.flows.claim_ticket(ticket.ticket_id, ticket.expires_at)
        flow = self.s.msal.app().initiate_auth_code_flow(
            self.settings.graph_scopes,
            redirect_uri=self.callback_url,
            login_hint=ticket.login_hint,
            domain_hint=ticket.domain_hint,
            prompt=ticket.prompt,
        )
        binding = secrets.token_urlsafe(32)
        record: dict[str, Any] = {
            "flow": flow,
            "user_ref": ticket.user_ref,
            "return_url": ticket.return_url,
            "binding": _digest(binding),
        }
        if ticket.connection_id:
            existing = self.s.connections.get(ticket.connection_id)
            record["expected"] = {"tid": existing.tenant_id, "oid": existing.object_id}
            record["reconnect_id"] = existing.connection_id
        self.s.flows.put(flow["state"], "connect", record)
        cookie = self._cookie(self._cookie_name(flow["state"]), binding, FLOW_TTL_SECONDS)
        return BrowserStep(flow["auth_uri"], cookie)

    # 3. callback --------------------------------------------------------------------------------------
    def callback(self, query: dict[str, str], cookies: dict[str, str]) -> BrowserStep:
        """Finish the flow started in *this* browser; the step to the return URL: ``status=connected&result=``
        (a pending grant the backend must claim) or ``status=error&error=<code>``. InvalidState (nothing
        consumed) when no flow matches or the binding cookie is missing or different."""
        state = query.get("state")
        cookie_name = self._cookie_name(state) if isinstance(state, str) and state else ""

        def same_browser(record: dict[str, Any]) -> None:
            sent = cookies.get(cookie_name)
            expected = record.get("binding")
            if not sent or not isinstance(expected, str) or not hmac.compare_digest(_digest(sent), expected):
                logger.warning("Connect callback refused: invalid_state (the flow's browser-binding cookie is missing)")
                log_outcome("connect", "failed", code="invalid_state")
                raise errors.InvalidState(detail="callback from another browser than the one that started")

        record = self.s.flows.consume(state, "connect", check=same_browser)
        clear = self._cookie(cookie_name, "", 0)
        return_url = record["return_url"]
        try:
            result = self._finish(record, query)
        except errors.ConnectError as exc:
            # The detail may carry the callback's own ``error`` value: repr() it so it cannot forge log lines.
            logger.info("Connect failed for a user: %s (%r)", exc.code, (exc.detail or "")[:200])
            log_outcome("connect", "failed", code=exc.code, connection_id=record.get("reconnect_id"))
            self._remember_failure(record, exc)
            params = {"status": "error", "error": exc.code, "error_description": exc.message}
            if isinstance(exc, errors.AdminConsentRequired):
                params["admin_consent_url"] = self.admin_consent_entry_url(None)
            return BrowserStep(with_query(return_url, params), clear)
        except errors.TransientError as exc:
            logger.warning("Connect failed for a user: %s (%r)", exc.code, (exc.detail or "")[:200])
            log_outcome("connect", "failed", code="temporarily_unavailable", connection_id=record.get("reconnect_id"))
            params = {"status": "error", "error": "temporarily_unavailable", "error_description": exc.message}
            return BrowserStep(with_query(return_url, params), clear)
        return BrowserStep(with_query(return_url, {"status": "connected", "result": result}), clear)

    def _remember_failure(self, record: dict[str, Any], exc: errors.MailbridgeError) -> None:
        """A failed re-authorisation of an existing connection shows in its status (last_error)."""
        reconnect_id = record.get("reconnect_id")
        if not reconnect_id:
            return
        conn = self.s.connections.find(reconnect_id)
        if conn is not None:
            conn.last_error_code, conn.last_error_message, conn.last_error_reason = exc.code, exc.message, None
            self.s.connections.save(conn)

    def _finish(self, record: dict[str, Any], query: dict[str, str]) -> str:
        """Redeem the code and park the grant; the one-time result code for the return URL."""
        if query.get("error"):
            err = map_entra_error(query, during="connect")
            raise err if isinstance(err, (errors.ConnectError, errors.TransientError)) else errors.InteractionRequired()
        flow = record.get("flow")
        if not isinstance(flow, dict) or not all(
            isinstance(flow.get(k), str) and flow.get(k) for k in ("state", "code_verifier", "nonce", "redirect_uri")
        ):
            # MSAL would raise KeyError (or send no PKCE verifier / check no nonce) for an incomplete flow.
            raise errors.InvalidState(detail="the stored flow is incomplete")
        cache = msal.SerializableTokenCache()
        # Its own MSAL throttling state: MSAL keys a 5xx/429 of an auth-code redemption without the user,
        # so a shared http_cache would fail every other user's connect for Retry-After seconds.
        app = self.s.msal.app(token_cache=cache, http_cache={})
        try:
            result = app.acquire_token_by_auth_code_flow(flow, query, scopes=self.settings.graph_scopes)
        except (ValueError, RuntimeError) as exc:  # MSAL's state/CSRF checks (ValueError), nonce check (RuntimeError)
            raise errors.InvalidState(detail="the response did not match the flow") from exc
        except TOKEN_ENDPOINT_OUTAGES as exc:
            raise token_endpoint_outage(exc) from exc
        if "error" in result:
            err = map_entra_error(result, during="connect")
            if classify(result) == "operator":
                # The app's own credential was refused: health says so until a refresh succeeds (shared state).
                self.s.app_credential.failed(errors.AppCredentialFailed(detail=err.detail))
            raise err if isinstance(err, (errors.ConnectError, errors.TransientError)) else errors.InteractionRequired()
        claims = result.get("id_token_claims") or {}
        # MSAL checked the nonce only; the rest of the token is ours to check (connect/id_tokens.py). The rules come
        # from what MSAL discovered for the authority: a domain ENTRA_TENANT is pinned by its tenant id too.
        authority = app.authority
        rules = IdTokenRules.for_authority(
            client_id=self.settings.entra_client_id,
            authority_host=self.settings.authority_host,
            entra_tenant=self.settings.entra_tenant,
            discovered_tenant=getattr(authority, "tenant", None),
            metadata_issuer=getattr(authority, "_issuer", None),  # MSAL keeps the metadata's issuer here
        )
        tid, oid = require_valid(claims, rules, self.s.clock())
        expected = record.get("expected") or {}
        if expected and (expected.get("tid") != tid or expected.get("oid") != oid):
            raise errors.IdentityMismatch(detail="a different account signed in than the one being reconnected")
        granted = set((result.get("scope") or "").split())
        missing = [s for s in self.settings.graph_scopes if s not in granted and s.split("/")[-1] not in granted]
        if missing:
            raise errors.AdminConsentRequired(detail=f"scopes not granted: {' '.join(missing)}")
        # What was asked and granted: a refresh may ask no more than the authorization request did (tokens/scopes.py),
        # even when Entra's answer names more (every permission consented for the resource).
        asked = [s.rsplit("/", 1)[-1].lower() for s in self.settings.graph_scopes]
        return GrantService(self.s).create(
            user_ref=record["user_ref"],
            claims=claims,
            scopes=sorted(s for s in granted if s.rsplit("/", 1)[-1].lower() in asked),
            cache_text=cache.serialize(),
            reconnect_id=record.get("reconnect_id"),
        )

    def claim(self, body: Any) -> dict[str, Any]:
        """The backend claims a connect result for the user signed in on its side (module shared/connect/grants.py)."""
        try:
            conn = GrantService(self.s).claim(body)
        except errors.MailbridgeError as exc:
            log_outcome("connect", "failed", code=exc.code)
            raise
        log_outcome("connect", "connected", connection_id=conn.connection_id)
        return conn.public_view(features_missing=self._features_missing(conn))

    def purge_expired(self, now: float | None = None) -> dict[str, int]:
        """Housekeeping: expired flows and used tickets, unclaimed grants (with their Key Vault secret)."""
        return {"flows": self.s.flows.purge_expired(now), "grants": GrantService(self.s).purge(now)}

    # 4. admin consent -----------------------------------------------------------------------------------
    def admin_consent_entry_url(self, tenant: str | None) -> str:
        base = f"{self.settings.public_base_url}/api/admin-consent"
        return f"{base}?{urlencode({'tenant': tenant})}" if tenant else base

    def _admin_cookie_name(self, state_id: str) -> str:
        prefix = "__Host-" if self._secure_cookies else ""
        return f"{prefix}mb_admin_consent_{hashlib.sha256(b'admin-cookie:' + state_id.encode()).hexdigest()[:12]}"

    def admin_consent_start(self, tenant: str | None, return_url: str | None) -> BrowserStep:
        """The v2 adminconsent URL for ``tenant`` (a tenant id/domain or ``organizations``; never ``common``),
        with the cookie that binds the answer to this browser."""
        tenant = (tenant or "organizations").strip()
        if tenant.lower() in {"common", "consumers"}:
            raise errors.InvalidRequest("Admin consent needs your tenant id or domain (or 'organizations').")
        if not _TENANT_RE.match(tenant):
            raise errors.InvalidRequest("tenant must be a tenant id, a verified domain or 'organizations'.")
        if return_url:
            check_return_url(return_url, self.settings.allowed_return_origins)
        # The state is signed, not stored: an anonymous caller looping on this route writes nothing. It names a
        # one-time id (``n``: the answer burns it in Storage) and the hash of a cookie set on this browser only
        # (``b``: a forwarded or leaked callback URL is useless elsewhere), as the connect flow's state does.
        binding, state_id = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        expires_at = int(self.s.clock()) + FLOW_TTL_SECONDS
        payload = {"t": tenant, "ret": return_url, "exp": expires_at, "n": state_id, "b": _digest(binding)}
        state = sign_token(self.settings.ticket_signing_key, _ADMIN_CONSENT_PURPOSE, payload)
        # ``/.default``: the registration's whole permission list (OIDC scopes included), so users of an
        # approved tenant see no prompt. A dynamic list grants only what it names (v2-admin-consent).
        scope = f"{self.settings.cloud.graph_resource}/.default"
        params = {
            "client_id": self.settings.entra_client_id,
            "scope": scope,
            "redirect_uri": self.admin_callback_url,
            "state": state,
        }
        location = f"{self.settings.authority_host}/{tenant}/v2.0/adminconsent?{urlencode(params)}"
        return BrowserStep(location, self._cookie(self._admin_cookie_name(state_id), binding, FLOW_TTL_SECONDS))

    def admin_consent_callback(self, query: dict[str, str], cookies: dict[str, str]) -> AdminConsentOutcome:
        """Entra's answer to an admin-consent request this browser started: where to go and what to say.

        The state is single use (burnt in Storage, so two instances cannot both accept it) and bound to the
        browser that started it; a replay or another browser gets InvalidState. What Entra sends back
        (``admin_consent=True&tenant&scope&state``, v2-admin-consent "Successful response") is not
        authentication: it is a plain redirect anyone who started a request can type, so ``tenant`` must not be
        trusted to authenticate anyone. This reports what Entra *reported*, and keeps nothing but the one-time
        "answered" row."""
        record = open_token(self.settings.ticket_signing_key, _ADMIN_CONSENT_PURPOSE, query.get("state"))
        if record is None or float(record.get("exp", 0)) < self.s.clock():
            raise errors.InvalidState(detail="unknown or expired admin-consent state")
        state_id, expected = record.get("n"), record.get("b")
        if not isinstance(state_id, str) or not isinstance(expected, str):
            # A state signed before single use and browser binding existed (they live 10 minutes).
            raise errors.InvalidState(detail="admin-consent state without a one-time id")
        cookie_name = self._admin_cookie_name(state_id)
        sent = cookies.get(cookie_name)
        if not sent or not hmac.compare_digest(_digest(sent), expected):
            logger.warning("Admin-consent callback refused: invalid_state (the browser-binding cookie is missing)")
            raise errors.InvalidState(
                "This approval response belongs to another browser. Open the admin consent link again in this one.",
                detail="admin-consent callback from another browser than the one that started",
            )
        self.s.flows.claim_admin_consent_state(state_id, float(record["exp"]))
        clear = self._cookie(cookie_name, "", 0)
        return_url = record.get("ret")
        if query.get("error"):
            err = map_entra_error(query, during="connect")
            code = "admin_consent_declined" if isinstance(err, errors.UserDeclined) else err.code
            result = {"status": "error", "error": code, "error_description": err.message}
            return AdminConsentOutcome(return_url, result, clear)
        tenant, asked = query.get("tenant"), str(record.get("t", ""))
        if (
            str(query.get("admin_consent", "")).lower() != "true"
            or not _is_tenant_id(tenant)
            or (_is_tenant_id(asked) and asked.lower() != str(tenant).lower())
        ):
            # Entra answers with the tenant id (a GUID), the very one asked for when a GUID was asked for;
            # anything else is not its answer (and never echoed).
            return AdminConsentOutcome(return_url, {"status": "error", "error": "invalid_state"}, clear)
        # Logged, not stored: the value is what Entra's redirect said, which anyone who started a request could
        # have typed. Entra's own record of the grant is what counts (Enterprise applications -> Permissions).
        logger.info("Entra reported admin consent for tenant %s", tenant)
        return AdminConsentOutcome(return_url, {"status": "admin_consented", "tenant": str(tenant)}, clear)

    # 7/8. status, list, disconnect --------------------------------------------------------------------
    def _view(self, conn: Connection) -> dict[str, Any]:
        """The status API's view, ``last_used_at`` from the outgoing log (the send path does not write it)."""
        return conn.public_view(
            last_used_at=self.s.deliveries.last_logged_at(conn.connection_id),
            features_missing=self._features_missing(conn),
        )

    def _features_missing(self, conn: Connection) -> list[str]:
        """Features switched on since this grant was made: it keeps working without them until a reconnect."""
        return missing_features(self.settings.graph_scopes, conn.scopes) if conn.status == "connected" else []

    def status(self, connection_id: str, user_ref: str | None = None) -> dict[str, Any]:
        """One connection; with ``user_ref``, another user's connection is not found (ConnectionStore.get)."""
        return self._view(self.s.connections.get(connection_id, user_ref=user_ref))

    def list_for_user(self, user_ref: str | None, include: str | None = None) -> dict[str, Any]:
        """A user's connections, oldest first; disconnected ones only with ``include=disconnected``."""
        if not user_ref or len(user_ref) > 256:
            raise errors.InvalidRequest("user_ref query parameter is required.")
        if include not in (None, "", "disconnected"):
            raise errors.InvalidRequest("include may only be 'disconnected'.")
        conns = [c for c in self.s.connections.for_user(user_ref) if include or c.status != "disconnected"]
        return {"user_ref": user_ref, "connections": [self._view(c) for c in conns]}

    def update(self, connection_id: str, body: Any, user_ref: str | None = None) -> dict[str, Any]:
        """``PATCH /api/connections/{id}``: ``{"is_default": true}`` makes it the user's default mailbox
        (the others of that user_ref stop being default). Only a connected connection can be the default."""
        if not isinstance(body, dict) or set(body) != {"is_default"} or body["is_default"] is not True:
            raise errors.InvalidRequest('The body must be {"is_default": true}.')
        conn = self.s.connections.get(connection_id, user_ref=user_ref)
        if conn.status != "connected":
            raise errors.Conflict(f"Connection {connection_id} is {conn.status}: only a connected one can be default.")
        for other in self.s.connections.for_user(conn.user_ref):
            if other.is_default and other.connection_id != connection_id:
                other.is_default = False
                self.s.connections.save(other)
        if not conn.is_default:
            conn.is_default = True
            self.s.connections.save(conn)
        return self._view(conn)

    def disconnect(self, connection_id: str, user_ref: str | None = None) -> dict[str, Any]:
        conn = self.s.connections.get(connection_id, user_ref=user_ref)
        if conn.status != "disconnected":
            with self.s.locks.hold(connection_id):
                conn = self.s.connections.get(connection_id)
                self.s.token_caches.delete(conn.secret_name)
                conn.status = "disconnected"
                conn.is_default = False
                self.s.connections.set_refresh_due(conn, None)
                self.s.connections.save(conn)
                self.s.tokens.forget(connection_id)
            # Scheduled, paced and held messages end now, not when each comes due (up to 30 days for send_at).
            finished = self.s.waiting_messages.finish_waiting(connection_id)
            logger.info("Connection %s: %d waiting messages finished by the disconnect", connection_id, finished)
        logger.info("Connection %s disconnected", connection_id)
        return conn.public_view()


_TENANT_ID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _is_tenant_id(value: object) -> bool:
    return isinstance(value, str) and bool(_TENANT_ID_RE.fullmatch(value))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
