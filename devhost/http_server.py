"""The HTTP front of the dev host: route prefix, route templates, methods and auth levels."""

from __future__ import annotations

import hmac
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost.functions import FunctionSpec
from devhost.routing import Route

logger = logging.getLogger(__name__)

MAX_BODY = 100 * 1024 * 1024  # the Functions host rejects request bodies over 100 MB


class HttpFront:
    """Maps requests to HTTP-triggered functions and enforces function/admin keys."""

    def __init__(
        self,
        functions: list[FunctionSpec],
        *,
        route_prefix: str,
        function_keys: list[str],
        master_key: str,
        admin_invoke=None,
    ) -> None:
        self.prefix = "/" + route_prefix.strip("/") if route_prefix.strip("/") else ""
        self.function_keys = [k for k in function_keys if k]
        self.master_key = master_key
        self.admin_invoke = admin_invoke
        routes = []
        for spec in functions:
            if spec.trigger_type != "httpTrigger":
                continue
            template = spec.trigger.get("route") or spec.name
            level = str(spec.trigger.get("authLevel", "FUNCTION"))
            routes.append(Route.compile(template, spec.trigger.get("methods"), level, spec))
        # Literal segments win over parameters, as in ASP.NET routing.
        self.routes = sorted(routes, key=lambda r: (r.template.count("{"), -len(r.template)))

    def authorized(self, level: str, headers, query: dict[str, str]) -> bool:
        """Anonymous: anyone. Function: a function key or the master key. Admin: the master key only."""
        if level == "anonymous":
            return True
        supplied = headers.get("x-functions-key") or query.get("code") or ""
        if not supplied:
            return False
        if self.master_key and hmac.compare_digest(supplied, self.master_key):
            return True
        return level == "function" and any(hmac.compare_digest(supplied, k) for k in self.function_keys)

    def handle(self, method: str, raw_path: str, headers, body: bytes, base_url: str) -> func.HttpResponse:
        """Dispatch one request; returns the function's response or the host's own 401/404/500."""
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path
        if path.startswith("/admin/functions/") and method == "POST":
            return self._admin(path.rsplit("/", 1)[-1], headers, query, body)
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            return func.HttpResponse(status_code=404)
        sub = path[len(self.prefix) :] or "/"
        for route in self.routes:
            params = route.match(sub)
            if params is None or method not in route.methods:
                continue
            if not self.authorized(route.auth_level, headers, query):
                return func.HttpResponse(status_code=401)
            request = func.HttpRequest(
                method=method,
                url=base_url + raw_path,
                headers=dict(headers.items()),
                params=query,
                route_params=params,
                body=body,
            )
            try:
                result = route.function.invoke(request)
            except Exception:
                logger.exception("Function %s failed", route.function.name)
                return func.HttpResponse(status_code=500)
            if isinstance(result, str):
                return func.HttpResponse(result)
            return result if result is not None else func.HttpResponse(status_code=204)
        return func.HttpResponse(status_code=404)

    def _admin(self, name: str, headers, query: dict[str, str], body: bytes) -> func.HttpResponse:
        """``POST /admin/functions/{name}``: run a non-HTTP function now (master key), like the real host."""
        if not self.authorized("admin", headers, query):
            return func.HttpResponse(status_code=401)
        if self.admin_invoke is None or not self.admin_invoke(name, body):
            return func.HttpResponse(status_code=404)
        return func.HttpResponse(status_code=202)


def serve(front: HttpFront, host: str, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start a threaded HTTP/1.1 server for ``front`` in a daemon thread; returns (server, thread)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mailbridge-devhost"

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_response(413)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self.rfile.read(length) if length else b""
            base = f"http://{self.headers.get('Host') or f'{host}:{port}'}"
            resp = front.handle(self.command, self.path, self.headers, body, base)
            payload = resp.get_body() or b""
            self.send_response(resp.status_code)
            sent = {k.lower() for k, _ in resp.headers.items()}
            for key, value in resp.headers.items():
                self.send_header(key, value)
            if "content-type" not in sent and payload:
                self.send_header("Content-Type", f"{resp.mimetype}; charset={resp.charset}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

        def log_message(self, fmt: str, *args) -> None:
            # Paths can carry tickets and OAuth codes in their query: log method, path without query, status.
            if len(args) >= 2 and isinstance(args[0], str):
                line = args[0].split("?", 1)[0]
                logger.info("%s %s", line, args[1])

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="devhost-http", daemon=True)
    thread.start()
    return server, thread
