"""OAuth security of the connect flow, in one place (issue #9).

Every case drives the real app functions against real Azurite and the HTTPS emulator (Entra ID, Key
Vault), asserts the stable error code the browser or backend sees, and that nothing was stored: no
connection row, no Key Vault secret (admin consent stores nothing at all). Cases:

- tickets (the signed connect link): tampered signature or payload, forged key, non-ASCII signature,
  replay (single use), expiry;
- state: unknown, tampered, replayed callback, expired flow, state of the other flow kind, code redeemed
  too late;
- PKCE: S256 challenge of the stored verifier, a flow that lost its verifier or carries a wrong one, a
  code injected from another flow (another tenant's user);
- nonce: an id_token whose nonce differs from the flow's (or has none);
- open redirect: return_url off the allow-list in tricky forms, on connect links and admin consent;
- cross-tenant / cross-account: reconnect by another account or another tenant's user, an id_token
  for another tenant or another app, a single-tenant deployment signing in a foreign user;
- injection: error / error_description / tenant values on the callbacks are never reflected beyond
  the stable code.

Forwarded links (the claim step, the browser-binding cookie, no re-homing) are in
tests/test_connect_claim.py and, with two real browser contexts, tests/test_browser.py.

The non-OAuth security cases are indexed in tests/test_security.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from typing import Any
from urllib.parse import unquote_plus

import pytest

from emulator.client import EmulatorAdminError
from shared.connect.tickets import issue_ticket, sign_token
from shared.tokens.store import FlowStore, connection_id_for
from tests.fixtures.app import RETURN_ORIGIN, RETURN_URL, query_of

# --- helpers ------------------------------------------------------------------------------------------------


def stored(mb, emulator) -> dict[str, Any]:
    """What the app has persisted: connection-table rows, Key Vault secrets (name -> versions)."""
    rows = {(e["PartitionKey"], e["RowKey"]) for e in mb.services.connections.table.list_entities()}
    kv = emulator.state.keyvault
    with kv.lock:
        secrets = {name: len(entry.versions) for name, entry in kv.secrets.items()}
    return {"connections": rows, "secrets": secrets}


def page_code(resp) -> str | None:
    """The stable code an HTML error page shows (``<code>...</code>``)."""
    found = re.search(rb"<code>([a-z_]+)</code>", resp.get_body())
    return found.group(1).decode() if found else None


def flow_rows(mb) -> list[dict[str, Any]]:
    return list(mb.services.flows.table.list_entities())


def begin(mb, user_ref: str = "user-1", **link: Any) -> tuple[str, str]:
    """Create a link and start it: (authorize URL, state)."""
    start = mb.start(mb.connect_link(user_ref, **link))
    assert start.status_code == 302, start.get_body()
    location = start.headers["Location"]
    return location, query_of(location)["state"]


def edit_flow(mb, state: str, change) -> None:
    """Change the server-side flow record of ``state`` (what a corrupted or tampered row would hold)."""
    table = mb.services.flows.table
    entity = table.get_entity(FlowStore._key(state), "connect")
    data = json.loads(entity["data"])
    change(data, entity)
    entity["data"] = json.dumps(data)
    table.upsert_entity(entity, mode="replace")


def back_to_return_url(resp) -> dict[str, str]:
    """The query of the callback's redirect, which must go to the link's own return_url."""
    assert resp.status_code == 302, resp.get_body()
    location = resp.headers["Location"]
    assert location.startswith(RETURN_URL.split("?")[0] + "?"), location
    return query_of(location)


def attempt(mb, user: str, **link: Any) -> dict[str, str]:
    """A whole connect attempt by ``user`` (a key of mb.kit.users); the query of the redirect to return_url."""
    user_ref = link.pop("user_ref", "user-1")
    authorize_url, _ = begin(mb, user_ref, **link)
    query = back_to_return_url(mb.callback(mb.authorize(authorize_url, user)))
    if query.get("status") == "connected":  # the backend claims it for the link's own user_ref
        claimed = mb.claim(query.pop("result"), user_ref)
        assert claimed.status_code == 200, claimed.get_body()
        query["connection_id"] = mb.json(claimed)["connection_id"]
    return query


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- tickets ------------------------------------------------------------------------------------------------


def flow_keys(mb) -> set[tuple[str, str]]:
    return {(r["PartitionKey"], r["RowKey"]) for r in flow_rows(mb)}


def test_tickets_are_single_use_and_tamper_proof(mailbridge, emulator):
    mb = mailbridge()
    url = mb.connect_link()
    assert mb.start(url).status_code == 302
    started, before = flow_keys(mb), stored(mb, emulator)
    replay = mb.start(url)
    assert replay.status_code == 400 and page_code(replay) == "expired_link"
    ticket = query_of(mb.connect_link())["ticket"]
    body, sig = ticket.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    resp = mb.http("connect_start", params={"ticket": forged})
    assert (resp.status_code, page_code(resp)) == (400, "expired_link")
    resp = mb.http("connect_start", params={})
    assert (resp.status_code, page_code(resp)) == (400, "expired_link")
    assert flow_keys(mb) == started and stored(mb, emulator) == before  # no second flow, nothing stored


def _tampered(ticket: str, key: bytes) -> dict[str, str]:
    body, sig = ticket.split(".")
    payload = json.loads(b64d(body))

    def with_payload(**changes: Any) -> str:
        return b64e(json.dumps({**payload, **changes}, separators=(",", ":"), sort_keys=True).encode())

    other_key, _ = issue_ticket(b"another-key-" + b"x" * 32, user_ref="user-1", return_url="https://evil.example/")
    other_genuine, _ = issue_ticket(key, user_ref="user-2", return_url=RETURN_URL)
    evil_ret = with_payload(ret="https://evil.example/")
    flipped = sig[:5] + ("A" if sig[5] != "A" else "B") + sig[6:]
    return {
        "signature one character changed": f"{body}.{flipped}",
        "signature dropped": f"{body}.",
        "signature of another genuine ticket": f"{body}.{other_genuine.split('.')[1]}",
        "payload return_url changed": f"{evil_ret}.{sig}",
        "payload user_ref changed": f"{with_payload(sub='victim')}.{sig}",
        "payload expiry extended": f"{with_payload(exp=payload['exp'] + 86400)}.{sig}",
        "payload connection_id added": f"{with_payload(cid='c' + '0' * 31)}.{sig}",
        "signed with another key": other_key,
        "same payload, signed for another purpose": sign_token(key, "admin-consent", payload),
        "unsigned (alg none style)": f"{body}",
        "three parts": f"{body}.{sig}.{sig}",
    }


def test_a_tampered_ticket_is_refused_and_does_not_burn_the_real_one(mailbridge, emulator):
    mb = mailbridge()
    before = stored(mb, emulator)
    link = mb.connect_link()
    ticket = query_of(link)["ticket"]
    for what, forged in _tampered(ticket, mb.services.settings.ticket_signing_key).items():
        resp = mb.http("connect_start", params={"ticket": forged})
        assert (resp.status_code, page_code(resp)) == (400, "expired_link"), what
        assert "Location" not in resp.headers, what
    assert flow_rows(mb) == []  # no flow started, no ticket id claimed
    assert stored(mb, emulator) == before
    assert mb.start(link).status_code == 302  # forged variants did not burn the genuine ticket


def test_a_ticket_with_a_non_ascii_signature_is_a_clean_400(mailbridge, emulator):
    """Regression (found by schemathesis): hmac.compare_digest(str, str) raised TypeError for non-ASCII
    text, and connect/start logged an unhandled error and answered 503 "try again" for a forged link."""
    mb = mailbridge()
    before = stored(mb, emulator)
    ticket = mb.connect_link("sec").split("ticket=", 1)[1]
    body = ticket.split(".")[0]
    resp = mb.http("connect_start", params={"ticket": body + ".é"})
    assert resp.status_code == 400, resp.get_body()
    assert b"expired_link" in resp.get_body()
    assert flow_rows(mb) == [] and stored(mb, emulator) == before


def test_an_expired_ticket_is_refused(mailbridge, emulator):
    mb = mailbridge()
    before = stored(mb, emulator)
    key = mb.services.settings.ticket_signing_key
    expired, _ = issue_ticket(key, user_ref="user-1", return_url=RETURN_URL, now=time.time() - 601)
    resp = mb.http("connect_start", params={"ticket": expired})
    assert (resp.status_code, page_code(resp)) == (400, "expired_link")
    assert flow_rows(mb) == [] and stored(mb, emulator) == before
    fresh, _ = issue_ticket(key, user_ref="user-1", return_url=RETURN_URL, now=time.time() - 590)
    assert mb.http("connect_start", params={"ticket": fresh}).status_code == 302  # still inside its 10 minutes


# --- state ----------------------------------------------------------------------------------------------------


def test_state_is_single_use_and_unknown_state_is_refused(mailbridge, emulator):
    mb = mailbridge()
    start = mb.start(mb.connect_link())
    redirect = mb.authorize(start.headers["Location"], "alice")
    assert query_of(mb.callback(redirect).headers["Location"])["status"] == "connected"
    after_first = stored(mb, emulator)
    replay = mb.callback(redirect)
    assert replay.status_code == 400 and b"invalid_state" in replay.get_body()
    forged = mb.http("connect_callback", params={"state": "made-up", "code": "x"})
    assert forged.status_code == 400 and b"invalid_state" in forged.get_body()
    assert stored(mb, emulator) == after_first  # the replay re-stored nothing


def test_a_tampered_or_missing_state_is_refused_and_the_real_flow_survives(mailbridge, emulator):
    mb = mailbridge()
    authorize_url, state = begin(mb)
    redirect = mb.authorize(authorize_url, "alice")
    code = query_of(redirect)["code"]
    before = stored(mb, emulator)
    flipped = state[:-1] + ("A" if state[-1] != "A" else "B")
    for params in (
        {"state": flipped, "code": code},
        {"code": code},
        {"state": "", "code": code},
        {"state": state.upper() if state.upper() != state else state.lower(), "code": code},
        {"state": "s" * 300, "code": code},
    ):
        resp = mb.callback_with(params)
        assert (resp.status_code, page_code(resp)) == (400, "invalid_state"), params
        assert "Location" not in resp.headers
    assert stored(mb, emulator) == before
    assert back_to_return_url(mb.callback(redirect))["status"] == "connected"


def test_an_expired_flow_is_refused(mailbridge, emulator):
    mb = mailbridge()
    authorize_url, state = begin(mb)
    redirect = mb.authorize(authorize_url, "alice")
    edit_flow(mb, state, lambda data, entity: entity.update(expires_at=time.time() - 1))
    before = stored(mb, emulator)
    resp = mb.callback(redirect)
    assert (resp.status_code, page_code(resp)) == (400, "invalid_state")
    assert stored(mb, emulator) == before
    assert [r["RowKey"] for r in flow_rows(mb)] == ["used"]  # the flow row is gone, only the ticket claim is left


def test_code_redeemed_too_late_is_invalid_state(mailbridge, emulator):
    mb = mailbridge()
    start = mb.start(mb.connect_link())
    redirect = mb.authorize(start.headers["Location"], "alice")
    before = stored(mb, emulator)
    mb.admin.advance_clock(11 * 60)  # authorization codes live about 10 minutes
    assert query_of(mb.callback(redirect).headers["Location"])["error"] == "invalid_state"
    assert stored(mb, emulator) == before


def test_a_state_is_bound_to_its_flow_kind(mailbridge, emulator):
    """An admin-consent state on the connect callback (and the reverse) is unknown there."""
    mb = mailbridge()
    admin_state = query_of(mb.http("admin_consent", params={"tenant": mb.kit.tid}).headers["Location"])["state"]
    authorize_url, connect_state = begin(mb)
    code = query_of(mb.authorize(authorize_url, "alice"))["code"]
    before = stored(mb, emulator)
    resp = mb.http("connect_callback", params={"state": admin_state, "code": code})
    assert (resp.status_code, page_code(resp)) == (400, "invalid_state")
    resp = mb.http(
        "admin_consent_callback", params={"state": connect_state, "admin_consent": "True", "tenant": mb.kit.tid}
    )
    assert (resp.status_code, page_code(resp)) == (400, "invalid_state")
    assert stored(mb, emulator) == before


def test_admin_consent_state_is_signed_and_unknown_forged_or_expired_state_is_refused(mailbridge, emulator):
    """The admin-consent state is signed, not stored (an anonymous caller can make Mailbridge write nothing).
    A real state is answered once, in the browser that started it (tests/test_admin_consent_replay.py covers
    replays and other browsers); the ``tenant`` Entra returns authenticates nobody, so nothing is stored."""
    mb = mailbridge()
    before = stored(mb, emulator)

    def callback(state: str):
        return mb.admin_consent_callback_with({"state": state, "admin_consent": "True", "tenant": mb.kit.tid})

    unknown = callback("nope")
    assert (unknown.status_code, page_code(unknown)) == (400, "invalid_state")
    state = query_of(mb.admin_consent_start(tenant=mb.kit.tid).headers["Location"])["state"]
    body, sig = state.split(".")
    forged = json.loads(b64d(body)) | {"ret": "https://evil.example/"}
    for bad in (f"{b64e(json.dumps(forged).encode())}.{sig}", f"{body}.{sig[:-2]}AA", body):
        resp = callback(bad)
        assert (resp.status_code, page_code(resp)) == (400, "invalid_state"), bad
    assert stored(mb, emulator) == before
    late_state = query_of(mb.admin_consent_start(tenant=mb.kit.tid).headers["Location"])["state"]
    ok = callback(state)
    assert ok.status_code == 200
    assert stored(mb, emulator) == before, "an approval is logged, never stored: the route is anonymous"
    replay = callback(state)
    assert (replay.status_code, page_code(replay)) == (400, "invalid_state") and stored(mb, emulator) == before
    mb.services.clock = lambda: time.time() + 601  # the state's 10 minutes are over
    late = callback(late_state)
    assert (late.status_code, page_code(late)) == (400, "invalid_state")


# --- PKCE -----------------------------------------------------------------------------------------------------


def test_pkce_s256_challenge_is_of_the_stored_verifier(mailbridge):
    mb = mailbridge()
    authorize_url, state = begin(mb)
    query = query_of(authorize_url)
    assert query["code_challenge_method"] == "S256"
    flow = json.loads(mb.services.flows.table.get_entity(FlowStore._key(state), "connect")["data"])["flow"]
    verifier = flow["code_verifier"]
    assert len(verifier) >= 43 and verifier not in authorize_url  # only its hash travels through the browser
    assert query["code_challenge"] == b64e(hashlib.sha256(verifier.encode()).digest())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda flow: flow.pop("code_verifier"), id="verifier lost"),
        pytest.param(lambda flow: flow.update(code_verifier=None), id="verifier null"),
        pytest.param(lambda flow: flow.update(code_verifier="w" * 43), id="wrong verifier"),
        pytest.param(
            lambda flow: flow.update(code_verifier=b64e(hashlib.sha256(flow["code_verifier"].encode()).digest())),
            id="challenge as verifier",
        ),
    ],
)
def test_a_callback_without_the_right_pkce_verifier_fails(mailbridge, emulator, change):
    """The verifier is really sent and checked: the emulator enforces S256 at the token endpoint."""
    mb = mailbridge()
    authorize_url, state = begin(mb)
    redirect = mb.authorize(authorize_url, "alice")
    edit_flow(mb, state, lambda data, entity: change(data["flow"]))
    before = stored(mb, emulator)
    result = back_to_return_url(mb.callback(redirect))
    assert (result["status"], result["error"]) == ("error", "invalid_state"), result
    assert stored(mb, emulator) == before


def test_a_code_injected_from_another_flow_is_refused(mailbridge, emu_tenant, emulator):
    """Code injection: an attacker signs in to their own flow (another tenant) and feeds that code to the
    victim's callback. The victim's PKCE verifier does not match the attacker's challenge."""
    mb = mailbridge()
    foreign = emu_tenant(users=("mallory",))
    mb.kit.users["mallory"] = foreign.users["mallory"]
    attacker_url, _ = begin(mb, "attacker")
    attacker_code = query_of(mb.authorize(attacker_url, "mallory"))["code"]
    _, victim_state = begin(mb, "victim")
    before = stored(mb, emulator)
    result = back_to_return_url(mb.callback_with({"state": victim_state, "code": attacker_code}))
    assert (result["status"], result["error"]) == ("error", "invalid_state"), result
    assert stored(mb, emulator) == before
    assert mb.services.connections.find(connection_id_for(foreign.tid, foreign.users["mallory"]["oid"])) is None


