"""Sending under what real Graph refuses (issue 14, items 1-4), with the emulator's strictness on: the
5-header cap, the 3 MB upload-session floor, asynchronous transport, and a 4 MB request limit in bytes."""

from __future__ import annotations

import base64
import json
import os

from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)

MB = 1024 * 1024


def _calls(kit, prefix: str = "calls.graph.") -> dict[str, int]:
    return kit.mb.admin.counters(prefix)


def _delta(kit, before: dict[str, int], name: str) -> int:
    return _calls(kit).get(f"calls.graph.{name}", 0) - before.get(f"calls.graph.{name}", 0)


def _send_one(kit, cid: str, msg: dict, timeout: float = 60.0):
    with kit.listener() as listener:
        kit.put(msg)
        rec = kit.wait_final([(cid, msg["id"])], timeout=timeout)[(cid, msg["id"])]
    assert listener.failed == 0
    return rec


# --- item 1: at most 5 internetMessageHeaders, ours included -------------------------------------------


def test_a_fifth_producer_header_is_refused_at_intake_before_any_graph_call(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    four = {f"x-h{i}": "v" for i in range(4)}
    five = {**four, "x-h4": "v"}
    before = _calls(kit)
    resp = kit.mb.http("enqueue_message", "POST", body=kit.message(cid, headers=five))
    assert resp.status_code == 400 and kit.mb.json(resp)["error"]["code"] == "too_many_headers"
    rec = _send_one(kit, cid, kit.message(cid, headers=five))
    assert rec.status == "rejected" and rec.error_code == "too_many_headers" and rec.error_field == "headers"
    assert _delta(kit, before, "sendMail") == 0, "refused before Graph"
    ok = kit.message(cid, headers=four)
    assert _send_one(kit, cid, ok).status == "sent", "four producer headers + x-mailbridge-id = Graph's five"
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=ok["id"])
    assert len(item["internetMessageHeaders"]) == 5


# --- item 2: upload sessions only for files of 3 MB or more; no orphan drafts ---------------------------


def test_two_files_under_3_mb_that_exceed_one_request_are_posted_one_by_one(send_kit):
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    files = [os.urandom(1_600_000), os.urandom(1_600_000)]
    atts = [{"name": f"f{i}.bin", "content_base64": base64.b64encode(f).decode()} for i, f in enumerate(files)]
    msg = kit.message(cid, attachments=atts)
    assert kit.mb.http("enqueue_message", "POST", body=msg).status_code == 202
    before = _calls(kit)
    with kit.listener() as listener:
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert listener.failed == 0
    assert rec.status == "sent" and rec.mode == "draft", (rec.error_code, rec.error_detail)
    assert _delta(kit, before, "createUploadSession") == 0
    # Together over one 4 MB request: one rides inline in the draft, the other gets its own POST.
    assert _delta(kit, before, "createMessage") == 1 and _delta(kit, before, "addAttachment") == 1
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=msg["id"])
    assert sorted(a["size"] for a in item["attachments"]) == [1_600_000, 1_600_000]
    assert kit.mb.admin.drafts(kit.address("alice"), key=msg["id"]) == []


def test_a_draft_whose_send_fails_for_good_is_deleted(send_kit):
    kit = send_kit(ENABLE_MAIL_READWRITE="true", ENABLE_SHARED_MAILBOXES="true")
    kit.mb.kit.add_user("team", is_shared=True)  # alice has no Send As / on Behalf right on it
    cid = kit.connect("alice")
    big = base64.b64encode(os.urandom(3 * MB)).decode()
    msg = kit.message(cid, attachments=[{"name": "big.bin", "content_base64": big}], **{"from": kit.address("team")})
    assert kit.mb.http("enqueue_message", "POST", body=msg).status_code == 202
    with kit.listener():
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "failed" and rec.error_code == "send_as_denied" and rec.mode == "draft"
    assert kit.mb.admin.drafts(kit.address("alice"), key=msg["id"]) == [], "no orphan draft"


# --- item 3: transport is asynchronous; an item that may be in transit is never sent again -------------


def _draft_kit(send_kit, emulator_admin, *, grace_s: float, transport_s: float):
    """Draft mode, the given grace period and transport delay, and the next /send answering 504 after
    Graph applied it."""
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    kit.services.sender.refusals.transit_grace_s = grace_s
    emulator_admin.graph_limits(transport_delay_s=transport_s)
    kit.mb.admin.add_fault("graph.send", "504_after", count=1)
    return kit, cid


def test_an_ambiguous_draft_send_in_transit_is_not_sent_again(send_kit, emulator_admin):
    kit, cid = _draft_kit(send_kit, emulator_admin, grace_s=30.0, transport_s=3)
    before = _calls(kit)
    msg = kit.message(cid)
    rec = _send_one(kit, cid, msg)
    assert rec.status == "sent" and rec.mode == "draft" and rec.attempts == 1
    assert _delta(kit, before, "send") == 1, "the draft in transit was not sent a second time"
    assert kit.mb.admin.deliveries(key=msg["id"])["count"] == 1


def test_a_draft_send_that_stays_ambiguous_ends_unknown_never_failed_or_resent(send_kit, emulator_admin):
    kit, cid = _draft_kit(send_kit, emulator_admin, grace_s=3.0, transport_s=600)  # transport slower than grace
    before = _calls(kit)
    msg = kit.message(cid)
    rec = _send_one(kit, cid, msg)
    assert rec.status == "unknown" and rec.error_code == "outcome_unknown", (rec.status, rec.error_code)
    assert _delta(kit, before, "send") == 1
    assert kit.mb.admin.drafts(kit.address("alice"), key=msg["id"]), "left alone: it may be in transit"


