"""Key Vault's service limits in the emulator (issue 26, bench B7): off by default, weighted per key type
and operation when on, scaled for benches; 429 Throttled with Retry-After; counters per kind."""

from __future__ import annotations

import pytest

from tests import emulator_keyvault_support as support
from tests.emulator_keyvault_support import b64url, name

vault_caller = support.vault_caller


@pytest.fixture
def app(vault_caller):
    return vault_caller()


def puts(caller, secret: str, n: int) -> list[int]:
    return [caller.call("PUT", f"/secrets/{secret}", {"value": f"v{i}"}).status_code for i in range(n)]


def test_limits_are_off_by_default_even_when_scaled(app, emulator_admin):
    config = emulator_admin.keyvault_config(limits_scale=0.01)
    assert config["limits"] is False
    assert puts(app, name("s"), 8) == [200] * 8  # 300 x 0.01 = 3 creates per 10 s would throttle


def test_secret_create_limit_answers_429_throttled_with_retry_after(app, emulator_admin):
    emulator_admin.keyvault_config(limits=True, limits_scale=0.01)  # CREATE secret: 300 -> 3 per 10 s
    secret = name("s")
    assert puts(app, secret, 4) == [200, 200, 200, 429]
    throttled = app.call("PUT", f"/secrets/{secret}", {"value": "x"})
    assert throttled.status_code == 429
    error = throttled.json()["error"]
    assert error["code"] == "Throttled" and "VaultRequestTypeLimitReached" in error["message"]
    assert 1 <= int(throttled.headers["Retry-After"]) <= 10
    assert app.call("GET", f"/secrets/{secret}").status_code == 200  # reads draw on "all other" (4,000 -> 40)
    emulator_admin.advance_clock(10)
    assert puts(app, secret, 1) == [200]


def test_throttled_calls_do_not_count_towards_the_limit(app, emulator_admin):
    emulator_admin.keyvault_config(limits=True, limits_scale=0.01)
    secret = name("s")
    assert puts(app, secret, 3) == [200] * 3
    emulator_admin.advance_clock(5)
    assert puts(app, secret, 2) == [429, 429]
    emulator_admin.advance_clock(6)  # the first three left the window; the two 429s never entered it
    assert puts(app, secret, 4) == [200, 200, 200, 429]


def test_retry_after_can_be_left_out_as_a_real_429_was_seen(app, emulator_admin):
    emulator_admin.keyvault_config(limits=True, limits_scale=0.01, retry_after=False)
    secret = name("s")
    puts(app, secret, 3)
    throttled = app.call("PUT", f"/secrets/{secret}", {"value": "x"})
    assert throttled.status_code == 429 and "Retry-After" not in throttled.headers


def test_key_transactions_are_weighted_by_key_type_and_enforced_on_their_sum(app, emulator_admin):
    big, small = name("hsm4096"), name("soft2048")
    app.ok("POST", f"/keys/{big}/create", {"kty": "RSA-HSM", "key_size": 4096})
    app.ok("POST", f"/keys/{small}/create", {"kty": "RSA", "key_size": 2048})
    wrapped = {
        k: app.ok("POST", f"/keys/{k}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"dek")})["value"]
        for k in (big, small)
    }
    # x 0.1: RSA 4,096 HSM "all other" 250 -> 25 (1/25 each); RSA 2,048 software 4,000 -> 400 (1/400 each).
    emulator_admin.keyvault_config(limits=True, limits_scale=0.1)

    def unwrap(key: str) -> int:
        return app.call("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped[key]}).status_code

    # Microsoft's example, scaled: 24 RSA 4,096 HSM + 16 RSA 2,048 transactions fill the window (0.96 + 0.04).
    assert [unwrap(big) for _ in range(24)] == [200] * 24
    assert [unwrap(small) for _ in range(16)] == [200] * 16
    assert unwrap(small) == 429 and unwrap(big) == 429
    assert app.call("GET", "/secrets", maxresults="1").status_code == 200  # secrets have their own budget
    stats = emulator_admin.keyvault_stats()
    assert stats["window_usage"]["keys"] == pytest.approx(1.0)
    assert stats["throttled"]["keys"] >= 2
    emulator_admin.advance_clock(10)
    assert unwrap(big) == 200


def test_key_create_limit(app, emulator_admin):
    emulator_admin.keyvault_config(limits=True, limits_scale=0.1)  # software CREATE key: 20 -> 2 per 10 s
    statuses = [app.call("POST", f"/keys/{name()}/create", {"kty": "RSA"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_counters_by_kind_and_throttled_by_budget(app, emulator_admin):
    key, secret = name(), name("s")
    app.ok("POST", f"/keys/{key}/create", {"kty": "RSA"})
    before = emulator_admin.keyvault_stats()
    app.ok("PUT", f"/secrets/{secret}", {"value": "x"})
    app.ok("GET", f"/secrets/{secret}")
    app.ok("GET", f"/secrets/{secret}/versions")
    wrapped = app.ok("POST", f"/keys/{key}/wrapkey", {"alg": "RSA-OAEP", "value": b64url(b"d")})["value"]
    for _ in range(2):
        app.ok("POST", f"/keys/{key}/unwrapkey", {"alg": "RSA-OAEP", "value": wrapped})
    emulator_admin.keyvault_config(limits=True, limits_scale=0.001)  # CREATE secret: 300 -> 1
    puts(app, secret, 3)
    after = emulator_admin.keyvault_stats()
    delta = {k: after["ops"][k] - before["ops"][k] for k in after["ops"]}
    assert delta == {"read": 2, "write": 2, "wrap": 1, "unwrap": 2}
    assert after["throttled"]["secret_create"] - before["throttled"]["secret_create"] == 2
    assert after["throttled"]["total"] - before["throttled"]["total"] == 2
    counters = emulator_admin.counters("kv.kind.")
    assert counters["kv.kind.unwrap"] >= 2
