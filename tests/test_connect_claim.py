"""The claim step and browser binding (issue 13): a forwarded link never attaches someone else's mailbox.

End to end against real Azurite and the emulator over HTTPS: the callback parks a *pending* grant and
returns a one-time ``result``; only the backend's claim for the link's own ``user_ref`` makes it a
connection. Browser binding, replay, expiry, tampering, two user_refs of one mailbox, per-user MSAL
throttling and the anonymous admin-consent route are covered here; the real-browser version of the
forwarded link is in tests/test_browser.py.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from unittest import mock

import pytest

from shared.connect.flow import ConnectService
from shared.tokens.store import connection_id_for
from tests.fixtures.app import RETURN_ORIGIN, Mailbridge, query_of


def to_return_url(mb: Mailbridge, user: str, user_ref: str) -> dict[str, str]:
    """Link for ``user_ref``, signed in as ``user`` in ``mb``'s browser: the query of the return URL."""
    start = mb.start(mb.connect_link(user_ref))
    assert start.status_code == 302, start.get_body()
    back = mb.callback(mb.authorize(start.headers["Location"], user))
    assert back.status_code == 302, back.get_body()
    assert back.headers["Location"].startswith(RETURN_ORIGIN)
    return query_of(back.headers["Location"])


def error_code(resp) -> str:
    return json.loads(resp.get_body())["error"]["code"]


def pending_caches(mb: Mailbridge) -> set[str]:
    """The sealed token caches of pending grants (rows of ``tokencaches``; Key Vault holds none, issue 26)."""
    rows = mb.services.storage.table("tokencaches").list_entities(select=["PartitionKey"])
    return {r["PartitionKey"] for r in rows if r["PartitionKey"].startswith("mb-p")}


def grant_rows(mb: Mailbridge) -> list[dict[str, Any]]:
    return [e for e in mb.services.flows.table.list_entities() if e["PartitionKey"].startswith("grant-")]


def send_test(mb: Mailbridge, cid: str):
    return mb.http("send_test_message", "POST", route_params={"connection_id": cid}, body={})


def test_happy_path_link_sign_in_result_claim_send(mailbridge, emulator):
    mb = mailbridge()
    back = to_return_url(mb, "alice", "u-alice")
    assert back["status"] == "connected" and set(back) == {"tab", "status", "result"}  # no connection id yet
    assert mb.services.connections.for_user("u-alice") == []  # pending: not a connection
    assert len(pending_caches(mb)) >= 1
    claimed = mb.claim(back["result"], "u-alice")
    assert claimed.status_code == 200, claimed.get_body()
    conn = mb.json(claimed)
    assert conn["status"] == "connected" and conn["user_ref"] == "u-alice"
    assert conn["connection_id"] == connection_id_for(mb.kit.tid, mb.kit.users["alice"]["oid"], "u-alice")
    assert not any(r["status"] == "pending" for r in grant_rows(mb))
    sent = send_test(mb, conn["connection_id"])
    assert sent.status_code == 200 and mb.json(sent)["status"] == "sent", sent.get_body()
    assert mb.admin.sent_items(mb.kit.users["alice"]["mail"])


def test_forwarded_link_completed_by_someone_else_attaches_nothing(mailbridge, emulator):
    """A asks a link for user_ref=a and forwards it; B (already connected under b) completes it in B's own
    browser. The backend, seeing B signed in, claims for b: refused, grant discarded, B's own connection intact."""
    mb = mailbridge()
    own = mb.connect("bob", user_ref="b")  # B's earlier connection of their own
    own_conn = mb.services.connections.get(own["connection_id"])
    victim_browser = Mailbridge(mb.functions, mb.kit, mb.admin, mb.env)
    back = to_return_url(victim_browser, "bob", "a")
    assert back["status"] == "connected"
    before = pending_caches(mb)
    mismatch = mb.claim(back["result"], "b")
    assert (mismatch.status_code, error_code(mismatch)) == (403, "claim_mismatch")
    assert len(pending_caches(mb)) == len(before) - 1, "the pending token cache is deleted at once"
    # Nothing usable for a: no connection, and a send with the id it would have had is refused.
    assert mb.json(mb.http("list_connections", params={"user_ref": "a"}))["connections"] == []
    would_be = connection_id_for(mb.kit.tid, mb.kit.users["bob"]["oid"], "a")
    refused = send_test(mb, would_be)
    assert (refused.status_code, error_code(refused)) == (404, "not_found") or error_code(refused).startswith("unknown")
    # The result is gone for good, even for the "right" user_ref.
    late = mb.claim(back["result"], "a")
    assert (late.status_code, error_code(late)) == (409, "result_used")
    # B's own connection under b: untouched, still sends.
    after = mb.services.connections.get(own["connection_id"])
    assert (after.user_ref, after.status, after.secret_name) == ("b", "connected", own_conn.secret_name)
    assert mb.services.token_caches.read(after.secret_name)
    assert mb.json(send_test(mb, own["connection_id"]))["status"] == "sent"


