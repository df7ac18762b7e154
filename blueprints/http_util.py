"""Helpers shared by the HTTP adapters: JSON bodies, error mapping, redirects, HTML pages."""

from __future__ import annotations

import functools
import html
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.base.errors import InputError, InvalidJson, MailbridgeError, SettingsError
from shared.base.json_limits import MAX_DEPTH, nesting_exceeds

logger = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body),
        status_code=status,
        mimetype="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def error_response(exc: MailbridgeError) -> func.HttpResponse:
    return json_response({"error": exc.to_dict()}, status=exc.http_status)


def redirect(url: str) -> func.HttpResponse:
    return func.HttpResponse(status_code=302, headers={**SECURITY_HEADERS, "Location": url})


def html_page(
    title: str, message: str, status: int = 200, code: str | None = None, link: tuple[str, str] | None = None
) -> func.HttpResponse:
    """A minimal page for the browser when there is nowhere safe to redirect to (``link``: (text, our URL))."""
    code_line = f"<p><code>{html.escape(code)}</code></p>" if code else ""
    link_line = f"<p><a id='back' href='{html.escape(link[1])}'>{html.escape(link[0])}</a></p>" if link else ""
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p>{code_line}{link_line}</body></html>"
    )
    # frame-ancestors is not covered by default-src (CSP3): without it the pages could be framed (clickjacking).
    csp = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": csp, "X-Frame-Options": "DENY"}
    return func.HttpResponse(body, status_code=status, mimetype="text/html", headers=headers)


def read_json(req: func.HttpRequest, max_bytes: int = 1024 * 1024) -> Any:
    """The request's JSON body, refused before any decoding when it is larger than ``max_bytes`` (the
    declared Content-Length first, then the actual length) or nests deeper than MAX_DEPTH levels
    (``invalid_json``: the parser recurses per level, and 100,000 ``[`` were a RecursionError)."""
    declared = (req.headers.get("content-length") or "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise InputError("The request body is too large.")
    body = req.get_body() or b""
    if len(body) > max_bytes:
        raise InputError("The request body is too large.")
    if nesting_exceeds(body, MAX_DEPTH):
        raise InvalidJson(f"The body nests arrays or objects more than {MAX_DEPTH} levels deep.", field="$")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("The body must be UTF-8 JSON.") from None


def api(fn: Callable[[func.HttpRequest], func.HttpResponse]) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """Map Mailbridge errors to JSON error responses; unexpected errors become a logged 500 without details."""

    @functools.wraps(fn)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return fn(req)
        except SettingsError as exc:
            logger.error("Configuration error: %s", exc.message)
            return json_response({"error": {"code": exc.code, "message": exc.message}}, status=503)
        except MailbridgeError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("Unhandled error in %s", fn.__name__)
            return json_response({"error": {"code": "internal_error", "message": "Unexpected error."}}, status=500)

    return wrapper