# --- nonce ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonce", ["attacker-chosen-nonce", None], ids=["other nonce", "no nonce"])
def test_an_id_token_with_another_nonce_is_refused(mailbridge, emulator, nonce):
    mb = mailbridge()
    authorize_url, _ = begin(mb)
    redirect = mb.authorize(authorize_url, "alice")
    mb.admin.entra_settings(id_token_claims={"nonce": nonce})
    before = stored(mb, emulator)
    result = back_to_return_url(mb.callback(redirect))
    assert (result["status"], result["error"]) == ("error", "invalid_state"), result
    assert stored(mb, emulator) == before


# --- open redirect --------------------------------------------------------------------------------------------

FOREIGN_RETURN_URLS = [
    "https://evil.example/steal",
    RETURN_ORIGIN + ".evil.example/x",  # the allowed host as a prefix of another
    "https://user:pw@saas.example/x",  # credentials
    "https://saas.example@evil.example/x",  # the allowed host as userinfo
    "https://saas.example:443@evil.example/",
    "https://saas.example%2f@evil.example/",
    "//evil.example/x",  # scheme-relative
    "//saas.example/x",  # scheme-relative, even to the allowed host
    "/settings/email",  # relative
    "https:evil.example",
    "https:/evil.example/x",
    "https://saas.example:8443/x",  # another port
    "http://saas.example/x",  # another scheme
    "javascript:alert(1)",
    "JavaScript://saas.example/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://saas.example/x",
    "https://saas.example\\@evil.example/",  # backslash: browsers read it as a slash
    "https://evil.example\\.saas.example/",
    "https://evil.example#@saas.example",
    "https://evil.example/?next=https://saas.example/",
    "https://saas.example./x",  # trailing dot: another origin string
    "https://saas.example\u3002evil.example/",  # ideographic full stop
    " https://saas.example/x",
    "https://saas.example/x\r\nSet-Cookie: a=b",
    "https://saas.example\t.evil.example/",
    "https://",
    "",
]


