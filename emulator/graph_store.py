"""In-memory mail store behind the emulated Graph: mailboxes, drafts, Sent Items, deliveries.

Mailboxes are keyed by the directory user's object id and created on first use. Every send
(sendMail or draft + send) appends one entry to a global, ordered delivery log, whether or not
a copy was saved to Sent Items, so tests can reconcile "how many times was message X sent".
Message ids change when a draft moves to Sent Items, as they do in Exchange.

Transport is asynchronous ("things to know about send mail"): the 202 comes when the message is saved
in the sender's Drafts; transport later moves it to Sent Items (new id) and delivers it. With
`limits.transport_delay_s` > 0 a submitted item (sendMail's too) waits in Drafts that long on the
emulator clock; every read of the store first completes the transits that are due (`complete_transport`).
Whether Exchange refuses a second send of an item in transit is undocumented: the emulator accepts it
and delivers twice, the worst case a client must never trigger.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from emulator.graph_message import THREADING_PROPERTIES, Attachment, MessageFields, hash_bytes
from emulator.graph_throttle import GraphLimits, Throttle
from emulator.graph_upload import UploadSession

DRAFTS = "drafts"
SENT = "sentitems"
FOLDERS = (DRAFTS, SENT)
# Names a client idempotency key may travel under (header or extended-property name, any case).
IDEMPOTENCY_MARK = "mailbridge"
_MESSAGE_ID_RE = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> Graph's UTC timestamp format."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_item_id() -> str:
    """An Exchange-looking REST item id (URL-safe base64, ends with '=')."""
    return "AAMkAG" + base64.urlsafe_b64encode(secrets.token_bytes(48)).decode("ascii").rstrip("=") + "="


def new_message_id() -> str:
    """An internet Message-ID as Exchange assigns one (angle brackets, local part @ host)."""
    return f"<{secrets.token_hex(12)}@emulator.local>"


def is_message_id(value: str) -> bool:
    """RFC 5322 msg-id shape: `<local@domain>`, no spaces."""
    return bool(_MESSAGE_ID_RE.match(value))


def folder_id(mailbox_oid: str, folder: str) -> str:
    """Stable id of a well-known folder of a mailbox."""
    digest = hashlib.sha256(f"{mailbox_oid}/{folder}".encode()).digest()[:24]
    return "AQMkAD" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=") + "AAA="


@dataclass
class StoredMessage:
    """One item in a mailbox folder."""

    id: str
    mailbox_oid: str
    folder: str
    fields: MessageFields
    created: float
    modified: float
    app_id: str
    attachments: list[Attachment] = field(default_factory=list)
    sent: float | None = None
    from_: dict[str, Any] | None = None
    sender: dict[str, Any] | None = None
    internet_message_id: str = ""
    conversation_id: str = ""
    change_key: str = ""
    sent_by_oid: str | None = None
    submitted: float | None = None  # a send was accepted and transport has not moved the item yet

    def idempotency_key(self) -> str | None:
        """Client key found in an `x-...mailbridge...` header or a `...mailbridge...` property."""
        for header in self.fields.headers:
            if IDEMPOTENCY_MARK in header["name"].lower():
                return header["value"]
        for prop in self.fields.extended_properties:
            if IDEMPOTENCY_MARK in prop["id"].lower():
                return prop["value"]
        return None

    def to_graph(
        self,
        base: dict[str, str],
        *,
        select: list[str] | None = None,
        expand_props: list[dict[str, str]] | None = None,
        expand_attachments: bool = False,
    ) -> dict[str, Any]:
        """Graph's message representation; `$select`/`$expand` shape what is returned."""
        f = self.fields
        preview = " ".join(f.body.split())[:255]
        out: dict[str, Any] = {
            "@odata.etag": f'W/"{self.change_key}"',
            "id": self.id,
            "createdDateTime": iso(self.created),
            "lastModifiedDateTime": iso(self.modified),
            "changeKey": self.change_key,
            "categories": list(f.categories),
            "receivedDateTime": iso(self.sent or self.created),
            "sentDateTime": iso(self.sent or (self.submitted if base.get("show_submitted") else None)),
            "hasAttachments": bool(self.attachments),
            "internetMessageId": self.internet_message_id,
            "subject": f.subject,
            "bodyPreview": preview,
            "importance": f.importance,
            "parentFolderId": base["folder_ids"][self.folder],
            "conversationId": self.conversation_id,
            "isDeliveryReceiptRequested": False,
            "isReadReceiptRequested": False,
            "isRead": True,
            "isDraft": self.folder == DRAFTS and not (self.submitted and base.get("show_submitted")),
            "webLink": f"{base['origin']}/_emulator/ui/mailboxes/{base['address']}/messages/{self.id}",
            "inferenceClassification": "focused",
            "body": {"contentType": f.body_type, "content": f.body},
            "sender": self.sender,
            "from": self.from_,
            "toRecipients": f.to,
            "ccRecipients": f.cc,
            "bccRecipients": f.bcc,
            "replyTo": f.reply_to,
            "flag": {"flagStatus": "notFlagged"},
        }
        if select:
            wanted = {s.lower() for s in select}
            extra = {"internetmessageheaders": ("internetMessageHeaders", list(f.headers))}
            out = {k: v for k, v in out.items() if k in ("@odata.etag", "id") or k.lower() in wanted}
            for low, (name, value) in extra.items():
                if low in wanted:
                    out[name] = value
        if expand_props is not None:
            out["singleValueExtendedProperties"] = expand_props
        if expand_attachments:
            out["attachments"] = [a.to_graph(include_bytes=True) for a in self.attachments]
        return out

    def to_admin(self, address_of: dict[str, str]) -> dict[str, Any]:
        """Everything a test may want to assert on, including headers and attachment hashes."""
        f = self.fields
        return {
            "id": self.id,
            "mailbox": address_of.get(self.mailbox_oid, self.mailbox_oid),
            "folder": self.folder,
            "subject": f.subject,
            "body": {"contentType": f.body_type, "content": f.body},
            "toRecipients": f.to,
            "ccRecipients": f.cc,
            "bccRecipients": f.bcc,
            "replyTo": f.reply_to,
            "from": self.from_,
            "sender": self.sender,
            "requestedFrom": f.from_,
            "importance": f.importance,
            "categories": list(f.categories),
            "internetMessageHeaders": list(f.headers),
            "singleValueExtendedProperties": list(f.extended_properties),
            "attachments": [a.to_admin() for a in self.attachments],
            "createdDateTime": iso(self.created),
            "sentDateTime": iso(self.sent),
            "internetMessageId": self.internet_message_id,
            "idempotencyKey": self.idempotency_key(),
            "appId": self.app_id,
            "sentByOid": self.sent_by_oid,
        }


