"""Drafts and attachments: create/list/get/delete messages, small attachments, upload sessions.

Permissions (Graph permission reference): creating or changing items needs `Mail.ReadWrite`
(`Mail.ReadWrite.Shared` + Full Access for another user's mailbox); reading needs `Mail.Read`
(implied by ReadWrite). The upload URL is pre-authenticated: it needs no token and refuses one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from emulator import graph_mime
from emulator.core import Request, Response, Router, json_response
from emulator.directory import User
from emulator.graph_common import (
    GraphContext,
    access_denied,
    error_response,
    graph_route,
    json_body,
)
from emulator.graph_mailbox_state import WRITE
from emulator.graph_mailbox_state import check as check_mailbox
from emulator.graph_message import GraphError, parse_message, validate_file_attachment
from emulator.graph_query import parse_expand, parse_list_query
from emulator.graph_send import max_recipients
from emulator.graph_store import DRAFTS, SENT, GraphStore, StoredMessage, folder_id, iso
from emulator.graph_upload import UploadSession, parse_attachment_item

WELL_KNOWN = {"drafts": DRAFTS, "sentitems": SENT}
# Folders every mailbox has that the emulator keeps empty (nothing is ever received).
EMPTY_FOLDERS = {"inbox", "outbox", "deleteditems", "junkemail", "archive", "msgfolderroot"}
_SESSION_RE = re.compile(r"^AttachmentSessions\('([^']+)'\)$", re.IGNORECASE)


def not_found() -> GraphError:
    """Exchange's answer for an item id that is not (or no longer) in the mailbox."""
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def require_mail_access(ctx: GraphContext, owner: User, *, write: bool) -> None:
    """Mail.Read / Mail.ReadWrite on the own mailbox, the .Shared variant + Full Access on others."""
    perm = "Mail.ReadWrite" if write else "Mail.Read"
    if ctx.app_only or (ctx.actor is not None and ctx.actor.oid == owner.oid):
        ctx.require(perm)
        return
    ctx.require(perm + ".Shared")
    assert ctx.actor is not None
    if ctx.actor.oid.lower() not in owner.full_access:
        raise access_denied()


def view_base(req: Request, owner: User, store: GraphStore) -> dict[str, Any]:
    """What `StoredMessage.to_graph` needs to render links, folder ids and items in transit."""
    return {
        "origin": req.base_url,
        "address": owner.mail,
        "folder_ids": {DRAFTS: folder_id(owner.oid, DRAFTS), SENT: folder_id(owner.oid, SENT)},
        "show_submitted": bool(store.limits.transit_shows_submitted),
    }


def resolve_folder(owner: User, folder: str | None) -> str | None:
    """Well-known name or folder id -> store folder; '' for an always-empty folder."""
    if folder is None:
        return None
    low = folder.lower()
    if low in WELL_KNOWN:
        return WELL_KNOWN[low]
    for name in (DRAFTS, SENT):
        if folder == folder_id(owner.oid, name):
            return name
    if low in EMPTY_FOLDERS:
        return ""
    raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")


def _entity_context(req: Request, what: str) -> str:
    version = req.path.strip("/").split("/", 1)[0]
    return f"https://graph.microsoft.com/{version}/$metadata#{what}"


