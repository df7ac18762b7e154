"""Signed webhooks (issue 28 item 3): every outcome event POSTed to WEBHOOK_URL in the Standard Webhooks format,
verified here by the ``standardwebhooks`` package itself, from a queue of its own with retries and backoff; the
target checked against SSRF (every resolved address, the connection pinned to it), no redirect, bounded attempts.
Real Azurite, the emulator, devhost's queue semantics and an HTTPS receiver on 127.0.0.1 (its own trustme CA);
the receiver is on loopback, so these tests set WEBHOOK_ALLOW_PRIVATE_TARGETS except where they test the refusal.
Every test here fails without the feature (before it there was no webhook at all)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from azure.functions.queue import QueueMessage
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bench.harness import StorageRequests
from devhost.config import QueueOptions
from devhost.functions import in_function
from devhost.queues import QueueListener
from shared.base import webhook_http
from shared.base.errors import SettingsError
from shared.base.formats import parse_retry_after
from shared.base.settings import load_settings
from shared.base.webhook_config import is_ip_literal
from shared.base.webhook_http import AttemptLimits, TargetRefused, post
from shared.base.webhooks import CONTENT_TYPE, RetryPolicy, WebhookSigner
from tests.fixtures.sender import function_spec, send_kit_fixture  # noqa: F401  (registers the send_kit fixture)
from tests.fixtures.webhook_receiver import loopback_names, webhook_receiver_fixture  # noqa: F401  (registers it)
from tests.test_settings import BASE


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def hook_kit(send_kit, receiver, secrets, **settings):
    """A SendKit whose WEBHOOK_URL is the test receiver (on 127.0.0.1, hence WEBHOOK_ALLOW_PRIVATE_TARGETS)."""
    env = {
        "WEBHOOK_URL": receiver.url,
        "WEBHOOK_SECRET": " ".join(secrets),
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "MAILBRIDGE_CA_BUNDLE": str(receiver.ca_bundle),
        **settings,
    }
    kit = send_kit(**env)
    kit.services.webhooks.limits = AttemptLimits(connect_timeout_s=2.0, total_timeout_s=1.5)
    return kit


def send_one(kit) -> dict:
    """One message through the queue function (devhost writes its output bindings as the host does)."""
    msg = kit.message(kit.connect("alice"))
    in_function.active = True  # as devhost's listener marks the function's own requests (StorageRequests)
    try:
        kit.spec.invoke(QueueMessage(id=f"q-{msg['id']}", body=json.dumps(msg).encode(), dequeue_count=1))
    finally:
        in_function.active = False
    assert kit.record(msg["connection_id"], msg["id"]).status == "sent"
    return msg


def webhook_queue(kit):
    return kit.services.storage.queue(kit.mb.env["WEBHOOK_QUEUE"])


def attempt_next(kit, timeout: float = 30.0):
    """Receive the next visible delivery on WEBHOOK_QUEUE, attempt it as the function would, complete it."""
    queue = webhook_queue(kit)
    deadline = time.monotonic() + timeout
    while True:
        got = list(queue.receive_messages(max_messages=1, visibility_timeout=30))
        if got:
            break
        if time.monotonic() > deadline:
            raise AssertionError("no webhook delivery became visible")
        time.sleep(0.1)
    outcome = kit.services.webhooks.deliver(got[0].content)
    queue.delete_message(got[0])
    return outcome


@contextmanager
def webhook_listener(kit, app_functions):
    """deliver_webhook run by devhost on WEBHOOK_QUEUE, with host.json's encoding (none)."""
    options = QueueOptions(4, 2, 0.2, 1.0, 5, "none")
    listener = QueueListener(function_spec(app_functions, "deliver_webhook"), options, dict(kit.mb.env))
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


