"""HTTP adapters for the connect flow: links, start, callback, admin consent, status, list, disconnect."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

from blueprints.http_util import api, html_page, json_response, read_json, redirect
from shared.base.errors import ConnectError, MailbridgeError, TransientError

if TYPE_CHECKING:
    from shared.connect.flow import BrowserStep, ConnectService

logger = logging.getLogger(__name__)

connect_bp = func.Blueprint()


def _service() -> ConnectService:
    # Imported on first use: loading function_app must not pull in MSAL, Storage and Key Vault (cold start).
    from shared.connect.flow import ConnectService
    from shared.services import get_services

    return ConnectService(get_services())


@connect_bp.route(route="connections", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api
def create_connection_link(req: func.HttpRequest) -> func.HttpResponse:
    """Backend asks for a connect link: {user_ref, return_url, login_hint?, domain_hint?, prompt?}."""
    return json_response(_service().create_link(read_json(req)), status=201)


@connect_bp.route(route="connections/claim", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@api
def claim_connection(req: func.HttpRequest) -> func.HttpResponse:
    """Backend claims a connect result for the user signed in on its side: {result, user_ref} -> the connection."""
    return json_response(_service().claim(read_json(req)))


_LINK_PROBLEMS = {
    "ticket expired": "This connect link has expired: links work for 10 minutes. Go back and click Connect again.",
    "ticket already used": "This connect link was already used (each link works once). Go back and click Connect"
    " again for a new one.",
}


def _link_problem(exc: ConnectError) -> str:
    """Say what happened to the link (expired, used, or malformed / altered), never which check failed how."""
    if exc.code != "expired_link":
        return exc.message
    return _LINK_PROBLEMS.get(
        exc.detail or "",
        "This connect link is incomplete or was changed on the way (an email client or chat app may have cut or"
        " rewritten it). Go back and click Connect again.",
    )


def _sample_page_link() -> tuple[str, str] | None:
    """In local mode (the sample page exists), a way back to it."""
    from blueprints.ui import sample_page_url

    url = sample_page_url()
    return ("Back to the sample page", url) if url else None


def _step(step: BrowserStep) -> func.HttpResponse:
    resp = redirect(step.location)
    if step.set_cookie:
        resp.headers["Set-Cookie"] = step.set_cookie
    return resp


@connect_bp.route(route="connections", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api
def list_connections(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(_service().list_for_user(req.params.get("user_ref"), req.params.get("include")))


@connect_bp.route(route="connections/{connection_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api
def get_connection(req: func.HttpRequest) -> func.HttpResponse:
    """One connection's status. ``?user_ref=`` (optional, on every connection-scoped route): answer only if the
    connection belongs to that user_ref, else 404 ``not_found`` as for an unknown id (docs/connect.md)."""
    return json_response(_service().status(req.route_params["connection_id"], req.params.get("user_ref")))


@connect_bp.route(route="connections/{connection_id}", methods=["PATCH"], auth_level=func.AuthLevel.FUNCTION)
@api
def update_connection(req: func.HttpRequest) -> func.HttpResponse:
    """``{"is_default": true}``: make this the user's default mailbox (``?user_ref=`` as for GET)."""
    body = read_json(req)
    return json_response(_service().update(req.route_params["connection_id"], body, req.params.get("user_ref")))


@connect_bp.route(route="connections/{connection_id}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
@api
def delete_connection(req: func.HttpRequest) -> func.HttpResponse:
    """Disconnect (``?user_ref=`` as for GET)."""
    return json_response(_service().disconnect(req.route_params["connection_id"], req.params.get("user_ref")))


@connect_bp.route(route="connect/start", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def connect_start(req: func.HttpRequest) -> func.HttpResponse:
    """Browser entry point: a ticket in, a 302 to Microsoft's authorize page out."""
    try:
        return _step(_service().start(req.params.get("ticket")))
    except ConnectError as exc:
        return html_page(
            "This link cannot be used", _link_problem(exc), status=400, code=exc.code, link=_sample_page_link()
        )
    except (TransientError, MailbridgeError) as exc:
        logger.warning("connect/start failed: %s", exc.code)
        return html_page("Please try again", "The connection could not be started. Try again shortly.", 503, exc.code)
    except Exception:
        logger.exception("connect/start failed unexpectedly")
        return html_page("Please try again", "The connection could not be started. Try again shortly.", 503)


@connect_bp.route(route="connect/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def connect_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Microsoft redirects here; we redirect to the caller's return_url with the outcome."""
    try:
        from shared.connect.flow import parse_cookies

        return _step(_service().callback(dict(req.params), parse_cookies(req.headers.get("cookie"))))
    except ConnectError as exc:
        return html_page("Sign-in could not be completed", exc.message, status=400, code=exc.code)
    except TransientError as exc:
        logger.warning("connect/callback failed: %s", exc.code)
        return html_page("Please try again", "The sign-in could not be completed. Start again shortly.", 503, exc.code)
    except Exception:
        logger.exception("connect/callback failed unexpectedly")
        return html_page("Please try again", "The sign-in could not be completed. Start again shortly.", 503)


@connect_bp.route(route="admin-consent", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def admin_consent(req: func.HttpRequest) -> func.HttpResponse:
    """An IT admin's entry point: 302 to the v2 adminconsent endpoint of their tenant, binding this browser."""
    try:
        return _step(_service().admin_consent_start(req.params.get("tenant"), req.params.get("return_url")))
    except MailbridgeError as exc:
        return html_page(
            "Admin consent", exc.message, status=exc.http_status if exc.http_status < 500 else 503, code=exc.code
        )


@connect_bp.route(route="admin-consent/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def admin_consent_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Entra's answer, once, in the browser that started: redirect to return_url or say what Entra reported."""
    from shared.connect.flow import parse_cookies, with_query

    try:
        outcome = _service().admin_consent_callback(dict(req.params), parse_cookies(req.headers.get("cookie")))
    except ConnectError as exc:
        return html_page("Admin consent", exc.message, status=400, code=exc.code)
    except MailbridgeError as exc:
        return html_page("Admin consent", exc.message, status=503, code=exc.code)
    result = outcome.result
    if outcome.return_url:
        resp = redirect(with_query(outcome.return_url, result))
    elif result.get("status") == "admin_consented":
        resp = html_page(
            "Approved",
            "Microsoft Entra reported that an administrator approved Mailbridge for your organisation. Users can now"
            " connect.",
        )
    else:
        resp = html_page("Admin consent not completed", "The approval was not completed.", 400, result.get("error"))
    resp.headers["Set-Cookie"] = outcome.clear_cookie
    return resp


@connect_bp.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)
def connect_housekeeping(timer: func.TimerRequest) -> None:
    """Every 5 minutes: purge expired connect flows, used tickets and unclaimed grants (their secret too)."""
    report = _service().purge_expired()
    logger.info("Connect housekeeping: purged %s", report)
