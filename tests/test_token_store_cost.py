"""What the sealed token store costs in Key Vault (issue 26 goal 4): no Key Vault write per access-token refresh,
one unwrap per connection per instance (the data key is then cached), wraps done locally with the public key."""

from __future__ import annotations


def _kv(mb) -> dict[str, int]:
    counters = mb.admin.counters("calls.kv.")
    return {k.removeprefix("calls.kv."): v for k, v in counters.items()}


def test_refreshes_write_nothing_to_key_vault_and_unwrap_once_per_instance(mailbridge):
    mb = mailbridge()
    cid = mb.connect("alice")["connection_id"]
    services = mb.services
    services.token_caches.forget_keys()  # a cold instance
    mb.admin.reset_counters()
    key_calls = dict(services.token_key.calls)
    for _ in range(5):
        services.tokens.refresh(services.connections.get(cid), force=True)
    calls = _kv(mb)
    assert not calls.get("setSecret") and not calls.get("createKey"), calls
    assert calls.get("unwrapKey") == 1, calls  # the first refresh of this instance; then the data key is cached
    assert not calls.get("wrapKey"), calls  # a rotated cache is sealed again under the same data key
    assert services.token_key.calls["unwrap"] - key_calls["unwrap"] == 1
    assert services.token_key.calls["wrap"] == key_calls["wrap"]


def test_a_new_connection_wraps_locally_with_the_public_key(mailbridge):
    mb = mailbridge()
    mb.admin.reset_counters()
    mb.connect("alice")
    calls = _kv(mb)
    assert not calls.get("wrapKey") and not calls.get("setSecret"), calls
    assert calls.get("getKey", 0) <= 2, calls  # the public key once per instance (+ the vault's 401 challenge)


def test_the_data_key_cache_holds_token_key_cache_size_keys_then_unwraps_again(mailbridge):
    """TOKEN_KEY_CACHE_SIZE reaches the store: past it the least recently used data key is dropped, and that
    connection's next refresh unwraps in Key Vault again (docs/capacity.md sizes it: each miss is an unwrap)."""
    mb = mailbridge(TOKEN_KEY_CACHE_SIZE="100")
    services = mb.services
    assert services.token_caches.max_keys == 100
    alice = mb.connect("alice")["connection_id"]
    bob = mb.connect("bob", user_ref="user-2")["connection_id"]
    services.token_caches.forget_keys()
    services.token_caches.max_keys = 1  # the setting's floor is 100; one key shows the eviction with two connections
    mb.admin.reset_counters()
    for cid in (alice, alice, bob, alice):
        services.tokens.refresh(services.connections.get(cid), force=True)
    assert _kv(mb).get("unwrapKey") == 3, _kv(mb)  # alice, bob (evicts alice), alice again