def test_an_outcome_event_arrives_signed_and_verifies_under_either_secret_during_a_rotation(
    send_kit, webhook_receiver, app_functions
):
    old, new = new_secret(), new_secret()
    kit = hook_kit(send_kit, webhook_receiver, [old, new])
    with StorageRequests(kit.mb.env["AzureWebJobsStorage"]) as storage:
        msg = send_one(kit)
    # Both the event and its webhook leave through the host's output bindings: the function writes no queue message.
    assert storage.function > 0 and "POST messages" not in storage.function_by_target, storage.function_by_target
    (event,) = kit.events_for(msg["id"])
    with webhook_listener(kit, app_functions):
        (hit,) = webhook_receiver.wait_for(1)
    assert hit.path == "/hooks/mailbridge?token=receiver-path-token"
    assert hit.headers["content-type"].startswith("application/cloudevents+json")
    for secret in (old, new):  # the receiver may hold either secret while it rotates
        assert Webhook(secret).verify(hit.body, hit.headers) == event
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(hit.body, hit.headers)
    assert hit.headers["webhook-id"] == event["id"]  # stable: receivers dedupe on it
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    tampered = hit.body.replace(b'"sent"', b'"failed"')
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(tampered, hit.headers)


def test_a_failed_attempt_comes_back_later_with_backoff_and_the_same_webhook_id(send_kit, webhook_receiver):
    """A 500, then an answer slower than the attempt's deadline, then a 200: three attempts, one webhook-id, each
    signature valid for its own timestamp; between attempts the delivery waits invisible on the queue."""
    secret = new_secret()
    kit = hook_kit(send_kit, webhook_receiver, [secret])
    kit.services.webhooks.policy = RetryPolicy(max_attempts=5, first_delay_s=2.0)
    webhook_receiver.script = [500, ("sleep", 4.0), 200]
    send_one(kit)
    first = attempt_next(kit)
    assert (first.result, first.attempt, first.detail) == ("retry", 1, "HTTP 500")
    queue = webhook_queue(kit)
    assert queue.get_queue_properties().approximate_message_count == 1
    assert list(queue.peek_messages()) == [], "the next attempt waits (visibility timeout), not at once"
    second = attempt_next(kit)
    assert (second.result, second.attempt, second.detail) == ("retry", 2, "timeout")
    third = attempt_next(kit)
    assert (third.result, third.attempt) == ("delivered", 3)
    hits = webhook_receiver.wait_for(3)
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    assert len({h.body for h in hits}) == 1
    for hit in hits:
        Webhook(secret).verify(hit.body, hit.headers)


def test_after_the_last_attempt_the_delivery_is_recorded_on_the_poison_queue_and_mail_was_never_held(
    send_kit, webhook_receiver, caplog
):
    kit = hook_kit(send_kit, webhook_receiver, [new_secret()])
    kit.services.webhooks.policy = RetryPolicy(max_attempts=2, first_delay_s=1.0)
    webhook_receiver.script = [503]
    msg = send_one(kit)  # sent, its event on the events queue, before any webhook attempt
    assert kit.events_for(msg["id"])
    with caplog.at_level(logging.INFO):
        assert attempt_next(kit).result == "retry"
        last = attempt_next(kit)
    assert (last.result, last.attempt) == ("failed", 2)
    poison = kit.services.storage.queue(kit.mb.env["WEBHOOK_QUEUE"] + "-poison")
    (record,) = [json.loads(m.content) for m in poison.receive_messages()]
    assert record["reason"] == "HTTP 503" and record["attempts"] == 2
    assert json.loads(record["body"])["data"]["message_id"] == msg["id"]
    assert webhook_queue(kit).get_queue_properties().approximate_message_count == 0
    assert any(r.levelno == logging.ERROR and "failed 2 times" in r.getMessage() for r in caplog.records)


