"""The connection row has several writers (issue 25): the token refresh under the connection's lease, and the
mailbox-state policy on any instance (ETag-guarded). A refresh must not undo a state recorded while it ran."""

from __future__ import annotations


def _record_state_meanwhile(services, cid: str):
    """Wrap the sealed-cache write (the refresh's last step before it saves the row) so that another instance records
    a mailbox state exactly then."""
    store = services.token_caches
    original = store.write

    def write(name, value, **kw):
        original(name, value, **kw)

        def blocked(row):
            row.mailbox_state, row.mailbox_state_code = "sending_blocked", "ErrorMessageSubmissionBlocked"
            return True

        services.connections.change(cid, blocked)

    store.write = write
    return lambda: setattr(store, "write", original)


def test_a_refresh_keeps_a_mailbox_state_recorded_while_it_ran(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    services = mb.services
    before = services.connections.get(cid)
    undo = _record_state_meanwhile(services, cid)
    try:
        outcome = services.tokens.refresh(services.connections.get(cid), force=True)
    finally:
        undo()
    assert outcome.refreshed and outcome.wrote_cache, outcome
    row = services.connections.get(cid)
    assert row.mailbox_state == "sending_blocked", "the refresh's save erased the state another instance recorded"
    assert row.last_refreshed_at >= before.last_refreshed_at and row.secret_writes == before.secret_writes + 1


def test_a_refresh_without_a_concurrent_writer_saves_in_one_request(mailbridge):
    """The ETag-guarded save costs what the blind one did: no extra read when nobody wrote in between."""
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    services = mb.services
    conn = services.connections.get(cid)
    table = services.connections.table
    calls = {"get_entity": 0}
    original = table.get_entity

    def counting(*a, **kw):
        if (a[0] if a else kw.get("partition_key")) == cid:  # this connection's row, not the health row beside it
            calls["get_entity"] += 1
        return original(*a, **kw)

    table.get_entity = counting
    try:
        services.tokens.refresh(conn, force=True)
    finally:
        table.get_entity = original
    assert calls["get_entity"] == 1, calls  # the read under the lease; no re-read for the save
