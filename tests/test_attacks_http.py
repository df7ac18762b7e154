"""Attacks on the HTTP surface and the connect flow (review of 2026-12-07, second pass; docs/security.md).

Each test played an attack that got something before its fix, through the registered functions against
Azurite and the HTTPS emulator:

- a cookie of the parent domain (a custom domain ``mail.example.com`` also receives ``example.com``'s cookies)
  that ``http.cookies.SimpleCookie`` cannot read (a JSON value, a space, a non-ASCII character, a bare name)
  made it drop the whole Cookie header: the flow's binding cookie was lost and every sign-in and admin consent in
  that browser failed ``invalid_state``; any subdomain could set such a cookie on purpose;
"""

from __future__ import annotations

import uuid

import pytest

from shared.connect.flow import parse_cookies
from tests.fixtures.app import RETURN_ORIGIN, RETURN_URL, query_of

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