def test_a_receivers_retry_after_sets_the_next_attempt_and_410_gone_stops_the_retries(send_kit, webhook_receiver):
    """A 429 or 503 with Retry-After: the next attempt comes when the receiver asked (seconds or an HTTP-date; RFC
    9110 10.2.3), not on our backoff; 410 Gone (RFC 9110 15.5.11: "likely to be permanent") ends the delivery at
    once, on the poison queue, instead of nine more attempts over 4.5 hours (Kit and others stop on 410 too)."""
    kit = hook_kit(send_kit, webhook_receiver, [new_secret()])
    kit.services.webhooks.policy = RetryPolicy(max_attempts=5, first_delay_s=600.0)  # our own delay: 8-10 minutes
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    webhook_receiver.script = [("retry_after", 429, 2), ("retry_after", 503, later), 410]
    msg = send_one(kit)
    first = attempt_next(kit)
    assert (first.result, first.delay) == ("retry", 2)
    second = attempt_next(kit, timeout=15)  # visible after ~2 s, not 10 minutes
    assert second.result == "retry" and 1 <= second.delay <= 4, second
    third = attempt_next(kit, timeout=15)
    assert (third.result, third.attempt, third.detail) == ("failed", 3, "HTTP 410")
    assert webhook_queue(kit).get_queue_properties().approximate_message_count == 0, "no fourth attempt"
    poison = kit.services.storage.queue(kit.mb.env["WEBHOOK_QUEUE"] + "-poison")
    (record,) = [json.loads(m.content) for m in poison.receive_messages()]
    assert record["reason"] == "HTTP 410" and json.loads(record["body"])["data"]["message_id"] == msg["id"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None), ("²", None)],
)
def test_retry_after_values(value, expected):
    assert parse_retry_after(value) == expected


def test_a_retry_after_date_in_the_past_means_now():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert 59 <= parse_retry_after(format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)) <= 60


def test_redirects_are_not_followed(send_kit, webhook_receiver):
    kit = hook_kit(send_kit, webhook_receiver, [new_secret()])
    webhook_receiver.script = [("redirect",)]
    send_one(kit)
    outcome = attempt_next(kit)
    assert (outcome.result, outcome.detail) == ("retry", "HTTP 302")
    assert [h.path.split("?")[0] for h in webhook_receiver.received] == ["/hooks/mailbridge"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.9/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:0:a9fe:a9fe]/hook",
        "https://[64:ff9b:1::a9fe:a9fe]/hook",
        "https://[fd00::1]/hook",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://localhost/hook",
        "http://hooks.example.com/hook",
    ],
)
def test_private_targets_and_http_are_refused_without_the_local_development_setting(url):
    env = {**BASE, "WEBHOOK_URL": url, "WEBHOOK_SECRET": new_secret()}
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.setting == "WEBHOOK_URL"
    assert load_settings({**env, "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}).webhook_url == url


def test_a_host_name_resolving_to_loopback_is_refused_at_delivery_and_never_contacted(send_kit, webhook_receiver):
    names = loopback_names()
    if not names:
        pytest.skip("no host name here resolves only to loopback or private addresses")
    url = f"https://{names[0]}:{webhook_receiver.port}/hook"
    kit = send_kit(WEBHOOK_URL=url, WEBHOOK_SECRET=new_secret(), MAILBRIDGE_CA_BUNDLE=str(webhook_receiver.ca_bundle))
    send_one(kit)
    outcome = attempt_next(kit)
    assert (outcome.result, outcome.detail) == ("failed", "target_refused")  # permanent: not retried
    assert webhook_receiver.received == []
    poison = kit.services.storage.queue(kit.mb.env["WEBHOOK_QUEUE"] + "-poison")
    assert [json.loads(m.content)["reason"] for m in poison.receive_messages()] == ["target_refused"]


def _resolver(monkeypatch, *answers: list[str]):
    """getaddrinfo answering ``answers`` in turn (the last repeats): a DNS server that rebinds between lookups."""
    calls = []
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if is_ip_literal(str(host)):
            return real(host, port, *args, **kwargs)  # an address looks up nothing (urllib3 connecting to it)
        calls.append(host)
        addresses = answers[min(len(calls), len(answers)) - 1]
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(family[6 if ":" in a else 4], socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(webhook_http.socket, "getaddrinfo", fake)
    return calls


LIMITS = AttemptLimits(connect_timeout_s=1.0, total_timeout_s=2.0)


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use prefix (RFC 8215): wherever the local translator maps it
        "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT, RFC 2765): 169.254.169.254
        "::7f00:1",  # IPv4-compatible (::127.0.0.1, RFC 4291)
        "fec0::1",  # site-local (deprecated, still routed inside some networks)
    ],
)
def test_ipv6_forms_of_internal_addresses_are_refused_at_delivery(monkeypatch, address):
    _resolver(monkeypatch, [address])
    with pytest.raises(TargetRefused):
        post("https://hooks.example.com/", b"{}", {}, allow_private=False, ca_bundle=None, limits=LIMITS)


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0xa9.0xfe.0xa9.0xfe"])
def test_decimal_octal_and_hex_ipv4_hosts_are_refused_at_delivery(host):
    # Not IP literals to ipaddress (so WEBHOOK_URL takes them at start), but the resolver reads them as
    # inet_aton does: the address it gives is what is checked.
    with pytest.raises(TargetRefused):
        post(f"https://{host}/hook", b"{}", {}, allow_private=False, ca_bundle=None, limits=LIMITS)


def test_every_resolved_address_must_be_public(monkeypatch):
    _resolver(monkeypatch, ["93.184.215.14", "127.0.0.1"])
    with pytest.raises(TargetRefused):
        post("https://hooks.example.com/", b"{}", {}, allow_private=False, ca_bundle=None, limits=LIMITS)
    _resolver(monkeypatch, ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "fe80::1"])
    with pytest.raises(TargetRefused):
        post("https://hooks.example.com/", b"{}", {}, allow_private=False, ca_bundle=None, limits=LIMITS)


