"""The tenant's external-recipient budget (TERRL; shared/pacing/tenant.py) on real Azurite with a clock the test
moves: Exchange's formula, two instances sharing one tenant's budget, internal recipients not counted, the rolling
window freeing room, a message over the budget held through the sender (never sent to Graph), and no Storage call
for a tenant that is not configured."""

from __future__ import annotations

import math
import uuid

import pytest

from shared.base.errors import SettingsError
from shared.base.settings import load_settings
from shared.base.tenant_limits import TenantExternalLimit, parse_tenant_limits, terrl
from shared.pacing.budget import Limits, Mailbox, MailboxBudget
from shared.pacing.tenant import BUCKETS_PER_WINDOW, WAIT_MARGIN_S
from tests.fixtures.sender import send_kit_fixture  # noqa: F401  (registers the send_kit fixture)
from tests.test_settings import BASE

DAY = 86_400.0
GRACE = 30.0  # the budgets' lease 60 s: an admitted send reaches Graph within half of it


def test_the_limit_is_exchanges_formula_and_a_trial_tenant_has_5000():
    # 500 × licenses^0.7 + 9,500 (Exchange Team Blog, Feb 2025): the examples Microsoft gives,
    # rounded to the nearest (10 licenses: 12,005.9 -> 12,006).
    assert [terrl(n) for n in (1, 10, 100, 1_000, 10_000, 100_000)] == [
        10_000,
        12_006,
        22_059,
        72_446,
        324_979,
        1_590_639,
    ]
    assert terrl(100, trial=True) == terrl(0, trial=True) == 5_000
    (only,) = parse_tenant_limits('{"0000000A-0000-0000-0000-000000000001": {"trial": true, "domains": ["Ex.COM"]}}')
    assert (only.tenant_id, only.recipients_per_day, only.domains) == (
        "0000000a-0000-0000-0000-000000000001",
        5_000,
        ("ex.com",),
    )


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        '{"00000000-0000-0000-0000-000000000001": -1}',
        '{"00000000-0000-0000-0000-000000000001": "25"}',
        '{"00000000-0000-0000-0000-000000000001": true}',
        '{"00000000-0000-0000-0000-000000000001": {"licenses": 5, "trial": "yes"}}',
        '{"00000000-0000-0000-0000-000000000001": {"licenses": 5, "domains": ["not a domain"]}}',
        '{"00000000-0000-0000-0000-000000000001": {"licences": 5}}',
        '{"contoso.com": 25}',
    ],
)
def test_a_malformed_setting_is_a_settings_error_naming_it(raw):
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "TENANT_EXTERNAL_RECIPIENT_LIMITS": raw})
    assert caught.value.setting == "TENANT_EXTERNAL_RECIPIENT_LIMITS"


def test_the_setting_is_off_by_default_and_read_when_set():
    assert load_settings(BASE).tenant_external_recipient_limits == ()
    raw = '{"00000000-0000-0000-0000-000000000001": 100}'
    (only,) = load_settings({**BASE, "TENANT_EXTERNAL_RECIPIENT_LIMITS": raw}).tenant_external_recipient_limits
    assert only == TenantExternalLimit("00000000-0000-0000-0000-000000000001", 100)


def _instances(kit, tenant: TenantExternalLimit, now: list[float], n: int = 2) -> list[MailboxBudget]:
    """``n`` instances' budgets over the one storage account, all with the clock the test moves."""
    kit.services.budget  # noqa: B018  (creates the budget table)
    return [
        MailboxBudget(kit.services.storage, Limits(), Limits(), clock=lambda: now[0], tenant_limits=[tenant])
        for _ in range(n)
    ]


def _send(budget: MailboxBudget, mailbox: Mailbox, addresses: list[str]):
    admission = budget.admit(mailbox, addresses)
    if admission.admitted:
        admission.report()
    return admission


def test_two_instances_share_the_tenants_budget_internal_recipients_do_not_count_and_the_window_frees(send_kit):
    kit = send_kit()
    tid = str(uuid.uuid4())
    tenant = TenantExternalLimit(tid, licenses=0, trial=True, domains=("partner.example",))
    now = [1_000_000.0]
    a, b = _instances(kit, tenant, now)
    alice = Mailbox(tid, str(uuid.uuid4()), "alice@contoso.example")
    bob = Mailbox(tid, str(uuid.uuid4()), "bob@fabrikam.example")
    outside = [f"r{i}@example.net" for i in range(500)]
    for _ in range(5):  # 2 × 5 × 500 = the trial tenant's 5,000, from two mailboxes on two instances
        assert _send(a, alice, outside).admitted
        assert _send(b, bob, outside).admitted
    width = DAY / BUCKETS_PER_WINDOW
    first_leaves = math.ceil((now[0] + GRACE + DAY) / width) * width  # the bucket all of them went into
    for budget, mailbox in ((a, alice), (b, bob)):
        held = _send(budget, mailbox, ["one.more@example.net"])
        assert (held.admitted, held.reason) == (False, "tenant_external_limit")
        assert first_leaves - now[0] + WAIT_MARGIN_S <= held.delay <= first_leaves - now[0] + WAIT_MARGIN_S + 1
    # Internal: the sender's own domain, another mailbox's of the tenant (learned from the row: bob sent from
    # b, a knows it), the setting's domains. Such a message is admitted while the budget is full.
    internal = ["x@contoso.example", "y@fabrikam.example", "z@partner.example"]
    assert _send(a, alice, internal).admitted
    calls = dict(a.calls_by)
    assert _send(a, alice, ["again@contoso.example"]).admitted
    assert a.calls_by.get("read tenant") == calls.get("read tenant"), "all internal as far as it knows: no read"
    assert not _send(a, alice, ["x@contoso.example", "sub@mail.contoso.example"]).admitted, "a subdomain is not"
    now[0] += DAY + GRACE + DAY / 96 + 1  # a day on: the first sends left the rolling window
    assert _send(b, bob, outside).admitted
    assert _send(a, alice, outside).admitted


