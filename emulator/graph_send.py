"""Sending: `POST /me/sendMail`, `POST /users/{id}/sendMail`, `POST .../messages/{id}/send`.

Rights (Graph "send mail from another user"; Exchange permissions):
- own mailbox: delegated `Mail.Send` (`Mail.Send.Shared` includes it);
- `from` naming another mailbox: `Mail.Send.Shared`, plus Exchange Send As (sent as that
  mailbox: from = sender = it) or Send on Behalf (from = it, sender = the signed-in user);
  neither -> 403 ErrorSendAsDenied;
- `/users/{other}/sendMail`: `Mail.Send.Shared` and Full Access on that mailbox (else 403
  ErrorAccessDenied), then Send As / on Behalf as above;
- app-only tokens with the `Mail.Send` application role may send as any mailbox of the tenant.
MIME: with `Content-Type: text/plain` the body is the base64 MIME message (emulator/graph_mime.py).
Where the copies go: Sent Items of the mailbox whose endpoint was called; when `from` names
another mailbox, also that mailbox's Sent Items (MessageCopyForSentAsEnabled behaviour).
"""

from __future__ import annotations

from typing import Any

from emulator import graph_mailbox_state as mailbox_state
from emulator import graph_mime
from emulator.core import Response, Router
from emulator.directory import User
from emulator.graph_common import (
    GraphContext,
    access_denied,
    graph_route,
    json_body,
    send_as_denied,
)
from emulator.graph_message import GraphError, MessageFields, bad_body, parse_message
from emulator.graph_store import DRAFTS, SENT, GraphStore, StoredMessage

PERSONAL_MAX_RECIPIENTS = 100  # Outlook.com accounts (see REFERENCE.md, unconfirmed)


def max_recipients(ctx: GraphContext, owner: User) -> int:
    """Per-message recipient limit for this mailbox (Exchange Online 500, Outlook.com 100)."""
    limit = ctx.store.limits.max_recipients_per_message
    tenant = ctx.state.directory.tenant(owner.tid)
    if tenant is not None and tenant.kind == "personal":
        limit = min(limit, PERSONAL_MAX_RECIPIENTS)
    return limit


def recipient(user: User, address: str | None = None, name: str | None = None) -> dict[str, Any]:
    """A Graph recipient object for a directory user."""
    return {"emailAddress": {"name": name or user.display_name or user.mail, "address": address or user.mail}}


def require_send_rights(ctx: GraphContext, owner: User) -> None:
    """Permission to submit mail through `owner`'s mailbox endpoint."""
    if ctx.app_only:
        ctx.require("Mail.Send")
        return
    assert ctx.actor is not None
    if owner.oid == ctx.actor.oid:
        ctx.require("Mail.Send")
        return
    ctx.require("Mail.Send.Shared")
    if ctx.actor.oid.lower() not in owner.full_access:
        raise access_denied()


def resolve_from(
    ctx: GraphContext, owner: User, requested: dict[str, Any] | None
) -> tuple[User, dict[str, Any], dict[str, Any]]:
    """(from mailbox, `from` recipient, `sender` recipient) or 403 per the rules above."""
    if requested is None:
        from_user, address, name = owner, owner.mail, None
    else:
        address = requested["emailAddress"]["address"]
        name = requested["emailAddress"].get("name")
        if name == address:
            name = None
        found = ctx.state.directory.find_user(owner.tid, address)
        if found is None:
            raise send_as_denied()  # an address nobody in this organisation owns
        from_user = found
    from_rec = recipient(from_user, address, name)
    if ctx.app_only or (ctx.actor is not None and from_user.oid == ctx.actor.oid):
        return from_user, from_rec, from_rec
    actor = ctx.actor
    assert actor is not None
    if requested is not None:
        ctx.require("Mail.Send.Shared")
    if actor.oid.lower() in from_user.send_as:
        return from_user, from_rec, from_rec
    if actor.oid.lower() in from_user.send_on_behalf:
        return from_user, from_rec, recipient(actor)
    raise send_as_denied()


def check_sendable(ctx: GraphContext, owner: User, fields: MessageFields, attachments_size: int = 0) -> None:
    """Recipient and size checks done at submission time (also for drafts)."""
    count = fields.recipient_count()
    if count == 0:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient isn't valid., A message can't be sent because it contains no recipients.",
        )
    limit = max_recipients(ctx, owner)
    if count > limit:
        raise GraphError(
            400, "ErrorExceededMaxRecipientLimit", f"The message has {count} recipients; the maximum is {limit}."
        )
    size = len(fields.body.encode("utf-8")) + attachments_size
    if size > ctx.store.limits.max_message_bytes:
        raise GraphError(
            400,
            "ErrorMessageSizeExceeded",
            f"The message exceeds the maximum supported size of {ctx.store.limits.max_message_bytes} bytes.",
        )