def test_the_connection_goes_to_the_checked_address_so_dns_rebinding_cannot_redirect_it(monkeypatch, webhook_receiver):
    """The name resolves to a public address when checked, then to 127.0.0.1 (where the receiver listens): the
    attempt resolves once and connects to the address it checked; nothing reaches the loopback receiver."""
    calls = _resolver(monkeypatch, ["93.184.215.14"], ["127.0.0.1"])
    url = f"https://rebind.test:{webhook_receiver.port}/hook"
    result = post(url, b"{}", {}, allow_private=False, ca_bundle=str(webhook_receiver.ca_bundle), limits=LIMITS)
    assert not result.delivered and calls == ["rebind.test"]
    assert webhook_receiver.received == []


def test_a_pinned_connection_still_checks_the_certificate_against_the_host_name(monkeypatch, webhook_receiver):
    _resolver(monkeypatch, ["127.0.0.1"])
    bundle = str(webhook_receiver.ca_bundle)
    ok = post(
        f"https://rebind.test:{webhook_receiver.port}/hook",
        b"{}",
        {},
        allow_private=True,
        ca_bundle=bundle,
        limits=LIMITS,
    )
    assert ok.delivered
    assert webhook_receiver.received[-1].headers["host"] == f"rebind.test:{webhook_receiver.port}"
    wrong = post(
        f"https://other.test:{webhook_receiver.port}/hook",
        b"{}",
        {},
        allow_private=True,
        ca_bundle=bundle,
        limits=LIMITS,
    )
    assert (wrong.status, wrong.error) == (None, "tls")
    assert len(webhook_receiver.received) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (("trickle", 40, 0.1), (None, "timeout")),  # headers a byte at a time: each read is quick, the whole is not
        (("headers", 500), (None, "bad_response")),  # an endless header block: http.client stops at 100 lines
        (("huge", 64), (200, None)),  # a 2xx with 64 MB: the status counts, the body is never read
    ],
)
def test_slow_and_oversized_responses_are_bounded(webhook_receiver, answer, expected):
    webhook_receiver.script = [answer]
    result = post(
        webhook_receiver.url,
        b"{}",
        {},
        allow_private=True,
        ca_bundle=str(webhook_receiver.ca_bundle),
        limits=AttemptLimits(connect_timeout_s=2.0, total_timeout_s=1.5),
    )
    assert (result.status, result.error) == expected
    if answer[0] == "huge":
        webhook_receiver_wait = time.monotonic() + 10
        while not webhook_receiver.aborted and time.monotonic() < webhook_receiver_wait:
            time.sleep(0.05)
        assert webhook_receiver.aborted, "the client hung up before the body ended"


