"""Python client for the emulator's test-only admin API (``/_emulator/...``)."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests


class EmulatorAdminError(RuntimeError):
    """An admin call failed; carries the HTTP status and body."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"emulator admin call failed: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class EmulatorAdmin:
    """Wraps a strict ``requests.Session`` (no env proxies/CA overrides, verify=the emulator CA)."""

    def __init__(self, base_url: str, ca_file: str | Any) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_file = str(ca_file)
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = self.ca_file

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        resp = self.session.request(method, f"{self.base_url}{path}", json=json, params=params, timeout=30)
        if resp.status_code >= 400:
            raise EmulatorAdminError(resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        """``GET /_emulator/health``."""
        return self._call("GET", "/_emulator/health")

    # -- tenants ----------------------------------------------------------------------------
    def create_tenant(self, consent_policy: str = "user", kind: str = "work", **fields: Any) -> dict[str, Any]:
        """Create a tenant (``tid``, ``domain``, ``display_name`` optional); returns it."""
        return self._call("POST", "/_emulator/tenants", {"consent_policy": consent_policy, "kind": kind, **fields})

    def tenant(self, tid: str) -> dict[str, Any]:
        """Read a tenant by id or domain."""
        return self._call("GET", f"/_emulator/tenants/{tid}")

    def set_consent_policy(self, tid: str, policy: str) -> dict[str, Any]:
        """``user`` | ``admin_required`` | ``blocked``."""
        return self._call("PATCH", f"/_emulator/tenants/{tid}", {"consent_policy": policy})

    def grant_admin_consent(self, tid: str, client_id: str, scopes: list[str]) -> dict[str, Any]:
        """Record tenant-wide (admin) consent for ``client_id`` to ``scopes``."""
        return self._call("POST", f"/_emulator/tenants/{tid}/consent", {"client_id": client_id, "scopes": scopes})

    def revoke_admin_consent(self, tid: str, client_id: str) -> dict[str, Any]:
        """Remove tenant-wide consent for an app."""
        return self._call("DELETE", f"/_emulator/tenants/{tid}/consent/{client_id}")

    # -- isolation faults (issue 25, docs/emulator.md) ------------------------------------
    def set_enterprise_app(self, tid: str, client_id: str, state: str | None) -> dict[str, Any]:
        """Tenant ``tid``'s admin deletes (``"deleted"``) or disables (``"disabled"``) the app's enterprise app, or
        ``None`` restores it: that tenant's users' token requests answer AADSTS700016 / AADSTS7000112."""
        return self._call("PUT", f"/_emulator/tenants/{tid}/enterprise-apps/{client_id}", {"state": state})

    def set_exchange_online(self, tid: str, enabled: bool) -> dict[str, Any]:
        """``False``: the tenant has no Exchange Online (Graph mail calls answer 401
        OrganizationFromTenantGuidNotFound)."""
        return self._call("PATCH", f"/_emulator/tenants/{tid}", {"exchange_online": enabled})

    def set_mailbox_state(self, address: str, state: str | None, status: int | None = None) -> dict[str, Any]:
        """Put one mailbox in a refusal state (``not_enabled``, ``submission_blocked``, ``account_suspended``,
        ``quota_exceeded``, ``recipient_quota``, ``message_limit``, ``restricted_sender``) or ``None`` to clear it;
        ``status`` overrides the HTTP status where Microsoft's is unconfirmed. Returns the mailbox summary."""
        if state is None:
            return self._call("DELETE", f"/_emulator/mailboxes/{address}/state")
        body: dict[str, Any] = {"state": state}
        if status is not None:
            body["status"] = status
        return self._call("PUT", f"/_emulator/mailboxes/{address}/state", body)

    def set_id_token_claims(self, ident: str, claims: dict[str, Any] | None) -> dict[str, Any]:
        """Claims laid over this user's ID tokens, e.g. ``{"preferred_username": "+14255550100", "email": None}``
        (``None`` as a value leaves the claim out); ``claims=None`` clears them."""
        return self.update_user(ident, id_token_claims=claims)

    # -- users ------------------------------------------------------------------------------
    def create_user(self, tid: str, upn: str, **fields: Any) -> dict[str, Any]:
        """Create a user/mailbox. Fields: mail, display_name, aliases, is_shared, password, is_admin,
        send_as / send_on_behalf / full_access (lists of oids allowed), failures, oid."""
        return self._call("POST", "/_emulator/users", {"tid": tid, "upn": upn, **fields})

    def user(self, ident: str) -> dict[str, Any]:
        """Read a user by oid or any address."""
        return self._call("GET", f"/_emulator/users/{ident}")

    def update_user(self, ident: str, **fields: Any) -> dict[str, Any]:
        """Replace the given fields (grants, aliases, failures, display_name, password, flags)."""
        return self._call("PATCH", f"/_emulator/users/{ident}", fields)

    def set_failures(self, ident: str, add: list[str] | None = None, remove: list[str] | None = None) -> dict:
        """Add/remove scripted failures: mfa_required, ca_block, consent_revoked, password_reset, disabled."""
        return self._call("POST", f"/_emulator/users/{ident}/failures", {"add": add or [], "remove": remove or []})

    def revoke_sessions(self, ident: str) -> dict[str, Any]:
        """Admin "revoke sessions": refresh tokens issued before now fail (AADSTS70008)."""
        return self._call("POST", f"/_emulator/users/{ident}/revoke", {"reason": "revoke_sessions"})

    def password_reset(self, ident: str) -> dict[str, Any]:
        """Admin password reset: refresh tokens issued before now fail (AADSTS50173)."""
        return self._call("POST", f"/_emulator/users/{ident}/revoke", {"reason": "password_reset"})

    def grant_user_consent(self, ident: str, client_id: str, scopes: list[str]) -> dict[str, Any]:
        """Record that the user consented to ``scopes`` for ``client_id``."""
        return self._call("POST", f"/_emulator/users/{ident}/consent", {"client_id": client_id, "scopes": scopes})

    def revoke_user_consent(self, ident: str, client_id: str) -> dict[str, Any]:
        """The user removes the app from My Apps: refresh fails with AADSTS65001."""
        return self._call("DELETE", f"/_emulator/users/{ident}/consent/{client_id}")

    # -- apps and identities ----------------------------------------------------------------
    def register_app(self, **fields: Any) -> dict[str, Any]:
        """Register an app. Fields: client_id, home_tid, display_name, redirect_uris, sign_in_audience,
        secrets ([{"value", "expires_in_s"|"expires_at"}] or strings), federated_credentials
        ([{"issuer","subject","audiences"}]). The response lists created secret values once."""
        return self._call("POST", "/_emulator/apps", fields)

    def app(self, client_id: str) -> dict[str, Any]:
        """Read an app registration (no secret values)."""
        return self._call("GET", f"/_emulator/apps/{client_id}")

    def update_app(self, client_id: str, **fields: Any) -> dict[str, Any]:
        """Change redirect_uris / sign_in_audience, add secrets or federated credentials
        (``replace_secrets=True`` drops the old secrets first)."""
        return self._call("PATCH", f"/_emulator/apps/{client_id}", fields)

    def create_managed_identity(self, tid: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a user-assigned managed identity; returns client_id, principal_id, tid, issuer."""
        body = {"tid": tid, **fields} if tid else fields
        return self._call("POST", "/_emulator/identities", body)

    # -- clock, faults, counters ------------------------------------------------------------
    def clock(self) -> dict[str, Any]:
        """``{"now": epoch seconds, "offset": seconds}``."""
        return self._call("GET", "/_emulator/clock")

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator clock forward."""
        return self._call("POST", "/_emulator/clock", {"advance": seconds})

    def reset_clock(self) -> dict[str, Any]:
        """Back to real time."""
        return self._call("POST", "/_emulator/clock", {"reset": True})

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        rate: float | None = None,
        count: int | None = None,
        retry_after: int = 1,
        latency_ms: int = 0,
    ) -> dict[str, Any]:
        """Inject ``kind`` (429, 500, 503, 504_after, reset, latency) on endpoints matching a glob."""
        body = {"endpoint": endpoint, "kind": kind, "rate": rate, "count": count}
        body.update(retry_after=retry_after, latency_ms=latency_ms)
        return self._call("POST", "/_emulator/faults", body)

    def faults(self) -> list[dict[str, Any]]:
        """Active fault rules."""
        return self._call("GET", "/_emulator/faults")["faults"]

    def clear_faults(self, endpoint: str | None = None) -> int:
        """Remove all fault rules (or those with this exact endpoint glob)."""
        return self._call("DELETE", "/_emulator/faults", params={"endpoint": endpoint} if endpoint else None)["removed"]

    def seed_faults(self, seed: int) -> None:
        """Re-seed the RNG behind ``rate`` faults."""
        self._call("POST", "/_emulator/faults/seed", {"seed": seed})

    def counters(self, prefix: str = "") -> dict[str, int]:
        """Counters whose name starts with ``prefix`` (e.g. ``calls.entra.``)."""
        return self._call("GET", "/_emulator/counters", params={"prefix": prefix})["counters"]

    def reset_counters(self) -> None:
        """Zero all counters (affects other tests; prefer comparing before/after)."""
        self._call("DELETE", "/_emulator/counters")

    def reset(self) -> None:
        """Clear faults, reset the clock and counters (the directory is kept)."""
        self._call("POST", "/_emulator/reset")

    def decode_token(self, token: str) -> dict[str, Any]:
        """Claims of a token this emulator issued (debugging/tests only; app code treats tokens as opaque)."""
        return self._call("POST", "/_emulator/tokens/decode", {"token": token})["claims"]

    # -- Entra -----------------------------------------------------------------------------
    def entra_settings(self, **fields: Any) -> dict[str, Any]:
        """Read (no fields) or change the Entra knobs: access_token_lifetime_s, code_lifetime_s,
        refresh_idle_s, id_token_claims (laid over every id_token), id_token_lifetime_s (negative: expired),
        refresh_scope_rule ("consent" | "grant": what a refresh may ask for), reset."""
        if fields:
            return self._call("POST", "/_emulator/entra", fields)
        return self._call("GET", "/_emulator/entra")

    # -- Key Vault --------------------------------------------------------------------------
    def keyvault_config(self, **fields: Any) -> dict[str, Any]:
        """Read (no fields) or change the vault settings: tenant_id, ops_limit, window_s, allowed_principals,
        role_assignments ({oid or appid: [built-in role names]}, None = no RBAC model), purge_protection,
        retention_days, limits (Microsoft's service limits), limits_scale, retry_after, reset."""
        if fields:
            return self._call("POST", "/_emulator/keyvault", fields)
        return self._call("GET", "/_emulator/keyvault")

    def keyvault_audit(self, **filters: Any) -> dict[str, Any]:
        """The vault's audit log ``{"value": [...], "count"}``; filters: since (sequence number), principal
        (oid or appid), operation (operationName, comma-separated), name (secret or key name)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._call("GET", "/_emulator/keyvault/audit", params=params or None)

    def clear_keyvault_audit(self) -> int:
        """Empty the audit log (affects other tests; prefer ``since``)."""
        return self._call("DELETE", "/_emulator/keyvault/audit")["removed"]

    def keyvault_stats(self) -> dict[str, Any]:
        """Calls admitted per kind (read, write, wrap, unwrap), throttled calls per budget, window usage."""
        return self._call("GET", "/_emulator/keyvault/stats")

    # -- non-interactive sign-in ------------------------------------------------------------
    def complete_authorize(
        self,
        auth_uri: str,
        username: str,
        *,
        action: str = "accept",
        password: str | None = None,
        on_admin_approval: str = "back",
        justification: str = "",
    ) -> str:
        """Submit the emulator's sign-in (and consent) for ``auth_uri`` as ``username``.

        When the organisation needs admin approval, the "Need admin approval" page is answered with
        ``on_admin_approval`` (``back``, or ``request`` under the admin consent workflow).
        Returns the redirect URL (the app's redirect_uri with ``code``/``state`` or ``error``).
        Raises :class:`EmulatorAdminError` when the emulator shows an error page instead.
        """
        form = {"username": username, "action": action}
        if password is not None:
            form["password"] = password
        resp = self.session.post(auth_uri, data=form, allow_redirects=False, timeout=30)
        if resp.status_code == 200 and 'id="need-admin-approval"' in resp.text:
            form = {**form, "action": on_admin_approval, "justification": justification}
            resp = self.session.post(auth_uri, data=form, allow_redirects=False, timeout=30)
        if resp.status_code not in (302, 303) or "Location" not in resp.headers:
            # Surface the page's error line (e.g. "AADSTS50034: ...") rather than the whole HTML.
            found = re.search(r"id=['\"]error['\"][^>]*>(.*?)</p>", resp.text, re.S)
            raise EmulatorAdminError(resp.status_code, html.unescape(found.group(1)) if found else resp.text)
        return resp.headers["Location"]

    @staticmethod
    def query_of(url: str) -> dict[str, str]:
        """The query parameters of a redirect URL (what MSAL's ``auth_response`` expects)."""
        return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))

    # --- Graph admin (E2) ---

    def mailboxes(self, tid: str | None = None) -> list[dict[str, Any]]:
        """Every mailbox of the directory (optionally one tenant) with Sent Items/Drafts counts."""
        return self._call("GET", "/_emulator/mailboxes", params={"tid": tid} if tid else None)["mailboxes"]

    def sent_items(self, address: str, key: str | None = None) -> list[dict[str, Any]]:
        """Full Sent Items of a mailbox (headers, extended properties, attachment sha256 ...),
        optionally only those carrying client idempotency key ``key``."""
        params = {"key": key} if key is not None else None
        return self._call("GET", f"/_emulator/mailboxes/{address}/sentitems", params=params)["value"]

    def drafts(self, address: str, key: str | None = None) -> list[dict[str, Any]]:
        """Full Drafts folder of a mailbox."""
        params = {"key": key} if key is not None else None
        return self._call("GET", f"/_emulator/mailboxes/{address}/drafts", params=params)["value"]

    def delivered(self, address: str) -> dict[str, Any]:
        """This mailbox's delivery log (``value``) and ``counts_by_key``, saved to Sent Items or not."""
        return self._call("GET", f"/_emulator/mailboxes/{address}/delivered")

    def deliveries(
        self, mailbox: str | None = None, key: str | None = None, since_seq: int | None = None
    ) -> dict[str, Any]:
        """Global ordered delivery log: ``{"value": [...], "count", "counts_by_key"}``."""
        params = {k: v for k, v in {"mailbox": mailbox, "key": key, "since_seq": since_seq}.items() if v is not None}
        return self._call("GET", "/_emulator/graph/deliveries", params=params or None)

    def received(self, address: str) -> list[dict[str, Any]]:
        """Messages delivered to recipient ``address`` (to/cc/bcc), oldest first, each with ``internetHeaders``
        as delivered and ``headers`` (lower-case name -> value: ``message-id``, ``in-reply-to``, ...)."""
        return self._call("GET", f"/_emulator/graph/received/{address}")["value"]

    def graph_limits(self, **changes: float) -> dict[str, Any]:
        """Read (no args) or change Graph limits, e.g. ``messages_per_window=5, message_window_s=2``."""
        if changes:
            return self._call("POST", "/_emulator/graph/limits", changes)
        return self._call("GET", "/_emulator/graph/limits")

    def reset_graph_limits(self) -> dict[str, Any]:
        """Restore Microsoft's default limits."""
        return self._call("DELETE", "/_emulator/graph/limits")

    def inbox(self, address: str) -> dict[str, Any]:
        """The mailbox's NDRs (``value``) and ``recipients_in_window`` (emulator/graph_ndr.py)."""
        return self._call("GET", f"/_emulator/mailboxes/{address}/inbox")

    def graph_stats(self) -> dict[str, Any]:
        """Peak attempted concurrency per mailbox address, 429s by limit, ``graph.*`` counters."""
        return self._call("GET", "/_emulator/graph/stats")

    def reset_graph(self) -> None:
        """Empty every mailbox, the delivery log and throttling windows (affects other tests)."""
        self._call("POST", "/_emulator/graph/reset")