@pytest.mark.parametrize("return_url", FOREIGN_RETURN_URLS)
def test_return_urls_off_the_allow_list_are_refused(mailbridge, emulator, return_url):
    mb = mailbridge()
    before = stored(mb, emulator)
    resp = mb.http("create_connection_link", "POST", body={"user_ref": "u", "return_url": return_url})
    assert (resp.status_code, mb.json(resp)["error"]["code"]) == (400, "return_url_not_allowed")
    assert "connect_url" not in mb.json(resp)
    if return_url:  # an empty return_url on admin consent means "show the page" (no redirect at all)
        admin = mb.http("admin_consent", params={"tenant": mb.kit.tid, "return_url": return_url})
        assert (admin.status_code, page_code(admin)) == (400, "return_url_not_allowed")
        assert "Location" not in admin.headers
    assert flow_rows(mb) == [] and stored(mb, emulator) == before


def test_allow_listed_return_urls_are_accepted(mailbridge):
    mb = mailbridge()
    for url in (RETURN_URL, RETURN_ORIGIN, RETURN_ORIGIN + "/", "HTTPS://SAAS.EXAMPLE/x?y=1#z"):
        resp = mb.http("create_connection_link", "POST", body={"user_ref": "u", "return_url": url})
        assert resp.status_code == 201, (url, resp.get_body())


