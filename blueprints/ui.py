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

Anonymous routes on a developer's machine are reachable by any web page the developer visits, so
every route also checks the request (``_settings``):

- ``Host`` must be PUBLIC_BASE_URL's host and port, else 403 ``host_not_allowed``. A DNS-rebinding
  page (``evil.example`` re-pointed at 127.0.0.1) reaches the port but sends ``Host: evil.example``;
  it could otherwise read connection status and the outgoing log.
- State-changing requests (POST, DELETE) must carry ``Origin`` equal to PUBLIC_BASE_URL's origin, else
  403 ``origin_not_allowed`` (a cross-site ``fetch``/form POST sent a test mail), and POSTs must be
  ``Content-Type: application/json``, else 400 ``json_required`` (a cross-site request cannot send that
  without a CORS preflight, which nothing here answers). Browsers send ``Origin`` on every POST/DELETE,
  same-origin ones included (Fetch standard, "append a request Origin header").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import azure.functions as func

from blueprints.http_util import SECURITY_HEADERS, api, json_response, read_json
from shared.base import errors

if TYPE_CHECKING:
    from shared.base.settings import Settings

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
    from shared.connect.flow import ConnectService

    return ConnectService(get_services())


def _intake():
    from shared.send.intake import MessageIntake

    return MessageIntake(get_services())


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(netloc: str | None, scheme: str) -> tuple[str, int] | None:
    """(host, port) of a Host header or URL authority, the scheme's default port filled in; None if malformed."""
    if not netloc:
        return None
    try:
        parts = urlsplit(f"//{netloc}")
        if parts.path or parts.query or parts.fragment or parts.username is not None:
            return None  # a bare host[:port] only
        return parts.hostname or "", parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None


def _enabled_settings() -> Settings:
    """The settings when the sample page may be served; errors.SampleUiDisabled (404) otherwise."""
    settings = get_services().settings
    if not settings.enable_sample_ui or urlsplit(settings.public_base_url).hostname not in _LOOPBACK:
        raise errors.SampleUiDisabled()
    return settings


def _origin(value: str | None) -> tuple[str, tuple[str, int] | None] | None:
    """(scheme, (host, port)) of an ``Origin`` header such as ``http://127.0.0.1:7071``; None for anything
    else (``null``, which sandboxed and opaque origins send, a path, a malformed value)."""
    try:
        parts = urlsplit(value or "")
    except ValueError:
        return None
    if not parts.scheme or parts.path or parts.query or parts.fragment:
        return None
    return parts.scheme, _host_port(parts.netloc, parts.scheme)


def _settings(req: func.HttpRequest) -> Settings:
    """The settings when this request may be served (see the module docstring); a 4xx error otherwise."""
    settings = _enabled_settings()
    base = urlsplit(settings.public_base_url)
    ours = (base.scheme, _host_port(base.netloc, base.scheme))
    if _host_port(req.headers.get("host"), base.scheme) != ours[1]:
        raise errors.HostNotAllowed()
    if req.method.upper() not in ("GET", "HEAD"):
        if _origin(req.headers.get("origin")) != ours:
            raise errors.OriginNotAllowed()
        media_type = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if req.method.upper() == "POST" and media_type != "application/json":
            raise errors.JsonRequired()
    return settings


def _static(name: str, req: func.HttpRequest) -> func.HttpResponse:
    _settings(req)
    body = (STATIC / name).read_bytes()
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
    return func.HttpResponse(body, status_code=200, mimetype=CONTENT_TYPES[name], charset="utf-8", headers=headers)


def sample_page_url() -> str | None:
    """The sample page's URL when it is served (local mode), else None."""
    try:
        return ui_url(_enabled_settings())
    except errors.MailbridgeError:
        return None


def ui_url(settings: Settings) -> str:
    """Where the connect flow returns to: the sample page itself."""
    return f"{settings.public_base_url}/api/ui"


@ui_bp.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_page(req: func.HttpRequest) -> func.HttpResponse:
    """The sample connect page (static HTML; the script reads the outcome from the query string)."""
    return _static("index.html", req)


@ui_bp.route(route="ui/app.js", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_script(req: func.HttpRequest) -> func.HttpResponse:
    return _static("app.js", req)


@ui_bp.route(route="ui/app.css", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_style(req: func.HttpRequest) -> func.HttpResponse:
    return _static("app.css", req)


@ui_bp.route(route="ui/connect-link", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_connect_link(req: func.HttpRequest) -> func.HttpResponse:
    """What the SaaS backend would do with its function key: a connect link returning to the page."""
    settings = _settings(req)
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
    settings = _settings(req)
    graph = urlsplit(settings.graph_endpoint)
    viewer = f"{settings.graph_endpoint}/_emulator/ui/mailboxes" if graph.hostname in _LOOPBACK else None
    return json_response({"mailbox_viewer": viewer})


@ui_bp.route(route="ui/claim", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_claim(req: func.HttpRequest) -> func.HttpResponse:
    """What the backend does when the browser comes back with ``result``: claim it for its signed-in user."""
    _settings(req)
    return json_response(_connect().claim(read_json(req)))


@ui_bp.route(route="ui/connections/{connection_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_connection_status(req: func.HttpRequest) -> func.HttpResponse:
    _settings(req)
    return json_response(_connect().status(req.route_params["connection_id"]))


@ui_bp.route(route="ui/connections/{connection_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_disconnect(req: func.HttpRequest) -> func.HttpResponse:
    _settings(req)
    return json_response(_connect().disconnect(req.route_params["connection_id"]))


@ui_bp.route(route="ui/connections/{connection_id}/messages", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_messages(req: func.HttpRequest) -> func.HttpResponse:
    """The connection's last 20 messages (the outgoing log, as ``GET /api/messages?connection_id=``)."""
    from shared.send.outgoing_log import OutgoingLog

    _settings(req)
    return json_response(OutgoingLog(get_services()).page({"connection_id": req.route_params["connection_id"]}))


@ui_bp.route(route="ui/connections/{connection_id}/test", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def sample_ui_send_test(req: func.HttpRequest) -> func.HttpResponse:
    """The "Send test email" button: the same test send as ``POST /api/connections/{id}/test``."""
    _settings(req)
    status, body = _intake().send_test(req.route_params["connection_id"])
    return json_response(body, status=status)
