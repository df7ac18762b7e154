"""How the emulated Graph reads a `/users/{id | userPrincipalName}` path, over real HTTPS with requests: the
segment is percent-decoded before it names a user, a decoded `/` is a separator as in Graph
(microsoftgraph/microsoft-graph-docs#10167: `%2F` in a segment gives 400 RequestBroker--ParseUri), and a `.` or
`..` segment, literal or encoded, never resolves to another route: it is refused as Graph refuses a segment it
cannot parse."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import requests

from tests import emulator_graph_support as support
from tests.emulator_graph_support import GraphKit, unique

graph_kit = support.graph_kit


def _send(kit: GraphKit, path: str, token: str, key: str, *, raw: bool = False) -> requests.Response:
    """POST a message to `path` as given: with ``raw`` the path goes on the request line untouched (requests
    would otherwise remove dot segments itself, RFC 3986 5.2.4, as any client does)."""
    body = {"message": kit.simple(key)}
    if not raw:
        return kit.call("POST", path, token, json=body)
    prepared = kit.http.prepare_request(
        requests.Request(
            "POST", f"{kit.base}/v1.0/me/sendMail", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    )
    prepared.url = f"{kit.base}{path}"
    return kit.http.send(prepared, timeout=60)


def test_the_user_segment_is_decoded_before_it_names_a_user(graph_kit: GraphKit, emulator_admin) -> None:
    key = unique()
    token = graph_kit.token("alice", "Mail.Send", "Mail.Send.Shared")
    resp = _send(graph_kit, f"/v1.0/users/{quote(graph_kit.addr('team'), safe='')}/sendMail", token, key)
    assert resp.status_code == 202, resp.text
    assert len(emulator_admin.sent_items(graph_kit.addr("team"), key=key)) == 1


@pytest.mark.parametrize(
    ("segment", "raw"),
    [
        ("x/../../beta/me", False),  # an address-like value quoted with safe="" (%2F): decoded, then a separator
        ("%2E%2E", True),  # an encoded dot segment (clients leave it as it is)
        ("%2E%2E/..", True),
        ("x/../../beta/me", True),  # literal dot segments on the request line
    ],
)
def test_a_dot_segment_never_reaches_another_route(graph_kit: GraphKit, emulator_admin, segment, raw) -> None:
    key = unique()
    token = graph_kit.token("alice", "Mail.Send", "Mail.Send.Shared")
    path = f"/v1.0/users/{segment if raw else quote(segment, safe='')}/sendMail"
    resp = _send(graph_kit, path, token, key, raw=raw)
    assert resp.status_code == 400, (path, resp.status_code, resp.text)
    error = resp.json()["error"]
    assert error["code"] == "RequestBroker--ParseUri" and "segment" in error["message"]
    assert resp.headers.get("request-id")
    for user in ("alice", "team"):
        assert emulator_admin.sent_items(graph_kit.addr(user), key=key) == [], user
