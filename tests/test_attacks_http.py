"""Attacks on the HTTP surface and the connect flow (review of 2026-12-07, second pass; docs/security.md).

Each test played an attack that got something before its fix, through the registered functions against
Azurite and the HTTPS emulator:

- a cookie of the parent domain (a custom domain ``mail.example.com`` also receives ``example.com``'s cookies)
  that ``http.cookies.SimpleCookie`` cannot read (a JSON value, a space, a non-ASCII character, a bare name)
  made it drop the whole Cookie header: the flow's binding cookie was lost and every sign-in and admin consent in
  that browser failed ``invalid_state``; any subdomain could set such a cookie on purpose;
- an id with a trailing newline passed the Table-key guard (``re.match``'s ``$`` matches before a final
  ``\\n``) and reached Table storage, which allows no control character in a key;
- a return URL with NUL, DEL or C1 characters was accepted (an anonymous caller can name one for admin consent)
  and carried into the final redirect's Location header;
- the HTML pages (link problems, sign-in errors, admin consent) could be framed: ``default-src`` does not cover
  ``frame-ancestors``.
"""

from __future__ import annotations

import uuid
from base64 import urlsafe_b64encode

import pytest
from azure.data.tables import TableClient

from shared.connect.flow import parse_cookies
from tests.fixtures.app import RETURN_ORIGIN, RETURN_URL, query_of
from tests.test_security_user_ref import message

# Cookies a parent domain may well set (or a hostile subdomain may set on purpose) that SimpleCookie cannot read.
FOREIGN_COOKIES = ['prefs={"lang":"en"}', "greeting=hello world", "city=Zürich", "flag", "a@b=1", "path=/"]


@pytest.mark.parametrize("foreign", FOREIGN_COOKIES)
def test_a_foreign_cookie_does_not_hide_the_binding_cookie(foreign):
    assert parse_cookies(f"{foreign}; __Host-mb_connect_1=v1; other=2") == {
        **({foreign.split("=", 1)[0]: foreign.split("=", 1)[1]} if "=" in foreign else {}),
        "__Host-mb_connect_1": "v1",
        "other": "2",
    }


def browser_with(mb, foreign: str) -> str:
    """This browser's Cookie header with a parent-domain cookie sent first (as a browser may order them)."""
    return "; ".join([foreign, *(f"{k}={v}" for k, v in mb.cookies.items())])


@pytest.mark.parametrize("foreign", FOREIGN_COOKIES[:3])
def test_a_sign_in_completes_in_a_browser_holding_a_parent_domain_cookie(mailbridge, foreign):
    mb = mailbridge()
    start = mb.start(mb.connect_link("cookie-user"))
    back = mb.authorize(start.headers["Location"], "alice")
    resp = mb.http("connect_callback", url=back, headers={"cookie": browser_with(mb, foreign)})
    assert resp.status_code == 302, resp.get_body()
    assert resp.headers["Location"].startswith(RETURN_ORIGIN)
    assert query_of(resp.headers["Location"])["status"] == "connected"


def test_an_admin_consent_completes_in_a_browser_holding_a_parent_domain_cookie(mailbridge):
    mb = mailbridge(consent_policy="admin_required")
    admin = mb.kit.add_user(f"itadmin{uuid.uuid4().hex[:4]}", is_admin=True)
    consent_url = mb.admin_consent_start(tenant=mb.kit.tid, return_url=RETURN_URL).headers["Location"]
    back = mb.admin.complete_authorize(consent_url, admin["upn"])
    resp = mb.http("admin_consent_callback", url=back, headers={"cookie": browser_with(mb, FOREIGN_COOKIES[0])})
    assert resp.status_code == 302, resp.get_body()
    assert query_of(resp.headers["Location"])["status"] == "admin_consented"


@pytest.fixture
def table_keys(monkeypatch) -> list[tuple[str, str]]:
    """Every (PartitionKey, RowKey) the app asks Table storage for by point read."""
    seen: list[tuple[str, str]] = []
    real = TableClient.get_entity

    def get_entity(self, partition_key, row_key, **kwargs):
        seen.append((partition_key, row_key))
        return real(self, partition_key, row_key, **kwargs)

    monkeypatch.setattr(TableClient, "get_entity", get_entity)
    return seen