def test_webhook_logs_hold_no_secret_signature_or_receiver_path(send_kit, webhook_receiver, app_functions, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3 and azure-core included
    secrets = [new_secret(), new_secret()]
    kit = hook_kit(send_kit, webhook_receiver, secrets)
    kit.services.webhooks.policy = RetryPolicy(max_attempts=3, first_delay_s=1.0)
    webhook_receiver.script = [500, 200]
    send_one(kit)
    with webhook_listener(kit, app_functions):
        hits = webhook_receiver.wait_for(2)
        kit.wait_until(lambda: any("delivered" in r.getMessage() for r in caplog.records))
    forbidden = {"receiver path token": "receiver-path-token"}
    for i, secret in enumerate(secrets):
        forbidden[f"secret {i}"] = secret
        forbidden[f"secret {i} key"] = secret.removeprefix("whsec_")
    for hit in hits:
        for j, signature in enumerate(hit.headers["webhook-signature"].split(" ")):
            forbidden[f"signature {j}"] = signature.removeprefix("v1,")
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert any(r.name == "shared.base.webhooks" for r in caplog.records)  # the capture saw the webhook lines
    leaked = [name for name, value in forbidden.items() if value in text]
    assert not leaked, leaked


def test_webhook_settings_are_validated():
    url = "https://hooks.example.com/mailbridge"
    good = load_settings({**BASE, "WEBHOOK_URL": url, "WEBHOOK_SECRET": f"{new_secret()}  {new_secret()}"})
    assert good.webhooks_enabled and len(good.webhook_secrets) == 2 and not good.webhook_allow_private_targets
    assert good.webhook_queue == "webhook-deliveries" and good.webhook_poison_queue == "webhook-deliveries-poison"
    assert "whsec_" not in repr(good)
    off = load_settings({**BASE, "WEBHOOK_SECRET": "not-even-checked-when-off"})
    assert not off.webhooks_enabled and off.webhook_secrets == ()
    short = "whsec_" + base64.b64encode(b"k" * 8).decode()
    for secret in ("", "plain-secret", "whsec_!!!not-base64!!!", short, " ".join(new_secret() for _ in range(3))):
        with pytest.raises(SettingsError) as info:
            load_settings({**BASE, "WEBHOOK_URL": url, "WEBHOOK_SECRET": secret})
        assert info.value.setting == "WEBHOOK_SECRET"
        assert not secret or secret not in str(info.value), "the error repeats no secret"
    for bad in ("https://user:pw@hooks.example.com/", "https://hooks.example.com/#frag", "ftp://hooks.example.com/"):
        with pytest.raises(SettingsError) as info:
            load_settings({**BASE, "WEBHOOK_URL": bad, "WEBHOOK_SECRET": new_secret()})
        assert info.value.setting == "WEBHOOK_URL"
    for name, value in (("WEBHOOK_QUEUE", "Bad_Queue"), ("WEBHOOK_QUEUE", "mail-events")):
        with pytest.raises(SettingsError) as info:
            load_settings({**BASE, name: value})
        assert info.value.setting == name


def test_the_openapi_document_describes_the_webhook_as_sent():
    """docs/openapi.yaml's x-webhooks names the headers Mailbridge sends and the event types it publishes."""
    import datetime
    import re
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml").read_text())
    operation = spec["x-webhooks"]["mailbridgeEvent"]["post"]
    documented = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    now = datetime.datetime.now(datetime.UTC)
    assert documented == set(WebhookSigner((new_secret(),)).headers("id-1", now, "{}"))
    assert "application/cloudevents+json" in operation["requestBody"]["content"]
    assert CONTENT_TYPE.startswith("application/cloudevents+json")
    signature = next(p for p in operation["parameters"] if p["name"] == "webhook-signature")
    signed = WebhookSigner((new_secret(), new_secret())).headers("id-1", now, "{}")["webhook-signature"]
    assert re.fullmatch(signature["schema"]["pattern"], signed)
