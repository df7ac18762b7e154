"""GET /api/health: is this instance configured? Reports names and hosts, never a secret."""

from __future__ import annotations

import json

import azure.functions as func

from shared.settings import VERSION, settings_status

health_bp = func.Blueprint()


@health_bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Version and configuration status; 200 when the settings load, 503 naming the bad setting otherwise."""
    status = settings_status()
    body = {"service": "mailbridge", "version": VERSION, **status}
    return func.HttpResponse(json.dumps(body), status_code=200 if status["ok"] else 503, mimetype="application/json")
