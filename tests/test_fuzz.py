"""Property-based fuzzing of hostile input: queue messages and every HTTP route (hypothesis).

Properties: parsing a queue message either yields a valid message or raises an ``InvalidMessage``
with a stable code; the sender answers every malformed message with a ``rejected`` outcome carrying a
stable code (real Azurite delivery records); no HTTP route answers 500 or logs an unhandled exception,
and every JSON 4xx body carries a stable ``error.code``.

The suite runs a short mode (``MAILBRIDGE_FUZZ_EXAMPLES``, default 60 per property);
``python -m bench.fuzz`` runs the same properties with >= 10,000 examples each.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.base import errors
from shared.base.json_limits import decode_payload
from shared.send.mail import SendMessage, parse_message

EXAMPLES = int(os.environ.get("MAILBRIDGE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize="MAILBRIDGE_FUZZ_SEED" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# Pure functions are cheap: more examples there.
FUZZ_PURE = settings(FUZZ, max_examples=EXAMPLES * 4)
# pyproject's 300 s per-test timeout fits the short mode; 10,000 examples of the sender property take ~8 minutes,
# which that timeout used to cut short (a "failure" of the long run that no example reproduced).
pytestmark = pytest.mark.timeout(max(300, EXAMPLES // 4))
# Examples each property really ran, by pytest test id (python -m bench.fuzz reports them).
EXAMPLES_RUN: Counter[str] = Counter()


def count_example() -> None:
    EXAMPLES_RUN[os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]] += 1


def stable_codes() -> set[str]:
    """Every code of the exception tree except internal_error (which means: our bug)."""
    found: set[str] = set()
    todo = [errors.MailbridgeError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo.extend(cls.__subclasses__())
    found.discard("internal_error")
    return found


STABLE_CODES = stable_codes()
REJECTION_CODES = {
    c for c in STABLE_CODES if c.startswith("invalid") or c in {"header_injection", "too_many_recipients"}
} | {"unknown_connection", "send_as_not_enabled", "message_too_large", "attachments_too_large"}

# --- strategies -------------------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(
    ["", " ", "\r\n", "a\rb", "x\ny", "\x00", "é", "\ud7ff", "💌", "a" * 1000, "<script>", "../..", "%0d%0a", "null"]
)
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(
    SCALARS, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(TEXT, c, max_size=4)), max_leaves=12
)
FIELDS = list(SendMessage.model_json_schema(by_alias=True)["properties"])
DROP = object()


def base_message(connection_id: str = "c-fuzz") -> dict[str, Any]:
    return {
        "id": f"m-{uuid.uuid4().hex[:12]}",
        "connection_id": connection_id,
        "to": [{"address": "someone@example.com", "name": "Someone"}],
        "subject": "Hello",
        "body": {"content_type": "text", "content": "Plain body"},
    }


ADDRESS = st.one_of(
    st.emails().map(str),
    TEXT,
    st.fixed_dictionaries({"address": st.one_of(st.emails().map(str), TEXT)}, optional={"name": TEXT}),
    JSON,
)
QUEUE_NAMES = ["cb--evil", "mb-callback", "-ab", "ab-", "Ab1", "ab", "a" * 64]
FIELD_VALUES = {
    "to": st.lists(ADDRESS, max_size=3) | st.just(["a@example.com"] * 501),
    "cc": st.lists(ADDRESS, max_size=3),
    "bcc": st.lists(ADDRESS, max_size=3),
    "subject": TEXT,
    "headers": st.dictionaries(st.one_of(st.just("x-ok"), st.just("X-Mailbridge-id"), TEXT), TEXT, max_size=3),
    "attachments": st.lists(
        st.fixed_dictionaries(
            {"name": TEXT},
            optional={
                "content_base64": st.one_of(TEXT, st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())),
                "blob": TEXT,
                "content_type": TEXT,
            },
        ),
        max_size=2,
    ),
    "body": st.fixed_dictionaries({}, optional={"content_type": TEXT, "content": TEXT, "blob": TEXT, "size": JSON}),
    "from": ADDRESS,
    # Callback queue names, valid and not (Storage refuses "--", upper case, edge hyphens, < 3 characters).
    "callback": st.one_of(
        JSON,
        st.fixed_dictionaries({"queue": st.one_of(TEXT, st.sampled_from(QUEUE_NAMES))}),
    ),
}


@st.composite
def near_valid_messages(draw: st.DrawFn, connection_id: str = "c-fuzz") -> dict[str, Any]:
    """A valid message with a few fields dropped, replaced by hostile values, or added."""
    message = base_message(connection_id)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.sampled_from(FIELDS), TEXT))
        value = draw(st.one_of(st.just(DROP), FIELD_VALUES.get(key, JSON)))
        if value is DROP:
            message.pop(key, None)
        else:
            message[key] = value
    return message


@st.composite
def queue_payloads(draw: st.DrawFn, connection_id: str = "c-fuzz") -> bytes:
    """Bytes as they can arrive on the queue: noise, JSON of any shape, near-valid messages, base64, truncation."""
    kind = draw(st.sampled_from(["bytes", "json", "near", "near_b64", "truncated", "flipped"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    text = json.dumps(draw(near_valid_messages(connection_id))).encode()
    if kind == "near_b64":
        return base64.b64encode(text)
    if kind == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "flipped":
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + bytes([draw(st.integers(0, 255))]) + text[i + 1 :]
    return text


# --- queue message path -------------------------------------------------------------------------------------


@FUZZ_PURE
@given(queue_payloads())
def test_parsing_accepts_or_rejects_with_a_stable_code(raw):
    count_example()
    try:
        msg = parse_message(decode_payload(raw))
    except errors.InvalidMessage as exc:
        assert exc.code in REJECTION_CODES, exc.code
        assert exc.to_dict()["message"]
    else:
        assert msg.recipient_count() >= 1
        assert parse_message(json.loads(msg.to_queue_json())).fingerprint() == msg.fingerprint()


class ErrorLog(logging.Handler):
    """Collects ERROR records (logger.exception = an unhandled error) while a block runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def error_log() -> Iterator[ErrorLog]:
    count_example()  # every example of the app properties runs inside one error_log()
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def test_sender_rejects_malformed_queue_messages_with_stable_codes(mailbridge):
    mb = mailbridge()
    sender = mb.services.sender
    cid = f"c{uuid.uuid4().hex[:10]}"
    rejected: set[tuple[str, str]] = set()
    # The same id twice: the second copy is a duplicate of the first one's rejection (idempotency by id).
    again = json.dumps({**base_message(cid), "id": "0"}).encode()

    @FUZZ
    @given(queue_payloads(connection_id=cid))
    @example(again)
    @example(again)
    def run(raw: bytes) -> None:
        with error_log() as log:
            outcome = sender.process(raw, f"q-{uuid.uuid4().hex[:8]}")
        assert not log.records, [r.getMessage() for r in log.records]
        key = (outcome.connection_id, outcome.message_id)
        record = mb.services.deliveries.get(*key)
        assert record is not None and record.status == "rejected", (outcome, record)
        if outcome.status == "duplicate":  # an id an earlier example already had rejected
            assert key in rejected, outcome
            return
        # The connection does not exist, so even a valid message must end rejected (unknown_connection).
        assert outcome.status == "rejected", outcome
        assert outcome.error is not None and outcome.error.code in REJECTION_CODES, outcome.error
        rejected.add(key)

    run()


