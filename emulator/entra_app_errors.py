"""The app-credential switch: make the token endpoint refuse an app's *own* credential with a chosen AADSTS error.

Real causes (an expired or wrong client secret, a federated identity credential that does not match the
presented assertion, a credential still propagating, an assertion outside its time range) are hard to stage
for a running test, so ``POST /_emulator/entra {"app_credential_error": {"code": 7000222, ...}}`` answers
the next token requests of the app (optionally only some grants) as Entra does for each of them, until it is
cleared with ``null``. Codes and wording: the AADSTS error reference, the auth-code flow's token-endpoint
error table and workload-identity-federation-considerations (sources in docs/emulator.md).
"""

from __future__ import annotations

from typing import Any

# AADSTS code -> (OAuth error value, HTTP status, message). {client_id} is filled in.
APP_CREDENTIAL_ERRORS: dict[int, tuple[str, int, str]] = {
    7000215: (
        "invalid_client",
        401,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
        "not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000222: (
        "invalid_client",
        401,
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new "
        "keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added "
        "security: https://aka.ms/certCreds.",
    ),
    7000218: (
        "invalid_client",
        401,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ),
    70021: (
        "invalid_request",
        400,
        "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
        "Assertion Subject: '{subject}'. Assertion Audience: 'api://AzureADTokenExchange'.",
    ),
    700211: (
        "invalid_request",
        400,
        "No matching federated identity record found for presented assertion issuer '{issuer}'.",
    ),
    700212: (
        "invalid_request",
        400,
        "No matching federated identity record found for presented assertion audience 'api://AzureADTokenExchange'.",
    ),
    700213: (
        "invalid_request",
        400,
        "No matching federated identity record found for presented assertion subject '{subject}'.",
    ),
    7002137: (
        "invalid_request",
        400,
        "The federated identity credential for the presented assertion could not be matched on application "
        "'{client_id}'.",
    ),
    700024: ("invalid_client", 401, "Client assertion is not within its valid time range."),
    # Sent as invalid_grant although it is about the client assertion (MicrosoftDocs/azure-docs#16399: error_codes
    # [70002, 500133]; msgraph-sdk-dotnet#2551: [500133] alone, the wording below).
    500133: (
        "invalid_grant",
        400,
        "Assertion is not within its valid time range. Ensure that the access token is not expired before using it "
        "for user assertion, or request a new token.",
    ),
    # UnauthorizedClient "The application is disabled" and UnauthorizedClientAppNotFoundInOrgIdTenant (AADSTS error
    # reference; the `error` value is the reference's unauthorized_client, the wording of 70001 is unconfirmed).
    70001: ("unauthorized_client", 400, "Application '{client_id}' is disabled."),
    700011: ("unauthorized_client", 400, "Application with identifier '{client_id}' was not found in the directory."),
    700016: (
        "unauthorized_client",
        400,
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the "
        "application has not been installed by the administrator of the tenant or consented to by any user in the "
        "tenant.",
    ),
}


def parse_switch(value: Any) -> dict[str, Any] | None:
    """The switch from an admin body (``None`` clears it); ValueError for a malformed one."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("code") not in APP_CREDENTIAL_ERRORS:
        raise ValueError(f"app_credential_error must be null or {{code: one of {sorted(APP_CREDENTIAL_ERRORS)}, ...}}")
    grants = value.get("grants")
    if grants is not None and (not isinstance(grants, list) or not all(isinstance(g, str) for g in grants)):
        raise ValueError("app_credential_error.grants must be a list of grant types")
    client_id = value.get("client_id")
    if client_id is not None and not isinstance(client_id, str):
        raise ValueError("app_credential_error.client_id must be a string")
    return {"code": int(value["code"]), "grants": grants, "client_id": client_id.lower() if client_id else None}


def refusal(switch: dict[str, Any] | None, client_id: str, grant: str, tenant: str) -> tuple[str, int, int, str] | None:
    """(error, code, status, message) when the switch refuses this app's token request, else None."""
    if not switch or (switch["client_id"] and switch["client_id"] != client_id.lower()):
        return None
    if switch["grants"] is not None and grant not in switch["grants"]:
        return None
    error, status, template = APP_CREDENTIAL_ERRORS[switch["code"]]
    message = template.format(client_id=client_id, tenant=tenant, issuer="(presented issuer)", subject="(presented)")
    return error, switch["code"], status, message