def register(router: Router, state: Any, store: GraphStore) -> None:
    """Register draft, listing, attachment and upload-session endpoints."""

    def draft_of(ctx: GraphContext, owner: User, item: str) -> StoredMessage:
        msg = store.find(owner.oid, item)
        if msg is None:
            raise not_found()
        return msg

    def create_message(ctx: GraphContext, user: str | None = None, folder: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=True)
        check_mailbox(state, owner, WRITE)  # a full mailbox takes no new items (graph_mailbox_state)
        if folder is not None and resolve_folder(owner, folder) != DRAFTS:
            raise GraphError(400, "ErrorInvalidRequest", "The emulator creates messages only in the Drafts folder.")
        if graph_mime.is_mime_request(ctx.req.headers.get("Content-Type")):
            if folder is not None:  # MIME only on /messages (graph_mime.folder_path_refused)
                raise graph_mime.folder_path_refused()
            fields = graph_mime.parse(graph_mime.decode(ctx.req.body))  # user-post-messages, MIME format
        else:
            body = json_body(ctx.req)
            fields = parse_message(body, require_recipients=False, max_recipients=max_recipients(ctx, owner))
        msg = store.create_draft(owner.oid, fields, ctx.app_id)
        out = {
            "@odata.context": _entity_context(ctx.req, "messages/$entity"),
            **msg.to_graph(view_base(ctx.req, owner, store)),
        }
        return json_response(201, out)

    graph_route(
        router,
        state,
        store,
        "POST",
        [
            "/me/messages",
            "/users/{user}/messages",
            "/me/mailFolders/{folder}/messages",
            "/users/{user}/mailFolders/{folder}/messages",
        ],
        "graph.createMessage",
    )(create_message)

    def list_messages(ctx: GraphContext, user: str | None = None, folder: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=False)
        where = resolve_folder(owner, folder)
        query = parse_list_query(ctx.req.query)
        items = [] if where == "" else store.list(owner.oid, where)
        if query.filter is not None:
            items = [m for m in items if query.filter.matches(m.fields.searchable_properties())]
        page = items[query.skip : query.skip + query.top]
        base = view_base(ctx.req, owner, store)
        out: dict[str, Any] = {
            "@odata.context": _entity_context(ctx.req, "messages"),
            "value": [
                m.to_graph(
                    base,
                    select=query.select,
                    expand_props=query.expand.props_for(m.fields.searchable_properties()),
                    expand_attachments=query.expand.attachments,
                )
                for m in page
            ],
        }
        if query.skip + query.top < len(items):
            params = {k: v for k, v in ctx.req.query.items() if k.lower() != "$skip"}
            params["$skip"] = str(query.skip + query.top)
            out["@odata.nextLink"] = f"{ctx.req.base_url}{ctx.req.path}?{urlencode(params)}"
        return json_response(200, out)

    graph_route(
        router,
        state,
        store,
        "GET",
        [
            "/me/messages",
            "/users/{user}/messages",
            "/me/mailFolders/{folder}/messages",
            "/users/{user}/mailFolders/{folder}/messages",
        ],
        "graph.listMessages",
    )(list_messages)

    item_paths = ["/me/messages/{item}", "/users/{user}/messages/{item}"]

    def get_message(ctx: GraphContext, item: str, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=False)
        msg = draft_of(ctx, owner, item)
        lowered = {k.lower(): v for k, v in ctx.req.query.items()}
        expand = parse_expand(lowered.get("$expand"))
        select = [s.strip() for s in lowered["$select"].split(",")] if lowered.get("$select") else None
        out = {
            "@odata.context": _entity_context(ctx.req, "messages/$entity"),
            **msg.to_graph(
                view_base(ctx.req, owner, store),
                select=select,
                expand_props=expand.props_for(msg.fields.searchable_properties()),
                expand_attachments=expand.attachments,
            ),
        }
        return json_response(200, out)

    graph_route(router, state, store, "GET", item_paths, "graph.getMessage")(get_message)

    def delete_message(ctx: GraphContext, item: str, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=True)
        store.delete(draft_of(ctx, owner, item))
        return Response(204)

    graph_route(router, state, store, "DELETE", item_paths, "graph.deleteMessage")(delete_message)

    attach_paths = ["/me/messages/{item}/attachments", "/users/{user}/messages/{item}/attachments"]

    def add_attachment(ctx: GraphContext, item: str, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=True)
        check_mailbox(state, owner, WRITE)  # a full mailbox takes no new items (graph_mailbox_state)
        msg = draft_of(ctx, owner, item)
        att = validate_file_attachment(json_body(ctx.req))
        stored = store.make_attachment(
            att["name"], att["contentType"], att["raw"], is_inline=att["isInline"], content_id=att["contentId"]
        )
        with store.lock:
            msg.attachments.append(stored)
            store.touch(msg)
        out = {"@odata.context": _entity_context(ctx.req, "attachments/$entity"), **stored.to_graph(include_bytes=True)}
        return json_response(201, out)

    graph_route(router, state, store, "POST", attach_paths, "graph.addAttachment")(add_attachment)

    def list_attachments(ctx: GraphContext, item: str, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=False)
        msg = draft_of(ctx, owner, item)
        return json_response(
            200,
            {
                "@odata.context": _entity_context(ctx.req, "attachments"),
                "value": [a.to_graph(include_bytes=True) for a in msg.attachments],
            },
        )

    graph_route(router, state, store, "GET", attach_paths, "graph.listAttachments")(list_attachments)

    def create_upload_session(ctx: GraphContext, item: str, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_mail_access(ctx, owner, write=True)
        check_mailbox(state, owner, WRITE)  # a full mailbox takes no new items (graph_mailbox_state)
        msg = draft_of(ctx, owner, item)
        spec = parse_attachment_item(json_body(ctx.req))
        session = UploadSession(
            mailbox_oid=owner.oid,
            message_id=msg.id,
            app_id=ctx.app_id,
            name=spec["name"],
            content_type=spec["contentType"],
            size=spec["size"],
            is_inline=spec["isInline"],
            content_id=spec["contentId"],
            cap=store.limits.attachment_bytes_cap,
            expires_at=state.clock.now() + store.limits.upload_session_lifetime_s,
        )
        store.add_upload(session)
        url = (
            f"{ctx.req.base_url}/api/v2.0/Users('{owner.oid}@{owner.tid}')/Messages('{msg.id}')"
            f"/AttachmentSessions('{session.token}')"
        )
        return json_response(
            201,
            {
                "@odata.context": _entity_context(ctx.req, "microsoft.graph.uploadSession"),
                "uploadUrl": url,
                "expirationDateTime": iso(session.expires_at),
                "nextExpectedRanges": ["0-"],
            },
        )

    graph_route(
        router,
        state,
        store,
        "POST",
        [
            "/me/messages/{item}/attachments/createUploadSession",
            "/users/{user}/messages/{item}/attachments/createUploadSession",
        ],
        "graph.createUploadSession",
    )(create_upload_session)

    def session_of(req: Request, session: str) -> UploadSession:
        if req.headers.get("Authorization"):
            # What outlook.office.com answers when a Graph token is sent to the upload URL
            # (msgraph-sdk-java-core#445); Graph's docs say not to send one.
            raise GraphError(401, "InvalidAudience", "The audience claim value is invalid 'aud'.")
        match = _SESSION_RE.match(session)
        upload = store.upload(match.group(1)) if match else None
        if upload is None:
            raise GraphError(404, "ErrorItemNotFound", "The upload session was not found.")
        return upload

    def session_status(req: Request, upload: UploadSession) -> Response:
        return json_response(
            200,
            {
                "@odata.context": f"{req.base_url}/api/v2.0/$metadata#AttachmentSessions/$entity",
                "ExpirationDateTime": iso(upload.expires_at),
                "nextExpectedRanges": upload.next_expected(),
            },
        )

    @router.route("GET", "/api/v2.0/{users}/{messages}/{session}", "graph.uploadStatus")
    def upload_status(req: Request, users: str, messages: str, session: str) -> Response:
        """The session's state, what Graph's SDK upload task reads to resume (not in Outlook's walkthrough:
        documented for driveItem upload sessions; see docs/emulator.md)."""
        try:
            upload = session_of(req, session)
            upload.check_alive(state.clock.now())
            return session_status(req, upload)
        except GraphError as err:
            return error_response(err, req, state.clock.now())

    @router.route("DELETE", "/api/v2.0/{users}/{messages}/{session}", "graph.uploadCancel")
    def upload_cancel(req: Request, users: str, messages: str, session: str) -> Response:
        """Cancel the upload session: 204 ("Attach large files", Alternative: cancel the upload session)."""
        try:
            upload = session_of(req, session)
            store.cancel_upload(upload.token)
            return Response(204)
        except GraphError as err:
            return error_response(err, req, state.clock.now())

    @router.route("PUT", "/api/v2.0/{users}/{messages}/{session}", "graph.uploadChunk")
    def upload_chunk(req: Request, users: str, messages: str, session: str) -> Response:
        slot: tuple[str, str] | None = None
        try:
            upload = session_of(req, session)
            store.throttle.acquire(upload.app_id, upload.mailbox_oid)
            slot = (upload.app_id, upload.mailbox_oid)
            store.throttle.admit_upload(upload.app_id, upload.mailbox_oid, len(req.body))
            with store.lock:  # chunks of one session are applied one at a time, in order
                done = upload.put(
                    req.headers.get("Content-Range"), req.headers.get("Content-Length"), req.body, state.clock.now()
                )
                if not done:
                    return session_status(req, upload)
                msg = store.find(upload.mailbox_oid, upload.message_id)
                if msg is None or msg.folder != DRAFTS:
                    raise not_found()
                att = store.make_attachment(
                    upload.name, upload.content_type, b"", is_inline=upload.is_inline, content_id=upload.content_id
                )
                att.size, att.sha256, att.content = upload.size, upload.sha256, upload.content
                att.content_complete = len(att.content) == upload.size
                att.via_upload_session = True
                msg.attachments.append(att)
                store.touch(msg)
            location = f"{req.base_url}/api/v2.0/{users}/{messages}/Attachments('{att.id}')"
            return Response(201, b"", {"Location": location})
        except GraphError as err:
            if err.status == 429:
                state.counters.incr("graph.throttled")
            return error_response(err, req, state.clock.now())
        finally:
            if slot is not None:
                store.throttle.release(*slot)
