"""Plumbing shared by the emulated Graph endpoints: auth context, scopes, errors, request ids.

Every Graph API handler is wrapped by `graph_route`, which
1. refuses request bodies over 4,194,304 bytes with 413 (before auth, like a front door),
2. verifies the bearer token for Graph (E1's `tokens.verify_bearer`: 401 InvalidAuthenticationToken),
3. gives the handler a `GraphContext` (caller, app id, scopes, throttle slot),
4. turns `GraphError` into Graph's error body
   `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`,
5. releases the throttle slot.
The `request-id` / `client-request-id` response headers are added by a response hook so that
injected faults (answered by the core without calling the handler) carry them too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from emulator.core import Request, Response, Route, Router, json_response
from emulator.directory import User
from emulator.graph_mailbox_state import READ, has_exchange, no_exchange
from emulator.graph_mailbox_state import check as check_mailbox
from emulator.graph_message import MAX_REQUEST_BYTES, GraphError
from emulator.graph_store import GraphStore
from emulator.tokens import GRAPH_RESOURCE, AuthError, verify_bearer

GRAPH_VERSIONS = ("v1.0", "beta")
UPLOAD_METHODS = ("POST", "PUT", "PATCH")  # what Outlook's upload limit counts (graph_throttle)
SCOPE_PREFIX = "https://graph.microsoft.com/"
# Delegated scopes that include another (Graph permission reference: the .Shared variants cover
# the user's own mailbox too; ReadWrite covers Read).
IMPLIED = {
    "mail.send.shared": {"mail.send"},
    "mail.readwrite": {"mail.read"},
    "mail.readwrite.shared": {"mail.readwrite", "mail.read", "mail.read.shared"},
    "mail.read.shared": {"mail.read"},
    "user.readwrite": {"user.read"},
    "user.read.all": {"user.read"},
    "user.readwrite.all": {"user.read", "user.read.all"},
    "directory.read.all": {"user.read"},
}


def access_denied() -> GraphError:
    """Exchange's 403 for a token without the needed permission."""
    return GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def send_as_denied() -> GraphError:
    """Exchange's 403 when the caller may not send as / on behalf of the `from` mailbox."""
    return GraphError(
        403,
        "ErrorSendAsDenied",
        "The user account which was used to submit this request does not have the right to send "
        "mail on behalf of the specified sending account., Cannot submit message.",
    )


def invalid_user(ident: str) -> GraphError:
    """Graph's 404 for `/users/{id}` naming nobody in the tenant."""
    return GraphError(404, "ErrorInvalidUser", f"The requested user '{ident}' is invalid.")


def graph_date(ts: float) -> str:
    """Timestamp format of `innerError.date`."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def request_ids(req: Request) -> tuple[str, str]:
    """(request-id, client-request-id) for this request, generated once and remembered on it."""
    ids = getattr(req, "_graph_ids", None)
    if ids is None:
        rid = str(uuid.uuid4())
        ids = (rid, req.headers.get("client-request-id") or rid)
        req._graph_ids = ids  # type: ignore[attr-defined]
    return ids


def error_response(err: GraphError, req: Request, now: float) -> Response:
    """Graph's JSON error body for `err`, with its extra headers (Retry-After ...)."""
    rid, crid = request_ids(req)
    body: dict[str, Any] = {
        "error": {
            "code": err.code,
            "message": err.message,
            "innerError": {"date": graph_date(now), "request-id": rid, "client-request-id": crid},
        }
    }
    body.update(err.extra)
    return json_response(err.status, body, err.headers)


def add_request_id_headers(req: Request, route: Any, resp: Response) -> None:
    """Response hook: every Graph answer carries request-id and client-request-id headers."""
    rid, crid = request_ids(req)
    resp.headers.setdefault("request-id", rid)
    resp.headers.setdefault("client-request-id", crid)


