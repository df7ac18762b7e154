"""Admin consent answers are single use and bound to the browser that asked (issue 23).

Entra's admin-consent redirect (``admin_consent=True&tenant&scope&state``) authenticates nobody: Microsoft says
not to trust ``tenant`` to authenticate anyone (v2-admin-consent, "Successful response"). What Mailbridge can
make sure of is that one answer is taken once (its state is burnt in Storage: another instance, or this one
after a restart, refuses it too) and only in the browser that started the request (a cookie). Every case runs
the real app functions against Azurite and, where Entra answers, the HTTPS emulator.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid

import pytest

from shared.services import reset_services
from tests.fixtures.app import RETURN_ORIGIN, RETURN_URL, query_of

REPORTED = "Entra reported admin consent for tenant"


def page_code(resp) -> str | None:
    found = re.search(rb"<code>([a-z_]+)</code>", resp.get_body())
    return found.group(1).decode() if found else None


def reported_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("shared") and REPORTED in r.getMessage()]


def approve(mb, **start):
    """An IT admin of the tenant asks (in ``mb``'s browser) and approves at Entra; Entra's redirect URL."""
    admin = mb.kit.add_user(f"itadmin{uuid.uuid4().hex[:4]}", is_admin=True)
    consent_url = mb.admin_consent_start(**{"tenant": mb.kit.tid, **start}).headers["Location"]
    return mb.admin.complete_authorize(consent_url, admin["upn"])


@pytest.mark.parametrize("with_return_url", [False, True], ids=["page", "redirect"])
def test_a_replayed_admin_consent_answer_is_refused_and_logged_once(mailbridge, caplog, with_return_url):
    caplog.set_level(logging.INFO)
    mb = mailbridge(consent_policy="admin_required")
    back = approve(mb, **({"return_url": RETURN_URL} if with_return_url else {}))
    browser = dict(mb.cookies)  # the admin's browser, kept: a replay from it still carries the cookie

    first = mb.admin_consent_callback(back, cookies=browser)
    if with_return_url:
        assert first.status_code == 302 and first.headers["Location"].startswith(RETURN_ORIGIN)
        assert query_of(first.headers["Location"])["status"] == "admin_consented"
    else:
        assert first.status_code == 200 and b"reported" in first.get_body()
    assert reported_lines(caplog) == [f"{REPORTED} {mb.kit.tid}"]

    for _ in range(50):
        replay = mb.admin_consent_callback(back, cookies=browser)
        assert (replay.status_code, page_code(replay)) == (400, "invalid_state")
        assert "Location" not in replay.headers  # no second admin_consented redirect either
        assert b"already used" in replay.get_body()
    reset_services()  # another instance (or this one after a restart): the burnt state lives in Storage
    after_restart = mb.admin_consent_callback(back, cookies=browser)
    assert (after_restart.status_code, page_code(after_restart)) == (400, "invalid_state")
    assert len(reported_lines(caplog)) == 1
    assert not [r for r in caplog.records if "Admin consent granted" in r.getMessage()]


def test_concurrent_replays_of_one_answer_accept_exactly_one(mailbridge, caplog):
    caplog.set_level(logging.INFO)
    mb = mailbridge()
    state = query_of(mb.admin_consent_start(tenant=mb.kit.tid).headers["Location"])["state"]
    browser = dict(mb.cookies)
    params = {"state": state, "admin_consent": "True", "tenant": mb.kit.tid, "scope": "x"}
    url = "https://mailbridge.test/api/admin-consent/callback?" + "&".join(f"{k}={v}" for k, v in params.items())
    mb.services  # built once, shared by the threads like one instance's workers  # noqa: B018
    gate, statuses = threading.Barrier(8), []

    def answer() -> None:
        gate.wait()
        statuses.append(mb.admin_consent_callback(url, cookies=browser).status_code)

    threads = [threading.Thread(target=answer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [400] * 7
    assert len(reported_lines(caplog)) == 1


def test_an_answer_in_another_browser_is_refused_and_burns_nothing(mailbridge, caplog):
    """A forwarded or leaked callback URL is useless elsewhere, and does not spoil the admin's own answer."""
    caplog.set_level(logging.INFO)
    mb = mailbridge(consent_policy="admin_required")
    back = approve(mb)
    for jar in ({}, {name: "guess" for name in mb.cookies}):
        other = mb.admin_consent_callback(back, cookies=jar)
        assert (other.status_code, page_code(other)) == (400, "invalid_state")
        assert b"another browser" in other.get_body()
    assert reported_lines(caplog) == []
    own = mb.admin_consent_callback(back)
    assert own.status_code == 200, own.get_body()
    assert len(reported_lines(caplog)) == 1


def test_an_answer_naming_another_tenant_than_the_one_asked_is_refused(mailbridge, caplog):
    """Asked for tenant A by id, Entra answers for A: an answer naming B is not Entra's and is not reported."""
    caplog.set_level(logging.INFO)
    mb = mailbridge()
    state = query_of(mb.admin_consent_start(tenant=mb.kit.tid).headers["Location"])["state"]
    resp = mb.admin_consent_callback_with({"state": state, "admin_consent": "True", "tenant": str(uuid.uuid4())})
    assert (resp.status_code, page_code(resp)) == (400, "invalid_state")
    assert reported_lines(caplog) == []