def test_an_id_with_a_trailing_newline_never_reaches_table_storage(mailbridge, table_keys):
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="nl-user")["connection_id"]
    mid = f"m-{uuid.uuid4().hex[:8]}"
    assert mb.http("enqueue_message", "POST", body=message(cid, mid)).status_code == 202
    table_keys.clear()
    calls = [
        ("get_connection", "GET", {}, {"connection_id": cid + "\n"}),
        ("update_connection", "PATCH", {}, {"connection_id": cid + "\n"}),
        ("delete_connection", "DELETE", {}, {"connection_id": cid + "\n"}),
        ("send_test_message", "POST", {}, {"connection_id": cid + "\n"}),
        ("list_messages", "GET", {"connection_id": cid + "\n"}, {}),
        ("get_message", "GET", {"connection_id": cid + "\n"}, {"message_id": mid}),
        ("get_message", "GET", {"connection_id": cid}, {"message_id": mid + "\n"}),
        ("cancel_message", "DELETE", {"connection_id": cid}, {"message_id": mid + "\n"}),
    ]
    for name, method, params, route in calls:
        body = {"is_default": True} if method == "PATCH" else None
        resp = mb.http(name, method, params=params, route_params=route, body=body)
        assert resp.status_code == 404, (name, resp.get_body())
    assert [key for key in table_keys if any(ord(ch) < 0x20 for ch in "".join(key))] == []
    # The same id without the newline is found: the guard refuses the newline, not the id.
    assert mb.http("get_message", params={"connection_id": cid}, route_params={"message_id": mid}).status_code == 200


def test_a_continuation_with_a_trailing_newline_is_not_a_token_the_api_returned(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="nl-log")["connection_id"]
    forged = urlsafe_b64encode(b"~t0000000000000-x\n").decode().rstrip("=")
    resp = mb.http("list_messages", params={"connection_id": cid, "continuation": forged})
    assert (resp.status_code, mb.json(resp)["error"]["code"]) == (400, "invalid_request")


CONTROL_RETURN_URLS = [
    "\x00" + RETURN_URL,  # urlsplit drops it: the check saw a clean URL
    RETURN_ORIGIN + "/a\x00b",
    RETURN_ORIGIN + "/a\x7fb",
    RETURN_ORIGIN + "/a\x85b",
    RETURN_ORIGIN + "/a\x0bb",
    RETURN_ORIGIN + "/#a\x1bb",
]


@pytest.mark.parametrize(
    "return_url", CONTROL_RETURN_URLS, ids=["leading-NUL", "NUL", "DEL", "NEL", "VT", "ESC-in-fragment"]
)
def test_a_return_url_with_control_characters_is_refused(mailbridge, return_url):
    mb = mailbridge()
    link = mb.http("create_connection_link", "POST", body={"user_ref": "u", "return_url": return_url})
    assert (link.status_code, mb.json(link)["error"]["code"]) == (400, "return_url_not_allowed")
    # The anonymous admin-consent entry takes a return_url too: a page, no redirect, no cookie.
    page = mb.http("admin_consent", params={"tenant": "organizations", "return_url": return_url})
    assert page.status_code == 400 and b"<code>return_url_not_allowed</code>" in page.get_body()
    assert "Location" not in page.headers and "Set-Cookie" not in page.headers


def test_an_ordinary_return_url_still_works(mailbridge):
    mb = mailbridge()
    for url in (RETURN_URL, RETURN_ORIGIN + "/caf%C3%A9?q=a%20b#top", RETURN_ORIGIN):
        resp = mb.http("create_connection_link", "POST", body={"user_ref": "u", "return_url": url})
        assert resp.status_code == 201, (url, resp.get_body())


def test_an_admin_consent_tenant_longer_than_a_domain_name_is_refused_before_any_redirect(mailbridge):
    """A DNS name is at most 253 characters (RFC 1035 2.3.4): a 3,000-character "domain" was signed into a state
    too long for the callback and an ~8 KB Location (helper review, 2026-12-07); now a 400 page, no cookie."""
    mb = mailbridge()
    for tenant in ("a" * 250 + ".com", ("x" * 60 + ".") * 50 + "com"):
        page = mb.http("admin_consent", params={"tenant": tenant})
        assert page.status_code == 400 and b"<code>invalid_request</code>" in page.get_body(), len(tenant)
        assert "Location" not in page.headers and "Set-Cookie" not in page.headers
    ok = mb.http("admin_consent", params={"tenant": "a" * 60 + "." + "b" * 60 + ".example"})
    assert ok.status_code == 302


def test_the_html_pages_cannot_be_framed(mailbridge):
    mb = mailbridge()
    pages = [
        mb.http("connect_start", params={"ticket": "a.b"}),
        mb.http("connect_callback", params={"state": "unknown", "code": "x"}),
        mb.http("admin_consent", params={"tenant": "common"}),
        mb.http("admin_consent_callback", params={"state": "unknown"}),
    ]
    for resp in pages:
        assert resp.status_code == 400 and resp.mimetype == "text/html", resp.get_body()
        csp = [d.strip() for d in resp.headers["Content-Security-Policy"].split(";")]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"


def test_health_is_not_sniffed_or_cached(mailbridge):
    mb = mailbridge()
    resp = mb.http("health")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