def test_connect_link_rejects_foreign_return_urls_and_bad_bodies(mailbridge, emulator):
    mb = mailbridge()
    before = stored(mb, emulator)
    for body in (
        {"user_ref": "u", "return_url": "https://evil.example/steal"},
        {"user_ref": "u", "return_url": RETURN_ORIGIN + ".evil.example/x"},
        {"user_ref": "u", "return_url": "https://user:pw@saas.example/x"},
        {"user_ref": "u", "return_url": "javascript:alert(1)"},
        {"user_ref": "u", "return_url": 7},
        {"user_ref": "u", "return_url": ["https://saas.example/"]},
        {"user_ref": "u", "return_url": "https://saas.example/" + "x" * 2048},
    ):
        resp = mb.http("create_connection_link", "POST", body=body)
        assert resp.status_code == 400 and mb.json(resp)["error"]["code"] == "return_url_not_allowed", body
    for body in (b"not json", [1, 2], {"return_url": RETURN_ORIGIN + "/x"}):
        resp = mb.http("create_connection_link", "POST", body=body)
        assert (resp.status_code, mb.json(resp)["error"]["code"]) == (400, "invalid_request"), body
    assert flow_rows(mb) == [] and stored(mb, emulator) == before


# --- cross-tenant and cross-account callbacks ---------------------------------------------------------------


