"""Test-only admin API for the Graph half: mailbox contents, delivery log, limits, stats.

Routes (JSON, no auth; endpoint names `admin.graph.*` so `graph.*` fault globs never hit them):
- `GET  /_emulator/mailboxes`                          every directory mailbox with item counts
- `GET  /_emulator/mailboxes/{address}`                one mailbox's counts
- `GET  /_emulator/mailboxes/{address}/sentitems`      full Sent Items (`?key=` idempotency key)
- `GET  /_emulator/mailboxes/{address}/drafts`         full Drafts
- `GET  /_emulator/mailboxes/{address}/delivered`      this mailbox's delivery log entries
- `GET  /_emulator/graph/deliveries`                   global ordered log (`?mailbox=`, `?key=`)
- `GET  /_emulator/graph/received/{address}`           what recipient `address` (any address, in or out of
                                                        the directory) was delivered: headers, attachments
- `GET|POST|DELETE /_emulator/graph/limits`            read / change (partial) / restore defaults
- `GET  /_emulator/graph/stats`                        peak concurrency per mailbox, 429 counts
- `POST /_emulator/graph/reset`                        empty every mailbox and the logs
"""

from __future__ import annotations

from typing import Any

from emulator.core import HTTPError, Request, Response, Router, json_response
from emulator.directory import User
from emulator.graph_store import DRAFTS, SENT, GraphStore


def _error(status: int, message: str) -> HTTPError:
    code = "NotFound" if status == 404 else "BadRequest"
    return HTTPError(json_response(status, {"error": {"code": code, "message": message}}))


def find_mailbox(state: Any, address: str) -> User:
    """A directory user by oid or any address, in any tenant (404 otherwise)."""
    user = state.directory.find_user(None, address)
    if user is None:
        raise _error(404, f"mailbox {address} not found")
    return user


def mailbox_summary(store: GraphStore, user: User) -> dict[str, Any]:
    """Identity and item counts of one mailbox."""
    return {
        "address": user.mail,
        "upn": user.upn,
        "oid": user.oid,
        "tid": user.tid,
        "display_name": user.display_name,
        "is_shared": user.is_shared,
        "state": dict(user.mailbox_state) if user.mailbox_state else None,
        "counts": store.counts(user.oid),
    }


def _key_counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        key = entry.get("idempotencyKey")
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def received_view(entry: dict[str, Any]) -> dict[str, Any]:
    """One delivered message as its recipient sees it: no Bcc line, the internet headers as delivered."""
    headers = entry["internetHeaders"]
    return {
        "seq": entry["seq"],
        "time": entry["time"],
        "from": entry["from"],
        "sender": entry["sender"],
        "to": entry["to"],
        "cc": entry["cc"],
        "subject": entry["subject"],
        "internetMessageId": entry["internetMessageId"],
        "internetHeaders": headers,
        # First value per header name, lower-case names: what a test asserts on ("in-reply-to", ...).
        "headers": {h["name"].lower(): h["value"] for h in reversed(headers)},
        "attachments": entry["attachments"],
    }


