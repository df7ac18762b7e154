"""The sample connect page (local mode only): ``GET /api/ui`` and the anonymous helpers it calls.

Exists only when ``ENABLE_SAMPLE_UI`` is true **and** ``PUBLIC_BASE_URL`` is a loopback address
(``http://127.0.0.1:...`` / ``localhost``): its helpers are anonymous stand-ins for what a SaaS
backend does with the function key, so they must never be reachable on a deployed app. Anywhere
else every route answers 404 ``not_found``. The page itself never sees a function key.

Routes (all anonymous): ``GET ui`` (HTML), ``GET ui/app.js``, ``GET ui/app.css``,
``POST ui/connect-link`` ``{user_ref, login_hint?}`` -> ``{connect_url, expires_at}`` (return_url =
the page), ``POST ui/claim`` ``{result, user_ref}`` (the claim step, as ``POST /api/connections/claim``:
the page claims for the user_ref it asked the link for, as a backend claims for its signed-in user),
``GET ui/config`` (links: the emulator's mailbox viewer),
``GET|DELETE ui/connections/{id}`` (status / disconnect), ``GET ui/connections/{id}/messages`` (its last
20 messages), ``POST ui/connections/{id}/test``
(a test message from the mailbox to itself, as ``POST /api/connections/{id}/test``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import azure.functions as func

from blueprints.http_util import SECURITY_HEADERS, api, json_response, read_json
from shared import errors

if TYPE_CHECKING:
    from shared.settings import Settings

logger = logging.getLogger(__name__)

ui_bp = func.Blueprint()

STATIC = Path(__file__).resolve().parent / "ui_static"
CONTENT_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
# Strict: only this origin's script/style files, fetch to this origin, no inline code, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def get_services():
    """The shared services, imported on first use (function_app stays cheap to load)."""
    from shared.services import get_services as services

    return services()


def _connect():
    from shared.connect import ConnectService

    return ConnectService(get_services())


def _intake():
    from shared.intake import MessageIntake

    return MessageIntake(get_services())


class SampleUiDisabled(errors.NotFound):
    default_hint = "The sample page is not enabled (ENABLE_SAMPLE_UI, local runs only)."


def _settings() -> Settings:
    """The settings when the sample page may be served; SampleUiDisabled (404) otherwise."""
    settings = get_services().settings
    if not settings.enable_sample_ui or urlsplit(settings.public_base_url).hostname not in _LOOPBACK:
        raise SampleUiDisabled()
    return settings


def _static(name: str) -> func.HttpResponse:
    _settings()
    body = (STATIC / name).read_bytes()
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
    return func.HttpResponse(body, status_code=200, mimetype=CONTENT_TYPES[name], charset="utf-8", headers=headers)


def sample_page_url() -> str | None:
    """The sample page's URL when it is served (local mode), else None."""
    try:
        return ui_url(_settings())
    except errors.MailbridgeError:
        return None


def ui_url(settings: Settings) -> str:
    """Where the connect flow returns to: the sample page itself."""
    return f"{settings.public_base_url}/api/ui"


@ui_bp.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_page(req: func.HttpRequest) -> func.HttpResponse:
    """The sample connect page (static HTML; the script reads the outcome from the query string)."""
    return _static("index.html")


@ui_bp.route(route="ui/app.js", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_script(req: func.HttpRequest) -> func.HttpResponse:
    return _static("app.js")


@ui_bp.route(route="ui/app.css", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_style(req: func.HttpRequest) -> func.HttpResponse:
    return _static("app.css")


@ui_bp.route(route="ui/connect-link", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_connect_link(req: func.HttpRequest) -> func.HttpResponse:
    """What the SaaS backend would do with its function key: a connect link returning to the page."""
    settings = _settings()
    body = read_json(req)
    if not isinstance(body, dict):
        raise errors.InvalidRequest("The body must be a JSON object.")
    request: dict[str, Any] = {"user_ref": body.get("user_ref"), "return_url": ui_url(settings)}
    if body.get("login_hint"):
        request["login_hint"] = body["login_hint"]
    return json_response(_connect().create_link(request), status=201)


@ui_bp.route(route="ui/config", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_config(req: func.HttpRequest) -> func.HttpResponse:
    """What the page links to: the emulated mailboxes' viewer when Graph is the local emulator."""
    settings = _settings()
    graph = urlsplit(settings.graph_endpoint)
    viewer = f"{settings.graph_endpoint}/_emulator/ui/mailboxes" if graph.hostname in _LOOPBACK else None
    return json_response({"mailbox_viewer": viewer})


@ui_bp.route(route="ui/claim", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_claim(req: func.HttpRequest) -> func.HttpResponse:
    """What the backend does when the browser comes back with ``result``: claim it for its signed-in user."""
    _settings()
    return json_response(_connect().claim(read_json(req)))


@ui_bp.route(route="ui/connections/{connection_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_connection_status(req: func.HttpRequest) -> func.HttpResponse:
    _settings()
    return json_response(_connect().status(req.route_params["connection_id"]))


@ui_bp.route(route="ui/connections/{connection_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_disconnect(req: func.HttpRequest) -> func.HttpResponse:
    _settings()
    return json_response(_connect().disconnect(req.route_params["connection_id"]))


@ui_bp.route(route="ui/connections/{connection_id}/messages", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_messages(req: func.HttpRequest) -> func.HttpResponse:
    """The connection's last 20 messages (the outgoing log, as ``GET /api/messages?connection_id=``)."""
    from shared.outgoing_log import OutgoingLog

    _settings()
    return json_response(OutgoingLog(get_services()).page({"connection_id": req.route_params["connection_id"]}))


@ui_bp.route(route="ui/connections/{connection_id}/test", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_send_test(req: func.HttpRequest) -> func.HttpResponse:
    """The "Send test email" button: the same test send as ``POST /api/connections/{id}/test``."""
    _settings()
    status, body = _intake().send_test(req.route_params["connection_id"])
    return json_response(body, status=status)