def test_a_rejected_message_with_an_invalid_callback_queue_name_is_a_clean_rejection(mailbridge):
    """Regression: a message rejected before validation kept its callback.queue if it merely matched
    [a-z0-9][a-z0-9-]{1,61}[a-z0-9]; "cb--evil" (Storage refuses "--") made the event publisher create
    that queue, Storage answered 400 InvalidResourceName and sender.process raised (the queue message
    went to the poison queue after the host's retries)."""
    mb = mailbridge()
    for queue in ("cb--evil", "ab", "Ab1"):
        raw = json.dumps({"id": f"m-{queue}", "connection_id": "c-x", "to": 7, "callback": {"queue": queue}})
        with error_log() as log:
            outcome = mb.services.sender.process(raw.encode(), "q-1")
        assert not log.records, [r.getMessage() for r in log.records]
        assert (outcome.status, outcome.error.code) == ("rejected", "invalid_message"), outcome
        record = mb.services.deliveries.get("c-x", f"m-{queue}")
        assert record is not None and record.status == "rejected" and record.event_emitted


# --- HTTP routes --------------------------------------------------------------------------------------------

PARAMS = st.dictionaries(
    st.one_of(
        st.sampled_from(
            [
                "user_ref",
                "connection_id",
                "ticket",
                "state",
                "code",
                "error",
                "tenant",
                "return_url",
                "admin_consent",
                "error_description",
            ]
        ),
        TEXT,
    ),
    TEXT,
    max_size=4,
)
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=100),
    JSON,
    st.fixed_dictionaries(
        {"user_ref": TEXT, "return_url": st.one_of(st.just("https://saas.example/back"), TEXT)},
        optional={"login_hint": JSON, "domain_hint": JSON, "prompt": JSON, "connection_id": JSON},
    ),
    near_valid_messages(),
)
ROUTES = [
    ("health", "GET", []),
    ("create_connection_link", "POST", []),
    ("claim_connection", "POST", []),
    ("list_connections", "GET", []),
    ("get_connection", "GET", ["connection_id"]),
    ("delete_connection", "DELETE", ["connection_id"]),
    ("update_connection", "PATCH", ["connection_id"]),
    ("send_test_message", "POST", ["connection_id"]),
    ("enqueue_message", "POST", []),
    ("list_messages", "GET", []),
    ("get_message", "GET", ["message_id"]),
    ("cancel_message", "DELETE", ["message_id"]),
    ("connect_start", "GET", []),
    ("connect_callback", "GET", []),
    ("admin_consent", "GET", []),
    ("admin_consent_callback", "GET", []),
]