class GraphContext:
    """Who is calling (from the verified token) and the throttle slot they hold."""

    def __init__(self, state: Any, store: GraphStore, req: Request, claims: dict[str, Any]) -> None:
        self.state = state
        self.store = store
        self.req = req
        self.claims = claims
        self.tid: str = claims.get("tid", "")
        self.app_id: str = claims.get("appid") or claims.get("azp") or ""
        self.app_only = "scp" not in claims
        granted = claims.get("roles", []) if self.app_only else claims.get("scp", "").split()
        scopes = {s.lower().removeprefix(SCOPE_PREFIX) for s in granted}
        for scope in list(scopes):
            scopes |= IMPLIED.get(scope, set())
        self.scopes = scopes
        self.actor: User | None = None if self.app_only else state.directory.user(claims.get("oid", ""))
        self._slot: tuple[str, str] | None = None

    def has(self, *any_of: str) -> bool:
        """True when the token grants at least one of these permissions."""
        return any(s.lower() in self.scopes for s in any_of)

    def require(self, *any_of: str) -> None:
        """403 ErrorAccessDenied unless one of `any_of` is granted."""
        if not self.has(*any_of):
            raise access_denied()

    def mailbox(self, user: str | None) -> User:
        """The mailbox addressed by `/me` (user None) or `/users/{user}`, in the token's tenant."""
        if user is None:
            if self.app_only:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            if self.actor is None:
                raise GraphError(404, "ErrorInvalidUser", "The signed-in user no longer exists.")
            return self.actor
        found = self.state.directory.find_user(self.tid, user)
        if found is None:
            raise invalid_user(user)
        return found

    def enter(self, mailbox: User, *, mailbox_call: bool = True) -> None:
        """Refuse a mailbox in a refusal state (emulator/graph_mailbox_state.py; ``mailbox_call`` False for the
        directory read ``/me``), then take a throttle slot for (app, mailbox); may raise 429. Held until the
        request ends."""
        if mailbox_call:
            check_mailbox(self.state, mailbox, READ)
        throttle = self.store.throttle
        try:
            throttle.acquire(self.app_id, mailbox.oid)
            self._slot = (self.app_id, mailbox.oid)
        finally:
            # Peak attempted concurrency, refused attempts included, as a plain counter too.
            self.state.counters.set_max(
                f"graph.max_concurrency.{mailbox.mail.lower()}", throttle.max_seen(self.app_id, mailbox.oid)
            )
        if self.req.method.upper() in UPLOAD_METHODS and self.req.body:
            # Outlook's "150 MB upload (PATCH, POST, PUT) in a 5-minute period" counts every request body.
            throttle.admit_upload(self.app_id, mailbox.oid, len(self.req.body))
        hold = self.store.limits.concurrency_hold_ms
        if hold:
            time.sleep(hold / 1000)

    def leave(self) -> None:
        """Release the throttle slot, if any."""
        if self._slot is not None:
            self.store.throttle.release(*self._slot)
            self._slot = None


GraphHandler = Callable[..., Response]

# A Graph path with a `.` or `..` segment once percent-decoded (the core decodes the whole path first, as Graph
# does: `%2F` inside a segment is a separator there, microsoftgraph/microsoft-graph-docs#10167, answered 400
# RequestBroker--ParseUri "Resource not found for the segment ..."). Such a segment is refused, never resolved
# against the segments before it: `/users/x/../../beta/me/sendMail` must not become `/beta/me/sendMail`.
_DOT_SEGMENT = re.compile(r"^/(?:v1\.0|beta)(?:/.*)?/\.{1,2}(?:/.*)?$", re.IGNORECASE)


def refuse_dot_segments(router: Router, state: Any) -> None:
    """Register, ahead of every route, Graph's 400 for a path holding a `.` or `..` segment (any method)."""

    def refuse(req: Request) -> Response:
        segment = next(s for s in req.path.split("/") if s in {".", ".."})
        err = GraphError(400, "RequestBroker--ParseUri", f"Resource not found for the segment '{segment}'.")
        return error_response(err, req, state.clock.now())

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        router.routes.insert(0, Route(method, "/{version}/{dot segment}", "graph.parseUri", refuse, _DOT_SEGMENT))


def graph_route(
    router: Router, state: Any, store: GraphStore, method: str, paths: list[str], name: str
) -> Callable[[GraphHandler], GraphHandler]:
    """Register `fn(ctx, **params)` for every path under every Graph version, wrapped as above.

    `paths` are suffixes like `/me/sendMail`; `{user}` in a path is the `/users/{user}` form.
    """

    def decorator(fn: GraphHandler) -> GraphHandler:
        def handler(req: Request, **params: str) -> Response:
            ctx: GraphContext | None = None
            try:
                if len(req.body) > MAX_REQUEST_BYTES:
                    raise GraphError(
                        413,
                        "RequestEntityTooLarge",
                        f"The request body is {len(req.body)} bytes; the maximum request "
                        f"size is {MAX_REQUEST_BYTES} bytes.",
                    )
                try:
                    claims = verify_bearer(state, req, GRAPH_RESOURCE)
                except AuthError as exc:
                    _align_request_id(exc.response, req)
                    return exc.response
                ctx = GraphContext(state, store, req, claims)
                if not has_exchange(state, ctx.tid) and (name != "graph.me" or ctx.app_only):
                    raise no_exchange(ctx.tid)  # the tenant has no Exchange Online, whatever the token
                return fn(ctx, **params)
            except GraphError as err:
                if err.status == 429:
                    state.counters.incr("graph.throttled")
                return error_response(err, req, state.clock.now())
            finally:
                if ctx is not None:
                    ctx.leave()

        handler.__name__ = f"graph_{name.replace('.', '_')}"
        for version in GRAPH_VERSIONS:
            for path in paths:
                router.add(method, f"/{version}{path}", name, handler)
        return fn

    return decorator


def _align_request_id(resp: Response, req: Request) -> None:
    """Make the innerError ids of the core's 401 body match our response headers."""
    try:
        body = json.loads(resp.body)
        inner = body["error"]["innerError"]
    except (ValueError, KeyError, TypeError):
        return
    inner["request-id"], inner["client-request-id"] = request_ids(req)
    resp.body = json.dumps(body).encode("utf-8")


def json_body(req: Request) -> dict[str, Any]:
    """The request's JSON object body, or Graph's 400 for an unreadable one."""
    if not req.body:
        raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
    try:
        data = req.json()
    except (ValueError, UnicodeDecodeError):
        raise GraphError(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure "
            "Content-Type header is set and payload is of valid JSON format.",
        ) from None
    if not isinstance(data, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return data
