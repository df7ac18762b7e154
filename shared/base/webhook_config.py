"""The webhook settings' rules (WEBHOOK_URL, WEBHOOK_SECRET), pure functions for shared/base/settings.py, and the
address rule the delivery applies again to every address a host name resolves to (shared/base/webhook_http.py)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from urllib.parse import urlsplit

from shared.base.errors import SettingsError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
# Standard Webhooks: the secret is base64 of 24 to 64 random bytes (https://www.standardwebhooks.com/).
SECRET_BYTES = (24, 64)
# IPv6 forms whose last 32 bits are the IPv4 address they reach: NAT64's well-known prefix (RFC 6052), SIIT's
# IPv4-translated addresses (RFC 2765) and the deprecated IPv4-compatible ones (RFC 4291; "::" and "::1" among them).
_EMBEDS_IPV4 = tuple(map(ipaddress.IPv6Network, ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96")))
# NAT64's local-use prefix (RFC 8215): the translator decides where it leads; never a public target.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public_address(value: str) -> bool:
    """Whether an IP address is a public unicast one: not private (RFC 1918, ULA), loopback, link-local (the
    cloud metadata endpoint 169.254.169.254), shared (100.64/10), multicast, reserved or unspecified. An IPv4 address
    mapped into IPv6 (::ffff:10.0.0.1, 6to4, NAT64, IPv4-translated, IPv4-compatible) is judged as the IPv4 address
    it reaches; NAT64's local-use prefix and the deprecated site-local fec0::/10 are never public."""
    address = ipaddress.ip_address(value.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is link-local anyway
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64 or address.is_site_local:
            return False
        if any(address in network for network in _EMBEDS_IPV4):
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        else:
            address = address.ipv4_mapped or address.sixtofour or address
    return address.is_global and not address.is_multicast


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def parse_webhook_url(name: str, raw: str, *, allow_private: bool) -> str:
    """WEBHOOK_URL ("" = no webhooks): https (http only with WEBHOOK_ALLOW_PRIVATE_TARGETS, for a local receiver),
    a host, no user info (it would travel in logs with the URL) or fragment; an IP literal that is not public, or
    localhost, only with WEBHOOK_ALLOW_PRIVATE_TARGETS. Host names are checked at every delivery, once resolved."""
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise SettingsError(name, "must be an https URL (http only with WEBHOOK_ALLOW_PRIVATE_TARGETS)")
    if not parts.hostname or parts.username is not None or parts.password is not None or parts.fragment:
        raise SettingsError(name, "must be a URL with a host, without user info or fragment")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise SettingsError(name, "has an invalid port") from None
    host = parts.hostname.lower().rstrip(".")
    local = host == "localhost" or host.endswith(".localhost")
    if (local or (is_ip_literal(host) and not is_public_address(host))) and not allow_private:
        raise SettingsError(name, "names a private, loopback or link-local address (WEBHOOK_ALLOW_PRIVATE_TARGETS)")
    return raw


def parse_webhook_secrets(name: str, raw: str, url: str) -> tuple[str, ...]:
    """WEBHOOK_SECRET: one whsec_ secret, or two space-separated during a rotation (each delivery is signed with
    both). Required when WEBHOOK_URL is set. Errors never repeat the value."""
    secrets = tuple(raw.split())
    if not url:
        return ()
    if not secrets:
        raise SettingsError(name, "is required when WEBHOOK_URL is set")
    if len(secrets) > 2:
        raise SettingsError(name, "takes one secret, or two (space-separated) during a rotation")
    lo, hi = SECRET_BYTES
    for secret in secrets:
        if not secret.startswith(SECRET_PREFIX):
            raise SettingsError(name, "must start with whsec_ (the Standard Webhooks format)")
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise SettingsError(name, "must be whsec_ followed by base64") from None
        if not lo <= len(key) <= hi:
            raise SettingsError(name, f"must be whsec_ followed by the base64 of {lo} to {hi} random bytes")
    return secrets