def test_reconnect_by_another_account_is_refused_and_recorded(mailbridge, emulator):
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="u9")["connection_id"]
    before = stored(mb, emulator)
    result = attempt(mb, "bob", user_ref="u9", connection_id=cid)
    assert result["error"] == "identity_mismatch"
    assert stored(mb, emulator) == before  # no connection for bob, alice's secret untouched
    view = mb.json(mb.http("get_connection", route_params={"connection_id": cid}))
    assert view["last_error"]["code"] == "identity_mismatch" and view["mailbox"] == mb.kit.users["alice"]["upn"]
    assert attempt(mb, "alice", user_ref="u9", connection_id=cid) == {
        "tab": "1",
        "status": "connected",
        "connection_id": cid,
    }
    other_user = mb.http(
        "create_connection_link",
        "POST",
        body={"user_ref": "someone-else", "return_url": RETURN_ORIGIN, "connection_id": cid},
    )
    assert other_user.status_code == 404


def test_reconnect_by_a_user_of_another_tenant_is_refused(mailbridge, emu_tenant, emulator):
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="u7")["connection_id"]
    secret = mb.services.token_caches.read(mb.services.connections.get(cid).secret_name)
    foreign = emu_tenant(users=("mallory",))
    mb.kit.users["mallory"] = foreign.users["mallory"]
    before = stored(mb, emulator)
    result = attempt(mb, "mallory", user_ref="u7", connection_id=cid)
    assert (result["status"], result["error"]) == ("error", "identity_mismatch"), result
    assert stored(mb, emulator) == before
    conn = mb.services.connections.get(cid)
    assert (conn.tenant_id, conn.last_error_code) == (mb.kit.tid, "identity_mismatch")
    assert mb.services.token_caches.read(conn.secret_name) == secret


