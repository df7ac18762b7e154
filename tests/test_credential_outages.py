"""Issue 14 item 7: managed identity / azure-identity failures are transient everywhere.

With ``ENTRA_CLIENT_CREDENTIAL=managed_identity`` the app proves itself with a managed-identity token (MSAL's
``client_assertion``, and Key Vault's ``ClientAssertionCredential``). When the identity endpoint is down or
refuses, azure-identity raises ``ClientAuthenticationError`` (``CredentialUnavailableError``) with no HTTP
status. The sender must reschedule (not raise: the host would burn the dequeue count into the poison queue),
the keep-alive must count a transient failure, and the connect callback must send the browser back with
``temporarily_unavailable``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from devhost.config import parse_timespan
from shared.services import reset_services
from shared.tokens.refresh import KeepAlive
from tests.fixtures.app import RETURN_ORIGIN, query_of
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

DAY = 86400


def _identity_down(emulator_admin) -> None:
    """The managed identity endpoint refuses every request (a platform outage)."""
    emulator_admin.add_fault("msi.token", "503", retry_after=0)


def test_sender_reschedules_when_the_managed_identity_is_down(send_kit, secretless, emulator, emulator_admin):
    """BUG (issue 14 item 7): azure-identity's ClientAuthenticationError (no status) escaped TokenCacheVault
    and the MSAL client assertion, so the queue function raised: five dequeues later the message was poisoned."""
    kit = send_kit()
    secretless(kit.mb)
    emulator.state.entra.settings.access_token_lifetime_s = 120
    cid = kit.connect("alice")
    reset_services()  # a cold instance: no managed-identity token cached yet
    _identity_down(emulator_admin)
    msg = kit.message(cid)
    outcome = kit.services.sender.process(msg, "q-mi-down")
    assert outcome.status == "queued" and outcome.delay > 0, outcome
    assert outcome.error is not None and outcome.error.transient, outcome.error
    assert kit.services.connections.get(cid).status == "connected"
    emulator_admin.clear_faults()
    assert kit.services.sender.process(msg, "q-mi-back").status == "sent"


def test_keep_alive_counts_a_managed_identity_outage_as_transient(
    mailbridge, secretless, emulator, emulator_admin, caplog
):
    mb = secretless(mailbridge())
    mb.services.clock = emulator.state.clock.now
    cid = mb.connect("alice")["connection_id"]
    emulator.state.clock.advance(61 * DAY)
    reset_services()
    mb.services.clock = emulator.state.clock.now
    # Key Vault's credential got its token before the outage: this time MSAL's client assertion is what fails.
    mb.services.token_caches.read(mb.services.connections.get(cid).secret_name)
    _identity_down(emulator_admin)
    with caplog.at_level(logging.WARNING, logger="shared.tokens.refresh"):
        report = KeepAlive(mb.services).sweep()
    assert (report.due_seen, report.refreshed, report.transient_failures, report.reauth_required) == (1, 0, 1, 0)
    assert not [r for r in caplog.records if "unexpectedly" in r.getMessage()], "a known outage, not a crash"
    assert mb.services.connections.get(cid).status == "connected"
    emulator_admin.clear_faults()
    assert KeepAlive(mb.services).sweep().refreshed == 1


def test_connect_callback_answers_temporarily_unavailable_when_the_managed_identity_is_down(
    mailbridge, secretless, emulator_admin
):
    mb = secretless(mailbridge())
    start = mb.start(mb.connect_link("ref-alice"))
    assert start.status_code == 302
    location = mb.authorize(start.headers["Location"], "alice")
    _identity_down(emulator_admin)
    back = mb.callback(location)
    assert back.status_code == 302, back.get_body()
    assert back.headers["Location"].startswith(RETURN_ORIGIN)
    query = query_of(back.headers["Location"])
    assert (query["status"], query["error"]) == ("error", "temporarily_unavailable")


def test_connect_callback_answers_temporarily_unavailable_when_the_key_vault_credential_fails(
    mailbridge, secretless, emulator_admin
):
    """MSAL got its assertion (the identity endpoint answered once); storing the token cache in Key Vault then
    needs a Key Vault token, and the identity endpoint is down by then."""
    mb = secretless(mailbridge())
    start = mb.start(mb.connect_link("ref-alice"))
    location = mb.authorize(start.headers["Location"], "alice")
    # MSAL's assertion credential has its managed-identity token cached (as after any earlier sign-in); the
    # Key Vault credential is a separate one and must ask the identity endpoint, which is down by then.
    mb.services.msal._credential["client_assertion"]()
    _identity_down(emulator_admin)
    back = mb.callback(location)
    assert back.status_code == 302, back.get_body()
    query = query_of(back.headers["Location"])
    assert (query["status"], query["error"]) == ("error", "temporarily_unavailable")


def test_host_retries_of_a_failing_function_span_more_than_a_minute():
    """What still reaches the host's own retries (a Storage outage, our bugs) must not be poisoned by a
    short outage: maxDequeueCount attempts spaced visibilityTimeout apart cover at least two minutes."""
    queues = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())["extensions"]["queues"]
    spacing = parse_timespan(queues["visibilityTimeout"], 0.0)
    assert (queues["maxDequeueCount"] - 1) * spacing >= 120, queues


def test_sender_reschedules_when_entra_fails_key_vaults_app_credential(send_kit, emulator_admin):
    """BUG (soak on 3 instances, 2026-12-01): Key Vault's credential is MSAL client credentials now, and MSAL
    *raises* MsalServiceError when the token endpoint answers 5xx; it escaped the vault's error handling, so the
    queue function raised (12 host retries in a 1,000-message soak) instead of rescheduling."""
    kit = send_kit()
    cid = kit.connect("alice")
    reset_services()  # a cold instance: Key Vault's app token is not cached yet
    emulator_admin.add_fault("entra.token", "503", retry_after=0)
    msg = kit.message(cid)
    outcome = kit.services.sender.process(msg, "q-entra-down")
    assert outcome.status == "queued" and outcome.delay > 0, outcome
    assert outcome.error is not None and outcome.error.transient, outcome.error
    emulator_admin.clear_faults()
    assert kit.services.sender.process(msg, "q-entra-back").status == "sent"
