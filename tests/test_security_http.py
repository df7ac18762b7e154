"""HTTP hardening of issue 23, through the registered functions: JSON nesting and body size are refused
before parsing (never a 500, no memory blow-up), and the sample page's anonymous helpers answer only
their own page (Host, Origin, Content-Type)."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from shared.base.json_limits import MAX_DEPTH

LOCAL = "http://127.0.0.1:7071"
PAGE_HEADERS = {"host": "127.0.0.1:7071", "origin": LOCAL, "content-type": "application/json"}

# Every function that reads a JSON body (name, method, route params).
JSON_ROUTES = [
    ("create_connection_link", "POST", {}),
    ("claim_connection", "POST", {}),
    ("update_connection", "PATCH", {"connection_id": "c-1"}),
    ("enqueue_message", "POST", {}),
    ("sample_ui_connect_link", "POST", {}),
    ("sample_ui_claim", "POST", {}),
]


def nested(levels: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * levels + inner + b"}" * levels


@pytest.mark.parametrize(("name", "method", "route"), JSON_ROUTES, ids=[r[0] for r in JSON_ROUTES])
def test_deeply_nested_json_is_a_400_invalid_json_everywhere(mailbridge, name, method, route):
    mb = mailbridge(ENABLE_SAMPLE_UI="true", PUBLIC_BASE_URL=LOCAL, ALLOWED_RETURN_ORIGINS=LOCAL)
    for body in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000, nested(MAX_DEPTH + 1)):
        resp = mb.http(name, method, body=body, route_params=route, headers=PAGE_HEADERS)
        assert resp.status_code == 400, (name, resp.status_code, resp.get_body()[:200])
        assert mb.json(resp)["error"]["code"] == "invalid_json", mb.json(resp)
    # At the limit the body is parsed and judged on its content, as before.
    resp = mb.http(name, method, body=nested(MAX_DEPTH), route_params=route, headers=PAGE_HEADERS)
    assert resp.status_code in (400, 404) and mb.json(resp)["error"]["code"] != "invalid_json", resp.get_body()
    # Brackets inside strings are text, not nesting.
    text = json.dumps({"user_ref": "[" * 10_000, "return_url": LOCAL + "/x"}).encode()
    resp = mb.http(name, method, body=text, route_params=route, headers=PAGE_HEADERS)
    assert mb.json(resp).get("error", {}).get("code") != "invalid_json", resp.get_body()


def peak_allocation(call) -> tuple[object, int]:
    """(result, bytes allocated at the peak of ``call`` above what was allocated before it)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_message_over_max_message_bytes_is_refused_at_a_small_multiple_of_its_size(mailbridge):
    """A text body over MAX_MESSAGE_BYTES (but under the raw cap, which allows for base64) is refused before
    the Graph request bodies are built to be measured: 3.1 x its size before the fix, ~2 x after (the
    parser's text and the parsed value)."""
    mb = mailbridge(MAX_MESSAGE_BYTES=str(8 * 1024 * 1024))
    cid = mb.connect("alice", user_ref="mem")["connection_id"]
    msg = {"id": "m-big", "connection_id": cid, "to": ["a@example.com"], "subject": "Big"}
    raw = json.dumps({**msg, "body": {"content_type": "text", "content": "x" * (10 * 1024 * 1024)}}).encode()
    resp, peak = peak_allocation(lambda: mb.http("enqueue_message", "POST", body=raw))
    assert (resp.status_code, mb.json(resp)["error"]["code"]) == (413, "message_too_large")
    assert peak <= 2.5 * len(raw), peak / len(raw)