@pytest.mark.parametrize(
    ("single_tenant", "claims"),
    [
        (True, {"tid": "11111111-2222-3333-4444-555555555555"}),  # a foreign tenant on a single-tenant deployment
        (False, {"aud": "00000000-0000-0000-0000-00000000beef"}),  # an id_token for another app
        (False, {"tid": None}),
        (False, {"oid": None}),
    ],
    ids=["foreign tid, single tenant", "other aud", "no tid", "no oid"],
)
def test_an_id_token_for_another_tenant_or_app_is_refused(mailbridge, emulator, single_tenant, claims):
    mb = mailbridge()
    if single_tenant:
        kit = mb.kit
        mb = mailbridge(ENTRA_TENANT=kit.tid)
        mb.kit = kit  # sign in alice of the tenant this deployment serves
    authorize_url, _ = begin(mb)
    redirect = mb.authorize(authorize_url, "alice")
    mb.admin.entra_settings(id_token_claims=claims)
    before = stored(mb, emulator)
    result = back_to_return_url(mb.callback(redirect))
    assert (result["status"], result["error"]) == ("error", "identity_mismatch"), result
    assert stored(mb, emulator) == before


def test_an_id_token_of_another_tenant_on_a_reconnect_is_refused(mailbridge, emulator):
    """Same object id, another tenant: a reconnect insists on the very tenant + object id it re-authorises."""
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="u8")["connection_id"]
    authorize_url, _ = begin(mb, "u8", connection_id=cid)
    redirect = mb.authorize(authorize_url, "alice")
    other = "11111111-2222-3333-4444-555555555555"  # a token of that tenant: tid and iss agree
    mb.admin.entra_settings(id_token_claims={"tid": other, "iss": f"{emulator.base_url}/{other}/v2.0"})
    before = stored(mb, emulator)
    result = back_to_return_url(mb.callback(redirect))
    assert (result["status"], result["error"]) == ("error", "identity_mismatch"), result
    assert stored(mb, emulator) == before