def test_a_lookup_that_keeps_failing_after_an_ambiguous_send_ends_unknown(send_kit, emulator_admin):
    kit, cid = _draft_kit(send_kit, emulator_admin, grace_s=3.0, transport_s=600)
    kit.mb.admin.add_fault("graph.listMessages", "503", retry_after=1)
    before = _calls(kit)
    rec = _send_one(kit, cid, kit.message(cid))
    assert rec.status == "unknown" and rec.error_code == "outcome_unknown", (rec.status, rec.error_code)
    assert _delta(kit, before, "send") == 1


def test_a_lookup_does_not_mistake_another_id_differing_in_case_for_this_message(send_kit, emulator_admin):
    # Graph matches extended-property values case-insensitively; message ids are case-sensitive.
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    kit.services.sender.refusals.transit_grace_s = 3.0
    first = kit.message(cid, id=f"Case-{os.urandom(4).hex()}")
    assert _send_one(kit, cid, first).status == "sent"
    emulator_admin.graph_limits(transport_delay_s=600)
    kit.mb.admin.add_fault("graph.send", "504_after", count=1)
    rec = _send_one(kit, cid, kit.message(cid, id=first["id"].lower()))
    assert rec.status == "unknown", "the other message's Sent Items copy is not this one"


# --- item 4: the 4 MB request limit counts bytes of the UTF-8 JSON body ---------------------------------


def test_a_non_ascii_body_is_measured_and_sent_as_utf8_bytes(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    text = "é" * 1_000_000  # 2 MB in UTF-8, 6 MB if JSON-escaped as \\u00e9
    msg = kit.message(cid, body={"content_type": "text", "content": text})
    assert kit.mb.http("enqueue_message", "POST", body=msg).status_code == 202
    with kit.listener():
        rec = kit.wait_final([(cid, msg["id"])])[(cid, msg["id"])]
    assert rec.status == "sent", (rec.error_code, rec.error_detail)
    (item,) = kit.mb.admin.sent_items(kit.address("alice"), key=msg["id"])
    assert item["body"]["content"] == text
    too_big = kit.message(cid, body={"content_type": "text", "content": "é" * 2_100_000})  # 4.2 MB of UTF-8
    resp = kit.mb.http("enqueue_message", "POST", body=too_big)
    assert resp.status_code == 413 and kit.mb.json(resp)["error"]["code"] == "message_too_large"


# --- all of it together: a draft-mode soak with transport taking its time -------------------------------


def test_draft_mode_soak_with_a_transport_delay_loses_duplicates_and_misreports_nothing(send_kit, emulator_admin):
    from bench.soak import Plan, run_soak

    plan = Plan(
        messages=24,
        mailboxes=3,
        seed=14,
        timeout_s=120.0,
        expire_tokens_midway=False,
        settle_s=60.0,
        faults=[
            {"endpoint": "graph.send", "kind": "504_after", "rate": 0.15},
            {"endpoint": "graph.send", "kind": "reset", "rate": 0.05},
            {"endpoint": "graph.send", "kind": "503", "rate": 0.10, "retry_after": 1},
            {"endpoint": "graph.createMessage", "kind": "429", "rate": 0.10, "retry_after": 1},
            {"endpoint": "graph.listMessages", "kind": "503", "rate": 0.20, "retry_after": 1},
        ],
    )
    kit = send_kit(ENABLE_MAIL_READWRITE="true", users=tuple(f"d{i}" for i in range(plan.mailboxes)))
    kit.services.sender.refusals.transit_grace_s = 10.0
    emulator_admin.graph_limits(transport_delay_s=2)  # on the emulator clock, which runs with real time
    report = run_soak(kit, plan)
    print(report.summary())
    assert not report.lost and not report.duplicated and not report.misreported, report.summary()
    assert not report.unexplained and report.listener_failures == 0, report.summary()
    assert report.deliveries == report.statuses.get("sent", 0) + report.unknown_delivered
    assert set(report.statuses) <= {"sent", "unknown"}, report.statuses
    assert report.faults_fired.get("graph.send.504_after", 0) > 0, report.faults_fired


def test_a_draft_mode_message_that_runs_out_of_attempts_leaves_no_draft_behind(send_kit):
    """Every /send refused transiently (503) until the attempts run out: the message ends ``failed
    attempts_exhausted`` (nothing was sent), and the complete draft it left in Drafts is deleted with it."""
    kit = send_kit(ENABLE_MAIL_READWRITE="true")
    cid = kit.connect("alice")
    sender = kit.services.sender
    sender.max_reschedules = 2
    kit.mb.admin.add_fault("graph.send", "503", count=100)
    msg = kit.message(cid)
    outcomes = [sender.process(json.dumps(msg), f"q-{i}").status for i in range(3)]
    assert outcomes == ["queued", "queued", "failed"], outcomes
    rec = kit.record(cid, msg["id"])
    assert (rec.status, rec.error_code, rec.mode) == ("failed", "attempts_exhausted", "draft"), rec
    assert kit.mb.admin.deliveries(key=msg["id"])["count"] == 0
    assert kit.mb.admin.drafts(kit.address("alice"), key=msg["id"]) == [], "no orphan draft"
