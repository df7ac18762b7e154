"""GET /api/health: is this instance configured, and does Entra accept the app's credential? Never a secret."""

from __future__ import annotations

import json

import azure.functions as func

from blueprints.http_util import SECURITY_HEADERS
from shared.base.settings import VERSION, settings_status

health_bp = func.Blueprint()


@health_bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Version and configuration status: 200 when the settings load and the app credential works; 503 naming
    the bad setting, or with ``error.code`` ``app_credential_failed`` while Entra refuses the app's credential
    (recorded in Storage by whichever instance saw it, until a refresh succeeds again)."""
    status = settings_status()
    body = {"service": "mailbridge", "version": VERSION, **status}
    if status["ok"]:
        from shared.services import get_services

        credential = get_services().app_credential.status()
        body["app_credential"] = credential
        if credential["ok"] is False:
            body["ok"] = False
            body["error"] = {"code": credential["code"], "message": credential["what_to_do"]}
    status_code = 200 if body["ok"] else 503
    return func.HttpResponse(
        json.dumps(body), status_code=status_code, mimetype="application/json", headers=SECURITY_HEADERS
    )
