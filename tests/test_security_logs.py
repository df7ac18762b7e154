"""No token, code, ticket, state or secret in any log line, at any level, of any library."""

from __future__ import annotations

import json
import logging

from tests.fixtures.app import query_of


def test_connect_refresh_and_disconnect_log_no_secrets(mailbridge, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, including msal, urllib3 and azure-core
    mb = mailbridge()
    link = mb.connect_link("log-user")
    ticket = query_of(link)["ticket"]
    start = mb.start(link)
    binding = next(iter(mb.cookies.values()))
    authorize_url = start.headers["Location"]
    redirect = mb.authorize(authorize_url, "alice")
    back = query_of(mb.callback(redirect).headers["Location"])
    result = back["result"]
    mismatch = mb.claim(result, "someone-else")  # a forwarded link's claim: refused, grant discarded
    assert mismatch.status_code == 403
    result_ok = query_of(
        mb.callback(mb.authorize(mb.start(mb.connect_link("log-user")).headers["Location"], "alice")).headers[
            "Location"
        ]
    )["result"]
    cid = mb.json(mb.claim(result_ok, "log-user"))["connection_id"]
    conn = mb.services.connections.get(cid)
    mb.services.tokens.refresh(conn, force=True)
    cache = json.loads(mb.services.token_caches.read(conn.secret_name))
    mb.http("delete_connection", "DELETE", route_params={"connection_id": cid})

    secrets = {
        "ticket": ticket,
        "ticket signature": ticket.split(".")[1],
        "state": query_of(redirect)["state"],
        "code": query_of(redirect)["code"],
        "code_challenge": query_of(authorize_url)["code_challenge"],
        "client secret": mb.env["ENTRA_CLIENT_SECRET"],
        "connect result": result,
        "connect result signature": result.split(".")[1],
        "claimed result": result_ok,
        "binding cookie": binding,
        "ticket key": mb.env["TICKET_SIGNING_KEY"],
    }
    for kind in ("AccessToken", "RefreshToken", "IdToken"):
        for i, entry in enumerate(cache.get(kind, {}).values()):
            secrets[f"{kind} {i}"] = entry["secret"]
    assert len(secrets) >= 10
    # The emulator (Microsoft's side) and the browser stand-in's own request to the sign-in page are not our logs.
    ours = [
        r
        for r in caplog.records
        if not r.name.startswith("emulator") and "/oauth2/v2.0/authorize" not in r.getMessage()
    ]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert any(r.name.startswith("shared.") for r in ours)  # the capture really saw our own logs
    leaked = [name for name, value in secrets.items() if value and value in text]
    assert not leaked, f"leaked into logs: {leaked}"