def test_forwarded_sign_in_url_is_refused_without_the_binding_cookie(mailbridge, emulator):
    """A starts (the cookie is in A's browser) and forwards the Microsoft sign-in URL; B signs in: the
    callback in B's browser is refused with invalid_state and consumes nothing."""
    mb = mailbridge()
    start = mb.start(mb.connect_link("a"))
    authorize_url = start.headers["Location"]
    state = query_of(authorize_url)["state"]
    redirect = mb.authorize(authorize_url, "bob")
    before_secrets = pending_caches(mb)
    for cookies in ({}, {name: "x" * 43 for name in mb.cookies}):  # none, and a different value
        refused = mb.callback(redirect, cookies=cookies)
        assert refused.status_code == 400 and b"<code>invalid_state</code>" in refused.get_body()
        assert mb.services.flows.table.get_entity(mb.services.flows._key(state), "connect"), "flow kept"
    assert pending_caches(mb) == before_secrets and not grant_rows(mb)
    # The browser that started it still can finish it (the flow was not consumed).
    assert query_of(mb.callback(redirect).headers["Location"])["status"] == "connected"


def test_binding_cookie_attributes(mailbridge):
    mb = mailbridge()
    header = mb.http("connect_start", url=mb.connect_link("u1")).headers["Set-Cookie"]
    name, attrs = header.split("=", 1)[0], header.split(";")
    assert name.startswith("__Host-mb_connect_")
    assert {a.strip() for a in attrs[1:]} >= {"Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"}
    assert "Domain" not in header
    local = mailbridge(PUBLIC_BASE_URL="http://127.0.0.1:7071")
    plain = local.http("connect_start", url=local.connect_link("u1")).headers["Set-Cookie"]
    assert plain.startswith("mb_connect_") and "Secure" not in plain and "HttpOnly" in plain


def test_claim_replay_tampering_unknown_and_bad_bodies(mailbridge):
    mb = mailbridge()
    result = to_return_url(mb, "alice", "u1")["result"]
    assert mb.claim(result, "u1").status_code == 200
    replay = mb.claim(result, "u1")
    assert (replay.status_code, error_code(replay)) == (409, "result_used")
    body, sig = result.split(".")
    for bad in (f"{body}.{sig[:-3]}abc", body, "", "x" * 5000, f"{body[:-2]}AA.{sig}"):
        resp = mb.claim(bad, "u1")
        assert (resp.status_code, error_code(resp)) == (400, "invalid_result"), bad
    for bad_body in ([], {"result": result}, {"result": result, "user_ref": ""}, {"result": 5, "user_ref": "u1"}):
        resp = mb.http("claim_connection", "POST", body=bad_body)
        assert resp.status_code == 400, bad_body
    garbage = mb.http("claim_connection", "POST", body=b"\xff\xfe")
    assert garbage.status_code == 400


def test_an_unclaimed_result_expires_and_is_purged_with_its_secret(mailbridge, emulator):
    mb = mailbridge()
    before = pending_caches(mb)
    first = to_return_url(mb, "alice", "u1")["result"]
    second = to_return_url(mb, "bob", "u1")["result"]
    assert len(pending_caches(mb)) == len(before) + 2
    mb.services.clock = lambda: time.time() + 601
    late = mb.claim(first, "u1")
    assert (late.status_code, error_code(late)) == (410, "result_expired")
    assert len(pending_caches(mb)) == len(before) + 1, "an expired claim discards the grant at once"
    # Nobody claims the second: the housekeeping timer removes it, row and secret.
    report = ConnectService(mb.services).purge_expired(now=time.time() + 601)
    assert report["grants"] >= 2
    assert not grant_rows(mb) and pending_caches(mb) == before
    gone = mb.claim(second, "u1")
    assert (gone.status_code, error_code(gone)) == (410, "result_expired")
    assert mb.services.connections.for_user("u1") == []


