"""Microsoft Graph mail, emulated: entry point called by `emulator.app.Emulator` at start-up.

Module map (each file one job):
- graph_message.py  message validation / model, `GraphError`
- graph_store.py    mailboxes, drafts, Sent Items, delivery log
- graph_throttle.py Outlook throttling (concurrency, request/message/recipient/upload windows)
- graph_upload.py   attachment upload sessions
- graph_mime.py     MIME (text/plain base64) bodies of sendMail and draft creation
- graph_query.py    the OData `$filter`/`$expand`/`$select` subset
- graph_common.py   auth context, error bodies, request ids, route wrapper
- graph_send.py     sendMail and draft send
- graph_drafts.py   drafts, attachments, upload sessions, `/me`-style reads
- graph_admin.py    `/_emulator/mailboxes/...`, `/_emulator/graph/...`
- graph_ndr.py      the recipient rate limit's NDRs (202, not delivered, an NDR in the Inbox)
- graph_mailbox_state.py  a tenant without Exchange Online, a mailbox's refusal states (issue 25)
- mailbox_view.py   HTML viewer under `/_emulator/ui/mailboxes`
"""

from __future__ import annotations

from typing import Any

from emulator import graph_admin, graph_drafts, graph_mailbox_state, graph_ndr, graph_send, mailbox_view
from emulator.core import Response, Router, json_response
from emulator.graph_common import GraphContext, add_request_id_headers, graph_route, refuse_dot_segments
from emulator.graph_message import GraphError
from emulator.graph_store import GraphStore

# Delegated permissions that let `GET /me` read the signed-in user's profile.
PROFILE_SCOPES = (
    "User.Read",
    "User.ReadWrite",
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
)


def _profile_mail(state: Any, owner: Any) -> str | None:
    """The user resource's ``mail``: null for personal Microsoft accounts, whose SMTP address is the
    userPrincipalName (OfficeDev/outlook-dev-docs#196, O365/python-o365#508), and for a tenant without Exchange
    Online, which is what fills it in."""
    tenant = state.directory.tenant(owner.tid)
    if tenant is not None and (tenant.kind == "personal" or not tenant.exchange_online):
        return None
    return owner.mail


def register(router: Router, state: Any) -> None:
    """Attach a fresh `GraphStore` to `state.graph` and register Graph + Graph-admin routes."""
    store = GraphStore(state.clock.now)
    state.graph = store

    def me(ctx: GraphContext) -> Response:
        owner = ctx.mailbox(None)
        ctx.enter(owner, mailbox_call=False)
        if not ctx.has(*PROFILE_SCOPES):
            # Graph's answer when the token lacks User.Read (e.g. a Mail.Send-only token).
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        version = ctx.req.path.strip("/").split("/", 1)[0]
        given, _, surname = (owner.display_name or "").partition(" ")
        return json_response(
            200,
            {
                "@odata.context": f"https://graph.microsoft.com/{version}/$metadata#users/$entity",
                "businessPhones": [],
                "displayName": owner.display_name,
                "givenName": given or None,
                "jobTitle": None,
                "mail": _profile_mail(state, owner),
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": None,
                "surname": surname or None,
                "userPrincipalName": owner.upn,
                "id": owner.oid,
            },
        )

    refuse_dot_segments(router, state)
    graph_route(router, state, store, "GET", ["/me"], "graph.me")(me)
    graph_send.register(router, state, store)
    graph_drafts.register(router, state, store)
    graph_admin.register(router, state, store)
    graph_mailbox_state.register(router, state, store)
    state.extensions["graph_ndr"] = graph_ndr.register(router, state, store)
    mailbox_view.register(router, state, store)

    emulator = state.extensions.get("emulator")
    if emulator is not None and hasattr(emulator, "add_response_hook"):
        # A hook (not the route wrapper) so injected faults carry request ids as well.
        emulator.add_response_hook("graph.", add_request_id_headers)
