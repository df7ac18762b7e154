"""HTML viewer for emulated mailboxes (demo and debugging; test-only like the admin API).

- `/_emulator/ui/mailboxes`                               every mailbox with counts
- `/_emulator/ui/mailboxes/{address}`                     Sent Items table + deliveries not saved
- `/_emulator/ui/mailboxes/{address}/messages/{id}`       one message

Everything that came from a client is escaped. HTML bodies are shown inside an
`<iframe sandbox srcdoc=...>` (no scripts, no same-origin access), and the page's CSP blocks
remote loads, so a mail body can neither run code nor call home.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from emulator.core import Request, Response, Router, html_response
from emulator.graph_admin import find_mailbox
from emulator.graph_store import DRAFTS, SENT, GraphStore, StoredMessage, iso

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'"
STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;
vertical-align:top}th{background:#f4f4f4}iframe{width:100%;height:60vh;border:1px solid #ccc}
.muted{color:#777}code{font-size:.9em}"""


def esc(value: Any) -> str:
    """HTML-escape anything (None -> empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str) -> Response:
    """A complete page with the viewer's CSP."""
    doc = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )
    resp = html_response(200, doc)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _addr(rec: dict[str, Any] | None) -> str:
    if not rec:
        return ""
    email = rec["emailAddress"]
    return f"{email.get('name') or ''} <{email['address']}>"


def _addrs(recs: list[dict[str, Any]]) -> str:
    return ", ".join(_addr(r) for r in recs)


def register(router: Router, state: Any, store: GraphStore) -> None:
    """Register the HTML viewer routes."""

    @router.route("GET", "/_emulator/ui/mailboxes", "admin.graph.ui")
    def index(req: Request) -> Response:
        rows = []
        for user in sorted(state.directory.users.values(), key=lambda u: u.mail.lower()):
            counts = store.counts(user.oid)
            link = f"/_emulator/ui/mailboxes/{quote(user.mail)}"
            rows.append(
                f"<tr><td><a href='{esc(link)}'>{esc(user.mail)}</a></td><td>{esc(user.display_name)}</td>"
                f"<td><code>{esc(user.tid)}</code></td><td>{'shared' if user.is_shared else ''}</td>"
                f"<td>{counts[SENT]}</td><td>{counts[DRAFTS]}</td><td>{counts['delivered']}</td></tr>"
            )
        table = (
            "<table><tr><th>Mailbox</th><th>Name</th><th>Tenant</th><th></th><th>Sent Items</th>"
            "<th>Drafts</th><th>Delivered</th></tr>" + "".join(rows) + "</table>"
        )
        return page("Mailboxes", f"<h1>Emulated mailboxes</h1>{table}")

    @router.route("GET", "/_emulator/ui/mailboxes/{address}", "admin.graph.ui")
    def mailbox(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        with store.lock:
            box = store.mailboxes.get(user.oid)
            sent = list(reversed(box.folders[SENT].values())) if box else []
            drafts = list(reversed(box.folders[DRAFTS].values())) if box else []
            unsaved = [e for e in (box.delivered if box else []) if not e["savedToSentItems"]]

        def rows(items: list[StoredMessage]) -> str:
            out = []
            for m in items:
                link = f"/_emulator/ui/mailboxes/{quote(user.mail)}/messages/{quote(m.id)}"
                sender = _addr(m.sender)
                who = _addr(m.from_) + (f" (sent by {sender})" if m.sender and m.sender != m.from_ else "")
                out.append(
                    f"<tr><td>{esc(iso(m.sent or m.created))}</td><td>{esc(who)}</td>"
                    f"<td>{esc(_addrs(m.fields.to))}</td><td><a href='{esc(link)}'>"
                    f"{esc(m.fields.subject or '(no subject)')}</a></td><td>{len(m.attachments)}</td></tr>"
                )
            return "".join(out) or "<tr><td colspan=5 class=muted>empty</td></tr>"

        head = "<tr><th>Time</th><th>From / sender</th><th>To</th><th>Subject</th><th>Attachments</th></tr>"
        unsaved_rows = "".join(
            f"<tr><td>{esc(e['time'])}</td><td>{esc(e['from'])}</td><td>{esc(', '.join(e['to']))}</td>"
            f"<td>{esc(e['subject'])}</td></tr>"
            for e in reversed(unsaved)
        )
        body = (
            f"<p><a href='/_emulator/ui/mailboxes'>&larr; all mailboxes</a></p>"
            f"<h1>{esc(user.mail)}</h1><h2>Sent Items ({len(sent)})</h2><table>{head}{rows(sent)}</table>"
            f"<h2>Drafts ({len(drafts)})</h2><table>{head}{rows(drafts)}</table>"
            f"<h2>Delivered without a Sent Items copy ({len(unsaved)})</h2><table>"
            f"<tr><th>Time</th><th>From</th><th>To</th><th>Subject</th></tr>{unsaved_rows}</table>"
        )
        return page(user.mail, body)

    @router.route("GET", "/_emulator/ui/mailboxes/{address}/messages/{item}", "admin.graph.ui")
    def message(req: Request, address: str, item: str) -> Response:
        user = find_mailbox(state, address)
        msg = store.find(user.oid, item)
        if msg is None:
            return page("Not found", "<h1>Message not found</h1>")
        f = msg.fields
        meta = [
            ("Folder", msg.folder),
            ("Sent", iso(msg.sent)),
            ("From", _addr(msg.from_)),
            ("Sender", _addr(msg.sender)),
            ("To", _addrs(f.to)),
            ("Cc", _addrs(f.cc)),
            ("Bcc", _addrs(f.bcc)),
            ("Reply-To", _addrs(f.reply_to)),
            ("Subject", f.subject),
            ("Importance", f.importance),
            ("Internet message id", msg.internet_message_id),
            ("Item id", msg.id),
        ]
        meta += [(h["name"], h["value"]) for h in f.headers]
        meta += [(p["id"], p["value"]) for p in f.extended_properties]
        table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta)
        atts = "".join(
            f"<tr><td>{esc(a.name)}</td><td>{esc(a.content_type)}</td><td>{a.size}</td>"
            f"<td><code>{esc(a.sha256)}</code></td></tr>"
            for a in msg.attachments
        )
        if f.body_type == "html":
            # srcdoc is an attribute: escaping makes it inert text here, the iframe parses it.
            shown = f"<iframe sandbox='' referrerpolicy='no-referrer' srcdoc=\"{esc(f.body)}\"></iframe>"
        else:
            shown = f"<pre>{esc(f.body)}</pre>"
        back = f"/_emulator/ui/mailboxes/{quote(user.mail)}"
        body = (
            f"<p><a href='{esc(back)}'>&larr; {esc(user.mail)}</a></p><h1>{esc(f.subject or '(no subject)')}"
            f"</h1><table>{table}</table><h2>Attachments ({len(msg.attachments)})</h2><table><tr><th>Name"
            f"</th><th>Type</th><th>Size</th><th>sha256</th></tr>{atts}</table><h2>Body ({esc(f.body_type)})"
            f"</h2>{shown}"
        )
        return page(f.subject or "message", body)
