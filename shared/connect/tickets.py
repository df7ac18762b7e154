"""Connect tickets: signed (HMAC-SHA256), short-lived, single-use links from the backend to the browser.

A ticket is a :func:`sign_token` token of purpose ``ticket``: ``base64url(json payload) "." base64url(hmac)``, the
MAC over the purpose and the payload. The payload names the caller's
``user_ref``, the ``return_url`` (already checked against the allow-list), an optional login hint and
an expiry. Single use is enforced by the flow store (the ticket id is recorded when the flow starts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.base.errors import ExpiredLink, InvalidRequest, ReturnUrlNotAllowed

TICKET_TTL_SECONDS = 600
_VERSION = 1
TICKET_PURPOSE = "ticket"  # connect tickets are sign_token tokens of this purpose (one token format in the app)


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Ticket:
    """What a verified ticket carries."""

    ticket_id: str
    user_ref: str
    return_url: str
    expires_at: int
    login_hint: str | None = None
    domain_hint: str | None = None
    prompt: str | None = None
    connection_id: str | None = None  # set when the link re-authorises one existing connection


def check_return_url(return_url: str, allowed_origins: tuple[str, ...]) -> str:
    """The URL itself when its origin is allow-listed; raise ReturnUrlNotAllowed otherwise (no open redirects)."""
    if not isinstance(return_url, str) or len(return_url) > 2048:
        raise ReturnUrlNotAllowed(detail="return_url must be a URL of at most 2048 characters")
    # Control characters anywhere (C0, DEL, C1), not only CR/LF/TAB: urlsplit silently drops leading ones, and the
    # others reached the final redirect's Location header, where RFC 9110 §5.5 allows none (NUL: reject or replace).
    if (
        any(ch == "\\" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in return_url)
        or return_url.strip() != return_url
    ):
        raise ReturnUrlNotAllowed(detail="return_url contains forbidden characters")
    parts = urlsplit(return_url)
    if parts.scheme not in {"https", "http"} or not parts.hostname or parts.username or parts.password:
        raise ReturnUrlNotAllowed(detail="return_url must be an absolute http(s) URL without credentials")
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if origin not in allowed_origins:
        raise ReturnUrlNotAllowed()
    return return_url


def issue_ticket(
    key: bytes,
    *,
    user_ref: str,
    return_url: str,
    login_hint: str | None = None,
    domain_hint: str | None = None,
    prompt: str | None = None,
    connection_id: str | None = None,
    now: float | None = None,
    ttl: int = TICKET_TTL_SECONDS,
) -> tuple[str, Ticket]:
    """Sign a new ticket; returns (token string, Ticket)."""
    if not user_ref or len(user_ref) > 256:
        raise InvalidRequest("user_ref is required (1-256 characters).")
    issued = int(time.time() if now is None else now)
    ticket = Ticket(
        ticket_id=secrets.token_urlsafe(18),
        user_ref=user_ref,
        return_url=return_url,
        expires_at=issued + ttl,
        login_hint=login_hint,
        domain_hint=domain_hint,
        prompt=prompt,
        connection_id=connection_id,
    )
    payload: dict[str, Any] = {
        "v": _VERSION,
        "jti": ticket.ticket_id,
        "sub": user_ref,
        "ret": return_url,
        "exp": ticket.expires_at,
    }
    for short, value in (("lh", login_hint), ("dh", domain_hint), ("pr", prompt), ("cid", connection_id)):
        if value:
            payload[short] = value
    return sign_token(key, TICKET_PURPOSE, payload), ticket


def sign_token(key: bytes, purpose: str, payload: dict[str, Any]) -> str:
    """``base64url(json) "." base64url(hmac)`` for ``purpose`` (the purpose is MACed too, so a token made
    for one purpose, e.g. an admin-consent state, is never accepted as another, e.g. a connect result)."""
    body = _b64e(json.dumps({**payload, "p": purpose}, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(key, purpose, body)}"


def open_token(key: bytes, purpose: str, token: object, *, max_len: int = 2048) -> dict[str, Any] | None:
    """The payload of a token made by :func:`sign_token` for ``purpose``; None when malformed or forged.
    Expiry is the caller's to check (it decides what an expired token means)."""
    if not isinstance(token, str) or not token or len(token) > max_len or token.count(".") != 1:
        return None
    body, sig = token.split(".")
    # Compare bytes: compare_digest refuses non-ASCII str, and a forged token may carry anything.
    if not hmac.compare_digest(sig.encode("utf-8", "surrogatepass"), _mac(key, purpose, body).encode()):
        return None
    try:
        payload = json.loads(_b64d(body))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or payload.get("p") != purpose:
        return None
    return payload


def _mac(key: bytes, purpose: str, body: str) -> str:
    return _b64e(hmac.new(key, f"{purpose}\n{body}".encode(), hashlib.sha256).digest())


def verify_ticket(key: bytes, token: str | None, *, now: float | None = None) -> Ticket:
    """Check signature and expiry; raise ExpiredLink for anything wrong (never say which part, to a browser)."""
    payload = open_token(key, TICKET_PURPOSE, token, max_len=4096)
    if payload is None:
        raise ExpiredLink(detail="missing, malformed or forged ticket")
    if payload.get("v") != _VERSION:
        raise ExpiredLink(detail="unknown ticket version")
    if int(payload.get("exp", 0)) < int(time.time() if now is None else now):
        raise ExpiredLink(detail="ticket expired")
    return Ticket(
        ticket_id=str(payload["jti"]),
        user_ref=str(payload["sub"]),
        return_url=str(payload["ret"]),
        expires_at=int(payload["exp"]),
        login_hint=payload.get("lh"),
        domain_hint=payload.get("dh"),
        prompt=payload.get("pr"),
        connection_id=payload.get("cid"),
    )
