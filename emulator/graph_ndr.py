"""Exchange's recipient rate limit as a sender sees it: the send is accepted, then bounced.

Exchange Online counts every recipient a mailbox sends to over a rolling 24 hours (10,000; internal and
external, the same recipient counted each time). Past the limit Graph still answers ``202 Accepted`` —
the check happens in transport — the message is not delivered, a non-delivery report lands in the
sender's Inbox (``550 5.1.90 ... reached your daily limit for message recipients``), and the mailbox can
send again once its count for the past 24 hours drops below the limit. Personal Outlook.com mailboxes have
lower, unpublished daily limits (GraphLimits.consumer_recipients_per_window). Sources: docs/emulator.md.

Admin (test-only): ``GET /_emulator/mailboxes/{address}/inbox`` lists a mailbox's NDRs; counters
``graph.recipient_limit_ndrs`` (messages bounced) and ``graph.recipients_over_limit`` (their recipients)
let a test prove nothing was ever sent over the limit.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from emulator.core import Request, Response, Router, json_response
from emulator.graph_admin import find_mailbox
from emulator.graph_store import GraphStore, StoredMessage, iso

NDR_STATUS = "5.1.90"
NDR_TEXT = (
    "550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients. "
    "The mailbox can send again once the number of recipients in the past 24 hours drops below the limit."
)


class NdrInbox:
    """NDRs per mailbox object id (the only Inbox items the emulator has: recipients never get mail)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, list[dict[str, Any]]] = {}

    def bounce(
        self, state: Any, owner_oid: str, msg: StoredMessage, now: float, status: str = NDR_STATUS, text: str = NDR_TEXT
    ) -> dict[str, Any]:
        """Record the NDR of ``msg`` (accepted but not delivered) and count it. ``status``/``text``: another
        transport refusal (emulator/graph_mailbox_state.py: a restricted sender's 5.1.8)."""
        f = msg.fields
        item = {
            "id": "ndr-" + secrets.token_hex(8),
            "subject": f"Undeliverable: {f.subject}",
            "from": {"emailAddress": {"name": "Microsoft Outlook", "address": "postmaster@outlook.emulator"}},
            "status": status,
            "diagnostic": text,
            "receivedDateTime": iso(now),
            "originalInternetMessageId": msg.internet_message_id,
            "originalRecipients": [r["emailAddress"]["address"] for r in (*f.to, *f.cc, *f.bcc)],
            "idempotencyKey": msg.idempotency_key(),
        }
        with self._lock:
            self._items.setdefault(owner_oid, []).append(item)
        if status == NDR_STATUS:
            state.counters.incr("graph.recipient_limit_ndrs")
            state.counters.incr("graph.recipients_over_limit", f.recipient_count())
        else:
            state.counters.incr("graph.restricted_sender_ndrs")
        return item

    def items(self, owner_oid: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.get(owner_oid, []))

    def reset(self) -> None:
        with self._lock:
            self._items.clear()


def register(router: Router, state: Any, store: GraphStore) -> NdrInbox:
    inbox = NdrInbox()

    @router.route("GET", "/_emulator/mailboxes/{address}/inbox", "admin.graph.mailboxes")
    def list_inbox(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        items = inbox.items(user.oid)
        return json_response(
            200,
            {
                "value": items,
                "count": len(items),
                "recipients_in_window": store.throttle.recipients_in_window(user.oid),
            },
        )

    return inbox