def test_one_mailbox_two_user_refs_two_connections_pacing_shared(mailbridge):
    mb = mailbridge()
    one = mb.connect("alice", user_ref="first")["connection_id"]
    two = mb.connect("alice", user_ref="second")["connection_id"]
    assert one != two
    c1, c2 = mb.services.connections.get(one), mb.services.connections.get(two)
    assert (c1.user_ref, c2.user_ref) == ("first", "second") and c1.secret_name != c2.secret_name
    assert (c1.tenant_id, c1.object_id) == (c2.tenant_id, c2.object_id)
    # Reconnecting the same user_ref + mailbox keeps its id; nothing moves between user_refs.
    assert mb.connect("alice", user_ref="first")["connection_id"] == one
    assert mb.services.connections.get(two).user_ref == "second"
    assert mb.json(send_test(mb, one))["status"] == "sent" and mb.json(send_test(mb, two))["status"] == "sent"
    assert mb.http("delete_connection", "DELETE", route_params={"connection_id": one}).status_code == 200
    assert mb.services.connections.get(two).status == "connected"
    assert mb.json(send_test(mb, two))["status"] == "sent"
    listing = mb.json(mb.http("list_connections", params={"user_ref": "second"}))["connections"]
    assert [c["connection_id"] for c in listing] == [two]


def test_pacing_belongs_to_the_mailbox_not_the_connection(mailbridge):
    from shared.pacing.budget import Limits, MailboxBudget

    mb = mailbridge()
    one = mb.connect("alice", user_ref="first")["connection_id"]
    two = mb.connect("alice", user_ref="second")["connection_id"]
    limits = Limits(max_concurrency=4, messages_per_window=1, recipients_per_window=1000)
    mb.services.budget = MailboxBudget(mb.services.storage, limits, limits, max_wait_s=0)
    assert mb.json(send_test(mb, one))["status"] == "sent"
    paced = send_test(mb, two)
    assert paced.status_code == 202, "the second connection of the same mailbox shares its window"


def test_one_users_token_endpoint_failure_is_not_anothers(mailbridge, emulator_admin):
    """MSAL's throttled HTTP client keys a failed auth-code redemption without the user: with one shared
    http_cache, alice's 5xx would make bob's connect a second later fail without calling Entra."""
    mb = mailbridge()
    emulator_admin.add_fault("entra.token", "500", count=1, retry_after=5)
    try:
        failed = to_return_url(mb, "alice", "u-a")
        assert (failed["status"], failed["error"]) == ("error", "temporarily_unavailable")
        time.sleep(1)
        assert mb.connect("bob", user_ref="u-b")["status"] == "connected"
    finally:
        emulator_admin.clear_faults("entra.token")


def test_anonymous_admin_consent_requests_write_nothing(mailbridge, emulator):
    mb = mailbridge()

    def rows() -> int:
        return sum(
            sum(1 for _ in mb.services.storage.table(name).list_entities())
            for name in ("authflows", "connections", "deliveries")
        )

    before = rows()
    for i in range(10_000):
        resp = mb.http("admin_consent", params={"tenant": mb.kit.tid if i % 2 else "organizations"})
        assert resp.status_code == 302
    assert rows() == before
    scope = query_of(resp.headers["Location"])["scope"]
    assert scope == "https://graph.microsoft.com/.default"


@pytest.mark.parametrize(
    ("approved_with", "expected"),
    [
        ("link", "connected"),  # Mailbridge's own link: /.default
        (["https://graph.microsoft.com/Mail.Send"], "admin_consent_required"),  # dynamic, no offline_access
    ],
)
def test_admin_consent_with_default_covers_everything_users_ask(mailbridge, emulator_admin, approved_with, expected):
    mb = mailbridge(users=("carol", "boss"), consent_policy="admin_required")
    emulator_admin.update_user(mb.kit.users["boss"]["upn"], is_admin=True)
    if approved_with == "link":
        to_entra = mb.admin_consent_start(tenant=mb.kit.tid).headers["Location"]
    else:
        to_entra = (
            mb.admin_consent_start(tenant=mb.kit.tid)
            .headers["Location"]
            .replace("https%3A%2F%2Fgraph.microsoft.com%2F.default", "+".join(approved_with).replace("/", "%2F"))
        )
    back = emulator_admin.complete_authorize(to_entra, mb.kit.users["boss"]["upn"])
    done = mb.admin_consent_callback(back)
    assert done.status_code == 200, done.get_body()
    result = mb.connect("carol", user_ref="u-carol")
    assert result["status"] == expected or result.get("error") == expected, result