def test_a_body_over_the_cap_is_refused_before_decoding(mailbridge):
    """Over the route's cap: refused on the declared Content-Length, or on the length, without decoding."""
    mb = mailbridge()
    huge = b'{"user_ref": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp, peak = peak_allocation(lambda: mb.http("create_connection_link", "POST", body=huge))
    assert (resp.status_code, mb.json(resp)["error"]["code"]) == (400, "invalid_request")
    assert peak < len(huge) // 10, peak
    # A request declaring more than the cap is refused before its body is looked at.
    small = json.dumps({"user_ref": "u", "return_url": "https://saas.example/back"}).encode()
    resp = mb.http("create_connection_link", "POST", body=small, headers={"content-length": str(2 * 1024 * 1024)})
    assert (resp.status_code, mb.json(resp)["error"]["code"]) == (400, "invalid_request")
    assert "too large" in mb.json(resp)["error"]["message"]


# --- the sample page's anonymous helpers -----------------------------------------------------------------

UI_ROUTES = [
    ("sample_ui_page", "GET", {}, None),
    ("sample_ui_config", "GET", {}, None),
    ("sample_ui_connection_status", "GET", {"connection_id": "c-1"}, None),
    ("sample_ui_messages", "GET", {"connection_id": "c-1"}, None),
    ("sample_ui_connect_link", "POST", {}, {"user_ref": "u-1"}),
    ("sample_ui_claim", "POST", {}, {"result": "x.y", "user_ref": "u-1"}),
    ("sample_ui_send_test", "POST", {"connection_id": "c-1"}, {}),
    ("sample_ui_disconnect", "DELETE", {"connection_id": "c-1"}, None),
]


@pytest.fixture
def local_ui(mailbridge):
    return mailbridge(ENABLE_SAMPLE_UI="true", PUBLIC_BASE_URL=LOCAL, ALLOWED_RETURN_ORIGINS=LOCAL)


@pytest.mark.parametrize(("name", "method", "route", "body"), UI_ROUTES, ids=[r[0] for r in UI_ROUTES])
def test_sample_ui_answers_only_on_its_own_host(local_ui, name, method, route, body):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 reaches the port with its own Host."""
    mb = local_ui
    ok = mb.http(name, method, route_params=route, body=body, headers=PAGE_HEADERS)
    assert ok.status_code != 403, ok.get_body()
    for host in ("evil.example:7071", "127.0.0.1:7072", "localhost:7071", "127.0.0.1", "127.0.0.1:7071@evil", ""):
        resp = mb.http(name, method, route_params=route, body=body, headers={**PAGE_HEADERS, "host": host})
        assert (resp.status_code, mb.json(resp)["error"]["code"]) == (403, "host_not_allowed"), (host, resp.get_body())


CHANGES = [r for r in UI_ROUTES if r[1] != "GET"]


@pytest.mark.parametrize(("name", "method", "route", "body"), CHANGES, ids=[r[0] for r in CHANGES])
def test_sample_ui_changes_come_only_from_the_page_itself(local_ui, name, method, route, body):
    """A cross-site POST (form or fetch, text/plain) sent a test mail: Origin and Content-Type now decide."""
    mb = local_ui
    for origin in (
        None,
        "null",
        "https://evil.example",
        "http://127.0.0.1:7072",
        "http://localhost:7071",
        LOCAL + "/x",
    ):
        headers = {k: v for k, v in PAGE_HEADERS.items() if k != "origin"}
        if origin is not None:
            headers["origin"] = origin
        resp = mb.http(name, method, route_params=route, body=body, headers=headers)
        assert (resp.status_code, mb.json(resp)["error"]["code"]) == (403, "origin_not_allowed"), origin
    if method != "POST":
        return
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        headers = {**PAGE_HEADERS, "content-type": content_type}
        resp = mb.http(name, method, route_params=route, body=body, headers=headers)
        assert (resp.status_code, mb.json(resp)["error"]["code"]) == (400, "json_required"), content_type
    headers = {**PAGE_HEADERS, "content-type": "Application/JSON; charset=utf-8"}
    resp = mb.http(name, method, route_params=route, body=body, headers=headers)
    assert resp.status_code == 404 or mb.json(resp).get("error", {}).get("code") != "json_required", resp.get_body()