def test_single_tenant_deployment_signs_in_only_its_own_tenant(mailbridge, emu_tenant, emulator):
    mb = mailbridge()
    mb_single = mailbridge(ENTRA_TENANT=mb.kit.tid)
    foreign = emu_tenant(users=("mallory",))
    before = stored(mb_single, emulator)
    location = mb_single.start(mb_single.connect_link()).headers["Location"]
    assert location.split("/")[3] == mb.kit.tid  # the authority is the tenant, not organizations/common
    with pytest.raises(EmulatorAdminError, match="AADSTS"):
        mb_single.admin.complete_authorize(location, foreign.users["mallory"]["upn"])
    assert stored(mb_single, emulator) == before


# --- injection through the callbacks ----------------------------------------------------------------------

ATTACKER_STRINGS = [
    "<script>alert(1)</script>",
    "https://evil.example/phish",
    "\r\nSet-Cookie: session=evil",
    '"><img src=x onerror=alert(1)>',
]
INJECTED = " ".join(ATTACKER_STRINGS)


def _no_reflection(text: str) -> None:
    decoded = (text + " " + unquote_plus(text)).lower()
    for needle in ("<script", "alert(", "evil.example", "set-cookie", "onerror", "phish", "<img"):
        assert needle not in decoded, (needle, text[:300])


