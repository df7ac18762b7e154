"""The emulator server: one threaded HTTPS server routing to the Entra, Graph and Key Vault modules."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from emulator import admin, entra, keyvault, msi
from emulator.core import Drop, Headers, HTTPError, Request, Response, Route, Router, json_response
from emulator.directory import CONSUMER_TENANT_ID, HOME_TENANT_ID, Tenant
from emulator.state import EmulatorState, FaultRule
from emulator.tls import TLSMaterial
from emulator.tokens import SigningKeys

log = logging.getLogger(__name__)
ResponseHook = Callable[[Request, Route | None, Response], None]


def fault_response(state: EmulatorState, name: str, rule: FaultRule | None, status: int) -> Response:
    """The error a real service gives for an injected 429/500/503/504, shaped per service."""
    retry = str(rule.retry_after if rule else 1)
    now = dt.datetime.fromtimestamp(state.clock.now(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    messages = {
        429: ("TooManyRequests", "Application is over its MailboxConcurrency limit."),
        500: ("InternalServerError", "An internal server error occurred."),
        503: ("ServiceUnavailable", "Service unavailable, try again later."),
        504: ("GatewayTimeout", "The gateway did not receive a response in time."),
    }
    code, message = messages[status]
    headers = {"Retry-After": retry} if status in (429, 503) else {}
    service = name.split(".", 1)[0]
    if service == "graph":
        body: Any = {"error": {"code": code, "message": message, "innerError": {"date": now}}}
    elif service == "kv":
        kv_code = "Throttled" if status == 429 else code
        body = {"error": {"code": kv_code, "message": f"{message} (injected fault)"}}
    elif service == "entra":
        err = "temporarily_unavailable" if status not in (500, 504) else "server_error"
        body = {"error": err, "error_description": f"AADSTS90033: {message}", "error_codes": [90033]}
    else:
        body = {"error": {"code": code, "message": message}}
    return json_response(status, body, headers)


class _Server(ThreadingHTTPServer):
    """Threaded server that performs the TLS handshake in the worker thread, not the accept loop."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], ssl_ctx: ssl.SSLContext, emulator: Emulator) -> None:
        super().__init__(addr, _Handler)
        self.ssl_ctx = ssl_ctx
        self.emulator = emulator

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(30)
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return  # clients that do not trust our CA fail here; nothing to answer
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if getattr(request, "_emu_drop", False):
            # SO_LINGER 0 + close sends a TCP RST: the client sees a connection reset.
            try:
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socket.socket.close(request)
            except OSError:
                pass
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Called from inside socketserver's except block: clients hanging up are routine here.
        log.debug("connection error from %s: %s", client_address, sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MailbridgeEmulator/1.0"
    sys_version = ""
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection._emu_drop = True  # type: ignore[attr-defined]

    def _dispatch(self) -> None:
        emu: Emulator = self.server.emulator  # type: ignore[attr-defined]
        raw_path, _, raw_query = self.path.partition("?")
        body = self._read_body()
        query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        req = Request(
            method=self.command,
            path=unquote(raw_path),
            query=query,
            headers=Headers(list(self.headers.items())),
            body=body,
            client_address=self.client_address,
            raw_query=raw_query,
            base_url=emu.base_url,
        )
        try:
            resp = emu.handle(req)
        except Drop:
            self._drop()
            return
        self._send(resp)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class Emulator:
    """One HTTPS server emulating Entra ID, Graph mail and Key Vault."""

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        public_host: str | None = None,
        persist: bool = False,
    ):
        self.state_dir = Path(state_dir)
        self.persist = persist  # keep the CA and the emulated world in state_dir across restarts
        self.restored = False
        self._saver: Any = None
        self.host = host
        self.port = port
        self.public_host = public_host or ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        self.router = Router()
        self.state = EmulatorState()
        self.base_url = ""
        self.ca_path: Path | None = None
        self.response_hooks: list[tuple[str, ResponseHook]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def add_response_hook(self, endpoint_prefix: str, hook: ResponseHook) -> None:
        """Call ``hook(req, route, resp)`` for every response whose endpoint name starts with the prefix.

        Hooks also see injected fault responses (e.g. Graph adds its request-id headers).
        """
        self.response_hooks.append((endpoint_prefix, hook))

    def start(self) -> str:
        """Bind, generate the CA and keys, register every service, serve in a thread; return base URL."""
        self.state.keys = SigningKeys()
        self.state.identity_header = secrets.token_urlsafe(24)
        self._seed()
        tls = TLSMaterial(self.state_dir, [self.public_host], keep=self.persist)
        self.ca_path = tls.ca_path
        self._server = _Server((self.host, self.port), tls.server_context(), self)
        self.port = self._server.server_address[1]
        self.base_url = f"https://{self.public_host}:{self.port}"
        self.state.base_url = self.base_url
        self.state.extensions["emulator"] = self
        self._register()
        if self.persist:
            from emulator import persist

            self.restored = persist.restore(self.state, self.state_dir / persist.STATE_FILE)
            self._saver = persist.Saver(self.state, self.state_dir / persist.STATE_FILE)
            self._saver.start()
        self._thread = threading.Thread(target=self._server.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        self._write_info()
        return self.base_url

    def _seed(self) -> None:
        """Built-in tenants: the consumer (Outlook.com) tenant and a default home tenant."""
        d = self.state.directory
        d.add_tenant(Tenant(CONSUMER_TENANT_ID, "outlook.com", "Microsoft accounts", kind="personal"))
        d.add_tenant(Tenant(HOME_TENANT_ID, "mailbridge.example", "Mailbridge home tenant"))

    def _register(self) -> None:
        # Order matters: literal prefixes first, the Entra ``/{tenant}/...`` patterns last.
        admin.register(self.router, self.state)
        msi.register(self.router, self.state)
        keyvault.register(self.router, self.state)
        try:
            from emulator import graph  # owned by the Graph half; optional until it exists
        except ImportError:
            log.warning("emulator.graph not available: Graph routes disabled")
        else:
            graph.register(self.router, self.state)
        entra.register(self.router, self.state)

    def _write_info(self) -> None:
        info = {
            "base_url": self.base_url,
            "ca_file": str(self.ca_path),
            "pid": os.getpid(),
            "identity_endpoint": f"{self.base_url}/_msi/token",
            "identity_header": self.state.identity_header,
            "home_tenant_id": HOME_TENANT_ID,
            "restored": self.restored,
        }
        (self.state_dir / "emulator.json").write_text(json.dumps(info, indent=2))

    def stop(self) -> None:
        """Stop serving and close the socket (with ``persist``, the state is written once more)."""
        if self._saver is not None:
            self._saver.stop()
            self._saver = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def handle(self, req: Request) -> Response:
        """Route one request, applying counters and fault rules around the handler."""
        found = self.router.match(req.method, req.path)
        if not found:
            status = 405 if found is False else 404
            code = "MethodNotAllowed" if status == 405 else "NotFound"
            resp = json_response(status, {"error": {"code": code, "message": f"{req.method} {req.path}"}})
            return self._hooks(req, None, resp)
        route, params = found
        self.state.counters.incr(f"calls.{route.name}")
        rules = self.state.faults.pick(route.name)
        outcome: FaultRule | None = None
        for rule in rules:
            self.state.counters.incr(f"faults.{route.name}.{rule.kind}")
            if rule.kind == "latency":
                time.sleep(rule.latency_ms / 1000)
            else:
                outcome = rule
        if outcome is not None and outcome.kind == "reset":
            raise Drop()
        if outcome is not None and outcome.kind in ("429", "500", "503"):
            return self._hooks(req, route, fault_response(self.state, route.name, outcome, int(outcome.kind)))
        resp = self._call(route, req, params)
        if outcome is not None and outcome.kind == "504_after":
            # The handler ran and its effect stands; only the answer is lost.
            resp = fault_response(self.state, route.name, outcome, 504)
        return self._hooks(req, route, resp)

    def _call(self, route: Route, req: Request, params: dict[str, str]) -> Response:
        try:
            return route.handler(req, **params)
        except HTTPError as exc:
            return exc.response
        except Drop:
            raise
        except Exception:
            trace = uuid.uuid4().hex
            log.error("handler %s failed (trace %s):\n%s", route.name, trace, traceback.format_exc())
            self.state.counters.incr("errors.internal")
            return json_response(500, {"error": {"code": "InternalServerError", "message": f"trace {trace}"}})

    def _hooks(self, req: Request, route: Route | None, resp: Response) -> Response:
        name = route.name if route else ""
        for prefix, hook in self.response_hooks:
            if route is not None and name.startswith(prefix):
                hook(req, route, resp)
        return resp

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
