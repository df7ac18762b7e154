"""The sample connect page in a real headless Chromium: app under devhost, real Azurite, emulator over HTTPS.

How the browser trusts the emulator: Chromium on Linux reads trust anchors from the NSS database in
``$HOME/.pki/nssdb``. The browser runs with a throw-away HOME whose NSS database holds the emulator's
CA (``certutil -A -t C,,``, Debian package ``libnss3-tools``), so TLS is verified normally; no
``--ignore-certificate-errors``. ``test_browser_rejects_an_unknown_ca`` proves verification is on.

Chromium comes from the Debian package (``/usr/bin/chromium``), driven by Playwright's
``executable_path``; nothing is downloaded. Missing Chromium or certutil: skipped, but failed under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.connect.tickets import verify_ticket
from stack.azurite import free_port
from stack.seed import ensure_token_key
from tests.fixtures.app import emulated_settings, query_of

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
SCREENSHOTS = REPO / ".run" / "screenshots"
PASSWORD = "password"  # the emulator's default user password


def _require(ok: bool, reason: str) -> None:
    """Skip with a clear reason locally; under CI a missing browser is a failure, not a skip."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser_home(emulator, tmp_path_factory) -> Path:
    """A HOME whose NSS database trusts the emulator's CA (and nothing else of ours)."""
    _require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    _require(shutil.which("certutil") is not None, "certutil not found (apt-get install -y libnss3-tools)")
    home = tmp_path_factory.mktemp("browser-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True, capture_output=True)
    trust_ca = ["-A", "-t", "C,,", "-n", "mailbridge-emulator-ca", "-i", str(emulator.ca_path)]
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", *trust_ca], check=True, capture_output=True)
    return home


def _launch(playwright, home: Path):
    env = {**os.environ, "HOME": str(home)}
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env)


