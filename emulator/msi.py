"""App Service-style managed identity endpoint (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``).

``GET /_msi/token?resource=...&api-version=2019-08-01&client_id=...`` with header
``X-IDENTITY-HEADER: <secret from emulator.json>``. Tokens are issued by the identity's tenant
issuer and signed with the emulator key, so the emulator's Entra trusts them as client assertions
for apps with a matching federated identity credential (issuer + subject = principal id).
"""

from __future__ import annotations

import hmac

from emulator.core import Request, Response, Router, json_response
from emulator.state import EmulatorState
from emulator.tokens import issue_access_token

MI_LIFETIME_S = 86400  # managed identity tokens are long-lived (24 h) and cached by the platform


def register(router: Router, state: EmulatorState) -> None:
    """Register the managed identity token route."""

    @router.route("GET", "/_msi/token", "msi.token")
    def token(req: Request) -> Response:
        header = req.headers.get("X-IDENTITY-HEADER") or ""
        if not header or not hmac.compare_digest(header, state.identity_header):
            return json_response(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or invalid."})
        resource = req.query.get("resource", "")
        if not resource:
            return json_response(400, {"statusCode": 400, "message": "The resource parameter is required."})
        client_id = req.query.get("client_id") or req.query.get("clientid")
        identity = state.apps.identity(client_id)
        if identity is None:
            return json_response(
                400,
                {
                    "statusCode": 400,
                    "message": f"Unable to load the proper Managed Identity. client_id={client_id or '(none)'}",
                },
            )
        # The resource may be given as a scope (".../.default"); the audience is the bare resource.
        audience = resource[: -len("/.default")] if resource.endswith("/.default") else resource
        now = int(state.clock.now())
        access = issue_access_token(
            state,
            tid=identity.tid,
            oid=identity.principal_id,
            client_id=identity.client_id,
            scopes=[],
            audience=audience,
            lifetime_s=MI_LIFETIME_S,
            roles=[],
            extra={"xms_mirid": f"/emulator/identities/{identity.client_id}"},
        )
        return json_response(
            200,
            {
                "access_token": access,
                "expires_on": str(now + MI_LIFETIME_S),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            },
        )
