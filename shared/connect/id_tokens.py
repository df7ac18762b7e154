"""Whether the ID token of a connect callback's code redemption may be believed (issue 23).

MSAL Python checks the nonce (and ``max_age``) of an ID token and nothing else: it decodes the other claims
unvalidated and leaves validation to the app (msal/oauth2cli/oidc.py ``_decode_id_token_claims``, MSAL 1.38+;
AzureAD/microsoft-authentication-library-for-python#911). The token comes straight from the token endpoint
over TLS, so its signature needs no check (OpenID Connect Core 3.1.3.7, item 6); its claims do:

- ``aud`` is our client id (id-token-claims-reference, ``aud``);
- ``tid`` and ``oid`` are present: a mailbox is ``tid`` + ``oid``, never an email address;
- the tenant is pinned when the deployment serves one tenant, whether ``ENTRA_TENANT`` names it by id or by
  domain: the domain is resolved by the authority's OpenID metadata (what MSAL discovered: its token endpoint
  and issuer carry the tenant id), then ``tid`` must equal it (claims-validation, "Validate the tenant");
- personal Microsoft accounts (``tid`` = 9188040d-6c67-4c5b-b112-36a304b66dad, the consumer tenant:
  id-token-claims-reference, ``tid``) only when the deployment admits them (``common``, ``consumers``), and only
  them on ``consumers``;
- ``iss`` is ``https://<authority host>/<tid>/v2.0``, i.e. the metadata issuer with ``{tenantid}`` replaced by
  the token's ``tid``: apps that use ``tid`` as their trust boundary "should ensure that the tenant-id claim is
  a guid and that the issuer and tenantid match" (access-tokens, multi-tenant validation;
  id-token-claims-reference, ``iss``: "the tenant ... is the GUID in the issuer");
- ``exp`` is not past, give or take ``CLOCK_SKEW_S`` (OIDC Core 3.1.3.7 item 9, "small leeway ... to account
  for clock skew"; RFC 7519 4.1.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.base import errors

CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
# MSAL's own legacy ID-token checks allow two minutes (oidc.py ``skew = 120``).
CLOCK_SKEW_S = 120
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MULTI_TENANT = {"organizations", "common", "consumers"}


@dataclass(frozen=True)
class IdTokenRules:
    """What this deployment's ID tokens must say. Build it with :meth:`for_authority`."""

    client_id: str
    authority_host: str  # https://login.microsoftonline.com (no trailing slash)
    metadata_issuer: str | None  # the authority's OpenID metadata ``issuer`` (may carry ``{tenantid}``)
    pinned_tenant: str | None  # the one tenant id served, lower case; None: any organisation
    allow_personal: bool
    personal_only: bool

    @classmethod
    def for_authority(
        cls,
        *,
        client_id: str,
        authority_host: str,
        entra_tenant: str,
        discovered_tenant: str | None,
        metadata_issuer: str | None,
    ) -> IdTokenRules:
        """Rules for ``ENTRA_TENANT`` as discovered: ``discovered_tenant`` is the tenant segment of the
        metadata's token endpoint (MSAL ``Authority.tenant``: the tenant id for a tenant given by id or domain,
        the alias itself for ``organizations``/``common``/``consumers``)."""
        configured = entra_tenant.strip().lower()
        if configured == "consumers":
            pinned: str | None = CONSUMER_TENANT_ID
        elif configured in _MULTI_TENANT:
            pinned = None
        else:
            pinned = _first_guid(configured, discovered_tenant, _issuer_tenant(metadata_issuer))
            if pinned is None:
                # A domain the metadata did not resolve to an id: refuse every sign-in rather than pin nothing.
                raise errors.AppMisconfigured(detail=f"ENTRA_TENANT {entra_tenant!r} did not resolve to a tenant id")
        return cls(
            client_id=client_id,
            authority_host=authority_host.rstrip("/"),
            metadata_issuer=metadata_issuer,
            pinned_tenant=pinned,
            allow_personal=configured in {"common", "consumers"} or pinned == CONSUMER_TENANT_ID,
            personal_only=pinned == CONSUMER_TENANT_ID,
        )

    def expected_issuers(self, tid: str) -> set[str]:
        """The ``iss`` values a token of tenant ``tid`` may carry."""
        issuers = {f"{self.authority_host}/{tid}/v2.0"}
        if self.metadata_issuer:
            # The metadata's own spelling of the host (a cloud's alias), for this tenant only.
            candidate = self.metadata_issuer.replace("{tenantid}", tid)
            if _issuer_tenant(candidate) == tid.lower():
                issuers.add(candidate)
        return issuers


def require_valid(claims: dict[str, Any], rules: IdTokenRules, now: float) -> tuple[str, str]:
    """The token's (tid, oid) when it may be believed; else raise IdentityMismatch (right token, wrong account,
    tenant or app) or InvalidIdToken (a token that is not what Entra issues: issuer, expiry)."""
    tid, oid = claims.get("tid"), claims.get("oid")
    present = isinstance(tid, str) and tid and isinstance(oid, str) and oid
    if not present or claims.get("aud") != rules.client_id:
        raise errors.IdentityMismatch(detail="id_token lacks tid/oid or is for another app")
    if not _GUID.fullmatch(tid):
        raise errors.InvalidIdToken(detail="id_token tid is not a tenant id")
    personal = tid.lower() == CONSUMER_TENANT_ID
    if rules.pinned_tenant and tid.lower() != rules.pinned_tenant:
        raise errors.IdentityMismatch(detail="signed in from another tenant than this app serves")
    if personal and not rules.allow_personal:
        raise errors.IdentityMismatch(detail="a personal Microsoft account on a deployment for organisations")
    if rules.personal_only and not personal:
        raise errors.IdentityMismatch(detail="a work or school account on a deployment for personal accounts")
    if claims.get("iss") not in rules.expected_issuers(tid):
        raise errors.InvalidIdToken(detail="id_token issuer does not match its tenant and the authority")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or now >= exp + CLOCK_SKEW_S:
        raise errors.InvalidIdToken(detail="id_token expired or without expiry")
    return tid, oid


def _first_guid(*values: str | None) -> str | None:
    for value in values:
        if value and _GUID.fullmatch(value):
            return value.lower()
    return None


def _issuer_tenant(issuer: str | None) -> str | None:
    """The tenant id in an issuer ``https://host/<tid>/v2.0`` (None for a template or anything else)."""
    if not issuer:
        return None
    parts = urlsplit(issuer).path.strip("/").split("/")
    return parts[0].lower() if len(parts) == 2 and parts[1] == "v2.0" and _GUID.fullmatch(parts[0]) else None


# An address as Graph and Exchange write one: local@domain.tld, no spaces (a phone number or a bare user name fails).
_ADDRESS = re.compile(r"^[^@\s\"(),:;<>\[\]\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


def is_email_address(value: object) -> bool:
    """Whether ``value`` is shaped like an SMTP address."""
    return isinstance(value, str) and len(value) <= 320 and bool(_ADDRESS.match(value))


def mailbox_address(claims: dict[str, Any]) -> str:
    """The mailbox's email address from a verified ID token, or "" when it names none.

    ``email`` first: the address of the account (optional claim, sent when configured or when the ``email`` scope is
    asked). ``preferred_username`` only when it is shaped like an address: Microsoft says it "could be an email
    address, phone number, or a generic username without a specified format" and that it is mutable, so it must not
    be trusted as one otherwise (learn.microsoft.com/entra/identity-platform/id-token-claims-reference)."""
    for claim in ("email", "preferred_username"):
        value = claims.get(claim)
        if is_email_address(value):
            return str(value)
    return ""