@pytest.fixture(scope="module")
def playwright(browser_home) -> Iterator[Any]:
    """One Playwright driver per module (the sync API allows only one at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright, browser_home) -> Iterator[Any]:
    instance = _launch(playwright, browser_home)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def ui_app(emulator, emulator_admin, azurite, operator_tenant, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Mailbridge under devhost on a free port, its app registered with redirect URIs on that port.

    Two customer tenants: one where users may consent (alice), one requiring admin approval
    (carol, plus admin who may approve).
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    suffix = uuid.uuid4().hex[:8]
    app = emulator_admin.register_app(
        home_tid=operator_tenant["tid"],
        display_name=f"Mailbridge UI {suffix}",
        redirect_uris=[f"{base}/api/connect/callback", f"{base}/api/admin-consent/callback"],
        sign_in_audience="AzureADMultipleOrgs",
        secrets=[{"value": f"ui-secret-{suffix}"}],
    )
    ensure_token_key(emulator_admin, operator_tenant["tid"], app["client_id"], app["secrets"][0]["value"])
    open_tenant = emulator_admin.create_tenant("user", "work", domain=f"ui{suffix}.example")
    emulator_admin.create_user(open_tenant["tid"], f"alice@ui{suffix}.example", display_name="Alice UI")
    emulator_admin.create_user(open_tenant["tid"], f"bob@ui{suffix}.example", display_name="Bob UI")
    strict = emulator_admin.create_tenant("admin_required", "work", domain=f"strict{suffix}.example")
    emulator_admin.create_user(strict["tid"], f"carol@strict{suffix}.example")
    emulator_admin.create_user(strict["tid"], f"admin@strict{suffix}.example", is_admin=True)

    # Every setting's local default from the sample (schedules, queue names ...), then this test's values.
    values = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    values |= emulated_settings(
        emulator,
        azurite,
        app,
        suffix,
        public_base_url=base,
        return_origin=base,
        TICKET_SIGNING_KEY="ui-test-ticket-key-" + "k" * 32,
        ENABLE_SAMPLE_UI="true",
        DEVHOST_FUNCTION_KEYS=f"fk-{suffix}",
        DEVHOST_MASTER_KEY=f"mk-{suffix}",
    )
    out = tmp_path_factory.mktemp("ui-devhost")
    settings = out / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    ready = out / "ready.json"
    log = open(out / "devhost.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app-dir", str(REPO), "--settings", str(settings)]
        + ["--port", str(port), "--ready-file", str(ready)],
        cwd=REPO,
        env={**os.environ, **values, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None and ready.exists(), (out / "devhost.log").read_text()[-3000:]
        http = requests.Session()
        http.trust_env = False
        health = http.get(f"{base}/api/health", timeout=10)
        assert health.status_code == 200 and health.json()["ok"], health.text
        yield {
            "base": base,
            "ui": f"{base}/api/ui",
            "alice": f"alice@ui{suffix}.example",
            "bob": f"bob@ui{suffix}.example",
            "carol": f"carol@strict{suffix}.example",
            "tenant_admin": f"admin@strict{suffix}.example",
            "log": out / "devhost.log",
            "storage": values["AzureWebJobsStorage"],
            "table_prefix": values.get("TABLE_PREFIX", ""),
        }
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def _sign_in(page, username: str, *, consent: bool = True) -> None:
    """Pass the emulator's sign-in page (#username, #password, #accept), then its permission page when one
    follows (#consent: only when the user still has something to consent to, as with Microsoft)."""
    page.wait_for_selector("#username")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click("#accept")
    if consent and page.locator("#consent").count():
        with page.expect_navigation():
            page.click("#accept")


@pytest.mark.browser
def test_connect_send_test_then_disconnect_from_the_sample_page(browser, ui_app, emulator, emulator_admin):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(ui_app["ui"])
        expect(page.locator("h1")).to_have_text("Mailbridge")
        page.fill("#user-ref", "browser-user-1")
        page.click("#connect")

        page.wait_for_url(f"{emulator.base_url}/**")  # Microsoft's (the emulator's) page, over verified TLS
        _sign_in(page, ui_app["alice"], consent=False)
        # Step 2: the permissions actually requested, OIDC scopes included.
        for scope in ("Mail.Send", "offline_access", "profile"):
            expect(page.locator("#permissions")).to_contain_text(scope)
        page.click("#accept")

        # Back with ?status=connected&result=...: the page (playing the backend) claims the result for the
        # user_ref it asked the link for, then drops the single-use result from the address.
        expect(page.locator("#outcome-title")).to_have_text("Connected")
        expect(page.locator("#connection-status")).to_have_text("connected")
        expect(page.locator("#connection-mailbox")).to_have_text(ui_app["alice"])
        assert "result=" not in page.url

        # Send test email: through the send pipeline to Graph; the message lands in alice's Sent Items.
        page.click("#send-test")
        expect(page.locator("#action-result")).to_contain_text("Test email sent", timeout=30000)
        sent = emulator_admin.sent_items(ui_app["alice"])
        assert [m["subject"] for m in sent] == ["Mailbridge test message"]
        # The confirmation links to the emulated mailbox; the outgoing log shows the message as sent.
        viewer = page.locator("#sent-items-link").get_attribute("href") or ""
        assert viewer == f"{emulator.base_url}/_emulator/ui/mailboxes"
        expect(page.locator("#messages-body tr").first).to_contain_text("sent")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "connected.png"), full_page=True)

        page.click("#disconnect")
        expect(page.locator("#connection-status")).to_have_text("disconnected")
        expect(page.locator("#outcome-title")).to_have_text("Disconnected")
        expect(page.locator("#send-test")).to_be_disabled()
        # A reload follows the real status, not a stale ?status=connected.
        page.reload()
        expect(page.locator("#outcome-title")).to_have_text("Disconnected")

        # The page never carried a function key; its state came from the anonymous local-only helpers.
        assert "x-functions-key" not in page.content()
    finally:
        context.close()


@pytest.mark.browser
def test_admin_approval_required_shows_the_admin_consent_link_which_works(browser, ui_app, emulator):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(ui_app["ui"])
        page.fill("#user-ref", "browser-user-2")
        page.click("#connect")
        _sign_in(page, ui_app["carol"])
        # As Microsoft: "Need admin approval" right after sign-in, never a permission page first.
        expect(page.locator("#need-admin-approval")).to_have_text("Need admin approval")
        assert page.locator("#permissions").count() == 0
        page.click("#back-to-app")

        page.wait_for_url(f"{ui_app['ui']}?status=error*")
        expect(page.locator("#outcome-title")).to_have_text("Not connected")
        expect(page.locator("#outcome-message")).to_contain_text("requires an administrator to approve")
        expect(page.locator("#outcome")).to_contain_text("error: admin_consent_required")
        link = page.locator("#admin-consent-link")
        href = link.get_attribute("href") or ""
        assert href.startswith(f"{ui_app['base']}/api/admin-consent"), href

        # The IT admin follows the link, approves for the organisation and lands back on the page.
        link.click()
        page.wait_for_url(f"{emulator.base_url}/**")
        _sign_in(page, ui_app["tenant_admin"])
        page.wait_for_url(f"{ui_app['ui']}?status=admin_consented*")
        expect(page.locator("#outcome-title")).to_have_text("Approved")

        # Now carol can connect, and sees no permission page: the admin approved /.default for everyone.
        page.fill("#user-ref", "browser-user-2")
        page.click("#connect")
        _sign_in(page, ui_app["carol"], consent=False)
        expect(page.locator("#connection-status")).to_have_text("connected")
    finally:
        context.close()