def check_answer(name: str, resp, log: ErrorLog) -> None:
    assert resp.status_code != 500, (name, resp.get_body()[:300])
    assert not log.records, (name, [r.getMessage() for r in log.records])
    if 400 <= resp.status_code < 600 and resp.mimetype == "application/json":
        body = json.loads(resp.get_body())
        if name != "send_test_message":  # a failed test send answers with its delivery record
            assert body["error"]["code"] in STABLE_CODES, (name, body)


def test_route_table_covers_every_http_function(app_functions):
    http = {n for n, fn in app_functions.items() if '"httpTrigger"' in fn.get_function_json()}
    assert {r[0] for r in ROUTES} == {n for n in http if not n.startswith("sample_ui")}


@pytest.mark.parametrize(("name", "method", "route_keys"), ROUTES, ids=[r[0] for r in ROUTES])
def test_http_route_never_answers_500(mailbridge, name, method, route_keys):
    mb = mailbridge()
    real_ticket = mb.connect_link("fuzz-user")

    @FUZZ
    @given(
        params=PARAMS,
        body=BODIES,
        route=st.lists(st.one_of(TEXT, st.just("nope")), min_size=2, max_size=2),
        tamper=st.integers(0, 400),
    )
    def run(params: dict[str, str], body: Any, route: list[str], tamper: int) -> None:
        if name == "connect_start" and 100 <= tamper < 150:  # a forged "body.signature" ticket
            forged = params.get("ticket", "x")
            params = {**params, "ticket": f"{forged}.{forged[::-1]}"}
        if name == "connect_start" and tamper < 100:  # a real ticket with one character changed
            ticket = real_ticket.split("ticket=", 1)[1]
            i = tamper % len(ticket)
            params = {**params, "ticket": ticket[:i] + ("A" if ticket[i] != "A" else "B") + ticket[i + 1 :]}
        route_params = dict(zip(route_keys, route, strict=False))
        with error_log() as log:
            resp = mb.http(name, method, params=params, body=body, route_params=route_params)
        check_answer(name, resp, log)

    run()


@pytest.mark.parametrize("name", ["enqueue_message", "create_connection_link"])
def test_json_bodies_against_a_connected_mailbox(mailbridge, name):
    """Near-valid messages addressed to a real connection reach past the connection check."""
    mb = mailbridge()
    cid = mb.connect("alice", user_ref="fuzz")["connection_id"]

    @FUZZ
    @given(body=st.one_of(near_valid_messages(cid), BODIES))
    def run(body: Any) -> None:
        with error_log() as log:
            resp = mb.http(name, "POST", body=body)
        check_answer(name, resp, log)
        if name == "enqueue_message" and resp.status_code in (200, 202):
            assert json.loads(resp.get_body())["connection_id"] == cid

    run()


@pytest.mark.parametrize(
    ("name", "method", "route", "params"),
    [
        ("get_connection", "GET", {"connection_id": "a/b"}, {}),
        ("delete_connection", "DELETE", {"connection_id": "a/b"}, {}),
        ("send_test_message", "POST", {"connection_id": "a/b"}, {}),
        ("get_message", "GET", {"message_id": "m-1"}, {"connection_id": "a/b"}),
    ],
    ids=["get_connection", "delete_connection", "send_test_message", "get_message"],
)
def test_table_key_characters_in_ids_are_a_clean_4xx(mailbridge, name, method, route, params):
    """Regression (found by the fuzzing above): an id containing "/" used to reach Azure Tables as a key,
    which refused it, and the app answered 500 after ~5 s of SDK retries."""
    mb = mailbridge()
    resp = mb.http(name, method, params=params, route_params=route)
    assert resp.status_code in (400, 404), resp.get_body()
    assert json.loads(resp.get_body())["error"]["code"] in STABLE_CODES


def test_a_non_string_prompt_is_a_clean_400(mailbridge):
    """Regression (found by the fuzzing above): a JSON object or array as ``prompt`` used to raise
    TypeError (unhashable) and POST /api/connections answered 500."""
    mb = mailbridge()
    for prompt in ({"a": 1}, ["login"]):
        body = {"user_ref": "u", "return_url": "https://saas.example/back", "prompt": prompt}
        resp = mb.http("create_connection_link", "POST", body=body)
        assert resp.status_code == 400, resp.get_body()
        assert json.loads(resp.get_body())["error"]["code"] == "invalid_request"