def finish_send(ctx: GraphContext, store: GraphStore, owner: User, msg: StoredMessage, save: bool, via: str) -> None:
    """Rights, send limits, then the submission to transport (graph_store.GraphStore.submit); counters updated.

    Runs under the store lock so two concurrent sends of one draft cannot both succeed when transport is
    immediate: the second finds the draft gone (moved to Sent Items), as in Exchange. While an item is in
    transit (transport_delay_s) it is still in Drafts, and a second send of it is accepted: delivered twice.
    """
    with store.lock:
        if msg.folder == DRAFTS and store.find(owner.oid, msg.id) is not msg:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        from_user, from_rec, sender_rec = resolve_from(ctx, owner, msg.fields.from_)
        check_sendable(ctx, owner, msg.fields, sum(a.size for a in msg.attachments))
        mailbox_state.check(ctx.state, owner, mailbox_state.SUBMIT)
        if mailbox_state.is_restricted_sender(owner):
            if msg.folder == DRAFTS:
                store.delete(msg)
            ndr = ctx.state.extensions["graph_ndr"]
            ndr.bounce(
                ctx.state,
                owner.oid,
                msg,
                ctx.state.clock.now(),
                status=mailbox_state.RESTRICTED_NDR_STATUS,
                text=mailbox_state.RESTRICTED_NDR_TEXT,
            )
            return  # 202: Exchange Online's restricted senders are refused in transport (5.1.8 NDR)
        tenant = ctx.state.directory.tenant(owner.tid)
        personal = tenant is not None and tenant.kind == "personal"
        if not store.throttle.admit_send(ctx.app_id, owner.oid, msg.fields.recipient_count(), personal=personal):
            if msg.folder == DRAFTS:
                store.delete(msg)
            ctx.state.extensions["graph_ndr"].bounce(ctx.state, owner.oid, msg, ctx.state.clock.now())
            return  # 202 all the same: over the recipient rate limit Exchange NDRs (emulator/graph_ndr.py)
        addresses = {u.oid: u.mail.lower() for u in (owner, from_user)}
        store.submit(
            msg,
            owner_oid=owner.oid,
            from_oid=from_user.oid,
            sender=sender_rec,
            from_=from_rec,
            actor_oid=ctx.actor.oid if ctx.actor else None,
            save=save,
            via=via,
            address_of=addresses,
        )
    ctx.state.counters.incr("graph.messages_sent")
    ctx.state.counters.incr("graph.recipients", msg.fields.recipient_count())


def register(router: Router, state: Any, store: GraphStore) -> None:
    """Register the sending endpoints."""

    def send_mail(ctx: GraphContext, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_send_rights(ctx, owner)
        if graph_mime.is_mime_request(ctx.req.headers.get("Content-Type")):
            # MIME sendMail: the message is the base64 body; it is always saved to Sent Items (user-sendmail).
            fields = graph_mime.parse(graph_mime.decode(ctx.req.body))
            msg = store.new_message(owner.oid, SENT, fields, ctx.app_id)
            finish_send(ctx, store, owner, msg, True, "sendMail")
            return Response(202)
        body = json_body(ctx.req)
        for key in body:
            if key.lower() not in ("message", "savetosentitems"):
                raise bad_body(f"The parameter '{key}' is not valid for sendMail.")
        lowered = {k.lower(): v for k, v in body.items()}
        if lowered.get("message") is None:
            raise GraphError(400, "ErrorInvalidParameter", "The parameter 'Message' is missing.")
        save = lowered.get("savetosentitems", True)
        if save is None:
            save = True
        if not isinstance(save, bool):
            raise bad_body(f"Cannot convert the literal '{save}' to the expected type 'Edm.Boolean'.")
        fields = parse_message(lowered["message"], require_recipients=True, max_recipients=max_recipients(ctx, owner))
        msg = store.new_message(owner.oid, SENT, fields, ctx.app_id)
        finish_send(ctx, store, owner, msg, save, "sendMail")
        return Response(202)

    graph_route(router, state, store, "POST", ["/me/sendMail"], "graph.sendMail")(send_mail)
    graph_route(router, state, store, "POST", ["/users/{user}/sendMail"], "graph.userSendMail")(send_mail)

    def send_draft(ctx: GraphContext, item: str, user: str | None = None) -> Response:
        owner = ctx.mailbox(user)
        ctx.enter(owner)
        require_send_rights(ctx, owner)
        msg = store.find(owner.oid, item)
        if msg is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if msg.folder != DRAFTS:
            raise GraphError(400, "ErrorInvalidOperation", "Only draft messages can be sent.")
        finish_send(ctx, store, owner, msg, True, "draft")
        return Response(202)

    graph_route(
        router,
        state,
        store,
        "POST",
        [
            "/me/messages/{item}/send",
            "/users/{user}/messages/{item}/send",
            "/me/mailFolders/{folder}/messages/{item}/send",
        ],
        "graph.send",
    )(_drop_folder(send_draft))


def _drop_folder(fn: Any) -> Any:
    """Adapter: the `/mailFolders/{folder}/messages/{id}` form addresses the same item."""

    def wrapper(ctx: GraphContext, folder: str | None = None, **params: str) -> Response:
        return fn(ctx, **params)

    return wrapper