def _connect_on_page(page, ui_app: dict[str, Any], user_ref: str, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(ui_app["ui"])
    page.fill("#user-ref", user_ref)
    page.click("#connect")
    _sign_in(page, ui_app[user])
    expect(page.locator("#connection-status")).to_have_text("connected")


def _pending_caches(ui_app) -> set[str]:
    """The sealed token caches of pending grants (rows of the app's ``tokencaches`` table, issue 26)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables import TableServiceClient

    table = TableServiceClient.from_connection_string(ui_app["storage"]).get_table_client(
        ui_app["table_prefix"] + "tokencaches"
    )
    try:
        return {r["PartitionKey"] for r in table.list_entities() if r["PartitionKey"].startswith("mb-p")}
    except ResourceNotFoundError:  # no table yet: nothing was ever stored
        return set()


@pytest.mark.browser
def test_a_forwarded_connect_link_never_attaches_the_strangers_mailbox(browser, ui_app, emulator):
    """Context A's backend asks a link for user_ref=a and A forwards it. B (bob, signed in to the SaaS as b,
    connected and consented before) opens it in B's browser: the page claims for b -> claim_mismatch, the
    grant is discarded (no token cache left), nothing exists for a, B's own connection stays."""
    from playwright.sync_api import expect

    a_ref, b_ref = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    context_b = browser.new_context()
    page_b = context_b.new_page()
    http = requests.Session()
    http.trust_env = False
    try:
        _connect_on_page(page_b, ui_app, b_ref, "bob")
        own_id = page_b.locator("#connection-id").text_content()
        page_origin = {"Origin": ui_app["base"]}  # the page's helpers take changes from the page only
        link = http.post(
            f"{ui_app['base']}/api/ui/connect-link", json={"user_ref": a_ref}, headers=page_origin, timeout=10
        )
        assert link.status_code == 201, link.text
        before = _pending_caches(ui_app)

        page_b.goto(link.json()["connect_url"])  # the forwarded link, in B's browser
        _sign_in(page_b, ui_app["bob"])
        expect(page_b.locator("#outcome")).to_contain_text("error: claim_mismatch")
        expect(page_b.locator("#outcome-title")).to_have_text("Not connected")
        assert _pending_caches(ui_app) <= before, "the discarded grant's token cache is deleted"

        for_a = http.get(f"{ui_app['base']}/api/ui/connections/{own_id}", timeout=10).json()
        assert (for_a["user_ref"], for_a["status"]) == (b_ref, "connected")  # B's own connection untouched
        claim_as_a = http.post(
            f"{ui_app['base']}/api/ui/claim", json={"result": "x.y", "user_ref": a_ref}, headers=page_origin, timeout=10
        )
        assert claim_as_a.json()["error"]["code"] == "invalid_result"
    finally:
        context_b.close()


@pytest.mark.browser
def test_a_forwarded_microsoft_sign_in_url_is_refused_in_another_browser(browser, ui_app, emulator):
    """A starts a connect (the binding cookie lands in A's browser) and forwards the Microsoft sign-in URL;
    B signs in with it in B's browser: the callback has no binding cookie and is refused (invalid_state)."""
    from playwright.sync_api import expect

    context_a, context_b = browser.new_context(), browser.new_context()
    try:
        page_a = context_a.new_page()
        page_a.goto(ui_app["ui"])
        page_a.fill("#user-ref", f"a-{uuid.uuid4().hex[:6]}")
        page_a.click("#connect")
        page_a.wait_for_url(f"{emulator.base_url}/**")
        assert any(c["name"].startswith("mb_connect_") for c in context_a.cookies(ui_app["base"]))
        before = _pending_caches(ui_app)

        page_b = context_b.new_page()
        page_b.goto(page_a.url)  # the forwarded sign-in URL
        _sign_in(page_b, ui_app["bob"])
        expect(page_b.locator("code")).to_have_text("invalid_state")
        assert _pending_caches(ui_app) == before
    finally:
        context_a.close()
        context_b.close()


