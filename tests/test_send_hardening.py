"""Issue 23 hardening of what a producer's message can make Mailbridge do, against real Azurite and the
emulator over HTTPS where it matters:

1. ``callback.queue`` names only a queue the operator allowed (CALLBACK_QUEUES, or EVENTS_QUEUE): another
   queue of the account is refused at intake (``callback_queue_not_allowed``), nothing is sent and nothing is
   written to that queue.
2. Control characters (NUL, VT, FF, ESC, DEL, C1 such as NEL, U+2028/U+2029) are refused in the subject,
   header values, display names, addresses and attachment names, as CR/LF are (``header_injection``), by the
   runtime and by the published schema alike; TAB stays legal where a header allows white space.
3. With SEND_AS_ENDPOINT=users, ``from`` becomes a URL path segment: it must be a user principal name (no
   ``/``: ``x/../a@b`` is rejected, never sent), and the pacing budget is keyed by the mailbox, one key for
   every spelling of it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from jsonschema import Draft202012Validator

from shared.base import errors
from shared.base.errors import SettingsError
from shared.base.settings import load_settings
from shared.send.graph import request_sizes
from shared.send.limits import check_limits
from shared.send.mail import parse_message
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schema" / "send-v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
BASE_ENV = {
    "ENTRA_CLIENT_ID": "id",
    "ENTRA_CLIENT_SECRET": "s",
    "KEY_VAULT_URL": "https://v.vault.azure.net",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "PUBLIC_BASE_URL": "https://mb.example",
    "ALLOWED_RETURN_ORIGINS": "https://app.example",
    "TICKET_SIGNING_KEY": "k" * 40,
}


def ok(**fields):
    return {"id": "m-1", "connection_id": "c123", "to": [{"address": "ada@example.com"}], **fields}


def queue_count(kit, name: str) -> int | None:
    """Approximate message count of a queue; None when it does not exist (never creates it)."""
    try:
        props = kit.services.storage.queues.get_queue_client(name).get_queue_properties()
    except ResourceNotFoundError:
        return None
    return int(props.approximate_message_count)


# --- 1. callback queues -----------------------------------------------------------------------------------


def test_callback_queues_setting_is_parsed_and_guards_the_app_own_queues():
    settings = load_settings({**BASE_ENV, "CALLBACK_QUEUES": "crm-events, billing-events  crm-events"})
    assert settings.callback_queues == ("crm-events", "billing-events")
    assert load_settings(BASE_ENV).callback_queues == ()
    for bad in ("outbound-mail", "outbound-mail-poison", "azure-webjobs-blobtrigger-x", "Bad_Queue", "a--b"):
        with pytest.raises(SettingsError) as refused:
            load_settings({**BASE_ENV, "CALLBACK_QUEUES": f"crm-events,{bad}"})
        assert refused.value.setting == "CALLBACK_QUEUES", bad


def test_a_callback_queue_not_allowed_is_refused_by_check_limits():
    settings = load_settings({**BASE_ENV, "CALLBACK_QUEUES": "crm-events"})
    for queue in ("crm-events", "mail-events"):  # listed, and EVENTS_QUEUE itself
        msg = parse_message(ok(callback={"queue": queue}))
        check_limits(msg, settings, *request_sizes(msg, ""))
    msg = parse_message(ok(callback={"queue": "billing-commands"}))
    with pytest.raises(errors.CallbackQueueNotAllowed) as refused:
        check_limits(msg, settings, *request_sizes(msg, ""))
    assert refused.value.code == "callback_queue_not_allowed" and refused.value.extra["field"] == "callback.queue"
    assert refused.value.http_status == 400


def test_a_queue_message_naming_a_foreign_queue_is_rejected_and_writes_nothing_there(send_kit):
    """The reported attack: a producer names another queue of the account (``billing-commands``) with its own
    metadata. The message is recorded rejected, nothing is sent, and that queue gets nothing; an allowed
    callback queue still gets its event."""
    suffix = uuid.uuid4().hex[:8]
    allowed, foreign = f"crm-{suffix}", f"billing-{suffix}"
    kit = send_kit(CALLBACK_QUEUES=allowed)
    cid = kit.connect("alice")
    for name in (allowed, foreign):
        kit.services.storage.queue(name)  # both exist, as an operator's queues would
    good = kit.message(cid, callback={"queue": allowed})
    bad = kit.message(cid, callback={"queue": foreign}, metadata={"command": "refund"})
    with kit.listener() as listener:
        kit.put(good)
        kit.put(bad)
        records = kit.wait_final([(cid, good["id"]), (cid, bad["id"])])
    assert records[(cid, good["id"])].status == "sent"
    rejected = records[(cid, bad["id"])]
    assert (rejected.status, rejected.error_code, rejected.attempts) == ("rejected", "callback_queue_not_allowed", 0)
    assert kit.mb.admin.sent_items(kit.address("alice"), key=bad["id"]) == []
    assert queue_count(kit, foreign) == 0, "nothing may be written to a queue the operator did not allow"
    (event,) = kit.events(allowed)
    assert event["data"]["message_id"] == good["id"]
    (event,) = kit.events_for(bad["id"])  # the producer still learns the outcome on EVENTS_QUEUE
    assert event["type"] == "mailbridge.message.rejected"
    assert event["data"]["error"]["code"] == "callback_queue_not_allowed"
    assert listener.failed == 0


def test_http_intake_refuses_a_foreign_callback_queue_with_400(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    msg = kit.message(cid, callback={"queue": f"billing-{uuid.uuid4().hex[:8]}"})
    resp = kit.mb.http("enqueue_message", "POST", body=msg)
    assert resp.status_code == 400, resp.get_body()
    body = kit.mb.json(resp)
    assert body["error"]["code"] == "callback_queue_not_allowed"
    assert kit.record(cid, msg["id"]) is None and kit.queue_length() == 0


# --- 2. control characters --------------------------------------------------------------------------------

CONTROLS = ["\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029"]
PLACES = {
    "subject": lambda c: {"subject": f"Hello{c}Bcc: x@evil.example"},
    "header value": lambda c: {"headers": {"x-ref": f"1{c}2"}},
    "display name": lambda c: {"to": [{"address": "ada@example.com", "name": f"Ada{c}Lovelace"}]},
    "reply-to name": lambda c: {"reply_to": [{"address": "r@example.com", "name": f"R{c}"}]},
    "address": lambda c: {"to": [{"address": f"ada{c}x@example.com"}]},
    "address end": lambda c: {"cc": [{"address": f"ada@example.com{c}"}]},
    "attachment name": lambda c: {"attachments": [{"name": f"a{c}.txt", "content_base64": "aGk="}]},
    "content id": lambda c: {"attachments": [{"name": "a.png", "content_base64": "aGk=", "content_id": f"i{c}"}]},
}


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize("place", list(PLACES))
def test_control_characters_are_refused_by_the_runtime_and_the_schema(place, char):
    data = ok(**PLACES[place](char))
    with pytest.raises(errors.HeaderInjection) as refused:
        parse_message(data)
    assert refused.value.code == "header_injection"
    assert not VALIDATOR.is_valid(data), "the published schema must refuse it too"


def test_tab_stays_legal_where_header_white_space_is():
    data = ok(subject="Order\t4711", headers={"x-ref": "a\tb"})
    assert parse_message(data).subject == "Order\t4711" and VALIDATOR.is_valid(data)
    for place in ("display name", "attachment name"):
        bad = ok(**PLACES[place]("\t"))
        with pytest.raises(errors.HeaderInjection):
            parse_message(bad)
        assert not VALIDATOR.is_valid(bad)


def test_a_queue_message_with_a_nul_in_its_subject_is_recorded_rejected(mailbridge):
    mb = mailbridge()
    mid = f"m-{uuid.uuid4().hex[:8]}"
    outcome = mb.services.sender.process(json.dumps(ok(id=mid, connection_id="c-x", subject="a\x00b")), "q-1")
    assert (outcome.status, outcome.error.code) == ("rejected", "header_injection")
    assert mb.services.deliveries.get("c-x", mid).status == "rejected"


# --- 3. `from` as a /users/{from} path segment ------------------------------------------------------------

TRAVERSALS = [
    "../../beta/users/ceo@victim.example",
    "x/../team@contoso.example",
    "team%2F..@contoso.example",
    "a?b@contoso.example",
    "a#b/@contoso.example",
    "team.@contoso.example",
    "$team@contoso.example",
]


@pytest.mark.parametrize("address", TRAVERSALS)
def test_from_must_be_a_user_principal_name_with_the_users_endpoint(address):
    users = load_settings({**BASE_ENV, "ENABLE_SHARED_MAILBOXES": "true", "SEND_AS_ENDPOINT": "users"})
    msg = parse_message(ok(**{"from": address}))
    with pytest.raises(errors.InvalidMessage) as refused:
        check_limits(msg, users, *request_sizes(msg, ""))
    assert refused.value.code == "invalid_message" and refused.value.extra["field"] == "from.address"
    fine = parse_message(ok(**{"from": "O'Neil.team_1!#^~-x@Contoso.example"}))
    check_limits(fine, users, *request_sizes(fine, ""))


def test_graph_quotes_the_user_segment_whole():
    """Defence in depth: even an address that got through would stay one path segment ('/' -> %2F)."""
    from shared.send.graph import user_segment

    assert user_segment("a/../b@c.example") == "a%2F..%2Fb%40c.example"
    assert user_segment("O'Neil#x@c.example") == "O%27Neil%23x%40c.example"


def test_a_traversal_from_is_rejected_and_never_reaches_graph(send_kit):
    kit = send_kit(ENABLE_SHARED_MAILBOXES="true", SEND_AS_ENDPOINT="users")
    alice = kit.mb.kit.users["alice"]["oid"]
    kit.mb.kit.add_user("team", is_shared=True, send_as=[alice], full_access=[alice])
    cid = kit.connect("alice")
    team = kit.address("team")
    before = kit.mb.admin.counters("calls.graph.")
    messages = [kit.message(cid, **{"from": f"x/../{team}"}), kit.message(cid, **{"from": f"../../beta/users/{team}"})]
    for message in messages:
        outcome = kit.services.sender.process(json.dumps(message), f"q-{uuid.uuid4().hex[:6]}")
        assert (outcome.status, outcome.error.code) == ("rejected", "invalid_message"), outcome
        assert outcome.error.extra["field"] == "from.address"
    after = kit.mb.admin.counters("calls.graph.")
    assert {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} == {}, "no Graph call"
    assert all(kit.mb.admin.sent_items(team, key=m["id"]) == [] for m in messages)


def test_every_spelling_of_a_mailbox_shares_its_budget(send_kit):
    """One message a window per mailbox: after alice's plain send, the same mailbox named in ``from`` (her own
    principal name in another case, through /users/{from}/sendMail) must wait for the same budget, and so must
    a second spelling of a shared mailbox."""
    kit = send_kit(ENABLE_SHARED_MAILBOXES="true", SEND_AS_ENDPOINT="users")
    alice = kit.mb.kit.users["alice"]["oid"]
    kit.mb.kit.add_user("team", is_shared=True, send_as=[alice], full_access=[alice])
    cid = kit.connect("alice")
    kit.pace(messages_per_window=1, message_window_s=600.0, max_wait_s=0.0)
    sender = kit.services.sender

    def run(**fields):
        return sender.process(json.dumps(kit.message(cid, **fields)), f"q-{uuid.uuid4().hex[:6]}")

    assert run().status == "sent"
    own = kit.mb.kit.users["alice"]["upn"].upper()
    paced = run(**{"from": own})
    assert paced.status == "queued" and paced.record.reason == "message_rate", paced
    team = kit.address("team")
    assert run(**{"from": team.lower()}).status == "sent"
    again = run(**{"from": {"address": team.upper(), "name": "Team"}})
    assert again.status == "queued" and again.record.reason == "message_rate", again


def test_the_control_and_address_patterns_read_alike_in_python_and_ecma262():
    """The schema's patterns run in JavaScript validators too: every BMP character is matched the same way by
    Python's re and by Node's RegExp (skipped where Node is not installed)."""
    import re
    import shutil
    import subprocess

    from shared.send.mail import ADDRESS_PATTERN, CONTROL_BUT_TAB_PATTERN, CONTROL_PATTERN

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    patterns = {"control": CONTROL_PATTERN, "control_but_tab": CONTROL_BUT_TAB_PATTERN, "address": ADDRESS_PATTERN}
    script = """
const patterns = JSON.parse(process.argv[1]);
const out = {};
for (const [name, pattern] of Object.entries(patterns)) {
  const re = new RegExp(pattern);
  let bits = "";
  for (let i = 0; i < 0x10000; i++) {
    if (i >= 0xd800 && i <= 0xdfff) continue;
    const c = String.fromCharCode(i);
    bits += re.test(name === "address" ? "x" + c + "y@example.com" : c) ? "1" : "0";
  }
  out[name] = bits;
}
console.log(JSON.stringify(out));
"""
    ecma = json.loads(
        subprocess.run([node, "-e", script, json.dumps(patterns)], capture_output=True, check=True).stdout
    )
    chars = [chr(i) for i in range(0x10000) if not 0xD800 <= i <= 0xDFFF]
    for name, pattern in patterns.items():
        compiled = re.compile(pattern)
        python = "".join(
            "1" if compiled.search(f"x{c}y@example.com" if name == "address" else c) else "0" for c in chars
        )
        differ = [f"U+{ord(chars[i]):04X}" for i in range(len(chars)) if python[i] != ecma[name][i]]
        assert not differ, (name, differ[:10])