def test_a_tenant_not_configured_costs_no_storage_call_and_a_personal_mailbox_is_never_counted(send_kit):
    kit = send_kit()
    now = [2_000_000.0]
    (budget,) = _instances(kit, TenantExternalLimit(str(uuid.uuid4()), 1), now, n=1)
    other = Mailbox(str(uuid.uuid4()), str(uuid.uuid4()), "carol@elsewhere.example")
    personal = Mailbox("9188040d-6c67-4c5b-b112-36a304b66dad", str(uuid.uuid4()), "dave@outlook.com")
    for mailbox in (other, personal):
        assert _send(budget, mailbox, ["someone@example.net"]).admitted
    assert not any("tenant" in why for why in budget.calls_by), budget.calls_by


def test_a_message_over_the_tenants_budget_waits_never_reaching_graph_and_an_upload_wait_gives_it_back(send_kit):
    kit = send_kit()
    cid = kit.connect("alice")
    conn = kit.services.connections.recent(cid)
    tenant = TenantExternalLimit(conn.tenant_id, licenses=0, trial=True)
    now = [kit.services.budget.clock()]
    other, app = _instances(kit, tenant, now)
    filler = Mailbox(conn.tenant_id, str(uuid.uuid4()), "filler@elsewhere.example")
    for i in range(10):  # another instance has sent to 4,999 external recipients today
        assert _send(other, filler, [f"r{j}@example.net" for j in range(500 if i < 9 else 499)]).admitted
    kit.services.__dict__["budget"] = app
    kit.services.__dict__.pop("sender", None)
    own_domain = kit.address("alice").rpartition("@")[2]
    two = kit.message(cid, to=[{"address": "a@example.com"}, {"address": "b@example.com"}])
    held = kit.services.sender.process(two, "q-1")
    assert held.status == "queued" and held.delay > DAY - 3600, "held until the oldest recipients leave"
    status = kit.mb.json(
        kit.mb.http("get_message", route_params={"message_id": two["id"]}, params={"connection_id": cid})
    )
    assert (status["status"], status["reason"]) == ("queued", "tenant_external_limit")
    assert kit.mb.admin.delivered(kit.address("alice"))["counts_by_key"].get(two["id"]) is None
    inside = kit.message(cid, to=[{"address": f"colleague@{own_domain}"}])
    assert kit.services.sender.process(inside, "q-2").status == "sent", "an internal recipient does not count"
    one = kit.message(cid, to=[{"address": "a@example.com"}])
    assert kit.services.sender.process(one, "q-3").status == "sent", "the last external recipient fits"
    # Held back for Graph's upload limit after the tenant counted it: its recipients are given back.
    upload = Limits(upload_bytes_per_window=100)
    room = MailboxBudget(kit.services.storage, upload, upload, clock=lambda: now[0], tenant_limits=[tenant])
    now[0] += DAY + GRACE + DAY / 96 + 1  # the day's sends left the window
    mailbox = Mailbox(conn.tenant_id, str(uuid.uuid4()), "up@elsewhere.example")
    assert room.admit(mailbox, ["u@example.net"], upload_bytes=80).admitted
    held = room.admit(mailbox, [f"r{j}@example.net" for j in range(500)], upload_bytes=80)
    assert (held.admitted, held.reason) == (False, "upload_rate")
    for _ in range(9):  # 1 + 9 × 500 + 499 = 5,000: the withdrawn 500 are free again
        assert _send(other, filler, [f"r{j}@example.net" for j in range(500)]).admitted
    assert _send(other, filler, [f"r{j}@example.net" for j in range(499)]).admitted
    assert not _send(other, filler, ["last@example.net"]).admitted


def test_storage_trouble_at_the_tenants_row_hands_the_mailbox_slot_back(send_kit):
    kit = send_kit()
    kit.services.budget  # noqa: B018  (creates the budget table)
    tid = str(uuid.uuid4())
    budget = MailboxBudget(
        kit.services.storage, Limits(), Limits(), max_wait_s=0.5, tenant_limits=[TenantExternalLimit(tid, 1)]
    )
    mailbox = Mailbox(tid, str(uuid.uuid4()), "erin@contoso.example")

    def broken():
        raise ConnectionError("storage unreachable")

    budget.tenants.table = broken
    for _ in range(5):  # more than the mailbox's 4 concurrency slots
        with pytest.raises(ConnectionError):
            budget.admit(mailbox, ["x@example.net"])
    budget.tenants.table = lambda: budget.table
    assert _send(budget, mailbox, ["x@example.net"]).admitted, "no slot was left taken by the failed admissions"