@pytest.mark.browser
def test_error_text_from_the_url_is_rendered_as_text_not_html(browser, ui_app):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    try:
        evil = "<img src=x id=injected onerror=alert(1)>"
        page.goto(
            f"{ui_app['ui']}?status=error&error=made_up&error_description={requests.utils.quote(evil)}"
            "&admin_consent_url=javascript:alert(1)"
        )
        expect(page.locator("#outcome-message")).to_have_text(evil)
        assert page.locator("#injected").count() == 0
        assert page.locator("#admin-consent-link").count() == 0  # not an http(s) URL: no link
        # An http(s) URL that is not this app's own admin-consent route is not a link either (docs/connect.md).
        foreign = requests.utils.quote("https://evil.example/api/admin-consent", safe="")
        page.goto(f"{ui_app['ui']}?status=error&error=admin_consent_required&admin_consent_url={foreign}")
        expect(page.locator("#outcome-title")).to_have_text("Not connected")
        assert page.locator("#admin-consent-link").count() == 0
        assert "evil.example" not in (page.locator("#outcome").text_content() or "")
    finally:
        context.close()


@pytest.mark.browser
def test_browser_rejects_an_unknown_ca(playwright, emulator, tmp_path):
    """Without the emulator CA in its NSS database the same Chromium refuses the emulator: TLS is really verified."""
    from playwright.sync_api import Error

    bare = _launch(playwright, tmp_path)  # an empty HOME: no NSS database, only the system roots
    try:
        page = bare.new_page()
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(f"{emulator.base_url}/_emulator/health")
    finally:
        bare.close()


def test_sample_ui_is_404_unless_enabled_and_local(mailbridge):
    mb = mailbridge(ENABLE_SAMPLE_UI="false", PUBLIC_BASE_URL="http://127.0.0.1:7071")
    for name, method in (("sample_ui_page", "GET"), ("sample_ui_connect_link", "POST")):
        resp = mb.http(name, method, body={"user_ref": "u"})
        assert resp.status_code == 404
        assert mb.json(resp)["error"]["code"] == "not_found"
    # Enabled but deployed (non-loopback PUBLIC_BASE_URL): the anonymous helpers must not exist.
    mb = mailbridge(ENABLE_SAMPLE_UI="true")
    assert mb.http("sample_ui_page").status_code == 404
    assert mb.http("sample_ui_connect_link", "POST", body={"user_ref": "u"}).status_code == 404


def test_sample_ui_connect_link_returns_to_the_page(mailbridge):
    local = "http://127.0.0.1:7071"
    mb = mailbridge(ENABLE_SAMPLE_UI="true", PUBLIC_BASE_URL=local, ALLOWED_RETURN_ORIGINS=local)
    page_mb = mb.http

    def from_page(name: str, method: str = "GET", **kwargs: Any):
        """A request of the page itself: its Host and Origin (tests/test_security_http.py checks the others)."""
        return page_mb(name, method, headers={"host": "127.0.0.1:7071", "origin": local}, **kwargs)

    mb.http = from_page  # type: ignore[method-assign]
    page = mb.http("sample_ui_page")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    # A caller-supplied return_url is ignored: the link always returns to the sample page itself.
    link = mb.http("sample_ui_connect_link", "POST", body={"user_ref": "u-1", "return_url": "https://evil.example"})
    assert link.status_code == 201
    token = query_of(mb.json(link)["connect_url"])["ticket"]
    ticket = verify_ticket(mb.env["TICKET_SIGNING_KEY"].encode(), token)
    assert ticket.return_url == f"{local}/api/ui" and ticket.user_ref == "u-1"
    bad = mb.http("sample_ui_connect_link", "POST", body={"user_ref": ""})
    assert bad.status_code == 400 and mb.json(bad)["error"]["code"] == "invalid_request"
    missing = mb.http("sample_ui_connection_status", route_params={"connection_id": "nope"})
    assert missing.status_code == 404 and mb.json(missing)["error"]["code"] == "not_found"
    unknown = mb.http("sample_ui_send_test", "POST", route_params={"connection_id": "nope"})
    assert unknown.status_code == 404