def test_a_refresh_failure_is_throttled_per_connection_only(mailbridge, emulator_admin):
    """The refresh path keeps MSAL's shared HTTP cache (discovery answers): its 5xx/429 throttling is keyed by
    the refresh token, so one connection's failed refresh does not hold back another's."""
    mb = mailbridge()
    alice = mb.services.connections.get(mb.connect("alice", user_ref="u-a")["connection_id"])
    bob = mb.services.connections.get(mb.connect("bob", user_ref="u-b")["connection_id"])
    emulator_admin.add_fault("entra.token", "503", count=1, retry_after=5)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the transient error type is the token service's business
            mb.services.tokens.refresh(alice, force=True)
        before = emulator_admin.counters("calls.entra.token").get("calls.entra.token", 0)
        mb.services.tokens.refresh(bob, force=True)
        assert emulator_admin.counters("calls.entra.token")["calls.entra.token"] == before + 1
    finally:
        emulator_admin.clear_faults("entra.token")


def test_the_bad_link_page_says_what_happened_and_links_back_in_local_mode(mailbridge):
    local = "http://127.0.0.1:7071"
    mb = mailbridge(ENABLE_SAMPLE_UI="true", PUBLIC_BASE_URL=local, ALLOWED_RETURN_ORIGINS=local)
    resp = mb.http("create_connection_link", "POST", body={"user_ref": "u1", "return_url": f"{local}/api/ui"})
    link = mb.json(resp)["connect_url"]
    assert mb.start(link).status_code == 302
    used = mb.start(link).get_body().decode()
    assert "already used" in used and f"href='{local}/api/ui'" in used
    ticket = query_of(link)["ticket"]
    cut = mb.http("connect_start", params={"ticket": ticket[: len(ticket) // 2]}).get_body().decode()
    assert "incomplete or was changed" in cut and "<code>expired_link</code>" in cut
    expired_link = mb.json(
        mb.http("create_connection_link", "POST", body={"user_ref": "u1", "return_url": f"{local}/api/ui"})
    )["connect_url"]
    with mock.patch("shared.connect.tickets.time.time", return_value=time.time() + 601):
        expired = mb.start(expired_link).get_body().decode()
    assert "has expired" in expired
    deployed = mailbridge()  # not local: no sample page to link to
    page = deployed.http("connect_start", params={"ticket": "x.y"}).get_body().decode()
    assert "incomplete or was changed" in page and "id='back'" not in page


def test_an_app_credential_refused_at_connect_shows_in_health(mailbridge, emulator_admin):
    """Operator errors during the code redemption are the operator's: the user sees app_misconfigured, and
    GET /api/health reports the refused credential (shared state) until a refresh succeeds."""
    mb = mailbridge()
    emulator_admin.entra_settings(app_credential_error={"code": 7000222, "grants": ["authorization_code"]})
    try:
        result = to_return_url(mb, "alice", "u1")
    finally:
        emulator_admin.entra_settings(app_credential_error=None)
    assert (result["status"], result["error"]) == ("error", "app_misconfigured")
    health = mb.http("health")
    assert health.status_code == 503 and "app_credential_failed" in health.get_body().decode()
    assert mb.connect("alice", user_ref="u1")["status"] == "connected"  # nothing stored by the failed attempt


def test_the_anonymous_admin_consent_callback_writes_nothing_even_for_made_up_tenants(mailbridge):
    """An answer writes one "answered" row for its state (single use), never a row per made-up tenant: 200
    callbacks with one state and 200 tenant ids write that one row, and it goes with the state's expiry."""
    mb = mailbridge()
    state = query_of(mb.admin_consent_start(tenant="organizations").headers["Location"])["state"]

    def rows() -> int:
        return sum(1 for name in ("authflows", "connections") for _ in mb.services.storage.table(name).list_entities())

    before = rows()
    statuses = []
    for _ in range(200):
        tenant = str(uuid.uuid4())
        statuses.append(mb.admin_consent_callback_with({"state": state, "admin_consent": "True", "tenant": tenant}))
    assert [r.status_code for r in statuses] == [200] + [400] * 199
    assert rows() == before + 1
    assert mb.services.flows.purge_expired(now=time.time() + 601) == 1
    assert rows() == before
