"""Token minting and checking: RS256 JWTs signed with a key generated at emulator start.

Clients must treat access tokens as opaque (as with Microsoft); they are JWTs here only so the
emulated resource servers can check audience, scopes and expiry without shared lookups.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from collections import OrderedDict
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from emulator.core import HTTPError, Request, Response, json_response

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
KEYVAULT_RESOURCE = "https://vault.azure.net"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
# Audiences each resource server accepts in the ``aud`` claim (Graph accepts both forms).
AUDIENCE_ALIASES = {
    GRAPH_RESOURCE: {GRAPH_RESOURCE, GRAPH_RESOURCE + "/", GRAPH_APP_ID},
    KEYVAULT_RESOURCE: {KEYVAULT_RESOURCE, KEYVAULT_RESOURCE + "/", "https://vault.azure.net"},
}


class SigningKeys:
    """The emulator's RSA signing key and its JWKS document."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.private_key.public_key()
        self.kid = uuid.uuid4().hex[:16]
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS document (what ``/discovery/v2.0/keys`` serves)."""
        jwk = json.loads(RSAAlgorithm.to_jwk(self.public_key))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def sign(self, claims: dict[str, Any]) -> str:
        """Sign claims as an RS256 JWT."""
        # Pass the key object: re-parsing a PEM (with its consistency checks) would cost ~50 ms per token.
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def decode(self, token: str) -> dict[str, Any]:
        """Verify the signature only (expiry and audience are judged by callers on the emulator clock).

        Results are memoised because resource servers see the same token thousands of times.
        """
        with self._cache_lock:
            cached = self._verified.get(token)
            if cached is not None:
                self._verified.move_to_end(token)
                return cached
        claims = jwt.decode(
            token,
            self.public_key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False},
        )
        with self._cache_lock:
            self._verified[token] = claims
            if len(self._verified) > 20000:
                self._verified.popitem(last=False)
        return claims


def issuer_for(state: Any, tid: str) -> str:
    """The v2.0 issuer of tokens from tenant ``tid`` on this emulator."""
    return f"{state.base_url}/{tid}/v2.0"


def canonical_audience(audience: str) -> str:
    """Map a resource or scope prefix to the ``aud`` value put in tokens."""
    aud = audience.rstrip("/")
    if aud in (GRAPH_RESOURCE, GRAPH_APP_ID):
        return GRAPH_APP_ID
    return aud


def issue_access_token(
    state: Any,
    *,
    tid: str,
    oid: str | None,
    client_id: str,
    scopes: list[str],
    audience: str,
    lifetime_s: int,
    roles: list[str] | None = None,
    upn: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Mint an access token. Delegated tokens (``oid`` of a user) carry ``scp``; app-only carry ``roles``.

    For app-only tokens pass ``oid=None`` (the app's service principal id is used as ``oid``/``sub``)
    or the service principal id with ``roles``.
    """
    now = int(state.clock.now())
    app_only = oid is None or roles is not None
    app = state.apps.get(client_id) if state.apps else None
    principal = oid or (app.service_principal_id if app else client_id)
    claims: dict[str, Any] = {
        "aud": canonical_audience(audience),
        "iss": issuer_for(state, tid),
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime_s),
        "appid": client_id,
        "azp": client_id,
        "tid": tid,
        "oid": principal,
        "sub": principal,
        "uti": uuid.uuid4().hex,
        "ver": "1.0",
    }
    if app_only:
        claims["roles"] = list(roles or [])
        claims["idtyp"] = "app"
    else:
        claims["scp"] = " ".join(scopes)
        claims["idtyp"] = "user"
        if upn:
            claims["upn"] = upn
            claims["unique_name"] = upn
    claims.update(extra or {})
    return state.keys.sign(claims)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as used in JWTs and ``client_info``."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class AuthError(HTTPError):
    """Carries the exact error response the real resource server would give."""

    def __init__(self, response: Response, reason: str = "") -> None:
        super().__init__(response)
        self.reason = reason


def _graph_error(state: Any, req: Request, message: str) -> AuthError:
    body = {
        "error": {
            "code": "InvalidAuthenticationToken",
            "message": message,
            "innerError": {
                "date": dt.datetime.fromtimestamp(state.clock.now(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": req.headers.get("client-request-id") or str(uuid.uuid4()),
            },
        }
    }
    headers = {
        "WWW-Authenticate": (
            f'Bearer realm="", authorization_uri="{state.base_url}/common/oauth2/authorize", client_id="{GRAPH_APP_ID}"'
        )
    }
    return AuthError(json_response(401, body, headers), message)


def keyvault_challenge(state: Any, message: str, tenant: str) -> AuthError:
    """Key Vault's 401: a bearer challenge naming the authority and the resource."""
    headers = {"WWW-Authenticate": f'Bearer authorization="{state.base_url}/{tenant}", resource="{KEYVAULT_RESOURCE}"'}
    return AuthError(json_response(401, {"error": {"code": "Unauthorized", "message": message}}, headers), message)


def verify_bearer(state: Any, req: Request, audience: str, *, challenge_tenant: str | None = None) -> dict[str, Any]:
    """Check the bearer token for ``audience``; return its claims or raise :class:`AuthError`.

    ``audience`` is ``GRAPH_RESOURCE`` or ``KEYVAULT_RESOURCE``; the error shape follows that
    service. Expiry is judged on the emulator clock (no clock-skew allowance).
    """
    is_kv = audience.rstrip("/") == KEYVAULT_RESOURCE
    tenant = challenge_tenant or "common"

    def fail(graph_msg: str, kv_msg: str) -> AuthError:
        return keyvault_challenge(state, kv_msg, tenant) if is_kv else _graph_error(state, req, graph_msg)

    header = req.headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise fail("Access token is empty.", "AKV10000: Request is missing a Bearer or PoP token.")
    try:
        claims = state.keys.decode(token.strip())
    except jwt.PyJWTError:
        raise fail(
            "IDX14100: JWT is not well formed, there are no dots (.).",
            "AKV10022: Invalid audience or token signature.",
        ) from None
    now = state.clock.now()
    if claims.get("exp", 0) <= now or claims.get("nbf", 0) > now + 300:
        raise fail(
            "Lifetime validation failed, the token is expired.",
            "AKV10032: Token expired or not yet valid.",
        )
    accepted = AUDIENCE_ALIASES.get(audience.rstrip("/"), {audience})
    if claims.get("aud") not in accepted:
        raise fail(
            "Invalid audience.",
            f"AKV10022: Invalid audience. Expected {KEYVAULT_RESOURCE}, found: {claims.get('aud')}.",
        )
    return claims