@pytest.mark.parametrize(
    ("error", "description", "code"),
    [
        ("access_denied", INJECTED, "user_declined"),
        (INJECTED, INJECTED, "interaction_required"),
        ("consent_required", "AADSTS65001: " + INJECTED, "admin_consent_required"),
        ("server_error", INJECTED, "temporarily_unavailable"),
    ],
    ids=["access_denied", "unknown error value", "consent_required", "server_error"],
)
def test_callback_error_parameters_are_never_reflected(mailbridge, emulator, caplog, error, description, code):
    caplog.set_level(logging.DEBUG)
    mb = mailbridge()
    _, state = begin(mb)
    before = stored(mb, emulator)
    params = {
        "state": state,
        "error": error,
        "error_description": description,
        "error_uri": "https://evil.example/help",
        "return_url": "https://evil.example/",
        "connection_id": "c-evil",
        "admin_consent_url": "https://evil.example/consent",
    }
    resp = mb.callback_with(params)
    result = back_to_return_url(resp)  # the ticket's return_url, not the injected one
    assert (result["status"], result["error"]) == ("error", code), result
    assert set(result) <= {"tab", "status", "error", "error_description", "admin_consent_url"}
    if "admin_consent_url" in result:
        assert result["admin_consent_url"].startswith(mb.env["PUBLIC_BASE_URL"] + "/api/admin-consent")
    _no_reflection(resp.headers["Location"] + resp.get_body().decode())
    assert stored(mb, emulator) == before
    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("shared", "blueprints"))]
    assert not [m for m in ours if "\n" in m or "\r" in m], ours  # no forged log lines


def test_error_pages_never_reflect_callback_parameters(mailbridge, emulator):
    mb = mailbridge()
    before = stored(mb, emulator)
    for name, params in (
        ("connect_callback", {"state": INJECTED, "code": INJECTED}),
        ("connect_callback", {"state": "unknown", "error": INJECTED, "error_description": INJECTED}),
        ("admin_consent_callback", {"state": INJECTED, "admin_consent": "True", "tenant": INJECTED}),
        ("admin_consent_callback", {"state": "unknown", "error": INJECTED, "error_description": INJECTED}),
        ("admin_consent", {"tenant": INJECTED}),
        ("connect_start", {"ticket": INJECTED}),
    ):
        resp = mb.http(name, params=params)
        assert resp.status_code == 400 and page_code(resp) in {"invalid_state", "invalid_request", "expired_link"}
        assert resp.headers["Content-Security-Policy"].split(";")[0] == "default-src 'none'"  # + frame-ancestors
        _no_reflection(resp.get_body().decode() + json.dumps(dict(resp.headers)))
    assert stored(mb, emulator) == before


@pytest.mark.parametrize("with_return_url", [False, True], ids=["page", "redirect"])
def test_admin_consent_callback_reflects_only_stable_values(mailbridge, emulator, with_return_url):
    """The admin-consent response is unauthenticated (anyone can start one): its error text and its
    ``tenant`` are never echoed, and a tenant that is not a tenant id records nothing."""
    mb = mailbridge()
    before = stored(mb, emulator)

    def fresh_state() -> str:
        params = {"tenant": mb.kit.tid, **({"return_url": RETURN_URL} if with_return_url else {})}
        return query_of(mb.admin_consent_start(**params).headers["Location"])["state"]

    for params, code in (
        ({"error": "access_denied", "error_description": INJECTED}, "admin_consent_declined"),
        ({"error": INJECTED, "error_description": INJECTED}, "interaction_required"),
        ({"admin_consent": "True", "tenant": INJECTED}, "invalid_state"),
        ({"admin_consent": "True", "tenant": "a/b"}, "invalid_state"),
        ({"admin_consent": "True", "tenant": "contoso.example"}, "invalid_state"),
        ({"admin_consent": "True", "tenant": mb.kit.tid + "\n"}, "invalid_state"),
        ({"admin_consent": "False", "tenant": mb.kit.tid}, "invalid_state"),
    ):
        resp = mb.admin_consent_callback_with({"state": fresh_state(), **params})
        if with_return_url:
            result = back_to_return_url(resp)
            assert (result["status"], result["error"]) == ("error", code), (params, result)
            assert set(result) <= {"tab", "status", "error", "error_description"}
            text = resp.headers["Location"]
        else:
            assert (resp.status_code, page_code(resp)) == (400, code), params
            text = resp.get_body().decode()
        _no_reflection(text)
    assert stored(mb, emulator) == before