def register(router: Router, state: Any, store: GraphStore) -> None:
    """Register the Graph admin routes."""

    def folder_items(user: User, folder: str, key: str | None) -> list[dict[str, Any]]:
        with store.lock:
            store.complete_transport()
            box = store.mailboxes.get(user.oid)
            items = list(box.folders[folder].values()) if box else []
            rendered = [m.to_admin({user.oid: user.mail}) for m in items]
        if key is not None:
            rendered = [m for m in rendered if m["idempotencyKey"] == key]
        return rendered

    @router.route("GET", "/_emulator/mailboxes", "admin.graph.mailboxes")
    def list_mailboxes(req: Request) -> Response:
        users = sorted(state.directory.users.values(), key=lambda u: u.mail.lower())
        tid = req.query.get("tid")
        return json_response(
            200, {"mailboxes": [mailbox_summary(store, u) for u in users if tid is None or u.tid == tid]}
        )

    @router.route("GET", "/_emulator/mailboxes/{address}", "admin.graph.mailboxes")
    def get_mailbox(req: Request, address: str) -> Response:
        return json_response(200, mailbox_summary(store, find_mailbox(state, address)))

    @router.route("GET", "/_emulator/mailboxes/{address}/sentitems", "admin.graph.mailboxes")
    def sent_items(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        return json_response(
            200, {"address": user.mail, "folder": SENT, "value": folder_items(user, SENT, req.query.get("key"))}
        )

    @router.route("GET", "/_emulator/mailboxes/{address}/drafts", "admin.graph.mailboxes")
    def drafts(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        return json_response(
            200, {"address": user.mail, "folder": DRAFTS, "value": folder_items(user, DRAFTS, req.query.get("key"))}
        )

    @router.route("GET", "/_emulator/mailboxes/{address}/delivered", "admin.graph.mailboxes")
    def delivered(req: Request, address: str) -> Response:
        user = find_mailbox(state, address)
        with store.lock:
            store.complete_transport()
            box = store.mailboxes.get(user.oid)
            entries = list(box.delivered) if box else []
        return json_response(200, {"address": user.mail, "value": entries, "counts_by_key": _key_counts(entries)})

    @router.route("GET", "/_emulator/graph/deliveries", "admin.graph.deliveries")
    def deliveries(req: Request) -> Response:
        with store.lock:
            store.complete_transport()
            entries = list(store.deliveries)
        mailbox = req.query.get("mailbox")
        if mailbox is not None:
            user = find_mailbox(state, mailbox)
            wanted = {a.lower() for a in user.addresses()}
            entries = [e for e in entries if e["mailbox"].lower() in wanted or e["from"].lower() in wanted]
        key = req.query.get("key")
        if key is not None:
            entries = [e for e in entries if e["idempotencyKey"] == key]
        since = req.query.get("since_seq")
        if since is not None:
            try:
                floor = int(since)
            except ValueError:
                raise _error(400, "since_seq must be an integer") from None
            entries = [e for e in entries if e["seq"] > floor]
        return json_response(200, {"value": entries, "count": len(entries), "counts_by_key": _key_counts(entries)})

    @router.route("GET", "/_emulator/graph/received/{address}", "admin.graph.received")
    def received(req: Request, address: str) -> Response:
        with store.lock:
            store.complete_transport()
            entries = list(store.deliveries)
        wanted = address.strip().lower()
        value = [received_view(e) for e in entries if wanted in {a.lower() for a in e["to"] + e["cc"] + e["bcc"]}]
        return json_response(200, {"address": address, "value": value, "count": len(value)})

    @router.route("GET", "/_emulator/graph/limits", "admin.graph.limits")
    def get_limits(req: Request) -> Response:
        return json_response(200, store.limits.to_dict())

    @router.route("POST", "/_emulator/graph/limits", "admin.graph.limits")
    def set_limits(req: Request) -> Response:
        try:
            changes = req.json() if req.body else {}
        except ValueError as exc:
            raise _error(400, f"invalid JSON: {exc}") from None
        if not isinstance(changes, dict):
            raise _error(400, "body must be a JSON object of limit names to numbers")
        if changes.pop("reset", False):
            store.limits.__init__()  # type: ignore[misc]  # back to defaults, same object
        try:
            store.limits.update(changes)
        except ValueError as exc:
            raise _error(400, str(exc)) from None
        return json_response(200, store.limits.to_dict())

    @router.route("DELETE", "/_emulator/graph/limits", "admin.graph.limits")
    def reset_limits(req: Request) -> Response:
        store.limits.__init__()  # type: ignore[misc]
        return json_response(200, store.limits.to_dict())

    @router.route("GET", "/_emulator/graph/stats", "admin.graph.stats")
    def stats(req: Request) -> Response:
        out = store.throttle.stats()

        def address(oid: str) -> str:
            user = state.directory.user(oid)
            return user.mail.lower() if user else oid

        # The throttle keys on mailbox object ids; show addresses, which tests know.
        out["max_concurrency"] = {address(k): v for k, v in out["max_concurrency"].items()}
        for row in out["per_app_mailbox"]:
            row["mailbox"] = address(row["mailbox"])
        with store.lock:
            out["deliveries"] = len(store.deliveries)
            out["upload_sessions_open"] = sum(1 for s in store.uploads.values() if not s.done)
        counters = state.counters.snapshot()
        out["counters"] = {k: v for k, v in counters.items() if k.startswith("graph.")}
        return json_response(200, out)

    @router.route("POST", "/_emulator/graph/reset", "admin.graph.reset")
    def reset(req: Request) -> Response:
        store.reset()
        return json_response(200, {"ok": True})
