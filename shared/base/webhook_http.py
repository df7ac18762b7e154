"""One webhook attempt: a POST to WEBHOOK_URL that cannot be turned against the app's own network (SSRF).

- The host is resolved once, and **every** address it resolves to must be public (shared/base/webhook_config.py
  ``is_public_address``: not private, loopback, link-local such as the metadata endpoint 169.254.169.254, shared,
  multicast, reserved or unspecified) unless WEBHOOK_ALLOW_PRIVATE_TARGETS is on (local development).
- The connection goes to the address that was checked (pinned): TLS still verifies the certificate for the URL's
  host name (SNI and hostname match use the name, not the address), and no second DNS lookup happens that a
  rebinding resolver could answer differently.
- https only (http only with WEBHOOK_ALLOW_PRIVATE_TARGETS), no proxy from the environment, no redirect followed
  (a 3xx is a failed attempt), bounded in time (connect timeout, then a deadline for the whole exchange enforced by
  closing the socket, so a server trickling bytes cannot hold an instance) and in size (the status line and headers
  only, within http.client's limits of 100 header lines of 64 KiB; the body is never read).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

from shared.base.formats import parse_retry_after
from shared.base.webhook_config import is_public_address


class TargetRefused(Exception):
    """The target is not allowed (its scheme, or an address it resolves to): permanent, never retried."""


@dataclass(frozen=True)
class AttemptLimits:
    connect_timeout_s: float = 5.0
    total_timeout_s: float = 15.0  # connect, TLS, request and response headers together


@dataclass(frozen=True)
class AttemptResult:
    status: int | None  # the HTTP status, None when no response came
    error: str | None = None  # "timeout", "connection", "tls", "dns", "bad_response"
    retry_after: float | None = None  # seconds, from a 429's or 503's Retry-After (RFC 9110 10.2.3, RFC 6585 4)

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says this endpoint no longer exists (RFC 9110 15.5.11: "likely to be
        permanent"); retrying it is pointless."""
        return self.status == 410

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else (self.error or "no response")


def resolve_target(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to, each checked; TargetRefused when any is not public (a name with one
    private address among public ones is refused too: which one a client picks is not ours to predict)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(f"{host} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise TargetRefused("the webhook host resolves to a private, loopback or link-local address")
    return addresses


def _connection(scheme: str, address: str, host: str, port: int, timeout: float, ca_bundle: str | None):
    if scheme == "http":
        return HTTPConnection(address, port, timeout=timeout)
    return HTTPSConnection(
        address,
        port,
        timeout=timeout,
        server_hostname=host,  # SNI and the certificate's name check use the URL's host, not the address
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_bundle,
        ssl_minimum_version=ssl.TLSVersion.TLSv1_2,
    )


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    ca_bundle: str | None,
    limits: AttemptLimits,
) -> AttemptResult:
    """POST ``body`` to ``url`` once; the result of the attempt. Raises TargetRefused for a forbidden target."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise TargetRefused("the webhook URL must be https")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        addresses = resolve_target(host, port, allow_private=allow_private)
    except (socket.gaierror, UnicodeError):
        return AttemptResult(None, "dns")
    deadline = time.monotonic() + limits.total_timeout_s
    result = AttemptResult(None, "connection")
    for address in addresses:  # all checked above; the next one only when this one cannot be reached
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return AttemptResult(None, "timeout")
        conn = _connection(parts.scheme, address, host, port, min(limits.connect_timeout_s, remaining), ca_bundle)
        try:
            conn.connect()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            conn.close()
            result = AttemptResult(None, _error_kind(exc))
            if result.error == "tls":
                return result  # the host answered with a certificate we do not trust: another address will too
            continue
        return _exchange(conn, path, parts.netloc, body, headers, deadline)
    return result


def _exchange(conn, path: str, netloc: str, body: bytes, headers: dict[str, str], deadline: float) -> AttemptResult:
    """Send the request on a connected ``conn`` and read the status; the socket is shut at ``deadline``."""
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), stop)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.timeout = max(0.1, deadline - time.monotonic())  # each read; the watchdog bounds them all together
        conn.sock.settimeout(conn.timeout)
        conn.request(
            "POST", path, body=body, headers={**headers, "Host": netloc}, preload_content=False, decode_content=False
        )
        response = conn.getresponse()
        if expired.is_set():  # http.client takes the end of the stream for the end of the headers
            return AttemptResult(None, "timeout")
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response.status in (429, 503) else None
        return AttemptResult(response.status, retry_after=retry_after)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        return AttemptResult(None, "timeout" if expired.is_set() else _error_kind(exc))
    finally:
        watchdog.cancel()
        conn.close()  # the body is never read: closing drops whatever the server still sends


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout | urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError | urllib3.exceptions.SSLError):
        return "tls"
    if isinstance(exc, http.client.HTTPException | urllib3.exceptions.ProtocolError):
        return "bad_response"
    return "connection"
