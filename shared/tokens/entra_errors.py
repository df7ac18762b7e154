"""Map Microsoft Entra errors (authorize redirects and token responses) to Mailbridge's stable codes.

Branch on the AADSTS code when one is present (``error_codes`` or the ``AADSTSnnnn:`` prefix of
``error_description``), else on the OAuth ``error`` value. The AADSTS code travels only as detail.

Whose problem a failed refresh is, is one question with one answer (:func:`classify`): ``user`` (the
grant is dead: the user reconnects), ``operator`` (Entra refused the *app's* credential: the operator
fixes the registration, connections stay connected and messages wait), ``tenant`` (the user's organisation
deleted or disabled the app's enterprise application: that tenant's admin fixes it, its connections need a
reconnect, nobody else is touched) or ``transient`` (try again). A ``tenant`` or unrecognised refusal names no
credential: the token service checks the app's own credential in its home tenant before blaming the operator
(shared/tokens/app_credential.py AppCredentialProbe).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import requests
from azure.core.exceptions import AzureError
from msal.exceptions import MsalServiceError

from shared.base import errors

# MSAL *raises* these (rather than returning an error dict) when the token endpoint answers 5xx or the
# connection drops: the grant may be fine, the endpoint is not. Catch them and call token_endpoint_outage.
# AzureError covers azure-identity failing inside MSAL's client_assertion callable (the managed identity
# endpoint down or refusing: ClientAuthenticationError, CredentialUnavailableError): transient as well.
TOKEN_ENDPOINT_OUTAGES = (MsalServiceError, requests.RequestException, AzureError)


def token_endpoint_outage(exc: Exception) -> errors.TemporarilyUnavailable:
    where = "app credential (managed identity)" if isinstance(exc, AzureError) else "token endpoint"
    return errors.TemporarilyUnavailable(detail=f"{where}: {type(exc).__name__}")


Party = Literal["user", "operator", "tenant", "transient"]

# The app's own credential was refused (workload-identity-federation-considerations; the auth-code flow's
# token-endpoint error table: invalid_client "the Application Administrator updates the credentials").
# 70021 also answers while a new federated credential propagates ("add retry logic"): never the user's fault.
# 70002 InvalidClient ("Error validating the credentials"), 50012 AuthenticationFailed (client assertion signature,
# certificate) and 500133 ("Assertion isn't within its valid time range"; our only assertion is the client
# assertion) name the app's credential even when Entra sends them as `invalid_grant`: a real body is
# {"error": "invalid_grant", "error_codes": [70002, 500133]} (MicrosoftDocs/azure-docs#16399).
OPERATOR_CODES = frozenset(
    {7000215, 7000222, 7000218, 70021, 700211, 700212, 700213, 7002137, 700024, 700027, 70002, 50012, 500133}
)
# One customer tenant deleted (700016 "not found in the directory '<their tenant>'"; 700011
# UnauthorizedClientAppNotFoundInOrgIdTenant) or disabled (7000112 UnauthorizedClientApplicationDisabled; 70001
# UnauthorizedClient "The application is disabled") the app's enterprise application: AADSTS error reference. Any
# other `unauthorized_client` is read the same way: the reference's OAuth table says it "usually occurs when the client
# application isn't registered in Microsoft Entra ID or isn't added to the user's Microsoft Entra tenant". 700016 is
# also what every tenant answers once the registration itself is gone, hence the home-tenant check before blaming
# anyone.
TENANT_CODES = {
    700016: "app_removed_in_tenant",
    700011: "app_removed_in_tenant",
    7000112: "app_disabled_in_tenant",
    70001: "app_disabled_in_tenant",
}
TENANT_ERRORS = frozenset({"unauthorized_client"})
TRANSIENT_CODES = frozenset({50196})
TRANSIENT_ERRORS = frozenset({"", "server_error", "temporarily_unavailable"})
# Only these mean the user's grant is dead and they must reconnect; any other refusal of a refresh
# (invalid_request, invalid_scope, unsupported_grant_type ...) is about how the app asks: the operator's.
USER_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "login_required", "consent_required", "access_denied"}
)
USER_CODES = frozenset({65001, 65004, 90094, 90095, 53003, 50076, 50079, 70000, 70008, 700082, 50173, 70043, 50057})


_AADSTS = re.compile(r"AADSTS(\d+)")

_BY_CODE: dict[int, type[errors.MailbridgeError]] = {
    65001: errors.AdminConsentRequired,
    90094: errors.AdminConsentRequired,
    90095: errors.AdminConsentRequired,
    53003: errors.BlockedByPolicy,
    50076: errors.MfaRequired,
    50079: errors.MfaRequired,
    65004: errors.UserDeclined,
    **{code: errors.AppMisconfigured for code in OPERATOR_CODES},
    700016: errors.AppRemovedInTenant,
    700011: errors.AppRemovedInTenant,
    7000112: errors.AppDisabledInTenant,
    70001: errors.AppDisabledInTenant,
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


def classify(error: Mapping[str, Any] | BaseException) -> Party:
    """Whose problem a failed token request is: an Entra error payload, or what was raised getting it.

    ``user``: the grant is dead or needs the user (``invalid_grant``, interaction, consent, MFA, Conditional
    Access) and only they can fix it by reconnecting; ``tenant``: the user's organisation removed or disabled the
    app (AADSTS700016, 700011, 7000112, 70001, any other ``unauthorized_client``); ``transient``: the endpoint or a
    dependency failed (5xx, loop protection, a dropped connection, managed identity / azure-identity errors);
    ``operator``: the app's credential (secret, federated credential, assertion) was refused, whatever the ``error``
    value (AADSTS500133 comes as ``invalid_grant``), or anything else Entra refuses about how the app asks (the
    operator can fix it; a user reconnecting cannot).
    """
    if isinstance(error, BaseException):
        if isinstance(error, errors.MailbridgeError):
            return "transient" if error.transient else "user"
        return "transient" if isinstance(error, TOKEN_ENDPOINT_OUTAGES) else "user"
    codes = aadsts_codes(error)
    if any(c in OPERATOR_CODES for c in codes):
        return "operator"
    value = str(error.get("error") or "")
    if any(c in TENANT_CODES for c in codes):
        return "tenant"
    if any(c in TRANSIENT_CODES for c in codes):
        return "transient"
    if value in TENANT_ERRORS:
        return "tenant"
    if value in TRANSIENT_ERRORS:
        return "transient"
    if value in USER_ERRORS or any(c in USER_CODES for c in codes):
        return "user"
    return "operator"


def map_entra_error(payload: Mapping[str, Any], *, during: str = "connect") -> errors.MailbridgeError:
    """The Mailbridge error for an Entra error payload; ``during`` is ``connect`` or ``refresh``.

    During a refresh, anything that needs the user back (consent revoked, MFA, interaction) means the
    connection must be re-authorised: ``ReauthRequired`` with the reason as detail; a refused app
    credential is ``AppCredentialFailed`` (transient: the connection stays connected).
    """
    error = str(payload.get("error") or "")
    codes = aadsts_codes(payload)
    party = classify(payload) if during == "refresh" else None
    if party == "operator":
        return errors.AppCredentialFailed(detail=f"{error} (AADSTS{codes[0]})" if codes else error)
    if party == "tenant":
        code = next((c for c in codes if c in TENANT_CODES), codes[0] if codes else None)
        reason = TENANT_CODES.get(code or 0, "app_removed_in_tenant")
        removed = reason == "app_removed_in_tenant"
        hint = (errors.AppRemovedInTenant if removed else errors.AppDisabledInTenant).default_hint
        return errors.ReauthRequired(hint, detail=f"{error} (AADSTS{code})" if code else error, reason=reason)
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
