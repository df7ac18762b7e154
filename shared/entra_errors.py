"""Map Microsoft Entra errors (authorize redirects and token responses) to Mailbridge's stable codes.

Branch on the AADSTS code when one is present (``error_codes`` or the ``AADSTSnnnn:`` prefix of
``error_description``), else on the OAuth ``error`` value. The AADSTS code travels only as detail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests
from msal.exceptions import MsalServiceError

from shared import errors

# MSAL *raises* these (rather than returning an error dict) when the token endpoint answers 5xx or the
# connection drops: the grant may be fine, the endpoint is not. Catch them and call token_endpoint_outage.
TOKEN_ENDPOINT_OUTAGES = (MsalServiceError, requests.RequestException)


def token_endpoint_outage(exc: Exception) -> errors.TemporarilyUnavailable:
    return errors.TemporarilyUnavailable(detail=f"token endpoint: {type(exc).__name__}")


_AADSTS = re.compile(r"AADSTS(\d+)")

_BY_CODE: dict[int, type[errors.MailbridgeError]] = {
    65001: errors.AdminConsentRequired,
    90094: errors.AdminConsentRequired,
    90095: errors.AdminConsentRequired,
    53003: errors.BlockedByPolicy,
    50076: errors.MfaRequired,
    50079: errors.MfaRequired,
    65004: errors.UserDeclined,
    700016: errors.AppMisconfigured,
    7000222: errors.AppMisconfigured,
    7000215: errors.AppMisconfigured,
    50194: errors.AppMisconfigured,
    50011: errors.AppMisconfigured,
    70000: errors.ReauthRequired,
    70008: errors.ReauthRequired,
    700082: errors.ReauthRequired,
    50173: errors.ReauthRequired,
    70043: errors.ReauthRequired,
    54005: errors.InvalidState,
    50196: errors.TemporarilyUnavailable,
}

_BY_ERROR: dict[str, type[errors.MailbridgeError]] = {
    "consent_required": errors.AdminConsentRequired,
    "access_denied": errors.UserDeclined,
    "interaction_required": errors.InteractionRequired,
    "login_required": errors.InteractionRequired,
    "invalid_client": errors.AppMisconfigured,
    "unauthorized_client": errors.AppMisconfigured,
    "invalid_grant": errors.ReauthRequired,
    "server_error": errors.TemporarilyUnavailable,
    "temporarily_unavailable": errors.TemporarilyUnavailable,
}


def aadsts_codes(payload: Mapping[str, Any]) -> list[int]:
    """AADSTS codes named by an error payload, most specific first."""
    codes = [int(c) for c in payload.get("error_codes") or [] if str(c).isdigit()]
    codes += [int(c) for c in _AADSTS.findall(str(payload.get("error_description") or ""))]
    return list(dict.fromkeys(codes))


def map_entra_error(payload: Mapping[str, Any], *, during: str = "connect") -> errors.MailbridgeError:
    """The Mailbridge error for an Entra error payload; ``during`` is ``connect`` or ``refresh``.

    During a refresh, anything that needs the user back (consent revoked, MFA, interaction) means the
    connection must be re-authorised: ``ReauthRequired`` with the reason as detail.
    """
    error = str(payload.get("error") or "")
    codes = aadsts_codes(payload)
    cls: type[errors.MailbridgeError] | None = None
    for code in codes:
        if code in _BY_CODE:
            cls = _BY_CODE[code]
            break
    if cls is None:
        cls = _BY_ERROR.get(error, errors.TemporarilyUnavailable if not error else errors.InteractionRequired)
    detail = f"{error} (AADSTS{codes[0]})" if codes else error or None
    if during == "refresh" and cls in (
        errors.AdminConsentRequired,
        errors.MfaRequired,
        errors.InteractionRequired,
        errors.BlockedByPolicy,
        errors.UserDeclined,
        errors.InvalidState,
    ):
        return errors.ReauthRequired(detail=detail, reason=cls.code)
    if during == "connect" and cls is errors.ReauthRequired:
        return errors.InvalidState(detail=detail)
    return cls(detail=detail)