@dataclass
class Mailbox:
    """Folders of one mailbox plus its own log of everything it delivered."""

    oid: str
    folders: dict[str, OrderedDict[str, StoredMessage]] = field(
        default_factory=lambda: {name: OrderedDict() for name in FOLDERS}
    )
    delivered: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # items evicted by the per-folder cap


class GraphStore:
    """Thread-safe state of the emulated Graph mail service."""

    def __init__(self, now: Any) -> None:
        self._now = now
        self.lock = threading.RLock()
        self.limits = GraphLimits()
        self.throttle = Throttle(self.limits, now)
        self.mailboxes: dict[str, Mailbox] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.uploads: dict[str, UploadSession] = {}
        self.transit: list[tuple[float, StoredMessage, dict[str, Any]]] = []  # (due, item, record_send args)

    # ----- mailboxes and items -------------------------------------------------------------
    def mailbox(self, oid: str) -> Mailbox:
        """The mailbox of user `oid` (created empty on first use)."""
        with self.lock:
            box = self.mailboxes.get(oid)
            if box is None:
                box = self.mailboxes[oid] = Mailbox(oid)
            return box

    def _put(self, box: Mailbox, msg: StoredMessage) -> None:
        folder = box.folders[msg.folder]
        folder[msg.id] = msg
        while len(folder) > self.limits.max_items_per_folder:
            folder.popitem(last=False)
            box.dropped += 1

    def make_attachment(
        self, name: str, content_type: str, raw: bytes, *, is_inline: bool = False, content_id: str | None = None
    ) -> Attachment:
        """An Attachment keeping at most `attachment_bytes_cap` bytes of content."""
        cap = self.limits.attachment_bytes_cap
        return Attachment(
            id=new_item_id(),
            name=name,
            content_type=content_type,
            size=len(raw),
            sha256=hash_bytes(raw),
            content=raw[:cap],
            content_complete=len(raw) <= cap,
            is_inline=is_inline,
            content_id=content_id,
        )

    def new_message(self, oid: str, folder: str, fields: MessageFields, app_id: str) -> StoredMessage:
        """Build (not store) a message whose inline attachments come from `fields.attachments`."""
        now = self._now()
        msg = StoredMessage(
            id=new_item_id(),
            mailbox_oid=oid,
            folder=folder,
            fields=fields,
            created=now,
            modified=now,
            app_id=app_id,
            change_key=secrets.token_urlsafe(12),
            conversation_id="AAQkAG" + secrets.token_urlsafe(24),
            internet_message_id=new_message_id(),
        )
        msg.attachments = [
            self.make_attachment(
                a["name"], a["contentType"], a["raw"], is_inline=a["isInline"], content_id=a["contentId"]
            )
            for a in fields.attachments
        ]
        fields.attachments = []  # raw bytes now live (capped) on the Attachment objects
        return msg

    def create_draft(self, oid: str, fields: MessageFields, app_id: str) -> StoredMessage:
        """Store a new draft in `oid`'s Drafts folder."""
        msg = self.new_message(oid, DRAFTS, fields, app_id)
        msg.from_ = fields.from_
        if fields.client_message_id:  # a draft shows the id the client set; submission settles it
            msg.internet_message_id = fields.client_message_id
        with self.lock:
            self._put(self.mailbox(oid), msg)
        return msg

    def find(self, oid: str, item_id: str) -> StoredMessage | None:
        """A message of mailbox `oid` in any folder."""
        with self.lock:
            self.complete_transport()
            box = self.mailboxes.get(oid)
            if box is None:
                return None
            for folder in box.folders.values():
                if item_id in folder:
                    return folder[item_id]
        return None

    def delete(self, msg: StoredMessage) -> None:
        """Remove a message from its folder."""
        with self.lock:
            self.mailbox(msg.mailbox_oid).folders[msg.folder].pop(msg.id, None)

    def list(self, oid: str, folder: str | None) -> list[StoredMessage]:
        """Messages of one folder (or all), newest first like Graph's default order."""
        with self.lock:
            self.complete_transport()
            box = self.mailboxes.get(oid)
            if box is None:
                return []
            names = [folder] if folder else list(FOLDERS)
            items = [m for name in names for m in box.folders[name].values()]
        return sorted(items, key=lambda m: m.sent or m.created, reverse=True)

    def touch(self, msg: StoredMessage) -> None:
        """Record a modification (new change key)."""
        msg.modified = self._now()
        msg.change_key = secrets.token_urlsafe(12)

    # ----- sending ------------------------------------------------------------------------
    def submit(self, msg: StoredMessage, **send: Any) -> None:
        """Accept a send: delivered at once, or after `transport_delay_s` during which the item is in Drafts."""
        delay = self.limits.transport_delay_s
        with self.lock:
            if delay <= 0:
                if msg.folder == DRAFTS:
                    self.delete(msg)
                self.record_send(msg, **send)
                return
            if msg.folder != DRAFTS:  # sendMail: Outlook first saves the new message in the sender's Drafts
                msg.folder = DRAFTS
                self._put(self.mailbox(msg.mailbox_oid), msg)
            now = self._now()
            msg.submitted = msg.submitted or now
            self.transit.append((now + delay, msg, send))

    def complete_transport(self) -> None:
        """Move every item whose transit is due to Sent Items (new id) and deliver it."""
        with self.lock:
            if not self.transit:
                return
            now = self._now()
            due = [t for t in self.transit if t[0] <= now]
            self.transit = [t for t in self.transit if t[0] > now]
            for _, msg, send in due:
                if msg.folder == DRAFTS:  # first (or only) submission of the item
                    self.delete(msg)
                else:  # sent a second time while in transit: a second copy goes out
                    msg = StoredMessage(**{**msg.__dict__, "id": new_item_id(), "folder": DRAFTS})
                msg.submitted = None
                self.record_send(msg, **send)

    def record_send(
        self,
        msg: StoredMessage,
        *,
        owner_oid: str,
        from_oid: str,
        sender: dict[str, Any],
        from_: dict[str, Any],
        actor_oid: str | None,
        save: bool,
        via: str,
        address_of: dict[str, str],
    ) -> dict[str, Any]:
        """Finish a send: stamp, save copies to Sent Items, append to the delivery logs.

        The copy goes to the Sent Items of the mailbox whose endpoint was used (`owner_oid`);
        when `from` names another mailbox a second copy lands in that mailbox's Sent Items
        (Exchange's MessageCopyForSentAsEnabled / ...SendOnBehalf... behaviour).
        """
        now = self._now()
        with self.lock:
            self.settle_message_id(msg)
            headers = self.internet_headers(msg)
            msg.sent = now
            msg.modified = now
            msg.sender, msg.from_ = sender, from_
            msg.sent_by_oid = actor_oid
            saved_ids: dict[str, str] = {}
            if save:
                msg.id, msg.folder, msg.mailbox_oid = new_item_id(), SENT, owner_oid
                self._put(self.mailbox(owner_oid), msg)
                saved_ids[owner_oid] = msg.id
                if from_oid != owner_oid:
                    copy = StoredMessage(**{**msg.__dict__, "id": new_item_id(), "mailbox_oid": from_oid})
                    self._put(self.mailbox(from_oid), copy)
                    saved_ids[from_oid] = copy.id
            f = msg.fields
            entry = {
                "seq": len(self.deliveries) + 1,
                "time": iso(now),
                "via": via,
                "mailbox": address_of.get(owner_oid, owner_oid),
                "from": from_["emailAddress"]["address"],
                "sender": sender["emailAddress"]["address"],
                "to": [r["emailAddress"]["address"] for r in f.to],
                "cc": [r["emailAddress"]["address"] for r in f.cc],
                "bcc": [r["emailAddress"]["address"] for r in f.bcc],
                "recipients": f.recipient_count(),
                "subject": f.subject,
                "idempotencyKey": msg.idempotency_key(),
                "internetMessageHeaders": list(f.headers),
                "singleValueExtendedProperties": list(f.extended_properties),
                "attachments": [
                    {
                        "name": a.name,
                        "contentType": a.content_type,
                        "size": a.size,
                        "sha256": a.sha256,
                        "isInline": a.is_inline,
                        "contentId": a.content_id,
                    }
                    for a in msg.attachments
                ],
                "internetHeaders": headers,
                "savedToSentItems": save,
                "sentItemIds": {address_of.get(k, k): v for k, v in saved_ids.items()},
                "internetMessageId": msg.internet_message_id,
                "appId": msg.app_id,
                "actorOid": actor_oid,
            }
            self.deliveries.append(entry)
            self.mailbox(owner_oid).delivered.append(entry)
            if from_oid != owner_oid:
                self.mailbox(from_oid).delivered.append(entry)
            return entry

    def settle_message_id(self, msg: StoredMessage) -> None:
        """At submission: keep a client-chosen Message-ID only if `keep_client_message_id` (and well formed);
        otherwise transport assigns its own (MS-OXCMAIL 2.1.3.2.11: servers MAY overwrite it)."""
        client = msg.fields.client_message_id
        if client is None:
            return
        keep = self.limits.keep_client_message_id and is_message_id(client)
        msg.internet_message_id = client if keep else new_message_id()
        msg.fields.client_message_id = None

    def internet_headers(self, msg: StoredMessage) -> list[dict[str, str]]:
        """The internet headers a recipient of `msg` receives that the client had a say in."""
        out = [{"name": "Message-ID", "value": msg.internet_message_id}]
        names = {"message-id"}
        for header in msg.fields.mime_headers:
            out.append(dict(header))
            names.add(header["name"].lower())
        if self.limits.render_threading_properties:
            for prop in msg.fields.extended_properties:
                name = THREADING_PROPERTIES.get(prop["id"].lower())
                if name is not None and name.lower() not in names:
                    out.append({"name": name, "value": prop["value"]})
                    names.add(name.lower())
        out += [dict(h) for h in msg.fields.headers if h["name"].lower() not in names]
        return out

    # ----- upload sessions ----------------------------------------------------------------
    def add_upload(self, session: UploadSession) -> None:
        """Remember a new upload session by its secret token."""
        with self.lock:
            now = self._now()
            # Drop sessions past expiry so abandoned uploads cannot pile up in benchmarks.
            for token in [t for t, s in self.uploads.items() if s.expires_at <= now or s.done]:
                del self.uploads[token]
            self.uploads[session.token] = session

    def upload(self, token: str) -> UploadSession | None:
        """The session owning `token`."""
        with self.lock:
            return self.uploads.get(token)

    def cancel_upload(self, token: str) -> bool:
        """Forget an upload session (DELETE on its URL); False when there was none."""
        with self.lock:
            return self.uploads.pop(token, None) is not None

    # ----- admin --------------------------------------------------------------------------
    def counts(self, oid: str) -> dict[str, int]:
        """Item counts per folder of a mailbox, and deliveries."""
        with self.lock:
            self.complete_transport()
            box = self.mailboxes.get(oid)
            if box is None:
                return {DRAFTS: 0, SENT: 0, "delivered": 0}
            return {**{k: len(v) for k, v in box.folders.items()}, "delivered": len(box.delivered)}

    def reset(self) -> None:
        """Empty every mailbox, the delivery log, uploads and throttling windows."""
        with self.lock:
            self.mailboxes.clear()
            self.deliveries.clear()
            self.uploads.clear()
            self.transit.clear()
        self.throttle.reset()
